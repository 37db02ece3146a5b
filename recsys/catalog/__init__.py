"""Catalog deletions and user erasure (right to be forgotten), cascaded through every layer and the API.

Public entry points (imported lazily, so ingest can use the guard without loading the whole cascade):

- :func:`read_drops` / :func:`read_drop` — parse and validate drop files (CSV or JSONL, README "Deletions and user erasure").
- :func:`apply_drops` — apply item deletions and/or user erasures (``recsys delete-items``, ``recsys erase-users``,
  ``jobs/apply_deletions.py``); applying the same drop twice changes nothing.
- :func:`relist_items` — undo an item deletion when the catalog lists the item again (``recsys relist-items``).
- :func:`exclude_deleted`, :func:`flag_erased_lines` — what silver and ingest consult.
- :class:`DeletionSettings` — the ``deletions`` section of the configuration.

The proof side lives in :mod:`recsys.audit` (``recsys audit-deletions``).
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "apply_drops": "recsys.catalog.apply",
    "apply_rows": "recsys.catalog.apply",
    "read_drops": "recsys.catalog.apply",
    "relist_items": "recsys.catalog.apply",
    "read_drop": "recsys.catalog.drops",
    "find_drops": "recsys.catalog.drops",
    "DropError": "recsys.catalog.drops",
    "exclude_deleted": "recsys.catalog.guard",
    "flag_erased_lines": "recsys.catalog.guard",
    "DeletionSettings": "recsys.catalog.settings",
})

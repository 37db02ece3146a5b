"""Deleted items and erased users, read from ``ops/deletions`` and applied on every response.

Erased users are stored only as ``id_hash`` (hex sha256 of salt + id) so the audit table never holds the plain id;
the salt lives in ``<warehouse>/ops/_salt``. Both sides hash with :func:`recsys.ids.id_hash`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
from deltalake import DeltaTable

from recsys.constants import DELETIONS
from recsys.delta import log_version, read_table
from recsys.ids import id_hash

log = logging.getLogger(__name__)

SALT_FILE = "ops/_salt"
KIND = "kind"
ID = "id"
ID_HASH = "id_hash"
KIND_ITEM = "item"
KIND_USER = "user"
STATUS = "status"
RELISTED = "relisted"        # an item the catalog listed again: no longer denied


def read_salt(warehouse: Path) -> str | None:
    """The salt (file content without surrounding whitespace), or ``None`` when the file does not exist yet."""
    try:
        return (Path(warehouse) / SALT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class DenyList:
    """Immutable view of ``ops/deletions`` at one commit; replaced as a whole when the table changes."""

    items: frozenset[str] = frozenset()
    user_hashes: frozenset[str] = frozenset()
    salt: str | None = None
    log_version: int = -1

    def item_denied(self, asin: str) -> bool:
        return asin in self.items

    def user_erased(self, user_id: str) -> bool:
        if not self.user_hashes:
            return False
        if self.salt is None:  # erasures exist but their salt is gone: nothing can match, say so loudly
            log.error("ops/deletions holds erased users but %s is missing; erasures cannot be applied", SALT_FILE)
            return False
        return id_hash(self.salt, user_id) in self.user_hashes


def load_denylist(warehouse: Path) -> DenyList:
    """Read every deletion row (applied or still pending: a request is honoured as soon as it lands), except items
    the catalog relisted (``status`` = relisted, see ``recsys.catalog.relist_items``)."""
    table_path = Path(warehouse) / DELETIONS
    version = log_version(table_path)
    if version < 0:
        return DenyList(salt=read_salt(warehouse))
    columns = [KIND, ID, ID_HASH]
    has_status = STATUS in DeltaTable(str(table_path)).schema().to_arrow().names
    table = read_table(table_path, columns + [STATUS] if has_status else columns)
    if has_status:
        table = table.filter(pc.fill_null(pc.not_equal(table[STATUS], RELISTED), True))
    items = table.filter(pc.equal(table[KIND], KIND_ITEM))[ID].drop_null()
    users = table.filter(pc.equal(table[KIND], KIND_USER))[ID_HASH].drop_null()
    return DenyList(items=frozenset(items.to_pylist()), user_hashes=frozenset(users.to_pylist()),
                    salt=read_salt(warehouse), log_version=version)

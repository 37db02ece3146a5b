"""Recommendation API: Flask app over a memory-mapped snapshot of the published Delta version (no JVM).

Public entry points: :func:`create_app` (app factory), :func:`run_server` (gunicorn), :func:`build_snapshot`,
:func:`id_hash` / :func:`read_salt` (shared with the deletion jobs), :func:`read_events` (for the events compaction),
:class:`ServeSettings`. Imported lazily so that a Spark job needing only ``id_hash`` does not import Flask.
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "create_app": "recsys.serve.app",
    "run_server": "recsys.serve.server",
    "build_snapshot": "recsys.serve.snapshot",
    "id_hash": "recsys.ids",
    "read_salt": "recsys.serve.denylist",
    "read_events": "recsys.serve.events",
    "ServeSettings": "recsys.serve.settings",
})

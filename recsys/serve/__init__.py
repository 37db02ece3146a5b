"""Recommendation API: Flask app over a memory-mapped snapshot of the published Delta version (no JVM).

Public entry points: :func:`create_app` (app factory), :func:`run_server` (gunicorn), :func:`build_snapshot`,
:func:`id_hash` / :func:`read_salt` (shared with the deletion jobs), :func:`read_events` (for the events compaction),
:class:`ServeSettings`. Imported lazily so that a Spark job needing only ``id_hash`` does not import Flask.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_app": "recsys.serve.app",
    "run_server": "recsys.serve.server",
    "build_snapshot": "recsys.serve.snapshot",
    "id_hash": "recsys.serve.denylist",
    "read_salt": "recsys.serve.denylist",
    "read_events": "recsys.serve.events",
    "ServeSettings": "recsys.serve.settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recsys.serve' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

"""Recommendation API: Flask app over a memory-mapped snapshot of the published Delta version (no JVM).

Serving owns its runtime and its files (snapshots, A/B pinned snapshots, event logs); other packages use them only
through these entry points: :func:`create_app` (app factory), :func:`run_server` (gunicorn), :func:`build_snapshot`,
:func:`refresh_snapshots` / :func:`scrub_events` (for the deletion cascade), :func:`read_salt` (shared with the
deletion jobs), :func:`read_events` (for the events compaction), :class:`ServeSettings`, :class:`ABSettings` (the
experiment the API runs). Imported lazily so that a Spark job needing only ``read_salt`` does not import Flask.
"""

from __future__ import annotations

from recsys.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "create_app": "recsys.serve.app",
    "run_server": "recsys.serve.server",
    "build_snapshot": "recsys.serve.snapshot",
    "refresh_snapshots": "recsys.serve.maintenance",
    "scrub_events": "recsys.serve.maintenance",
    "read_salt": "recsys.serve.denylist",
    "read_events": "recsys.serve.events",
    "ServeSettings": "recsys.serve.settings",
    "ABSettings": "recsys.serve.experiment",
})

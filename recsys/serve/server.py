"""Start the API under gunicorn (``recsys serve``): prepare the snapshot once, then exec gunicorn.

Why gthread, 2 workers x 8 threads by default: measured on 2 cores (benchmarks/bench_api.py) it gives p99 ~2 ms at low
concurrency and ~3.2-3.6k req/s at 32 connections, and memory-mapped snapshots keep extra workers cheap. Building
the snapshot here, before the exec, means workers start by mapping files (milliseconds) and the build's peak memory
is returned to the system by the exec.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from recsys.serve.experiment import ABSettings
from recsys.serve.settings import ServedMonitorSettings, ServeSettings
from recsys.serve.snapshot import NoPublishedVersion, build_snapshot
from recsys.serve.variants import build_pinned

log = logging.getLogger(__name__)

WSGI_APP = "recsys.serve.wsgi:app"


def gunicorn_command(settings: ServeSettings) -> list[str]:
    """The argv that runs the API under gunicorn with ``settings`` (this interpreter, so the same venv)."""
    command = [sys.executable, "-m", "gunicorn", WSGI_APP,
               "--worker-class", "gthread", "--workers", str(settings.workers), "--threads", str(settings.threads),
               "--bind", f"{settings.host}:{settings.port}", "--timeout", "60", "--graceful-timeout", "15",
               "--keep-alive", "5", "--error-logfile", "-", "--log-level", "info"]
    if _gunicorn_knows("control_socket_disable"):   # gunicorn >= 27: no shared socket under $HOME to collide on
        command.append("--no-control-socket")
    if Path("/dev/shm").is_dir():   # worker heartbeat files in tmpfs: a slow disk cannot get workers killed
        command += ["--worker-tmp-dir", "/dev/shm"]
    return command


def _gunicorn_knows(setting: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS
    return any(s.name == setting for s in KNOWN_SETTINGS)


def gunicorn_env(warehouse: Path | str, settings: ServeSettings, ab: ABSettings | None = None) -> dict[str, str]:
    """The environment the workers read their settings from (see :mod:`recsys.serve.wsgi`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_SERVE", "RECSYS_MONITOR"))}
    env["RECSYS_WAREHOUSE"] = str(Path(warehouse).resolve())
    env["RECSYS_SERVE"] = settings.resolved(warehouse).model_dump_json()
    env["RECSYS_MONITOR"] = ServedMonitorSettings(ab=ab or ABSettings()).model_dump_json()
    return env


def prepare(warehouse: Path | str, settings: ServeSettings, ab: ABSettings | None = None) -> ServeSettings:
    """Resolve folders and build the current snapshot if missing (no published version yet: warn, serve later),
    and the snapshots of the versions an enabled A/B experiment pins (a version never published: an error)."""
    warehouse = Path(warehouse)
    if not warehouse.is_dir():
        raise FileNotFoundError(f"warehouse not found: {warehouse}")
    settings = settings.resolved(warehouse)
    assert settings.snapshot_dir is not None
    try:
        folder = build_snapshot(warehouse, settings.snapshot_dir, keep=settings.keep_snapshots)
        log.info("serving snapshot %s", folder)
    except NoPublishedVersion as exc:
        log.warning("%s; the API will answer 503 on /ready until a version is published", exc)
    if ab is not None and ab.enabled:
        for version in sorted(ab.pinned_versions()):
            log.info("A/B pinned snapshot %s", build_pinned(warehouse, version))
    return settings


def run_server(warehouse: Path | str, port: int | None = None, workers: int | None = None,
               threads: int | None = None, settings: ServeSettings | None = None,
               ab: ABSettings | None = None) -> NoReturn:
    """Prepare the snapshot, then replace this process with gunicorn serving the API (does not return)."""
    overrides = {k: v for k, v in {"port": port, "workers": workers, "threads": threads}.items() if v is not None}
    settings = prepare(warehouse, (settings or ServeSettings()).model_copy(update=overrides), ab)
    command = gunicorn_command(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, gunicorn_env(warehouse, settings, ab))

"""Start the API under gunicorn (``recsys serve``): prepare the snapshot once, then exec gunicorn.

Why gevent workers (:mod:`recsys.serve.worker`), 2 by default: a stalled client holds a greenlet, not a thread, so it
cannot starve the others, and on 2 cores two single-threaded workers serve lookups without contending for a GIL
(benchmarks/bench_api.py); memory-mapped snapshots keep extra workers cheap. Building the snapshot here, before the
exec, means workers start by mapping files (milliseconds) and the build's peak memory is returned by the exec.

gunicorn parses the request before the app sees it; its limits are set here so that what the app can refuse better
reaches it (a request line up to gunicorn's maximum, 8190 bytes: an over-long id gets the app's 400), and what
gunicorn still refuses is answered in the app's JSON error shape by the worker class.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import SecretStr

from recsys.serve.experiment import ABSettings
from recsys.serve.settings import ServedMonitorSettings, ServeSettings
from recsys.serve.snapshot import NoPublishedVersion, build_snapshot
from recsys.serve.variants import build_pinned

log = logging.getLogger(__name__)

WSGI_APP = "recsys.serve.wsgi:app"
WORKER_CLASS = "recsys.serve.worker.JsonGeventWorker"
LIMIT_REQUEST_LINE = 8190          # gunicorn's maximum; longer: 414 uri_too_long
LIMIT_REQUEST_FIELDS = 100         # headers per request; more: 431
LIMIT_REQUEST_FIELD_SIZE = 8190    # bytes per header line; longer: 431
KEEPALIVE_S = 5                    # idle wait for the next request's headers on a connection
# A session's forward pass is numpy BLAS (the 94K x 128 output product). Workers are one per core: a BLAS thread pool
# in each would oversubscribe the cores. Measured on 2 busy cores, the product took p50 1.7 / p99 7.0 ms on one
# thread against 8.0 / 88 ms on two.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def gunicorn_command(settings: ServeSettings) -> list[str]:
    """The argv that runs the API under gunicorn with ``settings`` (this interpreter, so the same venv)."""
    command = [sys.executable, "-m", "gunicorn", WSGI_APP,
               "--worker-class", WORKER_CLASS, "--workers", str(settings.workers),
               "--worker-connections", str(settings.connections), "--bind", f"{settings.host}:{settings.port}",
               "--timeout", "60", "--graceful-timeout", "15", "--keep-alive", str(KEEPALIVE_S),
               "--limit-request-line", str(LIMIT_REQUEST_LINE), "--limit-request-fields", str(LIMIT_REQUEST_FIELDS),
               "--limit-request-field_size", str(LIMIT_REQUEST_FIELD_SIZE),
               "--error-logfile", "-", "--log-level", "info"]
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
    for threads in BLAS_THREADS:      # one per worker, unless the operator says otherwise
        env.setdefault(threads, "1")
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
    if not settings.signing_keys:       # one key for every worker of this start, so each takes the others' ids
        log.warning("serve.signing_keys unset: signing with a key made for this start; request ids served before "
                    "a restart will not be taken after it")
        settings = settings.model_copy(update={"signing_keys": [SecretStr(secrets.token_hex(32))]})
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
               connections: int | None = None, settings: ServeSettings | None = None,
               ab: ABSettings | None = None) -> NoReturn:
    """Prepare the snapshot, then replace this process with gunicorn serving the API (does not return)."""
    overrides = {k: v for k, v in {"port": port, "workers": workers, "connections": connections}.items()
                 if v is not None}
    settings = prepare(warehouse, (settings or ServeSettings()).model_copy(update=overrides), ab)
    command = gunicorn_command(settings)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, gunicorn_env(warehouse, settings, ab))

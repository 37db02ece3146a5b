"""One writer at a time per warehouse: an exclusive ``flock`` on ``<warehouse>/ops/_writer.lock``.

Every command and job that writes the warehouse (ingest, silver, features, train, evaluate, publish, gates,
deletions, indicators, retrain, the audit's swap repair) holds it for its whole run, so a VACUUM never races a
commit, an erasure never swaps a directory under a writer, and a publish never writes lists computed before an
erasure. Readers (the API's snapshots, ``recsys runs``/``tables``) never take it: Delta gives them consistent
versions.

The lock is the kernel's: it is released when the holding process exits, however it exits (a killed job leaves
no stale lock). It is re-entrant within a process (``recsys pipeline`` runs every step under one hold). A waiter
gives up after ``lock.wait_s`` with a message naming the holder. ``flock`` works on local filesystems; on NFS use
one host for the writers (Airflow's ``recsys_warehouse`` pool already serialises the DAGs' writing tasks).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)

LOCK_FILE = "ops/_writer.lock"


class LockSettings(BaseModel):
    """How long a writer waits for the warehouse (the ``lock`` section of ``recsys.config.Settings``)."""

    model_config = ConfigDict(extra="forbid")

    wait_s: float = Field(1800.0, ge=0)     # give up after this long (0: fail at once if another writer holds it)
    poll_s: float = Field(1.0, gt=0)        # how often a waiter retries


class WarehouseBusyError(RuntimeError):
    """Another process kept the warehouse's writer lock for longer than the wait allowed."""


_held: dict[Path, tuple[int, int]] = {}     # resolved lock path -> (fd, depth) held by this process
_guard = threading.Lock()


def lock_path(warehouse: Path | str) -> Path:
    return Path(warehouse).resolve() / LOCK_FILE


def holder(warehouse: Path | str) -> dict | None:
    """Who holds (or last held) the lock: pid, host, command, since; None when nobody ever took it."""
    try:
        text = lock_path(warehouse).read_text(encoding="utf-8").strip()
        return json.loads(text) if text else None
    except (FileNotFoundError, ValueError):
        return None


@contextmanager
def writer_lock(warehouse: Path | str, what: str, settings: LockSettings | None = None) -> Iterator[None]:
    """Hold the warehouse's writer lock for the body; ``what`` names the writer in a waiter's message."""
    settings = settings or LockSettings()
    path = lock_path(warehouse)
    with _guard:
        if path in _held:                                   # re-entrant: this process already holds it
            fd, depth = _held[path]
            _held[path] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            _release(path)
        return
    fd = _acquire(path, what, settings)
    with _guard:
        _held[path] = (fd, 1)
    try:
        yield
    finally:
        _release(path)


def warehouse_writer(settings: Settings, what: str, *, create: bool = False):
    """:func:`writer_lock` on ``settings.warehouse``; unless ``create`` (ingest, pipeline), the warehouse must
    exist already: the lock file must not conjure an empty warehouse out of a mistyped path."""
    warehouse = Path(settings.warehouse)
    if not create and not warehouse.is_dir():
        raise FileNotFoundError(f"warehouse not found: {warehouse}")
    return writer_lock(warehouse, what, settings.lock)


def _acquire(path: Path, what: str, settings: LockSettings) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            waited = time.monotonic() - started
            if waited >= settings.wait_s:
                os.close(fd)
                raise WarehouseBusyError(
                    f"warehouse {path.parent.parent} is being written by {_describe(holder(path.parent.parent))}; "
                    f"gave up after {waited:.0f} s (lock.wait_s={settings.wait_s:g}); retry when it is done"
                ) from None
            if not announced:
                log.warning("%s waits for the warehouse writer lock held by %s",
                            what, _describe(holder(path.parent.parent)))
                announced = True
            time.sleep(min(settings.poll_s, max(0.01, settings.wait_s - waited)))
    stamp = {"pid": os.getpid(), "host": socket.gethostname(), "command": what,
             "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(stamp) + "\n").encode("utf-8"), 0)
    return fd


def _release(path: Path) -> None:
    with _guard:
        fd, depth = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1)
            return
        del _held[path]
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    return f"{info.get('command', '?')} (pid {info.get('pid', '?')} on {info.get('host', '?')}, " \
           f"since {info.get('since', '?')})"

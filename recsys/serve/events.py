"""Feedback events (impressions, clicks, …) appended durably to a local JSONL log, folded into ``ops/events`` later.

Why a local log and not Delta: a Delta commit per event would cost ~10-100 ms and produce a file per event. An
``O_APPEND`` write plus ``fsync`` before answering 202 makes an accepted event survive a crash or restart; a batch
job compacts the files into ``ops/events``.

File contract for that job: ``<events_dir>/events-<YYYYMMDD>-<host>-<pid>.jsonl``, one JSON object per line, UTF-8,
written whole by one ``write`` call; a last line without ``\\n`` is a torn write and must be skipped (see
:func:`read_events`). Every record has a unique ``event_id``, so MERGE on it makes the compaction idempotent.
A file of a past UTC day whose mtime is older than a minute is closed for good and can be deleted once merged.
Erasure never edits a file in place: it renames a rewritten copy over it (:func:`rewrite_event_file`).
Record fields: ``event_id``, ``event_type``, ``user_id``, ``parent_asin`` (or null), ``request_id``, ``items``
(list or null), ``variant`` (or null), ``ts`` (ISO-8601 UTC, the server's clock when the event was taken: a client
never chooses where an event falls in the train/test split), ``received_at`` (ISO-8601 UTC, when written),
``version`` and ``model`` (the snapshot current when the event arrived, or null).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from recsys.constants import EVENT_TYPES, ITEM_ID, USER_ID
from recsys.constants import ITEM_EVENT_TYPES as ITEM_REQUIRED
from recsys.durable import fsync_dir
from recsys.ids import is_valid_id

EVENT_TYPE = "event_type"
REQUEST_ID = "request_id"
ITEMS = "items"
VARIANT = "variant"
TS = "ts"
FIELDS = frozenset({EVENT_TYPE, USER_ID, ITEM_ID, REQUEST_ID, ITEMS, VARIANT})
FILE_MODE = 0o640
_HOST = re.sub(r"[^A-Za-z0-9_\-]", "_", socket.gethostname())[:32] or "host"


class EventError(ValueError):
    """A client mistake in an event; the message is safe to return."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_event(body: Any, max_items: int, now: datetime) -> dict[str, Any]:
    """The normalised record for one event object, or :class:`EventError` saying what is wrong."""
    if not isinstance(body, dict):
        raise EventError("an event must be a JSON object")
    if TS in body:
        raise EventError("ts is set by the server's clock; do not send it")
    unknown = set(body) - FIELDS
    if unknown:
        raise EventError(f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}")

    def ident(name: str, required: bool) -> str | None:
        value = body.get(name)
        if value is None:
            if required:
                raise EventError(f"{name} is required")
            return None
        if not isinstance(value, str) or not is_valid_id(value):
            raise EventError(f"{name} must be 1-64 characters of A-Z a-z 0-9 _ -")
        return value

    event_type = body.get(EVENT_TYPE)
    if not isinstance(event_type, str) or event_type not in EVENT_TYPES:
        raise EventError(f"event_type must be one of {', '.join(sorted(EVENT_TYPES))}")
    items = body.get(ITEMS)
    if items is not None:
        if not isinstance(items, list) or not 0 < len(items) <= max_items or not all(
                is_valid_id(i) for i in items):
            raise EventError(f"items must be a list of 1..{max_items} parent_asin strings")
    elif event_type == "impression":
        raise EventError("items is required for an impression")
    return {
        "event_type": event_type,
        USER_ID: ident(USER_ID, True),
        ITEM_ID: ident(ITEM_ID, event_type in ITEM_REQUIRED),
        REQUEST_ID: ident(REQUEST_ID, True),
        ITEMS: items,
        VARIANT: ident(VARIANT, False),
        TS: _iso(now),
    }


class EventLog:
    """Append-only, fsync'd JSONL log of one process; thread-safe; a new file per UTC day."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)           # created on the first event, not before
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._day: str | None = None
        self._path: Path | None = None
        self.written = 0

    def append(self, records: list[dict[str, Any]], version: str | None, model: str | None) -> list[str]:
        """Give each record an ``event_id`` and the server fields, write them, fsync; return the ids."""
        received = _iso(datetime.now(timezone.utc))
        ids = []
        lines = []
        for record in records:
            event_id = uuid.uuid4().hex
            ids.append(event_id)
            lines.append(orjson.dumps({"event_id": event_id, **record, "received_at": received,
                                       "version": version, "model": model}) + b"\n")
        payload = b"".join(lines)
        with self._lock:
            fd = self._locked_file()
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self.written += len(records)
        return ids

    def _locked_file(self) -> int:
        """Today's file, opened and locked (``LOCK_EX``), and still the file its name points to.

        An erasure (:func:`rewrite_event_file`) replaces a log by a new file under the old one's lock: an append
        that waited for that lock would land in the replaced file, so it reopens the name and locks again.
        """
        while True:
            fd = self._file()
            fcntl.flock(fd, fcntl.LOCK_EX)
            if _same_file(fd, self._path):
                return fd
            fcntl.flock(fd, fcntl.LOCK_UN)
            self.close()

    def _file(self) -> int:
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        if self._fd is None or day != self._day:
            self.close()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._path = self.folder / f"events-{day}-{_HOST}-{os.getpid()}.jsonl"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            self._day = day
            fsync_dir(self.folder)                 # make the new file's name durable too
        return self._fd

    def folder_bytes(self) -> int:
        """Bytes of every log file in the folder (every worker's): what the disk quota counts."""
        try:
            return sum(entry.stat().st_size for entry in os.scandir(self.folder) if entry.name.endswith(".jsonl"))
        except FileNotFoundError:
            return 0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_events(folder: Path) -> Iterator[dict[str, Any]]:
    """Every complete event line under ``folder`` (torn last lines skipped), file by file in name order."""
    for path in event_files(folder):
        yield from read_event_file(path)


def event_files(folder: Path) -> list[Path]:
    """The log files under ``folder``, in name order (day, then host, then pid)."""
    return sorted(Path(folder).glob("events-*.jsonl"))


def read_event_file(path: Path) -> list[dict[str, Any]]:
    """The complete event lines of one log file; a torn last line (no ``\\n``) is skipped."""
    data = Path(path).read_bytes()
    end = data.rfind(b"\n")
    return [orjson.loads(line) for line in data[: end + 1].splitlines() if line.strip()]


def file_day(path: Path) -> str | None:
    """The UTC day (``YYYYMMDD``) a log file was opened for, from its name; None if it is not a log file."""
    match = re.match(r"^events-(\d{8})-", Path(path).name)
    return match.group(1) if match else None


def _same_file(fd: int, path: Path | None) -> bool:
    """Does ``path`` still name the open file ``fd`` (not replaced, not deleted)?"""
    try:
        named = os.stat(path) if path is not None else None
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return named is not None and (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def rewrite_event_file(path: Path, keep: Callable[[bytes], bool]) -> int:
    """Replace a log by a copy holding only the lines ``keep`` accepts; returns the lines dropped.

    Crash-safe: the copy is written beside it, fsync'd and renamed over the log (then the folder is fsync'd), so
    the log is always either the old file or the complete new one, never a torn mix. Appends are safe: the
    rewrite holds the old file's ``LOCK_EX`` from reading to renaming, and an appender that waited for that
    lock finds the name now points elsewhere and reopens it (:meth:`EventLog._locked_file`).
    """
    path = Path(path)
    with open(path, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if not _same_file(handle.fileno(), path):      # replaced meanwhile: the next scrub sees the new one
                return 0
            lines = handle.read().splitlines(keepends=True)
            kept = [line for line in lines if keep(line)]
            if len(kept) == len(lines):
                return 0
            staged = path.with_name(f".{path.name}.rewrite")
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                view = memoryview(b"".join(kept))
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(staged, path)
            fsync_dir(path.parent)
            return len(lines) - len(kept)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

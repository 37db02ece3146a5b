"""What the workers of one host must agree on: impressions shown, events taken, client budgets, recent items.

One SQLite file (``serve.ledger_path``, WAL) shared by every worker, written only inside :meth:`Ledger.transaction`
(``BEGIN IMMEDIATE``: one writer at a time across processes), so a replay cannot slip between two workers and a
client's budget is one budget whatever worker answers. One host's: WAL shares memory between its users through a
``-shm`` file and SQLite's locks are not reliable on network volumes, so a deployment of several hosts sends every
event to one of them (docs/api.md, *Deployment*) rather than sharing this file. Rows expire with the acceptance
window and are pruned; the file holds request ids, items and a digest of (request id, user) — never a plain user id,
so an erasure has nothing to find here, and nothing outlives the window anyway.

``recent`` holds the item events (click, add to cart, purchase) of the last ``serve.session_window_s`` per viewer,
the session the user route blends in (:mod:`recsys.serve.blend`). Its viewer is a keyed digest of the user id
(:meth:`recsys.serve.signing.Signer.pseudonym`): without the signing key the file does not say whose items they are,
and an erasure cannot find them either — the route never reads an erased user's rows, nothing of theirs is written,
and rows are pruned once out of the window. Lookups read it through a connection of their own
(:meth:`Ledger.recent`), so a lookup never waits for an event batch being admitted (its fsync included); a busy or
broken file is the caller's to degrade on (:class:`sqlite3.Error`).
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.serve.errors import ApiError

SCHEMA = """
CREATE TABLE IF NOT EXISTS impressions (request_id TEXT PRIMARY KEY, viewer TEXT NOT NULL, items TEXT NOT NULL,
                                        expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS impressions_expires ON impressions (expires);
CREATE TABLE IF NOT EXISTS taken (key TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS taken_expires ON taken (expires);
CREATE TABLE IF NOT EXISTS budgets (client TEXT PRIMARY KEY, tokens REAL NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS recent (viewer TEXT NOT NULL, parent_asin TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS recent_viewer_at ON recent (viewer, at);
CREATE INDEX IF NOT EXISTS recent_at ON recent (at);
"""
PRUNE_EVERY_S = 60.0
BUSY_TIMEOUT_S = 5.0
READ_BUSY_TIMEOUT_S = 0.05        # a lookup's read waits this long for a busy file, then goes without its session
DEFAULT_SESSION_WINDOW_S = 3600.0


def viewer_digest(request_id: str, user_id: str) -> str:
    """Who an impression was shown to, as stored: sha256 of (request id, user), "" for a list served to no user."""
    return hashlib.sha256(f"{request_id}\0{user_id}".encode("utf-8")).hexdigest() if user_id else ""


class Entry:
    """The ledger inside one transaction (see :meth:`Ledger.transaction`)."""

    def __init__(self, conn: sqlite3.Connection, now: float, session_window_s: float = DEFAULT_SESSION_WINDOW_S):
        self._conn, self.now, self.session_window_s = conn, now, session_window_s

    def charge(self, client: str, cost: int, rate_per_s: float, burst: int) -> None:
        """Take ``cost`` tokens from the client's bucket (refilled at ``rate_per_s`` up to ``burst``), or refuse
        with 429 and the seconds until the bucket holds enough (``Retry-After``)."""
        row = self._conn.execute("SELECT tokens, at FROM budgets WHERE client = ?", (client,)).fetchone()
        tokens = burst if row is None else min(burst, row[0] + (self.now - row[1]) * rate_per_s)
        if cost > tokens:
            wait = max(1, math.ceil((cost - tokens) / rate_per_s))    # cost <= burst: settings refuse a smaller burst
            raise ApiError(429, "rate_limited", f"too many events from this client; at most {burst} at once and "
                           f"{rate_per_s:g} per second", {"Retry-After": str(wait)})
        self._conn.execute("INSERT OR REPLACE INTO budgets VALUES (?, ?, ?)", (client, tokens - cost, self.now))

    def impression(self, request_id: str) -> tuple[str, list[str]] | None:
        """(viewer digest, items) of an impression event taken before, or None."""
        row = self._conn.execute("SELECT viewer, items FROM impressions WHERE request_id = ? AND expires >= ?",
                                 (request_id, self.now)).fetchone()
        return None if row is None else (row[0], row[1].split(","))

    def record_impression(self, request_id: str, viewer: str, items: list[str], expires: float) -> None:
        self._conn.execute("INSERT OR IGNORE INTO impressions VALUES (?, ?, ?, ?)",
                           (request_id, viewer, ",".join(items), expires))

    def take(self, key: str, expires: float) -> bool:
        """Mark ``key`` taken; False if it already was (a replay)."""
        return self._conn.execute("INSERT OR IGNORE INTO taken VALUES (?, ?)", (key, expires)).rowcount == 1

    def record_recent(self, rows: Iterable[tuple[str, str]], cap: int) -> None:
        """Append (viewer, parent_asin) rows at ``now``, in order, then keep each viewer's last ``cap`` rows."""
        rows = list(rows)
        self._conn.executemany("INSERT INTO recent VALUES (?, ?, ?)", [(v, a, self.now) for v, a in rows])
        for viewer in dict.fromkeys(v for v, _ in rows):
            self._conn.execute("DELETE FROM recent WHERE viewer = ? AND rowid NOT IN (SELECT rowid FROM recent "
                               "WHERE viewer = ? ORDER BY at DESC, rowid DESC LIMIT ?)", (viewer, viewer, cap))

    def prune(self, idle_budget_s: float) -> None:
        self._conn.execute("DELETE FROM impressions WHERE expires < ?", (self.now,))
        self._conn.execute("DELETE FROM taken WHERE expires < ?", (self.now,))
        self._conn.execute("DELETE FROM budgets WHERE at < ?", (self.now - idle_budget_s,))
        self._conn.execute("DELETE FROM recent WHERE at < ?", (self.now - self.session_window_s,))


class Ledger:
    """One connection per process, used under a lock (a worker's requests take turns; the file lock of
    ``BEGIN IMMEDIATE`` orders the processes); lookups read ``recent`` through a second one."""

    def __init__(self, path: Path, session_window_s: float = DEFAULT_SESSION_WINDOW_S):
        self.path = Path(path)
        self.session_window_s = session_window_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._next_prune = 0.0
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")      # WAL: a commit survives a process crash, not a power cut
            conn.executescript(SCHEMA)
            self._conn = conn
        return self._conn

    @contextmanager
    def transaction(self, now: float, idle_budget_s: float) -> Iterator[Entry]:
        """Everything read and written inside commits together, or not at all when the block raises."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                entry = Entry(conn, now, self.session_window_s)
                if now >= self._next_prune:
                    entry.prune(idle_budget_s)
                    self._next_prune = now + PRUNE_EVERY_S
                yield entry
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _open_reader(self) -> sqlite3.Connection:
        """A connection for lookups: the schema made sure of (a no-op read once it exists) with the short timeout,
        then read-only. Never the writer's lock: a lookup must not wait for an admission."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        reader = sqlite3.connect(self.path, timeout=READ_BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False)
        try:
            reader.execute("PRAGMA journal_mode=WAL")
            reader.executescript(SCHEMA)
            reader.execute("PRAGMA query_only=1")
        except sqlite3.Error:
            reader.close()
            raise
        return reader

    def recent(self, viewer: str, now: float, limit: int) -> list[str]:
        """The viewer's last ``limit`` recent items within the session window before ``now``, oldest first: one
        read of the (viewer, at) index. Raises :class:`sqlite3.Error` when the file is busy past
        ``READ_BUSY_TIMEOUT_S`` or unreadable (the caller degrades)."""
        with self._read_lock:
            if self._reader is None:
                self._reader = self._open_reader()
            rows = self._reader.execute("SELECT parent_asin FROM recent WHERE viewer = ? AND at >= ? "
                                        "ORDER BY at DESC, rowid DESC LIMIT ?",
                                        (viewer, now - self.session_window_s, limit)).fetchall()
        return [row[0] for row in reversed(rows)]

    def close(self) -> None:
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

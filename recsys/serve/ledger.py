"""What the workers of one host must agree on to take events: impressions shown, events taken, client budgets.

One SQLite file (``serve.ledger_path``, WAL) shared by every worker, written only inside :meth:`Ledger.transaction`
(``BEGIN IMMEDIATE``: one writer at a time across processes), so a replay cannot slip between two workers and a
client's budget is one budget whatever worker answers. One host's: WAL shares memory between its users through a
``-shm`` file and SQLite's locks are not reliable on network volumes, so a deployment of several hosts sends every
event to one of them (docs/api.md, *Deployment*) rather than sharing this file. Rows expire with the acceptance
window and are pruned; the file holds request ids, items and a digest of (request id, user) — never a plain user id,
so an erasure has nothing to find here, and nothing outlives the window anyway.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import threading
from collections.abc import Iterator
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
"""
PRUNE_EVERY_S = 60.0
BUSY_TIMEOUT_S = 5.0


def viewer_digest(request_id: str, user_id: str) -> str:
    """Who an impression was shown to, as stored: sha256 of (request id, user), "" for a list served to no user."""
    return hashlib.sha256(f"{request_id}\0{user_id}".encode("utf-8")).hexdigest() if user_id else ""


class Entry:
    """The ledger inside one transaction (see :meth:`Ledger.transaction`)."""

    def __init__(self, conn: sqlite3.Connection, now: float):
        self._conn, self.now = conn, now

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

    def prune(self, idle_budget_s: float) -> None:
        self._conn.execute("DELETE FROM impressions WHERE expires < ?", (self.now,))
        self._conn.execute("DELETE FROM taken WHERE expires < ?", (self.now,))
        self._conn.execute("DELETE FROM budgets WHERE at < ?", (self.now - idle_budget_s,))


class Ledger:
    """One connection per process, used under a lock (a worker's requests take turns; the file lock of
    ``BEGIN IMMEDIATE`` orders the processes)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._next_prune = 0.0

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
                entry = Entry(conn, now)
                if now >= self._next_prune:
                    entry.prune(idle_budget_s)
                    self._next_prune = now + PRUNE_EVERY_S
                yield entry
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

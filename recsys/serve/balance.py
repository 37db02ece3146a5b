"""Least-connections accepting across the gevent workers of one gunicorn.

Why: the workers share one listening socket, every one of them is woken by a new connection, and whichever runs
first accepts it. On a busy 2-core box one worker often took most or all of a burst of connections, and a keep-alive
connection stays with the worker that accepted it: in 2 of 7 runs of bench_api (8 connections) one worker served
all 8 on one core while the other idled (workers' CPU 1.0 / 0.0), p99 5.7 ms and more against 4.2 ms when spread.

How: each worker counts its open connections in a table in memory shared by all of them (made by the gunicorn master
before it forks them). While a worker holds more than the least loaded live worker, it leaves a waiting connection to
the others, looking again every ``RETRY_S``, and takes it anyway after ``PATIENCE_S``: a worker that is alive but
busy delays a new connection by that much at most, and one that stopped beating for ``LIVE_S`` is not waited for.
"""

from __future__ import annotations

import ctypes
import time
from multiprocessing.sharedctypes import RawArray

import numpy as np
from gevent.server import StreamServer

SLOTS = 256          # workers of one master ever alive at once (a new one takes a slot whose worker stopped beating)
LIVE_S = 3.0         # a worker beats every second (gunicorn's notify); silent this long: gone or stuck
RETRY_S = 0.001      # how often a loaded worker looks again at a connection it left to the others
PATIENCE_S = 0.01    # how long it leaves it to them
NEVER = -np.inf      # the beat of a free slot


class ConnectionTable:
    """Open connections and last heartbeat of every worker, one slot each, in shared memory: make it before the
    workers fork. A slot is written by the master handing it out, then by its worker alone; readers may see a count
    one accept late, which is harmless."""

    def __init__(self) -> None:
        self.open = np.frombuffer(RawArray(ctypes.c_int64, SLOTS), np.int64)
        self.beats = np.frombuffer(RawArray(ctypes.c_double, SLOTS), np.float64)   # time.monotonic(): system-wide
        self.beats[:] = NEVER       # not 0: the monotonic clock may have started less than LIVE_S ago

    def claim(self) -> int:
        """A slot for a worker about to fork (in the master, one worker at a time), marked live from now."""
        now = time.monotonic()
        slot = int(np.flatnonzero(self.beats < now - LIVE_S)[0])
        self.open[slot], self.beats[slot] = 0, now
        return slot

    def beat(self, slot: int) -> None:
        self.beats[slot] = time.monotonic()

    def release(self, slot: int) -> None:
        """The worker of ``slot`` stops accepting: nobody waits for it any more."""
        self.beats[slot] = NEVER

    def more_than_least(self, slot: int) -> bool:
        """Whether the worker of ``slot`` holds more open connections than another live worker (~3 µs)."""
        live = self.beats >= time.monotonic() - LIVE_S
        live[slot] = False
        return bool((self.open[live] < self.open[slot]).any())


class BalancedServer(StreamServer):
    """gevent's server for one listener of one worker, accepting one connection at a time and only while the worker
    is among the least loaded (module docstring)."""

    max_accept = 1

    def __init__(self, listener, table: ConnectionTable, slot: int, **kwargs) -> None:  # noqa: ANN001 - a socket
        super().__init__(listener, **kwargs)
        self.table, self.slot = table, slot
        self._leaving_since: float | None = None

    def _do_read(self) -> None:
        """Called by the loop when the listener has a connection waiting."""
        if self.table.more_than_least(self.slot):
            now = time.monotonic()
            self._leaving_since = self._leaving_since or now
            if now - self._leaving_since < PATIENCE_S:
                self.stop_accepting()
                self._timer = self.loop.timer(RETRY_S)
                self._timer.start(self._start_accepting_if_started)
                return
        self._leaving_since = None
        super()._do_read()

    def do_read(self):  # noqa: ANN201 - gevent's (socket, address) or None
        accepted = super().do_read()
        if accepted:
            self.table.open[self.slot] += 1
        return accepted

    def do_close(self, *args) -> None:  # noqa: ANN002 - gevent's (socket, address)
        self.table.open[self.slot] -= 1
        super().do_close(*args)

"""Prometheus text exposition of one worker: request counts, a latency histogram, snapshot and deny-list gauges.

Kept dependency-free and per process: each series carries a ``worker`` (pid) label, so a scrape that lands on any
worker is a consistent sample of that worker and ``sum by (endpoint)`` over workers gives the service total.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import defaultdict

from recsys.serve.store import SnapshotStore

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """Thread-safe counters; ``observe`` costs a lock and two dict updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._worker = str(os.getpid())

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        slot = bisect.bisect_left(BUCKETS, seconds)
        with self._lock:
            self._requests[(endpoint, method, status)] += 1
            buckets = self._buckets.get(endpoint)
            if buckets is None:
                buckets = self._buckets[endpoint] = [0] * (len(BUCKETS) + 1)
            buckets[slot] += 1
            self._sums[endpoint] += seconds
            self._counts[endpoint] += 1

    def render(self, store: SnapshotStore) -> str:
        w = f'worker="{self._worker}"'
        out = ["# HELP recsys_http_requests_total HTTP requests by endpoint, method and status.",
               "# TYPE recsys_http_requests_total counter"]
        with self._lock:
            requests = sorted(self._requests.items())
            hist = {e: (list(b), self._sums[e], self._counts[e]) for e, b in sorted(self._buckets.items())}
        for (endpoint, method, status), n in requests:
            out.append(f'recsys_http_requests_total{{{w},endpoint="{_label(endpoint)}",method="{method}",'
                       f'status="{status}"}} {n}')
        out += ["# HELP recsys_http_request_duration_seconds Time from routing to response, by endpoint.",
                "# TYPE recsys_http_request_duration_seconds histogram"]
        for endpoint, (buckets, total, count) in hist.items():
            e = f'{w},endpoint="{_label(endpoint)}"'
            running = 0
            for bound, n in zip((*BUCKETS, float("inf")), buckets):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f'recsys_http_request_duration_seconds_bucket{{{e},le="{le}"}} {running}')
            out.append(f"recsys_http_request_duration_seconds_sum{{{e}}} {total:.6f}")
            out.append(f"recsys_http_request_duration_seconds_count{{{e}}} {count}")

        state = store.state
        snap = state.snapshot
        now = time.time()
        out += ["# HELP recsys_snapshot_info The loaded snapshot (value 1), by published version and model.",
                "# TYPE recsys_snapshot_info gauge"]
        if snap is not None:
            out.append(f'recsys_snapshot_info{{{w},version="{_label(snap.version)}",model="{_label(snap.model)}"}} 1')
        out += ["# HELP recsys_snapshot_loaded Whether a snapshot is loaded (readiness).",
                "# TYPE recsys_snapshot_loaded gauge",
                f"recsys_snapshot_loaded{{{w}}} {0 if snap is None else 1}"]
        if snap is not None:
            out += ["# HELP recsys_snapshot_age_seconds Seconds since the served version was published.",
                    "# TYPE recsys_snapshot_age_seconds gauge",
                    f"recsys_snapshot_age_seconds{{{w}}} {now - snap.published_at.timestamp():.3f}",
                    "# HELP recsys_snapshot_loaded_seconds Seconds since this worker loaded the snapshot.",
                    "# TYPE recsys_snapshot_loaded_seconds gauge",
                    f"recsys_snapshot_loaded_seconds{{{w}}} {now - snap.loaded_at:.3f}",
                    "# HELP recsys_snapshot_users Users with personalized recommendations.",
                    "# TYPE recsys_snapshot_users gauge",
                    f"recsys_snapshot_users{{{w}}} {len(snap.users)}"]
        out += ["# HELP recsys_snapshot_reloads_total Snapshots loaded by this worker.",
                "# TYPE recsys_snapshot_reloads_total counter",
                f"recsys_snapshot_reloads_total{{{w}}} {store.reloads}",
                "# HELP recsys_snapshot_reload_failures_total Failed snapshot builds or loads.",
                "# TYPE recsys_snapshot_reload_failures_total counter",
                f"recsys_snapshot_reload_failures_total{{{w}}} {store.reload_failures}",
                "# HELP recsys_denylist_entries Deleted items and erased users being filtered.",
                "# TYPE recsys_denylist_entries gauge",
                f'recsys_denylist_entries{{{w},kind="item"}} {len(state.denylist.items)}',
                f'recsys_denylist_entries{{{w},kind="user"}} {len(state.denylist.user_hashes)}']
        return "\n".join(out) + "\n"

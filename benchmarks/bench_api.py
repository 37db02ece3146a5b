"""Benchmark the recommendation API at Appliances size: snapshot build, latency, throughput, memory.

Writes synthetic gold tables with delta-rs (default 1.8M users x 20 recommendations, 94K items) under ``--out``,
builds the serving snapshot in a child process (wall time and peak RSS), starts real gunicorn on 127.0.0.1 with
the production settings (the gevent worker class, 2 workers), drives it with a keep-alive epoll client at a few
concurrency levels (bounded: ``--requests`` per level and ``--seconds`` per level; 1 and 8 connections always), and
prints p50/p99 latency, req/s and the RSS/PSS of the gunicorn processes from ``/proc/<pid>/smaps_rollup``. Last,
``--stalled`` connections send headers and 1 byte of a declared 1,000-byte body and stop, and the slowest of 20
``/health`` and 20 lookup answers is measured beside them. All of it ``--runs`` times, a fresh gunicorn each: a
percentile varies from start to start (which worker accepts which connection), so its spread is part of the result.

    .venv/bin/python benchmarks/bench_api.py [--users 1800000] [--out /tmp/recsys-bench] [--json]

Goal (2 cores, client on the same machine): lookup p99 < 2 ms at 1 connection, <= 5 ms at 8, >= 1000 req/s,
<= 1.5 GB total, /health and lookups < 100 ms beside 40 stalled clients.
Traffic only ever goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from common import APPLIANCES, arguments, free_port, print_report, save
from deltalake import write_deltalake

from recsys import constants as C
from recsys.serve.server import gunicorn_command, gunicorn_env
from recsys.serve.settings import ServeSettings

HOST = "127.0.0.1"
VERSION = "bench-v1"
MODEL = "implicit_als"
CATEGORIES = ["Appliances", "All_Beauty", "Toys_and_Games", "Home_and_Kitchen"]
STALLED_GIVE_UP_S = 5.0
ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)


# --- synthetic tables ------------------------------------------------------------------------------------------


def _strings(fixed: np.ndarray) -> pa.Array:
    """A numpy ``S{w}`` array of full-width strings as an Arrow string array, without Python objects."""
    n, width = len(fixed), fixed.dtype.itemsize
    offsets = (np.arange(n + 1, dtype=np.int64) * width)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(fixed.tobytes())])


def _constant(value: str, n: int) -> pa.Array:
    return _strings(np.full(n, value.encode(), dtype=f"S{len(value)}"))


def _random_ids(rng: np.random.Generator, n: int, width: int, prefix: bytes = b"") -> np.ndarray:
    body = ALPHABET[rng.integers(0, len(ALPHABET), size=(n, width - len(prefix)))]
    raw = np.concatenate([np.tile(np.frombuffer(prefix, np.uint8), (n, 1)), body], axis=1) if prefix else body
    return np.ascontiguousarray(raw).view(f"S{width}").ravel()


def write_tables(root: Path, users: int, per_user: int, items: int, seed: int = 7) -> tuple[np.ndarray, float]:
    """Write gold recs tables + ops/published + silver/items; return the user ids and the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    user_ids = rng.permutation(np.unique(_random_ids(rng, users, 28)))   # Amazon-like 28-char ids, unsorted
    item_ids = np.unique(_random_ids(rng, items, 10, b"B0"))        # 10-char parent_asin
    n_users, n_items = len(user_ids), len(item_ids)
    popularity = rng.zipf(1.3, size=n_items * 4) % n_items          # skewed item choice, like real recs

    def topk_batches() -> Iterator[pa.RecordBatch]:
        block = 100_000
        for lo in range(0, n_users, block):
            hi = min(n_users, lo + block)
            rows = (hi - lo) * per_user
            picks = popularity[rng.integers(0, len(popularity), size=rows)]
            yield pa.record_batch({
                C.VERSION: _constant(VERSION, rows),
                C.USER_ID: _strings(np.repeat(user_ids[lo:hi], per_user)),
                C.RANK: pa.array(np.tile(np.arange(1, per_user + 1, dtype=np.int32), hi - lo)),
                C.ITEM_ID: _strings(item_ids[picks]),
                C.SCORE: pa.array(np.tile(np.linspace(1.0, 0.5, per_user), hi - lo)),
                C.MODEL: _constant(MODEL, rows),
            })

    first = next(topk_batches())
    write_deltalake(root / C.RECS_USER_TOPK, pa.RecordBatchReader.from_batches(first.schema, topk_batches()),
                    mode="overwrite")
    n_sim = 20
    write_deltalake(root / C.RECS_SIMILAR_ITEMS, pa.table({
        C.VERSION: _constant(VERSION, n_items * n_sim),
        C.ITEM_ID: _strings(np.repeat(item_ids, n_sim)),
        C.RANK: pa.array(np.tile(np.arange(1, n_sim + 1, dtype=np.int32), n_items)),
        "similar_asin": _strings(item_ids[rng.integers(0, n_items, size=n_items * n_sim)]),
        C.SCORE: pa.array(np.tile(np.linspace(0.9, 0.1, n_sim), n_items)),
        "method": _constant("als", n_items * n_sim),
    }), mode="overwrite")
    item_category = rng.integers(0, len(CATEGORIES), size=n_items)
    pop_rows = []
    for name, members in [("__all__", np.arange(n_items))] + [
            (c, np.flatnonzero(item_category == i)) for i, c in enumerate(CATEGORIES)]:
        top = members[:200]
        pop_rows.append(pa.table({C.VERSION: _constant(VERSION, len(top)), C.CATEGORY: _constant(name, len(top)),
                                  C.RANK: pa.array(np.arange(1, len(top) + 1, dtype=np.int32)),
                                  C.ITEM_ID: _strings(item_ids[top]),
                                  C.SCORE: pa.array(np.linspace(1.0, 0.0, len(top)))}))
    write_deltalake(root / C.RECS_POPULAR, pa.concat_tables(pop_rows), mode="overwrite")
    write_deltalake(root / C.SILVER_ITEMS, pa.table({
        C.ITEM_ID: _strings(item_ids), C.CATEGORY: pa.array([CATEGORIES[i] for i in item_category])}),
        mode="overwrite")
    write_deltalake(root / C.PUBLISHED, pa.table({
        C.VERSION: [VERSION], C.MODEL: [MODEL], "run_id": ["bench"],
        "published_at": pa.array([datetime.now(timezone.utc)], pa.timestamp("us", tz="UTC")),
        "k": pa.array([per_user], pa.int32())}), mode="overwrite")
    return user_ids, time.perf_counter() - started


# --- measuring -----------------------------------------------------------------------------------------------


def build_snapshot_timed(root: Path, snapshot_dir: Path) -> dict[str, float]:
    """Build in a child process (as a worker would): wall seconds and the child's peak RSS."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "recsys.serve.snapshot", "--warehouse", str(root),
                    "--snapshot-dir", str(snapshot_dir)], check=True, capture_output=True)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    folder = snapshot_dir / VERSION
    size = sum(p.stat().st_size for p in folder.iterdir())
    return {"build_seconds": round(wall, 2), "build_peak_rss_mb": round(peak_kb / 1024, 1),
            "snapshot_mb": round(size / 2**20, 1)}


def _memory(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value)
    return fields


def _children(master: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/<pid>/stat`` fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent on anything but idling and waiting for I/O (``/proc/stat``)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def gunicorn_memory(master: int) -> dict[str, object]:
    children = _children(master)
    per = {pid: _memory(pid) for pid in [master, *children]}
    mb = lambda kb: round(kb / 1024, 1)  # noqa: E731
    return {"workers": len(children),
            "rss_mb_total": mb(sum(m["Rss"] for m in per.values())),
            "pss_mb_total": mb(sum(m["Pss"] for m in per.values())),
            "private_mb_per_worker": [mb(per[c]["Private_Clean"] + per[c]["Private_Dirty"]) for c in children],
            "rss_mb_per_worker": [mb(per[c]["Rss"]) for c in children]}


def post(path: bytes, body: bytes) -> bytes:
    """A POST of a JSON ``body`` to ``path``, as :func:`drive` takes it among its paths."""
    return (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class _Connection:
    """One keep-alive connection of the load: its paths (or whole requests, :func:`post`), taken in turn, and the
    request it has in flight."""

    def __init__(self, port: int, paths: list[bytes]) -> None:
        self.port, self.paths, self.sent = port, paths, 0
        self.sock = self._open()
        self.sent_at, self.buffer = 0.0, b""

    def _open(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def send(self) -> None:
        path = self.paths[self.sent % len(self.paths)]
        request = path if path.startswith(b"POST ") else b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        self.sent += 1
        self.buffer, self.sent_at = b"", time.perf_counter()
        assert self.sock.send(request) == len(request)      # < 2 KB: the socket buffer takes them

    def receive(self) -> int | None:
        """Read what came; the status once the whole answer is in (the server closing: reopened), else None."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed a connection with a request in flight")
        self.buffer += chunk
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buffer[:head_end].lower()
        at = head.find(b"content-length:")
        line_end = head.find(b"\r\n", at)
        length = 0 if at < 0 else int(head[at + 15:line_end if line_end >= 0 else None])
        if len(self.buffer) < head_end + 4 + length:
            return None
        if b"connection: close" in head:
            self.sock.close()
            self.sock = self._open()
        return int(head[9:12])


def drive(port: int, paths: list[list[bytes]], requests: int, seconds: float,
          give_up_s: float = 60.0) -> tuple[list[float], list[int], int]:
    """Closed-loop load: a keep-alive connection per list of ``paths``, each sending its next request when the answer
    is in, until ``requests`` were sent or ``seconds`` passed. An epoll loop over plain sockets, so the client takes
    little of the CPU it shares with the server (asyncio streams took twice as much). Returns the latencies (s), the
    statuses other than 200 and how many requests were still unanswered ``give_up_s`` after the last was sent."""
    selector = selectors.DefaultSelector()
    connections = [_Connection(port, own) for own in paths]
    latencies: list[float] = []
    errors: list[int] = []
    deadline, budget, in_flight = time.perf_counter() + seconds, requests, 0
    for connection in connections[:budget]:
        connection.send()
        selector.register(connection.sock, selectors.EVENT_READ, connection)
        budget, in_flight = budget - 1, in_flight + 1
    give_up = deadline + give_up_s
    try:
        while in_flight and time.perf_counter() < give_up:
            for key, _ in selector.select(give_up - time.perf_counter()):
                connection = key.data
                sock = connection.sock
                status = connection.receive()
                if status is None:
                    continue
                latencies.append(time.perf_counter() - connection.sent_at)
                if status != 200:
                    errors.append(status)
                if connection.sock is not sock:                  # reopened after "Connection: close"
                    selector.unregister(sock)
                    selector.register(connection.sock, selectors.EVENT_READ, connection)
                if budget > 0 and time.perf_counter() < deadline:
                    connection.send()
                    budget -= 1
                else:
                    in_flight -= 1
    finally:
        selector.close()
        for connection in connections:
            connection.sock.close()
    return latencies, errors, in_flight


def load(port: int, paths: list[bytes], connections: int, requests: int, seconds: float,
         workers: list[int] = ()) -> dict[str, object]:
    """:func:`drive` with ``connections`` connections, and the CPU it took: the share of one core the client used
    (this process), each of ``workers`` (gunicorn worker pids) and everything else on the machine (``other_cpu``),
    over the wall time. The client shares the machine, so on 2 cores client + workers + other near 2.0 means requests
    wait for a CPU; ``other_cpu`` above ~0.1 means the run was not alone."""
    client_before, workers_before = time.process_time(), [_cpu_seconds(pid) for pid in workers]
    machine_before, started = _machine_busy_seconds(), time.perf_counter()
    latencies, errors, _ = drive(port, [paths[c::connections] for c in range(connections)], requests, seconds)
    wall = time.perf_counter() - started
    client_cpu = (time.process_time() - client_before) / wall
    workers_cpu = [(_cpu_seconds(pid) - before) / wall for pid, before in zip(workers, workers_before)]
    other_cpu = (_machine_busy_seconds() - machine_before) / wall - client_cpu - sum(workers_cpu)
    ms = np.array(latencies) * 1000.0
    return {"connections": connections, "requests": len(ms), "errors": len(errors), "seconds": round(wall, 2),
            "req_per_s": round(len(ms) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "client_cpu": round(client_cpu, 2),
            "workers_cpu": [round(share, 2) for share in workers_cpu], "other_cpu": round(max(other_cpu, 0.0), 2)}


def _stall(port: int) -> socket.socket:
    """A client that sends its headers and 1 byte of a declared 1,000-byte body, then nothing."""
    sock = socket.create_connection((HOST, port))
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n[")
    return sock


def beside_stalled(port: int, stalled: int, lookup: bytes) -> dict[str, float]:
    """The slowest of 20 ``/health`` and 20 lookup answers (new connection each) while ``stalled`` clients stall;
    an answer not back within ``STALLED_GIVE_UP_S`` counts as that long (a stack that starves stops the probes)."""
    stalling = [_stall(port) for _ in range(stalled)]
    time.sleep(0.3)
    slowest = {"/health": 0.0, "lookup": 0.0}
    try:
        for _ in range(20):
            for name, path in (("/health", b"/health"), ("lookup", lookup)):
                latencies, _, unanswered = drive(port, [[path]], 1, 0.0, give_up_s=STALLED_GIVE_UP_S)
                slowest[name] = max(slowest[name], STALLED_GIVE_UP_S if unanswered else latencies[0])
    finally:
        for sock in stalling:
            sock.close()
    return {"stalled": stalled, **{f"max_ms {k}": round(v * 1000.0, 2) for k, v in slowest.items()}}


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float) -> float:
    import http.client
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError("API not ready")


def serve_and_measure(args: argparse.Namespace, root: Path, snapshot_dir: Path, paths: list[bytes],
                      server_cpus: set[int] | None) -> dict[str, object]:
    """One run: start gunicorn with the production settings, warm it up, measure each concurrency level, then
    beside stalled clients, and its memory; stop it."""
    port = free_port(HOST)
    settings = ServeSettings(host=HOST, port=port, workers=args.workers,
                             snapshot_dir=snapshot_dir, events_dir=args.out / "events",
                             access_log=not args.no_access_log)
    extra = ["--reuse-port"] if args.reuse_port else []
    with running_gunicorn(root, settings, args.out / "gunicorn.log", extra, server_cpus) as (proc, ready):
        run: dict[str, object] = {"ready_seconds": round(ready, 2)}
        load(port, paths, 4, 2_000, 5)                       # warm the page cache and workers
        workers = _children(proc.pid)
        run["levels"] = []
        for connections in sorted({1, 8} | {int(c) for c in args.connections.split(",")}):
            run["levels"].append(load(port, paths, connections, args.requests, args.seconds, workers))
            print(json.dumps(run["levels"][-1]), file=sys.stderr)
        run["beside_stalled"] = beside_stalled(port, args.stalled, paths[0])
        run["memory"] = gunicorn_memory(proc.pid)
        return run


@contextmanager
def running_gunicorn(root: Path, settings: ServeSettings, log_path: Path, extra: list[str] = (),
                     server_cpus: set[int] | None = None) -> Iterator[tuple[subprocess.Popen, float]]:
    """gunicorn serving ``root`` as ``recsys serve`` would with ``settings``, once ready: (its process, the seconds
    it took to be ready); stopped when the block ends."""
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(gunicorn_command(settings) + list(extra), env=gunicorn_env(root, settings),
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=(lambda: os.sched_setaffinity(0, server_cpus)) if server_cpus else None)
    try:
        yield proc, _wait_ready(settings.port, proc, 120)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/recsys-bench"))
    parser.add_argument("--users", type=int, default=APPLIANCES["users"])
    parser.add_argument("--per-user", type=int, default=20)
    parser.add_argument("--items", type=int, default=APPLIANCES["items"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", default="1,8,32", help="concurrency levels, comma-separated (+ 1 and 8)")
    parser.add_argument("--stalled", type=int, default=40, help="stalled clients beside /health and a lookup")
    parser.add_argument("--requests", type=int, default=20_000, help="max requests per level")
    parser.add_argument("--seconds", type=float, default=15.0, help="max seconds per level")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--reuse-port", action="store_true",
                        help="gunicorn --reuse-port: a listening socket per worker, the kernel spreads connections")
    parser.add_argument("--pin-client", type=int, metavar="CPU",
                        help="run the client on this CPU alone and gunicorn on the others (what the server does "
                             "with cores of its own)")
    parser.add_argument("--reuse", action="store_true", help="reuse the tables already under --out")
    parser.add_argument("--runs", type=int, default=5, help="gunicorn starts measured one after the other: the spread "
                        "of a percentile between runs is part of the result (which worker took which connection)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--result", default="api", help="benchmarks/results/<this>.json (a variant's own name)")
    args = parser.parse_args()

    root, snapshot_dir = args.out / "warehouse", args.out / "snapshots"
    report: dict[str, object] = {"users": args.users, "per_user": args.per_user, "items": args.items}
    if args.reuse and (root / C.PUBLISHED / "_delta_log").is_dir():
        user_ids = None
    else:
        shutil.rmtree(args.out, ignore_errors=True)
        user_ids, seconds = write_tables(root, args.users, args.per_user, args.items)
        report["tables_write_seconds"] = round(seconds, 1)
    shutil.rmtree(snapshot_dir, ignore_errors=True)
    report.update(build_snapshot_timed(root, snapshot_dir))
    print(f"snapshot: {report}", file=sys.stderr)
    if user_ids is None:
        user_ids = np.load(snapshot_dir / VERSION / "users.npy", mmap_mode="r")
    rng = np.random.default_rng(1)
    known = [b"/v1/users/" + u + b"/recommendations?k=10" for u in
             np.asarray(user_ids)[rng.integers(0, len(user_ids), 20_000)].tolist()]
    unknown = [b"/v1/users/UNKNOWN%05d/recommendations?k=10" % i for i in range(2_000)]
    paths = known + unknown                   # ~9 % cold users (popular fallback)
    rng.shuffle(paths)

    server_cpus = None
    if args.pin_client is not None:
        server_cpus = os.sched_getaffinity(0) - {args.pin_client}
        os.sched_setaffinity(0, {args.pin_client})
    runs = [serve_and_measure(args, root, snapshot_dir, paths, server_cpus) for _ in range(args.runs)]
    report["p99_ms"] = {f"{n} conn": [next(lv["p99_ms"] for lv in run["levels"] if lv["connections"] == n)
                                      for run in runs] for n in (1, 8)}
    report["runs"] = runs

    kept = {k: str(v) for k, v in vars(args).items() if k not in ("out", "result")}   # not figures
    report["results"] = str(save(args.result, {"args": kept, **report}))
    if print_report(report, args.json):
        return 0
    for number, run in enumerate(runs, 1):
        print(f"run {number}: " + ", ".join(f"{key}: {value}" for key, value in run.items() if key != "levels"))
        print(f"{'conns':>5} {'reqs':>6} {'errors':>6} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
              f"{'client CPU':>10} {'other CPU':>9}  workers' CPU")
        for lv in run["levels"]:
            print(f"{lv['connections']:>5} {lv['requests']:>6} {lv['errors']:>6} {lv['req_per_s']:>8} "
                  f"{lv['p50_ms']:>7} {lv['p90_ms']:>7} {lv['p99_ms']:>7} {lv['client_cpu']:>10} "
                  f"{lv['other_cpu']:>9}  {lv['workers_cpu']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

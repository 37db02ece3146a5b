"""Benchmark POST /v1/sessions/recommendations at Appliances catalogue size beside the user lookup, through gunicorn.

Writes bench_api's synthetic gold tables (``--users`` × 20 lists over ``--items`` items) and a synthetic GRU4Rec of
``--hidden`` units on every item (random weights: the cost of a forward pass does not depend on what it learnt),
registered as the published run's session model with an HR@20, so the snapshot copies it. Then, through real
gunicorn with the production settings (2 gevent workers), at one keep-alive connection: ``--requests`` sessions of
``--length`` random items, and as many user lookups (GET /v1/users/<id>/recommendations?k=20); p50/p99 of each and
their ratio, ``--runs`` gunicorn starts. In-process, for the split of the cost: the scorer's forward pass alone and
the whole answer (exclusions, top k, decoding), one BLAS thread.

The user route's session blend (recsys.serve.blend): the ledger holds ``--session-length`` recent items (the last
hour's clicks) of ``--session-users`` users, written as the admission writes them; the user lookup is measured for
users without recent items (what the blend costs everyone: one indexed read of the ledger) and for users with them
(their list blended with the session scorer's answer), side by side, then the user lookup again with the blend off
(``serve.session_blend`` 0, another gunicorn start: no read at all; which of the two starts comes first alternates
from run to run). In-process, the ledger read alone.

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_sessions.py [--users 1800000] [--json]

Goal (issue 22): session p99 <= 5 ms at one connection for a 50-item session, 94K items, 128 units; a user lookup
without a recent session no slower than one indexed SQLite read.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
from bench_api import HOST, VERSION, _children, build_snapshot_timed, load, post, running_gunicorn, write_tables
from common import APPLIANCES, arguments, free_port, print_report, save
from deltalake import write_deltalake

from recsys import constants as C
from recsys.delta import read_table
from recsys.serve.ledger import Ledger
from recsys.serve.settings import ServeSettings
from recsys.serve.signing import Signer
from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer

RUN = "bench"                      # bench_api.write_tables publishes its version from this run
URL = b"/v1/sessions/recommendations"
K = 20
KEY = "bench-signing-key-" + "k" * 16     # the workers' signing key: the ledger's pseudonyms are keyed by it


def write_gru4rec(root: Path, hidden: int, seed: int = 3) -> None:
    """A GRU4Rec over every item of silver/items, saved as session_model saves it, registered in the run with an
    HR@20 in ops/runs (what the snapshot build chooses by)."""
    from recsys.session_model import write_embeddings

    asins = read_table(root / C.SILVER_ITEMS, [C.ITEM_ID]).column(C.ITEM_ID)
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = 0.1) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * scale)

    layer = GruLayer(normal(3 * hidden, hidden), normal(3 * hidden, hidden), normal(3 * hidden), normal(3 * hidden))
    weights = Gru4RecWeights(normal(len(asins), hidden), normal(len(asins)), (layer,))
    folder = root / "models" / C.GRU4REC / RUN
    folder.mkdir(parents=True, exist_ok=True)
    write_embeddings(folder, weights, np.arange(len(asins), dtype=np.int32), asins)
    (folder / "model.json").write_text(json.dumps({"name": C.GRU4REC, "params": {"layers": [hidden]}, "info": {},
                                                   "n_items": len(asins)}))
    now = pa.array([datetime.now(timezone.utc)], pa.timestamp("us", tz="UTC"))
    write_deltalake(root / C.MODEL_REGISTRY, pa.table({
        "run_id": [RUN], "model": [C.GRU4REC], "stage": ["candidate"], "model_path": [f"models/{C.GRU4REC}/{RUN}"],
        "params": ["{}"], "metric": pa.array([None], pa.float64()), "reason": [""], "updated_at": now}),
        mode="overwrite")
    write_deltalake(root / C.RUNS, pa.table({
        "run_id": [RUN], "model": [C.GRU4REC], "stage": ["candidate"],
        "metrics": pa.array([[("hr@20", 0.2)]], pa.map_(pa.string(), pa.float64())), "recorded_at": now}),
        mode="overwrite")


def sessions(items: np.ndarray, n: int, length: int, seed: int = 5) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[a.decode() for a in items[rng.integers(0, len(items), length)].tolist()] for _ in range(n)]


def in_process(snapshot_dir: Path, bodies: list[list[str]]) -> dict[str, float]:
    """p50/p99 (ms) of the scorer's forward pass alone and of the whole answer, in this process."""
    from recsys.serve.denylist import DenyList
    from recsys.serve.session_scoring import SessionQuery, recommend
    from recsys.serve.snapshot import Snapshot

    from threadpoolctl import threadpool_limits

    snapshot = Snapshot(snapshot_dir / VERSION)
    scorer, deny = snapshot.session, DenyList()
    out: dict[str, float] = {}
    calls = (("forward", lambda s: scorer.scores(snapshot.item_indices(s))),
             ("answer", lambda s: recommend(snapshot, deny, SessionQuery(s, K))))
    with threadpool_limits(1):                         # as a gunicorn worker runs (recsys.serve.server)
        for name, call in calls:
            for session in bodies[:200]:               # warm the mapping
                call(session)
            times = []
            for session in bodies:
                started = time.perf_counter()
                call(session)
                times.append(time.perf_counter() - started)
            ms = np.array(times) * 1000
            out |= {f"{name}_p50_ms": round(float(np.percentile(ms, 50)), 3),
                    f"{name}_p99_ms": round(float(np.percentile(ms, 99)), 3)}
    return out


def write_recent(root: Path, users: list[str], items: np.ndarray, length: int, seed: int = 11) -> dict[str, float]:
    """``length`` recent items of each of ``users`` in the ledger the workers will read, as the admission records
    them (one transaction per 1,000 users, stamped now); the in-process read's p50/p99 for users with and without."""
    rng = np.random.default_rng(seed)
    settings = ServeSettings().resolved(root)
    assert settings.ledger_path is not None
    ledger, signer = Ledger(settings.ledger_path, settings.session_window_s), Signer([KEY])
    started = time.perf_counter()
    for lo in range(0, len(users), 1_000):
        rows = [(signer.pseudonym(user), item.decode()) for user in users[lo:lo + 1_000]
                for item in items[rng.integers(0, len(items), length)].tolist()]
        with ledger.transaction(time.time(), 20.0) as entry:
            entry.record_recent(rows, settings.max_session_items)
    out = {"recent_rows": len(users) * length, "recent_write_seconds": round(time.perf_counter() - started, 1)}
    others = [f"nobody-{i}" for i in range(5_000)]
    for name, who in (("with", users[:5_000]), ("without", others)):
        times = []
        for user in who:
            t0 = time.perf_counter()
            ledger.recent(signer.pseudonym(user), time.time(), settings.max_session_items)
            times.append(time.perf_counter() - t0)
        us = np.array(times[100:]) * 1e6
        out |= {f"read_{name}_p50_us": round(float(np.percentile(us, 50)), 1),
                f"read_{name}_p99_us": round(float(np.percentile(us, 99)), 1)}
    ledger.close()
    return out


def _source(port: int, path: bytes) -> str:
    """The ``source`` a lookup answers with (the blend is on for users with a recent session)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path.decode())
        return json.loads(conn.getresponse().read())["source"]
    finally:
        conn.close()


def serve_and_measure(root: Path, snapshot_dir: Path, out: Path, workers: int, routes: dict[str, list[bytes]],
                      requests: int, blend: float = 0.5) -> dict[str, object]:
    port = free_port(HOST)
    settings = ServeSettings(host=HOST, port=port, workers=workers, snapshot_dir=snapshot_dir,
                             events_dir=out / "events", signing_keys=[KEY], session_blend=blend)
    with running_gunicorn(root, settings, out / "gunicorn.log") as (proc, ready):
        run: dict[str, object] = {"ready_seconds": round(ready, 2)}
        for paths in routes.values():
            load(port, paths, 2, 1_000, 10)                 # warm the page cache and both workers
        busy = _children(proc.pid)
        sources = {name: _source(port, paths[0]) for name, paths in routes.items() if name.startswith("user")}
        assert sources.get("user_session", "personalized+session") == "personalized+session", sources
        assert sources.get("user", "personalized") == "personalized", sources
        for name, paths in routes.items():
            run[name] = load(port, paths, 1, requests, 60, busy)
            print(name, json.dumps(run[name]), file=sys.stderr)
        return run


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--out", type=Path, default=Path("/tmp/recsys-bench-sessions"))
    parser.add_argument("--users", type=int, default=APPLIANCES["users"])
    parser.add_argument("--items", type=int, default=APPLIANCES["items"])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--length", type=int, default=50, help="items per session")
    parser.add_argument("--requests", type=int, default=5_000, help="per route and run, at one connection")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--session-users", type=int, default=50_000, help="users with recent items in the ledger")
    parser.add_argument("--session-length", type=int, default=20, help="recent items of each (the last hour's)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--result", default="sessions", help="benchmarks/results/<this>.json")
    args = parser.parse_args()

    root, snapshot_dir = args.out / "warehouse", args.out / "snapshots"
    shutil.rmtree(args.out, ignore_errors=True)
    user_ids, seconds = write_tables(root, args.users, 20, args.items)
    write_gru4rec(root, args.hidden)
    report: dict[str, object] = {"users": args.users, "items": args.items, "hidden": args.hidden,
                                 "length": args.length, "tables_write_seconds": round(seconds, 1),
                                 **build_snapshot_timed(root, snapshot_dir)}
    meta = json.loads((snapshot_dir / VERSION / "meta.json").read_text())
    assert meta["session"]["name"] == C.GRU4REC, meta["session"]
    report["live_items"] = meta["session"]["live_items"]
    items = np.load(snapshot_dir / VERSION / "items.npy")
    bodies = sessions(items, args.requests, args.length)
    report["in_process"] = in_process(snapshot_dir, bodies)
    print(f"setup: {report}", file=sys.stderr)

    rng = np.random.default_rng(1)
    ids = np.asarray(user_ids)
    with_session = ids[:args.session_users]                 # write_tables' ids come in random order
    without = ids[args.session_users:]
    report["ledger"] = write_recent(root, [u.decode() for u in with_session.tolist()], items, args.session_length)
    print(f"ledger: {report['ledger']}", file=sys.stderr)

    def lookups(users: np.ndarray) -> list[bytes]:
        return [b"/v1/users/" + u + b"/recommendations?k=%d" % K
                for u in users[rng.integers(0, len(users), args.requests)].tolist()]

    routes = {"session": [post(URL, json.dumps({"items": s, "k": K}).encode()) for s in bodies],
              "user": lookups(without), "user_session": lookups(with_session)}
    off = {"user_blend_off": routes["user"]}
    runs = []
    for number in range(args.runs):
        # which start goes first alternates, so neither side of the blend on/off comparison always finds warmer pages
        starts = [lambda: serve_and_measure(root, snapshot_dir, args.out, args.workers, routes, args.requests),
                  lambda: serve_and_measure(root, snapshot_dir, args.out, args.workers, off, args.requests, blend=0.0)]
        run: dict[str, object] = {}
        for start in starts if number % 2 == 0 else starts[::-1]:
            run |= start()
        runs.append(run)
    names = [*routes, *off]
    report["p99_ms"] = {name: [run[name]["p99_ms"] for run in runs] for name in names}
    report["p50_ms"] = {name: [run[name]["p50_ms"] for run in runs] for name in names}
    report["p99_ratio_session_to_user"] = [round(run["session"]["p99_ms"] / run["user"]["p99_ms"], 2) for run in runs]
    report["runs"] = runs
    report["results"] = str(save(args.result, report))
    if print_report(report, args.json):
        return 0
    print(f"{'run':>3} {'route':>14} {'reqs':>6} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for number, run in enumerate(runs, 1):
        for name in names:
            lv = run[name]
            print(f"{number:>3} {name:>14} {lv['requests']:>6} {lv['errors']:>6} {lv['req_per_s']:>7} "
                  f"{lv['p50_ms']:>7} {lv['p99_ms']:>7} {lv['max_ms']:>7}")
    print("\nuser lookup, p50 / p99 ms per run: no recent session | with one (blended) | blend off")
    for number, run in enumerate(runs, 1):
        print(f"{number:>3} " + " | ".join(f"{run[name]['p50_ms']:.3f} / {run[name]['p99_ms']:.3f}"
                                            for name in ("user", "user_session", "user_blend_off")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GRU4Rec (recsys.sessions.gru4rec) on the next-item task, beside popularity and a last-3-items co-occurrence
baseline, plus training time per epoch at Appliances size and the serving forward pass. No Spark.

MovieLens: each user's ratings in time order (ties by movieId), the last 5 held out, the first of them the target;
every model trains on the rest (item indices from it: a target never seen in training is a miss) and ranks every item
after the user's history, the history's items excluded: HR@20 and MRR@20 (the GRU4Rec papers' metrics).
``--validation`` carves the same split again from the training part (its last 5 held out, the first the target) and
scores there instead: the hand grid of the parameters runs on it, never on the test target (``--params`` sets a
trial, several values several trials; their lines land in the JSON's ``validation`` table).

``--synthetic USERS ITEMS`` times one epoch on sequences of Appliances' shape (1.8M sequences, 94K items, 2.1M
events by default: most sequences one item long, items ∝ a power law, planted next-item chains) and the
``next_scores`` forward of a 50-item session at that catalogue size (one BLAS thread, as an API worker);
``--replicas N [--master URL]`` times the same epoch again trained data-parallel by N Spark tasks (TorchDistributor).

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_gru4rec.py [--validation] [--params '{"n_sample": 256}']
    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_gru4rec.py \
        --ratings "$RECSYS_SHARED_DATA/movielens/ml-1m-partial/ratings.users1-2999.dat.gz"
    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_gru4rec.py --synthetic 1800000 94000
    make cluster-up && flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_gru4rec.py \
        --synthetic 1800000 94000 --replicas 2 --master spark://127.0.0.1:7077
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from common import RESULTS, SHARED_DATA, arguments, save

from recsys.sessions.arrays import Sequences
from recsys.sessions.gru4rec.params import Gru4RecParams
from recsys.sessions.gru4rec.training import fit
from recsys.sessions.gru4rec.weights import Gru4RecWeights

HELD_OUT = 5
K = 20
WINDOW = 3                           # the co-occurrence baseline: items within 3 steps after, from the last 3 items
RATINGS = SHARED_DATA / "movielens" / "ml-latest-small" / "ratings.csv"


def user_sequences(path: Path) -> list[np.ndarray]:
    """Each user's movieIds in time order, ties by movieId; ``path``: a ratings.csv (latest-small) or an ML-1M
    ``UserID::MovieID::Rating::Timestamp`` file (``.dat``, maybe gzipped)."""
    import pandas as pd

    if ".dat" in path.suffixes:
        ratings = pd.read_csv(path, sep="::", engine="python", names=["userId", "movieId", "rating", "timestamp"],
                              usecols=["userId", "movieId", "timestamp"])
    else:
        ratings = pd.read_csv(path, usecols=["userId", "movieId", "timestamp"])
    ratings = ratings.sort_values(["userId", "timestamp", "movieId"], kind="stable")
    return [group.to_numpy() for _, group in ratings.groupby("userId", sort=True)["movieId"]]


def split(sequences: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """(histories, targets): all but the last ``HELD_OUT`` items, and the first held-out one; users whose history
    would be under two items are left out."""
    kept = [s for s in sequences if len(s) >= HELD_OUT + 2]
    return [s[:-HELD_OUT] for s in kept], np.array([s[-HELD_OUT] for s in kept])


def metrics(score, histories: Sequences, targets: np.ndarray) -> dict[str, float]:
    """HR@K and MRR@K of ``score(history) -> float[n_items]`` with the history's items excluded; ``targets`` -1
    (never trained on) are misses."""
    hits, reciprocal = 0, 0.0
    for history, target in zip(histories, targets):
        scores = np.asarray(score(history), np.float64).copy()
        scores[history] = -np.inf
        if target < 0:
            continue
        rank = int((scores > scores[target]).sum() + (scores[:target] == scores[target]).sum())   # ties by index
        if rank < K:
            hits += 1
            reciprocal += 1 / (rank + 1)
    return {f"hr@{K}": round(hits / len(targets), 4), f"mrr@{K}": round(reciprocal / len(targets), 4)}


def cooccurrence(train: Sequences, n_items: int):
    """The score of j after a history: Σ over its last ``WINDOW`` items i of how often j came within ``WINDOW``
    steps after i in training (popularity breaks ties)."""
    import scipy.sparse as sp

    rows, cols = [], []
    for sequence in train:
        for gap in range(1, WINDOW + 1):
            rows.append(sequence[:-gap])
            cols.append(sequence[gap:])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, n_items))
    popularity = np.bincount(train.items, minlength=n_items) / len(train.items)
    return lambda history: np.asarray(counts[history[-WINDOW:]].sum(axis=0)).ravel() + 1e-6 * popularity


def movielens(args) -> dict:
    """The three models on the test (or ``--validation``) split; one GRU4Rec per ``--params`` set."""
    sequences = user_sequences(args.ratings)
    histories, targets = split(sequences)
    if args.validation:
        histories, targets = split(histories)
    vocabulary = np.unique(np.concatenate(histories))
    index = {movie: i for i, movie in enumerate(vocabulary)}
    train = Sequences.from_lists([index[m] for m in h] for h in histories)
    target_index = np.array([index.get(t, -1) for t in targets])
    n_items = len(vocabulary)
    print(f"{len(train)} users, {n_items} items, {len(train.items)} training events "
          f"({'validation' if args.validation else 'test'} targets: {(target_index >= 0).mean():.3f} known)")
    popularity = np.bincount(train.items, minlength=n_items).astype(np.float64)
    rows = {"popularity": metrics(lambda history: popularity, train, target_index),
            f"last-{WINDOW} co-occurrence": metrics(cooccurrence(train, n_items), train, target_index)}
    for overrides in args.params:
        params = Gru4RecParams(**json.loads(overrides))
        epoch_ends = []
        start = time.monotonic()
        weights = fit(train, n_items, params, on_epoch=lambda epoch, loss: epoch_ends.append((time.monotonic(), loss)))
        seconds = np.diff([start] + [end for end, _ in epoch_ends])
        rows[f"gru4rec {overrides}"] = metrics(weights.next_scores, train, target_index) | {
            "seconds_per_epoch": round(float(seconds.mean()), 2), "losses": [round(loss, 4) for _, loss in epoch_ends]}
    print(f"{'model':<70}{'HR@20':>8}{'MRR@20':>8}{'s/epoch':>9}")
    for name, row in rows.items():
        print(f"{name:<70}{row[f'hr@{K}']:>8.4f}{row[f'mrr@{K}']:>8.4f}{row.get('seconds_per_epoch', ''):>9}")
    return {"data": args.ratings.name, "users": len(train), "items": n_items, "events": int(len(train.items)),
            "defaults": Gru4RecParams().model_dump(), "results": rows}


def synthetic_sequences(users: int, items: int, events: int, seed: int = 0) -> Sequences:
    """``users`` sequences, about ``events`` items in all: lengths geometric (from 1, mean events/users), the first item ∝
    a power law (Zipf 0.9), each next one the previous + 1 with probability 0.5, else drawn like the first."""
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(users / events, users)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    drawn = rng.choice(items, size=int(lengths.sum()), p=popularity / popularity.sum()).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    chained = rng.random(len(drawn)) < 0.5
    chained[starts] = False
    for position in np.flatnonzero(chained):              # sequential: a chain follows the item before it
        drawn[position] = (drawn[position - 1] + 1) % items
    return Sequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), drawn)


def synthetic(args) -> dict:
    users, items = args.synthetic
    train = synthetic_sequences(users, items, args.events)
    targets = int((train.lengths - 1).clip(min=0).sum())
    params = Gru4RecParams(**(json.loads(args.params[0]) | {"epochs": 1}))
    print(f"{users} sequences, {items} items, {len(train.items)} events, {targets} training targets")
    start = time.monotonic()
    weights = fit(train, items, params)
    epoch = time.monotonic() - start
    print(f"one epoch: {epoch:.1f} s ({targets / epoch:,.0f} targets/s)")
    result = {"users": users, "items": items, "events": int(len(train.items)), "targets": targets,
              "params": params.model_dump(), "seconds_per_epoch": round(epoch, 1), "forward": forward_latency(weights)}
    if args.replicas > 1:
        result["distributed"] = distributed_epoch(args, train, items, params, epoch)
    return {"synthetic": result}


def distributed_epoch(args, train: Sequences, items: int, params: Gru4RecParams, alone: float) -> dict:
    """The same epoch trained by ``--replicas`` Spark tasks (TorchDistributor, gradients averaged over gloo every
    mini-batch) on ``--master``: the wall time of ``fit_distributed``, Spark job and torchrun start included."""
    from common import spark_session

    from recsys.sessions.gru4rec.distributed import fit_distributed, replica_count

    from recsys.spark import task_slots

    master = args.master or f"local[{args.replicas}]"
    spark = spark_session(master=master)
    try:
        deadline = time.monotonic() + 60
        while task_slots(spark) < args.replicas and time.monotonic() < deadline:   # a cluster's executors register
            time.sleep(1)
        replicas = replica_count(args.replicas, task_slots(spark))
        start = time.monotonic()
        fit_distributed(train, items, params, replicas)
        epoch = time.monotonic() - start
    finally:
        spark.stop()
    print(f"one epoch in {replicas} replicas on {master}: {epoch:.1f} s; one process / replicas: "
          f"{alone / epoch:.2f}x")
    return {"master": master, "replicas": replicas, "seconds_per_epoch": round(epoch, 1),
            "speedup": round(alone / epoch, 2)}


def forward_latency(weights: Gru4RecWeights, session: int = 50, calls: int = 2000) -> dict:
    """``next_scores`` of a ``session``-item session, one BLAS thread (an API worker's setting): ms percentiles."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(1)
    sessions = rng.integers(0, weights.n_items, (calls, session))
    with threadpool_limits(1):
        for items in sessions[:100]:
            weights.next_scores(items)
        times = []
        for items in sessions:
            begin = time.perf_counter()
            weights.next_scores(items)
            times.append(time.perf_counter() - begin)
    ms = np.array(times) * 1e3
    result = {"session_items": session, "p50_ms": round(float(np.percentile(ms, 50)), 3),
              "p99_ms": round(float(np.percentile(ms, 99)), 3)}
    print(f"next_scores, {session} items, {weights.n_items} items: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    return result


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--ratings", type=Path, default=RATINGS)
    parser.add_argument("--params", nargs="+", default=["{}"], help="Gru4RecParams overrides, as JSON: one "
                        "GRU4Rec per value")
    parser.add_argument("--validation", action="store_true", help="score on the validation split (grid search)")
    parser.add_argument("--synthetic", type=int, nargs=2, metavar=("USERS", "ITEMS"))
    parser.add_argument("--events", type=int, default=2_100_000, help="with --synthetic")
    parser.add_argument("--replicas", type=int, default=1, help="with --synthetic: also time the epoch trained "
                        "data-parallel by this many Spark tasks (TorchDistributor)")
    parser.add_argument("--master", help="with --replicas: the Spark master (default local[REPLICAS]), e.g. "
                        "spark://127.0.0.1:7077 after make cluster-up")
    args = parser.parse_args()
    path = RESULTS / "gru4rec.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    if args.synthetic:
        result = synthetic(args)
    else:   # the default ratings under "movielens" / "validation", another file under "<key> <its folder>"
        suffix = "" if args.ratings == RATINGS else f" {args.ratings.parent.name}"
        if args.validation:
            key = f"validation{suffix}"
            result = {key: previous.get(key, {}) | movielens(args)["results"]}
        else:
            result = {f"movielens{suffix}": movielens(args)}
    print(f"wrote {save('gru4rec', result, merge=True)}")


if __name__ == "__main__":
    main()

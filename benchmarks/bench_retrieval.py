"""Candidate retrieval at catalogue scale: the HNSW inner-product index (recsys.retrieval) against exact scoring
(recsys.models.topk), side by side, on synthetic ALS-like factors at several catalogue sizes.

Per size: index build time (faiss threads: --build-threads), candidate recall@N against exact on a sample of users,
the time per user of the publish path's per-task code (``recsys.retrieval.spark``'s mapInArrow function fed Arrow
batches of every user: index file load, search in blocks, lists built; one faiss thread, as in a one-core task), and
exact scoring per user (``topk_products``, the exact publish kernel) on the sample — the whole population would take
hours at 4M items. Goals: recall@100 ≥ 0.95 at every size; time per user ≤ 2× from the smallest to the largest.

Factors: 64 dimensions; item directions around 512 topics, item norms log-normal (σ 0.6: popular items score
higher, as ALS norms do); a user is the mean direction of 5 items drawn by popularity (norm²) plus noise.

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_retrieval.py [--items 94000 1000000 4000000]

Writes benchmarks/results/retrieval.json and docs/img/retrieval.png (the README's plot; ``--plot-only`` redraws it
from the saved results).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, ROOT, arguments, pyplot, save, save_figure

PLOT = ROOT / "docs" / "img" / "retrieval.png"


def als_like_factors(items: int, users: int, dims: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors, user vectors), float32. Generated in chunks so that 4M items stay within ~2 GB."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((512, dims)).astype(np.float32)
    vectors = np.empty((items, dims), dtype=np.float32)
    norms = rng.lognormal(0.0, 0.6, items).astype(np.float32)
    for start in range(0, items, 1 << 20):
        stop = min(start + (1 << 20), items)
        chunk = topics[rng.integers(0, 512, stop - start)] + rng.standard_normal((stop - start, dims), np.float32)
        vectors[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True) * norms[start:stop, None]
    popularity = norms.astype(np.float64) ** 2
    picks = rng.choice(items, size=(users, 5), p=popularity / popularity.sum())
    mixed = (vectors[picks] / norms[picks][..., None]).mean(axis=1)
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return vectors, (mixed + 0.5 / np.sqrt(dims) * rng.standard_normal((users, dims))).astype(np.float32)


def per_task_seconds(path: Path, users: np.ndarray, n: int, settings) -> tuple[float, int]:
    """The Spark entry's task function over every user (Arrow batches of 10,000 rows, as Spark sends them), in this
    process: seconds, and the number of candidates it returned."""
    import pyarrow as pa

    from recsys.retrieval import spark as retrieval_spark

    retrieval_spark._LOADED.clear()
    flat = pa.array(users.reshape(-1))
    offsets = np.arange(0, users.size + 1, users.shape[1], dtype=np.int32)

    def batches():
        for start in range(0, users.shape[0], 10_000):
            stop = min(start + 10_000, users.shape[0])
            features = pa.ListArray.from_arrays(pa.array(offsets[start:stop + 1] - offsets[start]),
                                                flat.slice(offsets[start], offsets[stop] - offsets[start]))
            keys = pa.array(np.arange(start, stop, dtype=np.int32))
            seen = pa.nulls(stop - start, pa.list_(pa.int32()))
            yield pa.RecordBatch.from_arrays([keys, features, seen], names=["user_idx", "features", "seen"])

    started = time.perf_counter()
    found = sum(len(batch.column("items").flatten())
                for batch in retrieval_spark._candidate_batches(str(path), n, settings)(batches()))
    return time.perf_counter() - started, found


def measure(items: int, args, settings, scratch: Path) -> dict:
    import faiss

    from recsys.models.topk import Catalogue, topk_products
    from recsys.retrieval.ann import AnnIndex, candidate_recall

    item_vectors, users = als_like_factors(items, args.users, args.factors, seed=items)
    ids = np.arange(items, dtype=np.int32)
    sample = np.random.default_rng(1).choice(args.users, args.sample, replace=False)
    result: dict = {"items": items}

    faiss.omp_set_num_threads(args.build_threads)
    started = time.perf_counter()
    index = AnnIndex.build(ids, item_vectors, settings)
    result["build_s"] = time.perf_counter() - started
    path = scratch / f"items-{items}.ann"
    index.save(path)
    result["index_bytes"] = path.stat().st_size

    faiss.omp_set_num_threads(1)
    topk_products(users[:2], Catalogue.of(item_vectors[:4096]), args.n)         # compile outside the timing
    started = time.perf_counter()
    exact_cols, exact_scores = topk_products(users[sample], Catalogue.of(item_vectors), args.n)
    result["exact_ms_per_user"] = (time.perf_counter() - started) / args.sample * 1e3
    for ef in sorted({*args.ef, settings.ef_search}):
        index.settings = settings.model_copy(update={"ef_search": ef})
        started = time.perf_counter()
        found, _ = index.search_columns(users[sample], args.n)
        result[f"recall_ef{ef}"] = candidate_recall(found, exact_cols, exact_scores)
        result[f"search_ms_per_user_ef{ef}"] = (time.perf_counter() - started) / args.sample * 1e3
    result["recall"] = result[f"recall_ef{settings.ef_search}"]
    head_only = np.isin(exact_cols, index.head)
    result["exact_top_in_head"] = float(head_only[np.isfinite(exact_scores)].mean())
    del index
    seconds, found = per_task_seconds(path, users, args.n, settings)
    result["publish_s"] = seconds
    result["publish_ms_per_user"] = seconds / args.users * 1e3
    result["candidates_per_user"] = found / args.users
    path.unlink()
    return result


def publish_ms(rows: list[dict], ann_min_items: int) -> list[float]:
    """Time per user of what publish uses at each size: exact scoring below ``ann_min_items``, the index from there."""
    return [row["exact_ms_per_user"] if row["items"] < ann_min_items else row["publish_ms_per_user"] for row in rows]


def plot(rows: list[dict], ann_min_items: int, out: Path) -> None:
    """Time per user (the index's publish path, exact scoring) and recall@N against the catalogue size."""
    plt = pyplot()
    items = [row["items"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(items, [row["publish_ms_per_user"] for row in rows], "o-", label="HNSW index (publish path)")
    left.plot(items, [row["exact_ms_per_user"] for row in rows], "s--", label="exact scoring")
    production = publish_ms(rows, ann_min_items)
    left.plot(items, production, "k:", label=f"what publish uses (index from {ann_min_items:,} items)")
    left.set_yscale("log")
    left.set_ylabel("ms per user (one core)")
    right.plot(items, [row["recall"] for row in rows], "o-")
    right.set_ylim(0.9, 1.001)
    right.axhline(0.95, color="grey", lw=0.8, ls="--")
    right.set_ylabel("candidate recall@100 vs exact")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("catalogue items")
        ax.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    save_figure(fig, out)


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--items", type=int, nargs="+", default=[94_000, 1_000_000, 4_000_000])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--sample", type=int, default=2_000, help="users whose exact top N is computed")
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--n", type=int, default=100, help="candidates per user")
    p.add_argument("--ef", type=int, nargs="*", default=[32, 128], help="other efSearch values to report")
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--exact-head", type=int, help="override retrieval.exact_head (0: the graph alone)")
    p.add_argument("--plot-only", action="store_true", help="redraw docs/img/retrieval.png from the saved results")
    args = p.parse_args()

    from recsys.config import load_settings

    settings = load_settings().retrieval
    if args.exact_head is not None:
        settings = settings.model_copy(update={"exact_head": args.exact_head})
    scratch = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    path = RESULTS / "retrieval.json"
    sizes = json.loads(path.read_text()).get("sizes", {}) if path.is_file() else {}   # one run per size is fine
    try:
        for items in [] if args.plot_only else args.items:
            sizes[str(items)] = measure(items, args, settings, scratch)
            print(sizes[str(items)], flush=True)
            save("retrieval", {"args": vars(args), "settings": settings.model_dump(), "sizes": sizes})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = sorted(sizes.values(), key=lambda row: row["items"])
    plot(rows, settings.ann_min_items, PLOT)
    print(f"\n{args.users:,} users, {args.factors} factors, top {args.n}; exact head {settings.exact_head:,} items, "
          f"HNSW M={settings.hnsw_m} efConstruction={settings.ef_construction} efSearch={settings.ef_search} "
          f"for the tail's {settings.tail_candidates}; recall and exact on {args.sample:,} users")
    print(f"{'items':>10} {'build s':>8} {'recall':>7} {'in head':>8} {'ANN ms/user':>12} {'exact ms/user':>14} "
          f"{'exact/ANN':>10}")
    for row in rows:
        print(f"{row['items']:>10,} {row['build_s']:>8.1f} {row['recall']:>7.3f} {row['exact_top_in_head']:>8.3f} "
              f"{row['publish_ms_per_user']:>12.3f} {row['exact_ms_per_user']:>14.3f} "
              f"{row['exact_ms_per_user'] / row['publish_ms_per_user']:>9.1f}×")
    growth = rows[-1]["publish_ms_per_user"] / rows[0]["publish_ms_per_user"]
    used = publish_ms(rows, settings.ann_min_items)
    print(f"time per user, {rows[-1]['items']:,} vs {rows[0]['items']:,} items: index at both {growth:.2f}×, what "
          f"publish uses (exact below {settings.ann_min_items:,} items) {used[-1] / used[0]:.2f}× (goal ≤ 2×); "
          f"lowest recall {min(r['recall'] for r in rows):.3f} (goal ≥ 0.95); plot: {PLOT.relative_to(ROOT)}")
    if not args.plot_only:
        print("results:", save("retrieval", {"args": vars(args), "settings": settings.model_dump(), "sizes": sizes,
                                             "ann_growth": growth}))


if __name__ == "__main__":
    main()

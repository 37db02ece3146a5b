"""The DPP re-rank (recsys.rerank.dpp) at publish scale: lists per second of the batched kernel at k = 10 from 200
candidates of 64 dimensions (one core: the kernel is compiled, single-threaded, as one Spark task runs it), against
the single-list path, and what each strength does to the lists: intra-list diversity and the share of the
relevance top 10 kept.

Candidates: each user's exact top 200 on the synthetic ALS-like factors of ``bench_retrieval.py`` (94K items), the
relevance their scores, the embeddings the item factors.

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_dpp.py [--users 20000]
"""

from __future__ import annotations

import time

import numpy as np
from bench_retrieval import als_like_factors
from common import arguments, save


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--users", type=int, default=20_000)
    p.add_argument("--items", type=int, default=94_000)
    p.add_argument("--candidates", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0])
    args = p.parse_args()

    from recsys.models.topk import Catalogue, topk_products
    from recsys.rerank.dpp import intra_list_diversity, rerank, rerank_batch, unit_rows

    items, users = als_like_factors(args.items, args.users)
    candidates, relevance = topk_products(users, Catalogue.of(items), args.candidates)
    unit = unit_rows(items)
    rerank_batch(relevance[:2], candidates[:2], unit, args.k, 0.5, unit=True)        # compile outside the timing
    rows = []
    for strength in args.strengths:
        started = time.perf_counter()
        ranked = rerank_batch(relevance, candidates, unit, args.k, strength, unit=True)
        seconds = time.perf_counter() - started
        lists = np.take_along_axis(candidates, ranked, axis=1)
        kept = np.mean([np.isin(row, top).mean() for row, top in zip(lists, candidates[:, :args.k])])
        rows.append({"strength": strength, "lists_per_s": args.users / seconds,
                     "intra_list_diversity": intra_list_diversity(lists, items), "top_k_kept": float(kept)})
    single = min(2_000, args.users)
    started = time.perf_counter()
    for row in range(single):
        rerank(relevance[row], items[candidates[row]], args.k, 0.5)
    single_rate = single / (time.perf_counter() - started)
    batched = np.mean([r["lists_per_s"] for r in rows if r["strength"] > 0])

    print(f"{args.users:,} lists, k = {args.k} from {args.candidates} candidates, {items.shape[1]} dimensions")
    print(f"{'strength':>9} {'lists/s':>10} {'diversity':>10} {'top-k kept':>11}")
    for r in rows:
        print(f"{r['strength']:>9.2f} {r['lists_per_s']:>10,.0f} {r['intra_list_diversity']:>10.3f} "
              f"{r['top_k_kept']:>11.3f}")
    print(f"batched (strength > 0, mean): {batched:,.0f} lists/s; single-list rerank(): {single_rate:,.0f} lists/s")
    print("results:", save("dpp", {"args": vars(args), "strengths": rows, "batched_lists_per_s": batched,
                                   "single_lists_per_s": single_rate}))


if __name__ == "__main__":
    main()

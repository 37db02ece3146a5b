"""Recommend-for-all, side by side in one run: our blocked-GEMM top-K (recsys.models.factors, the path
publish uses) vs Spark MLlib's ``recommendForAllUsers`` vs the GEMM bound (users × items × factors × 2
FLOP at this machine's measured SGEMM rate), and vs the same products timed alone at publish's block shape.
Goals: ≥ 3× faster than recommendForAllUsers, ≤ 1.5× the bound.

    .venv/bin/python benchmarks/bench_publish.py [--users 200000 --items 20000 --factors 64 --k 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import save, spark_session, timer


def sgemm_rate(n: int = 2048, repeats: int = 3) -> float:
    """Measured single-precision GEMM FLOP/s with this process's BLAS (all cores)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(repeats):
        a @ a
    return 2 * n ** 3 * repeats / (time.perf_counter() - start)


def blocked_gemm_seconds(users: int, items: int, factors: int, block: int = 1024) -> float:
    """The scoring products alone, at publish's shape (``block`` users × ``factors`` @ ``factors`` × items per
    call, into one reused buffer, all cores): the floor of any exact recommend-for-all at this shape. With 64
    factors the product is bound by writing the scores, not by FLOPs, so it runs well below the square-SGEMM rate."""
    rng = np.random.default_rng(2)
    item_t = np.ascontiguousarray(rng.standard_normal((items, factors), dtype=np.float32).T)
    queries = rng.standard_normal((block, factors), dtype=np.float32)
    out = np.empty((block, items), dtype=np.float32)
    np.matmul(queries, item_t, out=out)
    blocks = -(-users // block)
    start = time.perf_counter()
    for _ in range(blocks):
        np.matmul(queries, item_t, out=out)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--k", type=int, default=30)
    args = p.parse_args()

    from pyspark.ml.recommendation import ALS, ALSModel
    from pyspark.sql import functions as F

    import tempfile
    from pathlib import Path

    from recsys.models.factors import FactorModel, numpy_to_factors

    spark = spark_session()
    rng = np.random.default_rng(1)
    scratch = Path(tempfile.mkdtemp(prefix="bench-publish-"))

    def factors(n, name):
        matrix = rng.standard_normal((n, args.factors), dtype=np.float32)
        return numpy_to_factors(spark, np.arange(n, dtype=np.int32), matrix, scratch / name)

    users, items = factors(args.users, "users").cache(), factors(args.items, "items").cache()
    users.count(), items.count()
    t: dict[str, float] = {}
    ours = FactorModel("bench", {}, users, items, seen=None)
    with timer(t, "ours"):
        ours.recommend(k=args.k, exclude_seen=False).write.format("noop").mode("overwrite").save()

    # A real ALSModel over the same factors: fit a tiny model for the Java object, then swap its factors in.
    tiny = spark.createDataFrame([(0, 0, 1.0)], "user_idx int, item_idx int, weight float")
    als = ALS(rank=args.factors, maxIter=1, implicitPrefs=True, userCol="user_idx", itemCol="item_idx",
              ratingCol="weight").fit(tiny)
    jmodel = spark._jvm.org.apache.spark.ml.recommendation.ALSModel(
        als._java_obj.uid(), args.factors, users._jdf, items._jdf)
    jmodel.setUserCol("user_idx").setItemCol("item_idx")
    model = ALSModel(jmodel)
    with timer(t, "recommendForAllUsers"):
        model.recommendForAllUsers(args.k).select(F.explode("recommendations")).write.format("noop") \
            .mode("overwrite").save()

    rate = sgemm_rate()
    t["gemm_bound"] = args.users * args.items * args.factors * 2 / rate
    t["gemm_same_shape"] = blocked_gemm_seconds(args.users, args.items, args.factors)
    ratios = {"recommendForAllUsers_vs_ours": t["recommendForAllUsers"] / t["ours"],
              "ours_vs_gemm_bound": t["ours"] / t["gemm_bound"],
              "ours_vs_gemm_same_shape": t["ours"] / t["gemm_same_shape"]}
    print(f"{args.users:,} users × {args.items:,} items × {args.factors} factors, top-{args.k}; "
          f"SGEMM {rate / 1e9:.1f} GFLOP/s")
    for key, value in t.items():
        print(f"  {key:<22} {value:>8.2f} s")
    print(f"  recommendForAllUsers / ours  {ratios['recommendForAllUsers_vs_ours']:.2f}×   (goal ≥ 3×)")
    print(f"  ours / GEMM bound            {ratios['ours_vs_gemm_bound']:.2f}×   (goal ≤ 1.5×)")
    print(f"  ours / same-shape GEMM       {ratios['ours_vs_gemm_same_shape']:.2f}×   (the products alone, "
          f"{args.users * args.items * args.factors * 2 / t['gemm_same_shape'] / 1e9:.0f} GFLOP/s)")
    print("results:", save("publish", {"args": vars(args), "seconds": t, "sgemm_gflops": rate / 1e9,
                                       "ratios": ratios}))


if __name__ == "__main__":
    main()

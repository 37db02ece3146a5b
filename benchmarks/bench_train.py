"""Training cost, side by side on the same matrix in one run:

- our implicit step (recsys.models.implicit_als.fit: CSR from a Spark DataFrame, fit, factors written in
  Spark's layout) vs calling ``implicit`` directly on the same CSR (goal ≤ 1.25×);
- our Spark ALS step (recsys.models.spark_als.fit) vs a bare MLlib ``ALS.fit`` on the same cached
  DataFrame (goal ≤ 1.2×);
- Spark ALS vs implicit (15–20× measured here on 2 cores).

    .venv/bin/python benchmarks/bench_train.py [--users 200000 --items 20000 --nnz 370000 | --size appliances] [--factors 64 --iterations 10 --repeats 3]
"""

from __future__ import annotations


import numpy as np
from common import APPLIANCES, arguments, power_law_interactions, save, spark_session, timer


SIZES = {"appliances": (APPLIANCES["users"], APPLIANCES["items"], APPLIANCES["reviews"])}   # that dump's matrix


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--nnz", type=int, default=370_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="implicit runs per side (best kept)")
    p.add_argument("--size", choices=sorted(SIZES), help="preset matrix (overrides --users/--items/--nnz); "
                   "results go to results/train-<size>.json")
    args = p.parse_args()
    if args.size:
        args.users, args.items, args.nnz = SIZES[args.size]

    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from pyspark.ml.recommendation import ALS
    from threadpoolctl import threadpool_limits

    from recsys.models import implicit_als, spark_als
    from recsys.models.params import ALSParams

    spark = spark_session()
    users, items = power_law_interactions(args.users, args.items, args.nnz)
    weights = np.ones_like(users, dtype=np.float32)
    import pyarrow as pa

    df = spark.createDataFrame(pa.table({"user_idx": users, "item_idx": items, "weight": weights}))
    df = df.cache()
    df.count()
    params = ALSParams(factors=args.factors, regularization=0.05, alpha=10.0, iterations=args.iterations)
    t: dict[str, float] = {}

    csr = sp.csr_matrix((weights, (users, items)), shape=(int(users.max()) + 1, int(items.max()) + 1))
    for _ in range(args.repeats):   # alternated, best of N: neither side pays the first run's warm-up alone
        trial: dict[str, float] = {}
        with threadpool_limits(limits=1, user_api="blas"), timer(trial, "implicit_bare"):
            AlternatingLeastSquares(factors=args.factors, regularization=0.05, alpha=10.0,
                                    iterations=args.iterations, random_state=42).fit(csr, show_progress=False)
        with timer(trial, "implicit_ours"):
            implicit_als.fit(df, params)
        for key, value in trial.items():
            t[key] = min(t.get(key, value), value)

    with timer(t, "spark_als_bare"):
        model = ALS(rank=args.factors, maxIter=args.iterations, regParam=0.05, alpha=10.0, implicitPrefs=True,
                    userCol="user_idx", itemCol="item_idx", ratingCol="weight", seed=42).fit(df)
        model.userFactors.count(), model.itemFactors.count()
    with timer(t, "spark_als_ours"):
        spark_als.fit(df, params)

    ratios = {"implicit_ours_vs_bare": t["implicit_ours"] / t["implicit_bare"],
              "spark_als_ours_vs_bare": t["spark_als_ours"] / t["spark_als_bare"],
              "spark_als_vs_implicit": t["spark_als_ours"] / t["implicit_ours"]}
    print(f"matrix: {args.users:,} users × {args.items:,} items, {len(users):,} non-zeros, "
          f"{args.factors} factors, {args.iterations} iterations")
    for key, value in t.items():
        print(f"  {key:<18} {value:>8.2f} s")
    print(f"  ours/bare implicit  {ratios['implicit_ours_vs_bare']:.2f}×   (goal ≤ 1.25×)")
    print(f"  ours/bare Spark ALS {ratios['spark_als_ours_vs_bare']:.2f}×   (goal ≤ 1.2×)")
    print(f"  Spark ALS/implicit  {ratios['spark_als_vs_implicit']:.1f}×")
    name = f"train-{args.size}" if args.size else "train"
    print("results:", save(name, {"args": vars(args), "seconds": t, "ratios": ratios}))


if __name__ == "__main__":
    main()

"""Evaluation vs writing the top-K it judges, side by side in one run, on the same factors and users.

- write: the publish path, top-(K + spare) per user scored and written to a Delta table;
- evaluate: what ``jobs/evaluate.py`` does per model (``recsys.evaluate.runner.evaluate_model``): top-100 lists,
  MAP/NDCG/precision/recall/hit-rate/MRR at every K of conf, coverage, novelty, diversity, popularity bias, and
  the curves over K = 1..100, for every user with a test interaction (about half of them here, against about
  4 % in the Appliances-size pipeline run, so this is the harder case).

Goal: evaluate ≤ 3× write.

    .venv/bin/python benchmarks/bench_evaluate.py [--users 400000 --items 94000 --factors 64]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import arguments, power_law_interactions, save, spark_session, timer


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--users", type=int, default=400_000)
    p.add_argument("--items", type=int, default=94_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--train-per-user", type=float, default=1.2, help="mean training interactions per user")
    args = p.parse_args()

    from pyspark.sql import functions as F

    from recsys import constants as C
    from recsys.config import load_settings
    from recsys.evaluate.runner import EvaluationData, evaluate_model
    from recsys.models.factors import FactorModel, numpy_to_factors

    settings = load_settings()
    spark = spark_session()
    rng = np.random.default_rng(1)
    scratch = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    try:
        def factors(n: int, name: str):
            matrix = rng.standard_normal((n, args.factors), dtype=np.float32)
            return numpy_to_factors(spark, np.arange(n, dtype=np.int32), matrix, scratch / name).cache()

        def pairs(nnz: int, seed: int, name: str):
            u, i = power_law_interactions(args.users, args.items, nnz, seed=seed)
            import pyarrow as pa
            import pyarrow.parquet as pq

            (scratch / name).mkdir()
            pq.write_table(pa.table({C.USER_IDX: u, C.ITEM_IDX: i}), scratch / name / "part-0.parquet")
            return spark.read.parquet(str(scratch / name)).cache()

        users, items = factors(args.users, "users"), factors(args.items, "items")
        fit = pairs(int(args.users * args.train_per_user), 2, "fit")
        test = (pairs(args.users, 3, "test").join(fit, [C.USER_IDX, C.ITEM_IDX], "left_anti")
                .withColumn(C.TIMESTAMP, F.lit(0).cast("long")).cache())     # one time: the next-item target ties
        print(f"{args.users:,} users × {args.items:,} items × {args.factors} factors; {fit.count():,} training "
              f"and {test.count():,} test interactions ({test.select(C.USER_IDX).distinct().count():,} test users)")
        model = FactorModel("bench", {}, users, items, seen=fit)
        k = settings.publish.k + settings.publish.spare
        t: dict[str, float] = {}
        with timer(t, "write_topk"):
            model.recommend(k=k).withColumn(C.VERSION, F.lit("bench")).write.format("delta").mode("overwrite") \
                .save(str(scratch / "recs_user_topk"))
        conf = settings.evaluate
        with timer(t, "evaluate"):
            data = EvaluationData.of(fit, test, args.items)
            metrics, curves = evaluate_model(model, data, conf.ks, conf.curve_max_k)
            data.unpersist()
        ratio = t["evaluate"] / t["write_topk"]
        print(f"  write top-{k} (Delta)        {t['write_topk']:>8.1f} s")
        print(f"  evaluate (K={conf.ks}, curves to {conf.curve_max_k})  {t['evaluate']:>8.1f} s   "
              f"map@10 {metrics['map@10']:.5f} over {metrics['users']:,} users")
        print(f"  evaluate / write             {ratio:.2f}×   (goal ≤ 3×)")
        print("results:", save("evaluate", {"args": vars(args), "k_written": k, "ks": conf.ks,
                                            "curve_max_k": conf.curve_max_k, "seconds": t,
                                            "ratios": {"evaluate_vs_write_topk": ratio},
                                            "evaluated_users": metrics["users"]}))
    finally:
        spark.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

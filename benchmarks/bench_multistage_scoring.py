"""The multi-stage model's scoring against its candidates per retriever: one model fitted on train + valid (its ranker
trained on ``per_retriever`` candidates per retriever), then every test user scored with each
``score_per_retriever`` — MAP@10 / recall@10 on test and users per second side by side, so the default trades
little accuracy for scoring time (evaluation and publish score every user through it).

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_multistage_scoring.py [--values 100 50 30]
    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_multistage_scoring.py \\
        --warehouse WH --model-json WH/models/multistage/<run_id>/model.json --name appliances

Default: MovieLens latest-small (last 5 per user held out, rating-weighted) loaded into a scratch warehouse, the
model's parameters those ``benchmarks/real_data.py`` recorded for it (the run's tuned retrievers). ``--warehouse``:
any warehouse with train/valid/test splits (e.g. an Appliances-size pipeline run's), the parameters from a saved
multi-stage model's ``model.json``. Results: ``benchmarks/results/multistage_scoring.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import RESULTS, SHARED_DATA, arguments, save, spark_session

RATED = {"base_weight": 0.0, "rating_weight": 1.0, "rating_power": 1.0, "verified_weight": 0.0,
         "helpful_weight": 0.0, "half_life_days": None}


def movielens_warehouse(spark, work: Path) -> tuple[Path, dict]:
    """MovieLens last-5 rating-weighted in ``work`` and the multi-stage params real_data recorded for it."""
    from recsys.benchmark_data import load_benchmark
    from recsys.config import load_settings
    from recsys.features import build_features

    settings = load_settings(warehouse=work / "wh", reports=work / "reports")
    settings.features.split = settings.features.split.model_copy(update={"strategy": "leave_last_out", "holdout": 5})
    settings.features.confidence = settings.features.confidence.model_copy(update=RATED)
    load_benchmark(spark, SHARED_DATA / "movielens/ml-latest-small", settings.warehouse, "movielens")
    build_features(spark, settings.warehouse, settings.features)
    recorded = json.loads((RESULTS / "real_data.json").read_text())["movielens-llo5"]["models"]["multistage"]
    return settings.warehouse, recorded["params"]


def test_truth(spark, warehouse: Path) -> dict[int, list[int]]:
    from recsys import constants as C
    from recsys.train import training_data

    rows = training_data(spark, warehouse, ["test"]).select(C.USER_IDX, C.ITEM_IDX).toArrow()
    truth: dict[int, list[int]] = {}
    for user, item in zip(rows.column(0).to_pylist(), rows.column(1).to_pylist()):
        truth.setdefault(user, []).append(item)
    return truth


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--values", type=int, nargs="+", default=[100, 50, 30], help="score_per_retriever values")
    parser.add_argument("--warehouse", type=Path, help="an existing warehouse (default: MovieLens, built here)")
    parser.add_argument("--model-json", type=Path, help="with --warehouse: a multi-stage model.json for its params")
    parser.add_argument("--name", default="movielens-llo5", help="the results' key")
    args = parser.parse_args()

    import pyspark.sql.functions as F

    from recsys import constants as C
    from recsys.loading import fit_model
    from recsys.metrics import python_metrics as PM
    from recsys.train import model_items, training_data

    spark = spark_session()
    work = Path(tempfile.mkdtemp(prefix="bench-multistage-scoring-"))
    try:
        if args.warehouse is None:
            warehouse, params = movielens_warehouse(spark, work)
        else:
            warehouse = args.warehouse
            params = json.loads(args.model_json.read_text())["params"] if args.model_json else {}
        truth = test_truth(spark, warehouse)
        data = training_data(spark, warehouse, ["train", "valid"]).cache()
        started = time.perf_counter()
        model = fit_model(C.MULTISTAGE, data, {**params, "per_retriever": max(args.values)},
                          items=model_items(spark, warehouse, C.MULTISTAGE))
        fit_seconds = time.perf_counter() - started
        users = spark.createDataFrame([(u,) for u in sorted(truth)], f"{C.USER_IDX} int")
        rows = []
        for value in args.values:
            model.score_per_retriever = value
            started = time.perf_counter()
            lists = model.recommend_lists(users, k=10).select(C.USER_IDX, F.col(C.ITEMS)).toArrow()
            seconds = time.perf_counter() - started
            predictions = dict(zip(lists.column(0).to_pylist(), lists.column(1).to_pylist()))
            metrics = PM.ranking_metrics(predictions, truth, [10])
            rows.append({"score_per_retriever": value, "map@10": round(metrics["map@10"], 5),
                         "recall@10": round(metrics["recall@10"], 5), "users": len(predictions),
                         "seconds": round(seconds, 1), "users_per_s": round(len(predictions) / seconds, 1)})
            print(rows[-1], flush=True)
        model.discard_scratch()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    top = rows[0]
    print(f"\n{args.name}: one model fitted in {fit_seconds:.0f} s on train + valid (ranker on {max(args.values)} "
          f"candidates per retriever), {top['users']:,} test users scored on {os.cpu_count()} cores")
    print(f"{'per retriever':>14} {'MAP@10':>8} {'vs first':>9} {'recall@10':>10} {'users/s':>9} {'speed-up':>9}")
    for row in rows:
        print(f"{row['score_per_retriever']:>14} {row['map@10']:>8.5f} {row['map@10'] / top['map@10']:>8.3f}× "
              f"{row['recall@10']:>10.5f} {row['users_per_s']:>9.0f} {row['users_per_s'] / top['users_per_s']:>8.2f}×")
    path = RESULTS / "multistage_scoring.json"
    saved = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    saved[args.name] = {"fit_seconds": round(fit_seconds, 1), "rows": rows}
    print("results:", save("multistage_scoring", {"runs": saved}))


if __name__ == "__main__":
    main()

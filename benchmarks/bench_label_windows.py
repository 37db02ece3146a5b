"""The multi-stage ranker's label windows: test MAP@10 of the multi-stage model fitted with 1, 2, … earlier label
windows (``MultiStageParams.label_windows``) side by side, over several ranker seeds, with everything else fixed.

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_label_windows.py \\
        [--dataset movielens-llo5] [--windows 1,2,3,4,6] [--seeds 4]

The dataset is loaded and split as ``real_data.py`` loads it, and the model is fitted on train + valid with the
multi-stage parameters ``real_data.py`` recorded for it (so the retrievers are the same in every row: only the
windows and the ranker's seed, which also cuts the cross-fitting folds, change), then scores the test users, as a
run's evaluation does. A seed sweep because one fit's figure moves by ± 0.002 with the seed alone on 610 users.
Results: ``benchmarks/results/label_windows.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, arguments, save, spark_session


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--dataset", default="movielens-llo5", help="a real_data.py dataset name")
    parser.add_argument("--windows", default="1,2,3,4,6", help="label_windows values to compare")
    parser.add_argument("--seeds", type=int, default=4, help="ranker seeds per value (42, 43, …)")
    args = parser.parse_args()

    from real_data import DATASETS, load_dataset

    from recsys import constants as C
    from recsys.metrics import python_metrics as PM
    from recsys.models.params import MultiStageParams
    from recsys.multistage.model import fit
    from recsys.train import model_items, training_data

    spark = spark_session()
    work = Path(tempfile.mkdtemp(prefix="bench-label-windows-"))
    try:
        settings, _ = load_dataset(spark, DATASETS[args.dataset], work)
        recorded = json.loads((RESULTS / "real_data.json").read_text())[args.dataset]["models"]
        data = training_data(spark, settings.warehouse, settings.train.fit_splits).cache()
        items = model_items(spark, settings.warehouse, C.MULTISTAGE)
        truth: dict[int, list[int]] = {}
        for user, item in training_data(spark, settings.warehouse, ["test"]).select(C.USER_IDX, C.ITEM_IDX) \
                .toLocalIterator():
            truth.setdefault(user, []).append(item)
        users = spark.createDataFrame([(u,) for u in truth], [C.USER_IDX])
        rows = []
        for windows in [int(w) for w in args.windows.split(",")]:
            fits = []
            for seed in range(42, 42 + args.seeds):
                params = MultiStageParams.model_validate(recorded[C.MULTISTAGE]["params"]).model_copy(deep=True)
                params.label_windows, params.ranker.seed = windows, seed
                started = time.perf_counter()
                model = fit(data, params, items)
                seconds = time.perf_counter() - started
                lists = {r[C.USER_IDX]: list(r[C.ITEMS]) for r in model.recommend_lists(users, k=10).collect()}
                value = PM.ranking_metrics(lists, truth, [10])["map@10"]
                fits.append({"seed": seed, "map@10": round(value, 5), "fit_seconds": round(seconds, 1),
                             "label_windows": model.info.get("label_windows", 1),
                             "labelled_queries": model.info.get("labelled_queries", model.info["labelled_users"]),
                             "order": model.info["order"], "diversity": model.info["diversity"]})
                print(args.dataset, windows, fits[-1], flush=True)
            maps = [f["map@10"] for f in fits]
            rows.append({"label_windows": windows, "map@10": round(float(np.mean(maps)), 5),
                         "map@10_sd": round(float(np.std(maps)), 5), "windows_used": fits[0]["label_windows"],
                         "labelled_queries": fits[0]["labelled_queries"],
                         "fit_seconds": round(float(np.mean([f["fit_seconds"] for f in fits])), 1), "fits": fits})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = rows[0]
    print(f"\n{args.dataset}: test MAP@10 of the multi-stage model over {args.seeds} ranker seeds "
          f"(recorded parameters; implicit ALS's recorded test MAP@10: {recorded['implicit_als']['map@10']})")
    print(f"{'windows':>8} {'used':>5} {'queries':>8} {'MAP@10':>8} {'± sd':>7} {'vs first':>9} {'fit s':>6}")
    for row in rows:
        print(f"{row['label_windows']:>8} {row['windows_used']:>5} {row['labelled_queries']:>8} {row['map@10']:>8.5f} "
              f"{row['map@10_sd']:>7.4f} {row['map@10'] / first['map@10']:>8.3f}× {row['fit_seconds']:>6.0f}")
    print("results:", save("label_windows", {args.dataset: rows}, merge=True))


if __name__ == "__main__":
    main()

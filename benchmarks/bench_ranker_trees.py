"""The multi-stage ranker's trees: depth × learning rate against MAP@10 on held-out labelled users and the work each
candidate costs to score (boosting rounds × depth), side by side, so the default is the cheapest setting that ranks
as well as the others.

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_ranker_trees.py [--datasets movielens-llo5,all_beauty]
    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_ranker_trees.py \\
        --warehouse WH --model-json WH/models/multistage/<run_id>/model.json --name appliances

Each dataset's labelled examples are built once, as a fit builds them (stage one's candidates of the users of the
latest split, with their features and labels; parameters as ``real_data.py`` recorded them, or a saved model's with
``--warehouse``). Each setting is then judged like the fit's cross-fitting judges its rankers: the labelled users are
cut in two halves (seeded), a ranker trained on one half with early stopping on the other half's NDCG scores that
other half, and MAP@10 of its order is averaged over both halves and ``--seeds`` cuts. The trees are grown by
``xgboost.train`` with the booster parameters SparkXGBRanker gets (:func:`recsys.multistage.model.booster_params`),
on every core, so a grid takes minutes instead of a Spark job per fit. Results: ``benchmarks/results/ranker_trees.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, arguments, save, spark_session

GRID = [(6, 0.1), (4, 0.1), (4, 0.15), (4, 0.2), (3, 0.1), (3, 0.2), (3, 0.3)]


def examples_of(spark, name: str, warehouse: Path | None, model_json: Path | None, work: Path):
    """(stage one's labelled examples, their truth, the ranker params) of a real-data set or a given warehouse."""
    from real_data import DATASETS, load_dataset

    from recsys import constants as C
    from recsys.config import load_settings
    from recsys.models.params import MultiStageParams
    from recsys.multistage.model import stage_one_examples
    from recsys.train import model_items, training_data

    if warehouse is None:
        settings, _ = load_dataset(spark, DATASETS[name], work)
        params = json.loads((RESULTS / "real_data.json").read_text())[name]["models"]["multistage"]["params"]
    else:
        settings = load_settings(warehouse=warehouse)
        params = json.loads(model_json.read_text())["params"] if model_json else {}
    params = MultiStageParams.model_validate(params)
    data = training_data(spark, settings.warehouse, settings.train.fit_splits)
    first = stage_one_examples(data, params, model_items(spark, settings.warehouse, C.MULTISTAGE))
    return first.examples, first.truth, params.ranker


def held_out_map(examples, truth: dict, ranker, seed: int) -> tuple[float, list[int]]:
    """MAP@10 of rankers trained on one half of the labelled users and scoring the other, both ways round."""
    import xgboost as xgb

    from recsys.metrics import python_metrics as PM
    from recsys.multistage import diversity as D
    from recsys.multistage.model import booster_params

    users = np.unique(examples.users)               # halves of users: a user's queries of every window together
    shuffled = np.random.default_rng(seed).permutation(users)
    halves = [np.sort(shuffled[: len(users) // 2]), np.sort(shuffled[len(users) // 2:])]
    params = {**booster_params(ranker), "seed": ranker.seed, "eval_metric": "ndcg", "nthread": os.cpu_count(),
              "tree_method": "hist"}

    def matrix(keep):
        order = np.argsort(examples.qid[keep], kind="stable")
        return xgb.DMatrix(examples.x[keep][order], examples.label[keep][order], qid=examples.qid[keep][order],
                           missing=np.nan)

    values, rounds = [], []
    for fit_half, score_half in ((0, 1), (1, 0)):
        scored = np.isin(examples.users, halves[score_half])
        booster = xgb.train(params, matrix(np.isin(examples.users, halves[fit_half]) & examples.has_positive),
                            ranker.n_estimators, evals=[(matrix(scored & examples.has_positive), "held_out")],
                            early_stopping_rounds=ranker.early_stopping_rounds, verbose_eval=False)
        rounds.append(booster.best_iteration + 1)
        scores = booster.inplace_predict(examples.x[scored], iteration_range=(0, rounds[-1])).astype(np.float32)
        ids, rows = np.unique(examples.qid[scored], return_inverse=True)
        lists = D.top_lists(rows, examples.items[scored], scores, len(ids), D.K, 0.0, 1, None)
        predictions = {int(u): lists.of(r).tolist() for r, u in enumerate(ids)}
        values.append(PM.ranking_metrics(predictions, {u: truth[u] for u in predictions if u in truth}, [D.K])[
            f"map@{D.K}"])
    return float(np.mean(values)), rounds


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", default="movielens-llo5,all_beauty", help="real_data.py dataset names")
    parser.add_argument("--warehouse", type=Path, help="instead: an existing warehouse (e.g. an Appliances run's)")
    parser.add_argument("--model-json", type=Path, help="with --warehouse: a multi-stage model.json for its params")
    parser.add_argument("--name", default="appliances", help="with --warehouse: the results' key")
    parser.add_argument("--seeds", type=int, default=3, help="cuts of the labelled users into halves")
    args = parser.parse_args()

    spark = spark_session()
    path = RESULTS / "ranker_trees.json"
    saved = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    names = [args.name] if args.warehouse else args.datasets.split(",")
    for name in names:
        work = Path(tempfile.mkdtemp(prefix="bench-ranker-trees-"))
        try:
            examples, truth, ranker = examples_of(spark, name, args.warehouse, args.model_json, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows = []
        for depth, rate in GRID:
            started = time.perf_counter()
            setting = ranker.model_copy(update={"max_depth": depth, "learning_rate": rate})
            results = [held_out_map(examples, truth, setting, 42 + seed) for seed in range(args.seeds)]
            maps = [value for value, _ in results]
            rounds = float(np.mean([np.mean(r) for _, r in results]))
            rows.append({"max_depth": depth, "learning_rate": rate, "map@10": round(float(np.mean(maps)), 5),
                         "map@10_sd": round(float(np.std(maps)), 5), "rounds": round(rounds, 1),
                         "work": round(rounds * depth), "seconds": round(time.perf_counter() - started, 1)})
            print(name, rows[-1], flush=True)
        users = len(np.unique(examples.users))
        saved[name] = {"labelled_users": users, "candidates": len(examples.qid), "rows": rows}
        first = rows[0]
        print(f"\n{name}: {users:,} labelled users, {len(examples.qid):,} candidates; MAP@10 on held-out halves, "
              f"work = rounds × depth per candidate scored")
        print(f"{'depth':>6} {'rate':>5} {'MAP@10':>8} {'± sd':>7} {'vs first':>9} {'rounds':>7} {'work':>6} "
              f"{'vs first':>9}")
        for row in rows:
            print(f"{row['max_depth']:>6} {row['learning_rate']:>5} {row['map@10']:>8.5f} {row['map@10_sd']:>7.4f} "
                  f"{row['map@10'] / first['map@10']:>8.3f}× {row['rounds']:>7.0f} {row['work']:>6} "
                  f"{row['work'] / first['work']:>8.2f}×")
    print("results:", save("ranker_trees", {"runs": saved}))


if __name__ == "__main__":
    main()

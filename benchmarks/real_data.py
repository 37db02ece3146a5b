"""Real-data results: every model after the pipeline's own model selection, on the public files under
``RECSYS_SHARED_DATA``.

    .venv/bin/python benchmarks/real_data.py [--datasets movielens-llo5,movielens-llo5-binary,...] [--budget S]

Each dataset runs the library's own steps (load/ingest → features → select → train → evaluate) in a scratch
warehouse with the default configuration: the only settings given are the dataset's split and which signal an
interaction's strength w carries (every rating counted 1, or its stars w = rating/5); the hyper-parameters and the
weighting of w (its power, BM25/TF-IDF, a recency half-life) are searched by ``recsys select`` on the validation
split within ``tuning.budget_seconds`` (``--budget`` overrides it). Prints MAP@10 / NDCG@10 / recall@10 side by side
with the lift over popularity and the winners' parameters, then the README's table over every dataset measured so
far (results merge into benchmarks/results/real_data.json, so datasets can be run one command at a time).
Reference to beat on MovieLens latest-small, last 5 ratings of every user held out, every training rating an
interaction, seen items excluded: popularity MAP@10 0.0161, tuned implicit ALS 0.0284.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from common import SHARED_DATA, arguments, save, spark_session

from recsys.constants import MULTISTAGE

# What w carries (the task, not a tuned choice): every interaction 1, or the stars alone (w = rating/5, which the
# search may raise to a power). Both without the features step's recency decay: the search decides that.
BINARY = {"base_weight": 1.0, "rating_weight": 0.0, "verified_weight": 0.0, "helpful_weight": 0.0,
          "half_life_days": None}
RATED = {"base_weight": 0.0, "rating_weight": 1.0, "rating_power": 1.0, "verified_weight": 0.0,
         "helpful_weight": 0.0, "half_life_days": None}
MOVIELENS = SHARED_DATA / "movielens/ml-latest-small"
DATASETS = {
    "movielens-llo5": {"title": "MovieLens latest-small, last 5 per user held out, rating-weighted",
                       "format": "movielens", "path": MOVIELENS,
                       "split": {"strategy": "leave_last_out", "holdout": 5}, "confidence": RATED},
    "movielens-llo5-binary": {"title": "same, binary (the reference's protocol: popularity 0.0161, tuned implicit "
                                       "0.0284)", "format": "movielens", "path": MOVIELENS,
                              "split": {"strategy": "leave_last_out", "holdout": 5}, "confidence": BINARY},
    "movielens-temporal": {"title": "MovieLens latest-small, temporal (80 % / 90 % time quantiles), rating-weighted",
                           "format": "movielens", "path": MOVIELENS, "split": {"strategy": "temporal"},
                           "confidence": RATED},
    "all_beauty": {"title": "All_Beauty 5-core, temporal", "format": "amazon-csv",
                   "path": SHARED_DATA / "amazon_reviews_2023/benchmark/5core/rating_only/All_Beauty.csv",
                   "split": {"strategy": "temporal"}, "confidence": BINARY},
    "subscription_boxes": {"title": "Subscription_Boxes raw, official cut points", "format": "raw",
                           "path": SHARED_DATA / "amazon_reviews_2023", "split": {"strategy": "official"},
                           "confidence": {}},
}
BASELINE = "popularity"


def load_dataset(spark, spec: dict, work: Path):
    """One of :data:`DATASETS` loaded into a warehouse under ``work`` and split → (settings, the split's counts)."""
    from recsys.benchmark_data import load_benchmark
    from recsys.config import load_settings
    from recsys.features import build_features
    from recsys.ingest import ingest
    from recsys.silver import build_silver

    settings = load_settings(warehouse=work / "wh", reports=work / "reports")
    settings.features.split = settings.features.split.model_copy(update=spec["split"])
    settings.features.confidence = settings.features.confidence.model_copy(update=spec["confidence"])
    if spec["format"] == "raw":
        src = work / "src"
        src.mkdir()
        for f in spec["path"].glob("*Subscription_Boxes.jsonl.gz"):
            (src / f.name).symlink_to(f)
        ingest(spark, src, settings.warehouse, settings.ingest)
        build_silver(spark, settings.warehouse)
    else:
        load_benchmark(spark, spec["path"], settings.warehouse, spec["format"])
    return settings, build_features(spark, settings.warehouse, settings.features)


def test_users(spark, warehouse: Path) -> dict:
    """Test users, and those with a row in the fitted splits: no candidate lists a user it has no row of (the
    popularity baseline included), so every model is judged on the latter and the others count 0 for all."""
    from pyspark.sql import functions as F

    from recsys import constants as C
    from recsys import tables as T

    rows = T.read_table(spark, warehouse, C.INTERACTIONS)
    test = rows.where(F.col(C.SPLIT) == "test").select(C.USER_IDX).distinct()
    fitted = rows.where(F.col(C.SPLIT) != "test").select(C.USER_IDX).distinct()
    return {"test_users": test.count(), "test_users_with_history": test.join(fitted, C.USER_IDX, "left_semi").count()}


def multistage_ranking(warehouse: Path, run_id: str) -> dict:
    """What the run's multi-stage fit decided its lists' order on: the labelled users, the order it kept (the ranker
    or a retriever) and each order's MAP@10 on them (cross-fitted), from its ``model.json``."""
    from recsys import ops

    for candidate in ops.run_models(warehouse, run_id):
        if candidate["model"] == MULTISTAGE:
            info = json.loads((Path(candidate["model_path"]) / "model.json").read_text()).get("info", {})
            keys = ("labelled_users", "label_windows", "labelled_queries", "users_with_a_positive",
                    "candidate_recall", "order", "order_map@10", "diversity")
            return {key: info[key] for key in keys if key in info}
    return {}


def run(name: str, spec: dict, spark, budget: float | None) -> dict:
    from recsys import registry
    from recsys.evaluate.runner import evaluate_run
    from recsys.selection.step import select_models
    from recsys.train import train

    work = Path(tempfile.mkdtemp(prefix=f"realdata-{name}-"))
    start = time.perf_counter()
    settings, split = load_dataset(spark, spec, work)
    if budget is not None:
        settings.tuning = settings.tuning.model_copy(update={"budget_seconds": budget})
    run_id = registry.new_run_id()
    split |= test_users(spark, settings.warehouse)
    selection = select_models(spark, settings, run_id)
    for model in settings.train.models:
        train(spark, settings, model, run_id)
    result = evaluate_run(spark, settings, run_id, report=False)
    ranking = multistage_ranking(settings.warehouse, run_id)
    shutil.rmtree(work, ignore_errors=True)
    models = {m: {k: round(v, 5) for k, v in r["metrics"].items() if k.endswith("@10")} | {
        "train_seconds": r["train_seconds"], "params": r["params"]} for m, r in result["models"].items()}
    if ranking and MULTISTAGE in models:
        models[MULTISTAGE]["ranking"] = ranking
    searched = {m: {"valid_map@10": s["best_value"], "trials": len(s["trials"]), "rescored": len(s["rescored"]),
                    "seconds": s["seconds"], "first_trials": [first_trial(t) for t in s["trials"][:4]],
                        "confidence_map": s.get("confidence_map")}
                for m, s in selection["models"].items()}
    kept = ("strategy", "train", "valid", "test", "test_users", "test_users_with_history", "note")
    return {"title": spec["title"], "split": {k: split[k] for k in kept},
            "models": models, "promoted": result["decision"].get("promoted"), "selection": searched,
            "budget_seconds": settings.tuning.budget_seconds, "note": selection.get("note"),
            "seconds": round(time.perf_counter() - start, 1)}


def first_trial(trial: dict) -> dict:
    """What the results keep of a search's first trials (the configured parameters, then the starting points):
    their size, MAP@10 on valid and seconds, to see what they cost and found."""
    size = {k: trial["params"][k] for k in ("factors", "iterations", "dims") if k in trial["params"]}
    value = trial["value"] and round(trial["value"], 5)
    return size | {"valid_map@10": value, "seconds": round(trial["seconds"], 1)}


def table(results: dict) -> str:
    """The README's table: MAP@10 per model (× popularity), the promoted model in bold; a column per model any
    dataset trained (the configured ``train.models``), popularity first."""
    measured = [results[name] for name in DATASETS if name in results]
    models = sorted({m for r in measured for m in r["models"]}, key=lambda m: (m != BASELINE, m))
    lines = ["| dataset / split (train / valid / test) | " + " | ".join(models) + " | search (s) |",
             "|---|" + "---|" * (len(models) + 1)]
    for r in measured:
        pop = r["models"][BASELINE]["map@10"]
        cells = []
        for m in models:
            value = r["models"].get(m, {}).get("map@10")
            lift = f" ({value / pop:.2f}×)" if value is not None and pop and m != BASELINE else ""
            cell = "–" if value is None else f"{value:.4f}{lift}"
            cells.append(f"**{cell}**" if m == r["promoted"] else cell)
        sizes = " / ".join(f"{r['split'][k]:,}" for k in ("train", "valid", "test"))
        searched = sum(s["seconds"] for s in r["selection"].values())
        lines.append(f"| {r['title']} ({sizes}) | " + " | ".join(cells) + f" | {searched:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--budget", type=float, help="seconds of model selection per dataset (default: conf's)")
    args = parser.parse_args()
    spark = spark_session()
    out = {}
    for name in args.datasets.split(","):
        out[name] = r = run(name, DATASETS[name], spark, args.budget)
        pop = r["models"]["popularity"]["map@10"] or float("nan")
        print(f"\n{name}: split {r['split']}  ({r['seconds']} s; promoted {r['promoted']})")
        if r["note"]:
            print(f"  {r['note']}")
        print(f"  {'model':<14}{'MAP@10':>9}{'NDCG@10':>9}{'R@10':>8}{'vs pop':>8}{'valid':>9}{'trials':>7}")
        for m, v in sorted(r["models"].items()):
            s = r["selection"].get(m, {})
            print(f"  {m:<14}{v['map@10']:>9.4f}{v['ndcg@10']:>9.4f}{v['recall@10']:>8.4f}"
                  f"{v['map@10'] / pop if pop else float('nan'):>7.2f}×{s.get('valid_map@10') or 0:>9.4f}"
                  f"{s.get('trials', 0):>7}   {json.dumps(v['params'], sort_keys=True)}")
    path = save("real_data", out, merge=True)   # other datasets' figures kept
    print("results:", path)
    print("\n" + table(json.loads(path.read_text())))


if __name__ == "__main__":
    main()

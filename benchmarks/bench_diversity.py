"""Diversity against accuracy on held-out data: the multi-stage model's lists re-ranked by the DPP at each strength
of its grid, MAP@10 and intra-list diversity@10 on the test split, beside the curve the model chose its strength on
(cross-fitted scores of its labelled users, from the training rows only).

    .venv/bin/python benchmarks/bench_diversity.py [--dataset movielens-llo5] [--budget 120]

The dataset is one of ``real_data.py``'s, loaded and split the same way; the model's retrievers take the parameters
a model search of ``--budget`` seconds chooses on the validation split (0: ``train.params``). The table puts each
strength's loss bound on the labelled users (what the choice reads) beside its MAP@10 on test (what it was for).
Writes benchmarks/results/diversity.json (one entry per dataset) and, for MovieLens, docs/img/diversity.png (the
README's plot).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import ROOT, arguments, pyplot, save, save_figure, spark_session
from real_data import DATASETS, load_dataset

PLOT = ROOT / "docs" / "img" / "diversity.png"
PLOTTED = "movielens-llo5"        # the dataset of the README's plot


def measure(name: str, budget: float) -> dict:
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    from recsys import registry
    from recsys.constants import MULTISTAGE
    from recsys.loading import load_model
    from recsys.metrics import python_metrics as PM
    from recsys.models.factors import list_column_to_matrix
    from recsys.rerank import dpp
    from recsys.selection.step import select_models
    from recsys.train import train

    spec = DATASETS[name]
    spark = spark_session()
    work = Path(tempfile.mkdtemp(prefix=f"diversity-{name}-"))
    try:
        settings, _ = load_dataset(spark, spec, work)       # the raw Amazon dumps too, ingested as a run would
        settings.tuning = settings.tuning.model_copy(update={"budget_seconds": budget})
        settings.train.models = [MULTISTAGE]
        run_id = registry.new_run_id()
        start = time.perf_counter()
        select_models(spark, settings, run_id)
        path = Path(train(spark, settings, MULTISTAGE, run_id)["path"])
        fit_seconds = time.perf_counter() - start

        gold = DeltaTable(str(settings.warehouse / "gold" / "interactions")).to_pandas(columns=["user_idx", "item_idx",
                                                                                               "split"])
        truth = gold[gold.split == "test"].groupby("user_idx").item_idx.apply(list).to_dict()
        space = "item_content" if (path / "item_content").is_dir() else "item_factors"
        table = pq.read_table(path / space)
        ids = table.column("id").to_numpy()
        vectors = list_column_to_matrix(table.column("features").combine_chunks())
        row_of = dict(zip(ids.tolist(), range(len(ids))))
        padded = np.vstack([vectors, np.zeros((1, vectors.shape[1]), dtype=vectors.dtype)])
        model = load_model(spark, path)
        points = []
        for strength in sorted({0.0, *model.params["diversity_grid"]}):
            model.diversity = strength
            lists = model.recommend_lists(k=10).toPandas()
            predictions = {int(u): [int(i) for i in items] for u, items in zip(lists.user_idx, lists["items"])}
            value = PM.ranking_metrics(predictions, truth, [10])["map@10"]
            rows = [np.array([row_of.get(i, len(ids)) for i in items]) for items in predictions.values()]
            points.append({"strength": strength, "map@10": round(value, 5),
                           "diversity": round(dpp.intra_list_diversity(rows, padded), 5)})
        return {"dataset": name, "title": spec["title"], "budget_seconds": budget, "space": space,
                "fit_seconds": round(fit_seconds, 1), "chosen": model.info.get("diversity"),
                "order": model.info.get("order"), "test": points, "labelled": model.info.get("diversity_curve", [])}
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)


def plot(result: dict, out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, label, style in (("test", "test split", "o-"), ("labelled", "labelled users, cross-fitted (fit)", "s--")):
        curve = result[key]
        if not curve:
            continue
        ax.plot([c["diversity"] for c in curve], [c["map@10"] for c in curve], style, label=label)
        for c in curve:
            ax.annotate(f"{c['strength']:g}", (c["diversity"], c["map@10"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))
    chosen = next((c for c in result["test"] if c["strength"] == result["chosen"]), None)
    if chosen:
        ax.plot([chosen["diversity"]], [chosen["map@10"]], "r*", markersize=14, label=f"chosen ({result['chosen']:g})")
    ax.set_xlabel(f"intra-list diversity@10 (1 − cosine, {result['space'].replace('item_', '')} space)")
    ax.set_ylabel("MAP@10")
    ax.set_title(f"DPP re-rank strength — {result['dataset']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--dataset", default="movielens-llo5", choices=sorted(DATASETS))
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of model search for the retrievers")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the saved results")
    args = parser.parse_args()
    if args.plot_only:
        result = json.loads((ROOT / "benchmarks" / "results" / "diversity.json").read_text())[args.dataset]
    else:
        result = measure(args.dataset, args.budget)
        save("diversity", {args.dataset: result}, merge=True)
    if args.dataset == PLOTTED:
        plot(result, PLOT)
    labelled = {c["strength"]: c for c in result["labelled"]}
    print(f"{'strength':>8}  {'MAP@10 labelled':>15}  {'loss bound':>10}  {'MAP@10 test':>11}  {'diversity':>9}")
    for point in result["test"]:
        fit = labelled.get(point["strength"], {})
        mark = "  <- chosen" if point["strength"] == result["chosen"] else ""
        print(f"{point['strength']:>8g}  {fit.get('map@10', float('nan')):>15.4f}  "
              f"{fit.get('loss_bound', float('nan')):>10.3f}  {point['map@10']:>11.4f}  {point['diversity']:>9.3f}"
              f"{mark}")
    print(f"{result['dataset']}: lists ordered by {result['order']}"
          + (f"; plot: {PLOT.relative_to(ROOT)}" if args.dataset == PLOTTED else ""))


if __name__ == "__main__":
    main()

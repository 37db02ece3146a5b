"""How sure the multi-stage model's order choice is: on each dataset's labelled queries, every order's MAP@10 (the
cross-fitted ranker's and each retriever's, as ``fit`` compares them) and the ranker's paired lead over the best
retriever with its standard error.

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_order_choice.py \\
        [--datasets subscription_boxes,all_beauty,movielens-llo5,movielens-llo5-binary,movielens-temporal]

Each dataset is loaded and split as ``real_data.py`` loads it, and stage one and the cross-fit run on train + valid
with the multi-stage parameters ``real_data.py`` recorded for it (the fit that scores the test split). ``z`` is the
lead over its standard error: the order is chosen on the mean (``best_order``), and this table is what a rule that
asked for a z of 1.645 would have decided instead. Results: ``benchmarks/results/order_choice.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from common import RESULTS, arguments, save, spark_session

DEFAULT = "subscription_boxes,all_beauty,movielens-llo5,movielens-llo5-binary,movielens-temporal"


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--datasets", default=DEFAULT, help="real_data.py dataset names")
    args = parser.parse_args()

    from real_data import DATASETS, load_dataset

    from recsys import constants as C
    from recsys.models.params import MultiStageParams
    from recsys.multistage import diversity as D
    from recsys.multistage import model as M
    from recsys.train import model_items, training_data

    spark = spark_session()
    recorded = json.loads((RESULTS / "real_data.json").read_text())
    rows = {}
    for name in args.datasets.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"bench-order-{name}-"))
        try:
            settings, _ = load_dataset(spark, DATASETS[name], work)
            params = MultiStageParams.model_validate(recorded[name]["models"][C.MULTISTAGE]["params"])
            data = training_data(spark, settings.warehouse, settings.train.fit_splits).cache()
            first = M.stage_one_examples(data, params, model_items(spark, settings.warehouse, C.MULTISTAGE))
            crossed = M.cross_fit(spark, first.examples, params, first.truth)
            values = M.order_values(first.examples, crossed.scores, first.truth)
            data.unpersist()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        means = {n: float(v.mean()) for n, v in values.items()}
        best = max((n for n in means if n != M.RANKER), key=means.get)
        row = {"queries": len(values[best]), "map@10": {n: round(m, 4) for n, m in means.items()},
               "best_retriever": best, "chosen": M.best_order(means)}
        if M.RANKER in values and len(values[best]) > 1:
            lead = values[M.RANKER] - values[best]
            error = D.standard_error(lead)
            row.update(lead=round(float(lead.mean()), 4), standard_error=round(error, 4),
                       z=round(float(lead.mean()) / error, 2) if error else None)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    print(f"\n{'dataset':<24}{'queries':>8}{'ranker':>8}{'best retriever':>22}{'lead':>9}{'± se':>8}{'z':>7}"
          f"  chosen")
    for name, row in rows.items():
        ranker = row["map@10"].get(M.RANKER)
        best = f"{row['best_retriever']} {row['map@10'][row['best_retriever']]:.4f}"
        print(f"{name:<24}{row['queries']:>8}{'–' if ranker is None else f'{ranker:.4f}':>8}{best:>22}"
              f"{row.get('lead', float('nan')):>9.4f}{row.get('standard_error', float('nan')):>8.4f}"
              f"{row.get('z') if row.get('z') is not None else float('nan'):>7.2f}  {row['chosen']}")
    print("results:", save("order_choice", rows, merge=True))


if __name__ == "__main__":
    main()

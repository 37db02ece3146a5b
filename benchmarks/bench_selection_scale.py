"""Does implicit ALS's λ carry from the search's user sample to the fit on every user? (recsys/selection/scale.py)

On a run's warehouse (``make demo SCALE=appliances`` or any with more than ``--max-users`` users with valid rows):
the search data as the select step builds it (the same seeded sample of users, their train rows), then implicit
fitted on the sample and on every user's train rows, with the search's λ, with λ/√f (the rule) and with λ/f, f the
share of the train rows the sample holds; each scored by MAP@10 on the sampled users' valid rows, as a trial is.
Configurations: the configured default and the portfolio's "wide" point (the winner of the Appliances-size search).

    flock /tmp/heavy-tests.lock .venv/bin/python benchmarks/bench_selection_scale.py --warehouse warehouse
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from common import arguments, machine, save

from recsys import constants as C
from recsys.models.implicit_als import factorize
from recsys.models.params import ALSParams
from recsys.models.weighting import weigh
from recsys.selection.data import SEARCHED_SPLITS, SearchData
from recsys.selection.portfolio import STARTING_POINTS
from recsys.selection.scale import full_data_regularization

CONFIGURATIONS = {"default": {}, "wide": STARTING_POINTS["wide"][1]}


def search_columns(warehouse: Path) -> list[np.ndarray]:
    from deltalake import DeltaTable

    names = [C.USER_IDX, C.ITEM_IDX, "weight", C.TIMESTAMP, C.SPLIT]
    table = DeltaTable(str(warehouse / C.INTERACTIONS)).to_pyarrow_table(columns=names)
    table = table.filter(pc.is_in(table[C.SPLIT], value_set=pa.array(SEARCHED_SPLITS)))
    return [table.column(name).to_numpy(zero_copy_only=False) for name in names]


def fitted_map(sample: SearchData, data: SearchData, params: dict, k: int = 10) -> tuple[float, float]:
    """(MAP@k on the sample's valid rows, fit seconds) of implicit fitted on ``data``."""
    typed = ALSParams.model_validate(params)
    matrix = data.matrix(weigh(data.users, data.items, data.weights, data.timestamps, typed.weighting))
    start = time.perf_counter()
    user_factors, item_factors, _ = factorize(matrix, typed, callback=lambda *_: None)   # no factor cache
    seconds = time.perf_counter() - start
    users, items = sample.fitted[0], data.fitted[1]     # the sample's users, the fitted data's items
    return sample.score(users, user_factors[users], items, item_factors[items], k), seconds


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--max-users", type=int, default=20_000, help="tuning.max_users")
    parser.add_argument("--seed", type=int, default=42, help="tuning.seed")
    args = parser.parse_args()
    columns = search_columns(args.warehouse)
    sample = SearchData.from_rows(*columns, max_users=args.max_users, seed=args.seed)
    every = SearchData.from_rows(*columns, max_users=2 ** 62, seed=args.seed)
    f = sample.fraction
    print(f"train rows: sample {len(sample.users):,}, every user {len(every.users):,}: f = {f:.5f}")
    rows = []
    for name, overrides in CONFIGURATIONS.items():
        params = ALSParams.model_validate(overrides).model_dump()
        lam = params["regularization"]
        fits = [("sample", sample, lam), ("every user, λ", every, lam),
                ("every user, λ/√f", every, full_data_regularization(lam, f)), ("every user, λ/f", every, lam / f)]
        for label, data, regularization in fits:
            value, seconds = fitted_map(sample, data, {**params, "regularization": regularization})
            rows.append({"configuration": name, "fit": label, "regularization": round(regularization, 4),
                         "map@10": round(value, 5), "fit_seconds": round(seconds, 1)})
            print(f"{name:8s} {label:18s} λ {regularization:9.3f}  MAP@10 {value:.5f}  fit {seconds:6.1f} s",
                  flush=True)
    save("selection_scale", {"machine": machine(), "fraction": f,
                             "sample_users": len(sample.truth), "results": rows})


if __name__ == "__main__":
    main()

"""implicit's CPU ALS (conjugate gradient), on the same weights and hyper-parameters as Spark ALS.

The CSR matrix is built from gold/interactions with Arrow → numpy (no Python loops); BLAS is pinned
to one thread (implicit parallelises over users with OpenMP itself, and OpenBLAS threads inside
would oversubscribe the cores). Factors are written in Spark ALS's layout so everything downstream
treats both models alike.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame

from recsys import constants as C
from recsys.models.factors import FactorModel, numpy_to_factors
from recsys.models.params import ALSParams


def interactions_to_csr(interactions: DataFrame, value: str = "weight"):
    """(user_idx, item_idx, value) → scipy CSR of shape (max_user+1, max_item+1), float32."""
    import scipy.sparse as sp

    table = interactions.select(C.USER_IDX, C.ITEM_IDX, value).toArrow()
    users = table.column(C.USER_IDX).to_numpy().astype(np.int32)
    items = table.column(C.ITEM_IDX).to_numpy().astype(np.int32)
    values = table.column(value).to_numpy().astype(np.float32)
    shape = (int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1)
    return sp.csr_matrix((values, (users, items)), shape=shape)


def fit(interactions: DataFrame, params: ALSParams, items: DataFrame | None = None,
        scratch: Path | None = None) -> FactorModel:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    spark = interactions.sparkSession
    matrix = interactions_to_csr(interactions)
    with threadpool_limits(limits=1, user_api="blas"):
        model = AlternatingLeastSquares(factors=params.factors, regularization=params.regularization,
                                        alpha=params.alpha, iterations=params.iterations,
                                        random_state=params.seed, calculate_training_loss=False)
        start = time.perf_counter()
        model.fit(matrix, show_progress=False)
        seconds = time.perf_counter() - start
    # Only users and items that occur in training get factors (as with Spark's coldStartStrategy=drop).
    user_ids = np.flatnonzero(np.diff(matrix.indptr)).astype(np.int32)
    item_ids = np.unique(matrix.indices).astype(np.int32)
    # a folder we make is ours to delete (FactorModel.scratch); a caller's stays the caller's
    owned = None if scratch else Path(tempfile.mkdtemp(prefix="implicit-factors-"))
    scratch = Path(scratch or owned)
    users = numpy_to_factors(spark, user_ids, model.user_factors[user_ids], scratch / "user_factors")
    items_f = numpy_to_factors(spark, item_ids, model.item_factors[item_ids], scratch / "item_factors")
    return FactorModel(name="implicit_als", params=params.model_dump(), user_factors=users, item_factors=items_f,
                       seen=interactions.select(C.USER_IDX, C.ITEM_IDX), info={"train_seconds": round(seconds, 3)},
                       scratch=owned)

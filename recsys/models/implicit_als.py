"""implicit's CPU ALS (conjugate gradient), on the same weights and hyper-parameters as Spark ALS.

The CSR matrix is built from gold/interactions with Arrow → numpy (no Python loops); BLAS is pinned
to one thread (implicit parallelises over users with OpenMP itself, and OpenBLAS threads inside
would oversubscribe the cores). Factors are written in Spark ALS's layout so everything downstream
treats both models alike.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame

from recsys import constants as C
from recsys.models import factor_cache
from recsys.models.factors import FactorModel, numpy_to_factors
from recsys.models.params import ALSParams, WeightingParams
from recsys.models.weighting import weighted_arrays


def interactions_to_csr(interactions: DataFrame, weighting: WeightingParams | None = None):
    """(user_idx, item_idx, weight[, timestamp]) → scipy CSR of shape (max_user+1, max_item+1), float32, the
    weights re-weighted by ``weighting`` (:mod:`recsys.models.weighting`; none: as given)."""
    import scipy.sparse as sp

    users, items, values = weighted_arrays(interactions, weighting or WeightingParams())
    shape = (int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1)
    return sp.csr_matrix((values, (users, items)), shape=shape)


def factorize(matrix, params: ALSParams, callback: Callable[[int, np.ndarray, np.ndarray], None] | None = None):
    """implicit's ALS on a (weighted) user × item CSR → (user_factors, item_factors, seconds).
    ``callback(iterations_done, user_factors, item_factors)`` runs after each iteration (model selection scores a
    trial there and may stop it by raising). Without a callback the fit goes through the run's factor cache
    (:mod:`recsys.models.factor_cache`): a hit costs 0 seconds."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    def run() -> tuple[np.ndarray, np.ndarray, float]:
        with threadpool_limits(limits=1, user_api="blas"):
            model = AlternatingLeastSquares(factors=params.factors, regularization=params.regularization,
                                            alpha=params.alpha, iterations=params.iterations,
                                            random_state=params.seed, calculate_training_loss=False)
            hook = ((lambda iteration, elapsed, loss: callback(iteration + 1, model.user_factors, model.item_factors))
                    if callback else None)
            start = time.perf_counter()
            model.fit(matrix, show_progress=False, callback=hook)
            return model.user_factors, model.item_factors, time.perf_counter() - start

    return run() if callback else factor_cache.fit_once(matrix, params.model_dump(), run)


def fit(interactions: DataFrame, params: ALSParams, items: DataFrame | None = None,
        scratch: Path | None = None) -> FactorModel:
    spark = interactions.sparkSession
    matrix = interactions_to_csr(interactions, params.weighting)
    user_factors, item_factors, seconds = factorize(matrix, params)
    # Only users and items that occur in training get factors (as with Spark's coldStartStrategy=drop).
    user_ids = np.flatnonzero(np.diff(matrix.indptr)).astype(np.int32)
    item_ids = np.unique(matrix.indices).astype(np.int32)
    # a folder we make is ours to delete (FactorModel.scratch); a caller's stays the caller's
    owned = None if scratch else Path(tempfile.mkdtemp(prefix="implicit-factors-"))
    scratch = Path(scratch or owned)
    users = numpy_to_factors(spark, user_ids, user_factors[user_ids], scratch / "user_factors")
    items_f = numpy_to_factors(spark, item_ids, item_factors[item_ids], scratch / "item_factors")
    return FactorModel(name="implicit_als", params=params.model_dump(), user_factors=users, item_factors=items_f,
                       seen=interactions.select(C.USER_IDX, C.ITEM_IDX), info={"train_seconds": round(seconds, 3)},
                       scratch=owned)

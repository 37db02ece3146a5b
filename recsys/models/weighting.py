"""The confidence weighting of the interaction matrix (:class:`~recsys.models.params.WeightingParams`), on the
(user, item, w, timestamp) arrays every numpy fit and the model-selection trials build their matrix from.

One implementation for every model: implicit ALS and the content profiles weigh their CSR input here, and Spark ALS
sends its interactions through the same function (:func:`weigh_frame`), because BM25 and TF-IDF need whole-matrix
statistics (item document frequencies, user lengths) that the numpy fits compute anyway.
"""

from __future__ import annotations

import numpy as np

from recsys.models.params import WeightingParams

_MS_PER_DAY = 86_400_000


def weigh(users: np.ndarray, items: np.ndarray, values: np.ndarray, timestamps: np.ndarray | None,
          params: WeightingParams) -> np.ndarray:
    """The re-weighted strengths (float32, one per (users[i], items[i]) pair; pairs are unique). ``timestamps``
    (ms) are needed only with ``half_life_days``. The strengths are taken at float32 precision first, what every
    matrix of them holds: callers that kept them in float32 (the multi-stage history) and in float64 (gold's
    column) then weigh the same values, and the same fit is recognised as one by the factor cache."""
    out = np.asarray(values, dtype=np.float32).astype(np.float64)
    if params.power != 1.0:
        out = np.power(np.maximum(out, 0.0), params.power)   # 0 ** 0 = 1: power 0 is binary
    if params.scheme != "none" and len(out):
        n_users = float(np.unique(users).size)
        idf = np.maximum(np.log(n_users) - np.log1p(np.bincount(items)), 0.0)[items]
        if params.scheme == "tfidf":
            out = np.sqrt(out) * idf
        else:
            lengths = np.bincount(users, weights=out)
            norm = (1.0 - params.bm25_b) + params.bm25_b * lengths / lengths[lengths > 0].mean()
            out = out * (params.bm25_k1 + 1.0) / (params.bm25_k1 * norm[users] + out) * idf
    if params.half_life_days:
        if timestamps is None:
            raise ValueError("a recency half-life needs the interactions' timestamps")
        age_days = (timestamps.max(initial=0) - timestamps) / _MS_PER_DAY
        out = out * np.power(0.5, age_days / params.half_life_days)
    return out.astype(np.float32)


def weighted_arrays(interactions, params: WeightingParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_idx, item_idx, weight[, timestamp]) DataFrame → (users int32, items int32, re-weighted float32)."""
    from recsys import constants as C

    stamps = [C.TIMESTAMP] if params.half_life_days else []
    if stamps and C.TIMESTAMP not in interactions.columns:
        raise ValueError("a recency half-life needs the interactions' timestamps")
    table = interactions.select(C.USER_IDX, C.ITEM_IDX, "weight", *stamps).toArrow()
    users = table.column(C.USER_IDX).to_numpy().astype(np.int32)
    items = table.column(C.ITEM_IDX).to_numpy().astype(np.int32)
    values = weigh(users, items, table.column("weight").to_numpy(),
                   table.column(C.TIMESTAMP).to_numpy() if stamps else None, params)
    return users, items, values


def weigh_frame(interactions, params: WeightingParams):
    """(user_idx, item_idx, weight[, timestamp]) DataFrame with ``weight`` re-weighted (identity: unchanged)."""
    import pyarrow as pa

    from recsys import constants as C

    if params.identity:
        return interactions
    users, items, weights = weighted_arrays(interactions, params)
    out = pa.table({C.USER_IDX: users, C.ITEM_IDX: items, "weight": weights.astype(np.float64)})
    return interactions.sparkSession.createDataFrame(out)

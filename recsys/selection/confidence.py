"""Which weak interactions Spark ALS should leave out to come closest to implicit's winner.

implicit weighs an interaction by c = α·w, below an unobserved pair's 1 when α·w < 1; Spark ALS can only keep such an
interaction at c = 1 or leave it out (``ALSParams.min_confidence``, :mod:`recsys.models.spark_als`). Which of them to
leave out is a property of the data and of implicit's winner, and it is cheap to measure with implicit itself: fit
implicit's winner on the matrix Spark would see for each threshold (interactions below it left out, the others
clamped to c ≥ 1) and keep the threshold of best MAP@K on valid. On MovieLens latest-small (last 5 held out,
rating-weighted, ``benchmarks/real_data.py``) implicit's winner puts every rating of 4.5 stars or fewer under c = 1;
the threshold measured leaves out those under 3.5 stars, and Spark's best on valid rose from 0.0350 (everything kept
at c = 1) to 0.0393, implicit's being 0.0399.

The thresholds tried are the distinct confidence levels under 1 (ratings give a few), else quantiles of them; the
first is 0 (keep everything), so without time for more the mapping is what it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.models.params import ALSParams
from recsys.models.weighting import weigh
from recsys.selection.data import SearchData

MAX_LEVELS = 8           # thresholds tried besides 0: distinct levels when there are this few, else quantiles


@dataclass
class Mapping:
    """The threshold chosen and what each one tried measured (threshold → MAP@K on valid)."""

    min_confidence: float = 0.0
    measured: dict[float, float] = field(default_factory=dict)
    seconds: float = 0.0


def thresholds(confidence: np.ndarray) -> list[float]:
    """0, then the candidate thresholds: each distinct level of ``confidence`` under 1 above the lowest (leaving
    out everything under it), else quantiles of those under 1; and 1 itself (every interaction under 1 left out)."""
    weak = np.unique(confidence[confidence < 1.0])
    if not len(weak):
        return [0.0]
    if len(weak) > MAX_LEVELS:
        weak = np.unique(np.quantile(confidence[confidence < 1.0], np.linspace(0, 1, MAX_LEVELS + 1)[1:-1]))
        levels = weak.tolist()
    else:
        levels = weak[1:].tolist()
    return [0.0, *(float(t) for t in levels), 1.0]


def kept_rows(users: np.ndarray, confidence: np.ndarray, floor: float) -> np.ndarray:
    """Rows Spark keeps at ``floor``: confidence ≥ floor, and every row of a user whose strongest is below it."""
    if floor <= 0:
        return np.ones(len(users), dtype=bool)
    strongest = np.zeros(int(users.max(initial=-1)) + 1)
    np.maximum.at(strongest, users, confidence)
    return (confidence >= floor) | (strongest[users] < floor)


def spark_min_confidence(data: SearchData, implicit_best: dict[str, Any], k: int, seconds: float,
                         fit_seconds: float) -> Mapping:
    """The threshold (module docstring) for implicit's winner ``implicit_best``, measured within ``seconds``;
    ``fit_seconds``: what one fit of it is expected to cost (its trial's time) — none is started that would end
    past ``seconds``, so with too little time the mapping stays at 0."""
    from recsys.models.implicit_als import factorize

    start = time.perf_counter()
    params = ALSParams.model_validate(implicit_best)
    out = Mapping()
    if params.alpha <= 0 or not len(data.users):
        return out
    confidence = params.alpha * weigh(data.users, data.items, data.weights, data.timestamps,
                                      params.weighting).astype(np.float64)
    best, cost = -1.0, fit_seconds
    for floor in thresholds(confidence):
        began = time.perf_counter()
        if began - start + cost > seconds:
            break
        # implicit multiplies by α itself: the matrix holds c / α, with c clamped to at least 1 as Spark has it
        compact = data.compact((np.maximum(confidence, 1.0) / params.alpha).astype(np.float32),
                               keep=kept_rows(data.users, confidence, floor))
        user_factors, item_factors, _ = factorize(compact.matrix, params)
        value = data.score_compact(compact, user_factors, item_factors, k)
        out.measured[round(floor, 6)] = round(float(value), 6)
        cost = time.perf_counter() - began
        if value > best:
            best, out.min_confidence = value, round(floor, 6)
    out.seconds = round(time.perf_counter() - start, 3)
    return out

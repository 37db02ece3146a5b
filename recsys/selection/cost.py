"""What a Spark ALS trial will cost, so the first Spark trial (implicit's winner, mapped) is sized to leave room for
several more in Spark's share of the budget instead of eating it whole.

Spark ALS's work per iteration is one factors × factors outer product per rating (building every user's and item's
normal equations) and one exact solve per user and item: seconds grow about as iterations × factors² × ratings.
A trial is predicted from the dearest finished trial measured so far, scaled by that work. A cheaper trial carries
relatively more fixed cost (job start-up, collecting the factors), so a prediction from it errs high: the sized
trial comes out smaller than it could be, never larger. Each measured trial makes the next prediction closer,
which is why :func:`sized` is asked again after every trial and the mapped trial may be tried a second time larger.
"""

from __future__ import annotations

from typing import Any

from recsys.selection.spaces import ITERATIONS, RANGES

MIN_ITERATIONS = ITERATIONS["spark_als"][0]
SPARE_ITERATIONS = 5        # fewer iterations are tried only once the factors are down to MIN_FACTORS
MIN_FACTORS = int(RANGES["factors"][0])
GROWTH = 1.5                # the mapped trial is tried again when re-sizing allows this much more work


def work(params: dict[str, Any]) -> float:
    """iterations × factors² (relative units: every trial of a search fits the same ratings, so they cancel)."""
    return params["iterations"] * params["factors"] ** 2


def predicted_seconds(params: dict[str, Any], measured: list[tuple[dict[str, Any], float]]) -> float:
    """Seconds of a trial with ``params``, from the dearest of the ``measured`` (params, seconds) pairs of the same
    search; 0 with nothing measured."""
    if not measured:
        return 0.0
    reference, seconds = max(measured, key=lambda m: work(m[0]))
    return seconds * work(params) / work(reference)


def sized(params: dict[str, Any], measured: list[tuple[dict[str, Any], float]], *, seconds: float) -> dict[str, Any]:
    """``params`` made cheap enough to be predicted within ``seconds``: iterations down to
    :data:`SPARE_ITERATIONS`, then factors down to :data:`MIN_FACTORS`, then iterations down to
    :data:`MIN_ITERATIONS` (what still does not fit is returned at that floor)."""
    out = dict(params)

    def fits() -> bool:
        return predicted_seconds(out, measured) <= seconds

    while not fits() and out["iterations"] > SPARE_ITERATIONS:
        out["iterations"] -= 1
    while not fits() and out["factors"] > MIN_FACTORS:
        out["factors"] = max(MIN_FACTORS, int(out["factors"] * 0.9))
    while not fits() and out["iterations"] > MIN_ITERATIONS:
        out["iterations"] -= 1
    return out

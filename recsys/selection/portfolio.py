"""Generic starting configurations of the ALS searches, enqueued after the configured parameters so the search
looks at the regions known to work for implicit-feedback ALS before TPE's random start-up phase.

A search space of ten dimensions is rarely sampled where several of them must be large at once (many factors, a
strong regularization, a low alpha and a long fit): such trials are also the dearest and, slower to converge, the
first a median pruner stops. Each point below is there for a reason that holds for any dataset, not for one
benchmark's test figures; regularization is implicit's flat λ (Spark's is mapped by the caller,
:mod:`recsys.selection.spaces`).
"""

from __future__ import annotations

from typing import Any

# name → (why, parameters over the configured ones)
STARTING_POINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "wide": ("many factors held back by a strong flat λ and a low alpha, fitted long: dense data (tens of "
             "interactions per user) is fitted best this way, and it is the corner random sampling rarely reaches",
             {"factors": 128, "regularization": 5.0, "alpha": 1.0, "iterations": 30,
              "weighting": {"power": 1.0, "scheme": "none"}}),
    "wide_sharpened": ("the same model with strong interactions counted much more than weak ones (w³): with graded "
                       "strengths (ratings, repeat purchases) the top of a user's history says most about the next",
                       {"factors": 128, "regularization": 5.0, "alpha": 1.0, "iterations": 30,
                        "weighting": {"power": 3.0, "scheme": "none"}}),
    "bm25": ("BM25 over the matrix with implicit's own constants (K1 100, B 0.8): discounts popular items and very "
             "long users, the usual remedy on sparse catalogues where popularity swamps the factors",
             {"factors": 64, "regularization": 0.5, "alpha": 5.0, "iterations": 20,
              "weighting": {"power": 1.0, "scheme": "bm25", "bm25_k1": 100.0, "bm25_b": 0.8}}),
    "recent": ("a one-year half-life: on time-ordered splits the latest interactions predict the next ones best",
               {"factors": 64, "regularization": 1.0, "alpha": 2.0, "iterations": 20,
                "weighting": {"power": 1.0, "scheme": "none", "half_life_days": 365.0}}),
}


def starting_points(graded: bool) -> list[dict[str, Any]]:
    """The portfolio's parameters (implicit's units); without ``graded`` strengths (every w equal) a power changes
    nothing, so the sharpened point would repeat the wide one and is left out."""
    return [params for name, (_, params) in STARTING_POINTS.items() if graded or name != "wide_sharpened"]

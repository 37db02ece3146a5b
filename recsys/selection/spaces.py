"""What model selection searches, per model: an Optuna trial → the model's parameters (popularity has none).

Both ALS share one space, in implicit's units. implicit adds a flat λ·‖x‖² to every user's and item's least
squares; Spark (ALS-WR) adds regParam·n·‖x‖², n the user's (item's) number of interactions. A trial's
``regularization`` is the flat λ, and Spark is given regParam = λ / n̄, n̄ the mean number of training interactions
per user: an average user is then shrunk as much by both libraries, so the two searches explore the same models
and one's winner is a sensible first guess for the other (:func:`flat_regularization` maps back).

The weighting of the interaction matrix (:class:`~recsys.models.params.WeightingParams`) is part of every space:
a power of the strength (0 = binary; with rating-only strengths, the rating power), BM25 or TF-IDF over the
matrix, and a recency half-life.
"""

from __future__ import annotations

from typing import Any

SEARCHED = ("content", "implicit_als", "spark_als")     # the order of a run's searches (cheapest first)
# name → (low, high, log) of every numeric dimension; iterations' high end is per model (Spark's cost a job each)
RANGES: dict[str, tuple[float, float, bool]] = {
    "power": (0.0, 8.0, False), "bm25_k1": (1.0, 1000.0, True), "bm25_b": (0.0, 1.0, False),
    "half_life_days": (30.0, 3650.0, True), "factors": (8, 256, True), "regularization": (1e-3, 100.0, True),
    "alpha": (0.1, 100.0, True), "dims": (16, 256, True), "min_df": (1, 5, False)}
MAX_ITERATIONS = {"implicit_als": 40, "spark_als": 20}


def _float(trial, name: str) -> float:
    low, high, log = RANGES[name]
    return trial.suggest_float(name, low, high, log=log)


def _int(trial, name: str) -> int:
    low, high, log = RANGES[name]
    return trial.suggest_int(name, int(low), int(high), log=log)


def weighting(trial) -> dict[str, Any]:
    """The weighting part of a trial (conditional: BM25's constants only with BM25, a half-life only if decayed)."""
    out: dict[str, Any] = {"power": _float(trial, "power"),
                           "scheme": trial.suggest_categorical("scheme", ["none", "bm25", "tfidf"])}
    if out["scheme"] == "bm25":
        out["bm25_k1"] = _float(trial, "bm25_k1")
        out["bm25_b"] = _float(trial, "bm25_b")
    if trial.suggest_categorical("decay", [False, True]):
        out["half_life_days"] = _float(trial, "half_life_days")
    return out


def als(trial, model: str) -> dict[str, Any]:
    """ALS parameters in implicit's units (see the module docstring for Spark's regularization)."""
    return {"factors": _int(trial, "factors"), "regularization": _float(trial, "regularization"),
            "alpha": _float(trial, "alpha"), "iterations": trial.suggest_int("iterations", 5, MAX_ITERATIONS[model]),
            "weighting": weighting(trial)}


def content(trial) -> dict[str, Any]:
    return {"dims": _int(trial, "dims"), "min_df": _int(trial, "min_df"), "weighting": weighting(trial)}


def suggest(trial, model: str) -> dict[str, Any]:
    """The parameters of ``model`` a trial proposes (``regularization`` flat for both ALS)."""
    if model == "content":
        return content(trial)
    if model in MAX_ITERATIONS:
        return als(trial, model)
    raise ValueError(f"{model} has no search space; searched: {', '.join(SEARCHED)}")


def spark_regularization(flat: float, mean_per_user: float) -> float:
    """Spark's regParam for implicit's flat λ (module docstring)."""
    return flat / max(mean_per_user, 1.0)


def flat_regularization(spark_reg: float, mean_per_user: float) -> float:
    return spark_reg * max(mean_per_user, 1.0)


def trial_values(model: str, params: dict[str, Any], mean_per_user: float) -> dict[str, Any]:
    """The space's values that reproduce ``params`` (a model's parameters), to enqueue them as a trial: the
    configured parameters first, so the search is never worse on valid than not searching."""
    weighting_ = params.get("weighting") or {}
    values: dict[str, Any] = {"power": weighting_.get("power", 1.0), "scheme": weighting_.get("scheme", "none"),
                              "decay": bool(weighting_.get("half_life_days"))}
    if values["scheme"] == "bm25":
        values.update(bm25_k1=weighting_.get("bm25_k1", 100.0), bm25_b=weighting_.get("bm25_b", 0.8))
    if values["decay"]:
        values["half_life_days"] = weighting_["half_life_days"]
    if model == "content":
        values.update(dims=params["dims"], min_df=params["min_df"])
    else:
        regularization = params["regularization"]
        if model == "spark_als":
            regularization = flat_regularization(regularization, mean_per_user)
        values.update(factors=params["factors"], regularization=regularization, alpha=params["alpha"],
                      iterations=min(max(params["iterations"], 5), MAX_ITERATIONS[model]))
    return {name: _clipped(name, value) for name, value in values.items()}


def _clipped(name: str, value: Any) -> Any:
    """``value`` inside the space (an enqueued value outside it would be a trial the space cannot express)."""
    if name not in RANGES:
        return value
    low, high, _ = RANGES[name]
    return type(value)(min(max(value, low), high))

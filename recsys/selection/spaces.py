"""What model selection searches, per model: an Optuna trial → the model's parameters (popularity has none).

Both ALS share one space, in implicit's units, and this is how the two map.

- Regularization. implicit adds a flat λ·‖x‖² to every user's and item's least squares; Spark (ALS-WR) adds
  regParam·n·‖x‖², n the user's (item's) number of interactions. One regParam cannot match a flat λ on both
  sides: on MovieLens latest-small (last 5 held out) users have 155 training interactions on average and items 10, so
  the old mapping regParam = λ / 155 gave the average item λ/16. The loss is a sum over interactions, so the
  shrinkage that counts is the one the user and the item of a typical interaction get: the interaction-weighted
  mean count (Σn²/Σn) is 622 for users and 55 for items there. A trial's ``regularization`` is the flat λ and
  Spark gets regParam = λ / √(622 · 55) = λ / 185 (:attr:`~recsys.selection.data.SearchData.typical_count`): the
  typical interaction's user is shrunk ~3× more than by implicit, its item ~3× less, as evenly as one parameter
  allows. Measured on that valid split (implicit's winner at 64 factors; seed noise ±0.001): Spark's MAP@10 is
  0.0342 and 0.0340 at λ/530 and λ/155 (5 iterations), 0.0329, 0.0321, 0.0308 at λ/155, λ/39, λ/19 (10): weaker
  than the user-side mapping does no harm, stronger does.
- Confidence. implicit weighs an interaction by c = α·w (unobserved pairs 1). Spark's own rule is c = 1 + α'·r,
  so :mod:`recsys.models.spark_als` gives it r = α·w − 1 with α' = 1: the same c, the same least squares (checked
  on a design where Spark's per-count λ is a flat one: both engines reach one objective value), and alpha is one
  parameter of one meaning in both spaces. Where α·w < 1 implicit weighs the interaction under an unobserved pair,
  which Spark cannot express: it keeps such an interaction at c = 1 or leaves it out, by a threshold
  ``min_confidence`` that only Spark's space has (in [0, 1]). Its first trial (implicit's winner) gets the threshold
  implicit itself finds best on the matrix Spark would see (:mod:`recsys.selection.confidence`, with what it
  measured on MovieLens). With c near 0 an interaction all but leaves
  implicit's least squares, so a low alpha with a recency half-life or BM25 drops old or weak interactions there:
  on MovieLens' temporal split implicit's winner is of that kind (alpha 0.19, BM25, 253-day half-life).
- Iterations. Spark solves each least squares exactly and is near its best after a few sweeps (5 and 10
  iterations score alike), implicit's conjugate gradient takes a few steps per sweep and needs more: the ranges
  differ (:data:`ITERATIONS`), and Spark's trials, ~10× dearer, stay short.

The weighting of the interaction matrix (:class:`~recsys.models.params.WeightingParams`) is part of every space:
a power of the strength (0 = binary; with rating-only strengths, the rating power), BM25 or TF-IDF over the
matrix, and a recency half-life.
"""

from __future__ import annotations

from typing import Any

SEARCHED = ("content", "cooccurrence", "implicit_als", "spark_als", "gru4rec")   # a run's search order (cheapest first)
# name → (low, high, log) of every numeric dimension; iterations are per model (:data:`ITERATIONS`)
RANGES: dict[str, tuple[float, float, bool]] = {
    "power": (0.0, 8.0, False), "bm25_k1": (1.0, 1000.0, True), "bm25_b": (0.0, 1.0, False),
    "half_life_days": (30.0, 3650.0, True), "factors": (8, 256, True), "regularization": (1e-3, 100.0, True),
    "alpha": (0.1, 100.0, True), "dims": (16, 256, True), "min_df": (1, 5, False),
    "min_confidence": (0.0, 1.0, False)}
ITERATIONS = {"implicit_als": (5, 40), "spark_als": (3, 10)}
# the session models' numeric dimensions (recsys.sessions): co-occurrence, then GRU4Rec
SESSION_RANGES: dict[str, tuple[float, float, bool]] = {
    "window": (1, 10, False), "backward": (0.0, 1.0, False), "damping": (0.0, 1.0, False),
    "neighbours": (20, 2000, True), "last_items": (1, 10, False), "recency": (0.1, 1.0, False),
    "hidden": (32, 256, True), "logq": (0.0, 1.0, False), "sample_alpha": (0.0, 1.0, False),
    "dropout_p_embed": (0.0, 0.5, False), "dropout_p_hidden": (0.0, 0.5, False), "learning_rate": (0.01, 0.5, True),
    "momentum": (0.0, 0.9, False), "bpreg": (0.0, 2.0, False), "elu_alpha": (0.0, 1.0, False), "epochs": (2, 12, False)}
RANGES |= SESSION_RANGES
N_SAMPLE = (0, 64, 256, 1024, 2048)        # GRU4Rec's extra negatives: a choice (0 is one, a log scale has none)
BATCH_SIZE = (16, 32, 64, 128)


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
    """ALS parameters in implicit's units (see the module docstring for Spark's regularization and
    ``min_confidence``)."""
    out = {"factors": _int(trial, "factors"), "regularization": _float(trial, "regularization"),
           "alpha": _float(trial, "alpha"), "iterations": trial.suggest_int("iterations", *ITERATIONS[model]),
           "weighting": weighting(trial)}
    if model == "spark_als":
        out["min_confidence"] = _float(trial, "min_confidence")
    return out


def content(trial) -> dict[str, Any]:
    return {"dims": _int(trial, "dims"), "min_df": _int(trial, "min_df"), "weighting": weighting(trial)}


def cooccurrence(trial) -> dict[str, Any]:
    """The co-occurrence model (:class:`~recsys.sessions.settings.CooccurrenceParams`); ``damping`` is ``alpha``."""
    out: dict[str, Any] = {"window": _int(trial, "window"), "backward": _float(trial, "backward"),
                           "normalise": trial.suggest_categorical("normalise", ["cosine", "conditional"]),
                           "neighbours": _int(trial, "neighbours"), "last_items": _int(trial, "last_items"),
                           "decay": _float(trial, "recency")}
    if out["normalise"] == "conditional":
        out["alpha"] = _float(trial, "damping")
    return out


def gru4rec(trial) -> dict[str, Any]:
    """GRU4Rec (:class:`~recsys.sessions.gru4rec.params.Gru4RecParams`): one layer, the loss and its own knobs, the
    sampling, dropout and optimiser; ``epochs`` bounded, the deadline stopping a trial in between."""
    out: dict[str, Any] = {"layers": [_int(trial, "hidden")],
                           "loss": trial.suggest_categorical("loss", ["cross-entropy", "bpr-max"]),
                           "n_sample": trial.suggest_categorical("n_sample", list(N_SAMPLE)),
                           "sample_alpha": _float(trial, "sample_alpha"),
                           "batch_size": trial.suggest_categorical("batch_size", list(BATCH_SIZE)),
                           "dropout_p_embed": _float(trial, "dropout_p_embed"),
                           "dropout_p_hidden": _float(trial, "dropout_p_hidden"),
                           "learning_rate": _float(trial, "learning_rate"), "momentum": _float(trial, "momentum"),
                           "epochs": _int(trial, "epochs")}
    if out["loss"] == "cross-entropy":
        out["logq"] = _float(trial, "logq")
    else:
        out.update(bpreg=_float(trial, "bpreg"), elu_alpha=_float(trial, "elu_alpha"))
    return out


def session_values(model: str, params: dict[str, Any]) -> dict[str, Any]:
    """:func:`trial_values` of a session model."""
    if model == "cooccurrence":
        values = {"window": params["window"], "backward": params["backward"], "normalise": params["normalise"],
                  "neighbours": params["neighbours"], "last_items": params["last_items"], "recency": params["decay"]}
        if params["normalise"] == "conditional":
            values["damping"] = params["alpha"]
    else:
        values = {name: params[name] for name in ("loss", "sample_alpha", "dropout_p_embed", "dropout_p_hidden",
                                                  "learning_rate", "momentum", "epochs")}
        values.update(hidden=params["layers"][0], n_sample=min(N_SAMPLE, key=lambda n: abs(n - params["n_sample"])),
                      batch_size=min(BATCH_SIZE, key=lambda n: abs(n - params["batch_size"])))
        values.update({"logq": params["logq"]} if params["loss"] == "cross-entropy" else
                      {"bpreg": params["bpreg"], "elu_alpha": params["elu_alpha"]})
    return {name: _clipped(name, value) for name, value in values.items()}


def suggest(trial, model: str) -> dict[str, Any]:
    """The parameters of ``model`` a trial proposes (``regularization`` flat for both ALS)."""
    if model == "content":
        return content(trial)
    if model == "cooccurrence":
        return cooccurrence(trial)
    if model == "gru4rec":
        return gru4rec(trial)
    if model in ITERATIONS:
        return als(trial, model)
    raise ValueError(f"{model} has no search space; searched: {', '.join(SEARCHED)}")


def spark_regularization(flat: float, typical_count: float) -> float:
    """Spark's regParam for implicit's flat λ (module docstring)."""
    return flat / max(typical_count, 1.0)


def flat_regularization(spark_reg: float, typical_count: float) -> float:
    return spark_reg * max(typical_count, 1.0)


def iterations_in(model: str, iterations: int) -> int:
    """``iterations`` inside ``model``'s range (implicit's winner given to Spark: module docstring)."""
    low, high = ITERATIONS[model]
    return min(max(iterations, low), high)


def trial_values(model: str, params: dict[str, Any], typical_count: float) -> dict[str, Any]:
    """The space's values that reproduce ``params`` (a model's parameters), to enqueue them as a trial: the
    configured parameters first, so the search is never worse on valid than not searching."""
    if model in ("cooccurrence", "gru4rec"):
        return session_values(model, params)
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
            regularization = flat_regularization(regularization, typical_count)
        values.update(factors=params["factors"], regularization=regularization, alpha=params["alpha"],
                      iterations=iterations_in(model, params["iterations"]))
        if model == "spark_als":
            values["min_confidence"] = params.get("min_confidence", 0.0)
    return {name: _clipped(name, value) for name, value in values.items()}


def _clipped(name: str, value: Any) -> Any:
    """``value`` inside the space (an enqueued value outside it would be a trial the space cannot express)."""
    if name not in RANGES:
        return value
    low, high, _ = RANGES[name]
    return type(value)(min(max(value, low), high))

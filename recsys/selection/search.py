"""The search of one model: an Optuna study (TPE sampler, median pruner) whose trials fit on the train rows of
:class:`~recsys.selection.data.SearchData` and are scored with MAP@K on its valid rows, within a time budget.

- implicit ALS reports MAP@K every ``tuning.report_every`` iterations (implicit's per-iteration callback), so the
  median pruner stops a trial that trails the others at the same iteration, and a trial still running at the
  deadline stops there. Spark ALS cannot report mid-fit (no warm start in ``pyspark.ml``): its trials are judged
  whole, and one still running at the deadline has its Spark jobs cancelled. The content model fits in about the
  time of one score, so it is not pruned either.
- The best few trials are then fitted again with other seeds and the best mean wins (:func:`rescore`): a single
  MAP@K on a validation split of a few hundred users is a noisy draw, and the best of hundreds of draws is the
  luckiest as much as the best.
- Trials run one at a time: implicit already keeps both cores busy (OpenMP) and so do Spark's jobs; two at once
  would only take turns.
- The study lives in SQLite under ``ops/selection/studies.db`` and is named ``<model>-<run_id>``: a step run again
  for the same run (an Airflow retry, ``recsys select`` twice) continues it; the sampler is seeded with
  ``tuning.seed`` plus the number of trials already in the study, so a resumed study draws new trials instead of
  repeating the first session's.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.models.params import model_params
from recsys.models.weighting import weigh
from recsys.selection import cost, spaces
from recsys.selection.data import SearchData
from recsys.selection.settings import TuningSettings

STUDIES = "studies.db"              # under ops/selection/ (recsys.ops.SELECTIONS)


class Stopped(Exception):
    """A trial stopped early (pruned, or at the end of its model's budget); ``last``: its last reported MAP@K."""

    def __init__(self, reason: str, last: float | None) -> None:
        super().__init__(reason)
        self.reason, self.last = reason, last


@dataclass
class Search:
    """The outcome of one model's search: ``best`` params (None: no trial finished; for the fit on every user,
    :mod:`recsys.selection.scale`) and ``best_value`` (its mean MAP@K over the seeds it was re-scored with, else its
    trial's value), every trial of this session, the re-scored candidates."""

    model: str
    study: str
    best: dict[str, Any] | None
    best_value: float | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    rescored: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    previous_trials: int = 0
    note: str | None = None
    typical_count: float = 0.0
    confidence_map: dict[float, float] | None = None   # Spark ALS: MAP@K per threshold (recsys.selection.confidence)
    searched_best: dict[str, Any] | None = None    # ``best`` as the trials fitted it, when the full fit differs
    converged: bool = False          # stopped by ``tuning.patience``: its unused budget goes back to the run


def study_name(model: str, run_id: str) -> str:
    return f"{model}-{run_id}"


def storage_url(warehouse: Path) -> str:
    from recsys.ops import SELECTIONS

    path = Path(warehouse) / SELECTIONS / STUDIES
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_study(warehouse: Path, name: str, tuning: TuningSettings):
    """The study ``name`` (created if new), its sampler seeded past the trials it already holds."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage_url(warehouse)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    done = len(study.trials)
    sampler = optuna.samplers.TPESampler(seed=tuning.seed + done, n_startup_trials=tuning.startup_trials,
                                         multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=tuning.report_every)
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


Trial = Callable[[dict[str, Any], Any, float], float]     # (params, optuna trial, deadline) -> MAP@K
# (wanted params, the (params, seconds) of the finished trials so far) -> params to run (:mod:`~.cost`)
Sizer = Callable[[dict[str, Any], list[tuple[dict[str, Any], float]]], dict[str, Any]]


def run_search(study, model: str, base: dict[str, Any], trial_fn: Trial, *, budget_seconds: float,
               tuning: TuningSettings, typical_count: float, first: list[dict[str, Any]] = (),
               size: Sizer | None = None) -> Search:
    """Ask/tell trials of ``study`` until ``budget_seconds`` or ``tuning.max_trials``, then re-score the best
    (:func:`rescore`); ``base`` (the configured params) is the first trial of a new study and ``first`` are tried
    next (the other ALS's winner, the generic starting points of :mod:`recsys.selection.portfolio`).

    ``size`` makes each of ``first`` affordable when its turn comes, from the trials measured by then; one it had
    to shrink is tried once more, re-sized, when what the later trials measured allows :data:`cost.GROWTH` × its
    work (Spark: :mod:`recsys.selection.cost`)."""
    from optuna.trial import TrialState

    start = time.perf_counter()
    deadline = start + budget_seconds
    previous = len(study.trials)
    queue: list[tuple[dict[str, Any], dict[str, Any] | None]] = []       # (wanted, as sized last time)
    if previous == 0:
        study.enqueue_trial(spaces.trial_values(model, base, typical_count))        # as configured, unsized
        queue = [(params, None) for params in first]
    durations: list[float] = []
    trials: list[dict[str, Any]] = []
    finished_at: list[tuple[float, float | None]] = []     # (seconds into the search, value of a finished trial)
    patient = fit_work(base) is not None                    # ALS only, as parsimony (:func:`converged_search`)
    converged = False
    while len(trials) < tuning.max_trials:
        now = time.perf_counter()
        if patient and converged_search(finished_at, now - start, budget_seconds, tuning):
            converged = True
            break
        expected = max(durations[-5:], default=0.0)      # the longest of the last few: trial costs vary with size
        if now >= deadline or (durations and now + expected + _rescore_reserve(trials, tuning, budget_seconds)
                               > deadline):
            break
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            _enqueue_next(study, model, queue, size, trials, typical_count)        # sized now, from what ran
        trial = study.ask()
        params = _params(model, base, spaces.suggest(trial, model), typical_count)
        began = time.perf_counter()
        try:
            value, state, stopped = trial_fn(params, trial, deadline), TrialState.COMPLETE, None
        except Stopped as exc:
            value, state, stopped = exc.last, TrialState.PRUNED, exc.reason
        seconds = time.perf_counter() - began
        durations.append(seconds)
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        trials.append({"number": trial.number, "params": params, "value": value, "stopped": stopped,
                       "seconds": round(seconds, 3)})
        finished_at.append((time.perf_counter() - start, value if stopped is None else None))
    complete = sorted((t for t in study.trials if t.state == TrialState.COMPLETE and t.value is not None),
                      key=lambda t: (-t.value, t.number))
    finished = [(t.number, t.value, _params(model, base, _rebuild(model, t.params), typical_count)) for t in complete]
    candidates = finished[:max(1, tuning.rescore_top)]
    cheap = cheapest_near(finished, tuning.parsimony)
    if cheap is not None and cheap not in candidates:
        candidates.insert(1, cheap)             # right after the best: cheap to re-score, and not cut by the deadline
    seconds = {t["number"]: t["seconds"] for t in trials}
    rescored = rescore(candidates, trial_fn, deadline=deadline, seconds=seconds,
                       fallback=float(np.median(durations or [0.0])),
                       seeds=tuning.rescore_seeds if tuning.rescore_top else 0)
    best = parsimonious(rescored, tuning.parsimony)
    if best is None and candidates:             # no time to re-score even the best trial: its one draw stands
        best = {"params": candidates[0][2], "mean": candidates[0][1]}
    return Search(model=model, study=study.study_name, best=best["params"] if best else None,
                  best_value=best["mean"] if best else None, trials=trials, rescored=rescored,
                  seconds=round(time.perf_counter() - start, 3), previous_trials=previous, converged=converged)


def converged_search(finished_at: list[tuple[float, float | None]], elapsed: float, budget_seconds: float,
                     tuning: TuningSettings) -> bool:
    """Whether a search has stopped paying: it has had ``tuning.patience`` of its ``budget_seconds`` and at least
    2 × ``tuning.startup_trials`` trials, and its last gain — a finished trial beating the value of the gain before
    by more than ``tuning.parsimony`` (the first finished trial is a gain) — lies at least ``tuning.patience`` of the
    ``elapsed`` seconds back. ``finished_at``: (seconds into the search, value; None for a stopped trial) per trial.
    The usual patience rule of early stopping, in time rather than trials, as a model's trials cost anything from
    0.1 s to a minute; the share of the budget first, as the cheap first trials (the portfolio's) would otherwise
    look like a plateau within seconds. :func:`run_search` applies it to the ALS searches only, whose gains the
    parsimony measures as it measures their winner: the content model's MAP@K on valid is small and noisy (on
    MovieLens its search cut at half its share came with the multi-stage model's lowest MAP@10 measured)."""
    if tuning.patience <= 0 or len(finished_at) < 2 * tuning.startup_trials or \
            elapsed < tuning.patience * budget_seconds:
        return False
    mark, gained = None, None
    for at, value in finished_at:
        if value is not None and (mark is None or value > mark * (1.0 + tuning.parsimony)):
            mark, gained = value, at
    return gained is not None and elapsed - gained >= tuning.patience * elapsed


def _enqueue_next(study, model: str, queue: list, size: Sizer | None, trials: list[dict[str, Any]],
                  typical_count: float) -> None:
    """Enqueue the next of ``queue`` that is worth a trial (sized by ``size``), if any (see :func:`run_search`)."""
    measured = [(t["params"], t["seconds"]) for t in trials if t["stopped"] is None]
    while queue:
        wanted, before = queue.pop(0)
        params = size(wanted, measured) if size else wanted
        if before is not None and cost.work(params) < cost.GROWTH * cost.work(before):
            continue                                        # hardly larger than its first try: not again
        if before is None and params != wanted:
            queue.insert(0, (wanted, params))
        study.enqueue_trial(spaces.trial_values(model, params, typical_count), skip_if_exists=True)
        return


def fit_work(params: dict[str, Any]) -> float | None:
    """What fitting ``params`` costs, relative to other trials of the same model (ALS: iterations × factors², see
    :func:`cost.work`); None for a model without such a measure (its trials are told apart by MAP@K alone)."""
    return cost.work(params) if "factors" in params and "iterations" in params else None


def cheapest_near(finished: list[tuple[int, float, dict[str, Any]]],
                  parsimony: float) -> tuple[int, float, dict[str, Any]] | None:
    """Of (number, value, params) trials, best first, the cheapest (:func:`fit_work`) whose value is within
    ``parsimony`` of the best one's; None when nothing is cheaper than the best or there is no cost measure."""
    if not finished or parsimony <= 0 or fit_work(finished[0][2]) is None:
        return None
    cheapest = _cheapest_within(finished, lambda t: t[1], lambda t: t[2], parsimony)
    return cheapest if fit_work(cheapest[2]) < fit_work(finished[0][2]) else None


def parsimonious(rescored: list[dict[str, Any]], parsimony: float) -> dict[str, Any] | None:
    """The winner of the re-scored candidates: the cheapest (:func:`fit_work`) whose mean MAP@K is within
    ``parsimony`` of the best mean, ties to the better mean; the best mean when ``parsimony`` is 0 or the model has no
    cost measure. The one-standard-error rule's idea: of the models validation cannot tell apart, the simplest, and
    here the cheapest to fit again on every user, as train, the multi-stage model and publish's refit all do."""
    if not rescored:
        return None
    if parsimony <= 0 or any(fit_work(r["params"]) is None for r in rescored):
        return max(rescored, key=lambda r: r["mean"])
    return _cheapest_within(rescored, lambda r: r["mean"], lambda r: r["params"], parsimony)


def _cheapest_within(entries: list, value, params, parsimony: float):
    """The entry of least :func:`fit_work` among those whose ``value`` is within ``parsimony`` of the best value;
    ties to the better value, then to the earlier entry."""
    floor = max(value(e) for e in entries) * (1.0 - parsimony)
    near = [(i, e) for i, e in enumerate(entries) if value(e) >= floor]
    return min(near, key=lambda ie: (fit_work(params(ie[1])), -value(ie[1]), ie[0]))[1]


def _rescore_reserve(trials: list[dict[str, Any]], tuning: TuningSettings, budget_seconds: float) -> float:
    """Seconds kept back at the end of the search for :func:`rescore`: its expected cost (a typical finished
    trial per fit), or nothing when that exceeds ``tuning.rescore_share`` of the budget (trials too dear)."""
    finished = [t["seconds"] for t in trials if t["stopped"] is None]
    if not tuning.rescore_top or not finished:
        return 0.0
    cost = (tuning.rescore_top + (tuning.parsimony > 0)) * tuning.rescore_seeds * float(np.median(finished))
    return cost if cost <= tuning.rescore_share * budget_seconds else 0.0


class _Unpruned:
    """The trial a re-scoring fit reports to: nothing is recorded and nothing is pruned."""

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False


def rescore(candidates: list[tuple[int, float, dict[str, Any]]], trial_fn: Trial, *, deadline: float, seeds: int,
            seconds: dict[int, float], fallback: float) -> list[dict[str, Any]]:
    """Fit each (number, value, params) candidate, best first, again with ``seeds`` other seeds (seed + 1, + 2, …)
    while the deadline allows (a fit is not started if its trial's time would overrun it); returns the candidates
    fully re-scored, each with its values (the trial's own first) and their mean. Only these compete for the win:
    one draw of MAP@K on a few hundred valid users moves by more than the gaps between good trials, so the search's
    single best value is partly luck (the winner's curse)."""
    out: list[dict[str, Any]] = []
    for number, value, params in candidates:
        values = [value]
        for offset in range(1, seeds + 1):
            if time.perf_counter() + seconds.get(number, fallback) > deadline:
                return out
            try:
                values.append(trial_fn({**params, "seed": params["seed"] + offset}, _Unpruned(), deadline))
            except Stopped:
                return out
        out.append({"number": number, "params": params, "values": values, "mean": float(np.mean(values))})
    return out


def _params(model: str, base: dict[str, Any], proposed: dict[str, Any], typical_count: float) -> dict[str, Any]:
    """A trial's full, validated parameters: the configured ones with the proposed ones over them, Spark's
    regularization mapped from the flat value (:mod:`recsys.selection.spaces`)."""
    values = dict(proposed)
    if model == "spark_als":
        values["regularization"] = spaces.spark_regularization(values["regularization"], typical_count)
    return model_params(model, {**base, **values}).model_dump()


def _rebuild(model: str, values: dict[str, Any]) -> dict[str, Any]:
    """Model parameters from a finished trial's flat values (the inverse of :func:`spaces.suggest`)."""
    from optuna.trial import FixedTrial

    return spaces.suggest(FixedTrial(values), model)


# --- one trial per model family ---------------------------------------------------------------------------------


def implicit_trial(data: SearchData, k: int, report_every: int) -> Trial:
    """Fit implicit ALS, reporting MAP@k every ``report_every`` iterations; pruned or out of time: stop there."""
    from recsys.models.implicit_als import factorize
    from recsys.models.params import ALSParams

    def run(params: dict[str, Any], trial, deadline: float) -> float:
        typed = ALSParams.model_validate(params)
        compact = data.compact(weigh(data.users, data.items, data.weights, data.timestamps, typed.weighting))
        matrix = compact.matrix
        last: list[float] = []

        def score(user_factors, item_factors) -> float:
            return data.score_compact(compact, user_factors, item_factors, k)

        def after(done: int, user_factors, item_factors) -> None:
            if time.perf_counter() > deadline:
                raise Stopped(f"out of time after {done} iterations", last[-1] if last else None)
            if done % report_every == 0 and done < typed.iterations:
                last.append(score(user_factors, item_factors))
                trial.report(last[-1], done)
                if trial.should_prune():
                    raise Stopped(f"pruned after {done} iterations", last[-1])

        user_factors, item_factors, _ = factorize(matrix, typed, callback=after)
        return score(user_factors, item_factors)

    return run


def spark_trial(spark, data: SearchData, k: int) -> Trial:
    """Fit Spark ALS through :func:`recsys.models.fit_model` (the train step's code) on the train rows; a fit still
    running at the deadline has its jobs cancelled (:func:`cancelled_at`) and stops there."""
    import pyarrow as pa

    from recsys import constants as C
    from recsys.models import fit_model

    rows = spark.createDataFrame(pa.table({C.USER_IDX: data.users, C.ITEM_IDX: data.items, "weight": data.weights,
                                           C.TIMESTAMP: data.timestamps})).cache()

    def run(params: dict[str, Any], trial, deadline: float) -> float:
        with cancelled_at(spark, deadline):
            fitted = fit_model("spark_als", rows, params)
            try:
                users, user_vectors = _arrays(fitted.user_factors)
                items, item_vectors = _arrays(fitted.item_factors)
            finally:
                fitted.discard_scratch()
                fitted.user_factors.unpersist()
                fitted.item_factors.unpersist()
        return data.score(users, user_vectors, items, item_vectors, k)

    return run


@contextmanager
def cancelled_at(spark, deadline: float):
    """Tag the Spark jobs this thread starts in the block and cancel them at ``deadline`` (``time.perf_counter``
    clock) from a timer thread; the block then raises :class:`Stopped`. Spark ALS cannot stop between iterations
    as implicit does, so without this a dear trial started near the end would overrun the budget by a whole fit."""
    context = spark.sparkContext
    tag = f"recsys-trial-{uuid.uuid4().hex}"
    timer = threading.Timer(max(0.0, deadline - time.perf_counter()), context.cancelJobsWithTag, args=(tag,))
    context.addJobTag(tag)
    timer.start()
    try:
        yield
    except Exception as exc:
        if time.perf_counter() < deadline:
            raise
        raise Stopped("cancelled at the deadline", None) from exc
    finally:
        timer.cancel()
        context.removeJobTag(tag)


def content_trial(data: SearchData, texts: tuple[np.ndarray, list[str]], k: int) -> Trial:
    """Embed the catalog text (cached per embedding parameters) and build the weighted profiles."""
    from recsys.models.content import embed, user_profiles, with_vectors
    from recsys.models.params import ContentParams

    item_ids, text = texts
    embeddings: dict[tuple, np.ndarray] = {}
    users_with_rows = np.unique(data.users)

    def run(params: dict[str, Any], trial, deadline: float) -> float:
        typed = ContentParams.model_validate(params)
        key = (typed.dims, typed.max_features, typed.min_df, typed.seed)
        if key not in embeddings:
            embeddings[key] = with_vectors(item_ids, embed(text, typed))     # as the content model: text only
        described, vectors = embeddings[key]
        matrix = data.matrix(weigh(data.users, data.items, data.weights, data.timestamps, typed.weighting))
        users, profiles = with_vectors(users_with_rows, user_profiles(matrix, described, vectors)[users_with_rows])
        return data.score(users, profiles, described, vectors, k)

    return run


def _arrays(factors) -> tuple[np.ndarray, np.ndarray]:
    """A factor DataFrame (id, features) → (ids, matrix)."""
    table = factors.select("id", "features").toArrow()
    ids = table.column("id").to_numpy().astype(np.int64)
    flat = table.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return ids, flat.reshape(len(ids), -1).astype(np.float32) if len(ids) else np.zeros((0, 1), np.float32)

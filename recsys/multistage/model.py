"""The multi-stage candidate of a run: retrievers → a learned ranker, behind the same interface as a factor model
(``recommend``, ``recommend_lists``, ``save``/``load``, ``item_factors`` for evaluation's diversity, ``user_factors``
for publish's refill), so evaluation, promotion, publish and the API treat it like any other model.

Training (:func:`fit`), on the rows it is fitted on (train + valid for a run's evaluation):
1. the latest split among them labels (``label_holdout`` last interactions per user when there is one split), and
   on a small set earlier windows too (:func:`label_windows`);
2. stage one: the retrievers are fitted on the earlier rows, and their candidates for the labelled users (a seeded
   sample of at most ``max_rank_users``), with features, train XGBoost's ``SparkXGBRanker`` (lambdarank, one query
   per user) on the Spark cluster — only users with at least one labelled item among their candidates teach it;
3. stage two: the retrievers are refitted on every row; they and the ranker are saved and score users.
Publish's refit on every split (:func:`refit`) fits stage two again on them and keeps the evaluated ranker.

Saved folder: ``user_factors``/``item_factors`` (the ALS retriever, Spark's layout), ``item_content``,
``item_neighbours``, ``item_side``, ``user_history`` (Parquet keyed by ``id``: the deletion cascade drops erased
users' and deleted items' rows from every ``user_*``/``item_*`` folder), ``ranker.json`` and ``model.json``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.constants import MULTISTAGE, RETRIEVERS
from recsys.logs import timed
from recsys.metrics import python_metrics as PM
from recsys.metrics.definitions import MAP, metric_key
from recsys.models.factors import RANKED_SCHEMA, list_column_to_matrix, shaped
from recsys.models.folder import FolderModel, vector_column, write_table
from recsys.models.params import ALSParams, ContentParams, MultiStageParams, RankerParams
from recsys.multistage import diversity as D
from recsys.multistage import features as Fe
from recsys.multistage import retrievers as R
from recsys.multistage.stage import Stage, fit_stage
from recsys.spark import task_slots

SPLIT_ORDER = ("train", "valid", "test")
ANN_FILE = "als.ann"      # the ALS retriever's approximate index, for catalogues of retrieval.ann_min_items or more
SIDE_COLUMNS = ("popularity", "recent_popularity", "trend", "first_ms", "price", "average_rating", "rating_number",
                "category")
CATALOGUE_COLUMNS = ("price", "average_rating", "rating_number", "category")
RANKER = "ranker"         # the lists' order when the learned ranker orders them (else a retriever's name)
RANKER_FILE = "ranker.json"
FEATURES_COLUMN = "features"     # the ranker's training frame: every feature in one array column
MIN_ROWS_PER_WORKER = 200_000   # SparkXGBRanker's rows per worker below which a second one costs more than it saves


@dataclass
class MultiStageModel(FolderModel):
    """A fitted multi-stage model, read from its folder (:meth:`load`)."""

    name: str
    params: dict[str, Any]
    path: Path
    user_factors: DataFrame
    item_factors: DataFrame
    seen: DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)
    scratch: Path | None = None
    cosine_similar: bool = True
    diversity: float | None = None      # the re-rank strength; None: the one chosen at fit (``info["diversity"]``)
    score_per_retriever: int | None = None   # candidates per retriever when scoring; None: the params' own

    @classmethod
    def load(cls, spark: SparkSession, path: Path | str, seen: DataFrame | None = None) -> MultiStageModel:
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        return cls(name=meta["name"], params=meta["params"], path=path, info=meta.get("info", {}),
                   user_factors=spark.read.parquet(str(path / "user_factors")),
                   item_factors=spark.read.parquet(str(path / "item_factors")), seen=seen)

    # -- scoring ------------------------------------------------------------------------------------------------

    def recommend(self, users: DataFrame | None = None, k: int = 10, exclude_seen: bool = True,
                  exclude_items: list[int] | None = None, block: int = 512, as_lists: bool = False,
                  with_scores: bool = False) -> DataFrame:
        """Top-``k`` per user by the ranker (the user's fitted items never recommended) → (user_idx, item_idx, score,
        rank), or one row per user (``as_lists``). ``users``: a DataFrame with ``user_idx`` (default: every user the
        model was fitted on); users it has no history for get no list."""
        spark = self.user_factors.sparkSession
        history = spark.read.parquet(str(self.path / "user_history"))
        if users is not None:
            history = history.join(users.select(F.col(C.USER_IDX).alias("id")).distinct(), "id", "left_semi")
        # a lone item's users in one partition, next to each other: one block, one query for them all
        lone_key = F.when(F.size("items") == 1, F.col("items")[0]).otherwise(-1 - F.col("id"))
        rows = history.join(self.user_factors.withColumnRenamed("features", "als"), "id", "left") \
            .repartition(lone_key).sortWithinPartitions(F.size("items"), F.col("items")[0])
        strength = self.info.get("diversity", 0.0) if self.diversity is None else self.diversity
        scorer = _Scorer.read(self.path, exclude_items or [], strength, self.score_per_retriever)
        bc = spark.sparkContext.broadcast(scorer)
        ranked = rows.select("id", "items", "weights", "profile_weights", "last_ms", "als").mapInArrow(
            _score_batches(bc, k, block), RANKED_SCHEMA)
        return shaped(ranked, as_lists, with_scores)

    def recommend_lists(self, users: DataFrame | None = None, k: int = 10, exclude_seen: bool = True,
                        block: int = 512, exclude_items: list[int] | None = None,
                        with_scores: bool = False) -> DataFrame:
        return self.recommend(users, k, exclude_seen, exclude_items, block=block, as_lists=True,
                              with_scores=with_scores)

    def similar_items(self, *args, **kwargs) -> DataFrame:
        raise NotImplementedError("similar items come from the run's ALS and content models")


# --- fitting ------------------------------------------------------------------------------------------------------


def fit(interactions: DataFrame, params: MultiStageParams, items: DataFrame | None = None) -> MultiStageModel:
    """``interactions``: (user_idx, item_idx, weight, timestamp, split); ``items``: :func:`catalogue_items`."""
    spark = interactions.sparkSession
    start = time.perf_counter()
    phases: dict[str, float] = {}                       # seconds per phase, in the model's info: where a fit goes
    first = stage_one_examples(interactions, params, items, phases)
    examples, truth = first.examples, first.truth
    with timed(phases, "cross_fit"):
        crossed = cross_fit(spark, examples, params, truth)
        orders = order_map(examples, crossed.scores, truth)
    ranker, ranker_info = None, {}
    with timed(phases, "ranker"):
        if best_order(orders) == RANKER:
            ranker, ranker_info = train_ranker(spark, examples.subset(examples.has_positive), params,
                                               rounds=crossed.rounds)
    retrievers = {name: value for name, value in orders.items() if name != RANKER}
    # no ranker (a retriever won, or nothing was labelled): the best retriever, else the ALS retriever's order
    order = RANKER if ranker is not None else best_order(retrievers) if retrievers else "als"
    ranker_info.update(crossed.info)
    ranker_info.update({"order": order, "order_map@10": orders})
    ordered = crossed.scores if order == RANKER else retriever_scores(examples.x, order)
    with timed(phases, "diversity"):
        ranker_info.update(choose_diversity(examples, ordered, first.stage, truth, params))

    with timed(phases, "stage_two"):
        users, items_, weights, stamps = first.rows
        every = _history(users, items_, weights, stamps, params)
        stage_two = _fit(every, first.stage.n_items, params, first.catalogue, first.content)
    info = {"train_seconds": round(time.perf_counter() - start, 3), "phase_seconds": phases,
            "label_rows": first.label_rows, **examples.info, **ranker_info}
    return _saved(interactions, stage_two, every, ranker, params, info)


@dataclass
class StageOne:
    """What a fit learns the ranker from: the retrievers fitted on the rows before the labels (``stage``), their
    candidates of the labelled users (``examples``) and those users' labelled items (``truth``); ``rows``: every
    fitted row's (users, items, weights, timestamps), ``catalogue``/``content``: the items' side, for stage two."""

    rows: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    catalogue: dict[str, np.ndarray]
    content: R.FactorSide | None
    stage: Stage
    examples: Examples
    truth: dict[int, list[int]]
    label_rows: int


def stage_one_examples(interactions: DataFrame, params: MultiStageParams, items: DataFrame | None,
                       phases: dict[str, float] | None = None) -> StageOne:
    """Stage one of a fit, up to the ranker's labelled examples (also what ``benchmarks/bench_ranker_trees.py``
    tries ranker settings on); ``phases``: seconds of its catalogue, stage-one and examples phases.

    Each label window (:func:`label_windows`, latest first) has its own stage one, fitted on the rows before it, and
    its own queries; ``stage`` is the latest window's."""
    if items is None:
        raise ValueError("the multi-stage model needs the catalogue: pass items=catalogue_items(...)")
    phases = {} if phases is None else phases
    with timed(phases, "catalogue"):
        users, items_, weights, stamps, splits = _columns(interactions)
        catalogue, content = _catalogue(items, params)
    n_items = _catalogue_size(items_, catalogue)
    windows = label_windows(users, stamps, splits, params.label_holdout, params.label_windows,
                            params.label_queries)
    stride = int(users.max(initial=-1)) + 1             # window w's queries: user + w × stride
    taken = np.zeros(len(users), dtype=bool)
    stages, parts, truth = [], [], {}
    for window, label in enumerate(windows):
        taken |= label
        early = ~taken
        with timed(phases, "stage_one"):
            earlier = _history(users[early], items_[early], weights[early], stamps[early], params)
            stages.append(_fit(earlier, n_items, params, catalogue, content))
        with timed(phases, "examples"):
            offset = window * stride
            part = training_examples(stages[-1], earlier, users[label], items_[label], params, offset=offset)
            truth.update(label_truth(part, users[label].astype(np.int64) + offset, items_[label]))
            parts.append(part)
    examples = Examples.joined(parts)
    return StageOne((users, items_, weights, stamps), catalogue, content, stages[0], examples, truth,
                    int(windows[0].sum()))


def refit(candidate: Path | str, interactions: DataFrame, params: MultiStageParams,
          items: DataFrame | None = None) -> MultiStageModel:
    """Publish's refit on every split: the ``candidate`` folder's ranker, order and diversity strength as evaluation
    measured them, its retrievers (stage two) fitted again on ``interactions``. A ranker labelled at publish by the
    newest split would be one no evaluation has seen; and stage one, the examples, the cross-fitted rankers and the
    diversity choice are not paid a second time."""
    if items is None:
        raise ValueError("the multi-stage model needs the catalogue: pass items=catalogue_items(...)")
    candidate = Path(candidate)
    start = time.perf_counter()
    users, items_, weights, stamps, _ = _columns(interactions)
    catalogue, content = _catalogue(items, params)
    n_items = _catalogue_size(items_, catalogue)
    every = _history(users, items_, weights, stamps, params)
    stage = _fit(every, n_items, params, catalogue, content)
    info = json.loads((candidate / "model.json").read_text())["info"]
    info = {**info, "refit_of": candidate.name, "refit_seconds": round(time.perf_counter() - start, 3)}
    ranker = None
    if (candidate / RANKER_FILE).is_file():
        import xgboost as xgb

        ranker = xgb.Booster()
        ranker.load_model(str(candidate / RANKER_FILE))
    return _saved(interactions, stage, every, ranker, params, info)


def _columns(interactions: DataFrame) -> tuple[np.ndarray, ...]:
    """(users, items, weights, timestamps, splits) of ``interactions`` as numpy arrays, in the driver."""
    rows = interactions.select(C.USER_IDX, C.ITEM_IDX, "weight", C.TIMESTAMP, C.SPLIT).toArrow()
    columns = tuple(rows.column(c).to_numpy(zero_copy_only=False) for c in
                    (C.USER_IDX, C.ITEM_IDX, "weight", C.TIMESTAMP))
    return (*columns, np.asarray(rows.column(C.SPLIT).to_pylist(), dtype=object))


def _history(users: np.ndarray, items: np.ndarray, weights: np.ndarray, stamps: np.ndarray,
             params: MultiStageParams) -> R.History:
    """The rows' history, weighed for the content profiles as the run's content model weighs its own."""
    weighting = ContentParams.model_validate(params.content).weighting
    return R.History.of(users, items, weights, stamps).weighed_for_profiles(weighting)


def _catalogue_size(items: np.ndarray, catalogue: dict[str, Any]) -> int:
    """Item indices the model covers: every catalogue item and every item interacted with."""
    return max(int(items.max(initial=-1)) + 1, len(catalogue["category"]))


def _saved(interactions: DataFrame, stage: Stage, history: R.History, ranker, params: MultiStageParams,
           info: dict[str, Any]) -> MultiStageModel:
    """The model written to a scratch folder of its own and loaded from it (the folder dropped once saved)."""
    folder = Path(tempfile.mkdtemp(prefix="multistage-"))
    write_model(folder, stage, history, ranker, params, info)
    model = MultiStageModel.load(interactions.sparkSession, folder,
                                 seen=interactions.select(C.USER_IDX, C.ITEM_IDX))
    model.scratch = folder
    return model


def label_rows(users: np.ndarray, stamps: np.ndarray, splits: np.ndarray, holdout: int) -> np.ndarray:
    """Rows that label the ranker: those of the latest split present, or with one split each user's last
    ``holdout`` rows (users with no earlier row keep theirs unlabelled: nothing would retrieve for them)."""
    present = [s for s in SPLIT_ORDER if (splits == s).any()]
    if len(present) > 1:
        return splits == present[-1]
    return last_rows(users, stamps, np.ones(len(users), dtype=bool), np.full(int(users.max(initial=-1)) + 1, holdout))


def label_windows(users: np.ndarray, stamps: np.ndarray, splits: np.ndarray, holdout: int, windows: int,
                  enough: int) -> list[np.ndarray]:
    """The rows labelling each window, latest first: :func:`label_rows`, then, while the windows hold fewer than
    ``enough`` queries (a user with a row before its labels, per window) and at most ``windows`` in all, each
    labelled user's rows just before its labels, as many as it had there — when the labels are per user
    (leave-last-out), not a period of time (a temporal split: one window).

    Why: a ranker learns from queries, and a small set has few (MovieLens latest-small: 610 users, one query each);
    an earlier window, with retrievers fitted on the rows before it (:func:`stage_one_examples`), is as honest a
    query as the latest one and adds as many, while a set with ``enough`` queries pays no second stage one. On a
    temporal split the period before the labels was measured no better (All_Beauty) or worse (Subscription_Boxes):
    what the next weeks bring is not what earlier weeks brought."""
    masks = [label_rows(users, stamps, splits, holdout)]
    if _is_period(stamps, masks[0]):
        return masks
    taken = masks[0].copy()
    labelled = _labelled_users(users, masks[0], ~taken)
    n_users = int(users.max(initial=-1)) + 1
    while len(masks) < windows and labelled < enough:
        counts = np.bincount(users[masks[-1]], minlength=n_users)
        mask = last_rows(users, stamps, ~taken, counts)
        taken |= mask
        found = _labelled_users(users, mask, ~taken)
        if not found:
            break
        masks.append(mask)
        labelled += found
    return masks


def _labelled_users(users: np.ndarray, label: np.ndarray, before: np.ndarray) -> int:
    """Users with a labelled row and a row to retrieve from (``before``)."""
    return len(np.intersect1d(users[label], users[before]))


def _is_period(stamps: np.ndarray, label: np.ndarray) -> bool:
    """Whether the labels are a period of time every other row precedes (a temporal split's latest split)."""
    return bool(label.any() and not label.all() and stamps[label].min() >= stamps[~label].max())


def last_rows(users: np.ndarray, stamps: np.ndarray, among: np.ndarray, per_user: np.ndarray) -> np.ndarray:
    """Of the rows ``among``, each user's latest ``per_user[user]``, for users with more rows than that there
    (a user whose every row would be a label keeps them: nothing would retrieve for it)."""
    rows = np.flatnonzero(among)
    order = rows[np.lexsort((stamps[rows], users[rows]))]
    ranked_users = users[order]
    starts = np.searchsorted(ranked_users, ranked_users, side="left")
    ends = np.searchsorted(ranked_users, ranked_users, side="right")
    from_end = ends - np.arange(len(order))
    wanted = per_user[ranked_users]
    out = np.zeros(len(users), dtype=bool)
    out[order] = (from_end <= wanted) & (ends - starts > wanted)
    return out


def _fit(history: R.History, n_items, params, catalogue, content) -> Stage:
    return fit_stage(history, n_items, params, ALSParams.model_validate(params.als), content, catalogue)


@dataclass
class Examples:
    """Candidates of labelled queries (``qid``: one per user and label window; ``users``: whose query, default the
    qid itself) with features, 0/1 labels and whether their query has any positive among its candidates (a query
    without one teaches lambdarank nothing)."""

    qid: np.ndarray
    items: np.ndarray
    x: np.ndarray
    label: np.ndarray
    has_positive: np.ndarray
    info: dict[str, Any]
    users: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.users is None:
            self.users = self.qid

    def subset(self, keep: np.ndarray) -> Examples:
        return Examples(self.qid[keep], self.items[keep], self.x[keep], self.label[keep], self.has_positive[keep],
                        self.info, self.users[keep])

    @classmethod
    def joined(cls, parts: list[Examples]) -> Examples:
        """Several windows' examples as one set; ``info``: the latest window's, with every window's query counts."""
        if len(parts) == 1:
            return parts[0]
        info = {**parts[0].info, "label_windows": len(parts),
                "labelled_queries": sum(p.info["labelled_users"] for p in parts),
                "queries_with_a_positive": sum(p.info["users_with_a_positive"] for p in parts)}
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("qid", "items", "x", "label", "has_positive")), info,
                   np.concatenate([p.users for p in parts]))


def training_examples(stage: Stage, history: R.History, label_users: np.ndarray, label_items: np.ndarray,
                      params: MultiStageParams, offset: int = 0) -> Examples:
    """Stage one's candidates for the labelled users (a seeded sample above ``max_rank_users``), labelled; their
    queries are ``offset`` + user."""
    wanted = np.unique(label_users)
    if len(wanted) > params.max_rank_users:
        wanted = np.sort(np.random.default_rng(params.ranker.seed).choice(wanted, params.max_rank_users,
                                                                          replace=False))
    rows = np.flatnonzero(np.isin(history.users, wanted))
    block = history.take(rows)
    found = stage.candidates(block, stage.user_vectors(block.users))
    truth = np.unique(label_users.astype(np.int64) * stage.n_items + label_items)
    keys = block.users[found.rows].astype(np.int64) * stage.n_items + found.items
    label = np.isin(keys, truth).astype(np.float32)
    positives = np.bincount(found.rows, weights=label, minlength=len(rows))
    labelled = int(np.isin(label_users, block.users).sum())
    info = {"labelled_users": len(rows), "users_with_a_positive": int((positives > 0).sum()),
            "candidates_per_user": round(len(found.rows) / max(len(rows), 1), 1),
            "candidate_recall": round(float(label.sum()) / max(labelled, 1), 4)}
    users = block.users[found.rows].astype(np.int64)
    return Examples(users + offset, found.items, found.x, label, positives[found.rows] > 0, info, users)


def folds(examples: Examples, params: MultiStageParams) -> list[np.ndarray]:
    """The labelled users in ``folds`` seeded folds (none when a fold would hold fewer than 20); a user's queries
    of every label window fall in the same fold."""
    users = np.unique(examples.users)
    n = params.folds
    if n < 2 or len(users) < 20 * n:
        return []
    shuffled = np.random.default_rng(params.ranker.seed + 1).permutation(users)
    return [np.sort(part) for part in np.array_split(shuffled, n)]


@dataclass
class CrossFit:
    """Every labelled candidate scored by a ranker that did not see its user (None: too few users), and the
    boosting rounds early stopping chose (None: the configured ``n_estimators``)."""

    scores: np.ndarray | None
    rounds: int | None
    info: dict[str, Any]


def cross_fit(spark: SparkSession, examples: Examples, params: MultiStageParams,
              truth: dict[int, list[int]] | None = None) -> CrossFit:
    """One ranker per fold, trained on the other folds with early stopping on this one (MAP@10): honest scores for
    every labelled user, and the number of rounds the final ranker gets (the folds' mean best), so a small training
    set is not over-fitted by the configured number of trees. With ``truth`` (the labelled users' items), the rounds
    are then the fewest of :func:`round_grid` whose cross-fitted MAP@10 is within ``ranker.parsimony`` of the
    early-stopped rankers' (:func:`fewest_rounds`), and the scores are those of that many trees."""
    parts = folds(examples, params)
    if not parts:
        return CrossFit(None, None, {"crossfit_note": "too few labelled users for cross-fitting"})
    rankers, best, insides = [], [], []
    for part in parts:
        inside = np.isin(examples.users, part)
        ranker, _ = train_ranker(spark, examples.subset(~inside & examples.has_positive), params,
                                 valid=examples.subset(inside & examples.has_positive))
        if ranker is None:
            return CrossFit(None, None, {"crossfit_note": "a fold without labelled candidates"})
        rankers.append(ranker)
        insides.append(inside)
        best.append(int(getattr(ranker, "best_iteration", params.ranker.n_estimators - 1)) + 1)

    def crossed(rounds: list[int]) -> np.ndarray:
        scores = np.zeros(len(examples.qid), dtype=np.float32)
        for ranker, inside, r in zip(rankers, insides, rounds):
            scores[inside] = ranker.inplace_predict(examples.x[inside], iteration_range=(0, r)).astype(np.float32)
        return scores

    scores, mean_best = crossed(best), max(1, int(round(float(np.mean(best)))))
    info: dict[str, Any] = {"crossfit_rounds": best}
    if truth and params.ranker.parsimony > 0:
        reference = order_map(examples, scores, truth, only=RANKER)[RANKER]
        curve = {r: order_map(examples, crossed([min(r, b) for b in best]), truth, only=RANKER)[RANKER]
                 for r in round_grid(mean_best)}
        rounds = fewest_rounds(curve, reference, params.ranker.parsimony)
        if rounds < mean_best:
            scores, mean_best = crossed([min(rounds, b) for b in best]), rounds
        info.update({"crossfit_map@10": round(reference, 6), "crossfit_rounds_map@10": curve,
                     "crossfit_rounds_chosen": mean_best})
    return CrossFit(scores, mean_best, info)


def round_grid(rounds: int, points: int = 8) -> list[int]:
    """Tree counts tried below ``rounds`` (itself included): ``points`` evenly spread, each ≥ 1."""
    return sorted({max(1, int(round(rounds * j / points))) for j in range(1, points + 1)})


def fewest_rounds(curve: dict[int, float], reference: float, parsimony: float) -> int:
    """The fewest trees of ``curve`` (trees → cross-fitted MAP@10) within ``parsimony`` of ``reference``, the
    early-stopped rankers' MAP@10; the most of them when none is."""
    near = [r for r, value in curve.items() if value >= reference * (1.0 - parsimony)]
    return min(near) if near else max(curve)


def label_truth(examples: Examples, label_users: np.ndarray, label_items: np.ndarray) -> dict[int, list[int]]:
    """The labelled items of each user with candidates (the users the ranker's order is judged on)."""
    wanted, truth = set(np.unique(examples.qid).tolist()), {}
    for user, item in zip(label_users.tolist(), label_items.tolist()):
        if user in wanted:
            truth.setdefault(user, []).append(item)
    return truth


def retriever_scores(x: np.ndarray, retriever: str) -> np.ndarray:
    """Candidates ordered by one retriever's rank (those it did not propose last)."""
    ranks = x[:, Fe.FEATURES.index(f"{retriever}_rank")]
    return np.where(np.isnan(ranks), -np.inf, -ranks).astype(np.float32)


def order_map(examples: Examples, crossed: np.ndarray | None, truth: dict[int, list[int]],
              only: str | None = None) -> dict[str, float]:
    """MAP@10 on the labelled users of the cross-fitted ranker's order (``ranker``, when there are cross-fitted
    scores) and of each retriever's own order, on the same candidates.

    Why: on a small or very sparse set (a few hundred labelled users) the ranker can learn less than the best single
    signal it is given; the comparison is honest because the ranker's scores come from rankers that did not see
    the user and a retriever never sees labels. Without cross-fitted scores (too few labelled users to check it)
    the ranker is not trusted either: the best retriever orders the lists (:func:`best_order`). ``only``: that
    order alone."""
    return {name: float(values.mean()) for name, values in order_values(examples, crossed, truth, only).items()}


def order_values(examples: Examples, crossed: np.ndarray | None, truth: dict[int, list[int]],
                 only: str | None = None) -> dict[str, np.ndarray]:
    """Each order's MAP@10 per labelled query (:func:`order_map`'s means), in one query order for every order."""
    users, rows = np.unique(examples.qid, return_inverse=True)
    present = [r for r in RETRIEVERS if not np.isnan(examples.x[:, Fe.FEATURES.index(f"{r}_rank")]).all()]
    options = {name: retriever_scores(examples.x, name) for name in present if only in (None, name)}
    if crossed is not None and only in (None, RANKER):
        options = {RANKER: crossed, **options}
    if not truth:
        return {}
    values = {}
    for name, scores in options.items():
        lists = D.top_lists(rows, examples.items, scores, len(users), D.K, 0.0, 1, None)
        predictions = {int(u): lists.of(r).tolist() for r, u in enumerate(users)}
        values[name] = PM.per_user_metrics(predictions, truth, [D.K])[metric_key(MAP, D.K)]
    return values


def best_order(orders: dict[str, float]) -> str:
    """The order of highest MAP@10 (ties keep the ranker); the ranker when nothing could be judged."""
    return max(orders, key=lambda name: (orders[name], name == RANKER)) if orders else RANKER


def choose_diversity(examples: Examples, scores: np.ndarray | None, stage: Stage, truth: dict[int, list[int]],
                     params: MultiStageParams) -> dict[str, Any]:
    """On the labelled users' scores (cross-fitted, or the chosen retriever's): the diversity strength
    (:mod:`diversity`) and its curve."""
    space = embedding_space(stage)
    if scores is None or space is None:
        return {"diversity": 0.0, "diversity_note": "no cross-fitted scores or embeddings: the ranker's order"}
    users, rows = np.unique(examples.qid, return_inverse=True)
    strength, curve = D.choose_strength(rows, examples.items, scores, users, truth, params.diversity_grid,
                                        params.diversity_max_loss, params.diversity_pool, space,
                                        params.diversity_confidence)
    return {"diversity": strength, "diversity_curve": curve, "diversity_users": len(users)}


def embedding_space(stage: Stage) -> D.Space | None:
    """The item vectors diversity is measured in: the content embeddings (what items are about), else ALS's."""
    side = stage.content if stage.content is not None else stage.als
    return D.Space.of(side.row_of, side.vectors) if side is not None else None


def booster_params(ranker: RankerParams) -> dict[str, Any]:
    """The trees' parameters, as SparkXGBRanker passes them to ``xgboost.train`` (benchmarks train with these)."""
    return {"objective": ranker.objective, "max_depth": ranker.max_depth, "learning_rate": ranker.learning_rate,
            "min_child_weight": ranker.min_child_weight, "subsample": ranker.subsample,
            "lambdarank_pair_method": "topk", "lambdarank_num_pair_per_sample": 10, "ndcg_exp_gain": False}


def train_ranker(spark: SparkSession, examples: Examples, params: MultiStageParams, *,
                 valid: Examples | None = None, rounds: int | None = None):
    """Fit ``SparkXGBRanker`` on the examples → (booster, info with feature importances). ``valid``: early stopping
    on its MAP@10 (the booster's ``best_iteration``); ``rounds``: trees to grow (default ``n_estimators``)."""
    from xgboost.spark import SparkXGBRanker

    ranker = params.ranker
    if not len(examples.label):
        return None, {"ranker": "no labelled candidates: the best retriever orders the lists"}
    scratch = Path(tempfile.mkdtemp(prefix="multistage-examples-"))
    try:
        parts = [(examples, False)] + ([(valid, True)] if valid is not None and len(valid.label) else [])
        columns = {"qid": np.concatenate([e.qid for e, _ in parts]).astype(np.int64),
                   "label": np.concatenate([e.label for e, _ in parts]),
                   "validation": np.concatenate([np.full(len(e.label), v) for e, v in parts])}
        # one array column, not a column per feature: with a list of feature columns xgboost.spark (3.2) fails on
        # an Arrow batch holding no validation rows (KeyError 'values'), as a partition's last batch may
        x = np.vstack([e.x for e, _ in parts]).astype(np.float32)
        offsets = pa.array(np.arange(len(x) + 1, dtype=np.int64) * x.shape[1])
        columns[FEATURES_COLUMN] = pa.LargeListArray.from_arrays(offsets, pa.array(x.ravel()))
        pq.write_table(pa.table(columns), scratch / "part-0.parquet")
        frame = spark.read.parquet(str(scratch))
        workers = max(1, min(task_slots(spark), len(examples.label) // MIN_ROWS_PER_WORKER))
        stopping = {"validation_indicator_col": "validation", "early_stopping_rounds": ranker.early_stopping_rounds,
                    "eval_metric": "ndcg"} if len(parts) > 1 else {}
        estimator = SparkXGBRanker(features_col=FEATURES_COLUMN, label_col="label", qid_col="qid",
                                   n_estimators=rounds or ranker.n_estimators, random_state=ranker.seed,
                                   num_workers=workers, missing=float("nan"), **booster_params(ranker), **stopping)
        booster = estimator.fit(frame).get_booster()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    gain = booster.get_score(importance_type="total_gain")
    names = {f"f{j}": name for j, name in enumerate(Fe.FEATURES)}
    total = sum(gain.values()) or 1.0
    importances = {names.get(k, k): round(v / total, 4) for k, v in sorted(gain.items(), key=lambda kv: -kv[1])}
    return booster, {"feature_importance": importances, "ranker_workers": workers,
                     "ranker_rounds": rounds or ranker.n_estimators}


# --- the catalogue -----------------------------------------------------------------------------------------------


def catalogue_items(spark: SparkSession, warehouse: Path) -> DataFrame:
    """(item_idx, text, price, average_rating, rating_number, category_key) of every live item: the content
    retriever's text and the ranker's item features. ``category_key``: the item's second-level catalogue category
    (the first when it has one), else its main category, else its file category."""
    from recsys import tables as T
    from recsys.features import catalog_text

    items = T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted"))
    meta = T.read_table(spark, warehouse, C.SILVER_ITEMS).select(
        C.ITEM_ID, "price", "average_rating", "rating_number", "main_category",
        F.when(F.size("categories") >= 2, F.element_at("categories", 2))
         .when(F.size("categories") == 1, F.element_at("categories", 1)).alias("deep"))
    joined = items.join(meta, C.ITEM_ID, "left").select(
        C.ITEM_IDX, "price", "average_rating", "rating_number",
        F.coalesce("deep", "main_category", C.CATEGORY).alias("category_key"))
    return joined.join(catalog_text(spark, warehouse), C.ITEM_IDX, "left")


def _catalogue(items: DataFrame, params: MultiStageParams) -> tuple[dict[str, np.ndarray], R.FactorSide | None]:
    """Item arrays over item_idx and the content retriever's embeddings."""
    from recsys.models.content import embed, with_vectors

    table = items.toArrow()
    ids = table.column(C.ITEM_IDX).to_numpy().astype(np.int64)
    n = int(ids.max(initial=-1)) + 1
    out: dict[str, np.ndarray] = {}
    for name in ("price", "average_rating", "rating_number"):
        values = np.full(n, np.nan, dtype=np.float32)
        values[ids] = table.column(name).to_numpy(zero_copy_only=False).astype(np.float32)
        out[name] = values
    keys = table.column("category_key").to_pylist()
    codes = {key: code for code, key in enumerate(sorted({k for k in keys if k}))}
    category = np.full(n, -1, dtype=np.int32)
    category[ids] = [codes.get(k, -1) if k else -1 for k in keys]
    out["category"] = category
    content = None
    if "content" in params.retrievers:
        texts = [t or "" for t in table.column("text").to_pylist()]
        embedded = embed(texts, ContentParams.model_validate(params.content))
        described, vectors = with_vectors(ids.astype(np.int32), embedded)
        if len(described):
            content = R.FactorSide.of(described, vectors, n)
    return out, content


# --- persistence and scoring --------------------------------------------------------------------------------------


def write_model(folder: Path, stage: Stage, history: R.History, ranker, params: MultiStageParams,
                info: dict[str, Any]) -> None:
    """Stage two, the users' histories and the ranker under ``folder`` (layout: module docstring)."""
    dims = stage.als.vectors.shape[1] if stage.als is not None else 1
    als_ids = stage.als.ids if stage.als is not None else np.zeros(0, np.int32)
    _vectors(folder / "item_factors", als_ids, stage.als.vectors if stage.als is not None else np.zeros((0, dims)))
    user_ids = history.users
    user_vectors = stage.user_vectors(user_ids)
    _vectors(folder / "user_factors", user_ids, user_vectors)
    if stage.content is not None:
        _vectors(folder / "item_content", stage.content.ids, stage.content.vectors)
    if stage.neighbours is not None:
        csr = stage.neighbours.tocsr()
        ids = np.flatnonzero(np.diff(csr.indptr)).astype(np.int32)
        offsets = np.append(0, np.cumsum(np.diff(csr.indptr)[ids])).astype(np.int32)
        pick = np.concatenate([np.arange(csr.indptr[i], csr.indptr[i + 1]) for i in ids]) if len(ids) \
            else np.zeros(0, np.int64)
        write_table(folder / "item_neighbours", {
            "id": pa.array(ids, pa.int32()),
            "neighbours": pa.ListArray.from_arrays(pa.array(offsets), pa.array(csr.indices[pick].astype(np.int32))),
            "scores": pa.ListArray.from_arrays(pa.array(offsets), pa.array(csr.data[pick].astype(np.float32)))})
    side = stage.side
    write_table(folder / "item_side", {"id": pa.array(np.arange(stage.n_items, dtype=np.int32)),
                                  **{c: pa.array(np.asarray(getattr(side, c), dtype=np.float64))
                                     for c in SIDE_COLUMNS}})
    offsets = pa.array(history.indptr.astype(np.int32))
    write_table(folder / "user_history", {
        "id": pa.array(history.users, pa.int32()),
        "items": pa.ListArray.from_arrays(offsets, pa.array(history.items, pa.int32())),
        "weights": pa.ListArray.from_arrays(offsets, pa.array(history.weights, pa.float32())),
        "profile_weights": pa.ListArray.from_arrays(offsets, pa.array(
            history.weights if history.profile_weights is None else history.profile_weights, pa.float32())),
        "last_ms": pa.array(history.last_ms, pa.int64())})
    if ranker is not None:
        ranker.save_model(str(folder / RANKER_FILE))
    if stage.als is not None and stage.als.index is not None:
        stage.als.index.save(folder / ANN_FILE)
    meta = {"name": MULTISTAGE, "params": params.model_dump(), "info": info, "n_items": stage.n_items,
            "end_ms": side.end_ms}
    (folder / "model.json").write_text(json.dumps(meta, indent=2, default=str))


def _vectors(folder: Path, ids: np.ndarray, matrix: np.ndarray) -> None:
    write_table(folder, {"id": pa.array(np.asarray(ids, dtype=np.int32), pa.int32()), "features": vector_column(matrix)})


@dataclass
class _Scorer:
    """What a scoring task needs, broadcast once: stage two's item side, the ranker (raw JSON), the exclusions."""

    params: dict[str, Any]
    n_items: int
    side: Fe.ItemSide
    als: tuple[np.ndarray, np.ndarray] | None
    content: tuple[np.ndarray, np.ndarray] | None
    neighbours: sp.csr_matrix | None
    ranker: bytes | None
    exclude: np.ndarray
    strength: float
    order: str                   # RANKER, or the retriever whose ranks order the lists (:func:`order_map`)
    index_path: str | None = None

    @classmethod
    def read(cls, path: Path, exclude: list[int], strength: float, per_retriever: int | None = None) -> _Scorer:
        """``per_retriever``: overrides the params' ``score_per_retriever``."""
        meta = json.loads((path / "model.json").read_text())
        if per_retriever is not None:
            meta["params"]["score_per_retriever"] = per_retriever
        n = int(meta["n_items"])
        side_table = pq.read_table(path / "item_side")
        ids = side_table.column("id").to_numpy()
        arrays = {}
        for name in SIDE_COLUMNS:
            values = np.full(n, -1 if name == "category" else np.nan, dtype=np.float64)
            values[ids] = side_table.column(name).to_numpy(zero_copy_only=False)
            arrays[name] = values.astype(np.int32 if name == "category" else np.float32) \
                if name != "first_ms" else values
        side = Fe.ItemSide(end_ms=float(meta["end_ms"]), **arrays)
        neighbours = None
        if (path / "item_neighbours").is_dir():
            table = pq.read_table(path / "item_neighbours")
            lengths = table.column("neighbours").combine_chunks().value_lengths().to_numpy()
            rows = np.repeat(table.column("id").to_numpy(), lengths)
            cols = table.column("neighbours").combine_chunks().flatten().to_numpy()
            vals = table.column("scores").combine_chunks().flatten().to_numpy()
            neighbours = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
        ranker = (path / RANKER_FILE).read_bytes() if (path / RANKER_FILE).is_file() else None
        return cls(meta["params"], n, side, _factor_arrays(path / "item_factors"),
                   _factor_arrays(path / "item_content") if (path / "item_content").is_dir() else None,
                   neighbours, ranker, np.asarray(sorted(set(exclude)), dtype=np.int32), strength,
                   RANKER if ranker is not None else meta["info"].get("order", "als"),
                   str((path / ANN_FILE).resolve()) if (path / ANN_FILE).is_file() else None)

    def stage(self) -> Stage:
        """Stage two as it scores users: at most ``score_per_retriever`` candidates from each retriever."""
        params = MultiStageParams.model_validate(self.params)
        params = params.model_copy(update={"per_retriever": min(params.per_retriever, params.score_per_retriever)})
        als = R.FactorSide.of(*self.als, self.n_items, params.als.regularization) \
            if self.als is not None and len(self.als[0]) else None
        if als is not None and self.index_path is not None:
            from recsys.retrieval.spark import cached_index

            als.index = cached_index(self.index_path, params.retrieval)
        content = R.FactorSide.of(*self.content, self.n_items) if self.content is not None else None
        return Stage(params, self.n_items, self.side, als, None, content, self.neighbours)

    def booster(self):
        if self.ranker is None:
            return None
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(self.ranker))
        booster.set_param({"nthread": 1})
        return booster


def _factor_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(folder)
    ids = table.column("id").to_numpy().astype(np.int32)
    return ids, list_column_to_matrix(table.column("features").combine_chunks())


def _score_batches(bc, k: int, block: int):
    """mapInArrow: rows (id, items, weights, profile_weights, last_ms, als) → each user's top ``k`` by the ranker."""

    def run(batches):
        from pyspark import TaskContext

        from recsys.retrieval.ann import task_threads

        context = TaskContext.get()
        task_threads(context.cpus() if context is not None else 1)      # faiss, when the ALS side has an index
        scorer: _Scorer = bc.value
        stage = scorer.stage()
        booster = scorer.booster()
        pool = int(scorer.params.get("diversity_pool", 50))
        space = embedding_space(stage) if scorer.strength > 0 else None
        for batch in batches:
            for start in range(0, batch.num_rows, block):
                part = batch.slice(start, min(block, batch.num_rows - start))
                if part.num_rows:
                    yield _rank_block(part, stage, booster, scorer.order, scorer.exclude, k, scorer.strength, pool,
                                      space)

    return run


def _rank_block(part: pa.RecordBatch, stage: Stage, booster, order: str, exclude: np.ndarray, k: int,
                strength: float, pool: int, space: D.Space | None) -> pa.RecordBatch:
    items_col = part.column("items")
    lengths = items_col.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    history = R.History(part.column("id").to_numpy().astype(np.int32),
                        np.append(0, np.cumsum(lengths)).astype(np.int64),
                        items_col.flatten().to_numpy(zero_copy_only=False).astype(np.int32),
                        part.column("weights").flatten().to_numpy(zero_copy_only=False).astype(np.float32),
                        part.column("last_ms").to_numpy(zero_copy_only=False).astype(np.int64),
                        profile_weights=part.column("profile_weights").flatten().to_numpy(zero_copy_only=False)
                        .astype(np.float32))
    als = part.column("als")
    dims = stage.als.vectors.shape[1] if stage.als is not None else 1
    vectors = np.zeros((part.num_rows, dims), dtype=np.float32)
    present = np.asarray(als.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if present.any():
        vectors[present] = list_column_to_matrix(als.filter(pa.array(present)))
    found = stage.candidates(history, vectors)
    keep = ~np.isin(found.items, exclude)
    rows, items, x = found.rows[keep], found.items[keep], found.x[keep]
    scores = booster.inplace_predict(x).astype(np.float32) if booster is not None else retriever_scores(x, order)
    lists = D.top_lists(rows, items, scores, part.num_rows, k, strength, pool, space)
    offsets = pa.array(lists.offsets)
    return pa.RecordBatch.from_arrays(
        [pa.array(history.users, pa.int32()), pa.ListArray.from_arrays(offsets, pa.array(lists.items, pa.int32())),
         pa.ListArray.from_arrays(offsets, pa.array(lists.scores, pa.float32()))],
        names=["_key", C.ITEMS, "scores"])


"""Silver → gold: dense id vocabularies, interaction strength/confidence, and a train/valid/test label.

- ``gold/user_index`` / ``gold/item_index`` map string ids to dense ints once; later builds only
  append new ids (existing ones keep their index), so every model and the API share one vocabulary.
- ``gold/interactions``: one row per (user_idx, item_idx) with ``weight`` w and ``confidence``
  c = 1 + alpha·w (Hu, Koren & Volinsky 2008), where
  w = (base_weight + rating_weight·(rating/5)^rating_power + verified_weight·verified
       + helpful_weight·log1p(helpful_vote) + Σ event weights) · 0.5^(age_days / half_life_days),
       age counted from the newest interaction
  (not from "now", so a rebuild of the same data gives the same weights). Both ALS trainers take w
  and alpha, so they see the same confidences. Event weights come from ``ops/events`` (API clicks,
  add-to-carts, purchases: :func:`event_signals`); a pair only events know becomes an interaction too.
- ``split``: official Amazon 2023 timestamp cuts (falling back to the 80 %/90 % time quantiles when
  those leave valid or test empty, e.g. data outside 2021–2023), the time quantiles themselves
  (``temporal``: any dataset, one global clock), leave-last-out per user, or a random
  mask per user; train always precedes valid and test in the temporal strategies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.config import ConfidenceSettings, FeatureSettings, SplitSettings
from recsys.logs import step

log = logging.getLogger(__name__)

TRAIN, VALID, TEST = "train", "valid", "test"
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class SplitInfo:
    strategy: str
    valid_cut_ms: int | None = None
    test_cut_ms: int | None = None
    note: str | None = None


# ------------------------------------------------------------------------------------------------
# vocabularies
# ------------------------------------------------------------------------------------------------

def extend_index(spark: SparkSession, path: str, ids: DataFrame, id_col: str, idx_col: str,
                 extra: list[str] = ()) -> int:
    """Append ids not yet in the index at ``path`` with indices after the current maximum.

    New ids are numbered in sorted order, so the same input always yields the same vocabulary.
    Returns how many ids were added.
    """
    existing = spark.read.format("delta").load(path)
    new = ids.join(existing.select(id_col), id_col, "left_anti")
    offset = existing.agg(F.max(idx_col)).first()[0]
    offset = -1 if offset is None else int(offset)
    numbered = new.withColumn(idx_col, (F.row_number().over(Window.orderBy(id_col)) + offset).cast("int"))
    numbered = numbered.select(id_col, idx_col, *extra).cache()
    try:
        added = numbered.count()
        if added:
            numbered.write.format("delta").mode("append").save(path)
    finally:
        numbered.unpersist()
    return added


# ------------------------------------------------------------------------------------------------
# confidence
# ------------------------------------------------------------------------------------------------

EVENT_WEIGHT = "event_weight"   # Σ event weights of a (user, item) pair, see event_signals


def event_signals(spark: SparkSession, warehouse: Path, weights: dict[str, float]) -> DataFrame | None:
    """Per (user_id, parent_asin) of ``ops/events``: the summed weight of its item event types, each type once (a
    repeated purchase adds nothing, so events lift a pair by at most Σ event_weights), and the first event's time
    (ms); None without an events table or weights. Impressions and scroll-ends name no item and weigh nothing."""
    weights = {t: w for t, w in weights.items() if w > 0}
    if not weights or not T.is_delta_table(Path(T.table_path(warehouse, C.EVENTS))):
        return None
    weight = F.create_map(*[F.lit(x) for t, w in sorted(weights.items()) for x in (t, float(w))])
    return (T.read_table(spark, warehouse, C.EVENTS)
            .where(F.col("event_type").isin(sorted(weights)) & F.col(C.ITEM_ID).isNotNull()
                   & F.col(C.USER_ID).isNotNull())
            .groupBy(C.USER_ID, C.ITEM_ID, "event_type")
            .agg(F.min(F.unix_millis(F.col("ts"))).alias("_event_ts"))
            .groupBy(C.USER_ID, C.ITEM_ID)
            .agg(F.sum(weight[F.col("event_type")]).alias(EVENT_WEIGHT), F.min("_event_ts").alias("_event_ts")))


def with_events(reviews: DataFrame, events: DataFrame | None) -> DataFrame:
    """Reviews plus the pairs only events know (rating null), each with its ``event_weight`` (0 if none).

    A reviewed pair keeps its review's timestamp, so events never move it across a split cut; an event-only pair
    takes its first event's time. Later events add to a pair's weight, as helpful votes (counted when the dump
    was crawled) already do.
    """
    if events is None:
        return reviews.withColumn(EVENT_WEIGHT, F.lit(0.0))
    return (reviews.join(events, [C.USER_ID, C.ITEM_ID], "full_outer")
            .withColumn(C.TIMESTAMP, F.coalesce(F.col(C.TIMESTAMP), F.col("_event_ts")))
            .withColumn(EVENT_WEIGHT, F.coalesce(F.col(EVENT_WEIGHT), F.lit(0.0)))
            .drop("_event_ts"))


def interaction_weight(reviews: DataFrame, conf: ConfidenceSettings) -> DataFrame:
    """Adds ``weight`` (w) and ``confidence`` (1 + alpha·w) to reviews; see the module docstring.

    A missing rating (an event-only pair) adds nothing; ``event_weight`` (see :func:`with_events`) is added when
    the column is there."""
    stars = F.coalesce(F.col(C.RATING), F.lit(0.0)) / 5.0
    raw = (F.lit(conf.base_weight) + F.lit(conf.rating_weight) * F.pow(stars, F.lit(conf.rating_power))
           + F.lit(conf.verified_weight) * F.coalesce(F.col(C.VERIFIED).cast("double"), F.lit(0.0))
           + F.lit(conf.helpful_weight) * F.log1p(F.greatest(F.coalesce(F.col(C.HELPFUL_VOTE), F.lit(0)), F.lit(0))))
    if EVENT_WEIGHT in reviews.columns:
        raw = raw + F.col(EVENT_WEIGHT)
    if conf.half_life_days:
        newest = reviews.agg(F.max(C.TIMESTAMP)).first()[0] or 0
        age_days = (F.lit(newest) - F.col(C.TIMESTAMP)) / _MS_PER_DAY
        raw = raw * F.pow(F.lit(0.5), age_days / conf.half_life_days)
    return (reviews.withColumn("weight", raw.cast("double"))
            .withColumn(C.CONFIDENCE, (1.0 + F.lit(conf.alpha) * F.col("weight")).cast("double")))


# ------------------------------------------------------------------------------------------------
# k-core and splits
# ------------------------------------------------------------------------------------------------

def kcore(df: DataFrame, k: int, max_rounds: int = 50) -> DataFrame:
    """Keep only users and items with at least ``k`` interactions, repeated until stable."""
    if k <= 1:
        return df
    current = df.localCheckpoint()
    size = current.count()
    for _ in range(max_rounds):
        users = current.groupBy(C.USER_IDX).count().where(F.col("count") >= k).select(C.USER_IDX)
        items = current.groupBy(C.ITEM_IDX).count().where(F.col("count") >= k).select(C.ITEM_IDX)
        nxt = current.join(users, C.USER_IDX, "left_semi").join(items, C.ITEM_IDX, "left_semi").localCheckpoint()
        new_size = nxt.count()
        current = nxt
        if new_size == size:
            break
        size = new_size
    return current


def label_split(df: DataFrame, settings: SplitSettings) -> tuple[DataFrame, SplitInfo]:
    """Add ``split`` ∈ {train, valid, test} to interactions (user_idx, item_idx, timestamp)."""
    if settings.strategy == "official":
        return _temporal_split(df, settings)
    if settings.strategy == "temporal":
        valid_cut, test_cut = _quantile_cuts(df, settings)
        return df.withColumn(C.SPLIT, _by_cuts(valid_cut, test_cut)), SplitInfo("temporal", valid_cut, test_cut)
    if settings.strategy == "leave_last_out":
        return _leave_last_out(df, settings.holdout), SplitInfo("leave_last_out")
    return _random_split(df, settings), SplitInfo("random")


def _by_cuts(valid_cut: int, test_cut: int):
    ts = F.col(C.TIMESTAMP)
    return F.when(ts >= test_cut, F.lit(TEST)).when(ts >= valid_cut, F.lit(VALID)).otherwise(F.lit(TRAIN))


def _temporal_split(df: DataFrame, settings: SplitSettings) -> tuple[DataFrame, SplitInfo]:
    valid_cut, test_cut = settings.valid_cut_ms, settings.test_cut_ms
    ts = F.col(C.TIMESTAMP)
    counts = df.agg(F.sum(((ts >= valid_cut) & (ts < test_cut)).cast("long")).alias("valid"),
                    F.sum((ts >= test_cut).cast("long")).alias("test"),
                    F.sum((ts < valid_cut).cast("long")).alias("train")).first()
    if counts["valid"] and counts["test"] and counts["train"]:
        return df.withColumn(C.SPLIT, _by_cuts(valid_cut, test_cut)), SplitInfo("official", valid_cut, test_cut)
    q_valid, q_test = settings.fallback_quantiles
    valid_cut, test_cut = _quantile_cuts(df, settings)
    note = (f"official cut points leave train/valid/test = {counts['train']}/{counts['valid']}/{counts['test']}: "
            f"fell back to the {q_valid:.0%}/{q_test:.0%} timestamp quantiles")
    log.warning(note)
    return df.withColumn(C.SPLIT, _by_cuts(valid_cut, test_cut)), SplitInfo("official", valid_cut, test_cut, note)


def _quantile_cuts(df: DataFrame, settings: SplitSettings) -> tuple[int, int]:
    """The (valid, test) cut points at the ``fallback_quantiles`` of all timestamps (exact quantiles)."""
    valid_cut, test_cut = (int(x) for x in df.approxQuantile(C.TIMESTAMP, list(settings.fallback_quantiles), 0.0))
    return valid_cut, test_cut


def _leave_last_out(df: DataFrame, holdout: int = 1) -> DataFrame:
    """Per user: the latest ``holdout`` interactions → test (users with more than ``holdout``), the ``holdout``
    before them → valid (users with more than 2·``holdout``), the rest → train. Valid mirrors test, so model
    selection is scored on a held-out set of the size the run is finally judged on."""
    order = Window.partitionBy(C.USER_IDX).orderBy(F.col(C.TIMESTAMP).desc(), F.col(C.ITEM_IDX).desc())
    n = F.count(F.lit(1)).over(Window.partitionBy(C.USER_IDX))
    rn = F.row_number().over(order)
    return df.withColumn(C.SPLIT, F.when((rn <= holdout) & (n > holdout), F.lit(TEST))
                         .when((rn <= 2 * holdout) & (n > 2 * holdout), F.lit(VALID)).otherwise(F.lit(TRAIN)))


def _random_split(df: DataFrame, settings: SplitSettings) -> DataFrame:
    """Per user, a seeded hash order: the first ⌊test·n⌋ (≥1 when n ≥ 2) → test, the next ⌊valid·n⌋ →
    valid; at least one interaction stays in train."""
    key = F.xxhash64(F.lit(settings.seed), C.USER_IDX, C.ITEM_IDX)
    rn = F.row_number().over(Window.partitionBy(C.USER_IDX).orderBy(key, C.ITEM_IDX))
    n = F.count(F.lit(1)).over(Window.partitionBy(C.USER_IDX))
    n_test = F.when(n >= 2, F.greatest(F.lit(1), F.floor(n * settings.random_test_fraction))).otherwise(0)
    n_valid = F.least(F.floor(n * settings.random_valid_fraction), n - n_test - 1)
    return df.withColumn(C.SPLIT, F.when(rn <= n_test, F.lit(TEST))
                         .when(rn <= n_test + F.greatest(n_valid, F.lit(0)), F.lit(VALID)).otherwise(F.lit(TRAIN)))


# ------------------------------------------------------------------------------------------------
# what the models read of gold
# ------------------------------------------------------------------------------------------------

def interactions_version(warehouse: Path) -> int:
    """The Delta version of gold/interactions: the data version a model or a trial is recorded with."""
    return int(T.describe_table(Path(T.table_path(warehouse, C.INTERACTIONS)))["version"])


def catalog_text(spark: SparkSession, warehouse: Path) -> DataFrame:
    """(item_idx, text) of every live item, what the content model embeds."""
    from recsys.models.content import item_text

    items = T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted"))
    return item_text(T.read_table(spark, warehouse, C.SILVER_ITEMS), items)


# ------------------------------------------------------------------------------------------------
# the step
# ------------------------------------------------------------------------------------------------

def build_features(spark: SparkSession, warehouse: Path, settings: FeatureSettings) -> dict:
    """silver → gold/user_index, gold/item_index, gold/interactions, gold/splits (idempotent)."""
    with step("build_features", warehouse=str(warehouse), split=settings.split.strategy) as rec:
        events = event_signals(spark, warehouse, settings.confidence.event_weights)
        reviews = with_events(T.read_table(spark, warehouse, C.SILVER_REVIEWS), events)
        items = T.read_table(spark, warehouse, C.SILVER_ITEMS)
        user_index = T.ensure_table(spark, warehouse, T.USER_INDEX)
        item_index = T.ensure_table(spark, warehouse, T.ITEM_INDEX)
        rec["new_users"] = extend_index(spark, user_index, reviews.select(C.USER_ID).distinct(), C.USER_ID, C.USER_IDX)
        # Items come from reviews and the catalog; the category is the file category of its rows.
        item_ids = (reviews.where(F.col(C.CATEGORY).isNotNull()).select(C.ITEM_ID, C.CATEGORY)
                    .unionByName(items.select(C.ITEM_ID, C.CATEGORY))
                    .groupBy(C.ITEM_ID).agg(F.min(C.CATEGORY).alias(C.CATEGORY))
                    .withColumn("deleted", F.lit(False)))
        rec["new_items"] = extend_index(spark, item_index, item_ids, C.ITEM_ID, C.ITEM_IDX, [C.CATEGORY, "deleted"])

        users = spark.read.format("delta").load(user_index)
        live_items = spark.read.format("delta").load(item_index).where(~F.col("deleted"))
        weighted = interaction_weight(reviews, settings.confidence)
        interactions = (weighted.join(users, C.USER_ID).join(live_items.select(C.ITEM_ID, C.ITEM_IDX), C.ITEM_ID)
                        .select(C.USER_IDX, C.ITEM_IDX, "weight", C.CONFIDENCE, C.TIMESTAMP))
        interactions = kcore(interactions, settings.split.kcore)
        labelled, info = label_split(interactions, settings.split)
        path = T.ensure_table(spark, warehouse, T.INTERACTIONS)
        labelled.select(*T.INTERACTIONS.columns).write.format("delta").mode("overwrite").save(path)

        counts = {r[C.SPLIT]: r["count"] for r in
                  spark.read.format("delta").load(path).groupBy(C.SPLIT).count().collect()}
        summary = {"strategy": info.strategy, "train": counts.get(TRAIN, 0), "valid": counts.get(VALID, 0),
                   "test": counts.get(TEST, 0), "valid_cut_ms": info.valid_cut_ms, "test_cut_ms": info.test_cut_ms,
                   "kcore": settings.split.kcore, "note": info.note, "built_at": datetime.now(timezone.utc)}
        splits_path = T.ensure_table(spark, warehouse, T.SPLITS)
        spark.createDataFrame([summary], schema=T.SPLITS.ddl).write.format("delta").mode("overwrite").save(splits_path)
        rec.update({k: v for k, v in summary.items() if k != "built_at"})
    return summary

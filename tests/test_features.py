"""gold/* from silver: stable vocabularies, the documented confidence formula, and every split
strategy reproducible, disjoint, complete and free of future leakage."""

from __future__ import annotations

import math
import random

import pytest
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.config import ConfidenceSettings, FeatureSettings, SplitSettings
from recsys.features import build_features, interaction_weight

DAY = 86_400_000
T0 = 1_600_000_000_000  # 2020-09-13: before the official cut points


def silver_rows(n_users=40, n_items=30, per_user=(1, 9), start=T0, span_days=1200, seed=3):
    rnd = random.Random(seed)
    rows = []
    for u in range(n_users):
        for i in rnd.sample(range(n_items), rnd.randint(*per_user)):
            rows.append({"user_id": f"AU{u:04d}", "parent_asin": f"B{i:09d}", "asin": f"B{i:09d}",
                         "rating": float(rnd.randint(1, 5)), "timestamp": start + rnd.randrange(span_days) * DAY,
                         "title": "t", "text": "x", "helpful_vote": rnd.choice([0, 0, 3]),
                         "verified_purchase": rnd.random() < 0.8, "category": "Cat"})
    return rows


def write_silver(spark, wh, rows):
    reviews = spark.createDataFrame(rows, schema=T.SILVER_REVIEWS.ddl)
    reviews.write.format("delta").mode("overwrite").save(T.ensure_table(spark, wh, T.SILVER_REVIEWS))
    items = reviews.select(C.ITEM_ID, C.CATEGORY).distinct()
    for col in T.SILVER_ITEMS.columns:
        if col not in items.columns:
            items = items.withColumn(col, F.lit(None))
    items.select(*T.SILVER_ITEMS.columns).write.format("delta").mode("overwrite").option(
        "mergeSchema", "false").save(T.ensure_table(spark, wh, T.SILVER_ITEMS))


def gold(spark, wh, rel=C.INTERACTIONS):
    return T.read_table(spark, wh, rel)


@pytest.fixture(scope="module")
def rows():
    return silver_rows()


def test_confidence_follows_the_documented_formula(spark):
    conf = ConfidenceSettings(alpha=4.0, rating_weight=1.0, verified_weight=0.5, helpful_weight=0.25,
                              half_life_days=100.0)
    df = spark.createDataFrame([(4.0, True, 3, T0), (2.0, False, 0, T0 - 100 * DAY)],
                               f"{C.RATING} double, {C.VERIFIED} boolean, {C.HELPFUL_VOTE} bigint, {C.TIMESTAMP} bigint")
    got = [(r["weight"], r[C.CONFIDENCE]) for r in interaction_weight(df, conf).orderBy(F.desc(C.TIMESTAMP)).collect()]
    w_new = 4.0 / 5 + 0.5 + 0.25 * math.log1p(3)          # newest: no decay
    w_old = (2.0 / 5) * 0.5                                # one half-life older
    assert got[0] == pytest.approx((w_new, 1 + 4 * w_new))
    assert got[1] == pytest.approx((w_old, 1 + 4 * w_old))
    steep = conf.model_copy(update={"rating_power": 4.0, "verified_weight": 0.0, "helpful_weight": 0.0,
                                    "half_life_days": None})
    got = [r["weight"] for r in interaction_weight(df, steep).orderBy(F.desc(C.TIMESTAMP)).collect()]
    assert got == pytest.approx([(4.0 / 5) ** 4, (2.0 / 5) ** 4])


def test_api_events_weigh_in_and_event_only_pairs_become_interactions(spark, tmp_path):
    from datetime import datetime, timezone

    wh = tmp_path / "wh"
    reviewed = {"user_id": "AU0001", "parent_asin": "B000000001", "asin": "B000000001", "rating": 5.0,
                "timestamp": T0, "title": "t", "text": "x", "helpful_vote": 0, "verified_purchase": False,
                "category": "Cat"}
    other = {**reviewed, "user_id": "AU0002", "parent_asin": "B000000002", "asin": "B000000002", "rating": 1.0}
    write_silver(spark, wh, [reviewed, other])
    ts = datetime(2020, 9, 20, tzinfo=timezone.utc)
    events = [("e1", "purchase", "AU0001", "B000000001"), ("e2", "click", "AU0001", "B000000001"),
              ("e3", "click", "AU0001", "B000000001"),
              ("e4", "add_to_cart", "NEWUSER", "B000000002"),     # a user only the API knows
              ("e5", "impression", "AU0002", None), ("e6", "scroll_end", "AU0002", None),
              ("e7", "purchase", "AU0002", "NOT_IN_CATALOG")]     # unknown item: never an interaction
    spark.createDataFrame([(e, t, u, a, "r", None, None, ts, ts, "v1", "m") for e, t, u, a in events],
                          T.EVENTS.ddl).write.format("delta").mode("append").save(T.ensure_table(spark, wh, T.EVENTS))
    conf = ConfidenceSettings(alpha=2.0, rating_weight=1.0, verified_weight=0.0, helpful_weight=0.0,
                              half_life_days=None, event_weights={"click": 0.2, "add_to_cart": 0.5, "purchase": 1.0})
    build_features(spark, wh, FeatureSettings(confidence=conf, split=SplitSettings(strategy="random", seed=1)))
    users = {r[C.USER_IDX]: r[C.USER_ID] for r in gold(spark, wh, C.USER_INDEX).collect()}
    items = {r[C.ITEM_IDX]: r[C.ITEM_ID] for r in gold(spark, wh, C.ITEM_INDEX).collect()}
    got = {(users[r[C.USER_IDX]], items[r[C.ITEM_IDX]]): (r["weight"], r[C.CONFIDENCE], r[C.TIMESTAMP])
           for r in gold(spark, wh).collect()}
    assert set(got) == {("AU0001", "B000000001"), ("AU0002", "B000000002"), ("NEWUSER", "B000000002")}
    assert got["AU0001", "B000000001"] == pytest.approx((1.0 + 1.0 + 0.2, 1 + 2 * 2.2, T0))   # review keeps ts;
    # the second click adds nothing: each event type counts once per pair
    assert got["AU0002", "B000000002"] == pytest.approx((1 / 5, 1 + 2 / 5, T0))     # no item event: review only
    event_ms = int(ts.timestamp() * 1000)
    assert got["NEWUSER", "B000000002"] == pytest.approx((0.5, 2.0, event_ms))      # event-only: its first event


def test_event_weights_only_name_item_events():
    with pytest.raises(ValueError, match="impression"):
        ConfidenceSettings(event_weights={"impression": 0.1})


@pytest.mark.parametrize("strategy", ["official", "temporal", "leave_last_out", "random"])
def test_splits_are_disjoint_complete_and_reproducible(spark, tmp_path, rows, strategy):
    wh = tmp_path / "wh"
    write_silver(spark, wh, rows)
    settings = FeatureSettings(split=SplitSettings(strategy=strategy))
    summary = build_features(spark, wh, settings)
    first = {(r[C.USER_IDX], r[C.ITEM_IDX]): r[C.SPLIT] for r in gold(spark, wh).collect()}
    assert len(first) == len({(r["user_id"], r["parent_asin"]) for r in rows})      # complete, one label each
    assert set(first.values()) <= {"train", "valid", "test"}
    assert summary["train"] + summary["valid"] + summary["test"] == len(first)
    assert summary["test"] > 0 and summary["train"] > 0
    build_features(spark, wh, settings)
    again = {(r[C.USER_IDX], r[C.ITEM_IDX]): r[C.SPLIT] for r in gold(spark, wh).collect()}
    assert again == first


def test_official_split_has_no_future_in_train_and_falls_back_outside_2021_2023(spark, tmp_path, rows):
    wh = tmp_path / "wh"
    write_silver(spark, wh, rows)   # 2020-09 … 2023-12: the official cuts apply
    summary = build_features(spark, wh, FeatureSettings())
    assert summary["note"] is None and summary["valid_cut_ms"] == C.OFFICIAL_VALID_CUT_MS
    df = gold(spark, wh)
    bounds = {r[C.SPLIT]: (r["lo"], r["hi"]) for r in
              df.groupBy(C.SPLIT).agg(F.min(C.TIMESTAMP).alias("lo"), F.max(C.TIMESTAMP).alias("hi")).collect()}
    assert bounds["train"][1] < C.OFFICIAL_VALID_CUT_MS <= bounds["valid"][0]
    assert bounds["valid"][1] < C.OFFICIAL_TEST_CUT_MS <= bounds["test"][0]

    old = tmp_path / "old"
    write_silver(spark, old, silver_rows(start=1_300_000_000_000, span_days=400))   # 2011–2012
    summary = build_features(spark, old, FeatureSettings())
    assert "fell back" in summary["note"]
    assert summary["valid"] > 0 and summary["test"] > 0
    stamps = gold(spark, old).groupBy(C.SPLIT).agg(F.max(C.TIMESTAMP).alias("hi"), F.min(C.TIMESTAMP).alias("lo"))
    b = {r[C.SPLIT]: (r["lo"], r["hi"]) for r in stamps.collect()}
    assert b["train"][1] < b["valid"][0] and b["valid"][1] < b["test"][0]


def test_temporal_split_cuts_at_the_time_quantiles(spark, tmp_path, rows):
    """``temporal``: one global clock cut at the 80 %/90 % quantiles of all timestamps, whatever the dates."""
    wh = tmp_path / "wh"
    write_silver(spark, wh, rows)
    summary = build_features(spark, wh, FeatureSettings(split=SplitSettings(strategy="temporal")))
    stamps = sorted(r[C.TIMESTAMP] for r in gold(spark, wh).select(C.TIMESTAMP).collect())
    assert summary["strategy"] == "temporal" and summary["note"] is None
    for cut, q in ((summary["valid_cut_ms"], 0.8), (summary["test_cut_ms"], 0.9)):   # a q-quantile of the stamps
        assert sum(t < cut for t in stamps) <= q * len(stamps) <= sum(t <= cut for t in stamps) + 1
    labels = gold(spark, wh).groupBy(C.SPLIT).agg(F.min(C.TIMESTAMP).alias("lo"), F.max(C.TIMESTAMP).alias("hi"))
    b = {r[C.SPLIT]: (r["lo"], r["hi"]) for r in labels.collect()}
    assert b["train"][1] < summary["valid_cut_ms"] == b["valid"][0]
    assert b["valid"][1] < summary["test_cut_ms"] == b["test"][0]
    assert abs(summary["test"] / len(stamps) - 0.1) < 0.05


def test_leave_last_out_holds_out_each_users_latest(spark, tmp_path, rows):
    wh = tmp_path / "wh"
    write_silver(spark, wh, rows)
    build_features(spark, wh, FeatureSettings(split=SplitSettings(strategy="leave_last_out")))
    df = gold(spark, wh)
    per_user = df.groupBy(C.USER_IDX).agg(
        F.count("*").alias("n"),
        F.sum((F.col(C.SPLIT) == "test").cast("int")).alias("test"),
        F.max(F.when(F.col(C.SPLIT) == "train", F.col(C.TIMESTAMP))).alias("last_train"),
        F.min(F.when(F.col(C.SPLIT) == "test", F.col(C.TIMESTAMP))).alias("test_ts"))
    for r in per_user.collect():
        assert r["test"] == (1 if r["n"] >= 2 else 0)
        if r["test"] and r["last_train"] is not None:
            assert r["last_train"] <= r["test_ts"]


def test_vocabularies_are_stable_when_new_ids_arrive(spark, tmp_path, rows):
    wh = tmp_path / "wh"
    write_silver(spark, wh, rows)
    build_features(spark, wh, FeatureSettings())
    users1 = {r["user_id"]: r[C.USER_IDX] for r in gold(spark, wh, C.USER_INDEX).collect()}
    items1 = {r[C.ITEM_ID]: r[C.ITEM_IDX] for r in gold(spark, wh, C.ITEM_INDEX).collect()}
    assert sorted(users1.values()) == list(range(len(users1)))
    more = rows + [dict(rows[0], user_id="AU9999", parent_asin="B999999999")]
    write_silver(spark, wh, more)
    build_features(spark, wh, FeatureSettings())
    users2 = {r["user_id"]: r[C.USER_IDX] for r in gold(spark, wh, C.USER_INDEX).collect()}
    items2 = {r[C.ITEM_ID]: r[C.ITEM_IDX] for r in gold(spark, wh, C.ITEM_INDEX).collect()}
    assert {u: users2[u] for u in users1} == users1 and users2["AU9999"] == len(users1)
    assert {i: items2[i] for i in items1} == items1 and items2["B999999999"] == len(items1)


def test_kcore_leaves_only_users_and_items_with_k_interactions(spark, tmp_path, rows):
    wh = tmp_path / "wh"
    write_silver(spark, wh, rows)
    build_features(spark, wh, FeatureSettings(split=SplitSettings(strategy="random", kcore=3)))
    df = gold(spark, wh)
    assert df.count() > 0
    assert df.groupBy(C.USER_IDX).count().agg(F.min("count")).first()[0] >= 3
    assert df.groupBy(C.ITEM_IDX).count().agg(F.min("count")).first()[0] >= 3

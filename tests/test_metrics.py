"""Ranking metrics: known answers (RankingMetrics' documented example), a literal oracle of the
definitions, the real ``pyspark.mllib.evaluation.RankingMetrics`` as reference, numpy == Spark on random
lists, and properties every ranking metric must have."""

from __future__ import annotations

import json
import math
import random
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypothesis_profiles import spark_examples
from recsys.metrics import python_metrics as npm
from recsys.evaluate.cli_metrics import run_metrics
from recsys.metrics.definitions import (
    HIT_RATE,
    MAP,
    MRR,
    NDCG,
    PRECISION,
    RANKING_METRICS,
    RECALL,
    USERS,
    check_ks,
    metric_key,
)

# --- RankingMetrics' documented example (known answers) ------------------------------------------
DOC_PREDICTIONS = {"a": [1, 6, 2, 7, 8, 3, 9, 10, 4, 5], "b": [4, 1, 5, 6, 2, 7, 3, 8, 9, 10], "c": [1, 2, 3, 4, 5]}
DOC_TRUTH = {"a": [1, 2, 3, 4, 5], "b": [1, 2, 3], "c": []}
AP_A = Fraction(1, 1) + Fraction(2, 3) + Fraction(3, 6) + Fraction(4, 9) + Fraction(5, 10)  # hits at 1,3,6,9,10
AP_A /= 5
AP_B = (Fraction(1, 2) + Fraction(2, 5) + Fraction(3, 7)) / 3                              # hits at 2,5,7
DOC_KS = (1, 2, 3, 5, 10, 15)


def _close(a: float, b: float, tol: float = 1e-9) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


def _assert_same(got: dict, want: dict, tol: float = 1e-9) -> None:
    assert got.keys() == want.keys()
    bad = {key: (got[key], want[key]) for key in want if not _close(got[key], want[key], tol)}
    assert not bad, bad


def _oracle(predictions: dict, truth: dict, k: int, count_empty_truth: bool = False) -> dict[str, float]:
    """The formulas of recsys.metrics.definitions written out literally, one user at a time (independent of the twins)."""
    rows = []
    for user, truth_items in truth.items():
        relevant = {x for x in truth_items if x is not None}
        if not relevant:
            if count_empty_truth:
                rows.append(dict.fromkeys(RANKING_METRICS, 0.0))
            continue
        ranked: list = []
        for x in predictions.get(user, []):
            if x is not None and x not in ranked:
                ranked.append(x)
        hit = [x in relevant for x in ranked[:k]]
        n_hits = sum(hit)
        ideal = min(k, len(relevant))
        first = next((i for i, h in enumerate(hit, start=1) if h), None)
        rows.append({
            PRECISION: n_hits / k,
            RECALL: n_hits / len(relevant),
            HIT_RATE: 1.0 if n_hits else 0.0,
            MRR: 1.0 / first if first else 0.0,
            MAP: sum(sum(hit[:i]) / i for i in range(1, len(hit) + 1) if hit[i - 1]) / ideal,
            NDCG: sum(1 / math.log2(i + 1) for i in range(1, len(hit) + 1) if hit[i - 1])
            / sum(1 / math.log2(i + 1) for i in range(1, ideal + 1)),
        })
    out = {metric_key(n, k): (sum(r[n] for r in rows) / len(rows) if rows else math.nan) for n in RANKING_METRICS}
    out[USERS] = len(rows)
    return out


def _oracle_all(predictions: dict, truth: dict, ks, count_empty_truth: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in check_ks(ks):
        out.update(_oracle(predictions, truth, k, count_empty_truth))
    return out


# --- Spark helpers ------------------------------------------------------------------------------------------------


def _frame(spark, lists: dict, user_type: str, item_type: str):
    return spark.createDataFrame(list(lists.items()), f"user_id {user_type}, items array<{item_type}>")


def _reference(spark, pairs: list[tuple[list, list]]):
    """The real ``pyspark.mllib.evaluation.RankingMetrics`` over (prediction, truth) pairs."""
    from pyspark.mllib.evaluation import RankingMetrics

    with warnings.catch_warnings():
        # RankingMetrics builds a deprecated SQLContext (FutureWarning) and pyspark leaves a socket to the
        # GC (ResourceWarning): both are Spark's own internals, not our code.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ResourceWarning)
        return RankingMetrics(spark.sparkContext.parallelize(pairs, 1))


def _reference_metrics(reference, ks) -> dict[str, float]:
    out = {}
    for k in ks:
        out[metric_key(MAP, k)] = reference.meanAveragePrecisionAt(k)
        out[metric_key(NDCG, k)] = reference.ndcgAt(k)
        out[metric_key(PRECISION, k)] = reference.precisionAt(k)
        out[metric_key(RECALL, k)] = reference.recallAt(k)
    return out


def _jobs(spark, group: str, action) -> int:
    """How many Spark jobs ``action`` launched."""
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


# --- known answers ------------------------------------------------------------------------------------------------


def test_doc_example_values_arise_when_empty_truth_users_count_as_zero():
    got = npm.ranking_metrics(DOC_PREDICTIONS, DOC_TRUTH, DOC_KS, count_empty_truth=True)
    assert got[USERS] == 3
    assert got["map@10"] == pytest.approx(float((AP_A + AP_B) / 3), abs=1e-12)  # RankingMetrics' MAP
    assert got["map@10"] == pytest.approx(0.355, abs=5e-4)
    assert got["map@1"] == pytest.approx(1 / 3, abs=1e-12)
    assert got["map@2"] == pytest.approx(0.25, abs=1e-12)
    assert got["precision@5"] == pytest.approx(4 / 15, abs=1e-12)
    assert got["ndcg@3"] == pytest.approx(1 / 3, abs=1e-12)
    assert got["ndcg@10"] == pytest.approx(0.488, abs=5e-4)
    assert got["recall@1"] == pytest.approx(0.0667, abs=5e-4)
    assert got["recall@5"] == pytest.approx(0.3556, abs=5e-4)
    assert got["recall@15"] == pytest.approx(2 / 3, abs=1e-12)
    assert got["precision@15"] == pytest.approx(0.1778, abs=5e-4)


def test_population_rule_drops_the_empty_truth_user_so_every_mean_is_three_halves():
    """Our default: users without a relevant item are not evaluated (they contributed a 0 above)."""
    doc = npm.ranking_metrics(DOC_PREDICTIONS, DOC_TRUTH, DOC_KS, count_empty_truth=True)
    ours = npm.ranking_metrics(DOC_PREDICTIONS, DOC_TRUTH, DOC_KS)
    assert ours[USERS] == 2
    assert ours["map@10"] == pytest.approx(float((AP_A + AP_B) / 2), abs=1e-12)
    for key in doc.keys() - {USERS}:
        assert ours[key] == pytest.approx(doc[key] * 3 / 2, abs=1e-12), key


def test_a_truth_user_without_a_list_scores_zero_and_stays_in_the_population():
    truth = {"a": [1, 2], "b": [3]}
    got = npm.ranking_metrics({"a": [1, 2], "stranger": [3]}, truth, [2])
    assert got[USERS] == 2
    assert got["map@2"] == pytest.approx(0.5) and got["recall@2"] == pytest.approx(0.5)
    assert got["mrr@2"] == pytest.approx(0.5) and got["precision@2"] == pytest.approx(0.5)


def test_mrr_and_hit_rate_known_answers():
    predictions = {"a": [9, 8, 1], "b": [2, 9], "c": [9, 9, 9, 3]}   # c: repeats collapse, 3 moves to rank 2
    truth = {"a": [1], "b": [2, 7], "c": [3]}
    got = npm.ranking_metrics(predictions, truth, [1, 2, 3])
    assert got["mrr@1"] == pytest.approx(1 / 3)
    assert got["mrr@2"] == pytest.approx((0 + 1 + 1 / 2) / 3)
    assert got["mrr@3"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert got["hit_rate@1"] == pytest.approx(1 / 3) and got["hit_rate@2"] == pytest.approx(2 / 3)
    assert got["hit_rate@3"] == pytest.approx(1.0)


def test_ks_are_validated():
    for bad in ([], [0], [3, -1], [True], 2.5):
        with pytest.raises(ValueError):
            npm.ranking_metrics(DOC_PREDICTIONS, DOC_TRUTH, bad)


def test_beyond_accuracy_known_answers():
    predictions = {"u": [1, 2, 4], "v": [2, 3, 1], "w": [5]}
    vectors = {1: [1.0, 0.0], 2: [0.0, 2.0], 3: [1.0, 1.0], 4: [0.0, 0.0]}  # 4: zero vector, 5: none
    got = npm.beyond_accuracy_metrics(predictions, 2, catalog_size=10, train=[1, 1, 1, 2, 7], item_vectors=vectors)
    assert got["coverage@2"] == pytest.approx(4 / 10)                  # {1, 2, 3, 5}
    # slots 1,2 | 2,3 | 5; items 3 and 5 never occur in train: mean over 1, 2, 2
    assert got["novelty@2"] == pytest.approx((-math.log2(3 / 5) - 2 * math.log2(1 / 5)) / 3)
    # u: cos(1,2) = 0; v: cos(2,3) = 1/√2; w has one item only
    assert got["diversity@2"] == pytest.approx((1.0 + (1 - 1 / math.sqrt(2))) / 2)
    assert math.isnan(npm.intra_list_diversity({"w": [5, 4]}, vectors, 2))


# --- oracle and properties (numpy, cheap) ----------------------------------------------------------------------


@st.composite
def datasets(draw, kinds=("int", "str"), nulls: bool = True):
    """Random truth and prediction lists: repeats, nulls, empty truths, users without lists or truth."""
    kind = draw(st.sampled_from(kinds))
    pool = list(range(12)) if kind == "int" else [f"B0{i:02d}" for i in range(12)]
    item = st.sampled_from(pool)
    listed = (item | st.none()) if nulls else item
    n_users = draw(st.integers(1, 8))
    users = list(range(n_users + 2)) if draw(st.booleans()) else [f"U{i}" for i in range(n_users + 2)]
    truth = {u: draw(st.lists(item, max_size=6)) for u in users[:n_users]}
    predictions = {u: draw(st.lists(listed, max_size=14)) for u in users if draw(st.integers(0, 3))}
    return kind, predictions, truth


KS = st.lists(st.integers(1, 15), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(datasets(), KS, st.booleans())
def test_numpy_matches_the_literal_oracle(data, ks, count_empty_truth):
    _, predictions, truth = data
    got = npm.ranking_metrics(predictions, truth, ks, count_empty_truth=count_empty_truth)
    _assert_same(got, _oracle_all(predictions, truth, ks, count_empty_truth))
    assert all(0.0 <= v <= 1.0 for key, v in got.items() if key != USERS and not math.isnan(v))


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 19), min_size=1, max_size=8), st.lists(st.integers(20, 40), unique=True, max_size=6),
       st.randoms(use_true_random=False))
def test_perfect_list_scores_one(relevant, noise, rnd):
    ranked = sorted(relevant)
    rnd.shuffle(ranked)
    predictions, truth = {"u": ranked + noise}, {"u": list(relevant)}
    r = len(relevant)
    got = npm.ranking_metrics(predictions, truth, range(1, r + len(noise) + 3))
    for k in range(1, r + len(noise) + 3):
        for name in (MAP, NDCG, HIT_RATE, MRR):
            assert got[metric_key(name, k)] == pytest.approx(1.0, abs=1e-12), (name, k)
        assert got[metric_key(RECALL, k)] == pytest.approx(min(k, r) / r)
        assert got[metric_key(PRECISION, k)] == pytest.approx(min(k, r) / k)


@settings(max_examples=200, deadline=None)
@given(datasets(), KS)
def test_order_of_users_does_not_matter(data, ks):
    _, predictions, truth = data
    got = npm.ranking_metrics(predictions, truth, ks)
    shuffled = npm.ranking_metrics(dict(reversed(predictions.items())), dict(reversed(truth.items())), ks)
    _assert_same(shuffled, got, tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(datasets(kinds=("int",), nulls=False), KS)
def test_a_non_relevant_item_appended_changes_nothing(data, ks):
    """Denominators are K and |R|, never the list length: a trailing miss cannot raise (or lower) precision."""
    _, predictions, truth = data
    longer = {u: items + [-1] for u, items in predictions.items()}
    _assert_same(npm.ranking_metrics(longer, truth, ks), npm.ranking_metrics(predictions, truth, ks), tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(datasets(kinds=("int",), nulls=False), KS)
def test_adding_or_promoting_a_hit_never_lowers_a_metric(data, ks):
    _, predictions, truth = data
    before = npm.ranking_metrics(predictions, truth, ks)
    if before[USERS] == 0:
        return  # every metric is NaN (undefined): nothing to compare
    appended, promoted = dict(predictions), dict(predictions)
    for user, relevant in truth.items():
        ranked = list(dict.fromkeys(predictions.get(user, [])))
        missing = [x for x in relevant if x not in ranked]
        if missing:
            appended[user] = ranked + missing[:1]
        swap = next((i for i in range(1, len(ranked)) if ranked[i] in relevant and ranked[i - 1] not in relevant), None)
        if swap is not None:
            ranked[swap - 1], ranked[swap] = ranked[swap], ranked[swap - 1]
            promoted[user] = ranked
    for changed in (appended, promoted):
        after = npm.ranking_metrics(changed, truth, ks)
        assert all(after[key] >= before[key] - 1e-12 for key in before), (before, after)


@settings(max_examples=200, deadline=None)
@given(datasets())
def test_recall_and_hit_rate_grow_with_k(data):
    _, predictions, truth = data
    curve = npm.metrics_over_k(predictions, truth, range(1, 16), metrics=(RECALL, HIT_RATE))
    for name in (RECALL, HIT_RATE):
        values = [row[name] for row in curve if not math.isnan(row[name])]
        assert all(b >= a for a, b in zip(values, values[1:]))


@settings(max_examples=200, deadline=None)
@given(datasets())
def test_repeats_and_nulls_in_lists_are_dropped_and_truth_order_is_irrelevant(data):
    _, predictions, truth = data
    clean = {u: list(dict.fromkeys(x for x in items if x is not None)) for u, items in predictions.items()}
    reordered = {u: sorted(set(items), key=str, reverse=True) for u, items in truth.items()}
    _assert_same(npm.ranking_metrics(predictions, reordered, [1, 5, 15]),
                 npm.ranking_metrics(clean, truth, [1, 5, 15]), tol=1e-12)


def test_metrics_over_k_and_per_user_agree_with_ranking_metrics():
    rng = random.Random(3)
    truth = {u: rng.sample(range(40), rng.randint(0, 6)) for u in range(60)}
    predictions = {u: rng.sample(range(40), rng.randint(0, 25)) for u in range(0, 60, 1) if u % 7}
    summary = npm.ranking_metrics(predictions, truth, range(1, 31))
    curve = npm.metrics_over_k(predictions, truth, range(1, 31), metrics=RANKING_METRICS)
    per_user = npm.per_user_metrics(predictions, truth, range(1, 31))
    assert len(per_user["user_id"]) == summary[USERS] == sum(1 for t in truth.values() if t)
    for row in curve:
        for name in RANKING_METRICS:
            key = metric_key(name, row["k"])
            assert row[name] == pytest.approx(summary[key], abs=1e-12)
            assert per_user[key].mean() == pytest.approx(summary[key], abs=1e-12)


# --- Spark: known answers, reference, twins --------------------------------------------------------------------


def test_spark_doc_example_matches_numpy_and_rankingmetrics(spark):
    from recsys.evaluate import spark_metrics as sm

    preds, truth = _frame(spark, DOC_PREDICTIONS, "string", "long"), _frame(spark, DOC_TRUTH, "string", "long")
    doc = sm.ranking_metrics(preds, truth, DOC_KS, count_empty_truth=True)
    _assert_same(doc, npm.ranking_metrics(DOC_PREDICTIONS, DOC_TRUTH, DOC_KS, count_empty_truth=True))

    reference = _reference(spark, [(DOC_PREDICTIONS[u], DOC_TRUTH[u]) for u in DOC_TRUTH])
    assert doc["map@10"] == pytest.approx(reference.meanAveragePrecision, abs=1e-9)
    assert doc["map@1"] == pytest.approx(reference.meanAveragePrecisionAt(1), abs=1e-9)
    assert doc["map@2"] == pytest.approx(reference.meanAveragePrecisionAt(2), abs=1e-9)
    assert doc["precision@5"] == pytest.approx(reference.precisionAt(5), abs=1e-9)
    assert doc["recall@5"] == pytest.approx(reference.recallAt(5), abs=1e-9)
    assert doc["ndcg@3"] == pytest.approx(reference.ndcgAt(3), abs=1e-9)
    assert doc["ndcg@10"] == pytest.approx(reference.ndcgAt(10), abs=1e-9)

    # Our population rule, per user: the empty-truth user "c" is not a row at all.
    rows = sm.per_user_metrics(preds, truth, [3, 10]).orderBy("user_id").collect()
    assert [r["user_id"] for r in rows] == ["a", "b"]
    assert [r["map@10"] for r in rows] == pytest.approx([float(AP_A), float(AP_B)], abs=1e-12)
    want = npm.per_user_metrics(DOC_PREDICTIONS, DOC_TRUTH, [3, 10])
    for key in want.keys() - {"user_id"}:
        assert [r[key] for r in rows] == pytest.approx(list(want[key]), abs=1e-9), key


def test_spark_and_numpy_match_rankingmetrics_on_random_lists(spark):
    from recsys.evaluate import spark_metrics as sm

    rng = random.Random(20230)
    truth = {f"user{u:03d}": rng.sample(range(60), rng.randint(1, 15)) for u in range(300)}
    predictions = {u: rng.sample(range(60), rng.randint(0, 40)) for u in truth if rng.random() < 0.9}
    predictions[next(iter(truth))] = list(range(30))  # first pair non-empty: RankingMetrics infers its schema
    ks = (1, 10, 40)
    reference = _reference(spark, [(predictions.get(u, []), items) for u, items in truth.items()])
    want = _reference_metrics(reference, ks)

    numpy_result = npm.ranking_metrics(predictions, truth, ks)
    spark_result = sm.ranking_metrics(
        _frame(spark, predictions, "string", "int"), _frame(spark, truth, "string", "int"), ks
    )
    _assert_same(spark_result, numpy_result)
    assert {key: numpy_result[key] for key in want} == pytest.approx(want, abs=1e-9)
    full = npm.ranking_metrics(predictions, truth, 60)  # K ≥ every |L| and |R|: MAP@K is the full-list MAP
    assert full["map@60"] == pytest.approx(reference.meanAveragePrecision, abs=1e-9)


@settings(max_examples=spark_examples(25), deadline=None)       # Spark jobs per example: a quarter in make test
@given(datasets(), KS, st.booleans())
def test_spark_equals_numpy_on_random_lists(spark, data, ks, count_empty_truth):
    from recsys.evaluate import spark_metrics as sm

    kind, predictions, truth = data
    item_type = "bigint" if kind == "int" else "string"
    user_type = "bigint" if isinstance(next(iter(truth)), int) else "string"
    got = sm.ranking_metrics(
        _frame(spark, predictions, user_type, item_type), _frame(spark, truth, user_type, item_type), ks,
        count_empty_truth=count_empty_truth,
    )
    _assert_same(got, npm.ranking_metrics(predictions, truth, ks, count_empty_truth=count_empty_truth))


def test_spark_computes_every_k_in_one_pass_without_python_udfs(spark):
    from recsys.evaluate import spark_metrics as sm

    rng = random.Random(7)
    truth = {u: rng.sample(range(200), rng.randint(1, 8)) for u in range(120)}
    predictions = {u: rng.sample(range(200), 100) for u in truth if u % 5}
    preds, true = _frame(spark, predictions, "int", "int"), _frame(spark, truth, "int", "int")

    one = _jobs(spark, "metrics-one-k", lambda: sm.ranking_metrics(preds, true, [10]))
    three = _jobs(spark, "metrics-three-k", lambda: sm.ranking_metrics(preds, true, [1, 5, 10]))
    curve_holder = {}
    curve_jobs = _jobs(spark, "metrics-curve", lambda: curve_holder.setdefault("c", sm.metrics_over_k(preds, true)))
    assert one == three == curve_jobs
    plan = sm.per_user_metrics(preds, true, [1, 10])._jdf.queryExecution().executedPlan().toString()
    assert "EvalPython" not in plan and "MapInPandas" not in plan

    want = npm.metrics_over_k(predictions, truth)
    assert [row["k"] for row in curve_holder["c"]] == list(range(1, 101))
    for got_row, want_row in zip(curve_holder["c"], want):
        _assert_same(got_row, want_row)


def test_spark_beyond_accuracy_and_list_tables_match_numpy(spark):
    from recsys.evaluate import spark_metrics as sm

    rng = np.random.default_rng(5)
    items = [f"B{i:03d}" for i in range(30)]
    predictions = {f"u{u}": [str(x) for x in rng.choice(items, size=int(rng.integers(0, 8)), replace=False)]
                   for u in range(25)}
    train = [str(x) for x in rng.choice(items[:25], size=200)]      # the last five items never occur in train
    vectors = {x: rng.normal(size=4).tolist() for x in items[:27]}  # the last three have no vector
    vectors[items[0]] = [0.0, 0.0, 0.0, 0.0]

    # gold/recs_user_topk-like rows in scrambled order, rebuilt into lists by rank
    long_rows = [(u, rank, x) for u, xs in predictions.items() for rank, x in enumerate(xs, start=1)]
    rng.shuffle(long_rows)
    rows = spark.createDataFrame(long_rows, "user_id string, rank int, parent_asin string")
    preds = sm.to_lists(rows, rank_col="rank").cache()
    assert {r["user_id"]: r["items"] for r in preds.collect()} == {u: xs for u, xs in predictions.items() if xs}

    got = sm.beyond_accuracy_metrics(
        preds, 5, catalog_size=40,
        train=spark.createDataFrame([(x,) for x in train], "parent_asin string"),
        item_vectors=spark.createDataFrame(list(vectors.items()), "parent_asin string, vector array<float>"),
    )
    float32 = {x: np.float32(v).astype(np.float64) for x, v in vectors.items()}  # the table stores floats
    _assert_same(got, npm.beyond_accuracy_metrics(predictions, 5, catalog_size=40, train=train, item_vectors=float32))
    # every cut-off in one pass (one job per metric) gives what each cut-off alone gives, in the same key order
    ks = [1, 3, 5, 8]
    got = sm.beyond_accuracy_metrics(
        preds, ks, catalog_size=40,
        train=spark.createDataFrame([(x,) for x in train], "parent_asin string"),
        item_vectors=spark.createDataFrame(list(vectors.items()), "parent_asin string, vector array<float>"),
    )
    want = npm.beyond_accuracy_metrics(predictions, ks, catalog_size=40, train=train, item_vectors=float32)
    assert list(got) == list(want) == [f"{m}@{k}" for k in ks for m in ("coverage", "novelty", "diversity")]
    _assert_same(got, want)
    preds.unpersist()


@pytest.mark.parametrize("path", ["broadcast vectors", "join and shuffle"])
def test_spark_diversity_over_integer_ids_with_repeats_matches_numpy(spark, path):
    from recsys.evaluate import spark_metrics as sm

    limit = sm.BROADCAST_VECTOR_VALUES if path == "broadcast vectors" else 0

    rng = np.random.default_rng(11)
    vectors = {i: rng.normal(size=6).tolist() for i in range(50)}      # items 50..59 have no vector
    vectors[3] = [0.0] * 6
    predictions = {u: [int(x) for x in rng.choice(60, size=int(rng.integers(0, 12)))] for u in range(80)}  # repeats
    preds = spark.createDataFrame([(u, xs) for u, xs in predictions.items()], "user_idx int, items array<int>")
    table = spark.createDataFrame(list(vectors.items()), "item_idx int, vector array<double>")
    every = sm.intra_list_diversities(preds, table, (1, 2, 5, 10), item_col="item_idx", user_col="user_idx",
                                      broadcast_limit=limit)
    for k in (1, 2, 5, 10):
        got = sm.intra_list_diversity(preds, table, k, item_col="item_idx", user_col="user_idx",
                                      broadcast_limit=limit)
        assert got == pytest.approx(npm.intra_list_diversity(predictions, vectors, k), rel=1e-9, nan_ok=True), k
        assert every[k] == pytest.approx(got, rel=1e-12, nan_ok=True), k


def test_spark_diversity_of_a_sparse_id_range_joins_instead_of_allocating_it(spark):
    """Two vectors, one at id 10⁹: a dense broadcast would be 10⁹ rows; the join path answers instead."""
    from pyspark.sql import functions as F

    from recsys.evaluate import spark_metrics as sm

    table = spark.createDataFrame([(0, [1.0, 0.0]), (10**9, [0.0, 1.0])], "item_idx int, vector array<double>")
    preds = spark.createDataFrame([(1, [0, 10**9])], "user_idx int, items array<int>")
    assert sm._unit_vectors_if_small(table.select(F.col("item_idx").alias(sm._ITEM), F.col("vector").alias("_v")),
                                     sm.BROADCAST_VECTOR_VALUES) is None
    assert sm.intra_list_diversity(preds, table, 2, item_col="item_idx", user_col="user_idx") == pytest.approx(1.0)


def test_spark_rejects_a_non_array_items_column(spark):
    from recsys.evaluate import spark_metrics as sm

    flat = spark.createDataFrame([("a", 1)], "user_id string, items int")
    with pytest.raises(ValueError, match="array"):
        sm.ranking_metrics(flat, flat, [10])


# --- recsys metrics (CLI body) ----------------------------------------------------------------------------------


def _write(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


@pytest.fixture
def doc_files(tmp_path):
    preds = _write(tmp_path / "p.jsonl", [{"user_id": u, "items": xs} for u, xs in DOC_PREDICTIONS.items()])
    truth = _write(tmp_path / "t.jsonl", [{"user_id": u, "items": xs} for u, xs in DOC_TRUTH.items()])
    return preds, truth


def test_cli_numpy_and_spark_engines_give_the_population_rule_values(spark, doc_files):
    numpy_result = run_metrics(*doc_files, k=10, engine="numpy")
    assert numpy_result[USERS] == 2
    assert numpy_result["map@10"] == pytest.approx(float((AP_A + AP_B) / 2), abs=1e-12)
    assert {"map@10", "ndcg@10", "precision@10", "recall@10", "hit_rate@10", "mrr@10"} <= numpy_result.keys()
    _assert_same(run_metrics(*doc_files, k=10, engine="spark"), numpy_result)


def test_cli_keeps_string_and_number_ids_apart(tmp_path):
    preds = _write(tmp_path / "p.jsonl", [{"user_id": 1, "items": ["7", 7]}, "", {"user_id": "1", "items": [8]}])
    truth = _write(tmp_path / "t.jsonl", [{"user_id": 1, "items": [7]}, {"user_id": "1", "items": ["8"]}])
    got = run_metrics(preds, truth, k=2, engine="numpy")
    assert got[USERS] == 2
    assert got["precision@2"] == pytest.approx((1 / 2 + 0) / 2)   # 7 hits at rank 2 for user 1; "8" ≠ 8


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"user_id": "a", "items": [1]}, "", "{not json"], r"t\.jsonl:3: not valid JSON"),
        ([{"user_id": "a", "items": 1}], r":1: items must be a JSON array"),
        ([{"items": [1]}], r":1: missing key\(s\) 'user_id'"),
        ([{"user_id": "a", "items": [1]}, {"user_id": "a", "items": [2]}], r":2: user_id 'a' repeats line 1"),
        ([{"user_id": "a", "items": [{"x": 1}]}], r":1: every item must be a string or a number"),
        ([{"user_id": "a", "items": []}], r"no user in truth file .* has a relevant item"),
    ],
)
def test_cli_bad_truth_lines_are_named(tmp_path, doc_files, lines, message):
    truth = _write(tmp_path / "t.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        run_metrics(doc_files[0], truth, k=5, engine="numpy")


def test_cli_rejects_missing_files_bad_k_and_bad_engine(tmp_path, doc_files):
    with pytest.raises(ValueError, match=r"predictions file not found: .*nope\.jsonl"):
        run_metrics(tmp_path / "nope.jsonl", doc_files[1], k=5, engine="numpy")
    with pytest.raises(ValueError, match="truth path is not a file"):
        run_metrics(doc_files[0], tmp_path, k=5, engine="numpy")
    for k in (0, -3, True):
        with pytest.raises(ValueError, match="--k must be an integer >= 1"):
            run_metrics(*doc_files, k=k, engine="numpy")
    with pytest.raises(ValueError, match="--engine must be one of"):
        run_metrics(*doc_files, k=5, engine="pandas")


# --- the next-item task (recsys.evaluate.next_item): HR@20 and MRR@20 of the first held-out item -------------------
# Test rows (user, item, time): the target is the earliest, ties to the lower item; lists below, hand-scored.
NEXT_TEST = [("a", 7, 30), ("a", 3, 10), ("a", 9, 10), ("b", 5, 2), ("c", 1, 1), ("d", 2, 4), ("d", 8, 4)]
NEXT_LISTS = {"a": [4, 3, 9], "b": list(range(10, 30)) + [5], "c": [2, 1], "e": [1]}
NEXT_WANT = {"hr@20": Fraction(2, 4),                       # a: 3 at 2; c: 1 at 2; b: 5 at 21 (> 20); d: no list
             "mrr@20": (Fraction(1, 2) + Fraction(1, 2)) / 4}


def test_next_item_targets_are_each_users_earliest_test_item_ties_to_the_lower_index():
    from recsys.evaluate.next_item import first_items

    users, items, stamps = zip(*NEXT_TEST)
    assert first_items(users, items, stamps) == {"a": [3], "b": [5], "c": [1], "d": [2]}


def test_next_item_metrics_known_answers():
    from recsys.evaluate.next_item import first_items, next_item_metrics_numpy

    users, items, stamps = zip(*NEXT_TEST)
    got = next_item_metrics_numpy(NEXT_LISTS, first_items(users, items, stamps))
    _assert_same(got, {key: float(value) for key, value in NEXT_WANT.items()})


def test_spark_next_item_metrics_match_the_known_answers(spark):
    from recsys import constants as C
    from recsys.evaluate.next_item import next_item_metrics

    ids = {u: i for i, u in enumerate("abcde")}
    test = spark.createDataFrame([(ids[u], i, t) for u, i, t in NEXT_TEST],
                                 f"{C.USER_IDX} INT, {C.ITEM_IDX} INT, {C.TIMESTAMP} BIGINT")
    lists = spark.createDataFrame([(ids[u], items) for u, items in NEXT_LISTS.items()],
                                  f"{C.USER_IDX} INT, {C.ITEMS} ARRAY<INT>")
    _assert_same(next_item_metrics(lists, test), {key: float(value) for key, value in NEXT_WANT.items()})

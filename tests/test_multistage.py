"""The multi-stage model: each retriever against a brute-force answer, the feature joins on known pairs, the
ranker's labels, the diversity re-rank and its strength, the deletion cascade over its folders, and (Spark) a run's
fit → save → load → recommend on planted sequences."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from recsys import constants as C
from recsys.catalog.files import drop_model_rows
from recsys.models.params import ALSParams
from recsys.multistage import diversity as D
from recsys.multistage import features as Fe
from recsys.multistage import retrievers as R
from recsys.multistage.model import (Examples, best_order, folds, label_rows, label_windows, order_map,
                                     retriever_scores, write_model)
from recsys.models.params import MultiStageParams
from recsys.multistage.stage import fit_stage


def history(pairs, stamps=None) -> R.History:
    users = np.array([u for u, _ in pairs], dtype=np.int32)
    items = np.array([i for _, i in pairs], dtype=np.int32)
    stamps = np.arange(len(pairs), dtype=np.int64) if stamps is None else np.asarray(stamps, dtype=np.int64)
    return R.History.of(users, items, np.ones(len(pairs)), stamps)


def random_history(rng, users=30, items=40, per_user=8) -> R.History:
    pairs = [(u, int(i)) for u in range(users) for i in rng.choice(items, per_user, replace=False)]
    return history(pairs, rng.permutation(len(pairs)))


def test_history_orders_each_users_items_by_time():
    h = history([(5, 1), (5, 2), (5, 3), (7, 2), (7, 4)], stamps=[3, 1, 2, 1, 2])
    assert h.users.tolist() == [5, 7]
    assert h.items.tolist() == [2, 3, 1, 2, 4]
    assert h.last_ms.tolist() == [3, 2]
    taken = h.take(np.array([1]))
    assert taken.users.tolist() == [7] and taken.items.tolist() == [2, 4] and taken.indptr.tolist() == [0, 2]


def test_recent_weights_the_latest_items_most_and_keeps_only_the_last_n():
    h = history([(0, 1), (0, 2), (0, 3)])
    recent = h.recent(5, last=2).toarray()[0]
    assert recent[3] == pytest.approx(1.0) and recent[2] == pytest.approx(R.RECENCY_DECAY)
    assert recent[1] == 0 and recent[0] == 0


def test_sparse_products_leave_the_history_arrays_alone():
    """scipy shares the arrays a CSR is built from and sorts them in place: the history must not change."""
    rng = np.random.default_rng(0)
    h = random_history(rng)
    before = (h.items.copy(), h.weights.copy(), h.indptr.copy())
    neighbours = R.cooccurrence_neighbours(h, 40, keep=10)
    R.top_of_sparse(h.recent(40, 5) @ neighbours, h, 10)
    assert all(np.array_equal(a, b) for a, b in zip(before, (h.items, h.weights, h.indptr)))


def test_cooccurrence_neighbours_are_the_top_cosines_of_co_counts():
    rng = np.random.default_rng(1)
    h = random_history(rng, users=25, items=15, per_user=5)
    binary = np.zeros((len(h.users), 15))
    for row in range(len(h.users)):
        binary[row, h.items[h.indptr[row]:h.indptr[row + 1]]] = 1
    counts = binary.sum(axis=0)
    cosine = (binary.T @ binary) / np.sqrt(np.outer(np.maximum(counts, 1), np.maximum(counts, 1)))
    np.fill_diagonal(cosine, 0)
    got = R.cooccurrence_neighbours(h, 15, keep=4).toarray()
    for item in range(15):
        kept = np.flatnonzero(got[item])
        assert len(kept) == min(4, np.count_nonzero(cosine[item]))
        np.testing.assert_allclose(got[item, kept], cosine[item, kept], rtol=1e-5)
        if len(kept):                                   # nothing left out beats what was kept
            assert np.delete(cosine[item], kept).max(initial=0) <= got[item, kept].min() + 1e-6


def test_factor_retriever_is_the_brute_force_top_n_without_the_users_items():
    rng = np.random.default_rng(2)
    h = random_history(rng)
    ids = np.arange(3, 40)                              # items 0-2 have no vectors
    side = R.FactorSide.of(ids[::-1].copy(), rng.normal(size=(len(ids), 6)).astype(np.float32)[::-1], 40)
    queries = rng.normal(size=(len(h.users), 6)).astype(np.float32)
    queries[4] = 0                                      # a user without a vector gets nothing
    found = side.top(queries, h, 7)
    for row in range(len(h.users)):
        mine = found.items[found.rows == row]
        if row == 4:
            assert len(mine) == 0
            continue
        seen = set(h.items[h.indptr[row]:h.indptr[row + 1]].tolist())
        scores = {int(i): float(side.vectors[side.row_of[i]] @ queries[row]) for i in ids if i not in seen}
        expected = sorted(scores, key=lambda i: (-scores[i], i))[:7]
        assert mine.tolist() == expected
        assert found.ranks[found.rows == row].tolist() == list(range(1, 8))
    dots = side.dot(queries, np.array([0, 0]), np.array([1, 5]))
    assert np.isnan(dots[0]) and dots[1] == pytest.approx(float(side.vectors[side.row_of[5]] @ queries[0]), rel=1e-5)


def test_a_lone_items_query_ranks_as_the_exact_least_squares_factor_of_any_confidence():
    """A one-item user's ALS factor solves (YᵀY + λI + (c − 1)yyᵀ)x = c·y: whatever c, x points along the item's
    lone-item query, so that query's top N is every such user's exact top N."""
    rng = np.random.default_rng(12)
    ids = np.arange(2, 50)                              # items 0-1 have no vectors
    side = R.FactorSide.of(ids, rng.normal(size=(len(ids), 6)).astype(np.float32), 50)
    side.regularization = 3.0
    y = side.vectors.astype(np.float64)
    gram = y.T @ y + 3.0 * np.eye(6)
    queries = side.lone_item_queries(np.array([7, 7, 30, 1, 60]))
    assert not queries[3].any() and not queries[4].any()            # no vector, out of the catalogue: no query
    item = y[side.row_of[7]]
    for c in (0.3, 1.0, 4.0, 40.0):
        exact = np.linalg.solve(gram + (c - 1.0) * np.outer(item, item), c * item)
        cosine = exact @ queries[0] / np.linalg.norm(exact) / np.linalg.norm(queries[0])
        assert cosine == pytest.approx(1.0, abs=1e-5)
        lone = history([(0, 7)])
        assert side.top(exact[None].astype(np.float32), lone, 10).items.tolist() == \
            side.top(queries[:1], lone, 10).items.tolist()
    with pytest.raises(ValueError, match="regularization"):
        R.FactorSide.of(ids, side.vectors, 50).lone_item_queries(np.array([7]))
    few = R.FactorSide.of(ids[:3], side.vectors[:3], 50)        # λ 0, 3 items, 6 factors: A is singular
    few.regularization = 0.0
    assert np.isfinite(few.lone_item_queries(ids[:3])).all()


def test_content_profiles_weigh_the_history_as_the_content_model_does():
    """The content retriever's profile of a user is the content candidate's (the same BM25/power weighting over the
    whole history), so the multi-stage model's content order is the content model's order, not a cousin of it."""
    from recsys.models.content import user_profiles
    from recsys.models.params import WeightingParams
    from recsys.models.weighting import weigh

    rng = np.random.default_rng(4)
    pairs = [(u, int(i)) for u in range(25) for i in rng.choice(30, int(rng.integers(1, 9)), replace=False)]
    users = np.array([u for u, _ in pairs], dtype=np.int32)
    items = np.array([i for _, i in pairs], dtype=np.int32)
    raw = rng.integers(1, 6, len(pairs)).astype(np.float64)
    stamps = rng.permutation(len(pairs)).astype(np.int64)
    weighting = WeightingParams(scheme="bm25", power=1.8, bm25_k1=3.0, bm25_b=0.5)
    side = R.FactorSide.of(np.arange(30), rng.normal(size=(30, 5)).astype(np.float32), 30)

    h = R.History.of(users, items, raw, stamps).weighed_for_profiles(weighting)
    matrix = sp.csr_matrix((weigh(users, items, raw, stamps, weighting), (users, items)), shape=(25, 30))
    expected = user_profiles(matrix, np.arange(30), side.vectors)[h.users]
    np.testing.assert_allclose(R.profiles(side, h), expected, rtol=1e-5, atol=1e-6)
    plain = R.History.of(users, items, raw, stamps)
    assert not np.allclose(R.profiles(side, plain), expected, atol=1e-3)     # raw weights: another profile
    rows = np.array([3, 7])
    np.testing.assert_allclose(R.profiles(side, h.take(rows)), expected[rows], rtol=1e-5, atol=1e-6)


def test_sparse_retriever_skips_seen_items_and_orders_by_score():
    h = history([(0, 0), (0, 1), (1, 2)])
    import scipy.sparse as sp

    scores = sp.csr_matrix(np.array([[0.0, 5.0, 3.0, 3.0, 1.0], [2.0, 0.0, 9.0, 0.0, 4.0]], dtype=np.float32))
    found = R.top_of_sparse(scores, h, 2)
    assert found.items[found.rows == 0].tolist() == [2, 3]       # 1 is seen; 2 and 3 tie: the smaller first
    assert found.items[found.rows == 1].tolist() == [4, 0]       # 2 is seen


def test_category_popular_takes_the_users_main_category_then_tops_up_overall():
    h = history([(0, 0), (0, 1), (0, 4), (1, 9)])
    category = np.array([0, 0, 1, 1, 0, 0, 1, 1, 2, -1], dtype=np.int32)
    by_category = {0: np.array([5, 0, 4, 1]), 1: np.array([2, 3])}
    overall = np.array([2, 5, 0, 3, 7])
    found = R.popular_in_category(h, category, by_category, overall, 3)
    assert found.items[found.rows == 0].tolist() == [5, 2, 3]    # category 0 unseen: 5; then overall: 2, 3
    assert found.items[found.rows == 1].tolist() == [2, 5, 0]    # item 9 has no category: overall


def test_union_and_features_put_each_retrievers_rank_on_its_own_pair():
    a = R.Retrieved(np.array([0, 0, 1]), np.array([7, 3, 3], np.int32), np.array([.9, .5, .4], np.float32),
                    np.array([1, 2, 1], np.float32))
    b = R.Retrieved(np.array([0, 1]), np.array([3, 8], np.int32), np.array([2., 1.], np.float32),
                    np.array([1, 1], np.float32))
    rows, items, where = Fe.union({"als": a, "cooccurrence": b}, 10)
    assert list(zip(rows.tolist(), items.tolist())) == [(0, 3), (0, 7), (1, 3), (1, 8)]
    h = history([(0, 1), (0, 2), (1, 1)], stamps=[0, Fe.DAY_MS, 0])
    side = Fe.ItemSide.of(h, 10, np.array([0, Fe.DAY_MS, 0]), {"price": np.arange(10.0),
                                                                "category": np.array([0, 0, 1, 0, 1, 1, 1, 1, 0, 0])},
                          recent_days=30, trend_half_life_days=7)
    x = Fe.assemble(h, side, {"als": a, "cooccurrence": b}, {"als": np.array([.5, .9, .4, .1], np.float32)},
                    rows, items, where)
    col = {name: j for j, name in enumerate(Fe.FEATURES)}
    np.testing.assert_array_equal(x[:, col["als_rank"]], [2, 1, 1, np.nan])
    np.testing.assert_array_equal(x[:, col["cooccurrence_rank"]], [1, np.nan, np.nan, 1])
    np.testing.assert_array_equal(x[:, col["retrievers"]], [2, 1, 1, 1])
    np.testing.assert_array_equal(x[:, col["price"]], [3, 7, 3, 8])
    # user 0 had items 1 (category 0) and 2 (category 1); user 1 item 1 (category 0)
    np.testing.assert_allclose(x[:, col["category_affinity"]], [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(x[:, col["user_idle_days"]], [0, 0, 1, 1])
    assert np.isnan(x[:, col["content_score"]]).all()


def test_trend_halves_each_half_life_and_orders_the_trending_retriever():
    # item 1: twice at day 0; item 2: once at day 2 (the newest, "now"); item 5: once at day 1
    h = history([(0, 1), (1, 1), (0, 2), (1, 5)], stamps=[0, 0, 2 * Fe.DAY_MS, Fe.DAY_MS])
    side = Fe.ItemSide.of(h, 6, h.stamps, {"category": np.array([0, 1, 1, 0, 1, 1])}, recent_days=30,
                          trend_half_life_days=1)
    np.testing.assert_allclose(np.expm1(side.trend), [0, 2 * 0.25, 1.0, 0, 0, 0.5], rtol=1e-6)
    assert side.trending(3).tolist() == [2, 1, 5]              # 1 and 5 tie at 0.5: the smaller index first
    found = R.popular_in_category(h.take(np.array([0])), side.category, {}, side.trending(3), 3)
    assert found.items.tolist() == [5]                          # user 0 had 1 and 2


def test_the_lists_follow_the_best_order_on_the_labelled_users():
    """The cross-fitted ranker orders the lists unless a retriever's own ranks score better on the same users."""
    col = {name: j for j, name in enumerate(Fe.FEATURES)}
    qid = np.array([0, 0, 0, 1, 1, 1])
    items = np.array([10, 11, 12, 10, 11, 12], np.int32)
    x = np.full((6, len(Fe.FEATURES)), np.nan, np.float32)
    x[:, col["als_rank"]] = [1, 2, 3, 1, 2, 3]
    x[:, col["trending_rank"]] = [3, 2, 1, 3, 2, np.nan]       # user 1: item 12 not proposed by trending
    examples = Examples(qid, items, x, np.zeros(6, np.float32), np.ones(6, bool), {})
    truth = {0: [12], 1: [12]}
    crossed = np.array([0.1, 0.9, 0.5, 0.1, 0.9, 0.5], np.float32)   # 11, 12, 10 for both users
    orders = order_map(examples, crossed, truth)
    # ranker: 12 second for both; als: 12 third; trending: 12 first for user 0, unproposed (last) for user 1
    assert orders == {"ranker": pytest.approx(1 / 2), "als": pytest.approx(1 / 3),
                      "trending": pytest.approx((1 + 1 / 3) / 2)}
    assert best_order(orders) == "trending"
    assert best_order({"ranker": 0.5, "als": 0.5}) == "ranker"      # a tie keeps the ranker
    assert set(order_map(examples, None, truth)) == {"als", "trending"}   # no cross-fit: no honest ranker score
    assert best_order({}) == "ranker"
    np.testing.assert_array_equal(retriever_scores(x, "trending")[3:], [-3, -2, -np.inf])


def test_the_ranker_is_labelled_by_the_latest_split_or_each_users_last_rows():
    users = np.array([0, 0, 0, 1, 1, 2])
    stamps = np.array([1, 2, 3, 1, 2, 1])
    splits = np.array(["train", "train", "valid", "train", "valid", "train"], dtype=object)
    assert label_rows(users, stamps, splits, 1).tolist() == [False, False, True, False, True, False]
    one = np.array(["train"] * 6, dtype=object)
    # each user's last row; user 2 has a single row, kept for retrieval
    assert label_rows(users, np.array([3, 1, 2, 2, 1, 1]), one, 1).tolist() == [True, False, False, True, False,
                                                                               False]


def test_earlier_label_windows_take_each_users_rows_just_before_the_later_one():
    """Window 2 labels, per user, as many rows as the user had in window 1, right before them; a user whose rows
    would all become labels keeps them, and windows stop once enough users are labelled."""
    users = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2, 2])
    stamps = np.array([1, 2, 3, 4, 5, 1, 2, 3, 1, 2])
    splits = np.array(["train"] * 3 + ["valid"] * 2 + ["train"] * 2 + ["valid"] + ["train", "valid"], dtype=object)
    first, second = label_windows(users, stamps, splits, 1, 3, enough=100)[:2]
    assert first.tolist() == [False, False, False, True, True, False, False, True, False, True]
    # user 0: its two rows before valid (stamps 2, 3; stamp 1 is left to retrieve from); user 1: one; user 2: its
    # only earlier row would leave it no history
    assert second.tolist() == [False, True, True, False, False, False, True, False, False, False]
    windows = label_windows(users, stamps, splits, 1, 3, enough=100)
    assert len(windows) == 2                                      # a third window: no user has rows enough left
    assert not (windows[0] & windows[1]).any()
    assert len(label_windows(users, stamps, splits, 1, 3, enough=3)) == 1   # 3 users labelled: enough
    one = np.array(["train"] * 10, dtype=object)
    assert label_windows(users, stamps, one, 1, 1, enough=100)[0].tolist() == \
        label_rows(users, stamps, one, 1).tolist()


def test_a_temporal_split_keeps_one_label_window():
    """Labels that are a period every other row precedes (a temporal split's valid) are the only window."""
    users = np.array([0, 0, 0, 1, 1, 1])
    stamps = np.array([1, 5, 8, 2, 3, 9])
    splits = np.array(["train", "train", "valid", "train", "train", "valid"], dtype=object)
    windows = label_windows(users, stamps, splits, 1, 4, enough=100)
    assert len(windows) == 1 and windows[0].tolist() == [False, False, True, False, False, True]
    stamps[2] = 4                                        # user 0's label before user 1's train row: per user
    assert len(label_windows(users, stamps, splits, 1, 4, enough=100)) == 2


def test_examples_of_several_windows_keep_a_users_queries_in_one_fold():
    x = np.zeros((8, len(Fe.FEATURES)), np.float32)
    part = Examples(np.array([0, 0, 1, 1]), np.arange(4, dtype=np.int32), x[:4], np.ones(4, np.float32),
                    np.ones(4, bool), {"labelled_users": 2, "users_with_a_positive": 2})
    earlier = Examples(np.array([10, 10, 11, 11]), np.arange(4, dtype=np.int32), x[4:], np.ones(4, np.float32),
                       np.ones(4, bool), {"labelled_users": 2, "users_with_a_positive": 1}, np.array([0, 0, 1, 1]))
    joined = Examples.joined([part, earlier])
    assert joined.qid.tolist() == [0, 0, 1, 1, 10, 10, 11, 11] and joined.users.tolist() == [0, 0, 1, 1] * 2
    assert joined.info == {"labelled_users": 2, "users_with_a_positive": 2, "label_windows": 2,
                           "labelled_queries": 4, "queries_with_a_positive": 3}
    many = Examples.joined([Examples(np.repeat(np.arange(40), 2) + shift, np.zeros(80, np.int32),
                                     np.zeros((80, len(Fe.FEATURES)), np.float32), np.ones(80, np.float32),
                                     np.ones(80, bool), {"labelled_users": 40, "users_with_a_positive": 40},
                                     np.repeat(np.arange(40), 2)) for shift in (0, 100)])
    parts = folds(many, MultiStageParams(folds=2))
    assert sorted(np.concatenate(parts).tolist()) == list(range(40))   # folds of users, not of queries


def test_cold_users_and_unbought_items_still_get_candidates():
    """A user with one interaction gets a full candidate list (content, co-occurrence, category-popular), and an
    item nobody has interacted with can be proposed by the content retriever."""
    rng = np.random.default_rng(8)
    pairs = [(u, int(i)) for u in range(1, 30) for i in rng.choice(20, 5, replace=False)] + [(0, 3)]
    h = history(pairs)
    vectors = np.zeros((25, 3), dtype=np.float32)
    vectors[:, 0] = 1.0
    vectors[:24:2, 1] = 1.0                             # the other items are further from item 3 …
    vectors[1:24:2, 2] = 1.0
    vectors[[3, 24]] = [1.0, 0.0, 0.0]                  # … than item 24: never bought, described like item 3
    content = R.FactorSide.of(np.arange(25, dtype=np.int32), vectors / np.linalg.norm(vectors, axis=1)[:, None], 25)
    params = MultiStageParams(per_retriever=5)
    stage = fit_stage(h, 25, params, ALSParams(factors=4, iterations=3), content, {})
    cold = h.take(np.array([0]))
    found = stage.candidates(cold, stage.user_vectors(cold.users))
    assert len(found.items) >= 5 and 3 not in found.items.tolist()
    assert 24 in found.items.tolist()


def test_users_of_the_same_lone_item_share_one_query_and_get_what_they_would_alone():
    """A block where many users have one item, several the same one (with different weights), answers each user
    exactly as a block of that user alone would: same candidates, same features."""
    rng = np.random.default_rng(9)
    busy = [(u, int(i)) for u in range(20) for i in rng.choice(40, 6, replace=False)]
    lone = [(u, int(rng.choice([2, 5, 5, 7, 39]))) for u in range(20, 60)]
    pairs = busy + lone
    users = np.array([u for u, _ in pairs], dtype=np.int32)
    items = np.array([i for _, i in pairs], dtype=np.int32)
    h = R.History.of(users, items, rng.uniform(0.5, 3.0, len(pairs)), rng.permutation(len(pairs)).astype(np.int64))
    content = R.FactorSide.of(np.arange(40, dtype=np.int32), rng.normal(size=(40, 36)).astype(np.float32), 40)
    stage = fit_stage(h, 40, MultiStageParams(per_retriever=8), ALSParams(factors=4, iterations=3), content,
                      {"category": rng.integers(0, 3, 40)})
    shared = R.Representatives.of_history(h)
    assert shared.shared and len(shared.rows) == 20 + 4 and (shared.rows[shared.of[20:]] >= 20).all()
    profiles = R.profiles(content, h)
    assert all(np.array_equal(profiles[row], profiles[shared.rows[shared.of[row]]]) for row in range(20, 60))

    vectors = stage.user_vectors(h.users)
    als = stage._als_proposals(h, vectors, 8)
    fives = [row for row in range(20, 60) if h.items[h.indptr[row]] == 5]
    assert len(fives) > 2 and len({tuple(als.items[als.rows == row]) for row in fives}) == 1
    vectors[fives[1]] = 0                      # a user the ALS never saw, among others of the same lone item
    together = stage.candidates(h, vectors)
    assert (np.diff(together.rows) >= 0).all()
    for row in range(60):
        alone = h.take(np.array([row]))
        found = stage.candidates(alone, vectors[[row]])
        mine = together.rows == row
        assert together.items[mine].tolist() == found.items.tolist()
        np.testing.assert_array_equal(together.x[mine], found.x)
    als_rank = Fe.FEATURES.index("als_rank")
    assert np.isnan(together.x[together.rows == fives[1], als_rank]).all()
    assert not np.isnan(together.x[together.rows == fives[0], als_rank]).all()


def test_deletions_drop_erased_users_and_deleted_items_from_every_multistage_folder(tmp_path):
    rng = np.random.default_rng(3)
    h = random_history(rng, users=12, items=20, per_user=5)
    params = MultiStageParams(retrievers=["als", "cooccurrence", "category_popular"], per_retriever=5)
    stage = fit_stage(h, 20, params, ALSParams(factors=4, iterations=2), None, {})
    folder = tmp_path / "models" / "multistage" / "run-1"
    write_model(folder, stage, h, None, params, {})
    removed = drop_model_rows(tmp_path, user_idx=[3], item_idx=[7])
    assert set(removed) == {f"models/multistage/run-1/{name}" for name in
                            ("user_factors", "user_history", "item_factors", "item_neighbours", "item_side")}
    for name, gone in (("user_history", 3), ("user_factors", 3), ("item_side", 7), ("item_neighbours", 7)):
        assert gone not in pq.read_table(folder / name).column("id").to_pylist()


def test_lists_follow_the_ranker_at_strength_zero_and_diversify_above_it():
    rows = np.array([0, 0, 0, 0, 1, 1])
    items = np.array([5, 6, 7, 8, 5, 9], dtype=np.int32)
    scores = np.array([0.9, 0.8, 0.8, 0.1, 0.3, 0.7], dtype=np.float32)
    plain = D.top_lists(rows, items, scores, 3, 2, 0.0, 50, None)
    assert plain.of(0).tolist() == [5, 6] and plain.of(1).tolist() == [9, 5] and plain.of(2).tolist() == []
    # 5 and 6 are the same direction, 7 orthogonal: a strong re-rank keeps 5 and swaps 6 for 7
    row_of = np.full(10, -1)
    row_of[[5, 6, 7, 8]] = [0, 1, 2, 3]
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0.7, 0.7]], dtype=np.float32)
    diverse = D.top_lists(rows, items, scores, 3, 2, 0.9, 50, D.Space.of(row_of, vectors))
    assert diverse.of(0).tolist() == [5, 7]
    pool_of_two = D.top_lists(rows, items, scores, 3, 2, 0.9, 2, D.Space.of(row_of, vectors))
    assert pool_of_two.of(0).tolist() == [5, 6]


def test_lists_reranked_together_equal_each_list_reranked_alone():
    from recsys.rerank import dpp

    rng = np.random.default_rng(5)
    rows = np.repeat(np.arange(6), 12)
    items = np.concatenate([rng.choice(40, 12, replace=False) for _ in range(6)]).astype(np.int32)
    scores = rng.random(len(rows)).astype(np.float32)
    row_of = np.arange(40)
    row_of[[3, 4]] = -1                                 # items without an embedding
    vectors = rng.normal(size=(40, 5)).astype(np.float32)
    space = D.Space.of(row_of, vectors)
    together = D.top_lists(rows, items, scores, 6, 4, 0.6, 8, space)
    for row in range(6):
        mine = rows == row
        order = np.lexsort((items[mine], -scores[mine]))[:8]
        cand = items[mine][order]
        alone = cand[dpp.rerank(scores[mine][order], space.vectors_of(cand), 4, 0.6)]
        assert together.of(row).tolist() == alone.tolist()


def test_the_strength_is_the_longest_run_of_strengths_within_the_loss():
    # twelve candidates: the ten best are near-duplicates, the two last unlike them (a top 10 of one kind)
    rows = np.zeros(12, dtype=np.int64)
    items = np.arange(12, dtype=np.int32)
    scores = np.linspace(1.0, 0.5, 12).astype(np.float32)
    row_of = np.arange(12)
    vectors = np.array([[1, 0]] * 10 + [[0, 1]] * 2, dtype=np.float32)
    users = np.array([42])

    def chosen(truth, max_loss, embeddings=vectors):
        return D.choose_strength(rows, items, scores, users, {42: truth}, [0.5, 0.9], max_loss, 50,
                                 D.Space.of(row_of, embeddings))

    # what the user took next is the 9th and 10th near-duplicates: diversity costs MAP, no strength is allowed …
    strict, curve = chosen([8, 9], 0.02)
    assert strict == 0.0 and [c["strength"] for c in curve] == [0.0, 0.5, 0.9]
    assert curve[-1]["map@10"] < curve[0]["map@10"] and curve[-1]["diversity"] > curve[0]["diversity"]
    # … unless the loss allowed is large; and when diversity costs nothing, the strongest is chosen
    assert chosen([8, 9], 0.99)[0] == 0.9
    assert chosen([0], 0.02)[0] == 0.9
    # embeddings that do not separate the candidates: a strength would only shuffle the list, none is chosen
    assert chosen([0], 0.99, np.ones((12, 2), dtype=np.float32))[0] == 0.0


def test_the_loss_bound_is_the_mean_paired_loss_plus_z_standard_errors_over_the_base():
    base, other = np.array([1.0, 0.5, 0.0, 0.5]), np.array([0.5, 0.5, 0.0, 0.5])
    # losses 0.5, 0, 0, 0: mean 0.125, standard deviation 0.25, standard error 0.125; the base's mean 0.5
    assert D.loss_bound(base, other, 0.5) == pytest.approx(0.25)
    assert D.loss_bound(base, other, 0.95) == pytest.approx((0.125 + 1.6448536 * 0.125) / 0.5)
    assert D.loss_bound(np.zeros(3), np.ones(3), 0.95) == 0.0          # no hit to lose
    assert D.loss_bound(np.array([0.5]), np.array([0.25]), 0.95) == pytest.approx(0.5)   # one user: its loss


def test_a_strength_that_gains_on_a_few_users_only_is_not_trusted_until_many_users_agree():
    # the ten best candidates are near-duplicates, the two last unlike them; one kind of user took the 9th and 10th
    # (diversity costs it), two kinds took an unlike one (diversity brings it into the top 10): a mean gain
    vectors = np.array([[1, 0]] * 10 + [[0, 1]] * 2, dtype=np.float32)
    space = D.Space.of(np.arange(12), vectors)

    def chosen(copies, confidence):
        truth = dict(enumerate([[8, 9], [10], [11]] * copies))
        n = len(truth)
        rows = np.repeat(np.arange(n), 12)
        items = np.tile(np.arange(12, dtype=np.int32), n)
        scores = np.tile(np.linspace(1.0, 0.5, 12), n).astype(np.float32)
        strength, curve = D.choose_strength(rows, items, scores, np.arange(n), truth, [0.5, 0.9], 0.02, 50, space,
                                            confidence)
        assert curve[-1]["map@10"] > curve[0]["map@10"]          # the mean says: diversify, it gains
        return strength

    assert chosen(1, 0.5) == 0.9            # the plain mean trusts three users …
    assert chosen(1, 0.95) == 0.0           # … the bound does not: their losses and gains spread too widely
    assert chosen(30, 0.95) == 0.9          # ninety users of the same kinds: the bound is a gain too


def test_the_report_shows_each_strength_with_its_loss_bound_and_marks_the_chosen_one(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsys.evaluate.report import multistage_section

    curve = [{"strength": 0.0, "map@10": 0.075, "loss_bound": 0.0, "diversity": 0.147},
             {"strength": 0.1, "map@10": 0.088, "loss_bound": 0.068, "diversity": 0.299}]
    page = multistage_section(tmp_path, {"diversity": 0.0, "diversity_curve": curve}, plt)
    assert (tmp_path / "diversity.png").is_file()
    assert "<td>0 (chosen)</td><td>0.0750</td><td>0.000</td>" in page
    assert "<td>0.1</td><td>0.0880</td><td>0.068</td><td>0.299</td>" in page


def test_a_large_catalogue_is_searched_by_the_saved_index_with_the_exact_answers_here(tmp_path):
    """Above ``retrieval.ann_min_items`` the ALS retriever searches an approximate index (exact head + HNSW tail),
    saved with the model and loaded by the scoring tasks; on a catalogue this small it must find the exact top."""
    from recsys.multistage.model import ANN_FILE, _Scorer

    rng = np.random.default_rng(4)
    h = random_history(rng, users=20, items=60, per_user=6)
    exact = MultiStageParams(retrievers=["als"], per_retriever=10)
    approximate = exact.model_copy(update={"retrieval": exact.retrieval.model_copy(
        update={"ann_min_items": 1, "exact_head": 8, "tail_candidates": 10})})
    als = ALSParams(factors=6, iterations=3)
    plain, indexed = (fit_stage(h, 60, p, als, None, {}) for p in (exact, approximate))
    assert plain.als.index is None and indexed.als.index is not None
    write_model(tmp_path, indexed, h, None, approximate, {})
    assert (tmp_path / ANN_FILE).is_file()
    loaded = _Scorer.read(tmp_path, [], 0.0).stage()
    assert loaded.als.index is not None
    vectors = indexed.user_vectors(h.users)
    want = R.FactorSide.of(indexed.als.ids, indexed.als.vectors, 60).top(vectors, h, 10)     # exact, same factors
    for stage in (indexed, loaded):
        got = stage.als.top(vectors, h, 10)
        assert got.rows.tolist() == want.rows.tolist() and got.items.tolist() == want.items.tolist()


def test_users_are_scored_with_at_most_score_per_retriever_candidates_from_each(tmp_path):
    """The ranker trains on ``per_retriever`` candidates per retriever; a saved model scores users with at most
    ``score_per_retriever`` (or the override a caller gives)."""
    from recsys.multistage.model import _Scorer

    rng = np.random.default_rng(5)
    h = random_history(rng, users=20, items=60, per_user=6)
    params = MultiStageParams(retrievers=["als", "category_popular"], per_retriever=10, score_per_retriever=4)
    fitted = fit_stage(h, 60, params, ALSParams(factors=6, iterations=3), None, {})
    vectors = fitted.user_vectors(h.users)

    def deepest(stage, retriever="als_rank") -> float:
        return float(np.nanmax(stage.candidates(h, vectors).x[:, Fe.FEATURES.index(retriever)]))

    assert deepest(fitted) == 10 and deepest(fitted, "category_popular_rank") == 10
    write_model(tmp_path, fitted, h, None, params, {})
    assert deepest(_Scorer.read(tmp_path, [], 0.0).stage()) == 4
    assert deepest(_Scorer.read(tmp_path, [], 0.0, per_retriever=7).stage()) == 7
    assert deepest(_Scorer.read(tmp_path, [], 0.0, per_retriever=50).stage()) == 10   # never above training


# --- Spark: a candidate of a run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sequels(spark):
    """200 users in 4 taste clusters of 25 items; within a cluster, item j is followed by item j+1 (a sequel), so
    the next item is predictable from the latest one. train: each user's first 6 in time, valid: the 7th; the test
    truth is the 8th."""
    rng = np.random.default_rng(11)
    rows, truth = [], {}
    for user in range(200):
        cluster = user % 4
        start = int(rng.integers(0, 17))
        chain = [cluster * 25 + start + j for j in range(8)]
        for step, item in enumerate(chain[:7]):
            rows.append((user, item, 1.0, 1_000_000 * (step + 1) + user, "train" if step < 6 else "valid"))
        truth[user] = chain[7]
    frame = spark.createDataFrame(rows, f"{C.USER_IDX} int, {C.ITEM_IDX} int, weight double, {C.TIMESTAMP} long, "
                                        f"{C.SPLIT} string")
    items = spark.createDataFrame([(i, f"item {i} cluster {i // 25}", None, None, None, f"c{i // 25}")
                                   for i in range(100)],
                                  f"{C.ITEM_IDX} int, text string, price double, average_rating double, "
                                  f"rating_number long, category_key string")
    return frame, items, truth


def test_a_per_user_split_labels_earlier_windows_each_with_its_own_retrievers(sequels):
    """Users' times interleaved (user u's rows start after user u-1's end): valid is no period, so stage one labels
    each user's 7th item, then its 6th, 5th and 4th, each window's retrievers fitted on the rows before it."""
    from pyspark.sql import functions as F

    from recsys.multistage.model import stage_one_examples

    frame, items, truth = sequels
    per_user = frame.withColumn(C.TIMESTAMP, F.col(C.TIMESTAMP) + F.col(C.USER_IDX) * 10_000_000)
    params = MultiStageParams.model_validate({"per_retriever": 20, "content": {"dims": 8, "min_df": 1},
                                              "als": {"factors": 8, "iterations": 5}})
    first = stage_one_examples(per_user, params, items)
    info, examples = first.examples.info, first.examples
    assert (info["label_windows"], info["labelled_queries"]) == (4, 800)
    stride = 200
    for window in range(4):                            # window w labels item 7 − w of each user's chain of 8
        assert all(first.truth[user + window * stride] == [truth[user] - 1 - window] for user in range(200))
    assert np.array_equal(examples.users, examples.qid % stride)
    assert first.label_rows == 200                     # the latest window's rows: what the model records


def test_multistage_fits_saves_loads_and_ranks_the_next_item_first(spark, sequels, tmp_path):
    from recsys.loading import fit_model, load_model

    frame, items, truth = sequels
    params = {"per_retriever": 20, "als": {"factors": 8, "regularization": 0.1, "alpha": 5.0, "iterations": 10},
              "content": {"dims": 8, "min_df": 1}, "ranker": {"n_estimators": 30, "parsimony": 0.01},
              "diversity_grid": [0.5, 0.9]}
    model = fit_model("multistage", frame, params, items=items)
    model.save(tmp_path / "saved")
    model.discard_scratch()
    loaded = load_model(spark, tmp_path / "saved", seen=frame.select(C.USER_IDX, C.ITEM_IDX))
    assert loaded.info["users_with_a_positive"] > 100 and loaded.info["candidate_recall"] > 0.5
    assert set(loaded.info["feature_importance"]) <= set(Fe.FEATURES)
    phases = loaded.info["phase_seconds"]
    assert list(phases) == ["catalogue", "stage_one", "examples", "cross_fit", "ranker", "diversity", "stage_two"]
    assert 0 < sum(phases.values()) <= loaded.info["train_seconds"] + 0.0005 * len(phases)   # each rounded to ms
    assert [c["strength"] for c in loaded.info["diversity_curve"]] == [0.0, 0.5, 0.9]
    # the final ranker holds the fewest trees whose cross-fitted MAP@10 is within 1 % of the early-stopped rankers'
    import xgboost as xgb

    from recsys.multistage.model import fewest_rounds

    info = loaded.info
    mean_best = max(1, round(float(np.mean(info["crossfit_rounds"]))))
    curve = {int(r): v for r, v in info["crossfit_rounds_map@10"].items()}
    assert max(curve) == mean_best and len(curve) > 1
    assert info["crossfit_rounds_chosen"] == min(mean_best, fewest_rounds(curve, info["crossfit_map@10"], 0.01))
    booster = xgb.Booster()
    booster.load_model(str(tmp_path / "saved" / "ranker.json"))
    assert booster.num_boosted_rounds() == info["crossfit_rounds_chosen"] == info["ranker_rounds"]
    loaded.diversity = 0.0                             # the ranker's own order (the chosen strength is tested above)

    lists = {r[C.USER_IDX]: r[C.ITEMS] for r in loaded.recommend_lists(k=5, ).collect()}
    seen = {}
    for r in frame.collect():
        seen.setdefault(r[C.USER_IDX], set()).add(r[C.ITEM_IDX])
    assert set(lists) == set(truth)
    assert all(len(v) == 5 and not set(v) & seen[u] and len(set(v)) == 5 for u, v in lists.items())
    first = np.mean([lists[u][0] == truth[u] for u in truth])
    # the sequel of the latest item first, learned from the valid labels (1 in ~90 by chance; a user's taste
    # cluster alone, which ALS captures, would give ~1 in 17)
    assert first > 0.6, first

    deleted = sorted({truth[u] for u in range(0, 200, 2)})
    rows = loaded.recommend(k=5, exclude_items=deleted).collect()
    assert not {r[C.ITEM_IDX] for r in rows} & set(deleted)
    by_user = {}
    for r in sorted(rows, key=lambda r: (r[C.USER_IDX], r[C.RANK])):
        by_user.setdefault(r[C.USER_IDX], []).append(r[C.SCORE])
    assert all(scores == sorted(scores, reverse=True) for scores in by_user.values())

    loaded.diversity = 0.9                             # a strong re-rank: other lists, more diverse in content
    diverse = {r[C.USER_IDX]: r[C.ITEMS] for r in loaded.recommend_lists(k=5).collect()}
    assert diverse != lists and all(not set(v) & seen[u] for u, v in diverse.items())


def test_publishs_refit_keeps_the_evaluated_ranker_and_refits_the_retrievers_on_every_row(spark, sequels, tmp_path):
    """The refit on every split scores with the candidate's ranker, order and strength (what evaluation measured)
    while its retrievers know the newest rows: a user seen only there gets a list, and every user's newest item is
    both excluded and what their next item is predicted from."""
    from recsys.loading import fit_model, refit_model

    frame, items, truth = sequels
    params = {"per_retriever": 20, "als": {"factors": 8, "regularization": 0.1, "alpha": 5.0, "iterations": 10},
              "content": {"dims": 8, "min_df": 1}, "ranker": {"n_estimators": 30}, "diversity_grid": [0.5]}
    candidate = fit_model("multistage", frame, params, items=items)
    candidate.save(tmp_path / "candidate")
    candidate.discard_scratch()
    newest = [(u, truth[u], 1.0, 9_000_000 + u, "test") for u in truth]
    newest += [(200, 10, 1.0, 9_500_000, "test"), (200, 11, 1.0, 9_600_000, "test")]   # seen only in test
    every = frame.unionByName(spark.createDataFrame(newest, frame.schema))
    refit = refit_model("multistage", tmp_path / "candidate", every, params, items=items)

    assert (refit.path / "ranker.json").read_bytes() == (tmp_path / "candidate" / "ranker.json").read_bytes()
    before = json.loads((tmp_path / "candidate" / "model.json").read_text())["info"]
    assert refit.info["refit_of"] == "candidate" and refit.info["refit_seconds"] > 0
    assert {k: refit.info[k] for k in ("order", "diversity", "label_rows")} == {
        k: before[k] for k in ("order", "diversity", "label_rows")}
    refit.diversity = 0.0
    lists = {r[C.USER_IDX]: r[C.ITEMS] for r in refit.recommend_lists(k=5).collect()}
    assert set(lists) == set(truth) | {200}
    assert not any(truth[u] in lists[u] for u in truth)          # the newest item is seen now
    # the sequel of the newest item (the chain goes on within the cluster) comes first for most users
    sequel = np.mean([lists[u][0] == truth[u] + 1 for u in truth])
    assert sequel > 0.5, sequel
    refit.discard_scratch()


def test_the_fewest_trees_within_the_parsimony_of_the_early_stopped_rankers():
    from recsys.multistage.model import fewest_rounds, round_grid

    assert round_grid(72) == [9, 18, 27, 36, 45, 54, 63, 72]
    assert round_grid(3) == [1, 2, 3] and round_grid(1) == [1]
    curve = {9: 0.100, 18: 0.118, 27: 0.1195, 36: 0.121, 72: 0.1205}
    assert fewest_rounds(curve, 0.1206, 0.01) == 27              # 0.1195 ≥ 0.99 × 0.1206 = 0.1194; 0.118 is not
    assert fewest_rounds(curve, 0.1206, 0.001) == 36
    assert fewest_rounds(curve, 0.2, 0.01) == 72                  # none near: the most trees of the grid
    assert fewest_rounds({4: 0.0, 8: 0.0}, 0.0, 0.01) == 4        # nothing learned: the fewest


def test_the_ranker_trains_when_an_arrow_batch_holds_no_validation_rows(spark):
    """xgboost.spark reads each Arrow batch (10,000 rows) of a partition sorted by qid; fed one column per feature, it
    failed (KeyError 'values') on a batch with no validation rows. Here the first batch is all training rows."""
    from recsys.multistage.model import train_ranker

    rng = np.random.default_rng(0)

    def examples(users, rows_each) -> Examples:
        qid = np.repeat(np.asarray(users), rows_each)
        x = rng.normal(size=(len(qid), len(Fe.FEATURES))).astype(np.float32)
        label = (x[:, 0] > 1.0).astype(np.float32)           # learnable: the first feature decides
        return Examples(qid, np.tile(np.arange(rows_each, dtype=np.int32), len(users)), x, label,
                        np.ones(len(qid), bool), {})

    train, valid = examples(range(20), 600), examples(range(100, 104), 50)   # sorted by qid: 12,000 training first
    params = MultiStageParams.model_validate({"ranker": {"n_estimators": 20, "early_stopping_rounds": 5}})
    booster, info = train_ranker(spark, train, params, valid=valid)
    assert info["ranker_workers"] == 1 and next(iter(info["feature_importance"])) == Fe.FEATURES[0]
    scores = booster.inplace_predict(valid.x)
    assert np.corrcoef(scores, valid.x[:, 0])[0, 1] > 0.5

"""Approximate candidate retrieval (recsys.retrieval): recall against the exact kernel, exclusions, the index file,
the ANN rule, and the Spark entry against the in-process search."""

from __future__ import annotations

import numpy as np
import pytest

from recsys import constants as C
from recsys.models.topk import Catalogue, seen_columns, topk_products
from recsys.retrieval.ann import AnnIndex, candidate_recall, use_ann
from recsys.retrieval.settings import RetrievalSettings

SETTINGS = RetrievalSettings(exact_head=400)       # the configured graph; a head of 10 % of the test catalogue


@pytest.fixture(scope="module")
def catalogue():
    """ALS-like: 4,000 items of log-normal norms around 40 topics, item ids sparse and unsorted; 300 users."""
    rng = np.random.default_rng(7)
    topics = rng.standard_normal((40, 16))
    directions = topics[rng.integers(0, 40, 4000)] + 0.8 * rng.standard_normal((4000, 16))
    vectors = (directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.lognormal(0, 0.6, (4000, 1)))
    ids = rng.permutation(50_000)[:4000].astype(np.int32)
    users = vectors[rng.integers(0, 4000, (300, 3))].mean(axis=1) + 0.2 * rng.standard_normal((300, 16))
    index = AnnIndex.build(ids, vectors.astype(np.float32), SETTINGS)
    return ids, vectors.astype(np.float32), users.astype(np.float32), index


def exact(ids, vectors, users, n, seen=None):
    order = np.argsort(ids)
    return topk_products(users, Catalogue.of(vectors[order]), n, seen)


def random_seen(ids, users, rng, most=60):
    lengths = rng.integers(0, most, users.shape[0])
    flat = rng.choice(ids, lengths.sum())
    return lengths, flat, seen_columns(lengths, flat, np.sort(ids))


def test_recall_against_exact_scoring(catalogue):
    ids, vectors, users, index = catalogue
    columns, scores = index.search_columns(users, 50)
    exact_columns, exact_scores = exact(ids, vectors, users, 50)
    assert candidate_recall(columns, exact_columns, exact_scores) >= 0.95
    products = np.einsum("rf,rnf->rn", users.astype(np.float64), vectors[np.argsort(ids)][columns])
    np.testing.assert_allclose(scores, products, rtol=1e-5)         # scores are the inner products


def test_the_graph_alone_and_the_head_alone(catalogue):
    """Head 0: the graph answers alone (MIPS over skewed norms is its hard case: ≥ 0.9 here, the head lifts it to
    ≥ 0.95 above); a head over the whole catalogue is exact scoring."""
    ids, vectors, users, _ = catalogue
    exact_columns, exact_scores = exact(ids, vectors, users, 50)
    graph = AnnIndex.build(ids, vectors, SETTINGS.model_copy(update={"exact_head": 0}))
    assert graph.head.size == 0 and graph.search_columns(users, 50)[0].shape == (300, 50)
    assert candidate_recall(graph.search_columns(users, 50)[0], exact_columns, exact_scores) >= 0.9
    head = AnnIndex.build(ids, vectors, SETTINGS.model_copy(update={"exact_head": 4000}))
    assert head.graph is None
    columns, scores = head.search_columns(users, 50)
    np.testing.assert_array_equal(columns, exact_columns)
    np.testing.assert_array_equal(scores, exact_scores)


def test_results_are_sorted_best_first_ties_by_item_id():
    """Ties inside the graph (scores 1 and 0.5) and across the head (item 9, the largest norm) and the graph."""
    vectors = np.array([[1, 0.01], [1, 0], [1, 0], [1, 0], [0.5, 0], [0.5, 0.4]], dtype=np.float32)
    settings = SETTINGS.model_copy(update={"exact_head": 1, "tail_candidates": 6})
    index = AnnIndex.build(np.array([9, 4, 7, 1, 8, 2], dtype=np.int32), vectors, settings)
    assert index.ids[index.head].tolist() == [9]
    items, scores = index.search(np.array([[1.0, 0.0]], dtype=np.float32), 6)
    assert items[0].tolist() == [1, 4, 7, 9, 2, 8]
    assert scores[0].tolist() == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


def test_seen_and_excluded_items_are_never_returned(catalogue):
    ids, vectors, users, index = catalogue
    rng = np.random.default_rng(1)
    lengths, flat, seen = random_seen(ids, users, rng)
    excluded = rng.choice(ids, 200, replace=False)
    items, scores = index.search(users, 50, seen, excluded)
    owners = np.repeat(np.arange(users.shape[0]), lengths)
    for row in range(users.shape[0]):
        assert not np.isin(items[row], flat[owners == row]).any()
        assert not np.isin(items[row], excluded).any()
    assert np.isfinite(scores).all()                        # the slack still gives every user n candidates
    exact_columns, exact_scores = exact(ids, vectors, users, 50, seen)
    assert candidate_recall(index.search_columns(users, 50, seen)[0], exact_columns, exact_scores) >= 0.95


def test_a_user_with_every_item_seen_gets_no_candidates():
    ids = np.arange(5, dtype=np.int32)
    index = AnnIndex.build(ids, np.eye(5, dtype=np.float32) * [[5, 4, 3, 2, 1]],
                           SETTINGS.model_copy(update={"exact_head": 2}))
    seen = seen_columns(np.array([5, 2]), np.array([0, 1, 2, 3, 4, 3, 4]), ids)
    items, scores = index.search(np.ones((2, 5), dtype=np.float32), 4, seen)
    assert items[0].tolist() == [-1] * 4 and not np.isfinite(scores[0]).any()
    assert items[1].tolist() == [0, 1, 2, -1]


def test_save_and_load_round_trip(catalogue, tmp_path):
    ids, _, users, index = catalogue
    index.save(tmp_path / "items.ann")
    loaded = AnnIndex.load(tmp_path / "items.ann", SETTINGS.model_copy(update={"ef_search": 100}))
    assert loaded.settings.ef_search == 100 and loaded.size == index.size and loaded.graph.ntotal == 3600
    np.testing.assert_array_equal(loaded.ids, np.sort(ids))
    np.testing.assert_array_equal(loaded.head, index.head)
    before, after = index.search(users, 20), AnnIndex.load(tmp_path / "items.ann", SETTINGS).search(users, 20)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_ann_is_used_from_the_configured_catalogue_size():
    settings = RetrievalSettings(ann_min_items=1000)
    assert not use_ann(999, settings) and use_ann(1000, settings)


def test_spark_entry_returns_the_in_process_candidates(spark, catalogue, tmp_path):
    from recsys.models.factors import numpy_to_factors
    from recsys.retrieval.spark import ann_candidates

    ids, _, users, index = catalogue
    index.save(tmp_path / "items.ann")
    rng = np.random.default_rng(2)
    lengths, flat, seen = random_seen(ids, users, rng)
    user_ids = np.arange(1000, 1000 + users.shape[0], dtype=np.int32)
    factors = numpy_to_factors(spark, user_ids, users, tmp_path / "users")
    seen_df = spark.createDataFrame([(int(u), int(i)) for u, i in zip(np.repeat(user_ids, lengths), flat)],
                                    f"{C.USER_IDX} INT, {C.ITEM_IDX} INT")
    got = {row[C.USER_IDX]: (row[C.ITEMS], row["scores"])
           for row in ann_candidates(factors, tmp_path / "items.ann", 30, SETTINGS, seen_df).collect()}
    items, scores = index.search(users, 30, seen)
    assert sorted(got) == user_ids.tolist()
    for row, user in enumerate(user_ids):
        assert got[user][0] == items[row].tolist()
        np.testing.assert_allclose(got[user][1], scores[row], rtol=1e-6)

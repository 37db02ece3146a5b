"""DPP re-rank (recsys.rerank.dpp): the greedy step against brute-force determinants, the relevance-order and
duplicate guarantees, the ε stop, the batched kernel against the single-list one, and the diversity measure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recsys.rerank.dpp import greedy_map, intra_list_diversity, rerank, rerank_batch


def psd_kernel(seed: int, n: int, rank: int) -> np.ndarray:
    factors = np.random.default_rng(seed).standard_normal((n, rank))
    return factors @ factors.T


def best_next_determinant(kernel: np.ndarray, chosen: list[int]) -> tuple[float, float]:
    """The largest det(L_{S ∪ {j}}) over the items j not in S, by brute force, and the kernel's scale."""
    dets = [np.linalg.det(kernel[np.ix_(chosen + [j], chosen + [j])]) for j in range(len(kernel)) if j not in chosen]
    return max(dets), np.abs(kernel).max() ** (len(chosen) + 1)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 9), rank=st.integers(1, 9))
def test_every_greedy_step_takes_the_item_of_largest_determinant(seed, n, rank):
    kernel = psd_kernel(seed, n, rank)
    picks = greedy_map(kernel, n, epsilon=1e-9)
    for t, j in enumerate(picks):
        chosen = [int(i) for i in picks[:t]]
        best, scale = best_next_determinant(kernel, chosen)
        assert np.linalg.det(kernel[np.ix_(chosen + [j], chosen + [j])]) >= best - 1e-7 * scale
    assert len(set(picks.tolist())) == len(picks) <= min(n, rank)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 8))
def test_log_quality_picks_as_the_kernel_with_the_quality_folded_in(seed, n):
    """Greedy on S with log q = greedy on diag(q) S diag(q), each step checked against the determinants of the
    folded kernel."""
    rng = np.random.default_rng(seed)
    similarity = psd_kernel(seed, n, n)
    log_quality = rng.uniform(-2, 2, n)
    folded = np.exp(log_quality)[:, None] * similarity * np.exp(log_quality)[None, :]
    picks = greedy_map(similarity, n, log_quality=log_quality)
    np.testing.assert_array_equal(picks, greedy_map(folded, n))
    for t, j in enumerate(picks):
        chosen = [int(i) for i in picks[:t]]
        best, scale = best_next_determinant(folded, chosen)
        assert np.linalg.det(folded[np.ix_(chosen + [j], chosen + [j])]) >= best - 1e-7 * scale


def test_the_first_pick_is_the_largest_diagonal_and_ties_go_to_the_lowest_index():
    assert greedy_map(np.diag([0.5, 2.0, 2.0, 1.0]), 2).tolist() == [1, 2]


def test_greedy_stops_once_no_gain_reaches_epsilon():
    assert greedy_map(np.diag([1.0, 0.5, 0.1]), 3, epsilon=0.3).tolist() == [0, 1]
    rank_two = psd_kernel(0, 6, 2)
    assert len(greedy_map(rank_two, 6, epsilon=1e-9)) == 2


@pytest.mark.parametrize("k", [1, 5, 12, 20])
def test_strength_zero_is_the_relevance_order_exactly(k):
    rng = np.random.default_rng(k)
    relevance = rng.integers(0, 5, 12).astype(float)              # ties keep the input order
    embeddings = rng.standard_normal((12, 4))
    expected = sorted(range(12), key=lambda i: (-relevance[i], i))[:k]
    assert rerank(relevance, embeddings, k, strength=0.0).tolist() == expected
    assert rerank_batch(relevance[None], np.arange(12)[None], embeddings, k, strength=0.0)[0].tolist() == expected


def test_identical_items_are_not_both_picked_while_distinct_ones_exist():
    """Items 0-2 are one embedding (and the most relevant), 3-5 distinct ones: the first four picks are one copy
    and the three distinct items; the other copies come last, in relevance order."""
    embeddings = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    relevance = np.array([1.0, 0.99, 0.98, 0.5, 0.4, 0.3])
    for strength in (0.05, 0.5, 1.0):
        ranked = rerank(relevance, embeddings, 6, strength).tolist()
        assert ranked[0] == 0 and sorted(ranked[:4]) == [0, 3, 4, 5] and ranked[4:] == [1, 2], strength


def test_a_high_strength_trades_relevance_for_diversity_and_a_low_one_does_not():
    """Two near-duplicates on top, one distinct item below: a low strength keeps the relevance order, a high one
    lifts the distinct item to second place."""
    embeddings = np.array([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0]])
    relevance = np.array([1.0, 0.9, 0.0])
    assert rerank(relevance, embeddings, 3, strength=0.01).tolist() == [0, 1, 2]
    assert rerank(relevance, embeddings, 3, strength=0.5).tolist() == [0, 2, 1]


@pytest.mark.parametrize("strength", [0.05, 0.3, 0.7, 1.0])
def test_the_batched_variant_equals_the_single_list_one(strength):
    rng = np.random.default_rng(int(strength * 100))
    embeddings = rng.standard_normal((60, 8)) * rng.lognormal(0, 1, (60, 1))
    embeddings[[3, 17]] = 0                                         # no embedding: unlike every other item
    embeddings[25] = embeddings[24] * 3                             # the same direction
    candidates = np.stack([rng.choice(60, 30, replace=False) for _ in range(40)])
    candidates[0, :4] = [3, 17, 24, 25]
    relevance = rng.standard_normal((40, 30))
    relevance[1] = 0.0                                              # all tied
    batched = rerank_batch(relevance, candidates, embeddings, 10, strength)
    for b in range(40):
        np.testing.assert_array_equal(batched[b], rerank(relevance[b], embeddings[candidates[b]], 10, strength))


def test_a_list_shorter_than_k_is_returned_whole():
    rng = np.random.default_rng(3)
    ranked = rerank_batch(rng.random((2, 4)), np.array([[0, 1, 2, 3], [3, 2, 1, 0]]), rng.random((4, 3)), 10, 0.5)
    assert ranked.shape == (2, 4) and all(sorted(row) == [0, 1, 2, 3] for row in ranked.tolist())


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_a_strength_outside_zero_to_one_is_refused(strength):
    with pytest.raises(ValueError, match="strength"):
        rerank(np.ones(3), np.eye(3), 2, strength)


def test_intra_list_diversity_on_known_lists():
    embeddings = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [0.0, 0.0]])
    assert intra_list_diversity([[0, 2]], embeddings) == pytest.approx(1.0)          # orthogonal
    assert intra_list_diversity([[0, 1]], embeddings) == pytest.approx(0.0)          # same direction
    assert intra_list_diversity([[0, 1, 2]], embeddings) == pytest.approx(2 / 3)     # pairs: 0, 1, 1
    assert intra_list_diversity([[0, 3]], embeddings) == pytest.approx(1 - np.sqrt(0.5))
    assert intra_list_diversity([[0, 4]], embeddings) == pytest.approx(1.0)          # no embedding
    assert intra_list_diversity([[0, 2], [0, 1], [3]], embeddings) == pytest.approx(0.5)   # one-item list left out
    pairs = [list(p) for p in itertools.combinations(range(4), 2)]
    assert 0 <= intra_list_diversity(pairs, embeddings) <= 1


def test_the_spark_helper_reranks_each_list_as_rerank_does(spark):
    """Lists of mixed lengths (and empty ones), best first, items without an embedding: each output row is
    :func:`rerank` of its input row, scores following their items; strength 0 only cuts to k."""
    from recsys import constants as C
    from recsys.rerank.lists import rerank_lists

    rng = np.random.default_rng(5)
    item_ids = np.arange(0, 400, 2, dtype=np.int32)                 # odd ids have no embedding
    embeddings = rng.standard_normal((item_ids.size, 6))
    rows = []
    for user in range(60):
        n = [0, 3, 25, 25, 40][user % 5]
        items = rng.choice(400, n, replace=False)
        rows.append((user, items.tolist(), np.sort(rng.random(n).astype(np.float32))[::-1].tolist()))
    lists = spark.createDataFrame(rows, f"{C.USER_IDX} INT, {C.ITEMS} ARRAY<INT>, scores ARRAY<FLOAT>")
    for strength in (0.0, 0.4):
        got = {r[C.USER_IDX]: (r[C.ITEMS], r["scores"])
               for r in rerank_lists(lists, item_ids, embeddings, 10, strength).collect()}
        assert sorted(got) == list(range(60))
        for user, items, scores in rows:
            items, scores = np.array(items, dtype=np.int64), np.array(scores, dtype=np.float32)
            found = np.isin(items, item_ids)
            vectors = np.zeros((items.size, 6))
            vectors[found] = embeddings[np.searchsorted(item_ids, items[found])]
            if strength == 0:
                expected = np.arange(min(10, items.size))           # the input (relevance) order, cut
            else:
                expected = rerank(scores.astype(np.float64), vectors, 10, strength)
            assert got[user][0] == items[expected].tolist(), (strength, user)
            assert got[user][1] == scores[expected].tolist()

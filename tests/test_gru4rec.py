"""GRU4Rec: the numpy forward pass against hand-computed GRU steps and against torch, the session-parallel batches,
the popularity^α sampler, and training on planted next-item chains (tiny models: seconds each, no Spark)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.sessions.arrays import Sequences
from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer


def random_weights(n_items: int = 7, hidden: tuple[int, ...] = (3,), embedding: int = 0, seed: int = 0,
                   scale: float = 0.8) -> Gru4RecWeights:
    rng = np.random.default_rng(seed)

    def uniform(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    inputs = [embedding or hidden[-1], *hidden[:-1]]
    layers = tuple(GruLayer(uniform(3 * size, fan_in), uniform(3 * size, size), uniform(3 * size), uniform(3 * size))
                   for fan_in, size in zip(inputs, hidden))
    return Gru4RecWeights(uniform(n_items, hidden[-1]), uniform(n_items), layers,
                          uniform(n_items, embedding) if embedding else None)


def scalar_gru_state(weights: Gru4RecWeights, items: list[int]) -> list[float]:
    """The last state of a one-layer GRU, unit by unit with math: the GRUCell equations written out."""
    layer = weights.layers[0]
    size = layer.hidden
    table = weights.item_embeddings if weights.input_embeddings is None else weights.input_embeddings
    h = [0.0] * size

    def sigmoid(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    def dot(row: np.ndarray, vector: list[float]) -> float:
        return sum(float(a) * b for a, b in zip(row, vector))

    for item in items:
        x = [float(v) for v in table[item]]
        wi, wh, bi, bh = layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh
        r = [sigmoid(dot(wi[u], x) + bi[u] + dot(wh[u], h) + bh[u]) for u in range(size)]
        z = [sigmoid(dot(wi[size + u], x) + bi[size + u] + dot(wh[size + u], h) + bh[size + u]) for u in range(size)]
        n = [math.tanh(dot(wi[2 * size + u], x) + bi[2 * size + u] + r[u] * (dot(wh[2 * size + u], h)
                                                                              + bh[2 * size + u])) for u in range(size)]
        h = [(1 - z[u]) * n[u] + z[u] * h[u] for u in range(size)]
    return h


def test_a_forward_step_matches_known_numbers():
    """All weights 0, b_in = ln 2: r = z = σ(0) = ½, n = tanh(ln 2) = 0.6, so h1 = ½·0.6 = 0.3, h2 = ½·0.6 + ½·0.3."""
    zeros = np.zeros((6, 2), np.float32)
    bias_ih = np.array([0, 0, 0, 0, math.log(2), math.log(2)], np.float32)
    layer = GruLayer(zeros, zeros.copy(), bias_ih, np.zeros(6, np.float32))
    embeddings = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    weights = Gru4RecWeights(embeddings, np.array([0, 0, 0.1], np.float32), (layer,))
    np.testing.assert_allclose(weights.next_scores(np.array([0])), [0.3, 0.3, 0.7], atol=1e-6)
    np.testing.assert_allclose(weights.next_scores(np.array([2, 1])), [0.45, 0.45, 1.0], atol=1e-6)
    np.testing.assert_allclose(weights.next_scores(np.array([], np.int64)), [0, 0, 0.1])


@pytest.mark.parametrize("embedding", [0, 4])
def test_forward_matches_the_gru_equations_written_out(embedding):
    weights = random_weights(embedding=embedding)
    for items in ([3], [1, 4, 4, 0, 6], [6, 5, 4, 3, 2, 1, 0, 2, 2]):
        state = np.array(scalar_gru_state(weights, items), np.float32)
        expected = weights.item_embeddings @ state + weights.item_bias
        np.testing.assert_allclose(weights.next_scores(np.array(items)), expected, atol=1e-5)


def test_batched_scores_equal_one_session_at_a_time():
    weights = random_weights(n_items=11, hidden=(5, 4), seed=3)
    rng = np.random.default_rng(1)
    sequences = Sequences.from_lists(rng.integers(0, 11, rng.integers(0, 9)) for _ in range(23))
    seen = []
    for rows, scores in weights.next_scores_batch(sequences, rows_per_block=4):
        assert scores.shape == (len(rows), 11) and scores.dtype == np.float32
        for row, row_scores in zip(rows, scores):
            np.testing.assert_allclose(row_scores, weights.next_scores(sequences[int(row)]), atol=1e-5)
        seen += rows.tolist()
    assert sorted(seen) == list(range(23))


def test_save_and_load_round_trip_memory_mapped(tmp_path):
    weights = random_weights(hidden=(3, 2), embedding=4)
    weights.save(tmp_path / "model")
    loaded = Gru4RecWeights.load(tmp_path / "model")
    assert isinstance(loaded.item_embeddings, np.memmap) and not loaded.item_embeddings.flags.writeable
    assert len(loaded.layers) == 2 and loaded.input_embeddings is not None
    items = np.array([1, 2, 6, 0])
    np.testing.assert_array_equal(loaded.next_scores(items), weights.next_scores(items))
    shared = random_weights()
    shared.save(tmp_path / "shared")
    assert Gru4RecWeights.load(tmp_path / "shared").input_embeddings is None

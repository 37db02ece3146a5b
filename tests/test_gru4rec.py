"""GRU4Rec: the numpy forward pass against hand-computed GRU steps and against torch, the session-parallel batches,
the popularity^α sampler, and training on planted next-item chains (tiny models: seconds each, no Spark)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from recsys.sessions.arrays import Sequences
from recsys.sessions.gru4rec.batching import session_parallel, trainable
from recsys.sessions.gru4rec.params import Gru4RecParams
from recsys.sessions.gru4rec.sampling import NegativeSampler
from recsys.sessions.gru4rec.training import AdagradM, Gru4RecModule, bpr_max, fit, sampled_cross_entropy
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
    sequences = Sequences.from_lists(rng.integers(0, 11, rng.integers(0, 9)) for _ in range(22))
    sequences = Sequences.from_lists([*sequences, rng.integers(0, 11, 70)])       # longer than a time chunk
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


# -- session-parallel batches and negative sampling (numpy) ---------------------------------------------------------

def test_session_parallel_slots_take_the_next_sequence_and_reset():
    sequences = Sequences.from_lists([[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]])
    order = trainable(sequences)
    assert order.tolist() == [0, 1, 3, 4]                   # one item: no target, never in a slot
    steps = [(s.keep.tolist(), s.fresh.tolist(), s.inputs.tolist(), s.targets.tolist())
             for s in session_parallel(sequences, order, batch_size=2)]
    assert steps == [
        ([0, 1], [True, True], [1, 4], [2, 5]),
        ([0, 1], [False, True], [2, 7], [3, 8]),              # slot 1 finished [4, 5]: takes [7, 8, 9, 10]
        ([0, 1], [True, False], [11, 8], [12, 9]),            # slot 0 finished [1, 2, 3]: takes [11, 12]
        ([1], [False], [9], [10]),                            # nothing left for slot 0: the batch shrinks
    ]


def test_a_batch_wider_than_the_data_has_one_slot_per_sequence():
    sequences = Sequences.from_lists([[1, 2], [3, 4, 5]])
    steps = list(session_parallel(sequences, trainable(sequences), batch_size=32))
    assert [(s.keep.tolist(), s.inputs.tolist()) for s in steps] == [([0, 1], [1, 3]), ([1], [4])]
    assert not list(session_parallel(Sequences.from_lists([[1], [2]]), trainable(Sequences.from_lists([[1], [2]])),
                                     batch_size=4))


def test_negatives_are_drawn_in_proportion_to_popularity_to_the_alpha():
    counts = np.array([1, 4, 0, 9, 16, 100])
    sampler = NegativeSampler(counts, n_sample=50, alpha=0.5, rng=np.random.default_rng(7), max_rows=30)
    draws = np.concatenate([sampler.draw() for _ in range(400)])        # 400 rows: the cache refills 13 times
    expected = np.sqrt(counts) / np.sqrt(counts).sum()
    observed = np.bincount(draws, minlength=len(counts)) / len(draws)
    assert observed[2] == 0                                             # never seen: never drawn
    # 20,000 draws: a frequency's standard error is at most 0.0035; 4 of them is a loose, seed-stable bound
    np.testing.assert_allclose(observed, expected, atol=0.014)
    assert abs(observed[5] - expected[5]) < 0.014 and abs(observed[5] - counts[5] / counts.sum()) > 0.2


# -- training (torch) ---------------------------------------------------------------------------------------------

N_ITEMS = 40
FAST = {"layers": [24], "n_sample": 16, "batch_size": 16, "dropout_p_embed": 0.0, "threads": 1}


def planted_chains(n_sequences: int, seed: int) -> Sequences:
    """Sequences of 2-10 items where the next item is the current one + 1 (mod N_ITEMS) 80% of the time, a random
    item otherwise: the next item is predictable from the last one, not from popularity."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(n_sequences):
        items = [int(rng.integers(N_ITEMS))]
        for _ in range(int(rng.integers(1, 10))):
            items.append((items[-1] + 1) % N_ITEMS if rng.random() < 0.8 else int(rng.integers(N_ITEMS)))
        sequences.append(items)
    return Sequences.from_lists(sequences)


def hit_rate_at_5(score, sequences: Sequences) -> float:
    """Share of next items among the top 5 of ``score(prefix)``, over every prefix of every sequence."""
    hits = [sequence[i] in np.argsort(-score(sequence[:i]), kind="stable")[:5]
            for sequence in sequences for i in range(1, len(sequence))]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def chains() -> tuple[Sequences, Sequences]:
    return planted_chains(300, seed=1), planted_chains(100, seed=2)


@pytest.mark.parametrize("loss", ["cross-entropy", "bpr-max"])
def test_the_loss_falls_and_the_model_learns_planted_next_items(chains, loss):
    train, test = chains
    losses = []
    weights = fit(train, N_ITEMS, Gru4RecParams(**FAST, loss=loss, epochs=4),
                  on_epoch=lambda epoch, value: losses.append(value))
    assert len(losses) == 4 and losses == sorted(losses, reverse=True) and losses[-1] < 0.95 * losses[0]
    popularity = np.bincount(train.items, minlength=N_ITEMS).astype(np.float32)
    assert hit_rate_at_5(lambda prefix: popularity, test) < 0.25
    assert hit_rate_at_5(weights.next_scores, test) > 0.7


def test_numpy_forward_equals_torch_forward_on_the_same_weights():
    rng = np.random.default_rng(5)
    for embedding in (0, 6):
        params = Gru4RecParams(layers=[8, 5], embedding=embedding, threads=1)
        model = Gru4RecModule(N_ITEMS, params, np.random.default_rng(3)).eval()
        with torch.no_grad():
            model.bias.weight.uniform_(-1, 1)                   # trained biases are not 0
            for cell in model.cells:
                cell.bias_ih.uniform_(-1, 1)
                cell.bias_hh.uniform_(-1, 1)
        weights = model.weights()
        for length in (1, 7, 150):                                # 150: across time chunks
            items = rng.integers(0, N_ITEMS, length)
            states = model.zero_states(1)
            with torch.no_grad():
                for item in items:
                    hidden = model.step(torch.tensor([item]), states)
                expected = model.scores(hidden)[0].numpy()
            assert np.abs(weights.next_scores(items) - expected).max() <= 1e-5


def test_a_seed_gives_the_same_weights_and_another_seed_others(chains):
    train, _ = chains
    params = Gru4RecParams(**FAST, epochs=2, dropout_p_hidden=0.3)
    first = fit(train, N_ITEMS, params)
    torch.rand(3)                       # the global generator moved on: dropout must not depend on it
    again = fit(train, N_ITEMS, params)
    other = fit(train, N_ITEMS, params.model_copy(update={"seed": 7}))
    np.testing.assert_array_equal(first.item_embeddings, again.item_embeddings)
    np.testing.assert_array_equal(first.layers[0].weight_hh, again.layers[0].weight_hh)
    assert not np.allclose(first.item_embeddings, other.item_embeddings)


def test_the_deadline_stops_training_between_epochs(chains):
    train, _ = chains
    epochs = []
    fit(train, N_ITEMS, Gru4RecParams(**FAST, epochs=5), deadline=time.monotonic(),
        on_epoch=lambda epoch, loss: epochs.append(epoch))
    assert epochs == [1]


def test_the_validation_loss_is_the_full_catalogue_cross_entropy_of_next_items(chains):
    train, _ = chains
    valid = train                       # 300 sequences, more than the parallel slots: slots refill and reset
    reported = []
    weights = fit(train, N_ITEMS, Gru4RecParams(**FAST, epochs=1), valid=valid,
                  on_epoch=lambda epoch, loss: reported.append(loss))
    terms = []
    for sequence in valid:
        for i in range(1, len(sequence)):
            scores = weights.next_scores(sequence[:i]).astype(np.float64)
            terms.append(np.log(np.exp(scores - scores.max()).sum()) + scores.max() - scores[sequence[i]])
    assert reported == [pytest.approx(np.mean(terms), rel=1e-4)]


def test_adagrad_with_momentum_updates_only_the_rows_a_sparse_gradient_touched():
    table = torch.nn.Embedding(4, 2, sparse=True)
    with torch.no_grad():
        table.weight.fill_(1.0)
    optimizer = AdagradM(table.parameters(), lr=0.1, momentum=0.5, eps=0.0)
    for _ in range(2):
        table.zero_grad(set_to_none=True)
        (3 * table(torch.tensor([1, 1])).sum()).backward()          # row 1, gradient 6 per coordinate
        optimizer.step()
    # step 1: a = 36, v = −0.1·6/6 = −0.1; step 2: a = 72, v = 0.5·(−0.1) − 0.1·6/√72
    second = 0.5 * -0.1 - 0.1 * 6 / math.sqrt(72)
    np.testing.assert_allclose(table.weight.detach().numpy()[1], [1 - 0.1 + second] * 2, rtol=1e-6)
    np.testing.assert_array_equal(table.weight.detach().numpy()[[0, 2, 3]], 1.0)


def test_bpr_max_weighs_the_negatives_by_their_softmax():
    scores = torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.5, -1.0]])
    weights = np.exp([[1.0, 0.0], [0.5, -1.0]])
    weights /= weights.sum(axis=1, keepdims=True)
    sigmoid = 1 / (1 + np.exp(-np.array([[2.0 - 1.0, 2.0 - 0.0], [1.5 - 0.5, 1.5 + 1.0]])))
    squares = np.array([[1.0, 0.0], [0.25, 1.0]])
    expected = (-np.log((weights * sigmoid).sum(axis=1)) + 0.5 * (weights * squares).sum(axis=1)).sum()
    assert bpr_max(scores, bpreg=0.5, elu_alpha=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_log_q_correction_lowers_each_score_by_the_log_of_its_sampling_probability():
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    log_q = torch.log(torch.tensor([1.0, 4.0, 2.0]))
    # row 0: logits 1, −log 4, −log 2 → p(target) = e / (e + ¼ + ½); row 1: 0, 2 − log 4, −log 2 → e²/4 / (1 + e²/4 + ½)
    expected = -math.log(math.e / (math.e + 0.75)) - math.log((math.e ** 2 / 4) / (1.5 + math.e ** 2 / 4))
    assert sampled_cross_entropy(scores, log_q, logq=1.0).item() == pytest.approx(expected, rel=1e-6)
    plain = -math.log(math.e / (math.e + 2)) - math.log(math.e ** 2 / (2 + math.e ** 2))
    assert sampled_cross_entropy(scores, log_q, logq=0.0).item() == pytest.approx(plain, rel=1e-6)


# -- data-parallel replicas (recsys.sessions.gru4rec.distributed) over gloo, in two spawned processes ---------------


def _replica_process(rank: int, port: int, train: Sequences, params: Gru4RecParams, out) -> None:
    import os

    from recsys.sessions.gru4rec.distributed import replica

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    weights = replica(train, N_ITEMS, params)
    if rank == 0:
        out.put(weights)


def two_replicas(train: Sequences, params: Gru4RecParams) -> Gru4RecWeights:
    """Rank 0's weights after :func:`replica` ran in two processes (as torchrun starts them under TorchDistributor;
    each replica checks that both ended with the same weights, or fails)."""
    from multiprocessing import get_context

    from netutil import free_port

    context = get_context("spawn")
    out = context.Queue()
    port = free_port()
    processes = [context.Process(target=_replica_process, args=(rank, port, train, params, out)) for rank in (0, 1)]
    for process in processes:
        process.start()
    weights = out.get(timeout=120)
    for process in processes:
        process.join(timeout=60)
    assert [process.exitcode for process in processes] == [0, 0]
    return weights


def test_a_replica_without_sequences_takes_the_others_steps_so_the_weights_are_one_process_weights():
    # one trainable sequence: replica 1's part of every epoch is empty; without negatives or dropout (each replica
    # draws its own) the averaged gradients are replica 0's, so the weights are exactly one process's
    train = Sequences.from_lists([list(range(30)), [3], [7]])
    params = Gru4RecParams(**{**FAST, "n_sample": 0}, epochs=3, momentum=0.3)
    alone, together = fit(train, N_ITEMS, params), two_replicas(train, params)
    np.testing.assert_array_equal(together.item_embeddings, alone.item_embeddings)
    np.testing.assert_array_equal(together.layers[0].weight_hh, alone.layers[0].weight_hh)


def test_two_replicas_learn_planted_next_items(chains):
    train, test = chains
    weights = two_replicas(train, Gru4RecParams(**FAST, epochs=4, dropout_p_hidden=0.1))
    assert hit_rate_at_5(weights.next_scores, test) > 0.7

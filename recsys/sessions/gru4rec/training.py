"""Training GRU4Rec with PyTorch on CPU, with what the official implementation does and third-party ones usually miss
(Hidasi & Czapp, RecSys 2023): session-parallel mini-batches; scores computed only for the batch's targets (each
other's negatives) plus ``n_sample`` shared items drawn ∝ popularity^α; cross-entropy over that sampled softmax with
logQ correction, or BPR-max with its score regulariser; dropout on the input embedding and on each layer's output;
Adagrad with momentum, updating only the embedding rows a batch touched; uniform ±sqrt(6 / (fan_in + fan_out))
initialisation per gate.

The only module of the package that imports torch; what it returns is plain numpy (:class:`Gru4RecWeights`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from recsys.sessions.arrays import Sequences
from recsys.sessions.gru4rec.batching import session_parallel, trainable
from recsys.sessions.gru4rec.params import Gru4RecParams
from recsys.sessions.gru4rec.sampling import NegativeSampler
from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer

EpochHook = Callable[[int, float], None]
VALID_SLOTS = 128                    # parallel sequences when scoring the validation set against every item


class Replicas(Protocol):
    """Data-parallel training (``recsys.sessions.gru4rec.distributed``): this process is replica ``rank`` of
    ``world``; each mini-batch's gradients are averaged over the replicas, so their weights stay equal."""

    rank: int
    world: int

    def average_gradients(self, model: Gru4RecModule, active: bool) -> bool:
        """Replace each gradient by the mean over the replicas still in the epoch (``active``: this one computed
        a mini-batch); False once none is."""

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the replicas."""


def fit(train: Sequences, n_items: int, params: Gru4RecParams, *, valid: Sequences | None = None,
        deadline: float | None = None, on_epoch: EpochHook | None = None,
        replicas: Replicas | None = None) -> Gru4RecWeights:
    """GRU4Rec trained on every (item, next item) pair of ``train`` (item indices below ``n_items``).

    After each epoch ``on_epoch(epoch, loss)`` (epoch counted from 1; it may raise to stop, e.g. a pruned trial):
    ``loss`` is, with ``valid``, the mean full-catalogue cross-entropy of each next item of ``valid`` (comparable
    across losses and sampling settings), otherwise the epoch's mean training loss. Training stops after the epoch
    that ends past ``deadline`` (a ``time.monotonic()`` value), so at least one epoch runs. The same ``params.seed``,
    data and thread count give the same weights.

    With ``replicas`` every replica calls this with the same arguments: each epoch's permutation of the sequences
    is dealt out among them, each draws its own negatives and dropout, the gradients are averaged every mini-batch.
    """
    rows = trainable(train)
    if not len(rows):
        raise ValueError("no sequence of two items or more to train GRU4Rec on")
    if train.items.min() < 0 or train.items.max() >= n_items:
        raise ValueError(f"item indices must lie in [0, {n_items}): got {train.items.min()}..{train.items.max()}")
    in_rows = np.repeat(train.lengths >= 2, train.lengths)
    counts = np.bincount(train.items[in_rows], minlength=n_items).astype(np.float64)
    rng = np.random.default_rng(params.seed)
    # a replica's own stream for its negatives and dropout; the weights' start and the permutations are shared
    own_rng = rng if replicas is None else np.random.default_rng([params.seed, replicas.rank])
    threads = torch.get_num_threads()
    torch.set_num_threads(params.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed + (replicas.rank if replicas else 0))
            model = Gru4RecModule(n_items, params, rng)
            optimizer = AdagradM(model.parameters(), params.learning_rate, params.momentum)
            sampler = NegativeSampler(counts, params.n_sample, params.sample_alpha, own_rng,
                                      max_rows=int((train.lengths[rows] - 1).sum()))
            log_counts = torch.from_numpy(np.log(np.maximum(counts, 1))).float()
            for epoch in range(1, params.epochs + 1):
                order = rng.permutation(rows)
                if replicas is not None:
                    order = order[replicas.rank::replicas.world]
                loss = _train_epoch(model, optimizer, sampler, log_counts, train, order, params, replicas)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"GRU4Rec diverged at epoch {epoch} (loss {loss}): lower learning_rate")
                if valid is not None:
                    loss = validation_loss(model, valid)
                if on_epoch is not None:
                    on_epoch(epoch, loss)
                if _past(deadline, replicas):
                    break
            return model.weights()
    finally:
        torch.set_num_threads(threads)


class Gru4RecModule(nn.Module):
    """The network: item embeddings (shared between input and output unless ``params.embedding``), GRU layers,
    per-item output biases. Embedding tables are sparse: a batch's gradient holds only the rows it touched."""

    def __init__(self, n_items: int, params: Gru4RecParams, rng: np.random.Generator) -> None:
        super().__init__()
        hidden = params.layers
        self.output = nn.Embedding(n_items, hidden[-1], sparse=True)
        self.bias = nn.Embedding(n_items, 1, sparse=True)
        self.input = nn.Embedding(n_items, params.embedding, sparse=True) if params.embedding else None
        sizes = [params.embedding or hidden[-1], *hidden]
        self.cells = nn.ModuleList(nn.GRUCell(fan_in, size) for fan_in, size in zip(sizes, hidden))
        self.drop_embed = nn.Dropout(params.dropout_p_embed)
        self.drop_hidden = nn.Dropout(params.dropout_p_hidden)
        with torch.no_grad():
            self.output.weight.copy_(_uniform(rng, n_items, hidden[-1]))
            self.bias.weight.zero_()
            if self.input is not None:
                self.input.weight.copy_(_uniform(rng, n_items, params.embedding))
            for cell, fan_in, size in zip(self.cells, sizes, hidden):
                cell.weight_ih.copy_(torch.cat([_uniform(rng, size, fan_in) for _ in range(3)]))
                cell.weight_hh.copy_(torch.cat([_uniform(rng, size, size) for _ in range(3)]))
                cell.bias_ih.zero_()
                cell.bias_hh.zero_()

    def embeddings(self) -> list[nn.Parameter]:
        """The parameters whose gradients are sparse (a batch's rows only): the item tables."""
        return [table.weight for table in (self.output, self.bias, self.input) if table is not None]

    def zero_states(self, rows: int) -> list[torch.Tensor]:
        return [torch.zeros(rows, cell.hidden_size) for cell in self.cells]

    def step(self, inputs: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        """The last layer's output after ``inputs`` (int64[m]); ``states`` (one per layer) are replaced by the new
        ones, after dropout (as the official implementation carries them)."""
        return self._layers(self.drop_embed((self.output if self.input is None else self.input)(inputs)), states)

    def sampled_scores(self, inputs: torch.Tensor, states: list[torch.Tensor],
                       candidates: torch.Tensor) -> torch.Tensor:
        """float[m, len(candidates)] after a step from ``inputs``: shared embeddings are looked up once for inputs
        and candidates (one sparse gradient, not two to add)."""
        if self.input is None:
            both = self.output(torch.cat([inputs, candidates]))
            embedded, outputs = both[:len(inputs)], both[len(inputs):]
        else:
            embedded, outputs = self.input(inputs), self.output(candidates)
        hidden = self._layers(self.drop_embed(embedded), states)
        return torch.addmm(self.bias(candidates).T, hidden, outputs.T)

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """float[m, n_items]: every item's score after ``hidden``."""
        return torch.addmm(self.bias.weight.T, hidden, self.output.weight.T)

    def _layers(self, x: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        for i, cell in enumerate(self.cells):
            x = self.drop_hidden(cell(x, states[i]))
            states[i] = x
        return x

    def weights(self) -> Gru4RecWeights:
        def array(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().numpy().astype(np.float32, copy=True)

        layers = tuple(GruLayer(array(c.weight_ih), array(c.weight_hh), array(c.bias_ih), array(c.bias_hh))
                       for c in self.cells)
        return Gru4RecWeights(array(self.output.weight), array(self.bias.weight)[:, 0], layers,
                              None if self.input is None else array(self.input.weight))


def _past(deadline: float | None, replicas: Replicas | None) -> bool:
    """Whether training stops here: every replica must take the same decision, so any one past it stops all."""
    past = deadline is not None and time.monotonic() >= deadline
    return past if replicas is None else replicas.sum([float(past)])[0] > 0


def _uniform(rng: np.random.Generator, rows: int, columns: int) -> torch.Tensor:
    limit = math.sqrt(6.0 / (rows + columns))
    return torch.from_numpy(rng.uniform(-limit, limit, (rows, columns)).astype(np.float32))


def _train_epoch(model: Gru4RecModule, optimizer: AdagradM, sampler: NegativeSampler, log_counts: torch.Tensor,
                 train: Sequences, order: np.ndarray, params: Gru4RecParams,
                 replicas: Replicas | None = None) -> float:
    """One pass over ``order``; the mean loss per target (over every replica's targets)."""
    model.train()
    states = model.zero_states(min(params.batch_size, len(order)))
    total, targets_seen = 0.0, 0
    for step in session_parallel(train, order, params.batch_size):
        states = _carried(states, step.keep, step.fresh)
        targets = torch.from_numpy(step.targets)
        if params.n_sample:
            negatives = torch.from_numpy(sampler.draw())
            candidates = torch.cat([targets, negatives])
        else:
            negatives, candidates = None, targets
        scores = model.sampled_scores(torch.from_numpy(step.inputs), states, candidates)
        if params.loss == "cross-entropy":
            loss = sampled_cross_entropy(scores, _log_q(log_counts, targets, negatives, params), params.logq)
        else:
            loss = bpr_max(scores, params.bpreg, params.elu_alpha)
        model.zero_grad(set_to_none=True)
        (loss / params.batch_size).backward()
        if replicas is not None:
            replicas.average_gradients(model, active=True)
        optimizer.step()
        total += loss.item()
        targets_seen += len(targets)
    if replicas is not None:
        _follow_the_others(model, optimizer, replicas)
        total, targets_seen = replicas.sum([total, float(targets_seen)])
    return total / targets_seen


def _follow_the_others(model: Gru4RecModule, optimizer: AdagradM, replicas: Replicas) -> None:
    """Take the other replicas' averaged steps until the last one's part of the epoch ends: every replica applies
    every step, so the weights stay equal."""
    while True:
        model.zero_grad(set_to_none=True)
        if not replicas.average_gradients(model, active=False):
            return
        optimizer.step()


def _carried(states: list[torch.Tensor], keep: np.ndarray, fresh: np.ndarray) -> list[torch.Tensor]:
    """The states of the slots that go on, detached (no backpropagation across mini-batches), new sequences at 0."""
    keep_rows, fresh_rows = torch.from_numpy(keep), torch.from_numpy(fresh)
    carried = []
    for state in states:
        state = state.detach()[keep_rows]
        state[fresh_rows] = 0.0
        carried.append(state)
    return carried


def _log_q(log_counts: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor | None,
           params: Gru4RecParams) -> torch.Tensor:
    """log of each candidate's (unnormalised) sampling probability: a batch's targets come ∝ popularity, the extra
    negatives ∝ popularity^α."""
    if negatives is None:
        return log_counts[targets]
    return torch.cat([log_counts[targets], params.sample_alpha * log_counts[negatives]])


def sampled_cross_entropy(scores: torch.Tensor, log_q: torch.Tensor, logq: float) -> torch.Tensor:
    """Σ over rows of −log softmax(row)[target]: row i's target is column i, every other column a negative. With
    logQ correction the scores are lowered by ``logq`` · log q(item), so popular items, sampled more often as
    negatives, are not pushed down for it."""
    if logq:
        scores = scores - logq * log_q
    return -torch.log_softmax(scores, dim=1).diagonal().sum()


def bpr_max(scores: torch.Tensor, bpreg: float, elu_alpha: float) -> torch.Tensor:
    """BPR-max (Hidasi & Karatzoglou, 2018) summed over rows: −log Σ_j s_j σ(r_target − r_j) + bpreg · Σ_j s_j r_j²,
    s the softmax over the row's negatives j (column i, the target, excluded)."""
    if elu_alpha:
        scores = functional.elu(scores, elu_alpha)
    rows = scores.shape[0]
    target_mask = torch.zeros_like(scores, dtype=torch.bool)
    target_mask[torch.arange(rows), torch.arange(rows)] = True
    weights = torch.softmax(scores.masked_fill(target_mask, -math.inf), dim=1)
    target = scores.diagonal()[:, None]
    ranking = -torch.log((weights * torch.sigmoid(target - scores)).sum(dim=1) + 1e-24)
    return (ranking + bpreg * (weights * scores ** 2).sum(dim=1)).sum()


@torch.no_grad()
def validation_loss(model: Gru4RecModule, valid: Sequences) -> float:
    """The mean −log softmax over every item of each next item of ``valid`` (dropout off)."""
    model.eval()
    rows = trainable(valid)
    states = model.zero_states(min(VALID_SLOTS, len(rows)))
    total, targets_seen = 0.0, 0
    for step in session_parallel(valid, rows, VALID_SLOTS):
        states = _carried(states, step.keep, step.fresh)
        log_probabilities = torch.log_softmax(model.scores(model.step(torch.from_numpy(step.inputs), states)), dim=1)
        total -= log_probabilities.gather(1, torch.from_numpy(step.targets)[:, None]).sum().item()
        targets_seen += len(step.targets)
    return total / max(targets_seen, 1)


class AdagradM(torch.optim.Optimizer):
    """Adagrad with momentum, the official GRU4Rec's optimizer (torch has none): per coordinate, a ← a + g²,
    v ← μ·v − lr · g / sqrt(a + ε), w ← w + v. A sparse gradient updates only its rows (their a and v included), so
    a batch costs its rows, not the catalogue."""

    def __init__(self, params, lr: float, momentum: float, eps: float = 1e-6) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                state = self.state[weight]
                if not state:
                    state["sum"] = torch.zeros_like(weight)
                    if momentum:
                        state["velocity"] = torch.zeros_like(weight)
                grad = weight.grad
                if grad.is_sparse:
                    grad = grad.coalesce()                 # repeated rows summed: the update is not linear
                    rows, values = grad.indices()[0], grad.values()
                    squares = state["sum"].index_select(0, rows).addcmul_(values, values)
                    state["sum"].index_copy_(0, rows, squares)      # index_select/_copy: 4× faster than [rows]
                    change = values.div(squares.add_(eps).sqrt_()).mul_(-lr)
                    if momentum:
                        change.add_(state["velocity"].index_select(0, rows), alpha=momentum)
                        state["velocity"].index_copy_(0, rows, change)
                    weight.index_add_(0, rows, change)
                else:
                    state["sum"].addcmul_(grad, grad)
                    change = grad.div(state["sum"].add(eps).sqrt_()).mul_(-lr)
                    if momentum:
                        change.add_(state["velocity"], alpha=momentum)
                        state["velocity"].copy_(change)
                    weight.add_(change)

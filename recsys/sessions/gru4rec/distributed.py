"""GRU4Rec trained data-parallel on the Spark cluster: ``pyspark.ml.torch.distributor.TorchDistributor`` starts one
torch process per Spark task (a barrier stage, so all of them or none), and :func:`training.fit` runs in each as a
replica over gloo — the epoch's sequences dealt out among the replicas, every mini-batch's gradients averaged
(the item tables' sparse gradients as sparse tensors: a batch moves its rows, not the catalogue).

Why gradients every mini-batch rather than weights every epoch: the replicas then train one model, as one process
would with a batch N times wider, so the parameters model selection chose (in one process) still apply.

The sequences travel inside the pickled task (numpy arrays: ~25 MB at Appliances size); the weights come back from
replica 0, after every replica checked that their weights agree.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.distributed as dist

from recsys.sessions.arrays import Sequences
from recsys.sessions.gru4rec.params import Gru4RecParams
from recsys.sessions.gru4rec.training import Gru4RecModule, fit
from recsys.sessions.gru4rec.weights import Gru4RecWeights

log = logging.getLogger(__name__)


def replica_count(wanted: int, task_slots: int) -> int:
    """How many replicas train: ``wanted``, at most the cluster's ``task_slots`` (``recsys.spark.task_slots``: a
    barrier stage wider than them never starts)."""
    return max(1, min(wanted, task_slots))


def fit_distributed(train: Sequences, n_items: int, params: Gru4RecParams, replicas: int) -> Gru4RecWeights:
    """:func:`training.fit` in ``replicas`` tasks of the active Spark session's cluster at once
    (:func:`replica_count`); one trains in this process, no Spark job."""
    if replicas == 1:
        return fit(train, n_items, params)
    from pyspark.ml.torch.distributor import TorchDistributor

    log.info("gru4rec: training in %d Spark tasks with TorchDistributor", replicas)
    return TorchDistributor(num_processes=replicas, local_mode=False, use_gpu=False).run(replica, train, n_items,
                                                                                          params)


def replica(train: Sequences, n_items: int, params: Gru4RecParams) -> Gru4RecWeights | None:
    """One torch process of the job (torchrun sets its rank and the rendezvous): the weights on rank 0."""
    dist.init_process_group("gloo")
    try:
        weights = fit(train, n_items, params, replicas=GlooReplicas())
        _check_equal(weights)
        return weights if dist.get_rank() == 0 else None
    finally:
        dist.destroy_process_group()


class GlooReplicas:
    """:class:`training.Replicas` over the default process group."""

    def __init__(self) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def average_gradients(self, model: Gru4RecModule, active: bool) -> bool:
        tables = {id(weight) for weight in model.embeddings()}
        dense = [weight for weight in model.parameters() if id(weight) not in tables]
        flat = torch.cat([(w.grad if w.grad is not None else torch.zeros_like(w)).reshape(-1) for w in dense]
                         + [torch.tensor([float(active)])])
        dist.all_reduce(flat)
        active_replicas = flat[-1].item()
        if not active_replicas:
            return False
        flat /= active_replicas
        start = 0
        for weight in dense:
            weight.grad = flat[start:start + weight.numel()].view_as(weight).clone()
            start += weight.numel()
        for weight in model.embeddings():
            grad = weight.grad.coalesce() if weight.grad is not None else _no_rows(weight)
            dist.all_reduce(grad)
            weight.grad = grad / active_replicas
        return True

    def sum(self, values: list[float]) -> list[float]:
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed)
        return summed.tolist()


def _no_rows(weight: torch.Tensor) -> torch.Tensor:
    """An empty sparse gradient of ``weight``'s shape: an idle replica's part of the sum."""
    return torch.sparse_coo_tensor(torch.zeros((1, 0), dtype=torch.int64), torch.zeros((0, *weight.shape[1:])),
                                   weight.shape, check_invariants=True).coalesce()


def _check_equal(weights: Gru4RecWeights) -> None:
    """Raise unless every replica ended with the same weights (their fingerprints: a sum per array)."""
    arrays = [weights.item_embeddings, weights.item_bias, weights.input_embeddings]
    for layer in weights.layers:
        arrays += [layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh]
    sums = [float(np.sum(array, dtype=np.float64)) for array in arrays if array is not None]
    fingerprint = torch.tensor(sums, dtype=torch.float64)
    lowest, highest = fingerprint.clone(), fingerprint.clone()
    dist.all_reduce(lowest, dist.ReduceOp.MIN)
    dist.all_reduce(highest, dist.ReduceOp.MAX)
    if not torch.equal(lowest, highest):
        raise RuntimeError("GRU4Rec replicas ended with different weights: the gradient averaging is broken")


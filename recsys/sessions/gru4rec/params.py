"""GRU4Rec's hyper-parameters (``train.params.gru4rec``), named as in the official implementation.

Kept free of torch, numpy and ``recsys.models``: ``recsys.models.params`` (and through it ``recsys.config``)
imports this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from recsys.strict import StrictModel


class Gru4RecParams(StrictModel):
    """One GRU4Rec.

    ``layers``: hidden units per GRU layer. ``embedding``: 0 (the default) shares the item embeddings between input
    and output — the official "constrained embedding", its default since 2023: the input of the first layer is the
    output embedding of the item (size ``layers[-1]``), which halves the parameters, needs no second n_items-row
    table and was its best setting on most public data sets; > 0 is a separate input table of that size.

    ``loss``: ``cross-entropy`` over a sampled softmax (the batch's targets are each other's negatives, plus
    ``n_sample`` items drawn ∝ popularity^``sample_alpha``), its scores corrected by ``logq`` · log(sampling
    probability) (0 = off, 1 = full logQ correction), or ``bpr-max`` over the same negatives with the score
    regulariser ``bpreg`` and ``elu_alpha`` > 0 applying ELU(α) to the scores first (the official trick; 0 = off).
    Training: Adagrad with ``momentum`` at ``learning_rate`` on mini-batches of ``batch_size`` parallel sessions,
    dropout ``dropout_p_embed`` on the input embedding and ``dropout_p_hidden`` on each layer's output, ``epochs``
    passes (fewer when the deadline falls first), ``threads`` torch threads (one by default: a mini-batch is a few
    small products, and two threads made it 4× slower on a busy 2-core box); ``seed`` makes a fit repeatable.

    The defaults: one layer of 128 units, cross-entropy with full logQ, batch 32, embedding dropout 0.2, learning
    rate 0.05, 10 epochs (the official implementation's best on MovieLens-100K), and 2048 extra samples at α 0.75,
    which beat its 256 on a validation split of MovieLens latest-small (``benchmarks/bench_gru4rec.py --validation``:
    HR@20 0.234 against 0.210, and 0.157–0.216 for 20 epochs, learning rate 0.1, hidden dropout 0.2, momentum 0.5
    or batch 64); a wider search is model selection's job.
    """

    layers: list[int] = Field(default_factory=lambda: [128])
    embedding: int = Field(0, ge=0)
    loss: Literal["cross-entropy", "bpr-max"] = "cross-entropy"
    logq: float = Field(1.0, ge=0, le=1)
    n_sample: int = Field(2048, ge=0)
    sample_alpha: float = Field(0.75, ge=0, le=1)
    batch_size: int = Field(32, ge=1)
    dropout_p_embed: float = Field(0.2, ge=0, lt=1)
    dropout_p_hidden: float = Field(0.0, ge=0, lt=1)
    learning_rate: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    bpreg: float = Field(1.0, ge=0)
    elu_alpha: float = Field(0.5, ge=0)
    epochs: int = Field(10, ge=1)
    threads: int = Field(1, ge=1)
    seed: int = 42

    @field_validator("layers")
    @classmethod
    def _positive_layers(cls, value: list[int]) -> list[int]:
        if not value or any(size < 1 for size in value):
            raise ValueError("layers: one or more hidden sizes, each at least 1")
        return value

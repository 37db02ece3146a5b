"""Session-parallel mini-batches (Hidasi et al., 2016): B slots each read one sequence, one step at a time.

Why not padded sequences: every step of every slot is a real (input, target) pair, so no compute is spent on
padding, and the hidden state flows through a whole sequence however long it is (no truncated history). A slot whose
sequence ends takes the next sequence and its state is reset to 0; when no sequence is left, finished slots drop out
and the batch shrinks. A sequence of one item has no target and never enters a slot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from recsys.sessions.arrays import Sequences


@dataclass(frozen=True)
class Step:
    """One mini-batch. Before it, the hidden state ``H`` becomes ``H[keep]`` with the ``fresh`` rows zeroed."""

    keep: np.ndarray         # int64[m]: the previous step's slots that go on (in this order); first step: arange(m)
    fresh: np.ndarray        # bool[m]: slots that start a sequence here
    inputs: np.ndarray       # int64[m]: each slot's current item
    targets: np.ndarray      # int64[m]: the item that follows it


def trainable(sequences: Sequences) -> np.ndarray:
    """The rows of ``sequences`` with at least one (input, target) pair (two items or more)."""
    return np.flatnonzero(sequences.lengths >= 2)


def session_parallel(sequences: Sequences, order: np.ndarray, batch_size: int) -> Iterator[Step]:
    """The steps over the sequences ``order`` (rows of ``sequences``, each of two items or more), taken by the slots
    in that order."""
    starts, ends = sequences.offsets[order], sequences.offsets[order + 1]
    slots = min(batch_size, len(order))
    position, end = starts[:slots].copy(), ends[:slots].copy()
    taken = slots
    keep, fresh = np.arange(slots), np.ones(slots, bool)
    while len(position):
        yield Step(keep, fresh, sequences.items[position].astype(np.int64),
                   sequences.items[position + 1].astype(np.int64))
        position = position + 1
        done = np.flatnonzero(position + 1 >= end)          # no target left in the slot's sequence
        refill = done[:len(order) - taken]
        position[refill], end[refill] = starts[taken:taken + len(refill)], ends[taken:taken + len(refill)]
        taken += len(refill)
        fresh = np.zeros(len(position), bool)
        fresh[refill] = True
        keep = np.delete(np.arange(len(position)), done[len(refill):])
        position, end, fresh = position[keep], end[keep], fresh[keep]

"""Many item sequences in two flat arrays (CSR), the one shape every session model reads and writes.

Why CSR and not a list of arrays: 1.8M sequences as Python objects cost ~100 bytes each before any item; two numpy
arrays are compact, slice in O(1), save with ``np.save`` and cross to and from Arrow without a copy per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sequences:
    """``items[offsets[i]:offsets[i + 1]]`` is sequence i, oldest item first; items are dense item indices."""

    offsets: np.ndarray      # int64[n + 1], offsets[0] == 0, non-decreasing
    items: np.ndarray        # int32[offsets[-1]]

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("offsets must be a 1-d array starting at 0")
        if np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != len(self.items):
            raise ValueError("offsets must be non-decreasing and end at len(items)")

    @classmethod
    def from_lists(cls, sequences: Iterable[Iterable[int]]) -> Sequences:
        arrays = [np.asarray(list(s), dtype=np.int32) for s in sequences]
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        items = np.concatenate(arrays).astype(np.int32) if arrays else np.zeros(0, np.int32)
        return cls(offsets, items)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i]:self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def select(self, rows: np.ndarray) -> Sequences:
        """The sequences at ``rows``, in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        starts = np.repeat(self.offsets[rows] - offsets[:-1], lengths)
        return Sequences(offsets, self.items[starts + np.arange(offsets[-1])].astype(np.int32))

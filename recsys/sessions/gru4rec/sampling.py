"""The extra negatives of a mini-batch: ``n_sample`` items drawn with probability ∝ popularity^α.

Drawn ahead in one block (the official implementation's sample cache, 10M items): a binary search per draw over the
cumulative distribution is cheap vectorised over millions, costly called once per mini-batch.
"""

from __future__ import annotations

import numpy as np

CACHE_ITEMS = 10_000_000             # draws held at once


class NegativeSampler:
    """Rows of ``n_sample`` items ∝ ``counts``^``alpha``, from ``rng``; ``max_rows`` bounds a block (a fit needs at
    most one row per mini-batch of an epoch)."""

    def __init__(self, counts: np.ndarray, n_sample: int, alpha: float, rng: np.random.Generator,
                 max_rows: int | None = None) -> None:
        weights = np.asarray(counts, np.float64) ** alpha
        self.cumulative = np.cumsum(weights) / weights.sum()
        self.n_sample, self.rng = n_sample, rng
        self.rows = max(1, min(CACHE_ITEMS // max(n_sample, 1), max_rows or CACHE_ITEMS))
        self.block = np.zeros((0, n_sample), np.int64)
        self.next_row = 0

    def draw(self) -> np.ndarray:
        """int64[n_sample]: the next row of negatives."""
        if self.next_row >= len(self.block):
            uniform = self.rng.random(self.rows * self.n_sample)
            drawn = np.searchsorted(self.cumulative, uniform, side="right")
            self.block = np.minimum(drawn, len(self.cumulative) - 1).reshape(self.rows, self.n_sample)
            self.next_row = 0
        self.next_row += 1
        return self.block[self.next_row - 1]

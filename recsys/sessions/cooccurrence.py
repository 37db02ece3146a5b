"""Last-items co-occurrence: item-kNN on sequences, the session baseline GRU4Rec is measured against.

Counts: for every sequence and every pair of positions p < q with q - p ≤ ``window``, item s[q] *follows* item
s[p] with weight 1 / (q - p); ``backward`` adds the reverse direction at that share (0: strictly "what comes next").
A row is normalised against popularity so the rows of popular items do not drown every session:
``cosine`` C[i, j] / √(n_i · n_j), or ``conditional`` C[i, j] / (n_i · n_j^alpha) — P(j follows i) damped by j's
popularity (alpha 0: the plain conditional probability). n_i counts i's occurrences. Each row keeps its
``neighbours`` best entries, so the matrix stays sparse at Appliances size (94K items).

A session's scores are Σ over its last ``last_items`` items (the latest first) of decay^l · row(item), items without
evidence ranked below by popularity; the same ``next_scores`` / ``next_scores_batch`` interface as the GRU4Rec
weights, so either serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from recsys.sessions.arrays import Sequences
from recsys.sessions.settings import CooccurrenceParams


@dataclass
class CooccurrenceScorer:
    """``matrix[i, j]``: how strongly j follows i (normalised, pruned); ``popularity``: occurrences in training."""

    matrix: sp.csr_matrix        # float32 [n_items, n_items]
    popularity: np.ndarray       # float32 [n_items]
    last_items: int
    decay: float

    @property
    def n_items(self) -> int:
        return self.matrix.shape[0]

    def next_scores(self, items: np.ndarray) -> np.ndarray:
        """float32[n_items]: the scores of every item as the next one after ``items`` (oldest first)."""
        return next(self.next_scores_batch(Sequences.from_lists([items])))[1][0]

    def next_scores_batch(self, sequences: Sequences, rows_per_block: int = 64) -> Iterator[tuple[np.ndarray,
                                                                                                   np.ndarray]]:
        """(rows, float32[len(rows), n_items]) per block of ``rows_per_block`` sequences, in order."""
        for start in range(0, len(sequences), rows_per_block):
            rows = np.arange(start, min(start + rows_per_block, len(sequences)))
            scores = (self.query(sequences, rows) @ self.matrix).toarray().astype(np.float32, copy=False)
            yield rows, np.where(scores > 0, scores, self.fallback)

    @cached_property
    def fallback(self) -> np.ndarray:
        """The score of an item the session gives no evidence for, in [-1, 0): popularity order, below every item
        with evidence (so a list is topped up by the popular items, not by item index)."""
        return (self.popularity / (self.popularity.max(initial=0) + 1) - 1).astype(np.float32)

    def query(self, sequences: Sequences, rows: np.ndarray) -> sp.csr_matrix:
        """[len(rows), n_items]: decay^l on each of a sequence's last items (l = 0 for the latest)."""
        ends = sequences.offsets[rows + 1]
        taken = np.minimum(ends - sequences.offsets[rows], self.last_items)
        block = np.repeat(np.arange(len(rows)), taken)
        back = np.arange(int(taken.sum())) - np.repeat(np.cumsum(taken) - taken, taken)   # 0 = latest
        items = sequences.items[np.repeat(ends, taken) - 1 - back]
        weights = (self.decay ** back).astype(np.float32)
        return sp.csr_matrix((weights, (block, items)), shape=(len(rows), self.n_items))


def fit(sequences: Sequences, n_items: int, params: CooccurrenceParams) -> CooccurrenceScorer:
    counts = follow_counts(sequences, n_items, params.window, params.backward)
    occurrences = np.bincount(sequences.items, minlength=n_items).astype(np.float64)
    matrix = prune_rows(normalise(counts, occurrences, params.normalise, params.alpha), params.neighbours)
    return CooccurrenceScorer(matrix.astype(np.float32), occurrences.astype(np.float32), params.last_items,
                              params.decay)


def follow_counts(sequences: Sequences, n_items: int, window: int, backward: float = 0.0) -> sp.csr_matrix:
    """C[i, j] = Σ 1 / distance over the times j comes at most ``window`` steps after i (i ≠ j), plus
    ``backward`` times the same with the roles swapped."""
    owner = np.repeat(np.arange(len(sequences)), sequences.lengths)
    items = sequences.items
    rows, cols, values = [], [], []
    for distance in range(1, window + 1):
        same = owner[:-distance] == owner[distance:] if len(items) > distance else np.zeros(0, bool)
        before, after = items[:-distance][same], items[distance:][same]
        keep = before != after
        rows.append(before[keep])
        cols.append(after[keep])
        values.append(np.full(int(keep.sum()), 1.0 / distance))
    i, j, v = (np.concatenate(parts) if parts else np.zeros(0) for parts in (rows, cols, values))
    forward = sp.csr_matrix((v, (i, j)), shape=(n_items, n_items), dtype=np.float64)
    forward.sum_duplicates()
    return forward + backward * forward.T.tocsr() if backward else forward


def normalise(counts: sp.csr_matrix, occurrences: np.ndarray, how: str, alpha: float) -> sp.csr_matrix:
    """Counts against popularity (module docstring); ``occurrences`` of every item (> 0 wherever a count is)."""
    coo = counts.tocoo()
    n_i, n_j = occurrences[coo.row], occurrences[coo.col]
    if how == "cosine":
        values = coo.data / np.sqrt(n_i * n_j)
    elif how == "conditional":
        values = coo.data / (n_i * n_j ** alpha)
    else:
        raise ValueError(f"unknown normalisation {how!r}")
    return sp.csr_matrix((values, (coo.row, coo.col)), shape=counts.shape)


def prune_rows(matrix: sp.csr_matrix, keep: int) -> sp.csr_matrix:
    """Each row's ``keep`` largest entries (ties: the lower column index)."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    row = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((matrix.indices, -matrix.data, row))
    rank = np.arange(len(order)) - matrix.indptr[row[order]]
    chosen = order[rank < keep]
    return sp.csr_matrix((matrix.data[chosen], (row[chosen], matrix.indices[chosen])), shape=matrix.shape)

"""Diversity re-rank of a candidate list: greedy MAP inference of a determinantal point process (Chen, Zhang & Zhou,
"Fast Greedy MAP Inference for Determinantal Point Process to Improve Recommendation Diversity", NeurIPS 2018).

A DPP with kernel L scores a set Y by det(L_Y): the volume spanned by its items, large when they are relevant and
unlike each other. The paper's Algorithm 1 adds, k times, the item that increases log det(L_Y) most; the gain of
item i is d_i², the squared residual of i against the items chosen so far, kept by an incremental Cholesky
factorisation (one new row per step, O(k²·N) per list, no determinant ever computed).

The recommendation kernel (the paper's section 5) is L = diag(r) S diag(r) with S the cosine similarity of the
candidates' embeddings (S = E Eᵀ of unit rows: positive semi-definite) and r_i = exp(α·relevance_i), so that
log det(L_Y) = 2α·Σ relevance + log det(S_Y). The paper weighs relevance by θ and diversity by 1 − θ,
α = θ / (2(1 − θ)). Our ``strength`` is the diversity weight 1 − θ: α = (1 − strength) / (2·strength);
0 keeps the relevance order exactly (short-circuited, α would be infinite), 1 ignores relevance (α = 0).

Relevance is min-max normalised per list (best candidate 1, worst 0) before it enters α, so a strength means the
same trade-off whatever the ranker's score scale; score gaps still count (ranks would erase them).

The kernel is never formed with the exp(α·relevance) factors: d_i²(L) = r_i²·d_i²(S), so the greedy step runs the
Cholesky of S and picks argmax log d_i²(S) + 2α·relevance_i — the same choices without overflow when α is large.
The ε stop applies to d_i²(S): an item whose embedding lies (nearly) in the span of the chosen ones is never
picked; once only such items are left, the list is filled in relevance order. An item without an embedding (zero
row) is taken as unlike every other item.

Throughput (``benchmarks/bench_dpp.py``, one core of this 2-core box, 2026-12-05): :func:`rerank_batch` at k = 10
from 200 candidates of 64 dimensions re-ranks ~8,100 lists per second (1.8M users: ~4 core-minutes); the
single-list :func:`rerank`, which forms the whole 200 × 200 similarity, ~240.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

EPSILON = 1e-9        # d² of a unit-norm embedding against the chosen ones below which it adds nothing new


def alpha(strength: float) -> float:
    """The kernel's relevance exponent for a diversity ``strength`` in (0, 1] (the paper's θ = 1 − strength)."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] here (0 is the relevance order), not {strength}")
    return (1 - strength) / (2 * strength)


@njit(cache=True)
def _greedy(kernel: np.ndarray, vectors: np.ndarray, rows: np.ndarray, log_quality: np.ndarray, k: int,
            epsilon: float, picks: np.ndarray) -> int:
    """Algorithm 1 on the kernel ``diag(q) K diag(q)``, ``log_quality`` = log q. K is ``kernel`` (N × N) when it
    has rows, else the Gram matrix of ``vectors[rows]`` (unit or zero rows; a zero row has K_ii = 1, K_ij = 0), whose
    rows are computed only for the k chosen items. Writes the picks (positions 0..N-1) in selection order into
    ``picks`` and returns how many: fewer than k once no item has d² ≥ ``epsilon``."""
    n = log_quality.size
    from_vectors = kernel.shape[0] == 0
    d2 = np.empty(n)
    gain = np.empty(n)
    for i in range(n):
        d2[i] = 1.0 if from_vectors else kernel[i, i]
        gain[i] = np.log(d2[i]) + 2.0 * log_quality[i] if d2[i] >= epsilon and d2[i] > 0 else -np.inf
    cholesky = np.zeros((k, n))
    row = np.empty(n)
    dims = vectors.shape[1]
    for t in range(k):
        j, best = -1, -np.inf
        for i in range(n):
            if gain[i] > best:
                best, j = gain[i], i
        if j < 0:
            return t
        picks[t] = j
        gain[j] = -np.inf
        if t == k - 1:
            return k
        if from_vectors:
            vj = vectors[rows[j]]
            for i in range(n):
                if gain[i] > -np.inf:
                    vi = vectors[rows[i]]
                    s = 0.0
                    for p in range(dims):
                        s += np.float64(vi[p]) * np.float64(vj[p])
                    row[i] = s
        else:
            row[:] = kernel[j]
        dj = np.sqrt(d2[j])
        for i in range(n):
            if gain[i] == -np.inf:          # chosen, or dropped for good (d² only shrinks)
                continue
            s = 0.0
            for p in range(t):
                s += cholesky[p, j] * cholesky[p, i]
            e = (row[i] - s) / dj
            cholesky[t, i] = e
            d2[i] -= e * e
            gain[i] = np.log(d2[i]) + 2.0 * log_quality[i] if d2[i] >= epsilon and d2[i] > 0 else -np.inf
    return k


_NO_VECTORS = np.zeros((0, 1), dtype=np.float32)
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_KERNEL = np.zeros((0, 0))


def greedy_map(kernel: np.ndarray, k: int, epsilon: float = EPSILON,
               log_quality: np.ndarray | None = None) -> np.ndarray:
    """The items (indices into ``kernel``'s rows) of the greedy MAP of the DPP with PSD ``kernel``, in selection
    order: each adds the most to log det of the chosen set. At most ``k``; fewer when the best gain d² left is
    below ``epsilon`` (the paper's stop). Ties go to the lowest index.

    ``log_quality`` (log q, shape N): run on the kernel diag(q)·kernel·diag(q) without forming it (same picks,
    no overflow for large q); ``epsilon`` then bounds d² of ``kernel`` itself."""
    kernel = np.ascontiguousarray(kernel, dtype=np.float64)
    n = kernel.shape[0]
    quality = np.zeros(n) if log_quality is None else np.asarray(log_quality, dtype=np.float64)
    picks = np.empty(min(k, n), dtype=np.int64)
    if picks.size == 0:
        return picks
    return picks[:_greedy(kernel, _NO_VECTORS, _NO_ROWS, quality, picks.size, epsilon, picks)]


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32, C-contiguous); zero rows stay zero."""
    matrix = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.ascontiguousarray(matrix / np.where(norms > 0, norms, 1.0), dtype=np.float32)


def minmax(relevance: np.ndarray) -> np.ndarray:
    """Each list (last axis) scaled to [0, 1], best 1; a list of equal scores is all 0."""
    relevance = np.asarray(relevance, dtype=np.float64)
    low = relevance.min(axis=-1, keepdims=True)
    span = relevance.max(axis=-1, keepdims=True) - low
    return (relevance - low) / np.where(span > 0, span, 1.0)


def relevance_order(relevance: np.ndarray) -> np.ndarray:
    """Positions best first per list (last axis); ties keep the input order."""
    return np.argsort(-np.asarray(relevance, dtype=np.float64), axis=-1, kind="stable")


def rerank(relevance: np.ndarray, embeddings: np.ndarray, k: int, strength: float,
           epsilon: float = EPSILON) -> np.ndarray:
    """One list: positions (into ``relevance``, shape N) of the re-ranked top ``min(k, N)``, best first.
    ``embeddings``: (N × D), any scale (cosine similarity is taken). ``strength`` in [0, 1], see the module."""
    order = relevance_order(relevance)
    if strength == 0 or order.size == 0:
        return order[:k]
    unit = unit_rows(np.asarray(embeddings)[order]).astype(np.float64)
    similarity = unit @ unit.T
    similarity[np.diag_indices_from(similarity)] = 1.0      # a zero row: unlike every other item
    picks = greedy_map(similarity, k, epsilon, alpha(strength) * minmax(relevance)[order])
    return order[_filled(picks, min(k, order.size))]


def _filled(picks: np.ndarray, k: int) -> np.ndarray:
    """``picks`` then the positions not picked, in increasing order (relevance order), up to ``k``."""
    rest = np.setdiff1d(np.arange(k), picks, assume_unique=True)
    return np.concatenate([picks, rest])[:k]


@njit(cache=True)
def _rerank_block(vectors: np.ndarray, rows: np.ndarray, quality: np.ndarray, k: int, epsilon: float,
                  out: np.ndarray) -> None:
    """Every list of a block: ``rows[b]`` / ``quality[b]`` in relevance order → ``out[b]`` positions in that order,
    greedy picks first, then the rest in relevance order."""
    picks = np.empty(k, dtype=np.int64)
    taken = np.zeros(rows.shape[1], dtype=np.bool_)
    for b in range(rows.shape[0]):
        m = _greedy(_NO_KERNEL, vectors, rows[b], quality[b], k, epsilon, picks)
        taken[:] = False
        for t in range(m):
            out[b, t] = picks[t]
            taken[picks[t]] = True
        i = 0
        for t in range(m, k):
            while taken[i]:
                i += 1
            out[b, t] = i
            i += 1


def rerank_batch(relevance: np.ndarray, candidates: np.ndarray, embeddings: np.ndarray, k: int, strength: float,
                 epsilon: float = EPSILON, unit: bool = False) -> np.ndarray:
    """Many lists of the same length at once, as :func:`rerank` does each: ``relevance`` and ``candidates`` (B × N;
    candidates are rows of ``embeddings``, items × D) → (B × min(k, N)) positions into each list, best first.

    Only the k chosen rows of each list's similarity are computed. ``unit``: ``embeddings`` already has unit (or
    zero) rows, as :func:`unit_rows` returns — a task normalises its item matrix once, not per block."""
    relevance = np.atleast_2d(np.asarray(relevance, dtype=np.float64))
    order = relevance_order(relevance)
    kk = min(k, relevance.shape[1])
    if strength == 0 or kk == 0:
        return order[:, :kk]
    rows = np.ascontiguousarray(np.take_along_axis(np.atleast_2d(candidates), order, axis=1), dtype=np.int64)
    quality = np.ascontiguousarray(alpha(strength) * np.take_along_axis(minmax(relevance), order, axis=1))
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32) if unit else unit_rows(embeddings)
    out = np.empty((relevance.shape[0], kk), dtype=np.int64)
    _rerank_block(vectors, rows, quality, kk, epsilon, out)
    return np.take_along_axis(order, out, axis=1)


def intra_list_diversity(lists: Sequence[np.ndarray] | np.ndarray, embeddings: np.ndarray) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 − cos) of a list's items; ``lists`` hold rows of
    ``embeddings``. Lists of fewer than two items are left out; an item without an embedding is at distance 1 from
    every other. NaN when no list has two items. Only the rows the lists use are normalised (a caller passing a
    whole catalogue for a few thousand lists, once per diversity strength, paid for every row each time)."""
    lists = [np.asarray(items, dtype=np.int64) for items in lists]
    used = np.unique(np.concatenate(lists)) if lists else np.zeros(0, np.int64)
    unit = unit_rows(np.asarray(embeddings)[used]).astype(np.float64)
    per_list = []
    for items in lists:
        m = items.size
        if m < 2:
            continue
        vectors = unit[np.searchsorted(used, items)]
        similarity = vectors @ vectors.T
        per_list.append((m * (m - 1) - (similarity.sum() - np.trace(similarity))) / (m * (m - 1)))
    return float(np.mean(per_list)) if per_list else float("nan")

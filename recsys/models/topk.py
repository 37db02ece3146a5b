"""Exact top-k of ``queries @ items.T``: the scoring kernel of every recommend-for-all (publish,
evaluation, similar items).

Items are held in descending norm order (:class:`Catalogue`). A block of rows is scored against a first
slice of the most "powerful" items with one BLAS call; a row whose k-th best score already beats
``|query| · |largest norm left|`` is finished (Cauchy-Schwarz: no later item can reach it), the others go
on against a slice twice as wide, and once half the block is still going, against everything left. ALS
item norms grow with popularity, so on trained factors most rows finish within the first few percent of
the catalogue; on factors of equal norm (cosine neighbours) it degrades to one full-width product plus one
narrow one. Tiling the items more finely costs more than it saves: OpenBLAS re-packs on every call.

After each product a compiled (numba) pass selects each row's top k. It reads every score once, as strided
chunk maxima (chunks of up to 64 items; an element-wise max of contiguous slices, which vectorises), and
looks item by item only into the chunks that can hold a top-k score: about k of them.

Order is (score desc, column asc); columns index an id-sorted catalogue, so ties break by item id. Masked
items (seen, deleted) score ``-inf`` and never enter a list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

CHUNK = 64                 # items per chunk of the selection, at most
CHUNKS_PER_K = 8           # chunks per list entry, at least (when a product is narrow): a bound that prunes
TILE_BYTES = 128 << 20     # scores per product: 1024 rows up to 32K items (fewer rows: more re-packs of the items)
FIRST_SLICE = 2048         # items in a block's first product; then doubling, until half the rows are left
PROBE_BLOCKS, REPROBE = 4, 32   # blocks that always start with the first slice: the first 4, then 1 in 32
MIN_FINISHED = 0.25        # share of rows the first slice must finish for it to stay on
NORM_SLACK = 1e-4          # relative slack on |q|·|v|: covers float32 rounding of a dot product up to 1,000 factors
_NO_COL = np.iinfo(np.int64).max
_FAST = {"nnan", "nsz", "reassoc"}   # lets LLVM vectorise the maxima; keeps ±inf semantics (no "ninf")


@njit(cache=True, fastmath=_FAST)
def _chunk_max(row: np.ndarray, start: int, stop: int) -> float:
    best = row[start]
    for j in range(start + 1, stop):
        best = max(best, row[j])
    return best


@njit(cache=True)
def _sift_down(heap_s: np.ndarray, heap_c: np.ndarray, k: int) -> None:
    """Restore the root-is-worst heap order after the root was replaced: worse = lower score, then
    higher column."""
    i = 0
    while True:
        left = 2 * i + 1
        if left >= k:
            return
        worst = left
        right = left + 1
        if right < k and (heap_s[right] < heap_s[left]
                          or (heap_s[right] == heap_s[left] and heap_c[right] > heap_c[left])):
            worst = right
        if heap_s[worst] < heap_s[i] or (heap_s[worst] == heap_s[i] and heap_c[worst] > heap_c[i]):
            heap_s[i], heap_s[worst] = heap_s[worst], heap_s[i]
            heap_c[i], heap_c[worst] = heap_c[worst], heap_c[i]
            i = worst
        else:
            return


@njit(cache=True)
def _kth_largest(values: np.ndarray, n: int, k: int, heap: np.ndarray) -> float:
    """The k-th largest of ``values[:n]`` (``-inf`` when n < k), with a size-k min-heap in ``heap``."""
    if n < k:
        return -np.inf
    for i in range(k):
        heap[i] = -np.inf
    for i in range(n):
        v = values[i]
        if v > heap[0]:
            heap[0] = v
            j = 0
            while True:
                left = 2 * j + 1
                if left >= k:
                    break
                small = left
                if left + 1 < k and heap[left + 1] < heap[left]:
                    small = left + 1
                if heap[small] < heap[j]:
                    heap[j], heap[small] = heap[small], heap[j]
                    j = small
                else:
                    break
    return heap[0]


@njit(cache=True, fastmath=_FAST)
def _strided_maxima(row: np.ndarray, n_chunks: int, width: int, maxima: np.ndarray) -> None:
    """``maxima[c]`` = max of chunk c = columns c, c + n_chunks, c + 2·n_chunks, … (``width`` of them),
    then the tail (the last ``items mod width`` columns) as one more chunk. Strided chunks make this an
    element-wise max of ``width`` contiguous slices, which vectorises, where a max over adjacent columns
    is a horizontal reduction per chunk."""
    for c in range(n_chunks):
        maxima[c] = row[c]
    for j in range(1, width):
        part = row[j * n_chunks:(j + 1) * n_chunks]
        for c in range(n_chunks):
            maxima[c] = max(maxima[c], part[c])
    body = width * n_chunks
    if body < row.size:
        maxima[n_chunks] = _chunk_max(row, body, row.size)


@njit(cache=True)
def _offer(hs: np.ndarray, hc: np.ndarray, s: float, col: int, k: int) -> None:
    if s > hs[0] or (s == hs[0] and s > -np.inf and col < hc[0]):
        hs[0] = s
        hc[0] = col
        _sift_down(hs, hc, k)


@njit(cache=True)
def fold_rows(scores: np.ndarray, heap_s: np.ndarray, heap_c: np.ndarray, rows: np.ndarray, pos0: int,
              columns: np.ndarray, seen_start: np.ndarray, seen_end: np.ndarray, seen_pos: np.ndarray) -> None:
    """Fold a product into the heaps: ``scores[t, j]`` is the score of heap row ``rows[t]`` for the item at
    position ``pos0 + j``, whose catalogue column (the tie-break and the output) is ``columns[pos0 + j]``.
    A row's seen items (positions ``seen_pos[seen_start[r]:seen_end[r]]``) are masked to ``-inf`` first.

    Let b be the row's k-th largest chunk maximum: k chunks hold a score ≥ b, so the k-th best is ≥ b and
    no chunk whose maximum is below b can hold a top-k score or tie with the k-th. One vectorised pass
    takes the maxima; only the chunks reaching b (k of them, more on ties) are scanned item by item.
    """
    n_rows, n = scores.shape
    k = heap_s.shape[1]
    width = max(1, min(CHUNK, n // (CHUNKS_PER_K * k)))     # narrow slices: smaller chunks, still ≫ k of them
    n_chunks = n // width
    body = width * n_chunks
    maxima = np.empty(n_chunks + 1, dtype=np.float32)
    scratch = np.empty(k, dtype=np.float32)
    for t in range(n_rows):
        r = rows[t]
        row = scores[t]
        for p in range(seen_start[r], seen_end[r]):
            j = seen_pos[p] - pos0
            if 0 <= j < n:
                row[j] = -np.inf
        hs = heap_s[r]
        hc = heap_c[r]
        if n_chunks <= k:                   # a small product: offer every column
            for j in range(n):
                _offer(hs, hc, row[j], columns[pos0 + j], k)
            continue
        _strided_maxima(row, n_chunks, width, maxima)
        used = n_chunks + (1 if body < n else 0)
        bound = _kth_largest(maxima, used, k, scratch)
        for c in range(n_chunks):
            if maxima[c] >= bound and maxima[c] >= hs[0]:
                for j in range(c, body, n_chunks):
                    if row[j] >= bound:
                        _offer(hs, hc, row[j], columns[pos0 + j], k)
        if body < n and maxima[n_chunks] >= bound:
            for j in range(body, n):
                if row[j] >= bound:
                    _offer(hs, hc, row[j], columns[pos0 + j], k)


@njit(cache=True)
def _sorted_heaps(heap_s: np.ndarray, heap_c: np.ndarray) -> None:
    """Sort every row of the heaps in place, best first (score desc, column asc)."""
    rows, k = heap_s.shape
    for r in range(rows):
        s, c = heap_s[r], heap_c[r]
        for i in range(1, k):
            si, ci = s[i], c[i]
            j = i - 1
            while j >= 0 and (s[j] < si or (s[j] == si and c[j] > ci)):
                s[j + 1], c[j + 1] = s[j], c[j]
                j -= 1
            s[j + 1], c[j + 1] = si, ci


def seen_columns(lengths: np.ndarray, flat: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row seen item ids (a list column's lengths and values) → CSR of sorted columns of ``ids``
    (ids not in the catalogue dropped): (start, end, columns)."""
    rows = np.repeat(np.arange(lengths.size), lengths)
    cols = np.clip(np.searchsorted(ids, flat), 0, max(ids.size - 1, 0))
    hit = ids[cols] == flat if ids.size else np.zeros(flat.size, dtype=bool)
    rows, cols = rows[hit], cols[hit].astype(np.int64)
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    end = np.searchsorted(rows, np.arange(lengths.size), side="right").astype(np.int64)
    start = np.concatenate([[0], end[:-1]]).astype(np.int64)
    return start, end, cols


def _empty_heaps(rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, k), -np.inf, dtype=np.float32), np.full((rows, k), _NO_COL, dtype=np.int64)


@dataclass
class Catalogue:
    """The item side of the products, prepared once per task: the (factors × items) matrix with its columns
    in descending norm order, each position's catalogue column, and the largest norm from each position on.

    It also keeps a tally of how many rows the first slice finished. Where norms cannot prune (factors of
    equal or similar norm), the first slice is pure overhead (~20 % at 20K items: a second selection pass),
    so blocks then go straight to full width, and one block in ``REPROBE`` checks again."""

    items_t: np.ndarray       # factors × items, C-contiguous, columns by descending norm
    columns: np.ndarray       # position → catalogue column (int64)
    positions: np.ndarray     # catalogue column → position
    norm_from: np.ndarray     # norm_from[p] = largest item norm at positions ≥ p; 0 past the end
    blocks: int = 0           # blocks scored
    probed_rows: int = 0      # rows of the blocks that started with the first slice
    finished_rows: int = 0    # … of which the first slice finished

    @classmethod
    def of(cls, matrix: np.ndarray) -> Catalogue:
        """``matrix``: (items × factors), rows in catalogue (id) order."""
        norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
        columns = np.argsort(-norms, kind="stable").astype(np.int64)
        positions = np.empty_like(columns)
        positions[columns] = np.arange(columns.size)
        items_t = np.ascontiguousarray(matrix[columns].T, dtype=np.float32)
        return cls(items_t, columns, positions, np.append(norms[columns], 0.0))

    @property
    def size(self) -> int:
        return self.columns.size

    def first_slice(self, first: int) -> int:
        """Items in the next block's first product: ``first`` while that pays (or is being probed), else all."""
        n = self.size
        if first >= n or self.norm_from[first] * (1 + NORM_SLACK) >= self.norm_from[0]:
            return n                                      # nothing to prune: norms all alike (cosine neighbours)
        probing = self.blocks < PROBE_BLOCKS or self.blocks % REPROBE == 0
        self.blocks += 1
        if probing or self.finished_rows >= MIN_FINISHED * self.probed_rows:
            return first
        return n

    def record(self, rows: int, finished: int) -> None:
        self.probed_rows += rows
        self.finished_rows += finished


def topk_products(queries: np.ndarray, items: Catalogue, k: int, seen: tuple[np.ndarray, ...] | None = None,
                  step: int | None = None, first: int = FIRST_SLICE) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` columns and scores of ``queries @ items.T`` per row, best first. Rows with fewer than
    ``k`` unmasked items end in ``-inf`` entries (callers drop them). ``seen``: from :func:`seen_columns`;
    ``step``: rows per block (default :func:`tile_rows`); ``first``: items in a block's first product."""
    rows, n = queries.shape[0], items.size
    heap_s, heap_c = _empty_heaps(rows, k)
    start, end, cols = seen if seen is not None else _no_seen(rows)
    seen_pos = items.positions[cols]
    step = step or tile_rows(n)
    buffer = _tile_buffer(min(step, rows) * n)
    query_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
    for r0 in range(0, rows, step):
        active = np.arange(r0, min(r0 + step, rows))
        block = active.size
        lo, hi = 0, items.first_slice(max(first, 1))
        while active.size:
            q = queries[active] if active.size < block else queries[r0:r0 + block]
            out = buffer[: active.size * (hi - lo)].reshape(active.size, hi - lo)
            np.matmul(q, items.items_t[:, lo:hi], out=out)
            fold_rows(out, heap_s, heap_c, active, lo, items.columns, start, end, seen_pos)
            if hi == n:
                break
            reach = query_norms[active] * items.norm_from[hi] * (1 + NORM_SLACK)
            going = ~(reach < heap_s[active, 0])          # finished: the k-th best beats any item left
            if lo == 0:
                items.record(block, block - int(going.sum()))
            active = active[going]
            lo, hi = hi, (n if 2 * active.size > block else min(n, 2 * hi))
    return _finished(heap_s, heap_c)


_BUFFER = np.empty(0, dtype=np.float32)


def _tile_buffer(size: int) -> np.ndarray:
    """One score buffer per process, grown on demand: a fresh allocation per block would fault its pages
    in on every call (tens of MB), which costs a third of the GEMM. Not for concurrent threads: a Spark
    Python worker runs one task at a time."""
    global _BUFFER
    if _BUFFER.size < size:
        _BUFFER = np.empty(size, dtype=np.float32)
    return _BUFFER[:size]


def tile_rows(items: int) -> int:
    """Rows per product: as many as fit ``TILE_BYTES`` of scores (each call re-packs the item matrix, so
    fewer rows cost GEMM time), between 32 and 1024."""
    return int(max(32, min(1024, TILE_BYTES // (4 * max(items, 1)))))


def topk_scores(scores: np.ndarray, k: int,
                seen: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk_products` of an already computed (rows × items) score matrix; ``seen`` columns are
    masked in place."""
    rows, n = scores.shape
    heap_s, heap_c = _empty_heaps(rows, k)
    start, end, cols = seen if seen is not None else _no_seen(rows)
    fold_rows(np.ascontiguousarray(scores, dtype=np.float32), heap_s, heap_c, np.arange(rows, dtype=np.int64), 0,
              np.arange(n, dtype=np.int64), start, end, cols)
    return _finished(heap_s, heap_c)


def _finished(heap_s: np.ndarray, heap_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heaps → (columns, scores) best first; unfilled entries keep score ``-inf`` and get column 0, so
    the columns always index the catalogue."""
    _sorted_heaps(heap_s, heap_c)
    heap_c[heap_c == _NO_COL] = 0
    return heap_c, heap_s


def _no_seen(rows: int) -> tuple[np.ndarray, ...]:
    zero = np.zeros(rows, dtype=np.int64)
    return zero, zero, np.zeros(0, dtype=np.int64)

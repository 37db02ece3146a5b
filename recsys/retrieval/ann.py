"""Approximate maximum-inner-product search over item vectors: the candidate retrieval of a catalogue too large to
score exactly (``retrieval.ann_min_items``; below it, ``recsys.models.topk`` scores every item).

Factor-model scores are dot products and item norms grow with popularity, so this is MIPS, not cosine search, and
the norms decide where the answers are: on ALS-like factors (log-normal norms, ``benchmarks/bench_retrieval.py``)
99.6 % of the entries of users' exact top 100 lie among the 32,768 items of largest norm even in a catalogue of 4M
items. The index follows:

- the head, the ``exact_head`` items of largest norm, is scored exactly by the project's kernel
  (``topk_products``: blocked GEMM with Cauchy-Schwarz pruning over norm-ordered items) — dense work, cheap per user;
- the tail, every other item, is a faiss HNSW graph with the inner-product metric, asked for its best
  ``tail_candidates`` per user; its answers and the head's are merged by score.

The graph alone does worse on these factors (inner products over skewed norms are its hard case)
(``bench_retrieval.py --items 20000 --users 2000 --sample 300 --exact-head 0``: recall@100 0.85 at efSearch 64, where
the default split finds 1.00 at 94K items and 0.998 at 4M).

Exclusions. ``exclude`` (deleted items, the same for every user): the head is asked for n + (excluded head items)
and those are dropped, which is exact; the graph skips them during the search (a faiss ID selector). A user's seen
items: the head masks them in its kernel; the graph is asked for ``tail_candidates`` + slack results and they are
filtered out, slack = the user's seen items in the tail rounded up to a power of two (users are searched in groups
of equal slack), at most ``max_slack``.

Results are ordered by (score desc, item id asc), like the exact kernel. faiss runs OpenMP threads:
:func:`task_threads` sets them to a Spark task's cores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

# faiss's loader logs, at INFO, every instruction-set build it tries and this wheel lacks before the one it loads
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402 - after quieting its loader
import numpy as np

from recsys.models.topk import Catalogue, topk_products
from recsys.retrieval.settings import RetrievalSettings

Seen = tuple[np.ndarray, np.ndarray, np.ndarray]    # CSR of catalogue columns, from recsys.models.topk.seen_columns


def use_ann(items: int, settings: RetrievalSettings) -> bool:
    """Whether a catalogue of ``items`` items is searched approximately (else scored exactly)."""
    return items >= settings.ann_min_items


def task_threads(cores: int) -> None:
    """faiss's OpenMP threads for this process: a Spark task's cores (``spark.task.cpus``), so tasks on one
    executor do not oversubscribe its cores."""
    faiss.omp_set_num_threads(max(1, cores))


@dataclass
class AnnIndex:
    """The exact head and the HNSW tail over a catalogue; a column is a position in ``ids`` (ascending), as in the
    exact kernel's id-sorted catalogue. ``head`` and ``tail`` are the (ascending) columns of each part; graph row r
    is column ``tail[r]``."""

    ids: np.ndarray
    head: np.ndarray
    head_vectors: np.ndarray
    tail: np.ndarray
    graph: faiss.IndexHNSWFlat | None
    settings: RetrievalSettings

    def __post_init__(self) -> None:
        self.head_catalogue = Catalogue.of(self.head_vectors)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, settings: RetrievalSettings) -> AnnIndex:
        """``vectors`` (items × factors), row i the item ``ids[i]``; the graph uses faiss's current thread count."""
        order = np.argsort(ids, kind="stable")
        vectors = np.ascontiguousarray(vectors[order], dtype=np.float32)
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        by_norm = np.argsort(-norms, kind="stable")
        head, tail = np.sort(by_norm[: settings.exact_head]), np.sort(by_norm[settings.exact_head:])
        graph = None
        if tail.size:
            graph = faiss.IndexHNSWFlat(vectors.shape[1], settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = settings.ef_construction
            graph.add(vectors[tail])
        return cls(np.asarray(ids)[order].astype(np.int32), head, vectors[head], tail, graph, settings)

    @property
    def size(self) -> int:
        return self.ids.size

    def save(self, path: Path | str) -> None:
        """One file: ids, head columns, head vectors and tail columns (``.npy`` format, in turn), then faiss's own
        serialisation of the graph, streamed (a 4M-item graph is 2 GB: no second copy in memory)."""
        with open(path, "wb") as out:
            for array in (self.ids, self.head, self.head_vectors, self.tail):
                np.save(out, array)
            if self.graph is not None:
                faiss.write_index(self.graph, faiss.PyCallbackIOWriter(out.write))

    @classmethod
    def load(cls, path: Path | str, settings: RetrievalSettings) -> AnnIndex:
        """The index :meth:`save` wrote, searched with ``settings``' efSearch, tail candidates and slack (the
        head/tail split and the graph are the built ones)."""
        with open(path, "rb") as source:
            ids, head, head_vectors, tail = (np.load(source) for _ in range(4))
            graph = faiss.read_index(faiss.PyCallbackIOReader(source.read)) if tail.size else None
        return cls(ids, head, head_vectors, tail, graph, settings)

    def search(self, queries: np.ndarray, n: int, seen: Seen | None = None,
               exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` item ids and scores (inner products) per query row, best first (id -1 where a row has fewer);
        see :meth:`search_columns`."""
        columns, scores = self.search_columns(queries, n, seen, exclude)
        return np.where(np.isfinite(scores), self.ids[columns], -1), scores

    def search_columns(self, queries: np.ndarray, n: int, seen: Seen | None = None,
                       exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Like ``recsys.models.topk.topk_products``: columns (into ``ids``) and scores of each row's top ``n``,
        best first; a row with fewer results ends in ``-inf`` scores (column 0). ``seen``: per-row seen columns
        (``seen_columns`` over ``ids``); ``exclude``: item ids never returned."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        excluded = _columns_of(self.ids, exclude)
        parts = [self._head_top(queries, n, seen, excluded)] if self.head.size else []
        if self.graph is not None:
            parts.append(self._tail_top(queries, self._tail_width(n, seen, excluded), seen, excluded))
        if not parts:                                   # an empty catalogue
            return np.zeros((queries.shape[0], 0), dtype=np.int64), np.zeros((queries.shape[0], 0), dtype=np.float32)
        columns = np.hstack([c for c, _ in parts])
        scores = np.hstack([s for _, s in parts])
        order = np.lexsort((columns, -scores), axis=-1)[:, :n]
        columns, scores = np.take_along_axis(columns, order, axis=1), np.take_along_axis(scores, order, axis=1)
        columns[~np.isfinite(scores)] = 0
        return columns, scores

    def _tail_width(self, n: int, seen: Seen | None, excluded: np.ndarray) -> int:
        """``tail_candidates`` (at most n) while the head can fill every row's n alone, else n."""
        room = self.head.size - np.isin(self.head, excluded).sum()
        if seen is not None and seen[0].size:
            start, end, _ = _within(seen, self.head, self.size)
            room -= int((end - start).max())
        return min(n, self.settings.tail_candidates) if room >= n else n

    def _head_top(self, queries: np.ndarray, n: int, seen: Seen | None,
                  excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact top n of the head: n + (excluded head items) by the kernel, those then dropped."""
        dropped = np.flatnonzero(np.isin(self.head, excluded))
        width = min(n + dropped.size, self.head.size)
        columns, scores = topk_products(queries, self.head_catalogue, width, _within(seen, self.head, self.size))
        scores[np.isin(columns, dropped)] = -np.inf
        return self.head[columns], scores

    def _tail_top(self, queries: np.ndarray, n: int, seen: Seen | None,
                  excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The graph's top n per row, its seen items filtered after a search n + slack wide."""
        rows, n = queries.shape[0], min(n, self.tail.size)
        top_c = np.zeros((rows, n), dtype=np.int64)
        top_s = np.full((rows, n), -np.inf, dtype=np.float32)
        local_seen = _within(seen, self.tail, self.size)
        seen_counts = np.zeros(rows, dtype=np.int64) if local_seen is None else local_seen[1] - local_seen[0]
        slack = _power_of_two_at_least(np.minimum(seen_counts, self.settings.max_slack))
        selector = _excluding(np.flatnonzero(np.isin(self.tail, excluded)))
        for s in np.unique(slack):
            group = np.flatnonzero(slack == s)
            width = int(min(n + s, self.tail.size))
            params = faiss.SearchParametersHNSW(efSearch=max(self.settings.ef_search, width), sel=selector)
            scores, columns = self.graph.search(queries[group], width, params=params)
            scores[columns < 0] = -np.inf
            if s:
                scores[_seen_mask(group, columns, local_seen, self.tail.size)] = -np.inf
            order = np.lexsort((columns, -scores), axis=-1)[:, :n]
            top_c[group] = np.take_along_axis(np.maximum(columns, 0), order, axis=1)
            top_s[group] = np.take_along_axis(scores, order, axis=1)
        return self.tail[top_c], top_s


def _columns_of(ids: np.ndarray, items: np.ndarray | None) -> np.ndarray:
    """The columns of those ``items`` (ids) that are in the catalogue."""
    if items is None or len(items) == 0 or ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    items = np.asarray(items, dtype=ids.dtype)
    columns = np.minimum(np.searchsorted(ids, items), ids.size - 1)
    return columns[ids[columns] == items]


def _within(seen: Seen | None, part: np.ndarray, size: int) -> Seen | None:
    """Seen columns (CSR over the catalogue) → the same CSR over the positions in ``part`` (ascending columns of
    a catalogue of ``size``); columns outside it dropped."""
    if seen is None:
        return None
    start, end, columns = seen
    local = np.full(size, -1, dtype=np.int64)
    local[part] = np.arange(part.size)
    mapped = local[columns]
    kept = np.concatenate([[0], np.cumsum(mapped >= 0)])
    return kept[start], kept[end], mapped[mapped >= 0]


def _power_of_two_at_least(counts: np.ndarray) -> np.ndarray:
    """0 → 0, else the smallest power of two ≥ the count: few search widths, none over twice what a row needs."""
    return np.where(counts > 0, 1 << np.ceil(np.log2(np.maximum(counts, 1))).astype(np.int64), 0)


def _excluding(rows: np.ndarray):
    """A faiss selector of every graph row but ``rows``; ``None`` when there are none. The inner selector is kept
    on the outer one: faiss holds only a raw pointer to it."""
    if rows.size == 0:
        return None
    batch = faiss.IDSelectorBatch(rows.astype(np.int64))
    selector = faiss.IDSelectorNot(batch)
    selector.referenced = batch
    return selector


def _seen_mask(group: np.ndarray, columns: np.ndarray, seen: Seen, size: int) -> np.ndarray:
    """Which results (``columns`` of the rows ``group``, each < ``size``) are seen by their row."""
    start, end, cols = seen
    lengths = end[group] - start[group]
    row_of = np.repeat(np.arange(group.size), lengths)
    first = np.cumsum(lengths) - lengths                   # each row's first entry in the flattened selection
    flat = np.arange(lengths.sum()) + np.repeat(start[group] - first, lengths)
    keys = np.arange(group.size, dtype=np.int64)[:, None] * size + columns
    return np.isin(keys, row_of * np.int64(size) + cols[flat])


def candidate_recall(found: np.ndarray, exact: np.ndarray, exact_scores: np.ndarray) -> float:
    """Mean over rows of the share of the exact top list (columns with a finite score) that ``found`` holds."""
    shares = [np.isin(e[np.isfinite(s)], f).mean() for f, e, s in zip(found, exact, exact_scores)
              if np.isfinite(s).any()]
    return float(np.mean(shares)) if shares else float("nan")

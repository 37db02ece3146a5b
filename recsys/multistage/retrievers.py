"""Stage one: cheap retrievers that each propose a few hundred items per user, fitted in numpy on the driver and
applied to blocks of users inside Spark tasks (or on the driver, for the ranker's training lists).

- ``als``: the top N of implicit ALS's dot products (the exact kernel, :func:`recsys.models.topk.topk_products`);
- ``content``: the top N by cosine between the catalogue's text embeddings and the user's profile (the weighted
  mean of the embeddings of the items the user had), so items nobody has interacted with can still come up;
- ``cooccurrence``: items that co-occur (cosine over users) with the user's latest ``recent_items`` items, weighted
  towards the most recent: what the user is doing now, not an average of their history;
- ``category_popular``: the most popular unseen items of the user's most frequent category, topped up from the
  overall most popular (the only candidates of a user with no history);
- ``trending``: the unseen items most popular now (interactions decayed with a half-life of
  ``trend_half_life_days``): what a temporal split's next weeks bring, which all-time popularity misses.

Every retriever's score and rank of a candidate become ranking features (:mod:`recsys.multistage.features`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
from numba import njit

from recsys.models.params import WeightingParams
from recsys.models.topk import Catalogue, seen_columns, topk_products
from recsys.models.weighting import weigh
from recsys.retrieval.ann import AnnIndex

DAY_MS = 86_400_000.0
RECENCY_DECAY = 0.9          # co-occurrence: the i-th latest item counts 0.9^i
NEIGHBOUR_BLOCK = 4096       # items per block of the co-occurrence product


@dataclass
class History:
    """Users' items in time order as CSR over user rows (``users[r]`` owns ``items[indptr[r]:indptr[r+1]]``)."""

    users: np.ndarray          # int32, ascending
    indptr: np.ndarray         # int64
    items: np.ndarray          # int32
    weights: np.ndarray        # float32
    last_ms: np.ndarray        # int64: each user's latest interaction
    stamps: np.ndarray | None = None   # int64, aligned with ``items`` (kept when fitting, not when scoring)
    profile_weights: np.ndarray | None = None   # float32, aligned with ``items``: the content profile's weights

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, weights: np.ndarray, timestamps: np.ndarray) -> History:
        order = np.lexsort((items, timestamps, users))
        users, items = users[order].astype(np.int32), items[order].astype(np.int32)
        ids, starts, counts = np.unique(users, return_index=True, return_counts=True)
        indptr = np.append(starts, len(users)).astype(np.int64)
        stamps = np.asarray(timestamps)[order].astype(np.int64)
        last = stamps[indptr[1:] - 1] if len(ids) else np.zeros(0, np.int64)
        return cls(ids.astype(np.int32), indptr, items, np.asarray(weights)[order].astype(np.float32), last, stamps)

    def take(self, rows: np.ndarray) -> History:
        """The users at ``rows`` (positions), their items in order."""
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        ends = np.cumsum(lengths)
        pick = np.repeat(self.indptr[rows] - (ends - lengths), lengths) + np.arange(int(ends[-1]) if len(rows) else 0)
        return History(self.users[rows], np.append(0, ends).astype(np.int64), self.items[pick],
                       self.weights[pick], self.last_ms[rows], None if self.stamps is None else self.stamps[pick],
                       None if self.profile_weights is None else self.profile_weights[pick])

    def weighed_for_profiles(self, weighting: WeightingParams) -> History:
        """This history with the content profiles' weights: ``weighting`` (the content model's own, as model
        selection chose it) over every row here, since BM25 and TF-IDF need the whole matrix's statistics. Raw
        weights would make the content retriever a different model from the content candidate it is taken from."""
        users = np.repeat(self.users, self.lengths)
        weights = weigh(users, self.items, self.weights.astype(np.float64), self.stamps, weighting)
        return replace(self, profile_weights=weights)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def matrix(self, n_items: int, values: np.ndarray | None = None) -> sp.csr_matrix:
        """Rows × items (``values``: default the weights). Copies: scipy would otherwise share, and its in-place
        clean-ups (``eliminate_zeros``, ``sum_duplicates``) would reorder, the history's own arrays."""
        values = self.weights if values is None else values
        return sp.csr_matrix((values, self.items, self.indptr), shape=(len(self.users), n_items), copy=True)

    def recent(self, n_items: int, last: int) -> sp.csr_matrix:
        """Rows × items with the latest ``last`` items of each row, the i-th latest weighted 0.9^i."""
        lengths = self.lengths
        position = np.arange(len(self.items)) - np.repeat(self.indptr[:-1], lengths)
        from_end = np.repeat(lengths, lengths) - 1 - position
        values = np.where(from_end < last, RECENCY_DECAY ** from_end, 0.0).astype(np.float32)
        out = self.matrix(n_items, values)
        out.eliminate_zeros()
        return out


@dataclass
class Retrieved:
    """One retriever's proposals for a block: flat (row, item, score, rank) arrays, rank 1 = best."""

    rows: np.ndarray
    items: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray


def ranked(cols: np.ndarray, scores: np.ndarray, ids: np.ndarray) -> Retrieved:
    """A top-k kernel's (rows × k) columns and scores (``-inf`` = no entry) → :class:`Retrieved` of item ids."""
    keep = np.isfinite(scores)
    rows = np.nonzero(keep)[0]
    ranks = np.broadcast_to(np.arange(1, cols.shape[1] + 1), cols.shape)[keep]
    return Retrieved(rows.astype(np.int64), ids[cols[keep]].astype(np.int32), scores[keep].astype(np.float32),
                     ranks.astype(np.float32))


@dataclass
class FactorSide:
    """Item vectors of one retriever, id-sorted, with the prepared catalogue for exact top-k."""

    ids: np.ndarray
    vectors: np.ndarray
    row_of: np.ndarray         # item_idx -> row of ``vectors`` (-1: none)
    catalogue: Catalogue | None = None
    index: AnnIndex | None = None   # an approximate index over the same ids: searched instead of exact scoring
    regularization: float | None = None    # the ALS fit's flat λ (None: not an ALS side)
    lone_solver: np.ndarray | None = None  # (YᵀY + λI)⁻¹, made by the first :meth:`lone_item_queries`

    @classmethod
    def of(cls, ids: np.ndarray, vectors: np.ndarray, n_items: int,
           regularization: float | None = None) -> FactorSide:
        """``regularization``: the ALS fit's λ, for an ALS side (:meth:`lone_item_queries`)."""
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order].astype(np.int32), np.ascontiguousarray(vectors[order], dtype=np.float32)
        row_of = np.full(max(n_items, int(ids.max(initial=-1)) + 1), -1, dtype=np.int64)
        row_of[ids] = np.arange(len(ids))
        return cls(ids, vectors, row_of, regularization=regularization)

    def top(self, queries: np.ndarray, history: History, n: int) -> Retrieved:
        """Each row's top ``n`` by dot product, its history excluded (by the approximate index when there is one)."""
        n = min(n, len(self.ids))
        if n == 0 or not len(queries):
            return _empty()
        seen = seen_columns(history.lengths, history.items, self.ids)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self.index is not None:
            cols, scores = self.index.search_columns(queries, n, seen)
        else:
            if self.catalogue is None:
                self.catalogue = Catalogue.of(self.vectors)
            cols, scores = topk_products(queries, self.catalogue, n, seen)
        found = ranked(cols, scores, self.ids)
        keep = has_vector(queries)[found.rows]          # no vector (unknown user): no proposals
        return Retrieved(found.rows[keep], found.items[keep], found.scores[keep], found.ranks[keep])

    def lone_item_queries(self, items: np.ndarray) -> np.ndarray:
        """The ALS query of a user whose whole history is ``items[r]``: (YᵀY + λI)⁻¹ y. Such a user's least-squares
        factor, with confidence c, is c·A⁻¹y / (1 + (c − 1)·yᵀA⁻¹y) (Sherman–Morrison, A = YᵀY + λI, implicit's
        flat λ): the same direction whatever c, so every user of that one item ranks the catalogue alike, and one
        search answers them all. Zero for an item without a vector."""
        if self.regularization is None:
            raise ValueError("lone-item queries need the ALS fit's regularization")
        if self.lone_solver is None:
            vectors = self.vectors.astype(np.float64)
            gram = vectors.T @ vectors + self.regularization * np.eye(vectors.shape[1])
            # pseudo-inverse: with λ = 0 and fewer items than factors A is singular (the min-norm solution)
            self.lone_solver = np.linalg.pinv(gram, hermitian=True).astype(np.float32)
        pos = self.positions(items)
        known = pos >= 0
        out = np.zeros((len(items), self.vectors.shape[1]), dtype=np.float32)
        out[known] = self.vectors[pos[known]] @ self.lone_solver
        return out

    def positions(self, items: np.ndarray) -> np.ndarray:
        """Each item's row of :attr:`vectors`; -1 for an item without a vector or beyond the catalogue."""
        return positions(self.row_of, items)

    def dot(self, queries: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score of each (row, item) pair; NaN where the item has no vector."""
        pos = self.positions(items)
        return _pair_dots(np.ascontiguousarray(queries, dtype=np.float32), self.vectors, rows.astype(np.int64),
                          pos.astype(np.int64))


def has_vector(vectors: np.ndarray) -> np.ndarray:
    """Rows that are not all zero (a zero row: a user the ALS never saw)."""
    return np.abs(vectors).sum(axis=1) > 0


def positions(row_of: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``row_of[items]`` (item_idx → a row of some item table), -1 for an item beyond ``row_of``."""
    safe = np.clip(items, 0, len(row_of) - 1)
    return np.where(items < len(row_of), row_of[safe], -1)


def profiles(side: FactorSide, history: History) -> np.ndarray:
    """Each row's content profile: the weighted mean of its items' vectors (``profile_weights`` when the history has
    them), L2-normalised (zero: no vector). A one-item history weighs its item 1: the same unit vector whatever the
    weight, computed alike for every such user, so users of the same lone item share their profile bit for bit (and
    one search, :class:`Representatives`)."""
    weights = history.weights if history.profile_weights is None else history.profile_weights
    weights = np.where(np.repeat(history.lengths == 1, history.lengths), np.float32(1.0), weights)
    pos = side.positions(history.items)
    known = pos >= 0
    rows = np.repeat(np.arange(len(history.users)), history.lengths)[known]
    out = np.zeros((len(history.users), side.vectors.shape[1]), dtype=np.float32)
    np.add.at(out, rows, side.vectors[pos[known]] * weights[known, None])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


@dataclass
class Representatives:
    """Rows the retrievers answer alike share one answer: every row with a one-item history is represented by the
    first row of the same lone item (its profile, main category and seen item are that row's, and its ALS query,
    :meth:`FactorSide.lone_item_queries`); every other row represents itself. Most users of a sparse catalogue have
    one item (87 % of an Appliances-size dump), so a block of users grouped by their lone item asks the retrievers
    and builds the candidates' features a few dozen times instead of hundreds
    (:meth:`~recsys.multistage.stage.Stage.candidates`)."""

    rows: np.ndarray           # positions of the represented rows, ascending
    of: np.ndarray             # each row's index into ``rows``

    @classmethod
    def of_history(cls, history: History, alone: np.ndarray | None = None) -> Representatives:
        """``alone``: rows that represent themselves even with one item."""
        lone = history.lengths == 1
        if alone is not None:
            lone &= ~alone
        keys = -1 - np.arange(len(lone), dtype=np.int64)      # every other row: a key of its own
        keys[lone] = history.items[history.indptr[:-1][lone]]
        _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")             # representatives in row order
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        return cls(first[order].astype(np.int64), rank[inverse.ravel()].astype(np.int64))

    @property
    def shared(self) -> bool:
        return len(self.rows) < len(self.of)

    def spread(self, found_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Entries of the representatives (``found_rows``, ascending, index :attr:`rows`) → every row's copy of its
        representative's entries: (rows, take), rows ascending, ``take`` indexing the representatives' arrays."""
        starts = np.searchsorted(found_rows, np.arange(len(self.rows)))
        counts = np.diff(np.append(starts, len(found_rows)))
        per = counts[self.of]
        take = np.repeat(starts[self.of] - (np.cumsum(per) - per), per) + np.arange(int(per.sum()))
        return np.repeat(np.arange(len(self.of), dtype=np.int64), per), take.astype(np.int64)


def cooccurrence_neighbours(history: History, n_items: int, keep: int) -> sp.csr_matrix:
    """Items × items cosine of co-occurrence over users (binary), the top ``keep`` neighbours of each item, itself
    excluded. Built in column blocks, so the full item × item product is never held at once."""
    binary = history.matrix(n_items, np.ones(len(history.items), dtype=np.float32))
    binary.data[:] = 1.0
    binary.sum_duplicates()
    binary.data[:] = 1.0
    counts = np.asarray(binary.sum(axis=0)).ravel()
    scale = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    transposed = binary.T.tocsr()
    rows, cols, vals = [], [], []
    for start in range(0, n_items, NEIGHBOUR_BLOCK):
        stop = min(start + NEIGHBOUR_BLOCK, n_items)
        block = (transposed[start:stop] @ binary).tocsr()         # (block items) × items co-counts
        for local in range(stop - start):
            lo, hi = block.indptr[local], block.indptr[local + 1]
            item = start + local
            others = block.indices[lo:hi]
            sims = block.data[lo:hi] * scale[item] * scale[others]
            mask = others != item
            others, sims = others[mask], sims[mask]
            if len(others) > keep:
                top = np.argpartition(-sims, keep - 1)[:keep]
                others, sims = others[top], sims[top]
            rows.append(np.full(len(others), item, dtype=np.int32))
            cols.append(others.astype(np.int32))
            vals.append(sims.astype(np.float32))
    if not rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_items, n_items))


def top_of_sparse(scores: sp.csr_matrix, history: History, n: int) -> Retrieved:
    """Each row's top ``n`` stored entries of a sparse score matrix (ties to the smaller item), the row's history
    excluded; one sort of every entry, no loop over rows."""
    scores = scores.tocoo()
    rows, items, values = scores.row.astype(np.int64), scores.col.astype(np.int32), scores.data.astype(np.float32)
    keep = (values != 0) & ~seen_pairs(history, rows, items)
    rows, items, values = rows[keep], items[keep], values[keep]
    order = np.lexsort((items, -values, rows))
    rows, items, values = rows[order], items[order], values[order]
    ranks = _positions(rows) + 1
    top = ranks <= n
    return Retrieved(rows[top], items[top], values[top], ranks[top].astype(np.float32))


def seen_pairs(history: History, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Whether each (row, item) pair is in the row's history."""
    width = np.int64(max(int(history.items.max(initial=0)), int(items.max(initial=0))) + 1)
    own = np.unique(np.repeat(np.arange(len(history.users), dtype=np.int64), history.lengths) * width
                    + history.items)
    keys = rows.astype(np.int64) * width + items
    pos = np.clip(np.searchsorted(own, keys), 0, max(len(own) - 1, 0))
    return (own[pos] == keys) if len(own) else np.zeros(len(keys), dtype=bool)


def _positions(rows: np.ndarray) -> np.ndarray:
    """Each entry's position within its run of equal (sorted) ``rows``."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    return np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))


def main_categories(history: History, category_of: np.ndarray) -> np.ndarray:
    """Each row's most frequent item category (ties to the smaller code; -1: none known)."""
    rows = np.repeat(np.arange(len(history.users), dtype=np.int64), history.lengths)
    cats = np.where(history.items < len(category_of), category_of[np.clip(history.items, 0, len(category_of) - 1)], -1)
    keep = cats >= 0
    out = np.full(len(history.users), -1, dtype=np.int64)
    if not keep.any():
        return out
    pairs, counts = np.unique(np.stack([rows[keep], cats[keep]], axis=1), axis=0, return_counts=True)
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))       # per row: most frequent, then smaller code
    first = order[np.r_[True, pairs[order, 0][1:] != pairs[order, 0][:-1]]]
    out[pairs[first, 0]] = pairs[first, 1]
    return out


def popular_in_category(history: History, category_of: np.ndarray, by_category: dict[int, np.ndarray],
                        overall: np.ndarray, n: int) -> Retrieved:
    """Each row's ``n`` most popular unseen items of its most frequent category, then of all items (score: minus
    the rank). The lists are those of :meth:`ItemSide.popular` (a few times ``n`` long), so a row that has seen
    nearly all of them gets fewer than ``n``."""
    rows_n = len(history.users)
    main = main_categories(history, category_of)
    width = max([len(overall), *(len(v) for v in by_category.values())], default=0)
    table = np.full((max(by_category, default=-1) + 2, width), -1, dtype=np.int64)   # last row: no category
    for code, items in by_category.items():
        table[code, : len(items)] = items
    lists = np.hstack([table[np.where((main >= 0) & (main < len(table) - 1), main, len(table) - 1)],
                       np.broadcast_to(np.pad(overall.astype(np.int64), (0, width - len(overall)), constant_values=-1),
                                       (rows_n, width))])
    rows = np.repeat(np.arange(rows_n, dtype=np.int64), lists.shape[1])
    items = lists.reshape(-1)
    keep = items >= 0
    rows, items = rows[keep], items[keep]
    keep = ~seen_pairs(history, rows, items)
    rows, items = rows[keep], items[keep]
    _, first = np.unique(rows * (int(items.max(initial=0)) + 1) + items, return_index=True)
    first = np.sort(first)                               # the first occurrence of each (row, item), in list order
    rows, items = rows[first], items[first]
    ranks = _positions(rows) + 1
    top = ranks <= n
    ranks = ranks[top].astype(np.float32)
    return Retrieved(rows[top], items[top].astype(np.int32), -ranks, ranks)


def _empty() -> Retrieved:
    return Retrieved(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32))


@njit(cache=True)
def _pair_dots(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """queries[rows[j]] · vectors[pos[j]] for every pair j (NaN where pos < 0), reading both rows in place: the
    gathered copies numpy would make (two candidates × factors matrices) cost more than the products."""
    out = np.empty(len(rows), dtype=np.float32)
    dims = queries.shape[1]
    for j in range(len(rows)):
        if pos[j] < 0:
            out[j] = np.nan
            continue
        q, v = queries[rows[j]], vectors[pos[j]]
        total = np.float32(0.0)
        for d in range(dims):
            total += q[d] * v[d]
        out[j] = total
    return out

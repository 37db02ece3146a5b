"""Stage one: cheap retrievers that each propose a few hundred items per user, fitted in numpy on the driver and
applied to blocks of users inside Spark tasks (or on the driver, for the ranker's training lists).

- ``als``: the top N of implicit ALS's dot products (the exact kernel, :func:`recsys.models.topk.topk_products`);
- ``content``: the top N by cosine between the catalogue's text embeddings and the user's profile (the weighted
  mean of the embeddings of the items the user had), so items nobody has interacted with can still come up;
- ``cooccurrence``: items that co-occur (cosine over users) with the user's latest ``recent_items`` items, weighted
  towards the most recent: what the user is doing now, not an average of their history;
- ``category_popular``: the most popular unseen items of the user's most frequent category, topped up from the
  overall most popular (the only candidates of a user with no history).

Every retriever's score and rank of a candidate become ranking features (:mod:`recsys.multistage.features`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.models.topk import Catalogue, seen_columns, topk_products

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

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, weights: np.ndarray, timestamps: np.ndarray) -> History:
        order = np.lexsort((items, timestamps, users))
        users, items = users[order].astype(np.int32), items[order].astype(np.int32)
        ids, starts, counts = np.unique(users, return_index=True, return_counts=True)
        indptr = np.append(starts, len(users)).astype(np.int64)
        last = np.asarray(timestamps)[order][indptr[1:] - 1] if len(ids) else np.zeros(0, np.int64)
        return cls(ids.astype(np.int32), indptr, items, np.asarray(weights)[order].astype(np.float32),
                   last.astype(np.int64))

    def take(self, rows: np.ndarray) -> History:
        """The users at ``rows`` (positions), their items in order."""
        lengths = self.indptr[rows + 1] - self.indptr[rows]
        pick = np.concatenate([np.arange(self.indptr[r], self.indptr[r + 1]) for r in rows]) if len(rows) \
            else np.zeros(0, np.int64)
        return History(self.users[rows], np.append(0, np.cumsum(lengths)).astype(np.int64), self.items[pick],
                       self.weights[pick], self.last_ms[rows])

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

    @classmethod
    def of(cls, ids: np.ndarray, vectors: np.ndarray, n_items: int) -> FactorSide:
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order].astype(np.int32), np.ascontiguousarray(vectors[order], dtype=np.float32)
        row_of = np.full(max(n_items, int(ids.max(initial=-1)) + 1), -1, dtype=np.int64)
        row_of[ids] = np.arange(len(ids))
        return cls(ids, vectors, row_of)

    def top(self, queries: np.ndarray, history: History, n: int) -> Retrieved:
        """Each row's top ``n`` by dot product, its history excluded."""
        if self.catalogue is None:
            self.catalogue = Catalogue.of(self.vectors)
        n = min(n, len(self.ids))
        if n == 0 or not len(queries):
            return _empty()
        seen = seen_columns(history.lengths, history.items, self.ids)
        cols, scores = topk_products(np.ascontiguousarray(queries, dtype=np.float32), self.catalogue, n, seen)
        found = ranked(cols, scores, self.ids)
        zero = np.abs(queries).sum(axis=1) == 0          # no vector (unknown user): no proposals
        keep = ~zero[found.rows]
        return Retrieved(found.rows[keep], found.items[keep], found.scores[keep], found.ranks[keep])

    def dot(self, queries: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Score of each (row, item) pair; NaN where the item has no vector."""
        safe = np.clip(items, 0, len(self.row_of) - 1)
        pos = np.where(items < len(self.row_of), self.row_of[safe], -1)
        out = np.einsum("ij,ij->i", queries[rows], self.vectors[np.maximum(pos, 0)]).astype(np.float32)
        out[pos < 0] = np.nan
        return out


def profiles(side: FactorSide, history: History) -> np.ndarray:
    """Each row's content profile: the weighted mean of its items' vectors, L2-normalised (zero: no vector)."""
    pos = side.row_of[np.clip(history.items, 0, len(side.row_of) - 1)]
    known = (history.items < len(side.row_of)) & (pos >= 0)
    rows = np.repeat(np.arange(len(history.users)), history.lengths)[known]
    out = np.zeros((len(history.users), side.vectors.shape[1]), dtype=np.float32)
    np.add.at(out, rows, side.vectors[pos[known]] * history.weights[known, None])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


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
    """Each row's top ``n`` stored entries of a sparse score matrix, the row's history excluded."""
    scores = scores.tocsr()
    seen = history.matrix(scores.shape[1], np.ones(len(history.items), dtype=np.float32)).tocsr()
    scores = scores - scores.multiply(seen > 0)                   # zero the seen entries …
    scores.eliminate_zeros()                                      # … and drop them
    out_rows, out_items, out_scores, out_ranks = [], [], [], []
    for row in range(scores.shape[0]):
        lo, hi = scores.indptr[row], scores.indptr[row + 1]
        if hi == lo:
            continue
        items, vals = scores.indices[lo:hi], scores.data[lo:hi]
        if hi - lo > n:
            top = np.argpartition(-vals, n - 1)[:n]
            items, vals = items[top], vals[top]
        order = np.lexsort((items, -vals))
        out_rows.append(np.full(len(order), row, dtype=np.int64))
        out_items.append(items[order].astype(np.int32))
        out_scores.append(vals[order].astype(np.float32))
        out_ranks.append(np.arange(1, len(order) + 1, dtype=np.float32))
    if not out_rows:
        return _empty()
    return Retrieved(*(np.concatenate(a) for a in (out_rows, out_items, out_scores, out_ranks)))


def popular_in_category(history: History, category_of: np.ndarray, by_category: dict[int, np.ndarray],
                        overall: np.ndarray, n: int) -> Retrieved:
    """Each row's ``n`` most popular unseen items of its most frequent category, then of all items (score: minus
    the rank)."""
    rows_out, items_out, ranks_out = [], [], []
    for row in range(len(history.users)):
        own = history.items[history.indptr[row]:history.indptr[row + 1]]
        seen = set(own.tolist())
        cats = category_of[own[own < len(category_of)]]
        cats = cats[cats >= 0]
        lists = []
        if len(cats):
            values, counts = np.unique(cats, return_counts=True)
            lists.append(by_category.get(int(values[np.argmax(counts)]), overall))
        lists.append(overall)
        picked: list[int] = []
        for candidates in lists:
            for item in candidates[: n + len(seen)].tolist():
                if item not in seen and item not in picked:
                    picked.append(item)
                    if len(picked) == n:
                        break
            if len(picked) == n:
                break
        rows_out.append(np.full(len(picked), row, dtype=np.int64))
        items_out.append(np.asarray(picked, dtype=np.int32))
        ranks_out.append(np.arange(1, len(picked) + 1, dtype=np.float32))
    if not rows_out:
        return _empty()
    ranks = np.concatenate(ranks_out)
    return Retrieved(np.concatenate(rows_out), np.concatenate(items_out), -ranks, ranks)


def _empty() -> Retrieved:
    return Retrieved(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32))

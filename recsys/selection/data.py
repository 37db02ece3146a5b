"""What a search sees: the train and valid rows of gold/interactions as numpy arrays, never the test rows, and the
MAP@K of a trial's factors on valid.

The test split stays out by construction: :func:`search_rows` reads only ``split IN (train, valid)`` and
:class:`SearchData` refuses any other label, so no trial can fit on, or be scored with, what the run is finally
judged on. At large sizes the trials use a seeded sample of the users who have valid interactions (their train rows,
every item): ``note`` says so and the run's report and logs repeat it.

Trials are scored in numpy (:mod:`recsys.metrics.python_metrics`, the twin of the Spark metrics that evaluate the
run): top-K by score, ties to the smaller item index, the user's train items excluded, only items with factors
ranked; a valid user without factors has no list and counts 0, as in the Spark evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from recsys import constants as C
from recsys.metrics import python_metrics as PM
from recsys.metrics.definitions import MAP, metric_key
from recsys.models.topk import Catalogue, topk_products

TRAIN, VALID = "train", "valid"
SEARCHED_SPLITS = (TRAIN, VALID)


@dataclass(frozen=True)
class CompactMatrix:
    """A trial's user × item matrix in local indices: row r is user ``users[r]``, column c item ``items[c]``."""

    matrix: Any
    users: np.ndarray
    items: np.ndarray


@dataclass(frozen=True)
class SearchData:
    """Train rows as (users, items, weights, timestamps) arrays, valid as user → items; dense indices."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    timestamps: np.ndarray
    truth: dict[int, list[int]]
    n_users: int
    n_items: int
    note: str | None = None
    fraction: float = 1.0       # of all the train rows that these are (a user sample keeps fewer)

    @classmethod
    def from_rows(cls, users, items, weights, timestamps, splits, *, max_users: int, seed: int) -> SearchData:
        """Arrays of gold/interactions rows labelled train or valid (anything else is refused), users sampled down
        to ``max_users`` among those with valid rows."""
        splits = np.asarray(splits).astype(str)
        unknown = sorted(set(np.unique(splits)) - set(SEARCHED_SPLITS))
        if unknown:
            raise ValueError(f"the search reads only {' and '.join(SEARCHED_SPLITS)} rows, got {', '.join(unknown)}")
        users, items = np.asarray(users, dtype=np.int32), np.asarray(items, dtype=np.int32)
        n_users = int(users.max(initial=-1)) + 1
        n_items = int(items.max(initial=-1)) + 1
        valid = splits == VALID
        candidates = np.unique(users[valid])
        note, all_train = None, int((~valid).sum())
        if len(candidates) > max_users:
            chosen = np.sort(np.random.default_rng(seed).choice(candidates, size=max_users, replace=False))
            note = (f"trials on a sample of {max_users:,} of the {len(candidates):,} users with valid interactions "
                    f"(tuning.max_users), their train rows only")
            keep = np.isin(users, chosen)
            users, items, splits, valid = users[keep], items[keep], splits[keep], valid[keep]
            weights, timestamps = np.asarray(weights)[keep], np.asarray(timestamps)[keep]
        train = ~valid
        truth: dict[int, list[int]] = {}
        for user, item in zip(users[valid].tolist(), items[valid].tolist()):
            truth.setdefault(user, []).append(item)
        fraction = int(train.sum()) / all_train if all_train else 1.0
        return cls(users[train], items[train], np.asarray(weights, dtype=np.float64)[train],
                   np.asarray(timestamps, dtype=np.int64)[train], truth, n_users, n_items, note, fraction)

    @cached_property
    def typical_count(self) -> float:
        """The interactions of the user and of the item of a typical training interaction: the geometric mean of
        the users' and the items' interaction-weighted mean counts (Σn²/Σn, the mean of n over interactions, not
        over users or items). Spark's regularization is mapped from implicit's by it
        (:mod:`recsys.selection.spaces`)."""
        if not len(self.users):
            return 1.0
        sides = [np.bincount(ids) for ids in (self.users, self.items)]
        weighted = [float((n.astype(np.float64) ** 2).sum() / n.sum()) for n in sides]
        return float(np.sqrt(weighted[0] * weighted[1]))

    def matrix(self, values: np.ndarray):
        """The users × items CSR of the train rows with ``values`` (float32)."""
        import scipy.sparse as sp

        return sp.csr_matrix((values.astype(np.float32), (self.users, self.items)),
                             shape=(self.n_users, self.n_items))

    def compact(self, values: np.ndarray, keep: np.ndarray | None = None) -> CompactMatrix:
        """The train rows (``keep`` of them) with ``values`` as a CSR over only the users and items that have one:
        what a trial's factorization solves for. A user or item without a row gets no factor anyway (this module
        ranks only items with factors, and a user without one has no list), but in the full index space the
        solver still pays for each empty row: on an Appliances-size sample 3,129 users and 2,761 items instead of
        1.8M × 94K, ~100× less per trial at 128 factors."""
        import scipy.sparse as sp

        users, items = (self.users, self.items) if keep is None else (self.users[keep], self.items[keep])
        values = values if keep is None else values[keep]
        user_ids, rows = np.unique(users, return_inverse=True)
        item_ids, cols = np.unique(items, return_inverse=True)
        matrix = sp.csr_matrix((np.asarray(values, dtype=np.float32), (rows.ravel(), cols.ravel())),
                               shape=(len(user_ids), len(item_ids)))
        return CompactMatrix(matrix, user_ids.astype(np.int64), item_ids.astype(np.int64))

    def score_compact(self, compact: CompactMatrix, user_factors: np.ndarray, item_factors: np.ndarray,
                      k: int) -> float:
        """MAP@k on valid of factors fitted on ``compact`` (row r is ``compact.users[r]``, same for items)."""
        return self.score(compact.users, np.asarray(user_factors), compact.items, np.asarray(item_factors), k)

    def score(self, user_ids: np.ndarray, user_vectors: np.ndarray, item_ids: np.ndarray,
              item_vectors: np.ndarray, k: int) -> float:
        """MAP@k on valid of the factors given (row j of ``user_vectors`` is user ``user_ids[j]``, same for items)."""
        user_row = np.full(self.n_users, -1, dtype=np.int64)
        known = user_ids < self.n_users
        user_row[user_ids[known]] = np.flatnonzero(known)
        keep = item_ids < self.n_items
        item_ids, item_vectors = item_ids[keep], np.asarray(item_vectors[keep], dtype=np.float32)
        order = np.argsort(item_ids, kind="stable")            # ties then go to the smaller item index
        item_ids, item_vectors = item_ids[order], item_vectors[order]
        users = np.array([u for u in self.truth if u < self.n_users and user_row[u] >= 0], dtype=np.int64)
        if not len(users) or not len(item_ids):
            return PM.ranking_metrics({}, self.truth, [k])[metric_key(MAP, k)]
        seen = self.matrix(np.ones(len(self.users)))[users][:, item_ids].tocsr()     # columns = catalogue order
        seen.sort_indices()
        queries = np.ascontiguousarray(user_vectors[user_row[users]], dtype=np.float32)
        cols, scores = topk_products(queries, Catalogue.of(item_vectors), k,
                                     seen=(seen.indptr[:-1].astype(np.int64), seen.indptr[1:].astype(np.int64),
                                           seen.indices.astype(np.int64)))
        predictions = {user: item_ids[row_cols[np.isfinite(row_scores)]].tolist()
                       for user, row_cols, row_scores in zip(users.tolist(), cols, scores)}
        return PM.ranking_metrics(predictions, self.truth, [k])[metric_key(MAP, k)]


def search_rows(spark, warehouse):
    """gold/interactions' train and valid rows (user, item, weight, timestamp, split) as Arrow: the only read of
    the interactions a search makes."""
    from pyspark.sql import functions as F

    from recsys import tables as T

    return (T.read_table(spark, warehouse, C.INTERACTIONS).where(F.col(C.SPLIT).isin(*SEARCHED_SPLITS))
            .select(C.USER_IDX, C.ITEM_IDX, "weight", C.TIMESTAMP, C.SPLIT).toArrow())


def search_data(spark, warehouse, *, max_users: int, seed: int) -> SearchData:
    table = search_rows(spark, warehouse)
    return SearchData.from_rows(*(table.column(c).to_numpy(zero_copy_only=False) for c in
                                  (C.USER_IDX, C.ITEM_IDX, "weight", C.TIMESTAMP, C.SPLIT)),
                                max_users=max_users, seed=seed)

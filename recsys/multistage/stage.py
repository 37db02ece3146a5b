"""One fitted set of retrievers (:class:`Stage`) and what it proposes for a block of users, with features.

A multi-stage fit makes two: stage one on the earlier rows (its candidates, labelled by the later rows, train the
ranker), stage two on every row fitted (what is saved and scores users at evaluation and publish).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recsys.models.params import ALSParams
from recsys.multistage import features as Fe
from recsys.multistage import retrievers as R
from recsys.models.params import MultiStageParams
from recsys.retrieval.ann import AnnIndex, use_ann


@dataclass
class Stage:
    """Retrievers fitted on one set of rows. ``als_users``: user_idx → ALS vector (rows of users never seen: 0)."""

    params: MultiStageParams
    n_items: int
    side: Fe.ItemSide
    als: R.FactorSide | None
    als_users: np.ndarray | None
    content: R.FactorSide | None
    neighbours: sp.csr_matrix | None
    popular: tuple[dict[int, np.ndarray], np.ndarray] = field(default=None)  # type: ignore[assignment]
    trending: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.popular is None:
            self.popular = self.side.popular(self.params.per_retriever * 4)
        if self.trending is None:
            self.trending = self.side.trending(self.params.per_retriever * 4)

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """ALS vectors of ``users`` (zeros for users the ALS never saw)."""
        if self.als_users is None:
            return np.zeros((len(users), 1), dtype=np.float32)
        out = np.zeros((len(users), self.als_users.shape[1]), dtype=np.float32)
        known = users < len(self.als_users)
        out[known] = self.als_users[users[known]]
        return out

    def candidates(self, history: R.History, user_vectors: np.ndarray) -> Fe.Candidates:
        """Every retriever's proposals for the users of ``history`` (their items excluded), united, with features.

        Users of the same lone item (:class:`~recsys.multistage.retrievers.Representatives`) are proposed the same
        items, and every feature of a pair but two is theirs alike: the candidates are found and described once per
        lone item, then copied to each such user with its own ALS score and idleness. A user the ALS has no vector
        for represents itself (it gets no ALS proposals, the others of its item do)."""
        if self.als is not None and self.als.regularization is None:     # no lone-item query: no sharing
            return self._described(history, user_vectors)
        alone = ~R.has_vector(user_vectors) if self.als is not None else None
        shared = R.Representatives.of_history(history, alone=alone)
        if not shared.shared:
            return self._described(history, user_vectors)
        found = self._described(history.take(shared.rows), user_vectors[shared.rows])
        rows, take = shared.spread(found.rows)
        items, x = found.items[take], found.x[take]
        Fe.personalise(x, history, self.side, rows,
                       self.als.dot(user_vectors, rows, items) if self.als is not None else None)
        return Fe.Candidates(rows, items, x)

    def _described(self, history: R.History, user_vectors: np.ndarray) -> Fe.Candidates:
        """:meth:`candidates`, each row on its own."""
        n = self.params.per_retriever
        wanted = set(self.params.retrievers)
        proposals: dict[str, R.Retrieved] = {}
        content_profiles = R.profiles(self.content, history) if self.content is not None else None
        if "als" in wanted and self.als is not None:
            proposals["als"] = self._als_proposals(history, user_vectors, n)
        if "content" in wanted and content_profiles is not None:
            proposals["content"] = self.content.top(content_profiles, history, n)
        recent = None
        if self.neighbours is not None:
            recent = history.recent(self.neighbours.shape[0], self.params.recent_items) @ self.neighbours
            if "cooccurrence" in wanted:
                proposals["cooccurrence"] = R.top_of_sparse(recent, history, n)
        if "category_popular" in wanted or not proposals:
            by_category, overall = self.popular
            proposals["category_popular"] = R.popular_in_category(history, self.side.category, by_category,
                                                                  overall, n)
        if "trending" in wanted:
            proposals["trending"] = R.popular_in_category(history, self.side.category, {}, self.trending, n)
        rows, items, where = Fe.union(proposals, self.n_items)
        scores = {}
        if self.als is not None:
            scores["als"] = self.als.dot(user_vectors, rows, items)
        if content_profiles is not None:
            scores["content"] = self.content.dot(content_profiles, rows, items)
        if recent is not None:
            inside = items < recent.shape[1]
            values = np.zeros(len(rows), dtype=np.float32)
            values[inside] = np.asarray(recent.tocsr()[rows[inside], items[inside]]).ravel()
            scores["cooccurrence"] = values
        x = Fe.assemble(history, self.side, proposals, scores, rows, items, where)
        return Fe.Candidates(rows, items, x)

    def _als_proposals(self, history: R.History, user_vectors: np.ndarray, n: int) -> R.Retrieved:
        """The ALS retriever's top ``n``: a user with one item asks the query of that item
        (:meth:`~recsys.multistage.retrievers.FactorSide.lone_item_queries`: the same for every user of it, so
        users grouped by :meth:`candidates` get what they would alone); the others ask their own vectors (a user
        with no vector asks nothing). The candidates' ``als_score`` stays each user's own product."""
        if self.als.regularization is None:
            return self.als.top(user_vectors, history, n)
        queries = np.array(user_vectors, dtype=np.float32)
        lone = (history.lengths == 1) & R.has_vector(user_vectors)
        if lone.any():
            queries[lone] = self.als.lone_item_queries(history.items[history.indptr[:-1][lone]])
        return self.als.top(queries, history, n)


def fit_stage(history: R.History, n_items: int, params: MultiStageParams, als: ALSParams | None,
              content: R.FactorSide | None, catalogue: dict[str, np.ndarray]) -> Stage:
    """Fit the retrievers on ``history`` (built with its timestamps). ``content``: the catalogue's text embeddings
    (fitted once; they do not depend on the interactions)."""
    timestamps = history.stamps
    from recsys.models.implicit_als import factorize
    from recsys.models.weighting import weigh

    side = Fe.ItemSide.of(history, n_items, timestamps, catalogue, params.recent_days,
                         params.trend_half_life_days)
    als_side = als_users = None
    if als is not None and "als" in params.retrievers and len(history.items):
        users = np.repeat(history.users, history.lengths)
        weights = weigh(users, history.items, history.weights.astype(np.float64), timestamps, als.weighting)
        # the shape implicit_als gives the same rows, so the run's implicit_als fit is this one (factor_cache)
        matrix = sp.csr_matrix((weights.astype(np.float32), (users, history.items)),
                               shape=(int(history.users.max()) + 1, int(history.items.max()) + 1))
        user_factors, item_factors, _ = factorize(matrix, als)
        trained = np.unique(history.items)
        als_side = R.FactorSide.of(trained, np.asarray(item_factors)[trained], n_items, als.regularization)
        if use_ann(len(trained), params.retrieval):
            als_side.index = AnnIndex.build(als_side.ids, als_side.vectors, params.retrieval)
        als_users = np.asarray(user_factors, dtype=np.float32)
    neighbours = R.cooccurrence_neighbours(history, n_items, params.neighbours) \
        if {"cooccurrence"} & set(params.retrievers) else None
    return Stage(params, n_items, side, als_side, als_users, content, neighbours)

"""The next items after a session, at request time, from the arrays a snapshot keeps (:mod:`.session_build`).

Every scorer answers ``scores(session)``: a fresh float32 vector over the snapshot's items (``-inf``: never
recommended), the session's item indices oldest first, all of them live. GRU4Rec and co-occurrence are the numpy
scorers the batch lists use (:class:`~recsys.sessions.gru4rec.weights.Gru4RecWeights`,
:class:`~recsys.sessions.cooccurrence.CooccurrenceScorer`), built once per loaded snapshot over its mapped arrays.
``similar_items`` sums the published similar-items lists of the session's last items, the l-th latest weighted
decay^l (the co-occurrence model's recency rule and defaults): what a run without a session model answers with.

Cost per request is the scorer's, then one pass per exclusion over the score vector and an ``argpartition``; the
arrays are read from the mapping, never copied (the GRU4Rec output product over 94K × 128 floats dominates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsys.constants import COOCCURRENCE, GRU4REC
from recsys.serve.denylist import DenyList
from recsys.serve.lists import POPULARITY, pick, popular_list
from recsys.serve.session_build import LAYER_PARTS, LIVE, PREFIX, SIMILAR_ITEMS
from recsys.sessions.cooccurrence import CooccurrenceScorer
from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer
from recsys.sessions.settings import CooccurrenceParams

if TYPE_CHECKING:
    from recsys.serve.snapshot import Snapshot

NEVER = np.float32(-np.inf)
SESSION, POPULAR = "session", "popular"          # the answer's source
Picker = Callable[[np.ndarray, np.ndarray], list[dict[str, Any]]]   # ranked candidates -> the first k kept


class SessionScorer(Protocol):
    name: str
    live: np.ndarray            # bool[n_items]: items it knows as input and may answer with

    def scores(self, session: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class _SessionModel:
    """A session model's numpy scorer (GRU4Rec's weights or the co-occurrence matrix) over the snapshot's items."""

    name: str
    live: np.ndarray
    scorer: Gru4RecWeights | CooccurrenceScorer
    dead: np.ndarray            # items without a row: a zero embedding or an empty row is not a score to trust

    def scores(self, session: np.ndarray) -> np.ndarray:
        scores = self.scorer.next_scores(session)
        scores[self.dead] = NEVER
        return scores


@dataclass(frozen=True)
class _SimilarItems:
    name: str
    live: np.ndarray            # items with a similar-items list
    offsets: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    last_items: int
    decay: float

    def scores(self, session: np.ndarray) -> np.ndarray:
        scores = np.full(len(self.live), NEVER, np.float32)
        session = session[-self.last_items:]
        recency = self.decay ** np.arange(len(session) - 1, -1, -1, dtype=np.float64)   # latest: 1
        lo, hi = self.offsets[session], self.offsets[session + 1]
        items = np.concatenate([self.items[a:b] for a, b in zip(lo.tolist(), hi.tolist())])
        weights = np.concatenate([self.weights[a:b] * w for a, b, w in zip(lo.tolist(), hi.tolist(), recency)])
        found, where = np.unique(items, return_inverse=True)
        scores[found] = np.bincount(where, weights=weights, minlength=len(found))
        return scores


def session_scorer(snapshot: Snapshot) -> SessionScorer:
    """The scorer ``meta.json["session"]`` names, over the snapshot's arrays; ``similar_items`` when it names none
    (an older snapshot) or its arrays are missing."""
    meta = snapshot.meta.get("session") or {}
    name, n_items = meta.get("name"), len(snapshot.items)
    live = snapshot.load(LIVE)
    if name == GRU4REC and live is not None:
        layers = tuple(GruLayer(*(snapshot.load(f"{PREFIX}layer{i}_{part}") for part in LAYER_PARTS))
                       for i in range(meta["layers"]))
        weights = Gru4RecWeights(snapshot.load(f"{PREFIX}item_embeddings"), snapshot.load(f"{PREFIX}item_bias"),
                                 layers, None if meta["shared_embeddings"] else
                                 snapshot.load(f"{PREFIX}input_embeddings"))
        return _SessionModel(name, live, weights, np.flatnonzero(~live))
    if name == COOCCURRENCE and live is not None:
        params = CooccurrenceParams.model_validate(meta["params"])
        matrix = sp.csr_matrix((snapshot.load(f"{PREFIX}scores"), snapshot.load(f"{PREFIX}neighbours"),
                                snapshot.load(f"{PREFIX}offsets")), shape=(n_items, n_items))
        scorer = CooccurrenceScorer(matrix, snapshot.load(f"{PREFIX}popularity"), params.last_items, params.decay)
        return _SessionModel(name, live, scorer, np.flatnonzero(~live))
    recency = CooccurrenceParams.model_validate({k: meta[k] for k in ("last_items", "decay") if k in meta})
    method = meta.get("method") or next(iter(snapshot.similar), None)      # an older snapshot: the first method
    if method is None or method not in snapshot.similar:
        lists = np.zeros(n_items + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32)
    else:
        lists = snapshot.similar[method]
    return _SimilarItems(SIMILAR_ITEMS, np.diff(lists[0]) > 0, *lists, recency.last_items, recency.decay)


@dataclass(frozen=True)
class SessionQuery:
    """A validated request: the session's asins (oldest first), what to leave out, how many to answer."""

    items: list[str]
    k: int
    category: int | None = None
    exclude: frozenset[str] = frozenset()
    user_id: str | None = None


@dataclass(frozen=True)
class SessionAnswer:
    model: str                  # the scorer, or "popularity" when no item of the session is known
    source: str                 # "session" or "popular"
    unknown_items: int          # positions of the session ignored: not in the snapshot, not scored, or denied
    items: list[dict[str, Any]]


def known_positions(scorer: SessionScorer, denylist: DenyList, asins: list[str], indices: np.ndarray) -> np.ndarray:
    """The item index of each of the session's asins (``indices`` in the vocabulary, -1 outside) the scorer can
    read, in order; the others are dropped."""
    keep = indices >= 0
    keep[keep] = scorer.live[indices[keep]]
    if denylist.items:
        keep &= np.fromiter((a not in denylist.items for a in asins), bool, len(asins))
    return indices[keep]


def ranked(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` best finite scores, best first (ties: the lower index), as (indices, scores)."""
    m = min(m, len(scores))
    if m <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    cut = len(scores) - m
    top = np.argpartition(scores, cut)[cut:] if cut > 0 else np.arange(len(scores))
    values = scores[top]
    order = np.lexsort((top, -values))
    top, values = top[order], values[order]
    finite = np.isfinite(values)
    return top[finite], values[finite]


def next_items(scores: np.ndarray, k: int, pick: Picker) -> list[dict[str, Any]]:
    """The first ``k`` of the ranked candidates that ``pick`` keeps (the deny-list filters by asin there): the
    best 2k + 32 first, four times more while the kept fall short and finite candidates remain."""
    m = 2 * k + 32
    while True:
        items, values = ranked(scores, m)
        kept = pick(items, values)
        if len(kept) >= k or len(items) < m or m >= len(scores):
            return kept
        m *= 4


def mask_exclusions(snapshot: Snapshot, scores: np.ndarray, query: SessionQuery, session: np.ndarray,
                    known: np.ndarray) -> None:
    """Never recommend the session's items (those the scorer ignores too), the user's known items, ``exclude``, or
    items of other categories. ``session``: every session item's index, -1 outside the vocabulary."""
    excluded = np.concatenate([session, snapshot.item_indices(sorted(query.exclude))])
    scores[excluded[excluded >= 0]] = NEVER
    scores[known] = NEVER
    if query.category is not None:
        scores[snapshot.item_category != query.category] = NEVER


def recommend(snapshot: Snapshot, denylist: DenyList, query: SessionQuery) -> SessionAnswer:
    """The next items after ``query.items`` by the snapshot's scorer; the popular list when it knows none of them.
    Deleted and denied items, the session's own, the user's known items and ``exclude`` are never answered."""
    scorer: SessionScorer = snapshot.session
    indices = snapshot.item_indices(query.items)
    session = known_positions(scorer, denylist, query.items, indices)
    unknown = len(query.items) - len(session)
    known = (snapshot.known_items(query.user_id) if query.user_id and not denylist.user_erased(query.user_id)
             else np.zeros(0, np.int32))
    if not len(session):
        leave_out = query.exclude | set(query.items) | set(snapshot.asins(known))
        return SessionAnswer(POPULARITY, POPULAR, unknown,
                             popular_list(snapshot, query.category, query.k, denylist, frozenset(leave_out)))
    scores = scorer.scores(session)
    mask_exclusions(snapshot, scores, query, indices, known)
    items = next_items(scores, query.k,
                       lambda ranked_items, ranked_scores: pick(snapshot, ranked_items, ranked_scores, query.k,
                                                                denylist, frozenset(), None))
    return SessionAnswer(scorer.name, SESSION, unknown, items)

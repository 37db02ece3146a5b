"""The ranker's features of each (user, candidate) pair: every retriever's score and rank, the item's popularity
overall and recent, its age, price and rating, the user's activity and recency, and the user's affinity to the item's
category. A retriever that did not propose the item leaves its rank missing (NaN: XGBoost learns a direction for
missing values), but its score is computed for every candidate, so the ranker can compare all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.multistage.retrievers import DAY_MS, History, Retrieved

FEATURES = ("als_score", "als_rank", "content_score", "content_rank", "cooccurrence_score", "cooccurrence_rank",
            "category_popular_rank", "trending_rank", "retrievers", "popularity", "recent_popularity", "trend",
            "item_age_days", "price", "average_rating", "rating_number", "user_interactions", "user_idle_days",
            "category_affinity")


@dataclass
class ItemSide:
    """Per-item arrays indexed by item_idx (NaN/-1: unknown), measured on the rows a stage is fitted on."""

    popularity: np.ndarray          # log1p(interactions)
    recent_popularity: np.ndarray   # log1p(interactions in the last ``recent_days``)
    trend: np.ndarray               # log1p(Σ 0.5^(age_days / trend_half_life_days)): popular now, not over the years
    first_ms: np.ndarray            # first interaction (ms); NaN: never
    price: np.ndarray
    average_rating: np.ndarray
    rating_number: np.ndarray       # log1p(the catalogue's rating count)
    category: np.ndarray            # int32 code, -1: none
    end_ms: float                   # the newest interaction fitted: "now" for ages and recency

    @classmethod
    def of(cls, history: History, n_items: int, timestamps: np.ndarray, catalogue: dict[str, np.ndarray],
           recent_days: float, trend_half_life_days: float) -> ItemSide:
        """``timestamps``: aligned with ``history.items``; ``catalogue``: price, average_rating, rating_number,
        category arrays over item_idx (shorter arrays are padded as unknown)."""
        end = float(timestamps.max(initial=0))
        counts = np.bincount(history.items, minlength=n_items).astype(np.float32)
        recent = np.bincount(history.items[timestamps >= end - recent_days * DAY_MS], minlength=n_items)
        decay = 0.5 ** ((end - timestamps.astype(np.float64)) / (trend_half_life_days * DAY_MS))
        trend = np.bincount(history.items, weights=decay, minlength=n_items)
        first = np.full(n_items, np.inf)
        np.minimum.at(first, history.items, timestamps.astype(np.float64))
        first[np.isinf(first)] = np.nan

        def padded(name: str, fill, dtype) -> np.ndarray:
            out = np.full(n_items, fill, dtype=dtype)
            values = np.asarray(catalogue.get(name, []), dtype=dtype)[:n_items]
            out[: len(values)] = values
            return out

        return cls(np.log1p(counts), np.log1p(recent.astype(np.float32)), np.log1p(trend).astype(np.float32), first,
                   padded("price", np.nan, np.float32), padded("average_rating", np.nan, np.float32),
                   np.log1p(padded("rating_number", np.nan, np.float32)), padded("category", -1, np.int32), end)

    def popular(self, top: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """The ``top`` most popular items of each category and overall (ties to the smaller index)."""
        order = _descending(self.popularity)
        by_category: dict[int, list[int]] = {}
        for item in order.tolist():
            code = int(self.category[item])
            if code >= 0 and len(by_category.setdefault(code, [])) < top:
                by_category[code].append(item)
        return ({c: np.asarray(v, dtype=np.int32) for c, v in by_category.items()},
                order[:top].astype(np.int32))

    def trending(self, top: int) -> np.ndarray:
        """The ``top`` items of highest :attr:`trend` (ties to the smaller index)."""
        return _descending(self.trend)[:top].astype(np.int32)


def _descending(values: np.ndarray) -> np.ndarray:
    """Indices of the positive ``values``, largest first, ties to the smaller index."""
    order = np.lexsort((np.arange(len(values)), -values))
    return order[values[order] > 0]


@dataclass
class Candidates:
    """A block's candidates: ``rows`` index the block's users, ``items`` are item_idx, ``x`` the features."""

    rows: np.ndarray
    items: np.ndarray
    x: np.ndarray


def union(proposals: dict[str, Retrieved], n_items: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The distinct (row, item) pairs any retriever proposed, sorted by row, and where each retriever's proposal
    sits among them (``-1``-free index arrays per retriever)."""
    keys = {name: r.rows.astype(np.int64) * n_items + r.items for name, r in proposals.items()}
    every = np.unique(np.concatenate(list(keys.values()))) if keys else np.zeros(0, np.int64)
    return every // n_items, (every % n_items).astype(np.int32), {
        name: np.searchsorted(every, key) for name, key in keys.items()}


def assemble(history: History, side: ItemSide, proposals: dict[str, Retrieved], scores: dict[str, np.ndarray],
             rows: np.ndarray, items: np.ndarray, where: dict[str, np.ndarray]) -> np.ndarray:
    """The (candidates × :data:`FEATURES`) float32 matrix; ``scores``: per retriever with a score for every pair."""
    n = len(rows)
    x = np.full((n, len(FEATURES)), np.nan, dtype=np.float32)
    column = {name: i for i, name in enumerate(FEATURES)}
    for name, found in proposals.items():
        x[where[name], column[f"{name}_rank"]] = found.ranks
    for name, values in scores.items():
        x[:, column[f"{name}_score"]] = values
    x[:, column["retrievers"]] = 0
    for name in proposals:
        np.add.at(x[:, column["retrievers"]], where[name], 1.0)
    safe = np.clip(items, 0, len(side.popularity) - 1)
    known = items < len(side.popularity)
    for name, values in (("popularity", side.popularity), ("recent_popularity", side.recent_popularity),
                         ("trend", side.trend),
                         ("price", side.price), ("average_rating", side.average_rating),
                         ("rating_number", side.rating_number)):
        x[:, column[name]] = np.where(known, values[safe], np.nan)
    x[:, column["item_age_days"]] = np.where(known, (side.end_ms - side.first_ms[safe]) / DAY_MS, np.nan)
    lengths = history.lengths
    x[:, column["user_interactions"]] = np.log1p(lengths[rows])
    x[:, column["user_idle_days"]] = idle_days(history, side, rows)
    x[:, column["category_affinity"]] = category_affinity(history, side.category, rows, items)
    return x


def idle_days(history: History, side: ItemSide, rows: np.ndarray) -> np.ndarray:
    """Days from each row's latest interaction to the stage's "now" (NaN: no history)."""
    lengths = history.lengths[rows]
    return np.where(lengths > 0, (side.end_ms - history.last_ms[rows]) / DAY_MS, np.nan)


def personalise(x: np.ndarray, history: History, side: ItemSide, rows: np.ndarray,
                als_scores: np.ndarray | None) -> None:
    """Set, in place, the two features users of the same lone item do not share: the ALS score (their factors
    differ by a scale: a user's own confidence) and the user's idleness; ``rows`` index ``history``."""
    if als_scores is not None:
        x[:, FEATURES.index("als_score")] = als_scores
    x[:, FEATURES.index("user_idle_days")] = idle_days(history, side, rows)


def category_affinity(history: History, category: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Share of the user's history in the candidate's category (0 for an item without one)."""
    hist_rows = np.repeat(np.arange(len(history.users)), history.lengths)
    hist_cats = np.where(history.items < len(category), category[np.clip(history.items, 0, len(category) - 1)], -1)
    keep = hist_cats >= 0
    width = int(category.max(initial=-1)) + 2
    pair = hist_rows[keep].astype(np.int64) * width + hist_cats[keep]
    keys, counts = np.unique(pair, return_counts=True)
    cand_cats = np.where(items < len(category), category[np.clip(items, 0, len(category) - 1)], -1)
    query = rows.astype(np.int64) * width + cand_cats
    pos = np.clip(np.searchsorted(keys, query), 0, max(len(keys) - 1, 0))
    hit = (cand_cats >= 0) & (len(keys) > 0) & (keys[pos] == query if len(keys) else False)
    share = np.zeros(len(rows), dtype=np.float32)
    share[hit] = counts[pos[hit]] / np.maximum(history.lengths[rows[hit]], 1)
    return share

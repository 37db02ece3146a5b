"""What every route answers with: the first ``k`` of a ranked list that pass the deny-list and the request's
filters, ranked 1..n again; and the popular list, the answer for whoever has no list of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.constants import ITEM_ID, RANK, SCORE
from recsys.serve.denylist import DenyList

if TYPE_CHECKING:
    from recsys.serve.snapshot import Snapshot

POPULARITY = "popularity"        # the model named when the popular list answers


def pick(snapshot: Snapshot, items: np.ndarray, scores: np.ndarray, k: int, denylist: DenyList,
         exclude: frozenset[str], category: int | None) -> list[dict[str, Any]]:
    """The first ``k`` candidates (rank order) that pass the deny-list, ``exclude`` and ``category``; ranks 1..n.

    Candidates beyond k are the spares the publisher keeps, so removals are backfilled. Decoded in chunks: a long
    popular list costs only what is read.
    """
    out: list[dict[str, Any]] = []
    chunk = max(2 * k, 32)
    for lo in range(0, len(items), chunk):
        idx = np.asarray(items[lo:lo + chunk])
        asins = snapshot.asins(idx)
        cats = snapshot.item_category[idx] if category is not None else None
        for pos, asin in enumerate(asins):
            if asin in denylist.items or asin in exclude or (cats is not None and cats[pos] != category):
                continue
            out.append({ITEM_ID: asin, SCORE: scores[lo + pos], RANK: len(out) + 1})
            if len(out) == k:
                return out
    return out


def popular_list(snapshot: Snapshot, category: int | None, k: int, denylist: DenyList,
                 exclude: frozenset[str]) -> list[dict[str, Any]]:
    code = snapshot.all_category if category is None else category
    if code is None:
        return []
    items, scores = snapshot.popular_slice(code)
    return pick(snapshot, items, scores, k, denylist, exclude, None)

"""The user route blends in the user's session: what they clicked, carted or bought in the last hour.

``POST /v1/events`` records each admitted item event (click, add_to_cart, purchase) of a user who is not erased in
the ledger's ``recent`` table (:func:`remember`, inside the admission's transaction: what is recorded is what was
stored), keyed by the user's pseudonym (:meth:`~recsys.serve.signing.Signer.pseudonym`), the last
``serve.max_session_items`` per user kept. The ledger is the host's one SQLite file, so every gunicorn worker sees
the events any of them took.

``GET /v1/users/<id>/recommendations`` then reads the user's items of the last ``serve.session_window_s``
(:func:`recent_items`: one indexed read; a busy or broken ledger is logged and the lookup goes without its session)
and, if there are any, scores them with the snapshot's session scorer as ``POST /v1/sessions/recommendations`` does
(:func:`~recsys.serve.session_scoring.recommend` with ``user_id``: the user's known items, the session's own items,
``exclude``, ``category``, deleted and denied items never answered). The snapshot is the one that serves the user's
batch list — under an A/B experiment the user's variant's — so one answer is one version. A session the scorer knows
nothing of (items it has no row for, deleted, or outside the version) blends nothing.

The rule (:func:`interleave`): slot i (0-based) of the list goes to the session when
ceil((i + 1) · share) > ceil(i · share), share = ``serve.session_blend``: the session takes the first slot and
ceil(n · share) of the first n, spread evenly (0.5: S B S B …; 0.25: S B B B S B B B …; 1: the session's list).
Each slot takes the best item of its list not already placed, so an item in both lists appears once, at the earlier of
its slots; when a list runs out, the other fills the remaining slots. The blended list leaves out the session's own
items from the batch part too (the user acted on them since the batch ran). Items keep the score of the list they
came from (the two lists' scores are not on one scale: the rank is the order). A user without a batch list (an
anonymous session id, a user newer than the version) gets the session's list, the popular list filling it if short.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from recsys.constants import ITEM_EVENT_TYPES, ITEM_ID, RANK, USER_ID
from recsys.serve.denylist import DenyList
from recsys.serve.events import EVENT_TYPE
from recsys.serve.ledger import Entry, Ledger
from recsys.serve.session_scoring import SESSION, SessionAnswer, SessionQuery, recommend
from recsys.serve.signing import Signer

if TYPE_CHECKING:
    from recsys.serve.snapshot import Snapshot

log = logging.getLogger(__name__)

SHARE_DENOMINATOR = 1_000          # the share as an exact fraction: 0.3 × 10 slots is 3, not 3.0000000000000004


def remember(entry: Entry, signer: Signer, records: Iterable[dict[str, Any]], cap: int) -> None:
    """Record the item events of ``records`` (admitted, of users not erased) as their users' recent items."""
    rows = [(signer.pseudonym(r[USER_ID]), r[ITEM_ID]) for r in records if r[EVENT_TYPE] in ITEM_EVENT_TYPES]
    if rows:
        entry.record_recent(rows, cap)


def recent_items(ledger: Ledger, signer: Signer, user_id: str, now: float, limit: int) -> list[str]:
    """The user's recent items, oldest first; none when the ledger cannot answer (logged, never raised)."""
    try:
        return ledger.recent(signer.pseudonym(user_id), now, limit)
    except sqlite3.Error as exc:
        log.warning("ledger unreadable (%s: %s): a user lookup is served without its recent session",
                    type(exc).__name__, exc)
        return []


@dataclass(frozen=True)
class Session:
    """A user's recent session and what the session scorer answers for it."""

    items: list[str]             # the recent items, oldest first (what session_items counts)
    answer: SessionAnswer


def session_of(snapshot: Snapshot, denylist: DenyList, items: list[str], user_id: str, k: int,
               category: int | None, exclude: frozenset[str]) -> Session | None:
    """The session scorer's answer for ``items`` (a user not erased); None when it knows none of them."""
    if not items:
        return None
    answer = recommend(snapshot, denylist, SessionQuery(items, k, category, exclude, user_id))
    return Session(items, answer) if answer.source == SESSION else None


def session_slots(n: int, share: float) -> list[bool]:
    """Which of the first ``n`` slots are the session's: slot i when ceil((i + 1) · share) > ceil(i · share)."""
    exact = Fraction(share).limit_denominator(SHARE_DENOMINATOR)
    return [math.ceil((i + 1) * exact) > math.ceil(i * exact) for i in range(n)]


def interleave(batch: list[dict[str, Any]], session: list[dict[str, Any]], k: int,
               share: float) -> list[dict[str, Any]]:
    """At most ``k`` items of the two ranked lists by :func:`session_slots`, each once, ranked 1..n again."""
    sources, positions = (batch, session), [0, 0]
    placed: set[str] = set()
    out: list[dict[str, Any]] = []
    for slot in session_slots(k, share):
        for which in (int(slot), 1 - int(slot)):     # the slot's list, else the other when it has run out
            items = sources[which]
            while positions[which] < len(items) and items[positions[which]][ITEM_ID] in placed:
                positions[which] += 1
            if positions[which] < len(items):
                item = items[positions[which]]
                placed.add(item[ITEM_ID])
                out.append({**item, RANK: len(out) + 1})
                break
        else:
            break                                    # both lists used up
    return out

"""Which events the API takes: only events about a list it served, so no client can write training data it was not
shown (the contract for a front end is in docs/api.md).

An event is taken when its ``request_id`` is one the API signed (:mod:`recsys.serve.signing`) within
``serve.event_window_s``; an event carrying ``items`` (an impression) proves them with the signature, for the same
user; any other event follows an impression of its ``request_id`` taken before (or earlier in the same batch) and,
if it names an item, names one that impression showed. Each (request id, event type, item) is taken once: a replay
is answered as a duplicate and stores nothing. A list served to no user (``/v1/popular``, ``/similar``) takes
events only of users the served snapshot has lists for, so events never create a user. A batch is taken whole or
refused whole; a client spends one token per event (``serve.events_per_s``, ``serve.events_burst``), and the log has
a disk quota (``serve.events_max_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recsys.constants import ITEM_EVENT_TYPES, ITEM_ID, USER_ID
from recsys.serve.errors import ApiError
from recsys.serve.events import EVENT_TYPE, ITEMS, REQUEST_ID
from recsys.serve.ledger import Entry, Ledger, viewer_digest
from recsys.serve.settings import ServeSettings
from recsys.serve.signing import Issued, Signer, parse

IMPRESSION = "impression"
MAX_FUTURE_MS = 60_000            # a request id issued "later" than now by more than this clock skew is refused


@dataclass(frozen=True)
class Admitted:
    event_ids: list[str]          # of the events stored, in batch order
    duplicates: int               # events taken before (replays), stored again never


def _forged(message: str) -> ApiError:
    return ApiError(403, "untrusted_event", message)


def _issued(record: dict[str, Any], now_ms: int, window_ms: int) -> Issued:
    issued = parse(record[REQUEST_ID])
    if issued is None:
        raise _forged("request_id is not one the API issued")
    if not -MAX_FUTURE_MS <= now_ms - issued.issued_ms <= window_ms:
        raise ApiError(403, "expired_request_id", f"events are taken for {window_ms // 1000} s after the list "
                       "was served")
    return issued


def _signed_viewer(signer: Signer, issued: Issued, record: dict[str, Any], known_user: Callable[[str], bool]) -> str:
    """The viewer digest of a list whose items an event carries, if the signature proves them; else refused."""
    user, items = record[USER_ID], record[ITEMS]
    if signer.verify(issued, user, items):
        return viewer_digest(record[REQUEST_ID], user)
    if signer.verify(issued, "", items) and known_user(user):
        return ""
    raise _forged("request_id does not sign these items for this user")


def admit(records: list[dict[str, Any]], *, signer: Signer, ledger: Ledger, settings: ServeSettings, client: str,
          known_user: Callable[[str], bool], now_s: float,
          store: Callable[[list[dict[str, Any]], Entry], list[str]], log_bytes: Callable[[], int]) -> Admitted:
    """Check ``records`` (validated events, in batch order), then hand the new ones to ``store`` inside the
    ledger's transaction (with its entry, for what the store records there too: recent items), so what is marked
    taken is what was stored; raises :class:`ApiError` to refuse."""
    now_ms, window_ms = int(now_s * 1000), int(settings.event_window_s * 1000)
    checked = []
    for record in records:                          # the CPU part first, outside the ledger's lock
        issued = _issued(record, now_ms, window_ms)
        viewer = _signed_viewer(signer, issued, record, known_user) if record[ITEMS] is not None else None
        checked.append((record, issued, viewer))
    with ledger.transaction(now_s, settings.events_burst / settings.events_per_s) as entry:
        entry.charge(client, len(records), settings.events_per_s, settings.events_burst)
        kept, duplicates = [], 0
        for record, issued, viewer in checked:
            expires = (issued.issued_ms + window_ms) / 1000.0
            request_id, shown = record[REQUEST_ID], record[ITEMS]
            if viewer is None:
                found = entry.impression(request_id)
                if found is None:
                    raise _forged("no impression of this request_id was taken: send the impression event first")
                viewer, shown = found
                if viewer != (viewer_digest(request_id, record[USER_ID]) if viewer else ""):
                    raise _forged("request_id was served to another user")
                if not viewer and not known_user(record[USER_ID]):
                    raise _forged("a list served to no user takes events only of users with published lists")
            elif record[EVENT_TYPE] == IMPRESSION:
                entry.record_impression(request_id, viewer, shown, expires)
            item = record[ITEM_ID]
            if record[EVENT_TYPE] in ITEM_EVENT_TYPES and item not in shown:
                raise _forged("parent_asin was not in the list of this request_id")
            if entry.take(f"{request_id}.{record[EVENT_TYPE]}.{item or ''}", expires):
                kept.append(record)
            else:
                duplicates += 1
        if kept and log_bytes() >= settings.events_max_bytes:
            raise ApiError(507, "insufficient_storage", "the event log is full; events are not taken until it is "
                           "compacted")
        return Admitted(store(kept, entry) if kept else [], duplicates)

"""Trusted events: POST /v1/events takes only events about a list the API served (recsys.serve.admission).

Each test sends what an attacker or a careless client would and checks both the answer and the log: a refused or
replayed event stores nothing. The warehouse is test_serve's fixture world (U1's v2 list starts I01, I07, I02, I08;
U1 and U2 have lists, "NEW" has none)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recsys.serve.app import create_app
from recsys.serve.events import read_events
from recsys.serve.signing import Signer, parse
from test_serve import make_warehouse, serve_settings

KEY, OLD_KEY = "k" * 32, "o" * 32


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return make_warehouse(tmp_path / "wh")


def _app(warehouse: Path, **settings):
    return create_app(warehouse, serve_settings(signing_keys=[KEY], **settings))


@pytest.fixture
def client(warehouse):
    return _app(warehouse).test_client()


def _stored(warehouse: Path) -> list[dict]:
    return list(read_events(warehouse / "_serving" / "events"))


def _served(client, user: str = "U1", k: int = 4) -> tuple[str, list[str]]:
    body = client.get(f"/v1/users/{user}/recommendations?k={k}").get_json()
    return body["request_id"], [i["parent_asin"] for i in body["items"]]


def _impression(user: str, request_id: str, items: list[str]) -> dict:
    return {"event_type": "impression", "user_id": user, "request_id": request_id, "items": items}


def _event(kind: str, user: str, request_id: str, item: str | None = None) -> dict:
    return {"event_type": kind, "user_id": user, "request_id": request_id,
            **({"parent_asin": item} if item else {})}


def _refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json" and response.get_json()["error"]["code"] == code


def test_an_impression_and_its_click_are_taken(client, warehouse):
    request_id, items = _served(client)
    answer = client.post("/v1/events", json=[_impression("U1", request_id, items),
                                             _event("click", "U1", request_id, items[1])])
    assert answer.status_code == 202 and answer.get_json()["accepted"] == 2
    assert [(e["event_type"], e["parent_asin"]) for e in _stored(warehouse)] == [("impression", None),
                                                                                 ("click", items[1])]


@pytest.mark.parametrize("forge", [
    lambda rid, items: ("U1", rid[:11] + "0" * 44, items),             # a request id the API never issued
    lambda rid, items: ("U1", rid[:-1] + ("0" if rid[-1] != "0" else "1"), items),   # tag altered
    lambda rid, items: ("U1", rid, items[:2] + ["I09"] + items[3:]),   # the list shown, one item swapped
    lambda rid, items: ("U2", rid, items),                            # U1's list, claimed by U2
    lambda rid, items: ("NEW", rid, items),                           # ... or by a user nobody served
    lambda rid, items: ("U1", "r-made-up", items),                    # the old free-form ids
])
def test_a_forged_impression_is_refused_and_nothing_is_stored(client, warehouse, forge):
    user, request_id, items = forge(*_served(client))
    _refused(client.post("/v1/events", json=_impression(user, request_id, items)), 403, "untrusted_event")
    assert _stored(warehouse) == []


def test_item_events_need_an_item_the_impression_showed_to_the_same_user(client, warehouse):
    request_id, items = _served(client)
    _refused(client.post("/v1/events", json=_event("purchase", "U1", request_id, items[0])), 403,
             "untrusted_event")                                            # no impression taken yet
    assert client.post("/v1/events", json=_impression("U1", request_id, items)).status_code == 202
    _refused(client.post("/v1/events", json=_event("purchase", "U1", request_id, "I09")), 403,
             "untrusted_event")                                            # I09 was not shown
    _refused(client.post("/v1/events", json=_event("purchase", "U2", request_id, items[0])), 403,
             "untrusted_event")                                            # shown to U1, not U2
    _refused(client.post("/v1/events", json=[_event("click", "U1", request_id, items[0]),
                                             _event("purchase", "U1", request_id, "I09")]), 403, "untrusted_event")
    assert [e["event_type"] for e in _stored(warehouse)] == ["impression"]   # a refused batch stores nothing


def test_a_replayed_event_is_a_duplicate_and_stores_nothing(client, warehouse):
    request_id, items = _served(client)
    batch = [_impression("U1", request_id, items), _event("purchase", "U1", request_id, items[0])]
    assert client.post("/v1/events", json=batch).get_json() | {"event_ids": []} == {
        "accepted": 2, "duplicates": 0, "event_ids": []}
    for _ in range(3):
        again = client.post("/v1/events", json=batch + [_event("purchase", "U1", request_id, items[0])])
        assert again.status_code == 202 and again.get_json() == {"accepted": 0, "event_ids": [], "duplicates": 3}
    assert len(_stored(warehouse)) == 2
    second = client.post("/v1/events", json=_event("purchase", "U1", request_id, items[1]))   # another item: new
    assert second.get_json()["accepted"] == 1


def test_replays_are_caught_across_processes_sharing_the_ledger(warehouse):
    first, second = _app(warehouse).test_client(), _app(warehouse).test_client()
    request_id, items = _served(first)
    assert first.post("/v1/events", json=_impression("U1", request_id, items)).get_json()["accepted"] == 1
    assert second.post("/v1/events", json=_impression("U1", request_id, items)).get_json()["duplicates"] == 1
    assert second.post("/v1/events", json=_event("click", "U1", request_id, items[0])).get_json()["accepted"] == 1
    assert len(_stored(warehouse)) == 2


def test_ts_is_the_servers_clock_and_a_client_ts_is_refused(client, warehouse):
    request_id, items = _served(client)
    _refused(client.post("/v1/events", json=_impression("U1", request_id, items) | {"ts": "2021-01-01T00:00:00Z"}),
             400, "invalid_event")
    before = datetime.now(timezone.utc)
    assert client.post("/v1/events", json=_impression("U1", request_id, items)).status_code == 202
    after = datetime.now(timezone.utc)
    (event,) = _stored(warehouse)
    stamped = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= stamped <= after


def test_a_burst_over_the_client_budget_gets_429_json_and_stores_nothing_more(warehouse):
    client = _app(warehouse, events_per_s=0.01, events_burst=5, max_event_batch=5).test_client()
    request_id, items = _served(client)
    taken = client.post("/v1/events", json=[_impression("U1", request_id, items)]
                        + [_event("click", "U1", request_id, item) for item in items])
    assert taken.status_code == 202 and taken.get_json()["accepted"] == 5
    other_id, other_items = _served(client, "U2")
    refused = client.post("/v1/events", json=_impression("U2", other_id, other_items))
    _refused(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(_stored(warehouse)) == 5


def test_a_full_event_log_gets_507_json(warehouse):
    client = _app(warehouse, events_max_bytes=1).test_client()
    request_id, items = _served(client)
    assert client.post("/v1/events", json=_impression("U1", request_id, items)).status_code == 202   # was empty
    _refused(client.post("/v1/events", json=_event("click", "U1", request_id, items[0])), 507,
             "insufficient_storage")
    assert len(_stored(warehouse)) == 1
    retry = client.post("/v1/events", json=_event("click", "U1", request_id, items[0]))
    assert retry.status_code == 507                           # the refused click was not marked taken


def test_events_are_taken_only_within_the_window(warehouse):
    client = _app(warehouse, event_window_s=60).test_client()
    signer = Signer([KEY])
    items = _served(client)[1]
    stale = signer.sign(int(time.time() * 1000) - 61_000, "U1", items)
    _refused(client.post("/v1/events", json=_impression("U1", stale, items)), 403, "expired_request_id")
    fresh = signer.sign(int(time.time() * 1000) - 50_000, "U1", items)
    assert client.post("/v1/events", json=_impression("U1", fresh, items)).status_code == 202


def test_lists_served_to_no_user_take_events_only_of_users_with_lists(client, warehouse):
    body = client.get("/v1/popular?k=3").get_json()
    request_id, items = body["request_id"], [i["parent_asin"] for i in body["items"]]
    _refused(client.post("/v1/events", json=_impression("NEW", request_id, items)), 403, "untrusted_event")
    assert client.post("/v1/events", json=[_impression("U1", request_id, items),
                                           _event("purchase", "U1", request_id, items[0])]).status_code == 202
    _refused(client.post("/v1/events", json=_event("purchase", "NEW", request_id, items[0])), 403,
             "untrusted_event")
    assert {e["user_id"] for e in _stored(warehouse)} == {"U1"}                # no event-only user created


def test_a_cold_user_takes_events_on_the_list_signed_for_them(client, warehouse):
    request_id, items = _served(client, "NEW")
    assert client.post("/v1/events", json=[_impression("NEW", request_id, items),
                                           _event("click", "NEW", request_id, items[0])]).status_code == 202
    assert {e["user_id"] for e in _stored(warehouse)} == {"NEW"}


def test_keys_rotate_without_downtime(warehouse):
    old = create_app(warehouse, serve_settings(signing_keys=[OLD_KEY])).test_client()
    request_id, items = _served(old)
    rotated = create_app(warehouse, serve_settings(signing_keys=[KEY, OLD_KEY])).test_client()
    assert rotated.post("/v1/events", json=_impression("U1", request_id, items)).status_code == 202
    new_id = _served(rotated)[0]
    assert Signer([KEY]).verify(parse(new_id), "U1", items)                  # the first key signs
    retired = create_app(warehouse, serve_settings(signing_keys=[KEY])).test_client()
    _refused(retired.post("/v1/events", json=_impression("U1", _served(old)[0], items)), 403, "untrusted_event")

"""Who a request comes from behind a proxy (recsys.serve.clients): X-Forwarded-For is believed only from the proxies
of ``serve.trusted_proxies``, and then only its rightmost hop that is no trusted proxy; the event budget and the
loopback rule of /metrics follow that client."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from recsys.serve.app import create_app
from recsys.serve.clients import ClientAddress
from test_api_events import KEY, _impression, _refused, _served, _stored
from test_serve import make_warehouse, serve_settings

PROXY, INNER_PROXY = "10.0.0.1", "10.0.0.2"
TRUSTED = [ip_network("10.0.0.0/8"), ip_network("::1/128")]


@pytest.mark.parametrize("peer, forwarded, client", [
    ("198.51.100.7", ["203.0.113.1"], "198.51.100.7"),                   # untrusted peer: its XFF is spoofed
    (PROXY, [], PROXY),                                                  # the proxy's own request
    (PROXY, ["203.0.113.1"], "203.0.113.1"),
    (PROXY, ["192.0.2.66, 203.0.113.1"], "203.0.113.1"),                 # the client's own XFF entry is ignored
    (PROXY, ["192.0.2.66", f"203.0.113.1, {INNER_PROXY}"], "203.0.113.1"),   # two headers, two proxies
    (PROXY, [f"{INNER_PROXY}, 10.9.9.9"], INNER_PROXY),                  # every hop trusted: the farthest
    (PROXY, ["203.0.113.1, not-an-ip"], PROXY),                          # garbage: the proxy's budget, not a new one
    ("::ffff:10.0.0.1", [" 2001:db8::5 "], "2001:db8::5"),               # IPv4-mapped peer, spaces around a hop
    ("::1", ["203.0.113.1"], "203.0.113.1"),
])
def test_the_client_is_the_rightmost_untrusted_hop_behind_a_trusted_peer(peer, forwarded, client):
    assert ClientAddress(TRUSTED)(peer, forwarded) == client


def test_without_trusted_proxies_the_peer_is_the_client():
    assert ClientAddress([])(PROXY, ["203.0.113.1"]) == PROXY


@pytest.fixture
def warehouse(tmp_path):
    return make_warehouse(tmp_path / "wh")


def _post_impression(client, user: str, peer: str, forwarded: str | None):
    request_id, items = _served(client, user)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/v1/events", json=_impression(user, request_id, items), headers=headers,
                       environ_base={"REMOTE_ADDR": peer})


def test_clients_behind_a_trusted_proxy_each_have_their_own_event_budget(warehouse):
    app = create_app(warehouse, serve_settings(signing_keys=[KEY], trusted_proxies=["10.0.0.0/8"], events_per_s=0.01,
                                               events_burst=1, max_event_batch=1))
    client = app.test_client()
    assert _post_impression(client, "U1", PROXY, "203.0.113.1").status_code == 202
    assert _post_impression(client, "U2", PROXY, "203.0.113.2").status_code == 202     # another client, its budget
    _refused(_post_impression(client, "U2", PROXY, "192.0.2.9, 203.0.113.1"), 429, "rate_limited")
    assert len(_stored(warehouse)) == 2


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_gets_no_fresh_budget(warehouse):
    app = create_app(warehouse, serve_settings(signing_keys=[KEY], trusted_proxies=["10.0.0.0/8"], events_per_s=0.01,
                                               events_burst=1, max_event_batch=1))
    client = app.test_client()
    assert _post_impression(client, "U1", "198.51.100.7", "203.0.113.1").status_code == 202
    _refused(_post_impression(client, "U2", "198.51.100.7", "203.0.113.2"), 429, "rate_limited")
    assert len(_stored(warehouse)) == 1


def test_metrics_behind_a_proxy_on_loopback_answer_only_loopback_clients(warehouse):
    client = create_app(warehouse, serve_settings(trusted_proxies=["127.0.0.1/32"])).test_client()
    loopback = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/metrics", environ_base=loopback).status_code == 200                  # the host itself
    forwarded = client.get("/metrics", environ_base=loopback, headers={"X-Forwarded-For": "203.0.113.1"})
    assert forwarded.status_code == 403 and forwarded.get_json()["error"]["code"] == "forbidden"

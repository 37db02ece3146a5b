"""/metrics is not for anyone on the network: loopback clients only, or a bearer of ``serve.metrics_token``."""

from __future__ import annotations

import pytest

from recsys.serve.app import create_app
from test_serve import make_warehouse, serve_settings

REMOTE = {"REMOTE_ADDR": "10.1.2.3"}
TOKEN = "metrics-token-0123456789"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    return make_warehouse(tmp_path_factory.mktemp("metrics") / "wh")


def _error_code(response) -> str:
    assert response.mimetype == "application/json"
    return response.get_json()["error"]["code"]


def test_without_a_token_only_loopback_clients_read_metrics(warehouse):
    client = create_app(warehouse, serve_settings()).test_client()
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    refused = client.get("/metrics", environ_base=REMOTE)
    assert refused.status_code == 403 and _error_code(refused) == "forbidden"
    assert b"recsys_" not in refused.get_data()


def test_with_a_token_only_its_bearer_reads_metrics_wherever_it_is(warehouse):
    client = create_app(warehouse, serve_settings(metrics_token=TOKEN)).test_client()
    ok = client.get("/metrics", environ_base=REMOTE, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and b"recsys_snapshot_loaded" in ok.get_data()
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
        for remote in (REMOTE, {"REMOTE_ADDR": "127.0.0.1"}):      # loopback is no exemption once a token is set
            refused = client.get("/metrics", environ_base=remote, headers=headers)
            assert refused.status_code == 401 and _error_code(refused) == "unauthorized"
            assert refused.headers["WWW-Authenticate"] == "Bearer"

"""/openapi.json describes every route, and real answers — successes and refusals — validate against it."""

from __future__ import annotations

import re

import pytest
from jsonschema import Draft202012Validator

from recsys.serve.app import create_app
from test_serve import make_warehouse, serve_settings


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    warehouse = make_warehouse(tmp_path_factory.mktemp("openapi") / "wh")
    return create_app(warehouse, serve_settings(signing_keys=["k" * 32], events_burst=100, events_per_s=0.01))


@pytest.fixture(scope="module")
def spec(app):
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def _validator(spec: dict, schema: dict) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": spec["components"]})


def _check(spec: dict, template: str, method: str, response) -> None:
    """The answer's body validates against what the spec says ``method template`` answers with its status."""
    responses = spec["paths"][template][method.lower()]["responses"]
    described = responses.get(str(response.status_code), responses.get("default"))
    assert described is not None, f"{method} {template} {response.status_code} is not described"
    schema = described["content"][response.mimetype]["schema"]
    _validator(spec, schema).validate(response.get_json())


def test_every_route_and_method_is_described(app, spec):
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(path, method) for path, operations in spec["paths"].items() for method in operations}
    assert routes == described
    assert spec["openapi"].startswith("3.1")


def test_real_answers_validate_against_the_spec(app, spec):
    client = app.test_client()
    mine = client.get("/v1/users/U1/recommendations?k=3")
    for template, url in [
        ("/v1/users/{user_id}/recommendations", "/v1/users/U1/recommendations?k=3"),
        ("/v1/users/{user_id}/recommendations", "/v1/users/NEW/recommendations?exclude=I01"),
        ("/v1/users/{user_id}/recommendations", "/v1/users/U1/recommendations?k=0"),
        ("/v1/users/{user_id}/recommendations", "/v1/users/U1/recommendations?category=Nope"),
        ("/v1/items/{parent_asin}/similar", "/v1/items/I01/similar?method=als"),
        ("/v1/items/{parent_asin}/similar", "/v1/items/I99/similar"),
        ("/v1/popular", "/v1/popular?k=2"),
        ("/health", "/health"),
        ("/ready", "/ready"),
    ]:
        _check(spec, template, "GET", client.get(url))
    for sent in ({"items": ["I01"], "k": 2}, {"items": ["NOPE"], "user_id": "U1"}, {"items": []},
                 {"items": ["I01"], "category": "Nope"}):                                       # 200, 200, 400, 404
        _check(spec, "/v1/sessions/recommendations", "POST", client.post("/v1/sessions/recommendations", json=sent))
    for refused in (client.post("/v1/users/U1/recommendations"), client.get("/nowhere")):     # 405, 404
        _validator(spec, {"$ref": "#/components/schemas/Error"}).validate(refused.get_json())
    body = mine.get_json()
    items = [i["parent_asin"] for i in body["items"]]
    events = [{"event_type": "impression", "user_id": "U1", "request_id": body["request_id"], "items": items},
              {"event_type": "click", "user_id": "U1", "request_id": body["request_id"], "parent_asin": items[0]}]
    for sent in (events, events, events[1] | {"parent_asin": "I99"}, {"event_type": "like"}, [events[0]] * 101,
                 [events[0]] * 100):
        _check(spec, "/v1/events", "POST", client.post("/v1/events", json=sent))        # 202, 202, 403, 400, 400, 429
    assert client.post("/v1/events", json=[events[0]] * 100).status_code == 429


def test_the_event_contract_in_the_spec_is_the_one_the_api_keeps(spec):
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = _validator(spec, body)
    good = {"event_type": "click", "user_id": "U1", "request_id": "a" * 55, "parent_asin": "I01"}
    validator.validate(good)
    validator.validate([good] * 100)
    for bad in (good | {"ts": "2024-01-01T00:00:00Z"}, good | {"user_id": "U1\n"}, good | {"event_type": "like"},
                [good] * 101, []):
        assert not validator.is_valid(bad), bad


def test_the_session_contract_in_the_spec_is_the_one_the_api_keeps(app, spec):
    body = spec["paths"]["/v1/sessions/recommendations"]["post"]["requestBody"]["content"]["application/json"]
    validator = _validator(spec, body["schema"])
    client = app.test_client()
    good = {"items": ["I01"] * 200, "k": 100, "user_id": "U1", "category": "Toys", "exclude": ["I02"] * 100}
    validator.validate(good)
    assert client.post("/v1/sessions/recommendations", json=good).status_code == 200
    for bad in ({"items": []}, {"items": ["I01"] * 201}, good | {"k": 0}, good | {"k": 101}, good | {"x": 1},
                good | {"items": ["I01\n"]}, good | {"exclude": ["I02"] * 101}, {"k": 3}):
        assert not validator.is_valid(bad), bad
        assert client.post("/v1/sessions/recommendations", json=bad).status_code == 400, bad


def test_blended_user_answers_validate_against_the_spec(spec, tmp_path):
    client = create_app(make_warehouse(tmp_path / "wh"), serve_settings(signing_keys=["k" * 32])).test_client()
    for user in ("U1", "NEW"):                    # a user with a list, and one without
        body = client.get(f"/v1/users/{user}/recommendations?k=3").get_json()
        events = [{"event_type": "impression", "user_id": user, "request_id": body["request_id"],
                   "items": [i["parent_asin"] for i in body["items"]]},
                  {"event_type": "click", "user_id": user, "request_id": body["request_id"], "parent_asin": "I01"}]
        assert client.post("/v1/events", json=events).status_code == 202
        answer = client.get(f"/v1/users/{user}/recommendations?k=3")
        assert answer.get_json()["source"] == ("personalized+session" if user == "U1" else "session")
        assert answer.get_json()["session_items"] == 1
        _check(spec, "/v1/users/{user_id}/recommendations", "GET", answer)
    schema = spec["components"]["schemas"]["UserRecommendations"]
    assert set(schema["properties"]["source"]["enum"]) == {"personalized", "popular", "personalized+session",
                                                          "session"}

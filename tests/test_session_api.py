"""POST /v1/sessions/recommendations over hand-made snapshots (delta-rs tables, no Spark): the scorer chosen from
the run's recorded HR@20, its arrays re-keyed onto the snapshot's items, known answers of each scorer (GRU4Rec by its
own numpy forward, co-occurrence and the similar-items fallback by hand), every exclusion, and hostile bodies. Then
the user route's blend of the user's recent session (recsys.serve.blend): known answers merged by hand from the
session scorer's answer and the batch list, expiry on an injected clock, erasure, deletions, share 0, two apps on one
ledger (two gunicorn workers), A/B variants, a busy ledger, items nobody knows, and 10,000 events of one user.

The published version ``s1`` of run ``s-run`` is the current one; ``make_warehouse`` (test_serve) adds the older
versions, the salt and the deletion of I05. Model items are indexed differently from the snapshot's vocabulary on
purpose, and name I99 (published nowhere) and I05 (deleted), which a snapshot must drop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from hypothesis import given, settings as hsettings, strategies as st

from recsys import constants as C
from recsys.serve.app import create_app
from recsys.serve.signing import Signer
from recsys.serve.snapshot import Snapshot, build_snapshot
from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer
from test_serve import TS, assert_json_error, delete, make_warehouse, publish, serve_settings

RUN = "s-run"
URL = "/v1/sessions/recommendations"
SPEC = {
    "model": C.GRU4REC, "published_at": datetime(2024, 5, 1, tzinfo=timezone.utc),
    "topk": {"U1": ["I03", "I04"], "U2": ["I01"], "U9": ["I02"]},
    "similar": {("I01", "als"): ["I02", "I03", "I04"], ("I02", "als"): ["I03", "I06"], ("I07", "content"): ["I08"]},
    "popular": {"__all__": ["I05", "I06", "I01", "I02", "I03", "I04", "I07", "I08"],
                "Appliances": ["I05", "I06", "I01", "I02", "I03", "I04"], "Toys": ["I07", "I08"]},
}
ITEMS = [f"I{i:02d}" for i in range(1, 13)]          # the gold item index; I05 is deleted
KNOWN = {"U1": ["I06", "I08"], "U2": ["I03"]}        # gold/interactions
GRU_ITEMS = ["I07", "I01", "I02", "I03", "I99", "I05", "I08"]       # the model's own item indices
COOC_ITEMS = ["I01", "I02", "I03", "I04", "I06", "I05"]


def _gold(root: Path) -> None:
    users = sorted({*KNOWN, *SPEC["topk"]})
    write_deltalake(root / C.USER_INDEX, pa.table({C.USER_ID: users, C.USER_IDX: pa.array(range(len(users)),
                                                                                          pa.int32())}))
    write_deltalake(root / C.ITEM_INDEX, pa.table({C.ITEM_ID: ITEMS, C.ITEM_IDX: pa.array(range(len(ITEMS)),
                                                                                          pa.int32()),
                                                   C.CATEGORY: ["x"] * len(ITEMS),
                                                   "deleted": [a == "I05" for a in ITEMS]}))
    rows = [(users.index(u), ITEMS.index(a)) for u, items in KNOWN.items() for a in items]
    write_deltalake(root / C.INTERACTIONS, pa.table({C.USER_IDX: pa.array([u for u, _ in rows], pa.int32()),
                                                     C.ITEM_IDX: pa.array([i for _, i in rows], pa.int32())}))


def gru4rec_weights() -> Gru4RecWeights:
    rng = np.random.default_rng(7)
    n, hidden = len(GRU_ITEMS), 4

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32)

    layer = GruLayer(normal(3 * hidden, hidden), normal(3 * hidden, hidden), normal(3 * hidden), normal(3 * hidden))
    return Gru4RecWeights(normal(n, hidden), normal(n), (layer,))


def cooccurrence_scorer():
    """Rows by hand: I01 → I02 0.6, I03 0.3, I05 0.9 (deleted); I02 → I03 0.5, I04 0.2. Popularity 5, 4, 3, 2, 1, 9."""
    import scipy.sparse as sp

    from recsys.sessions.cooccurrence import CooccurrenceScorer

    i = COOC_ITEMS.index
    entries = [(i("I01"), i("I02"), 0.6), (i("I01"), i("I03"), 0.3), (i("I01"), i("I05"), 0.9),
               (i("I02"), i("I03"), 0.5), (i("I02"), i("I04"), 0.2)]
    rows, cols, values = zip(*entries)
    n = len(COOC_ITEMS)
    matrix = sp.csr_matrix((np.array(values, np.float32), (rows, cols)), shape=(n, n))
    return CooccurrenceScorer(matrix, np.array([5, 4, 3, 2, 1, 9], np.float32), last_items=2, decay=0.5)


def _session_model(root: Path, name: str, hr: float) -> None:
    """The model's folder as session_model saves it, its registry row and its evaluated HR@20 in ops/runs."""
    from recsys.session_model import NEIGHBOURS, write_embeddings, write_neighbours
    from recsys.sessions.settings import CooccurrenceParams

    folder = root / "models" / name / RUN
    folder.mkdir(parents=True)
    asins = GRU_ITEMS if name == C.GRU4REC else COOC_ITEMS
    ids = np.arange(len(asins), dtype=np.int32)
    if name == C.GRU4REC:
        write_embeddings(folder, gru4rec_weights(), ids, pa.chunked_array([asins]))
        params = {}
    else:
        write_neighbours(folder / NEIGHBOURS, cooccurrence_scorer(), ids, pa.chunked_array([asins]))
        params = CooccurrenceParams(last_items=2, decay=0.5).model_dump()
    (folder / "model.json").write_text(json.dumps({"name": name, "params": params, "info": {},
                                                   "n_items": len(asins)}))
    now = datetime(2024, 5, 1, tzinfo=timezone.utc)
    write_deltalake(root / C.MODEL_REGISTRY, pa.Table.from_pylist([{
        "run_id": RUN, "model": name, "stage": "candidate", "model_path": f"models/{name}/{RUN}", "params": "{}",
        "metric": None, "reason": "", "updated_at": now}], schema=pa.schema([
            ("run_id", pa.string()), ("model", pa.string()), ("stage", pa.string()), ("model_path", pa.string()),
            ("params", pa.string()), ("metric", pa.float64()), ("reason", pa.string()), ("updated_at", TS)])),
        mode="append")
    write_deltalake(root / C.RUNS, pa.Table.from_pylist([
        {"run_id": RUN, "model": name, "stage": stage, "metrics": metrics, "recorded_at": now}
        for stage, metrics in (("trial", [("map@10", 0.9)]), ("candidate", [("hr@20", hr), ("map@10", 0.1)]))],
        schema=pa.schema([("run_id", pa.string()), ("model", pa.string()), ("stage", pa.string()),
                          ("metrics", pa.map_(pa.string(), pa.float64())), ("recorded_at", TS)])), mode="append")


def session_warehouse(root: Path, models: dict[str, float], spec: dict = SPEC) -> Path:
    """The test_serve warehouse, gold indices and interactions, the session ``models`` (name → HR@20), then ``s1``."""
    make_warehouse(root)
    _gold(root)
    for name, hr in models.items():
        _session_model(root, name, hr)
    publish(root, "s1", spec, run_id=RUN)
    return root


@pytest.fixture(scope="module")
def gru_client(tmp_path_factory):
    root = session_warehouse(tmp_path_factory.mktemp("gru") / "wh", {C.GRU4REC: 0.5, C.COOCCURRENCE: 0.4})
    return create_app(root, serve_settings()).test_client()


@pytest.fixture(scope="module")
def cooc_client(tmp_path_factory):
    root = session_warehouse(tmp_path_factory.mktemp("cooc") / "wh", {C.GRU4REC: 0.2, C.COOCCURRENCE: 0.4})
    return create_app(root, serve_settings()).test_client()


@pytest.fixture(scope="module")
def similar_client(tmp_path_factory):
    return create_app(session_warehouse(tmp_path_factory.mktemp("sim") / "wh", {}), serve_settings()).test_client()


def post(client, **body):
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def asins(body: dict) -> list[str]:
    return [i["parent_asin"] for i in body["items"]]


def snapshot_of(client) -> Snapshot:
    return client.application.extensions["recsys"]["store"].state.snapshot


# --- which scorer, and its arrays -----------------------------------------------------------------------------------


def test_the_session_model_with_the_best_recorded_hr_at_20_is_copied(gru_client, cooc_client, similar_client):
    from recsys.evaluate.next_item import keys
    from recsys.serve.session_build import SELECTION_METRIC

    assert SELECTION_METRIC == keys()[0]                     # the name evaluate records it under
    chosen = {name: snapshot_of(client).meta["session"]
              for name, client in (("gru", gru_client), ("cooc", cooc_client), ("sim", similar_client))}
    assert (chosen["gru"]["name"], chosen["gru"]["hr@20"], chosen["gru"]["run_id"]) == (C.GRU4REC, 0.5, RUN)
    assert (chosen["cooc"]["name"], chosen["cooc"]["hr@20"]) == (C.COOCCURRENCE, 0.4)
    assert (chosen["sim"]["name"], chosen["sim"]["method"]) == ("similar_items", "als")
    assert snapshot_of(similar_client).session.name == "similar_items"


def test_gru4rec_rows_are_re_keyed_onto_the_snapshot_items_without_unpublished_or_deleted_ones(gru_client):
    snap = snapshot_of(gru_client)
    live = snap.asins(np.flatnonzero(snap.session.live))
    assert live == ["I01", "I02", "I03", "I07", "I08"]       # I99 published nowhere, I05 deleted
    weights = gru4rec_weights()
    embeddings = snap.session.scorer.item_embeddings
    for asin in live:
        np.testing.assert_array_equal(embeddings[snap.item_index(asin)], weights.item_embeddings[GRU_ITEMS.index(asin)])
    assert not embeddings[snap.item_index("I04")].any()


def test_known_items_are_the_users_interactions_on_snapshot_items(gru_client):
    snap = snapshot_of(gru_client)
    assert {u: snap.asins(snap.known_items(u)) for u in ("U1", "U2", "U9", "NOBODY")} == {
        "U1": ["I06", "I08"], "U2": ["I03"], "U9": [], "NOBODY": []}


# --- known answers ------------------------------------------------------------------------------------------------


def test_gru4rec_answers_its_own_forward_pass_over_the_known_items(gru_client):
    body = post(gru_client, items=["I01", "I99", "I02"], k=10)
    expected = gru4rec_weights().next_scores(np.array([GRU_ITEMS.index("I01"), GRU_ITEMS.index("I02")]))
    candidates = ["I07", "I03", "I08"]                       # live, not in the session (I99, I05 never)
    want = sorted(candidates, key=lambda a: -expected[GRU_ITEMS.index(a)])
    assert (body["model"], body["source"], body["unknown_items"], body["version"]) == (C.GRU4REC, "session", 1, "s1")
    assert asins(body) == want and [i["rank"] for i in body["items"]] == [1, 2, 3]
    np.testing.assert_allclose([i["score"] for i in body["items"]],
                               [expected[GRU_ITEMS.index(a)] for a in want], rtol=1e-5)
    assert asins(post(gru_client, items=["I01", "I99", "I02"], k=2)) == want[:2]


def test_cooccurrence_scores_the_latest_items_rows_then_popularity(cooc_client):
    body = post(cooc_client, items=["I01", "I02"], k=5)
    # I02 (latest) weighs 1, I01 weighs 0.5: I03 0.5 + 0.5 × 0.3, I04 0.2; I05 (0.45) deleted; then I06 by popularity
    assert (body["model"], asins(body)) == (C.COOCCURRENCE, ["I03", "I04", "I06"])
    np.testing.assert_allclose([i["score"] for i in body["items"][:2]], [0.65, 0.2], rtol=1e-6)
    assert body["items"][2]["score"] < 0


def test_without_a_session_model_the_similar_lists_of_the_latest_items_answer(similar_client):
    body = post(similar_client, items=["I07", "I01", "I02"])
    # I02's list weighs 1 (I03 .99, I06 .98), I01's 0.5 (I02 .99, I03 .98, I04 .97); I07 has no als list
    assert (body["model"], body["source"], body["unknown_items"]) == ("similar_items", "session", 1)
    assert asins(body) == ["I03", "I06", "I04"]
    np.testing.assert_allclose([i["score"] for i in body["items"]], [0.99 + 0.49, 0.98, 0.485], rtol=1e-6)


def test_a_session_of_unknown_items_gets_the_popular_list(gru_client):
    body = post(gru_client, items=["I99", "NOPE", "I05", "I04"], k=3)          # I05 deleted, I04 has no model row
    assert (body["model"], body["source"], body["unknown_items"]) == ("popularity", "popular", 4)
    assert asins(body) == ["I06", "I01", "I02"]                                # I05 deleted, I04 in the session


# --- exclusions ---------------------------------------------------------------------------------------------------


def test_the_sessions_own_items_are_never_answered_even_when_repeated(gru_client):
    body = post(gru_client, items=["I07", "I03", "I07", "I01"], k=10)
    assert body["unknown_items"] == 0
    assert set(asins(body)) == {"I02", "I08"}


def test_user_known_items_exclude_and_category_leave_items_out(gru_client, cooc_client):
    everything = asins(post(gru_client, items=["I01"], k=10))
    assert set(everything) == {"I02", "I03", "I07", "I08"}
    body = post(gru_client, items=["I01"], k=10, user_id="U1")
    assert (body["user_id"], asins(body)) == ("U1", [a for a in everything if a != "I08"])
    assert asins(post(gru_client, items=["I01"], k=10, exclude=["I02", "I03"])) == [
        a for a in everything if a not in ("I02", "I03")]
    assert asins(post(gru_client, items=["I01"], k=10, category="Toys")) == [a for a in everything
                                                                           if a in ("I07", "I08")]
    assert asins(post(cooc_client, items=["I01", "I02"], k=5, user_id="U2")) == ["I04", "I06"]   # U2 knows I03
    popular = post(gru_client, items=["I99"], k=3, user_id="U1", exclude=["I01"])
    assert asins(popular) == ["I02", "I03", "I04"]                  # known I06, I05 deleted, I01 excluded


def test_an_item_deleted_after_the_build_is_denied_at_once_and_gone_from_the_rebuilt_arrays(tmp_path):
    root = session_warehouse(tmp_path / "wh", {C.COOCCURRENCE: 0.4})
    client = create_app(root, serve_settings()).test_client()
    assert asins(post(client, items=["I01", "I02"], k=5))[0] == "I03"
    delete(root, "item", "I03")                                      # pending in ops/deletions: denied now
    assert asins(post(client, items=["I01", "I02"], k=5)) == ["I04", "I06"]
    assert post(client, items=["I03"], k=5)["source"] == "popular"   # a deleted item in a session is unknown
    snap = Snapshot(build_snapshot(root, tmp_path / "rebuilt"))      # the published rows still hold it
    assert not snap.session.live[snap.item_index("I03")]
    assert snap.item_index("I03") not in snap.session.scorer.matrix.indices.tolist()


# --- hostile bodies -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body,code", [
    (b"", "invalid_json"), (b"{", "invalid_json"), (b"[]", "invalid_json"), (b'"I01"', "invalid_json"),
    (b'{"items": ["I01"], "k": NaN}', "invalid_json"), (b'{"items": ["I01"], "x": 1}', "unknown_field"),
    (b"{}", "invalid_items"), (b'{"items": []}', "invalid_items"), (b'{"items": "I01"}', "invalid_items"),
    (b'{"items": [1]}', "invalid_items"), (b'{"items": [null]}', "invalid_items"),
    (b'{"items": ["I01\\n"]}', "invalid_items"), (b'{"items": ["' + b"I" * 65 + b'"]}', "invalid_items"),
    (json.dumps({"items": ["I01"] * 201}).encode(), "invalid_items"),
    (b'{"items": ["I01"], "k": 0}', "invalid_k"), (b'{"items": ["I01"], "k": 101}', "invalid_k"),
    (b'{"items": ["I01"], "k": "5"}', "invalid_k"), (b'{"items": ["I01"], "k": 5.0}', "invalid_k"),
    (b'{"items": ["I01"], "k": true}', "invalid_k"), (b'{"items": ["I01"], "k": 1e400}', "invalid_json"),
    (b'{"items": ["I01"], "k": 100000000000000000000000}', "invalid_k"),
    (b'{"items": ["I01"], "user_id": 5}', "invalid_user_id"), (b'{"items": ["I01"], "user_id": ""}', "invalid_user_id"),
    (b'{"items": ["I01"], "category": ["Toys"]}', "invalid_category"),
    (b'{"items": ["I01"], "exclude": "I02,I03"}', "invalid_exclude"),
    (b'{"items": ["I01"], "exclude": ["I02", 3]}', "invalid_exclude"),
    (json.dumps({"items": ["I01"], "exclude": ["I02"] * 101}).encode(), "invalid_exclude"),
])
def test_hostile_bodies_get_json_400(gru_client, body, code):
    assert_json_error(gru_client.post(URL, data=body, content_type="application/json"), 400, code)


def test_other_refusals_keep_the_json_error_shape(gru_client):
    assert_json_error(gru_client.post(URL, json={"items": ["I01"], "category": "Garden"}), 404, "unknown_category")
    assert_json_error(gru_client.post(URL + "?k=3", json={"items": ["I01"]}), 400, "unknown_parameter")
    assert_json_error(gru_client.get(URL), 405, "method_not_allowed")
    assert_json_error(gru_client.post(URL, data=b'{"items": [' + b'"I01",' * 60_000 + b'"I01"]}'), 413)
    fine = post(gru_client, items=["I01"] * 200, k=None, user_id=None, category=None, exclude=None)
    assert fine["unknown_items"] == 0 and len(fine["items"]) <= 10


@hsettings(max_examples=200, deadline=None)
@given(items=st.lists(st.sampled_from(["I01", "I02", "I03", "I05", "I07", "I99", "NOPE"]), min_size=1, max_size=8),
       k=st.integers(1, 12), user=st.sampled_from([None, "U1", "U2", "NOBODY"]),
       category=st.sampled_from([None, "Toys", "Appliances"]),
       exclude=st.lists(st.sampled_from(["I01", "I03", "I06", "I08"]), max_size=3))
def test_no_answer_holds_a_session_known_excluded_deleted_or_foreign_item(cooc_client, gru_client, similar_client,
                                                                         items, k, user, category, exclude):
    silver = {"Toys": {"I07", "I08", "I09", "I10", "I11"}}
    for client in (cooc_client, gru_client, similar_client):
        body = post(client, items=items, k=k, user_id=user, category=category, exclude=exclude)
        answered = asins(body)
        assert len(answered) <= k and len(set(answered)) == len(answered)
        assert [i["rank"] for i in body["items"]] == list(range(1, len(answered) + 1))
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True) and all(np.isfinite(scores))
        banned = set(items) | set(exclude) | set(KNOWN.get(user, [])) | {"I05"}
        assert not banned & set(answered), (items, user, exclude, answered)
        if category == "Toys":
            assert set(answered) <= silver["Toys"]
        elif category == "Appliances":
            assert not set(answered) & silver["Toys"]


def test_metrics_label_the_session_route(tmp_path):
    client = create_app(session_warehouse(tmp_path / "wh", {}), serve_settings()).test_client()
    client.post(URL, json={"items": ["I01"]})
    client.post(URL, json={"items": []})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'endpoint="session_recommendations",method="POST",status="200"} 1' in text
    assert 'endpoint="session_recommendations",method="POST",status="400"} 1' in text


# --- the user route blends in the user's recent session (recsys.serve.blend) ------------------------------------------

KEY = "k" * 32
# U1's list holds I01 (what U1 clicks below) and I04 (which the session answers too); U1 knows I06 and I08
BLEND_SPEC = {**SPEC, "model": "implicit_als",
              "topk": {"U1": ["I07", "I01", "I09", "I10", "I04", "I11", "I12"], "U2": ["I01"], "U9": ["I02"]}}
# co-occurrence after I01 for U1: I02 0.6, I03 0.3 (I05 deleted), then I04 by popularity (I06 known; I07+ no row)
SESSION_AFTER_I01 = ["I02", "I03", "I04"]


class Clock:
    """An injected clock (epoch seconds) the tests move instead of sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def blend_root(tmp_path):
    return session_warehouse(tmp_path / "wh", {C.COOCCURRENCE: 0.4}, BLEND_SPEC)


def blend_client(root: Path, clock: Clock | None = None, **settings):
    extra = {"clock": clock} if clock is not None else {}
    return create_app(root, serve_settings(signing_keys=[KEY], **settings), **extra).test_client()


def lookup(client, user: str = "U1", k: int = 6) -> dict:
    response = client.get(f"/v1/users/{user}/recommendations?k={k}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def act(client, user: str = "U1", clicks: tuple[str, ...] = ("I01",), kinds: tuple[str, ...] = ("click",),
        k: int = 6) -> int:
    """Serve ``user`` a list, then post its impression and the item events about ``clicks``; how many were stored."""
    body = lookup(client, user, k)
    request_id = body["request_id"]
    events = [{"event_type": "impression", "user_id": user, "request_id": request_id, "items": asins(body)}]
    events += [{"event_type": kind, "user_id": user, "request_id": request_id, "parent_asin": item}
               for item in clicks for kind in kinds]
    response = client.post("/v1/events", json=events)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["accepted"]


def recent_rows(root: Path, user: str | None = None) -> list[str]:
    """The ledger's recent items (of ``user``'s pseudonym), oldest first."""
    conn = sqlite3.connect(root / "_serving" / "ledger.sqlite")
    try:
        where, args = ("WHERE viewer = ?", (Signer([KEY]).pseudonym(user),)) if user else ("", ())
        return [r[0] for r in conn.execute(f"SELECT parent_asin FROM recent {where} ORDER BY at, rowid", args)]
    finally:
        conn.close()


def plain(body: dict) -> dict:
    return {key: value for key, value in body.items() if key != "request_id"}


def test_events_then_the_next_lookup_blends_the_users_session_in(blend_root):
    client = blend_client(blend_root)
    before = lookup(client)
    assert (before["source"], before["model"], asins(before)) == (
        "personalized", "implicit_als", ["I07", "I01", "I09", "I10", "I04", "I11"])
    assert "session_items" not in before and "session_model" not in before
    assert act(client, clicks=("I01",)) == 2
    assert recent_rows(blend_root, "U1") == ["I01"]
    session = post(client, items=["I01"], k=6, user_id="U1")          # the session scorer's own answer
    assert asins(session) == SESSION_AFTER_I01
    body = lookup(client)
    # slots S B S B S B; the batch part without the session's I01: I07 I09 I10 I04 I11 I12; I04 once, at its S slot
    assert asins(body) == ["I02", "I07", "I03", "I09", "I04", "I10"]
    assert (body["source"], body["model"], body["session_items"], body["session_model"], body["version"]) == (
        "personalized+session", "implicit_als", 1, C.COOCCURRENCE, "s1")
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5, 6]
    scores = {i["parent_asin"]: i["score"] for i in session["items"]} | {
        i["parent_asin"]: i["score"] for i in before["items"] if i["parent_asin"] in ("I07", "I09", "I10")}
    assert [i["score"] for i in body["items"]] == [scores[a] for a in asins(body)]     # each its own list's score
    # the request id signs the blended list exactly as served
    impression = {"event_type": "impression", "user_id": "U1", "request_id": body["request_id"]}
    assert client.post("/v1/events", json=impression | {"items": asins(before)}).status_code == 403
    assert client.post("/v1/events", json=impression | {"items": asins(body)}).status_code == 202
    assert asins(lookup(client, k=2)) == ["I02", "I07"]
    assert asins(lookup(client, k=1)) == ["I02"]


def test_a_user_without_a_list_gets_the_session_instead_of_popular(blend_root):
    client = blend_client(blend_root)
    cold = lookup(client, "ANON-7")
    assert (cold["source"], asins(cold)) == ("popular", ["I06", "I01", "I02", "I03", "I04", "I07"])   # I05 deleted
    act(client, "ANON-7", clicks=("I01",), kinds=("click", "add_to_cart"))
    assert asins(post(client, items=["I01", "I01"], k=6, user_id="ANON-7")) == ["I02", "I03", "I04", "I06"]
    body = lookup(client, "ANON-7")
    # the session's four, then the popular list without them and without I01
    assert asins(body) == ["I02", "I03", "I04", "I06", "I07", "I08"]
    assert (body["source"], body["model"], body["session_items"], body["session_model"]) == (
        "session", C.COOCCURRENCE, 2, C.COOCCURRENCE)


def test_a_session_expires_with_the_window_and_its_rows_are_pruned(blend_root):
    clock = Clock()
    client = blend_client(blend_root, clock)
    before = lookup(client)
    started = clock.now
    act(client, clicks=("I01",))
    clock.now = started + 3599.0
    assert lookup(client)["source"] == "personalized+session"
    clock.now = started + 3600.5
    assert plain(lookup(client)) == plain(before)                          # out of the window: today's answer
    assert recent_rows(blend_root, "U1") == ["I01"]                        # until the next prune
    clock.now = started + 3700.0
    act(client, "U2", clicks=("I01",), k=1)                                 # an admission prunes (every 60 s)
    assert recent_rows(blend_root) == ["I01"] and recent_rows(blend_root, "U1") == []
    short = blend_client(blend_root, clock, session_window_s=10.0)          # the window is a setting
    assert lookup(short, "U2")["source"] == "personalized+session"
    clock.now += 10.5
    assert lookup(short, "U2")["source"] == "personalized"


def test_an_erased_user_gets_no_blend_and_nothing_of_theirs_is_recorded(blend_root):
    client = blend_client(blend_root)
    act(client, clicks=("I01",))
    delete(blend_root, "user", "U1")                                        # pending: applies from the next request
    body = lookup(client)
    assert (body["source"], body["model"]) == ("popular", "popularity") and "session_items" not in body
    assert act(client, clicks=("I02",)) == 0                                # taken, never stored
    assert recent_rows(blend_root, "U1") == ["I01"]                         # nothing new; the old row expires
    for name in ("ledger.sqlite", "ledger.sqlite-wal"):
        path = blend_root / "_serving" / name
        assert not path.exists() or b"U1" not in path.read_bytes()          # never the plain user id


def test_deleted_and_denied_items_never_come_back_in_a_blended_list(blend_root):
    client = blend_client(blend_root)
    act(client, clicks=("I01",))
    delete(blend_root, "item", "I03")
    body = lookup(client)
    assert asins(body) == ["I02", "I07", "I04", "I09", "I10", "I11"] and body["source"] == "personalized+session"
    delete(blend_root, "item", "I01")                                       # the session's only item: nothing known
    body = lookup(client)
    assert (body["source"], asins(body)) == ("personalized", ["I07", "I09", "I10", "I04", "I11", "I12"])


def test_exclude_and_category_apply_to_both_parts(blend_root):
    client = blend_client(blend_root)
    act(client, clicks=("I01",))
    body = client.get("/v1/users/U1/recommendations?k=6&exclude=I02,I07").get_json()
    assert asins(body) == ["I03", "I09", "I04", "I10", "I11", "I12"]
    body = client.get("/v1/users/U1/recommendations?k=3&category=Appliances").get_json()
    assert asins(body) == ["I02", "I04", "I03"]               # the batch part has I04 only: I01 is the session's


def test_share_zero_is_todays_answer_exactly_and_records_nothing(blend_root):
    off = blend_client(blend_root, session_blend=0.0)
    before = lookup(off)
    assert act(off, clicks=("I01",)) == 2
    assert recent_rows(blend_root) == []
    assert plain(lookup(off)) == plain(before)
    assert plain(lookup(off, "ANON-7")) == plain(lookup(blend_client(blend_root), "ANON-7"))


def test_the_share_sets_the_sessions_slots():
    from recsys.serve.blend import interleave, session_slots

    assert session_slots(8, 0.5) == [True, False] * 4
    assert session_slots(8, 0.25) == [True, False, False, False] * 2
    assert sum(session_slots(10, 0.3)) == 3 and session_slots(10, 0.3)[:4] == [True, False, False, True]
    assert session_slots(5, 1.0) == [True] * 5 and session_slots(5, 0.0) == [False] * 5

    def items(*names):
        return [{"parent_asin": n, "score": float(i), "rank": i + 1} for i, n in enumerate(names)]

    assert [i["parent_asin"] for i in interleave(items("A", "B", "C", "D"), items("X", "A", "Y"), 6, 0.25)] == [
        "X", "A", "B", "C", "Y", "D"]                        # A once, at its batch slot (before its session one)
    assert interleave([], [], 3, 0.5) == []
    assert [i["rank"] for i in interleave(items("A"), items("B"), 5, 0.5)] == [1, 2]


def test_two_apps_sharing_one_ledger_see_each_others_events(blend_root):
    first, second = blend_client(blend_root), blend_client(blend_root)      # as two gunicorn workers
    served = lookup(first)
    request_id = served["request_id"]
    assert second.post("/v1/events", json=[
        {"event_type": "impression", "user_id": "U1", "request_id": request_id, "items": asins(served)},
        {"event_type": "purchase", "user_id": "U1", "request_id": request_id, "parent_asin": "I01"}],
    ).status_code == 202
    assert asins(lookup(first)) == asins(lookup(second)) == ["I02", "I07", "I03", "I09", "I04", "I10"]


def test_under_an_ab_experiment_the_variants_snapshot_answers_both_parts(blend_root):
    from recsys.serve.experiment import ABSettings, VariantSettings

    ab = ABSettings(enabled=True, control="old", variants={"old": VariantSettings(version="v2", share=1.0)})
    client = create_app(blend_root, serve_settings(signing_keys=[KEY]), ab=ab).test_client()
    assert asins(lookup(client, k=4)) == ["I01", "I07", "I02", "I08"]      # test_serve's v2 list of U1
    act(client, clicks=("I01",), k=4)
    body = lookup(client, k=4)
    # v2's run trained no session model: v2's similar list of I01 (I02, I03, I04) against v2's list without I01
    assert (body["version"], body["variant"], body["source"], body["model"], body["session_model"]) == (
        "v2", "old", "personalized+session", "spark_als", "similar_items")
    assert asins(body) == ["I02", "I07", "I03", "I08"]


def test_items_the_version_or_its_scorer_do_not_know_blend_nothing(blend_root):
    client = blend_client(blend_root)
    before = lookup(client)
    ledger = client.application.extensions["recsys"]["ledger"]
    viewer = Signer([KEY]).pseudonym("U1")
    with ledger.transaction(time.time(), 1.0) as entry:                    # what an older version's lists left
        entry.record_recent([(viewer, "NOPE"), (viewer, "I99"), (viewer, "I12")], 200)
    assert plain(lookup(client)) == plain(before)                          # I12: in the version, no scorer row
    act(client, clicks=("I01",))
    body = lookup(client)
    assert (body["session_items"], asins(body)) == (4, ["I02", "I07", "I03", "I09", "I04", "I10"])


def test_a_busy_ledger_degrades_to_the_plain_list(blend_root, caplog):
    client = blend_client(blend_root)
    act(client, clicks=("I01",))
    before = lookup(client)
    assert before["source"] == "personalized+session"
    ledger = client.application.extensions["recsys"]["ledger"]
    ledger.close()                                                          # the next read opens a connection anew
    holder = sqlite3.connect(blend_root / "_serving" / "ledger.sqlite", isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM budgets")
        with caplog.at_level("WARNING", logger="recsys.serve.blend"):
            body = lookup(client)
        assert (body["source"], asins(body)) == ("personalized", ["I07", "I01", "I09", "I10", "I04", "I11"])
        assert "served without its recent session" in caplog.text
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert lookup(client)["source"] == "personalized+session"


def test_ten_thousand_events_of_one_user_keep_the_last_of_them(blend_root):
    client = blend_client(blend_root, events_burst=20_000, events_per_s=1e6)
    sent, batch = 0, []
    while sent < 10_000:          # lists signed for U1 whose items stay the same: the session route's after I02
        served = post(client, items=["I02"], k=6, user_id="U1")
        shown = asins(served)
        batch.append({"event_type": "impression", "user_id": "U1", "request_id": served["request_id"],
                      "items": shown})
        batch += [{"event_type": kind, "user_id": "U1", "request_id": served["request_id"], "parent_asin": item}
                  for kind in ("click", "add_to_cart", "purchase") for item in shown]
        sent += 3 * len(shown)
        if len(batch) > 90 or sent >= 10_000:
            assert client.post("/v1/events", json=batch).status_code == 202
            batch = []
    assert shown == ["I03", "I04", "I01"]
    rows = recent_rows(blend_root, "U1")
    assert len(rows) == 200                                                  # serve.max_session_items
    assert rows[-3:] == ["I03", "I04", "I01"]                                # the last ones: the purchases
    body = lookup(client)
    assert body["session_items"] == 200
    assert asins(body) == ["I02", "I07", "I09", "I10", "I11", "I12"]         # never the session's, known or deleted


def test_the_ledger_keeps_each_viewers_last_rows_by_time(tmp_path):
    from recsys.serve.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite", session_window_s=100.0)
    for t in range(250):
        with ledger.transaction(1000.0 + t * 0.1, 1.0) as entry:
            entry.record_recent([("a", f"A{t}")] + [("b", f"B{t}")] * (t % 2), 200)
    assert ledger.recent("a", 1030.0, 200) == [f"A{t}" for t in range(50, 250)]
    assert ledger.recent("a", 1030.0, 3) == ["A247", "A248", "A249"]
    assert ledger.recent("b", 1030.0, 200) == [f"B{t}" for t in range(1, 250, 2)]
    assert ledger.recent("c", 1030.0, 200) == []
    assert ledger.recent("a", 1124.85, 200) == ["A249"]                   # at >= now - window
    ledger.close()

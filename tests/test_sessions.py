"""Session models: the co-occurrence scorer's known answers on hand-made sequences, the synthetic dump's planted
chains, sequences built by Spark (order, gap cut, events, deletions), and a run whose session model trains,
evaluates on the next-item task, publishes and loses deleted items and erased users to the cascade."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from recsys import constants as C
from recsys.config import SynthSettings
from recsys.models.params import CooccurrenceParams
from recsys.sessions import cooccurrence
from recsys.sessions.arrays import Sequences

# --- co-occurrence: known answers ---------------------------------------------------------------------------------


def test_follow_counts_weigh_each_later_item_by_one_over_its_distance_within_the_window():
    counts = cooccurrence.follow_counts(Sequences.from_lists([[0, 1, 2, 3], [2, 1]]), 4, window=2).toarray()
    want = np.zeros((4, 4))
    want[0, 1], want[0, 2] = 1, 0.5          # 1 right after 0, 2 two steps after
    want[1, 2], want[1, 3] = 1, 0.5
    want[2, 3] = 1
    want[2, 1] = 1                           # the second sequence; no pair spans two sequences (3 → 2)
    np.testing.assert_allclose(counts, want)


def test_follow_counts_skip_an_item_following_itself_and_add_the_reverse_at_its_share():
    counts = cooccurrence.follow_counts(Sequences.from_lists([[0, 0, 1]]), 2, window=1, backward=0.25).toarray()
    np.testing.assert_allclose(counts, [[0, 1], [0.25, 0]])


def test_normalisations_against_popularity():
    counts = cooccurrence.follow_counts(Sequences.from_lists([[0, 1], [0, 1], [2, 1]]), 3, window=1)
    occurrences = np.array([2.0, 3.0, 1.0])
    cosine = cooccurrence.normalise(counts, occurrences, "cosine", 0.5).toarray()
    np.testing.assert_allclose(cosine[0, 1], 2 / np.sqrt(2 * 3))
    np.testing.assert_allclose(cosine[2, 1], 1 / np.sqrt(1 * 3))
    conditional = cooccurrence.normalise(counts, occurrences, "conditional", 0.0).toarray()
    np.testing.assert_allclose([conditional[0, 1], conditional[2, 1]], [1.0, 1.0])    # P(1 follows 0) = 2/2
    damped = cooccurrence.normalise(counts, occurrences, "conditional", 1.0).toarray()
    np.testing.assert_allclose(damped[0, 1], 2 / (2 * 3))


def test_prune_keeps_each_rows_best_entries_ties_to_the_lower_index():
    import scipy.sparse as sp

    matrix = sp.csr_matrix(np.array([[0, 3, 1, 3], [2, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=float))
    pruned = cooccurrence.prune_rows(matrix, 2).toarray()
    np.testing.assert_allclose(pruned, [[0, 3, 0, 3], [2, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]])


def _chain_scorer(**params) -> cooccurrence.CooccurrenceScorer:
    """Items 0 → 1 → 2 → 3 in every sequence, item 4 seen alone (popular but followed by nothing)."""
    sequences = Sequences.from_lists([[0, 1, 2, 3]] * 3 + [[4]] * 5)
    return cooccurrence.fit(sequences, 6, CooccurrenceParams(**{"window": 1, **params}))


def test_a_session_scores_what_followed_its_latest_items_most_recent_first():
    scorer = _chain_scorer(last_items=2, decay=0.5, normalise="conditional", alpha=0.0)
    scores = scorer.next_scores(np.array([0, 1]))
    # P(2 follows 1) = 1 for the latest item, P(1 follows 0) = 1 weighted 0.5 for the one before
    np.testing.assert_allclose(scores[[1, 2]], [0.5, 1.0])
    assert scores.argmax() == 2
    assert scorer.next_scores(np.array([1]))[1] < 0          # only the latest item: nothing follows 1 but 2


def test_items_without_evidence_rank_below_by_popularity_not_by_index():
    scorer = _chain_scorer()
    scores = scorer.next_scores(np.array([2]))
    assert scores[3] > 0
    without = [i for i in np.argsort(-scores, kind="stable") if scores[i] <= 0]
    assert without[0] == 4                                   # 5 occurrences, more than any chain item
    assert scores[5] == min(scores)                          # never seen: last
    assert (scores >= -1).all()                              # finite: a never-seen item can still fill a list


def test_the_batch_scores_are_the_one_at_a_time_scores():
    scorer = _chain_scorer(last_items=3, decay=0.7)
    sessions = Sequences.from_lists([[0], [3, 1], [0, 1, 2], [4, 2, 0, 1]])
    seen = []
    for rows, block in scorer.next_scores_batch(sessions, rows_per_block=3):
        seen += list(rows)
        for row, scores in zip(rows, block):
            np.testing.assert_allclose(scores, scorer.next_scores(sessions[row]))
    assert seen == [0, 1, 2, 3]


# --- the synthetic dump's sequential mode -------------------------------------------------------------------------


def test_sequential_synth_walks_planted_chains_in_time_order(tmp_path):
    from recsys.synth import generate

    settings = SynthSettings(users=200, items=60, reviews=2000, clusters=4, categories=["Appliances"],
                             sequential=True, chain_length=5, chain_noise=0.1)
    generate(tmp_path, settings, progress=False)
    with gzip.open(tmp_path / "Appliances.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    by_user: dict[str, list] = {}
    for row in rows:
        by_user.setdefault(row[C.USER_ID], []).append((row[C.TIMESTAMP], row[C.ITEM_ID]))
    pairs = [(a[1], b[1]) for walk in by_user.values() for a, b in zip(walk, walk[1:])]
    assert all(a[0] < b[0] for walk in by_user.values() for a, b in zip(walk, walk[1:]))   # file order = time
    assert all(len({i for _, i in walk}) == len(walk) for walk in by_user.values())          # no repeat
    successors: dict[str, dict[str, int]] = {}
    for a, b in pairs:
        successors.setdefault(a, {}).setdefault(b, 0)
        successors[a][b] += 1
    # in a chain one successor dominates: the most common next item of an item is most of its next items
    top = sum(max(nexts.values()) for nexts in successors.values())
    assert top / len(pairs) > 0.6, top / len(pairs)


# --- sequences built by Spark -------------------------------------------------------------------------------------

MINUTE = 60_000


def _events_warehouse(spark, root: Path) -> Path:
    """A tiny warehouse: the user and item indices (item 3 deleted) and ops/events."""
    from datetime import datetime, timezone

    from recsys import tables as T

    spark.createDataFrame([("U0", 0), ("U1", 1)], f"{C.USER_ID} STRING, {C.USER_IDX} INT") \
        .write.format("delta").save(T.table_path(root, C.USER_INDEX))
    spark.createDataFrame([(f"I{i}", i, "Appliances", i == 3) for i in range(5)], T.ITEM_INDEX.ddl) \
        .write.format("delta").save(T.table_path(root, C.ITEM_INDEX))

    def at(minute: int) -> datetime:
        return datetime.fromtimestamp(minute * 60, tz=timezone.utc)

    events = [("e1", "click", "U0", "I4", at(25)), ("e2", "purchase", "ANON", "I1", at(5)),
              ("e3", "click", "ANON", "I2", at(6)), ("e4", "click", "U0", "I3", at(26)),    # I3 deleted
              ("e5", "impression", "U0", None, at(27)), ("e6", "add_to_cart", "U1", "I0", at(10_000))]  # too late
    rows = [(e, kind, user, item, "r", None, None, ts, ts, None, None) for e, kind, user, item, ts in events]
    spark.createDataFrame(rows, T.EVENTS.ddl).write.format("delta").save(T.table_path(root, C.EVENTS))
    return root


def test_sequences_in_time_order_cut_after_the_gap_with_events_and_without_deleted_items(spark, tmp_path):
    from recsys.sessions import sequences as S
    from recsys.sessions.settings import SessionSettings

    warehouse = _events_warehouse(spark, tmp_path)
    interactions = spark.createDataFrame(
        [(0, 2, 20 * MINUTE), (0, 1, 0), (0, 0, 0), (1, 2, 100 * MINUTE), (1, 0, 30 * MINUTE)],
        f"{C.USER_IDX} INT, {C.ITEM_IDX} INT, {C.TIMESTAMP} BIGINT")
    events = S.session_events(spark, warehouse)

    whole = S.user_sequences(interactions, events, SessionSettings())
    # the visitor first (no user index), then users by index; ties in time by item index; I3 and the late event gone
    assert whole.users.tolist() == [S.NO_USER, 0, 1]
    assert [s.tolist() for s in whole.sequences] == [[1, 2], [0, 1, 2, 4], [0, 2]]

    cut = S.user_sequences(interactions, events, SessionSettings(gap_minutes=10))
    assert cut.users.tolist() == [S.NO_USER, 0, 0, 1, 1]
    assert [s.tolist() for s in cut.sequences] == [[1, 2], [0, 1], [2, 4], [0], [2]]

    reviews_only = S.user_sequences(interactions, events, SessionSettings(event_types=[]))
    assert [s.tolist() for s in reviews_only.sequences] == [[0, 1, 2], [0, 2]]


# --- a run with a session model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session_run(spark, tmp_path_factory):
    """A small sequential dump through the pipeline with popularity and both session models (its own warehouse: the
    shared one stays without them; GRU4Rec small and short, trained in two Spark tasks by TorchDistributor), promoted
    on HR@20 so a session model is published."""
    from recsys.config import load_settings
    from recsys.pipeline import run_pipeline
    from recsys.synth import generate

    root = tmp_path_factory.mktemp("sessions")
    settings = load_settings(warehouse=root / "wh", source=root / "src", reports=root / "reports")
    settings.synth = settings.synth.model_copy(update={
        "users": 300, "items": 60, "reviews": 3000, "clusters": 4, "categories": ["Appliances"],
        "sequential": True, "chain_length": 6, "chain_noise": 0.1})
    settings.train = settings.train.model_copy(update={"models": ["popularity", C.COOCCURRENCE, C.GRU4REC]})
    settings.train.params = settings.train.params.updated(
        {C.GRU4REC: {"layers": [32], "n_sample": 64, "epochs": 2, "batch_size": 16, "processes": 2}})
    settings.tuning = settings.tuning.model_copy(update={"budget_seconds": 0})
    settings.evaluate = settings.evaluate.model_copy(update={"primary_metric": "hr@20"})
    settings.publish = settings.publish.model_copy(update={"k": 5, "spare": 3})
    generate(settings.source, settings.synth, progress=False)
    return settings, run_pipeline(spark, settings)


def test_session_models_beat_popularity_on_the_next_item_of_planted_chains(session_run):
    settings, summary = session_run
    metrics = {m: r["metrics"] for m, r in summary["evaluate"]["models"].items()}
    assert metrics[C.COOCCURRENCE]["hr@20"] > metrics["popularity"]["hr@20"] + 0.2, metrics
    assert metrics[C.COOCCURRENCE]["mrr@20"] > 2 * metrics["popularity"]["mrr@20"], metrics
    assert metrics[C.GRU4REC]["hr@20"] > metrics["popularity"]["hr@20"], metrics
    assert summary["evaluate"]["decision"]["promoted"] in (C.COOCCURRENCE, C.GRU4REC)
    report = Path(summary["evaluate"]["report"]).read_text()
    assert "<h2>Next item</h2>" in report and "hr@20" in report


def test_the_published_lists_of_a_session_model_exclude_the_users_fitted_items(spark, session_run):
    from recsys import tables as T

    settings, _ = session_run
    lists = T.read_table(spark, settings.warehouse, C.RECS_USER_TOPK)
    fitted = T.read_table(spark, settings.warehouse, C.INTERACTIONS).join(
        T.read_table(spark, settings.warehouse, C.USER_INDEX), C.USER_IDX).join(
        T.read_table(spark, settings.warehouse, C.ITEM_INDEX), C.ITEM_IDX)
    assert lists.count() > 0
    assert lists.join(fitted, [C.USER_ID, C.ITEM_ID]).count() == 0


@pytest.mark.parametrize("name", [C.COOCCURRENCE, C.GRU4REC])
def test_the_cascade_drops_a_deleted_items_row_and_an_erased_users_history(spark, session_run, tmp_path, name):
    import pyarrow.parquet as pq

    from recsys import ops
    from recsys.catalog.files import drop_model_rows
    from recsys.loading import load_model

    settings, summary = session_run
    path = Path(next(c["model_path"] for c in ops.run_models(settings.warehouse, summary["run_id"])
                     if c[C.MODEL] == name))
    if not path.is_absolute():
        path = settings.warehouse / path
    folder = tmp_path / "models" / name / "run"          # where drop_model_rows looks for models
    rows = "item_neighbours" if name == C.COOCCURRENCE else "item_embeddings"
    load_model(spark, path).save(folder)
    model = load_model(spark, folder)
    before = {r[C.USER_IDX]: r[C.ITEMS] for r in model.recommend_lists(k=5).collect()}
    user, item = next((u, items[0]) for u, items in sorted(before.items()) if items)

    removed = drop_model_rows(tmp_path, [user], [item])
    assert sorted(removed) == [f"models/{name}/run/{rows}", f"models/{name}/run/user_history"]
    assert item not in pq.read_table(folder / rows).column("id").to_pylist()
    after = {r[C.USER_IDX]: r[C.ITEMS] for r in load_model(spark, folder).recommend_lists(k=5).collect()}
    assert user not in after
    assert all(item not in items for items in after.values())
    assert sum(len(items) for items in after.values()) == sum(len(before[u]) for u in after)   # lists stay full


def test_a_saved_gru4rec_scores_as_its_weights_and_keeps_item_rows_keyed_by_item(tmp_path):
    import json as json_

    import pyarrow as pa

    from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer
    from recsys.session_model import EMBEDDINGS, read_scorer, write_embeddings

    rng = np.random.default_rng(0)
    n, hidden = 6, 4
    layer = GruLayer(*(rng.normal(size=shape).astype(np.float32) for shape in
                       ((3 * hidden, hidden), (3 * hidden, hidden), (3 * hidden,), (3 * hidden,))))
    weights = Gru4RecWeights(rng.normal(size=(n, hidden)).astype(np.float32),
                             rng.normal(size=n).astype(np.float32), (layer,))
    live = np.array([0, 1, 2, 4, 5], dtype=np.int32)                # item 3 deleted before the fit ended
    write_embeddings(tmp_path, weights, live, pa.chunked_array([[f"I{i}" for i in live]]))
    (tmp_path / "model.json").write_text(json_.dumps({"name": C.GRU4REC, "n_items": n}))

    loaded = read_scorer(tmp_path)
    assert loaded.live.tolist() == [True, True, True, False, True, True]
    session = np.array([2, 0, 5])
    np.testing.assert_allclose(loaded.scorer.next_scores(session)[live], weights.next_scores(session)[live],
                               rtol=1e-5)
    # the layers' folder holds no item row: the cascade, which rewrites item_* folders only, misses nothing
    assert all(np.load(p).shape[0] == 0 for p in (tmp_path / "gru4rec_layers").glob("item_*.npy"))
    assert (tmp_path / EMBEDDINGS).is_dir()


# --- model selection of the session models ------------------------------------------------------------------------


@pytest.mark.parametrize("model", [C.COOCCURRENCE, C.GRU4REC])
def test_the_search_space_replays_the_configured_parameters(model):
    from optuna.trial import FixedTrial

    from recsys.models.params import model_params
    from recsys.selection import spaces

    configured = model_params(model, {"last_items": 4} if model == C.COOCCURRENCE else {"loss": "bpr-max"})
    values = spaces.trial_values(model, configured.model_dump(), 1.0)
    replayed = model_params(model, {**configured.model_dump(), **spaces.suggest(FixedTrial(values), model)})
    assert replayed == configured


def _chain_search_data():
    """200 users each walking 3 to 5 steps along one of 10 chains of 8 items (by time); valid: the item after their
    last train one (others walked on from there)."""
    from recsys.selection.data import SearchData

    users, items, stamps, truth = [], [], [], {}
    for user in range(200):
        chain, start, length = user % 10, user % 4, 3 + (user // 10) % 3
        walk = [chain * 8 + step for step in range(start, start + length)]
        users += [user] * (len(walk) - 1)
        items += walk[:-1]
        stamps += list(range(len(walk) - 1))
        truth[user] = [walk[-1]]
    as_array = np.asarray
    return SearchData(as_array(users, np.int32), as_array(items, np.int32), np.ones(len(users)),
                      as_array(stamps, np.int64), truth, 200, 80)


def test_a_session_trial_scores_the_next_item_on_valid():
    import time

    from recsys.models.params import model_params
    from recsys.selection.sessions import session_trial

    data = _chain_search_data()
    run = session_trial(C.COOCCURRENCE, data, 10)
    deadline = time.perf_counter() + 60
    pairs = {(a, b) for user, a, b in zip(data.users, data.items, data.items[1:]) if a + 1 == b}
    last = {int(u): int(i) for u, i in zip(data.users, data.items)}
    known = np.mean([(last[u], target[0]) in pairs for u, target in data.truth.items()])
    forward = run(model_params(C.COOCCURRENCE, {"window": 1, "last_items": 1}).model_dump(), None, deadline)
    assert 0.5 < known < 1                                 # some targets follow in nobody's training rows
    assert known <= forward < known + 0.05                 # every transition seen in training ranked first


def test_cooccurrence_similar_items_are_each_items_row_without_deleted_ones(spark, session_run):
    import pyarrow.parquet as pq

    from recsys import ops
    from recsys.loading import load_model

    settings, summary = session_run
    path = Path(next(c["model_path"] for c in ops.run_models(settings.warehouse, summary["run_id"])
                     if c[C.MODEL] == C.COOCCURRENCE))
    model = load_model(spark, path if path.is_absolute() else settings.warehouse / path)
    table = pq.read_table(model.path / "item_neighbours").to_pylist()
    rows = {r["id"]: sorted(zip(r["scores"], r["neighbours"]), key=lambda p: (-p[0], p[1])) for r in table}
    item = max(rows, key=lambda i: len(rows[i]))
    gone = rows[item][0][1]                                # the item's best neighbour, deleted since
    similar = {}
    for r in model.similar_items(k=3, exclude_items=[gone]).collect():
        similar.setdefault(r[C.ITEM_IDX], []).append((r[C.RANK], r["similar_idx"]))
    assert [i for _, i in sorted(similar[item])] == [i for _, i in rows[item] if i != gone][:3]
    assert all(i != gone for lists in similar.values() for _, i in lists)


def test_the_history_keeps_each_known_users_latest_session_and_fitted_items(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.session_model import write_history
    from recsys.sessions.sequences import NO_USER, UserSequences

    data = UserSequences(np.array([NO_USER, 0, 0, 2, 5], np.int32),
                         Sequences.from_lists([[9, 8], [1, 2], [3, 4], [7], [6, 5]]))
    seen = pa.table({C.USER_IDX: pa.array([5, 0, 2, 0, 3], pa.int32()), C.ITEM_IDX: pa.array([6, 2, 7, 1, 4], pa.int32())})
    write_history(tmp_path, data, seen)
    rows = pq.read_table(tmp_path).to_pylist()
    assert rows == [{"id": 0, C.ITEMS: [3, 4], "seen": [1, 2]}, {"id": 2, C.ITEMS: [7], "seen": [7]},
                    {"id": 5, C.ITEMS: [6, 5], "seen": [6]}]          # the visitor and user 3 (no sequence) left out


def test_the_session_endpoint_serves_the_runs_best_session_model_and_forgets_a_deleted_item(spark, session_run,
                                                                                            tmp_path):
    """End to end on a copy of the run: the snapshot copies the session model with the best HR@20, the endpoint
    answers with it; an item deletion cascades into the model folder, rebuilds the snapshot (forced), and the
    item is never answered again."""
    import shutil

    import pyarrow.parquet as pq

    from recsys import ops
    from recsys.catalog import apply_drops, read_drops
    from recsys.serve.app import create_app
    from recsys.sessions.folder import EMBEDDINGS, NEIGHBOURS

    built, summary = session_run
    shutil.copytree(built.warehouse, tmp_path / "wh", symlinks=True)
    settings = built.model_copy(update={"warehouse": tmp_path / "wh", "reports": tmp_path / "reports"})
    settings.serve = settings.serve.model_copy(update={"reload_interval_s": 0.0, "build_in_subprocess": False,
                                                       "access_log": False})
    client = create_app(settings.warehouse, settings.serve).test_client()
    store = client.application.extensions["recsys"]["store"]
    hr = {m: r["metrics"]["hr@20"] for m, r in summary["evaluate"]["models"].items() if m in C.SESSION_MODELS}
    best = max(sorted(hr), key=hr.get)
    snap = store.state.snapshot
    assert (snap.meta["session"]["name"], snap.meta["session"]["hr@20"]) == (best, pytest.approx(hr[best]))

    live = np.flatnonzero(snap.session.live)
    session = snap.asins(live[:3])
    body = client.post("/v1/sessions/recommendations", json={"items": session, "k": 5}).get_json()
    assert (body["model"], body["source"], body["unknown_items"], len(body["items"])) == (best, "session", 0, 5)
    answered = [i["parent_asin"] for i in body["items"]]
    assert not set(answered) & set(session)

    gone = answered[0]
    drop = tmp_path / "items.csv"
    drop.write_text(f"parent_asin,reason,requested_at\n{gone},test,2024-01-01T00:00:00Z\n")
    apply_drops(spark, settings, read_drops(items=drop), purge_history=False)
    entry = next(r for r in ops.run_models(settings.warehouse, summary["run_id"]) if r[C.MODEL] == best)
    folder = ops.last_fitted(settings.warehouse, best, summary["run_id"], entry["model_path"])
    rows = pq.read_table(folder / (EMBEDDINGS if best == C.GRU4REC else NEIGHBOURS)).column(C.ITEM_ID).to_pylist()
    assert gone not in rows                                            # the cascade reached the model folder
    client.get("/health")                                              # the next request maps the rebuilt snapshot
    rebuilt = store.state.snapshot
    assert rebuilt.meta["built_at"] != snap.meta["built_at"]
    assert rebuilt.item_index(gone) is None or not rebuilt.session.live[rebuilt.item_index(gone)]
    assert rebuilt.meta["session"]["live_items"] <= snap.meta["session"]["live_items"] - 1
    again = client.post("/v1/sessions/recommendations", json={"items": session, "k": 5}).get_json()
    assert gone not in [i["parent_asin"] for i in again["items"]] and len(again["items"]) == 5

"""Erasure touches only the erased: whole-token matching, the tables searched, paths, event logs, quality samples.

Unit and property tests first (cheap); then one small pipeline whose users are ``1`` … ``60`` (MovieLens-style),
on which erasing user ``1`` must remove user ``1``'s rows and nothing else.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from recsys.catalog.mentions import Matcher, tokens, unescape_bytes
from recsys.ids import id_hash

ID_TEXT = st.text(alphabet="AEU1_-", min_size=1, max_size=4)
NOISE = st.sampled_from(["", " ", "\\n", "\\\\", "\\u0041", "\\u004a", "\\u0020", "\\t", "\\\\n", "\\", ".", "\0",
                         "é", '"', "\\u00e9", "x", "1", "U", "\\u002D"])
TEXT = st.lists(st.one_of(ID_TEXT, NOISE), max_size=12).map("".join)


# --- the matching rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,found", [
    ("user U10 and 11", set()),
    ("Toy Story (1995)", set()),
    ('{"user_id": "U1"}', {"U1"}),
    ("\\nAE12 inside a JSON string", {"AE12"}),
    ("\\u0041E12", {"AE12"}),
    ("\\\\nAE12", set()),                 # an escaped backslash, then the letters nAE12: one token
    ("xAE12y", set()),
    ("AE12\0\0U1\0", {"AE12", "U1"}),      # NUL padding of fixed-width arrays delimits tokens
])
def test_only_whole_tokens_match(text, found):
    matcher = Matcher({"U1": "U1", "AE12": "AE12"}, [2, 4])
    assert matcher.find(text.encode()) == found


def test_a_short_numeric_id_matches_only_itself():
    matcher = Matcher({"1": "one"}, [1])
    assert matcher.find(b"U10 10 (1995) 21 ab1") == set()
    assert matcher.find(b'{"user_id": "1"}') == {"one"}
    hashed = Matcher({id_hash("s", "1"): "one"}, [1], salt="s")
    assert hashed.find(b"10 11 [1]") == {"one"} and hashed.find(b"10 11") == set()


def test_a_long_run_is_one_token():
    run = b"A" * 10_000 + b"AE12"
    assert Matcher({"AE12": "x"}, [4]).find(run) == set()
    assert Matcher({"AE12": "x"}, [4]).find(b"\0".join([b"A" * 28] * 300) + b"\0AE12\0") == {"x"}


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_unescaping_is_what_json_would_decode_for_tokens(text):
    """Where ``text`` is a valid JSON string body, the tokens are those of the decoded string."""
    try:
        decoded = json.loads(f'"{text}"')
    except ValueError:
        return
    spaced = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else " " for c in decoded).encode()
    got = unescape_bytes(text.encode())
    assert _runs(got) == _runs(spaced)


def _runs(data: bytes) -> list[bytes]:
    import re

    return re.findall(rb"[A-Za-z0-9_\-]+", data)


FIXED = ["a \\nAE12, zzAE12 U1", "\\u0041E12 \\\\u0041E12", "1.0 (1995) U10", "", "\\"]


@settings(max_examples=4, deadline=None)
@given(st.lists(TEXT, min_size=60, max_size=60))
def test_spark_tokens_agree_with_the_python_twin(spark, texts):
    texts = texts + FIXED
    lengths = [1, 2, 4]
    rows = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i INT, t STRING")
    got = {r["i"]: sorted(r["tok"]) for r in rows.select("i", tokens(F.col("t"), lengths).alias("tok")).collect()}
    matcher = Matcher({"x": "x"}, lengths)
    for i, text in enumerate(texts):
        assert got[i] == sorted(t.decode() for t in matcher.tokens(text)), text


# --- a failed deletion run -----------------------------------------------------------------------------------

def test_the_next_run_reclaims_the_drops_a_failed_run_left_claimed(tmp_path):
    from recsys.orchestration import archive_drops, claim_drops, pending_drops

    (tmp_path / "users.csv").write_text("user_id,reason,requested_at\n")
    dead = claim_drops(tmp_path, "run-a")                  # run-a dies here: never archived
    assert pending_drops(tmp_path) == ["_inflight/run-a/users.csv"]     # so the next run's sensor fires
    (tmp_path / "users.csv").write_text("user_id,reason,requested_at\n")   # a new drop, same name
    claim = claim_drops(tmp_path, "run-b")
    assert sorted(p.name for p in claim.iterdir()) == ["run-a-users.csv", "users.csv"]
    assert not dead.exists()
    assert archive_drops(tmp_path, "run-b") is not None and pending_drops(tmp_path) == []


# --- event logs ----------------------------------------------------------------------------------------------

def _event(user: str, request: str = "r1") -> dict:
    return {"event_type": "click", "user_id": user, "parent_asin": "B01", "request_id": request, "items": None,
            "variant": None, "ts": "2026-01-01T00:00:00.000Z"}


def _lines(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("*.jsonl")) for line in p.read_text().splitlines()]


def test_the_scrub_goes_by_the_line_owner_and_tokens_only_without_one(tmp_path):
    from recsys.catalog.files import scrub_event_logs
    from recsys.serve.events import EventLog

    log = EventLog(tmp_path)
    log.append([_event("1"), _event("2", request="1"), _event("10"), _event("U1")], None, None)
    path = next(tmp_path.glob("*.jsonl"))
    with open(path, "ab") as handle:                    # a torn line of user 1, and one of user 2
        handle.write(b'{"user_id": "2", "x": 1}\n{"event_id": "e", "user_id": "1", "ite')
    removed = scrub_event_logs(tmp_path, {"1": "h1"})
    assert removed == {"h1": 2}
    assert [e["user_id"] for e in _lines(tmp_path)] == ["2", "10", "U1", "2"]


def test_the_scrub_replaces_the_file_and_a_crash_before_the_rename_leaves_it_whole(tmp_path, monkeypatch):
    from recsys.catalog.files import scrub_event_logs
    from recsys.serve.events import EventLog

    EventLog(tmp_path).append([_event("1"), _event("2")], None, None)
    path = next(tmp_path.glob("*.jsonl"))
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("power cut")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="power cut"):
            scrub_event_logs(tmp_path, {"1": "h1"})
    assert path.read_bytes() == before                  # never edited in place: the old file, whole
    inode = path.stat().st_ino
    assert scrub_event_logs(tmp_path, {"1": "h1"}) == {"h1": 1}
    assert path.stat().st_ino != inode and [e["user_id"] for e in _lines(tmp_path)] == ["2"]


def test_appends_during_scrubs_are_never_lost(tmp_path):
    from recsys.catalog.files import scrub_event_logs
    from recsys.serve.events import EventLog

    log = EventLog(tmp_path)
    log.append([_event("2")], None, None)
    done = threading.Event()
    written: list[str] = []

    def appender() -> None:
        for n in range(200):
            written.extend(log.append([_event("2", request=f"k{n}"), _event("1", request=f"g{n}")], None, None))
        done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    while not done.is_set():
        scrub_event_logs(tmp_path, {"1": "h1"})
    thread.join()
    scrub_event_logs(tmp_path, {"1": "h1"})
    log.append([_event("2", request="after")], None, None)   # the appender's file is the renamed one
    events = _lines(tmp_path)
    assert {e["user_id"] for e in events} == {"2"}
    kept = {e["event_id"] for e in events}
    assert len(events) == 202 and set(written[0::2]) <= kept


# --- quality samples -----------------------------------------------------------------------------------------

def test_quality_samples_never_keep_a_user_id():
    from recsys.quality.runner import REDACTED, redact_sample

    rows = [{"user_id": "AE1", "parent_asin": "B1", "raw": '{"user_id": "AE1"}', "rating": 6.0}]
    assert redact_sample(rows, "rating") == [{"user_id": REDACTED, "parent_asin": "B1", "raw": REDACTED,
                                             "rating": 6.0}]
    assert redact_sample([{"value": "AE1"}], "user_id") == [{"value": REDACTED}]
    assert redact_sample([{"value": 6.0}], "rating") == [{"value": 6.0}]
    assert redact_sample([{"value": "AE1"}], "user_id,parent_asin") == [{"value": REDACTED}]
    assert redact_sample([{"user_id": None, "_line": 5}], "user_id") == [{"user_id": None, "_line": 5}]   # missing


# --- raw lines: by their owner, by token only without one ----------------------------------------------------

def test_raw_lines_go_by_their_owner(spark):
    from recsys.catalog.mentions import mention_hits, owner_of_json_line

    lines = ['{"user_id": "1", "rating": 7.0}', '{"user_id": "2", "rating": 1.0, "text": "1"}',
             '{"user_id": "10", "rating": 1.0}', 'not json "1" at all', '{"rating": 2.0, "text": "U1"}',
             '{"user_id": "U1", "rating": 1.0}']
    df = spark.createDataFrame(list(enumerate(lines)), "n INT, raw STRING")
    salt = "s"
    hashes = spark.createDataFrame([(id_hash(salt, "1"),), (id_hash(salt, "U1"),)], "id_hash STRING")
    hits = mention_hits(df, ["raw"], ["n"], hashes, salt, [1, 2], owner=owner_of_json_line(F.col("raw")))
    assert sorted(r["n"] for r in hits.collect()) == [0, 3, 4, 5]


# --- a warehouse whose users are 1 … 60 ----------------------------------------------------------------------

USERS_1_TO_60 = 60


def _renumber_users(source: Path) -> None:
    """Rewrite every review file so the users are ``1`` … ``60`` (in order of first appearance)."""
    import gzip

    numbers: dict[str, str] = {}
    for path in sorted(source.glob("*.jsonl.gz")):
        if path.name.startswith("meta_"):
            continue
        out = []
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            record = json.loads(line)
            record["user_id"] = numbers.setdefault(record["user_id"], str(len(numbers) + 1))
            out.append(json.dumps(record))
        path.write_bytes(gzip.compress(("\n".join(out) + "\n").encode()))
    assert len(numbers) == USERS_1_TO_60


def _row_counts(warehouse: Path) -> dict[str, int]:
    from recsys import tables as T

    return {p.relative_to(warehouse).as_posix(): int(T.describe_table(p)["rows"]) for p in T.find_tables(warehouse)}


def _rows_of(spark, warehouse: Path, user: str) -> dict[str, int]:
    """Rows that name ``user`` by column (and by user_idx in gold/interactions), per table."""
    from recsys import constants as C
    from recsys import tables as T

    out = {}
    index = T.read_table(spark, warehouse, C.USER_INDEX).where(F.col(C.USER_ID) == user).first()
    for path in T.find_tables(warehouse):
        rel = path.relative_to(warehouse).as_posix()
        df = spark.read.format("delta").load(str(path))
        if C.USER_ID in df.columns and rel != C.DELETIONS:
            out[rel] = df.where(F.col(C.USER_ID) == user).count()
        elif rel == C.INTERACTIONS and index is not None:
            out[rel] = df.where(F.col(C.USER_IDX) == index[C.USER_IDX]).count()
    return out


@pytest.fixture(scope="module")
def numbered(spark, tmp_path_factory):
    """Pipeline on a small dump whose users are 1 … 60, API events of users 1 and 2 folded into ops/events, then
    user ``1`` erased through a relative warehouse path and user ``2`` through an absolute symlink to it."""
    from recsys.catalog import apply_drops, read_drops
    from recsys.config import load_settings
    from recsys.monitor.events_compaction import compact_events
    from recsys.pipeline import run_pipeline
    from recsys.serve import create_app
    from recsys.synth import generate

    root = tmp_path_factory.mktemp("numbered")
    settings = load_settings(warehouse=root / "wh", source=root / "src", reports=root / "reports")
    settings.synth = settings.synth.model_copy(update={"users": USERS_1_TO_60, "items": 30, "reviews": 3000,
                                                       "clusters": 3, "categories": ["Appliances"]})
    settings.train = settings.train.model_copy(update={"models": ["implicit_als", "popularity"]})
    settings.train.params = settings.train.params.updated(
        {"implicit_als": {"factors": 4, "regularization": 0.05, "alpha": 10.0, "iterations": 4}})
    settings.publish = settings.publish.model_copy(update={"k": 5, "spare": 2, "refit_on_all": False})
    settings.serve = settings.serve.model_copy(update={"reload_interval_s": 0.0, "build_in_subprocess": False})
    generate(settings.source, settings.synth, bad_line_rate=0.0, progress=False)
    _renumber_users(settings.source)
    run_pipeline(spark, settings)
    warehouse = settings.warehouse
    app = create_app(warehouse, settings.serve)
    client = app.test_client()
    for user in ("1", "2", "10", "1"):        # an impression of the user's own list: the only kind the API takes
        shown = client.get(f"/v1/users/{user}/recommendations").get_json()    # its request_id holds 1s and 10s
        assert client.post("/v1/events", json={"event_type": "impression", "user_id": user, "request_id": shown[
            "request_id"], "items": [i["parent_asin"] for i in shown["items"]]}).status_code == 202
    compact_events(spark, warehouse, settings.serve.resolved(warehouse).events_dir, closed_after_s=1e9)
    before = _row_counts(warehouse)
    of_user_1, of_user_2 = _rows_of(spark, warehouse, "1"), _rows_of(spark, warehouse, "2")

    drops = root / "drops"
    drops.mkdir()
    for user in ("1", "2"):
        (drops / f"user-{user}.csv").write_text(f"user_id,reason,requested_at\n{user},gdpr,2026-01-02T00:00:00Z\n")
    (root / "link").symlink_to(warehouse, target_is_directory=True)
    cwd = os.getcwd()
    os.chdir(root)
    try:       # model_copy skips validation: apply_drops itself must resolve the paths
        relative = settings.model_copy(update={"warehouse": Path("wh")})
        first = apply_drops(spark, relative, read_drops(users=drops / "user-1.csv"))
    finally:
        os.chdir(cwd)
    after_1 = _row_counts(warehouse)
    ready_1 = client.get("/ready").status_code
    linked = settings.model_copy(update={"warehouse": root / "link"})
    second = apply_drops(spark, linked, read_drops(users=drops / "user-2.csv"))
    return {"settings": settings, "client": client, "before": before, "after_1": after_1, "of_user_1": of_user_1,
            "of_user_2": of_user_2, "after_2": _row_counts(warehouse), "reports": [first, second],
            "ready_1": ready_1}


def test_erasing_user_1_removes_exactly_user_1s_rows(numbered):
    from recsys import constants as C

    before, after, of_user_1 = numbered["before"], numbered["after_1"], numbered["of_user_1"]
    assert of_user_1[C.SILVER_REVIEWS] > 0 and of_user_1[C.EVENTS] == 2 and of_user_1[C.USER_INDEX] == 1
    expected = {rel: n - of_user_1.get(rel, 0) for rel, n in before.items()}
    expected[C.DELETIONS] = 1                                 # the ledger row of the request
    assert after == expected
    rows_removed = numbered["reports"][0]["rows_removed"]
    assert {rel: n for rel, n in rows_removed.items() if rel in before} == {r: n for r, n in of_user_1.items() if n}
    assert rows_removed["_serving/events"] == 2                # user 10's event stays


def test_the_api_serves_after_erasing_user_1(numbered):
    client = numbered["client"]
    assert numbered["ready_1"] == 200 and client.get("/ready").status_code == 200
    assert client.get("/v1/users/1/recommendations").get_json()["source"] == "popular"
    assert client.get("/v1/users/10/recommendations").get_json()["source"] == "personalized"


def test_a_relative_and_a_symlinked_warehouse_both_erase(numbered):
    from recsys import constants as C

    after_1, after_2, of_user_2 = numbered["after_1"], numbered["after_2"], numbered["of_user_2"]
    expected = {rel: n - of_user_2.get(rel, 0) for rel, n in after_1.items()}
    expected[C.DELETIONS] = 2
    assert after_2 == expected
    assert [r["applied"] for r in numbered["reports"]] == [1, 1]


def test_settings_resolve_a_relative_or_symlinked_warehouse_once(tmp_path, monkeypatch):
    from recsys.config import load_settings

    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert load_settings(warehouse=Path("link")).warehouse == (tmp_path / "real").resolve()
    assert load_settings(warehouse=Path("real")).warehouse.is_absolute()


def test_erasure_purges_the_stored_quality_results(numbered):
    purged = numbered["reports"][0]["quality_artifacts_purged"]
    assert any(p.endswith("validations") for p in purged)
    assert not list(numbered["settings"].warehouse.glob("_quality/gx/uncommitted/validations/*"))


# --- pending requests ----------------------------------------------------------------------------------------

def test_a_request_pending_too_long_is_reported_and_logged(spark, tmp_path, caplog):
    from datetime import datetime, timedelta, timezone

    from recsys.catalog import apply_rows, ledger
    from recsys.config import load_settings

    settings = load_settings(warehouse=tmp_path / "wh")
    settings.warehouse.mkdir()
    salt = ledger.ensure_salt(settings.warehouse)
    old = datetime.now(timezone.utc) - timedelta(hours=50)
    fresh = datetime.now(timezone.utc) - timedelta(hours=1)
    ledger.record_pending(spark, settings.warehouse, [       # a run died after recording them
        ledger.Request("user", "U1", id_hash(salt, "U1"), "gdpr", old),
        ledger.Request("user", "U2", id_hash(salt, "U2"), "gdpr", fresh)])
    with caplog.at_level("WARNING", logger="recsys.catalog.apply"):
        report = apply_rows(spark, settings, [])
    assert [(r["id_hash"], r["pending_hours"] >= 50) for r in report["overdue_pending"]] == [
        (id_hash(salt, "U1")[:12], True)]
    assert "pending for 50" in caplog.text and "U1" not in caplog.text


# --- the audit -----------------------------------------------------------------------------------------------

def test_the_audit_reads_npy_arrays_and_folders_outside_the_warehouse(tmp_path):
    import numpy as np

    from recsys.audit import audit

    warehouse, logs = tmp_path / "wh", tmp_path / "logs"
    (warehouse / "_serving").mkdir(parents=True)
    logs.mkdir()
    ids = ["AE" + "0" * 25 + str(n) for n in range(3)]          # full width: the array is one run of id characters
    np.save(warehouse / "_serving" / "users.npy", np.array(ids, dtype="S28"))
    (logs / "job.log").write_text(f"sample: {ids[2]}\n")
    drop = tmp_path / "users.csv"
    drop.write_text(f"user_id,reason,requested_at\n{ids[1]},x,2026-01-01T00:00:00Z\n{ids[2]},x,2026-01-01T00:00:00Z\n")
    report = audit(warehouse, drop, extra=[logs, warehouse / "_serving"])
    assert sorted((f.path, f.where) for f in report.findings) == sorted([
        ("_serving/users.npy", "npy values"), ("_serving/users.npy", "npy values"), (str(logs / "job.log"), "bytes")])


def test_the_audit_finds_a_deleted_item_in_the_current_version_not_in_history_vacuum_keeps(tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    from recsys.audit import audit

    warehouse = tmp_path / "wh"
    table = warehouse / "silver" / "items"
    write_deltalake(str(table), pa.table({"parent_asin": ["B0GONE0001", "B0KEPT0001"]}),   # no stats, as ours
                    configuration={"delta.dataSkippingNumIndexedCols": "0"})
    drop = tmp_path / "items.csv"
    drop.write_text("parent_asin,reason,requested_at\nB0GONE0001,x,2026-01-01T00:00:00Z\n")
    live = audit(warehouse, drop)
    assert {(f.label, f.where) for f in live.findings} >= {("item:B0GONE0001", "parquet value parent_asin")}
    assert all(f.path.startswith("silver/items/part-") for f in live.findings)

    write_deltalake(str(table), pa.table({"parent_asin": ["B0KEPT0001"]}), mode="overwrite")  # the item removed
    after = audit(warehouse, drop)
    assert after.ok, after.findings                 # its old file is history, kept for the purge window
    assert any("1 data file(s) of earlier table versions" in n for n in after.notes)

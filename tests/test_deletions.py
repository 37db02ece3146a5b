"""Item deletions and user erasure on a private copy of the session's end-to-end warehouse (synth → pipeline →
API → deletions).

The module fixture applies one drop of items and one of users three times: first without purging history
(MERGE + VACUUM only), then with the default settings (the deferred purge rewrites the touched tables), then
once more (a no-op). The tests check the result with code of their own — raw bytes and decoded Parquet of every
file, time travel, the API — not with ``recsys.audit`` alone.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.audit import audit
from recsys.catalog import apply_drops, read_drop, read_drops, relist_items
from recsys.catalog.drops import DropError
from recsys.catalog.mentions import Matcher, tokens
from recsys.catalog.swap import recover, staging, swap_in
from recsys.ids import id_hash
from recsys.serve.denylist import read_salt
from conftest import copy_warehouse

K, SPARE = 5, 3
ITEM_DROP = "parent_asin,reason,requested_at\n"
USER_DROP = "user_id,reason,requested_at\n"


# --- the shared world ----------------------------------------------------------------------------------------

@dataclass
class World:
    settings: object
    client: object
    store: object
    items: list[str]
    users: list[str]
    kept_user: str
    item_drop: Path
    user_drop: Path
    lists_before: dict[tuple[str, str], list[str]]
    built_at_before: str
    reports: list[dict]
    versions_before_noop: dict[str, int]
    versions_after_noop: dict[str, int]
    unpurged_hits: list[str]
    old_version_read: str


def _versions(warehouse: Path) -> dict[str, int]:
    return {str(p.relative_to(warehouse.resolve())): int(T.describe_table(p)["version"])
            for p in T.find_tables(warehouse)}


def _lists(spark, warehouse: Path) -> dict[tuple[str, str], list[str]]:
    rows = T.read_table(spark, warehouse, C.RECS_USER_TOPK).select(C.VERSION, C.USER_ID, C.RANK, C.ITEM_ID).collect()
    out: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for r in rows:
        out.setdefault((r[C.VERSION], r[C.USER_ID]), []).append((r[C.RANK], r[C.ITEM_ID]))
    return {key: [a for _, a in sorted(v)] for key, v in out.items()}


def _quarantined_user(spark, warehouse: Path, exclude: set[str]) -> str:
    """A user whose id appears only inside a quarantined raw line (e.g. a rating out of range)."""
    raw = T.read_table(spark, warehouse, C.QUARANTINE_REVIEWS).select(C.RAW).collect()
    for row in raw:
        found = re.search(r'"user_id": "([A-Z0-9]{28})"', row[C.RAW])
        if found and found.group(1) not in exclude:
            return found.group(1)
    raise AssertionError("the synthetic dump has no quarantined line naming a user")


@pytest.fixture(scope="module")
def world(spark, built_warehouse, tmp_path_factory) -> World:
    from recsys.serve.variants import build_pinned
    from recsys.serve import create_app

    root = tmp_path_factory.mktemp("deletions")
    settings = copy_warehouse(built_warehouse, root)          # a private copy of the session's pipeline run
    assert (settings.publish.k, settings.publish.spare) == (K, SPARE)
    # No refit at republish, and no purge window: VACUUM keeps no old file, and the erasure applied without
    # purging is due at the next run.
    settings.publish = settings.publish.model_copy(update={"refit_on_all": False})
    settings.deletions = settings.deletions.model_copy(update={"purge_window_hours": 0.0})
    warehouse = settings.warehouse

    app = create_app(warehouse, settings.serve)
    client = app.test_client()
    store = app.extensions["recsys"]["store"]
    lists_before = _lists(spark, warehouse)
    topk = T.read_table(spark, warehouse, C.RECS_USER_TOPK)
    items = [r[0] for r in topk.where(F.col(C.RANK) <= K).groupBy(C.ITEM_ID).count()
             .orderBy(F.desc("count"), C.ITEM_ID).limit(2).collect()]
    listed = sorted({u for _, u in lists_before})
    users, kept_user = listed[:2], listed[-1]
    users.append(_quarantined_user(spark, warehouse, {*users, kept_user}))
    for user in (users[0], kept_user):        # the API's local event log names them before the erasure
        shown = client.get(f"/v1/users/{user}/recommendations").get_json()
        assert client.post("/v1/events", json={"event_type": "impression", "user_id": user, "request_id": shown[
            "request_id"], "items": [i["parent_asin"] for i in shown["items"]]}).status_code == 202
    item_drop, user_drop = root / "drops" / "items.csv", root / "drops" / "users.jsonl"
    item_drop.parent.mkdir()
    item_drop.write_text(ITEM_DROP + "".join(f"{i},takedown,2026-01-01T00:00:00Z\n" for i in items))
    user_drop.write_text("".join(json.dumps({"user_id": u, "reason": f"gdpr request for {u}",
                                             "requested_at": "2026-01-02T10:00:00+00:00"}) + "\n" for u in users))
    built_at = store.state.snapshot.meta["built_at"]
    build_pinned(warehouse, store.state.snapshot.version)   # an A/B variant pinned to this version: files to scrub
    silver_version = _versions(warehouse)[C.SILVER_REVIEWS]
    drops = read_drops(items=item_drop, users=user_drop)

    reports = [apply_drops(spark, settings, drops, purge_history=False)]     # MERGE + VACUUM only
    unpurged = raw_hits(warehouse, users) + decoded_hits(warehouse, users)
    try:                                                  # the version before the erasure, its files vacuumed
        old = spark.read.format("delta").option("versionAsOf", silver_version).load(
            T.table_path(warehouse, C.SILVER_REVIEWS)).where(F.col(C.USER_ID).isin(users)).count()
        old_read = f"returned {old} rows of erased users"
    except Exception as exc:  # noqa: BLE001 - any failure to read is the expected outcome
        old_read = f"failed: {type(exc).__name__}"
    reports.append(apply_drops(spark, settings, drops))                      # the deferred purge is due now
    before = _versions(warehouse)
    reports.append(apply_drops(spark, settings, drops))                      # nothing left to do
    return World(settings, client, store, items, users, kept_user, item_drop, user_drop, lists_before, built_at,
                 reports, before, _versions(warehouse), unpurged, old_read)


# --- independent scanners (no recsys code) -------------------------------------------------------------------

def _needles(users: list[str]) -> dict[bytes, str]:
    out = {}
    for user in users:
        out[user.encode()] = user
        out[user[:32].encode()] = user           # Delta's string statistics keep a 32-character prefix
    return out


def raw_hits(warehouse: Path, users: list[str]) -> list[str]:
    """Every file's raw bytes (gzip members decompressed too), searched for each id and its 32-char prefix."""
    hits = []
    for path in sorted(p for p in Path(warehouse).rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data += gzip.decompress(data)
        hits += [f"{path}: {label}" for needle, label in _needles(users).items() if needle in data]
    return hits


def decoded_hits(warehouse: Path, users: list[str]) -> list[str]:
    """Every Parquet file decoded (all values, nested ones as JSON) plus its footer min/max statistics."""
    hits = []
    for path in sorted(p for p in Path(warehouse).rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            if handle.read(4) != b"PAR1":
                continue
        text = json.dumps(pq.read_table(path).to_pylist(), default=str)
        meta = pq.ParquetFile(path).metadata
        for rg in range(meta.num_row_groups):
            for ci in range(meta.num_columns):
                stats = meta.row_group(rg).column(ci).statistics
                if stats is not None and stats.has_min_max:
                    text += f"\n{stats.min!s}\n{stats.max!s}"
        hits += [f"{path}: {label}" for needle, label in _needles(users).items() if needle.decode() in text]
    return hits


# --- erasure -------------------------------------------------------------------------------------------------

def test_no_file_under_the_warehouse_names_an_erased_user(world):
    assert raw_hits(world.settings.warehouse, world.users) == []
    assert decoded_hits(world.settings.warehouse, world.users) == []


def test_merge_and_vacuum_alone_already_leave_no_trace(world):
    # Before the history purge: ids were never in the Delta log (stats exclude them, deletes are MERGEs).
    assert world.unpurged_hits == []
    assert world.old_version_read.startswith("failed")


def test_history_purge_leaves_no_version_that_knows_them(spark, world):
    warehouse = world.settings.warehouse
    assert world.reports[1]["deferred_purges"] and world.reports[1]["applied"] == 0
    for rel in (C.SILVER_REVIEWS, C.BRONZE_REVIEWS, C.USER_INDEX, C.RECS_USER_TOPK, C.QUARANTINE_REVIEWS):
        path = T.table_path(warehouse, rel)
        versions = [r["version"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()]
        assert max(versions) <= 1, rel
        for version in versions:
            old = spark.read.format("delta").option("versionAsOf", version).load(path)
            text = old.select(F.to_json(F.struct(*old.columns)).alias("j"))
            assert text.where(F.col("j").rlike("|".join(world.users))).count() == 0, (rel, version)


def test_the_audit_agrees_for_both_drops_and_the_ledger(world):
    api = _api_getter(world.client)
    for drop in (world.item_drop, world.user_drop, None):
        report = audit(world.settings.warehouse, drop, api=api)
        assert report.ok, report.findings
        assert report.files > 100
    assert audit(world.settings.warehouse, world.user_drop).users == 3


def test_the_audit_finds_a_planted_id(world, tmp_path):
    planted = world.settings.warehouse / "ops" / "stray.log"
    planted.write_text(f"left behind: {world.users[1]}, not x{world.users[0]}y\n")   # whole tokens only
    try:
        report = audit(world.settings.warehouse, world.user_drop)
        hashed = audit(world.settings.warehouse)             # from ops/deletions: hashes and the salt only
    finally:
        planted.unlink()
    salt = read_salt(world.settings.warehouse)
    label = f"user:{id_hash(salt, world.users[1])[:12]}"
    assert [(f.label, f.path) for f in report.findings] == [(label, "ops/stray.log")]
    assert [(f.label, f.path) for f in hashed.findings] == [(label, "ops/stray.log")]


def test_the_api_forgets_them(world):
    for user in world.users:
        body = world.client.get(f"/v1/users/{user}/recommendations").get_json()
        assert body["source"] == "popular"
    assert world.client.get(f"/v1/users/{world.kept_user}/recommendations").get_json()["source"] == "personalized"
    assert world.store.state.snapshot.meta["built_at"] != world.built_at_before      # rebuilt and re-mapped
    events = world.store.settings.events_dir
    text = "".join(p.read_text() for p in events.glob("*.jsonl"))
    assert world.kept_user in text and world.users[0] not in text
    shown = world.client.get(f"/v1/users/{world.users[0]}/recommendations").get_json()
    accepted = world.client.post("/v1/events", json={"event_type": "impression", "user_id": world.users[0],
                                                     "request_id": shown["request_id"],
                                                     "items": [i["parent_asin"] for i in shown["items"]]})
    assert accepted.status_code == 202 and accepted.get_json()["accepted"] == 0
    assert world.users[0] not in "".join(p.read_text() for p in events.glob("*.jsonl"))


def test_the_ledger_keeps_hashes_and_counts_only(spark, world):
    rows = T.read_table(spark, world.settings.warehouse, C.DELETIONS).collect()
    salt = read_salt(world.settings.warehouse)
    users = {r["id_hash"]: r for r in rows if r["kind"] == "user"}
    assert set(users) == {id_hash(salt, u) for u in world.users}
    assert all(r["id"] is None and r["id_length"] == 28 and r["status"] == "deleted" and r["applied_at"]
               and r["purged_at"] and r["reason"] == "gdpr request for [user]" for r in users.values())
    assert {r["id"] for r in rows if r["kind"] == "item"} == set(world.items)
    quarantined = users[id_hash(salt, world.users[2])]["rows_removed"]
    assert quarantined[C.QUARANTINE_REVIEWS] >= 1
    listed = users[id_hash(salt, world.users[0])]["rows_removed"]
    assert listed[C.USER_INDEX] == 1 and listed[C.RECS_USER_TOPK] == K + SPARE and listed[C.SILVER_REVIEWS] >= 1
    assert any(k.endswith("user_factors") for k in listed) and listed["_serving/events"] == 1


# --- item deletions ------------------------------------------------------------------------------------------

def test_lists_lose_the_item_and_keep_k_entries(spark, world):
    after = _lists(spark, world.settings.warehouse)
    touched = 0
    for key, before in world.lists_before.items():
        if key[1] in world.users:
            assert key not in after
            continue
        expected = [a for a in before if a not in world.items]     # same order, the spares moved up
        assert after[key] == expected
        if len(expected) < len(before):
            touched += 1
            assert len(after[key]) >= K
    assert touched > 10


def test_similar_and_popular_lists_are_reranked(spark, world):
    warehouse = world.settings.warehouse
    similar = T.read_table(spark, warehouse, C.RECS_SIMILAR_ITEMS)
    assert similar.where(F.col(C.ITEM_ID).isin(world.items) | F.col("similar_asin").isin(world.items)).count() == 0
    for table, group in ((similar, [C.VERSION, C.ITEM_ID, "method"]),
                         (T.read_table(spark, warehouse, C.RECS_POPULAR), [C.VERSION, C.CATEGORY])):
        gaps = table.groupBy(*group).agg(F.count("*").alias("n"), F.max(C.RANK).alias("top")).where("n != top")
        assert gaps.count() == 0
    popular = T.read_table(spark, warehouse, C.RECS_POPULAR)
    assert popular.where(F.col(C.ITEM_ID).isin(world.items)).count() == 0


def test_deleted_items_leave_silver_gold_and_models(spark, world):
    warehouse = world.settings.warehouse
    for rel in (C.SILVER_ITEMS, C.SILVER_REVIEWS):
        assert T.read_table(spark, warehouse, rel).where(F.col(C.ITEM_ID).isin(world.items)).count() == 0
    index = T.read_table(spark, warehouse, C.ITEM_INDEX).where(F.col(C.ITEM_ID).isin(world.items)).collect()
    assert len(index) == 2 and all(r["deleted"] for r in index)
    idx = [r[C.ITEM_IDX] for r in index]
    assert T.read_table(spark, warehouse, C.INTERACTIONS).where(F.col(C.ITEM_IDX).isin(idx)).count() == 0
    for factors in warehouse.glob("models/*/*/item_factors"):
        assert not set(pq.read_table(factors, columns=["id"])["id"].to_pylist()) & set(idx), factors
    for asin in world.items:
        assert world.client.get(f"/v1/items/{asin}/similar").status_code == 404


# --- idempotence, re-ingest, relist --------------------------------------------------------------------------

def test_applying_the_same_drop_again_changes_nothing(world):
    assert world.reports[0]["applied"] == 5 and world.reports[2]["applied"] == 0
    assert world.reports[2]["deferred_purges"] == []
    assert world.versions_after_noop == world.versions_before_noop


def test_reingesting_the_raw_files_does_not_resurrect_them(spark, world):
    from recsys.features import build_features
    from recsys.ingest import ingest
    from recsys.silver import build_silver

    settings, warehouse = world.settings, world.settings.warehouse
    report = ingest(spark, settings.source, warehouse, settings.ingest, force=True).to_dict()
    assert report["suppressed"] >= len(world.users)            # the erased users' lines, good and bad
    assert report["lines"] == report["blank"] + report["good"] + report["quarantined"] + report["suppressed"]
    build_silver(spark, warehouse)
    build_features(spark, warehouse, settings.features)
    assert raw_hits(warehouse, world.users) == [] and decoded_hits(warehouse, world.users) == []
    for rel in (C.SILVER_ITEMS, C.SILVER_REVIEWS):
        assert T.read_table(spark, warehouse, rel).where(F.col(C.ITEM_ID).isin(world.items)).count() == 0
    assert T.read_table(spark, warehouse, C.BRONZE_ITEMS).where(F.col(C.ITEM_ID).isin(world.items)).count() > 0
    files = T.read_table(spark, warehouse, C.INGESTED_FILES).where(F.col("suppressed") > 0).count()
    assert files >= 1


def test_relisting_brings_an_item_back(spark, world, tmp_path):
    warehouse = world.settings.warehouse
    relist = tmp_path / "relist.csv"
    relist.write_text(ITEM_DROP + f"{world.items[0]},catalog fixed,2026-02-01T00:00:00Z\n")
    out = relist_items(spark, world.settings, relist)
    assert out["relisted"] == 1 and relist_items(spark, world.settings, relist)["relisted"] == 0
    status = {r["id"]: r["status"] for r in T.read_table(spark, warehouse, C.DELETIONS).collect() if r["id"]}
    assert status == {world.items[0]: "relisted", world.items[1]: "deleted"}
    index = T.read_table(spark, warehouse, C.ITEM_INDEX).where(F.col(C.ITEM_ID) == world.items[0]).first()
    assert index["deleted"] is False
    assert T.read_table(spark, warehouse, C.SILVER_ITEMS).where(F.col(C.ITEM_ID) == world.items[0]).count() == 1
    world.client.get("/health")                                   # the next request reloads the deny-list
    assert world.store.state.denylist.items == frozenset({world.items[1]})


# --- units: drops, matching, swaps ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,text,message", [
    ("a.csv", "parent_asin,reason\nB1,x\n", "expected the columns"),
    ("a.csv", "user_id,reason,requested_at\nAE 1,x,2026-01-01T00:00:00Z\n", "1-64 characters"),
    ("a.csv", "user_id,reason,requested_at\nAE1,x,yesterday\n", "not ISO-8601"),
    ("a.jsonl", '{"user_id": "AE1", "reason": "x"}\n', "expected the columns"),
    ("a.jsonl", '["AE1"]\n', "not a JSON object"),
    ("a.txt", "", "are .csv or .jsonl"),
    ("a.csv", "", "empty drop file"),
])
def test_bad_drops_are_refused_with_the_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DropError, match=message):
        read_drop(path)


def test_a_drop_keeps_the_latest_request_per_id(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text(USER_DROP + "AE1,a,2026-01-01T00:00:00Z\nAE1,b,2026-03-01T00:00:00\nAE2,,2026-01-01T01:00:00+01:00\n")
    drop = read_drop(path, "user")
    assert [(r.id, r.reason, r.requested_at.isoformat()) for r in drop.rows] == [
        ("AE1", "b", "2026-03-01T00:00:00+00:00"), ("AE2", "", "2026-01-01T00:00:00+00:00")]
    with pytest.raises(DropError, match="expected item rows"):
        read_drop(path, "item")


def test_matcher_finds_ids_as_whole_tokens_and_by_hash():
    ids = {"AEXAMPLE00000000000000000001": "u1", "B0ITEM0001": "i1"}
    plain = Matcher(ids, [28, 10])
    assert plain.find(b'{"user_id": "AEXAMPLE00000000000000000001"}') == {"u1"}
    assert plain.find(b"\\nAEXAMPLE00000000000000000001 and B0ITEM0001") == {"u1", "i1"}   # escape undone
    assert plain.find(b"AEXAMPLE00000000000000000001x B0ITEM000 xB0ITEM0001") == set()
    assert plain.find(b"\0".join([b"A" * 28] * 300) + b"\0AEXAMPLE00000000000000000001\0" + b"Z" * 5000) == {"u1"}
    hashed = Matcher({id_hash("salt", k): v for k, v in ids.items()}, [28, 10], salt="salt")
    assert hashed.find("xx AEXAMPLE00000000000000000001.yy") == {"u1"} and not hashed.find("xxB0ITEM0001")


def test_spark_tokens_match_the_python_twin(spark):
    text = "a AEXAMPLE00000000000000000001, zzAEXAMPLE00000000000000000001 B0ITEM0001"
    got = spark.createDataFrame([(text,)], "t STRING").select(tokens(F.col("t"), [28])).first()[0]
    assert got == ["AEXAMPLE00000000000000000001"]
    assert [t.decode() for t in Matcher({"x": "x"}, [28]).tokens(text)] == got


def test_an_interrupted_swap_is_repaired_and_leaves_no_old_copy(tmp_path):
    target = tmp_path / "wh" / "gold" / "t"
    target.mkdir(parents=True)
    (target / "old.parquet").write_text("erased user")
    staged = staging(target)
    staged.mkdir()
    (staged / "new.parquet").write_text("clean")
    target.rename(target.parent / ".t.swap-old")                 # crash between the two renames
    assert recover(tmp_path / "wh") == [str(target)]
    assert [p.name for p in target.iterdir()] == ["new.parquet"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["t"]
    staged.mkdir()
    (staged / "newer.parquet").write_text("clean")
    swap_in(target)
    assert [p.name for p in target.iterdir()] == ["newer.parquet"]


def _api_getter(client):
    def get(path: str) -> tuple[int, dict]:
        response = client.get(path)
        return response.status_code, response.get_json() or {}
    return get


# --- lists cut below K are re-scored ---------------------------------------------------------------------------

def _list_of(spark, warehouse: Path, version: str, user: str) -> list[tuple[int, str, float]]:
    rows = (T.read_table(spark, warehouse, C.RECS_USER_TOPK)
            .where((F.col(C.VERSION) == version) & (F.col(C.USER_ID) == user)).collect())
    return sorted((r[C.RANK], r[C.ITEM_ID], r[C.SCORE]) for r in rows)


def _delete_head_of(spark, settings, version: str, user: str, n: int, drop: Path) -> tuple[list[str], dict]:
    """Delete the first ``n`` items of ``user``'s list; returns the items and the run's report."""
    head = [item for _, item, _ in _list_of(spark, settings.warehouse, version, user)[:n]]
    drop.write_text(ITEM_DROP + "".join(f"{i},takedown,2026-01-01T00:00:00Z\n" for i in head))
    return head, apply_drops(spark, settings, [read_drop(drop, "item")])


def test_lists_deletions_cut_below_k_are_rescored_from_the_production_model(spark, built_warehouse, tmp_path):
    from recsys.serve import create_app

    settings = copy_warehouse(built_warehouse, tmp_path)
    settings.serve = settings.serve.model_copy(update={"build_in_subprocess": True})   # as deployed
    warehouse, version = settings.warehouse, built_warehouse.summary["version"]
    k, spare = settings.publish.k, settings.publish.spare
    client = create_app(warehouse, settings.serve).test_client()          # a snapshot the deletions must rebuild
    assert client.get("/ready").get_json()["version"] == version
    topk = T.read_table(spark, warehouse, C.RECS_USER_TOPK).where(F.col(C.VERSION) == version)
    sizes_before = {r[0]: r[1] for r in topk.groupBy(C.USER_ID).count().collect()}
    first, second = sorted(u for u, n in sizes_before.items() if n == k + spare)[:2]
    before = _list_of(spark, warehouse, version, first)

    # More of one list than the spares cover: without a refill it would hold k + spare - (spare + 1) < k items.
    # Below publish.rewrite_share (refill) and deletions.rewrite_file_share (cascade) the changed lists are MERGEd.
    settings.publish = settings.publish.model_copy(update={"rewrite_share": 1.0})
    settings.deletions = settings.deletions.model_copy(update={"rewrite_file_share": 1.0})
    gone, report = _delete_head_of(spark, settings, version, first, spare + 1, tmp_path / "a.csv")
    assert report["refill"]["how"] == "merge" and report["refill"]["refilled"] >= 1
    after = _list_of(spark, warehouse, version, first)
    assert [rank for rank, _, _ in after] == list(range(1, k + spare + 1))
    kept = [item for _, item, _ in before if item not in gone]
    assert [item for _, item, _ in after][:len(kept)] == kept       # same model: the survivors lead, in order
    assert not set(gone) & {item for _, item, _ in after}
    assert [s for _, _, s in after] == sorted((s for _, _, s in after), reverse=True)
    user_idx = T.read_table(spark, warehouse, C.USER_INDEX).where(F.col(C.USER_ID) == first).first()[C.USER_IDX]
    seen = {r[0] for r in T.read_table(spark, warehouse, C.INTERACTIONS).where(F.col(C.USER_IDX) == user_idx)
            .join(T.read_table(spark, warehouse, C.ITEM_INDEX), C.ITEM_IDX).select(C.ITEM_ID).collect()}
    assert not seen & {item for _, item, _ in after}                # nothing the user already has
    assert report["snapshot_rebuilt"] is True                       # in a child interpreter
    body = client.get(f"/v1/users/{first}/recommendations?k={k}").get_json()
    assert [i[C.ITEM_ID] for i in body["items"]] == [item for _, item, _ in after][:k]

    # Past both shares the list table is rewritten, not MERGEd (the re-rank of the cascade, then the refill), with
    # the same contract per list.
    settings.publish = settings.publish.model_copy(update={"rewrite_share": 0.0})
    settings.deletions = settings.deletions.model_copy(update={"rewrite_file_share": 0.0})
    gone_too, report = _delete_head_of(spark, settings, version, second, spare + 1, tmp_path / "b.csv")
    assert report["refill"]["how"] == "rewrite"
    deleted = set(gone) | set(gone_too)
    ranks: dict[tuple[str, str], list[int]] = {}
    for r in T.read_table(spark, warehouse, C.RECS_USER_TOPK).collect():          # every version
        assert r[C.ITEM_ID] not in deleted
        ranks.setdefault((r[C.VERSION], r[C.USER_ID]), []).append(r[C.RANK])
    assert all(sorted(v) == list(range(1, len(v) + 1)) for v in ranks.values()), "a gap in some list's ranks"
    sizes_after = {user: len(v) for (v_, user), v in ranks.items() if v_ == version}
    assert all(sizes_after.get(u, 0) >= min(k, n) for u, n in sizes_before.items()), "a list fell below K"
    assert len(_list_of(spark, warehouse, version, second)) == k + spare

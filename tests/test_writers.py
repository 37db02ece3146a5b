"""One writer at a time: the warehouse lock, VACUUM that keeps its window with Delta's check on, pruning that spares
pinned and unswitched versions, publish re-applying the deletion ledger, and publish racing deletions for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from conftest import SMALL_JOB_SPARK, copy_warehouse
from recsys import constants as C
from recsys import tables as T
from recsys.lock import LockSettings, WarehouseBusyError, holder, writer_lock

REPO = Path(__file__).resolve().parents[1]
RECSYS = str(Path(sys.executable).parent / "recsys")
RACE_ROUNDS = int(os.environ.get("RECSYS_TEST_RACE_ROUNDS", "1"))     # make test-all: 3


def _hold_in_child(warehouse: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the writer lock for ``seconds``; returns once it holds it."""
    code = ("import sys, time; from recsys.lock import writer_lock\n"
            "with writer_lock(sys.argv[1], 'recsys publish'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(warehouse), str(seconds)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "held"
    return child


# --- the lock ---------------------------------------------------------------------------------------------------


def test_the_lock_is_reentrant_in_a_process_and_exclusive_across_processes(tmp_path):
    with writer_lock(tmp_path, "recsys pipeline"):
        with writer_lock(tmp_path, "recsys publish"):          # the pipeline's own steps: no self-deadlock
            assert holder(tmp_path)["command"] == "recsys pipeline"
        code = ("import sys; from recsys.lock import *\n"
                "try:\n    with writer_lock(sys.argv[1], 'other', LockSettings(wait_s=0.5, poll_s=0.1)): print('got')\n"
                "except WarehouseBusyError as e: print('busy:', e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True).stdout
        assert out.startswith("busy:") and "recsys pipeline" in out and f"pid {os.getpid()}" in out
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True).stdout
    assert out.strip() == "got"                                # released when the outermost hold ends


def test_a_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path):
    child = _hold_in_child(tmp_path, 1.5)
    started = time.monotonic()
    with writer_lock(tmp_path, "recsys erase-users", LockSettings(wait_s=30, poll_s=0.1)):
        waited = time.monotonic() - started
    child.wait(timeout=30)
    assert waited >= 0.5                                       # it did wait for the holder


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    child = _hold_in_child(tmp_path, 600)
    child.kill()
    child.wait(timeout=30)
    with writer_lock(tmp_path, "next", LockSettings(wait_s=5, poll_s=0.1)):
        assert holder(tmp_path)["command"] == "next"


def test_cli_writers_wait_then_fail_naming_the_holder(tmp_path):
    warehouse = tmp_path / "wh"
    warehouse.mkdir()
    child = _hold_in_child(warehouse, 60)
    try:
        env = {**os.environ, "RECSYS_LOCK__WAIT_S": "1", "RECSYS_LOCK__POLL_S": "0.2"}
        for argv in ([RECSYS, "build-silver", "--warehouse", str(warehouse)],
                     [sys.executable, str(REPO / "jobs" / "build_silver.py"), "--warehouse", str(warehouse)]):
            done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
            assert done.returncode == 2, done.stderr
            assert "being written by recsys publish" in done.stderr and f"pid {child.pid}" in done.stderr
    finally:
        child.kill()
        child.wait()


def test_cli_writers_refuse_a_missing_warehouse_and_create_nothing(tmp_path):
    for command in ("publish", "erase-users", "runs", "validate"):
        argv = [RECSYS, command, "--warehouse", str(tmp_path / "missing")]
        argv += {"erase-users": [str(tmp_path / "drop.csv")], "validate": ["--layer", "gold"]}.get(command, [])
        done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 2 and "warehouse not found" in done.stderr, (command, done.stderr)
        assert not (tmp_path / "missing").exists(), command


# --- VACUUM with Delta's retention check on --------------------------------------------------------------------


def test_vacuum_keeps_the_window_and_the_retention_check_stays_on(spark, tmp_path):
    from recsys.catalog.history import RETENTION, vacuum

    path = str(tmp_path / "t")
    spark.range(10).write.format("delta").save(path)
    spark.range(5).write.format("delta").mode("overwrite").save(path)
    with pytest.raises(Exception, match="DELTA_VACUUM_RETENTION_PERIOD_TOO_SHORT"):
        spark.sql(f"VACUUM delta.`{path}` RETAIN 0 HOURS").collect()      # the session's check is on
    vacuum(spark, path, 24.0)
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 10   # inside the window
    properties = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()["properties"]
    assert properties[RETENTION] == "interval 24 hours"
    vacuum(spark, path, 0)                                     # a window of 0: the old files go at once
    with pytest.raises(Exception):
        spark.read.format("delta").option("versionAsOf", 0).load(path).count()
    assert spark.read.format("delta").load(path).count() == 5


# --- pruning ------------------------------------------------------------------------------------------------------


def _write_versions(spark, warehouse: Path, versions: list[str], published: dict[str, datetime]) -> None:
    rows = [(v, "U1", 1, "I1", 1.0, "popularity") for v in versions]
    spark.createDataFrame(rows, T.RECS_USER_TOPK.ddl).write.format("delta").mode("append").save(
        T.ensure_table(spark, warehouse, T.RECS_USER_TOPK))
    spark.createDataFrame([(v, "popularity", "run", at, 5) for v, at in published.items()],
                          T.PUBLISHED.ddl).write.format("delta").mode("append").save(
        T.ensure_table(spark, warehouse, T.PUBLISHED))


def test_prune_spares_pinned_and_unswitched_versions(spark, tmp_path):
    from recsys.ops import unswitched
    from recsys.publish import _mark_unswitched, prune_versions

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    _write_versions(spark, tmp_path, ["v1", "v2", "v3", "v4", "v5", "v6"],
                    {"v1": t0, "v2": t0 + timedelta(1), "v3": t0 + timedelta(2), "v4": t0 + timedelta(3)})
    _mark_unswitched(tmp_path, "v5")                           # written by a DAG run, its gate still running
    _mark_unswitched(tmp_path, "v6")
    marks = json.loads((tmp_path / "ops" / "_unswitched.json").read_text())
    marks["v6"] = (datetime.now(timezone.utc) - timedelta(hours=100)).isoformat()   # abandoned long ago
    (tmp_path / "ops" / "_unswitched.json").write_text(json.dumps(marks))

    removed = prune_versions(spark, tmp_path, keep=1, pinned={"v2"}, grace_hours=48)

    left = {r[0] for r in T.read_table(spark, tmp_path, C.RECS_USER_TOPK).select(C.VERSION).distinct().collect()}
    assert left == {"v4", "v2", "v5"} and removed == ["v1", "v3", "v6"]
    assert set(unswitched(tmp_path)) == {"v5"}                 # the abandoned mark went with its rows


# --- publish on a built warehouse ---------------------------------------------------------------------------------


def _model_files(warehouse: Path) -> dict[str, float]:
    return {str(p.relative_to(warehouse)): p.stat().st_mtime for p in (warehouse / "models").rglob("*") if p.is_file()}


def _versions_of(spark, warehouse: Path, rel: str, version: str):
    return T.read_table(spark, warehouse, rel).where(F.col(C.VERSION) == version)


def test_publish_reapplies_pending_deletions_and_no_refit_fits_nothing(spark, built_warehouse, tmp_path):
    from recsys.catalog import ledger
    from recsys.catalog.drops import DropRow
    from recsys.publish import publish

    settings = copy_warehouse(built_warehouse, tmp_path)
    warehouse = settings.warehouse
    current = built_warehouse.summary["version"]
    topk = _versions_of(spark, warehouse, C.RECS_USER_TOPK, current)
    user = topk.select(C.USER_ID).orderBy(C.USER_ID).first()[0]
    item = topk.groupBy(C.ITEM_ID).count().orderBy(F.desc("count"), C.ITEM_ID).first()[0]
    # Requests recorded pending, as when a deletion run died before its cascade: the tables still hold them.
    salt = ledger.ensure_salt(warehouse)
    now = datetime.now(timezone.utc)
    requests = ledger.to_do(spark, warehouse, [DropRow("user", user, "test", now), DropRow("item", item, "test", now)],
                            salt)
    ledger.record_pending(spark, warehouse, requests)
    models_before = _model_files(warehouse)

    out = publish(spark, settings, version="v-after", refit=False)

    assert out["refit"] is False and _model_files(warehouse) == models_before      # nothing refit, nothing written
    new = {rel: _versions_of(spark, warehouse, rel, "v-after")
           for rel in (C.RECS_USER_TOPK, C.RECS_SIMILAR_ITEMS, C.RECS_POPULAR)}
    assert new[C.RECS_USER_TOPK].count() > 0 and new[C.RECS_POPULAR].count() > 0
    assert new[C.RECS_USER_TOPK].where(F.col(C.USER_ID) == user).count() == 0
    for rel, frame in new.items():
        columns = [C.ITEM_ID] + (["similar_asin"] if rel == C.RECS_SIMILAR_ITEMS else [])
        for column in columns:
            assert frame.where(F.col(column) == item).count() == 0, (rel, column)
    # Without the pending rows the same lists would have held them (the filter, not the model, removed them).
    assert topk.where(F.col(C.USER_ID) == user).count() > 0 and topk.where(F.col(C.ITEM_ID) == item).count() > 0


# --- publish racing deletions, for real -------------------------------------------------------------------------


def _cli_env() -> dict[str, str]:
    return {**os.environ, "RECSYS_SPARK__MASTER": "local[1]", "RECSYS_SPARK__DRIVER_MEMORY": "1g",
            "RECSYS_SPARK__SHUFFLE_PARTITIONS": "2", "RECSYS_SPARK__CONSOLE_PROGRESS": "false",
            "RECSYS_SPARK__LOG_LEVEL": "ERROR", "RECSYS_PUBLISH__K": "5", "RECSYS_PUBLISH__SPARE": "3",
            "RECSYS_SPARK__EXTRA": json.dumps(SMALL_JOB_SPARK)}


def _full_read(spark, path: Path) -> int:
    """Read every file of the table's current version (a count can be answered from the log alone).

    Every column is serialised (maps cannot be hashed) and the sum collected, so no column can be pruned away."""
    df = spark.read.format("delta").load(str(path))
    return df.select(F.sum(F.length(F.to_json(F.struct(*df.columns))))).collect()[0][0] or 0


@pytest.mark.slow
def test_publish_and_deletions_started_together_leave_a_consistent_warehouse(spark, built_warehouse, tmp_path):
    settings = copy_warehouse(built_warehouse, tmp_path)
    warehouse = settings.warehouse
    current = built_warehouse.summary["version"]
    topk = _versions_of(spark, warehouse, C.RECS_USER_TOPK, current)
    users = [r[0] for r in topk.select(C.USER_ID).distinct().orderBy(C.USER_ID).limit(RACE_ROUNDS).collect()]
    items = [r[0] for r in topk.groupBy(C.ITEM_ID).count().orderBy(F.desc("count"), C.ITEM_ID)
             .limit(RACE_ROUNDS).collect()]
    env = _cli_env()
    for n in range(RACE_ROUNDS):
        user_drop, item_drop = tmp_path / f"users{n}.csv", tmp_path / f"items{n}.csv"
        user_drop.write_text(f"user_id,reason,requested_at\n{users[n]},gdpr,2026-01-01T00:00:00Z\n")
        item_drop.write_text(f"parent_asin,reason,requested_at\n{items[n]},takedown,2026-01-01T00:00:00Z\n")
        commands = [[RECSYS, "publish", "--warehouse", str(warehouse), "--no-refit"],
                    [RECSYS, "erase-users", "--warehouse", str(warehouse), str(user_drop)],
                    [RECSYS, "delete-items", "--warehouse", str(warehouse), str(item_drop)]]
        procs = [subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for argv in commands]
        for argv, proc in zip(commands, procs):
            _, err = proc.communicate(timeout=1200)
            assert proc.returncode == 0, (argv[1], err[-2000:])

    for table in T.find_tables(warehouse):                     # every table's current version reads in full
        assert _full_read(spark, table) >= 0, table
    audit = subprocess.run([RECSYS, "audit-deletions", "--warehouse", str(warehouse)], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=1200)
    assert audit.returncode == 0, audit.stdout[-3000:] + audit.stderr[-2000:]   # erased ids are nowhere
    from recsys.ops import current_version

    served = current_version(warehouse)
    for rel in (C.RECS_USER_TOPK, C.RECS_POPULAR, C.RECS_SIMILAR_ITEMS):
        rows = _versions_of(spark, warehouse, rel, served)
        assert rows.count() > 0, rel
        assert rows.where(F.col(C.ITEM_ID).isin(items)).count() == 0, rel
    assert _versions_of(spark, warehouse, C.RECS_USER_TOPK, served).where(F.col(C.USER_ID).isin(users)).count() == 0
    from recsys.serve import create_app

    client = create_app(warehouse, settings.serve).test_client()
    assert client.get("/ready").get_json()["version"] == served
    kept = topk.select(C.USER_ID).distinct().where(~F.col(C.USER_ID).isin(users)).first()[0]
    body = client.get(f"/v1/users/{kept}/recommendations?k=5").get_json()
    assert body["source"] == "personalized" and len(body["items"]) == 5
    assert not set(items) & {i[C.ITEM_ID] for i in body["items"]}

"""Apply deletion drops: item deletions and user erasures, cascaded through the warehouse and the API.

Order of a run, each step safe to repeat:

1. Repair directory swaps a crash left half-done (:mod:`recsys.catalog.swap`).
2. Keep only requests not applied yet (``ops/deletions``): a drop applied twice changes nothing.
3. Land them as *pending* rows in ``ops/deletions``: the API denies them from its next request on.
4. One commit per Delta table (:mod:`recsys.catalog.cascade`: a MERGE, a rewrite of a list table most of whose
   lists change, or — when the run purges history — one write into a fresh directory that replaces the table,
   which step 5 then has nothing left to do for); users whose current list fell below K are
   re-scored from the production model (:func:`recsys.publish.refill_short_lists`); then model factors, event
   logs (:mod:`recsys.catalog.files`) and the serving snapshots (:mod:`recsys.serve.maintenance`), rebuilt in a
   child process as soon as what they read is final (the published tables, the indexes, gold/interactions, the model
   folders), while the rest of the warehouse is cascaded.
5. Make the removed rows unrecoverable: VACUUM every changed table, or — when users were erased and
   ``purge_history`` is on (the default) — rewrite those tables into fresh directories (:mod:`.history`).
6. Complete the ``ops/deletions`` rows (``applied_at``, rows removed per table); API workers then map the rebuilt
   snapshot. Erasures applied without purging are purged by the first run after ``purge_window_hours``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog import cascade, history, ledger, swap
from recsys.catalog.drops import Drop, DropRow, find_drops, read_drop
from recsys.catalog.files import drop_model_rows, is_user_folder, scrub_event_logs
from recsys.catalog.settings import DeletionSettings
from recsys.config import Settings
from recsys.logs import step
from recsys.models import factor_cache
from recsys.publish import refill_short_lists
from recsys.serve.denylist import KIND_ITEM, KIND_USER
from recsys.serve.maintenance import SnapshotRefresh

log = logging.getLogger(__name__)

EVENT_LOGS = "_serving/events"
RECS = (C.RECS_USER_TOPK, C.RECS_SIMILAR_ITEMS, C.RECS_POPULAR)
# Cascaded first: the refill reads the indexes (who is erased, what is deleted) and gold/interactions (what each user
# has seen); the snapshot reads the lists, silver/items, gold/interactions (each user's known items, for the session
# endpoint) and the model folders (the session scorer), which are cascaded next. The rest of the warehouse is
# cascaded while the snapshot builds: nothing the snapshot reads is rewritten or swapped under it.
READ_BY_REFILL_AND_SNAPSHOT = frozenset({*RECS, C.ITEM_INDEX, C.USER_INDEX, C.SILVER_ITEMS, C.INTERACTIONS})


def deletion_settings(settings: Settings) -> DeletionSettings:
    return settings.deletions


def read_drops(*, items: Path | None = None, users: Path | None = None, drops: Path | None = None) -> list[Drop]:
    """The drops named on a command line: an item file, a user file, and/or every file of a drops folder."""
    out = []
    if items is not None:
        out.append(read_drop(items, KIND_ITEM))
    if users is not None:
        out.append(read_drop(users, KIND_USER))
    if drops is not None:
        out.extend(read_drop(path) for path in find_drops(drops))
    return out


def apply_drops(spark: SparkSession, settings: Settings, drops: Sequence[Drop], *,
                purge_history: bool | None = None) -> dict:
    """Apply every row of ``drops`` in one run (one MERGE per table for all of them)."""
    latest: dict[tuple[str, str], DropRow] = {}
    for drop in drops:
        for row in drop.rows:
            key = (row.kind, row.id)
            if key not in latest or row.requested_at > latest[key].requested_at:
                latest[key] = row
    report = apply_rows(spark, settings, list(latest.values()), purge_history=purge_history)
    report["files"] = [str(d.path) for d in drops]
    return report


def apply_rows(spark: SparkSession, settings: Settings, rows: Sequence[DropRow], *,
               purge_history: bool | None = None) -> dict:
    """Apply deletion requests; returns a summary without any plain user id (safe to print and log)."""
    warehouse = Path(settings.warehouse).resolve()     # one absolute path: table paths are compared below it
    conf = deletion_settings(settings)
    purge = conf.purge_history if purge_history is None else purge_history
    now = datetime.now(timezone.utc)
    with step("apply_deletions", warehouse=str(warehouse), requested=len(rows), purge_history=purge) as rec:
        if not warehouse.is_dir():
            raise FileNotFoundError(f"warehouse not found: {warehouse}")
        rec["repaired_swaps"] = swap.recover(warehouse)
        salt = ledger.ensure_salt(warehouse)
        requests = ledger.to_do(spark, warehouse, rows, salt)
        rec.update(applied=len(requests), skipped=len(rows) - len(requests),
                   items=sum(r.kind == KIND_ITEM for r in requests), users=sum(r.kind == KIND_USER for r in requests))
        if requests:
            ledger.record_pending(spark, warehouse, requests)
            purged = purge and rec["users"] > 0
            removed, changed, extra = _cascade(spark, settings, requests, salt, purged)
            started = time.perf_counter()
            kept = [rel for rel in changed if rel not in extra["fresh"]]    # fresh: no history left to purge
            if purged:
                for rel in kept:
                    history.rewrite(spark, warehouse, rel)
            else:
                history.vacuum_all(spark, [T.table_path(warehouse, rel) for rel in kept], conf.purge_window_hours)
            extra["seconds"]["history"] = round(time.perf_counter() - started, 2)
            ledger.record_applied(spark, warehouse, requests, removed, now, purged)
            totals: dict[str, int] = defaultdict(int)
            for per_table in removed.values():
                for rel, n in per_table.items():
                    totals[rel] += n
            rec.update(changed=changed, rows_removed=dict(sorted(totals.items())), history_purged=purged, **extra)
        rec["deferred_purges"] = _purge_due(spark, warehouse, conf, now, {r.id_hash for r in requests})
        rec["overdue_pending"] = _warn_overdue(spark, warehouse, conf, now)
        return {k: v for k, v in rec.items() if k != "step"}


def _cascade(spark: SparkSession, settings: Settings, requests: Sequence[ledger.Request],
             salt: str, fresh: bool) -> tuple[dict[str, dict[str, int]], list[str], dict]:
    """Every table and file; returns rows removed per id_hash per table, the Delta tables changed, and extras.
    ``fresh``: each changed table is written once into a fresh directory (its history purged on the way)."""
    warehouse = Path(settings.warehouse).resolve()
    items = {r.id: r.id_hash for r in requests if r.kind == KIND_ITEM}
    users = {r.id: r.id_hash for r in requests if r.kind == KIND_USER}
    started = time.perf_counter()
    batch = cascade.build_batch(spark, warehouse, salt, items, users)
    plans = cascade.combine(cascade.item_plans(spark, warehouse, batch), cascade.user_plans(spark, warehouse, batch))
    removed: dict[str, dict[str, int]] = defaultdict(dict)
    changed, written_fresh, seconds = [], [], {"plan": round(time.perf_counter() - started, 2)}

    def apply(rels: Sequence[str]) -> None:
        for rel in rels:
            started = time.perf_counter()
            outcome = cascade.apply_plan(spark, warehouse, rel, plans[rel], settings.deletions.rewrite_file_share,
                                         fresh)
            seconds[rel] = round(time.perf_counter() - started, 2)
            if outcome.changed:
                changed.append(rel)
            if outcome.fresh:
                written_fresh.append(rel)
            for digest, n in outcome.removed.items():
                removed[digest][rel] = n

    apply(sorted(rel for rel in plans if rel in READ_BY_REFILL_AND_SNAPSHOT))
    refill = {}
    if items and T.is_delta_table(Path(T.table_path(warehouse, C.RECS_USER_TOPK))):
        started = time.perf_counter()
        refill = refill_short_lists(spark, settings)      # lists the deletions cut below K, re-scored
        seconds["refill"] = round(time.perf_counter() - started, 2)
        if refill["refilled"] and C.RECS_USER_TOPK not in changed:
            changed.append(C.RECS_USER_TOPK)
    recs_changed = any(rel in changed for rel in RECS)
    started = time.perf_counter()
    user_idx = {r[C.USER_IDX]: r["id_hash"] for r in batch.user_idx.collect()} if batch.user_idx else {}
    item_idx = {r[C.ITEM_IDX]: r["id_hash"] for r in batch.item_idx.collect()} if batch.item_idx else {}
    for folder, gone in drop_model_rows(warehouse, user_idx, item_idx).items():
        owners = user_idx if is_user_folder(folder) else item_idx
        for idx in gone:
            removed[owners[idx]][folder] = 1
    seconds["models"] = round(time.perf_counter() - started, 2)
    # What the snapshot reads is final: it builds (in a child process) while the rest is cascaded.
    snapshot = SnapshotRefresh(warehouse, settings.serve, rebuild=recs_changed) if recs_changed or users else None
    try:
        apply(sorted(rel for rel in plans if rel not in READ_BY_REFILL_AND_SNAPSHOT))
        started = time.perf_counter()
        events = settings.serve.resolved(warehouse).events_dir
        assert events is not None
        for digest, n in scrub_event_logs(events, users).items():
            removed[digest][EVENT_LOGS] = n
        quality_purged = purge_quality_artifacts(warehouse, settings) if users else []
        factor_cache.clear(warehouse)                   # cached fits hold erased users' and deleted items' rows
        seconds["files"] = round(time.perf_counter() - started, 2)
    except BaseException:
        if snapshot is not None:
            snapshot.cancel()
        raise
    started = time.perf_counter()
    rebuilt = snapshot.finish() if snapshot is not None else False
    seconds["snapshot_wait"] = round(time.perf_counter() - started, 2)
    return removed, changed, {"snapshot_rebuilt": rebuilt, "seconds": seconds, "refill": refill,
                              "fresh": written_fresh, "quality_artifacts_purged": quality_purged}


def purge_quality_artifacts(warehouse: Path, settings: Settings) -> list[str]:
    """Delete the stored Great Expectations results and their Data Docs pages: written before samples were
    redacted (or by GX itself, which keeps unexpected rows whole), they can name an erased user."""
    from recsys.quality.gate import purge_validation_artifacts

    return [str(p) for p in purge_validation_artifacts(warehouse, settings.quality)]


def _warn_overdue(spark: SparkSession, warehouse: Path, conf: DeletionSettings, now: datetime) -> list[dict]:
    """Warn about requests pending longer than ``pending_warn_hours``: denied, but never erased (a run failed
    and its drops were not reclaimed); they complete when their drop is applied again."""
    overdue = ledger.overdue_pending(spark, warehouse, conf.pending_warn_hours, now)
    for row in overdue:
        log.warning("deletion request pending for %.1f h (over deletions.pending_warn_hours = %s): %s %s…; "
                    "apply its drop again", row["pending_hours"], conf.pending_warn_hours, row["kind"],
                    row["id_hash"])
    return overdue


def _purge_due(spark: SparkSession, warehouse: Path, conf: DeletionSettings, now: datetime,
               exclude: set[str]) -> list[str]:
    """Purge the history of tables that erasures applied without ``purge_history`` touched, once their window
    has passed; returns the tables rewritten."""
    hashes, tables = ledger.due_purges(spark, warehouse, conf.purge_window_hours, now)
    hashes = [h for h in hashes if h not in exclude]
    if not hashes:
        return []
    tables = [t for t in tables if T.is_delta_table(Path(T.table_path(warehouse, t)))]
    for rel in tables:
        history.rewrite(spark, warehouse, rel)
    ledger.record_purged(spark, warehouse, hashes, now)
    return tables


def relist_items(spark: SparkSession, settings: Settings, path: Path | str) -> dict:
    """Bring deleted items back because the catalog lists them again (``recsys relist-items --warehouse DIR FILE``).

    The drop has the item format (``parent_asin,reason,requested_at``). Each deleted item is marked ``relisted``
    in ``ops/deletions`` (the API stops denying it, and a later deletion request newer than ``requested_at``
    deletes it again), its ``gold/item_index`` tombstone is cleared, and silver and features are rebuilt from
    bronze, which kept the item's rows. Models learnt without the item: it reappears in recommendations after
    the next train + publish (in popular lists at the next publish). Items not deleted are skipped.
    """
    from delta.tables import DeltaTable

    from recsys.features import build_features
    from recsys.silver import build_silver

    warehouse = Path(settings.warehouse).resolve()
    drop = read_drop(path, KIND_ITEM)
    with step("relist_items", warehouse=str(warehouse), requested=len(drop.rows)) as rec:
        salt = ledger.ensure_salt(warehouse)
        asins = ledger.record_relisted(spark, warehouse, drop.rows, salt)
        rec.update(relisted=len(asins), skipped=len(drop.rows) - len(asins))
        if asins and T.is_delta_table(Path(T.table_path(warehouse, C.ITEM_INDEX))):
            source = spark.createDataFrame([(a,) for a in asins], f"{C.ITEM_ID} STRING")
            (DeltaTable.forPath(spark, T.table_path(warehouse, C.ITEM_INDEX)).alias("t")
             .merge(source.alias("s"), f"t.{C.ITEM_ID} = s.{C.ITEM_ID}")
             .whenMatchedUpdate(condition=f"t.{cascade.DELETED}", set={cascade.DELETED: F.lit(False)}).execute())
        if asins or _missing_from_silver(spark, warehouse, [r.id for r in drop.rows]):
            rec["silver"] = build_silver(spark, warehouse, force=True)
            rec["features"] = {k: v for k, v in build_features(spark, warehouse, settings.features).items()
                               if k != "built_at"}
        return {k: v for k, v in rec.items() if k != "step"}


def _missing_from_silver(spark: SparkSession, warehouse: Path, asins: list[str]) -> bool:
    """Relisted items that bronze holds but silver does not: a previous relist died before its rebuild."""
    if not asins or not T.is_delta_table(Path(T.table_path(warehouse, C.BRONZE_ITEMS))):
        return False
    wanted = spark.createDataFrame([(a,) for a in asins], f"{C.ITEM_ID} STRING")
    live = wanted.join(ledger.read_ledger(spark, warehouse).where(
        (F.col(ledger.KIND) == KIND_ITEM) & (F.col(ledger.STATUS) == ledger.RELISTED))
        .select(F.col(ledger.ID).alias(C.ITEM_ID)), C.ITEM_ID, "left_semi")
    in_bronze = live.join(T.read_table(spark, warehouse, C.BRONZE_ITEMS).select(C.ITEM_ID), C.ITEM_ID, "left_semi")
    if not T.is_delta_table(Path(T.table_path(warehouse, C.SILVER_ITEMS))):
        return in_bronze.limit(1).count() > 0
    silver = T.read_table(spark, warehouse, C.SILVER_ITEMS).select(C.ITEM_ID)
    return in_bronze.join(silver, C.ITEM_ID, "left_anti").limit(1).count() > 0

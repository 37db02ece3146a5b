"""Make removed rows unrecoverable: VACUUM the old files, and optionally drop the table's history altogether.

After a MERGE the removed rows still sit in data files the log no longer references. ``VACUUM … FULL`` deletes
those older than ``deletions.purge_window_hours`` (default 24 h), so readers of a recent version (a snapshot
build, a delta-rs reader) keep their files, and time travel past the window fails instead of returning them.
Delta's retention check stays on: the window becomes the table's ``delta.deletedFileRetentionDuration`` before
the VACUUM, so no other VACUUM of the table can go below it either. Erasures do not wait for the window: they
rewrite the table (below), at once or by the first deletion run after the window. The log itself keeps no ids (statistics exclude id columns, deletes are MERGEs against
DataFrames), but it is history all the same, and VACUUM never touches it; log cleanup only happens at checkpoints
once ``delta.logRetentionDuration`` has passed. ``purge_history`` therefore rewrites the table's current version
into a fresh directory (same schema, partitioning and properties) and swaps it in.

Trade-off of purging: the table's history is gone — it restarts at version 0 (empty create) and 1 (the data),
DESCRIBE HISTORY, time travel and CDF before the purge are lost for every row, not only the erased ones, and
readers holding the old snapshot fail. Jobs that compare versions (silver's "bronze unchanged" skip) simply
rebuild once.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from recsys import tables as T
from recsys.catalog import swap

log = logging.getLogger(__name__)

SPECS = {spec.path: spec for spec in vars(T).values() if isinstance(spec, T.TableSpec)}


RETENTION = "delta.deletedFileRetentionDuration"
VACUUM_THREADS = 4


def retention_hours(window_hours: float) -> int:
    """Delta's VACUUM counts retention in whole hours (it rounds ``RETAIN``): the window, rounded up."""
    return max(0, math.ceil(window_hours - 1e-9))


def vacuum(spark: SparkSession, path: str, retain_hours: float) -> None:
    """Delete the data files the current version does not reference and that were removed over ``retain_hours``
    ago (FULL mode, whole hours), with the table's retention set to the same window so Delta's check agrees."""
    from delta.tables import DeltaTable

    quoted = "`" + path.replace("`", "``") + "`"        # a path, never an id, goes into these statements
    hours = retention_hours(retain_hours)
    interval = f"interval {hours} hours"
    properties = DeltaTable.forPath(spark, path).detail().first()["properties"] or {}
    if properties.get(RETENTION) != interval:
        spark.sql(f"ALTER TABLE delta.{quoted} SET TBLPROPERTIES ('{RETENTION}' = '{interval}')").collect()
    spark.sql(f"VACUUM delta.{quoted} RETAIN {hours} HOURS FULL").collect()


def vacuum_all(spark: SparkSession, paths: Sequence[str], retain_hours: float) -> None:
    """:func:`vacuum` each table, ``VACUUM_THREADS`` at a time: a VACUUM is mostly listing files and reading the log
    in the driver, so several overlap where one by one they would wait in turn (tables differ: no conflict)."""
    with ThreadPoolExecutor(max_workers=VACUUM_THREADS) as pool:
        for done in [pool.submit(vacuum, spark, path, retain_hours) for path in paths]:
            done.result()                      # the first failure is raised, after every VACUUM has ended


def forget_logs(spark: SparkSession, *paths: Path) -> None:
    """Forget the cached Delta logs of ``paths``: a swapped directory restarts at version 0 and must be re-read from
    disk. Only these: the other tables' cached logs stay (re-reading them all costs a log replay each)."""
    jvm = spark._jvm                                              # noqa: SLF001 - no public API for this
    for path in paths:
        jvm.org.apache.spark.sql.delta.DeltaLog.invalidateCache(spark._jsparkSession,   # noqa: SLF001
                                                                jvm.org.apache.hadoop.fs.Path(str(path)))


def rewrite(spark: SparkSession, warehouse: Path | str, rel: str, content: DataFrame | None = None) -> None:
    """Write ``content`` (default: the table's current version) into a fresh directory with the table's contract
    and swap it in place of the table ``rel``: its history is dropped. ``content`` may read the table itself,
    which stays in place until the write is complete."""
    from delta.tables import DeltaTable

    target = Path(T.table_path(warehouse, rel))
    staged = swap.staging(target)
    shutil.rmtree(staged, ignore_errors=True)
    staged_rel = str(staged.relative_to(Path(warehouse).resolve()))
    spec = SPECS.get(rel)
    if spec is not None:
        T.ensure_table(spark, warehouse, replace(spec, path=staged_rel))
    else:                                   # a table someone else added: copy its own contract
        detail = DeltaTable.forPath(spark, str(target)).detail().first()
        current = spark.read.format("delta").load(str(target))
        builder = DeltaTable.create(spark).location(str(staged)).addColumns(current.schema)
        if detail["partitionColumns"]:
            builder = builder.partitionedBy(*detail["partitionColumns"])
        for key, value in (detail["properties"] or {}).items():
            builder = builder.property(key, value)
        builder.execute()
    if content is None:
        content = spark.read.format("delta").load(str(target))
    content.write.format("delta").mode("append").save(str(staged))
    swap.swap_in(target)
    forget_logs(spark, target, staged)
    log.info("history purged: %s rewritten into a fresh directory", rel)

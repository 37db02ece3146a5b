"""The one SparkSession builder used by every job, test and benchmark.

Delta's SQL extension and catalog are configured; the Delta jars come from the local folder filled by
``make jars`` (Maven Central at install time, never the network at run time); the time zone is UTC so
millisecond timestamps mean the same everywhere; the UI is off unless asked for.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from recsys.config import REPO_ROOT, SparkSettings

log = logging.getLogger(__name__)


class MissingJarsError(RuntimeError):
    """Raised when the Delta jars were not fetched (run ``make jars``)."""


def delta_jars(jars_dir: Path) -> list[Path]:
    folder = jars_dir if jars_dir.is_absolute() else REPO_ROOT / jars_dir
    jars = sorted(folder.glob("*.jar"))
    if not any(j.name.startswith("delta-spark_") for j in jars):
        raise MissingJarsError(
            f"no delta-spark jar in {folder}: run `make jars` (fetches them from Maven Central once)"
        )
    return jars


def session_conf(settings: SparkSettings) -> dict[str, str]:
    """Every ``spark.*`` key we set, as a plain dict (also used to build ``spark-submit --conf`` lines)."""
    jars = ",".join(str(j) for j in delta_jars(settings.jars_dir))
    conf = {
        "spark.app.name": settings.app_name,
        "spark.master": settings.master,
        "spark.driver.memory": settings.driver_memory,
        "spark.jars": jars,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.default.parallelism": str(settings.shuffle_partitions),
        "spark.ui.enabled": str(settings.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": str(settings.console_progress).lower(),
        # Delta rebuilds table state with this many tasks (default 50: far too many for small tables).
        "spark.databricks.delta.snapshotPartitions": str(max(1, settings.shuffle_partitions // 2)),
        # Delta's VACUUM lists a table's files in a Spark job of this many tasks (Spark's default, 10,000, made
        # each VACUUM of a small table cost 23 s on 2 cores, against 1.9 s with a handful).
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(max(2, settings.shuffle_partitions)),
        # Keep ids out of Delta's per-file statistics by default (see recsys.tables); erasure relies on it.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        "spark.pyspark.python": sys.executable,
        # Python workers import pyspark from site-packages, not from the zips Spark prepends to their path, and
        # freeze each task's survivors before the daemon's between-task gc.collect(): ~0.3 s of CPU per task
        # less (see recsys.spark_daemon).
        "spark.python.daemon.module": "recsys.spark_daemon",
        # Arrow batches to Python bounded by rows only (maxRecordsPerBatch, 10K). A byte bound makes Spark 4.1
        # measure the batch after every row, which for list columns (factors, seen lists) re-walks the whole
        # batch: 2/3 of the JVM's time when scoring 200K users. Int.MaxValue turns that check off.
        "spark.sql.execution.arrow.maxBytesPerBatch": str(2**31 - 1),
    }
    if settings.master.startswith("local"):
        # One machine: the driver on loopback, whatever the hostname resolves to (no "resolves to a loopback
        # address" fallback onto another interface, no firewall surprises).
        conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"})
    conf.update(settings.extra)
    return conf


def get_spark(settings: SparkSettings | None = None):
    """Return the active session or build one from ``settings``.

    Under ``spark-submit`` the master and jars given on the command line win: we only fill keys that
    are not set yet, so the same job runs on ``local[*]`` or a standalone master unchanged.
    """
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder
    already_set = _submit_conf()
    for key, value in session_conf(settings).items():
        if key not in already_set:
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    _quiet_deliberate_warnings(spark)
    checkpoint = settings.checkpoint_dir
    spark.sparkContext.setCheckpointDir(str(checkpoint if checkpoint.is_absolute() else Path.cwd() / checkpoint))
    return spark


# Loggers whose WARN is about something done on purpose, repeated at every plan: WindowExec's "No Partition Defined
# for Window operation" for the global orders a vocabulary's numbering and the popularity percentiles need (one
# sorted partition, by design); two dozen lines of it buried the demo's output.
_DELIBERATE = ("org.apache.spark.sql.execution.window.WindowExec",)


def _quiet_deliberate_warnings(spark) -> None:
    jvm = spark.sparkContext._jvm
    for name in _DELIBERATE:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, jvm.org.apache.logging.log4j.Level.ERROR)


def _submit_conf() -> dict[str, str]:
    """Keys that ``spark-submit`` already gave the driver JVM; empty when run from plain Python.

    Under spark-submit the JVM starts first and hands Python ``PYSPARK_GATEWAY_PORT``; its master, jars
    and ``--conf`` values then win over our defaults so the same job runs anywhere unchanged.
    """
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def task_slots(spark) -> int:
    """Tasks the cluster runs at once (executor cores / task cores; local[N]: N). Not ``defaultParallelism``, which
    is ``spark.default.parallelism`` (the shuffle width we set, above the core count): a barrier stage — XGBoost's
    distributed training — wider than the slots never starts (Spark retries the slot check, then fails the job)."""
    sc = spark.sparkContext._jsc.sc()
    return max(1, int(sc.maxNumConcurrentTasks(sc.resourceProfileManager().resourceProfileFromId(0))))

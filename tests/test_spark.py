"""The session's Python workers: the daemon of recsys.spark_daemon is the one Spark starts, and it does what
it says (pyspark from site-packages, each task's survivors frozen)."""

import gc
import os
import sys

from recsys.spark_daemon import drop_spark_archives

SPARK_ARCHIVES = ["/opt/spark/python/lib/pyspark.zip", "/opt/spark/python/lib/py4j-0.10.9.9-src.zip",
                  "/opt/spark/jars/spark-core_2.13-4.1.4.jar"]


def test_spark_archives_are_dropped_when_the_packages_are_installed():
    path = SPARK_ARCHIVES + ["/opt/app/jobs.zip"] + sys.path
    assert drop_spark_archives(path) == ["/opt/app/jobs.zip"] + sys.path


def test_spark_archives_are_kept_when_pyspark_lives_only_there():
    path = SPARK_ARCHIVES + ["/nowhere"]
    assert drop_spark_archives(path) == path


def test_python_workers_import_pyspark_from_site_packages_and_freeze_each_task(spark):
    def worker_state(_):                                  # nested: shipped by value, not by module name
        import pyspark

        archives = [p for p in sys.path if p.endswith((".zip", ".jar")) and os.path.exists(p)]
        return pyspark.__file__, archives, gc.get_freeze_count()

    assert spark.conf.get("spark.python.daemon.module") == "recsys.spark_daemon"
    rdd = spark.sparkContext.parallelize(range(8), 8)
    rdd.map(worker_state).collect()                      # every worker has run a task
    states = rdd.map(worker_state).collect()
    files, archives, frozen = zip(*states)
    assert all(".zip" not in f and "site-packages" in f for f in files), files
    assert not any(archives), archives
    assert min(frozen) > 0


def test_arrow_batches_to_python_are_bounded_by_rows_only(spark):
    """A byte bound makes Spark measure each batch after every row (quadratic for list columns)."""
    assert int(spark.conf.get("spark.sql.execution.arrow.maxBytesPerBatch")) == 2**31 - 1
    assert int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")) > 0


def test_task_slots_count_the_tasks_that_run_at_once(spark):
    """XGBoost's barrier stage needs every worker running at once: sized by ``defaultParallelism`` (the shuffle
    width pipelines set, 8 by default, above the core count) it waited for slots that never came."""
    from recsys.spark import task_slots

    assert task_slots(spark) == 2                                  # local[2]

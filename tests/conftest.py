"""Shared fixtures: one real local Spark session (with Delta) per test run, paths to the real data, one small
warehouse through the whole pipeline; the tiers (``heavy`` marked from the fixtures a test uses) and the Hypothesis
profiles (``HYPOTHESIS_PROFILE``: ``default`` in ``make test``, ``full`` in ``make test-all``)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hypothesis_profiles  # noqa: F401 - registers and loads the Hypothesis profile before any test runs

SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
# Model selection off in every test run, child processes (CLI, spark-submit, Airflow tasks) included: tests run the
# pipeline many times on tiny data; tests/test_selection.py turns it on where the search itself is tested.
os.environ.setdefault("RECSYS_TUNING__BUDGET_SECONDS", "0")


# --- tiers: `make test` runs everything, `make test-fast` deselects `heavy` ------------------------------------------

# A test is heavy if it needs one of these (directly or through another fixture): a JVM, a pipeline run, an Airflow
# run, the standalone cluster. Marking by fixture means a new Spark test is heavy without anyone remembering to say so.
HEAVY_FIXTURES = frozenset({"spark", "built_warehouse", "airflow_run", "cluster"})
# Heavy without one of those fixtures: a real gunicorn in child processes (~40 s on a busy 2-core box).
HEAVY_TESTS = frozenset({"test_serve.py::test_real_gunicorn_serves_reloads_and_keeps_events"})


# --- parallel: `make test` runs two pytest-xdist workers with --dist loadfile --------------------------------------

# A module's tests stay on one worker, so each module fixture is built once; the session warehouse (built_warehouse)
# is built once for the whole run, by the first worker that needs it (~80 s). The longest files start first, so the
# two workers finish together; the rest follow in collection order. (Not --dist loadgroup: with pytest 9 its group
# suffix never reaches the scheduler, and every test is scheduled on its own.)
LONGEST_FIRST = ("test_dags.py", "test_deletions.py", "test_writers.py", "test_monitor.py", "test_cluster.py",
                 "test_erasure_scope.py", "test_pipeline.py", "test_features.py", "test_quality.py")


def _start_order(item) -> int:
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_collection_modifyitems(config, items) -> None:
    """Mark ``heavy`` every test that uses a heavy fixture, is marked ``slow``, or is listed in HEAVY_TESTS; the
    longest files first."""
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if (HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.get_closest_marker("slow")
                or name in HEAVY_TESTS):
            item.add_marker(pytest.mark.heavy)
    items.sort(key=_start_order)                       # stable: a file's tests keep their order


# Spark on test tables (a few thousand rows), in this process and in the jobs the tests start (spark-submit, the
# recsys CLI, Airflow tasks): adaptive re-planning gains nothing at this size, and neither does compiling Java for
# every plan — whole-stage and expression code generation (Janino, in a JVM that lives seconds) cost more CPU than
# the rows they then process, so expressions are interpreted (Spark's own tests run both ways; same results).
SMALL_TABLES_SPARK = {"spark.sql.adaptive.enabled": "false", "spark.sql.codegen.wholeStage": "false",
                      "spark.sql.codegen.factoryMode": "NO_CODEGEN"}
# The child JVMs also skip C2 (JIT-compiling for peak speed) and the parallel collector: more CPU than they save;
# and the bytecode verification of Spark's own jars (≈ 1 of the ≈ 10 CPU seconds a job's JVM takes to start).
_NO_VERIFY = "-XX:+UnlockDiagnosticVMOptions -XX:-BytecodeVerificationRemote"
SMALL_JOB_JAVA = f"-Duser.timezone=UTC -XX:TieredStopAtLevel=1 -XX:+UseSerialGC {_NO_VERIFY}"
# The tests' own JVM (the ``spark`` fixture, ~20 min of small queries) keeps C2: C1 alone made test_features and
# test_quality 30 % slower. Its CPU went 27 % to the JIT and 14 % to G1's concurrent and parallel GC threads; the
# throughput collector has no concurrent marking: 8 % less of that JVM's CPU on the same tests, same wall time idle.
IN_PROCESS_JAVA = f"-Duser.timezone=UTC -XX:+UseParallelGC {_NO_VERIFY}"
SMALL_JOB_SPARK = {**SMALL_TABLES_SPARK, "spark.driver.extraJavaOptions": SMALL_JOB_JAVA,
                   "spark.executor.extraJavaOptions": SMALL_JOB_JAVA}


@pytest.fixture(scope="session", autouse=True)
def _tempfiles_under_pytest(tmp_path_factory) -> Iterator[None]:
    """Numpy-fitted models a test never saves keep their factors in a temp folder of their own
    (``FactorModel.scratch``): under pytest's base temp, which pytest prunes, instead of piling up in /tmp."""
    tempfile.tempdir = str(tmp_path_factory.mktemp("tempfile"))
    yield
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def spark():
    """A real ``local[2]`` session built by :func:`recsys.spark.get_spark`, UI and progress bars off. Tuned for
    tables of a few thousand rows: one shuffle partition (each more costs a task per stage, not work) and
    SMALL_TABLES_SPARK, while input stays split in two (``default.parallelism``) so code that runs per partition
    still sees more than one."""
    from recsys.config import SparkSettings
    from recsys.spark import get_spark

    settings = SparkSettings(master="local[2]", driver_memory="2g", shuffle_partitions=1,
                             ui_enabled=False, console_progress=False, log_level="ERROR",
                             extra={**SMALL_TABLES_SPARK, "spark.default.parallelism": "2",
                                    "spark.driver.extraJavaOptions": IN_PROCESS_JAVA})
    session = get_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data (Amazon 2023, MovieLens) where ``RECSYS_SHARED_DATA`` points; tests skip only if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


# --- one small warehouse through the whole pipeline, built once per run (shared by the xdist workers) -------------

@dataclass(frozen=True)
class BuiltWarehouse:
    """A warehouse after ``run_pipeline`` on a small planted-cluster dump (ingest → … → publish). Read-only: a test
    that writes takes :func:`copy_warehouse` first (Delta tables are folders; the registry's model paths are
    relative to the warehouse, so a copy loads its own models)."""

    settings: Any
    summary: dict


@pytest.fixture(scope="session")
def built_warehouse(spark, tmp_path_factory) -> BuiltWarehouse:
    """Built once per test run, by the first xdist worker that asks (the others wait for it, then read the same
    folder): 300 users, 80 items, 2,500 reviews in two categories, 1% bad lines, every model family, K=5 with 3
    spare. Its API snapshot is built too, so an app opened on it later reads the folder and writes nothing."""
    root = _run_wide_temp(tmp_path_factory) / "built"
    settings = _built_settings(root)
    done = root / "summary.json"
    with _exclusive(root.with_name("built.lock")):
        if not done.is_file():
            summary = _build(spark, settings)
            tmp = done.with_name(done.name + ".tmp")
            tmp.write_text(json.dumps(summary, default=str))
            tmp.replace(done)
    return BuiltWarehouse(settings, json.loads(done.read_text()))


def _run_wide_temp(tmp_path_factory) -> Path:
    """The temporary folder every xdist worker of this run shares (each worker's basetemp is a child of it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive lock across processes, held until the block ends (the kernel's: freed if the holder dies)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _built_settings(root: Path):
    """The shared warehouse's settings, the same in every worker."""
    from recsys.config import load_settings

    settings = load_settings(warehouse=root / "wh", source=root / "src", reports=root / "reports")
    settings.synth = settings.synth.model_copy(update={"users": 300, "items": 80, "reviews": 2500, "clusters": 4,
                                                       "categories": ["Appliances", "All_Beauty"]})
    # Every model family, so test_pipeline reads its assertions (both ALS beat popularity, similar items by ALS and
    # by content) off this one build instead of a pipeline run of its own.
    settings.train = settings.train.model_copy(update={"models": ["implicit_als", "popularity", "spark_als",
                                                                  "content", "multistage"]})
    als = {"factors": 8, "regularization": 0.05, "alpha": 10.0, "iterations": 8}
    settings.train.params = settings.train.params.updated({"spark_als": als, "implicit_als": als})
    # Lists in the ranker's order (no diversity re-rank): a list re-scored after a deletion then keeps its survivors
    # in order, which test_deletions checks; the re-rank itself is tested in test_multistage.
    settings.publish = settings.publish.model_copy(update={"k": 5, "spare": 3, "diversity": 0.0})
    settings.serve = settings.serve.model_copy(update={"reload_interval_s": 0.0, "build_in_subprocess": False})
    return settings


def _build(spark, settings) -> dict:
    """Dump, ``run_pipeline``, then the API once (it builds the snapshot readers of this folder would build)."""
    from recsys.pipeline import run_pipeline
    from recsys.serve import create_app
    from recsys.synth import generate

    generate(settings.source, settings.synth, bad_line_rate=0.01, progress=False)
    summary = run_pipeline(spark, settings)
    create_app(settings.warehouse, settings.serve)
    return summary


def copy_warehouse(built: BuiltWarehouse, target: Path):
    """A private copy of the built warehouse and the settings pointing at it."""
    shutil.copytree(built.settings.warehouse, target / "wh", symlinks=True)
    return built.settings.model_copy(update={"warehouse": target / "wh", "reports": target / "reports"})

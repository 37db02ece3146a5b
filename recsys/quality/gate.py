"""The quality gate of one layer: read each table at a pinned Delta version, cache it once, validate its suite
with Great Expectations, store every outcome in ``ops/quality_results`` and say pass/fail.

A failed ``error`` expectation fails the gate (:meth:`GateResult.raise_if_failed`); a failed ``warn`` one is
logged and stored only. Only the columns some expectation reads are cached; the others are replaced by typed
nulls, so the batch keeps the table's exact schema (names, order, types) for the schema expectations while the
cache holds what is checked. Samples of offending rows are read from the uncached table.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import ops
from recsys import tables as T
from recsys.config import Settings
from recsys.logs import step
from recsys.quality import suites as S
from recsys.quality.settings import QualitySettings

log = logging.getLogger(__name__)

QUALITY_RESULTS = T.TableSpec(
    C.QUALITY_RESULTS,
    "run_id STRING, layer STRING, table STRING, table_version BIGINT, expectation STRING, column STRING, "
    "success BOOLEAN, severity STRING, observed_value STRING, unexpected_count BIGINT, sample STRING, "
    "checked_at TIMESTAMP",
    stats_columns=("run_id", "layer", "checked_at"),   # run ids and layers skip files on the rerun replace
)
_SPECS = {spec.path: spec for spec in (
    T.BRONZE_REVIEWS, T.BRONZE_ITEMS, T.QUARANTINE_REVIEWS, T.QUARANTINE_ITEMS, T.INGESTED_FILES, T.SILVER_REVIEWS,
    T.SILVER_ITEMS, T.USER_INDEX, T.ITEM_INDEX, T.INTERACTIONS, T.RECS_USER_TOPK, T.RECS_SIMILAR_ITEMS,
    T.RECS_POPULAR)}
_REF_DDL = {C.DELETIONS: S.DELETIONS_DDL}
TABLE_EXISTS = "table_exists"


class QualityGateError(RuntimeError):
    """A gate found ``error``-severity failures; ``result`` holds every outcome."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.message())
        self.result = result


@dataclass(frozen=True)
class Outcome:
    """One expectation on one table: what ``ops/quality_results`` stores, one row each."""

    layer: str
    table: str
    table_version: int | None
    expectation: str                 # the stable rule name (conf/quality.yaml key)
    expectation_type: str            # the GE expectation, e.g. expect_column_values_to_be_between
    column: str | None
    success: bool
    severity: str
    observed: str | None
    unexpected_count: int | None
    sample: list[dict[str, Any]] = field(default_factory=list)

    def describe(self, sample_chars: int = 300) -> str:
        on = f" on {self.column}" if self.column else ""
        text = f"{self.table}: {self.expectation} ({self.expectation_type}{on}): {self.observed}"
        if self.sample:
            text += f"; sample: {json.dumps(self.sample, default=str)[:sample_chars]}"
        return text


@dataclass(frozen=True)
class GateResult:
    layer: str
    run_id: str
    outcomes: tuple[Outcome, ...]
    data_docs: Path | None = None
    version: str | None = None       # the published version validated (published layer)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "error"]

    @property
    def warnings(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success and o.severity == "warn"]

    @property
    def success(self) -> bool:
        return not self.failures

    def message(self) -> str:
        """One line naming every failed expectation with a sample, then the Data Docs location."""
        failed = self.failures
        if not failed:
            return f"{self.layer} gate passed ({len(self.outcomes)} expectations, {len(self.warnings)} warnings)"
        head = f"{self.layer} gate failed: {len(failed)} expectation(s) — " + " | ".join(o.describe() for o in failed)
        return head + (f" (run {self.run_id}; Data Docs: {self.data_docs})" if self.data_docs else "")

    def raise_if_failed(self) -> None:
        if not self.success:
            raise QualityGateError(self)

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "run_id": self.run_id, "version": self.version, "success": self.success,
                "expectations": len(self.outcomes), "data_docs": str(self.data_docs) if self.data_docs else None,
                "failures": [o.__dict__ for o in self.failures], "warnings": [o.__dict__ for o in self.warnings]}


@dataclass
class _Loaded:
    cached: DataFrame
    full: DataFrame
    version: int


def new_run_id(layer: str) -> str:
    return f"quality-{layer}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def quality_settings(settings: Settings) -> QualitySettings:
    """``settings.quality``: conf/quality.yaml (``RECSYS_QUALITY_CONFIG``), ``RECSYS_QUALITY__*`` overrides."""
    return settings.quality


def validate_layer(spark: SparkSession, warehouse: Path | str, layer: str, settings: Settings,
                   run_id: str | None = None, *, version: str | None = None,
                   quality: QualitySettings | None = None, tables: Sequence[str] | None = None) -> GateResult:
    """Validate every table of ``layer`` (published: only the rows of ``version``, default the current one).

    ``quality`` defaults to ``settings.quality`` (or conf/quality.yaml); ``tables`` restricts the gate to some
    of the layer's tables (e.g. to re-check one after a fix). Returns the outcome of every expectation; raises
    only on unusable input (unknown layer or table, bad config, no published version). Results go to
    ``ops/quality_results``, Data Docs to ``<quality root>/data_docs``.
    """
    from recsys.quality.runner import Planned, runner_for

    quality = quality or quality_settings(settings)
    warehouse = Path(warehouse)
    rerun_possible = run_id is not None        # a run id of ours is new: its rows can simply be appended
    run_id = run_id or new_run_id(layer)
    if layer == "published":
        version = version or _current_version(warehouse)
    now = datetime.now(timezone.utc)
    suites = S.plan(layer, S.GateInputs(settings, quality, int(now.timestamp() * 1000), version))
    if tables is not None:
        unknown = sorted(set(tables) - {s.table for s in suites})
        if unknown:
            raise ValueError(f"layer {layer} has no table {', '.join(unknown)}")
        suites = [s for s in suites if s.table in set(tables)]
    with step("quality_gate", layer=layer, run_id=run_id, version=version) as rec:
        runner = runner_for(quality.quality_root(warehouse))
        outcomes: list[Outcome] = []
        result_ids: list[Any] = []
        with _prepared(spark, warehouse, suites) as loaded:
            outcomes += _missing(suites, loaded)
            for n, suite in enumerate(suites):
                data = loaded.get(suite.table)
                if data is None:
                    continue
                batches = [(suite.checks, data.cached, data.full, None)]
                batches += [(d.checks, *_derive(spark, d, data), d.name) for d in suite.derived]
                for checks, cached, full, derived in batches:
                    planned = [Planned(c, *quality.rule(layer, suite.table, c.name)) for c in checks]
                    run = runner.validate(layer, suite.table, planned, cached, full, run_id, now,
                                          quality.sample_rows, batch=derived)
                    result_ids += run.result_ids
                    outcomes += [Outcome(layer, suite.table, data.version, e.check.name, e.expectation_type,
                                         e.check.column, e.success, e.severity, e.observed, e.unexpected_count,
                                         e.sample) for e in run.evaluated]
                    if derived is not None:
                        cached.unpersist()
                if not any(r.table == suite.table for later in suites[n + 1:] for r in later.refs):
                    data.cached.unpersist()        # free the cache as soon as no later query reads it
        result = GateResult(layer, run_id, tuple(outcomes), runner.build_docs(result_ids), version)
        write_results(spark, warehouse, result, now, replace=rerun_possible)
        rec.update(expectations=len(outcomes), failures=len(result.failures), warnings=len(result.warnings),
                   success=result.success)
    for warning in result.warnings:
        log.warning("quality warning: %s", warning.describe())
    if not result.success:
        log.error("%s", result.message())
    return result


def published_gate(spark: SparkSession, settings: Settings, run_id: str | None = None):
    """A ``recsys.publish.Gate``: validate the written version's rows, raise :class:`QualityGateError` on failure
    (``ops/published`` is then not switched and the previous version keeps serving)."""
    def gate(version: str) -> None:
        validate_layer(spark, settings.warehouse, "published", settings, run_id, version=version).raise_if_failed()
    return gate


def purge_validation_artifacts(warehouse: Path | str, quality: QualitySettings) -> list[Path]:
    """Delete the stored GX validation results and their Data Docs pages (the index is rebuilt by the next gate).

    Samples of offending rows can hold user ids, and these are files, not Delta rows that the erasure cascade
    reaches; ``ops/quality_results`` keeps the record of every run. Call it when users are erased.
    """
    import shutil

    root = quality.quality_root(warehouse)
    removed = [p for p in (root / "gx" / "uncommitted" / "validations", root / "data_docs" / "validations")
               if p.is_dir()]
    for folder in removed:
        shutil.rmtree(folder)
    return removed


def _current_version(warehouse: Path) -> str:
    version = ops.current_version(warehouse)
    if version is None:
        raise LookupError(f"no published version under {warehouse}: pass the version to validate")
    return version


@contextmanager
def _prepared(spark: SparkSession, warehouse: Path, suites: list[S.TableSuite]) -> Iterator[dict[str, _Loaded | None]]:
    """Every table the suites validate or query, pinned, projected and cached, with the views queries name;
    a missing referenced table reads as empty. Caches and views are released on exit."""
    from pyspark import StorageLevel

    versions = {s.table: s.version for s in suites}
    loaded = {table: _load(spark, warehouse, table, columns, versions.get(table), StorageLevel.MEMORY_AND_DISK)
              for table, columns in _needed_columns(suites).items()}
    refs = {r.table for s in suites for r in s.refs}
    try:
        for table in refs:
            data = loaded.get(table)
            (data.cached if data else spark.createDataFrame([], _ref_ddl(table))).createOrReplaceTempView(S.view(table))
        yield loaded
    finally:
        for data in loaded.values():
            if data is not None:
                data.cached.unpersist()
        for table in refs:
            spark.catalog.dropTempView(S.view(table))


def _needed_columns(suites: list[S.TableSuite]) -> dict[str, tuple[str, ...]]:
    """Table → columns read by its own checks and by other tables' queries, in first-seen order."""
    needed: dict[str, list[str]] = {}
    for suite in suites:
        needed.setdefault(suite.table, []).extend(suite.columns)
    for suite in suites:
        for ref in suite.refs:
            needed.setdefault(ref.table, []).extend(ref.columns)
    return {table: tuple(dict.fromkeys(cols)) for table, cols in needed.items()}


def _load(spark: SparkSession, warehouse: Path, table: str, columns: tuple[str, ...], version: str | None,
          level) -> _Loaded | None:
    """The table at its current Delta version (pinned), filtered to ``version`` rows if given, projected and
    cached; ``None`` if the table does not exist."""
    from deltalake import DeltaTable

    path = Path(T.table_path(warehouse, table))
    if not T.is_delta_table(path):
        return None
    table_version = DeltaTable(str(path)).version()
    full = spark.read.format("delta").option("versionAsOf", table_version).load(str(path))
    if version is not None:
        full = full.where(F.col(C.VERSION) == F.lit(version))
    keep = set(columns)
    projected = full.select(*[F.col(f"`{f.name}`") if f.name in keep else F.lit(None).cast(f.dataType).alias(f.name)
                              for f in full.schema.fields])
    return _Loaded(projected.persist(level), full, table_version)


def _derive(spark: SparkSession, derived: S.Derived, data: _Loaded) -> tuple[DataFrame, DataFrame]:
    """``derived``'s batch from the table's cached batch (computed once, cached) and from the uncached table (for
    pass 2's samples)."""
    from pyspark import StorageLevel

    frames = []
    for source in (data.cached, data.full):
        name = f"recsys_q_batch_{uuid.uuid4().hex[:8]}"
        source.createOrReplaceTempView(name)
        frames.append(spark.sql(derived.sql.format(batch=name)))   # analysed now: the view can go at once
        spark.catalog.dropTempView(name)
    return frames[0].persist(StorageLevel.MEMORY_AND_DISK), frames[1]


def _ref_ddl(table: str) -> str:
    return _REF_DDL.get(table) or _SPECS[table].ddl


def _missing(suites: list[S.TableSuite], loaded: dict[str, _Loaded | None]) -> list[Outcome]:
    """A failure per required table (validated or referenced) that does not exist."""
    required = {s.table: s.layer for s in suites if s.required}
    required.update({r.table: s.layer for s in suites for r in s.refs if r.required and r.table not in required})
    return [Outcome(layer, table, None, TABLE_EXISTS, TABLE_EXISTS, None, False, "error", "missing", None)
            for table, layer in required.items() if loaded.get(table) is None]


def write_results(spark: SparkSession, warehouse: Path, result: GateResult, checked_at: datetime, *,
                  replace: bool = True) -> None:
    """Store one row per outcome in ops/quality_results; a rerun with the same run id replaces its rows.

    A plain append (one Spark job) is the common path; ``replaceWhere`` costs five, so it is used only when
    the run id already has rows of this layer (a rerun). ``replace=False``: the run id is known to be new.
    """
    from recsys.ingest import sql_literal

    path = T.ensure_table(spark, warehouse, QUALITY_RESULTS)
    rows = [{
        "run_id": result.run_id, "layer": o.layer, "table": o.table, "table_version": o.table_version,
        "expectation": o.expectation, "column": o.column, "success": o.success, "severity": o.severity,
        "observed_value": o.observed, "unexpected_count": o.unexpected_count,
        "sample": json.dumps(o.sample, default=str) if o.sample else None, "checked_at": checked_at,
    } for o in result.outcomes]
    mine = (F.col("run_id") == result.run_id) & (F.col("layer") == result.layer)
    writer = spark.createDataFrame(rows, schema=QUALITY_RESULTS.ddl).write.format("delta")
    if replace and spark.read.format("delta").load(path).where(mine).limit(1).count():
        predicate = f"run_id = {sql_literal(result.run_id)} AND layer = {sql_literal(result.layer)}"
        writer.mode("overwrite").option("replaceWhere", predicate).save(path)
    else:
        writer.mode("append").save(path)

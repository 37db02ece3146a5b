"""Raw dump → ``bronze/*`` (every good row, typed) + ``quarantine/*`` (every bad row, raw text + reason).

Contract (see DESIGN.md): per file, non-blank lines = good + quarantined + suppressed (lines of users erased
earlier, which land nowhere: see :mod:`recsys.catalog.guard`), and the total line count
equals the one measured independently by :mod:`recsys.rawfiles`; otherwise the file is failed and
nothing of it is committed. Each batch of files replaces exactly its own rows (``replaceWhere`` on
``_source_file``), so reruns and re-ingests of a changed file are idempotent and atomic per table.
Files already ingested with the same size/mtime (or checksum) are skipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog.guard import SUPPRESSED, flag_erased_lines
from recsys.config import IngestSettings
from recsys.logs import step
from recsys.rawfiles import FileCheck, RawFile, discover, inspect_all, stat

log = logging.getLogger(__name__)

# Spark reads each file as exactly one partition (gzip is not splittable anyway; plain files are kept
# whole too), so the row position inside a partition is the line number within the file.
_ONE_PARTITION_PER_FILE = {
    "spark.sql.files.maxPartitionBytes": str(1 << 40),
    "spark.sql.files.openCostInBytes": str(1 << 40),
}
_LINE_MASK = (1 << 33) - 1   # monotonically_increasing_id = partition_id << 33 | row_in_partition

REVIEW_JSON_SCHEMA = (
    "rating DOUBLE, title STRING, text STRING, images STRING, asin STRING, parent_asin STRING, "
    "user_id STRING, timestamp BIGINT, helpful_vote BIGINT, verified_purchase BOOLEAN, _corrupt STRING"
)
# Meta rows are kept whenever they have an id: every other field is read as text and cast leniently,
# because the real dump is messier than its documentation (price "$12.99", "—", a number, or null).
META_JSON_SCHEMA = (
    "main_category STRING, title STRING, average_rating STRING, rating_number STRING, features STRING, "
    "description STRING, price STRING, images STRING, videos STRING, store STRING, categories STRING, "
    "details STRING, parent_asin STRING, bought_together STRING, _corrupt STRING"
)
REVIEW_REQUIRED_IDS = (C.USER_ID, C.ITEM_ID)
REVIEW_TYPED_FIELDS = ("rating", "title", "text", "asin", "parent_asin", "user_id", "timestamp",
                       "helpful_vote", "verified_purchase")
META_REQUIRED_IDS = (C.ITEM_ID,)

_SCALAR_JSON = r'^\s*("(?:[^"\\]|\\.)*"|-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)\s*$'
_ARRAY_JSON = r"^\s*\[.*\]\s*$"


@dataclass
class IngestReport:
    """What one ingest run did, per file and in total (printed by the CLI as JSON)."""

    ingested: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        keys = ("lines", "blank", "good", "quarantined", "suppressed")
        return {k: sum(int(f.get(k) or 0) for f in self.ingested) for k in keys}

    def to_dict(self) -> dict:
        return {"files_ingested": len(self.ingested), "files_skipped": len(self.skipped),
                "files_failed": len(self.failed), **self.totals(), "failed": self.failed}


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------

def read_lines(spark: SparkSession, files: list[RawFile]) -> DataFrame:
    """(``_source_file``, ``_line``, ``value``) for every line of ``files``; must run under
    :data:`_ONE_PARTITION_PER_FILE` so that line numbers are exact."""
    by_path = F.create_map(*[x for f in files for x in (F.lit(str(f.path)), F.lit(f.rel))])
    local_path = F.url_decode(F.regexp_replace(F.col("_metadata.file_path"), r"^file:(//)?", ""))
    return (
        spark.read.option("lineSep", "\n").text([str(f.path) for f in files])
        .select(
            by_path[local_path].alias(C.SOURCE_FILE),
            ((F.monotonically_increasing_id().bitwiseAND(F.lit(_LINE_MASK))) + 1).alias(C.LINE),
            # CRLF files leave a "\r" before the "\n"; a UTF-8 BOM may start a line. Both are valid.
            F.regexp_replace(F.regexp_replace("value", "\r$", ""), "^\ufeff", "").alias("value"),
        )
    )


def _not_json_reason(value: Column) -> Column:
    return (
        F.when(value.rlike(_SCALAR_JSON) | value.rlike(_ARRAY_JSON), F.lit("not_a_json_object"))
        .otherwise(F.lit("unparseable_json"))
    )


def _missing_id(parsed: Column, ids: tuple[str, ...]) -> Column:
    """First required id that is null or blank, as ``missing_id:<field>``."""
    expr = F.lit(None).cast("string")
    for name in reversed(ids):
        value = parsed[name]
        expr = F.when(value.isNull() | (F.trim(value) == ""), F.lit(f"missing_id:{name}")).otherwise(expr)
    return expr


def _wrong_type(parsed: Column, generic: Column, fields: tuple[str, ...]) -> Column:
    """First field present in the JSON whose value did not convert to the schema's type."""
    expr = F.lit(None).cast("string")
    for name in reversed(fields):
        expr = F.when(parsed[name].isNull() & generic[name].isNotNull(), F.lit(f"wrong_type:{name}")).otherwise(expr)
    return expr


def parse_reviews(lines: DataFrame, settings: IngestSettings, now_ms: int) -> DataFrame:
    """Typed review columns + ``reason`` (null for a good row) for every non-blank line."""
    parsed = F.from_json("value", REVIEW_JSON_SCHEMA,
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    df = lines.where(F.trim("value") != "").withColumn("p", parsed)
    p = F.col("p")
    # Only lines that failed somewhere are parsed a second time, as a generic map, to tell why.
    generic = F.when(p["_corrupt"].isNotNull(), F.from_json("value", "map<string,string>"))
    df = df.withColumn("g", generic)
    rating, ts = p["rating"], p["timestamp"]
    reason = (
        F.when(F.col("g").isNull() & p["_corrupt"].isNotNull(), _not_json_reason(F.col("value")))
        .otherwise(F.coalesce(
            _missing_id(p, REVIEW_REQUIRED_IDS),
            _wrong_type(p, F.col("g"), REVIEW_TYPED_FIELDS),
            F.when(rating.isNull(), F.lit("missing_field:rating")),
            F.when(F.isnan(rating) | (rating < 1) | (rating > 5), F.lit("rating_out_of_range")),
            F.when(ts.isNull(), F.lit("missing_field:timestamp")),
            F.when((ts < settings.min_timestamp_ms) | (ts > now_ms + settings.max_future_ms),
                   F.lit("timestamp_out_of_range")),
        ))
    )
    return df.select(
        *[p[c].alias(c) for c in ("rating", "title", "text", "images", "asin", "parent_asin", "user_id",
                                   "timestamp", "helpful_vote", "verified_purchase")],
        C.SOURCE_FILE, C.LINE, "value", reason.alias(C.REASON),
    )


_PRICE_NUMBER = r"(-?\d[\d,]*\.?\d*)"


def parse_items(lines: DataFrame) -> DataFrame:
    """Typed meta columns + ``reason`` for every non-blank line. Only a missing id or a line that is
    not a JSON object quarantines a meta row; other fields are parsed leniently."""
    parsed = F.from_json("value", META_JSON_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    df = lines.where(F.trim("value") != "").withColumn("p", parsed)
    p = F.col("p")
    # With every field read as text, _corrupt is set only when the line is not a JSON object at all.
    reason = F.when(p["_corrupt"].isNotNull(), _not_json_reason(F.col("value"))).otherwise(
        _missing_id(p, META_REQUIRED_IDS))
    price_number = F.regexp_extract(p["price"], _PRICE_NUMBER, 1)
    return df.select(
        p["main_category"].alias("main_category"),
        p["title"].alias("title"),
        p["average_rating"].try_cast("double").alias("average_rating"),
        p["rating_number"].try_cast("bigint").alias("rating_number"),
        F.from_json(p["features"], "array<string>").alias("features"),
        F.from_json(p["description"], "array<string>").alias("description"),
        F.when(price_number != "", F.regexp_replace(price_number, ",", "").try_cast("double")).alias("price"),
        p["price"].alias(C.PRICE_RAW),
        p["images"].alias("images"),
        p["videos"].alias("videos"),
        p["store"].alias("store"),
        F.from_json(p["categories"], "array<string>").alias("categories"),
        p["details"].alias("details"),
        p["parent_asin"].alias("parent_asin"),
        p["bought_together"].alias("bought_together"),
        C.SOURCE_FILE, C.LINE, "value", reason.alias(C.REASON),
    )


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

_KINDS = {
    C.KIND_REVIEWS: (T.BRONZE_REVIEWS, T.QUARANTINE_REVIEWS),
    C.KIND_ITEMS: (T.BRONZE_ITEMS, T.QUARANTINE_ITEMS),
}


def sql_literal(value: str) -> str:
    """A Spark SQL string literal (backslash escapes are Spark's default), for option strings such as
    ``replaceWhere`` that only take SQL text."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _replace_rows(df: DataFrame, path: str, files: list[str], partition_by: tuple[str, ...]) -> None:
    """Atomically replace every row of ``files`` in the table at ``path`` with ``df``."""
    predicate = f"{C.SOURCE_FILE} IN ({', '.join(sql_literal(f) for f in files)})"
    writer = df.write.format("delta").mode("overwrite").option("replaceWhere", predicate)
    writer.save(path)


def ingest_batch(spark: SparkSession, warehouse: Path, kind: str, checks: list[FileCheck],
                 settings: IngestSettings) -> list[dict]:
    """Parse one batch of files of one kind, reconcile counts, write bronze + quarantine.

    Returns one ops/ingested_files record per file (status ``ingested`` or ``failed``).
    """
    from pyspark import StorageLevel

    bronze_spec, quarantine_spec = _KINDS[kind]
    bronze_path = T.ensure_table(spark, warehouse, bronze_spec)
    quarantine_path = T.ensure_table(spark, warehouse, quarantine_spec)
    files = [c.file for c in checks]
    category_of = F.create_map(*[x for f in files for x in (F.lit(f.rel), F.lit(f.category))])
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)

    with T.spark_conf(spark, _ONE_PARTITION_PER_FILE):
        lines = read_lines(spark, files)
        parse = parse_reviews(lines, settings, now_ms) if kind == C.KIND_REVIEWS else parse_items(lines)
        parsed = (parse.withColumn(C.CATEGORY, category_of[F.col(C.SOURCE_FILE)])
                  .withColumn(C.INGESTED_AT, F.lit(now).cast("timestamp"))
                  .persist(StorageLevel.MEMORY_AND_DISK))
        try:
            parsed_all = parsed
            parsed = flag_erased_lines(spark, warehouse, parsed_all, "value", (C.SOURCE_FILE, C.LINE))
            counts = {r[C.SOURCE_FILE]: r for r in (
                lines.groupBy(C.SOURCE_FILE).agg(
                    F.count(F.lit(1)).alias("lines"),
                    F.max(C.LINE).alias("max_line"),
                    F.sum((F.trim("value") == "").cast("long")).alias("blank"),
                ).collect())}
            parsed_counts = {r[C.SOURCE_FILE]: r for r in (
                parsed.groupBy(C.SOURCE_FILE).agg(
                    F.count(F.lit(1)).alias("nonblank"),
                    F.sum((F.col(C.REASON).isNull() & ~F.col(SUPPRESSED)).cast("long")).alias("good"),
                    F.sum(F.col(SUPPRESSED).cast("long")).alias("suppressed"),
                ).collect())}
            records, good_files = [], []
            for check in checks:
                rel = check.file.rel
                c = counts.get(rel)
                pc = parsed_counts.get(rel)
                lines_n = int(c["lines"]) if c else 0
                blank = int(c["blank"]) if c else 0
                good = int(pc["good"]) if pc else 0
                suppressed = int(pc["suppressed"]) if pc else 0
                nonblank = int(pc["nonblank"]) if pc else 0
                error = None
                if lines_n != check.lines or (c is not None and int(c["max_line"]) != lines_n):
                    error = f"line count mismatch: Spark read {lines_n}, file holds {check.lines}"
                elif nonblank + blank != lines_n:
                    error = f"count mismatch: {nonblank} non-blank + {blank} blank != {lines_n} lines"
                records.append(_record(check, status="failed" if error else "ingested", error=error,
                                       lines=lines_n, blank=blank, good=good, suppressed=suppressed,
                                       quarantined=nonblank - good - suppressed))
                if error is None:
                    good_files.append(rel)
            if good_files:
                mine = F.col(C.SOURCE_FILE).isin(good_files) & ~F.col(SUPPRESSED)
                _replace_rows(parsed.where(mine & F.col(C.REASON).isNull()).select(*bronze_spec.columns),
                              bronze_path, good_files, bronze_spec.partition_by)
                _replace_rows(parsed.where(mine & F.col(C.REASON).isNotNull())
                              .select(F.col("value").alias(C.RAW), C.REASON, C.CATEGORY, C.SOURCE_FILE,
                                      C.LINE, C.INGESTED_AT),
                              quarantine_path, good_files, quarantine_spec.partition_by)
        finally:
            parsed_all.unpersist()
    return records


def _record(check: FileCheck, *, status: str, error: str | None, lines: int | None = None,
            blank: int | None = None, good: int | None = None, quarantined: int | None = None,
            suppressed: int | None = None) -> dict:
    return {
        "path": check.file.rel, "kind": check.file.kind, "category": check.file.category,
        "size": check.size, "mtime_ns": check.mtime_ns, "sha256": check.sha256,
        "lines": lines if lines is not None else check.lines, "blank": blank, "good": good,
        "quarantined": quarantined, "suppressed": suppressed, "status": status, "error": error,
        "ingested_at": datetime.now(timezone.utc),
    }


def _upsert_file_records(spark: SparkSession, warehouse: Path, records: list[dict]) -> None:
    from delta.tables import DeltaTable

    if not records:
        return
    path = T.ensure_table(spark, warehouse, T.INGESTED_FILES)
    updates = spark.createDataFrame(records, schema=T.INGESTED_FILES.ddl)
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(updates.alias("s"), "t.path = s.path")
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def _known_files(spark: SparkSession, warehouse: Path) -> dict[str, dict]:
    path = T.ensure_table(spark, warehouse, T.INGESTED_FILES)
    return {r["path"]: r.asDict() for r in spark.read.format("delta").load(path).collect()}


def _unchanged(check: FileCheck, known: dict | None) -> bool:
    if not known or known["status"] != "ingested":
        return False
    if check.size == known["size"] and check.mtime_ns == known["mtime_ns"]:
        return True
    return check.sha256 is not None and check.sha256 == known["sha256"]


def ingest(spark: SparkSession, source: Path, warehouse: Path, settings: IngestSettings,
           *, force: bool = False) -> IngestReport:
    """Ingest every new or changed raw file below ``source`` into the warehouse's bronze layer."""
    report = IngestReport()
    with step("ingest", source=str(source)) as rec:
        files = discover(Path(source))
        if not files:
            raise FileNotFoundError(f"no raw files (<Category>.jsonl[.gz], meta_<Category>.jsonl[.gz]) in {source}")
        known = {} if force else _known_files(spark, warehouse)
        # Cheap size/mtime check first; only files that look new or changed are read and hashed.
        candidates = [f for f in files if force or not _unchanged(stat(f), known.get(f.rel))]
        report.skipped = [f.rel for f in files if f not in candidates]
        started = time.perf_counter()
        checks = inspect_all(candidates)
        rec["inspect_seconds"] = round(time.perf_counter() - started, 3)
        records = []
        to_parse: dict[str, list[FileCheck]] = {C.KIND_REVIEWS: [], C.KIND_ITEMS: []}
        for check in checks:
            if not check.ok:
                records.append(_record(check, status="failed", error=check.error))
            elif not force and _unchanged(check, known.get(check.file.rel)):
                report.skipped.append(check.file.rel)   # touched but identical bytes
                records.append({**known[check.file.rel], "mtime_ns": check.mtime_ns})
            else:
                to_parse[check.file.kind].append(check)
        for kind, batch in to_parse.items():
            for chunk in _batches(batch, settings.max_batch_bytes):
                records.extend(ingest_batch(spark, Path(warehouse), kind, chunk, settings))
        _upsert_file_records(spark, Path(warehouse), records)
        for r in records:
            if r["status"] == "failed":
                report.failed.append({"path": r["path"], "error": r["error"]})
            elif r["path"] not in report.skipped:
                report.ingested.append(r)
        rec.update(report.to_dict())
        for failure in report.failed:
            log.error("file failed, nothing of it ingested: %s: %s", failure["path"], failure["error"])
    return report


def _batches(checks: list[FileCheck], max_bytes: int) -> list[list[FileCheck]]:
    """Group files so one batch's parsed rows stay within a bounded cache."""
    out, current, size = [], [], 0
    for check in sorted(checks, key=lambda c: c.file.rel):
        if current and size + check.size > max_bytes:
            out.append(current)
            current, size = [], 0
        current.append(check)
        size += check.size
    if current:
        out.append(current)
    return out

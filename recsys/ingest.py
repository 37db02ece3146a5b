"""Raw dump → ``bronze/*`` (every good row, typed) + ``quarantine/*`` (every bad row, raw text + reason).

Contract (README "Ingestion rules"): per file, non-blank lines = good + quarantined + suppressed (lines of users erased
earlier, which land nowhere: see :mod:`recsys.catalog.guard`), and the total line count
equals the one measured independently by :mod:`recsys.rawfiles`; otherwise the file is failed and
nothing of it is committed. Each batch of files replaces exactly its own rows (``replaceWhere`` on
``_source_file``), so reruns and re-ingests of a changed file are idempotent and atomic per table.
Files already ingested with the same size/mtime (or checksum) are skipped.

Which lines are JSON at all is decided by the strict parse of :mod:`recsys.rawfiles` (Spark's reader is lenient);
Spark adds what needs the typed row: duplicate keys, ids (:mod:`recsys.ids`), required fields and ranges.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog.guard import SUPPRESSED, flag_erased_lines
from recsys.config import IngestSettings
from recsys.ids import ID_JAVA_REGEX
from recsys.logs import step
from recsys.rawfiles import UNPARSEABLE_JSON, FileCheck, RawFile, discover, inspect_all, stat

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

STRICT_REASON = "_strict_reason"      # the reason the strict parse of recsys.rawfiles gave a line, or null
_BLANK_ID = r"(?U)\A\s*\z"            # empty or only (Unicode) whitespace, a trailing newline included


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
    # _metadata.file_path is a URI: percent-escapes are decoded, but a "+" is a plus, not a space.
    uri_path = F.regexp_replace(F.col("_metadata.file_path"), r"^file:(//)?", "")
    local_path = F.url_decode(F.regexp_replace(uri_path, r"\+", "%2B"))
    return (
        spark.read.option("lineSep", "\n").text([str(f.path) for f in files])
        .select(
            by_path[local_path].alias(C.SOURCE_FILE),
            ((F.monotonically_increasing_id().bitwiseAND(F.lit(_LINE_MASK))) + 1).alias(C.LINE),
            # CRLF files leave a "\r" before the "\n"; a UTF-8 BOM may start a line. Both are valid.
            # Exactly as recsys.rawfiles.normalized_line: one trailing CR, then one leading BOM.
            F.regexp_replace(F.regexp_replace("value", "\r\\z", ""), "^\ufeff", "").alias("value"),
        )
    )


def with_strict_reasons(spark: SparkSession, lines: DataFrame, checks: list[FileCheck]) -> DataFrame:
    """``lines`` + :data:`STRICT_REASON`: the reason the strict parse refused each line (null for good ones).

    Refused lines are normally few (the bronze gate fails a file with more than a few percent), so they are
    broadcast and the lines keep their one-partition-per-file layout; with none, there is no join at all."""
    refused = [(c.file.rel, line, reason) for c in checks if c.refused for line, reason in c.refused.items()]
    if not refused:
        return lines.withColumn(STRICT_REASON, F.lit(None).cast("string"))
    table = spark.createDataFrame(refused, f"{C.SOURCE_FILE} STRING, {C.LINE} BIGINT, {STRICT_REASON} STRING")
    return lines.join(F.broadcast(table), [C.SOURCE_FILE, C.LINE], "left")


def _duplicate_key(value: Column) -> Column:
    """``duplicate_key:<field>`` for an object naming a top-level field twice. JSON leaves the meaning open and
    parsers differ on which value wins (Spark's typed parse may keep either), so no value is picked."""
    keys = F.json_object_keys(value)
    repeated = F.filter(keys, lambda key, i: F.array_position(keys, key) != i + 1)
    return F.when(F.size(repeated) > 0, F.concat(F.lit("duplicate_key:"), F.get(repeated, 0)))


def _bad_id(parsed: Column, ids: tuple[str, ...]) -> Column:
    """First required id that is null or blank (``missing_id:<field>``) or not an id the API could serve or an
    erasure could match (``invalid_id:<field>``, :data:`recsys.ids.ID_JAVA_REGEX`)."""
    expr = F.lit(None).cast("string")
    for name in reversed(ids):
        value = parsed[name]
        expr = (F.when(value.isNull() | value.rlike(_BLANK_ID), F.lit(f"missing_id:{name}"))
                .when(~value.rlike(ID_JAVA_REGEX), F.lit(f"invalid_id:{name}"))
                .otherwise(expr))
    return expr


def _unconverted(parsed: Column, value: Column, fields: tuple[str, ...]) -> Column:
    """Backstop: a line the strict parse accepted but Spark could not convert (a limit of its parser, say) is
    quarantined, naming the first field Spark lost, rather than landing in bronze with a null."""
    keys = F.json_object_keys(value)
    expr = F.lit(UNPARSEABLE_JSON)
    for name in reversed(fields):
        expr = F.when(F.array_contains(keys, name) & parsed[name].isNull(), F.lit(f"wrong_type:{name}")).otherwise(expr)
    return F.when(parsed["_corrupt"].isNotNull(), expr)


def parse_reviews(lines: DataFrame, settings: IngestSettings, now_ms: int) -> DataFrame:
    """Typed review columns + ``reason`` (null for a good row) for every non-blank line of ``lines`` (which carry
    :data:`STRICT_REASON`, see :func:`with_strict_reasons`): the first reason in the README's order."""
    parsed = F.from_json("value", REVIEW_JSON_SCHEMA,
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    df = lines.where(F.trim("value") != "").withColumn("p", parsed)
    p, value = F.col("p"), F.col("value")
    rating, ts = p["rating"], p["timestamp"]
    reason = F.coalesce(
        F.col(STRICT_REASON),
        _duplicate_key(value),
        _bad_id(p, REVIEW_REQUIRED_IDS),
        _unconverted(p, value, REVIEW_TYPED_FIELDS),
        F.when(rating.isNull(), F.lit("missing_field:rating")),
        F.when(F.isnan(rating) | (rating < 1) | (rating > 5), F.lit("rating_out_of_range")),
        F.when(ts.isNull(), F.lit("missing_field:timestamp")),
        F.when((ts < settings.min_timestamp_ms) | (ts > now_ms + settings.max_future_ms),
               F.lit("timestamp_out_of_range")),
    )
    return df.select(
        *[p[c].alias(c) for c in ("rating", "title", "text", "images", "asin", "parent_asin", "user_id",
                                   "timestamp", "helpful_vote", "verified_purchase")],
        C.SOURCE_FILE, C.LINE, "value", reason.alias(C.REASON),
    )


_PRICE_NUMBER = r"(-?\d[\d,]*\.?\d*)"


def parse_items(lines: DataFrame) -> DataFrame:
    """Typed meta columns + ``reason`` for every non-blank line. Only a line that is not exactly one JSON object,
    a duplicate key, or a missing or invalid id quarantines a meta row; other fields are parsed leniently."""
    parsed = F.from_json("value", META_JSON_SCHEMA, {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"})
    df = lines.where(F.trim("value") != "").withColumn("p", parsed)
    p, value = F.col("p"), F.col("value")
    # With every field read as text, _corrupt is set only when Spark could not read the line as an object at all.
    reason = F.coalesce(F.col(STRICT_REASON), _duplicate_key(value), _bad_id(p, META_REQUIRED_IDS),
                        F.when(p["_corrupt"].isNotNull(), F.lit(UNPARSEABLE_JSON)))
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
        judged = with_strict_reasons(spark, lines, checks)
        parse = parse_reviews(judged, settings, now_ms) if kind == C.KIND_REVIEWS else parse_items(judged)
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
           *, force: bool = False, categories: Sequence[str] | None = None) -> IngestReport:
    """Ingest every new or changed raw file below ``source`` into the warehouse's bronze layer (``categories``:
    only the files of these categories, reviews and meta)."""
    report = IngestReport()
    with step("ingest", source=str(source)) as rec:
        files = of_categories(discover(Path(source)), categories)
        if not files:
            wanted = f" of categories {', '.join(categories)}" if categories else ""
            raise FileNotFoundError(
                f"no raw files (<Category>.jsonl[.gz], meta_<Category>.jsonl[.gz]){wanted} in {source}")
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


def of_categories(files: list[RawFile], categories: Sequence[str] | None) -> list[RawFile]:
    """The files of ``categories`` (all of them when None or empty)."""
    if not categories:
        return files
    wanted = set(categories)
    return [f for f in files if f.category in wanted]


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

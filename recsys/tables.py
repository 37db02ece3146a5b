"""Delta table contracts (schema, partitioning, properties) and the few helpers every job needs.

Every table is created once from its :class:`TableSpec` so the properties that later guarantees rely
on are there from version 0: no deletion vectors (delta-rs readers and physical erasure stay simple),
and per-file statistics only on non-identifying columns (``delta.dataSkippingStatsColumns``), because
Delta keeps min/max string prefixes of the first 32 columns in the log, where an erased user id would
otherwise survive every DELETE and VACUUM.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from recsys import constants as C

BASE_PROPERTIES = {
    "delta.enableDeletionVectors": "false",
    "delta.checkpointInterval": "10",
}


@dataclass(frozen=True)
class TableSpec:
    path: str                     # relative to the warehouse root
    ddl: str                      # Spark SQL column list
    partition_by: tuple[str, ...] = ()
    stats_columns: tuple[str, ...] = ()   # the only columns Delta may keep min/max statistics for
    properties: Mapping[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Top-level column names, in DDL order (commas inside ``<…>`` are not separators)."""
        names, depth, current = [], 0, []
        for ch in self.ddl + ",":
            depth += (ch == "<") - (ch == ">")
            if ch == "," and depth == 0:
                names.append("".join(current).strip().split(" ")[0])
                current = []
            else:
                current.append(ch)
        return names

    def table_properties(self) -> dict[str, str]:
        props = dict(BASE_PROPERTIES)
        # An empty list is not allowed by Delta; default to the lineage line number, never an id.
        props["delta.dataSkippingStatsColumns"] = ",".join(self.stats_columns or (C.LINE,))
        props.update(self.properties)
        return props


_LINEAGE = f"{C.CATEGORY} STRING, {C.SOURCE_FILE} STRING, {C.LINE} BIGINT, {C.INGESTED_AT} TIMESTAMP"

BRONZE_REVIEWS = TableSpec(
    C.BRONZE_REVIEWS,
    "rating DOUBLE, title STRING, text STRING, images STRING, asin STRING, parent_asin STRING, "
    f"user_id STRING, timestamp BIGINT, helpful_vote BIGINT, verified_purchase BOOLEAN, {_LINEAGE}",
    partition_by=(C.CATEGORY,),
    stats_columns=(C.RATING, C.TIMESTAMP, C.LINE),
)
BRONZE_ITEMS = TableSpec(
    C.BRONZE_ITEMS,
    "main_category STRING, title STRING, average_rating DOUBLE, rating_number BIGINT, "
    "features ARRAY<STRING>, description ARRAY<STRING>, price DOUBLE, price_raw STRING, images STRING, "
    "videos STRING, store STRING, categories ARRAY<STRING>, details STRING, parent_asin STRING, "
    f"bought_together STRING, {_LINEAGE}",
    partition_by=(C.CATEGORY,),
    stats_columns=(C.LINE,),
)
_QUARANTINE_DDL = f"{C.RAW} STRING, {C.REASON} STRING, {_LINEAGE}"
QUARANTINE_REVIEWS = TableSpec(C.QUARANTINE_REVIEWS, _QUARANTINE_DDL, stats_columns=(C.LINE,))
QUARANTINE_ITEMS = TableSpec(C.QUARANTINE_ITEMS, _QUARANTINE_DDL, stats_columns=(C.LINE,))
INGESTED_FILES = TableSpec(
    C.INGESTED_FILES,
    "path STRING, kind STRING, category STRING, size BIGINT, mtime_ns BIGINT, sha256 STRING, "
    "lines BIGINT, blank BIGINT, good BIGINT, quarantined BIGINT, status STRING, error STRING, "
    "ingested_at TIMESTAMP, suppressed BIGINT",
    stats_columns=("size",),
)
SILVER_REVIEWS = TableSpec(
    C.SILVER_REVIEWS,
    "user_id STRING, parent_asin STRING, asin STRING, rating DOUBLE, timestamp BIGINT, title STRING, "
    "text STRING, helpful_vote BIGINT, verified_purchase BOOLEAN, category STRING",
    partition_by=(C.CATEGORY,),
    stats_columns=(C.RATING, C.TIMESTAMP),
)
SILVER_ITEMS = TableSpec(
    C.SILVER_ITEMS,
    "parent_asin STRING, category STRING, main_category STRING, title STRING, average_rating DOUBLE, "
    "rating_number BIGINT, features ARRAY<STRING>, description ARRAY<STRING>, price DOUBLE, "
    "price_raw STRING, store STRING, categories ARRAY<STRING>, details STRING",
    stats_columns=("rating_number",),
)

# Item deletions and user erasures (recsys.catalog). Users appear only as salted hashes (id is null for them).
DELETIONS = TableSpec(
    C.DELETIONS,
    "kind STRING, id_hash STRING, id STRING, id_length INT, reason STRING, requested_at TIMESTAMP, "
    "applied_at TIMESTAMP, rows_removed MAP<STRING, BIGINT>, status STRING, relisted_at TIMESTAMP, "
    "purged_at TIMESTAMP",
    stats_columns=("requested_at",),
)

USER_INDEX = TableSpec(C.USER_INDEX, "user_id STRING, user_idx INT", stats_columns=(C.USER_IDX,))
ITEM_INDEX = TableSpec(
    C.ITEM_INDEX, "parent_asin STRING, item_idx INT, category STRING, deleted BOOLEAN",
    stats_columns=(C.ITEM_IDX,),
)
INTERACTIONS = TableSpec(
    C.INTERACTIONS,
    "user_idx INT, item_idx INT, weight DOUBLE, confidence DOUBLE, timestamp BIGINT, split STRING",
    stats_columns=(C.USER_IDX, C.ITEM_IDX, C.TIMESTAMP),
)
SPLITS = TableSpec(
    C.SPLITS,
    "strategy STRING, train BIGINT, valid BIGINT, test BIGINT, valid_cut_ms BIGINT, test_cut_ms BIGINT, "
    "kcore INT, note STRING, built_at TIMESTAMP",
    stats_columns=("train",),
)

RUNS = TableSpec(
    C.RUNS,
    "run_id STRING, model STRING, stage STRING, params STRING, metrics MAP<STRING, DOUBLE>, "
    "train_seconds DOUBLE, split STRING, data_versions STRING, code_version STRING, model_path STRING, "
    "recorded_at TIMESTAMP",
    stats_columns=("recorded_at",),
)
MODEL_REGISTRY = TableSpec(
    C.MODEL_REGISTRY,
    "run_id STRING, model STRING, stage STRING, model_path STRING, params STRING, metric DOUBLE, "
    "reason STRING, updated_at TIMESTAMP",
    stats_columns=("updated_at",),
)
PUBLISHED = TableSpec(
    C.PUBLISHED, "version STRING, model STRING, run_id STRING, published_at TIMESTAMP, k INT",
    stats_columns=("published_at",),
)
RECS_USER_TOPK = TableSpec(
    C.RECS_USER_TOPK,
    "version STRING, user_id STRING, rank INT, parent_asin STRING, score DOUBLE, model STRING",
    stats_columns=(C.RANK,),
)
RECS_SIMILAR_ITEMS = TableSpec(
    C.RECS_SIMILAR_ITEMS,
    "version STRING, parent_asin STRING, rank INT, similar_asin STRING, score DOUBLE, method STRING",
    stats_columns=(C.RANK,),
)
RECS_POPULAR = TableSpec(
    C.RECS_POPULAR, "version STRING, category STRING, rank INT, parent_asin STRING, score DOUBLE",
    stats_columns=(C.RANK,),
)

# Monitoring (recsys.monitor). Events name users: statistics only on time and type columns.
EVENTS = TableSpec(
    C.EVENTS,
    "event_id STRING, event_type STRING, user_id STRING, parent_asin STRING, request_id STRING, "
    "items ARRAY<STRING>, variant STRING, ts TIMESTAMP, received_at TIMESTAMP, version STRING, model STRING",
    stats_columns=("ts", "received_at", "event_type"),
)
INDICATORS = TableSpec(
    C.INDICATORS,
    "day DATE, version STRING, variant STRING, model STRING, users BIGINT, impressions BIGINT, clicks BIGINT, "
    "clicked BIGINT, purchases BIGINT, purchased BIGINT, scroll_end_no_click_n BIGINT, rec_to_rec_n BIGINT, "
    "items_shown BIGINT, ctr DOUBLE, purchase_rate DOUBLE, rec_to_rec DOUBLE, scroll_end_no_click DOUBLE, "
    "coverage DOUBLE, computed_at TIMESTAMP",
    stats_columns=("day", "computed_at"),
)


def table_path(warehouse: Path | str, rel: str) -> str:
    """Absolute path of a table; Spark and delta-rs both take plain local paths."""
    return str(Path(warehouse).resolve() / rel)


def ensure_table(spark, warehouse: Path | str, spec: TableSpec) -> str:
    """Create the table (empty, with its properties) if it does not exist; return its path.

    Parallel jobs (the DAG's train tasks on a fresh warehouse) may create the same table at once: the loser sees
    a half-made ``_delta_log`` ("not empty and also not a Delta table") or a concurrent first commit, so a failure
    is forgiven once another process's first commit appears.
    """
    from delta.tables import DeltaTable

    path = table_path(warehouse, spec.path)
    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(_struct(spark, spec.ddl))
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    for key, value in spec.table_properties().items():
        builder = builder.property(key, value)
    existed = _committed_soon(Path(path), 0.0)
    try:
        builder.execute()
    except Exception:
        if existed or not _committed_soon(Path(path), CREATE_RACE_WAIT_S):
            raise                    # a real error on an existing table (e.g. another schema) is never hidden
    return path


CREATE_RACE_WAIT_S = 30.0


def _committed_soon(path: Path, wait_s: float) -> bool:
    """Whether ``path`` has (or gets within ``wait_s``) a commit or checkpoint in its log."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        log = path / "_delta_log"
        if log.is_dir() and any(f.name.endswith((".json", ".checkpoint.parquet")) for f in log.iterdir()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _struct(spark, ddl: str):
    from pyspark.sql.types import StructType

    return StructType.fromDDL(ddl)


def read_table(spark, warehouse: Path | str, rel: str):
    return spark.read.format("delta").load(table_path(warehouse, rel))


def is_delta_table(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def find_tables(warehouse: Path | str) -> Iterator[Path]:
    """Every Delta table below the warehouse root, in path order."""
    root = Path(warehouse)
    for log_dir in sorted(root.rglob("_delta_log")):
        if log_dir.is_dir():
            yield log_dir.parent


def describe_table(path: Path) -> dict[str, object]:
    """Version and live row count from the Delta log (delta-rs: no JVM, no data scan)."""
    from deltalake import DeltaTable

    table = DeltaTable(str(path))
    actions = table.get_add_actions(flatten=True)
    rows = actions.column("num_records").to_pylist() if actions.num_rows else []
    return {
        "version": table.version(),
        "rows": int(sum(r or 0 for r in rows)),
        "files": actions.num_rows,
    }


@contextmanager
def spark_conf(spark, settings: Mapping[str, str]) -> Iterator[None]:
    """Set session SQL confs for a block and restore them afterwards (plans read confs at action time)."""
    previous = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)

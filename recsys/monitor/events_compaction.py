"""API event logs → ``ops/events``: MERGE on ``event_id``, then delete the log files that are closed for good.

Why this order: a file is deleted only if it was closed *before* it was read and its rows are committed, so a
crash anywhere leaves every event either still in a file or already in the table — and a rerun MERGEs the same
ids again without duplicating them (insert-only: events are immutable). Files still open (today's, or touched
within ``closed_after_s``) are read every time and kept; their complete lines are MERGEd, a torn last line waits.

Parsing is Arrow's JSON reader on the complete-line prefix of each file (the file contract of
:mod:`recsys.serve.events`), handed to Spark as one Arrow table: no per-row Python. Events of users erased since
they were logged are left out (the erasure also scrubs the files, this closes the window in between).
"""

from __future__ import annotations

import io
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.logs import step
from recsys.serve.events import event_files, file_day

log = logging.getLogger(__name__)

EVENT_ID = "event_id"
_ARROW_SCHEMA = pa.schema([
    (EVENT_ID, pa.string()), ("event_type", pa.string()), (C.USER_ID, pa.string()), (C.ITEM_ID, pa.string()),
    ("request_id", pa.string()), ("items", pa.list_(pa.string())), ("variant", pa.string()), ("ts", pa.string()),
    ("received_at", pa.string()), (C.VERSION, pa.string()), (C.MODEL, pa.string()),
])
_TIMESTAMPS = ("ts", "received_at")


def closed_files(folder: Path, closed_after_s: float, now: float | None = None) -> list[Path]:
    """Log files of a past UTC day whose mtime is older than ``closed_after_s``: no writer will touch them again
    (a writer opens a new file when the day changes)."""
    now = time.time() if now is None else now
    today = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%d")
    return [p for p in event_files(folder)
            if (day := file_day(p)) is not None and day < today and now - p.stat().st_mtime > closed_after_s]


def _complete_prefix(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def read_logs(spark: SparkSession, paths: list[Path]) -> DataFrame | None:
    """The complete lines of ``paths`` as a DataFrame in the ``ops/events`` schema (None when there are none)."""
    parts = []
    options = pj.ParseOptions(explicit_schema=_ARROW_SCHEMA, unexpected_field_behavior="ignore")
    for path in paths:
        data = _complete_prefix(path)
        if data.strip():
            parts.append(pj.read_json(io.BytesIO(data), parse_options=options).select(_ARROW_SCHEMA.names))
    if not parts:
        return None
    table = pa.concat_tables(parts)
    df = spark.createDataFrame(table)
    for column in _TIMESTAMPS:
        df = df.withColumn(column, F.to_timestamp(column))
    return df.select(*T.EVENTS.columns).dropDuplicates([EVENT_ID])


def _without_erased(spark: SparkSession, warehouse: Path, df: DataFrame) -> DataFrame:
    from recsys.catalog import ledger
    from recsys.catalog.mentions import ID_HASH, salted_hash

    erased = ledger.erased_users(spark, warehouse)
    if erased is None:
        return df
    hashes = F.broadcast(erased.hashes)
    return df.join(hashes, salted_hash(df[C.USER_ID], erased.salt) == hashes[ID_HASH], "left_anti")


def compact_events(spark: SparkSession, warehouse: Path | str, events_dir: Path | str,
                   closed_after_s: float = 60.0) -> dict:
    """Fold every log file under ``events_dir`` into ``ops/events``; returns counts (files, read, inserted)."""
    from delta.tables import DeltaTable

    warehouse, folder = Path(warehouse), Path(events_dir)
    path = T.ensure_table(spark, warehouse, T.EVENTS)
    with step("compact_events", events_dir=str(folder)) as rec:
        closed = closed_files(folder, closed_after_s) if folder.is_dir() else []   # decided before reading
        files = event_files(folder) if folder.is_dir() else []
        batch = read_logs(spark, files)
        inserted = 0
        if batch is not None:
            batch = _without_erased(spark, warehouse, batch)
            table = DeltaTable.forPath(spark, path)
            before = table.history(1).select("version").first()[0]
            (table.alias("t").merge(batch.alias("s"), f"t.{EVENT_ID} = s.{EVENT_ID}")
             .whenNotMatchedInsertAll()
             .execute())
            last = table.history(1).select("version", "operationMetrics").first()
            if last["version"] > before:          # a MERGE that changes nothing commits nothing
                inserted = int((last["operationMetrics"] or {}).get("numTargetRowsInserted", 0))
        for done in closed:                       # their rows are committed: safe to drop the files now
            done.unlink(missing_ok=True)
        rec.update(files=len(files), deleted_files=len(closed), inserted=inserted)
    return {"files": len(files), "deleted_files": len(closed), "inserted": inserted}

"""The warehouse's rows as item sequences, built in Spark and collected to the driver through Arrow.

A sequence is one user's (or one anonymous visitor's) items in time order, ties broken by item index so a rebuild
gives the same order; it is cut into sessions after ``sessions.gap_minutes`` of silence (none by default: see
:mod:`recsys.sessions.settings`). Its rows are the interactions a model is fitted on (gold/interactions of the fit
splits) plus the API's item events of ``ops/events`` up to the newest of them — later events would leak what the
evaluation holds out. An event's ``user_id`` the user index does not know is an anonymous visitor: its own sequence.

Deletions: gold is already cascaded (deleted items and erased users are gone from gold/interactions and the user
index), ``ops/events`` loses erased users' rows in the same cascade, and its rows are kept only for items the item
index still lists as live — an event of a deleted item never enters a sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.sessions.arrays import Sequences
from recsys.sessions.settings import SessionSettings

VISITOR = "visitor"          # an anonymous visitor's id (an events user_id unknown to the user index), else null
SESSION = "session"          # 0, 1, … within a user's (visitor's) rows, in time order
EVENT_TYPE = "event_type"
LAST_MS = "last_ms"          # the time of a session's last item
NO_USER = -1                 # the user index of a visitor's sequence


@dataclass(frozen=True)
class UserSequences:
    """``sequences[i]`` belongs to ``users[i]`` (a user index, or :data:`NO_USER` for a visitor); a user's sessions
    are consecutive and in time order."""

    users: np.ndarray            # int32[n]
    sequences: Sequences


def session_events(spark: SparkSession, warehouse: Path | str) -> DataFrame | None:
    """``ops/events`` naming a live item → (user_idx or visitor, item_idx, timestamp ms, event_type); None without
    an events table."""
    if not T.is_delta_table(Path(T.table_path(warehouse, C.EVENTS))):
        return None
    items = T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted")).select(C.ITEM_ID, C.ITEM_IDX)
    users = T.read_table(spark, warehouse, C.USER_INDEX).select(C.USER_ID, C.USER_IDX)
    return (T.read_table(spark, warehouse, C.EVENTS)
            .where(F.col(EVENT_TYPE).isin(sorted(C.ITEM_EVENT_TYPES)) & F.col(C.ITEM_ID).isNotNull()
                   & F.col(C.USER_ID).isNotNull())
            .join(items, C.ITEM_ID)
            .join(users, C.USER_ID, "left")
            .select(C.USER_IDX, F.when(F.col(C.USER_IDX).isNull(), F.col(C.USER_ID)).alias(VISITOR), C.ITEM_IDX,
                    F.unix_millis("ts").alias(C.TIMESTAMP), EVENT_TYPE))


def sequence_rows(interactions: DataFrame, events: DataFrame | None, settings: SessionSettings) -> DataFrame:
    """(user_idx, visitor, item_idx, timestamp): the interactions, plus the events of ``settings.event_types`` up
    to the newest interaction; an event repeating an interaction's (user, item, time) counts once."""
    rows = interactions.select(C.USER_IDX, F.lit(None).cast("string").alias(VISITOR), C.ITEM_IDX, C.TIMESTAMP)
    if events is None or not settings.event_types:
        return rows
    newest = interactions.agg(F.max(C.TIMESTAMP).alias("_newest"))
    taken = (events.where(F.col(EVENT_TYPE).isin(settings.event_types)).crossJoin(F.broadcast(newest))
             .where(F.col(C.TIMESTAMP) <= F.col("_newest"))
             .select(C.USER_IDX, VISITOR, C.ITEM_IDX, C.TIMESTAMP))
    return rows.unionByName(taken).dropDuplicates([C.USER_IDX, VISITOR, C.ITEM_IDX, C.TIMESTAMP])


def sessions(rows: DataFrame, gap_minutes: float | None) -> DataFrame:
    """One row per session: (user_idx, visitor, session, items ARRAY<INT> oldest first, last_ms)."""
    owner = [C.USER_IDX, VISITOR]
    if gap_minutes is None:
        cut = rows.withColumn(SESSION, F.lit(0))
    else:
        from pyspark.sql import Window

        order = Window.partitionBy(*owner).orderBy(C.TIMESTAMP, C.ITEM_IDX)
        silence = F.col(C.TIMESTAMP) - F.lag(C.TIMESTAMP).over(order)
        starts = F.coalesce((silence > F.lit(int(gap_minutes * 60_000))).cast("int"), F.lit(0))
        cut = rows.withColumn("_starts", starts).withColumn(
            SESSION, F.sum("_starts").over(order.rowsBetween(Window.unboundedPreceding, Window.currentRow)))
    return (cut.groupBy(*owner, SESSION)
            .agg(F.sort_array(F.collect_list(F.struct(C.TIMESTAMP, C.ITEM_IDX))).alias("_steps"),
                 F.max(C.TIMESTAMP).alias(LAST_MS))
            .select(*owner, F.col(SESSION).cast("int").alias(SESSION),
                    F.col(f"_steps.{C.ITEM_IDX}").alias(C.ITEMS), LAST_MS))


def collect(sessions_df: DataFrame) -> UserSequences:
    """The sessions on the driver, ordered by user index (visitors first, by id) then session, as CSR arrays: one
    Arrow transfer, no Python object per row."""
    table = (sessions_df.orderBy(F.col(C.USER_IDX).asc_nulls_first(), VISITOR, SESSION)
             .select(C.USER_IDX, C.ITEMS).toArrow())
    users = table.column(C.USER_IDX).fill_null(NO_USER).to_numpy().astype(np.int32)
    return UserSequences(users, list_to_sequences(table.column(C.ITEMS)))


def list_to_sequences(column: pa.ChunkedArray | pa.Array) -> Sequences:
    """An Arrow list column of item indices (no nulls) → :class:`Sequences`, without a copy per row."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return Sequences(np.zeros(1, np.int64), np.zeros(0, np.int32))
    start = array.offsets[0].as_py()
    offsets = array.offsets.to_numpy().astype(np.int64) - start
    items = array.values.slice(start, offsets[-1]).to_numpy(zero_copy_only=False).astype(np.int32)
    return Sequences(offsets, items)


def user_sequences(interactions: DataFrame, events: DataFrame | None, settings: SessionSettings) -> UserSequences:
    """What a session model is fitted on: :func:`sequence_rows` cut into :func:`sessions`, collected."""
    return collect(sessions(sequence_rows(interactions, events, settings), settings.gap_minutes))

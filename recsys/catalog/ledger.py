"""``ops/deletions``: the audit trail of item deletions and user erasures, and the API deny-list's source.

One row per (kind, id_hash). A user is kept only as ``id_hash`` = sha256(salt + id) (``recsys.serve.denylist``;
salt in ``<warehouse>/ops/_salt``, created once) plus the id's length: enough for ingest and silver to refuse the
id later by hashing same-length tokens (``recsys.catalog.mentions``), never enough to print it. Items keep their
plain ``id`` (the deny-list and relisting need it). A request is written *pending* (``applied_at`` null) before
the cascade, so the API denies it at once, and completed with ``applied_at`` and ``rows_removed`` after it.
Every write is a MERGE on (kind, id_hash) against a DataFrame: no id ever appears in a Delta commit.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog.drops import DropRow
from recsys.ids import id_hash
from recsys.serve.denylist import ID, ID_HASH, KIND, KIND_ITEM, KIND_USER, SALT_FILE, read_salt

STATUS = "status"
DELETED, RELISTED = "deleted", "relisted"
REQUESTED_AT, APPLIED_AT, RELISTED_AT, PURGED_AT = "requested_at", "applied_at", "relisted_at", "purged_at"
ROWS_REMOVED = "rows_removed"
ID_LENGTH = "id_length"


def ensure_salt(warehouse: Path | str) -> str:
    """The warehouse's salt, created once (``secrets.token_hex(32)``, mode 0600) if missing.

    Losing it makes every recorded erasure unmatchable, so it is created exclusively and never rewritten.
    """
    salt = read_salt(Path(warehouse))
    if salt:
        return salt
    path = Path(warehouse) / SALT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:          # another job won the race: use its salt
        return read_salt(Path(warehouse)) or ""
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return read_salt(Path(warehouse)) or ""


@dataclass(frozen=True)
class Request:
    """One id to delete or erase in this run (the plain id stays in memory only)."""

    kind: str
    id: str
    id_hash: str
    reason: str
    requested_at: datetime
    resumed: bool = False      # already pending in the ledger (a previous run died mid-way)


def _path(warehouse: Path | str) -> str:
    return T.table_path(warehouse, C.DELETIONS)


def read_ledger(spark: SparkSession, warehouse: Path | str) -> DataFrame:
    return spark.read.format("delta").load(T.ensure_table(spark, warehouse, T.DELETIONS))


def to_do(spark: SparkSession, warehouse: Path | str, rows: Sequence[DropRow], salt: str) -> list[Request]:
    """The drop rows that still need applying: new ids, pending ones (resumed), and items re-deleted after a
    relist (a request newer than the relist). An id already deleted and applied is skipped: idempotence."""
    if not rows:
        return []
    hashed = {id_hash(salt, r.id): r for r in rows}
    known = {(r[KIND], r[ID_HASH]): r for r in read_ledger(spark, warehouse)
             .where(F.col(ID_HASH).isin(list(hashed)))
             .select(KIND, ID_HASH, STATUS, APPLIED_AT, RELISTED_AT).collect()}
    out = []
    for digest, row in hashed.items():
        prior = known.get((row.kind, digest))
        if prior is None:
            out.append(Request(row.kind, row.id, digest, row.reason, row.requested_at))
        elif prior[STATUS] == DELETED and prior[APPLIED_AT] is None:
            out.append(Request(row.kind, row.id, digest, row.reason, row.requested_at, resumed=True))
        elif prior[STATUS] == RELISTED and _aware(prior[RELISTED_AT]) < row.requested_at:
            out.append(Request(row.kind, row.id, digest, row.reason, row.requested_at))
    return sorted(out, key=lambda r: (r.kind, r.id_hash))


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.min.replace(tzinfo=timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _merge(spark: SparkSession, warehouse: Path | str, rows: list[dict], update: Sequence[str],
           insert: bool) -> None:
    from delta.tables import DeltaTable

    if not rows:
        return
    source = spark.createDataFrame(rows, schema=T.DELETIONS.ddl)
    merge = (DeltaTable.forPath(spark, T.ensure_table(spark, warehouse, T.DELETIONS)).alias("t")
             .merge(source.alias("s"), f"t.{KIND} = s.{KIND} AND t.{ID_HASH} = s.{ID_HASH}")
             .whenMatchedUpdate(set={c: f"s.{c}" for c in update}))
    if insert:
        merge = merge.whenNotMatchedInsertAll()
    merge.execute()


def _row(request: Request, **values: object) -> dict:
    user = request.kind == KIND_USER
    reason = request.reason.replace(request.id, "[user]") if user else request.reason   # free text may name them
    return {KIND: request.kind, ID_HASH: request.id_hash, ID: None if user else request.id,
            ID_LENGTH: len(request.id) if user else None, C.REASON: reason, REQUESTED_AT: request.requested_at,
            APPLIED_AT: None, ROWS_REMOVED: None, STATUS: DELETED, RELISTED_AT: None, PURGED_AT: None, **values}


def record_pending(spark: SparkSession, warehouse: Path | str, requests: Sequence[Request]) -> None:
    """Land the requests as pending rows: from the next API request on, they are denied."""
    fresh = [_row(r) for r in requests if not r.resumed]
    _merge(spark, warehouse, fresh, update=[C.REASON, REQUESTED_AT, APPLIED_AT, ROWS_REMOVED, STATUS,
                                            RELISTED_AT, PURGED_AT], insert=True)


def record_applied(spark: SparkSession, warehouse: Path | str, requests: Sequence[Request],
                   removed: Mapping[str, Mapping[str, int]], applied_at: datetime, purged: bool) -> None:
    """Complete the requests: when, rows removed per table, and whether table history was purged too."""
    rows = [_row(r, **{APPLIED_AT: applied_at, ROWS_REMOVED: dict(removed.get(r.id_hash, {})),
                       PURGED_AT: applied_at if purged and r.kind == KIND_USER else None}) for r in requests]
    _merge(spark, warehouse, rows, update=[APPLIED_AT, ROWS_REMOVED, PURGED_AT], insert=False)


def record_relisted(spark: SparkSession, warehouse: Path | str, rows: Sequence[DropRow], salt: str) -> list[str]:
    """Mark deleted items as relisted (as of each row's ``requested_at``); returns the asins that changed."""
    hashed = {id_hash(salt, r.id): r for r in rows}
    current = {r[ID_HASH] for r in read_ledger(spark, warehouse)
               .where((F.col(KIND) == KIND_ITEM) & (F.col(STATUS) == DELETED) & F.col(ID_HASH).isin(list(hashed)))
               .select(ID_HASH).collect()}
    changed = [hashed[h] for h in sorted(current)]
    updates = [{KIND: KIND_ITEM, ID_HASH: id_hash(salt, r.id), STATUS: RELISTED, RELISTED_AT: r.requested_at}
               for r in changed]
    _merge(spark, warehouse, [_complete(u) for u in updates], update=[STATUS, RELISTED_AT], insert=False)
    return [r.id for r in changed]


def _complete(partial: dict) -> dict:
    return {name: partial.get(name) for name in T.DELETIONS.columns}


@dataclass(frozen=True)
class Erased:
    """Everything needed to refuse erased users without knowing them: salt, hashes, id lengths."""

    salt: str
    hashes: DataFrame            # id_hash
    lengths: tuple[int, ...]


def erased_users(spark: SparkSession, warehouse: Path | str) -> Erased | None:
    """Erased users (pending or applied) as hashes, or None when there are none (the common, free case)."""
    if not T.is_delta_table(Path(_path(warehouse))):
        return None
    rows = (spark.read.format("delta").load(_path(warehouse))
            .where((F.col(KIND) == KIND_USER) & (F.col(STATUS) == DELETED)).select(ID_HASH, ID_LENGTH).collect())
    if not rows:
        return None
    salt = read_salt(Path(warehouse))
    if not salt:
        raise RuntimeError(f"ops/deletions holds erased users but {SALT_FILE} is missing: refusing to go on, "
                           "erased users could not be recognised")
    hashes = spark.createDataFrame([(r[ID_HASH],) for r in rows], f"{ID_HASH} STRING")
    lengths = tuple(sorted({int(r[ID_LENGTH]) for r in rows if r[ID_LENGTH]}))
    return Erased(salt, hashes, lengths)


def deleted_items(spark: SparkSession, warehouse: Path | str) -> DataFrame | None:
    """(parent_asin) of items deleted and not relisted, or None when there are none."""
    if not T.is_delta_table(Path(_path(warehouse))):
        return None
    items = (spark.read.format("delta").load(_path(warehouse))
             .where((F.col(KIND) == KIND_ITEM) & (F.col(STATUS) == DELETED)).select(F.col(ID).alias(C.ITEM_ID)))
    return items if items.limit(1).count() else None


def due_purges(spark: SparkSession, warehouse: Path | str, window_hours: float,
               now: datetime) -> tuple[list[str], list[str]]:
    """Erasures applied without purging history whose window has passed: (their hashes, tables they touched)."""
    if not T.is_delta_table(Path(_path(warehouse))):
        return [], []
    cutoff = now - timedelta(hours=window_hours)
    rows = (spark.read.format("delta").load(_path(warehouse))
            .where((F.col(KIND) == KIND_USER) & F.col(APPLIED_AT).isNotNull() & F.col(PURGED_AT).isNull()
                   & (F.col(APPLIED_AT) <= F.lit(cutoff)))
            .select(ID_HASH, ROWS_REMOVED).collect())
    tables = sorted({t for r in rows for t, n in (r[ROWS_REMOVED] or {}).items() if n})
    return [r[ID_HASH] for r in rows], tables


def record_purged(spark: SparkSession, warehouse: Path | str, hashes: Sequence[str], purged_at: datetime) -> None:
    rows = [_complete({KIND: KIND_USER, ID_HASH: h, PURGED_AT: purged_at}) for h in hashes]
    _merge(spark, warehouse, rows, update=[PURGED_AT], insert=False)


def overdue_pending(spark: SparkSession, warehouse: Path | str, hours: float, now: datetime) -> list[dict]:
    """Requests still pending (recorded, never completed: a run died) ``hours`` after they were requested.

    Such a user is denied by the API but still in the tables; each is named by kind and a hash prefix only.
    """
    if not T.is_delta_table(Path(_path(warehouse))):
        return []
    cutoff = now - timedelta(hours=hours)
    rows = (spark.read.format("delta").load(_path(warehouse))
            .where((F.col(STATUS) == DELETED) & F.col(APPLIED_AT).isNull() & (F.col(REQUESTED_AT) <= F.lit(cutoff)))
            .select(KIND, ID_HASH, REQUESTED_AT).orderBy(REQUESTED_AT).collect())
    return [{KIND: r[KIND], ID_HASH: r[ID_HASH][:12],
             "pending_hours": round((now - _aware(r[REQUESTED_AT])).total_seconds() / 3600, 1)} for r in rows]

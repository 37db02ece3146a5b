"""The cascade over Delta tables: for each table, ONE commit removes every id of a batch.

The commit is a MERGE, or an overwrite of a ranked-list table most of whose lists change; when the run purges
history (an erasure), each changed table is instead written once into a fresh directory that replaces it.

Deleted items leave ``silver/*`` and ``gold/interactions``, are tombstoned in ``gold/item_index`` (``deleted``),
and are cut out of every ranked list in ``gold/recs_*`` with the gap closed: the next candidate (the spares the
publisher keeps beyond K) moves up, so the MERGE updates the shifted ranks and deletes each list's tail.

Erased users are looked for in every Delta table that can hold a user id, each the way its rows name users
(:func:`user_search`): a table with a ``user_id`` column by that column alone (bronze and silver reviews, gold
user index and lists, ``ops/events``, a table added later); ``gold/interactions`` by ``user_idx``; a table of raw
lines (``quarantine/reviews``) by the line's own ``user_id`` when it has a valid one, else by whole token
(:mod:`recsys.catalog.mentions`); any other table added later by whole token in its text columns. Tables that hold
no user ids are not searched: the ``ops/*`` metadata (runs, registry, published, ingested files, quality results,
indicators; ``ops/deletions`` must also survive the run that reads it) and the catalogue (items, item index,
similar and popular lists, splits). So erasing user ``1`` removes user ``1``'s rows and nothing else.

No id reaches a Delta commit: MERGE conditions name columns only and the ids arrive as a DataFrame (a ``DELETE
WHERE id = 'x'`` would store the literal in ``commitInfo``), and table statistics exclude id columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.catalog import history
from recsys.catalog.mentions import ID_HASH, mention_hits, owner_of_json_line, text_columns

log = logging.getLogger(__name__)

DELETED = "deleted"                       # gold/item_index tombstone column
SIMILAR_ASIN, METHOD = "similar_asin", "method"
FINGERPRINT = "_fingerprint"
ACTION = "_action"                        # what a plan row asks of its target row
DELETE, UPDATE, COUNT = "delete", "update", "count"
# Natural keys: the MERGE joins on them. A table not listed is rewritten whole (overwrite) when it must change.
KEYS: dict[str, tuple[str, ...]] = {
    C.BRONZE_REVIEWS: (C.SOURCE_FILE, C.LINE),
    C.BRONZE_ITEMS: (C.SOURCE_FILE, C.LINE),
    C.QUARANTINE_REVIEWS: (C.SOURCE_FILE, C.LINE),
    C.QUARANTINE_ITEMS: (C.SOURCE_FILE, C.LINE),
    C.SILVER_REVIEWS: (C.USER_ID, C.ITEM_ID),
    C.SILVER_ITEMS: (C.ITEM_ID,),
    C.USER_INDEX: (C.USER_ID,),
    C.ITEM_INDEX: (C.ITEM_ID,),
    C.INTERACTIONS: (C.USER_IDX, C.ITEM_IDX),
    C.RECS_USER_TOPK: (C.VERSION, C.USER_ID, C.RANK),
    C.RECS_SIMILAR_ITEMS: (C.VERSION, C.ITEM_ID, METHOD, C.RANK),
    C.RECS_POPULAR: (C.VERSION, C.CATEGORY, C.RANK),
    C.EVENTS: ("event_id",),
}
# Columns that hold item ids, labels or paths, never a user id: not searched for users (saves a scan).
NOT_USER_TEXT = frozenset({C.ITEM_ID, C.ASIN, SIMILAR_ASIN, C.VERSION, C.MODEL, C.CATEGORY, METHOD, C.SPLIT,
                           C.SOURCE_FILE})
OPS_PREFIX = "ops/"
# Tables of the catalogue and of the split: item ids, counts and labels only, no user id.
CATALOGUE = frozenset({C.BRONZE_ITEMS, C.QUARANTINE_ITEMS, C.SILVER_ITEMS, C.ITEM_INDEX, C.RECS_SIMILAR_ITEMS,
                       C.RECS_POPULAR, C.SPLITS})
BY_COLUMN, BY_INDEX, BY_OWNER_OR_TOKEN, BY_TOKEN, NOT_SEARCHED = "column", "index", "owner", "token", "none"


def user_search(rel: str, columns: Sequence[str]) -> str:
    """How the table ``rel`` (with ``columns``) names users, hence how erased users are looked for in it."""
    if rel == C.DELETIONS:
        return NOT_SEARCHED                  # the ledger: hashes only, and it must survive the run that reads it
    if C.USER_ID in columns:
        return BY_COLUMN                     # every row has its owner: other columns are that owner's data
    if rel == C.INTERACTIONS:
        return BY_INDEX
    if rel.startswith(OPS_PREFIX) or rel in CATALOGUE:
        return NOT_SEARCHED
    return BY_OWNER_OR_TOKEN if C.RAW in columns else BY_TOKEN


@dataclass(frozen=True)
class Batch:
    """The ids of one run as small DataFrames (plain ids live only in this job's memory and plans)."""

    salt: str
    items: DataFrame | None = None          # parent_asin, id_hash
    users: DataFrame | None = None          # user_id, id_hash
    user_lengths: tuple[int, ...] = ()
    item_idx: DataFrame | None = None       # item_idx, id_hash (from gold/item_index)
    user_idx: DataFrame | None = None       # user_idx, id_hash (read before gold/user_index loses them)


@dataclass
class Plan:
    """What one table must lose, as frames of (keys…, _action, id_hash, new values…).

    ``delete`` rows name a row to remove, ``update`` rows a row to overwrite with new values (a shifted rank),
    ``count`` rows only attribute a removal to an id. ``id_hash``, when set, says which id caused the row.
    """

    parts: list[DataFrame] = field(default_factory=list)

    def delete(self, hits: DataFrame, keys: Sequence[str]) -> None:
        """Delete the rows whose keys are in ``hits`` (keys…, id_hash)."""
        self.parts.append(hits.select(*keys, F.lit(DELETE).alias(ACTION), ID_HASH))

    def extend(self, other: Plan) -> None:
        self.parts += other.parts


def build_batch(spark: SparkSession, warehouse: Path | str, salt: str, items: dict[str, str],
                users: dict[str, str]) -> Batch:
    """``items``/``users``: plain id → id_hash. Index rows are resolved now, before any table changes."""
    item_df = spark.createDataFrame(list(items.items()), f"{C.ITEM_ID} STRING, {ID_HASH} STRING") if items else None
    user_df = spark.createDataFrame(list(users.items()), f"{C.USER_ID} STRING, {ID_HASH} STRING") if users else None
    item_idx = _index_rows(spark, warehouse, C.ITEM_INDEX, C.ITEM_ID, C.ITEM_IDX, item_df)
    user_idx = _index_rows(spark, warehouse, C.USER_INDEX, C.USER_ID, C.USER_IDX, user_df)
    return Batch(salt, item_df, user_df, tuple(sorted({len(u) for u in users})), item_idx, user_idx)


def _index_rows(spark: SparkSession, warehouse: Path | str, rel: str, id_col: str, idx_col: str,
                ids: DataFrame | None) -> DataFrame | None:
    if ids is None or not _exists(warehouse, rel):
        return None
    rows = T.read_table(spark, warehouse, rel).join(ids, id_col).select(idx_col, ID_HASH).collect()
    return spark.createDataFrame([tuple(r) for r in rows], f"{idx_col} INT, {ID_HASH} STRING")


def _exists(warehouse: Path | str, rel: str) -> bool:
    return T.is_delta_table(Path(T.table_path(warehouse, rel)))


# --- plans ---------------------------------------------------------------------------------------------------

def rerank(lists: DataFrame, group: Sequence[str], item: str, values: Sequence[str], removed: DataFrame) -> Plan:
    """Cut ``removed`` (parent_asin, id_hash) out of ranked lists (ranks 1..n per ``group``) and close the gaps.

    A kept row moves up by the number of removed rows ranked above it: the row at its new rank is updated with
    its values (so the spares beyond K move into the list); the last ranks of the list are deleted. One window
    pass over the table; only lists holding a removed item produce rows. The rows that say why (a removed item's
    own row, with its id_hash) come from a plain join, so a caller that needs only them (a rewrite of the whole
    table, see :func:`apply_plan`) never runs the window.
    """
    removed = F.broadcast(removed.select(F.col(C.ITEM_ID).alias(item), ID_HASH))
    gone = F.col(ID_HASH).isNotNull().cast("int")
    whole = Window.partitionBy(*group)
    above = whole.orderBy(C.RANK).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    flagged = (lists.join(removed, item, "left")
               .withColumn("_gone", F.sum(gone).over(whole)).where(F.col("_gone") > 0)
               .withColumn("_shift", F.sum(gone).over(above))
               .withColumn("_size", F.count(F.lit(1)).over(whole)))
    no_id = F.lit(None).cast("string").alias(ID_HASH)
    plan = Plan()
    plan.parts.append(flagged.where(F.col(C.RANK) > F.col("_size") - F.col("_gone"))
                      .select(*group, C.RANK, F.lit(DELETE).alias(ACTION), no_id))
    plan.parts.append(flagged.where(F.col(ID_HASH).isNull() & (F.col("_shift") > 0))
                      .select(*group, (F.col(C.RANK) - F.col("_shift")).cast("int").alias(C.RANK),
                              F.lit(UPDATE).alias(ACTION), no_id, item, *values))
    plan.parts.append(lists.join(removed, item)
                      .select(*group, C.RANK, F.lit(COUNT).alias(ACTION), ID_HASH))
    return plan


def item_plans(spark: SparkSession, warehouse: Path | str, batch: Batch) -> dict[str, Plan]:
    """Per table, what deleting ``batch.items`` changes."""
    plans: dict[str, Plan] = {}
    items = batch.items
    if items is None:
        return plans
    read = lambda rel: T.read_table(spark, warehouse, rel)  # noqa: E731
    for rel in (C.SILVER_ITEMS, C.SILVER_REVIEWS):
        if _exists(warehouse, rel):
            plans.setdefault(rel, Plan()).delete(read(rel).join(F.broadcast(items), C.ITEM_ID), KEYS[rel])
    if _exists(warehouse, C.ITEM_INDEX):           # tombstone, counted as the item's one row "removed"
        live = read(C.ITEM_INDEX).where(~F.col(DELETED)).join(F.broadcast(items), C.ITEM_ID)
        plans.setdefault(C.ITEM_INDEX, Plan()).parts.append(
            live.select(C.ITEM_ID, F.lit(UPDATE).alias(ACTION), ID_HASH, F.lit(True).alias(DELETED)))
    if _exists(warehouse, C.INTERACTIONS) and batch.item_idx is not None:
        plans.setdefault(C.INTERACTIONS, Plan()).delete(
            read(C.INTERACTIONS).join(F.broadcast(batch.item_idx), C.ITEM_IDX), KEYS[C.INTERACTIONS])
    if _exists(warehouse, C.RECS_USER_TOPK):
        lists = read(C.RECS_USER_TOPK)
        if batch.users is not None:      # an erased user's lists go whole (user plans); never re-rank them
            lists = lists.join(F.broadcast(batch.users.select(C.USER_ID)), C.USER_ID, "left_anti")
        _merge_plan(plans, C.RECS_USER_TOPK, rerank(lists, (C.VERSION, C.USER_ID), C.ITEM_ID,
                                                    (C.SCORE, C.MODEL), items))
    if _exists(warehouse, C.RECS_SIMILAR_ITEMS):
        similar = read(C.RECS_SIMILAR_ITEMS)
        plan = plans.setdefault(C.RECS_SIMILAR_ITEMS, Plan())
        plan.delete(similar.join(F.broadcast(items), C.ITEM_ID), KEYS[C.RECS_SIMILAR_ITEMS])   # as the key
        others = similar.join(F.broadcast(items.select(C.ITEM_ID)), C.ITEM_ID, "left_anti")
        _merge_plan(plans, C.RECS_SIMILAR_ITEMS,                                               # as a neighbour
                    rerank(others, (C.VERSION, C.ITEM_ID, METHOD), SIMILAR_ASIN, (C.SCORE,), items))
    if _exists(warehouse, C.RECS_POPULAR):
        _merge_plan(plans, C.RECS_POPULAR, rerank(read(C.RECS_POPULAR), (C.VERSION, C.CATEGORY), C.ITEM_ID,
                                                  (C.SCORE,), items))
    return plans


def user_plans(spark: SparkSession, warehouse: Path | str, batch: Batch) -> dict[str, Plan]:
    """Per table, what erasing ``batch.users`` changes: every table that can hold a user id is searched."""
    plans: dict[str, Plan] = {}
    if batch.users is None:
        return plans
    root = Path(warehouse).resolve()
    for path in T.find_tables(root):
        rel = path.relative_to(root).as_posix()
        df = spark.read.format("delta").load(str(path))
        how = user_search(rel, df.columns)
        if how == NOT_SEARCHED:
            continue
        keys = table_keys(rel, df)
        if FINGERPRINT in keys:
            df = with_fingerprint(df)
        hits = _user_hits(df, how, keys, batch)
        if hits is not None:
            plans.setdefault(rel, Plan()).delete(hits, keys)
    return plans


def _user_hits(df: DataFrame, how: str, keys: Sequence[str], batch: Batch) -> DataFrame | None:
    """(keys…, id_hash) of the rows of erased users, found the way ``how`` says."""
    assert batch.users is not None
    if how == BY_COLUMN:
        return df.join(F.broadcast(batch.users), C.USER_ID).select(*keys, ID_HASH)
    if how == BY_INDEX:
        if batch.user_idx is None:
            return None
        return df.join(F.broadcast(batch.user_idx), C.USER_IDX).select(*keys, ID_HASH)
    hashes = batch.users.select(ID_HASH)
    if how == BY_OWNER_OR_TOKEN:
        return mention_hits(df, [C.RAW], keys, hashes, batch.salt, batch.user_lengths,
                            owner=owner_of_json_line(F.col(C.RAW)))
    columns = text_columns(df, skip=NOT_USER_TEXT | {FINGERPRINT})
    if not columns or not batch.user_lengths:
        return None
    return mention_hits(df, columns, keys, hashes, batch.salt, batch.user_lengths)


def table_keys(rel: str, df: DataFrame) -> tuple[str, ...]:
    keys = KEYS.get(rel)
    return keys if keys and set(keys) <= set(df.columns) else (FINGERPRINT,)


def with_fingerprint(df: DataFrame) -> DataFrame:
    """A row identity for tables without a natural key: sha256 of the whole row as JSON."""
    return df.withColumn(FINGERPRINT, F.sha2(F.to_json(F.struct(*[F.col(f"`{c}`") for c in df.columns])), 256))


def _merge_plan(plans: dict[str, Plan], rel: str, plan: Plan) -> None:
    plans.setdefault(rel, Plan()).extend(plan)


def combine(*plan_sets: dict[str, Plan]) -> dict[str, Plan]:
    out: dict[str, Plan] = {}
    for plans in plan_sets:
        for rel, plan in plans.items():
            _merge_plan(out, rel, plan)
    return out


# --- execution -----------------------------------------------------------------------------------------------

def _union(frames: Iterable[DataFrame]) -> DataFrame | None:
    frames = list(frames)
    if not frames:
        return None
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame, allowMissingColumns=True)
    return out


@dataclass(frozen=True)
class Outcome:
    changed: bool                       # a commit was made
    removed: dict[str, int]             # rows removed per id_hash
    fresh: bool = False                 # written into a fresh directory: the table's history is already gone


# Ranked-list tables and what names one list: a plan may touch most of their files, and they can be rewritten
# list by list (each list's rows together, ranked 1..n again).
LISTS = {C.RECS_USER_TOPK: (C.VERSION, C.USER_ID),
         C.RECS_SIMILAR_ITEMS: (C.VERSION, C.ITEM_ID, METHOD),
         C.RECS_POPULAR: (C.VERSION, C.CATEGORY)}


GONE_RANKS = "_gone_ranks"
BROADCAST_LISTS = 2_000_000               # changed lists whose gone ranks are broadcast to the rewrite (~100 B each)


def apply_plan(spark: SparkSession, warehouse: Path | str, rel: str, plan: Plan,
               rewrite_file_share: float = 1.0, fresh: bool = False) -> Outcome:
    """Execute one table's plan as a single commit: one MERGE, or one overwrite for a table without keys or for
    a list table of which a MERGE would rewrite more than ``rewrite_file_share`` of the files (see
    :func:`_merge_rewrites_most`; the rewrite skips the MERGE's join to find them and its per-file rewrites).

    ``fresh``: the table's history must go too (an erasure purging history). Then the new content is written once,
    straight into a fresh directory swapped in (:func:`recsys.catalog.history.rewrite`), instead of a commit
    followed by a copy of the whole table.
    """
    frame = _union(plan.parts)
    if frame is None:
        return Outcome(False, {})
    path = T.table_path(warehouse, rel)
    current = spark.read.format("delta").load(path)
    keys = table_keys(rel, current)
    group = LISTS.get(rel)
    # Every change has a cause row (an id_hash): a removed row, or for a shifted rank the removed row above it. One
    # aggregation of the causes attributes the removals and tells whether the table must change at all. A list
    # table's causes come without the re-ranking window (see rerank), which its rewrite never needs, and name each
    # row once (an erased user's lists are never re-ranked, a deleted key item's neighbours never re-ranked), so a
    # plain count is their distinct count; any other plan is cached whole first, as its MERGE reads it again.
    if group is None:
        frame = frame.persist(StorageLevel.MEMORY_AND_DISK)
    causes = frame.where(F.col(ID_HASH).isNotNull()).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counted = F.count(F.lit(1)) if group else F.countDistinct(*keys)
        removed = {r[ID_HASH]: int(r["n"]) for r in causes.groupBy(ID_HASH).agg(counted.alias("n")).collect()}
        if not removed:
            return Outcome(False, {})
        if group and (fresh or _merge_rewrites_most(current, causes, group, rewrite_file_share)):
            gone = causes.where(F.col(ACTION) != UPDATE).select(*keys)
            # At most one changed list per cause row: the bound decides the broadcast without counting the lists.
            content = _lists_without(current, gone, group, broadcast=sum(removed.values()) <= BROADCAST_LISTS)
            _write(spark, warehouse, rel, content, fresh)
            log.info("cascade %s: lists rewritten instead of MERGEd", rel)
        elif fresh or FINGERPRINT in keys:
            _write(spark, warehouse, rel, _applied(current, keys, frame), fresh)
        else:
            _merge(spark, path, keys, frame)
        log.info("cascade %s: %d rows removed", rel, sum(removed.values()))
        return Outcome(True, removed, fresh)
    finally:
        causes.unpersist()
        frame.unpersist()


def _write(spark: SparkSession, warehouse: Path | str, rel: str, content: DataFrame, fresh: bool) -> None:
    """The table's new content as one overwrite, or into a fresh directory that replaces the table (history gone)."""
    if fresh:
        history.rewrite(spark, warehouse, rel, content)
    else:
        content.write.format("delta").mode("overwrite").save(T.table_path(warehouse, rel))


def _source(frame: DataFrame, keys: Sequence[str]) -> tuple[DataFrame, list[str]]:
    """The plan as one row per target row — keys, ``_delete``, new values (null for a delete; deleting wins) — and
    the value columns: what a MERGE joins on, or what a rewrite left-joins the table with."""
    action = F.col(ACTION)
    deletes = frame.where(action == DELETE).select(*keys).distinct()
    values = [c for c in frame.columns if c not in (*keys, ACTION, ID_HASH)]
    updates = frame.where(action == UPDATE).join(deletes, list(keys), "left_anti").select(*keys, *values)
    source = deletes.withColumn("_delete", F.lit(True)).unionByName(
        updates.withColumn("_delete", F.lit(False)), allowMissingColumns=True)
    return source, values


def _merge(spark: SparkSession, path: str, keys: Sequence[str], frame: DataFrame) -> None:
    """The plan as one MERGE: delete rows, overwrite shifted ones."""
    from delta.tables import DeltaTable

    frame = frame.persist(StorageLevel.MEMORY_AND_DISK)     # read twice; a no-op when apply_plan cached it
    try:
        source, values = _source(frame, keys)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        merge = (DeltaTable.forPath(spark, path).alias("t").merge(source.alias("s"), on)
                 .whenMatchedDelete(condition="s._delete"))
        if values:
            merge = merge.whenMatchedUpdate(condition="NOT s._delete", set={f"`{c}`": f"s.`{c}`" for c in values})
        merge.execute()
    finally:
        frame.unpersist()


def _applied(current: DataFrame, keys: Sequence[str], frame: DataFrame) -> DataFrame:
    """What the MERGE of :func:`_merge` would leave, as a DataFrame (the whole table, to be written once)."""
    if FINGERPRINT in keys:
        fingerprints = frame.where(F.col(ACTION) == DELETE).select(FINGERPRINT).distinct()
        return with_fingerprint(current).join(fingerprints, FINGERPRINT, "left_anti").drop(FINGERPRINT)
    source, values = _source(frame, keys)
    new = [f"_new_{c}" for c in values]
    source = source.select(*keys, "_delete", *[F.col(c).alias(n) for c, n in zip(values, new)])
    joined = current.join(source, list(keys), "left").where(~F.coalesce(F.col("_delete"), F.lit(False)))
    overwritten = {c: F.when(F.col("_delete").isNotNull(), F.col(n)).otherwise(F.col(c)).alias(c)
                   for c, n in zip(values, new)}
    return joined.select(*[overwritten.get(c, F.col(f"`{c}`")) for c in current.columns])


def _merge_rewrites_most(current: DataFrame, causes: DataFrame, group: Sequence[str], share: float) -> bool:
    """Whether a MERGE would rewrite more than ``share`` of the table's files.

    A MERGE rewrites every file holding a changed list. Lists are written whole into files in user (or item)
    order, so changed lists fall into files like random draws: with ``m`` lists per file and a share ``p`` of the
    lists changed, a file is rewritten with probability 1 - (1 - p)^m. At 1.8M lists in 8 files, 0.1 % of the
    lists changed already touch every file. Counts: the changed lists (a distinct over the cached causes), the
    lists (every list has a rank 1) and the files of the current version (from the log).
    """
    if share >= 1.0:
        return False
    changed = causes.select(*group).distinct().count()
    lists = max(1, current.where(F.col(C.RANK) == 1).count())
    files = max(1, len(current.inputFiles()))
    touched = 1.0 - (1.0 - min(1.0, changed / lists)) ** (lists / files)
    return touched > share


def _lists_without(current: DataFrame, gone: DataFrame, group: Sequence[str], broadcast: bool) -> DataFrame:
    """The list table without the ``gone`` rows (its keys), the gaps they leave closed: a kept row moves up by the
    number of gone rows ranked above it in its list (ranks are 1..n per list, so this is a re-rank).

    No shuffle of the table: the gone ranks are gathered per changed list (a small frame, ``broadcast`` when the
    caller counted at most ``BROADCAST_LISTS`` lists) and looked up row by row, so the rows keep the order they were
    written in (each list's rows together, in rank order). Without ``broadcast`` the lookup is a sort-merge join.
    """
    group = list(group)
    shifts = gone.groupBy(*group).agg(F.collect_list(C.RANK).alias(GONE_RANKS))
    if broadcast:
        shifts = F.broadcast(shifts)
    ranks, rank = F.col(GONE_RANKS), F.col(C.RANK)
    unchanged = ranks.isNull()                     # most rows: no array work for them
    return (current.join(shifts, group, "left")
            .where(unchanged | ~F.array_contains(ranks, rank))
            .withColumn(C.RANK, F.when(unchanged, rank)
                        .otherwise((rank - F.size(F.filter(ranks, lambda r: r < rank))).cast("int")))
            .select(*current.columns))

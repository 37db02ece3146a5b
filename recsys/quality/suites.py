"""What each gate checks: one suite of named expectations per table, declared as data.

A :class:`Check` names a Great Expectations expectation class and its arguments; the name is stable (it is the
``expectation`` column of ``ops/quality_results`` and the key of ``conf/quality.yaml``). Cross-table and per-list
rules are GE unexpected-rows queries (``ExpectNoUnexpectedRows``) over ``{batch}`` and the temporary views of
the tables they name (:func:`view`), so every rule is evaluated by GE, none by hand. Nothing here imports GE or
touches Spark data: the runner turns these declarations into suites, validation definitions and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recsys import constants as C
from recsys import tables as T
from recsys.config import Settings
from recsys.quality.settings import QualitySettings

GLOBAL_CATEGORY = "__all__"          # recsys.models.popularity.GLOBAL: the cross-category popular list
SIMILAR_ASIN = "similar_asin"
METHOD = "method"
SIMILAR_METHODS = ("als", "content")
SPLITS = ("train", "valid", "test")
DELETIONS_DDL = "kind STRING, id STRING, status STRING"   # the ops/deletions columns the published gate reads


def view(table: str) -> str:
    """Temporary view name under which a gate exposes ``table`` to GE queries."""
    return "recsys_q_" + table.replace("/", "_")


@dataclass(frozen=True)
class Check:
    """One expectation of a suite. ``reads`` lists batch columns a query uses (others come from kwargs)."""

    name: str
    expectation: str                          # class name in great_expectations.expectations (or ours)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    reads: tuple[str, ...] = ()
    about: str | None = None                  # the column a query is about, if any

    @property
    def columns(self) -> tuple[str, ...]:
        """Batch columns this check reads (what the cached projection must keep)."""
        kw = self.kwargs
        cols = [kw["column"]] if "column" in kw else list(kw.get("column_list", ()))
        cols += [kw[k] for k in ("column_A", "column_B") if k in kw]
        if self.expectation.startswith("ExpectTableColumns") or self.expectation.endswith("OfType") or \
                self.expectation.endswith("InTypeList"):
            return ()                         # schema checks read metadata only
        return tuple(dict.fromkeys([*cols, *self.reads]))

    @property
    def column(self) -> str | None:
        """The column(s) the check is about, for results and messages."""
        kw = self.kwargs
        if "column" in kw:
            return str(kw["column"])
        if self.expectation.startswith("ExpectTableColumns"):
            return None
        if "column_list" in kw:
            return ",".join(kw["column_list"])
        return self.about


@dataclass(frozen=True)
class Ref:
    """A table a query reads through its view: the columns it needs, and whether it must exist."""

    table: str
    columns: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class Derived:
    """A second batch of a table, computed from its batch by one SQL query over ``{batch}`` and validated with its
    own checks (results filed under the table). Published lists are checked this way: one aggregation gives one
    row per list, and every per-list rule is then a cheap filter on it instead of one shuffle of the rows each."""

    name: str                                 # the GE asset and suite are ``<table>.<name>``
    sql: str
    reads: tuple[str, ...]                    # columns of the table's batch the query reads
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class TableSuite:
    layer: str
    table: str                                # warehouse-relative path
    checks: tuple[Check, ...]
    required: bool = True                     # a missing table fails the gate (else it is skipped)
    version: str | None = None                # published tables: validate only this version's rows
    refs: tuple[Ref, ...] = ()
    derived: tuple[Derived, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        cols = [c for check in self.checks for c in check.columns] + [c for d in self.derived for c in d.reads]
        return tuple(dict.fromkeys(cols))

    @property
    def rule_names(self) -> set[str]:
        """Every expectation name of the table, its derived batches' included (the conf/quality.yaml keys)."""
        return {c.name for c in self.checks} | {c.name for d in self.derived for c in d.checks}


@dataclass(frozen=True)
class GateInputs:
    """Everything the suites depend on besides the data (thresholds, now, the version validated)."""

    settings: Settings
    quality: QualitySettings
    now_ms: int
    version: str | None = None

    @property
    def timestamp_range(self) -> tuple[int, int]:
        ingest = self.settings.ingest
        return ingest.min_timestamp_ms, self.now_ms + ingest.max_future_ms


# --- building blocks ------------------------------------------------------------------------------------------

_SPARK_TYPES = {
    "STRING": "StringType", "DOUBLE": "DoubleType", "FLOAT": "FloatType", "BIGINT": "LongType",
    "INT": "IntegerType", "BOOLEAN": "BooleanType", "TIMESTAMP": "TimestampType", "ARRAY": "ArrayType",
    "MAP": "MapType",
}


def _ddl_types(ddl: str) -> dict[str, str]:
    """Column → Spark type class name (what GE's type expectations compare) from a TableSpec DDL."""
    out, depth, current = {}, 0, []
    for ch in ddl + ",":
        depth += (ch == "<") - (ch == ">")
        if ch == "," and depth == 0:
            name, type_ = "".join(current).strip().split(" ", 1)
            out[name] = _SPARK_TYPES[type_.split("<", 1)[0].strip().upper()]
            current = []
        else:
            current.append(ch)
    return out


def schema(spec: T.TableSpec, alternatives: Mapping[str, Sequence[str]] | None = None) -> list[Check]:
    """Column names in order, and each column's type (``alternatives``: types also accepted)."""
    checks = [Check("columns_match", "ExpectTableColumnsToMatchOrderedList", {"column_list": spec.columns})]
    for column, type_ in _ddl_types(spec.ddl).items():
        if alternatives and column in alternatives:
            checks.append(Check(f"{column}_type", "ExpectColumnValuesToBeInTypeList",
                                {"column": column, "type_list": list(alternatives[column])}))
        else:
            checks.append(Check(f"{column}_type", "ExpectColumnValuesToBeOfType", {"column": column, "type_": type_}))
    return checks


def not_null(*columns: str) -> list[Check]:
    return [Check(f"{c}_not_null", "ExpectColumnValuesToNotBeNull", {"column": c}) for c in columns]


def unique(name: str, *columns: str) -> Check:
    if len(columns) == 1:
        return Check(name, "ExpectColumnValuesToBeUnique", {"column": columns[0]})
    return Check(name, "ExpectCompoundColumnsToBeUnique", {"column_list": list(columns)})


def between(name: str, column: str, low: float | None = None, high: float | None = None) -> Check:
    return Check(name, "ExpectColumnValuesToBeBetween", {"column": column, "min_value": low, "max_value": high})


def finite(column: str) -> Check:
    return Check(f"{column}_finite", "ExpectColumnValuesToBeFinite", {"column": column})


def query(name: str, sql: str, description: str, reads: Sequence[str], about: str | None = None) -> Check:
    """A GE unexpected-rows expectation: ``sql`` selects the offending rows of ``{batch}``."""
    return Check(name, "ExpectNoUnexpectedRows", {"unexpected_rows_query": " ".join(sql.split())},
                 description=description, reads=tuple(reads), about=about)


def _lists(group: Sequence[str], item: str, max_length: int, *extra: Check) -> Derived:
    """Per list (rows sharing ``group``): at most ``max_length`` rows, ranks exactly 1..n (so ``group`` + rank is
    a key), no item twice; checked on one row per list (``length``, rank range, distinct ranks and items) that one
    aggregation of the rows gives. ``extra``: more checks on that list batch (e.g. the list's owner exists)."""
    keys = ", ".join(group)
    sql = (f"SELECT {keys}, count(*) AS length, min({C.RANK}) AS min_rank, max({C.RANK}) AS max_rank, "
           f"size(collect_set({C.RANK})) AS distinct_ranks, size(collect_set({item})) AS distinct_items "
           f"FROM {{batch}} GROUP BY {keys}")
    return Derived("lists", sql, (*group, C.RANK, item), (
        query("list_length_at_most_k", f"SELECT {keys}, length FROM {{batch}} WHERE length > {max_length}",
              f"every list ({keys}) holds at most {max_length} rows", [*group, "length"]),
        query("ranks_1_to_n",
              f"SELECT {keys}, length, min_rank, max_rank, distinct_ranks FROM {{batch}} "
              f"WHERE min_rank <> 1 OR max_rank <> length OR distinct_ranks <> length",
              f"ranks of every list ({keys}) are exactly 1..n", [*group, "length", "min_rank", "max_rank",
                                                                  "distinct_ranks"]),
        query("key_unique", f"SELECT {keys}, length, distinct_ranks FROM {{batch}} WHERE distinct_ranks <> length",
              f"({keys}, {C.RANK}) is unique: no rank twice in a list", [*group, "length", "distinct_ranks"],
              about=",".join([*group, C.RANK])),
        query("no_duplicate_items",
              f"SELECT {keys}, length, distinct_items FROM {{batch}} WHERE distinct_items <> length",
              f"no item twice in a list ({keys})", [*group, "length", "distinct_items"],
              about=",".join([*group, item])),
        *extra))


def _items_live(keys: Sequence[str], item_columns: Sequence[str]) -> Check:
    """Every published item is in gold/item_index, not flagged deleted there, and not deleted in ops/deletions
    (a deletion being applied may not have reached the index yet; a relisted item counts as live)."""
    index, deletions = view(C.ITEM_INDEX), view(C.DELETIONS)
    joins, bad = [], []
    for n, col in enumerate(item_columns):
        joins.append(f"LEFT JOIN {index} i{n} ON b.{col} = i{n}.{C.ITEM_ID} "
                     f"LEFT JOIN (SELECT DISTINCT id FROM {deletions} WHERE kind = 'item' AND status = 'deleted') d{n} "
                     f"ON b.{col} = d{n}.id")
        bad.append(f"i{n}.{C.ITEM_ID} IS NULL OR coalesce(i{n}.deleted, false) OR d{n}.id IS NOT NULL")
    select = ", ".join(f"b.{c}" for c in dict.fromkeys([*keys, *item_columns]))
    return query("items_exist_not_deleted", f"SELECT {select} FROM {{batch}} b {' '.join(joins)} "
                 f"WHERE {' OR '.join(f'({x})' for x in bad)}",
                 f"every item in {', '.join(item_columns)} exists in {C.ITEM_INDEX} and is not deleted",
                 [*keys, *item_columns], about=",".join(item_columns))


_ITEM_REFS = (Ref(C.ITEM_INDEX, (C.ITEM_ID, C.ITEM_IDX, "deleted")),
              Ref(C.DELETIONS, ("kind", "id", "status"), required=False))


# --- the suites, per layer ------------------------------------------------------------------------------------

def bronze(inputs: GateInputs) -> list[TableSuite]:
    low, high = inputs.timestamp_range
    rate = inputs.quality.max_quarantine_rate
    lineage_key = (C.SOURCE_FILE, C.LINE)
    reviews = (*schema(T.BRONZE_REVIEWS),
               *not_null(C.USER_ID, C.ITEM_ID, C.RATING, C.TIMESTAMP, *lineage_key),
               unique("key_unique", *lineage_key),
               between("rating_in_range", C.RATING, 1, 5),
               between("timestamp_in_range", C.TIMESTAMP, low, high))
    items = (*schema(T.BRONZE_ITEMS), *not_null(C.ITEM_ID, *lineage_key), unique("key_unique", *lineage_key))

    def quarantine(spec: T.TableSpec) -> tuple[Check, ...]:
        return (*schema(spec), *not_null(C.REASON, *lineage_key), unique("key_unique", *lineage_key))

    counts = [(C.BRONZE_REVIEWS, "count(*)", "0"), (C.BRONZE_ITEMS, "count(*)", "0"),
              (C.QUARANTINE_REVIEWS, "0", "count(*)"), (C.QUARANTINE_ITEMS, "0", "count(*)")]
    stored = " UNION ALL ".join(
        f"SELECT {C.SOURCE_FILE} AS path, {b} AS bronze_rows, {q} AS quarantine_rows FROM {view(t)} "
        f"GROUP BY {C.SOURCE_FILE}" for t, b, q in counts)
    reconcile = (
        f"WITH stored AS ({stored}), per_file AS (SELECT path, sum(bronze_rows) AS bronze_rows, "
        "sum(quarantine_rows) AS quarantine_rows FROM stored GROUP BY path) "
        "SELECT coalesce(f.path, s.path) AS path, f.status, f.lines, f.blank, f.suppressed, f.good, f.quarantined, "
        "coalesce(s.bronze_rows, 0) AS bronze_rows, coalesce(s.quarantine_rows, 0) AS quarantine_rows "
        "FROM {batch} f FULL OUTER JOIN per_file s ON f.path = s.path "
        "WHERE f.path IS NULL OR (f.status = 'ingested' AND ("
        "coalesce(s.bronze_rows, 0) + coalesce(s.quarantine_rows, 0) <> f.lines - f.blank - coalesce(f.suppressed, 0) "
        "OR coalesce(s.bronze_rows, 0) <> f.good OR coalesce(s.quarantine_rows, 0) <> f.quarantined))")
    files = (*schema(T.INGESTED_FILES), *not_null("path"), unique("path_unique", "path"),
             Check("status_ingested", "ExpectColumnValuesToBeInSet", {"column": "status", "value_set": ["ingested"]}),
             query("quarantine_rate_at_most_max",
                   "SELECT path, kind, lines, blank, good, quarantined, quarantined / (good + quarantined) AS "
                   "quarantine_rate FROM {batch} WHERE status = 'ingested' AND good + quarantined > 0 "
                   f"AND quarantined > {rate!r} * (good + quarantined)",
                   f"no file has more than {rate:.1%} of its non-blank lines quarantined (a changed source format)",
                   ["path", "kind", "lines", "blank", "good", "quarantined", "status"]),
             query("rows_reconcile", reconcile,
                   "per ingested file: bronze + quarantine rows = lines read - blank - suppressed (erased users), "
                   "and equal to good + quarantined as recorded; no stored row of an unrecorded file",
                   ["path", "status", "lines", "blank", "suppressed", "good", "quarantined"]))
    source_refs = tuple(Ref(t, (C.SOURCE_FILE,), required=False) for t in
                        (C.BRONZE_REVIEWS, C.BRONZE_ITEMS, C.QUARANTINE_REVIEWS, C.QUARANTINE_ITEMS))
    return [
        TableSuite("bronze", C.BRONZE_REVIEWS, reviews),
        TableSuite("bronze", C.BRONZE_ITEMS, items),
        TableSuite("bronze", C.QUARANTINE_REVIEWS, quarantine(T.QUARANTINE_REVIEWS), required=False),
        TableSuite("bronze", C.QUARANTINE_ITEMS, quarantine(T.QUARANTINE_ITEMS), required=False),
        TableSuite("bronze", C.INGESTED_FILES, files, refs=source_refs),
    ]


def silver(inputs: GateInputs) -> list[TableSuite]:
    low, high = inputs.timestamp_range
    items = (*schema(T.SILVER_ITEMS), *not_null(C.ITEM_ID), unique("key_unique", C.ITEM_ID))
    reviews = (*schema(T.SILVER_REVIEWS),
               *not_null(C.USER_ID, C.ITEM_ID, C.RATING, C.TIMESTAMP),
               unique("key_unique", C.USER_ID, C.ITEM_ID),
               between("rating_in_range", C.RATING, 1, 5),
               between("timestamp_in_range", C.TIMESTAMP, low, high),
               query("parent_asin_in_items",
                     f"SELECT b.{C.USER_ID}, b.{C.ITEM_ID} FROM {{batch}} b LEFT ANTI JOIN {view(C.SILVER_ITEMS)} i "
                     f"ON b.{C.ITEM_ID} = i.{C.ITEM_ID}",
                     f"every review's {C.ITEM_ID} exists in {C.SILVER_ITEMS}", [C.USER_ID, C.ITEM_ID],
                     about=C.ITEM_ID))
    return [
        TableSuite("silver", C.SILVER_ITEMS, items),
        TableSuite("silver", C.SILVER_REVIEWS, reviews, refs=(Ref(C.SILVER_ITEMS, (C.ITEM_ID,)),)),
    ]


def gold(inputs: GateInputs) -> list[TableSuite]:
    users, items = view(C.USER_INDEX), view(C.ITEM_INDEX)
    interactions = (*schema(T.INTERACTIONS),
                    *not_null(C.USER_IDX, C.ITEM_IDX, "weight", C.CONFIDENCE, C.SPLIT),
                    unique("key_unique", C.USER_IDX, C.ITEM_IDX),
                    Check("split_in_set", "ExpectColumnValuesToBeInSet",
                          {"column": C.SPLIT, "value_set": list(SPLITS)}),
                    finite("weight"),
                    between("confidence_at_least_1", C.CONFIDENCE, 1, None),
                    query("ids_in_vocabulary",
                          f"SELECT b.{C.USER_IDX}, b.{C.ITEM_IDX} FROM {{batch}} b "
                          f"LEFT JOIN {users} u ON b.{C.USER_IDX} = u.{C.USER_IDX} "
                          f"LEFT JOIN {items} i ON b.{C.ITEM_IDX} = i.{C.ITEM_IDX} "
                          f"WHERE u.{C.USER_IDX} IS NULL OR i.{C.ITEM_IDX} IS NULL OR coalesce(i.deleted, false)",
                          f"every interaction's user and item are in {C.USER_INDEX} / {C.ITEM_INDEX} "
                          "(item not deleted)",
                          [C.USER_IDX, C.ITEM_IDX]))
    user_index = (*schema(T.USER_INDEX), *not_null(C.USER_ID, C.USER_IDX),
                  unique("user_id_unique", C.USER_ID), unique("user_idx_unique", C.USER_IDX))
    item_index = (*schema(T.ITEM_INDEX), *not_null(C.ITEM_ID, C.ITEM_IDX, "deleted"),
                  unique("parent_asin_unique", C.ITEM_ID), unique("item_idx_unique", C.ITEM_IDX))
    return [
        TableSuite("gold", C.USER_INDEX, user_index),
        TableSuite("gold", C.ITEM_INDEX, item_index),
        TableSuite("gold", C.INTERACTIONS, interactions,
                   refs=(Ref(C.USER_INDEX, (C.USER_IDX,)), Ref(C.ITEM_INDEX, (C.ITEM_IDX, "deleted")))),
    ]


def published(inputs: GateInputs) -> list[TableSuite]:
    """Rows of ``inputs.version`` only; list lengths from ``settings.publish`` (K + spare per user)."""
    conf = inputs.settings.publish
    version = inputs.version
    has_rows = Check("version_has_rows", "ExpectTableRowCountToBeBetween", {"min_value": 1})
    score_type = {C.SCORE: ("DoubleType", "FloatType")}
    user_key = (C.USER_ID, C.RANK)
    topk = (*schema(T.RECS_USER_TOPK, score_type), has_rows,
            *not_null(C.USER_ID, C.RANK, C.ITEM_ID, C.SCORE, C.MODEL),
            finite(C.SCORE),
            _items_live(user_key, (C.ITEM_ID,)),
            # the training pairs, named by id (2M rows), joined once to the published rows: one shuffle of those
            query("no_train_items",
                  f"SELECT b.{C.USER_ID}, b.{C.RANK}, b.{C.ITEM_ID} FROM {{batch}} b JOIN ("
                  f"SELECT u.{C.USER_ID}, i.{C.ITEM_ID} FROM {view(C.INTERACTIONS)} x "
                  f"JOIN {view(C.USER_INDEX)} u ON x.{C.USER_IDX} = u.{C.USER_IDX} "
                  f"JOIN {view(C.ITEM_INDEX)} i ON x.{C.ITEM_IDX} = i.{C.ITEM_IDX} "
                  f"WHERE x.{C.SPLIT} = 'train') t ON b.{C.USER_ID} = t.{C.USER_ID} AND b.{C.ITEM_ID} = t.{C.ITEM_ID}",
                  "no user is recommended an item of their own training interactions", [*user_key, C.ITEM_ID],
                  about=C.ITEM_ID))
    users_exist = query("users_exist", f"SELECT b.{C.USER_ID} FROM {{batch}} b LEFT ANTI JOIN "
                        f"{view(C.USER_INDEX)} u ON b.{C.USER_ID} = u.{C.USER_ID}",
                        f"every user with a list exists in {C.USER_INDEX}", [C.USER_ID], about=C.USER_ID)
    similar_list = (C.ITEM_ID, METHOD)
    similar = (*schema(T.RECS_SIMILAR_ITEMS, score_type),
               *not_null(C.ITEM_ID, C.RANK, SIMILAR_ASIN, C.SCORE, METHOD),
               Check("method_in_set", "ExpectColumnValuesToBeInSet",
                     {"column": METHOD, "value_set": list(SIMILAR_METHODS)}),
               finite(C.SCORE),
               _items_live((*similar_list, C.RANK), (C.ITEM_ID, SIMILAR_ASIN)))
    popular = (*schema(T.RECS_POPULAR, score_type), has_rows,
               *not_null(C.CATEGORY, C.RANK, C.ITEM_ID, C.SCORE),
               Check("global_list_present", "ExpectColumnDistinctValuesToContainSet",
                     {"column": C.CATEGORY, "value_set": [GLOBAL_CATEGORY]}),
               finite(C.SCORE),
               _items_live((C.CATEGORY, C.RANK), (C.ITEM_ID,)))
    train_ref = Ref(C.INTERACTIONS, (C.USER_IDX, C.ITEM_IDX, C.SPLIT))
    user_ref = Ref(C.USER_INDEX, (C.USER_ID, C.USER_IDX))
    return [
        TableSuite("published", C.RECS_USER_TOPK, topk, version=version, refs=(*_ITEM_REFS, user_ref, train_ref),
                   derived=(_lists((C.USER_ID,), C.ITEM_ID, conf.k + conf.spare, users_exist),)),
        TableSuite("published", C.RECS_SIMILAR_ITEMS, similar, version=version, refs=_ITEM_REFS,
                   derived=(_lists(similar_list, SIMILAR_ASIN, conf.similar_k),)),
        TableSuite("published", C.RECS_POPULAR, popular, version=version, refs=_ITEM_REFS,
                   derived=(_lists((C.CATEGORY,), C.ITEM_ID, conf.popular_k),)),
    ]


LAYER_SUITES = {"bronze": bronze, "silver": silver, "gold": gold, "published": published}


def plan(layer: str, inputs: GateInputs) -> list[TableSuite]:
    """The suites of ``layer``, after refusing config entries that name no table or expectation of it."""
    if layer not in LAYER_SUITES:
        raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(LAYER_SUITES)}")
    suites = LAYER_SUITES[layer](inputs)
    known = {s.table: s.rule_names for s in suites}
    for table, names in inputs.quality.configured_rules(layer).items():
        if table not in known:
            raise ValueError(f"conf/quality.yaml: layer {layer} has no table {table!r} (known: {', '.join(known)})")
        unknown = sorted(names - known[table])
        if unknown:
            raise ValueError(f"conf/quality.yaml: {layer}/{table} has no expectation {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known[table]))})")
    return suites

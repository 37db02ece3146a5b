"""Quality gates: each layer passes on good data, and each kind of breakage fails exactly the expectation made
for it (named, with the offending rows as sample). Small Delta tables are built once per module and copied per
test; every gate shares one GX context (one quality folder per session) to keep the suite fast."""

from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from recsys import constants as C
from recsys import tables as T
from recsys.config import PublishSettings, load_settings
from recsys.quality import QualityGateError, QualitySettings, purge_validation_artifacts, validate_layer
from recsys.quality.settings import ExpectationRule, LayerRules, TableRules, load_quality_settings
from recsys.quality.suites import GateInputs, plan

NOW = datetime(2024, 1, 2, tzinfo=timezone.utc)
T0 = 1_600_000_000_000                     # 2020-09-13, inside the ingest timestamp range
REVIEWS_FILE, META_FILE = "Toys.jsonl", "meta_Toys.jsonl"
VERSION = "v1"


# --- good data ---------------------------------------------------------------------------------------------------

def review(line: int, **kw) -> dict:
    row = dict(rating=4.0, title="t", text="fine", images=None, asin=f"B{line}", parent_asin=f"A{line % 3 + 1}",
               user_id=f"u{line}", timestamp=T0 + line, helpful_vote=0, verified_purchase=True, category="Toys",
               _source_file=REVIEWS_FILE, _line=line, _ingested_at=NOW)
    return {**row, **kw}


def meta(line: int) -> dict:
    return dict(main_category="Toys", title="toy", average_rating=4.0, rating_number=1, features=[], description=[],
                price=1.0, price_raw="1.0", images=None, videos=None, store="s", categories=[], details=None,
                parent_asin=f"A{line}", bought_together=None, category="Toys", _source_file=META_FILE, _line=line,
                _ingested_at=NOW)


def ingested(path: str, kind: str, lines: int, blank: int, good: int, quarantined: int) -> dict:
    return dict(path=path, kind=kind, category="Toys", size=1, mtime_ns=1, sha256=None, lines=lines, blank=blank,
                good=good, quarantined=quarantined, status="ingested", error=None, ingested_at=NOW, suppressed=0)


# Reviews file: lines 1-20 good, 21 quarantined, 22-23 blank (quarantine rate 1/21 < 5 %). Meta: 3 good lines.
BRONZE = {
    C.BRONZE_REVIEWS: [review(n) for n in range(1, 21)],
    C.QUARANTINE_REVIEWS: [dict(raw="{oops", reason="unparseable_json", category="Toys", _source_file=REVIEWS_FILE,
                                _line=21, _ingested_at=NOW)],
    C.BRONZE_ITEMS: [meta(n) for n in (1, 2, 3)],
    C.QUARANTINE_ITEMS: [],
    C.INGESTED_FILES: [ingested(REVIEWS_FILE, "reviews", 23, 2, 20, 1), ingested(META_FILE, "items", 3, 0, 3, 0)],
}
SILVER = {
    C.SILVER_ITEMS: [dict(parent_asin=f"A{n}", category="Toys", main_category="Toys", title="toy") for n in (1, 2, 3)],
    C.SILVER_REVIEWS: [dict(user_id=f"u{n}", parent_asin=f"A{n % 3 + 1}", asin="B", rating=5.0, timestamp=T0 + n,
                            category="Toys") for n in range(1, 7)],
}
USERS = ["u1", "u2", "u3", "u4"]
ITEMS = [f"A{n}" for n in range(1, 9)]      # A8 is deleted (index + ledger); A7 was deleted, then relisted


def topk(user: str, *items: str, ranks=None, scores=None, version: str = VERSION) -> list[dict]:
    ranks = ranks or range(1, len(items) + 1)
    scores = scores or [1.0 / r for r in ranks]
    return [dict(version=version, user_id=user, rank=r, parent_asin=i, score=s, model="implicit_als")
            for i, r, s in zip(items, ranks, scores)]


def similar(item: str, method: str, *items: str) -> list[dict]:
    return [dict(version=VERSION, parent_asin=item, rank=r, similar_asin=i, score=0.5, method=method)
            for r, i in enumerate(items, 1)]


def popular(category: str, *items: str) -> list[dict]:
    return [dict(version=VERSION, category=category, rank=r, parent_asin=i, score=10.0 - r)
            for r, i in enumerate(items, 1)]


# u1 trained on A1, u2 on A2, u3 on A3: no list holds its user's train item. K = 2, spare = 1: lists of ≤ 3.
GOOD_TOPK = topk("u1", "A3", "A4", "A5") + topk("u2", "A1", "A3") + topk("u3", "A7", "A1", "A2")
GOLD = {
    C.USER_INDEX: [dict(user_id=u, user_idx=n) for n, u in enumerate(USERS)],
    C.ITEM_INDEX: [dict(parent_asin=a, item_idx=n, category="Toys", deleted=a == "A8") for n, a in enumerate(ITEMS)],
    C.INTERACTIONS: [dict(user_idx=u, item_idx=i, weight=0.5, confidence=6.0, timestamp=T0, split=s)
                     for u, i, s in ((0, 0, "train"), (0, 1, "test"), (1, 1, "train"), (2, 2, "train"),
                                     (3, 3, "valid"))],
    C.DELETIONS: [dict(kind="item", id_hash="h8", id="A8", reason="recall", requested_at=NOW, applied_at=NOW,
                       status="deleted"),
                  dict(kind="item", id_hash="h7", id="A7", reason="recall", requested_at=NOW, applied_at=NOW,
                       status="relisted")],
    # An older version with a broken list (5 rows, a deleted item) that must not count against VERSION.
    C.RECS_USER_TOPK: GOOD_TOPK + topk("u1", "A8", "A2", "A3", "A4", "A5", version="v0"),
    C.RECS_SIMILAR_ITEMS: similar("A1", "als", "A2", "A3") + similar("A1", "content", "A3", "A4")
    + similar("A2", "als", "A1"),
    C.RECS_POPULAR: popular("__all__", "A1", "A2", "A3") + popular("Toys", "A1", "A2"),
}


SPECS = {spec.path: spec for spec in (
    T.BRONZE_REVIEWS, T.QUARANTINE_REVIEWS, T.BRONZE_ITEMS, T.QUARANTINE_ITEMS, T.INGESTED_FILES, T.SILVER_ITEMS,
    T.SILVER_REVIEWS, T.USER_INDEX, T.ITEM_INDEX, T.INTERACTIONS, T.DELETIONS, T.RECS_USER_TOPK,
    T.RECS_SIMILAR_ITEMS, T.RECS_POPULAR)}


def write(spark, warehouse: Path, table: str, rows: list[dict], ddl: str | None = None) -> None:
    """Replace a table's content with ``rows`` (``ddl``: another schema, for drift). The table properties of
    ``recsys.tables`` do not matter to the gates: a plain Delta write is enough and half the commits."""
    writer = spark.createDataFrame(rows, schema=ddl or SPECS[table].ddl).write.format("delta").mode("overwrite")
    writer.option("overwriteSchema", "true").save(T.table_path(warehouse, table))


@pytest.fixture(scope="module", autouse=True)
def _few_rows_spark(spark):
    """Adaptive execution re-plans each query in extra jobs: on tables of a few rows that is a third of the JVM
    time of this module, and the gates do not depend on it."""
    with T.spark_conf(spark, {"spark.sql.adaptive.enabled": "false"}):
        yield


@pytest.fixture(scope="module")
def good_warehouse(spark, tmp_path_factory) -> Path:
    warehouse = tmp_path_factory.mktemp("good") / "warehouse"
    for tables in (BRONZE, SILVER, GOLD):
        for table, rows in tables.items():
            write(spark, warehouse, table, rows)
    return warehouse


@pytest.fixture
def warehouse(good_warehouse, tmp_path) -> Path:
    """A private copy of the good warehouse, to break on purpose."""
    return Path(shutil.copytree(good_warehouse, tmp_path / "warehouse"))


@pytest.fixture(scope="session")
def quality(tmp_path_factory) -> QualitySettings:
    """The shipped conf/quality.yaml, with one quality folder (one GX context) for the whole session."""
    return load_quality_settings(quality_dir=tmp_path_factory.mktemp("quality"))


@pytest.fixture(scope="module")
def settings():
    base = load_settings()
    return base.model_copy(update={"publish": PublishSettings(k=2, spare=1, similar_k=2, popular_k=3)})


def gate(spark, warehouse, layer, settings, quality, **kw):
    version = VERSION if layer == "published" else None
    return validate_layer(spark, warehouse, layer, settings, version=version, quality=quality, **kw)


def failed(result) -> set[tuple[str, str]]:
    return {(o.table, o.expectation) for o in result.failures}


# --- every layer passes on good data ----------------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["bronze", "silver", "gold", "published"])
def test_gate_passes_on_good_data(spark, good_warehouse, settings, quality, layer):
    result = gate(spark, good_warehouse, layer, settings, quality)
    assert result.success, result.message()
    assert not result.warnings
    tables = {o.table for o in result.outcomes}
    assert tables == {s.table for s in plan(layer, GateInputs(settings, quality, 0, VERSION))}
    result.raise_if_failed()          # no exception


# --- bronze breakages -------------------------------------------------------------------------------------------

def _line5(**kw) -> list[dict]:
    """The good bronze reviews with line 5 replaced by ``review(5, **kw)``."""
    rows = BRONZE[C.BRONZE_REVIEWS]
    return rows[:4] + [review(5, **kw)] + rows[5:]


# case: (bronze/reviews rows, table that fails, expectation, unexpected count, what a sample row shows)
BRONZE_BREAKS = {
    "null_key": (_line5(user_id=None), C.BRONZE_REVIEWS, "user_id_not_null", 1, {"_line": 5, "user_id": None}),
    "duplicate_key": (_line5(_line=4), C.BRONZE_REVIEWS, "key_unique", 2, {"_line": 4}),
    "rating_out_of_range": (_line5(rating=7.0), C.BRONZE_REVIEWS, "rating_in_range", 1, {"rating": 7.0}),
    "timestamp_out_of_range": (_line5(timestamp=1_000), C.BRONZE_REVIEWS, "timestamp_in_range", 1,
                               {"timestamp": 1_000}),
    "reconciliation_mismatch": (BRONZE[C.BRONZE_REVIEWS][1:], C.INGESTED_FILES, "rows_reconcile", 1,
                                {"path": REVIEWS_FILE, "bronze_rows": 19, "good": 20}),
}


@pytest.mark.parametrize("case", sorted(BRONZE_BREAKS))
def test_bronze_gate_names_the_broken_expectation(spark, warehouse, settings, quality, case):
    rows, table, expectation, count, offending = BRONZE_BREAKS[case]
    write(spark, warehouse, C.BRONZE_REVIEWS, rows)
    result = gate(spark, warehouse, "bronze", settings, quality, tables=[table])
    assert failed(result) == {(table, expectation)}
    [failure] = result.failures
    assert failure.unexpected_count == count
    assert any(offending.items() <= row.items() for row in failure.sample), failure.sample
    with pytest.raises(QualityGateError) as err:
        result.raise_if_failed()
    first_line = str(err.value).splitlines()[0]
    assert f"{table}: {expectation}" in first_line and "sample:" in first_line


def test_quarantine_rate_above_threshold_fails_bronze(spark, good_warehouse, settings, quality):
    """The good reviews file quarantines 1 of 21 lines (4.8 %): under the default 5 %, over a 2 % threshold."""
    strict = quality.model_copy(update={"max_quarantine_rate": 0.02})
    result = gate(spark, good_warehouse, "bronze", settings, strict, tables=[C.INGESTED_FILES])
    assert failed(result) == {(C.INGESTED_FILES, "quarantine_rate_at_most_max")}
    [row] = result.failures[0].sample
    assert row["path"] == REVIEWS_FILE and row["quarantine_rate"] == pytest.approx(1 / 21)


def test_schema_drift_fails_bronze(spark, warehouse, settings, quality):
    """A column changes type and a new one appears: the type and the column-list expectations both say so."""
    drifted = T.BRONZE_REVIEWS.ddl.replace("helpful_vote BIGINT", "helpful_vote STRING") + ", surprise STRING"
    rows = [{**r, "helpful_vote": "0", "surprise": "!"} for r in BRONZE[C.BRONZE_REVIEWS]]
    write(spark, warehouse, C.BRONZE_REVIEWS, rows, ddl=drifted)
    result = gate(spark, warehouse, "bronze", settings, quality, tables=[C.BRONZE_REVIEWS])
    assert failed(result) == {(C.BRONZE_REVIEWS, "helpful_vote_type"), (C.BRONZE_REVIEWS, "columns_match")}
    [types] = [o for o in result.failures if o.expectation == "helpful_vote_type"]
    assert types.observed == 'observed "StringType", expected LongType'


def test_warn_severity_and_mostly_do_not_fail_the_gate(spark, warehouse, settings, quality):
    """rating_in_range set to warn: reported, not failing; timestamp_in_range with mostly 0.9: 1 bad row of 20
    passes."""
    rows = _line5(rating=7.0)
    rows[5] = review(6, timestamp=1_000)
    write(spark, warehouse, C.BRONZE_REVIEWS, rows)
    rules = {"rating_in_range": ExpectationRule(severity="warn"), "timestamp_in_range": ExpectationRule(mostly=0.9)}
    lenient = quality.model_copy(update={"layers": {"bronze": LayerRules(tables={
        C.BRONZE_REVIEWS: TableRules(expectations=rules)})}})
    result = gate(spark, warehouse, "bronze", settings, lenient, tables=[C.BRONZE_REVIEWS])
    assert result.success, result.message()
    assert [(w.expectation, w.unexpected_count) for w in result.warnings] == [("rating_in_range", 1)]
    [stamp] = [o for o in result.outcomes if o.expectation == "timestamp_in_range"]
    assert stamp.success and stamp.unexpected_count == 1
    result.raise_if_failed()


# --- silver -----------------------------------------------------------------------------------------------------

def test_dangling_parent_asin_fails_silver(spark, warehouse, settings, quality):
    rows = SILVER[C.SILVER_REVIEWS] + [dict(user_id="u9", parent_asin="GHOST", asin="B", rating=3.0,
                                            timestamp=T0, category="Toys")]
    write(spark, warehouse, C.SILVER_REVIEWS, rows)
    result = gate(spark, warehouse, "silver", settings, quality)
    assert failed(result) == {(C.SILVER_REVIEWS, "parent_asin_in_items")}
    assert result.failures[0].sample == [{"user_id": "[redacted]", "parent_asin": "GHOST"}]   # no user id kept


# --- published --------------------------------------------------------------------------------------------------

def _with_u2(*items, **kw) -> list[dict]:
    """The good lists with u2's list replaced."""
    return [r for r in GOLD[C.RECS_USER_TOPK] if r["user_id"] != "u2"] + topk("u2", *items, **kw)


TOPK, SIMILAR, POPULAR = C.RECS_USER_TOPK, C.RECS_SIMILAR_ITEMS, C.RECS_POPULAR
# case: ({table: rows written}, {(table, expectation) that must fail})
PUBLISHED_BREAKS = {
    "unknown_user": ({TOPK: GOLD[TOPK] + topk("ghost", "A1")}, {(TOPK, "users_exist")}),
    "list_longer_than_k": ({TOPK: _with_u2("A1", "A3", "A4", "A5")}, {(TOPK, "list_length_at_most_k")}),
    "ranks_not_1_to_n": ({TOPK: _with_u2("A1", "A3", ranks=[1, 3])}, {(TOPK, "ranks_1_to_n")}),
    "duplicate_item": ({TOPK: _with_u2("A1", "A1")}, {(TOPK, "no_duplicate_items")}),
    "train_item": ({TOPK: _with_u2("A1", "A2")}, {(TOPK, "no_train_items")}),
    "non_finite_score": ({TOPK: _with_u2("A1", "A3", scores=[1.0, math.nan]),
                          POPULAR: popular("__all__", "A1", "A2") + popular("Toys", "A1", "A2")
                          + [dict(version=VERSION, category="Toys", rank=3, parent_asin="A3", score=math.inf)]},
                         {(TOPK, "score_finite"), (POPULAR, "score_finite")}),
}


@pytest.mark.parametrize("case", sorted(PUBLISHED_BREAKS))
def test_published_gate_names_the_broken_expectation(spark, warehouse, settings, quality, case):
    writes, expected = PUBLISHED_BREAKS[case]
    for table, rows in writes.items():
        write(spark, warehouse, table, rows)
    result = gate(spark, warehouse, "published", settings, quality, tables=list(writes))
    assert failed(result) == expected
    assert all(f.sample for f in result.failures), "a failed row-wise rule carries offending rows"


def test_deleted_or_unknown_published_items_fail(spark, warehouse, settings, quality):
    """Deleted per gold/item_index (A8), deleted per the ledger only — a deletion being applied — (A5), and an
    item that does not exist at all (NOPE): each offending row is named; the relisted A7 is fine."""
    write(spark, warehouse, TOPK, _with_u2("A1", "A3", "A8"))
    write(spark, warehouse, SIMILAR, GOLD[SIMILAR] + similar("A2", "als", "A1", "NOPE")[1:])
    write(spark, warehouse, C.DELETIONS, GOLD[C.DELETIONS] + [dict(
        kind="item", id_hash="h5", id="A5", reason="recall", requested_at=NOW, applied_at=None, status="deleted")])
    result = gate(spark, warehouse, "published", settings, quality, tables=[TOPK, SIMILAR])
    assert failed(result) == {(TOPK, "items_exist_not_deleted"), (SIMILAR, "items_exist_not_deleted")}
    samples = {f.table: f.sample for f in result.failures}
    assert sorted(samples[TOPK], key=lambda r: r["parent_asin"]) == [
        {"user_id": "[redacted]", "rank": 3, "parent_asin": "A5"},
        {"user_id": "[redacted]", "rank": 3, "parent_asin": "A8"}]
    assert samples[SIMILAR] == [{"parent_asin": "A2", "method": "als", "rank": 2, "similar_asin": "NOPE"}]


# --- results, Data Docs, configuration --------------------------------------------------------------------------

def test_results_are_stored_and_a_rerun_replaces_them(spark, warehouse, settings, quality):
    write(spark, warehouse, C.BRONZE_REVIEWS, _line5(rating=0.5))
    for _ in range(2):
        result = gate(spark, warehouse, "bronze", settings, quality, run_id="run-42", tables=[C.BRONZE_REVIEWS])
    rows = T.read_table(spark, warehouse, C.QUALITY_RESULTS).where("run_id = 'run-42'").collect()
    assert len(rows) == len(result.outcomes) == len(plan("bronze", GateInputs(settings, quality, 0))[0].checks)
    [bad] = [r for r in rows if not r["success"]]
    assert (bad["layer"], bad["table"], bad["expectation"], bad["column"], bad["severity"], bad["unexpected_count"]) \
        == ("bronze", C.BRONZE_REVIEWS, "rating_in_range", "rating", "error", 1)
    assert json.loads(bad["sample"])[0]["rating"] == 0.5
    assert bad["table_version"] >= 1 and bad["checked_at"] is not None


def _files_mentioning(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text in p.read_text(errors="ignore")]


def test_data_docs_beside_the_tables_and_purged_of_samples(spark, good_warehouse, tmp_path, settings):
    """Default location <warehouse>/_quality/data_docs; samples (user ids) leave the GX files on purge."""
    warehouse = tmp_path / "warehouse"
    shutil.copytree(good_warehouse / "silver", warehouse / "silver")
    write(spark, warehouse, C.SILVER_REVIEWS, SILVER[C.SILVER_REVIEWS] + [dict(
        user_id="erase-me", parent_asin="GHOST", asin="B", rating=3.0, timestamp=T0, category="Toys")])
    defaults = load_quality_settings()
    result = validate_layer(spark, warehouse, "silver", settings, quality=defaults)
    root = warehouse / "_quality"
    index = root / "data_docs" / "index.html"
    assert not result.success and result.data_docs == index and index.is_file()
    assert result.run_id in index.read_text()
    pages = root / "data_docs" / "validations"
    assert {p.relative_to(pages).parts[:2] for p in pages.rglob("*.html")} >= {("silver", "items"),
                                                                                ("silver", "reviews")}
    assert _files_mentioning(root, "erase-me"), "the failed rule's sample is in GX results and Data Docs"
    purge_validation_artifacts(warehouse, defaults)
    assert not _files_mentioning(root, "erase-me")
    assert index.is_file()


def test_a_config_name_that_matches_nothing_is_refused(settings, quality):
    typo = quality.model_copy(update={"layers": {"silver": LayerRules(tables={
        C.SILVER_REVIEWS: TableRules(expectations={"rating_in_rnage": ExpectationRule(severity="warn")})})}})
    with pytest.raises(ValueError, match="rating_in_rnage"):
        plan("silver", GateInputs(settings, typo, 0))


def test_severity_resolves_from_the_most_specific_level(quality):
    q = quality.model_copy(update={"severity": "warn", "layers": {"gold": LayerRules(severity="error", tables={
        C.INTERACTIONS: TableRules(severity="warn", expectations={"key_unique": ExpectationRule(severity="error")})})}})
    assert q.rule("gold", C.INTERACTIONS, "key_unique")[0] == "error"
    assert q.rule("gold", C.INTERACTIONS, "split_in_set")[0] == "warn"
    assert q.rule("gold", C.USER_INDEX, "key_unique")[0] == "error"
    assert q.rule("silver", C.SILVER_ITEMS, "key_unique")[0] == "warn"
    assert load_quality_settings().rule("bronze", C.INGESTED_FILES, "status_ingested") == ("warn", None)

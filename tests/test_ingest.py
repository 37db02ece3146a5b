"""Ingestion into bronze/quarantine/silver: real Subscription_Boxes counts, a bad-row corpus with
every quarantine reason (lines Spark's lenient reader would take included), edge cases that must stay valid and
byte-exact, corrupt gzip, idempotent reruns, file names URL-decoding would change, a category filter."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import orjson
import pytest
from pyspark.sql import functions as F

from recsys import constants as C
from recsys import tables as T
from recsys.config import IngestSettings
from recsys.ingest import REVIEW_TYPED_FIELDS, STRICT_REASON, ingest, parse_reviews
from recsys.rawfiles import RawFile, inspect, normalized_line, strict_reason
from recsys.silver import build_silver

SETTINGS = IngestSettings()
TS = 1_600_000_000_000


def review(**overrides) -> dict:
    row = {"rating": 5.0, "title": "Great", "text": "Works well", "images": [], "asin": "B000000001",
           "parent_asin": "B000000001", "user_id": "AUSER0000000000000000000001", "timestamp": TS,
           "helpful_vote": 0, "verified_purchase": True}
    row.update(overrides)
    return row


def line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def with_field(name: str, raw_json: str) -> str:
    """A good review line whose ``name`` is the raw JSON text ``raw_json`` (for values json.dumps cannot write)."""
    row = review()
    row.pop(name, None)
    return line(row)[:-1] + f', "{name}": {raw_json}}}'


GOOD = line(review())


# Each bad line and the reason it must be quarantined with.
BAD_LINES = [
    ('{"rating": 5.0, "user_id": "A1"', "unparseable_json"),
    ("not json at all", "unparseable_json"),
    ("[1, 2, 3]", "not_a_json_object"),
    ('"just a string"', "not_a_json_object"),
    ("42", "not_a_json_object"),
    (line({k: v for k, v in review().items() if k != "user_id"}), "missing_id:user_id"),
    (line(review(user_id="")), "missing_id:user_id"),
    (line(review(parent_asin="  ")), "missing_id:parent_asin"),
    (line(review(parent_asin=None)), "missing_id:parent_asin"),
    (line(review(rating="five")), "wrong_type:rating"),
    (line(review(timestamp="2021-01-01")), "wrong_type:timestamp"),
    (line(review(timestamp=1.6e12)), "wrong_type:timestamp"),
    (line(review(helpful_vote="many")), "wrong_type:helpful_vote"),
    (line(review(verified_purchase="yes")), "wrong_type:verified_purchase"),
    (line(review(rating=0.0)), "rating_out_of_range"),
    (line(review(rating=6)), "rating_out_of_range"),
    (line(review()).replace('"rating": 5.0', '"rating": NaN'), "unparseable_json"),     # NaN is not JSON
    (line({k: v for k, v in review().items() if k != "rating"}), "missing_field:rating"),
    (line(review(timestamp=1_600_000_000)), "timestamp_out_of_range"),     # seconds, not ms
    (line(review(timestamp=0)), "timestamp_out_of_range"),
    (line(review(timestamp=4_102_444_800_000)), "timestamp_out_of_range"),  # 2100: in the future
]

# Lines Spark's JSON reader takes (each once landed in bronze, typed or coerced) that strict ingest refuses.
STRICT_BAD_LINES = [
    (GOOD.replace('"', "'"), "unparseable_json"),                                  # single-quoted object
    (GOOD + " garbage", "unparseable_json"),
    (GOOD + "}", "unparseable_json"),
    (GOOD + line(review(user_id="ASECONDROW")), "unparseable_json"),              # two rows on one line
    (with_field("rating", "Infinity"), "unparseable_json"),
    (with_field("text", '"lone \\ud800 surrogate"'), "unparseable_json"),        # not representable in UTF-8
    ("\t", "unparseable_json"),                                                   # not blank: Spark trims spaces
    ("null", "not_a_json_object"),
    (line(review(user_id="\t")), "missing_id:user_id"),
    (line(review(user_id=" \n ")), "missing_id:user_id"),
    (line(review(parent_asin="\u3000")), "missing_id:parent_asin"),               # ideographic space
    (line(review(user_id="AUSER1\n")), "invalid_id:user_id"),                     # a trailing newline
    (line(review(user_id=" AUSER1")), "invalid_id:user_id"),
    (line(review(user_id="A" * 65)), "invalid_id:user_id"),
    (line(review(parent_asin="B0/../../etc")), "invalid_id:parent_asin"),
    (line(review(user_id="U.1")), "invalid_id:user_id"),
    (with_field("user_id", "1.5"), "invalid_id:user_id"),                          # a number id is kept as text
    (with_field("user_id", "true"), "wrong_type:user_id"),
    (with_field("parent_asin", '["B000000001"]'), "wrong_type:parent_asin"),
    (with_field("timestamp", "1600000000000.0"), "wrong_type:timestamp"),
    (with_field("timestamp", '"1600000000000"'), "wrong_type:timestamp"),
    (with_field("timestamp", "18446744073709551615"), "wrong_type:timestamp"),     # beyond BIGINT
    (with_field("verified_purchase", '"true"'), "wrong_type:verified_purchase"),
    (with_field("verified_purchase", "1"), "wrong_type:verified_purchase"),
    (with_field("helpful_vote", '"3"'), "wrong_type:helpful_vote"),
    (with_field("helpful_vote", "3.0"), "wrong_type:helpful_vote"),
    (with_field("rating", '"5"'), "wrong_type:rating"),
    (with_field("rating", '"NaN"'), "wrong_type:rating"),
    (with_field("title", "5"), "wrong_type:title"),
    (with_field("images", '"x.jpg"'), "wrong_type:images"),
    (with_field("timestamp", "1600000000001")[:-1] + ', "timestamp": 1600000000002}', "duplicate_key:timestamp"),
    (with_field("rating", '"five"')[:-1] + ', "rating": 5.0}', "duplicate_key:rating"),  # Spark kept 5.0
    (with_field("user_id", '"AUSERDUP1"')[:-1] + ', "user\\u005fid": "AUSERDUP2"}', "duplicate_key:user_id"),
]

# Lines that look odd but are valid and must land in bronze unchanged.
GOOD_LINES = [
    line(review(text="x" * 200_000, user_id="AUSERLONG")),                      # long text
    line(review(text="日本語のレビュー ✓ — ümlaut 🎉", user_id="AUSERUNICODE")),  # unicode
    json.dumps(review(text="nul \u0000 inside", user_id="AUSERNUL")),           # NUL escape
    "\ufeff" + line(review(user_id="AUSERBOM")),                                # BOM
    line(review(user_id="AUSERCRLF")) + "\r",                                   # CRLF line ending
    line(review(rating=1, user_id="AUSERINTRATING")),                           # 1 is a valid rating
    with_field("user_id", "12345"),                                             # a number id, kept as its text
    line(review(user_id="AUSER-_" + "9" * 57, title=None, helpful_vote=None, verified_purchase=None)),  # 64 chars
    line(review(user_id="AUSERESC", text='quote " backslash \\ tab \t newline \n slash /')),
    line(review(user_id="AUSERNESTED", images=[{"large": "https://x/1.jpg", "attrs": {"w": 1, "w2": [1.5, None]}}])),
    json.dumps(review(user_id="AUSERASCII", text="émoji 🎉")),                     # \u escapes, surrogate pair
    line(review(user_id="AUSERSPACES")).replace(", ", " ,\t ") + "  ",             # JSON whitespace anywhere
    line(review(user_id="AUSERBIGTS", timestamp=1_700_000_000_000, helpful_vote=2 ** 63 - 1)),
]
GOOD_USERS = {"AUSERLONG", "AUSERUNICODE", "AUSERNUL", "AUSERBOM", "AUSERCRLF", "AUSERINTRATING", "12345",
              "AUSER-_" + "9" * 57, "AUSERESC", "AUSERNESTED", "AUSERASCII", "AUSERSPACES", "AUSERBIGTS"}
ALL_BAD_LINES = BAD_LINES + STRICT_BAD_LINES


def write(path: Path, lines: list[str], gz: bool = True) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def rows(spark, warehouse: Path, rel: str):
    return T.read_table(spark, warehouse, rel)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, spark):
    """A dump with one bad-row file (every reason), valid edge cases, blank lines and a meta file."""
    src = tmp_path_factory.mktemp("src")
    wh = tmp_path_factory.mktemp("wh")
    write(src / "Corpus.jsonl.gz", [b for b, _ in ALL_BAD_LINES] + ["", "   "] + GOOD_LINES)
    meta = [
        line({"main_category": "X", "title": "Thing", "average_rating": 4.5, "rating_number": 3, "features": ["a"],
              "description": [], "price": 12.5, "images": [], "videos": [], "store": "S", "categories": [],
              "details": {"Color": "red"}, "parent_asin": "B000000001", "bought_together": None}),
        line({"title": "Priced as text", "price": "$1,299.99", "parent_asin": "B000000002"}),
        line({"title": "Dash price", "price": "—", "parent_asin": "B000000003"}),
        line({"title": "No id"}),
        "{broken",
        line({"title": "Trailing", "parent_asin": "B000000004"}) + " x",
        line({"title": "Blank id", "parent_asin": " \t"}),
        line({"title": "Bad id", "parent_asin": "B 5"}),
        line({"title": "Bool id", "parent_asin": True}),
        line({"title": "Twice", "parent_asin": "B000000005"})[:-1] + ', "parent_asin": "B000000006"}',
        '["not", "an", "object"]',
        line({"title": "Numbers are fine here", "price": "n/a", "average_rating": "4.1", "parent_asin": "B000000007"}),
    ]
    write(src / "meta_Corpus.jsonl", meta, gz=False)
    report = ingest(spark, src, wh, SETTINGS)
    return src, wh, report


def test_every_bad_line_is_quarantined_with_its_reason(spark, corpus):
    _, wh, _ = corpus
    got = {r[C.LINE]: r[C.REASON] for r in rows(spark, wh, C.QUARANTINE_REVIEWS).collect()}
    expected = {i + 1: reason for i, (_, reason) in enumerate(ALL_BAD_LINES)}
    assert {n: (ALL_BAD_LINES[n - 1][0][:80], r) for n, r in got.items() if expected.get(n) != r} == {}
    assert got == expected


def test_quarantine_keeps_the_raw_text(spark, corpus):
    _, wh, _ = corpus
    raw = {r[C.LINE]: r[C.RAW] for r in rows(spark, wh, C.QUARANTINE_REVIEWS).collect()}
    assert raw == {i + 1: normalized_line(text.encode()).decode() for i, (text, _) in enumerate(ALL_BAD_LINES)}


def strict_value(parsed: dict, name: str):
    """What bronze must hold for a field of a strictly parsed line: the same value and type, except a rating
    (DOUBLE: 1 → 1.0) and ids sent as JSON numbers (kept as their text)."""
    value = parsed.get(name)
    if name == C.RATING and value is not None:
        return float(value)
    if name in ("user_id", "parent_asin", "asin") and isinstance(value, int):
        return str(value)
    return value


def test_bronze_values_are_what_a_strict_parse_of_the_line_gives(spark, corpus):
    """Every kept line is byte-exact: each typed column equals orjson's value (see :func:`strict_value`), images
    its JSON, and the line number points at the very line."""
    _, wh, _ = corpus
    bronze = {r[C.LINE]: r for r in rows(spark, wh, C.BRONZE_REVIEWS).collect()}
    first_good = len(ALL_BAD_LINES) + 3
    assert sorted(bronze) == list(range(first_good, first_good + len(GOOD_LINES)))
    for number, text in enumerate(GOOD_LINES, start=first_good):
        parsed = orjson.loads(normalized_line(text.encode()))
        got = {name: bronze[number][name] for name in REVIEW_TYPED_FIELDS}
        want = {name: strict_value(parsed, name) for name in REVIEW_TYPED_FIELDS}
        assert got == want and [type(v) for v in got.values()] == [type(v) for v in want.values()], number
        assert json.loads(bronze[number]["images"]) == parsed["images"]


def test_odd_but_valid_lines_land_in_bronze_intact(spark, corpus):
    _, wh, _ = corpus
    bronze = {r[C.USER_ID]: r for r in rows(spark, wh, C.BRONZE_REVIEWS).collect()}
    assert set(bronze) == GOOD_USERS
    assert len(bronze["AUSERLONG"]["text"]) == 200_000
    assert bronze["AUSERUNICODE"]["text"] == "日本語のレビュー ✓ — ümlaut 🎉"
    assert bronze["AUSERNUL"]["text"] == "nul \u0000 inside"
    assert bronze["AUSERINTRATING"][C.RATING] == 1.0
    first_good = len(ALL_BAD_LINES) + 3
    assert bronze["AUSERLONG"][C.LINE] == first_good
    assert {r[C.CATEGORY] for r in bronze.values()} == {"Corpus"}
    assert {r[C.SOURCE_FILE] for r in bronze.values()} == {"Corpus.jsonl.gz"}


def test_counts_reconcile_per_file(spark, corpus):
    _, wh, report = corpus
    files = {r["path"]: r for r in rows(spark, wh, C.INGESTED_FILES).collect()}
    reviews = files["Corpus.jsonl.gz"]
    assert reviews["status"] == "ingested"
    assert reviews["blank"] == 2
    assert reviews["quarantined"] == len(ALL_BAD_LINES)
    assert reviews["good"] == len(GOOD_LINES)
    assert reviews["lines"] == reviews["blank"] + reviews["good"] + reviews["quarantined"] + reviews["suppressed"]
    assert rows(spark, wh, C.BRONZE_REVIEWS).count() + rows(spark, wh, C.QUARANTINE_REVIEWS).count() \
        == reviews["lines"] - reviews["blank"]
    assert report.totals()["good"] == len(GOOD_LINES) + 4
    meta = files["meta_Corpus.jsonl"]
    assert (meta["lines"], meta["blank"], meta["good"], meta["quarantined"]) == (12, 0, 4, 8)


def test_meta_is_lenient_except_for_ids(spark, corpus):
    _, wh, _ = corpus
    items = {r["parent_asin"]: r for r in rows(spark, wh, C.BRONZE_ITEMS).collect()}
    assert set(items) == {"B000000001", "B000000002", "B000000003", "B000000007"}
    assert items["B000000007"]["average_rating"] == 4.1 and items["B000000007"][C.PRICE_RAW] == "n/a"
    assert items["B000000001"]["price"] == 12.5 and items["B000000001"]["features"] == ["a"]
    assert json.loads(items["B000000001"]["details"]) == {"Color": "red"}
    assert items["B000000002"]["price"] == 1299.99 and items["B000000002"][C.PRICE_RAW] == "$1,299.99"
    assert items["B000000003"]["price"] is None and items["B000000003"][C.PRICE_RAW] == "—"
    reasons = {r[C.LINE]: r[C.REASON] for r in rows(spark, wh, C.QUARANTINE_ITEMS).collect()}
    assert reasons == {4: "missing_id:parent_asin", 5: "unparseable_json", 6: "unparseable_json",
                       7: "missing_id:parent_asin", 8: "invalid_id:parent_asin", 9: "wrong_type:parent_asin",
                       10: "duplicate_key:parent_asin", 11: "not_a_json_object"}


def test_rerun_skips_files_and_changes_nothing(spark, corpus):
    src, wh, _ = corpus
    before = {t: T.describe_table(t) for t in T.find_tables(wh)}
    report = ingest(spark, src, wh, SETTINGS)
    assert report.ingested == [] and sorted(report.skipped) == ["Corpus.jsonl.gz", "meta_Corpus.jsonl"]
    assert {t: T.describe_table(t) for t in T.find_tables(wh)} == before


def test_changed_file_replaces_its_rows(spark, tmp_path):
    src, wh = tmp_path / "src", tmp_path / "wh"
    write(src / "Cat.jsonl.gz", [line(review(user_id=f"AU{i}")) for i in range(3)])
    write(src / "Other.jsonl.gz", [line(review(user_id="AOTHER"))])
    ingest(spark, src, wh, SETTINGS)
    write(src / "Cat.jsonl.gz", [line(review(user_id=f"AV{i}")) for i in range(2)] + ["{bad"])
    report = ingest(spark, src, wh, SETTINGS)
    assert [r["path"] for r in report.ingested] == ["Cat.jsonl.gz"]
    users = sorted(r[C.USER_ID] for r in rows(spark, wh, C.BRONZE_REVIEWS).collect())
    assert users == ["AOTHER", "AV0", "AV1"]
    assert rows(spark, wh, C.QUARANTINE_REVIEWS).count() == 1


def test_truncated_gzip_fails_the_file_and_commits_nothing_of_it(spark, tmp_path):
    src, wh = tmp_path / "src", tmp_path / "wh"
    write(src / "Good.jsonl.gz", [line(review(user_id="AGOOD"))])
    full = gzip.compress(("\n".join(line(review(user_id=f"AT{i}", text="t" * 300)) for i in range(2000)) + "\n")
                         .encode(), mtime=0)
    (src / "Trunc.jsonl.gz").write_bytes(full[: len(full) // 2])
    (src / "Corrupt.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-not-deflate" * 10)
    report = ingest(spark, src, wh, SETTINGS)
    assert sorted(f["path"] for f in report.failed) == ["Corrupt.jsonl.gz", "Trunc.jsonl.gz"]
    assert [r[C.USER_ID] for r in rows(spark, wh, C.BRONZE_REVIEWS).collect()] == ["AGOOD"]
    status = {r["path"]: (r["status"], r["error"]) for r in rows(spark, wh, C.INGESTED_FILES).collect()}
    assert status["Trunc.jsonl.gz"][0] == "failed" and "truncated" in status["Trunc.jsonl.gz"][1]
    assert status["Good.jsonl.gz"] == ("ingested", None)
    # The file is fixed later: the next run ingests it in full.
    (src / "Trunc.jsonl.gz").write_bytes(full)
    (src / "Corrupt.jsonl.gz").unlink()
    report = ingest(spark, src, wh, SETTINGS)
    assert [r["path"] for r in report.ingested] == ["Trunc.jsonl.gz"]
    assert rows(spark, wh, C.BRONZE_REVIEWS).where(F.col(C.SOURCE_FILE) == "Trunc.jsonl.gz").count() == 2000


def test_subscription_boxes_counts_match_the_published_figures(spark, shared_data, tmp_path):
    """Real data: 16,216 reviews, 641 items, 15,953 distinct pairs after earliest-per-pair dedup."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Subscription_Boxes.jsonl.gz", "meta_Subscription_Boxes.jsonl.gz"):
        (src / name).symlink_to(shared_data / "amazon_reviews_2023" / name)
    wh = tmp_path / "wh"
    report = ingest(spark, src, wh, SETTINGS)
    assert report.totals() == {"lines": 16_216 + 641, "blank": 0, "good": 16_216 + 641, "quarantined": 0,
                               "suppressed": 0}
    build_silver(spark, wh)
    silver = rows(spark, wh, C.SILVER_REVIEWS)
    assert silver.count() == 15_953
    assert silver.select(C.USER_ID).distinct().count() == 15_237
    assert rows(spark, wh, C.SILVER_ITEMS).count() == 641
    # Earliest per pair: no kept review is later than another review of the same pair in bronze.
    bronze = rows(spark, wh, C.BRONZE_REVIEWS)
    earliest = bronze.groupBy(C.USER_ID, C.ITEM_ID).agg(F.min(C.TIMESTAMP).alias("t0"))
    assert silver.join(earliest, [C.USER_ID, C.ITEM_ID]).where(F.col(C.TIMESTAMP) != F.col("t0")).count() == 0
    # Official cut points split the deduplicated reviews into the dataset's published counts.
    split = silver.select(
        F.sum((F.col(C.TIMESTAMP) < C.OFFICIAL_VALID_CUT_MS).cast("int")).alias("train"),
        F.sum(((F.col(C.TIMESTAMP) >= C.OFFICIAL_VALID_CUT_MS) & (F.col(C.TIMESTAMP) < C.OFFICIAL_TEST_CUT_MS))
              .cast("int")).alias("valid"),
        F.sum((F.col(C.TIMESTAMP) >= C.OFFICIAL_TEST_CUT_MS).cast("int")).alias("test")).first()
    assert (split["train"], split["valid"], split["test"]) == (12_607, 2_137, 1_209)
    # A second build on unchanged bronze is skipped and leaves silver as it was.
    version = T.describe_table(Path(T.table_path(wh, C.SILVER_REVIEWS)))["version"]
    assert build_silver(spark, wh) == {}
    assert T.describe_table(Path(T.table_path(wh, C.SILVER_REVIEWS)))["version"] == version


def test_missing_source_folder_is_a_clear_error(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="source folder not found"):
        ingest(spark, tmp_path / "nope", tmp_path / "wh", SETTINGS)


def test_a_line_spark_cannot_convert_is_quarantined_not_nulled(spark):
    """Backstop: should the strict parse ever accept a value Spark's typed parse loses, the row is quarantined
    naming the field instead of landing in bronze with a null (here the strict verdict is left out on purpose)."""
    lines = spark.createDataFrame([("f", 1, with_field("timestamp", '"soon"'), None)],
                                  f"{C.SOURCE_FILE} STRING, {C.LINE} BIGINT, value STRING, {STRICT_REASON} STRING")
    row = parse_reviews(lines, SETTINGS, TS).first()
    assert row[C.REASON] == "wrong_type:timestamp"


@pytest.mark.parametrize("name", ["A+B.jsonl", "A B+C%20d.jsonl.gz"])
def test_file_names_that_url_decoding_would_change_ingest(spark, tmp_path, name):
    """Spark names a file by its URI; a "+" must stay a plus (not a space) and "%20" stay literal text."""
    src, wh = tmp_path / "src", tmp_path / "wh"
    write(src / name, [line(review(user_id="APLUS")), "{bad"], gz=name.endswith(".gz"))
    report = ingest(spark, src, wh, SETTINGS)
    assert report.failed == []
    assert [(r["path"], r["good"], r["quarantined"]) for r in report.ingested] == [(name, 1, 1)]
    assert [(r[C.SOURCE_FILE], r[C.CATEGORY]) for r in rows(spark, wh, C.BRONZE_REVIEWS).collect()] == \
        [(name, name.split(".")[0])]


def test_categories_limit_ingest_to_their_files(spark, tmp_path):
    src, wh = tmp_path / "src", tmp_path / "wh"
    for category in ("Toys", "Books", "Garden"):
        write(src / f"{category}.jsonl.gz", [line(review(user_id=f"A{category}"))])
        write(src / f"meta_{category}.jsonl", [line({"title": category, "parent_asin": "B000000001"})], gz=False)
    report = ingest(spark, src, wh, SETTINGS, categories=["Toys", "Garden"])
    assert sorted(r["path"] for r in report.ingested) == ["Garden.jsonl.gz", "Toys.jsonl.gz", "meta_Garden.jsonl",
                                                          "meta_Toys.jsonl"]
    with pytest.raises(FileNotFoundError, match="of categories Nope"):
        ingest(spark, src, wh, SETTINGS, categories=["Nope"])


@pytest.mark.parametrize("chunk", [1, 7, 1 << 22])
def test_strict_verdicts_do_not_depend_on_where_chunks_split_lines(tmp_path, monkeypatch, chunk):
    """The per-file pass reads 4 MiB at a time: a line cut by a chunk boundary is judged whole, once."""
    monkeypatch.setattr("recsys.rawfiles._CHUNK", chunk)
    text = [b for b, _ in STRICT_BAD_LINES[:8]] + ["", GOOD, "{oops"]
    path = write(tmp_path / "Cut.jsonl", text, gz=False)
    path.write_bytes(path.read_bytes()[:-1])                    # the last line has no "\n"
    check = inspect(RawFile(path=path, rel=path.name, kind=C.KIND_REVIEWS, category="Cut"))
    assert check.lines == len(text)
    assert check.refused.items() == [(n, r) for n, (_, r) in enumerate(STRICT_BAD_LINES[:8], start=1)] + \
        [(len(text), "unparseable_json")]


@pytest.mark.parametrize("kind, raw, reason", [
    (C.KIND_REVIEWS, b'{"user_id": "\xff\xfe"}', "unparseable_json"),   # invalid UTF-8: Spark would store U+FFFD
    (C.KIND_REVIEWS, b"\xef\xbb\xbf" + GOOD.encode() + b"\r", None),     # BOM and CR, as Spark strips them
    (C.KIND_REVIEWS, b"\xef\xbb\xbf   \r", None),                        # blank once stripped: counted as blank
    (C.KIND_ITEMS, b'{"parent_asin": true}', "wrong_type:parent_asin"),
    (C.KIND_ITEMS, b'{"parent_asin": "B1", "price": true, "details": "x"}', None),   # meta: lenient but the id
])
def test_strict_verdicts_of_raw_bytes(kind, raw, reason):
    assert strict_reason(raw, kind) == reason

"""The synthetic dump: same format as the real files, deterministic, realistic shape, planted clusters.

Every check reads the written files back and recomputes what it asserts; none trusts the generator's own
numbers except to compare them with what the files say.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from recsys import synth
from recsys.config import SynthSettings
from recsys.constants import META_FIELDS, OFFICIAL_TEST_CUT_MS, OFFICIAL_VALID_CUT_MS, REVIEW_FIELDS

USER_ID_RE = re.compile(r"A[A-Z2-7]{27}")
ASIN_RE = re.compile(r"B0[0-9A-Z]{8}")
MS_1990 = 631_152_000_000
MS_2012 = 1_325_376_000_000
MS_2018 = 1_514_764_800_000
MS_END = 1_694_736_000_000
REAL_LINES = 300
SMALL = SynthSettings(users=300, items=60, reviews=1500, categories=["Appliances", "Gift_Cards"], clusters=4,
                      seed=7)


# --- helpers -------------------------------------------------------------------------------------
def raw_lines(path: Path) -> list[str]:
    """Lines of a gzip JSONL file without their newline; asserts the file ends with one."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1] if text else []


def good_reviews(out: Path, categories: list[str]) -> dict[str, list[dict]]:
    """Well-formed review objects per category (all lines, when no bad lines were asked for)."""
    return {c: [json.loads(line) for line in raw_lines(out / synth.reviews_file(c)) if classify(line) == "good"]
            for c in categories}


def meta_rows(out: Path, categories: list[str]) -> dict[str, list[dict]]:
    return {c: [json.loads(line) for line in raw_lines(out / synth.meta_file(c))] for c in categories}


def classify(line: str) -> str:
    """What an ingestion job should make of a raw review line: "good", "blank" or one of the bad kinds."""
    if not line.strip():
        return "blank"
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return "truncated_json"
    if isinstance(value, list):
        return "json_array"
    if "user_id" not in value:
        return "missing_user_id"
    if value["rating"] == "NaN":
        return "rating_nan"
    if value["rating"] == 0:
        return "rating_zero"
    if value["rating"] == 6:
        return "rating_six"
    if isinstance(value["timestamp"], str):
        return "timestamp_string"
    if value["timestamp"] < MS_1990:
        return "timestamp_seconds"
    return "good"


def type_names(rows: list[dict], key: str) -> set[str]:
    return {type(row[key]).__name__ for row in rows}


def real_file(shared_data: Path, name: str) -> Path:
    path = shared_data / "amazon_reviews_2023" / name
    if not path.is_file():
        pytest.skip(f"real file not found: {path}")
    return path


def real_head(path: Path, count: int = REAL_LINES) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in itertools.islice(handle, count)]


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default_dump(tmp_path_factory) -> tuple[Path, SynthSettings, synth.SynthSummary]:
    """The conf default (2000 users, 300 items, 12000 reviews, 3 categories, 8 clusters), no bad lines."""
    settings = SynthSettings()
    out = tmp_path_factory.mktemp("default")
    return out, settings, synth.generate(out, settings, progress=False)


@pytest.fixture(scope="module")
def sparse_dump(tmp_path_factory) -> tuple[Path, SynthSettings, synth.SynthSummary]:
    """Appliances' ratio of reviews to users (~1.2), at 1/90 of its size."""
    settings = SynthSettings(users=20_000, items=1_000, reviews=24_000, seed=3)
    out = tmp_path_factory.mktemp("sparse")
    return out, settings, synth.generate(out, settings, progress=False)


@pytest.fixture(scope="module")
def bad_dump(tmp_path_factory) -> tuple[Path, SynthSettings, synth.SynthSummary]:
    settings = SynthSettings(users=1500, items=200, reviews=8000, seed=11)
    out = tmp_path_factory.mktemp("bad")
    return out, settings, synth.generate(out, settings, bad_line_rate=0.05, progress=False)


# --- format: the real files are the reference ----------------------------------------------------
def test_review_lines_match_the_real_file(shared_data, default_dump):
    out, settings, _ = default_dump
    real = real_head(real_file(shared_data, "Subscription_Boxes.jsonl.gz"))
    ours = [line for c in settings.categories for line in raw_lines(out / synth.reviews_file(c))]
    real_rows, our_rows = [json.loads(line) for line in real], [json.loads(line) for line in ours]

    # Formatting: the real lines are exactly Python's json.dumps defaults; so must ours be.
    assert all(json.dumps(row) == line for row, line in zip(real_rows, real))
    assert all(json.dumps(row) == line for row, line in zip(our_rows, ours))
    assert any("\\u" in line for line in ours) and any('\\"' in line for line in ours)

    assert all(list(row) == list(REVIEW_FIELDS) for row in real_rows)
    assert all(list(row) == list(REVIEW_FIELDS) for row in our_rows)
    for key in REVIEW_FIELDS:
        assert type_names(our_rows, key) == type_names(real_rows, key), key
    real_image = next(img for row in real_rows for img in row["images"])
    our_images = [img for row in our_rows for img in row["images"]]
    assert our_images and all(list(img) == list(real_image) for img in our_images)
    assert all(isinstance(v, str) for img in our_images for v in img.values())

    # Ids: the patterns hold on the real data (bar rare suffixed ids), and on all of ours.
    assert sum(bool(USER_ID_RE.fullmatch(r["user_id"])) for r in real_rows) >= 0.98 * len(real_rows)
    assert all(ASIN_RE.fullmatch(r["asin"]) and ASIN_RE.fullmatch(r["parent_asin"]) for r in real_rows)
    assert all(USER_ID_RE.fullmatch(r["user_id"]) for r in our_rows)
    assert all(ASIN_RE.fullmatch(r["asin"]) and ASIN_RE.fullmatch(r["parent_asin"]) for r in our_rows)


def test_meta_lines_match_the_real_file(shared_data, default_dump):
    out, settings, _ = default_dump
    real = real_head(real_file(shared_data, "meta_Subscription_Boxes.jsonl.gz"))
    ours = [line for c in settings.categories for line in raw_lines(out / synth.meta_file(c))]
    real_rows, our_rows = [json.loads(line) for line in real], [json.loads(line) for line in ours]

    assert all(json.dumps(row) == line for row, line in zip(real_rows, real))
    assert all(json.dumps(row) == line for row, line in zip(our_rows, ours))
    assert all(list(row) == list(META_FIELDS) for row in real_rows + our_rows)
    # Beyond the real file's types, only what other real categories show: string prices, null stores.
    extra = {"price": {"float", "str"}, "store": {"NoneType"}}
    for key in META_FIELDS:
        real_types, our_types = type_names(real_rows, key), type_names(our_rows, key)
        assert real_types <= our_types <= real_types | extra.get(key, set()), key
    real_image = real_rows[0]["images"][0]
    assert all(list(img) == list(real_image) for row in our_rows for img in row["images"])
    assert all(row["images"][0]["variant"] == "MAIN" for row in our_rows)
    for key in ("features", "description", "categories"):
        assert all(isinstance(v, str) for row in our_rows for v in row[key])
    assert all(isinstance(k, str) and isinstance(v, str) for row in our_rows for k, v in row["details"].items())
    assert all(1.0 <= row["average_rating"] <= 5.0 and row["rating_number"] >= 1 for row in our_rows)


def test_price_takes_number_null_and_string_forms(default_dump):
    out, settings, _ = default_dump
    prices = [row["price"] for rows in meta_rows(out, settings.categories).values() for row in rows]
    numbers = [p for p in prices if isinstance(p, float)]
    strings = [p for p in prices if isinstance(p, str)]
    assert numbers and strings and any(p is None for p in prices)
    assert all(p > 0 for p in numbers)
    assert all(re.fullmatch(r"\$\d+\.\d\d", p) or p == "\u2014" for p in strings)
    assert any(p == "\u2014" for p in strings) and any(p.startswith("$") for p in strings)


def test_gzip_header_has_no_name_and_no_mtime(default_dump):
    out, settings, _ = default_dump
    for path in [out / synth.reviews_file(settings.categories[0]), out / synth.TRUTH_DIR / synth.USERS_TRUTH]:
        header = path.read_bytes()[:10]
        assert header[:3] == b"\x1f\x8b\x08"
        assert header[3] & 0x08 == 0            # FNAME flag unset
        assert header[4:8] == b"\x00\x00\x00\x00"
    assert not list(out.rglob("*.tmp"))


# --- determinism ---------------------------------------------------------------------------------
def _all_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_arguments_give_the_same_bytes(tmp_path):
    first = synth.generate(tmp_path / "a", SMALL, bad_line_rate=0.05, progress=False)
    second = synth.generate(tmp_path / "b", SMALL, bad_line_rate=0.05, progress=False)
    files_a, files_b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert len(files_a) == 2 * 2 + 3
    summary_name = f"{synth.TRUTH_DIR}/{synth.SUMMARY_FILE}"
    assert {k: v for k, v in files_a.items() if k != summary_name} == \
        {k: v for k, v in files_b.items() if k != summary_name}       # the summary names its out_dir
    assert {**first.to_dict(), "out_dir": ""} == {**second.to_dict(), "out_dir": ""}


def test_another_seed_gives_other_data(tmp_path):
    synth.generate(tmp_path / "a", SMALL, progress=False)
    synth.generate(tmp_path / "b", SMALL.model_copy(update={"seed": SMALL.seed + 1}), progress=False)
    for name in [synth.reviews_file("Appliances"), synth.meta_file("Appliances"),
                 f"{synth.TRUTH_DIR}/{synth.USERS_TRUTH}"]:
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes(), name


# --- counts and references -----------------------------------------------------------------------
def test_counts_match_the_summary(default_dump):
    out, settings, summary = default_dump
    reviews = good_reviews(out, settings.categories)
    metas = meta_rows(out, settings.categories)
    for c in settings.categories:
        lines = raw_lines(out / synth.reviews_file(c))
        counts = summary.files[synth.reviews_file(c)]
        assert counts.rows == len(reviews[c]) == len(lines) == counts.lines
        assert summary.files[synth.meta_file(c)].rows == len(metas[c])
    all_reviews = [r for rows in reviews.values() for r in rows]
    assert summary.reviews == len(all_reviews) == settings.reviews
    assert summary.items == sum(map(len, metas.values())) == settings.items
    assert summary.reviewers == len({r["user_id"] for r in all_reviews})
    assert summary.bad_lines == {} and summary.blank_lines == 0
    users, items = synth.load_truth(out)
    assert summary.users == len(users) == settings.users and len(items) == settings.items
    written = json.loads((out / synth.TRUTH_DIR / synth.SUMMARY_FILE).read_text())
    assert written == json.loads(json.dumps(summary.to_dict()))


def test_every_reference_resolves(default_dump):
    out, settings, _ = default_dump
    users, items = synth.load_truth(out)
    reviews = good_reviews(out, settings.categories)
    metas = meta_rows(out, settings.categories)
    for c in settings.categories:
        meta_asins = {row["parent_asin"] for row in metas[c]}
        assert len(meta_asins) == len(metas[c])
        assert {r["parent_asin"] for r in reviews[c]} <= meta_asins
        assert all(items[a][1] == c for a in meta_asins)
        assert {r["user_id"] for r in reviews[c]} <= users.keys()
        assert all(row["main_category"] == c.replace("_and_", " & ").replace("_", " ") for row in metas[c])
    assert set(items) == {row["parent_asin"] for rows in metas.values() for row in rows}
    assert set(items.values()) <= {(k, c) for k in range(settings.clusters) for c in settings.categories}
    assert set(users.values()) == set(range(settings.clusters))


def test_parents_have_variants_and_ratings_agree_with_meta(default_dump):
    out, settings, _ = default_dump
    reviews = [r for rows in good_reviews(out, settings.categories).values() for r in rows]
    variants = defaultdict(set)
    for r in reviews:
        variants[r["parent_asin"]].add(r["asin"])
    owners = Counter(a for asins in variants.values() for a in asins)
    assert max(owners.values()) == 1                      # an asin belongs to one parent only
    assert sum(len(v) > 1 for v in variants.values()) >= 0.1 * len(variants)
    assert 0.3 < np.mean([r["asin"] != r["parent_asin"] for r in reviews]) < 0.9
    per_item = Counter(r["parent_asin"] for r in reviews)
    for row in (row for rows in meta_rows(out, settings.categories).values() for row in rows):
        assert row["rating_number"] >= per_item[row["parent_asin"]]


# --- shape ---------------------------------------------------------------------------------------
def test_activity_and_popularity_are_heavy_tailed(default_dump, sparse_dump):
    for (out, settings, _), most_light, head_share in ((default_dump, 0.5, 0.05), (sparse_dump, 0.9, 0.25)):
        reviews = [r for rows in good_reviews(out, settings.categories).values() for r in rows]
        per_user = np.array(list(Counter(r["user_id"] for r in reviews).values()))
        assert np.mean(per_user <= 2) > most_light
        assert per_user.max() >= 10 * np.median(per_user)                 # a long tail of heavy users
        per_item = np.sort(np.array(list(Counter(r["parent_asin"] for r in reviews).values())))[::-1]
        head = max(1, settings.items // 100)
        assert per_item[:head].sum() / len(reviews) >= head_share, settings  # uniform would be 0.01


def test_timestamps_ratings_votes_look_real(default_dump):
    out, settings, _ = default_dump
    reviews = [r for rows in good_reviews(out, settings.categories).values() for r in rows]
    stamps = np.array([r["timestamp"] for r in reviews])
    assert stamps.min() >= MS_2012 and stamps.max() < MS_END
    assert np.mean(stamps >= MS_2018) > 0.85
    train = np.mean(stamps < OFFICIAL_VALID_CUT_MS)
    test = np.mean(stamps >= OFFICIAL_TEST_CUT_MS)
    valid = 1 - train - test
    assert train > 0.5 and valid > 0.05 and test > 0.05
    ratings = Counter(r["rating"] for r in reviews)
    assert set(ratings) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ratings.most_common(1)[0][0] == 5.0 and ratings[5.0] > 0.5 * len(reviews)
    assert np.mean([r["helpful_vote"] == 0 for r in reviews]) > 0.6
    assert 0.8 < np.mean([r["verified_purchase"] for r in reviews]) < 1.0
    assert 0.02 < np.mean([bool(r["images"]) for r in reviews]) < 0.2


def test_some_user_item_pairs_repeat(default_dump, sparse_dump):
    for out, settings, summary in (default_dump, sparse_dump):
        reviews = [r for rows in good_reviews(out, settings.categories).values() for r in rows]
        pairs = Counter((r["user_id"], r["parent_asin"]) for r in reviews)
        repeats = sum(n - 1 for n in pairs.values())
        assert repeats == summary.repeated_reviews
        assert 0.01 * len(reviews) <= repeats <= 0.03 * len(reviews), settings   # the real file: ~1.6 %


# --- planted structure ---------------------------------------------------------------------------
def _own_cluster_share(out: Path, settings: SynthSettings) -> float:
    users, items = synth.load_truth(out)
    reviews = [r for rows in good_reviews(out, settings.categories).values() for r in rows]
    return float(np.mean([users[r["user_id"]] == items[r["parent_asin"]][0] for r in reviews]))


def test_users_mostly_review_their_own_cluster(default_dump, tmp_path):
    out, settings, _ = default_dump
    assert _own_cluster_share(out, settings) > 0.7 > 3 / settings.clusters
    synth.generate(tmp_path, settings, affinity=0.0, progress=False)           # no structure planted
    assert _own_cluster_share(tmp_path, settings) < 2 / settings.clusters


def test_cluster_aware_popularity_beats_global_popularity_on_the_official_split(default_dump):
    """A stand-in for a working recommender: knowing the user's cluster must pay off on held-out data."""
    out, settings, _ = default_dump
    users, items = synth.load_truth(out)
    first: dict[tuple[str, str], int] = {}
    for r in (r for rows in good_reviews(out, settings.categories).values() for r in rows):
        key = (r["user_id"], r["parent_asin"])
        first[key] = min(first.get(key, r["timestamp"]), r["timestamp"])
    seen, relevant = defaultdict(set), defaultdict(set)
    for (user, item), stamp in first.items():
        if stamp < OFFICIAL_VALID_CUT_MS:
            seen[user].add(item)
        elif stamp >= OFFICIAL_TEST_CUT_MS:
            relevant[user].add(item)
    popularity = Counter(item for history in seen.values() for item in history)
    ranked = sorted(popularity, key=lambda a: (-popularity[a], a))

    def hit_rate(pick) -> float:
        return float(np.mean([bool(set(pick(u)) & relevant[u]) for u in relevant]))

    def top(user: str, only_cluster: bool) -> list[str]:
        pool = (a for a in ranked if a not in seen[user] and (not only_cluster or items[a][0] == users[user]))
        return list(itertools.islice(pool, 10))

    assert len(relevant) > 100
    global_hits = hit_rate(lambda u: top(u, False))
    cluster_hits = hit_rate(lambda u: top(u, True))
    assert cluster_hits > 1.5 * global_hits, (cluster_hits, global_hits)


def test_item_titles_reveal_their_cluster(default_dump):
    """Content-based models need it: leave-one-out word overlap puts nearly every title in its cluster."""
    out, settings, _ = default_dump
    _, truth = synth.load_truth(out)
    titles = {row["parent_asin"]: set(re.findall(r"[A-Za-z]+", row["title"].lower()))
              for rows in meta_rows(out, settings.categories).values() for row in rows}
    words = [Counter() for _ in range(settings.clusters)]
    for asin, bag in titles.items():
        words[truth[asin][0]].update(bag)
    right = 0
    for asin, bag in titles.items():
        own = truth[asin][0]
        scores = [sum(words[k][w] - (k == own) for w in bag) for k in range(settings.clusters)]
        right += int(np.argmax(scores) == own)
    assert right >= 0.9 * len(titles)


# --- bad lines -----------------------------------------------------------------------------------
def test_bad_lines_are_of_every_kind_and_counted(bad_dump):
    out, settings, summary = bad_dump
    totals: Counter = Counter()
    for c in settings.categories:
        name = synth.reviews_file(c)
        kinds = Counter(classify(line) for line in raw_lines(out / name))
        counts = summary.files[name]
        assert kinds.pop("good") == counts.rows
        assert kinds.pop("blank", 0) == counts.blank_lines
        assert dict(kinds) == counts.bad_lines
        totals.update(kinds)
    assert set(totals) == set(synth.BAD_KINDS) and min(totals.values()) >= 10
    assert dict(totals) == summary.bad_lines
    assert summary.reviews + sum(totals.values()) == settings.reviews
    assert 0.03 * settings.reviews < sum(totals.values()) < 0.07 * settings.reviews
    assert 0 < summary.blank_lines < sum(totals.values())


def test_good_lines_survive_among_bad_ones(bad_dump):
    out, settings, _ = bad_dump
    users, items = synth.load_truth(out)
    for c, rows in good_reviews(out, settings.categories).items():
        for row in rows:
            assert list(row) == list(REVIEW_FIELDS) and row["rating"] in (1.0, 2.0, 3.0, 4.0, 5.0)
            assert row["user_id"] in users and items[row["parent_asin"]][1] == c
            assert MS_2012 <= row["timestamp"] < MS_END


# --- ids -----------------------------------------------------------------------------------------
@given(st.lists(st.integers(0, 2 ** 40), min_size=1, max_size=60, unique=True))
def test_user_ids_are_distinct_and_well_formed(indices):
    ids = synth.user_ids(np.array(indices)).tolist()
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"A[E-H][A-Z2-7]{25}[AQ]", uid) for uid in ids)     # as real base32 ids
    assert synth.user_id_for(indices[0]) == ids[0]


@given(st.lists(st.integers(0, 36 ** 8 - 1), min_size=1, max_size=60, unique=True))
def test_asins_are_distinct_and_well_formed(indices):
    ids = synth.asins(np.array(indices)).tolist()
    assert len(set(ids)) == len(ids)
    assert all(ASIN_RE.fullmatch(a) for a in ids)
    assert synth.asin_for(indices[0]) == ids[0]


def test_asin_index_out_of_range_is_refused():
    with pytest.raises(ValueError):
        synth.asin_for(36 ** 8)


# --- small random settings -----------------------------------------------------------------------
@hyp_settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(users=st.integers(1, 60), items=st.integers(1, 25), reviews=st.integers(1, 300),
       categories=st.integers(1, 3), clusters=st.integers(1, 6), seed=st.integers(0, 2 ** 32),
       bad_line_rate=st.sampled_from([0.0, 0.1]))
def test_any_small_setting_gives_a_consistent_dump(users, items, reviews, categories, clusters, seed,
                                                   bad_line_rate):
    names = ["Appliances", "All_Beauty", "Video_Games"][:categories]
    settings = SynthSettings(users=users, items=items, reviews=reviews, categories=names, clusters=clusters,
                             seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        summary = synth.generate(out, settings, bad_line_rate=bad_line_rate, progress=False, chunk_size=50)
        truth_users, truth_items = synth.load_truth(out)
        assert len(truth_users) == users and len(truth_items) == items
        metas = meta_rows(out, names)
        assert sum(map(len, metas.values())) == items
        bad = 0
        for c in names:
            lines = raw_lines(out / synth.reviews_file(c))
            kinds = Counter(classify(line) for line in lines)
            bad += sum(n for k, n in kinds.items() if k not in ("good", "blank"))
            parents = {row["parent_asin"] for row in metas[c]}
            for line in lines:
                if classify(line) == "good":
                    row = json.loads(line)
                    assert row["parent_asin"] in parents and row["user_id"] in truth_users
        assert summary.reviews + bad == reviews


def test_progress_bar_can_be_switched_off(tmp_path, capsys):
    synth.generate(tmp_path / "quiet", SMALL, progress=False)
    assert capsys.readouterr().err == ""
    synth.generate(tmp_path / "loud", SMALL, progress=True)
    assert "review" in capsys.readouterr().err


# --- refusals and failures -----------------------------------------------------------------------
@pytest.mark.parametrize("update, kwargs", [
    ({"categories": ["Appliances", "Appliances"]}, {}),
    ({"categories": ["a/b"]}, {}),
    ({"categories": ["meta_Appliances"]}, {}),
    ({}, {"bad_line_rate": 1.0}),
    ({}, {"affinity": 1.5}),
    ({}, {"repeat_rate": -0.1}),
    ({}, {"chunk_size": 0}),
])
def test_bad_arguments_are_refused(tmp_path, update, kwargs):
    with pytest.raises(ValueError):
        synth.generate(tmp_path, SMALL.model_copy(update=update), progress=False, **kwargs)
    assert not list(tmp_path.glob("*.jsonl.gz"))


def test_a_failed_run_leaves_no_partial_files(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_meta_row", explode)
    with pytest.raises(RuntimeError):
        synth.generate(tmp_path, SMALL, progress=False)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]

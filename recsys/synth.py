"""Synthetic Amazon Reviews 2023 dump with planted clusters, byte-compatible with the official raw files.

Why it exists: the real dump is too large for CI and carries no ground truth. This module writes
``<Category>.jsonl.gz`` (reviews) and ``meta_<Category>.jsonl.gz`` (items) in the official key order and
JSON formatting (Python ``json.dumps`` defaults, as the official files use: ``", "``/``": "`` separators,
non-ASCII escaped as ``\\uXXXX``), plus ``_truth/`` files naming the latent cluster of every user and item,
so tests can check that a recommender recovers structure that is known to be there.

Shape (close to the real data, see ``shared/data/README.md``): power-law user activity (most users have
1-2 reviews) and item popularity, several asins per ``parent_asin``, ~1.5 % repeated (user, parent_asin)
pairs, timestamps in ms mostly over 2018-2023 so the official cut points give non-empty train/valid/test,
ratings skewed to 5, ``helpful_vote`` mostly 0, ``verified_purchase`` mostly true. A user reviews an item
of their own cluster with probability ``affinity``, otherwise a globally popular one: a working
collaborative model beats popularity, a broken one does not.

Memory is bounded: users are processed in chunks of about ``chunk_size`` reviews (one user's reviews never
straddle a chunk, so repeats and reviewers are counted exactly per chunk) and review lines stream to gzip;
only per-user and per-item integer arrays stay in RAM. Same arguments -> byte-identical files (gzip
``mtime=0``, no file name in the header). Output depends on ``chunk_size`` too, so keep it fixed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from recsys.config import SynthSettings
from recsys.constants import CATEGORY, ITEM_ID, KIND_ITEMS, KIND_REVIEWS, META_FIELDS, META_PREFIX, REVIEW_FIELDS, USER_ID

# --- output layout ---------------------------------------------------------------------------------
CLUSTER = "cluster"
TRUTH_DIR = "_truth"
USERS_TRUTH = "users.csv.gz"          # user_id,cluster
ITEMS_TRUTH = "items.csv.gz"          # parent_asin,cluster,category
SUMMARY_FILE = "summary.json"         # SynthSummary.to_dict(), for the CLI and reconciling tests
REVIEWS_SUFFIX = ".jsonl.gz"

# --- knobs not (yet) in SynthSettings: read from settings when present, else these defaults -----
DEFAULT_AFFINITY = 0.8                # P(a review goes to an item of the user's own cluster)
DEFAULT_REPEAT_RATE = 0.015           # share of review lines planted as a repeat of the user's previous pair
DEFAULT_CHUNK_SIZE = 100_000          # reviews generated and encoded per step

# --- distributions (fixed: they shape realism, not experiments) ------------------------------------
ITEM_ZIPF_EXPONENT = 1.0              # popularity weight of the item ranked r is r ** -exponent
ACTIVITY_CAP_SHARE = 0.01             # no user writes more than ~1 % of all reviews (nor a cluster's worth)
DEDUPE_ROUNDS = 12                    # resampling rounds (half by popularity, half uniform) before
                                      # an accidental repeat is accepted (and counted)
EARLY_SHARE = 0.08                    # reviews before 2018
T_EARLY_MS = 1_325_376_000_000        # 2012-01-01 UTC
T_MAIN_MS = 1_514_764_800_000         # 2018-01-01 UTC
T_END_MS = 1_694_736_000_000          # 2023-09-15 UTC (the dump ends in Sep 2023)
RATING_P_OWN = (0.05, 0.04, 0.07, 0.16, 0.68)     # ratings 1..5 for an item of the user's cluster
RATING_P_OTHER = (0.16, 0.08, 0.12, 0.17, 0.47)   # ... and for any other item
HELPFUL_ZERO_SHARE = 0.72
VERIFIED_SHARE = 0.9
REVIEW_IMAGE_SHARE = 0.08
BLANK_LINE_SHARE = 0.2                # blank lines added per review line, relative to bad_line_rate
GZIP_LEVEL = 6                        # level 9 (gzip's default) costs ~2x the time for ~3 % smaller files
MAX_STORES_PER_CLUSTER = 400          # real categories: a few hundred to thousands of stores

# Kinds of deliberately broken review lines (each replaces one review line), counted in the summary.
BAD_KINDS = (
    "truncated_json",      # the line cut mid-object: not JSON at all
    "rating_zero",         # rating 0.0 (valid ratings are 1..5)
    "rating_six",          # rating 6.0
    "rating_nan",          # rating as the string "NaN"
    "missing_user_id",     # the user_id key absent
    "timestamp_string",    # timestamp as an ISO date string instead of int ms
    "timestamp_seconds",   # timestamp in seconds: read as ms it falls in January 1970 (< 1990)
    "json_array",          # the values as a JSON array instead of an object
)

# Review lines are assembled from pre-encoded JSON pieces (10x faster than json.dumps per row);
# tests check every good line equals json.dumps(json.loads(line)).
_REVIEW_TEMPLATE = "{" + ", ".join(f'"{name}": %s' for name in REVIEW_FIELDS) + "}\n"
_B32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_B36_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASIN_SPACE = 36 ** 8
_ASIN_MULTIPLIER = 1_000_000_007      # prime, coprime with 36: index -> id is a bijection
_ASIN_OFFSET = 1_234_567_891
_IMAGE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-"


# --- ids -------------------------------------------------------------------------------------------
def user_id_for(index: int) -> str:
    """Official-looking user id of user ``index``: 28 base32 chars, "A" + one of E-H, as real ids.

    Real ids are base32 of 17 bytes whose first byte is 0x01; we hash the index into the other 16, so
    the mapping is fixed (independent of the seed) and collision-free in practice.
    """
    digest = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=16, person=b"recsys-synth-u").digest()
    return base64.b32encode(b"\x01" + digest).decode("ascii")[:28]


def asin_for(index: int) -> str:
    """Official-looking asin of item slot ``index``: "B0" + 8 base-36 chars, a bijection for index < 36**8."""
    if not 0 <= index < _ASIN_SPACE:
        raise ValueError(f"asin index out of range: {index}")
    value = (index * _ASIN_MULTIPLIER + _ASIN_OFFSET) % _ASIN_SPACE
    chars = []
    for _ in range(8):
        value, digit = divmod(value, 36)
        chars.append(_B36_ALPHABET[digit])
    return "B0" + "".join(reversed(chars))


# --- summary ---------------------------------------------------------------------------------------
@dataclass
class FileCounts:
    """Line counts of one written file; ``lines`` = rows + blank + bad, as a reader will see them."""

    kind: str                 # KIND_REVIEWS or KIND_ITEMS
    category: str
    rows: int = 0             # well-formed objects (good reviews, or meta rows)
    blank_lines: int = 0
    bad_lines: dict[str, int] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        return self.rows + self.blank_lines + sum(self.bad_lines.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lines": self.lines}


@dataclass
class SynthSummary:
    """What :func:`generate` wrote, so ingestion tests can reconcile bronze/quarantine counts."""

    out_dir: str
    seed: int
    users: int                # users in the truth file
    reviewers: int            # distinct users with at least one good review line
    items: int                # meta rows over all categories
    reviews: int              # good review lines over all files
    repeated_reviews: int     # good lines whose (user_id, parent_asin) pair appeared in an earlier good line
    blank_lines: int
    bad_lines: dict[str, int]
    files: dict[str, FileCounts]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = {name: counts.to_dict() for name, counts in self.files.items()}
        return data


# --- text material ---------------------------------------------------------------------------------
_SYLLABLES = ("ka", "lo", "mi", "ren", "tas", "vo", "zu", "bel", "cor", "dan", "fi", "gor", "hal", "jun",
              "lux", "mar", "nor", "pel", "quin", "ros", "sil", "tor", "ul", "ven", "wex", "yar", "zen", "bri",
              "cal", "dro", "esk", "fen")
_NOUNS = {
    "Appliances": ("Water Filter", "Ice Maker", "Dryer Vent Kit", "Washer Hose", "Range Knob",
                   "Refrigerator Shelf", "Dishwasher Rack", "Oven Element"),
    "All_Beauty": ("Face Serum", "Lip Balm", "Shampoo", "Hair Clip", "Nail Polish", "Eye Cream", "Body Lotion"),
    "Toys_and_Games": ("Puzzle", "Action Figure", "Board Game", "Building Set", "Plush Toy", "Card Game"),
}
_GENERIC_NOUNS = ("Kit", "Set", "Bundle", "Organizer", "Accessory Pack", "Starter Box")
_SPECS = ("2 Pack", "Large", "Small", "16 oz", "Black", "White", "Set of 4", "Refill")
_STORE_SUFFIXES = ("", "", " Co.", " Home", " Labs", " & Sons", " Direct")
_REVIEW_TITLES = {
    1: ("USELESS", "Broke after a week", "Waste of money", "Doesn\u2019t work", "One Star", "Very disappointed"),
    2: ("Not great", "Meh", "Two Stars", "Cheaply made", "Expected more"),
    3: ("It\u2019s okay", "Three Stars", "Average", "Does the job, barely", "Mixed feelings"),
    4: ("Pretty good", "Four Stars", "Good value", "Works well", "Nice"),
    5: ("Five Stars", "Love it!", "Great product", "Perfect", "Exactly as described", "Highly recommend"),
}
_REVIEW_TEXTS = {
    1: ("Terrible {a}. Returned it.", "Don\u2019t buy this {a} {b}.<br /><br />Total junk.",
        "The {b} fell apart on day two."),
    2: ("The {a} {b} stopped working quickly.", "Not worth it, the {a} feels cheap.",
        'Sold as "{b}" but it is not.'),
    3: ("The {a} is fine, the {b} not so much.", "Okay {a}. Nothing special.",
        "It works.<br />The {b} could be better."),
    4: ("Good {a} {b}, minor issues.", "Solid {a}. Not perfect but close.", "Nice {b}, would buy again."),
    5: ("Love the {a} {b}. Works perfectly.", "Great {a} quality, would buy again!",
        "The {a} {b} is exactly what I needed.<br />Fast shipping too.",
        'My wife says it\u2019s the best "{a}" ever.'),
}
_TEXTS_PER_POOL = 12
_RATING_TEXT = {r: json.dumps(float(r)) for r in range(1, 6)}
_BOOL_TEXT = ("false", "true")


def _pretty(category: str) -> str:
    """``Toys_and_Games`` -> ``Toys & Games``: how the dump names a category in ``main_category``."""
    return category.replace("_and_", " & ").replace("_", " ")


def _vocabularies(sizes: Sequence[int], rng: random.Random, taken: set[str]) -> list[list[str]]:
    """Disjoint made-up word lists (one per size), none in ``taken``: titles share words only within a cluster.

    ``taken`` is updated, so successive calls (cluster words, then store names) never collide.
    """
    vocab: list[list[str]] = []
    for size in sizes:
        bag: list[str] = []
        while len(bag) < size:
            word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 4)))).capitalize()
            if word not in taken:
                taken.add(word)
                bag.append(word)
        vocab.append(bag)
    return vocab


def _image_code(rng: random.Random) -> str:
    """An 11-char image key shaped like Amazon's (e.g. ``61FfqGgIMNL``)."""
    return rng.choice("456789") + rng.choice("0123456789") + "".join(rng.choices(_IMAGE_CHARS, k=8)) + "L"


def _review_images(rng: random.Random) -> str:
    """A non-empty review ``images`` list, pre-encoded, with the official review image dict shape."""
    images = []
    for _ in range(min(1 + int(rng.expovariate(1.2)), 10)):
        code = _image_code(rng)
        base = f"https://images-na.ssl-images-amazon.com/images/I/{code}"
        images.append({"small_image_url": f"{base}._SL256_.jpg", "medium_image_url": f"{base}._SL800_.jpg",
                       "large_image_url": f"{base}._SL1600_.jpg", "attachment_type": "IMAGE"})
    return json.dumps(images)


def _meta_images(rng: random.Random) -> list[dict[str, str | None]]:
    """The meta ``images`` list: MAIN first, then PT variants; ``hi_res`` sometimes null as in the dump."""
    count = rng.choice((1, 2, 3, 4, 5, 5, 6, 6, 7, 8))
    variants = ["MAIN"] + [f"PT{n:02d}" for n in range(11, 11 + count - 1)]
    images: list[dict[str, str | None]] = []
    for variant in variants:
        code = _image_code(rng)
        hi_res = None if rng.random() < 0.1 else f"https://m.media-amazon.com/images/I/{_image_code(rng)}._AC_SL1500_.jpg"
        images.append({"thumb": f"https://m.media-amazon.com/images/I/{code}._AC_US40_.jpg",
                       "large": f"https://m.media-amazon.com/images/I/{code}._AC_.jpg",
                       "variant": variant, "hi_res": hi_res})
    return images


def _price(rng: random.Random) -> float | str | None:
    """Price in the three forms seen across categories: a number, null, or a string ("$12.99", "—")."""
    draw = rng.random()
    amount = round(rng.lognormvariate(3.0, 0.8), 2)
    if draw < 0.55:
        return amount
    if draw < 0.90:
        return None
    return f"${amount:.2f}" if draw < 0.97 else "\u2014"


# --- catalogue -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Catalog:
    """Per-item arrays the review sampler needs; everything per item, nothing per review."""

    cluster: np.ndarray             # item -> cluster
    category: np.ndarray            # item -> category index
    pop_cdf: np.ndarray             # cumulative popularity weights over all items
    cluster_items: list[np.ndarray]
    cluster_cdf: list[np.ndarray]   # cumulative popularity within each cluster
    parent_ids: list[str]
    variant_start: np.ndarray       # item -> first index into variant_json
    variant_count: np.ndarray
    variant_json: list[str]         # pre-encoded asins ('"B0..."')
    vocab: list[list[str]]
    text_json: list[str]            # pre-encoded review texts, pool (cluster, rating) at (c*5 + r-1)*_TEXTS_PER_POOL
    title_json: list[str]           # pre-encoded review titles
    title_offset: np.ndarray        # rating -> first title index
    title_count: np.ndarray

    @property
    def size(self) -> int:
        return len(self.parent_ids)


def _build_catalog(settings: SynthSettings, rng: np.random.Generator, text_rng: random.Random) -> _Catalog:
    """Assign clusters, categories, popularity and variants; balanced so no cluster/category is empty."""
    n, k, c = settings.items, settings.clusters, len(settings.categories)
    cluster = rng.permutation(np.arange(n) % k)
    category = rng.permutation(np.arange(n) % c)
    weight = (rng.permutation(n) + 1.0) ** -ITEM_ZIPF_EXPONENT
    cluster_items = [np.flatnonzero(cluster == j) for j in range(k)]

    extra = np.where(rng.random(n) < 0.75, 0, 1 + rng.geometric(0.5, n))
    variant_count = np.minimum(1 + extra, 8)
    parent_is_asin = rng.random(n) < 0.45
    parent_ids = [asin_for(i) for i in range(n)]
    variant_json: list[str] = []
    next_slot = n
    for i in range(n):
        for v in range(int(variant_count[i])):
            if v == 0 and parent_is_asin[i]:
                variant_json.append(f'"{parent_ids[i]}"')
            else:
                variant_json.append(f'"{asin_for(next_slot)}"')
                next_slot += 1
    variant_start = np.concatenate(([0], np.cumsum(variant_count)[:-1]))

    vocab = _vocabularies([12] * k, text_rng, set())
    text_json = []
    for words in vocab:
        for rating in range(1, 6):
            templates = _REVIEW_TEXTS[rating]
            for j in range(_TEXTS_PER_POOL):
                a, b = text_rng.sample(words, 2)
                text_json.append(json.dumps(templates[j % len(templates)].format(a=a, b=b.lower())))
    title_json = [json.dumps(t) for r in range(1, 6) for t in _REVIEW_TITLES[r]]
    title_count = np.array([0] + [len(_REVIEW_TITLES[r]) for r in range(1, 6)])   # indexed by rating
    return _Catalog(
        cluster=cluster, category=category, pop_cdf=np.cumsum(weight), cluster_items=cluster_items,
        cluster_cdf=[np.cumsum(weight[items]) for items in cluster_items], parent_ids=parent_ids,
        variant_start=variant_start, variant_count=variant_count, variant_json=variant_json, vocab=vocab,
        text_json=text_json, title_json=title_json,
        title_offset=np.concatenate(([0], np.cumsum(title_count)[:-1])), title_count=title_count,
    )


# --- user activity ---------------------------------------------------------------------------------
def _pareto_alpha(mean: float, cap: int) -> float:
    """Exponent a with sum_{k=1..cap} k**-a == mean: E[min(floor(X), cap)] for X ~ Pareto(a, x_min=1)."""
    ks = np.arange(1, cap + 1, dtype=np.float64)
    lo, hi = 1e-3, 60.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.sum(ks ** -mid) > mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _activity(users: int, reviews: int, items: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Reviews per user: a capped discrete power law (most users 1-2) summing exactly to ``reviews``.

    The cap (1 % of reviews, at most a cluster's worth of items) keeps a heavy user inside their cluster
    instead of forcing them out of it for want of unseen items. When there are fewer reviews than users,
    ``reviews`` users get one each and the rest none.
    """
    counts = np.zeros(users, dtype=np.int64)
    if reviews <= users:
        counts[rng.choice(users, size=reviews, replace=False)] = 1
        return counts
    mean = reviews / users
    cap = int(min(reviews - users + 1, max(10, 4 * mean, ACTIVITY_CAP_SHARE * reviews)))
    cap = max(int(np.ceil(mean)) + 1, min(cap, max(2, items // clusters)))
    alpha = _pareto_alpha(mean, cap)
    counts = np.minimum(np.floor((1.0 - rng.random(users)) ** (-1.0 / alpha)), cap).astype(np.int64)
    diff = reviews - int(counts.sum())
    if diff > 0:    # preferential: the active get more, which keeps the shape
        counts += rng.multinomial(diff, counts / counts.sum())
    elif diff < 0:  # take surplus reviews (beyond each user's first) away, uniformly over them
        surplus_end = np.cumsum(counts - 1)
        slots = rng.choice(int(surplus_end[-1]), size=-diff, replace=False)
        counts -= np.bincount(np.searchsorted(surplus_end, slots, side="right"), minlength=users)
    return counts


# --- review sampling -------------------------------------------------------------------------------
def _sample(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), len(cdf) - 1)


def _draw_items(user_cluster: np.ndarray, own: np.ndarray, catalog: _Catalog, rng: np.random.Generator,
                uniform: bool = False) -> np.ndarray:
    """An item of the user's cluster where ``own``, else any item; by popularity, or uniformly (``uniform``).

    The uniform mode serves de-duplication: a user who already took the popular items of their cluster
    moves on to its tail instead of leaving the cluster, so the planted structure stays sharp.
    """
    size = len(user_cluster)
    items = rng.integers(0, catalog.size, size) if uniform else _sample(catalog.pop_cdf, rng, size)
    rows_own = np.flatnonzero(own)
    order = rows_own[np.argsort(user_cluster[rows_own], kind="stable")]
    bounds = np.cumsum(np.bincount(user_cluster[rows_own], minlength=len(catalog.cluster_items)))
    for k, rows in enumerate(np.split(order, bounds[:-1])):
        pool = catalog.cluster_items[k]
        if rows.size and pool.size:
            picks = rng.integers(0, pool.size, rows.size) if uniform else _sample(catalog.cluster_cdf[k], rng, rows.size)
            items[rows] = pool[picks]
    return items


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where ``keys[i]`` did not occur earlier in the array."""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _draw_pairs(user: np.ndarray, user_cluster: np.ndarray, catalog: _Catalog, affinity: float,
                repeat_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Items for one chunk of (user-grouped) rows: sampled, de-duplicated per user, then repeats planted.

    Repeats are controlled: accidental ones are resampled, then ``repeat_rate`` of the rows copy the
    previous row's item of the same user (the real dump has ~1.6 % such lines).
    """
    own = rng.random(len(user)) < affinity      # decided once per row, so resampling keeps the share
    items = _draw_items(user_cluster, own, catalog, rng)
    for attempt in range(DEDUPE_ROUNDS):
        dup = np.flatnonzero(~_first_occurrence(user * catalog.size + items))
        if not dup.size:
            break
        items[dup] = _draw_items(user_cluster[dup], own[dup], catalog, rng, uniform=attempt >= DEDUPE_ROUNDS // 2)
    follows = np.flatnonzero(user[1:] == user[:-1]) + 1
    if follows.size and repeat_rate > 0:
        chosen = follows[rng.random(follows.size) < min(1.0, repeat_rate * len(user) / follows.size)]
        chosen = chosen[~np.isin(chosen - 1, chosen)]   # no chains: each copy comes from an unchanged row
        items[chosen] = items[chosen - 1]
    return items


def _timestamps(rng: np.random.Generator, size: int) -> np.ndarray:
    """Milliseconds, uniform over 2018..Sep 2023 with an 8 % tail back to 2012."""
    early = rng.random(size) < EARLY_SHARE
    low = np.where(early, T_EARLY_MS, T_MAIN_MS)
    high = np.where(early, T_MAIN_MS, T_END_MS)
    return low + (rng.random(size) * (high - low)).astype(np.int64)


def _ratings(own: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ratings 1..5, skewed to 5, higher when the item is of the user's own cluster."""
    draw = rng.random(len(own))
    cdf_own, cdf_other = np.cumsum(RATING_P_OWN), np.cumsum(RATING_P_OTHER)
    return 1 + np.where(own, np.searchsorted(cdf_own, draw * cdf_own[-1], side="right"),
                        np.searchsorted(cdf_other, draw * cdf_other[-1], side="right")).clip(0, 4)


def _bad_line(kind: str, values: dict[str, Any], rng: random.Random) -> str:
    """One deliberately broken review line of ``kind`` (without the newline), built from a good row."""
    if kind == "truncated_json":
        text = json.dumps(values)
        return text[: rng.randrange(1, len(text) - 1)]
    if kind == "json_array":
        return json.dumps(list(values.values()))
    broken = dict(values)
    if kind == "rating_zero":
        broken["rating"] = 0.0
    elif kind == "rating_six":
        broken["rating"] = 6.0
    elif kind == "rating_nan":
        broken["rating"] = "NaN"
    elif kind == "missing_user_id":
        del broken[USER_ID]
    elif kind == "timestamp_string":
        moment = datetime.fromtimestamp(values["timestamp"] / 1000, tz=timezone.utc)
        broken["timestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind == "timestamp_seconds":
        broken["timestamp"] = values["timestamp"] // 1000
    else:
        raise ValueError(f"unknown bad line kind: {kind}")
    return json.dumps(broken)


# --- files -----------------------------------------------------------------------------------------
class _GzipText:
    """A deterministic gzip text sink (mtime 0, no name) that appears under its final name only when complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._raw = open(self._tmp, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=GZIP_LEVEL, mtime=0)

    def write(self, text: str) -> None:
        self._gz.write(text.encode("utf-8"))

    def commit(self) -> None:
        self._gz.close()
        self._raw.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._gz.close()
        self._raw.close()
        self._tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _sinks(paths: Sequence[Path]) -> Iterator[list[_GzipText]]:
    """Open several sinks; commit all on success, remove all partial files on error."""
    sinks: list[_GzipText] = []
    try:
        for path in paths:
            sinks.append(_GzipText(path))
        yield sinks
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    for sink in sinks:
        sink.commit()


def reviews_file(category: str) -> str:
    return f"{category}{REVIEWS_SUFFIX}"


def meta_file(category: str) -> str:
    return f"{META_PREFIX}{category}{REVIEWS_SUFFIX}"


# --- generation ------------------------------------------------------------------------------------
@dataclass
class _Tally:
    """Running totals the meta rows and the summary need (per item arrays only)."""

    item_reviews: np.ndarray
    item_rating_sum: np.ndarray
    reviewers: int = 0
    repeated: int = 0


def _chunk_bounds(counts: np.ndarray, chunk_size: int) -> Iterator[tuple[int, int]]:
    """User ranges holding about ``chunk_size`` reviews each (more if one user alone has more)."""
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = int(ends[start - 1]) if start else 0
        end = max(start + 1, int(np.searchsorted(ends, base + chunk_size, side="right")))
        yield start, min(end, len(counts))
        start = end


def _write_chunk(start: int, end: int, counts: np.ndarray, user_cluster: np.ndarray, catalog: _Catalog,
                 affinity: float, repeat_rate: float, bad_line_rate: float, rng: np.random.Generator,
                 review_sinks: list[_GzipText], users_sink: _GzipText, files: list[FileCounts],
                 tally: _Tally) -> int:
    """Sample, encode and write the reviews of users ``start..end-1``; return the number of review lines."""
    ids = [user_id_for(u) for u in range(start, end)]
    users_sink.write("".join(f"{uid},{c}\n" for uid, c in zip(ids, user_cluster[start:end].tolist())))
    user = np.repeat(np.arange(start, end), counts[start:end])
    n = len(user)
    if n == 0:
        return 0
    ucl = user_cluster[user]
    items = _draw_pairs(user, ucl, catalog, affinity, repeat_rate, rng)
    icl = catalog.cluster[items]
    rating = _ratings(icl == ucl, rng)
    stamp = _timestamps(rng, n)
    helpful = np.where(rng.random(n) < HELPFUL_ZERO_SHARE, 0, np.minimum(rng.zipf(1.8, n), 5000))
    verified = (rng.random(n) < VERIFIED_SHARE).astype(np.int64)
    asin = catalog.variant_start[items] + (rng.random(n) * catalog.variant_count[items]).astype(np.int64)
    title = catalog.title_offset[rating] + (rng.random(n) * catalog.title_count[rating]).astype(np.int64)
    text = (icl * 5 + rating - 1) * _TEXTS_PER_POOL + rng.integers(0, _TEXTS_PER_POOL, n)
    has_images = rng.random(n) < REVIEW_IMAGE_SHARE
    bad = rng.random(n) < bad_line_rate
    kind = rng.integers(0, len(BAD_KINDS), n)
    blank = rng.random(n) < bad_line_rate * BLANK_LINE_SHARE
    str_rng = random.Random(int(rng.integers(0, 2 ** 63)))

    good = ~bad
    keys = user[good] * catalog.size + items[good]
    tally.repeated += int(keys.size - np.unique(keys).size)
    tally.reviewers += int(np.unique(user[good]).size)
    tally.item_reviews += np.bincount(items[good], minlength=catalog.size)
    tally.item_rating_sum += np.bincount(items[good], weights=rating[good], minlength=catalog.size)

    out: list[list[str]] = [[] for _ in review_sinks]
    category = catalog.category[items].tolist()
    for row, (u, it, r, ts, hv, vp, a, ti, tx, im, is_bad, kd, bl, cat) in enumerate(zip(
            (user - start).tolist(), items.tolist(), rating.tolist(), stamp.tolist(), helpful.tolist(),
            verified.tolist(), asin.tolist(), title.tolist(), text.tolist(), has_images.tolist(),
            bad.tolist(), kind.tolist(), blank.tolist(), category)):
        lines, counts_of = out[cat], files[cat]
        if bl:
            lines.append("\n")
            counts_of.blank_lines += 1
        images = _review_images(str_rng) if im else "[]"
        fields = (_RATING_TEXT[r], catalog.title_json[ti], catalog.text_json[tx], images,
                  catalog.variant_json[a], f'"{catalog.parent_ids[it]}"', f'"{ids[u]}"', ts, hv, _BOOL_TEXT[vp])
        if is_bad:
            name = BAD_KINDS[kd]
            values = dict(zip(REVIEW_FIELDS, (json.loads(str(f)) for f in fields)))
            lines.append(_bad_line(name, values, str_rng) + "\n")
            counts_of.bad_lines[name] = counts_of.bad_lines.get(name, 0) + 1
        else:
            lines.append(_REVIEW_TEMPLATE % fields)
            counts_of.rows += 1
    for sink, lines in zip(review_sinks, out):
        sink.write("".join(lines))
    return n


def _meta_row(item: int, catalog: _Catalog, category: str, stores: list[list[str]], tally: _Tally,
              rng: random.Random) -> dict[str, Any]:
    """One meta object in the official key order; ratings agree with the reviews written for the item."""
    k = int(catalog.cluster[item])
    words = catalog.vocab[k]
    nouns = _NOUNS.get(category, _GENERIC_NOUNS)
    noun = rng.choice(nouns)
    a, b, c = rng.sample(words, 3)
    store = rng.choice(stores[k])
    title = f"{store.split(' ')[0]} {a} {b} {noun}" + (f" \u2013 {rng.choice(_SPECS)}" if rng.random() < 0.35 else "")
    seen, total = int(tally.item_reviews[item]), float(tally.item_rating_sum[item])
    unseen = int(rng.expovariate(1 / (3 * seen + 2))) + (0 if seen else 1)   # ratings without a review text
    quality = min(5.0, max(1.0, rng.gauss(4.2, 0.5)))
    details: dict[str, str] = {}
    if rng.random() < 0.8:
        details["Brand"] = store
        if rng.random() < 0.6:
            details["Color"] = rng.choice(("Black", "White", "Silver", "Multicolor", "Blue"))
        if rng.random() < 0.5:
            details["Item Weight"] = f"{rng.uniform(0.1, 12):.1f} pounds"
        day = datetime(rng.randrange(2010, 2023), rng.randrange(1, 13), rng.randrange(1, 29))
        details["Date First Available"] = f"{day:%B} {day.day}, {day.year}"
    values: dict[str, Any] = {
        "main_category": _pretty(category),
        "title": title,
        "average_rating": round((total + unseen * quality) / (seen + unseen), 1),
        "rating_number": seen + unseen,
        "features": [f"{w} {noun.lower()} made for everyday use." for w in rng.sample(words, rng.choice((0, 2, 3, 4, 5)))],
        "description": [] if rng.random() < 0.7 else [f"The {a} {c} {noun.lower()} you have been waiting for."],
        "price": _price(rng),
        "images": _meta_images(rng),
        "videos": [] if rng.random() < 0.9 else [{
            "title": f"{a} {noun} review", "url": f"https://www.amazon.com/vdp/{rng.getrandbits(128):032x}",
            "user_id": ""}],
        "store": None if rng.random() < 0.01 else store,
        "categories": [] if rng.random() < 0.5 else [_pretty(category), f"{words[0]} Collection"],
        "details": details,
        "parent_asin": catalog.parent_ids[item],
        "bought_together": None,
    }
    return {name: values[name] for name in META_FIELDS}


def _write_meta(out_dir: Path, categories: list[str], catalog: _Catalog, tally: _Tally,
                rng: random.Random) -> dict[str, FileCounts]:
    """Meta and item-truth files; stores are per cluster, so brands carry the cluster signal too."""
    taken = {word for words in catalog.vocab for word in words}
    names = _vocabularies([min(len(items) // 6 + 1, MAX_STORES_PER_CLUSTER) for items in catalog.cluster_items],
                          rng, taken)
    stores = [[word + rng.choice(_STORE_SUFFIXES) for word in words] for words in names]
    files = {meta_file(c): FileCounts(kind=KIND_ITEMS, category=c) for c in categories}
    paths = [out_dir / meta_file(c) for c in categories] + [out_dir / TRUTH_DIR / ITEMS_TRUTH]
    with _sinks(paths) as sinks:
        *meta_sinks, truth_sink = sinks
        truth_sink.write(f"{ITEM_ID},{CLUSTER},{CATEGORY}\n")
        buffers: list[list[str]] = [[] for _ in categories]
        for item in range(catalog.size):
            c = int(catalog.category[item])
            buffers[c].append(json.dumps(_meta_row(item, catalog, categories[c], stores, tally, rng)) + "\n")
            truth_sink.write(f"{catalog.parent_ids[item]},{int(catalog.cluster[item])},{categories[c]}\n")
            files[meta_file(categories[c])].rows += 1
        for sink, lines in zip(meta_sinks, buffers):
            sink.write("".join(lines))
    return files


def _knob(name: str, value: float | int | None, settings: SynthSettings, default: float | int) -> Any:
    """Explicit argument, else the settings field (once it exists), else the module default."""
    return value if value is not None else getattr(settings, name, default)


def generate(out_dir: Path, settings: SynthSettings, *, bad_line_rate: float | None = None, progress: bool = True,
             affinity: float | None = None, repeat_rate: float | None = None,
             chunk_size: int | None = None) -> SynthSummary:
    """Write a synthetic dump for ``settings`` under ``out_dir`` and return what was written.

    Files: ``<Category>.jsonl.gz`` and ``meta_<Category>.jsonl.gz`` per category, ``_truth/users.csv.gz``
    (user_id,cluster), ``_truth/items.csv.gz`` (parent_asin,cluster,category), ``_truth/summary.json``.
    ``bad_line_rate`` replaces that share of review lines with broken ones (kinds in :data:`BAD_KINDS`) and
    adds a few blank lines. Other files in ``out_dir`` are left alone; ours are replaced atomically.
    """
    bad_line_rate = float(_knob("bad_line_rate", bad_line_rate, settings, 0.0))
    affinity = float(_knob("affinity", affinity, settings, DEFAULT_AFFINITY))
    repeat_rate = float(_knob("repeat_rate", repeat_rate, settings, DEFAULT_REPEAT_RATE))
    chunk_size = int(_knob("chunk_size", chunk_size, settings, DEFAULT_CHUNK_SIZE))
    categories = list(settings.categories)
    _validate(categories, bad_line_rate, affinity, repeat_rate, chunk_size)

    out_dir = Path(out_dir)
    (out_dir / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(settings.seed)
    catalog_ss, users_ss, chunks_ss, meta_ss = root.spawn(4)
    catalog_rng = np.random.default_rng(catalog_ss)
    catalog = _build_catalog(settings, catalog_rng, random.Random(int(catalog_rng.integers(0, 2 ** 63))))
    users_rng = np.random.default_rng(users_ss)
    user_cluster = users_rng.integers(0, settings.clusters, settings.users)
    counts = _activity(settings.users, settings.reviews, settings.items, settings.clusters, users_rng)

    files = [FileCounts(kind=KIND_REVIEWS, category=c) for c in categories]
    tally = _Tally(item_reviews=np.zeros(catalog.size, np.int64), item_rating_sum=np.zeros(catalog.size))
    paths = [out_dir / reviews_file(c) for c in categories] + [out_dir / TRUTH_DIR / USERS_TRUTH]
    with _sinks(paths) as sinks, tqdm(total=settings.reviews, unit="review", disable=not progress,
                                      desc="synth reviews") as bar:
        *review_sinks, users_sink = sinks
        users_sink.write(f"{USER_ID},{CLUSTER}\n")
        for number, (start, end) in enumerate(_chunk_bounds(counts, chunk_size)):
            rng = np.random.default_rng(np.random.SeedSequence(chunks_ss.entropy,
                                                               spawn_key=(*chunks_ss.spawn_key, number)))
            bar.update(_write_chunk(start, end, counts, user_cluster, catalog, affinity, repeat_rate,
                                    bad_line_rate, rng, review_sinks, users_sink, files, tally))

    meta_counts = _write_meta(out_dir, categories, catalog, tally,
                              random.Random(int(np.random.default_rng(meta_ss).integers(0, 2 ** 63))))
    bad_total = {kind: sum(f.bad_lines.get(kind, 0) for f in files) for kind in BAD_KINDS}
    summary = SynthSummary(
        out_dir=str(out_dir), seed=settings.seed, users=settings.users, reviewers=tally.reviewers,
        items=catalog.size, reviews=sum(f.rows for f in files), repeated_reviews=tally.repeated,
        blank_lines=sum(f.blank_lines for f in files), bad_lines={k: v for k, v in bad_total.items() if v},
        files={**{reviews_file(c): f for c, f in zip(categories, files)}, **meta_counts},
    )
    (out_dir / TRUTH_DIR / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    return summary


def _validate(categories: list[str], bad_line_rate: float, affinity: float, repeat_rate: float,
              chunk_size: int) -> None:
    """Refuse settings that would write files a reader cannot tell apart, or nonsense rates."""
    if not categories:
        raise ValueError("at least one category is needed")
    if len(set(categories)) != len(categories):
        raise ValueError(f"duplicate categories: {categories}")
    for name in categories:
        if not name or "/" in name or name.startswith((".", META_PREFIX, "_")):
            raise ValueError(f"bad category name: {name!r}")
    for label, rate in (("bad_line_rate", bad_line_rate), ("affinity", affinity), ("repeat_rate", repeat_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{label} must be within [0, 1], got {rate}")
    if bad_line_rate >= 1.0:
        raise ValueError("bad_line_rate must be below 1")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")


def load_truth(out_dir: Path) -> tuple[dict[str, int], dict[str, tuple[int, str]]]:
    """The planted clusters: ``users[user_id] = cluster``, ``items[parent_asin] = (cluster, category)``."""
    truth = Path(out_dir) / TRUTH_DIR
    users: dict[str, int] = {}
    with gzip.open(truth / USERS_TRUTH, "rt", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            uid, cluster = line.rstrip("\n").split(",")
            users[uid] = int(cluster)
    items: dict[str, tuple[int, str]] = {}
    with gzip.open(truth / ITEMS_TRUTH, "rt", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            asin, cluster, category = line.rstrip("\n").split(",")
            items[asin] = (int(cluster), category)
    return users, items

"""Synthetic Amazon Reviews 2023 dump with planted clusters, byte-compatible with the official raw files.

Why it exists: the real dump is too large for CI and carries no ground truth. This module writes
``<Category>.jsonl.gz`` (reviews) and ``meta_<Category>.jsonl.gz`` (items) in the official key order and
JSON formatting (Python ``json.dumps`` defaults, as the official files use: ``", "``/``": "`` separators,
non-ASCII escaped as ``\\uXXXX``), plus ``_truth/`` files naming the latent cluster of every user and item,
so tests can check that a recommender recovers structure that is known to be there.

Shape (close to the real Amazon Reviews 2023 files): power-law user activity (most users have
1-2 reviews) and item popularity, several asins per ``parent_asin``, ~1.5 % repeated (user, parent_asin)
pairs, timestamps in ms mostly over 2018-2023 so the official cut points give non-empty train/valid/test,
ratings skewed to 5, ``helpful_vote`` mostly 0, ``verified_purchase`` mostly true. A user reviews an item
of their own cluster with probability ``affinity``, otherwise a globally popular one: a working
collaborative model beats popularity, a broken one does not.

Sequential mode (``sequential``): planted next-item chains for the session models. Each cluster's items are cut
into chains of ``chain_length``; a user walks chains of their own cluster (another one with probability
1 - ``affinity``), one item after the other in time, and with probability ``chain_noise`` jumps to a random item
instead of the next one (and walks on from there). Timestamps increase along each user's walk, so the next item
after a user's last training item is predictable from that item alone — what a sequence model has to learn.

Memory is bounded: users are processed in chunks of about ``chunk_size`` reviews (one user's reviews never
straddle a chunk, so repeats and reviewers are counted exactly per chunk) and lines stream to gzip; only
per-user and per-item arrays stay in RAM. Same arguments -> byte-identical files (gzip ``mtime=0``, no file
name in the header). The output depends on ``chunk_size`` too, so keep it fixed when comparing runs.
"""

from __future__ import annotations

import contextlib
import gzip
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
from recsys.constants import (
    CATEGORY, ITEM_ID, KIND_ITEMS, KIND_REVIEWS, META_FIELDS, META_PREFIX, RATING, REVIEW_FIELDS, TIMESTAMP,
    USER_ID,
)

# --- output layout -------------------------------------------------------------------------------
CLUSTER = "cluster"
TRUTH_DIR = "_truth"
USERS_TRUTH = "users.csv.gz"          # user_id,cluster (every user, reviewed or not)
ITEMS_TRUTH = "items.csv.gz"          # parent_asin,cluster,category
SUMMARY_FILE = "summary.json"         # SynthSummary.to_dict(), for the CLI and reconciling tests
JSONL_GZ = ".jsonl.gz"

# --- knobs not (yet) in SynthSettings: read from settings when present, else these defaults ------
DEFAULT_AFFINITY = 0.8                # P(a review goes to an item of the user's own cluster)
DEFAULT_REPEAT_RATE = 0.015           # share of review lines planted as a repeat of the user's previous pair
DEFAULT_CHUNK_SIZE = 100_000          # reviews sampled and encoded per step

# --- distributions (fixed: they shape realism, not experiments) ----------------------------------
ITEM_ZIPF_EXPONENT = 1.0              # popularity weight of the item ranked r is r ** -exponent
ACTIVITY_CAP_SHARE = 0.01             # no user writes more than ~1 % of all reviews (nor a cluster's worth)
DEDUPE_ROUNDS = 12                    # resampling rounds (half by popularity, half uniform within the
                                      # row's choice of cluster) before an accidental repeat is kept
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
MAX_STORES_PER_CLUSTER = 400
GZIP_LEVEL = 1                        # half the CPU of level 6 for ~20 % larger files: these are test inputs

# Kinds of deliberately broken review lines (each replaces one review line), counted in the summary.
BAD_KINDS = (
    "truncated_json",      # the line cut mid-object: not JSON at all
    "rating_zero",         # rating 0.0 (valid ratings are 1..5)
    "rating_six",          # rating 6.0
    "rating_nan",          # rating as the string "NaN"
    "missing_user_id",     # the user_id key absent
    "timestamp_string",    # timestamp as an ISO-8601 string instead of int ms
    "timestamp_seconds",   # timestamp in seconds: read as ms it falls in January 1970 (< 1990)
    "json_array",          # the values as a JSON array instead of an object
)

# Review lines are assembled from pre-encoded JSON pieces (much faster than json.dumps per row);
# the tests check that every good line equals json.dumps(json.loads(line)).
_REVIEW_TEMPLATE = "{" + ", ".join(f'"{name}": %s' for name in REVIEW_FIELDS) + "}\n"
_B32 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", dtype=np.uint8)
_B36 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_IMAGE_CHARS = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-", dtype=np.uint8)
_ASIN_SPACE = 36 ** 8
_ASIN_OFFSET = 1_234_567_891


# --- ids -----------------------------------------------------------------------------------------
def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that scatters consecutive indices."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def user_ids(indices: np.ndarray) -> np.ndarray:
    """Official-looking user ids (``<U28``) of user ``indices``: "A" + one of E-H + 26 base32 chars.

    Real ids are base32 of 17 bytes whose first byte is 0x01 (hence "A", then E-H, and a last char A or
    Q). We fill the other 16 bytes with two bijective mixes of the index, so the mapping is fixed
    (independent of the seed) and distinct indices always give distinct ids.
    """
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
    raw = np.empty((idx.size, 17), dtype=np.uint8)
    raw[:, 0] = 1
    raw[:, 1:9] = _mix64(idx * np.uint64(2)).astype(">u8").view(np.uint8).reshape(-1, 8)
    raw[:, 9:] = _mix64(idx * np.uint64(2) + np.uint64(1)).astype(">u8").view(np.uint8).reshape(-1, 8)
    bits = np.zeros((idx.size, 140), dtype=np.uint8)
    bits[:, :136] = np.unpackbits(raw, axis=1)
    groups = bits.reshape(-1, 28, 5) @ np.array([16, 8, 4, 2, 1], dtype=np.uint8)
    return np.ascontiguousarray(_B32[groups]).view("S28").reshape(-1).astype("U28")


def user_id_for(index: int) -> str:
    """The user id of one index (see :func:`user_ids`)."""
    return str(user_ids(np.array([index]))[0])


def _permute_asin_space(value: np.ndarray) -> np.ndarray:
    """A bijection of [0, 36**8): an invertible 42-bit mix, cycle-walked back into range."""
    mask = np.uint64((1 << 42) - 1)
    out = value.astype(np.uint64)
    todo = np.ones(out.size, dtype=bool)
    while todo.any():
        z = out[todo]
        z = (z * np.uint64(0x9E3779B97F4A7C15)) & mask      # odd multiplier: invertible mod 2**42
        z ^= z >> np.uint64(21)
        z = (z * np.uint64(0xBF58476D1CE4E5B9)) & mask
        z ^= z >> np.uint64(17)
        out[todo] = z
        todo[todo] = z >= np.uint64(_ASIN_SPACE)
    return out.astype(np.int64)


def asins(indices: np.ndarray) -> np.ndarray:
    """Official-looking asins (``<U10``): "B0" + 8 base-36 chars; distinct indices (< 36**8), distinct ids."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= _ASIN_SPACE):
        raise ValueError("asin index out of range [0, 36**8)")
    value = _permute_asin_space((idx + _ASIN_OFFSET) % _ASIN_SPACE)   # the offset keeps 0 off B000000000
    out = np.empty((idx.size, 10), dtype=np.uint8)
    out[:, 0], out[:, 1] = ord("B"), ord("0")
    for position in range(9, 1, -1):
        value, digit = np.divmod(value, 36)
        out[:, position] = _B36[digit]
    return out.view("S10").reshape(-1).astype("U10")


def asin_for(index: int) -> str:
    """The asin of one item slot (see :func:`asins`)."""
    return str(asins(np.array([index]))[0])


def _image_codes(rng: np.random.Generator, size: int) -> list[str]:
    """11-char image keys shaped like Amazon's (``61FfqGgIMNL``: digit 4-9, digit, 8 chars, "L")."""
    raw = np.empty((size, 11), dtype=np.uint8)
    raw[:, 0] = rng.integers(ord("4"), ord("9") + 1, size)
    raw[:, 1] = rng.integers(ord("0"), ord("9") + 1, size)
    raw[:, 2:10] = _IMAGE_CHARS[rng.integers(0, _IMAGE_CHARS.size, (size, 8))]
    raw[:, 10] = ord("L")
    return raw.view("S11").reshape(-1).astype("U11").tolist()


# --- summary -------------------------------------------------------------------------------------
@dataclass
class FileCounts:
    """Line counts of one written file; ``lines`` = rows + blank + bad, as a reader will count them."""

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


# --- text material -------------------------------------------------------------------------------
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
_COLORS = ("Black", "White", "Silver", "Multicolor", "Blue")
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
_TEXTS_PER_POOL = 12                  # texts per (cluster, rating): a review mentions its item's cluster words
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


def _review_images(codes: Sequence[str]) -> str:
    """A non-empty review ``images`` list, pre-encoded, in the official review image dict shape."""
    images = []
    for code in codes:
        base = f"https://images-na.ssl-images-amazon.com/images/I/{code}"
        images.append({"small_image_url": f"{base}._SL256_.jpg", "medium_image_url": f"{base}._SL800_.jpg",
                       "large_image_url": f"{base}._SL1600_.jpg", "attachment_type": "IMAGE"})
    return json.dumps(images)


def _meta_images(codes: Sequence[str], rng: random.Random) -> list[dict[str, str | None]]:
    """The meta ``images`` list: MAIN first, then PT11.. variants; ``hi_res`` sometimes null as in the dump."""
    images: list[dict[str, str | None]] = []
    for n, (code, hi_code) in enumerate(zip(codes[::2], codes[1::2])):
        hi_res = None if rng.random() < 0.1 else f"https://m.media-amazon.com/images/I/{hi_code}._AC_SL1500_.jpg"
        images.append({"thumb": f"https://m.media-amazon.com/images/I/{code}._AC_US40_.jpg",
                       "large": f"https://m.media-amazon.com/images/I/{code}._AC_.jpg",
                       "variant": "MAIN" if n == 0 else f"PT{10 + n}", "hi_res": hi_res})
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


# --- catalogue -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Catalog:
    """Per-item arrays and pre-encoded text pools; nothing here grows with the number of reviews."""

    cluster: np.ndarray             # item -> cluster
    category: np.ndarray            # item -> category index
    pop_cdf: np.ndarray             # cumulative popularity weights over all items
    cluster_items: list[np.ndarray]
    cluster_cdf: list[np.ndarray]   # cumulative popularity within each cluster
    parent_ids: list[str]
    parent_json: list[str]          # '"B0..."'
    variant_start: np.ndarray       # item -> first index into variant_json
    variant_count: np.ndarray
    variant_json: list[str]         # pre-encoded asins of every variant
    vocab: list[list[str]]
    text_json: list[str]            # review texts; pool (cluster c, rating r) at (c * 5 + r - 1) * _TEXTS_PER_POOL
    title_json: list[str]           # review titles; ratings r start at title_offset[r]
    title_offset: np.ndarray
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

    # Variants: most parents have one asin, some up to 8; the parent id itself is an asin about half the time.
    variant_count = np.where(rng.random(n) < 0.75, 1, np.minimum(2 + rng.geometric(0.5, n), 8))
    parent_is_asin = rng.random(n) < 0.45
    variant_start = np.concatenate(([0], np.cumsum(variant_count)[:-1]))
    parents = asins(np.arange(n))
    own_slot = np.zeros(int(variant_count.sum()), dtype=bool)
    own_slot[variant_start[parent_is_asin]] = True
    variant_ids = np.empty(own_slot.size, dtype="U10")
    variant_ids[own_slot] = parents[parent_is_asin]
    variant_ids[~own_slot] = asins(n + np.arange(int((~own_slot).sum())))   # slots after the parents'
    parent_ids = parents.tolist()

    vocab = _vocabularies([12] * k, text_rng, set())
    text_json = []
    for words in vocab:
        for rating in range(1, 6):
            templates = _REVIEW_TEXTS[rating]
            for j in range(_TEXTS_PER_POOL):
                a, b = text_rng.sample(words, 2)
                text_json.append(json.dumps(templates[j % len(templates)].format(a=a, b=b.lower())))
    title_count = np.array([0] + [len(_REVIEW_TITLES[r]) for r in range(1, 6)])   # indexed by rating
    return _Catalog(
        cluster=cluster, category=category, pop_cdf=np.cumsum(weight), cluster_items=cluster_items,
        cluster_cdf=[np.cumsum(weight[items]) for items in cluster_items], parent_ids=parent_ids,
        parent_json=[f'"{p}"' for p in parent_ids], variant_start=variant_start, variant_count=variant_count,
        variant_json=[f'"{v}"' for v in variant_ids.tolist()], vocab=vocab, text_json=text_json,
        title_json=[json.dumps(t) for r in range(1, 6) for t in _REVIEW_TITLES[r]],
        title_offset=np.concatenate(([0], np.cumsum(title_count)[:-1])), title_count=title_count,
    )


# --- user activity -------------------------------------------------------------------------------
def _pareto_alpha(mean: float, cap: int) -> float:
    """Exponent a with sum_{k=1..cap} k**-a == mean, i.e. E[min(floor(X), cap)] for X ~ Pareto(a, x_min=1)."""
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
    instead of forcing them out of it for want of unseen items. With fewer reviews than users, ``reviews``
    users get one each and the rest none.
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


# --- review sampling -----------------------------------------------------------------------------
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
            if uniform:
                picks = rng.integers(0, pool.size, rows.size)
            else:
                picks = _sample(catalog.cluster_cdf[k], rng, rows.size)
            items[rows] = pool[picks]
    return items


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where ``keys[i]`` did not occur earlier in the array."""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _draw_pairs(user: np.ndarray, user_cluster: np.ndarray, catalog: _Catalog, affinity: float,
                repeat_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Items for one chunk of user-grouped rows: sampled, de-duplicated per user, then repeats planted.

    Repeats are controlled: accidental ones are resampled, then about ``repeat_rate`` of the rows copy the
    previous row's item of the same user (the real Subscription_Boxes file has ~1.6 % such lines).
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


@dataclass(frozen=True)
class _Chains:
    """Each cluster's items cut into chains: ``following[i]`` is the item after i in its chain (-1 at an end)."""

    following: np.ndarray
    starts: list[np.ndarray]          # per cluster, the first item of each chain
    noise: float


def _build_chains(catalog: _Catalog, length: int, noise: float, rng: np.random.Generator) -> _Chains:
    following = np.full(catalog.size, -1, dtype=np.int64)
    starts = []
    for items in catalog.cluster_items:
        order = rng.permutation(items)
        chains = [order[i:i + length] for i in range(0, len(order), length)]
        for chain in chains:
            following[chain[:-1]] = chain[1:]
        starts.append(np.array([chain[0] for chain in chains], dtype=np.int64))
    return _Chains(following, starts, noise)


def _walk_chains(user: np.ndarray, user_cluster: np.ndarray, catalog: _Catalog, chains: _Chains, affinity: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Items for one chunk of user-grouped rows, each user's rows one walk along chains (module docstring), no item
    twice per user."""
    items = np.empty(len(user), dtype=np.int64)
    bounds = np.flatnonzero(np.append(True, user[1:] != user[:-1]))
    for first, stop in zip(bounds, np.append(bounds[1:], len(user))):
        taken: set[int] = set()
        current = -1
        for row in range(first, stop):
            step = int(chains.following[current]) if current >= 0 else -1
            if step < 0 or step in taken or rng.random() < chains.noise:
                own = rng.random() < affinity
                pool = chains.starts[int(user_cluster[row])] if own else np.arange(catalog.size)
                fresh = [int(i) for i in pool if int(i) not in taken] or \
                        [i for i in range(catalog.size) if i not in taken]
                step = fresh[int(rng.integers(len(fresh)))]
            items[row] = current = step
            taken.add(step)
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
    index = np.where(own, np.searchsorted(cdf_own, draw * cdf_own[-1], side="right"),
                     np.searchsorted(cdf_other, draw * cdf_other[-1], side="right"))
    return 1 + index.clip(0, 4)


def _bad_line(kind: str, values: dict[str, Any], rng: random.Random) -> str:
    """One deliberately broken review line of ``kind`` (no newline), built from a good row's values."""
    if kind == "truncated_json":
        text = json.dumps(values)
        return text[: rng.randrange(1, len(text) - 1)]
    if kind == "json_array":
        return json.dumps(list(values.values()))
    broken = dict(values)
    if kind == "rating_zero":
        broken[RATING] = 0.0
    elif kind == "rating_six":
        broken[RATING] = 6.0
    elif kind == "rating_nan":
        broken[RATING] = "NaN"
    elif kind == "missing_user_id":
        del broken[USER_ID]
    elif kind == "timestamp_string":
        moment = datetime.fromtimestamp(values[TIMESTAMP] / 1000, tz=timezone.utc)
        broken[TIMESTAMP] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif kind == "timestamp_seconds":
        broken[TIMESTAMP] = values[TIMESTAMP] // 1000
    else:
        raise ValueError(f"unknown bad line kind: {kind}")
    return json.dumps(broken)


# --- files ---------------------------------------------------------------------------------------
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
    """Open several sinks; commit all on success, remove every partial file on error."""
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
    """File name of a category's reviews, as in the dump."""
    return f"{category}{JSONL_GZ}"


def meta_file(category: str) -> str:
    """File name of a category's item metadata, as in the dump."""
    return f"{META_PREFIX}{category}{JSONL_GZ}"


# --- generation ----------------------------------------------------------------------------------
@dataclass
class _Tally:
    """Running totals that the meta rows and the summary need (per-item arrays only)."""

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
        end = min(len(counts), max(start + 1, int(np.searchsorted(ends, base + chunk_size, side="right"))))
        yield start, end
        start = end


def _write_chunk(start: int, end: int, counts: np.ndarray, user_cluster: np.ndarray, catalog: _Catalog,
                 affinity: float, repeat_rate: float, bad_line_rate: float, rng: np.random.Generator,
                 review_sinks: list[_GzipText], users_sink: _GzipText, files: list[FileCounts],
                 tally: _Tally, chains: _Chains | None = None) -> int:
    """Sample, encode and write the reviews of users ``start..end-1``; return the number of review lines."""
    ids = user_ids(np.arange(start, end)).tolist()
    users_sink.write("".join(f"{uid},{c}\n" for uid, c in zip(ids, user_cluster[start:end].tolist())))
    user = np.repeat(np.arange(start, end), counts[start:end])
    n = len(user)
    if n == 0:
        return 0
    ucl = user_cluster[user]
    if chains is None:
        items = _draw_pairs(user, ucl, catalog, affinity, repeat_rate, rng)
    else:
        items = _walk_chains(user, ucl, catalog, chains, affinity, rng)
    icl = catalog.cluster[items]
    rating = _ratings(icl == ucl, rng)
    stamp = _timestamps(rng, n)
    if chains is not None:           # each user's rows in walk order, so their times increase along it
        stamp = stamp[np.lexsort((stamp, user))]
    helpful = np.where(rng.random(n) < HELPFUL_ZERO_SHARE, 0, np.minimum(rng.zipf(1.8, n), 5000))
    verified = (rng.random(n) < VERIFIED_SHARE).astype(np.int64)
    asin = catalog.variant_start[items] + (rng.random(n) * catalog.variant_count[items]).astype(np.int64)
    title = catalog.title_offset[rating] + (rng.random(n) * catalog.title_count[rating]).astype(np.int64)
    text = (icl * 5 + rating - 1) * _TEXTS_PER_POOL + rng.integers(0, _TEXTS_PER_POOL, n)
    with_images = np.flatnonzero(rng.random(n) < REVIEW_IMAGE_SHARE)
    image_counts = np.minimum(rng.geometric(0.6, with_images.size), 10)
    bad = rng.random(n) < bad_line_rate
    kind = rng.integers(0, len(BAD_KINDS), n)
    blank = rng.random(n) < bad_line_rate * BLANK_LINE_SHARE
    category = catalog.category[items]

    images = ["[]"] * n
    codes = _image_codes(rng, int(image_counts.sum()))
    for row, stop, count in zip(with_images.tolist(), np.cumsum(image_counts).tolist(), image_counts.tolist()):
        images[row] = _review_images(codes[stop - count:stop])
    user_json = [f'"{uid}"' for uid in ids]
    title_json, text_json, variant_json, parent_json = (catalog.title_json, catalog.text_json,
                                                        catalog.variant_json, catalog.parent_json)
    lines = [_REVIEW_TEMPLATE % (_RATING_TEXT[r], title_json[ti], text_json[tx], im, variant_json[a],
                                 parent_json[it], user_json[u], ts, hv, _BOOL_TEXT[vp])
             for r, ti, tx, im, a, it, u, ts, hv, vp in zip(
                 rating.tolist(), title.tolist(), text.tolist(), images, asin.tolist(), items.tolist(),
                 (user - start).tolist(), stamp.tolist(), helpful.tolist(), verified.tolist())]
    str_rng = random.Random(int(rng.integers(0, 2 ** 63)))
    for row in np.flatnonzero(bad).tolist():
        values = json.loads(lines[row])
        lines[row] = _bad_line(BAD_KINDS[kind[row]], values, str_rng) + "\n"
    for row in np.flatnonzero(blank).tolist():
        lines[row] = "\n" + lines[row]

    n_cat = len(files)
    good = ~bad
    good_per_cat = np.bincount(category[good], minlength=n_cat)
    blank_per_cat = np.bincount(category[blank], minlength=n_cat)
    bad_per_cat = np.bincount(category[bad] * len(BAD_KINDS) + kind[bad], minlength=n_cat * len(BAD_KINDS))
    order = np.argsort(category, kind="stable")
    for c, rows in enumerate(np.split(order, np.cumsum(np.bincount(category, minlength=n_cat))[:-1])):
        review_sinks[c].write("".join([lines[row] for row in rows.tolist()]))
        counts_of = files[c]
        counts_of.rows += int(good_per_cat[c])
        counts_of.blank_lines += int(blank_per_cat[c])
        for name, found in zip(BAD_KINDS, bad_per_cat[c * len(BAD_KINDS):(c + 1) * len(BAD_KINDS)].tolist()):
            if found:
                counts_of.bad_lines[name] = counts_of.bad_lines.get(name, 0) + found

    keys = user[good] * catalog.size + items[good]
    tally.repeated += int(keys.size - np.unique(keys).size)
    tally.reviewers += int(np.unique(user[good]).size)
    tally.item_reviews += np.bincount(items[good], minlength=catalog.size)
    tally.item_rating_sum += np.bincount(items[good], weights=rating[good], minlength=catalog.size)
    return n


def _meta_row(item: int, catalog: _Catalog, category: str, stores: list[list[str]], tally: _Tally,
              codes: Sequence[str], rng: random.Random) -> dict[str, Any]:
    """One meta object in the official key order; ``rating_number``/``average_rating`` agree with the reviews."""
    k = int(catalog.cluster[item])
    words = catalog.vocab[k]
    noun = rng.choice(_NOUNS.get(category, _GENERIC_NOUNS))
    a, b, c = rng.sample(words, 3)
    store = rng.choice(stores[k])
    spec = f" \u2013 {rng.choice(_SPECS)}" if rng.random() < 0.35 else ""
    seen, total = int(tally.item_reviews[item]), float(tally.item_rating_sum[item])
    unseen = int(rng.expovariate(1 / (3 * seen + 2))) + (0 if seen else 1)   # star ratings without a review
    quality = min(5.0, max(1.0, rng.gauss(4.2, 0.5)))
    details: dict[str, str] = {}
    if rng.random() < 0.8:
        details["Brand"] = store
        if rng.random() < 0.6:
            details["Color"] = rng.choice(_COLORS)
        if rng.random() < 0.5:
            details["Item Weight"] = f"{rng.uniform(0.1, 12):.1f} pounds"
        day = datetime(rng.randrange(2010, 2023), rng.randrange(1, 13), rng.randrange(1, 29))
        details["Date First Available"] = f"{day:%B} {day.day}, {day.year}"
    values: dict[str, Any] = {
        "main_category": _pretty(category),
        "title": f"{store.split(' ')[0]} {a} {b} {noun}{spec}",
        "average_rating": round((total + unseen * quality) / (seen + unseen), 1),
        "rating_number": seen + unseen,
        "features": [f"{w} {noun.lower()} made for everyday use."
                     for w in rng.sample(words, rng.choice((0, 2, 3, 4, 5)))],
        "description": [] if rng.random() < 0.7 else [f"The {a} {c} {noun.lower()} you have been waiting for."],
        "price": _price(rng),
        "images": _meta_images(codes[: 2 * rng.choice((1, 2, 3, 4, 5, 5, 6, 6, 7, 8))], rng),
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


def _write_meta(meta_sinks: list[_GzipText], truth_sink: _GzipText, categories: list[str], catalog: _Catalog,
                tally: _Tally, rng: np.random.Generator) -> dict[str, FileCounts]:
    """Meta and item-truth files; stores are per cluster, so brands carry the cluster signal too."""
    text_rng = random.Random(int(rng.integers(0, 2 ** 63)))
    taken = {word for words in catalog.vocab for word in words}
    names = _vocabularies([min(len(items) // 6 + 1, MAX_STORES_PER_CLUSTER) for items in catalog.cluster_items],
                          text_rng, taken)
    stores = [[word + text_rng.choice(_STORE_SUFFIXES) for word in words] for words in names]
    files = {meta_file(c): FileCounts(kind=KIND_ITEMS, category=c) for c in categories}
    block = 10_000
    truth_sink.write(f"{ITEM_ID},{CLUSTER},{CATEGORY}\n")
    for first in range(0, catalog.size, block):
        last = min(first + block, catalog.size)
        codes = _image_codes(rng, 16 * (last - first))       # up to 8 images x (thumb/large, hi_res)
        out: list[list[str]] = [[] for _ in categories]
        for item in range(first, last):
            c = int(catalog.category[item])
            row = _meta_row(item, catalog, categories[c], stores, tally,
                            codes[16 * (item - first):16 * (item - first + 1)], text_rng)
            out[c].append(json.dumps(row) + "\n")
        for c, lines in enumerate(out):
            meta_sinks[c].write("".join(lines))
            files[meta_file(categories[c])].rows += len(lines)
        truth_sink.write("".join(f"{catalog.parent_ids[i]},{int(catalog.cluster[i])},"
                                 f"{categories[int(catalog.category[i])]}\n" for i in range(first, last)))
    return files


def _knob(name: str, value: float | int | None, settings: SynthSettings, default: float | int) -> Any:
    """Explicit argument, else the settings field (once it exists there), else the module default."""
    return value if value is not None else getattr(settings, name, default)


def _validate(categories: list[str], bad_line_rate: float, affinity: float, repeat_rate: float,
              chunk_size: int) -> None:
    """Refuse settings that would write files a reader cannot tell apart, or rates outside [0, 1]."""
    if not categories:
        raise ValueError("at least one category is needed")
    if len(set(categories)) != len(categories):
        raise ValueError(f"duplicate categories: {categories}")
    for name in categories:
        if not name or "/" in name or "," in name or name.startswith((".", "_", META_PREFIX)):
            raise ValueError(f"bad category name: {name!r}")
    for label, rate in (("bad_line_rate", bad_line_rate), ("affinity", affinity), ("repeat_rate", repeat_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{label} must be within [0, 1], got {rate}")
    if bad_line_rate >= 1.0:
        raise ValueError("bad_line_rate must be below 1")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")


def generate(out_dir: Path, settings: SynthSettings, *, bad_line_rate: float | None = None, progress: bool = True,
             affinity: float | None = None, repeat_rate: float | None = None,
             chunk_size: int | None = None) -> SynthSummary:
    """Write a synthetic dump for ``settings`` under ``out_dir`` and return what was written.

    Files: ``<Category>.jsonl.gz`` and ``meta_<Category>.jsonl.gz`` per category, ``_truth/users.csv.gz``
    (user_id,cluster), ``_truth/items.csv.gz`` (parent_asin,cluster,category), ``_truth/summary.json``.
    ``bad_line_rate`` (default 0) replaces that share of review lines with broken ones (kinds in
    :data:`BAD_KINDS`) and adds a fifth as many blank lines. Unset knobs come from ``settings`` when it has
    them, else the module defaults. Other files in ``out_dir`` are left alone; ours are replaced atomically.
    """
    bad_line_rate = float(_knob("bad_line_rate", bad_line_rate, settings, 0.0))
    affinity = float(_knob("affinity", affinity, settings, DEFAULT_AFFINITY))
    repeat_rate = float(_knob("repeat_rate", repeat_rate, settings, DEFAULT_REPEAT_RATE))
    chunk_size = int(_knob("chunk_size", chunk_size, settings, DEFAULT_CHUNK_SIZE))
    categories = list(settings.categories)
    _validate(categories, bad_line_rate, affinity, repeat_rate, chunk_size)

    out_dir = Path(out_dir)
    (out_dir / TRUTH_DIR).mkdir(parents=True, exist_ok=True)
    catalog_ss, users_ss, chunks_ss, meta_ss = np.random.SeedSequence(settings.seed).spawn(4)
    catalog_rng = np.random.default_rng(catalog_ss)
    catalog = _build_catalog(settings, catalog_rng, random.Random(int(catalog_rng.integers(0, 2 ** 63))))
    users_rng = np.random.default_rng(users_ss)
    user_cluster = users_rng.integers(0, settings.clusters, settings.users)
    counts = _activity(settings.users, settings.reviews, settings.items, settings.clusters, users_rng)

    files = [FileCounts(kind=KIND_REVIEWS, category=c) for c in categories]
    tally = _Tally(item_reviews=np.zeros(catalog.size, np.int64), item_rating_sum=np.zeros(catalog.size))
    n_cat = len(categories)
    paths = ([out_dir / reviews_file(c) for c in categories] + [out_dir / meta_file(c) for c in categories]
             + [out_dir / TRUTH_DIR / USERS_TRUTH, out_dir / TRUTH_DIR / ITEMS_TRUTH])
    # All files are committed together at the end: a failed run leaves the previous dump (or nothing).
    chains = (_build_chains(catalog, settings.chain_length, settings.chain_noise, catalog_rng)
              if settings.sequential else None)
    with _sinks(paths) as sinks:
        review_sinks, meta_sinks, (users_sink, items_sink) = sinks[:n_cat], sinks[n_cat:2 * n_cat], sinks[-2:]
        users_sink.write(f"{USER_ID},{CLUSTER}\n")
        with tqdm(total=settings.reviews, unit="review", disable=not progress, desc="synth reviews") as bar:
            for number, (start, end) in enumerate(_chunk_bounds(counts, chunk_size)):
                # One stream per chunk, keyed by its number: chunks stay independent of each other's draws.
                rng = np.random.default_rng(np.random.SeedSequence(chunks_ss.entropy,
                                                                   spawn_key=(*chunks_ss.spawn_key, number)))
                bar.update(_write_chunk(start, end, counts, user_cluster, catalog, affinity, repeat_rate,
                                        bad_line_rate, rng, review_sinks, users_sink, files, tally, chains))
        meta_counts = _write_meta(meta_sinks, items_sink, categories, catalog, tally,
                                  np.random.default_rng(meta_ss))
    bad_total = {kind: sum(f.bad_lines.get(kind, 0) for f in files) for kind in BAD_KINDS}
    summary = SynthSummary(
        out_dir=str(out_dir), seed=settings.seed, users=settings.users, reviewers=tally.reviewers,
        items=catalog.size, reviews=sum(f.rows for f in files), repeated_reviews=tally.repeated,
        blank_lines=sum(f.blank_lines for f in files), bad_lines={k: v for k, v in bad_total.items() if v},
        files={**{reviews_file(c): f for c, f in zip(categories, files)}, **meta_counts},
    )
    (out_dir / TRUTH_DIR / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


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

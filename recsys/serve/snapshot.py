"""Serving snapshot: the published version of the gold ``recs_*`` tables as memory-mapped ``.npy`` arrays.

Why this shape: every gunicorn worker maps the same files, so the page cache holds one copy however many workers
run (measured at 1.8M users x 20: a 354 MB snapshot, ~80 MB private per worker, ~550 MB PSS for 2 workers),
start-up is a few ``np.load(mmap_mode="r")`` calls, and a lookup is a binary search over sorted fixed-width ids
(O(log n), no per-request I/O beyond the page cache).

Layout of ``<snapshot_dir>/<version>/`` (CSR = ``offsets[i]:offsets[i+1]`` slices a row's entries, in rank order):

- ``items.npy`` ``S{w}`` sorted parent_asin vocabulary; every other array refers to items by index in it.
- ``categories.npy`` ``S{w}`` sorted category names (``__all__`` included); ``item_category.npy`` ``int16`` code
  per item (-1 unknown).
- ``users.npy`` ``S{w}`` sorted user ids; ``user_offsets.npy`` ``int64[n+1]``; ``user_items.npy`` ``int32``;
  ``user_scores.npy`` ``float32``; ``user_model.npy`` ``uint8`` code into ``meta.json["models"]``.
- ``similar_<method>_{offsets,items,scores}.npy``: CSR over the item vocabulary, one set per method.
- ``popular_{offsets,items,scores}.npy``: CSR over the category vocabulary.
- ``session_*.npy``, ``user_known_*.npy``: the session endpoint's scorer, re-keyed onto ``items.npy``, and each
  user's known items (:mod:`recsys.serve.session_build`).
- ``meta.json``: version, model, run_id, published_at, counts, ``session`` (the scorer chosen). Written last: a
  folder without it is incomplete.

A build writes into a temporary folder and renames it into place (atomic on one filesystem), under an exclusive
``flock`` so that one process builds while the others wait, then points ``current`` at it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
from deltalake import DeltaTable

from recsys.constants import (
    CATEGORY, ITEM_ID, MODEL, PUBLISHED, RANK, RECS_POPULAR, RECS_SIMILAR_ITEMS, RECS_USER_TOPK, SCORE,
    SILVER_ITEMS, USER_ID, VERSION,
)
from recsys.delta import log_version, read_table
from recsys.ops import Published, current_published
from recsys.serve import session_build
from recsys.serve.denylist import load_denylist
from recsys.serve.session_scoring import session_scorer

log = logging.getLogger(__name__)

FORMAT = 1
META = "meta.json"
CURRENT = "current"
LOCK = ".build.lock"
ALL_CATEGORIES = "__all__"
METHODS = ("als", "content")          # preference order when a request names none
SIMILAR_ASIN = "similar_asin"
METHOD = "method"
_SAFE_DIR = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,99}$")
_STRING_BLOCK = 1 << 20               # strings converted per block (bounds the temporary index arrays)


class NoPublishedVersion(RuntimeError):
    """``ops/published`` is missing or empty: there is nothing to serve yet."""


def folder_name(version: str) -> str:
    """The version itself when it is a safe file name, else a stable digest of it."""
    if _SAFE_DIR.fullmatch(version):
        return version
    return "v-" + hashlib.sha256(version.encode("utf-8")).hexdigest()[:32]


# --- building ------------------------------------------------------------------------------------------------


def fixed_width(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow strings (no nulls) as a numpy ``S{w}`` array, ``w`` = longest UTF-8 length, vectorised.

    Copies each string's bytes to ``row * w + position`` of a zeroed buffer in blocks of ``_STRING_BLOCK`` strings,
    so 1.8M ids take a fraction of a second and no Python object per id.
    """
    arr = pc.cast(strings, pa.large_binary())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype="S1")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(1, int(lengths.max()))
    out = np.zeros(n * width, dtype=np.uint8)
    for lo in range(0, n, _STRING_BLOCK):
        hi = min(n, lo + _STRING_BLOCK)
        lens = lengths[lo:hi]
        shift = np.arange(lo, hi, dtype=np.int64) * width - offsets[lo:hi]
        src = np.arange(offsets[lo], offsets[hi], dtype=np.int64)
        out[src + np.repeat(shift, lens)] = data[offsets[lo]:offsets[hi]]
    return out.view(f"S{width}")


class _Vocabulary:
    """Sorted unique strings as ``S{w}``, and a coder from string columns to int32 indices into it.

    Columns are read dictionary-encoded (Parquet stores them so), so the unique values are found from the chunk
    dictionaries and each chunk is coded by mapping its small dictionary once, then gathering with its indices:
    36M rows never become 36M Python or Arrow strings.
    """

    def __init__(self, columns: list[pa.ChunkedArray]):
        unique = pc.unique(pa.chunked_array(
            [_large(_values(chunk)) for column in columns for chunk in column.chunks], type=pa.large_string()))
        unique = unique.drop_null()
        fixed = fixed_width(unique)
        order = np.argsort(fixed, kind="stable")
        self.fixed: np.ndarray = fixed[order]
        self._arrow = unique.take(pa.array(order))

    def __len__(self) -> int:
        return len(self.fixed)

    def index_of(self, value: str) -> int:
        """Index of ``value`` (-1 when absent)."""
        raw = value.encode("utf-8")
        i = int(np.searchsorted(self.fixed, raw)) if len(raw) <= self.fixed.dtype.itemsize else len(self.fixed)
        return i if i < len(self.fixed) and self.fixed[i] == raw else -1

    def compact(self, *coded: np.ndarray) -> list[np.ndarray]:
        """Keep only the values some array in ``coded`` uses; return those arrays recoded.

        A filtered dictionary column still carries its whole dictionary (other versions' ids, dropped rows), so
        the vocabulary is cut down to what the kept rows reference: an id is served only if it has rows.
        """
        present = np.zeros(len(self.fixed) + 1, dtype=bool)       # last slot absorbs -1 (unknown)
        for codes in coded:
            present[codes] = True
        present = present[:-1]
        remap = np.full(len(present) + 1, -1, dtype=np.int32)    # last slot: -1 stays -1
        remap[:-1] = np.cumsum(present, dtype=np.int64) - 1
        self.fixed = self.fixed[present]
        self._arrow = self._arrow.filter(pa.array(present))
        return [remap[codes] for codes in coded]

    def codes(self, column: pa.ChunkedArray) -> np.ndarray:
        """int32 code of every value; -1 where the value is not in the vocabulary (or null).

        One ``index_in`` call over every chunk's dictionary (the lookup table is built once), then a gather per
        chunk through its indices.
        """
        carriers = [_large(_values(chunk)) for chunk in column.chunks]
        if not carriers:
            return np.zeros(0, dtype=np.int32)
        looked_up = pc.index_in(pa.chunked_array(carriers, type=pa.large_string()), value_set=self._arrow)
        mapped = np.asarray(looked_up.fill_null(-1).to_numpy(), dtype=np.int32)
        out = np.empty(len(column), dtype=np.int32)
        pos = start = 0
        for chunk, carrier in zip(column.chunks, carriers):
            mapping = mapped[start:start + len(carrier)]
            start += len(carrier)
            if pa.types.is_dictionary(chunk.type):
                indices = chunk.indices
                indices = (indices.fill_null(0) if indices.null_count else indices).to_numpy(zero_copy_only=False)
                codes = mapping[indices] if len(mapping) else np.full(len(chunk), -1, np.int32)
                if chunk.null_count:
                    codes = np.where(chunk.is_valid().to_numpy(zero_copy_only=False), codes, -1)
                out[pos:pos + len(chunk)] = codes
            else:
                out[pos:pos + len(chunk)] = mapping
            pos += len(chunk)
        return out


def _values(chunk: pa.Array) -> pa.Array:
    """The distinct-value carrier of a chunk: its dictionary when dictionary-encoded, else the chunk itself."""
    return chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk


def _large(values: pa.Array) -> pa.Array:
    return values if values.type == pa.large_string() else pc.cast(values, pa.large_string())


def _csr(keys: np.ndarray, ranks: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, offsets): row order sorted by (key, rank), and CSR offsets over ``n_keys`` keys.

    Publishers usually write each key's rows together in rank order (a window per user); then the order is
    found in O(n) by sorting the runs only. Otherwise one argsort of the packed (key, rank) int64.
    """
    n = len(keys)
    offsets = np.zeros(n_keys + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n_keys), out=offsets[1:])
    if n == 0:
        return np.zeros(0, dtype=np.int64), offsets
    boundary = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate(([0], boundary))
    rank_steps = np.diff(ranks)
    grouped = len(starts) == np.count_nonzero(np.diff(offsets)) and np.all(
        np.delete(rank_steps, boundary - 1) > 0)
    if grouped:
        lengths = np.diff(np.append(starts, n))
        run_order = np.argsort(keys[starts], kind="stable")
        run_lengths = lengths[run_order]
        shift = starts[run_order] - (np.cumsum(run_lengths) - run_lengths)
        return np.repeat(shift, run_lengths) + np.arange(n, dtype=np.int64), offsets
    packed = (keys.astype(np.int64) << 32) | (ranks.astype(np.int64) & 0xFFFFFFFF)
    return np.argsort(packed, kind="stable"), offsets


def _np(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    return np.asarray(column.to_numpy(), dtype=dtype)


def _drop_nulls(table: pa.Table, columns: list[str]) -> pa.Table:
    """Rows whose ``columns`` are all set (the publisher writes none; checking costs only metadata then)."""
    mask = None
    for name in columns:
        if table[name].null_count:
            valid = pc.is_valid(table[name])
            mask = valid if mask is None else pc.and_(mask, valid)
    return table if mask is None else table.filter(mask)


def _read_version(path: Path, columns: list[str], version: str, not_null: list[str]) -> pa.Table:
    """Rows of one version, string columns dictionary-encoded as stored (no per-row string materialised)."""
    strings = {c for c in columns if c not in (RANK, SCORE)} | {VERSION}
    options = pds.ParquetReadOptions(dictionary_columns=strings)
    dataset = DeltaTable(str(path)).to_pyarrow_dataset(parquet_read_options=options)
    return _drop_nulls(dataset.to_table(columns=columns, filter=pc.field(VERSION) == version), not_null)


def _read_item_categories(warehouse: Path) -> pa.Table | None:
    """``silver/items`` (parent_asin, category) when present and readable; optional by design."""
    path = warehouse / SILVER_ITEMS
    if log_version(path) < 0:
        return None
    try:
        return _drop_nulls(read_table(path, [ITEM_ID, CATEGORY]), [ITEM_ID, CATEGORY])
    except Exception as exc:  # noqa: BLE001 - categories then come from recs_popular only
        log.warning("silver/items unreadable for item categories (%s); using recs_popular", exc)
        return None


def _write_arrays(folder: Path, warehouse: Path, published: Published) -> dict[str, object]:
    """Read the published version's rows and write every array into ``folder``; returns counts for meta.json."""
    v = published.version
    topk = _read_version(warehouse / RECS_USER_TOPK, [USER_ID, RANK, ITEM_ID, SCORE, MODEL], v,
                         [USER_ID, RANK, ITEM_ID])
    similar = _read_version(warehouse / RECS_SIMILAR_ITEMS, [ITEM_ID, RANK, SIMILAR_ASIN, SCORE, METHOD], v,
                            [ITEM_ID, RANK, SIMILAR_ASIN, METHOD])
    popular = _read_version(warehouse / RECS_POPULAR, [CATEGORY, RANK, ITEM_ID, SCORE], v, [CATEGORY, RANK, ITEM_ID])
    silver = _read_item_categories(warehouse)

    def save(name: str, array: np.ndarray) -> None:
        with open(folder / f"{name}.npy", "wb") as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
            _sync(handle)

    def scores(table: pa.Table, order: np.ndarray | slice) -> np.ndarray:
        column = table[SCORE].fill_null(0.0) if table[SCORE].null_count else table[SCORE]
        return np.nan_to_num(_np(column, np.float32), copy=False)[order]

    items = _Vocabulary([topk[ITEM_ID], similar[ITEM_ID], similar[SIMILAR_ASIN], popular[ITEM_ID]])
    user_item, similar_key, similar_item, popular_item = items.compact(
        items.codes(topk[ITEM_ID]), items.codes(similar[ITEM_ID]), items.codes(similar[SIMILAR_ASIN]),
        items.codes(popular[ITEM_ID]))
    n_items = len(items)
    save("items", items.fixed)

    categories = _Vocabulary([popular[CATEGORY]] + ([silver[CATEGORY]] if silver is not None else []))
    silver_item = items.codes(silver[ITEM_ID]) if silver is not None else np.zeros(0, np.int32)
    popular_category, silver_category = categories.compact(
        categories.codes(popular[CATEGORY]),
        categories.codes(silver[CATEGORY])[silver_item >= 0] if silver is not None else np.zeros(0, np.int32))
    save("categories", categories.fixed)
    item_category = np.full(n_items, -1, dtype=np.int16)
    specific = popular_category != categories.index_of(ALL_CATEGORIES)
    item_category[popular_item[specific]] = popular_category[specific]
    item_category[silver_item[silver_item >= 0]] = silver_category   # silver/items is the authority
    save("item_category", item_category)

    users = _Vocabulary([topk[USER_ID]])
    (user_codes,) = users.compact(users.codes(topk[USER_ID]))
    order, offsets = _csr(user_codes, _np(topk[RANK], np.int64), len(users))
    del user_codes
    save("users", users.fixed)
    save("user_offsets", offsets)
    save("user_items", user_item[order])
    save("user_scores", scores(topk, order))
    model_column = topk[MODEL].fill_null(published.model) if topk[MODEL].null_count else topk[MODEL]
    models = _Vocabulary([model_column])
    (model_codes,) = models.compact(models.codes(model_column))
    save("user_model", model_codes[order[offsets[:-1]]].astype(np.uint8))     # the model of a user's first row
    user_rows = int(offsets[-1])
    del topk, order, user_item

    methods = _Vocabulary([similar[METHOD]])
    (method_codes,) = methods.compact(methods.codes(similar[METHOD]))
    similar_rank, similar_score = _np(similar[RANK], np.int64), scores(similar, slice(None))
    kept_methods = []
    for code, raw in enumerate(methods.fixed.tolist()):
        method = raw.decode("utf-8")
        if not _SAFE_DIR.fullmatch(method):
            log.warning("skipping similar-items method with an unsafe name: %r", method)
            continue
        rows = np.flatnonzero(method_codes == code)
        order, offsets = _csr(similar_key[rows], similar_rank[rows], n_items)
        save(f"similar_{method}_offsets", offsets)
        save(f"similar_{method}_items", similar_item[rows][order])
        save(f"similar_{method}_scores", similar_score[rows][order])
        kept_methods.append(method)

    order, offsets = _csr(popular_category, _np(popular[RANK], np.int64), len(categories))
    save("popular_offsets", offsets)
    save("popular_items", popular_item[order])
    save("popular_scores", scores(popular, order))

    session = session_build.write_session_scorer(
        save, warehouse, published.run_id, items.codes, n_items, load_denylist(warehouse).items,
        next((m for m in METHODS if m in kept_methods), None))
    known = session_build.write_known_items(save, warehouse, users.codes, len(users), items.codes)
    return {"users": len(users), "items": n_items, "categories": len(categories), "user_rows": user_rows,
            "methods": kept_methods, "models": [m.decode("utf-8") for m in models.fixed.tolist()],
            "session": session, "known_items": known}


def _sync(handle) -> None:
    """Flush to disk before the rename publishes the folder: after a crash, complete-looking means complete."""
    handle.flush()
    os.fsync(handle.fileno())


@contextmanager
def _locked(snapshot_dir: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``<snapshot_dir>/.build.lock``: one builder at a time across processes."""
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    with open(snapshot_dir / LOCK, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def is_complete(folder: Path) -> bool:
    return (folder / META).is_file()


def _point_current(snapshot_dir: Path, name: str) -> None:
    tmp = snapshot_dir / f".{CURRENT}.{os.getpid()}.tmp"
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, snapshot_dir / CURRENT)


def _prune(snapshot_dir: Path, keep_name: str, keep: int) -> None:
    """Remove older snapshot folders (and leftovers of dead builds). Workers still mapping a removed folder keep
    reading it: on Linux unlinked files live on until unmapped. Old folders can hold since-erased users."""
    folders = sorted((p for p in snapshot_dir.iterdir() if p.is_dir() and p.name != keep_name),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    kept = 1
    for path in folders:
        if path.name.startswith((".tmp-", ".old-")) or kept >= keep or not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            kept += 1


def build_snapshot(warehouse: Path, snapshot_dir: Path, version: str | None = None, keep: int = 1,
                   force: bool = False) -> Path:
    """Build (once) the snapshot of ``version`` (default: the current published one); return its folder.

    Idempotent and safe to call from several processes at once: the first builds under the lock, the others find
    the complete folder and return it. ``force`` rebuilds a complete folder in place (same version, new files):
    what an erasure or item deletion does after rewriting the published rows (``recsys.catalog``); workers notice
    the new ``built_at`` when ``ops/deletions`` changes and map the new files.
    """
    warehouse, snapshot_dir = Path(warehouse), Path(snapshot_dir)
    published = current_published(warehouse, version)
    if published is None:
        raise NoPublishedVersion(f"no published version{'' if version is None else ' ' + repr(version)} "
                                 f"in {warehouse / PUBLISHED}")
    name = folder_name(published.version)
    folder = snapshot_dir / name
    with _locked(snapshot_dir):
        if force or not is_complete(folder):
            started = time.perf_counter()
            tmp = snapshot_dir / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                counts = _write_arrays(tmp, warehouse, published)
                meta = {"format": FORMAT, "version": published.version, "model": published.model,
                        "run_id": published.run_id, "published_at": published.published_at.isoformat(),
                        "k": published.k, "built_at": datetime.now(timezone.utc).isoformat(),
                        "build_seconds": round(time.perf_counter() - started, 3), **counts}
                with open(tmp / META, "w", encoding="utf-8") as handle:   # last: marks the folder complete
                    json.dump(meta, handle, indent=1)
                    _sync(handle)
                aside = snapshot_dir / f".old-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                if folder.exists():  # a forced rebuild, or a hand-made folder: moved aside, then deleted
                    os.rename(folder, aside)
                os.rename(tmp, folder)
                shutil.rmtree(aside, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            log.info("snapshot built version=%s seconds=%.2f users=%s", published.version,
                     time.perf_counter() - started, counts["users"])
        _point_current(snapshot_dir, name)
        _prune(snapshot_dir, name, keep)
    return folder


def build_in_subprocess(warehouse: Path, snapshot_dir: Path, version: str | None, keep: int = 1,
                        force: bool = False) -> Path:
    """:func:`build_snapshot` in a child interpreter, so a worker's RSS never carries the build's peak memory
    (and a busy Spark driver's heap and threads do not slow the build: 165 s in a deletion job's driver against
    42 s fresh, at 1.8M users). ``version`` None: the current published one."""
    return ChildBuild(warehouse, snapshot_dir, version, keep, force).wait()


class ChildBuild:
    """A :func:`build_snapshot` running in a child interpreter, started now and awaited later: the caller (a
    deletion run) goes on with work the snapshot does not read while it builds."""

    def __init__(self, warehouse: Path, snapshot_dir: Path, version: str | None, keep: int = 1,
                 force: bool = False):
        cmd = [sys.executable, "-m", "recsys.serve.snapshot", "--warehouse", str(warehouse),
               "--snapshot-dir", str(snapshot_dir), "--keep", str(keep)]
        cmd += ["--version", version] if version is not None else []
        cmd += ["--force"] if force else []
        self._child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self) -> Path:
        """The folder built; raises when the build failed."""
        out, err = self._child.communicate()
        if self._child.returncode != 0:
            raise RuntimeError(f"snapshot build failed ({self._child.returncode}): {err.strip()[-2000:]}")
        return Path(out.strip().splitlines()[-1])

    def cancel(self) -> None:
        """Stop the build (its temporary folder is left for the next build's prune)."""
        if self._child.poll() is None:
            self._child.kill()
        self._child.communicate()


# --- loading -------------------------------------------------------------------------------------------------


class Snapshot:
    """Read-only, memory-mapped view of one snapshot folder; shared by every thread of a worker."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta: dict = json.loads((self.folder / META).read_text(encoding="utf-8"))
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"snapshot {folder} has format {self.meta.get('format')}, expected {FORMAT}")
        self.version: str = self.meta["version"]
        self.model: str = self.meta["model"]
        self.published_at = datetime.fromisoformat(self.meta["published_at"])
        self.models: list[str] = self.meta["models"]
        self.loaded_at = time.time()
        load = self._load
        self.items, self.categories, self.item_category = load("items"), load("categories"), load("item_category")
        self.users, self.user_offsets = load("users"), load("user_offsets")
        self.user_items, self.user_scores, self.user_model = load("user_items"), load("user_scores"), \
            load("user_model")
        self.similar = {m: (load(f"similar_{m}_offsets"), load(f"similar_{m}_items"), load(f"similar_{m}_scores"))
                        for m in self.meta["methods"]}
        self.popular = (load("popular_offsets"), load("popular_items"), load("popular_scores"))
        self.known = (self.load(session_build.KNOWN_OFFSETS), self.load(session_build.KNOWN_ITEMS))
        self.session = session_scorer(self)

    def load(self, name: str) -> np.ndarray | None:
        """An optional array of the folder (None when absent: a snapshot built before it existed)."""
        return self._load(name) if (self.folder / f"{name}.npy").is_file() else None

    def _load(self, name: str) -> np.ndarray:
        # A plain ndarray view of the mapping: np.memmap's Python-level __getitem__ costs ~3 us per slice.
        return np.load(self.folder / f"{name}.npy", mmap_mode="r", allow_pickle=False).view(np.ndarray)

    @cached_property
    def all_category(self) -> int | None:
        return self.category_index(ALL_CATEGORIES)

    @staticmethod
    def _find(sorted_ids: np.ndarray, key: str) -> int | None:
        raw = key.encode("utf-8")
        if not raw or len(raw) > sorted_ids.dtype.itemsize or len(sorted_ids) == 0:
            return None
        probe = np.array(raw, dtype=sorted_ids.dtype)   # same dtype: no copy of the mapped array
        i = int(np.searchsorted(sorted_ids, probe))
        return i if i < len(sorted_ids) and sorted_ids[i] == raw else None

    def item_index(self, asin: str) -> int | None:
        return self._find(self.items, asin)

    def item_indices(self, asins: list[str]) -> np.ndarray:
        """int64 index of each of ``asins`` (valid ids), -1 when not in the vocabulary: one vectorised search."""
        width = self.items.dtype.itemsize
        raw = [a.encode("utf-8") for a in asins]
        out = np.full(len(raw), -1, np.int64)
        fits = np.fromiter((len(r) <= width for r in raw), bool, len(raw))   # longer: absent, never cut to fit
        if not fits.any() or not len(self.items):
            return out
        probe = np.array([r for r, f in zip(raw, fits) if f], dtype=self.items.dtype)
        found = np.minimum(np.searchsorted(self.items, probe), len(self.items) - 1)
        out[fits] = np.where(self.items[found] == probe, found, -1)
        return out

    def category_index(self, category: str) -> int | None:
        return self._find(self.categories, category)

    def user_slice(self, user_id: str) -> tuple[int, int, str] | None:
        """(start, end, model) of the user's rows in ``user_items``/``user_scores``, or None if unknown."""
        i = self._find(self.users, user_id)
        if i is None:
            return None
        return int(self.user_offsets[i]), int(self.user_offsets[i + 1]), self.models[int(self.user_model[i])]

    def known_items(self, user_id: str) -> np.ndarray:
        """The items the user interacted with (those publish kept out of the user's list); empty when unknown."""
        offsets, items = self.known
        i = self._find(self.users, user_id)
        if offsets is None or items is None or i is None:
            return np.zeros(0, np.int32)
        return items[int(offsets[i]):int(offsets[i + 1])]

    def similar_slice(self, method: str, item: int) -> tuple[np.ndarray, np.ndarray] | None:
        arrays = self.similar.get(method)
        if arrays is None:
            return None
        offsets, items, scores = arrays
        lo, hi = int(offsets[item]), int(offsets[item + 1])
        return (items[lo:hi], scores[lo:hi]) if hi > lo else None

    def popular_slice(self, category: int) -> tuple[np.ndarray, np.ndarray]:
        offsets, items, scores = self.popular
        lo, hi = int(offsets[category]), int(offsets[category + 1])
        return items[lo:hi], scores[lo:hi]

    def asins(self, indices: np.ndarray) -> list[str]:
        return [raw.decode("utf-8") for raw in self.items[indices].tolist()]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recsys.serve.snapshot",
                                     description="Build the serving snapshot of a published version.")
    parser.add_argument("--warehouse", type=Path, required=True)
    parser.add_argument("--snapshot-dir", type=Path, required=True)
    parser.add_argument("--version", default=None, help="default: the current published version")
    parser.add_argument("--keep", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="rebuild a complete snapshot in place")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        folder = build_snapshot(args.warehouse, args.snapshot_dir, args.version, args.keep, force=args.force)
    except NoPublishedVersion as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(_main())

"""A run's implicit ALS fits, kept on disk by content so the same fit is never paid twice.

Why: a run fits the same ALS more than once. The multi-stage model's stage two is the run's ``implicit_als`` candidate
(the same selected parameters on the same training rows), and when a multi-stage model is published its stage one
(fitted on the rows before the label window: the training split) is that fit again. At Appliances size one fit is
~4 minutes. The key is a hash of the weighted CSR matrix (shape, indptr, indices, data) and of every parameter, so a
hit returns exactly what :func:`recsys.models.implicit_als.factorize` would compute (implicit's ALS is deterministic
for a given matrix and seed); any other matrix misses.

Where: ``<warehouse>/_cache/factors/<key>/{user,item}_factors.npy``, active only inside :func:`using` (the train
step and publish open it; tests and selection trials do not). It holds factors of users, so the deletion cascade
empties it (:func:`clear`), and it keeps only the :data:`KEEP` most recently used entries.
"""

from __future__ import annotations

import contextvars
import fcntl
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

KEEP = 3                   # entries kept (at Appliances size one is ~0.95 GB: 1.8M × 128 float32 user factors)
FOLDER = Path("_cache") / "factors"
_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("factor_cache_root", default=None)


def root(warehouse: Path | str) -> Path:
    return Path(warehouse).resolve() / FOLDER


@contextmanager
def using(warehouse: Path | str) -> Iterator[Path]:
    """Fits inside this block read and fill the warehouse's cache."""
    folder = root(warehouse)
    token = _ROOT.set(folder)
    try:
        yield folder
    finally:
        _ROOT.reset(token)


def key(matrix, params: dict) -> str:
    """Content key of one fit: the canonical CSR (duplicates summed, indices sorted) and the parameters."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps({"shape": list(matrix.shape), "params": params}, sort_keys=True).encode())
    for part in (matrix.indptr, matrix.indices, matrix.data):
        digest.update(np.ascontiguousarray(part).view(np.uint8))
    return digest.hexdigest()


def fit_once(matrix, params: dict, fit: Callable[[], tuple[np.ndarray, np.ndarray, float]]
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """``fit()`` → (user_factors, item_factors, seconds), or the cached result of the same fit (0 seconds).

    Single flight across processes: the DAG trains two models at once, and when the multi-stage model reaches the
    fit the implicit_als task is still computing, it waits on that entry's lock and reads the result rather than
    computing it again beside it on the same cores."""
    base = _ROOT.get()
    if base is None:
        return fit()
    folder = base / key(matrix, params)
    locks = base / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / folder.name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)                    # released when the file closes
        hit = _read(folder)
        if hit is not None:
            return hit[0], hit[1], 0.0
        users, items, seconds = fit()
        _write(folder, users, items)
    _prune(base)
    return users, items, seconds


def _read(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        users = np.load(folder / "user_factors.npy")
        items = np.load(folder / "item_factors.npy")
    except (FileNotFoundError, ValueError, OSError):
        return None
    os.utime(folder)                                           # most recently used: pruned last
    log.info("factor cache hit %s (%d users × %d factors)", folder.name, *users.shape)
    return users, items


def _write(folder: Path, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
    """Written beside and renamed into place: a reader never sees half an entry."""
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / "user_factors.npy", np.asarray(user_factors))
        np.save(tmp / "item_factors.npy", np.asarray(item_factors))
        os.rename(tmp, folder)
    except OSError as exc:                                     # a cache: a failed write only loses the saving
        log.warning("factor cache not written: %s", exc)
        shutil.rmtree(tmp, ignore_errors=True)


def _prune(base: Path) -> None:
    """Keep the :data:`KEEP` most recently used entries (and their lock files)."""
    entries = sorted((p for p in base.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for old in entries[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
        (base / ".locks" / old.name).unlink(missing_ok=True)


def clear(warehouse: Path | str) -> bool:
    """Empty the cache (the deletion cascade: it holds factors of users who may be erased); True if it held any."""
    folder = root(warehouse)
    existed = folder.is_dir() and any(p for p in folder.iterdir() if not p.name.startswith("."))
    shutil.rmtree(folder, ignore_errors=True)
    return existed

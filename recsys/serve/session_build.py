"""What ``POST /v1/sessions/recommendations`` needs in a snapshot, copied at build time (:mod:`recsys.serve.snapshot`).

**Which scorer.** The session model of the published version's run with the best next-item HR@20 that evaluate
recorded for it in ``ops/runs`` (:mod:`recsys.evaluate.next_item`: each candidate's ``hr@20``, on the run's test
split — model selection records only MAP@10 on valid, and the promotion rule reads the test split too), taken as
last fitted (publish's refit when it is the production model, else the candidate's folder). A run that trained
neither gets ``similar_items``: the published similar-items lists, which every snapshot has.

**Re-keyed.** The model's item rows (keyed by ``parent_asin``) are scattered onto the snapshot's item vocabulary, so
the scorer's indices are ``items.npy``'s and one lookup serves the request's asins, the exclusions and the answer.
Items outside the vocabulary, or denied by ``ops/deletions`` when the build runs, are dropped; ``session_live``
marks the items that kept a row: the only ones a session may name (others are unknown) or be answered with.

**Known items** (``user_id`` given): each snapshot user's rows of ``gold/interactions`` — what publish excluded
from that user's list — as a CSR over ``users.npy``. Not the session model's ``user_history.seen``: a run without a
session model has none, and a candidate's folder lacks the test split publish fitted on. A user without a published
list has no known items here.

Arrays (CSR as in the rest of the snapshot; absent in snapshots built before this endpoint, which then score with
``similar_items`` and know no items):

- every scorer: ``session_live.npy`` bool[n_items];
- ``gru4rec``: ``session_item_embeddings.npy`` float32[n_items, h], ``session_item_bias.npy`` float32[n_items],
  ``session_input_embeddings.npy`` (when not shared), ``session_layer{i}_{part}.npy`` (``GruLayer``'s fields);
- ``cooccurrence``: ``session_offsets.npy`` int64[n_items + 1], ``session_neighbours.npy`` int32,
  ``session_scores.npy`` float32, ``session_popularity.npy`` float32[n_items];
- ``user_known_offsets.npy`` int64[n_users + 1], ``user_known_items.npy`` int32.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import ops
from recsys.constants import (GRU4REC, INTERACTIONS, ITEM_ID, ITEM_IDX, ITEM_INDEX, MODEL, RUNS,
                              SESSION_MODELS, USER_ID, USER_IDX, USER_INDEX)
from recsys.delta import log_version, read_table
from recsys.sessions.folder import EMBEDDINGS, LAYERS, META, NEIGHBOURS
from recsys.sessions.gru4rec.weights import Gru4RecWeights, GruLayer
from recsys.sessions.settings import CooccurrenceParams

log = logging.getLogger(__name__)

SELECTION_METRIC = "hr@20"           # recsys.evaluate.next_item.keys()[0], recorded per candidate by evaluate
SIMILAR_ITEMS = "similar_items"      # the scorer of a run without a session model
PREFIX = "session_"
LIVE = "session_live"
LAYER_PARTS = tuple(f.name for f in fields(GruLayer))
KNOWN_OFFSETS, KNOWN_ITEMS = "user_known_offsets", "user_known_items"

Save = Callable[[str, np.ndarray], None]          # writes <name>.npy into the folder being built
Coder = Callable[[pa.ChunkedArray], np.ndarray]   # strings -> int32 index in a vocabulary, -1 when absent


@dataclass(frozen=True)
class SessionSource:
    """The session model a snapshot serves sessions with."""

    name: str
    run_id: str
    folder: Path
    hr: float


def choose_session_model(warehouse: Path, run_id: str | None) -> SessionSource | None:
    """The run's session model with the best recorded HR@20 (ties: by name), whose folder is still there."""
    runs = Path(warehouse) / RUNS
    if not run_id or log_version(runs) < 0:
        return None
    rows = read_table(runs, ["run_id", MODEL, "stage", "metrics", "recorded_at"], [("run_id", "=", run_id)])
    latest: dict[str, float | None] = {}
    for row in sorted(rows.to_pylist(), key=lambda r: r["recorded_at"]):
        if row[MODEL] in SESSION_MODELS and row["stage"] == ops.CANDIDATE:
            latest[row[MODEL]] = dict(row["metrics"] or []).get(SELECTION_METRIC)
    registered = {r[MODEL]: r for r in ops.run_models(warehouse, run_id)}
    ranked = sorted((-hr, name) for name, hr in latest.items() if hr is not None and hr == hr)
    for negative_hr, name in ranked:
        entry = registered.get(name)
        if entry is None or not entry[ops.MODEL_PATH]:
            continue
        folder = ops.last_fitted(warehouse, name, run_id, entry[ops.MODEL_PATH])
        if (folder / META).is_file():
            return SessionSource(name, run_id, folder, -negative_hr)
        log.warning("session model %s of run %s has no folder at %s; trying the next", name, run_id, folder)
    return None


def write_session_scorer(save: Save, warehouse: Path, run_id: str | None, item_codes: Coder, n_items: int,
                         denied: frozenset[str], similar_method: str | None) -> dict[str, Any]:
    """Copy the chosen scorer's arrays (module docstring); returns what meta.json records of it."""
    source = choose_session_model(warehouse, run_id)
    if source is None:
        recency = CooccurrenceParams()
        return {"name": SIMILAR_ITEMS, "method": similar_method, "last_items": recency.last_items,
                "decay": recency.decay}
    params = json.loads((source.folder / META).read_text(encoding="utf-8"))["params"]
    write = _write_gru4rec if source.name == GRU4REC else _write_cooccurrence
    live, extra = write(save, source.folder, item_codes, n_items, denied)
    save(LIVE, live)
    return {"name": source.name, "run_id": source.run_id, SELECTION_METRIC: source.hr, "params": params,
            "folder": ops.stored_path(warehouse, str(source.folder)), "live_items": int(live.sum()), **extra}


def _kept(table: pa.Table, item_codes: Coder, denied: frozenset[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows kept, their vocabulary index): rows whose item is in the vocabulary and not denied."""
    codes = item_codes(table.column(ITEM_ID))
    keep = codes >= 0
    if denied:
        keep &= ~pc.is_in(table.column(ITEM_ID), value_set=pa.array(sorted(denied))).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(keep)
    return rows, codes[rows]


def _matrix(column: pa.ChunkedArray, rows: np.ndarray, width: int) -> np.ndarray:
    """float32[len(rows), width] from a list column of ``width``-long vectors."""
    lists = column.combine_chunks()
    flat = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(lists), width)[rows]


def _write_gru4rec(save: Save, folder: Path, item_codes: Coder, n_items: int,
                   denied: frozenset[str]) -> tuple[np.ndarray, dict[str, Any]]:
    table = pq.read_table(folder / EMBEDDINGS)
    rows, codes = _kept(table, item_codes, denied)
    layers = Gru4RecWeights.load(folder / LAYERS, mmap=False).layers

    def scattered(column: str, width: int) -> np.ndarray:          # widths from the layers: rows may be none
        out = np.zeros((n_items, width), np.float32)
        out[codes] = _matrix(table.column(column), rows, width)
        return out

    save(f"{PREFIX}item_embeddings", scattered("features", layers[-1].hidden))
    bias = np.zeros(n_items, np.float32)
    bias[codes] = table.column("bias").to_numpy()[rows]
    save(f"{PREFIX}item_bias", bias)
    shared = "input" not in table.column_names
    if not shared:
        save(f"{PREFIX}input_embeddings", scattered("input", layers[0].weight_ih.shape[1]))
    for i, layer in enumerate(layers):
        for part in LAYER_PARTS:
            save(f"{PREFIX}layer{i}_{part}", np.ascontiguousarray(getattr(layer, part), dtype=np.float32))
    live = np.zeros(n_items, bool)
    live[codes] = True
    return live, {"layers": len(layers), "shared_embeddings": shared}


def _write_cooccurrence(save: Save, folder: Path, item_codes: Coder, n_items: int,
                        denied: frozenset[str]) -> tuple[np.ndarray, dict[str, Any]]:
    table = pq.read_table(folder / NEIGHBOURS)
    rows, codes = _kept(table, item_codes, denied)
    ids = table.column("id").to_numpy()
    neighbours = table.column("neighbours").combine_chunks()
    lengths = neighbours.value_lengths().to_numpy(zero_copy_only=False)
    columns = neighbours.flatten().to_numpy(zero_copy_only=False)
    values = table.column("scores").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    remap = np.full(int(max(ids.max(initial=-1), columns.max(initial=-1))) + 1, -1, np.int64)
    remap[ids[rows]] = codes                                   # model item index -> vocabulary index
    owner = remap[np.repeat(ids, lengths)]
    target = remap[columns]
    keep = (owner >= 0) & (target >= 0)
    owner, target, values = owner[keep], target[keep], values[keep].astype(np.float32)
    order = np.lexsort((target, owner))
    offsets = np.zeros(n_items + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=n_items), out=offsets[1:])
    save(f"{PREFIX}offsets", offsets)
    save(f"{PREFIX}neighbours", target[order].astype(np.int32))
    save(f"{PREFIX}scores", values[order])
    popularity = np.zeros(n_items, np.float32)
    popularity[codes] = table.column("popularity").to_numpy()[rows]
    save(f"{PREFIX}popularity", popularity)
    live = np.zeros(n_items, bool)
    live[codes] = True
    return live, {}


def write_known_items(save: Save, warehouse: Path, user_codes: Coder, n_users: int, item_codes: Coder) -> int:
    """Each snapshot user's interactions, as item indices of the vocabulary (CSR over users.npy); rows written."""
    warehouse = Path(warehouse)
    owner = item = np.zeros(0, np.int64)
    if all(log_version(warehouse / t) >= 0 for t in (INTERACTIONS, USER_INDEX, ITEM_INDEX)):
        users = read_table(warehouse / USER_INDEX, [USER_ID, USER_IDX])
        items = read_table(warehouse / ITEM_INDEX, [ITEM_ID, ITEM_IDX])
        rows = read_table(warehouse / INTERACTIONS, [USER_IDX, ITEM_IDX])
        owner = _through(rows.column(USER_IDX), users.column(USER_IDX), user_codes(users.column(USER_ID)))
        item = _through(rows.column(ITEM_IDX), items.column(ITEM_IDX), item_codes(items.column(ITEM_ID)))
        keep = (owner >= 0) & (item >= 0)
        owner, item = owner[keep], item[keep]
    order = np.lexsort((item, owner))
    offsets = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=n_users), out=offsets[1:])
    save(KNOWN_OFFSETS, offsets)
    save(KNOWN_ITEMS, item[order].astype(np.int32))
    return int(len(order))


def _through(keys: pa.ChunkedArray, index_keys: pa.ChunkedArray, index_codes: np.ndarray) -> np.ndarray:
    """The snapshot code of each of ``keys`` (user_idx / item_idx), looked up in an index table; -1 when none."""
    index_keys = index_keys.to_numpy()
    keys = keys.to_numpy()
    if not len(index_keys) or not len(keys):
        return np.full(len(keys), -1, np.int64)
    lookup = np.full(int(max(index_keys.max(), keys.max())) + 1, -1, np.int64)
    lookup[index_keys] = index_codes
    return lookup[keys]


"""A session model as a candidate of a run: the next-item scorer (``cooccurrence``; ``gru4rec``) behind the interface
of the other models (``recommend``, ``recommend_lists``, ``similar_items``, ``save``/``load``, ``user_factors``,
``item_factors``), so training, evaluation, promotion and publish treat it like any other. It sits above
:mod:`recsys.sessions` (sequences and numpy scorers, which the API imports alone) and :mod:`recsys.models` (whose
ranking kernels it shares), as the multi-stage model does.

A user's list is the scorer's next items after the user's latest session (the fitted rows and events, in time
order), the user's fitted items never recommended. Scoring runs in Spark tasks (``mapInArrow``), each reading the
model's folder from local disk once per worker process.

Saved folder, Parquet keyed by ``id`` so the deletion cascade drops erased users' and deleted items' rows
(:mod:`recsys.catalog.files`) and a snapshot build can copy the scorer's arrays keyed by ``parent_asin``:

- ``user_history``: ``id`` (user index), ``items`` (the latest session, oldest first), ``seen`` (fitted items);
- ``item_neighbours`` (co-occurrence): ``id``, ``parent_asin``, ``popularity``, ``neighbours``/``scores`` (the item's
  row of the co-occurrence matrix, by item index);
- ``item_embeddings`` (GRU4Rec): ``id``, ``parent_asin``, ``features`` (output embedding), ``bias``, and ``input``
  when the input embeddings are not shared; ``gru4rec_layers``: the GRU layers, which hold no item row;
- ``model.json``: name, params, info, ``n_items``.

An item without a row (deleted since) is never recommended.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.constants import COOCCURRENCE, GRU4REC
from recsys.models.factors import (FACTOR_SCHEMA, RANKED_SCHEMA, arrow_seen_columns,
                                   list_column_to_matrix, ranked_lists, shaped)
from recsys.models.folder import FolderModel, vector_column, write_table
from recsys.models.params import Gru4RecModelParams
from recsys.models.topk import topk_scores
from recsys.sessions import cooccurrence
from recsys.sessions import sequences as S
from recsys.sessions.folder import EMBEDDINGS, HISTORY, LAYERS, META, NEIGHBOURS
from recsys.sessions.gru4rec.weights import Gru4RecWeights
from recsys.sessions.settings import CooccurrenceParams
from recsys.spark import task_slots

DEFAULT_BLOCK = 64            # users scored at once: a block of dense scores is block × n_items floats


@dataclass(frozen=True)
class SessionInputs:
    """What a session model reads besides the interactions: the live catalogue (item_idx, parent_asin) and the
    item events (:func:`recsys.sessions.sequences.session_events`, None without an events table)."""

    catalogue: DataFrame
    events: DataFrame | None


def session_inputs(spark: SparkSession, warehouse: Path) -> SessionInputs:
    from recsys import tables as T

    catalogue = T.read_table(spark, warehouse, C.ITEM_INDEX).where(~F.col("deleted")).select(C.ITEM_IDX, C.ITEM_ID)
    return SessionInputs(catalogue, S.session_events(spark, warehouse))


@dataclass
class SessionModel(FolderModel):
    """A fitted session model, read from its folder (:meth:`load`)."""

    name: str
    params: dict[str, Any]
    path: Path
    user_factors: DataFrame              # user_history: publish's refill asks which users the model can score
    item_factors: DataFrame              # GRU4Rec's item embeddings; none for co-occurrence (no diversity metric)
    seen: DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)
    scratch: Path | None = None
    cosine_similar: bool = False

    @classmethod
    def load(cls, spark: SparkSession, path: Path | str, seen: DataFrame | None = None) -> SessionModel:
        path = Path(path)
        meta = json.loads((path / META).read_text())
        vectors = (spark.read.parquet(str(path / EMBEDDINGS)).select("id", "features") if meta["name"] == GRU4REC
                   else spark.createDataFrame([], FACTOR_SCHEMA))
        return cls(name=meta["name"], params=meta["params"], path=path, info=meta.get("info", {}),
                   user_factors=spark.read.parquet(str(path / HISTORY)), item_factors=vectors, seen=seen)

    # -- scoring ------------------------------------------------------------------------------------------------

    def recommend(self, users: DataFrame | None = None, k: int = 10, exclude_seen: bool = True,
                  exclude_items: list[int] | None = None, block: int = DEFAULT_BLOCK,
                  as_lists: bool = False, with_scores: bool = False) -> DataFrame:
        """Top-``k`` next items per user → (user_idx, item_idx, score, rank), or one row per user (``as_lists``).
        ``users``: a DataFrame with ``user_idx`` (default: every user with a history); others get no list."""
        history = self.user_factors
        if users is not None:
            history = history.join(users.select(F.col(C.USER_IDX).alias("id")).distinct(), "id", "left_semi")
        score = _score_batches(str(self.path.resolve()), sorted(set(exclude_items or [])), k, block, exclude_seen)
        ranked = history.select("id", C.ITEMS, "seen").mapInArrow(score, RANKED_SCHEMA)
        return shaped(ranked, as_lists, with_scores)

    def recommend_lists(self, users: DataFrame | None = None, k: int = 10, exclude_seen: bool = True,
                        block: int = DEFAULT_BLOCK, exclude_items: list[int] | None = None,
                        with_scores: bool = False) -> DataFrame:
        return self.recommend(users, k, exclude_seen, exclude_items, block=block, as_lists=True,
                              with_scores=with_scores)

    def similar_items(self, items: DataFrame | None = None, k: int = 10,
                      exclude_items: list[int] | None = None) -> DataFrame:
        """The items that most often follow each item (its co-occurrence row) → (item_idx, similar_idx, score,
        rank)."""
        if self.name != COOCCURRENCE:
            raise NotImplementedError(f"{self.name} has no item-to-item neighbours")
        spark = self.user_factors.sparkSession
        neighbours = spark.read.parquet(str(self.path / NEIGHBOURS))
        rows = neighbours.select(F.col("id").alias(C.ITEM_IDX),
                                 F.explode(F.arrays_zip("neighbours", "scores")).alias("e"))
        live = neighbours.select(F.col("id").alias("similar_idx"))
        if items is not None:
            rows = rows.join(items.select(C.ITEM_IDX).distinct(), C.ITEM_IDX, "left_semi")
        similar = (rows.select(C.ITEM_IDX, F.col("e.neighbours").alias("similar_idx"), F.col("e.scores").alias(C.SCORE))
                   .join(live, "similar_idx", "left_semi")
                   .where(~F.col("similar_idx").isin(sorted(set(exclude_items or [])))))
        rank = F.row_number().over(Window.partitionBy(C.ITEM_IDX).orderBy(F.desc(C.SCORE), "similar_idx"))
        return (similar.withColumn(C.RANK, rank).where(F.col(C.RANK) <= k)
                .select(F.col(C.ITEM_IDX).cast("int"), F.col("similar_idx").cast("int"),
                        F.col(C.SCORE).cast("float"), F.col(C.RANK).cast("int")))


# --- fitting ------------------------------------------------------------------------------------------------------


def fit(name: str, interactions: DataFrame, params: CooccurrenceParams | Gru4RecModelParams,
        items: SessionInputs | None = None) -> SessionModel:
    """``interactions``: (user_idx, item_idx, timestamp, …) of the fit splits; ``items``: :func:`session_inputs`.
    GRU4Rec trains on every sequence, anonymous visitors' included (PyTorch, imported here only)."""
    if items is None:
        raise ValueError("a session model needs its inputs: pass items=session_inputs(...)")
    spark = interactions.sparkSession
    start = time.perf_counter()
    data = S.user_sequences(interactions, items.events, params.sessions)
    catalogue = items.catalogue.toArrow()
    ids = catalogue.column(C.ITEM_IDX).to_numpy().astype(np.int32)
    n_items = int(max(ids.max(initial=-1), data.sequences.items.max(initial=-1)) + 1)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    fitted: dict[str, int] = {}
    if name == GRU4REC:
        from recsys.sessions.gru4rec.distributed import fit_distributed, replica_count

        fitted["processes"] = replica_count(params.processes, task_slots(spark))
        weights = fit_distributed(data.sequences, n_items, params, fitted["processes"])
        write_embeddings(folder, weights, ids, catalogue.column(C.ITEM_ID))
    else:
        write_neighbours(folder / NEIGHBOURS, cooccurrence.fit(data.sequences, n_items, params), ids,
                         catalogue.column(C.ITEM_ID))
    write_history(folder / HISTORY, data, interactions.select(C.USER_IDX, C.ITEM_IDX).toArrow())
    info = {"train_seconds": round(time.perf_counter() - start, 3), "sequences": len(data.sequences),
            "steps": int(len(data.sequences.items)), "n_items": n_items, **fitted}
    meta = {"name": name, "params": params.model_dump(), "info": info, "n_items": n_items}
    (folder / META).write_text(json.dumps(meta, indent=2, default=str))
    model = SessionModel.load(spark, folder, seen=interactions.select(C.USER_IDX, C.ITEM_IDX))
    model.scratch = folder
    return model


def write_history(folder: Path, data: S.UserSequences, seen: pa.Table) -> None:
    """Each known user's latest session and fitted items (visitors have no list to publish)."""
    users = data.users
    latest = np.flatnonzero((users != S.NO_USER) & np.append(users[1:] != users[:-1], True))
    sessions = data.sequences.select(latest)
    seen_users = seen.column(C.USER_IDX).to_numpy()
    seen_items = seen.column(C.ITEM_IDX).to_numpy()
    order = np.lexsort((seen_items, seen_users))
    seen_users, seen_items = seen_users[order], seen_items[order]
    counts = np.searchsorted(seen_users, users[latest], side="right") - np.searchsorted(seen_users, users[latest])
    seen_offsets = np.append(0, np.cumsum(counts))
    seen_flat = seen_items[np.isin(seen_users, users[latest])]       # both sorted by user: the slices, in order
    write_table(folder, {
        "id": pa.array(users[latest], pa.int32()),
        C.ITEMS: pa.ListArray.from_arrays(pa.array(sessions.offsets.astype(np.int32)),
                                          pa.array(sessions.items, pa.int32())),
        "seen": pa.ListArray.from_arrays(pa.array(seen_offsets.astype(np.int32)),
                                         pa.array(seen_flat.astype(np.int32), pa.int32()))})


def write_neighbours(folder: Path, scorer: cooccurrence.CooccurrenceScorer, ids: np.ndarray,
                     asins: pa.ChunkedArray) -> None:
    """One row per live catalogue item: its co-occurrence row and popularity, keyed by index and parent_asin."""
    rows = scorer.matrix[ids]
    offsets = pa.array(rows.indptr.astype(np.int32))
    write_table(folder, {"id": pa.array(ids, pa.int32()), C.ITEM_ID: asins.combine_chunks(),
                    "popularity": pa.array(scorer.popularity[ids], pa.float32()),
                    "neighbours": pa.ListArray.from_arrays(offsets, pa.array(rows.indices.astype(np.int32))),
                    "scores": pa.ListArray.from_arrays(offsets, pa.array(rows.data.astype(np.float32)))})


def write_embeddings(folder: Path, weights: Gru4RecWeights, ids: np.ndarray, asins: pa.ChunkedArray) -> None:
    """GRU4Rec's item rows as Parquet keyed by item (live catalogue items only), its layers beside them."""
    columns = {"id": pa.array(ids, pa.int32()), C.ITEM_ID: asins.combine_chunks(),
               "features": vector_column(weights.item_embeddings[ids]),
               "bias": pa.array(np.asarray(weights.item_bias)[ids], pa.float32())}
    if weights.input_embeddings is not None:
        columns["input"] = vector_column(weights.input_embeddings[ids])
    write_table(folder / EMBEDDINGS, columns)
    width = weights.item_embeddings.shape[1]
    no_items = replace(weights, item_embeddings=np.zeros((0, width), np.float32), item_bias=np.zeros(0, np.float32),
                       input_embeddings=None if weights.input_embeddings is None else
                       np.zeros((0, weights.input_embeddings.shape[1]), np.float32))
    no_items.save(folder / LAYERS)


# --- reading the scorer back --------------------------------------------------------------------------------------


@dataclass
class LoadedScorer:
    """A model folder's scorer and which items it may recommend (those still with a row: not deleted since)."""

    scorer: cooccurrence.CooccurrenceScorer | Gru4RecWeights
    live: np.ndarray            # bool[n_items]


def read_scorer(path: Path) -> LoadedScorer:
    meta = json.loads((path / META).read_text())
    n = int(meta["n_items"])
    if meta["name"] == GRU4REC:
        return read_gru4rec(path, n)
    params = CooccurrenceParams.model_validate(meta["params"])
    table = pq.read_table(path / NEIGHBOURS)
    ids = table.column("id").to_numpy()
    neighbours = table.column("neighbours").combine_chunks()
    rows = np.repeat(ids, neighbours.value_lengths().to_numpy())
    cols = neighbours.flatten().to_numpy()
    vals = table.column("scores").combine_chunks().flatten().to_numpy()
    popularity = np.zeros(n, np.float32)
    popularity[ids] = table.column("popularity").to_numpy()
    live = np.zeros(n, bool)
    live[ids] = True
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)
    return LoadedScorer(cooccurrence.CooccurrenceScorer(matrix, popularity, params.last_items, params.decay), live)


def read_gru4rec(path: Path, n: int) -> LoadedScorer:
    """The layers, and the item rows scattered back to their indices (an item without a row scores 0, and is
    masked)."""
    table = pq.read_table(path / EMBEDDINGS)
    ids = table.column("id").to_numpy()
    live = np.zeros(n, bool)
    live[ids] = True

    def dense(column: str) -> np.ndarray:
        rows = list_column_to_matrix(table.column(column).combine_chunks())
        out = np.zeros((n, rows.shape[1]), np.float32)
        out[ids] = rows
        return out

    bias = np.zeros(n, np.float32)
    bias[ids] = table.column("bias").to_numpy()
    layers = Gru4RecWeights.load(path / LAYERS, mmap=False)
    weights = replace(layers, item_embeddings=dense("features"), item_bias=bias,
                      input_embeddings=dense("input") if "input" in table.column_names else None)
    return LoadedScorer(weights, live)


@lru_cache(maxsize=4)
def _cached_scorer(path: str, stamp: float) -> LoadedScorer:
    return read_scorer(Path(path))


def cached_scorer(path: str) -> LoadedScorer:
    """The scorer of the folder at ``path``, read once per process (again when the cascade rewrote the folder)."""
    return _cached_scorer(path, max(p.stat().st_mtime for p in Path(path).rglob("*.parquet")))


def _score_batches(path: str, exclude: list[int], k: int, block: int, exclude_seen: bool):
    """mapInArrow: rows (id, items, seen) → each user's top ``k`` next items (``RANKED_SCHEMA``)."""

    def run(batches):
        loaded = cached_scorer(path)
        banned = ~loaded.live
        banned[[i for i in exclude if i < len(banned)]] = True
        ids = np.arange(len(banned), dtype=np.int32)
        kk = min(k, len(ids))
        for batch in batches:
            for start in range(0, batch.num_rows, block):
                part = batch.slice(start, min(block, batch.num_rows - start))
                if part.num_rows == 0:
                    continue
                keys = part.column("id").to_numpy(zero_copy_only=False)
                sessions = S.list_to_sequences(part.column(C.ITEMS))
                seen = part.column("seen") if exclude_seen else pa.nulls(part.num_rows, pa.list_(pa.int32()))
                for rows, scores in loaded.scorer.next_scores_batch(sessions, rows_per_block=part.num_rows):
                    scores[:, banned] = -np.inf
                    top_cols, top_scores = topk_scores(scores, kk, arrow_seen_columns(seen.take(rows), ids))
                    yield ranked_lists(keys[rows], top_cols, top_scores, ids)

    return run

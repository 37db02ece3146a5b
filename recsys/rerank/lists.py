"""The DPP re-rank of a whole list table inside Spark tasks: one ``mapInArrow`` over (key, items, scores) rows, the
item embeddings broadcast once, lists of one length re-ranked a block at a time
(:func:`recsys.rerank.dpp.rerank_batch`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.rerank.dpp import EPSILON, rerank_batch, unit_rows

SCORES = "scores"
BLOCK = 512           # lists per kernel call: the relevance and candidate blocks stay a few hundred KB


def rerank_lists(lists: DataFrame, item_ids: np.ndarray, embeddings: np.ndarray, k: int, strength: float,
                 key: str = C.USER_IDX, epsilon: float = EPSILON) -> DataFrame:
    """``lists`` (key, items array<int>, scores array<float>), each list best first → the same columns with each
    list re-ranked and cut to ``k`` (scores follow their items). ``item_ids`` (sorted, unique) name the rows of
    ``embeddings`` (items × D); an item not among them is taken as unlike every other. Strength 0 only cuts."""
    if strength == 0:
        return lists.select(key, F.slice(C.ITEMS, 1, k).alias(C.ITEMS), F.slice(SCORES, 1, k).alias(SCORES))
    vectors = np.vstack([unit_rows(embeddings), np.zeros((1, embeddings.shape[1]), dtype=np.float32)])
    bc = lists.sparkSession.sparkContext.broadcast((np.asarray(item_ids), vectors))
    schema = f"{key} INT, {C.ITEMS} ARRAY<INT>, {SCORES} ARRAY<FLOAT>"
    return lists.select(key, C.ITEMS, SCORES).mapInArrow(_reranked_batches(bc, k, strength, key, epsilon), schema)


def _reranked_batches(bc, k: int, strength: float, key: str, epsilon: float):
    def run(batches):
        ids, vectors = bc.value
        for batch in batches:
            if batch.num_rows:
                yield _reranked(batch, ids, vectors, k, strength, key, epsilon)

    return run


def embedding_rows(items: np.ndarray, ids: np.ndarray, missing: int) -> np.ndarray:
    """Each item's row in the (sorted) ``ids``; ``missing`` for an item not there."""
    rows = np.searchsorted(ids, items)
    found = rows < ids.size
    found[found] = ids[rows[found]] == items[found]
    return np.where(found, rows, missing)


def _reranked(batch: pa.RecordBatch, ids: np.ndarray, vectors: np.ndarray, k: int, strength: float, key: str,
              epsilon: float) -> pa.RecordBatch:
    """One Arrow batch: rows grouped by list length, each group re-ranked in blocks; output in the input's row
    order. Candidates are rows of ``vectors``; its last row (zeros) stands for items without an embedding."""
    items = batch.column(C.ITEMS)
    lengths = items.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat_items = items.flatten().to_numpy(zero_copy_only=False)
    flat_scores = batch.column(SCORES).flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    rows = embedding_rows(flat_items, ids, missing=vectors.shape[0] - 1)
    kept = np.minimum(lengths, k)
    out_offsets = np.concatenate([[0], np.cumsum(kept)])
    picked = np.empty(out_offsets[-1], dtype=np.int64)           # positions into the flat input
    for n in np.unique(lengths[lengths > 0]):
        group = np.flatnonzero(lengths == n)
        for start in range(0, group.size, BLOCK):
            block = group[start:start + BLOCK]
            flat = offsets[block][:, None] + np.arange(n)
            ranked = rerank_batch(flat_scores[flat], rows[flat], vectors, k, strength, epsilon, unit=True)
            picked[(out_offsets[block][:, None] + np.arange(ranked.shape[1])).ravel()] = \
                np.take_along_axis(flat, ranked, axis=1).ravel()
    list_offsets = pa.array(out_offsets.astype(np.int32))
    return pa.RecordBatch.from_arrays(
        [batch.column(key).cast(pa.int32()),
         pa.ListArray.from_arrays(list_offsets, pa.array(flat_items[picked].astype(np.int32))),
         pa.ListArray.from_arrays(list_offsets, pa.array(flat_scores[picked].astype(np.float32)))],
        names=[key, C.ITEMS, SCORES])

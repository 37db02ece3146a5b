"""Approximate top-N candidates for every user inside Spark tasks: user factors stream through ``mapInArrow``, each
Python worker loads the index file once (cached by path) and answers a task's users in blocks, with faiss limited
to the task's cores. The output is what ``FactorModel.recommend_lists`` gives exact: one row per user.

The index file must be readable at the same path by every executor (a shared or local filesystem, as the
warehouse is)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pyspark import TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys import constants as C
from recsys.models.factors import RANKED_SCHEMA, arrow_seen_columns, list_column_to_matrix, ranked_lists
from recsys.retrieval.ann import AnnIndex, task_threads
from recsys.retrieval.settings import RetrievalSettings

SCORES = "scores"
BLOCK = 4096          # users per faiss call: large enough for its per-call cost to vanish

_LOADED: dict[tuple[str, int, int], AnnIndex] = {}


def ann_candidates(user_factors: DataFrame, index_path: Path | str, n: int, settings: RetrievalSettings,
                   seen: DataFrame | None = None) -> DataFrame:
    """Top-``n`` candidates per user from ``user_factors`` (id, features) → (user_idx, items array<int>, scores
    array<float>), best first. ``seen`` (user_idx, item_idx): items never returned to that user."""
    factors = user_factors.select(F.col("id").alias(C.USER_IDX), "features")
    if seen is not None:
        lists = seen.groupBy(C.USER_IDX).agg(F.collect_list(C.ITEM_IDX).alias("seen"))
        factors = factors.join(lists, C.USER_IDX, "left")
    else:
        factors = factors.withColumn("seen", F.lit(None).cast("array<int>"))
    path = str(Path(index_path).resolve())
    ranked = factors.select(C.USER_IDX, "features", "seen").mapInArrow(
        _candidate_batches(path, n, settings), RANKED_SCHEMA)
    return ranked.select(F.col("_key").alias(C.USER_IDX), C.ITEMS, SCORES)


def cached_index(path: str, settings: RetrievalSettings) -> AnnIndex:
    """The index at ``path``, loaded once per process and kept while the file is unchanged; only the last one is
    kept (an index of 4M items holds 1 GB of vectors)."""
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = AnnIndex.load(path, settings)
    return _LOADED[key]


def _candidate_batches(path: str, n: int, settings: RetrievalSettings):
    def run(batches):
        context = TaskContext.get()
        task_threads(context.cpus() if context is not None else 1)
        index = cached_index(path, settings)
        for batch in batches:
            keys = batch.column(C.USER_IDX).to_numpy(zero_copy_only=False)
            queries = list_column_to_matrix(batch.column("features"))
            seen = batch.column("seen")
            for start in range(0, batch.num_rows, BLOCK):
                stop = min(start + BLOCK, batch.num_rows)
                columns, scores = index.search_columns(queries[start:stop], n,
                                                       arrow_seen_columns(seen.slice(start, stop - start), index.ids))
                yield ranked_lists(keys[start:stop], columns, scores, index.ids)

    return run

"""The trials of the session models (``cooccurrence``, ``gru4rec``): fitted on each user's train rows in time order
(ties by item index), scored with MAP@K on valid from the top K after the user's sequence, its items excluded — the
same question the run then asks of every model, so the session models are selected like the others."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from recsys.constants import COOCCURRENCE
from recsys.metrics import python_metrics as PM
from recsys.metrics.definitions import MAP, metric_key
from recsys.models.params import model_params
from recsys.models.topk import seen_columns, topk_scores
from recsys.selection.data import SearchData
from recsys.selection.search import Trial
from recsys.sessions import cooccurrence
from recsys.sessions.arrays import Sequences

ROWS_PER_BLOCK = 256


def user_sequences(data: SearchData) -> tuple[np.ndarray, Sequences]:
    """(users, sequences): each user's train items in time order."""
    order = np.lexsort((data.items, data.timestamps, data.users))
    users, items = data.users[order], data.items[order]
    owners, starts = np.unique(users, return_index=True)
    return owners, Sequences(np.append(starts, len(users)).astype(np.int64), items.astype(np.int32))


def session_trial(model: str, data: SearchData, k: int) -> Trial:
    """Fit ``model`` (GRU4Rec stops after the epoch that ends past the deadline) and score it on valid."""
    owners, sequences = user_sequences(data)
    asked = np.flatnonzero(np.isin(owners, np.fromiter(data.truth, dtype=np.int64, count=len(data.truth))))
    histories = sequences.select(asked)

    def run(params: dict[str, Any], trial, deadline: float) -> float:
        typed = model_params(model, params)
        if model == COOCCURRENCE:
            scorer = cooccurrence.fit(sequences, data.n_items, typed)
        else:
            from recsys.sessions.gru4rec.training import fit

            left = deadline - time.perf_counter()          # the search's clock; GRU4Rec's is time.monotonic()
            scorer = fit(sequences, data.n_items, typed, deadline=time.monotonic() + left)
        predictions = {}
        for rows, scores in scorer.next_scores_batch(histories, rows_per_block=ROWS_PER_BLOCK):
            block = histories.select(rows)
            seen = seen_columns(block.lengths, block.items, np.arange(scores.shape[1]))
            columns, values = topk_scores(scores, k, seen)           # ties to the smaller item, as everywhere
            for row, row_columns, row_values in zip(rows.tolist(), columns, values):
                predictions[int(owners[asked[row]])] = row_columns[np.isfinite(row_values)].tolist()
        return PM.ranking_metrics(predictions, data.truth, [k])[metric_key(MAP, k)]

    return run

"""The run's factor cache: a hit is exactly the fit it replaces, any other matrix or parameter misses, nothing is
cached outside a train step, old entries are pruned, the cascade empties it — and (Spark) the multi-stage model's
ALS retriever is served by the run's implicit_als fit on the same rows instead of fitting again."""

from __future__ import annotations

import contextvars
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from recsys import constants as C
from recsys.models import factor_cache, fit_model
from recsys.models.implicit_als import factorize
from recsys.models.params import ALSParams, MultiStageParams, WeightingParams
from recsys.multistage import retrievers as R
from recsys.multistage.stage import fit_stage

PARAMS = ALSParams(factors=4, regularization=0.05, alpha=5.0, iterations=3, seed=2)


def triples(seed: int = 0, users: int = 40, items: int = 30, per_user: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([(u, i, float(rng.integers(1, 6))) for u in range(users)
                     for i in rng.choice(items, per_user, replace=False)])


def csr(rows: np.ndarray) -> sp.csr_matrix:
    users, items = rows[:, 0].astype(np.int32), rows[:, 1].astype(np.int32)
    return sp.csr_matrix((rows[:, 2].astype(np.float32), (users, items)), shape=(users.max() + 1, items.max() + 1))


def entries(warehouse) -> list:
    folder = factor_cache.root(warehouse)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def test_a_hit_is_the_fit_it_replaces_and_costs_nothing(tmp_path):
    rows = triples()
    plain_users, plain_items, _ = factorize(csr(rows), PARAMS)
    with factor_cache.using(tmp_path):
        first = factorize(csr(rows), PARAMS)
        shuffled = factorize(csr(np.random.default_rng(1).permutation(rows)), PARAMS)   # same matrix, other order
    assert len(entries(tmp_path)) == 1
    assert shuffled[2] == 0.0 and first[2] > 0.0
    for got in (first, shuffled):
        np.testing.assert_array_equal(got[0], plain_users)
        np.testing.assert_array_equal(got[1], plain_items)


def test_another_matrix_or_parameter_misses(tmp_path, monkeypatch):
    monkeypatch.setattr(factor_cache, "KEEP", 10)
    rows = triples()
    other = rows.copy()
    other[0, 2] += 1.0                                                  # one weight changed
    with factor_cache.using(tmp_path):
        for matrix, params in ((csr(rows), PARAMS), (csr(other), PARAMS),
                               (csr(rows), PARAMS.model_copy(update={"seed": 3})),
                               (csr(rows), PARAMS.model_copy(update={"regularization": 0.1}))):
            assert factorize(matrix, params)[2] > 0.0
    assert len(entries(tmp_path)) == 4


def test_nothing_is_cached_outside_a_train_step_or_with_a_callback(tmp_path):
    factorize(csr(triples()), PARAMS)
    with factor_cache.using(tmp_path):
        factorize(csr(triples()), PARAMS, callback=lambda *_: None)     # a selection trial: scored per iteration
    assert entries(tmp_path) == []


def test_only_the_most_recently_used_entries_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(factor_cache, "KEEP", 2)
    with factor_cache.using(tmp_path):
        keys = []
        for seed in range(3):
            matrix = csr(triples(seed))
            factorize(matrix, PARAMS)
            keys.append(factor_cache.key(matrix, PARAMS.model_dump()))
    assert entries(tmp_path) == sorted(keys[1:])


def test_a_fit_already_running_elsewhere_is_waited_for_not_repeated(tmp_path):
    """Two train tasks at once (the DAG runs two): the second waits on the first's lock and reads its result."""
    matrix, params = csr(triples()), PARAMS.model_dump()
    started, calls = threading.Event(), []

    def slow_fit():
        calls.append("first")
        started.set()
        time.sleep(0.5)
        return np.ones((3, 2), np.float32), np.zeros((4, 2), np.float32), 0.5

    def second_fit():
        calls.append("second")
        return np.full((3, 2), 9, np.float32), np.full((4, 2), 9, np.float32), 0.1

    results = {}
    with factor_cache.using(tmp_path):
        context = contextvars.copy_context()
        first = threading.Thread(target=lambda: results.update(first=context.run(
            factor_cache.fit_once, matrix, params, slow_fit)))
        first.start()
        started.wait(5)
        results["second"] = factor_cache.fit_once(matrix, params, second_fit)
        first.join()
    assert calls == ["first"]
    np.testing.assert_array_equal(results["second"][0], results["first"][0])
    assert results["second"][2] == 0.0


def test_the_deletion_cascade_empties_it(tmp_path):
    with factor_cache.using(tmp_path):
        factorize(csr(triples()), PARAMS)
    assert factor_cache.clear(tmp_path) is True
    assert entries(tmp_path) == [] and factor_cache.clear(tmp_path) is False


@pytest.mark.parametrize("weights", ["binary", "ratings", "decayed, BM25 at a power"])
def test_the_multistage_als_retriever_is_the_runs_implicit_als_fit(spark, tmp_path, weights):
    rows = triples(seed=5)
    params = PARAMS
    if weights == "binary":
        rows[:, 2] = 1.0
    if weights.startswith("decayed"):          # gold's float64 weights, not exact in float32, and a weighting
        rows[:, 2] = rows[:, 2] / 5 * np.random.default_rng(1).uniform(0.3, 1.0, len(rows))
        params = PARAMS.model_copy(update={"weighting": WeightingParams(power=0.476, scheme="bm25")})
    stamps = np.arange(len(rows), dtype=np.int64) * 1000
    frame = spark.createDataFrame([(int(u), int(i), float(w), int(t)) for (u, i, w), t in zip(rows, stamps)],
                                  f"{C.USER_IDX} int, {C.ITEM_IDX} int, weight double, {C.TIMESTAMP} long")
    with factor_cache.using(tmp_path):
        single = fit_model("implicit_als", frame, params.model_dump())
        history = R.History.of(rows[:, 0].astype(np.int32), rows[:, 1].astype(np.int32), rows[:, 2], stamps)
        stage = fit_stage(history, 35, MultiStageParams(retrievers=["als"], per_retriever=5), params, None, {})
    assert len(entries(tmp_path)) == 1                                  # the second fit was a hit
    saved = {r["id"]: r["features"] for r in single.item_factors.collect()}
    np.testing.assert_allclose(stage.als.vectors, np.array([saved[i] for i in stage.als.ids.tolist()]), rtol=1e-6)
    single.discard_scratch()

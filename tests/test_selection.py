"""Model selection (recsys.selection): the search never sees the test split, keeps its budget, continues a resumed
study without repeating trials, and a budget of 0 leaves the configured parameters; the weighting and the space
mapping it searches. Fast tests use planted synthetic interactions in numpy; one Spark test runs the step."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from recsys.models.params import WeightingParams, model_params
from recsys.models.weighting import weigh
from recsys.selection import search as S
from recsys.selection import spaces
from recsys.selection.data import SearchData
from recsys.selection.settings import TuningSettings

DAY = 86_400_000


def planted(users: int = 120, items: int = 60, clusters: int = 4, per_user: int = 12, seed: int = 0):
    """Users of a cluster interact only with that cluster's items; each user's last 3 rows are valid."""
    rng = np.random.default_rng(seed)
    size = items // clusters
    u, i, s = [], [], []
    for user in range(users):
        block = (user % clusters) * size
        chosen = rng.choice(size, size=per_user, replace=False) + block
        u += [user] * per_user
        i += chosen.tolist()
        s += ["train"] * (per_user - 3) + ["valid"] * 3
    n = len(u)
    return (np.array(u), np.array(i), np.ones(n), np.arange(n, dtype=np.int64) * DAY, np.array(s))


def data(**kw) -> SearchData:
    return SearchData.from_rows(*planted(**kw), max_users=10_000, seed=1)


def test_the_search_data_refuses_test_rows():
    users, items, weights, stamps, splits = planted()
    splits[::7] = "test"
    with pytest.raises(ValueError, match="only train and valid"):
        SearchData.from_rows(users, items, weights, stamps, splits, max_users=10, seed=0)


def test_valid_rows_are_the_truth_and_never_fitted():
    d = data()
    assert len(d.users) == 120 * 9 and sum(len(v) for v in d.truth.values()) == 120 * 3
    fitted = set(zip(d.users.tolist(), d.items.tolist()))
    assert not fitted & {(u, i) for u, items in d.truth.items() for i in items}


def test_users_are_sampled_above_the_cap_and_the_note_says_so():
    d = SearchData.from_rows(*planted(), max_users=30, seed=3)
    assert len(d.truth) == 30 and set(np.unique(d.users)) <= set(d.truth)
    assert "30 of the 120 users" in d.note


def test_the_fraction_is_the_share_of_the_train_rows_a_user_sample_keeps():
    assert data().fraction == 1.0
    users, items, weights, stamps, splits = planted(per_user=12)
    users[splits == "train"] = np.where(users[splits == "train"] % 2, users[splits == "train"], 200)
    d = SearchData.from_rows(users, items, weights, stamps, splits, max_users=30, seed=3)
    # 30 of the 120 users with valid rows sampled, 9 train rows each; user 200's train rows (no valid) never kept
    assert d.fraction == pytest.approx(len(d.users) / (splits == "train").sum())
    assert 0 < d.fraction < 30 / 120 and 200 not in d.users


def test_a_trials_matrix_holds_exactly_the_train_rows_over_the_users_and_items_that_have_one():
    """The sample's users and items are sparse in the full index space (users 0..999, items 0..4999 here, a
    handful with rows): the trial's matrix keeps only those, row r being ``users[r]`` and column c ``items[c]``."""
    users, items, weights, stamps, splits = planted()
    users, items = users * 7 + 3, items * 83                # ids spread out, every other index empty
    d = SearchData.from_rows(users, items, np.arange(len(users), dtype=float), stamps, splits, max_users=40, seed=2)
    values = np.arange(len(d.users), dtype=np.float32) + 1
    keep = d.users % 2 == 1
    for compact, rows in ((d.compact(values), np.ones(len(d.users), bool)), (d.compact(values, keep=keep), keep)):
        assert compact.matrix.shape == (len(np.unique(d.users[rows])), len(np.unique(d.items[rows])))
        coo = compact.matrix.tocoo()
        got = sorted(zip(compact.users[coo.row].tolist(), compact.items[coo.col].tolist(), coo.data.tolist()))
        assert got == sorted(zip(d.users[rows].tolist(), d.items[rows].tolist(), values[rows].tolist()))
    # scoring by the compact rows' ids is scoring the same vectors by id
    compact = d.compact(values)
    rng = np.random.default_rng(0)
    uf = rng.normal(size=(len(compact.users), 4)).astype(np.float32)
    itf = rng.normal(size=(len(compact.items), 4)).astype(np.float32)
    assert d.score_compact(compact, uf, itf, 10) == d.score(compact.users, uf, compact.items, itf, 10)


def test_a_flat_lambda_found_on_a_sample_is_divided_by_the_root_of_the_fraction_for_the_full_fit():
    from recsys.selection import scale

    params = {"factors": 8, "regularization": 2.0, "alpha": 1.0}
    assert scale.at_full_scale("implicit_als", params, 0.04) == {**params, "regularization": pytest.approx(10.0)}
    assert scale.at_full_scale("implicit_als", params, 1.0) == params          # no sample, nothing to move
    assert scale.at_full_scale("spark_als", params, 0.04) == params            # count-scaled λ carries over
    assert scale.at_full_scale("implicit_als", None, 0.04) is None
    with pytest.raises(ValueError):
        scale.full_data_regularization(1.0, 0.0)


@pytest.mark.parametrize("copies", [4, 9])
def test_implicit_on_every_user_k_times_with_lambda_times_root_k_fits_the_same_scores(copies):
    """The rule's derivation, checked on implicit itself: a sample holding 1/k of the interactions is, for the
    items, the full data with every user k times. From the corresponding start (X·a, Y/a with a² = 1/√k) implicit's
    exact ALS on the k-fold data with λ√k reaches the same scores as on the original with λ; with λ it does not."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    sample = sp.random(30, 20, density=0.25, random_state=1, format="csr", dtype=np.float32)
    sample.data[:] = rng.integers(1, 5, len(sample.data))
    full = sp.vstack([sample] * copies).tocsr()
    start_users, start_items = rng.normal(0, 0.1, (30, 6)), rng.normal(0, 0.1, (20, 6))
    a = copies ** -0.25

    def scores(matrix, lam: float, users, items) -> np.ndarray:
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=6, regularization=lam, alpha=1.0, iterations=5, use_cg=False,
                                            calculate_training_loss=False, random_state=0)
            model.user_factors, model.item_factors = users.astype(np.float32), items.astype(np.float32)
            model.fit(matrix, show_progress=False)
        return model.user_factors[:30] @ model.item_factors.T

    want = scores(sample, 0.5, start_users, start_items)
    args = (np.tile(start_users * a, (copies, 1)), start_items / a)
    np.testing.assert_allclose(scores(full, 0.5 * np.sqrt(copies), *args), want, rtol=1e-3, atol=1e-4)
    assert np.abs(scores(full, 0.5, *args) - want).max() > 1e-2


def test_score_is_one_for_a_model_that_knows_the_valid_items():
    d = data(users=8, items=40, clusters=2, per_user=10)
    users = np.arange(8)
    items = np.arange(40)
    # each user's vector points at exactly their valid items: a perfect ranking once seen items are excluded
    user_vectors = np.zeros((8, 40), dtype=np.float32)
    for user, valid in d.truth.items():
        user_vectors[user, valid] = 1.0
    assert d.score(users, user_vectors, items, np.eye(40, dtype=np.float32), 10) == pytest.approx(1.0)
    assert d.score(users, -user_vectors, items, np.eye(40, dtype=np.float32), 3) < 0.2


def test_weighting_power_zero_is_binary_and_identity_leaves_w():
    u, i, w = np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([0.2, 0.8, 0.5])
    assert weigh(u, i, w, None, WeightingParams(power=0)).tolist() == [1.0, 1.0, 1.0]
    assert weigh(u, i, w, None, WeightingParams()).tolist() == pytest.approx(w.tolist())
    assert weigh(u, i, w, None, WeightingParams(power=2)).tolist() == pytest.approx((w ** 2).tolist())


def test_bm25_and_tfidf_are_implicits():
    import scipy.sparse as sp
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    rng = np.random.default_rng(0)
    dense = (rng.random((30, 20)) < 0.3) * rng.integers(1, 6, (30, 20))
    dense[:, 0] = 0
    dense[np.arange(30), rng.integers(1, 20, 30)] = 3       # every user has a row
    m = sp.coo_matrix(dense.astype(np.float64))
    bm25 = bm25_weight(m, K1=50.0, B=0.5).tocoo()
    ours = weigh(m.row, m.col, m.data, None, WeightingParams(scheme="bm25", bm25_k1=50.0, bm25_b=0.5))
    assert ours == pytest.approx(np.maximum(bm25.data, 0), rel=1e-5)
    tfidf = tfidf_weight(m).tocoo()
    ours = weigh(m.row, m.col, m.data, None, WeightingParams(scheme="tfidf"))
    assert ours == pytest.approx(np.maximum(tfidf.data, 0), rel=1e-5)


def test_half_life_halves_a_weight_per_half_life_of_age():
    u, i, w = np.array([0, 0]), np.array([0, 1]), np.array([1.0, 1.0])
    got = weigh(u, i, w, np.array([100 * DAY, 70 * DAY]), WeightingParams(half_life_days=30))
    assert got.tolist() == pytest.approx([1.0, 0.5])


def test_spark_regularization_is_the_flat_one_per_typical_count():
    assert spaces.spark_regularization(10.0, 100.0) == pytest.approx(0.1)
    assert spaces.flat_regularization(0.1, 100.0) == pytest.approx(10.0)


def test_the_typical_count_weighs_users_and_items_by_their_interactions():
    # users with 1 and 3 rows: the mean over interactions is (1·1 + 3·3) / 4 = 2.5 (over users it would be 2);
    # items 0, 1, 2 have 2, 1, 1 rows: (4 + 1 + 1) / 4 = 1.5
    users, items = np.array([0, 1, 1, 1]), np.array([0, 0, 1, 2])
    d = SearchData.from_rows(users, items, np.ones(4), np.zeros(4, dtype=np.int64), np.array(["train"] * 4),
                             max_users=10, seed=0)
    assert d.typical_count == pytest.approx(np.sqrt(2.5 * 1.5))


def test_spark_starts_from_implicits_winner_mapped_into_its_space():
    from recsys.selection.step import _first, _implicit_best

    d = data()
    winner = model_params("implicit_als", {"factors": 200, "regularization": 5.0, "iterations": 37}).model_dump()
    searched = {"implicit_als": {"best": winner}}
    assert _implicit_best("spark_als", searched) == winner and _implicit_best("implicit_als", searched) is None
    assert _first("spark_als", None, d) == []                    # implicit not searched (or a resumed study)
    (mapped,) = _first("spark_als", winner, d)
    assert mapped["regularization"] == pytest.approx(5.0 / d.typical_count)
    assert mapped["iterations"] == spaces.ITERATIONS["spark_als"][1] and mapped["factors"] == 200
    assert mapped["min_confidence"] == 0.0
    (dropping,) = _first("spark_als", winner, d, min_confidence=0.3)
    assert dropping["min_confidence"] == 0.3


def test_the_thresholds_are_the_weak_levels_or_their_quantiles():
    from recsys.selection.confidence import MAX_LEVELS, thresholds

    assert thresholds(np.array([1.0, 2.0, 5.0])) == [0.0]                   # nothing under 1: nothing to choose
    # levels 0.2 < 0.5 < 0.9 under 1: leave out nothing, what is under 0.5, under 0.9, under 1
    assert thresholds(np.array([0.2, 0.5, 0.5, 0.9, 3.0])) == [0.0, 0.5, 0.9, 1.0]
    many = thresholds(np.linspace(0.0, 0.99, 1000))
    assert len(many) == MAX_LEVELS + 1 and many[0] == 0.0 and many[-1] == 1.0 and many == sorted(many)


def test_kept_rows_never_leave_a_user_without_rows():
    from recsys.selection.confidence import kept_rows

    users = np.array([0, 0, 0, 1, 1])
    confidence = np.array([0.2, 0.7, 3.0, 0.1, 0.4])
    assert kept_rows(users, confidence, 0.5).tolist() == [False, True, True, True, True]
    assert kept_rows(users, confidence, 0.0).all()


def noisy(users: int = 120, items: int = 60, clusters: int = 4, seed: int = 0) -> SearchData:
    """:func:`planted` plus, for every user, 6 weak (w = 0.1) train rows on random items of other clusters."""
    u, i, w, t, s = planted(users, items, clusters, seed=seed)
    rng = np.random.default_rng(seed + 1)
    size = items // clusters
    extra_u, extra_i = [], []
    for user in range(users):
        others = np.setdiff1d(np.arange(items), np.arange(size) + (user % clusters) * size)
        taken = set(i[u == user].tolist())
        extra_i += [x for x in rng.choice(others, 6, replace=False).tolist() if x not in taken]
        extra_u += [user] * (len(extra_i) - len(extra_u))
    n = len(extra_u)
    return SearchData.from_rows(np.r_[u, extra_u], np.r_[i, extra_i], np.r_[w, np.full(n, 0.1)],
                                np.r_[t, np.arange(n) * DAY], np.r_[s, ["train"] * n], max_users=10_000, seed=1)


def test_spark_is_mapped_to_leave_out_planted_noise_implicit_all_but_ignores():
    """Weak rows (c = 0.1) across clusters are noise that implicit weighs at a tenth of an unobserved pair; held at
    c = 1 (what Spark can do) they blur the clusters: the mapping leaves them out, measured with implicit."""
    from recsys.selection.confidence import spark_min_confidence

    winner = model_params("implicit_als", {"factors": 8, "regularization": 0.5, "alpha": 1.0, "iterations": 10}
                          ).model_dump()
    mapping = spark_min_confidence(noisy(), winner, 10, seconds=60.0, fit_seconds=0.0)
    assert sorted(mapping.measured) == [0.0, 1.0]
    assert mapping.min_confidence == 1.0 and mapping.measured[1.0] > mapping.measured[0.0] + 0.05
    # no time for even one fit: nothing measured, nothing left out
    assert spark_min_confidence(noisy(), winner, 10, seconds=1.0, fit_seconds=5.0).measured == {}


def test_a_trial_is_sized_iterations_first_then_factors_to_its_predicted_cost():
    from recsys.selection import cost

    measured = [({"factors": 16, "iterations": 10}, 1.0), ({"factors": 32, "iterations": 10}, 2.0)]
    wanted = {"factors": 256, "iterations": 10, "alpha": 3.0}
    # predicted from the dearest measured trial: 2 s per 10 × 32² units
    assert cost.predicted_seconds(wanted, measured) == pytest.approx(2.0 * 64)
    assert cost.sized(wanted, measured, seconds=200.0) == wanted              # fits: unchanged
    assert cost.sized(wanted, measured, seconds=70.0) == {**wanted, "iterations": 5}   # 64 s
    small = cost.sized(wanted, measured, seconds=10.0)
    assert small["iterations"] == 5 and cost.predicted_seconds(small, measured) <= 10.0
    assert small["factors"] > 0.9 * 256 * np.sqrt(10.0 / 64) and small["alpha"] == 3.0   # no smaller than needed
    tiny = cost.sized(wanted, measured, seconds=0.01)
    assert (tiny["factors"], tiny["iterations"]) == (cost.MIN_FACTORS, cost.MIN_ITERATIONS)


def test_spark_is_sized_for_min_trials_in_its_budget_and_the_others_not():
    from recsys.selection import cost
    from recsys.selection.step import _sizer

    d, tuning = data(), TuningSettings(min_trials=4)
    measured = [({"factors": 16, "iterations": 10}, 2.0)]
    wanted = {"factors": 256, "iterations": 10}
    size = _sizer("spark_als", d, 100.0, tuning)
    assert cost.predicted_seconds(size(wanted, measured), measured) <= 100.0 / 4
    assert size({"factors": 16, "iterations": 10}, measured) == {"factors": 16, "iterations": 10}
    assert _sizer("implicit_als", d, 100.0, tuning) is None


def capped(allowed):
    """A sizer that allows ``allowed(number of trials measured so far)`` factors."""
    return lambda wanted, measured: {**wanted, "factors": min(wanted["factors"], allowed(len(measured)))}


@pytest.mark.parametrize("allowed, factors", [(lambda n: 12 * n, [8, 12, 24]), (lambda n: 10 + n, [8, 11])])
def test_a_shrunk_first_trial_is_tried_again_when_the_measurements_allow_it_grown(tmp_path, allowed, factors):
    tuning = TuningSettings(max_trials=3, rescore_top=0)
    study = S.open_study(tmp_path, "sized", tuning)
    base = model_params("implicit_als", {"factors": 8}).model_dump()
    wanted = {**base, "factors": 64, "alpha": 3.0}
    result = S.run_search(study, "implicit_als", base, lambda params, trial, deadline: 0.1, budget_seconds=60,
                          tuning=tuning, typical_count=10.0, first=[wanted], size=capped(allowed))
    got = [t["params"] for t in result.trials]
    assert [p["factors"] for p in got[:len(factors)]] == factors
    assert all(p["alpha"] == 3.0 for p in got[1:len(factors)])
    if len(factors) == 2:   # re-sized to 12 after two trials: not 1.5 × its first try (11), so TPE draws instead
        assert got[2] != {**wanted, "factors": 12}


@pytest.mark.parametrize("model", ["implicit_als", "spark_als", "content"])
def test_an_enqueued_configuration_is_the_trial_it_came_from(model):
    from optuna.trial import FixedTrial

    inside = {} if model == "content" else {"iterations": spaces.ITERATIONS[model][1]}
    if model == "spark_als":
        inside["min_confidence"] = 0.4
    params = model_params(model, {**inside, "weighting": {"power": 3.0, "scheme": "bm25", "bm25_k1": 20.0,
                                                          "half_life_days": 90.0}}).model_dump()
    values = spaces.trial_values(model, params, typical_count=50.0)
    again = S._params(model, params, spaces.suggest(FixedTrial(values), model), 50.0)
    assert again == params


def search(tmp_path, name: str, budget: float, tuning: TuningSettings | None = None, max_trials: int = 200):
    tuning = (tuning or TuningSettings(startup_trials=4, report_every=2)).model_copy(update={"max_trials": max_trials})
    d = data()
    study = S.open_study(tmp_path, name, tuning)
    base = model_params("implicit_als", {"factors": 8, "iterations": 6}).model_dump()
    return S.run_search(study, "implicit_als", base, S.implicit_trial(d, 10, tuning.report_every),
                        budget_seconds=budget, tuning=tuning, typical_count=d.typical_count)


def test_the_budget_is_kept(tmp_path):
    start = time.perf_counter()
    result = search(tmp_path, "budget", budget=3.0)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0 + 2.0                                    # one trial's worth of margin and the study setup
    assert len(result.trials) >= 3 and result.best_value is not None
    assert result.trials[0]["params"]["factors"] == 8             # the configured parameters are the first trial


def test_a_resumed_study_continues_without_repeating_trials(tmp_path):
    # both sessions inside the random start-up phase, where a sampler seeded as in the first would redraw its trials
    tuning = TuningSettings(startup_trials=8, report_every=2)
    first = search(tmp_path, "resumed", budget=60, tuning=tuning, max_trials=3)
    second = search(tmp_path, "resumed", budget=60, tuning=tuning, max_trials=3)
    assert second.previous_trials == 3 and len(second.trials) == 3
    assert [t["number"] for t in second.trials] == [3, 4, 5]
    drawn = [json.dumps(t["params"], sort_keys=True) for t in first.trials + second.trials]
    assert len(set(drawn)) == len(drawn)
    assert second.best_value >= first.best_value                  # the study's best includes the first session's


def test_the_search_finds_the_planted_structure(tmp_path):
    result = search(tmp_path, "quality", budget=60, max_trials=15)
    assert result.best_value > 0.5                                # 4 clusters of 15 items: chance is far below


def lucky_or_steady(params, trial, deadline):
    """A fake trial: factors 16 draws 0.9 with the configured seed and 0.1 with any other, factors 8 is 0.5 always."""
    if params["factors"] == 16:
        return 0.9 if params["seed"] == 42 else 0.1
    return 0.5


@pytest.mark.parametrize("rescore_top, winner, value", [(2, 8, 0.5), (0, 16, 0.9)])
def test_the_winner_is_the_best_mean_over_seeds_not_the_luckiest_draw(tmp_path, rescore_top, winner, value):
    tuning = TuningSettings(max_trials=2, rescore_top=rescore_top, rescore_seeds=2)
    study = S.open_study(tmp_path, "lucky", tuning)
    base = model_params("implicit_als", {"factors": 8}).model_dump()
    result = S.run_search(study, "implicit_als", base, lucky_or_steady, budget_seconds=60, tuning=tuning,
                          typical_count=10.0, first=[{**base, "factors": 16}])
    assert [t["value"] for t in result.trials] == [0.5, 0.9]
    assert result.best["factors"] == winner and result.best_value == pytest.approx(value)
    if rescore_top:
        assert [(r["params"]["factors"], r["values"]) for r in result.rescored] == [(16, [0.9, 0.1, 0.1]),
                                                                                    (8, [0.5, 0.5, 0.5])]


def close_but_dearer(params, trial, deadline):
    """A fake trial: 32 factors score 0.600, 8 factors 0.597 (0.5 % below), 16 factors 0.550, with any seed."""
    return {32: 0.600, 8: 0.597, 16: 0.550}[params["factors"]]


@pytest.mark.parametrize("parsimony, rescore_top, winner", [(0.01, 1, 8), (0.01, 3, 8), (0.0, 3, 32),
                                                           (0.004, 3, 32)])
def test_the_als_winner_is_the_cheapest_trial_within_the_parsimony_of_the_best(tmp_path, parsimony, rescore_top,
                                                                               winner):
    tuning = TuningSettings(max_trials=3, rescore_top=rescore_top, rescore_seeds=1, parsimony=parsimony)
    study = S.open_study(tmp_path, "parsimony", tuning)
    base = model_params("implicit_als", {"factors": 32}).model_dump()
    result = S.run_search(study, "implicit_als", base, close_but_dearer, budget_seconds=60, tuning=tuning,
                          typical_count=10.0, first=[{**base, "factors": 8}, {**base, "factors": 16}])
    assert [t["value"] for t in result.trials] == [0.600, 0.597, 0.550]
    assert result.best["factors"] == winner
    assert result.best_value == pytest.approx({32: 0.600, 8: 0.597}[winner])
    rescored = [r["params"]["factors"] for r in result.rescored]
    # the cheap trial is re-scored even when it is not among the rescore_top best, right after the best
    assert rescored[:2] == ([32, 8] if parsimony >= 0.005 else [32, 8][:min(2, rescore_top)])
    assert 16 not in rescored[:2]


@pytest.mark.parametrize("finished_at, elapsed, expected", [
    ([(1, 0.10), (2, 0.20), (3, 0.20), (4, 0.20)], 3.9, False),        # last gain at 2 s: under half of 3.9 s ago
    ([(1, 0.10), (2, 0.20), (3, 0.20), (4, 0.20)], 4.0, True),
    ([(1, 0.10), (2, 0.20), (3, 0.201), (9, 0.2019)], 9.0, True),      # +0.5 % and +0.95 % over the gain: none
    ([(1, 0.10), (2, 0.20), (3, 0.201), (9, 0.2021)], 9.0, False),     # just over 1 % of 0.20: a gain at 9 s
    ([(1, 0.10), (2, 0.20), (3, None), (4, None)], 4.5, True),         # stopped trials gain nothing
    ([(1, None), (2, None), (3, None), (4, None)], 9.0, False),        # nothing finished: no mark to judge by
    ([(1, 0.10), (2, 0.20), (3, 0.20)], 9.0, False),                   # fewer than 2 × startup_trials
])
def test_a_search_converges_once_the_last_patience_share_of_its_time_gained_nothing(finished_at, elapsed, expected):
    tuning = TuningSettings(startup_trials=2, parsimony=0.01, patience=0.5)
    assert S.converged_search(finished_at, elapsed, 2 * elapsed, tuning) is expected
    assert S.converged_search(finished_at, elapsed, 2 * elapsed + 0.1, tuning) is False     # under half its budget
    assert S.converged_search(finished_at, elapsed, elapsed, tuning.model_copy(update={"patience": 0.0})) is False


def plateau(params, trial, deadline):
    """A fake trial of 20 ms that scores 0.5 whatever it is given: nothing to gain after the first."""
    time.sleep(0.02)
    return 0.5


def test_a_converged_search_stops_early_and_says_so(tmp_path):
    tuning = TuningSettings(startup_trials=2, rescore_top=0, patience=0.5)
    study = S.open_study(tmp_path, "plateau", tuning)
    base = model_params("implicit_als", {"factors": 8}).model_dump()
    result = S.run_search(study, "implicit_als", base, plateau, budget_seconds=2, tuning=tuning, typical_count=10.0)
    assert result.converged and result.best_value == 0.5
    assert result.seconds >= 1.0                                        # never before half its budget
    endless = S.run_search(S.open_study(tmp_path, "endless", tuning), "implicit_als", base, plateau,
                           budget_seconds=30, tuning=tuning.model_copy(update={"patience": 0.0, "max_trials": 12}),
                           typical_count=10.0)
    assert not endless.converged and len(endless.trials) == 12
    content = model_params("content", {}).model_dump()                   # no cost measure: searched to the end
    searched = S.run_search(S.open_study(tmp_path, "content", tuning), "content", content, plateau, budget_seconds=2,
                            tuning=tuning.model_copy(update={"max_trials": 80}), typical_count=10.0)
    assert not searched.converged and (len(searched.trials) == 80 or searched.seconds >= 1.9)


def test_parsimony_needs_a_cost_measure_and_something_cheaper():
    als = {"factors": 64, "iterations": 10}
    assert S.cheapest_near([(0, 0.5, als), (1, 0.499, {**als, "factors": 16})], 0.01)[0] == 1
    assert S.cheapest_near([(0, 0.5, als), (1, 0.49, {**als, "factors": 16})], 0.01) is None     # 2 % below
    assert S.cheapest_near([(0, 0.5, {**als, "factors": 8}), (1, 0.5, als)], 0.01) is None     # the best is cheapest
    assert S.cheapest_near([(0, 0.5, {"dims": 64}), (1, 0.5, {"dims": 8})], 0.01) is None       # no cost measure
    rescored = [{"params": {"dims": 64}, "mean": 0.5}, {"params": {"dims": 8}, "mean": 0.499}]
    assert S.parsimonious(rescored, 0.01)["params"] == {"dims": 64}                            # best mean
    assert S.parsimonious([], 0.01) is None


def test_rescoring_keeps_the_budget(tmp_path):
    tuning = TuningSettings(max_trials=2, rescore_top=2, rescore_seeds=2)

    def slow(params, trial, deadline):
        time.sleep(0.4)
        return lucky_or_steady(params, trial, deadline)

    study = S.open_study(tmp_path, "slow", tuning)
    base = model_params("implicit_als", {"factors": 8}).model_dump()
    start = time.perf_counter()
    result = S.run_search(study, "implicit_als", base, slow, budget_seconds=1.5, tuning=tuning, typical_count=10.0,
                          first=[{**base, "factors": 16}])
    assert time.perf_counter() - start < 1.5 + 0.3
    assert len(result.trials) == 2 and len(result.rescored) == 0            # 4 more fits of 0.4 s did not fit
    assert result.best["factors"] == 16                                     # then the best single draw stands


def test_the_rescoring_reserve_is_kept_only_when_it_is_affordable():
    trials = [{"seconds": 2.0, "stopped": None}, {"seconds": 9.0, "stopped": "pruned after 5 iterations"}]
    tuning = TuningSettings(rescore_top=3, rescore_seeds=2, rescore_share=0.3, parsimony=0.0)
    assert S._rescore_reserve(trials, tuning, budget_seconds=100) == pytest.approx(12.0)   # 6 fits of 2 s
    assert S._rescore_reserve(trials, tuning, budget_seconds=30) == 0.0                   # > 30 % of it: search on
    tuning = TuningSettings(rescore_top=3, rescore_seeds=2, rescore_share=0.3, parsimony=0.01)
    assert S._rescore_reserve(trials, tuning, budget_seconds=100) == pytest.approx(16.0)   # and the cheap trial's 2


@pytest.mark.parametrize("graded", [True, False])
def test_implicit_starts_from_the_portfolio_each_point_inside_the_space(graded):
    from optuna.trial import FixedTrial

    from recsys.selection.portfolio import STARTING_POINTS
    from recsys.selection.step import _first

    users, items, weights, stamps, splits = planted()
    if graded:
        weights = np.linspace(0.2, 1.0, len(weights))
    d = SearchData.from_rows(users, items, weights, stamps, splits, max_users=10_000, seed=1)
    points = _first("implicit_als", None, d)
    assert len(points) == len(STARTING_POINTS) - (not graded)               # a power changes nothing on equal w
    for point in points:
        params = model_params("implicit_als", point).model_dump()
        values = spaces.trial_values("implicit_als", params, typical_count=d.typical_count)
        assert S._params("implicit_als", params, spaces.suggest(FixedTrial(values), "implicit_als"),
                         d.typical_count) == params


def test_a_spark_trial_is_cancelled_at_the_deadline(spark):
    """A job still running at the deadline is cancelled and the trial stops there, not a whole fit later; a job
    that ends in time is left alone and the thread's later jobs carry no tag."""

    def slow(_):
        time.sleep(60)
        return 0

    start = time.perf_counter()
    with pytest.raises(S.Stopped, match="cancelled at the deadline"):
        with S.cancelled_at(spark, time.perf_counter() + 2.0):
            spark.sparkContext.parallelize(range(2), 2).map(slow).collect()
    assert time.perf_counter() - start < 15
    with S.cancelled_at(spark, time.perf_counter() + 30.0):
        assert spark.range(10).count() == 10
    assert not spark.sparkContext.getJobTags()


def test_budget_zero_keeps_the_configured_parameters(tmp_path):
    from recsys.config import load_settings
    from recsys.selection.step import select_models, selected_params

    settings = load_settings(warehouse=tmp_path / "wh")
    settings.tuning = settings.tuning.model_copy(update={"budget_seconds": 0})
    assert select_models(None, settings, "run-x")["models"] == {}        # nothing read, nothing searched
    assert selected_params(settings.warehouse, "run-x", "implicit_als") is None


def test_the_step_searches_on_valid_only_records_trials_and_train_fits_the_winner(spark, tmp_path, monkeypatch):
    """The select step on a small gold table: the rows it reads carry no test label (and a run's test rows can be
    anything: the trials come out the same), every trial lands in ops/runs as stage ``trial`` on ``valid``, the
    winners are what the train step then fits."""
    from test_features import silver_rows, write_silver

    from recsys import constants as C
    from recsys import tables as T
    from recsys.config import FeatureSettings, SplitSettings, load_settings
    from recsys.features import build_features
    from recsys.selection import data as D
    from recsys.selection.step import select_models, selected_params
    from recsys.train import train

    settings = load_settings(warehouse=tmp_path / "wh", reports=tmp_path / "reports")
    settings.features = FeatureSettings(split=SplitSettings(strategy="leave_last_out", holdout=2))
    settings.tuning = settings.tuning.model_copy(update={"budget_seconds": 4.0, "max_trials": 4})
    write_silver(spark, settings.warehouse, silver_rows(n_users=60, n_items=25, per_user=(5, 12)))
    build_features(spark, settings.warehouse, settings.features)
    seen_splits: list[set] = []
    original = D.SearchData.from_rows.__func__

    def spy(cls, users, items, weights, timestamps, splits, **kw):
        seen_splits.append(set(splits.tolist()))
        return original(cls, users, items, weights, timestamps, splits, **kw)

    monkeypatch.setattr(D.SearchData, "from_rows", classmethod(spy))
    first = select_models(spark, settings, "run-a", ["implicit_als", "popularity"])
    assert seen_splits == [{"train", "valid"}]
    assert list(first["models"]) == ["implicit_als"]                     # popularity has nothing to search

    # scramble the test rows: a search that never reads them draws and scores the same trials
    path = T.table_path(settings.warehouse, C.INTERACTIONS)
    gold = T.read_table(spark, settings.warehouse, C.INTERACTIONS)
    from pyspark.sql import functions as F

    scrambled = gold.withColumn(C.ITEM_IDX, F.when(F.col(C.SPLIT) == "test", (F.col(C.ITEM_IDX) + 7) % 25)
                                .otherwise(F.col(C.ITEM_IDX))).localCheckpoint()
    scrambled.write.format("delta").mode("overwrite").save(path)
    settings.tuning = settings.tuning.model_copy(update={"budget_seconds": 60.0})
    again = select_models(spark, settings, "run-b", ["implicit_als"])
    values = [[t["value"] for t in r["models"]["implicit_als"]["trials"]] for r in (first, again)]
    assert values[1][:len(values[0])] == values[0]

    runs = spark.read.format("delta").load(T.table_path(settings.warehouse, C.RUNS))
    trials = runs.where((F.col("stage") == "trial") & (F.col("run_id") == "run-a")).collect()
    assert len(trials) == len(first["models"]["implicit_als"]["trials"]) and {r["split"] for r in trials} == {"valid"}

    best = selected_params(settings.warehouse, "run-a", "implicit_als")
    entry = train(spark, settings, "implicit_als", "run-a")
    registered = json.loads(spark.read.format("delta").load(T.table_path(settings.warehouse, C.MODEL_REGISTRY))
                            .where(F.col("run_id") == "run-a").first()["params"])
    assert registered == best and entry["model"] == "implicit_als"


def test_spark_starts_from_implicits_winner_sized_to_its_budget(spark, tmp_path):
    """Through the step's own search of Spark ALS: after the configured trial, implicit's winner mapped into
    Spark's space (λ by the typical count, iterations inside Spark's range) and cut so that tuning.min_trials of
    it are predicted to fit the budget."""
    from test_features import silver_rows, write_silver

    from recsys.config import FeatureSettings, SplitSettings, load_settings
    from recsys.features import build_features
    from recsys.selection import cost
    from recsys.selection.data import search_data
    from recsys.selection.step import search_model

    settings = load_settings(warehouse=tmp_path / "wh", reports=tmp_path / "reports")
    settings.features = FeatureSettings(split=SplitSettings(strategy="leave_last_out", holdout=2))
    settings.tuning = settings.tuning.model_copy(update={"max_trials": 2, "rescore_top": 0, "min_trials": 5})
    write_silver(spark, settings.warehouse, silver_rows(n_users=60, n_items=25, per_user=(5, 12)))
    build_features(spark, settings.warehouse, settings.features)
    d = search_data(spark, settings.warehouse, max_users=1000, seed=0)
    winner = model_params("implicit_als", {"factors": 256, "regularization": 4.0, "alpha": 2.0, "iterations": 30,
                                           "weighting": {"power": 3.0}}).model_dump()
    result = search_model(spark, settings, "spark_als", "run-s", d, budget_seconds=40.0,
                          searched={"implicit_als": {"best": winner}})
    (configured, configured_seconds), (first, _) = [(t["params"], t["seconds"]) for t in result.trials]
    assert configured["factors"] == settings.train.params.spark_als.factors
    assert first["regularization"] == pytest.approx(4.0 / d.typical_count)
    assert (first["alpha"], first["weighting"]) == (2.0, winner["weighting"])
    assert first["iterations"] == cost.SPARE_ITERATIONS and first["factors"] < 256      # cut: 256 would not fit
    assert cost.predicted_seconds(first, [(configured, configured_seconds)]) <= 40.0 / 5


def test_the_report_shows_the_search(tmp_path):
    from recsys.evaluate.report import write_report

    def trial(number, value, factors, stopped=None):
        params = model_params("implicit_als", {"factors": factors, "weighting": {"power": 2.0}}).model_dump()
        return {"number": number, "params": params, "value": value, "stopped": stopped, "seconds": 1.5}

    trials = [trial(0, 0.01, 16), trial(1, 0.05, 128), trial(2, 0.02, 8, stopped="pruned after 5 iterations")]
    selection = {"budget_seconds": 60, "seconds": 58.2, "k": 10, "note": "trials on a sample of 5 of the 9 users",
                 "models": {"implicit_als": {"best": trials[1]["params"], "best_value": 0.05, "study": "s",
                                             "previous_trials": 0, "seconds": 50.0, "trials": trials}}}
    curves = [{"k": 1, "map": 0.1, "recall": 0.1}]
    results = {"implicit_als": {"curves": curves, "metrics": {"map@10": 0.04}, "train_seconds": 1.0}}
    page = write_report(tmp_path, {"run_id": "r", "decision": {}}, results, selection).read_text()
    assert (tmp_path / "selection.png").is_file() and "Model selection" in page
    assert "1 stopped early" in page and "spent 58 s" in page and "sample of 5 of the 9 users" in page
    table = page[page.index("<h3>implicit_als"):]
    assert table.index("<td>1</td><td>0.05</td>") < table.index("<td>0</td><td>0.01</td>")   # best trial first
    assert "<td>2</td><td>0.02</td>" not in table                                       # stopped trials not ranked
    assert "selection.png" not in write_report(tmp_path / "none", {"run_id": "r", "decision": {}}, results, {}) \
        .read_text()


def test_a_multistage_run_searches_the_models_its_retrievers_take():
    from recsys.selection.step import searched_models

    assert searched_models(["multistage"]) == ["content", "implicit_als"]
    assert searched_models(["popularity"]) == []
    assert searched_models(["spark_als", "popularity"]) == ["spark_als"]


def test_a_sampled_search_hands_train_its_winner_rescaled_and_spark_the_winner_as_searched(spark, tmp_path):
    """implicit ALS searched on 20 of 60 users: the selection's ``best`` (what train fits on every user) carries
    λ/√fraction, ``searched_best`` the trial's λ, and Spark's search — on the same sample — starts from the latter."""
    from test_features import silver_rows, write_silver

    from recsys.config import FeatureSettings, SplitSettings, load_settings
    from recsys.features import build_features
    from recsys.selection.data import search_data
    from recsys.selection.step import _implicit_best, search_model, summary

    settings = load_settings(warehouse=tmp_path / "wh", reports=tmp_path / "reports")
    settings.features = FeatureSettings(split=SplitSettings(strategy="leave_last_out", holdout=2))
    settings.tuning = settings.tuning.model_copy(update={"max_trials": 2, "rescore_top": 0})
    write_silver(spark, settings.warehouse, silver_rows(n_users=60, n_items=25, per_user=(5, 12)))
    build_features(spark, settings.warehouse, settings.features)
    sample = search_data(spark, settings.warehouse, max_users=20, seed=0)
    result = search_model(spark, settings, "implicit_als", "run-s", sample, budget_seconds=30.0)
    searched = result.searched_best
    assert 0 < sample.fraction < 0.5 and searched in [t["params"] for t in result.trials]
    assert result.best == {**searched, "regularization": pytest.approx(searched["regularization"]
                                                                        / np.sqrt(sample.fraction))}
    assert _implicit_best("spark_als", {"implicit_als": summary(result)}) == searched

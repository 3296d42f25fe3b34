"""Fold-in: ``transform`` and ``predict`` complete rows not seen in the fit.

A new row is completed by ridge regression of its observed entries on the fitted right
factor, with the prior the fitted rows define (see :mod:`deepmc._foldin` and the user
guide's section on new rows).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

import deepmc._foldin as foldin_module
from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from deepmc._foldin import (
    complete_rows,
    fold_in,
    residual_noise_variance,
    row_prior,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RANK = 3
NETWORKS = {
    "compressed": lambda **kw: CompressedDeepMatrixCompletion(rank=2 * RANK, **kw),
    "narrow": lambda **kw: DeepMatrixCompletion(width=4 * RANK, **kw),
    "full": lambda **kw: DeepMatrixCompletion(**kw),
}


def _low_rank(m: int, n: int, rank: int, fraction: float, noise: float = 0.0, seed: int = 0):
    """``(truth, observed)``: a rank-``rank`` matrix and a noisy sample of it (NaN elsewhere)."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(rank)
    noisy = truth + noise * rng.standard_normal((m, n))
    return truth, np.where(rng.random((m, n)) < fraction, noisy, np.nan)


def _missing_error(out: np.ndarray, truth: np.ndarray, X: np.ndarray) -> float:
    miss = np.isnan(X)
    return float(np.linalg.norm((out - truth)[miss]) / np.linalg.norm(truth[miss]))


def _fit(est, X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X)


# ------------------------------------------------------------------ the pure functions
def test_fold_in_solves_each_rows_ridge_problem():
    """The batched solve equals a per-row ridge solve written out row by row."""
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal((50, 4)), rng.standard_normal((30, 4))
    prior = row_prior(left, right)
    X = np.where(rng.random((12, 30)) < 0.4, rng.standard_normal((12, 30)), np.nan)
    X[5] = np.nan  # a row without entries
    rows, cols = np.nonzero(np.isfinite(X))
    alpha = fold_in(prior, rows, cols, X[rows, cols], X.shape[0], noise_var=0.3)
    B, mu = prior.basis, prior.mean
    for i in range(X.shape[0]):
        o = np.isfinite(X[i])
        expected = np.linalg.solve(
            B[o].T @ B[o] + 0.3 * np.eye(B.shape[1]), B[o].T @ (X[i, o] - mu[o])
        )
        np.testing.assert_allclose(alpha[i], expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(complete_rows(prior, alpha)[5], left.mean(0) @ right.T, rtol=1e-12)
    shuffled = np.random.default_rng(1).permutation(rows.shape[0])  # entries in any order
    again = fold_in(prior, rows[shuffled], cols[shuffled], X[rows, cols][shuffled], 12, 0.3)
    np.testing.assert_allclose(again, alpha, rtol=1e-12, atol=1e-14)


def test_row_prior_is_the_mean_and_covariance_of_the_fitted_rows():
    rng = np.random.default_rng(1)
    left, right = rng.standard_normal((40, 3)), rng.standard_normal((25, 3))
    fitted = left @ right.T
    prior = row_prior(left, right)
    np.testing.assert_allclose(prior.mean, fitted.mean(0), rtol=1e-12)
    np.testing.assert_allclose(prior.basis @ prior.basis.T, np.cov(fitted.T, bias=True), atol=1e-12)
    # a column of ones in left (a fixed offset) is no direction of the prior
    ones = np.hstack([left, np.ones((40, 1))])
    assert row_prior(ones, np.hstack([right, rng.standard_normal((25, 1))])).basis.shape[1] == 3


@pytest.mark.parametrize("fraction", [0.02, 0.5])
def test_the_dense_product_and_the_entry_sums_agree(fraction, monkeypatch):
    """Both ways of forming the normal equations give the same systems."""
    rng = np.random.default_rng(2)
    prior = row_prior(rng.standard_normal((30, 3)), rng.standard_normal((400, 3)))
    X = np.where(rng.random((20, 400)) < fraction, rng.standard_normal((20, 400)), np.nan)
    rows, cols = np.nonzero(np.isfinite(X))
    results = []
    for threshold in (0.0, 2.0):  # every block dense, then every block by entries
        monkeypatch.setattr(foldin_module, "_SPARSE_DENSITY", threshold)
        results.append(fold_in(prior, rows, cols, X[rows, cols], 20, noise_var=0.1))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(foldin_module, "_BLOCK_FLOATS", 3 * 400)  # tiny blocks and chunks
    np.testing.assert_allclose(
        fold_in(prior, rows, cols, X[rows, cols], 20, noise_var=0.1), results[0], rtol=1e-10
    )


def test_residual_noise_variance_reads_the_loss_at_the_kept_iteration():
    history = pd.DataFrame({"iteration": [10, 20, 30], "loss": [9.0, 1.0, 4.0]})
    # s = 2 on a 10 × 10 matrix: N = 50 observations, RSS = 2·loss/s = loss
    var = residual_noise_variance(history, sampling_scale=2.0, shape=(10, 10), rank=1, iteration=20)
    assert var == pytest.approx(1.0 / (50 - 19))
    assert residual_noise_variance(
        history, sampling_scale=2.0, shape=(10, 10), rank=1
    ) == pytest.approx(4.0 / 31)
    # with nearly as many parameters as observations the denominator stays N/2
    assert residual_noise_variance(
        history, sampling_scale=2.0, shape=(10, 10), rank=5
    ) == pytest.approx(4.0 / 25)
    assert residual_noise_variance(None, sampling_scale=2.0, shape=(10, 10), rank=1) == 0.0


# ------------------------------------------------------------------ the estimators
@pytest.mark.parametrize("name", list(NETWORKS))
def test_new_rows_of_a_low_rank_matrix_are_recovered(name):
    """Rank bound 2× the truth, 30 % observed: new rows to ≤ 1e-3 relative error."""
    truth, X = _low_rank(160, 40, RANK, 0.3)
    est = _fit(NETWORKS[name](random_state=0), X[:120])
    out = est.transform(X[120:])
    assert _missing_error(out, truth[120:], X[120:]) < 1e-3
    observed = np.isfinite(X[120:])
    np.testing.assert_array_equal(out[observed], X[120:][observed])
    # predict is the same completion without the observed entries written back
    np.testing.assert_array_equal(est.predict(X[120:])[~observed], out[~observed])


@pytest.mark.parametrize("name", ["compressed", "narrow"])
def test_noisy_rows_are_shrunk(name):
    """With noise, rows with few entries are shrunk: better than interpolating or the mean."""
    sigma = 0.5
    truth, X = _low_rank(400, 60, RANK, 0.5, noise=sigma, seed=3)
    est = _fit(NETWORKS[name](random_state=0), X[:300])
    rng = np.random.default_rng(4)
    noisy = truth[300:] + sigma * rng.standard_normal((100, 60))
    new = np.where(rng.random((100, 60)) < 0.1, noisy, np.nan)  # six entries a row
    prior = row_prior(*est._factors())
    noise_var = est._noise_variance(prior)
    assert 0.5 * sigma**2 < noise_var < 2 * sigma**2  # the fit's residual, dof-corrected
    rows, cols = np.nonzero(np.isfinite(new))

    def error(var):
        alpha = fold_in(prior, rows, cols, new[rows, cols], new.shape[0], var)
        return _missing_error(complete_rows(prior, alpha), truth[300:], new)

    shrunk = _missing_error(est.transform(new), truth[300:], new)
    assert shrunk == pytest.approx(error(noise_var))
    assert shrunk < 0.4 * error(0.0)  # interpolating six noisy entries overfits
    assert shrunk < 0.7 * error(1e12)  # the column means alone ignore the row's entries
    assert shrunk < 1.05 * error(sigma**2)  # as good as with the true noise level


@pytest.mark.parametrize("name", ["compressed", "full"])
def test_transform_commutes_with_row_subsets_and_order(name):
    _, X = _low_rank(60, 20, 2, 0.5, noise=0.1, seed=5)
    est = _fit(NETWORKS[name](random_state=0, max_iter=300), X[:40])
    whole = est.transform(X)
    idx = np.random.default_rng(0).permutation(60)[:25]
    np.testing.assert_allclose(est.transform(X[idx]), whole[idx], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.predict(X[idx]), est.predict(X)[idx], rtol=1e-10, atol=1e-12)
    # a row with no entry gets the column means the fit implies
    empty = est.transform(np.full((2, 20), np.nan))
    rows, cols = np.indices(est.shape_).reshape(2, -1)
    fitted = est.predict_entries(rows, cols).reshape(est.shape_)
    np.testing.assert_allclose(empty, np.tile(fitted.mean(0), (2, 1)), rtol=1e-8, atol=1e-10)


def test_other_columns_are_refused_naming_both():
    _, X = _low_rank(30, 12, 2, 0.6)
    est = _fit(CompressedDeepMatrixCompletion(rank=2, max_iter=50), X)
    with pytest.raises(ValueError, match=r"X has 11 features, but .* is expecting 12"):
        est.transform(X[:, :-1])
    with pytest.raises(ValueError, match=r"transform: X has 13 columns.*fitted on 12 columns"):
        est.transform((np.array([0]), np.array([12]), np.array([1.0]), (1, 13)))
    frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(12)])
    named = _fit(clone(est), frame)
    with pytest.raises(
        ValueError, match=r"Feature names unseen at fit time:\n- z.*\n.*missing:\n- c3"
    ):
        named.transform(frame.rename(columns={"c3": "z"}))
    np.testing.assert_allclose(
        named.transform(frame.iloc[:4]), named.transform(frame)[:4], rtol=1e-10
    )


def test_pipeline_cross_validates_over_rows():
    """deepmc as the imputer of a Pipeline: cross_val_score and GridSearchCV over rows."""
    rng = np.random.default_rng(6)
    truth, X = _low_rank(90, 10, 2, 0.7, noise=0.05, seed=6)
    y = truth @ rng.standard_normal(10)
    pipe = make_pipeline(
        CompressedDeepMatrixCompletion(rank=2, max_iter=300, random_state=0), Ridge(alpha=1e-3)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3, error_score="raise")
        search = GridSearchCV(
            pipe, {"compresseddeepmatrixcompletion__rank": [1, 2]}, cv=3, error_score="raise"
        ).fit(X, y)
    assert np.isfinite(scores).all() and scores.min() > 0.9, scores
    assert search.best_params_ == {"compresseddeepmatrixcompletion__rank": 2}


def test_a_loaded_distributed_model_folds_in_as_the_estimator(tmp_path):
    from deepmc.distributed import fit, load_model, shard_observations

    _, X = _low_rank(40, 16, 2, 0.5, noise=0.1, seed=7)
    rows, cols = np.nonzero(np.isfinite(X[:30]))
    est = CompressedDeepMatrixCompletion(
        rank=2, max_iter=60, check_every=20, solver="gd", random_state=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = clone(est).fit(X[:30])
        fit(est, shard_observations((rows, cols, X[rows, cols], (30, 16)))).save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(
        loaded.transform(X[30:]), ref.transform(X[30:]), rtol=1e-8, atol=1e-10
    )


# ------------------------------------------------------------------ ratings: new users
def _ratings(seed: int = 0, n_users: int = 150, n_items: int = 40) -> pd.DataFrame:
    """Rank-2 tastes plus user and item offsets, noisy, on a 1–5 scale, 50 % observed."""
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((n_users, 2)) @ rng.standard_normal((2, n_items))
    taste += 0.5 * rng.standard_normal((n_users, 1)) + 0.5 * rng.standard_normal((1, n_items))
    users, items = np.nonzero(rng.random(taste.shape) < 0.5)
    noisy = 3 + taste[users, items] + 0.3 * rng.standard_normal(users.size)
    return pd.DataFrame({"user": users, "item": items + 100, "rating": np.clip(noisy, 1, 5)})


def pickle_copy(model):
    """A fitted model's independent copy (partial_fit changes the model in place)."""
    return pickle.loads(pickle.dumps(model))


def _rmse(model, frame: pd.DataFrame) -> float:
    pred = model.predict(frame["user"].to_numpy(), frame["item"].to_numpy())
    return float(np.sqrt(np.mean((pred - frame["rating"].to_numpy()) ** 2)))


@pytest.fixture(scope="module")
def held_out_users():
    """A model fitted without users 120…149, their ratings split in given / scored halves."""
    from deepmc import RatingsCompletion

    frame = _ratings()
    held = frame["user"].to_numpy() >= 120
    given = held & (np.random.default_rng(1).random(len(frame)) < 0.5)
    params = {"rank": 2, "n_estimators": 2, "lr": 0.5, "check_every": 5, "random_state": 0}
    model = RatingsCompletion(**params).fit(frame[~held])
    seen = RatingsCompletion(**params).fit(frame[~held | given])
    return model, seen, frame[given], frame[held & ~given]


def test_partial_fit_users_folds_new_users_in(held_out_users):
    model, seen, given, scored = held_out_users
    model = pickle_copy(model)
    before = _rmse(model, scored)  # unknown users: μ + b_i
    model.partial_fit_users(given)
    after = _rmse(model, scored)
    assert after < 0.6 * before, (after, before)
    assert after < _rmse(seen, scored) + 0.05  # as good as fitting them with those ratings
    assert list(model.folded_users_.ids) == sorted(given["user"].unique())
    # users are independent: folding them in one at a time changes nothing
    one = {}
    for user, rows in given.groupby("user"):
        model.partial_fit_users(rows)
        one[user] = model.predict([user] * 3, [100, 110, 120])
    for user, pred in one.items():
        np.testing.assert_allclose(model.predict([user] * 3, [100, 110, 120]), pred, rtol=1e-12)


def test_partial_fit_users_replaces_a_known_users_rows(held_out_users):
    model, _, _, _ = held_out_users
    model = pickle_copy(model)
    frame = _ratings()
    mine = frame[frame["user"] == 3]
    others = model.predict([4, 5], [100, 101])
    before = model.predict([3] * len(mine), mine["item"].to_numpy())
    model.partial_fit_users(mine.assign(rating=np.clip(mine["rating"] + 1.5, 1, 5)))
    after = model.predict([3] * len(mine), mine["item"].to_numpy())
    assert np.mean(after - before) > 0.5  # the user's new ratings are higher
    np.testing.assert_array_equal(model.predict([4, 5], [100, 101]), others)


def test_partial_fit_items_folds_new_items_in():
    from deepmc import RatingsCompletion

    frame = _ratings(seed=2)
    held = frame["item"].to_numpy() >= 135
    given = held & (np.random.default_rng(3).random(len(frame)) < 0.5)
    params = {"rank": 2, "n_estimators": 1, "lr": 0.5, "check_every": 5, "random_state": 0}
    model = RatingsCompletion(**params).fit(frame[~held])
    scored = frame[held & ~given]
    before = _rmse(model, scored)  # unknown items: μ + b_u
    model.partial_fit_items(frame[given])
    assert _rmse(model, scored) < 0.7 * before
    model.fit(frame[~held])  # a new fit forgets what was folded in
    assert not hasattr(model, "folded_items_")
    assert _rmse(model, scored) == pytest.approx(before)


def test_partial_fit_users_unknown_items(held_out_users):
    model = pickle_copy(held_out_users[0])
    extra = pd.DataFrame({"user": [500, 500, 501], "item": [100, 999, 998], "rating": [4.0, 5, 3]})
    with pytest.raises(
        ValueError,
        match=r"partial_fit_users: 2 \(at positions \[1, 2\]\) ratings .*items not seen.*"
        r"item 999;.*unknown='ignore'",
    ):
        model.partial_fit_users(extra)
    model.partial_fit_users(extra, unknown="ignore")
    assert list(model.folded_users_.ids) == [500]  # 501 rated only an unknown item
    with pytest.raises(ValueError, match=r"unknown must be 'error' or 'ignore'"):
        model.partial_fit_users(extra, unknown="skip")
    with pytest.raises(ValueError, match=r"user: found 1 .* missing ids"):
        model.partial_fit_users(extra.assign(user=[500, None, 501]))


@pytest.mark.slow
def test_movielens_held_out_users_folded_in():
    """Held-out users give half their ratings: RMSE on the other half, three ways."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data" / "ml-100k" / "u.data"
    if not data.exists():
        pytest.skip("MovieLens-100K is not available")
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        from ml100k_foldin import experiment
    finally:
        sys.path.remove(str(root / "benchmarks"))
    result = experiment(data, held_users=150, seed=0, n_estimators=2)
    assert result["fold-in"] <= result["no fold-in"] - 0.02, result
    assert result["fold-in"] <= result["bias fold-in"] - 0.02, result
    assert abs(result["fold-in"] - result["seen in the fit"]) <= 0.01, result

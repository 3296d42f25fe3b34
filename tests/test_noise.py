"""Noisy matrices: the noise level, the cut at the noise edge, and what the fit reports.

With noise the residual on Ω always has directions that stand out of nothing but the
noise; the defaults must not learn them (see ``docs/noisy.rst``). Each network is fitted
on small noisy and exact low-rank problems and compared with rank-r least squares at the
true rank, computed here by alternating least squares.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from deepmc._noise import (
    cut_rank,
    degrees_of_freedom,
    noise_edge,
    noise_level,
    rss_by_rank,
    signal_rank,
    statistically_settled,
)
from deepmc.datasets import make_problem

NETWORKS = [
    pytest.param(CompressedDeepMatrixCompletion, {"rank": 10}, id="compressed"),
    pytest.param(DeepMatrixCompletion, {"width": 20}, id="narrow"),
    pytest.param(DeepMatrixCompletion, {}, id="full"),
]


def _least_squares_error(problem, rank: int, n_iter: int = 40) -> float:
    """Held-out error of rank-``rank`` least squares on the observed entries (ALS)."""
    m, n = problem.shape
    obs = problem.train
    rng = np.random.RandomState(0)
    U, V = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
    by_row = [np.flatnonzero(obs.rows == i) for i in range(m)]
    by_col = [np.flatnonzero(obs.cols == j) for j in range(n)]
    for _ in range(n_iter):
        for i, idx in enumerate(by_row):
            U[i] = np.linalg.lstsq(V[obs.cols[idx]], obs.values[idx], rcond=None)[0]
        for j, idx in enumerate(by_col):
            V[j] = np.linalg.lstsq(U[obs.rows[idx]], obs.values[idx], rcond=None)[0]
    pred = np.einsum("ij,ij->i", U[problem.test_rows], V[problem.test_cols])
    return float(np.linalg.norm(pred - problem.test_values) / np.linalg.norm(problem.test_values))


def _noise_std(problem, level: float) -> float:
    m, n = problem.shape
    return level * float(np.linalg.norm(problem.target.singular_values())) / math.sqrt(m * n)


def _fit(est, problem):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(problem.train)
    return est, [w for w in caught if issubclass(w.category, (UserWarning, RuntimeWarning))]


# --------------------------------------------------------------------------- pure functions


def test_noise_level_takes_the_degrees_of_freedom_out():
    assert degrees_of_freedom((10, 20), 3) == 3 * 27
    assert noise_level(81.0, 100, (10, 10), 1) == pytest.approx(math.sqrt(81.0 / 81))
    assert noise_level(1.0, 100, (10, 10), 8) is None  # 8 · 12 = 96 of 100 observations
    with pytest.raises(ValueError, match="rss"):
        noise_level(float("nan"), 100, (10, 10), 1)


def test_noise_edge_is_the_bulk_edge_of_sampled_noise():
    """σ₁ of s·P_Ω(noise) sits at the edge, within finite-size fluctuations."""
    rng = np.random.RandomState(0)
    m, n, p, sigma = 300, 200, 0.3, 0.7
    mask = rng.rand(m, n) < p
    scaled = np.where(mask, rng.standard_normal((m, n)) * sigma, 0.0) / p
    edge = noise_edge(sigma, (m, n), 1.0 / p)
    assert np.linalg.norm(scaled, 2) == pytest.approx(edge, rel=0.1)


def test_cut_rank_is_self_consistent():
    rng = np.random.RandomState(0)
    s = np.array([50.0, 30.0, 8.0, 7.5, 7.0])
    # rss of the fit cut to k directions: the cut signal adds its energy back
    rss = [4000.0, 1500.0, 905.0, 900.0, 899.0, 898.0]
    k, sigma = cut_rank(s, rss, 2000, (40, 50), 1.0)
    edge = noise_edge(sigma, (40, 50), 1.0)
    assert k == signal_rank(s, edge) == 2
    assert sigma == pytest.approx(math.sqrt(905.0 / (2000 - degrees_of_freedom((40, 50), 2))))
    k, sigma = cut_rank(rng.rand(3), [100.0], 100, (10, 10), 1.0)  # all below the edge
    assert k == 0 and sigma == pytest.approx(1.0)


def test_rss_by_rank_is_the_residual_of_each_cut():
    rng = np.random.RandomState(0)
    m, n, p = 12, 9, 4
    P, _ = np.linalg.qr(rng.standard_normal((m, p)))
    Q, _ = np.linalg.qr(rng.standard_normal((n, p)))
    sigma = np.array([4.0, 3.0, 2.0, 1.0])
    X, Y = (P * sigma) @ Q.T, rng.standard_normal((m, n))
    rows, cols = np.nonzero(rng.rand(m, n) < 0.5)
    t = [torch.as_tensor(a) for a in (P, sigma, Q)]
    got = rss_by_rank(
        torch.as_tensor((X - Y)[rows, cols]), *t, 3, lambda A, B: (A @ B.T)[rows, cols]
    )
    for k in range(4):  # the fourth direction is past ``top``: always left in
        keep = np.r_[sigma[:k], np.zeros(3 - k), sigma[3:]]
        expected = np.sum((((P * keep) @ Q.T) - Y)[rows, cols] ** 2)
        assert got[k] == pytest.approx(expected, rel=1e-12)


def test_statistically_settled_reads_the_contraction():
    assert statistically_settled(1e-6, 2e-6, 10.0, 0.1, 100)
    assert not statistically_settled(1e-2, 1.1e-2, 10.0, 0.1, 100)  # growing
    assert not statistically_settled(1e-3, None, 10.0, 0.1, 100)


# --------------------------------------------------------------------------- the networks


@pytest.mark.parametrize("Est, kw", NETWORKS)
def test_noisy_fit_matches_least_squares_at_the_true_rank(Est, kw):
    """Rank bound 2× the truth, ν = 0.3: the defaults cut at the noise edge, at rank 5."""
    problem = make_problem(shape=(100, 100), rank=5, fraction=0.3, noise=0.3, random_state=0)
    est, caught = _fit(Est(random_state=0, **kw), problem)
    assert not caught, [str(w.message) for w in caught]
    oracle = _least_squares_error(problem, 5)
    assert problem.recovery_error(est) <= 1.15 * oracle
    assert est.rank_ == 5
    assert est.noise_level_ == pytest.approx(_noise_std(problem, 0.3), rel=0.15)
    assert est.history_["event"].str.contains("pruned to rank 5").any()
    assert est.n_iter_ <= 1000


@pytest.mark.parametrize("Est, kw", NETWORKS)
def test_exact_low_rank_still_recovered_with_no_noise(Est, kw):
    problem = make_problem("A", random_state=0)
    est, caught = _fit(Est(random_state=0, tol=1e-10, max_iter=3000, **kw), problem)
    assert not caught
    assert problem.recovery_error(est) < 1e-8
    assert est.rank_ == 5
    assert est.noise_level_ < 1e-8 * _noise_std(problem, 1.0)
    assert not est.history_["event"].str.contains("noise level").any()


@pytest.mark.parametrize("Est, kw", NETWORKS)
def test_pure_noise_gives_rank_zero_with_a_warning(Est, kw):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((80, 60))
    X[rng.rand(80, 60) > 0.4] = np.nan
    est = Est(random_state=0, **kw)
    with pytest.warns(UserWarning, match="no direction of the data stands out"):
        est.fit(X)
    assert est.rank_ == 0
    assert est.noise_level_ == pytest.approx(1.0, rel=0.1)
    assert np.abs(est.predict(X)).max() == 0.0


def test_strong_noise_stays_near_least_squares():
    """ν = 1, rank bound 3× the truth: never worse than 1.25× rank-r least squares."""
    problem = make_problem(shape=(100, 100), rank=3, fraction=0.4, noise=1.0, random_state=0)
    est, caught = _fit(CompressedDeepMatrixCompletion(rank=9, random_state=0), problem)
    assert not caught
    assert problem.recovery_error(est) <= 1.25 * _least_squares_error(problem, 3)
    assert est.rank_ <= 3


def test_plain_gd_is_not_cut():
    """``solver="gd"`` stays the papers' plain gradient descent: no cut, no heavy ball."""
    problem = make_problem(shape=(100, 100), rank=5, fraction=0.3, noise=0.3, random_state=0)
    est = CompressedDeepMatrixCompletion(rank=10, solver="gd", max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train)
    assert not est.history_["event"].str.contains("noise level|pruned|heavy-ball").any()
    assert 1 <= est.rank_ <= 20 and math.isfinite(est.noise_level_)


# --------------------------------------------------------------------------- failed fits warn


@pytest.mark.parametrize("params", [{"init_scale": 1e-6}, {"depth": 10}])
def test_a_fit_stuck_at_its_initialisation_warns(params):
    problem = make_problem(shape=(30, 20), rank=2, fraction=0.5, random_state=0)
    est = DeepMatrixCompletion(random_state=0, max_iter=300, **params)
    with pytest.warns(ConvergenceWarning, match="without learning any direction"):
        est.fit(problem.train)
    assert "converged" not in " ".join(est.history_["event"])


@pytest.mark.parametrize("width", [20, 40, 100])
def test_a_narrow_width_of_at_least_min_shape_fits(width):
    """Width ≥ min(m, n) spans every direction, as the full width: it starts as small."""
    problem = make_problem(shape=(20, 40), rank=2, fraction=0.3, random_state=0)
    est, caught = _fit(DeepMatrixCompletion(width=width, random_state=0), problem)
    assert est.init_scale_ == DeepMatrixCompletion()._prune_init_scale((20, 40))
    assert not caught and problem.recovery_error(est) < 1e-3

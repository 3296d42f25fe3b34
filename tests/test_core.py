"""Recovery on the reference problem, scale invariance, and the seeds' claims."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import deepmc._solver as solver
from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from deepmc._kernels import chain_product
from deepmc.datasets import make_problem
from deepmc.init import epsilon_orthogonal
from deepmc.models._layered_net import full_loss_and_grads


def _fit(est, problem):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning allowed
        return est.fit(problem.observed_dense(), eval_set=problem.eval_set())


@pytest.mark.parametrize("init_scale", [1e-2, "auto"])
def test_problem_a_compressed_recovers(problem_a, device, init_scale):
    est = CompressedDeepMatrixCompletion(
        rank=5, init_scale=init_scale, device=device, random_state=0
    )
    _fit(est, problem_a)
    assert problem_a.recovery_error(est) <= 1e-4
    # the evaluation error recorded in the history is the same measurement
    assert est.history_["eval_error"].iloc[-1] == pytest.approx(
        problem_a.recovery_error(est), rel=1e-6
    )
    assert est.lr_ == pytest.approx(1 / 3)


def test_problem_a_full_width_recovers(problem_a, device):
    est = DeepMatrixCompletion(init_scale=1e-2, device=device, random_state=0)
    _fit(est, problem_a)
    assert est.width_ == 100
    assert [w.shape for w in est.weights_] == [(100, 100)] * 3
    assert problem_a.recovery_error(est) <= 1e-4
    assert est.history_["eval_error"].iloc[-1] == pytest.approx(
        problem_a.recovery_error(est), rel=1e-6
    )


def test_problem_a_narrow_runs_and_records_error(problem_a, device):
    est = DeepMatrixCompletion(width=10, init_scale=1e-2, device=device, random_state=0)
    _fit(est, problem_a)
    h = est.history_
    assert {"iteration", "seconds", "loss", "eval_error"} <= set(h.columns)
    assert h["eval_error"].iloc[0] > 0.5  # starts from (almost) zero
    assert h["eval_error"].iloc[-1] < h["eval_error"].iloc[0]
    assert (np.diff(h["iteration"]) > 0).all()
    assert (np.diff(h["seconds"]) >= 0).all()


@pytest.mark.parametrize("Est", [CompressedDeepMatrixCompletion, DeepMatrixCompletion])
def test_history_seconds_exclude_the_eval_set(problem_a, monkeypatch, Est):
    """eval_set only watches the fit: its evaluation time is recorded apart, not billed."""
    pause = 0.02
    original = solver.evaluate

    def slow_evaluate(network, params, held_out, scale):
        time.sleep(pause)
        return original(network, params, held_out, scale)

    monkeypatch.setattr(solver, "evaluate", slow_evaluate)
    est = Est(init_scale=1e-2, max_iter=200, tol=0.0, random_state=0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem_a.train, eval_set=problem_a.eval_set())
    wall = time.perf_counter() - t0
    h = est.history_
    checks = len(h)  # iterations 0, 25, …, 200
    assert checks == 9
    assert h["eval_seconds"].iloc[-1] >= pause * checks
    assert (np.diff(h["eval_seconds"]) >= pause).all()
    # the last row's seconds were taken before its own evaluation
    assert h["seconds"].iloc[-1] <= wall - pause * checks
    assert (np.diff(h["seconds"]) >= 0).all()


@pytest.mark.parametrize("factor", [1e-3, 1e3])
@pytest.mark.parametrize(
    "Est, kwargs",
    [(CompressedDeepMatrixCompletion, {"rank": 5}), (DeepMatrixCompletion, {})],
)
def test_scaled_problem_needs_no_learning_rate(problem_a, factor, Est, kwargs):
    scaled = problem_a.scaled(factor)
    est = _fit(Est(init_scale=1e-2, random_state=0, **kwargs), scaled)
    assert scaled.recovery_error(est) <= 1e-4
    # the normalisation absorbs the scale: same trajectory as the unscaled problem
    ref = _fit(Est(init_scale=1e-2, random_state=0, **kwargs), problem_a)
    assert est.scale_ == pytest.approx(factor * ref.scale_, rel=1e-9)
    assert est.n_iter_ == ref.n_iter_
    assert est.lr_ == ref.lr_


@pytest.mark.parametrize(
    "Est, kwargs",
    [(CompressedDeepMatrixCompletion, {"rank": 4}), (DeepMatrixCompletion, {})],
)
def test_non_square_problem(Est, kwargs):
    problem = make_problem(shape=(60, 140), rank=4, fraction=0.35, random_state=3)
    est = _fit(Est(random_state=0, **kwargs), problem)
    assert problem.recovery_error(est) <= 1e-4
    assert est.transform(problem.observed_dense()).shape == (60, 140)


# --------------------------------------------------------------------------- claims


def _gd_full(Y, M, layers, lr, steps):
    for _ in range(steps):
        _, _, grads = full_loss_and_grads(layers, Y, M, 1.0)
        layers = [W - lr * g for W, g in zip(layers, grads)]
    return layers


def test_law_of_parsimony_full_observation():
    """d − 2r singular values of every W_l stay equal and their subspaces do not move."""
    d, r, L, eps = 30, 3, 3, 2e-2
    target = make_problem(shape=(d, d), rank=r, fraction=1.0, random_state=1).target
    Y = torch.as_tensor(target.toarray() / target.singular_values()[0])
    M = torch.ones_like(Y)
    gen = torch.Generator().manual_seed(0)
    layers = [epsilon_orthogonal(d, d, scale=eps, generator=gen) for _ in range(L)]
    mid = _gd_full(Y, M, layers, 0.3, 300)
    end = _gd_full(Y, M, mid, 0.3, 500)
    assert torch.linalg.norm(chain_product(end) - Y) / torch.linalg.norm(Y) < 1e-3
    k = d - 2 * r
    for W_mid, W_end in zip(mid, end):
        projectors = []
        for W in (W_mid, W_end):
            u, s, vh = torch.linalg.svd(W)
            # the k equal singular values form one run of the sorted spectrum (r grew
            # above ρ, r shrank below it)
            spread = torch.stack([(s[i] - s[i + k - 1]) / s[i] for i in range(d - k + 1)])
            start = int(torch.argmin(spread))
            assert spread[start] < 1e-10
            others = torch.cat([s[:start], s[start + k :]])
            assert (torch.abs(others - s[start]) / s[start]).min() > 1e-3  # 2r moved away
            projectors.append(
                (
                    u[:, start : start + k] @ u[:, start : start + k].T,
                    vh[start : start + k].T @ vh[start : start + k],
                )
            )
        # ... and their left and right singular subspaces do not move
        for P_mid, P_end in zip(*projectors):
            assert torch.linalg.norm(P_mid - P_end) < 1e-8


def test_compressed_tracks_full_width_on_factorisation():
    """With Ω = everything, U·W̃_{L:1}·Vᵀ follows W_{L:1} along the whole trajectory."""
    problem = make_problem(shape=(40, 40), rank=3, fraction=1.0, random_state=2)
    X = problem.observed_dense()
    gaps, errors = [], []
    for steps in (100, 200, 300, 400, 800):
        kw = {"init_scale": 1e-2, "tol": 0.0, "max_iter": steps, "random_state": 0, "solver": "gd"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # max_iter is the point here
            full = DeepMatrixCompletion(**kw).fit(X)
            comp = CompressedDeepMatrixCompletion(rank=3, factor_lr_ratio=0.0, **kw).fit(X)
        rows, cols = np.indices(X.shape).reshape(2, -1)
        Xf = full.predict_entries(rows, cols).reshape(X.shape)
        Xc = comp.predict_entries(rows, cols).reshape(X.shape)
        gaps.append(np.linalg.norm(Xf - Xc) / np.linalg.norm(X))
        errors.append(np.linalg.norm(Xf - X) / np.linalg.norm(X))
    assert errors[0] > 0.3 and errors[-1] < 1e-3  # the trajectory goes somewhere
    # Both start from ε-orthogonal init with independent random Q, so the steep drop
    # happens within a step or so of each other: a small gap there, a tiny one elsewhere.
    assert max(gaps) < 2e-2, gaps
    assert gaps[0] < 1e-4 and gaps[1] < 1e-4 and gaps[-1] < 1e-4, gaps


def test_compressed_without_dlr_stalls(problem_a):
    kw = {"rank": 5, "init_scale": 1e-2, "random_state": 0, "max_iter": 4000, "solver": "gd"}
    good = _fit(CompressedDeepMatrixCompletion(**kw), problem_a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stalled = CompressedDeepMatrixCompletion(factor_lr_ratio=0.0, **kw).fit(
            problem_a.observed_dense()
        )
    e_good, e_stalled = problem_a.recovery_error(good), problem_a.recovery_error(stalled)
    assert e_stalled > 1e-2
    assert e_stalled > 100 * e_good


# --------------------------------------------------------------------------- gradients


def test_compressed_gradients_match_autograd():
    from deepmc._kernels import ObservedPattern
    from deepmc.models._compressed_step import compressed_loss_and_grads

    problem = make_problem(shape=(13, 9), rank=2, fraction=0.5, random_state=0)
    o = problem.train
    rows, cols = torch.as_tensor(o.rows), torch.as_tensor(o.cols)
    pattern = ObservedPattern.from_coo(rows, cols, o.shape)
    y = torch.as_tensor(o.values)
    gen = torch.Generator().manual_seed(0)
    U = torch.randn(13, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    V = torch.randn(9, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    cores = [
        torch.randn(4, 4, dtype=torch.float64, generator=gen, requires_grad=True) for _ in range(3)
    ]
    s = 13 * 9 / o.n_observed
    X = U @ chain_product(cores) @ V.T
    ref = 0.5 * s * ((X[rows, cols] - y) ** 2).sum()
    ref.backward()
    with torch.no_grad():
        loss, resid, gU, gV, gcores = compressed_loss_and_grads(pattern, y, s, U, V, cores)
    assert torch.allclose(loss, ref)
    assert torch.allclose(resid, X[rows, cols] - y)
    for got, want in zip([gU, gV, *gcores], [U.grad, V.grad, *(c.grad for c in cores)]):
        assert torch.allclose(got, want)


def test_full_gradients_match_autograd():
    gen = torch.Generator().manual_seed(1)
    layers = [
        torch.randn(*shape, dtype=torch.float64, generator=gen, requires_grad=True)
        for shape in [(6, 5), (6, 6), (4, 6)]
    ]
    Y = torch.randn(4, 5, dtype=torch.float64, generator=gen)
    M = (torch.rand(4, 5, generator=gen) < 0.5).double()
    ref = 0.5 * 2.0 * (((chain_product(layers) - Y) * M) ** 2).sum()
    ref.backward()
    with torch.no_grad():
        loss, _, grads = full_loss_and_grads(layers, Y, M, 2.0)
    assert torch.allclose(loss, ref)
    for got, W in zip(grads, layers):
        assert torch.allclose(got, W.grad)


def test_explicit_validation_set_drives_early_stopping(problem_a):
    """``validation_set`` replaces the random split: all of X is fitted, the best is kept."""
    rows, cols, values, shape = problem_a.eval_set()
    est = CompressedDeepMatrixCompletion(
        rank=5, init_scale=1e-2, random_state=0, early_stopping=True, n_iter_no_change=2
    )
    est.fit(problem_a.train, validation_set=(rows, cols, values, shape))
    assert est.sampling_scale_ == pytest.approx(100 * 100 / 3000)  # X was not split
    h = est.history_
    best = h.loc[h["val_rmse"].idxmin()]
    assert est.best_iteration_ == best["iteration"]
    pred = est.predict_entries(rows, cols)  # the kept state is the recorded best one
    assert np.sqrt(np.mean((pred - values) ** 2)) == pytest.approx(best["val_rmse"], rel=1e-6)
    with pytest.raises(ValueError, match="validation_set: expected a matrix of shape"):
        est.fit(problem_a.train, validation_set=([0, 1, 2], [0, 1, 2], values[:3], (3, 3)))
    with pytest.raises(ValueError, match="validation_set: X: cols must lie in"):
        est.fit(problem_a.train, validation_set=(rows[:5], cols[:5] + 100, values[:5], shape))

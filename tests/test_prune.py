"""Plateau-aware stopping, and prune & polish (``solver="auto"``)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from deepmc._data import prepare
from deepmc._kernels import chain_product
from deepmc._spectral import escaping_direction, find_gap
from deepmc._validation import check_observations
from deepmc.datasets import make_problem
from deepmc.models._compressed_spectral import (
    compressed_spectrum,
    prune_compressed,
    rebalance_compressed,
    rebalance_for_polish,
)
from deepmc.models._compressed_step import CompressedWorkspace, compressed_residual_and_grads
from deepmc.models._layered_net import chain_spectrum, full_residual_and_grads, prune_layers


def _fitted_matrix(est, shape):
    """The fitted network's whole ``X̂`` (``transform`` folds rows in instead)."""
    rows, cols = np.indices(shape)
    return est.predict_entries(rows.ravel(), cols.ravel()).reshape(shape)

def _strict_fit(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        return est.fit(X, **kw)


def _pruned_ranks(est) -> list[int]:
    return [
        int(e.split("pruned to rank ")[1].split()[0])
        for e in est.history_["event"]
        if "pruned to rank" in e
    ]


# --------------------------------------------------------------------------- find_gap


def test_find_gap_picks_the_largest_ratio():
    assert find_gap([63.0, 50.0, 31.0, 1e-3, 5e-4]) == (3, pytest.approx(31000.0))
    # five learned directions, five spurious ones at ~1e-3: the problem B
    values = np.r_[np.linspace(63, 31, 5), np.linspace(1.2e-3, 0.8e-3, 5)]
    assert find_gap(values)[0] == 5
    # exact zeros after a prune: the gap is infinite, zeros among themselves are not a gap
    assert find_gap([2.0, 1.0, 0.0, 0.0]) == (2, np.inf)


@pytest.mark.parametrize("values", [[1.0, 0.9, 0.8, 0.7], [1.0, 0.5, 0.25, 0.125], [1.0]])
def test_find_gap_keeps_everything_without_a_gap(values):
    keep, ratio = find_gap(values)
    assert keep == len(values)
    assert ratio < 20


def test_find_gap_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        find_gap([1.0, -0.5])
    with pytest.raises(ValueError, match="1-D"):
        find_gap(np.ones((2, 2)))


# --------------------------------------------------------------------------- pruning


def _random_layers(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, dtype=torch.float64, generator=g) for s in shapes]


@pytest.mark.parametrize("width", [12, 4])  # full width (≥ min(m, n)) and narrow
def test_prune_layers_is_the_balanced_truncated_svd(width):
    m, n, keep = 10, 8, 3
    layers = _random_layers([(width, n), (width, width), (m, width)])
    X = chain_product(layers)
    u, s, vh = torch.linalg.svd(X)
    new = prune_layers(layers, keep)
    assert [W.shape for W in new] == [W.shape for W in layers]
    truncated = (u[:, :keep] * s[:keep]) @ vh[:keep]
    torch.testing.assert_close(chain_product(new), truncated)
    for lower, upper in itertools.pairwise(new):  # balanced: W_{l+1}ᵀW_{l+1} = W_l W_lᵀ
        torch.testing.assert_close(upper.T @ upper, lower @ lower.T)
    for W in new:
        assert int(torch.linalg.matrix_rank(W)) == keep
    sigma = chain_spectrum(layers)[1]
    torch.testing.assert_close(sigma, s[: sigma.shape[0]])


def test_prune_compressed_is_the_truncated_svd_and_stays_pruned_under_gd():
    problem = make_problem(shape=(30, 25), rank=2, fraction=0.6, random_state=0)
    obs = check_observations(problem.train)
    data = prepare(
        obs, torch.device("cpu"), torch.float64, scale=problem.target.singular_values()[0]
    )
    k, keep = 6, 2
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(30, k, dtype=torch.float64, generator=g))[0]
    V = torch.linalg.qr(torch.randn(25, k, dtype=torch.float64, generator=g))[0]
    eye = torch.eye(k, dtype=torch.float64)
    cores = [0.5 * eye + 0.1 * torch.randn(k, k, generator=g, dtype=torch.float64) for _ in eye[:3]]
    X = U @ chain_product(cores) @ V.T
    u, s, vh = torch.linalg.svd(X)
    U2, V2, cores2 = prune_compressed(U, V, cores, keep)
    torch.testing.assert_close(
        U2 @ chain_product(cores2) @ V2.T, (u[:, :keep] * s[:keep]) @ vh[:keep]
    )
    torch.testing.assert_close(U2.T @ U2, torch.eye(k, dtype=torch.float64))
    # the cut directions stay exactly zero under gradient descent
    for _ in range(50):
        _, gU, gV, gc = compressed_residual_and_grads(
            data.pattern, data.y, data.sampling_scale, U2, V2, cores2
        )
        U2 = U2 - 0.05 * gU
        V2 = V2 - 0.05 * gV
        cores2 = [W - 0.1 * gW for W, gW in zip(cores2, gc)]
    _, sigma, _ = compressed_spectrum(U2, V2, cores2)
    assert float(sigma[keep - 1]) > 0.1
    assert float(sigma[keep:].max()) < 1e-15 * float(sigma[0])  # rank `keep`, to rounding


def _random_compressed(k=6, depth=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(30, k, dtype=torch.float64, generator=g))[0]
    V = torch.linalg.qr(torch.randn(25, k, dtype=torch.float64, generator=g))[0]
    eye = torch.eye(k, dtype=torch.float64)
    cores = [
        0.5 * eye + 0.1 * torch.randn(k, k, generator=g, dtype=torch.float64)
        for _ in range(depth)
    ]
    return U, V, cores


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_prune_compressed_rate_balance_moves_every_direction_at_the_top_rate(depth):
    U, V, cores = _random_compressed(depth=depth)
    k, keep = U.shape[1], 3
    X = U @ chain_product(cores) @ V.T
    u, s, vh = torch.linalg.svd(X)
    U2, V2, cores2 = prune_compressed(U, V, cores, keep, balance="rate")
    # the same end-to-end matrix as the "cores" balance: the rank-`keep` truncation
    torch.testing.assert_close(
        U2 @ chain_product(cores2) @ V2.T, (u[:, :keep] * s[:keep]) @ vh[:keep]
    )
    norms = torch.linalg.norm(U2, dim=0)
    torch.testing.assert_close(norms, torch.linalg.norm(V2, dim=0))
    # spare columns orthonormal, orthogonal to the kept ones; cores zero there
    spare = U2[:, keep:]
    torch.testing.assert_close(spare.T @ spare, torch.eye(k - keep, dtype=torch.float64))
    torch.testing.assert_close(U2[:, :keep].T @ spare, torch.zeros(keep, k - keep).double())
    for W in cores2:
        assert torch.count_nonzero(W - torch.diag(torch.diagonal(W))) == 0
        assert torch.count_nonzero(torch.diagonal(W)[keep:]) == 0
    # a U step moves direction i of X at the rate (σ_i / u_i)²: the same for every i ...
    rate = (s[:keep] / norms[:keep]) ** 2
    torch.testing.assert_close(rate, torch.full_like(rate, float(rate[0])))
    # ... and the top direction is balanced over the L + 2 matrices
    top = float(s[0]) ** (1.0 / (depth + 2))
    assert float(norms[0]) == pytest.approx(top, rel=1e-12)
    assert float(cores2[0][0, 0]) == pytest.approx(top, rel=1e-12)
    # the "cores" balance is the default and keeps the factors orthonormal
    U3, _, _ = prune_compressed(U, V, cores, keep)
    torch.testing.assert_close(U3.T @ U3, torch.eye(k, dtype=torch.float64))
    with pytest.raises(ValueError, match="balance"):
        prune_compressed(U, V, cores, keep, balance="factors")


def test_rate_balance_stays_pruned_under_gd():
    problem = make_problem(shape=(30, 25), rank=2, fraction=0.6, random_state=0)
    data = prepare(
        check_observations(problem.train), torch.device("cpu"), torch.float64,
        scale=problem.target.singular_values()[0],
    )  # fmt: skip
    U, V, cores = _random_compressed()
    keep = 2
    U, V, cores = prune_compressed(U, V, cores, keep, balance="rate")
    for _ in range(50):
        _, gU, gV, gc = compressed_residual_and_grads(
            data.pattern, data.y, data.sampling_scale, U, V, cores
        )
        U, V = U - 0.05 * gU, V - 0.05 * gV
        cores = [W - 0.1 * gW for W, gW in zip(cores, gc)]
    _, sigma, _ = compressed_spectrum(U, V, cores)
    assert float(sigma[keep - 1]) > 0.1
    assert float(sigma[keep:].max()) < 1e-15 * float(sigma[0])


def test_rebalance_for_polish_only_touches_moving_factors():
    U, V, cores = _random_compressed()
    U, V, cores = prune_compressed(U, V, cores, 3)
    X = U @ chain_product(cores) @ V.T
    frozen = {"factors": [U.clone(), V.clone()], "cores": [W.clone() for W in cores]}
    assert not rebalance_for_polish(frozen, 3, {"cores": 1.0, "factors": 0.0})
    torch.testing.assert_close(frozen["factors"][0], U, rtol=0, atol=0)
    layers = {"layers": [W.clone() for W in cores]}
    assert not rebalance_for_polish(layers, 3, {"layers": 1.0})
    moving = {"factors": [U.clone(), V.clone()], "cores": [W.clone() for W in cores]}
    assert rebalance_for_polish(moving, 3, {"cores": 1.0, "factors": 0.6})
    U2, V2 = moving["factors"]
    torch.testing.assert_close(U2 @ chain_product(moving["cores"]) @ V2.T, X)
    expected = prune_compressed(U, V, cores, 3, balance="rate")[0]
    torch.testing.assert_close(U2, expected)


def test_default_fit_polishes_with_the_rate_balance(monkeypatch):
    """The plain polish after the prune: 4× fewer steps than with orthonormal factors.

    σ = (1, 0.3) at 50 % of 60 × 50: with the "cores" balance a factor step corrects the
    second direction at (0.3)² of the rate of the first.
    """
    import deepmc._policy._momentum as momentum_module

    problem = make_problem(
        shape=(60, 50), rank=2, fraction=0.5, spectrum=[1.0, 0.3], random_state=0
    )
    monkeypatch.setattr(momentum_module, "MAX_MOMENTUM", 0.0)  # the balance alone

    def polish_steps():
        est = _strict_fit(
            CompressedDeepMatrixCompletion(rank=2, random_state=0, tol=1e-10, max_iter=4000),
            problem.train, eval_set=problem.eval_set(),
        )  # fmt: skip
        h = est.history_
        pruned = int(h.loc[h["event"].str.contains("pruned"), "iteration"].iloc[0])
        reached = int(h.loc[h["eval_error"] <= 1e-6, "iteration"].iloc[0])
        assert est.U_.shape == (60, 4)
        return reached - pruned, est

    rate, est = polish_steps()
    norms = np.linalg.norm(est.U_[:, :2], axis=0)
    assert norms[1] < 0.5 * norms[0]  # the factors carry the spectrum to the end
    from deepmc.models._compressed_net import CompressedNetwork

    monkeypatch.setattr(CompressedNetwork, "rebalance_for_polish", lambda *args, **kwargs: False)
    cores, _ = polish_steps()
    assert rate <= 200 and cores >= 4 * rate, (rate, cores)


def test_rebalance_compressed_keeps_x_and_the_spare_slots():
    U, V, cores = _random_compressed()
    k, keep, depth = U.shape[1], 3, len(cores)
    X = U @ chain_product(cores) @ V.T
    s = torch.linalg.svdvals(X)[:k]
    U2, V2, cores2 = rebalance_compressed(U, V, cores, keep)
    torch.testing.assert_close(U2 @ chain_product(cores2) @ V2.T, X)  # nothing cut
    norms = torch.linalg.norm(U2, dim=0)
    rate = (s[:keep] / norms[:keep]) ** 2
    torch.testing.assert_close(rate, torch.full_like(rate, float(rate[0])))
    # past `keep`: orthonormal factor columns, balanced cores σ^{1/L}, as at initialisation
    torch.testing.assert_close(norms[keep:], torch.ones(k - keep, dtype=torch.float64))
    torch.testing.assert_close(torch.diagonal(cores2[0])[keep:], s[keep:] ** (1.0 / depth))
    # the cut of prune_compressed(balance="rate") is this re-balance with the rest at zero
    U3, _, cores3 = prune_compressed(U, V, cores, keep, balance="rate")
    torch.testing.assert_close(U3, U2)
    torch.testing.assert_close(torch.diagonal(cores3[0])[:keep], torch.diagonal(cores2[0])[:keep])


def _steps_to(est, target):
    h = est.history_
    return int(h.loc[h["eval_error"] <= target, "iteration"].iloc[0])


def test_early_rebalance_happens_in_the_linear_regime_and_saves_steps(monkeypatch):
    """On problem A the learned directions are re-balanced before the prune, not after."""
    import deepmc._policy._analysis as analysis_module

    problem = make_problem("A", random_state=0)

    def fit():
        est = CompressedDeepMatrixCompletion(
            rank=5, random_state=0, tol=0.0, max_iter=500, device="cpu"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return est.fit(problem.train, eval_set=problem.eval_set())

    est = fit()
    events = [e for e in est.history_["event"] if e and "max_iter" not in e]
    assert events[0] == "re-balanced the top 5 direction(s)"
    assert "pruned to rank 5" in events[1:]
    early = _steps_to(est, 1e-4)
    monkeypatch.setattr(analysis_module, "LINEAR", -1.0)  # never in the linear regime
    late = fit()
    assert not any("re-balanced" in e for e in late.history_["event"])
    assert early <= 400 and _steps_to(late, 1e-4) >= early + 50


def test_default_fit_on_problem_a_seeds_never_backs_off():
    """The re-balances are safe: no divergence, and 1e-4 well within the old step counts."""
    steps = []
    for seed in range(8):
        problem = make_problem("A", random_state=seed)
        est = CompressedDeepMatrixCompletion(
            rank=5, random_state=0, tol=0.0, max_iter=900, device="cpu"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(problem.train, eval_set=problem.eval_set())
        events = " ".join(est.history_["event"])
        assert "diverged" not in events and "pruned to rank 5" in events, (seed, events)
        assert est.history_["eval_error"].min() <= 1e-4, (seed, est.history_["eval_error"].min())
        steps.append(_steps_to(est, 1e-4))
    # before the rate balance: 825 875 1400 1025 700 1350 875 925 (mean 997)
    assert np.mean(steps) <= 550, steps


@pytest.mark.parametrize(
    "Est, kw", [(CompressedDeepMatrixCompletion, {"rank": 5}), (DeepMatrixCompletion, {})]
)
def test_polish_momentum_comes_from_the_measured_contraction(Est, kw):
    """Two checks after the edit, β = (1 − √(1 − ρ))² from the residuals' contraction ρ."""
    problem = make_problem("A", random_state=0)
    est = Est(random_state=0, tol=0.0, max_iter=600, device="cpu", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train, eval_set=problem.eval_set())
    h = est.history_.reset_index(drop=True)
    at = int(h.index[h["event"].str.startswith("heavy-ball steps, momentum ")][0])
    # two checks after the re-balance (compressed) or the prune (full width)
    edit = "re-balanced" if Est is CompressedDeepMatrixCompletion else "pruned"
    assert h["event"].iloc[at - 2].startswith(edit)
    row = h.iloc[at]
    beta = float(row["event"].split()[-1])
    first, second = h.iloc[at - 1], row
    rho = (second["residual"] / first["residual"]) ** (
        1.0 / (second["iteration"] - first["iteration"])
    )
    assert beta == pytest.approx((1 - np.sqrt(1 - rho)) ** 2, abs=5e-3)
    assert 0.3 < beta < 0.9
    assert not any("diverged" in e for e in h["event"])
    # the polish went on to the exact solution
    assert problem.recovery_error(est) < 1e-10


def test_heavy_ball_starts_in_the_linear_regime_and_is_measured_again_after_edits():
    """Problem A, seed 2: four directions re-balanced early, the fifth learned later.

    Heavy-ball steps start two checks after the first re-balance (before any prune),
    the second re-balance returns to plain steps and measures β again, and the prune
    keeps it.
    """
    problem = make_problem("A", random_state=2)
    est = CompressedDeepMatrixCompletion(
        rank=5, random_state=0, tol=0.0, max_iter=400, device="cpu"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train, eval_set=problem.eval_set())
    events = [e for e in est.history_["event"] if e and "max_iter" not in e]
    kinds = [e.split(" the top")[0].split(" to rank")[0].split(",")[0] for e in events]
    assert kinds == [
        "re-balanced", "heavy-ball steps", "re-balanced", "heavy-ball steps", "pruned"
    ], events  # fmt: skip
    assert not any("diverged" in e for e in est.history_["event"])
    assert _steps_to(est, 1e-4) <= 350  # 625 with heavy ball after the prune only


def test_compressed_tracks_full_width_after_pruning():
    """Prune both networks to the same rank mid-descent: their polish stays together."""
    problem = make_problem(shape=(24, 24), rank=2, fraction=1.0, random_state=3)
    X = problem.observed_dense()
    kw = {"init_scale": 0.1, "tol": 0.0, "max_iter": 100, "random_state": 0, "solver": "gd"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = DeepMatrixCompletion(**kw).fit(X)
        comp = CompressedDeepMatrixCompletion(rank=2, factor_lr_ratio=0.0, **kw).fit(X)
    layers = [torch.as_tensor(W) for W in full.weights_]
    U, V = torch.as_tensor(comp.U_), torch.as_tensor(comp.V_)
    cores = [torch.as_tensor(W) for W in comp.cores_]
    Y = torch.as_tensor(X / full.scale_)
    M = torch.ones_like(Y)
    assert comp.scale_ == pytest.approx(full.scale_, rel=1e-12)
    # mid-descent: both have learned the two directions, not yet to high accuracy
    _, sigma, _ = chain_spectrum(layers)
    assert find_gap(sigma.numpy())[0] == 2
    start = float(torch.linalg.norm(chain_product(layers) - Y) / torch.linalg.norm(Y))
    assert 1e-4 < start < 0.1
    layers = prune_layers(layers, 2)
    U, V, cores = prune_compressed(U, V, cores, 2)
    data = prepare(check_observations(X), torch.device("cpu"), torch.float64, scale=full.scale_)
    lr = 1.0 / 3
    gaps = []
    for _ in range(200):
        _, grads = full_residual_and_grads(layers, Y, M, data.sampling_scale)
        layers = [W - lr * g for W, g in zip(layers, grads)]
        _, _, _, gc = compressed_residual_and_grads(
            data.pattern, data.y, data.sampling_scale, U, V, cores
        )
        cores = [W - lr * g for W, g in zip(cores, gc)]
        Xf, Xc = chain_product(layers), U @ chain_product(cores) @ V.T
        gaps.append(float(torch.linalg.norm(Xf - Xc) / torch.linalg.norm(Y)))
    end = float(torch.linalg.norm(chain_product(layers) - Y) / torch.linalg.norm(Y))
    assert end < 1e-3 * start  # the polish went somewhere ...
    # ... and the two networks went there together. (Before the prune they differ by
    # about 1e-3 · ‖Y‖ in the spurious ε^L directions, which the prune removes.)
    assert max(gaps) < 1e-3 * start


# --------------------------------------------------------------------------- estimators


def _rank2_fully_observed():
    """The issue's plateau: a fully observed rank-2 matrix with singular values (1, 0.3)."""
    return make_problem(shape=(60, 50), rank=2, fraction=1.0, spectrum=[1.0, 0.3], random_state=0)


@pytest.mark.parametrize(
    "Est, kw", [(CompressedDeepMatrixCompletion, {"rank": 2}), (DeepMatrixCompletion, {})]
)
def test_plateau_rank2_recovers_with_defaults(Est, kw):
    problem = _rank2_fully_observed()
    X = problem.observed_dense()
    est = _strict_fit(Est(random_state=0, **kw), X)
    err = np.linalg.norm(_fitted_matrix(est, X.shape) - X) / np.linalg.norm(X)
    assert err < 1e-5  # it ended at 29 % "converged" before
    assert _pruned_ranks(est) == [2]
    assert est.history_["event"].iloc[-1].endswith("converged")


def test_plateau_rank4_recovers_with_defaults():
    problem = make_problem(
        shape=(100, 80), rank=4, fraction=0.5, spectrum=[1.0, 1.0, 1.0, 0.2], random_state=0
    )
    est = _strict_fit(CompressedDeepMatrixCompletion(rank=4, random_state=0), problem.train)
    assert problem.recovery_error(est) < 1e-4  # it ended at 20 % "converged" before
    assert _pruned_ranks(est) == [4]


def test_plateau_with_plain_gd_warns_instead_of_converging():
    """``solver="gd"`` keeps the trajectory; the stop rule no longer calls a saddle converged."""
    X = _rank2_fully_observed().observed_dense()
    est = CompressedDeepMatrixCompletion(rank=2, solver="gd", max_iter=700, random_state=0)
    with pytest.warns(ConvergenceWarning, match="plateau between learning directions"):
        est.fit(X)
    # the fitted values had settled (the old rule stopped here, at 29 % error) ...
    assert (est.history_["change"] <= est.tol).any()
    assert est.n_iter_ == 700
    # ... and the warning was right: the second direction is still missing
    err = np.linalg.norm(_fitted_matrix(est, X.shape) - X) / np.linalg.norm(X)
    assert err > 0.2


def test_no_gap_warns_when_the_fit_cannot_settle():
    X = _rank2_fully_observed().observed_dense()
    est = CompressedDeepMatrixCompletion(rank=2, max_iter=20, random_state=0)
    with pytest.warns(ConvergenceWarning, match="no spectral gap was found"):
        est.fit(X)
    assert not _pruned_ranks(est)


@pytest.mark.parametrize("spectrum", ["flat", "spread"])
@pytest.mark.parametrize("factor", [2, 4])
def test_pruning_never_cuts_a_true_direction_on_noisy_data(spectrum, factor):
    problem = make_problem(
        shape=(80, 70), rank=3, fraction=0.5, noise=0.1, spectrum=spectrum, random_state=1
    )
    est = CompressedDeepMatrixCompletion(rank=3 * factor, random_state=0, max_iter=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # noisy data must stop too
        est.fit(problem.train)
    ranks = _pruned_ranks(est)
    assert all(r >= 3 for r in ranks), ranks
    U, V, cores = est.U_, est.V_, est.cores_
    _, sigma, _ = compressed_spectrum(
        torch.as_tensor(U), torch.as_tensor(V), [torch.as_tensor(W) for W in cores]
    )
    assert int((sigma > 1e-3 * sigma[0]).sum()) >= 3
    # noise at 10 % of the entries' RMS: the three directions are recovered to about that
    assert problem.recovery_error(est) < 0.15


def _gd_by_hand(obs, est_1, steps):
    """Continue plain GD by hand from a 1-step fit, with the pure functions."""
    data = prepare(obs, torch.device("cpu"), torch.float64, scale=est_1.scale_)
    lr = est_1.lr_
    if isinstance(est_1, DeepMatrixCompletion):
        layers = [torch.tensor(W) for W in est_1.weights_]
        Y, M = data.dense_targets()
        for _ in range(steps):
            _, grads = full_residual_and_grads(layers, Y, M, data.sampling_scale)
            for W, g in zip(layers, grads):
                W.add_(g, alpha=-lr)
        return [W.numpy() for W in layers]
    U, V = torch.tensor(est_1.U_), torch.tensor(est_1.V_)
    cores = [torch.tensor(W) for W in est_1.cores_]
    workspace = CompressedWorkspace(data.pattern.kernels(U.dtype), U.shape[1], len(cores))
    for _ in range(steps):
        _, gU, gV, gc = compressed_residual_and_grads(
            data.pattern, data.y, data.sampling_scale, U, V, cores, workspace=workspace
        )
        for W, g in zip(cores, gc):
            W.add_(g, alpha=-lr)
        U.add_(gU, alpha=-est_1.factor_lr_)
        V.add_(gV, alpha=-est_1.factor_lr_)
    return [*(W.numpy() for W in cores), U.numpy(), V.numpy()]


@pytest.mark.parametrize(
    "Est, kw", [(CompressedDeepMatrixCompletion, {"rank": 2}), (DeepMatrixCompletion, {})]
)
def test_solver_gd_is_plain_gradient_descent(Est, kw):
    """``solver="gd"`` is plain constant-step GD: the pure step functions run by hand.

    Equal to rounding: the compressed step's kernels write into buffers cached on the
    observed pattern, and BLAS may round differently on other buffers.
    """
    problem = make_problem(shape=(30, 20), rank=2, fraction=0.5, random_state=0)
    obs = check_observations(problem.train)
    common = {"solver": "gd", "tol": 0.0, "random_state": 0, "check_every": 3, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = Est(max_iter=1, **common).fit(problem.train)
        ten = Est(max_iter=10, **common).fit(problem.train)
    by_hand = _gd_by_hand(obs, one, 9)
    fitted = ten.weights_ if hasattr(ten, "weights_") else [*ten.cores_, ten.U_, ten.V_]
    for a, b in zip(fitted, by_hand, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15 * np.abs(b).max())
    assert one.init_scale_ == pytest.approx(1e-3)  # tol^{1/L} rule, clipped: unchanged


@pytest.mark.parametrize("keep", [0, 3])
def test_escaping_direction_dense_gram_iteration_matches_the_products(keep):
    """With ``R`` dense (small problems) the iteration on ``NᵀN`` gives the same triplets."""
    rng = np.random.default_rng(0)
    m, n = 50, 40
    R = rng.standard_normal((m, 6)) @ np.diag([5.0, 4, 3, 2, 1.5, 1.2])
    R = R @ rng.standard_normal((6, n))
    R = torch.as_tensor(R * (rng.random((m, n)) < 0.5) + 0.01 * rng.standard_normal((m, n)))
    P = torch.linalg.qr(torch.as_tensor(rng.standard_normal((m, keep))))[0]
    Q = torch.linalg.qr(torch.as_tensor(rng.standard_normal((n, keep))))[0]
    fro2 = float(R.square().sum())

    def run(dense):
        gen = torch.Generator().manual_seed(1)
        return escaping_direction(
            lambda x: R @ x, lambda y: R.T @ y, fro2, P, Q, (m, n), generator=gen, dense=dense
        )

    (a1, v1, b1, bulk1), (a2, v2, b2, bulk2) = run(None), run(R)
    torch.testing.assert_close(v2, v1, rtol=1e-10, atol=0.0)
    assert bulk2 == bulk1
    # the same directions (up to sign) and -N b = a diag(values) in both
    torch.testing.assert_close(a2.abs(), a1.abs(), rtol=0.0, atol=1e-8)
    torch.testing.assert_close(b2.abs(), b1.abs(), rtol=0.0, atol=1e-8)
    N = R - P @ (P.T @ R) - (R @ Q) @ Q.T + P @ (P.T @ R @ Q) @ Q.T
    torch.testing.assert_close(a2.T @ (-N) @ b2, torch.diag(v2), rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("shape", [(40, 30), (150, 120)])
def test_residual_products_dense_when_small_csr_when_large(shape):
    """``R x`` and ``Rᵀ y`` of ``R = s·P_Ω(r)``: dense below the kernels' threshold, CSR above."""
    from deepmc._kernels import SMALL_ELEMENTS
    from deepmc._spectral import ResidualProducts
    from deepmc._validation import Observations

    m, n = shape
    rng = np.random.default_rng(0)
    rows, cols = np.nonzero(rng.random(shape) < 0.3)
    obs = Observations(rows, cols, rng.standard_normal(rows.size), shape)
    data = prepare(obs, torch.device("cpu"), torch.float64, scale=1.0)
    r = torch.as_tensor(rng.standard_normal(rows.size))
    R = np.zeros(shape)
    R[rows, cols] = r.numpy() * data.sampling_scale
    mv, rmv, dense = ResidualProducts(data).bind(r)
    assert (dense is not None) == (m * n <= SMALL_ELEMENTS)
    if dense is not None:
        np.testing.assert_array_equal(dense.numpy(), R)
    x, y = rng.standard_normal((n, 3)), rng.standard_normal((m, 3))
    np.testing.assert_allclose(mv(torch.as_tensor(x)).numpy(), R @ x, atol=1e-12)
    np.testing.assert_allclose(rmv(torch.as_tensor(y)).numpy(), R.T @ y, atol=1e-12)


@pytest.mark.parametrize("shape", [(30, 4), (4, 6), (12, 12)])
def test_positive_qr_is_the_unique_qr_with_a_non_negative_diagonal(shape):
    from deepmc._spectral import positive_qr

    Y = torch.from_numpy(np.random.default_rng(0).standard_normal(shape))
    Q, R = positive_qr(Y)
    d = min(shape)
    assert Q.shape == (shape[0], d) and R.shape == (d, shape[1])
    torch.testing.assert_close(Q @ R, Y)
    torch.testing.assert_close(Q.T @ Q, torch.eye(d, dtype=Y.dtype))
    assert bool((torch.diagonal(R) >= 0).all())
    # flipping a column's sign in Householder's factors gives the same positive factors
    Q2, R2 = positive_qr(-Y)
    torch.testing.assert_close(Q2, -Q)
    torch.testing.assert_close(R2, R)


def test_spectrum_signs_follow_the_right_vectors():
    """The end-to-end singular vectors do not depend on the factorisation's sign choices."""
    g = torch.Generator().manual_seed(0)
    U = torch.randn(40, 4, generator=g, dtype=torch.float64)
    V = torch.randn(30, 4, generator=g, dtype=torch.float64)
    cores = [torch.randn(4, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    P, sigma, Q = compressed_spectrum(U, V, cores)
    idx = Q.abs().argmax(dim=0)
    assert bool((Q[idx, torch.arange(4)] > 0).all())
    # the same X from differently signed factors: the same singular vectors
    D = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64))
    P2, sigma2, Q2 = compressed_spectrum(U @ D, V @ D, [D @ W @ D for W in cores])
    torch.testing.assert_close(sigma2, sigma)
    torch.testing.assert_close(P2, P)
    torch.testing.assert_close(Q2, Q)


@pytest.mark.parametrize(
    "Est, kw",
    [
        (CompressedDeepMatrixCompletion, {"rank": 6}),
        (DeepMatrixCompletion, {"width": 12}),
        (DeepMatrixCompletion, {}),
    ],
    ids=["compressed", "narrow", "full"],
)
def test_clean_low_rank_is_not_cut_while_directions_are_still_learnt(Est, kw):
    """Exactly rank 3, 30 % observed, rank unknown: each direction is learnt in turn, and
    the plateaus between them are not noise — the fit recovers every direction."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((120, 3)) @ rng.standard_normal((3, 40)) / np.sqrt(3)
    X = np.where(rng.random(truth.shape) < 0.3, truth, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = Est(random_state=0, **kw).fit(X)
    miss = np.isnan(X)
    err = np.linalg.norm((_fitted_matrix(est, X.shape) - truth)[miss]) / np.linalg.norm(
        truth[miss]
    )
    assert err < 1e-3, err

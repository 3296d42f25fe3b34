"""The narrow network on the kernels of Ω equals the dense product ``W_L ⋯ W_1``.

``DeepMatrixCompletion(width=w)`` trains :class:`~deepmc.models._narrow_net.NarrowNetwork`
(the compressed products with ``U = W_L``, ``V = W_1ᵀ``); the dense reference is the
full-width code at the same width (:class:`~deepmc.models._layered_net.FullNetwork`),
and autograd of the masked loss of the dense product.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import deepmc.models._layered_net as layered_module
from deepmc import DeepMatrixCompletion
from deepmc._data import prepare
from deepmc._kernels import PatternKernels, chain_product
from deepmc._validation import check_observations
from deepmc.datasets import make_problem
from deepmc.models._layered_net import FullNetwork
from deepmc.models._narrow_net import NarrowNetwork


class _DenseNarrow(DeepMatrixCompletion):
    """The narrow estimator on the dense full-width code (the reference)."""

    def _build_network(self, init_scale: float) -> FullNetwork:
        return FullNetwork(width=self.width, depth=self.depth, init_scale=init_scale)


def _data(shape, fraction, method=None, seed=0):
    problem = make_problem(shape=shape, rank=2, fraction=fraction, random_state=seed)
    data = prepare(check_observations(problem.train), torch.device("cpu"), torch.float64, scale=1.0)
    if method is not None:  # the kernels the step will find for this pattern
        kernels = PatternKernels(data.pattern, data.dtype, method=method)
        data.pattern._kernels[(data.dtype, data.pattern.col.device)] = kernels
    return data


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize(
    ("shape", "fraction", "method"),
    [((12, 9), 0.5, None), ((150, 120), 0.3, None), ((150, 120), 0.05, None),
     ((30, 20), 0.4, "gather")],
    ids=["small", "dense", "sddmm", "gather"],
)  # fmt: skip
def test_narrow_gradients_are_autograd_of_the_dense_product(depth, shape, fraction, method):
    data = _data(shape, fraction, method)
    expected = {(12, 9): "small", (150, 120): "dense" if fraction > 0.1 else "sddmm"}
    assert data.pattern.kernels(data.dtype).method == (method or expected[shape])
    network = NarrowNetwork(width=4, depth=depth, init_scale=0.5)
    params = network.initialize(data, None, None, torch.Generator().manual_seed(1))
    # away from the ε-orthogonal start: every layer its own random matrix
    gen = torch.Generator().manual_seed(2)
    layers = [
        W + 0.3 * torch.randn(W.shape, generator=gen, dtype=W.dtype) for W in params["layers"]
    ]
    resid, grads = network.stepper(data)({"layers": [W.clone() for W in layers]})

    leaves = [W.clone().requires_grad_(True) for W in layers]
    Y, M = data.dense_targets()
    D = M * (chain_product(leaves) - Y)
    (0.5 * data.sampling_scale * torch.sum(D * D)).backward()
    torch.testing.assert_close(resid, D.detach()[data.rows, data.cols], rtol=1e-12, atol=1e-12)
    assert [g.shape for g in grads["layers"]] == [W.shape for W in layers]
    for g, leaf in zip(grads["layers"], leaves, strict=True):
        torch.testing.assert_close(g, leaf.grad, rtol=1e-10, atol=1e-12)


def test_the_estimator_builds_the_narrow_network_at_a_given_width():
    assert isinstance(DeepMatrixCompletion(width=6)._build_network(0.1), NarrowNetwork)
    full = DeepMatrixCompletion()._build_network(0.1)
    assert isinstance(full, FullNetwork) and full.row_group is None
    assert NarrowNetwork(width=6, depth=4, init_scale=0.1).row_group == ("layers", 3)


def _fit(cls, problem, **kw):
    est = cls(random_state=0, device="cpu", dtype="float64", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(problem.train)


@pytest.mark.parametrize(
    ("shape", "fraction", "noise", "params"),
    [
        ((40, 30), 0.5, 0.0, {"width": 6}),  # small kernels, prune and polish
        ((150, 120), 0.08, 0.0, {"width": 6, "max_iter": 1000}),  # sddmm kernels
        ((60, 50), 0.5, 0.1, {"width": 8}),  # noise-edge cut
        ((40, 30), 0.5, 0.0, {"width": 6, "depth": 2, "solver": "gd", "max_iter": 400}),
        ((40, 30), 0.5, 0.0, {"width": 6, "depth": 4, "optimizer": "momentum", "max_iter": 400}),
    ],
    ids=["small", "sparse", "noisy", "depth-2-gd", "depth-4-momentum"],
)
def test_narrow_fit_follows_the_dense_reference(shape, fraction, noise, params):
    problem = make_problem(shape=shape, rank=2, fraction=fraction, noise=noise, random_state=0)
    new = _fit(DeepMatrixCompletion, problem, **params)
    ref = _fit(_DenseNarrow, problem, **params)
    assert new.n_iter_ == ref.n_iter_ and new.rank_ == ref.rank_
    columns = ["iteration", "event", "lr"]
    pd.testing.assert_frame_equal(new.history_[columns], ref.history_[columns])
    for column in ("loss", "residual", "change"):
        np.testing.assert_allclose(new.history_[column], ref.history_[column], rtol=1e-8)
    for W, W_ref in zip(new.weights_, ref.weights_, strict=True):
        np.testing.assert_allclose(W, W_ref, rtol=0, atol=1e-9 * np.abs(W_ref).max())
    assert problem.recovery_error(new) == pytest.approx(problem.recovery_error(ref), rel=1e-6)


def test_narrow_warm_start_continues_from_the_stored_layers():
    problem = make_problem(shape=(40, 30), rank=2, fraction=0.5, random_state=0)
    kw = {"width": 6, "solver": "gd", "tol": 0.0, "init_scale": 0.3}
    est = _fit(DeepMatrixCompletion, problem, max_iter=50, warm_start=True, **kw)
    first = [W.copy() for W in est.weights_]
    stored = est._network.stored_params(vars(est))
    assert all(a is b for a, b in zip(stored["layers"], est.weights_, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train)
    assert est.n_iter_ == 100
    ref = _fit(DeepMatrixCompletion, problem, max_iter=100, **kw)
    for W, W_ref, W0 in zip(est.weights_, ref.weights_, first, strict=True):
        assert not np.allclose(W, W0)
        np.testing.assert_allclose(W, W_ref, rtol=1e-8, atol=1e-12)


def test_a_narrow_network_too_large_is_refused_before_allocating(monkeypatch):
    """Its memory is that of its layers and of Ω, not of the m × n arrays of the dense step."""
    problem = make_problem(shape=(200, 150), rank=2, fraction=0.1, random_state=0)
    kw = {"random_state": 0, "device": "cpu", "max_iter": 5}
    # bytes: the narrow network's ≈ 0.14 MB fit, the dense step's ≈ 1.3 MB do not
    monkeypatch.setattr(layered_module, "available_bytes", lambda device: 250_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        DeepMatrixCompletion(width=4, **kw).fit(problem.train)
    with pytest.raises(MemoryError, match=r"dense 200×150 arrays"):
        _DenseNarrow(width=4, **kw).fit(problem.train)
    with pytest.raises(MemoryError, match=r"width=400\).*GiB.*smaller width"):
        DeepMatrixCompletion(width=400, **kw).fit(problem.train)

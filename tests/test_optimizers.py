"""Heavy-ball steps are implemented once (:class:`GradientDescent`), for the fixed β of
``optimizer="momentum"`` and for the polish's measured β alike."""

from __future__ import annotations

import warnings

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from deepmc import CompressedDeepMatrixCompletion
from deepmc._policy._momentum import MomentumSchedule
from deepmc._policy._state import PolicyState
from deepmc._solver import GradientDescent, make_optimizer
from deepmc.datasets import make_problem


def _quadratic_steps(opt_factory, n_steps=6):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    params = {"a": [torch.randn(5, generator=g, dtype=torch.float64)],
              "b": [torch.randn(3, generator=g, dtype=torch.float64)]}  # fmt: skip
    opt = opt_factory(params)
    for _ in range(n_steps):
        a, b = params["a"][0], params["b"][0]
        a.grad, b.grad = A.T @ (A @ a) - 1.0, 2 * b
        opt.step()
    return [p.clone() for ps in params.values() for p in ps]


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_momentum_optimizer_takes_torch_sgd_heavy_ball_steps(wd):
    ours = _quadratic_steps(
        lambda ps: make_optimizer(ps, 0.05, lr_ratios={"b": 0.5}, kind="momentum", weight_decay=wd)
    )
    groups = lambda ps: [{"params": ps["a"], "lr": 0.05}, {"params": ps["b"], "lr": 0.025}]  # noqa: E731
    torch_sgd = _quadratic_steps(
        lambda ps: torch.optim.SGD(groups(ps), lr=0.05, momentum=0.9, weight_decay=wd)
    )
    for x, y in zip(ours, torch_sgd, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-15)


def test_fixed_momentum_is_not_scheduled():
    opt = make_optimizer({"w": [torch.zeros(2)]}, 0.1, lr_ratios={}, kind="momentum")
    assert isinstance(opt, GradientDescent)
    assert opt.momentum == 0.9 and not opt.schedule_momentum
    plain = make_optimizer({"w": [torch.zeros(2)]}, 0.1, lr_ratios={}, kind="gd")
    assert plain.momentum == 0.0 and plain.schedule_momentum


def test_the_polish_sets_beta_for_gd_but_leaves_a_fixed_momentum_alone():
    # A default fit measures β after its edits; the spectral policy's restarts after an
    # edit set β on a plain-GD optimizer and never touch the user's fixed β = 0.9.
    p = make_problem("A", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # only the events matter here
        gd = CompressedDeepMatrixCompletion(rank=5, max_iter=400, random_state=0).fit(p.train)
    assert gd.history_["event"].str.contains("heavy-ball steps").any()
    for cut in (True, False):
        schedule = MomentumSchedule(PolicyState(momentum=0.5))
        plain = make_optimizer({"w": [torch.zeros(2)]}, 0.1, lr_ratios={}, kind="gd")
        plain.momentum = 0.3
        fixed = make_optimizer({"w": [torch.zeros(2)]}, 0.1, lr_ratios={}, kind="momentum")
        schedule.restart(plain, cut=cut)
        schedule.restart(fixed, cut=cut)
        assert plain.momentum == (0.5 if cut else 0.0)
        assert fixed.momentum == 0.9

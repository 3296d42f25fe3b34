"""The gradient-descent loop on a tiny quadratic "network", without any estimator.

The network has one parameter vector ``w`` and the loss ``(s/2)‖w − y‖²`` (``s = 1``), so
plain GD contracts the error by ``1 − η`` per step: it converges for ``η < 2`` and
diverges for ``η > 2``. Every behaviour of the loop is checked exactly, in milliseconds.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import numpy as np
import pytest
import torch

from deepmc._data import HeldOut, TrainingData, prepare
from deepmc._solver import (
    MAX_BACKOFFS,
    Check,
    DivergenceError,
    GradientDescent,
    Interrupt,
    StopRule,
    check_scalars,
    gradient_descent,
    make_optimizer,
)
from deepmc._validation import Observations

Y = np.array([1.0, 1.0])


def _obs(values: np.ndarray) -> Observations:
    k = values.shape[0]
    return Observations(np.zeros(k, dtype=np.int64), np.arange(k), values, (1, k))


class Quadratic:
    """``X = w`` (a 1 × k matrix): residual ``w − y``, gradient ``s (w − y)``."""

    lr_ratios = {"w": 1.0}

    def __init__(self, interrupt_at: set[int] = frozenset()) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at

    def residual_and_grads(self, data: TrainingData, params):
        if self.calls in self.interrupt_at:  # a real Ctrl-C during this step's gradient
            os.kill(os.getpid(), signal.SIGINT)
        self.calls += 1
        (w,) = params["w"]
        resid = w - data.y
        return resid, {"w": [data.sampling_scale * resid]}

    def stepper(self, data: TrainingData):
        return functools.partial(self.residual_and_grads, data)

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.y

    def factors(self, params):
        (w,) = params["w"]
        return torch.ones(1, 1, dtype=w.dtype), w.view(-1, 1)

    def step_work(self, data: TrainingData) -> int:
        return 1


def _run(lr: float, *, w0: float = 0.0, network: Quadratic | None = None, **kw):
    data = prepare(_obs(Y), torch.device("cpu"), torch.float64, scale=1.0)
    params = {"w": [torch.full((2,), w0, dtype=torch.float64)]}
    kw.setdefault("max_iter", 1000)
    kw.setdefault("tol", 1e-9)
    kw.setdefault("check_every", 5)
    kw.setdefault("stop_rule", StopRule(kw["tol"], kw.pop("n_iter_no_change", 10)))
    return gradient_descent(network or Quadratic(), data, params, lr=lr, **kw)


def test_tol_stops_when_the_fitted_values_settle():
    result = _run(0.5, tol=1e-6)
    assert result.stop == "converged"
    last = result.history[-1]
    assert last["event"] == "converged"
    assert last["change"] <= 1e-6 < result.history[-2]["change"]
    assert result.n_iter == last["iteration"] and result.n_iter % 5 == 0
    # error (1 − η)^t of the initial residual ‖y‖
    assert last["residual"] == pytest.approx(0.5**result.n_iter, rel=1e-9)
    assert result.history[0]["change"] == np.inf
    assert result.best_iteration == result.n_iter


def test_max_iter_stops_with_its_reason_and_a_final_check():
    result = _run(0.1, tol=0.0, max_iter=7)
    assert result.stop == "max_iter"
    assert result.n_iter == 7
    assert [row["iteration"] for row in result.history] == [0, 5, 7]
    assert result.history[-1]["event"] == "max_iter"


def test_divergence_backs_off_from_the_last_check():
    # η = 3: the error is multiplied by −2 per step; 32 at iteration 5, 1024 at 10
    result = _run(3.0, backoff=True)
    assert result.stop == "converged"
    assert result.lr == 1.5
    events = [row["event"] for row in result.history]
    assert "diverged at iteration 10, lr halved to 1.5 from iteration 5" in events
    its = [row["iteration"] for row in result.history]
    assert its[:3] == [0, 5, 10]  # iteration 10 re-checked after the restart from 5
    assert result.history[2]["lr"] == 1.5
    assert torch.allclose(result.params["w"][0], torch.tensor(Y), atol=1e-6)


def test_divergence_with_an_explicit_lr_raises():
    with pytest.raises(DivergenceError, match=r"diverged at iteration 10 .*lr=3\.0"):
        _run(3.0)


def test_backoff_gives_up_after_max_backoffs():
    with pytest.raises(DivergenceError, match=rf"halved {MAX_BACKOFFS} time"):
        _run(1e6, backoff=True)


def test_early_stopping_restores_the_best_state():
    # w_t = 1 − 0.9^t passes closest to the validation values 0.5 at t = 7
    validation = HeldOut.from_observations(
        _obs(np.array([0.5, 0.5])), torch.device("cpu"), torch.float64
    )
    result = _run(0.1, check_every=1, validation=validation, n_iter_no_change=3)
    assert result.stop == "early_stopping"
    assert result.best_iteration == 7
    assert result.n_iter == 10
    np.testing.assert_allclose(result.params["w"][0].numpy(), 1 - 0.9**7, rtol=1e-12)
    rmse = [row["val_rmse"] for row in result.history]
    assert int(np.argmin(rmse)) == 7
    assert "eval_seconds" not in result.history[0]  # validation time counts as fit time


def test_monitors_are_recorded_and_timed_apart():
    watched = HeldOut.from_observations(_obs(Y), torch.device("cpu"), torch.float64)
    result = _run(0.5, tol=0.0, max_iter=10, monitors={"eval": watched})
    row = result.history[-1]
    assert row["eval_error"] == pytest.approx(0.5**10)
    assert row["eval_seconds"] >= 0.0
    assert list(row)[-2:] == ["eval_seconds", "event"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_stops_at_the_end_of_the_step():
    handler = signal.getsignal(signal.SIGINT)
    result = _run(0.1, tol=0.0, network=Quadratic(interrupt_at={12}))
    assert signal.getsignal(signal.SIGINT) is handler
    assert result.stop == "interrupted"
    assert result.n_iter == 12
    assert result.history[-1]["iteration"] == 12
    assert result.history[-1]["event"] == "interrupted"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_second_ctrl_c_raises():
    with Interrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_custom_stop_rule_and_callbacks_see_each_check():
    seen: list[Check] = []

    def rule(check: Check) -> str:
        seen.append(check)
        return "enough" if check.iteration >= 10 else ""

    result = _run(0.1, stop_rule=rule)
    assert result.stop == "enough" and result.n_iter == 10
    assert [c.iteration for c in seen] == [0, 5, 10]
    assert seen[0].since_best is None


def test_a_callback_that_edits_params_resets_the_change_baseline():
    def jump(check: Check) -> bool:
        if check.iteration == 5:
            check.params["w"][0].copy_(torch.tensor(Y))  # e.g. a pruning step
            return True
        return False

    result = _run(0.1, tol=1e-12, callbacks=[jump])
    # measured against the edited state, nothing moves between 5 and 10
    assert result.stop == "converged"
    assert result.n_iter == 10
    assert result.history[-1]["change"] == 0.0
    assert result.history[-1]["residual"] == 0.0


def test_the_loop_runs_without_grad_mode_and_moves_leaves_that_require_grad():
    """Gradients are closed form: the loop records no graph, even for parameters that
    require grad (which it updates in place), and grad mode is restored afterwards."""
    modes = []

    def watch(check: Check) -> bool:
        modes.append(torch.is_grad_enabled())
        return False

    data = prepare(_obs(Y), torch.device("cpu"), torch.float64, scale=1.0)
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    result = gradient_descent(
        Quadratic(), data, {"w": [w]}, lr=0.5, max_iter=20, tol=0.0, check_every=5,
        stop_rule=StopRule(0.0), callbacks=[watch],
    )  # fmt: skip
    assert modes and not any(modes)
    assert torch.is_grad_enabled()
    assert w.is_leaf and w.grad_fn is None and w.grad is None
    torch.testing.assert_close(w.detach(), torch.tensor(Y) * (1 - 0.5**20))
    assert result.n_iter == 20


def test_check_scalars_reduce_once_across_shards():
    resid = torch.tensor([3.0, 4.0], dtype=torch.float64)
    targets = torch.tensor([1.0, 0.0], dtype=torch.float64)
    previous = torch.zeros(2, dtype=torch.float64)
    calls = []

    def two_equal_shards(t: torch.Tensor) -> torch.Tensor:
        calls.append(t.shape)
        return 2 * t

    local = check_scalars(resid, targets, previous)
    assert local == pytest.approx((25.0, np.hypot(4.0, 4.0), 5.0))
    total = check_scalars(resid, targets, previous, reduce=two_equal_shards)
    assert total == pytest.approx((50.0, np.sqrt(2 * 32.0), np.sqrt(50.0)))
    assert calls == [torch.Size([3])]
    assert check_scalars(resid, targets, None)[2] is None


def test_reduce_is_called_once_per_check():
    calls = []

    def identity(t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return t

    plain = _run(0.5, tol=0.0, max_iter=20)
    reduced = _run(0.5, tol=0.0, max_iter=20, reduce=identity)
    assert len(calls) == len(reduced.history) == 5
    assert [r["loss"] for r in reduced.history] == pytest.approx([r["loss"] for r in plain.history])


def test_optimizer_groups_move_at_their_lr_ratio():
    a, b = torch.zeros(1), torch.zeros(1)
    opt = make_optimizer({"cores": [a], "factors": [b]}, 0.5, lr_ratios={"factors": 0.1})
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.05]
    a.grad, b.grad = torch.ones(1), torch.ones(1)
    opt.step()
    assert a.item() == -0.5 and b.item() == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer({"w": [a]}, 0.1, lr_ratios={}, kind="lbfgs")


def test_default_stop_rule():
    rule = StopRule(tol=1e-3, n_iter_no_change=2)
    check = Check(0, {}, torch.zeros(1), {"change": 1e-2}, since_best=2)
    assert rule(check) == "early_stopping"
    check.row["change"] = 1e-3
    assert rule(check) == "converged"
    check.row["change"], check.since_best = 1.0, None
    assert rule(check) == ""


def test_gradient_descent_momentum_is_heavy_ball_like_sgd():
    """``momentum = β`` gives torch's SGD(momentum=β) steps; 0 is the plain step."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 6, generator=g, dtype=torch.float64)
    H = A @ A.T / 6 + torch.eye(6, dtype=torch.float64)

    def run(make, steps=20):
        W = torch.ones(6, dtype=torch.float64, requires_grad=False)
        opt = make([W])
        for _ in range(steps):
            W.grad = H @ W  # gradient of Wᵀ H W / 2
            opt.step()
        return W

    for beta in (0.0, 0.7):
        def ours(ps, beta=beta):
            opt = GradientDescent([{"params": ps, "lr": 0.1}])
            opt.momentum = beta
            return opt

        def theirs(ps, beta=beta):
            return torch.optim.SGD(ps, lr=0.1, momentum=beta)

        torch.testing.assert_close(run(ours), run(theirs))
        # the gradients handed to step() directly: the same steps, bit for bit
        W = torch.ones(6, dtype=torch.float64)
        opt = ours([W])
        for _ in range(20):
            opt.step([[H @ W]])
        assert torch.equal(W, run(ours)) and W.grad is None
    opt = GradientDescent([{"params": [torch.ones(2)], "lr": 0.1}])
    assert opt.momentum == 0.0
    with pytest.raises(ValueError, match="momentum"):
        opt.momentum = 1.0

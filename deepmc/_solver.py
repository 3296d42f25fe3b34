"""Gradient descent for the deep networks: the loop, its optimizers and its stop rule.

:func:`gradient_descent` runs any :class:`~deepmc.models._network.Network` on
:class:`~deepmc._data.TrainingData` and never reads an estimator. Every ``check_every``
steps it *checks*: it reads the loss, the relative training residual and the relative
change of the fitted values back from the device (:func:`check_scalars`, one transfer),
records a history row, and asks its ``stop_rule`` whether to stop. A non-finite
loss or one whose relative residual exceeds :data:`DIVERGENCE_RESIDUAL` is divergence:
the step is halved from the last checked state when allowed, else
:class:`DivergenceError` is raised. Between checks nothing is read back.

The step itself is :func:`~deepmc._optim.step`: the gradients go to the optimizer
(:func:`~deepmc._optim.make_optimizer`, in :mod:`deepmc._optim`), which moves each
parameter group at its network's learning-rate ratio.

Extension points of :func:`gradient_descent`: ``reduce`` sums the scalars of a check
across processes that each hold a shard of Ω (:func:`check_scalars`; the network
reduces its own gradients); ``stop_rule`` decides the stop (:class:`StopRule` is the
plain rule, the estimators pass their spectral policy's); ``callbacks`` run at every check
that does not stop and may edit the parameters in place (pruning).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ._data import HeldOut, TrainingData
from ._device import synchronize
from ._optim import GradientDescent, make_optimizer, step
from ._params import Params
from ._progress import Interrupt, finish_progress, progress_bar, show_progress
from ._threads import StepThreads

if TYPE_CHECKING:
    from .models._network import Network

__all__ = [
    "Check",
    "DivergenceError",
    "GradientDescent",
    "Interrupt",
    "SolveResult",
    "StopRule",
    "check_scalars",
    "evaluate",
    "gradient_descent",
    "make_optimizer",
    "progress_bar",
    "step",
]

#: Sums a small tensor across processes (``torch.distributed.all_reduce``-like), or ``None``.
Reduce = Callable[[torch.Tensor], torch.Tensor]

#: A checked loss whose relative residual exceeds this counts as divergence.
DIVERGENCE_RESIDUAL = 1e2
#: How many times the step is halved on divergence before giving up.
MAX_BACKOFFS = 8
_TINY = float(np.finfo(float).tiny)

class DivergenceError(FloatingPointError):
    """Raised when gradient descent diverges (non-finite or exploding loss)."""


def check_scalars(
    residual: torch.Tensor,
    targets: torch.Tensor,
    previous: torch.Tensor | None,
    reduce: Reduce | None = None,
) -> tuple[float, float, float | None]:
    """The global scalars of a check, read back in one transfer.

    Parameters
    ----------
    residual : Tensor
        ``P_Ω(X − Y)`` in the network's layout.
    targets : Tensor
        ``P_Ω(Y)`` in the same layout, so that ``residual + targets`` are the fitted values.
    previous : Tensor or None
        The residual at the previous check (the change baseline), if any.
    reduce : callable, default=None
        Sums a small tensor across processes, each holding a shard of Ω. The three
        quantities are packed into one tensor (norms as squares), so a check costs one
        reduction. ``None`` in a single process.

    Returns
    -------
    sum_sq : float
        ``‖residual‖²``.
    fitted_norm : float
        ``‖residual + targets‖``.
    change_norm : float or None
        ``‖residual − previous‖`` (``None`` without a baseline).
    """
    parts = [torch.sum(residual * residual), torch.linalg.vector_norm(residual + targets)]
    if previous is not None:
        parts.append(torch.linalg.vector_norm(residual - previous))
    packed = torch.stack(parts)
    if reduce is not None:
        packed[1:] = packed[1:].square()
        packed = reduce(packed)
        packed[1:] = packed[1:].sqrt()
    values = packed.tolist()
    return values[0], values[1], values[2] if previous is not None else None


def evaluate(
    network: Network, params: Params, held_out: HeldOut, scale: float
) -> tuple[float, float]:
    """Relative error and RMSE (user units) of the network on ``held_out``."""
    return held_out.errors(*network.factors(params), scale)


@dataclass
class Check:
    """What a check saw; handed to the stop rule and to the callbacks.

    Attributes
    ----------
    iteration : int
    params : dict of str to list of Tensor
        The live parameters (a callback may edit them in place).
    residual : Tensor
        ``P_Ω(X − Y)`` at this iteration.
    row : dict
        The history row just recorded (``loss``, ``residual``, ``change``, ...).
    since_best : int or None
        Checks since the best validation RMSE; ``None`` without a validation set.
    optimizer : object or None
        The live optimizer (a callback may set the ``momentum`` of
        :class:`GradientDescent`); a back-off replaces it with a fresh one.
    """

    iteration: int
    params: Params
    residual: torch.Tensor
    row: dict
    since_best: int | None
    optimizer: Any = None


@dataclass
class StopRule:
    """Stop when the fitted values settle or the validation RMSE stops improving.

    ``"converged"`` when ``change ≤ tol``; ``"early_stopping"`` after
    ``n_iter_no_change`` checks without a better validation RMSE; ``""`` to go on.
    """

    tol: float
    n_iter_no_change: int = 10

    def __call__(self, check: Check) -> str:
        if check.row["change"] <= self.tol:
            return "converged"
        if check.since_best is not None and check.since_best >= self.n_iter_no_change:
            return "early_stopping"
        return ""


@dataclass
class SolveResult:
    """Outcome of :func:`gradient_descent`.

    Attributes
    ----------
    params : dict of str to list of Tensor
        The final parameters (the best validation state after early stopping).
    n_iter : int
        The iteration reached.
    best_iteration : int
        The iteration whose parameters are returned.
    lr : float
        η at the end (after any back-off).
    stop : {"converged", "early_stopping", "max_iter", "interrupted"}
    history : list of dict
        One row per check.
    """

    params: Params
    n_iter: int
    best_iteration: int
    lr: float
    stop: str
    history: list[dict]


@dataclass
class _State:
    """The loop's mutable state between checks."""

    it: int
    lr: float
    optimizer: Any
    snapshot: tuple[int, list[torch.Tensor], torch.Tensor | None] | None = None
    best: tuple[float, int, list[torch.Tensor]] | None = None
    since_best: int = 0
    backoffs: int = 0
    previous: torch.Tensor | None = None
    restored: bool = False  # parameters just reset to the last checked state
    event: str = ""
    eval_seconds: float = 0.0


@dataclass
class _Config:
    """The fixed settings of one :func:`gradient_descent` call."""

    network: Network
    data: TrainingData
    params: Params
    flat: list[torch.Tensor]
    optimizer: str
    weight_decay: float
    backoff: bool
    scale: float
    t_start: float
    name: str
    monitors: Mapping[str, HeldOut]
    validation: HeldOut | None
    reduce: Reduce | None
    stop_rule: Callable[[Check], str]
    callbacks: Sequence[Callable[[Check], Any]]
    end_iter: int
    history: list[dict]
    interrupt: Any = None
    progress: Any = None

    def new_optimizer(self, lr: float) -> Any:
        return make_optimizer(
            self.params,
            lr,
            lr_ratios=self.network.lr_ratios,
            kind=self.optimizer,
            weight_decay=self.weight_decay,
        )


def _snapshot(cfg: _Config, state: _State, residual: torch.Tensor) -> None:
    """Make the current state the change baseline and the back-off point."""
    state.previous = residual.detach().clone()
    state.snapshot = (state.it, [p.detach().clone() for p in cfg.flat], state.previous)


def _back_off(cfg: _Config, state: _State, loss: float, residual: float) -> None:
    """Halve η and return to the last checked state, or raise :class:`DivergenceError`."""
    if not cfg.backoff or state.snapshot is None or state.backoffs >= MAX_BACKOFFS:
        advice = (
            "Use a smaller lr, or lr='auto'."
            if not cfg.backoff
            else f"The step was halved {state.backoffs} time(s) without "
            "stabilising; pass a smaller explicit lr."
        )
        shown = "'auto'" if cfg.backoff else repr(state.lr)
        raise DivergenceError(
            f"{cfg.name}: gradient descent diverged at iteration {state.it} "
            f"(loss {loss * cfg.scale**2:.3g}, relative residual {residual:.3g}) with "
            f"lr={shown} (normalised step {state.lr:.3g}). {advice}"
        )
    state.backoffs += 1
    state.lr *= 0.5
    diverged_at = state.it
    state.it, saved, state.previous = state.snapshot
    state.restored = True
    with torch.no_grad():
        for p, q in zip(cfg.flat, saved, strict=True):
            p.copy_(q)
    state.optimizer = cfg.new_optimizer(state.lr)
    state.event += (
        f"{'; ' if state.event else ''}diverged at iteration {diverged_at}, "
        f"lr halved to {state.lr:.3g} from iteration {state.it}"
    )


def _record(cfg: _Config, state: _State, loss: float, residual: float, change: float) -> dict:
    """The history row of this check, with the held-out errors."""
    row = {
        "iteration": state.it,
        "seconds": time.perf_counter() - cfg.t_start - state.eval_seconds,
        "loss": loss * cfg.scale**2,
        "residual": residual,
        "change": change,
        "lr": state.lr,
    }
    for key, held_out in cfg.monitors.items():  # watched only: their time is not billed
        t_eval = time.perf_counter()
        row[f"{key}_error"], row[f"{key}_rmse"] = evaluate(
            cfg.network, cfg.params, held_out, cfg.scale
        )
        state.eval_seconds += time.perf_counter() - t_eval
    if cfg.validation is not None:
        row["val_error"], row["val_rmse"] = evaluate(
            cfg.network, cfg.params, cfg.validation, cfg.scale
        )
    if cfg.monitors:
        row["eval_seconds"] = state.eval_seconds
    row["event"] = state.event
    state.event = ""
    cfg.history.append(row)
    return row


def _check(cfg: _Config, state: _State, resid: torch.Tensor, interrupted: bool) -> str:
    """One check: ``"backed_off"``, ``"edited"`` (by a callback), a stop reason, or ``""``."""
    data = cfg.data
    synchronize(data.device)
    sum_sq, fitted_norm, change_norm = check_scalars(
        resid, cfg.network.targets(data), state.previous, cfg.reduce
    )
    loss = 0.5 * data.sampling_scale * sum_sq
    residual = math.sqrt(max(2.0 * loss / data.sampling_scale, 0.0))
    residual /= max(data.y_norm, _TINY)
    if not math.isfinite(loss) or residual > DIVERGENCE_RESIDUAL:
        _back_off(cfg, state, loss, residual)
        return "backed_off"
    change = math.inf if change_norm is None else change_norm / max(fitted_norm, _TINY)
    row = _record(cfg, state, loss, residual, change)
    _snapshot(cfg, state, resid)
    if cfg.progress is not None:
        show_progress(cfg.progress, state.it, row)
    if cfg.validation is not None:
        if state.best is None or row["val_rmse"] < state.best[0]:
            state.best = (row["val_rmse"], state.it, state.snapshot[1])
            state.since_best = 0
        else:
            state.since_best += 1
    since_best = state.since_best if cfg.validation is not None else None
    check = Check(state.it, cfg.params, resid, row, since_best, state.optimizer)
    if interrupted:
        stop = "interrupted"
    else:
        stop = cfg.stop_rule(check) or ("max_iter" if state.it >= cfg.end_iter else "")
    if stop:
        row["event"] = (row["event"] + " " + stop).strip()
        return stop
    edited = [bool(callback(check)) for callback in cfg.callbacks]
    return "edited" if any(edited) else ""


def gradient_descent(
    network: Network,
    data: TrainingData,
    params: Params,
    *,
    lr: float,
    optimizer: str = "gd",
    weight_decay: float = 0.0,
    max_iter: int,
    tol: float,
    check_every: int,
    start_iter: int = 0,
    history: list[dict] | None = None,
    monitors: Mapping[str, HeldOut] | None = None,
    validation: HeldOut | None = None,
    backoff: bool = False,
    scale: float = 1.0,
    t_start: float | None = None,
    name: str = "gradient_descent",
    verbose: int = 0,
    reduce: Reduce | None = None,
    stop_rule: Callable[[Check], str],
    callbacks: Sequence[Callable[[Check], Any]] = (),
    interrupt: Any = None,
) -> SolveResult:
    """Gradient descent on ``network`` from ``params`` (updated in place), with periodic checks.

    At each check the loss, the relative training residual
    ``‖P_Ω(X − Y)‖_F / ‖P_Ω(Y)‖_F``, the relative change of the fitted values on Ω since
    the previous check ``‖X_Ω(t) − X_Ω(t − check_every)‖_F / ‖X_Ω(t)‖_F`` and the
    held-out errors are recorded. The run stops when ``stop_rule`` says so (the only
    route by which ``tol`` and early stopping decide), at
    ``start_iter + max_iter``, or on Ctrl-C (at the end of the current step). On
    divergence the step is halved from the last checked state when ``backoff`` (at
    most :data:`MAX_BACKOFFS` times); otherwise :class:`DivergenceError` is raised.

    Parameters
    ----------
    network : Network
        Gives ``stepper`` (the residual and gradients of a step, built once here),
        ``targets``, ``factors``, ``lr_ratios`` and ``step_work``.
    data : TrainingData
    params : dict of str to list of Tensor
    lr : float
        η (normalised units); group ``g`` moves at ``lr · network.lr_ratios[g]``.
    optimizer : {"gd", "momentum", "adam"}, default="gd"
    weight_decay : float, default=0.0
    max_iter : int
        Steps in this call.
    tol : float
        The stop rule's tolerance, shown in the progress bar beside the change it is
        compared with; ``stop_rule`` alone decides.
    check_every : int
    start_iter : int, default=0
        Iteration count of ``params`` (a warm start continues it).
    history : list of dict, default=None
        Rows to append to (a warm start continues it).
    monitors : mapping of str to HeldOut, default=None
        Watched sets: ``{key}_error``/``{key}_rmse`` columns; their time is recorded as
        ``eval_seconds`` and not counted in ``seconds``.
    validation : HeldOut, default=None
        Early-stopping set (``val_error``/``val_rmse``, and ``Check.since_best`` for
        the stop rule); the best state is returned.
    backoff : bool, default=False
        Halve the step on divergence instead of raising.
    scale : float, default=1.0
        The data scale: losses and errors are reported in user units.
    t_start : float, default=None
        ``time.perf_counter()`` origin of the ``seconds`` column (default: now).
    name : str, default="gradient_descent"
        Prefix of messages and of the progress bar.
    verbose : int, default=0
        Show the progress bar from the start; with 0 it appears by itself on a terminal
        when the run lasts more than :data:`~deepmc._progress.PROGRESS_DELAY` seconds
        (:func:`~deepmc._progress.progress_bar`).
    reduce : callable, default=None
        Sums the check's scalars across processes (see :func:`check_scalars`).
    stop_rule : callable
        ``rule(check) -> str``: a stop reason, or ``""`` to go on (e.g.
        :class:`StopRule`, or the spectral policy's rule of the estimators).
    callbacks : sequence of callable, default=()
        Called at every check that does not stop, with the :class:`Check`. One that
        edits ``check.params`` in place returns ``True``: the residual and gradients
        are recomputed and the edited state becomes the change baseline and the
        back-off point.
    interrupt : context manager, default=None
        Used instead of :class:`Interrupt`: an object whose ``requested`` attribute,
        read between steps, says to stop at the next check. A distributed fit passes
        one whose flag changes only when the ranks agree, so every rank stops at the
        same step.

    Returns
    -------
    SolveResult
    """
    cfg = _Config(
        network=network, data=data, params=params,
        flat=[p for ps in params.values() for p in ps],
        optimizer=optimizer, weight_decay=weight_decay, backoff=backoff, scale=scale,
        t_start=time.perf_counter() if t_start is None else t_start, name=name,
        monitors=dict(monitors or {}), validation=validation, reduce=reduce,
        stop_rule=stop_rule, callbacks=list(callbacks),
        end_iter=start_iter + max_iter, history=[] if history is None else history,
        interrupt=interrupt,
    )  # fmt: skip
    state = _State(it=start_iter, lr=lr, optimizer=cfg.new_optimizer(lr))
    cfg.progress = progress_bar(verbose, name, start_iter, cfg.end_iter, tol)
    try:
        stop = _loop(cfg, state, start_iter, check_every)
        finish_progress(cfg.progress, state.it, name, stop)
    finally:
        if cfg.progress is not None:
            cfg.progress.close()
    best_iteration = state.it
    if state.best is not None and stop != "interrupted":
        best_iteration = state.best[1]
        with torch.no_grad():
            for p, q in zip(cfg.flat, state.best[2], strict=True):
                p.copy_(q)
    for p in cfg.flat:
        p.grad = None
    return SolveResult(params, state.it, best_iteration, state.lr, stop, cfg.history)


def _loop(cfg: _Config, state: _State, start_iter: int, check_every: int) -> str:
    """Step until a check says stop; return the reason."""
    threads = StepThreads(cfg.data.device, cfg.network.step_work(cfg.data))
    residual_and_grads = cfg.network.stepper(cfg.data)  # its workspace, built once
    # the networks' gradients are closed form: no op of the loop records a graph, and
    # with grad mode off the per-step checks for parameters that require grad are skipped
    with cfg.interrupt or Interrupt() as interrupt, threads, torch.no_grad():
        while True:
            at_check = (state.it - start_iter) % check_every == 0 or state.it >= cfg.end_iter
            resid, grads = residual_and_grads(cfg.params)
            # a state restored after a back-off was checked already
            if (at_check or interrupt.requested) and not state.restored:
                outcome = _check(cfg, state, resid, interrupt.requested)
                if outcome == "backed_off":
                    continue
                if outcome == "edited":
                    resid, grads = residual_and_grads(cfg.params)
                    _snapshot(cfg, state, resid)
                elif outcome:
                    return outcome
            step(cfg.flat, grads, state.optimizer)
            threads.tick(timed=not at_check)
            state.restored = False
            state.it += 1

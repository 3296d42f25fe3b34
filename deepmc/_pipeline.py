"""The fit pipeline shared by the single-process and the distributed fits.

An estimator's hyper-parameters are resolved once into a :class:`FitPlan` (the network
at its initial scale ε, η, the stop rule's settings, the prune policy);
:func:`run_plan` runs the descent of a plan on prepared data, with the spectral
monitor (the plateau-aware stop rule, prune and polish of
:class:`~deepmc._policy.SpectralMonitor`), and returns a :class:`FitResult`, whose
:meth:`FitResult.warn` says how the fit stopped when it did not converge. The fitted
attributes of an estimator are written from one record, :class:`FittedState`, by
:meth:`deepmc._base._BaseDeepMC._set_fitted`, whether the fit ran in this process,
across ranks (:meth:`deepmc.distributed.ShardedModel.gather`) or was saved
(:func:`deepmc.distributed.load_model`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from ._data import HeldOut, TrainingData
from ._params import Params
from ._policy import SpectralMonitor
from ._solver import Reduce, SolveResult, gradient_descent
from ._spectral import LOCAL, LocalRows

if TYPE_CHECKING:
    from .models._network import Network

__all__ = [
    "FitPlan",
    "FitResult",
    "FittedState",
    "SpectralMonitor",
    "make_plan",
    "numpy_params",
    "run_plan",
]


@dataclass(frozen=True)
class FitPlan:
    """An estimator's hyper-parameters, resolved for one fit.

    Attributes
    ----------
    network : Network
        The network record at initial scale ``init_scale``.
    init_scale : float
        ε, resolved from ``"auto"``.
    lr : float
        η in normalised units, resolved from ``"auto"``.
    tol, max_iter, check_every, optimizer, weight_decay, n_iter_no_change, verbose
        The estimator's parameters of the same names.
    prune : bool
        Whether the fit prunes and polishes (``solver="auto"`` with plain GD).
    backoff : bool
        Whether the step is halved on divergence (``lr="auto"``).
    name : str
        The estimator's class name, which prefixes messages and the progress bar.
    """

    network: Network
    init_scale: float
    lr: float
    tol: float
    max_iter: int
    check_every: int
    optimizer: str
    weight_decay: float
    n_iter_no_change: int
    prune: bool
    backoff: bool
    name: str
    verbose: int

    def monitor(
        self, data: TrainingData, *, scale: float, rows: LocalRows = LOCAL
    ) -> SpectralMonitor:
        """The :class:`~deepmc._policy.SpectralMonitor` of this plan on ``data``."""
        return SpectralMonitor(
            self.network, data, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            prune=self.prune, scale=scale, rows=rows,
        )  # fmt: skip


def make_plan(
    estimator: Any,
    shape: tuple[int, int],
    build: Callable[[float], Network] | None = None,
) -> FitPlan:
    """The plan of ``estimator``'s hyper-parameters to fit a matrix of ``shape``.

    Parameters
    ----------
    estimator : _BaseDeepMC
        Its parameters are read, not modified (they are assumed validated).
    shape : tuple of int
        ``(m, n)`` of the whole matrix.
    build : callable, default=None
        ``build(init_scale) -> Network``; by default the estimator's own network for
        ``shape`` (``estimator._network_for``). A distributed fit passes its row-sharded
        form of that network.

    Returns
    -------
    FitPlan
    """
    init_scale = estimator._resolve_init_scale(shape)
    network = estimator._network_for(shape, init_scale) if build is None else build(init_scale)
    return FitPlan(
        network=network,
        init_scale=init_scale,
        lr=estimator._resolve_learning_rate(),
        tol=estimator.tol,
        max_iter=estimator.max_iter,
        check_every=estimator.check_every,
        optimizer=estimator.optimizer,
        weight_decay=estimator.weight_decay,
        n_iter_no_change=estimator.n_iter_no_change,
        prune=estimator._prunes(),
        backoff=estimator.lr == "auto",
        name=type(estimator).__name__,
        verbose=estimator.verbose,
    )


def numpy_params(params: Params) -> dict[str, list[np.ndarray]]:
    """Host copies of the parameter groups, as NumPy arrays."""
    return {k: [t.detach().cpu().numpy().copy() for t in v] for k, v in params.items()}


@dataclass(frozen=True)
class FitResult:
    """The outcome of :func:`run_plan`.

    Attributes
    ----------
    solve : SolveResult
        The solver's result (its history without a resumed run's repeated row).
    name : str
        The estimator's class name.
    max_iter : int
        The estimator's ``max_iter``.
    rank : int or None
        The rank of the fit (:meth:`SpectralMonitor.summary`); ``None`` when not asked.
    noise_level : float or None
        The noise level in user units (NaN when unknown); ``None`` when not asked.
    noise_cut : bool
        Whether the monitor cut the network at the noise edge.
    unconverged : str
        What was left to converge when the fit stopped at ``max_iter`` (else ``""``).
    """

    solve: SolveResult
    name: str
    max_iter: int
    rank: int | None = None
    noise_level: float | None = None
    noise_cut: bool = False
    unconverged: str = ""

    def messages(self) -> list[tuple[str, type[Warning]]]:
        """``(message, category)`` of each warning this fit's stop calls for."""
        out = []
        if self.noise_cut and self.rank == 0:
            out.append((
                f"{self.name}: no direction of the data stands out of the noise "
                f"(estimated noise level {self.noise_level:.3g}); the fit is the zero "
                "matrix (rank_ = 0). The data may be pure noise, or too few entries are "
                "observed to tell their structure from it.",
                UserWarning,
            ))  # fmt: skip
        if self.solve.stop == "interrupted":
            out.append((
                f"{self.name}: fit interrupted at iteration {self.solve.n_iter}; keeping "
                "the state reached so far (see history_).",
                RuntimeWarning,
            ))  # fmt: skip
        elif self.solve.stop == "max_iter":
            out.append((
                f"{self.name} reached max_iter={self.max_iter} before converging: "
                f"{self.unconverged}",
                ConvergenceWarning,
            ))  # fmt: skip
        return out

    def warn(self, stacklevel: int) -> None:
        """Issue :meth:`messages`; ``stacklevel`` as for :func:`warnings.warn` at the call."""
        for message, category in self.messages():
            warnings.warn(message, category, stacklevel=stacklevel + 1)


def run_plan(
    plan: FitPlan,
    data: TrainingData,
    params: Params,
    *,
    scale: float,
    t_start: float,
    rows: LocalRows = LOCAL,
    monitor: SpectralMonitor | None = None,
    monitors: Mapping[str, HeldOut] | None = None,
    validation: HeldOut | None = None,
    callbacks: Sequence[Callable] = (),
    lr: float | None = None,
    steps: int | None = None,
    start_iter: int = 0,
    history: list[dict] | None = None,
    resumed: bool = False,
    reduce: Reduce | None = None,
    interrupt: Any = None,
    verbose: int | None = None,
    summary: bool = True,
) -> FitResult:
    """Run ``plan``'s descent on ``data`` from ``params`` (updated in place).

    Parameters
    ----------
    plan : FitPlan
    data : TrainingData
        Normalised by ``scale`` (:func:`deepmc._data.prepare`); a distributed fit's
        rows of it.
    params : dict of str to list of Tensor
    scale : float
        σ₁ of ``s·P_Ω(Y)``: losses, errors and the noise level are reported in user units.
    t_start : float
        ``time.perf_counter()`` origin of the history's ``seconds``.
    rows : LocalRows, default=LOCAL
        How the rows are held (a distributed fit: its ranks' split).
    monitor : SpectralMonitor, default=None
        The plan's monitor (:meth:`FitPlan.monitor`), when the caller needs it before
        the run (to resume its state); built here otherwise.
    monitors, validation
        Watched and early-stopping held-out sets, as for
        :func:`~deepmc._solver.gradient_descent`.
    callbacks : sequence of callable, default=()
        Called at each check after the monitor's callback.
    lr : float, default=None
        η to start from (a warm start or a resumed run); default ``plan.lr``.
    steps : int, default=None
        Steps in this run; default ``plan.max_iter``.
    start_iter : int, default=0
    history : list of dict, default=None
        Rows to continue (appended to in place).
    resumed : bool, default=False
        ``history`` ends with the check of ``start_iter`` from before a restart, which
        the run checks again without a change baseline: that repeated row is dropped.
    reduce, interrupt
        As for :func:`~deepmc._solver.gradient_descent` (a distributed fit's).
    verbose : int, default=None
        Default ``plan.verbose``.
    summary : bool, default=True
        Compute the fit's rank and noise level (:meth:`SpectralMonitor.summary`).

    Returns
    -------
    FitResult
    """
    if monitor is None:
        monitor = plan.monitor(data, scale=scale, rows=rows)
    history = [] if history is None else history
    n_before = len(history)
    result = gradient_descent(
        plan.network, data, params, lr=plan.lr if lr is None else lr,
        optimizer=plan.optimizer, weight_decay=plan.weight_decay,
        max_iter=plan.max_iter if steps is None else steps, tol=plan.tol,
        check_every=plan.check_every, start_iter=start_iter, history=history,
        monitors=monitors or {}, validation=validation, backoff=plan.backoff, scale=scale,
        t_start=t_start, name=plan.name, verbose=plan.verbose if verbose is None else verbose,
        reduce=reduce, stop_rule=monitor.stop_rule, callbacks=[monitor.callback, *callbacks],
        interrupt=interrupt,
    )  # fmt: skip
    if resumed and n_before and len(history) > n_before:
        del history[n_before]
    rank = noise = None
    if summary:
        rank, noise = monitor.summary(result.params, float(history[-1]["residual"]))
        noise *= scale
    what = ""
    if result.stop == "max_iter":
        what = monitor.unconverged(history[-1], plan.check_every, scale)
    return FitResult(result, plan.name, plan.max_iter, rank, noise, monitor.noise is not None, what)


@dataclass(frozen=True)
class FittedState:
    """What an estimator's fitted attributes are written from.

    Attributes
    ----------
    network : Network
        The whole-matrix network record (its ``fitted_attributes`` name the weights).
    params : dict of str to list of ndarray
        The parameter groups of the whole matrix, normalised units.
    scale : float
    shape : tuple of int
    device : str
    init_scale : float
    sampling_scale : float
    lr : float
    n_iter : int
    best_iteration : int
    history : pandas.DataFrame
    rank : int or None
        Overrides the network's ``rank_`` when given (the rank the fit kept).
    noise_level : float or None
        ``noise_level_`` when given.
    """

    network: Network
    params: dict[str, list[np.ndarray]]
    scale: float
    shape: tuple[int, int]
    device: str
    init_scale: float
    sampling_scale: float
    lr: float
    n_iter: int
    best_iteration: int
    history: pd.DataFrame
    rank: int | None = None
    noise_level: float | None = None

"""Shared estimator base: validation, scaling, learning rates, the GD loop, prediction.

The pipeline of :meth:`_BaseDeepMC.fit` (STYLE.md):

1. validate the input into sorted :class:`~deepmc.Observations`;
2. estimate σ₁ of ``s·P_Ω(Y)`` (``s = m·n/N``) and normalise the observations by it,
   so that ``init_scale`` and the learning rates are scale-free;
3. resolve ``lr="auto"`` and the other defaults into private / fitted attributes;
4. initialise the network (subclass ``_initialize``);
5. run gradient descent (``_solve``), the loss and gradients coming from the subclass's
   pure ``_residual_and_grads``;
6. store the weights as NumPy arrays; ``transform`` writes observed entries back.
"""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from abc import abstractmethod
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import make_generator, resolve_device, resolve_dtype, synchronize
from ._ops import GradientDescent, ObservedPattern, PatternKernels, intra_op_threads
from ._validation import Observations, check_indices, check_observations
from .init import top_singular

__all__ = ["DivergenceError"]

#: A checked loss whose relative residual exceeds this counts as divergence.
_DIVERGENCE_RESIDUAL = 1e2
#: How many times ``lr="auto"`` halves the step before giving up.
_MAX_BACKOFFS = 8
#: Observations per chunk when predicting on the host.
_PREDICT_CHUNK = 1 << 18


class DivergenceError(FloatingPointError):
    """Raised when gradient descent diverges (non-finite or exploding loss)."""


@dataclass
class _Problem:
    """The normalised observations on the fitting device."""

    shape: tuple[int, int]
    rows: torch.Tensor
    cols: torch.Tensor
    y: torch.Tensor  # observed values / scale, in observation order
    sampling_scale: float  # s = m n / N
    pattern: ObservedPattern
    device: torch.device
    dtype: torch.dtype
    y_norm: float  # ‖P_Ω(Y)‖_F / scale
    extra: dict = field(default_factory=dict)

    def y_dense(self, like: torch.Tensor) -> torch.Tensor:
        """The observations in the layout of a residual ``like`` (vector or dense)."""
        return self.y if like.shape == self.y.shape else self.extra["Y"]


@dataclass
class _EvalSet:
    kernels: PatternKernels  # of the held-out pattern (rows sorted), fitting device and dtype
    values: torch.Tensor  # user units, float64 on the fitting device, in the pattern's order
    norm: float  # ‖values‖, at least the smallest positive float


class _Interrupt:
    """SIGINT → a flag read between GD steps (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: the user wants out now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _BaseDeepMC(TransformerMixin, BaseEstimator):
    """Common parameters and machinery of the deep matrix completion estimators."""

    _parameter_constraints: dict = {
        "depth": [Interval(Integral, 2, None, closed="left")],
        "init_scale": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "lr": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"gd", "momentum", "adam"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "check_every": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [None, str, type, np.dtype, torch.dtype],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        depth: int = 3,
        init_scale: float | str = "auto",
        lr: float | str = "auto",
        optimizer: str = "gd",
        weight_decay: float = 0.0,
        max_iter: int = 20_000,
        tol: float = 1e-6,
        check_every: int = 25,
        device: str = "auto",
        dtype: Any = None,
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
    ) -> None:
        self.depth = depth
        self.init_scale = init_scale
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.tol = tol
        self.check_every = check_every
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change

    # ------------------------------------------------------------------ subclass hooks
    @abstractmethod
    def _check_shape_params(self, shape: tuple[int, int]) -> None:
        """Validate parameters that depend on the matrix shape (before any work)."""

    @abstractmethod
    def _n_singular(self) -> int:
        """How many singular triplets of ``s·P_Ω(Y)`` the initialisation needs (≥ 1)."""

    @abstractmethod
    def _initialize(
        self,
        problem: _Problem,
        u: np.ndarray,
        v: np.ndarray,
        generator: torch.Generator,
        init_scale: float,
    ) -> dict[str, list[torch.Tensor]]:
        """Initial parameters, as named groups (``"cores"`` use η, ``"factors"`` γη)."""

    @abstractmethod
    def _residual_and_grads(
        self, problem: _Problem, groups: dict[str, list[torch.Tensor]]
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        """``P_Ω(X − Y)`` (normalised units) and the gradients of ``(s/2)‖P_Ω(X − Y)‖²``.

        The residual may be stored in any layout (a vector on Ω, or a dense masked
        matrix); only its norm and differences are used: the loss is computed from it
        at the checks, not on every step.
        """

    @abstractmethod
    def _store(self, groups: dict[str, list[np.ndarray]]) -> None:
        """Write the trained parameters (NumPy) to the fitted attributes."""

    @abstractmethod
    def _stored_groups(self) -> dict[str, list[np.ndarray]]:
        """Inverse of :meth:`_store`, for ``warm_start``."""

    @abstractmethod
    def _factor_tensors(
        self, groups: dict[str, list[torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` with ``X = left @ right.T`` (normalised units) for ``groups``."""

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(left, right)`` with ``X̂ = left @ right.T`` in user units, from the fit."""
        groups = {k: [torch.tensor(a) for a in v] for k, v in self._stored_groups().items()}
        with torch.no_grad():
            left, right = self._factor_tensors(groups)
        return self.scale_ * left.numpy(), right.numpy()

    def _factor_lr_ratio(self) -> float:
        return 1.0

    def _step_work(self, problem: _Problem) -> int:
        """Multiply-adds of one step (order of magnitude; picks the CPU thread count)."""
        m, n = problem.shape
        return m * n * max(m, n)

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ validation
    def _validate_input(self, X: Any, mask: Any, *, reset: bool) -> Observations:
        obs = check_observations(X, mask=mask)
        if isinstance(X, tuple):
            if reset:
                self.n_features_in_ = obs.shape[1]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
        else:
            validate_data(self, X, skip_check_array=True, reset=reset)
        return obs

    def _resolve_learning_rate(self) -> float:
        """η in normalised units (σ₁ = 1): 1/L for GD, scaled for the other optimizers.

        Gradient descent near a solution is stable for η < 2/(L σ₁^{2−2/L}) (DESIGN.md
        §3); with the data normalised to σ₁ = 1 that is 2/L and ``lr="auto"`` takes half
        of it. Heavy-ball momentum (β = 0.9) multiplies the step by 1/(1 − β); Adam's
        step is per coordinate and is set to 1e-2 of the unit scale.
        """
        if self.lr != "auto":
            return float(self.lr)
        base = 1.0 / self.depth
        return {"gd": base, "momentum": 0.1 * base, "adam": 1e-2}[self.optimizer]

    def _resolve_init_scale(self) -> float:
        """ε relative to σ₁^{1/L}: ``tol^{1/L}`` clipped to [1e-3, 0.1] when ``"auto"``.

        The attainable recovery error is roughly ε^L while the initial plateau lasts
        about 1/(η ε^{L−2}) steps (DESIGN.md §3), so ε = tol^{1/L} is the largest
        initialisation whose error floor does not exceed the requested tolerance.
        """
        if self.init_scale != "auto":
            return float(self.init_scale)
        return float(min(0.1, max(1e-3, max(self.tol, 1e-12) ** (1.0 / self.depth))))

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        mask: Any = None,
        eval_set: Any = None,
        validation_set: Any = None,
    ):
        """Fit the network to the observed entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (m, n), DataFrame, sparse matrix or triplets
            The partially observed matrix: ``np.nan`` marks missing entries of a dense
            array or DataFrame; the stored entries of a sparse matrix are the observed
            ones (explicit zeros included); ``(rows, cols, values[, shape])`` triplets.
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool of shape (m, n), default=None
            Explicit observation mask for a dense ``X`` (``True`` = observed).
        eval_set : same formats as ``X``, default=None
            Held-out entries with their true values. Their relative error and RMSE are
            recorded in ``history_`` at every check; they never influence the fit.
        validation_set : same formats as ``X``, default=None
            Entries held out by the caller for early stopping, used instead of the random
            ``validation_fraction`` split (with ``early_stopping=True`` or not): the fit
            stops when their RMSE has not improved for ``n_iter_no_change`` checks and
            keeps the best state. For callers that must hold the validation entries out
            of their own preprocessing too (see :class:`deepmc.RatingsCompletion`).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        obs = self._validate_input(X, mask, reset=True)
        held_out = {}
        for name, value in (("eval_set", eval_set), ("validation_set", validation_set)):
            if value is not None:
                try:
                    held_out[name] = check_observations(value)
                except (ValueError, TypeError) as exc:  # its messages name "X"
                    raise type(exc)(f"{name}: {exc}") from exc
                if held_out[name].shape != obs.shape:
                    raise ValueError(
                        f"{name}: expected a matrix of shape {obs.shape} (that of X), got "
                        f"{held_out[name].shape}."
                    )
        self._fit(obs, held_out.get("eval_set"), held_out.get("validation_set"))
        return self

    def _split_validation(
        self, obs: Observations, rng: np.random.RandomState
    ) -> tuple[Observations, Observations]:
        """Carve ``validation_fraction`` of the observations out for early stopping."""
        N = obs.n_observed
        n_val = round(self.validation_fraction * N)
        if n_val < 1 or n_val >= N:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves {N - n_val} training "
                f"and {n_val} validation entries out of {N}; both must be at least 1."
            )
        is_val = np.zeros(N, dtype=bool)
        is_val[rng.permutation(N)[:n_val]] = True

        def part(sel: np.ndarray) -> Observations:
            return Observations(obs.rows[sel], obs.cols[sel], obs.values[sel], obs.shape)

        return part(~is_val), part(is_val)

    def _fit(
        self,
        obs: Observations,
        eval_obs: Observations | None,
        val_obs: Observations | None = None,
    ) -> None:
        if obs.n_observed == 0:
            raise ValueError(
                f"X: no observed entries in a matrix of shape {obs.shape}; at least one "
                "finite entry is needed."
            )
        self._check_shape_params(obs.shape)
        t_start = time.perf_counter()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, obs.values.dtype)
        rng = check_random_state(self.random_state)
        generator = make_generator(rng)
        if val_obs is None and self.early_stopping:
            obs, val_obs = self._split_validation(obs, rng)
        m, n = obs.shape
        s = m * n / obs.n_observed
        warm = (
            self.warm_start
            and hasattr(self, "n_iter_")
            and getattr(self, "shape_", None) == obs.shape
        )
        if warm:
            scale = self.scale_
            u = v = None
        else:
            u, sig, v = top_singular(
                obs.rows,
                obs.cols,
                s * obs.values.astype(np.float64),
                obs.shape,
                self._n_singular(),
                generator=generator,
            )
            scale = float(sig[0]) if sig[0] > 0 else 1.0

        # in torch: a NumPy BLAS call here would leave its threads spinning into the
        # first training steps (see deepmc.init.top_singular)
        y_norm = float(torch.linalg.vector_norm(torch.as_tensor(obs.values, dtype=torch.float64)))
        rows_t = torch.as_tensor(obs.rows, device=device)
        cols_t = torch.as_tensor(obs.cols, device=device)
        y = torch.as_tensor(obs.values.astype(np.float64) / scale, dtype=dtype, device=device)
        problem = _Problem(
            shape=obs.shape,
            rows=rows_t,
            cols=cols_t,
            y=y,
            sampling_scale=s,
            pattern=ObservedPattern.from_coo(rows_t, cols_t, obs.shape),
            device=device,
            dtype=dtype,
            y_norm=y_norm / scale,
        )
        lr = self._resolve_learning_rate()
        init_scale = self._resolve_init_scale()
        if warm:
            groups = {
                k: [torch.as_tensor(a, dtype=dtype, device=device) for a in arrs]
                for k, arrs in self._stored_groups().items()
            }
            start_iter = self.n_iter_
            history = self.history_.to_dict("records")
            if self.lr == "auto":
                lr = self.lr_
        else:
            groups = self._initialize(problem, u, v, generator, init_scale)
            start_iter = 0
            history = []

        def to_eval(o: Observations | None) -> _EvalSet | None:
            if o is None:
                return None
            pattern = ObservedPattern.from_coo(
                torch.as_tensor(o.rows, device=device),
                torch.as_tensor(o.cols, device=device),
                o.shape,
            )
            values = torch.as_tensor(o.values, dtype=torch.float64, device=device)
            norm = max(float(torch.linalg.vector_norm(values)), np.finfo(float).tiny)
            return _EvalSet(pattern.kernels(dtype), values, norm)

        t_monitor = time.perf_counter()
        monitors = {"eval": to_eval(eval_obs), "val": to_eval(val_obs)}
        # eval_set only watches the fit: its set-up is not billed to the fit's seconds
        if eval_obs is not None:
            t_start += time.perf_counter() - t_monitor
        self.scale_ = scale
        self.shape_ = obs.shape
        self.device_ = str(device)
        self.init_scale_ = init_scale
        self.sampling_scale_ = s
        result = self._solve(
            problem,
            groups,
            lr,
            start_iter,
            history,
            monitors,
            t_start,
        )
        self.lr_ = result["lr"]
        self.n_iter_ = result["n_iter"]
        self.best_iteration_ = result["best_iteration"]
        self.history_ = pd.DataFrame.from_records(result["history"])
        self._store(
            {k: [t.detach().cpu().numpy().copy() for t in v] for k, v in result["groups"].items()}
        )
        if result["stop"] == "max_iter":
            last = result["history"][-1]
            warnings.warn(
                f"{type(self).__name__} reached max_iter={self.max_iter} before the fitted "
                f"values settled (relative change {last['change']:.3g} per {self.check_every} "
                f"steps > tol={self.tol:g}; training residual {last['residual']:.3g}). "
                "Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ solver
    def _make_optimizer(
        self, groups: dict[str, list[torch.Tensor]], lr: float
    ) -> torch.optim.Optimizer | GradientDescent:
        gamma = self._factor_lr_ratio()
        param_groups = [
            {"params": params, "lr": lr * (gamma if name == "factors" else 1.0), "name": name}
            for name, params in groups.items()
        ]
        wd = float(self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd)
        if self.optimizer == "gd":  # same arithmetic as SGD(momentum=0), less overhead
            return GradientDescent(param_groups, weight_decay=wd)
        return torch.optim.SGD(param_groups, lr=lr, momentum=0.9, weight_decay=wd)

    def _evaluate(self, groups: dict[str, list[torch.Tensor]], ev: _EvalSet) -> tuple[float, float]:
        """Relative error and RMSE (user units) of the current network on ``ev``.

        The predictions are the sampled product of the network's factors on ``ev``'s
        pattern (:class:`~deepmc._ops.PatternKernels`), so evaluating on a large held-out
        set costs about one training step, and no ``K × width`` gather is formed. The
        arithmetic stays in torch on the fitting device: nothing but two numbers comes
        back, and NumPy's BLAS threads, which spin on after each call, are never woken
        to compete with torch's (on 2 cores that slowed every training step 2.5×).
        """
        pred = ev.kernels.sampled(*self._factor_tensors(groups))
        diff = pred.to(torch.float64).mul_(self.scale_).sub_(ev.values)
        err = float(torch.linalg.vector_norm(diff))
        return err / ev.norm, err / math.sqrt(diff.shape[0])

    def _solve(
        self,
        problem: _Problem,
        groups: dict[str, list[torch.Tensor]],
        lr: float,
        start_iter: int,
        history: list[dict],
        monitors: dict[str, _EvalSet | None],
        t_start: float,
    ) -> dict[str, Any]:
        """Gradient descent with a check every ``check_every`` steps.

        At each check the loss, the relative training residual
        ``‖P_Ω(X − Y)‖_F / ‖P_Ω(Y)‖_F``, the relative change of the fitted values on Ω
        since the previous check ``‖X_Ω(t) − X_Ω(t − check_every)‖_F / ‖X_Ω(t)‖_F`` and
        any evaluation errors are recorded. The fit stops when that change is ≤ ``tol``
        (which covers an exact fit, the ε^L floor of small initialisation and noisy
        data), on early stopping, at ``max_iter``, or on Ctrl-C (at the end of the
        current step). A non-finite loss or a residual above 100 is divergence: with
        ``lr="auto"`` the step is halved from the last checked state (at most 8 times),
        otherwise :class:`DivergenceError` is raised. Between checks nothing is read
        back from the device.

        ``seconds`` in the history is the wall clock since the start of ``fit``
        (initialisation included) less the time spent evaluating ``eval_set``, which
        only watches the fit; that time is recorded apart as ``eval_seconds``.
        """
        params = [p for ps in groups.values() for p in ps]
        optimizer = self._make_optimizer(groups, lr)
        snapshot: tuple[int, list[torch.Tensor], torch.Tensor | None] | None = None
        best: tuple[float, int, list[torch.Tensor]] | None = None
        since_best = 0
        backoffs = 0
        stop = "max_iter"
        it = start_iter
        prev_residual: torch.Tensor | None = None
        restored = False  # parameters just reset to the last checked state
        event = ""
        name = type(self).__name__
        progress = None
        end_iter = start_iter + self.max_iter  # max_iter steps per call (warm_start too)
        if self.verbose:
            from tqdm.auto import tqdm

            progress = tqdm(total=end_iter, initial=start_iter, desc=f"[{name}]")
        tiny = np.finfo(float).tiny
        eval_seconds = 0.0
        try:
            threads = intra_op_threads(problem.device, self._step_work(problem))
            with _Interrupt() as interrupt, threads:
                while True:
                    check = (it - start_iter) % self.check_every == 0 or it >= end_iter
                    resid, grads = self._residual_and_grads(problem, groups)
                    # a state restored after a back-off was checked already
                    if (check or interrupt.requested) and not restored:
                        synchronize(problem.device)
                        loss = 0.5 * problem.sampling_scale * float(torch.sum(resid * resid))
                        residual = math.sqrt(max(2.0 * loss / problem.sampling_scale, 0.0))
                        residual /= max(problem.y_norm, tiny)
                        if not math.isfinite(loss) or residual > _DIVERGENCE_RESIDUAL:
                            if self.lr != "auto" or snapshot is None or backoffs >= _MAX_BACKOFFS:
                                advice = (
                                    "Use a smaller lr, or lr='auto'."
                                    if self.lr != "auto"
                                    else f"The step was halved {backoffs} time(s) without "
                                    "stabilising; pass a smaller explicit lr."
                                )
                                raise DivergenceError(
                                    f"{name}: gradient descent diverged at iteration {it} "
                                    f"(loss {loss * self.scale_**2:.3g}, relative residual "
                                    f"{residual:.3g}) with lr={self.lr!r} (normalised step "
                                    f"{lr:.3g}). {advice}"
                                )
                            backoffs += 1
                            lr *= 0.5
                            diverged_at = it
                            it, saved, prev_residual = snapshot
                            restored = True
                            with torch.no_grad():
                                for p, q in zip(params, saved, strict=False):
                                    p.copy_(q)
                            optimizer = self._make_optimizer(groups, lr)
                            event += (
                                f"{'; ' if event else ''}diverged at iteration {diverged_at}, "
                                f"lr halved to {lr:.3g} from iteration {it}"
                            )
                            continue
                        fitted_norm = float(
                            torch.linalg.vector_norm(resid + problem.y_dense(resid))
                        )
                        change = (
                            math.inf
                            if prev_residual is None
                            else float(torch.linalg.vector_norm(resid - prev_residual))
                            / max(fitted_norm, tiny)
                        )
                        row = {
                            "iteration": it,
                            "seconds": time.perf_counter() - t_start - eval_seconds,
                            "loss": loss * self.scale_**2,
                            "residual": residual,
                            "change": change,
                            "lr": lr,
                        }
                        for key, ev in monitors.items():
                            if ev is not None:
                                t_eval = time.perf_counter()
                                row[f"{key}_error"], row[f"{key}_rmse"] = self._evaluate(groups, ev)
                                if key == "eval":
                                    eval_seconds += time.perf_counter() - t_eval
                        if monitors.get("eval") is not None:
                            row["eval_seconds"] = eval_seconds
                        row["event"] = event
                        event = ""
                        history.append(row)
                        prev_residual = resid.detach().clone()
                        snapshot = (it, [p.detach().clone() for p in params], prev_residual)
                        if progress is not None:
                            progress.set_postfix(
                                loss=f"{row['loss']:.3e}", residual=f"{residual:.2e}"
                            )
                        if monitors.get("val") is not None:
                            if best is None or row["val_rmse"] < best[0]:
                                best = (row["val_rmse"], it, snapshot[1])
                                since_best = 0
                            else:
                                since_best += 1
                        if interrupt.requested:
                            stop = "interrupted"
                            warnings.warn(
                                f"{name}: fit interrupted at iteration {it}; keeping the "
                                "state reached so far (see history_).",
                                RuntimeWarning,
                                stacklevel=4,
                            )
                        elif change <= self.tol:
                            stop = "converged"
                        elif best is not None and since_best >= self.n_iter_no_change:
                            stop = "early_stopping"
                        elif it >= end_iter:
                            stop = "max_iter"
                        else:
                            stop = ""
                        if stop:
                            history[-1]["event"] = (history[-1]["event"] + " " + stop).strip()
                            break
                    for p, g in zip(params, (g for gs in grads.values() for g in gs), strict=False):
                        p.grad = g
                    optimizer.step()
                    restored = False
                    it += 1
                    if progress is not None:
                        progress.update(1)
        finally:
            if progress is not None:
                progress.close()
        best_iteration = it
        if best is not None and stop != "interrupted":
            best_iteration = best[1]
            with torch.no_grad():
                for p, q in zip(params, best[2], strict=False):
                    p.copy_(q)
        for p in params:
            p.grad = None
        return {
            "groups": groups,
            "n_iter": it,
            "best_iteration": best_iteration,
            "lr": lr,
            "stop": stop,
            "history": history,
        }

    # ------------------------------------------------------------------ prediction
    def predict(self, rows: Any, cols: Any = None) -> np.ndarray:
        """Predicted entries ``X̂[rows[k], cols[k]]``, without forming ``X̂``.

        Parameters
        ----------
        rows, cols : array-like of int of shape (K,)
            Indices into the fitted ``m × n`` matrix. Both are required; ``cols`` has a
            default only so that a call with a feature matrix (scikit-learn style) gets
            a clear error — use :meth:`transform` for the completed matrix.

        Returns
        -------
        ndarray of shape (K,)

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        TypeError
            If ``cols`` is missing.
        ValueError
            If the indices are not 1-D integers of equal length inside ``shape_``.
        """
        check_is_fitted(self)
        if cols is None:
            raise TypeError(
                "predict: expected predict(rows, cols), two 1-D integer arrays of entry "
                f"indices into the fitted {self.shape_[0]}×{self.shape_[1]} matrix, got only "
                f"one argument (of shape {np.shape(rows)}). For the completed matrix use "
                "transform(X)."
            )
        rows, cols = check_indices(rows, cols, self.shape_, name="predict")
        left, right = self._factors()
        out = np.empty(rows.shape[0], dtype=np.result_type(left, right))
        for start in range(0, rows.shape[0], _PREDICT_CHUNK):
            sl = slice(start, start + _PREDICT_CHUNK)
            out[sl] = np.einsum("ij,ij->i", left[rows[sl]], right[cols[sl]])
        return out

    def _complete(self) -> np.ndarray:
        left, right = self._factors()
        return left @ right.T

    def transform(self, X: Any, *, mask: Any = None) -> np.ndarray:
        """The completed matrix, with the observed entries of ``X`` kept exactly.

        Completion is transductive: ``X`` must have the fitted shape ``(m, n)``; its
        observed entries are copied into the network's prediction. New rows are not
        folded in — refit (``warm_start=True`` continues from the fitted weights).

        Parameters
        ----------
        X : array-like of shape (m, n), DataFrame, sparse matrix or triplets
        mask : array-like of bool of shape (m, n), default=None

        Returns
        -------
        ndarray of shape (m, n)
        """
        check_is_fitted(self)
        obs = self._validate_input(X, mask, reset=False)
        if obs.shape != self.shape_:
            raise ValueError(
                f"X: this {type(self).__name__} was fitted on a matrix of shape "
                f"{self.shape_}, got shape {obs.shape}. Completion is transductive: "
                "transform the fitted matrix, or fit on the new one."
            )
        out = self._complete().astype(obs.values.dtype, copy=False)
        out[obs.rows, obs.cols] = obs.values
        return out

    def fit_transform(self, X: Any, y: Any = None, *, mask: Any = None, eval_set: Any = None):
        """Fit to ``X`` and return the completed matrix (observed entries kept).

        Parameters
        ----------
        X, mask, eval_set
            As in :meth:`fit`.
        y : None
            Ignored.

        Returns
        -------
        ndarray of shape (m, n)
        """
        return self.fit(X, mask=mask, eval_set=eval_set).transform(X, mask=mask)

    def score(self, X: Any, y: Any = None, *, mask: Any = None) -> float:
        """Negative relative error on the observed entries of ``X`` (higher is better).

        ``-‖X̂_Ω − X_Ω‖_F / ‖X_Ω‖_F`` where Ω are the observed entries of ``X``, typically a
        held-out set.

        Parameters
        ----------
        X : array-like of shape (m, n), DataFrame, sparse matrix or triplets
        y : None
            Ignored.
        mask : array-like of bool of shape (m, n), default=None

        Returns
        -------
        float
        """
        check_is_fitted(self)
        obs = self._validate_input(X, mask, reset=False)
        if obs.shape != self.shape_:
            raise ValueError(f"X: expected shape {self.shape_} (the fitted one), got {obs.shape}.")
        pred = self.predict(obs.rows, obs.cols)
        denom = max(float(np.linalg.norm(obs.values)), np.finfo(float).tiny)
        return -float(np.linalg.norm(pred - obs.values) / denom)

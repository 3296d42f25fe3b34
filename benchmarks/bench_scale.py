"""Speed and scale of the compressed network.

* :class:`CompressedStep` — one gradient step of the compressed network (loss, gradients
  and the GD update, as in the fit loop) on problems A, B and C, float32 and float64,
  CPU and CUDA: time per step, peak memory, and throughput.
* :class:`TimeToTarget` — wall clock of a default ``fit`` (prune and polish,
  ``init_scale="auto"``) including initialisation (σ₁, the pattern, the factors) to a
  relative recovery error of 1e-4 on problem A, and 1e-6 and 1e-10 on problem B
  (``"B-1e-10"``), with the step budget that reaches it (``track_recovery_error``
  checks that it does).
* :class:`StepRatio` — per-step time of the full-width network over that of the
  compressed one on problem B, both measured in the same call.
* :class:`TargetRatio` — wall clock of the full-width ``fit`` to 1e-4 on problem A over
  that of the compressed one, both measured in the same call.
* :class:`EvalOverhead` — the training seconds of a compressed ``fit`` watched by an
  ``eval_set`` (``history_.seconds``, evaluation excluded) over the wall clock of the same
  fit unwatched: 1 when watching a fit leaves its steps alone.

Environment:

``DEEPMC_BENCH_LARGE=1``
    Also run problem C (138,493 × 26,744, 20,000,263 entries). Building it takes minutes
    and about 4 GB the first time (then it comes from the disk cache of
    ``benchmarks/common.py``); without the variable its ``setup`` skips it.
``DEEPMC_BENCH_PROFILE=fast``
    (CI smoke) problem A only.

``setup`` raises :class:`NotImplementedError` — asv's "skipped" — for CUDA without a
GPU and for the problems left out above.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

LARGE = os.environ.get("DEEPMC_BENCH_LARGE", "") not in ("", "0")
PROFILE = os.environ.get("DEEPMC_BENCH_PROFILE", "regular")

#: Steps at which the default fit (solver="auto", init_scale="auto", lr="auto",
#: γ="auto", random_state=0) first reaches the target error — measured with an
#: evaluation set every 25 steps, rounded up to a check. ``"B-1e-10"`` is problem B to
#: the tighter target.
TARGETS: dict[str, tuple[float, dict[str, int]]] = {
    "A": (1e-4, {"compressed": 225, "full": 375}),
    "B": (1e-6, {"compressed": 175}),
    "B-1e-10": (1e-10, {"compressed": 225}),
}


def _problem(name: str) -> Any:
    try:
        from .common import get_problem  # disk-cached (problem C takes minutes to build)
    except ImportError:  # pragma: no cover - the shared helpers are optional here
        from deepmc.datasets import make_problem

        return make_problem(name, random_state=0)
    return get_problem(name)


def _skip(problem: str, device: str = "cpu") -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
    problem = problem.split("-")[0]  # "B-1e-10": problem B to another target
    if problem == "C" and not LARGE:
        raise NotImplementedError("problem C runs only with DEEPMC_BENCH_LARGE=1")
    if PROFILE == "fast" and problem != "A":
        raise NotImplementedError("the fast profile runs problem A only")


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class _CompressedStepper:
    """One GD step of the compressed network, exactly as the fit loop takes it."""

    def __init__(self, problem: Any, device: str, dtype: Any) -> None:
        import torch

        from deepmc._device import intra_op_threads
        from deepmc._kernels import ObservedPattern
        from deepmc._solver import GradientDescent
        from deepmc.models._compressed_step import (
            CompressedWorkspace,
            compressed_residual_and_grads,
        )

        tr = problem.train
        m, n = tr.shape
        k = 2 * problem.rank
        rows = torch.as_tensor(tr.rows, device=device)
        cols = torch.as_tensor(tr.cols, device=device)
        scale = float(np.sqrt(np.sum(np.square(tr.values)))) or 1.0  # no BLAS threads
        self.y = torch.as_tensor(tr.values / scale, dtype=dtype, device=device)
        self.pattern = ObservedPattern.from_coo(rows, cols, (m, n))
        self.s = m * n / tr.n_observed
        g = torch.Generator().manual_seed(0)
        U = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))[0]
        V = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))[0]
        self.U = U.to(device=device, dtype=dtype)
        self.V = V.to(device=device, dtype=dtype)
        self.cores = [0.1 * torch.eye(k, dtype=dtype, device=device) for _ in range(problem.depth)]
        self.params = [*self.cores, self.U, self.V]
        L = problem.depth
        self.opt = GradientDescent(
            [{"params": self.cores, "lr": 1.0 / L}, {"params": [self.U, self.V], "lr": 0.2}]
        )
        self._residual_and_grads = compressed_residual_and_grads
        self.workspace = CompressedWorkspace(self.pattern.kernels(dtype), k, L)
        self.N = tr.n_observed
        # the intra-op thread count of the fit loop: ``with stepper.threads(): ...``
        self.threads = lambda: intra_op_threads(torch.device(device), self.N * k * L)

    def step(self) -> None:
        _resid, gU, gV, gcores = self._residual_and_grads(
            self.pattern, self.y, self.s, self.U, self.V, self.cores, workspace=self.workspace
        )
        self.opt.step([gcores, [gU, gV]])  # as the fit loop passes them


class _FullStepper:
    """One GD step of the full-width network (dense m × n residual, O(L·d³))."""

    def __init__(self, problem: Any, device: str, dtype: Any) -> None:
        import torch

        from deepmc._device import intra_op_threads
        from deepmc._solver import GradientDescent
        from deepmc.init import epsilon_orthogonal
        from deepmc.models._layered_net import full_residual_and_grads

        tr = problem.train
        m, n = tr.shape
        d = max(m, n)
        scale = float(np.sqrt(np.sum(np.square(tr.values)))) or 1.0  # no BLAS threads
        Y = torch.zeros(m, n, dtype=dtype, device=device)
        M = torch.zeros(m, n, dtype=dtype, device=device)
        Y[tr.rows, tr.cols] = torch.as_tensor(tr.values / scale, dtype=dtype, device=device)
        M[tr.rows, tr.cols] = 1.0
        self.Y, self.M, self.s = Y, M, m * n / tr.n_observed
        g = torch.Generator().manual_seed(0)
        shapes = [(d, n)] + [(d, d)] * (problem.depth - 2) + [(m, d)]
        self.layers = [
            epsilon_orthogonal(r, c, scale=0.1, generator=g, dtype=dtype, device=device)
            for r, c in shapes
        ]
        self.opt = GradientDescent([{"params": self.layers, "lr": 1.0 / problem.depth}])
        self._residual_and_grads = full_residual_and_grads
        self.threads = lambda: intra_op_threads(torch.device(device), m * n * d)

    def step(self) -> None:
        _resid, grads = self._residual_and_grads(self.layers, self.Y, self.M, self.s)
        self.opt.step([grads])


class CompressedStep:
    """Time, memory and throughput of one compressed GD step."""

    param_names = ["problem", "device", "dtype"]
    params = [["A", "B", "C"], ["cpu", "cuda"], ["float32", "float64"]]
    number = 0  # asv picks the steps per sample (≥ 10 ms): single 0.1 ms steps are jitter
    repeat = (3, 20, 60.0)
    min_run_count = 3
    warmup_time = 0
    timeout = 3600

    def setup(self, problem: str, device: str, dtype: str) -> None:
        import torch

        _skip(problem, device)
        self.device = device
        self.stepper = _CompressedStepper(_problem(problem), device, getattr(torch, dtype))
        self._threads = self.stepper.threads()
        self._threads.__enter__()
        self.stepper.step()  # builds the cached kernels of Ω
        _sync(device)

    def teardown(self, problem: str, device: str, dtype: str) -> None:
        # asv calls teardown after a skipped setup too: nothing was entered then
        threads = self.__dict__.pop("_threads", None)
        if threads is not None:
            threads.__exit__(None, None, None)

    def time_step(self, problem: str, device: str, dtype: str) -> None:
        self.stepper.step()
        _sync(self.device)

    def peakmem_step(self, problem: str, device: str, dtype: str) -> None:
        # peak RSS of the process: the problem, Ω's structures and a step
        self.stepper.step()

    def track_observations_per_second(self, problem: str, device: str, dtype: str) -> float:
        n_steps = 3 if problem == "C" else 50
        _sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n_steps):
            self.stepper.step()
        _sync(self.device)
        return n_steps * self.stepper.N / (time.perf_counter() - t0)

    track_observations_per_second.unit = "observations/s"


class CompressedStepGPUMemory:
    """Peak CUDA memory of one compressed gradient step (skipped without a GPU)."""

    param_names = ["problem", "dtype"]
    params = [["A", "B", "C"], ["float32", "float64"]]
    number = 1
    timeout = 3600

    def setup(self, problem: str, dtype: str) -> None:
        CompressedStep.setup(self, problem, "cuda", dtype)  # type: ignore[arg-type]

    def teardown(self, problem: str, dtype: str) -> None:
        CompressedStep.teardown(self, problem, "cuda", dtype)  # type: ignore[arg-type]

    def track_gpu_peak_bytes(self, problem: str, dtype: str) -> int:
        import torch

        torch.cuda.reset_peak_memory_stats()
        self.stepper.step()
        _sync("cuda")
        return int(torch.cuda.max_memory_allocated())

    track_gpu_peak_bytes.unit = "bytes"


def _fit_to_target(
    problem: Any, method: str, steps: int, device: str, *, watched: bool = False
) -> Any:
    """The default ``fit`` of ``method`` for ``steps`` steps (``tol=0``: no early stop).

    Everything else is the estimator's default (``solver="auto"``, ``init_scale="auto"``).

    ``watched`` passes the problem's held-out entries as ``eval_set``.
    """
    from sklearn.exceptions import ConvergenceWarning

    from deepmc.models import make_estimator

    params = {
        "depth": problem.depth,
        "tol": 0.0,
        "max_iter": steps,
        "device": device,
        "random_state": 0,
    }
    est = make_estimator(method, rank=problem.rank, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train, eval_set=problem.eval_set() if watched else None)
    _sync(device)
    return est


class TimeToTarget:
    """Wall clock of a default ``fit``, initialisation included, to the target error."""

    param_names = ["method", "problem", "device"]
    params = [["compressed", "full"], ["A", "B", "B-1e-10"], ["cpu", "cuda"]]
    number = 1
    repeat = (1, 5, 120.0)
    warmup_time = 0
    timeout = 1800

    def setup(self, method: str, problem: str, device: str) -> None:
        _skip(problem, device)
        self.target, steps = TARGETS[problem]
        if method not in steps:
            raise NotImplementedError(
                f"{method} on {problem}: steps to {self.target:g} not measured (full width "
                "takes about 0.2 s a step on a 2-core CPU, ~30 min to converge)"
            )
        self.problem = _problem(problem.split("-")[0])
        self.steps = steps[method]
        self.method = method
        self.device = device
        self._fit()  # first-call costs of the process (lazy imports) are not the fit's

    def _fit(self) -> Any:
        return _fit_to_target(self.problem, self.method, self.steps, self.device)

    def time_fit_to_target(self, method: str, problem: str, device: str) -> None:
        self._fit()

    def track_recovery_error(self, method: str, problem: str, device: str) -> float:
        return float(self.problem.recovery_error(self._fit()))

    track_recovery_error.unit = "relative error"

    def track_steps(self, method: str, problem: str, device: str) -> int:
        return self.steps

    track_steps.unit = "iterations"


class TargetRatio:
    """Full-width over compressed wall clock to the target error on A, in one call."""

    param_names = ["problem", "device"]
    params = [["A"], ["cpu", "cuda"]]
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0
    timeout = 1800

    def setup(self, problem: str, device: str) -> None:
        _skip(problem, device)
        self.problem = _problem(problem)
        self.target, self.steps = TARGETS[problem]
        self.device = device
        for method in ("full", "compressed"):  # first-call costs are not the fits'
            _fit_to_target(self.problem, method, 10, device)

    def track_full_over_compressed(self, problem: str, device: str) -> float:
        methods = ("full", "compressed")
        for method in methods:  # each fit does reach the target with its step budget
            est = _fit_to_target(self.problem, method, self.steps[method], self.device)
            error = self.problem.recovery_error(est)
            if not error <= self.target:
                raise RuntimeError(f"{method} reached {error:.3g}, not {self.target:g}")
        best = dict.fromkeys(methods, float("inf"))
        for _ in range(3):  # alternated, best of three each: load drifts hit both alike
            for method in methods:
                t0 = time.perf_counter()
                _fit_to_target(self.problem, method, self.steps[method], self.device)
                best[method] = min(best[method], time.perf_counter() - t0)
        return best["full"] / best["compressed"]

    track_full_over_compressed.unit = "ratio"


class StepRatio:
    """Per-step time full-width / compressed on problem B (CPU, float64), in one call."""

    param_names = ["problem"]
    params = [["B"]]
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0
    timeout = 1800

    def setup(self, problem: str) -> None:
        import torch

        _skip(problem)
        p = _problem(problem)
        self.full = _FullStepper(p, "cpu", torch.float64)
        self.comp = _CompressedStepper(p, "cpu", torch.float64)
        self.full.step()
        self.comp.step()

    @staticmethod
    def _per_step(stepper: Any, n_steps: int) -> float:
        best = float("inf")
        with stepper.threads():  # each network with the thread count its fit uses
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(n_steps):
                    stepper.step()
                best = min(best, (time.perf_counter() - t0) / n_steps)
        return best

    def track_full_over_compressed(self, problem: str) -> float:
        return self._per_step(self.full, 3) / self._per_step(self.comp, 100)

    track_full_over_compressed.unit = "ratio"

    def track_full_step_seconds(self, problem: str) -> float:
        return self._per_step(self.full, 3)

    track_full_step_seconds.unit = "seconds"

    def track_compressed_step_seconds(self, problem: str) -> float:
        return self._per_step(self.comp, 100)

    track_compressed_step_seconds.unit = "seconds"


class EvalOverhead:
    """Do the evaluations of ``eval_set`` slow down the training steps between them?"""

    param_names = ["problem", "device"]
    params = [["A", "B"], ["cpu", "cuda"]]
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0
    timeout = 1800

    def setup(self, problem: str, device: str) -> None:
        _skip(problem, device)
        self.problem = _problem(problem)
        self.device = device
        _fit_to_target(self.problem, "compressed", 10, device, watched=True)  # first calls

    def track_watched_over_unwatched(self, problem: str, device: str) -> float:
        steps = 2000 if problem == "A" else 1000
        best = {True: float("inf"), False: float("inf")}
        for _ in range(3):  # alternated, best of three each
            for watched in (False, True):
                t0 = time.perf_counter()
                est = _fit_to_target(
                    self.problem, "compressed", steps, self.device, watched=watched
                )
                wall = time.perf_counter() - t0
                train = float(est.history_["seconds"].iloc[-1]) if watched else wall
                best[watched] = min(best[watched], train)
        return best[True] / best[False]

    track_watched_over_unwatched.unit = "ratio"

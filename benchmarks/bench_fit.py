"""Fitting the three networks: time, memory, recovery error and iterations.

Parameterised over method × device × problem (``common.METHODS``, ``DEVICES``,
``PROBLEMS``). ``setup`` raises :class:`NotImplementedError` — asv's "skipped" — for
CUDA without a GPU, for full width on problem C (infeasible), narrow on problem C (not
run: the compressed network's kernels) and for problems outside the profile.
``max_iter`` and ``random_state=0`` are fixed; ratios between methods belong to
``deepmc compare``, which measures them in one run.
"""

from __future__ import annotations

from typing import Any

from .common import (
    DEVICES,
    MAX_ITER,
    METHODS,
    PROBLEMS,
    PROFILE,
    fit,
    get_problem,
    make_estimator,
    skip_reason,
    synchronize,
)


class Fit:
    """``fit`` of each network on a reference problem."""

    param_names = ["method", "device", "problem"]
    params = [METHODS, DEVICES, PROBLEMS]
    processes = 1
    number = 1
    repeat = (1, 3, 60.0)
    warmup_time = 0
    timeout = 3600

    def setup(self, method: str, device: str, problem: str) -> None:
        reason = skip_reason(method, device, problem)
        if reason is not None:
            raise NotImplementedError(reason)
        self.problem = get_problem(problem)
        self.max_iter = MAX_ITER[PROFILE][problem]
        self.device = device
        self.method = method

    def _estimator(self) -> Any:
        return make_estimator(self.method, self.device, self.problem, self.max_iter)

    def time_fit(self, method: str, device: str, problem: str) -> None:
        fit(self._estimator(), self.problem)
        synchronize(device)

    def peakmem_fit(self, method: str, device: str, problem: str) -> None:
        fit(self._estimator(), self.problem)

    def track_recovery_error(self, method: str, device: str, problem: str) -> float:
        est = fit(self._estimator(), self.problem)
        return self.problem.recovery_error(est)

    track_recovery_error.unit = "relative error"

    def track_n_iter(self, method: str, device: str, problem: str) -> int:
        return fit(self._estimator(), self.problem).n_iter_

    track_n_iter.unit = "iterations"


class FitGPUMemory:
    """Peak CUDA memory allocated by ``fit`` (``torch.cuda.max_memory_allocated``)."""

    param_names = ["method", "problem"]
    params = [METHODS, PROBLEMS]
    processes = 1
    timeout = 3600

    def setup(self, method: str, problem: str) -> None:
        reason = skip_reason(method, "cuda", problem)
        if reason is not None:
            raise NotImplementedError(reason)
        self.problem = get_problem(problem)
        self.estimator = make_estimator(method, "cuda", self.problem, MAX_ITER[PROFILE][problem])

    def track_gpu_peak_bytes(self, method: str, problem: str) -> int:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        fit(self.estimator, self.problem)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())

    track_gpu_peak_bytes.unit = "bytes"

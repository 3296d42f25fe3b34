"""The speed table of the performance notes: default fits to their targets, per-step times.

Run from the repository root::

    python benchmarks/speed_table.py

Each fit is the default estimator (``solver="auto"``, ``tol=0``, ``random_state=0``,
float64 — and float32 on B to 1e-6, which it still reaches — on the CPU) run for the
steps that first reach the target error (``TARGETS`` of ``bench_scale.py``),
initialisation included, best of three. Per-step times are those of
the compressed step as the fit runs it (one thread on problem A, the default threads on
B), best of five batches, as wall clock and as the process's CPU time (which does not
count the time spent waiting for a core on a shared machine). The recovery error printed
beside each fit checks that the step budget does reach its target.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_scale import TARGETS, _CompressedStepper, _FullStepper
from deepmc.datasets import make_problem
from deepmc.models import make_estimator

#: (label, problem, method, steps, target error, dtype), the steps and targets of
#: ``TARGETS``; float32 only where it still reaches the target in the same steps
FITS = [
    (f"{label}, to 1e{round(math.log10(target))}", key.split("-")[0], method, steps[method],
     target, dtype)
    for label, key, method, dtype in [
        ("A, compressed", "A", "compressed", "float64"),
        ("A, full width", "A", "full", "float64"),
        ("B, compressed", "B", "compressed", "float64"),
        ("B, compressed float32", "B", "compressed", "float32"),
        ("B, compressed", "B-1e-10", "compressed", "float64"),
    ]
    for target, steps in [TARGETS[key]]
]  # fmt: skip


def _best(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _fit(problem: Any, method: str, steps: int, dtype: str = "float64") -> Any:
    est = make_estimator(
        method, rank=problem.rank, depth=problem.depth, tol=0.0, max_iter=steps,
        random_state=0, device="cpu", dtype=dtype,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(problem.train)


def _per_step(stepper: Any, n: int) -> float:
    stepper.step()
    return _best(lambda: [stepper.step() for _ in range(n)], 5)[0] / n


def _cpu_per_step(stepper: Any, n: int) -> float:
    """CPU seconds of the process per step, best of five batches.

    On a machine shared with other tenants the wall clock also counts the time the
    process waits for a core; its CPU time does not, and varies far less between runs.
    """
    stepper.step()
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            stepper.step()
        best = min(best, time.process_time() - t0)
    return best / n


def main() -> None:
    problems = {name: make_problem(name, random_state=0) for name in ("A", "B")}
    _fit(problems["A"], "compressed", 50)  # start-up costs (dispatch, thread pools)
    for label, name, method, steps, target, dtype in FITS:
        seconds, est = _best(
            lambda p=problems[name], m=method, s=steps, d=dtype: _fit(p, m, s, d), 3
        )
        error = problems[name].recovery_error(est)
        print(f"{label}: {seconds:.3f} s, {est.n_iter_} steps, error {error:.2e} (<= {target:g})")
    threads = torch.get_num_threads()
    for name, n in (("A", 300), ("B", 60)):
        torch.set_num_threads(1 if name == "A" else threads)  # as the fit does
        for dtype in (torch.float64, torch.float32):
            stepper = _CompressedStepper(problems[name], "cpu", dtype)
            step, cpu = _per_step(stepper, n), _cpu_per_step(stepper, n)
            print(f"compressed step {name} {str(dtype)[6:]}: {step * 1e6:.0f} us "
                  f"(CPU time {cpu * 1e6:.0f} us)")
    torch.set_num_threads(threads)
    full = _per_step(_FullStepper(problems["B"], "cpu", torch.float64), 3)
    comp = _per_step(_CompressedStepper(problems["B"], "cpu", torch.float64), 60)
    print(f"B full width / compressed per step: {full / comp:.0f}x ({full * 1e3:.1f} ms / "
          f"{comp * 1e3:.2f} ms)")


if __name__ == "__main__":
    main()

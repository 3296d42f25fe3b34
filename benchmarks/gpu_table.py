"""The GPU table: per-step time, time to a recovery error and peak memory on A, B and C.

One command prints a Markdown table for the reference problems (see ``make_problem``)::

    python benchmarks/gpu_table.py                  # CUDA; says so and exits 0 without it
    python benchmarks/gpu_table.py --problems A,B   # skip C (building it takes minutes)
    python benchmarks/gpu_table.py --device cpu     # the same measurements on the CPU

For each problem and dtype it measures:

* **compressed step** — one gradient step of the compressed network (residual,
  gradients and the GD update, as the fit loop takes it), best of three timed runs after
  a warm-up; on CUDA timed with CUDA events around the whole run, on the CPU with
  ``time.perf_counter``;
* **full step** and **full/compressed** (A and B) — the same for the full-width
  network (width ``max(m, n)``), measured in the same call; C has no full-width row
  (its ``L·d³`` step is infeasible);
* **step peak** — ``torch.cuda.max_memory_allocated`` over the compressed steps (the
  problem's tensors and the step's buffers included);
* **fit** — the default ``fit`` of the compressed network (``random_state=0``, the
  problem's rank and depth, everything else default) watched by the problem's held-out
  entries: the first check at which the relative recovery error on them is at most
  ``--target``, its step and its ``history_.seconds`` (wall clock since the start of
  ``fit``, initialisation included, evaluation excluded), or "not reached" with the
  error at the stop; and ``max_memory_allocated`` over the fit. On C the held-out
  entries are a uniform sample of the unobserved ones (the ground truth is known
  because the matrix is synthetic).

``--tiny`` replaces the problems by small ones of the same kind (tests run the script
that way on the CPU).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Small stand-ins for ``--tiny`` (overrides of ``make_problem``).
TINY: dict[str, dict[str, Any]] = {
    "A": {"shape": (30, 30), "rank": 2},
    "B": {"shape": (60, 50), "rank": 2},
    "C": {"shape": (300, 80), "rank": 2, "count": 3000},
}
#: Seconds a timed run of steps aims at (at least three steps, at most 2,000).
RUN_SECONDS = 0.2


def _problem(name: str, tiny: bool) -> Any:
    from deepmc.datasets import make_problem

    if tiny:
        return make_problem(name, random_state=0, **TINY[name])
    try:
        from benchmarks.common import get_problem  # disk-cached (C takes minutes to build)
    except ImportError:  # pragma: no cover - the shared helpers are optional here
        return make_problem(name, random_state=0)
    return get_problem(name)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: str) -> float:
    import torch

    if not device.startswith("cuda"):
        return math.nan
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def _run_seconds(stepper: Any, device: str, n_steps: int) -> float:
    """Seconds for ``n_steps`` steps, device work included (CUDA events on a GPU)."""
    import torch

    if device.startswith("cuda"):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        _sync(device)
        start.record()
        for _ in range(n_steps):
            stepper.step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    for _ in range(n_steps):
        stepper.step()
    return time.perf_counter() - t0


def step_seconds(stepper: Any, device: str, *, repeats: int = 3) -> float:
    """Best per-step seconds over ``repeats`` runs, after a warm-up step and a calibration."""
    with stepper.threads():  # the intra-op thread count of the fit loop
        _run_seconds(stepper, device, 1)  # warm-up: kernels' index structures, handles
        once = _run_seconds(stepper, device, 1)
        n_steps = int(min(2000, max(3, RUN_SECONDS / max(once, 1e-7))))
        return min(_run_seconds(stepper, device, n_steps) / n_steps for _ in range(repeats))


def fit_to_target(problem: Any, device: str, dtype: str, target: float, max_iter: int | None):
    """The default compressed fit watched by the held-out entries.

    Returns
    -------
    dict
        ``steps`` and ``seconds`` at the first check with error ≤ ``target`` (``None``
        when not reached), ``error`` at the stop, ``n_iter`` and ``peak_mib``.
    """
    from sklearn.exceptions import ConvergenceWarning

    from deepmc.models import make_estimator

    params: dict[str, Any] = {"depth": problem.depth, "device": device, "dtype": dtype}
    if max_iter is not None:
        params["max_iter"] = max_iter
    est = make_estimator("compressed", rank=problem.rank, random_state=0, **params)
    _reset_peak(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train, eval_set=problem.eval_set())
    peak = _peak_mib(device)
    hist = est.history_
    hit = hist[hist["eval_error"] <= target]
    first = None if hit.empty else hit.iloc[0]
    return {
        "steps": None if first is None else int(first["iteration"]),
        "seconds": None if first is None else float(first["seconds"]),
        "error": float(hist["eval_error"].iloc[-1]),
        "n_iter": int(est.n_iter_),
        "peak_mib": peak,
    }


def measure(
    name: str,
    device: str,
    dtype: str,
    *,
    tiny: bool = False,
    target: float = 1e-6,
    max_iter: int | None = None,
    fit: bool = True,
) -> dict[str, Any]:
    """One row of the table: ``name`` on ``device`` in ``dtype``."""
    import torch

    from benchmarks.bench_scale import _CompressedStepper, _FullStepper

    problem = _problem(name, tiny)
    torch_dtype = getattr(torch, dtype)
    row: dict[str, Any] = {"problem": name, "dtype": dtype, "shape": problem.shape}
    _reset_peak(device)
    comp = _CompressedStepper(problem, device, torch_dtype)
    row["compressed_s"] = step_seconds(comp, device)
    row["step_peak_mib"] = _peak_mib(device)
    del comp
    row["full_s"] = math.nan
    if name != "C":
        full = _FullStepper(problem, device, torch_dtype)
        row["full_s"] = step_seconds(full, device, repeats=2)
        del full
    row["ratio"] = row["full_s"] / row["compressed_s"]
    row["fit"] = fit_to_target(problem, device, dtype, target, max_iter) if fit else None
    return row


def _fmt(value: float | None, spec: str) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "—" if missing else spec % value


def format_table(rows: list[dict[str, Any]], device: str, target: float) -> str:
    """The Markdown table of ``rows`` (see :func:`measure`)."""
    head = (
        f"| problem | shape | dtype | compressed step (ms) | full step (ms) | full/compressed "
        f"| step peak (MiB) | fit: steps to {target:g} | fit: s to {target:g} (init incl.) "
        "| fit: error at stop | fit peak (MiB) |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        f = r["fit"] or {}
        reached = f.get("steps") is not None
        steps = str(f["steps"]) if reached else (f"not reached ({f['n_iter']})" if f else "—")
        cells = [
            r["problem"],
            "×".join(str(d) for d in r["shape"]),
            r["dtype"],
            _fmt(r["compressed_s"] * 1e3, "%.3g"),
            _fmt(r["full_s"] * 1e3, "%.3g"),
            _fmt(r["ratio"], "%.1f×"),
            _fmt(r["step_peak_mib"], "%.0f"),
            steps,
            _fmt(f.get("seconds"), "%.3g"),
            _fmt(f.get("error"), "%.2g"),
            _fmt(f.get("peak_mib", math.nan), "%.0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _device_line(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return (
            f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}"
        )
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    """Print the table; return the exit status (0 also when CUDA is missing)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:k or cpu")
    parser.add_argument("--problems", default="A,B,C", help="comma-separated, default A,B,C")
    parser.add_argument("--dtypes", default="float32,float64", help="default float32,float64")
    parser.add_argument("--target", type=float, default=1e-6, help="recovery error, 1e-6")
    parser.add_argument("--max-iter", type=int, default=None, help="fit step cap (default's)")
    parser.add_argument("--no-fit", action="store_true", help="step times and memory only")
    parser.add_argument("--tiny", action="store_true", help="small stand-in problems")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"No CUDA device (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda is not None}): the GPU table is not measured. "
            "Use --device cpu for the same measurements on the CPU."
        )
        return 0
    problems = [p.strip() for p in args.problems.split(",") if p.strip()]
    unknown = sorted(set(problems) - {"A", "B", "C"})
    if unknown:
        parser.error(f"--problems: unknown {unknown}; expected a subset of A,B,C")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if not set(dtypes) <= {"float32", "float64"}:
        parser.error(f"--dtypes: expected float32 and/or float64, got {args.dtypes!r}")
    if not args.tiny:  # first-call costs of the process (handles, lazy imports)
        measure("A", args.device, dtypes[0], tiny=True, max_iter=50)
    rows = []
    for name in problems:
        for dtype in dtypes:
            options = {"tiny": args.tiny, "target": args.target, "max_iter": args.max_iter}
            rows.append(measure(name, args.device, dtype, fit=not args.no_fit, **options))
            print(f"measured {name} {dtype}", file=sys.stderr, flush=True)
    print(f"deepmc GPU table — {_device_line(args.device)}")
    print(format_table(rows, args.device, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fitting each network for the comparison: timings, memory, singular-value traces."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from .._device import host_peak_kib, host_rss_kib, max_rss_kib, reset_host_peak
from .._trace import end_to_end_singular_values, fit_quiet, singular_value_trace
from ..datasets import make_problem
from ..plotting import PLOT_INSTALL
from ._plots import plot_histories, plot_singular
from ._report import _summary
from ._result import _Result
from ._tasks import METHODS, THRESHOLDS, Task, load_task, task_estimator

__all__ = ["compare", "end_to_end_singular_values", "singular_value_trace"]


def _fit_quiet(est: Any, task: Task, notes: list[str]) -> None:
    """Fit to ``task`` (with its evaluation set), ConvergenceWarnings becoming notes."""
    fit_quiet(est, task.train, {"eval_set": task.eval_set}, notes)


def _uses_cuda(device: Any) -> bool:
    import torch

    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _host_mib(exact: bool, start_kib: int | None, notes: list[str]) -> float:
    """Host peak during the fit minus the resident memory before it, in MiB.

    With an exact high-water mark (Linux) the figure is the true peak during the fit;
    elsewhere ``ru_maxrss`` is a process-lifetime maximum, so only growth beyond every
    earlier peak shows: a lower bound, said in ``notes``.
    """
    end_kib = host_peak_kib(exact)
    if start_kib is None or end_kib is None:
        notes.append("host memory not measurable on this platform")
        return math.nan
    if not exact:
        notes.append("host memory from ru_maxrss (lower bound)")
    return max(end_kib - start_kib, 0) / 1024


def _run(method: str, task: Task, params: dict[str, Any], log: Callable[[str], Any]) -> _Result:
    """Fit one method, timing it and measuring its peak host (and CUDA) memory."""
    import torch

    est = task_estimator(method, task, **params)
    result = _Result(method, "ok", est)
    cuda = _uses_cuda(params.get("device", "cpu"))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    log(f"[compare] {METHODS[method]}: fitting {type(est).__name__} ...")
    exact = reset_host_peak()
    rss = host_rss_kib() if exact else None
    start_kib = rss if rss is not None else max_rss_kib()
    t0 = time.perf_counter()
    try:
        _fit_quiet(est, task, result.notes)
    except MemoryError as exc:
        result.status = "skipped"
        result.estimator = None
        result.notes.append(f"cannot hold the network: {exc}")
        log(f"[compare] {METHODS[method]}: skipped — {exc}")
        return result
    result.seconds = time.perf_counter() - t0
    result.host_mib = _host_mib(exact, start_kib, result.notes)
    if cuda:
        result.cuda_mib = torch.cuda.max_memory_allocated() / 2**20
    log(
        f"[compare] {METHODS[method]}: {est.n_iter_} iterations in {result.seconds:.2f} s, "
        f"{task.metric} {est.history_[task.metric].iloc[-1]:.3e}"
    )
    return result


def _warm_up(methods: list[str], task: Task, params: dict[str, Any]) -> None:
    """Fit each method once on a tiny problem, so that one-time costs of the libraries
    (thread pools, kernel dispatch, CUDA context) are not billed to the first method."""
    tiny = make_problem(shape=(12, 10), rank=1, fraction=0.5, random_state=0)
    tiny_task = replace(task, train=tiny.train, eval_set=tiny.eval_set(), rank=1)
    for method in methods:
        est = task_estimator(method, tiny_task, **{**params, "max_iter": 3, "verbose": 0})
        _fit_quiet(est, tiny_task, [])


def _singular_trace(
    method: str, task: Task, params: dict[str, Any], n_iter: int, k: int, n_points: int
) -> pd.DataFrame:
    """:func:`singular_value_trace` of ``method`` on ``task``."""
    est = task_estimator(method, task, **params)
    return singular_value_trace(
        est, task.train, n_iter=n_iter, k=k, n_points=n_points, eval_set=task.eval_set
    )


def _check_methods(methods: Any, no_dlr: bool) -> list[str]:
    methods = list(methods)
    if no_dlr and "compressed-no-dlr" not in methods:
        methods.append("compressed-no-dlr")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods: expected names in {list(METHODS)}, got {method!r}.")
    return methods


def _fit_params(task: Task, overrides: dict[str, Any]) -> dict[str, Any]:
    """The estimator parameters shared by every method: the task's, then the user's.

    Synthetic problems use the estimators' defaults; ratings the settings of
    ``RatingsCompletion`` (``task.info``).
    """
    params = dict(task.info.get("params", {}))
    params.update({k: v for k, v in overrides.items() if v is not None})
    return params


def _run_all(
    methods: list[str],
    task: Task,
    params: dict[str, Any],
    out: Path,
    singular_points: int | None,
    log: Callable[[str], Any],
) -> list[_Result]:
    """Fit every method, writing its history (and singular-value trace) as it finishes."""
    results = []
    for method in methods:
        res = _run(method, task, params, log)
        if res.estimator is not None:
            hist = res.estimator.history_.assign(method=method)
            hist.to_csv(out / f"history_{method}.csv", index=False)
            if singular_points is not None:
                log(f"[compare] {METHODS[method]}: tracing singular values ...")
                res.singular = _singular_trace(
                    method, task, params, res.estimator.n_iter_, 2 * task.rank, singular_points
                )
                res.singular.to_csv(out / f"singular_values_{method}.csv", index=False)
        results.append(res)
    return results


def _describe(task: Task, seed: int) -> str:
    m, n = task.shape
    return (
        f"[compare] {task.name}: {m}×{n}, {task.train.n_observed} observed, "
        f"{len(task.eval_set[0])} held out, r̂={task.rank}, depth {task.depth}, "
        f"ε={task.init_scale if task.init_scale is not None else 'auto'}, seed {seed}"
    )


def compare(
    problem: str | Task = "A",
    *,
    methods: tuple[str, ...] | list[str] = ("full", "narrow", "compressed"),
    no_dlr: bool = False,
    rank: int | None = None,
    depth: int | None = None,
    init_scale: float | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    check_every: int = 25,
    device: str = "auto",
    seed: int = 0,
    output_dir: str | os.PathLike = "compare-output",
    singular_values: bool = False,
    singular_points: int = 30,
    thresholds: tuple[float, ...] = THRESHOLDS,
    test_fraction: float = 0.2,
    cache_dir: str | None = None,
    download: bool = False,
    verbose: int = 0,
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Fit several networks to one problem from one seed and summarise.

    Parameters
    ----------
    problem : str or Task, default="A"
        A reference problem, a synthetic spec or a ratings source (see :func:`load_task`),
        or a :class:`Task` already loaded (``rank``, ``depth``, ``test_fraction`` and
        ``cache_dir`` are then ignored).
    methods : sequence of str, default=("full", "narrow", "compressed")
        Among ``"full"`` (width ``max(m, n)``), ``"narrow"`` (width 2r̂), ``"compressed"``
        and ``"compressed-no-dlr"`` (γ = 0).
    no_dlr : bool, default=False
        Also run ``"compressed-no-dlr"``.
    rank, depth : int, default=None
        r̂ and L; default the problem's (ratings: r̂ = 10).
    init_scale : float, default=None
        ε; default the estimators' ``"auto"`` (ratings: that of ``RatingsCompletion``).
        The reference problems' ε of the papers is ``PROBLEMS[name]["init_scale"]`` in
        :mod:`deepmc.datasets`.
    max_iter : int, default=None
        The estimators' default (ratings: that of ``RatingsCompletion``).
    tol : float, default=None
        The estimators' stopping tolerance (ratings: that of ``RatingsCompletion``).
    check_every : int, default=25
        Steps between history rows.
    device : {"auto", "cpu", "cuda"}, default="auto"
    seed : int, default=0
        Seeds the problem, the split and every initialisation.
    output_dir : path-like, default="compare-output"
    singular_values : bool, default=False
        Also trace the top 2r̂ singular values of the end-to-end matrix over training
        (a second, warm-started run per method in ``singular_points`` chunks).
    singular_points : int, default=30
    thresholds : tuple of float, default=(1e-3, 1e-6)
        Recovery errors whose first crossing is tabulated.
    test_fraction : float, default=0.2
        Held-out fraction for ratings.
    cache_dir : str, default=None
        Folder of MovieLens releases.
    download : bool, default=False
        Fetch a MovieLens release missing from ``cache_dir`` (GroupLens, sha256-checked).
    verbose : int, default=0
        Progress bars of the estimators.
    log : callable, default=print
        Where progress lines go.

    Returns
    -------
    pandas.DataFrame
        One row per method: ``status`` (``ok`` or ``skipped``), ``iterations``,
        ``seconds``, ``iter_to_1e-03``/``sec_to_1e-03`` and the like (ratings:
        ``best_rmse``, ``iter_at_best``, ``sec_at_best``, ``final_rmse``),
        ``final_error``, ``peak_rss_increase_MiB`` (host resident memory high-water mark
        during the fit minus the resident memory before it; it includes torch's CPU
        tensors), ``cuda_peak_alloc_MiB`` (``torch.cuda.max_memory_allocated``; NaN on
        CPU), ``note`` and ``speedup_vs_full``. ``attrs`` holds the problem and the basis
        of the speed-up.
    """
    methods = _check_methods(methods, no_dlr)
    if isinstance(problem, Task):
        task = replace(problem)
    else:
        task = load_task(
            problem,
            rank=rank,
            depth=depth,
            seed=seed,
            test_fraction=test_fraction,
            cache_dir=cache_dir,
            download=download,
        )
    if init_scale is not None:
        task.init_scale = init_scale
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log(_describe(task, seed))
    if not _have_matplotlib():
        log(f"[compare] matplotlib is not installed: tables only, no figures ({PLOT_INSTALL})")
    params = _fit_params(task, {"max_iter": max_iter, "tol": tol})
    params.update(check_every=check_every, device=device, random_state=seed, verbose=verbose)
    _warm_up(methods, task, params)
    results = _run_all(
        methods, task, params, out, singular_points if singular_values else None, log
    )
    return _write_summary(results, task, tuple(thresholds), out, device=device, seed=seed)


def _write_summary(
    results: list[_Result], task: Task, thresholds: tuple[float, ...], out: Path, **attrs: Any
) -> pd.DataFrame:
    """The summary table (also ``summary.csv``) and the figures of a finished run."""
    table, basis = _summary(results, task, thresholds)
    table.attrs.update(
        problem=task.name,
        kind=task.kind,
        shape=task.shape,
        rank=task.rank,
        **attrs,
        speedup_basis=basis,
        output_dir=str(out),
    )
    table.to_csv(out / "summary.csv", index=False)
    figures = []
    if _have_matplotlib():
        if any(r.estimator is not None for r in results):
            plot_histories(results, task, out / "compare.png")
            figures.append("compare.png")
        if any(r.singular is not None for r in results):
            plot_singular(results, task, out / "singular_values.png")
            figures.append("singular_values.png")
    table.attrs["figures"] = figures
    return table


def _have_matplotlib() -> bool:
    """Whether matplotlib imports; without it the comparison writes tables only."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True

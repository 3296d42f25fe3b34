"""Fitting each network for the comparison: timings, memory, singular-value traces."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from .._device import host_peak_kib, host_rss_kib, max_rss_kib, reset_host_peak
from ..datasets import make_problem
from ..plotting import PLOT_INSTALL
from ._tasks import METHODS, THRESHOLDS, Task, load_task, make_estimator

__all__ = ["compare", "end_to_end_singular_values", "singular_value_trace"]


def end_to_end_singular_values(estimator: Any, k: int) -> np.ndarray:
    """The top ``k`` singular values of a fitted estimator's end-to-end matrix ``X̂``.

    Computed from the factors without forming ``X̂``: for the compressed network from
    ``U_``, the ``2r̂ × 2r̂`` cores and ``V_`` (QR of the factors, then an SVD of a
    ``2r̂ × 2r̂`` matrix); for the full-width and narrow networks from ``W_L ⋯ W_2`` and
    ``W_1``.

    Parameters
    ----------
    estimator : fitted DeepMatrixCompletion or CompressedDeepMatrixCompletion
    k : int

    Returns
    -------
    ndarray of shape (min(k, available),)
    """
    if hasattr(estimator, "cores_"):
        C = estimator.cores_[0]
        for W in estimator.cores_[1:]:
            C = W @ C
        left, right = estimator.U_ @ C, estimator.V_
    else:
        weights = estimator.weights_
        left = weights[-1]
        for W in reversed(weights[1:-1]):
            left = left @ W
        right = weights[0].T
    _, rl = np.linalg.qr(left)
    _, rr = np.linalg.qr(right)
    s = np.linalg.svd(rl @ rr.T, compute_uv=False)
    return estimator.scale_ * s[:k]


@dataclass
class _Result:
    method: str
    status: str
    estimator: Any = None
    seconds: float = math.nan
    host_mib: float = math.nan
    cuda_mib: float = math.nan
    notes: list[str] = field(default_factory=list)
    singular: pd.DataFrame | None = None


def _fit_quiet(est: Any, task: Task, notes: list[str]) -> None:
    """Fit to ``task`` (with its evaluation set), ConvergenceWarnings becoming notes."""
    _fit_quiet_on(est, task.train, {"eval_set": task.eval_set}, notes)


def _fit_quiet_on(est: Any, X: Any, fit_params: dict[str, Any], notes: list[str]) -> None:
    """Fit, turning ConvergenceWarnings into notes and letting other warnings through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(X, **fit_params)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append("max_iter reached")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


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

    est = make_estimator(method, task, **params)
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
        est = make_estimator(method, tiny_task, **{**params, "max_iter": 3, "verbose": 0})
        _fit_quiet(est, tiny_task, [])


def singular_value_trace(
    estimator: Any,
    X: Any,
    *,
    n_iter: int,
    k: int,
    n_points: int = 30,
    **fit_params: Any,
) -> pd.DataFrame:
    """Top-``k`` singular values of the end-to-end matrix over training.

    A clone of ``estimator`` is refitted from its initialisation in ``n_points``
    warm-started chunks of ``ceil(n_iter / n_points)`` steps; after each chunk
    :func:`end_to_end_singular_values` reads the spectrum off the factors. Gradient
    descent is deterministic for a fixed ``random_state``, so the chunks retrace the
    trajectory of one fit of ``n_iter`` steps.

    Parameters
    ----------
    estimator : DeepMatrixCompletion or CompressedDeepMatrixCompletion
        Its parameters are used; it is not modified.
    X : array-like, sparse matrix, DataFrame or Observations
        The training data, as for ``fit``.
    n_iter : int
        Steps to trace.
    k : int
        Singular values kept at each point.
    n_points : int, default=30
        Chunks (points of the trace); fewer if the fit converges early.
    **fit_params
        Passed to every ``fit`` call (``eval_set``).

    Returns
    -------
    pandas.DataFrame
        Columns ``iteration``, ``s1``, …, ``sk`` (largest first), one row per chunk.
    """
    from sklearn.base import clone

    step = max(1, math.ceil(n_iter / n_points))
    est = clone(estimator).set_params(warm_start=True, verbose=0)
    records = []
    done = 0
    while done < n_iter:
        chunk = min(step, n_iter - done)
        est.set_params(max_iter=chunk)  # max_iter counts the steps of each call
        _fit_quiet_on(est, X, fit_params, [])
        if done and est.n_iter_ == done:  # an estimator whose max_iter is a total
            est.set_params(max_iter=done + chunk)
            _fit_quiet_on(est, X, fit_params, [])
        s = end_to_end_singular_values(est, k)
        records.append({"iteration": est.n_iter_, **{f"s{i + 1}": v for i, v in enumerate(s)}})
        if est.n_iter_ < done + chunk:  # converged before the chunk ended
            break
        done = est.n_iter_
    return pd.DataFrame.from_records(records)


def _singular_trace(
    method: str, task: Task, params: dict[str, Any], n_iter: int, k: int, n_points: int
) -> pd.DataFrame:
    """:func:`singular_value_trace` of ``method`` on ``task``."""
    est = make_estimator(method, task, **params)
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
    from ._plots import plot_histories, plot_singular
    from ._report import _summary

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

"""``deepmc compare``: the full-width, narrow and compressed networks side by side.

One problem, one seed, one device; every method is fitted with an evaluation set so its
``history_`` records the held-out error at every check. The run writes

* ``history_<method>.csv`` — each method's ``history_`` (iteration, seconds, loss, …,
  ``eval_error``, ``eval_rmse``);
* ``summary.csv`` — the table printed at the end;
* ``compare.png`` — relative recovery error (held-out RMSE for ratings) against iterations
  and against seconds, log scale, in the style of the papers' figures;
* with ``singular_values=True``, ``singular_values.png`` and
  ``singular_values_<method>.csv`` — the top singular values of the end-to-end matrix
  over training (the law-of-parsimony picture).

Examples
--------
From the shell::

    deepmc compare --problem A --device cpu --output-dir compare-output
    deepmc compare --problem 300x200,rank=4,fraction=0.25 --no-dlr
    deepmc compare --problem ../shared/data/ml-100k/u.data --rank 10 --methods narrow,compressed

From Python:

>>> from deepmc.compare import parse_problem
>>> parse_problem("300x200,rank=4,fraction=0.25")
{'shape': (300, 200), 'rank': 4, 'fraction': 0.25}
"""

from __future__ import annotations

import argparse
import math
import os
import re
import resource
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from . import models
from ._validation import Observations
from .datasets import PROBLEMS, load_movielens, make_problem

__all__ = [
    "METHODS",
    "Task",
    "compare",
    "configure_parser",
    "end_to_end_singular_values",
    "load_task",
    "parse_problem",
]

#: Method name → how it appears in tables and legends.
METHODS: dict[str, str] = {
    "full": "full width",
    "narrow": "narrow (2r̂)",
    "compressed": "compressed",
    "compressed-no-dlr": "compressed, γ=0",
}
#: Default recovery-error thresholds of the table (DESIGN.md §5).
THRESHOLDS: tuple[float, ...] = (1e-3, 1e-6)
#: Default r̂ for ratings, whose true rank is unknown.
RATINGS_RANK = 10

_SPEC = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*(?:,(.*))?$")
_SPEC_KEYS = {
    "rank": ("rank", int),
    "r": ("rank", int),
    "fraction": ("fraction", float),
    "p": ("fraction", float),
    "count": ("count", int),
    "n": ("count", int),
    "noise": ("noise", float),
    "depth": ("depth", int),
}


def parse_problem(spec: str) -> dict[str, Any]:
    """Parse a synthetic problem spec ``"MxN,rank=R,fraction=F"``.

    Keys: ``rank`` (``r``), ``fraction`` (``p``) or ``count`` (``n``), ``noise``, ``depth``.

    Parameters
    ----------
    spec : str

    Returns
    -------
    dict
        Keyword arguments of :func:`deepmc.datasets.make_problem` (and ``depth``).
    """
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"problem: {spec!r} is not a synthetic spec like '300x200,rank=4,p=0.3'.")
    out: dict[str, Any] = {"shape": (int(match.group(1)), int(match.group(2)))}
    for item in filter(None, (match.group(3) or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _SPEC_KEYS:
            raise ValueError(
                f"problem: cannot read {item!r} in {spec!r}; expected key=value with key in "
                f"{sorted(_SPEC_KEYS)}."
            )
        name, kind = _SPEC_KEYS[key.strip()]
        out[name] = kind(value)
    if "rank" not in out:
        raise ValueError(f"problem: {spec!r} needs a rank, e.g. '{spec},rank=5'.")
    if "fraction" not in out and "count" not in out:
        out["fraction"] = 0.3
    return out


@dataclass
class Task:
    """One problem prepared for comparison.

    Attributes
    ----------
    name : str
    kind : {"synthetic", "ratings"}
    train : Observations
        What the estimators are fitted on (ratings: minus the mean and biases).
    eval_set : tuple
        Held-out ``(rows, cols, values, shape)`` in the same units as ``train``.
    rank : int
        r̂ used by the narrow (width 2r̂) and compressed networks.
    depth : int
    init_scale : float or None
        ε (``None``: the estimators' ``"auto"``).
    offset : float
        The global mean removed from ratings (with the biases), 0 otherwise.
    info : dict
        Details; ``info["params"]`` holds estimator parameters of the task (ratings: the
        step size, dtype, ``max_iter`` and ``tol`` of ``RatingsCompletion``).
    """

    name: str
    kind: str
    train: Observations
    eval_set: tuple
    rank: int
    depth: int = 3
    init_scale: float | None = None
    offset: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape

    @property
    def metric(self) -> str:
        """The history column that measures progress: relative error or RMSE."""
        return "eval_rmse" if self.kind == "ratings" else "eval_error"


def _ratings_task(
    source: str,
    *,
    rank: int | None,
    depth: int | None,
    seed: int,
    test_fraction: float,
    cache_dir: str | None,
) -> Task:
    """Ratings: a seeded held-out split; the networks fit what the biases leave.

    The split is seeded; the global mean and the user / item biases of
    :func:`deepmc.ratings.fit_biases` are estimated on the training part and subtracted
    from both parts, and the plain networks are fitted to the residual matrix with the
    step size and ε of :class:`deepmc.ratings.RatingsCompletion`. The held-out RMSE of
    the residual is the RMSE of the (unclipped) predicted ratings. This function is the
    one place to change to compare another ratings pipeline.
    """
    from .ratings import RatingsCompletion, fit_biases

    ratings = load_movielens(source, cache_dir=cache_dir)
    train, test = ratings.train_test_split(test_fraction, random_state=seed)
    tr, te = train.to_observations(), test.to_observations()
    defaults = RatingsCompletion().get_params()
    mean, bu, bi = fit_biases(tr.rows, tr.cols, tr.values, tr.shape, reg=defaults["bias_reg"])
    return Task(
        name=ratings.name,
        kind="ratings",
        train=tr._replace(values=tr.values - mean - bu[tr.rows] - bi[tr.cols]),
        eval_set=(te.rows, te.cols, te.values - mean - bu[te.rows] - bi[te.cols], te.shape),
        rank=rank or RATINGS_RANK,
        depth=depth or 3,
        init_scale=defaults["init_scale"],
        offset=mean,
        info={
            "n_train": tr.n_observed,
            "n_test": te.n_observed,
            "params": {k: defaults[k] for k in ("lr", "dtype", "max_iter", "tol")},
        },
    )


def load_task(
    problem: str,
    *,
    rank: int | None = None,
    depth: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    cache_dir: str | None = None,
) -> Task:
    """Build the :class:`Task` for a problem name, synthetic spec or ratings source.

    Parameters
    ----------
    problem : str
        ``"A"``, ``"B"``, ``"C"`` (DESIGN.md §5); a synthetic spec such as
        ``"300x200,rank=4,fraction=0.25"`` (see :func:`parse_problem`); or a MovieLens
        file, folder or release name (see :func:`deepmc.datasets.load_movielens`).
    rank : int, default=None
        r̂; default the true rank (synthetic) or 10 (ratings).
    depth : int, default=None
        L; default the problem's (3).
    seed : int, default=0
        Seed of the problem, the split and the initialisations.
    test_fraction : float, default=0.2
        Held-out fraction of the ratings.
    cache_dir : str, default=None
        Where MovieLens release names are looked for.

    Returns
    -------
    Task
    """
    if problem in PROBLEMS or _SPEC.match(problem):
        if problem in PROBLEMS:
            p = make_problem(problem, random_state=seed)
        else:
            spec = parse_problem(problem)
            spec_depth = spec.pop("depth", None)
            p = make_problem(random_state=seed, **spec)
            p = p if spec_depth is None else _with_depth(p, spec_depth)
        return Task(
            name=p.name,
            kind="synthetic",
            train=p.train,
            eval_set=p.eval_set(),
            rank=rank or p.rank,
            depth=depth or p.depth,
            init_scale=p.init_scale,
            info={"true_rank": p.rank},
        )
    return _ratings_task(
        problem,
        rank=rank,
        depth=depth,
        seed=seed,
        test_fraction=test_fraction,
        cache_dir=cache_dir,
    )


def _with_depth(p: Any, depth: int) -> Any:
    return replace(p, depth=depth)


def make_estimator(method: str, task: Task, **params: Any) -> Any:
    """The estimator of ``method`` for ``task``, with the common ``params``.

    Parameters
    ----------
    method : {"full", "narrow", "compressed", "compressed-no-dlr"}
    task : Task
    **params
        Passed to every estimator (``max_iter``, ``tol``, ``device``, …).

    Returns
    -------
    estimator
    """
    common = {"depth": task.depth, **params}
    if task.init_scale is not None:
        common.setdefault("init_scale", task.init_scale)
    return models.make_estimator(method, rank=task.rank, **common)


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


# ------------------------------------------------------------------------- memory
def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class _HostPeak:
    """Peak resident memory of this process during a block, above its level before.

    On Linux the high-water mark is reset through ``/proc/self/clear_refs``, so the
    figure is the true peak during the block minus the RSS at its start. Elsewhere it
    falls back to ``ru_maxrss`` (a process-lifetime maximum), which only shows growth
    beyond every earlier peak — a lower bound, flagged by ``exact = False``.
    """

    def __enter__(self) -> _HostPeak:
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.exact = _proc_status_kib("VmHWM") is not None
        except OSError:
            pass
        rss = _proc_status_kib("VmRSS") if self.exact else None
        self._start_kib = rss if rss is not None else self._maxrss_kib()
        return self

    @staticmethod
    def _maxrss_kib() -> int:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak

    def __exit__(self, *exc: Any) -> None:
        hwm = _proc_status_kib("VmHWM") if self.exact else None
        end = hwm if hwm is not None else self._maxrss_kib()
        self.mib = max(end - self._start_kib, 0) / 1024


# ------------------------------------------------------------------------- running
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
    """Fit, turning ConvergenceWarnings into notes and letting other warnings through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(task.train, eval_set=task.eval_set)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append("max_iter reached")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _run(method: str, task: Task, params: dict[str, Any], log: Any) -> _Result:
    import torch

    est = make_estimator(method, task, **params)
    result = _Result(method, "ok", est)
    cuda = str(params.get("device", "cpu")).startswith("cuda") or (
        params.get("device") == "auto" and torch.cuda.is_available()
    )
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    log(f"[compare] {METHODS[method]}: fitting {type(est).__name__} ...")
    t0 = time.perf_counter()
    try:
        with _HostPeak() as host:
            _fit_quiet(est, task, result.notes)
    except MemoryError as exc:
        result.status = "skipped"
        result.estimator = None
        result.notes.append(f"cannot hold the network: {exc}")
        log(f"[compare] {METHODS[method]}: skipped — {exc}")
        return result
    result.seconds = time.perf_counter() - t0
    result.host_mib = host.mib
    if cuda:
        result.cuda_mib = torch.cuda.max_memory_allocated() / 2**20
    if not host.exact:
        result.notes.append("host memory from ru_maxrss (lower bound)")
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


def _singular_trace(
    method: str, task: Task, params: dict[str, Any], n_iter: int, k: int, n_points: int
) -> pd.DataFrame:
    """Top-``k`` singular values over training, by refitting in warm-started chunks."""
    step = max(1, math.ceil(n_iter / n_points))
    est = make_estimator(method, task, **{**params, "verbose": 0})
    est.set_params(warm_start=True)
    records = []
    done = 0
    while done < n_iter:
        chunk = min(step, n_iter - done)
        est.set_params(max_iter=chunk)  # max_iter counts the steps of each call
        _fit_quiet(est, task, [])
        if done and est.n_iter_ == done:  # an estimator whose max_iter is a total
            est.set_params(max_iter=done + chunk)
            _fit_quiet(est, task, [])
        s = end_to_end_singular_values(est, k)
        records.append({"iteration": est.n_iter_, **{f"s{i + 1}": v for i, v in enumerate(s)}})
        if est.n_iter_ < done + chunk:  # converged before the chunk ended
            break
        done = est.n_iter_
    return pd.DataFrame.from_records(records)


def _first_reaching(history: pd.DataFrame, column: str, threshold: float) -> tuple[float, float]:
    hit = history.loc[history[column] <= threshold]
    if hit.empty:
        return math.nan, math.nan
    return float(hit["iteration"].iloc[0]), float(hit["seconds"].iloc[0])


def _threshold_name(t: float) -> str:
    return f"{t:.0e}"


def _summary(
    results: list[_Result], task: Task, thresholds: tuple[float, ...]
) -> tuple[pd.DataFrame, str]:
    rows = []
    for res in results:
        row: dict[str, Any] = {"method": res.method, "status": res.status}
        h = res.estimator.history_ if res.estimator is not None else None
        row["iterations"] = res.estimator.n_iter_ if h is not None else math.nan
        row["seconds"] = res.seconds
        if task.kind == "ratings":
            best = h["eval_rmse"].idxmin() if h is not None else None
            row["best_rmse"] = h["eval_rmse"].min() if h is not None else math.nan
            row["iter_at_best"] = h.loc[best, "iteration"] if h is not None else math.nan
            row["sec_at_best"] = h.loc[best, "seconds"] if h is not None else math.nan
            row["final_rmse"] = h["eval_rmse"].iloc[-1] if h is not None else math.nan
        else:
            for t in thresholds:
                it, sec = _first_reaching(h, "eval_error", t) if h is not None else (math.nan,) * 2
                row[f"iter_to_{_threshold_name(t)}"] = it
                row[f"sec_to_{_threshold_name(t)}"] = sec
            row["final_error"] = h["eval_error"].iloc[-1] if h is not None else math.nan
        row["peak_rss_increase_MiB"] = res.host_mib
        row["cuda_peak_alloc_MiB"] = res.cuda_mib
        row["note"] = "; ".join(res.notes)
        rows.append(row)
    table = pd.DataFrame.from_records(rows)

    full = table.loc[(table["method"] == "full") & (table["status"] == "ok")]
    basis = "full width not run"
    table["speedup_vs_full"] = math.nan
    if not full.empty:
        reached = [
            t
            for t in thresholds
            if task.kind != "ratings" and np.isfinite(full[f"sec_to_{_threshold_name(t)}"].iloc[0])
        ]
        if reached:
            col = f"sec_to_{_threshold_name(min(reached))}"
            table["speedup_vs_full"] = full[col].iloc[0] / table[col]
            basis = f"full width's seconds to reach error {min(reached):g} / the method's"
        else:
            per_step = table["seconds"] / table["iterations"]
            table["speedup_vs_full"] = per_step.loc[full.index[0]] / per_step
            basis = "seconds per iteration of full width / the method's"
    return table, basis


# ------------------------------------------------------------------------- figures
def _plot_histories(results: list[_Result], task: Task, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ylabel = "held-out RMSE" if task.kind == "ratings" else "relative recovery error"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    for res in results:
        if res.estimator is None:
            continue
        h = res.estimator.history_
        for ax, x in zip(axes, ("iteration", "seconds")):
            ax.plot(h[x], h[task.metric], label=METHODS[res.method])
    for ax, xlabel in zip(axes, ("iterations", "seconds (fit, init included, eval excluded)")):
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    m, n = task.shape
    fig.suptitle(f"{task.name}: {m}×{n}, r̂={task.rank}, depth {task.depth}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_singular(results: list[_Result], task: Task, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traced = [r for r in results if r.singular is not None and not r.singular.empty]
    fig, axes = plt.subplots(1, len(traced), figsize=(4.5 * len(traced), 3.8), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.84, wspace=0.25)
    for ax, res in zip(axes[0], traced):
        sv = res.singular
        for col in sv.columns.drop("iteration"):
            ax.plot(sv["iteration"], sv[col], lw=1)
        ax.set_yscale("log")
        ax.set_title(METHODS[res.method])
        ax.set_xlabel("iterations")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("singular values of X̂")
    fig.suptitle(f"{task.name}: top {2 * task.rank} singular values of the end-to-end matrix")
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------- entry points
def compare(
    problem: str = "A",
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
    verbose: int = 0,
    log: Any = print,
) -> pd.DataFrame:
    """Fit several networks to one problem from one seed and summarise.

    Parameters
    ----------
    problem : str, default="A"
        A reference problem, a synthetic spec or a ratings source; see
        :func:`load_task`.
    methods : sequence of str, default=("full", "narrow", "compressed")
        Among ``"full"`` (width ``max(m, n)``), ``"narrow"`` (width 2r̂), ``"compressed"``
        and ``"compressed-no-dlr"`` (γ = 0).
    no_dlr : bool, default=False
        Also run ``"compressed-no-dlr"``.
    rank, depth : int, default=None
        r̂ and L; default the problem's (ratings: r̂ = 10).
    init_scale : float, default=None
        ε; default the problem's reference value, else the estimators' ``"auto"``.
    max_iter : int, default=None
        20000 for synthetic problems; ratings: that of ``RatingsCompletion`` (2000).
    tol : float, default=None
        The estimators' stopping tolerance: 1e-9 for synthetic problems, so that runs
        go on to the error floor; ratings: that of ``RatingsCompletion``.
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
    methods = list(methods)
    if no_dlr and "compressed-no-dlr" not in methods:
        methods.append("compressed-no-dlr")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"methods: expected names in {list(METHODS)}, got {method!r}.")
    task = load_task(
        problem,
        rank=rank,
        depth=depth,
        seed=seed,
        test_fraction=test_fraction,
        cache_dir=cache_dir,
    )
    if init_scale is not None:
        task.init_scale = init_scale
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    m, n = task.shape
    log(
        f"[compare] {task.name}: {m}×{n}, {task.train.n_observed} observed, "
        f"{len(task.eval_set[0])} held out, r̂={task.rank}, depth {task.depth}, "
        f"ε={task.init_scale if task.init_scale is not None else 'auto'}, seed {seed}"
    )
    params = {
        "max_iter": 20_000,
        "tol": 1e-9,
        **task.info.get("params", {}),
        "check_every": check_every,
        "device": device,
        "random_state": seed,
        "verbose": verbose,
    }
    if max_iter is not None:
        params["max_iter"] = max_iter
    if tol is not None:
        params["tol"] = tol
    _warm_up(methods, task, params)
    results = []
    for method in methods:
        res = _run(method, task, params, log)
        if res.estimator is not None:
            hist = res.estimator.history_.assign(method=method)
            hist.to_csv(out / f"history_{method}.csv", index=False)
            if singular_values:
                log(f"[compare] {METHODS[method]}: tracing singular values ...")
                res.singular = _singular_trace(
                    method, task, params, res.estimator.n_iter_, 2 * task.rank, singular_points
                )
                res.singular.to_csv(out / f"singular_values_{method}.csv", index=False)
        results.append(res)
    table, basis = _summary(results, task, tuple(thresholds))
    table.attrs.update(
        problem=task.name,
        kind=task.kind,
        shape=task.shape,
        rank=task.rank,
        device=device,
        seed=seed,
        speedup_basis=basis,
        output_dir=str(out),
    )
    table.to_csv(out / "summary.csv", index=False)
    if any(r.estimator is not None for r in results):
        _plot_histories(results, task, out / "compare.png")
    if singular_values and any(r.singular is not None for r in results):
        _plot_singular(results, task, out / "singular_values.png")
    return table


def _fmt(pattern: str) -> Any:
    return lambda v: "—" if pd.isna(v) else pattern.format(v)


def format_table(table: pd.DataFrame) -> str:
    """The summary as aligned text (what ``deepmc compare`` prints)."""
    shown = table.drop(columns=["note"])
    if shown["cuda_peak_alloc_MiB"].isna().all():
        shown = shown.drop(columns=["cuda_peak_alloc_MiB"])
    formatters = {}
    for col in shown.columns:
        if col.startswith(("iter", "iterations")):
            formatters[col] = _fmt("{:.0f}")
        elif "error" in col or "rmse" in col:
            formatters[col] = _fmt("{:.2e}")
        elif shown[col].dtype.kind == "f":
            formatters[col] = _fmt("{:.2f}")
    text = shown.to_string(index=False, formatters=formatters, na_rep="—")
    notes = [f"  {m}: {note}" for m, note in zip(table["method"], table["note"]) if note]
    basis = table.attrs.get("speedup_basis")
    tail = [f"speedup_vs_full = {basis}"] if basis else []
    tail.append(
        "peak_rss_increase_MiB = host resident-memory high-water mark during fit minus "
        "resident memory before it (torch CPU tensors included)"
    )
    return "\n".join([text, *tail, *(["notes:", *notes] if notes else [])])


def _cli(args: argparse.Namespace) -> int:
    table = compare(
        args.problem,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        no_dlr=args.no_dlr,
        rank=args.rank,
        depth=args.depth,
        init_scale=args.init_scale,
        max_iter=args.max_iter,
        tol=args.tol,
        check_every=args.check_every,
        device=args.device,
        seed=args.seed,
        output_dir=args.output_dir,
        singular_values=args.singular_values,
        test_fraction=args.test_fraction,
        cache_dir=args.cache_dir,
        verbose=args.verbose,
    )
    print(format_table(table))
    print(f"wrote {table.attrs['output_dir']}/ (summary.csv, history_*.csv, compare.png)")
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``deepmc compare`` arguments to ``parser`` and set its handler.

    Parameters
    ----------
    parser : argparse.ArgumentParser

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.description = (
        "Fit the full-width, narrow and compressed networks to one problem from one seed; "
        "write histories (CSV), figures, and print a summary table."
    )
    parser.add_argument(
        "--problem",
        default="A",
        help="A, B, C; a synthetic spec like 300x200,rank=4,fraction=0.25; or a MovieLens "
        "file, folder or release name (ml-100k, ...)",
    )
    parser.add_argument(
        "--methods",
        default="full,narrow,compressed",
        help=f"comma-separated, among {','.join(METHODS)}",
    )
    parser.add_argument("--no-dlr", action="store_true", help="also run compressed with γ=0")
    parser.add_argument("--rank", type=int, default=None, help="r̂ (default: true rank / 10)")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--init-scale", type=float, default=None, help="ε (default: problem's)")
    parser.add_argument("--max-iter", type=int, default=None, help="default 20000 (ratings: 2000)")
    parser.add_argument("--tol", type=float, default=None, help="default 1e-9 (ratings: 1e-4)")
    parser.add_argument("--check-every", type=int, default=25)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="compare-output")
    parser.add_argument(
        "--singular-values",
        action="store_true",
        help="also plot the top singular values of the end-to-end matrix over training",
    )
    parser.add_argument("--test-fraction", type=float, default=0.2, help="ratings hold-out")
    parser.add_argument("--cache-dir", default=None, help="folder of MovieLens releases")
    parser.add_argument("--verbose", type=int, default=1, help="progress bars (0 to hide)")
    parser.set_defaults(func=_cli)
    return parser

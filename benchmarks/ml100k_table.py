"""MovieLens-100K: an ablation of :class:`deepmc.RatingsCompletion`, and classical baselines.

Seeded random 80/20 splits of ``u.data`` (``Ratings.train_test_split(0.2, random_state=s)``).
Each ablation row is :class:`~deepmc.RatingsCompletion` with the defaults but for the
parameters it names; each baseline row is a library or our NumPy biased ALS
(``benchmarks/ml100k_baselines.py``). Every hyper-parameter a row chooses, it chooses on a
validation slice of the training ratings; the test ratings are only scored.

Usage::

    .venv/bin/python benchmarks/ml100k_table.py [--seeds 0 1 2 3 4] [--rows ROW ...]
        [--baselines NAME ...] [--data PATH_OR_NAME] [--download] [--threads N] [--per-seed]

``--data`` takes the path of ``u.data`` or a release name looked up as
:func:`deepmc.datasets.load_movielens` does (default ``ml-100k``: ``$DEEPMC_DATA`` or
``~/.cache/deepmc``); ``--download`` fetches the GroupLens archive there if it is absent.

Prints one line per (row, seed) as it goes (with ``--per-seed``), then a Markdown table:
test RMSE mean ± sample sd over the seeds, fit seconds (wall and CPU of this process, mean)
and gradient steps (all members, mean). Wall seconds depend on what else runs on the
machine; ratios between rows of one run, and step counts, are the comparable figures.
Rows whose optional library is not installed are skipped with a message.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ml100k_baselines import BASELINES, available

from deepmc import RatingsCompletion
from deepmc.datasets import load_movielens

COLUMNS = ["user", "item", "rating"]

#: The defaults before the row-weighted decay, the spectral init and the joint biases.
_EARLIER: dict[str, Any] = {
    "weight_decay": 0.0,
    "lr": 0.05,
    "n_iter_no_change": 30,
    "init": "parsimony",
    "joint_biases": False,
}

#: Step 1 of the path from the earlier defaults: lr 0.1, patience 15 (the speed settings).
_STEP1: dict[str, Any] = {"weight_decay": 0.0, "init": "parsimony", "joint_biases": False}
#: Step 2: step 1 + the row-weighted decay (λ = 0.01, α = 1).
_STEP2: dict[str, Any] = {"init": "parsimony", "joint_biases": False}

#: name -> (label, RatingsCompletion parameters that differ from the defaults).
ABLATION: dict[str, tuple[str, dict[str, Any]]] = {
    "previous": (
        "earlier defaults: one fit, rank 10",
        {"n_estimators": 1, "rank": 10, **_EARLIER},
    ),
    "previous5": ("earlier defaults: five members, rank 40", _EARLIER),
    "step1": ("earlier defaults with lr 0.1, patience 15", _STEP1),
    "step2": ("+ row-weighted decay (λ = 0.01, α = 1)", _STEP2),
    "step2-uniform": ("+ uniform decay instead (α = 0)", {**_STEP2, "decay_weighting": 0.0}),
    "step2-wd0.007": ("+ row-weighted decay, λ = 0.007", {**_STEP2, "weight_decay": 0.007}),
    "no-joint": ("no joint biases (joint_biases=False)", {"joint_biases": False}),
    "parsimony": ('parsimony init (init="parsimony")', {"init": "parsimony"}),
    "no-decay": ("no weight decay (weight_decay=0)", {"weight_decay": 0.0}),
    "uniform-decay": ("uniform weight decay (decay_weighting=0)", {"decay_weighting": 0.0}),
    "one-fit": ("one fit (n_estimators=1)", {"n_estimators": 1}),
    "rank10": ("rank 10", {"rank": 10}),
    "wd0.02": ("weight_decay=0.02", {"weight_decay": 0.02}),
    "slow": ("lr=0.05, n_iter_no_change=30", {"lr": 0.05, "n_iter_no_change": 30}),
    "depth2": ("depth 2", {"depth": 2}),
    "depth4": ("depth 4", {"depth": 4}),
    "bias-reg2": ("bias_reg=2", {"bias_reg": 2.0}),
    "float64": ("float64", {"dtype": "float64"}),
    "narrow": ("narrow network (width 2*rank)", {"network": "narrow"}),
    "jobs2": ("members in 2 processes (n_jobs=2)", {"n_jobs": 2}),
    "defaults": ("**defaults**", {}),
}


def load_split(
    data: str | Path, seed: int, download: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seeded 80/20 split of the ratings, as (train, test) frames with original ids."""
    ratings = load_movielens(data, download=download)
    train, test = ratings.train_test_split(0.2, random_state=seed)
    return train.frame[COLUMNS], test.frame[COLUMNS]


def rmse(pred: np.ndarray, test: pd.DataFrame) -> float:
    """Root mean squared error against ``test["rating"]``."""
    return float(np.sqrt(np.mean((pred - test["rating"].to_numpy()) ** 2)))


def run_ablation(row: str, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    """Fit one ablation row on ``train``; its test RMSE, seconds and steps."""
    model = RatingsCompletion(**ABLATION[row][1], random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start, cpu_start = time.perf_counter(), time.process_time()
        model.fit(train)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"rmse": -model.score(test), "seconds": seconds, "cpu": cpu, "steps": model.n_iter_}


def run_baseline(name: str, train: pd.DataFrame, test: pd.DataFrame, seed: int) -> dict:
    """Fit one baseline on ``train``; its test RMSE and seconds."""
    start, cpu_start = time.perf_counter(), time.process_time()
    predict = BASELINES[name][2](train, seed)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "rmse": rmse(predict(test), test),
        "seconds": seconds,
        "cpu": cpu,
        "steps": np.nan,
        "chosen": getattr(predict, "chosen", ""),
    }


def summarize(label: str, results: list[dict]) -> str:
    """One Markdown row: RMSE mean ± sd, seconds, CPU seconds, steps."""
    rm = np.array([r["rmse"] for r in results])
    sd = rm.std(ddof=1) if rm.size > 1 else 0.0
    steps = np.mean([r["steps"] for r in results])
    steps_text = "" if np.isnan(steps) else f"{steps:.0f}"
    return (
        f"| {label} | {rm.mean():.4f} ± {sd:.4f} | "
        f"{np.mean([r['seconds'] for r in results]):.1f} | "
        f"{np.mean([r['cpu'] for r in results]):.1f} | {steps_text} |"
    )


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--rows",
        nargs="*",
        default=["previous", "one-fit", "rank10", "defaults"],
        choices=list(ABLATION),
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=["mean", "biases", "als", "svd", "svdpp", "softimpute"],
        choices=list(BASELINES),
    )
    parser.add_argument("--data", default="ml-100k", help="u.data path or release name")
    parser.add_argument(
        "--download", action="store_true", help="fetch the GroupLens archive if absent"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--per-seed", action="store_true", help="print every (row, seed)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    baselines = []
    for name in args.baselines:
        reason = available(name)
        if reason:
            print(f"{BASELINES[name][0]}: {reason}", flush=True)
        else:
            baselines.append(name)
    jobs = [("ablation", r) for r in args.rows] + [("baseline", b) for b in baselines]
    results: dict[tuple[str, str], list[dict]] = {job: [] for job in jobs}
    for seed in args.seeds:
        train, test = load_split(args.data, seed, args.download)
        for kind, name in jobs:
            run = run_ablation if kind == "ablation" else run_baseline
            r = run(name, train, test, seed)
            results[(kind, name)].append(r)
            if args.per_seed:
                print(
                    f"seed {seed} | {name} | RMSE {r['rmse']:.4f} | {r['seconds']:.1f} s | "
                    f"CPU {r['cpu']:.1f} s | steps {r['steps']} {r.get('chosen', '')}",
                    flush=True,
                )
    print(f"\nMovieLens-100K, random 80/20 splits, seeds {args.seeds}\n")
    print("| model | test RMSE (mean ± sd) | fit s (wall) | fit s (CPU) | steps |")
    print("|---|---|---|---|---|")
    for kind, name in jobs:
        label = ABLATION[name][0] if kind == "ablation" else BASELINES[name][0]
        print(summarize(label, results[(kind, name)]))


if __name__ == "__main__":
    main()

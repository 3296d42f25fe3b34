"""MovieLens-100K: test RMSE and fit seconds of the three networks.

Seeded random 80/20 splits of ``u.data`` (``Ratings.train_test_split``); every network
goes through the same :class:`deepmc.RatingsCompletion` pipeline (biases, early stopping
on 10 % of the training ratings, clipping) with its defaults; only ``network`` changes.
The full-width network (width ``max(n_users, n_items)``, dense ``O(L·d³)`` steps) is
capped at ``--full-max-iter`` steps; its best state within the cap is kept.

Usage::

    .venv/bin/python benchmarks/ml100k_table.py [--seeds 0 1 2] [--networks ...]
        [--full-max-iter 300] [--data PATH] [--threads N]

Prints one Markdown row per (seed, network) as it goes, then the means. Wall seconds
depend on what else runs on the machine; CPU seconds (this process, all threads) less so.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from deepmc import RatingsCompletion
from deepmc.datasets import load_movielens

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
COLUMNS = ["user", "item", "rating"]


def run(seed: int, network: str, data: Path, full_max_iter: int) -> dict:
    train, test = load_movielens(data).train_test_split(0.2, random_state=seed)
    params = {"network": network, "random_state": seed}
    if network == "full":
        params["max_iter"] = full_max_iter
    model = RatingsCompletion(**params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start, cpu_start = time.perf_counter(), time.process_time()
        model.fit(train.frame[COLUMNS])
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu_start
    capped = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {
        "seed": seed,
        "network": network,
        "rmse": -model.score(test.frame[COLUMNS]),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n_iter": model.n_iter_,
        "best": model.best_iteration_,
        "stop": "max_iter cap" if capped else model.history_["event"].iloc[-1],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["compressed", "narrow", "full"],
        choices=["compressed", "narrow", "full"],
    )
    parser.add_argument("--full-max-iter", type=int, default=300)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print("| seed | network | test RMSE | fit s (wall) | fit s (CPU) | steps | best step | stop |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for seed in args.seeds:
        for network in args.networks:
            r = run(seed, network, args.data, args.full_max_iter)
            rows.append(r)
            print(
                f"| {r['seed']} | {r['network']} | {r['rmse']:.4f} | {r['seconds']:.1f} | "
                f"{r['cpu_seconds']:.1f} | "
                f"{r['n_iter']} | {r['best']} | {r['stop']} |",
                flush=True,
            )
    for network in args.networks:
        sel = [r for r in rows if r["network"] == network]
        print(
            f"| mean | {network} | {np.mean([r['rmse'] for r in sel]):.4f} | "
            f"{np.mean([r['seconds'] for r in sel]):.1f} | "
            f"{np.mean([r['cpu_seconds'] for r in sel]):.1f} | | | |"
        )


if __name__ == "__main__":
    main()

"""Folding new rows into a fitted network: ``transform`` of rows not seen in the fit.

A compressed network (rank bound 8) is fitted once on 1,000 rows of a rank-5, 200-column
matrix (30 % observed); the benchmark completes ``n_rows`` new rows of the same matrix,
30 % observed. ``time_transform`` is the whole call (input validation, the batched ridge
solve, the observed entries written back), ``time_fold_in`` the solve alone
(:func:`deepmc._foldin.fold_in` on validated observations).

Run directly, it prints the seconds of both for 10⁵ rows on two threads (median of five,
wall clock and CPU time of the process: on a shared machine the CPU time is the steadier
figure)::

    python -m benchmarks.bench_foldin
"""

from __future__ import annotations

import statistics
import time
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .common import PROFILE

N_ROWS = [100_000] if PROFILE == "regular" else [1_000]
N_COLS, TRUE_RANK, FRACTION, FIT_ROWS = 200, 5, 0.3, 1_000


def _setup(n_rows: int, max_iter: int) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """The fitted estimator, the new rows with holes, their truth and their observations."""
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc._validation import check_observations

    rng = np.random.default_rng(0)
    right = rng.standard_normal((TRUE_RANK, N_COLS))
    truth = rng.standard_normal((FIT_ROWS + n_rows, TRUE_RANK)) @ right
    X = np.where(rng.random(truth.shape) < FRACTION, truth, np.nan)
    est = CompressedDeepMatrixCompletion(rank=8, max_iter=max_iter, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X[:FIT_ROWS])
    new = X[FIT_ROWS:]
    return est, new, truth[FIT_ROWS:], check_observations(new)


class FoldIn:
    """``transform`` of ``n_rows`` new rows, and the batched solve alone."""

    param_names = ["n_rows"]
    params = [N_ROWS]
    processes = 1
    number = 1
    repeat = (3, 5, 60.0)
    warmup_time = 0
    timeout = 600

    def setup(self, n_rows: int) -> None:
        self.est, self.X, self.truth, self.obs = _setup(
            n_rows, 2000 if PROFILE == "regular" else 50
        )

    def time_transform(self, n_rows: int) -> None:
        self.est.transform(self.X)

    def time_fold_in(self, n_rows: int) -> None:
        from deepmc._foldin import fold_in, row_prior

        prior = row_prior(*self.est._factors())
        obs = self.obs
        fold_in(prior, obs.rows, obs.cols, obs.values, obs.shape[0], 0.0)

    def track_recovery_error(self, n_rows: int) -> float:
        out = self.est.transform(self.X)
        miss = np.isnan(self.X)
        return float(np.linalg.norm((out - self.truth)[miss]) / np.linalg.norm(self.truth[miss]))

    track_recovery_error.unit = "relative error"


def main(n_rows: int = 100_000, threads: int = 2, repeats: int = 5) -> None:
    """Print the median seconds of ``transform`` and of the solve alone on ``threads``."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        bench = FoldIn()
        bench.est, bench.X, bench.truth, bench.obs = _setup(n_rows, 2000)
        for name in ("time_fold_in", "time_transform"):
            seconds, cpu = [], []
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                getattr(bench, name)(n_rows)
                seconds.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            print(
                f"{name}: {n_rows} rows x {N_COLS} columns, {threads} threads: median "
                f"{statistics.median(seconds):.3f} s wall (min {min(seconds):.3f}, "
                f"max {max(seconds):.3f}), {statistics.median(cpu):.3f} s CPU"
            )
        print(f"relative error on the missing entries: {bench.track_recovery_error(n_rows):.2e}")


if __name__ == "__main__":
    main()

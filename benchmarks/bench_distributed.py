"""Throughput of the distributed fit: observations × steps per second, 1 vs 2 processes.

The data have the shape of problem C (MovieLens-20M: 138,493 × 26,744, r̂ = 10, L = 3)
but, by default, a tenth of its entries (2·10⁶ instead of 20,000,263; set
``DEEPMC_BENCH_DIST_N`` for more, and ``DEEPMC_BENCH_DIST_STEPS`` for another number of
steps than 40): a seeded, uniformly random pattern with rank-10 values, so that a run
fits in the memory a shared machine can spare. Each
configuration is a separate set of processes on the CPU (gloo), float32:

``"1x1"``
    one process, one thread — the single-process fit;
``"1x2"``
    one process, two threads;
``"2x1"``
    two ranks of one thread each, splitting the rows (one all-reduce per step).

The throughput counts only the gradient steps (the difference between the ``seconds``
of the first and last check of the history), not start-up or initialisation. All
configurations are measured one after the other by the first ``setup``, so their
ratios come from the same machine state. Run as a script
(``python -m benchmarks.bench_distributed``) it prints the table.

The ``fast`` profile (CI smoke runs) skips it: it spawns processes and takes a minute.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

PROFILE = os.environ.get("DEEPMC_BENCH_PROFILE", "regular")
SHAPE = (138_493, 26_744)
RANK, DEPTH = 10, 3
N_OBSERVED = int(os.environ.get("DEEPMC_BENCH_DIST_N", 2_000_000))
STEPS = int(os.environ.get("DEEPMC_BENCH_DIST_STEPS", 40))
CONFIGS = ["1x1", "1x2", "2x1"]


def _triplets(n_observed: int, seed: int = 0):
    """A seeded uniformly random pattern of C's shape with rank-``RANK`` values."""
    import numpy as np

    m, n = SHAPE
    rng = np.random.default_rng(seed)
    flat = np.unique(rng.integers(0, m * n, size=int(n_observed * 1.001), dtype=np.int64))
    flat = rng.permutation(flat)[:n_observed]
    flat.sort()
    rows, cols = flat // n, flat % n
    A = rng.standard_normal((m, RANK)).astype(np.float32)
    B = rng.standard_normal((n, RANK)).astype(np.float32)
    values = np.einsum("ij,ij->i", A[rows], B[cols])
    return rows, cols, values


def _worker(rank: int, world: int, threads: int, tmp: str, n_observed: int, steps: int) -> None:
    import datetime

    import numpy as np
    import torch
    import torch.distributed as dist

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{tmp}/rendezvous",
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=600),
        )
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed import fit, shard_observations

    est = CompressedDeepMatrixCompletion(
        rank=RANK, depth=DEPTH, max_iter=steps, check_every=steps, tol=0.0,
        init="spectral", dtype="float32", device="cpu", random_state=0,
    )  # fmt: skip
    rows, cols, values = _triplets(n_observed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if world == 1:  # the baseline is the estimator's own single-process fit
            history = est.fit((rows, cols, values, SHAPE)).history_
        else:
            shard = shard_observations((rows, cols, values, SHAPE))
            del rows, cols, values
            history = fit(est, shard).history
    seconds = history["seconds"].to_numpy()
    if rank == 0:
        rate = n_observed * steps / float(seconds[-1] - seconds[0])
        np.save(Path(tmp) / "rate.npy", np.array([rate, (seconds[-1] - seconds[0]) / steps]))
    if world > 1:
        dist.destroy_process_group()


def measure(config: str, n_observed: int = N_OBSERVED, steps: int = STEPS) -> dict[str, float]:
    """``{"rate": observations × steps / s, "step_seconds": s}`` of one configuration."""
    import numpy as np
    import torch.multiprocessing as mp

    world, threads = (int(x) for x in config.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(world, threads, tmp, n_observed, steps), nprocs=world)
        rate, step = np.load(Path(tmp) / "rate.npy")
    return {"rate": float(rate), "step_seconds": float(step)}


_RESULTS: dict[str, dict[str, float]] = {}


def measure_all() -> dict[str, dict[str, float]]:
    """Every configuration, measured once per process, one after the other."""
    if not _RESULTS:
        _RESULTS.update({config: measure(config) for config in CONFIGS})
    return _RESULTS


class DistributedThroughput:
    """Observations × steps per second of the distributed fit (see the module docstring).

    The first ``setup`` measures every configuration in turn, so that the ratios of
    ``track_speedup_over_one_thread`` come from one machine state.
    """

    param_names = ["config"]
    params = [CONFIGS]
    timeout = 1800
    processes = 1
    repeat = 1
    number = 1

    def setup(self, config: str) -> None:
        if PROFILE == "fast":
            raise NotImplementedError("the fast profile skips the distributed benchmark")
        self.results = measure_all()

    def track_observation_steps_per_second(self, config: str) -> float:
        return self.results[config]["rate"]

    track_observation_steps_per_second.unit = "observations x steps / s"

    def track_speedup_over_one_thread(self, config: str) -> float:
        return self.results[config]["rate"] / self.results["1x1"]["rate"]

    track_speedup_over_one_thread.unit = "ratio"


if __name__ == "__main__":
    t0 = time.perf_counter()
    results = measure_all()
    print(f"shape {SHAPE}, N = {N_OBSERVED:,}, r̂ = {RANK}, L = {DEPTH}, float32, {STEPS} steps")
    print(f"{'config':<8}{'step (s)':>10}{'obs x steps / s':>18}{'vs 1x1':>8}")
    for config, r in results.items():
        ratio = r["rate"] / results["1x1"]["rate"]
        print(f"{config:<8}{r['step_seconds']:>10.3f}{r['rate']:>18.3e}{ratio:>8.2f}")
    print(f"(total {time.perf_counter() - t0:.0f} s)")

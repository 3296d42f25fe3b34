"""Two fits at once: each one's time against the same fit alone (the loaded/quiet ratio).

A user runs deepmc beside other work: two fits in two processes, a grid search, a shared
server. On ``c`` cores two fits started together can each take up to twice the time of
one alone (fair share); much more means the threads of the two processes fight (OpenMP
workers spin-waiting for a descheduled sibling at every small parallel region).

Every worker process imports deepmc and builds its problem first, then waits for a
common start time, so only the fits overlap. Rounds alternate one fit alone and two
fits at once; each round prints the solo time, the two loaded times and the ratio
``max(loaded) / solo``; the summary is the median ratio over the rounds.

Usage::

    python benchmarks/loaded_ratio.py [--fit B|ratings] [--rounds 3] [--threads N]
        [--busy K] [--policy auto fixed] [--data PATH]

``--fit B`` is the default :class:`~deepmc.CompressedDeepMatrixCompletion` fit of
problem B (``deepmc.datasets.make_problem("B")``); ``--fit ratings`` the default
:class:`~deepmc.RatingsCompletion` on a seeded 80/20 split of MovieLens-100K ``u.data``.
``--threads N`` calls ``torch.set_num_threads(N)`` in the workers (default: torch's own
setting, what a user gets). ``--busy K`` adds ``K`` busy-looping processes to both the
solo and the loaded runs (another user's work on the machine).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
#: Seconds allowed for every worker to import and build its problem before the start.
_LEAD = 12.0


def _prepare(fit: str, data: Path):
    """The fit to time, as a no-argument callable (everything else done beforehand)."""
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    if fit == "B":
        from deepmc import CompressedDeepMatrixCompletion
        from deepmc.datasets import make_problem

        problem = make_problem("B", random_state=0)
        est = CompressedDeepMatrixCompletion(rank=problem.rank, random_state=0)
        return lambda: est.fit(problem.train)
    from deepmc import RatingsCompletion
    from deepmc.datasets import load_movielens

    train, _ = load_movielens(data).train_test_split(0.2, random_state=0)
    frame = train.frame[["user", "item", "rating"]]
    return lambda: RatingsCompletion(random_state=0).fit(frame)


def _worker(fit: str, data: str, start_at: float, threads: int | None, policy: str) -> None:
    """Build the fit, wait for ``start_at`` (``time.time()``), fit, print the seconds."""
    import deepmc  # noqa: I001 (first, as a user's script would: it sets libgomp's spin count)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    run = _prepare(fit, Path(data))
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    with deepmc.thread_limit(adaptive=policy == "auto"):
        run()
    print(json.dumps({"seconds": time.perf_counter() - t0}), flush=True)


def _spin() -> None:
    while True:
        pass


def _launch(
    fit: str, count: int, policy: str, data: Path = DEFAULT_DATA, threads: int | None = None
) -> list[float]:
    """``count`` workers started together; their fit seconds."""
    start_at = time.time() + _LEAD
    cmd = [sys.executable, __file__, "--worker", "--fit", fit, "--data", str(data)]
    cmd += ["--start-at", repr(start_at), "--policy", policy]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a worker failed: {outs}")
    return [json.loads(out.strip().splitlines()[-1])["seconds"] for out in outs]


def loaded_ratio(
    fit: str, policy: str = "auto", data: Path = DEFAULT_DATA, threads: int | None = None
) -> tuple[float, float, list[float]]:
    """One round: the solo seconds, the two loaded ones, and ``max(loaded) / solo``."""
    (solo,) = _launch(fit, 1, policy, data, threads)
    loaded = _launch(fit, 2, policy, data, threads)
    return max(loaded) / solo, solo, loaded


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", choices=["B", "ratings"], default="B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--busy", type=int, default=0)
    parser.add_argument(
        "--policy",
        nargs="+",
        choices=["auto", "fixed"],
        default=["auto"],
        help="thread policies to compare, alternated in every round: the automatic one, "
        "and 'fixed' (all available threads for large steps, thread_limit(adaptive=False))",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.fit, str(args.data), args.start_at, args.threads, args.policy[0])
        return
    busy = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    ratios: dict[str, list[float]] = {p: [] for p in args.policy}
    try:
        print(
            f"fit {args.fit}, {os.cpu_count()} CPUs, threads {args.threads or 'default'}, "
            f"{args.busy} busy processes"
        )
        for r in range(args.rounds):
            for policy in args.policy:
                ratio, solo, loaded = loaded_ratio(args.fit, policy, args.data, args.threads)
                ratios[policy].append(ratio)
                print(
                    f"round {r} {policy}: solo {solo:.2f} s | two at once {loaded[0]:.2f} s, "
                    f"{loaded[1]:.2f} s | ratio {ratios[policy][-1]:.2f}",
                    flush=True,
                )
    finally:
        for p in busy:
            p.terminate()
    for policy, values in ratios.items():
        values.sort()
        print(
            f"{policy}: loaded/quiet ratio (max of the two / solo) median "
            f"{values[len(values) // 2]:.2f}, range {values[0]:.2f}-{values[-1]:.2f} over "
            f"{len(values)} rounds"
        )


if __name__ == "__main__":
    main()

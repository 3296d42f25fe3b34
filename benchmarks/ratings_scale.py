"""Default :class:`~deepmc.RatingsCompletion` on MovieLens-shaped synthetic ratings at scale.

Shapes (users × items, ratings):

``1m``
    MovieLens-1M: 6,040 × 3,706, 1,000,209 ratings.
``20m``
    MovieLens-20M (the shape of ``make_problem("C")``): 138,493 × 26,744, 20,000,263
    ratings.

The table: user and item degrees follow power laws (a few users and items carry most
ratings, as in MovieLens), every (user, item) pair at most once, ratings
``clip(round(3.5 + b_u + b_i + u·v + noise), 1, 5)`` with a rank-10 taste ``u·v``. Its
test RMSE is printed for completeness; the figures this measures are the time per phase
and the peak memory (``psutil``: the resident set of this process, sampled every 0.1 s,
and the kernel's high-water mark where Linux gives it).

Phases: generating the table (not part of the fit); the fit, split into the set-up of
each member's network (validation, σ₁ and the spectral initialisation, everything before
its first step: the ``seconds`` of the first row of ``history_``), its gradient steps
and checks (the rest of its ``history_``), and what is outside the networks (ids,
duplicate check, biases, validation slices); predicting the held-out ratings.

Usage::

    python benchmarks/ratings_scale.py [--shape 1m|20m] [--seed 0] [--verbose]
"""

from __future__ import annotations

import argparse
import threading
import time
import warnings

import numpy as np
import pandas as pd
import psutil

from deepmc import RatingsCompletion
from deepmc._device import host_peak_kib, reset_host_peak

SHAPES = {"1m": (6_040, 3_706, 1_000_209), "20m": (138_493, 26_744, 20_000_263)}
#: Power-law exponents of the user and item propensities (rank^-a).
USER_EXPONENT, ITEM_EXPONENT = 0.5, 0.8
TASTE_RANK = 10


def _power_law(size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Sampling probabilities ``∝ (k + 1)^-exponent`` in a random order."""
    p = (np.arange(1, size + 1, dtype=np.float64)) ** -exponent
    return rng.permutation(p / p.sum())


def synthetic_ratings(
    n_users: int, n_items: int, n_ratings: int, seed: int = 0, chunk: int = 1 << 21
) -> pd.DataFrame:
    """A MovieLens-like table: power-law degrees, distinct pairs, ratings 1–5."""
    rng = np.random.default_rng(seed)
    pu = _power_law(n_users, USER_EXPONENT, rng)
    pi = _power_law(n_items, ITEM_EXPONENT, rng)
    keys = np.empty(0, dtype=np.int64)
    while keys.size < n_ratings:
        extra = max(2 * (n_ratings - keys.size), 100_000)
        users = rng.choice(n_users, size=extra, p=pu)
        items = rng.choice(n_items, size=extra, p=pi)
        keys = np.unique(np.concatenate([keys, users * np.int64(n_items) + items]))
    keys = rng.permutation(keys)[:n_ratings]
    users, items = np.divmod(keys, n_items)
    del keys
    U = rng.standard_normal((n_users, TASTE_RANK)).astype(np.float32) * 0.25
    V = rng.standard_normal((n_items, TASTE_RANK)).astype(np.float32) * 0.25
    bu = rng.normal(0, 0.4, n_users).astype(np.float32)
    bi = rng.normal(0, 0.5, n_items).astype(np.float32)
    ratings = np.empty(n_ratings, dtype=np.float32)
    for start in range(0, n_ratings, chunk):
        sl = slice(start, start + chunk)
        u, i = users[sl], items[sl]
        taste = np.einsum("ij,ij->i", U[u], V[i])
        noise = rng.normal(0, 0.8, u.size).astype(np.float32)
        ratings[sl] = 3.5 + bu[u] + bi[i] + taste + noise
    np.clip(np.round(ratings), 1, 5, out=ratings)
    return pd.DataFrame({"user": users, "item": items, "rating": ratings})


class PeakRSS:
    """Peak resident memory of this process, sampled by a thread (``psutil``)."""

    def __init__(self, every: float = 0.1) -> None:
        self.every, self.peak = every, 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="1m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="progress bars per member")
    args = parser.parse_args(argv)
    m, n, count = SHAPES[args.shape]
    t0 = time.perf_counter()
    table = synthetic_ratings(m, n, count, seed=args.seed)
    test = table.sample(frac=0.1, random_state=args.seed)
    train = table.drop(test.index)
    del table
    print(
        f"{args.shape}: {train.user.nunique():,} users × {train.item.nunique():,} items, "
        f"{len(train):,} training ratings; generated in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    model = RatingsCompletion(random_state=args.seed, verbose=int(args.verbose))
    exact = reset_host_peak()
    with warnings.catch_warnings(), PeakRSS() as rss:
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(train)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        rmse = -model.score(test)
        predict_s = time.perf_counter() - t0
    hwm = host_peak_kib(exact)
    nets = [net for net in model.networks_ if net is not None]
    setup = [float(net.history_["seconds"].iloc[0]) for net in nets]
    steps = [float(net.history_["seconds"].iloc[-1]) - s for net, s in zip(nets, setup)]
    for k, (net, a, b) in enumerate(zip(nets, setup, steps)):
        print(
            f"member {k}: set-up {a:.1f} s | {net.n_iter_} steps and checks {b:.1f} s "
            f"({1e3 * b / max(net.n_iter_, 1):.0f} ms/step) | best step {net.best_iteration_}"
        )
    outside = fit_s - sum(setup) - sum(steps)
    print(
        f"fit {fit_s:.1f} s (CPU {fit_cpu:.1f} s): set-up {sum(setup):.1f} s, steps "
        f"{sum(steps):.1f} s, outside the networks {outside:.1f} s | predict "
        f"{len(test):,} ratings {predict_s:.1f} s | test RMSE {rmse:.4f}"
    )
    hwm_text = f", high-water mark {hwm / 2**20:.2f} GiB" if hwm else ""
    print(f"peak resident memory {rss.peak / 2**30:.2f} GiB (psutil){hwm_text}")


if __name__ == "__main__":
    main()

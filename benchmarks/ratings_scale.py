"""Default :class:`~deepmc.RatingsCompletion` on MovieLens-shaped synthetic ratings at scale.

Shapes (users × items, ratings):

``1m``
    MovieLens-1M: 6,040 × 3,706, 1,000,209 ratings.
``5m``
    Half the users and half the items of ``20m`` at its density: 69,247 × 13,372,
    5,000,066 ratings (a quarter of the ratings, for profiling).
``20m``
    MovieLens-20M (the shape of ``make_problem("C")``): 138,493 × 26,744, 20,000,263
    ratings.

The table: user and item degrees follow power laws (a few users and items carry most
ratings, as in MovieLens), every (user, item) pair at most once, ratings
``clip(round(3.5 + b_u + b_i + u·v + noise), 1, 5)`` with a rank-10 taste ``u·v``
(factor entries of standard deviation ``--taste-scale``, 0.25: a taste of standard
deviation 0.2 under a noise of 0.8). It is built a chunk at a time with int32 ids and
float32 ratings. The figures this measures are the time per phase, the peak memory
(``psutil``: the resident set of this process, sampled every 0.1 s, and the kernel's
high-water mark of the whole run where Linux gives it) and the test RMSE of the fit
beside that of the biases alone (``μ + b_u + b_i``).

Phases: generating the table and splitting off the test ratings (not part of the fit);
the fit, split into the set-up of each member's network (validation, σ₁ and the
spectral initialisation, everything before its first step: the ``seconds`` of the first
row of ``history_``), its gradient steps and checks (the rest of its ``history_``), and
what is outside the networks (ids, duplicate check, biases, validation slices);
predicting the held-out ratings.

Measured (a shared 2-core machine, niced, ``OMP_NUM_THREADS=1``; the seconds measure
the other jobs as much as the fit): ``--shape 20m`` peaked at 1.35 GiB while generating
(3.9 GB before the table was built in chunks) and at 3.19 GiB for the whole run
(7.12 GiB before; the rise per ensemble member, ~0.84 GB, came from a reference cycle
that kept each member's kernels until a garbage collection, and from the heap glibc
kept after them); the fit took 362.8 s wall, 363.2 s CPU. Every member's best step is
0 at the defaults' taste: test RMSE 0.8308, biases alone 0.8308. That is the held-out
data's verdict, not a step size that stops too early: the top singular values of the
residual matrix ``s·P_Ω(R)`` fall smoothly (1, 0.96, 0.95, … 0.70 for the top 20, no
spike above the noise), and its rank-1 to rank-20 truncations, even shrunk by the
factor best on the test ratings, predict worse than the biases (0.8319 at best against
0.8308), and so do those of the degree-normalised matrix; the generator's own taste
would give 0.8105. With ``--taste-scale 0.5`` (a taste as strong as the noise) on a
quarter of the table at the same degrees (34,623 × 6,686, 5,000,066 ratings), one
member learns it: test RMSE 0.8192 against 1.0336 for the biases, best step 365 (205
since a member still improving at step 100 continues at twice the step). On the ``5m``
shape (20m's density) the default sat at step 0 even at taste 0.5 until ``λ`` of the
row-weighted decay was scaled down for its largest weights (~100): one member now
0.8778 against 1.0323, best step 420. The default taste stays 0.25: at 0.5 the network
gains ~0.15–0.2 over the biases, far more than the ~0.03 it gains on MovieLens-100K,
so 0.5 is not the more MovieLens-like table; it is the learnable case to check.
``--shape 1m``: best steps 45–50, test RMSE 0.8301 (biases 0.8303), peak 0.56 GiB
(0.72 GiB before).

Usage::

    python benchmarks/ratings_scale.py [--shape 1m|5m|20m] [--seed 0] [--taste-scale 0.25]
        [--verbose]
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
from deepmc.ratings import fit_biases

SHAPES = {
    "1m": (6_040, 3_706, 1_000_209),
    "5m": (69_247, 13_372, 5_000_066),
    "20m": (138_493, 26_744, 20_000_263),
}
#: Power-law exponents of the user and item propensities (rank^-a).
USER_EXPONENT, ITEM_EXPONENT = 0.5, 0.8
TASTE_RANK = 10
#: Standard deviation of the entries of the taste factors (the taste's is ``√rank · 0.25²``).
TASTE_SCALE = 0.25


def _power_law(size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Sampling probabilities ``∝ (k + 1)^-exponent`` in a random order."""
    p = (np.arange(1, size + 1, dtype=np.float64)) ** -exponent
    return rng.permutation(p / p.sum())


def _draws(cdf: np.ndarray, size: int, rng: np.random.Generator, chunk: int) -> np.ndarray:
    """``rng.choice(len(cdf), size, p=...)`` as int32, drawn ``chunk`` at a time.

    The same numbers as one ``rng.choice`` call (which draws ``size`` uniforms and looks
    them up in the cumulative distribution), without its ``size`` float64 uniforms and
    int64 indices at once.
    """
    out = np.empty(size, dtype=np.int32)
    for start in range(0, size, chunk):
        stop = min(start + chunk, size)
        out[start:stop] = cdf.searchsorted(rng.random(stop - start), side="right")
    return out


def _distinct_pairs(
    pu: np.ndarray, pi: np.ndarray, n_ratings: int, rng: np.random.Generator, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_ratings`` distinct (user, item) pairs drawn from ``pu × pi``, as int32.

    Pairs are drawn with replacement, in rounds, until ``n_ratings`` are distinct, and
    a random ``n_ratings`` of them kept. The keys ``user · n_items + item`` are sorted in
    place and deduplicated (rather than by ``np.unique`` of a concatenation, which
    copies them twice).
    """
    n_items = pi.shape[0]
    cdf_u, cdf_i = pu.cumsum(), pi.cumsum()
    cdf_u /= cdf_u[-1]
    cdf_i /= cdf_i[-1]
    keys = np.empty(0, dtype=np.int64)
    while keys.size < n_ratings:
        extra = max(2 * (n_ratings - keys.size), 100_000)
        users = _draws(cdf_u, extra, rng, chunk)
        base = keys.size
        new = np.empty(base + extra, dtype=np.int64)
        new[:base] = keys
        del keys
        for start in range(0, extra, chunk):
            stop = min(start + chunk, extra)
            part = new[base + start : base + stop]
            np.multiply(users[start:stop], n_items, out=part, dtype=np.int64)
            part += cdf_i.searchsorted(rng.random(stop - start), side="right")
        del users
        new.sort()
        keep = np.empty(new.size, dtype=bool)
        keep[0] = True
        np.not_equal(new[1:], new[:-1], out=keep[1:])
        keys = new[keep]
        del new, keep
    # rng.permutation(keys)[:n_ratings], through the permuted positions
    chosen = rng.permutation(keys.size)[:n_ratings]
    users = np.empty(n_ratings, dtype=np.int32)
    items = np.empty(n_ratings, dtype=np.int32)
    for start in range(0, n_ratings, chunk):
        sl = slice(start, start + chunk)
        u, i = np.divmod(keys[chosen[sl]], n_items)
        users[sl], items[sl] = u, i
    return users, items


def synthetic_ratings(
    n_users: int,
    n_items: int,
    n_ratings: int,
    seed: int = 0,
    chunk: int = 1 << 21,
    taste_scale: float = TASTE_SCALE,
) -> pd.DataFrame:
    """A MovieLens-like table: power-law degrees, distinct pairs, ratings 1–5.

    Built ``chunk`` ratings at a time, with int32 ids and float32 ratings: the table of
    20M ratings takes 240 MB.
    """
    rng = np.random.default_rng(seed)
    pu = _power_law(n_users, USER_EXPONENT, rng)
    pi = _power_law(n_items, ITEM_EXPONENT, rng)
    users, items = _distinct_pairs(pu, pi, n_ratings, rng, chunk)
    U = rng.standard_normal((n_users, TASTE_RANK)).astype(np.float32) * taste_scale
    V = rng.standard_normal((n_items, TASTE_RANK)).astype(np.float32) * taste_scale
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
    return pd.DataFrame({"user": users, "item": items, "rating": ratings}, copy=False)


def split(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(test, train)``: a random 10 % of the ratings and the rest, in table order.

    The rows of ``table.sample(frac=0.1, random_state=seed)`` and of ``table.drop`` of
    them, without the hash table of the labels ``drop`` builds.
    """
    n_test = round(0.1 * len(table))
    chosen = np.random.RandomState(seed).choice(len(table), size=n_test, replace=False)
    in_train = np.ones(len(table), dtype=bool)
    in_train[chosen] = False
    return table.iloc[chosen], table[in_train]


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


def biases_only_rmse(train: pd.DataFrame, test: pd.DataFrame) -> float:
    """Test RMSE of ``clip(μ + b_u + b_i)`` (:func:`~deepmc.ratings.fit_biases`, λ = 5).

    The baseline the network must beat: what the table's ratings owe to their user and
    item alone. An id absent from training gets a bias of 0.
    """
    users, rows = np.unique(train.user.to_numpy(), return_inverse=True)
    items, cols = np.unique(train.item.to_numpy(), return_inverse=True)
    ratings = train.rating.to_numpy()
    mean, user_bias, item_bias = fit_biases(rows, cols, ratings, (len(users), len(items)))
    pred = np.full(len(test), mean)
    for ids, labels, bias in ((test.user, users, user_bias), (test.item, items, item_bias)):
        where = pd.Index(labels).get_indexer(ids.to_numpy())
        pred[where >= 0] += bias[where[where >= 0]]
    pred = np.clip(pred, ratings.min(), ratings.max())
    return float(np.sqrt(np.mean((pred - test.rating.to_numpy()) ** 2)))


def _phase_seconds(seconds: np.ndarray) -> tuple[float, float]:
    """``(set-up, steps)`` seconds of a network's ``history_["seconds"]``.

    A member still improving after ``deepmc._ratings_fit.BOOST_AFTER`` steps is
    continued by a second, warm-started fit whose clock starts again: each run's first
    row is its set-up, the rest its steps and checks.
    """
    starts = np.flatnonzero(np.r_[True, seconds[1:] < seconds[:-1]])
    ends = np.r_[starts[1:] - 1, seconds.size - 1]
    return float(seconds[starts].sum()), float((seconds[ends] - seconds[starts]).sum())


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="1m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="progress bars per member")
    parser.add_argument(
        "--taste-scale",
        type=float,
        default=TASTE_SCALE,
        help="standard deviation of the taste factors' entries",
    )
    args = parser.parse_args(argv)
    m, n, count = SHAPES[args.shape]
    exact = reset_host_peak()
    t0 = time.perf_counter()
    with PeakRSS() as gen_rss:
        table = synthetic_ratings(m, n, count, seed=args.seed, taste_scale=args.taste_scale)
        test, train = split(table, args.seed)
        del table
    print(
        f"{args.shape}: {train.user.nunique():,} users × {train.item.nunique():,} items, "
        f"{len(train):,} training ratings; generated in {time.perf_counter() - t0:.1f} s, "
        f"peak resident memory {gen_rss.peak / 2**30:.2f} GiB",
        flush=True,
    )
    model = RatingsCompletion(random_state=args.seed, verbose=int(args.verbose))
    with warnings.catch_warnings(), PeakRSS() as rss:
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(train)
        fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        rmse = -model.score(test)
        predict_s = time.perf_counter() - t0
    baseline = biases_only_rmse(train, test)
    hwm = host_peak_kib(exact)
    nets = [net for net in model.networks_ if net is not None]
    setup, steps = zip(*(_phase_seconds(net.history_["seconds"].to_numpy()) for net in nets))
    for k, (net, a, b) in enumerate(zip(nets, setup, steps)):
        print(
            f"member {k}: set-up {a:.1f} s | {net.n_iter_} steps and checks {b:.1f} s "
            f"({1e3 * b / max(net.n_iter_, 1):.0f} ms/step) | best step {net.best_iteration_}"
        )
    outside = fit_s - sum(setup) - sum(steps)
    print(
        f"fit {fit_s:.1f} s (CPU {fit_cpu:.1f} s): set-up {sum(setup):.1f} s, steps "
        f"{sum(steps):.1f} s, outside the networks {outside:.1f} s | predict "
        f"{len(test):,} ratings {predict_s:.1f} s"
    )
    print(f"test RMSE {rmse:.4f} | biases only {baseline:.4f}")
    hwm_text = f"; the whole run's high-water mark {hwm / 2**20:.2f} GiB" if hwm else ""
    print(f"fit and predict: peak resident memory {rss.peak / 2**30:.2f} GiB (psutil){hwm_text}")


if __name__ == "__main__":
    main()

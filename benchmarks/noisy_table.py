"""Noisy matrices: the three networks' defaults against the usual baselines, one run.

Run from the repository root::

    python benchmarks/noisy_table.py            # the suite and the grid
    python benchmarks/noisy_table.py --quick    # the suite only, compressed and narrow

Every case is a spread-spectrum low-rank matrix (:func:`deepmc.datasets.low_rank_matrix`)
with Gaussian noise of relative level ν = noise RMS / signal RMS on the observed set
(uniform, or with power-law row and column degrees), and a rank bound given to the
methods (the compressed network's ``rank``, half the narrow network's width). Methods:

* ``compressed``, ``narrow``, ``full``: the estimators with their defaults;
* ``early-stop``: the compressed network with ``early_stopping=True``;
* ``softimpute``: nuclear-norm completion (Mazumder, Hastie & Tibshirani 2010), λ chosen
  on a validation slice of Ω (10 %) and refitted on all of Ω;
* ``als-r``, ``als-bound``: rank-r alternating least squares at the true rank and at the
  rank bound, ridge chosen on the same validation slice and refitted on all of Ω.

Printed: the relative error on the unobserved entries of each method as a ratio to the
best of the baselines (``softimpute``, ``als-r``, ``als-bound``, ``early-stop``), that best
error, the *oracle* (rank-r least squares at the true rank with the ridge tuned on the
unobserved entries themselves), the seconds of each network's fit, and the seconds of the
compressed network's default fit of the same matrix without noise, uniformly sampled
(``clean s``). A ``!``
marks a fit that warned.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deepmc.datasets import low_rank_matrix
from deepmc.models import make_estimator

#: Ridge values tried by the ALS baselines (relative to the mean squared entry × N / m).
RIDGES = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)
#: Fraction of Ω held out to choose the baselines' regularisation.
VALIDATION = 0.1
#: Compute budget of SoftImpute: λ values on the path and iterations per λ.
SOFT_PATH, SOFT_ITER = 12, 40


class Case(NamedTuple):
    shape: tuple[int, int]
    rank: int
    fraction: float
    noise: float
    bound: int
    sampling: str = "uniform"

    def label(self) -> str:
        m, n = self.shape
        return f"{m}x{n} r={self.rank} {self.fraction:.0%} nu={self.noise:g} bound={self.bound}" + (
            " power-law" if self.sampling == "power" else ""
        )


#: The suite of the report that motivated the noise handling.
SUITE = [
    Case((200, 150), 4, 0.25, 0.3, 12),
    Case((300, 300), 5, 0.15, 0.5, 10),
    Case((100, 100), 3, 0.40, 1.0, 9),
    Case((100, 100), 5, 0.30, 0.3, 10),
    Case((400, 200), 6, 0.20, 0.1, 6),
    Case((500, 300), 5, 0.10, 0.3, 15, "power"),
]
#: Levels 0.05–1.0, sampling 5–50 %, rank bound 1–4× the truth, both observed sets.
GRID = (
    [Case((200, 150), 4, f, nu, 8) for nu in (0.05, 0.3, 1.0) for f in (0.05, 0.15, 0.5)]
    + [Case((200, 150), 4, 0.25, 0.3, b) for b in (4, 16)]
    + [Case((200, 150), 4, 0.25, nu, 8, "power") for nu in (0.05, 0.3, 1.0)]
)


class Data(NamedTuple):
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    test_rows: np.ndarray
    test_cols: np.ndarray
    test_values: np.ndarray
    shape: tuple[int, int]


def make_case(case: Case, seed: int = 0) -> Data:
    """The observed entries (with noise) and the unobserved ones (without)."""
    rng = np.random.RandomState(seed)
    m, n = case.shape
    target = low_rank_matrix(case.shape, case.rank, random_state=rng)
    count = round(case.fraction * m * n)
    if case.sampling == "power":  # degrees ∝ (i + 1)^(−1/2) in a random order
        a = rng.permutation(1.0 / np.sqrt(np.arange(1, m + 1)))
        b = rng.permutation(1.0 / np.sqrt(np.arange(1, n + 1)))
        p = np.outer(a, b).ravel()
        flat = rng.choice(m * n, size=count, replace=False, p=p / p.sum())
    else:
        flat = rng.choice(m * n, size=count, replace=False)
    flat.sort()
    rows, cols = flat // n, flat % n
    values = target.entries(rows, cols)
    rms = np.linalg.norm(target.singular_values()) / np.sqrt(m * n)
    values = values + case.noise * rms * rng.standard_normal(count)
    observed = np.zeros(m * n, dtype=bool)
    observed[flat] = True
    test = np.flatnonzero(~observed)
    tr, tc = test // n, test % n
    return Data(rows, cols, values, tr, tc, target.entries(tr, tc), case.shape)


def relative_error(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(pred - truth) / np.linalg.norm(truth))


def als(rows, cols, values, shape, rank, ridge, n_iter=25, seed=0) -> tuple:
    """Rank-``rank`` alternating least squares with ridge ``ridge`` on each solve."""
    m, n = shape
    rng = np.random.RandomState(seed)
    U, V = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
    eye = np.eye(rank)

    def solve(F, idx, other, k):
        gram = np.zeros((k, rank, rank))
        rhs = np.zeros((k, rank))
        np.add.at(gram, idx, F[other][:, :, None] * F[other][:, None, :])
        np.add.at(rhs, idx, F[other] * values[:, None])
        return np.linalg.solve(gram + (ridge + 1e-12) * eye, rhs[..., None])[..., 0]

    for _ in range(n_iter):
        U = solve(V, rows, cols, m)
        V = solve(U, cols, rows, n)
    return U, V


def _split(d: Data, rng: np.random.RandomState) -> np.ndarray:
    return rng.rand(d.rows.shape[0]) < VALIDATION


def als_validated(d: Data, rank: int, seed: int = 0) -> np.ndarray:
    """ALS with the ridge chosen on a validation slice of Ω, refitted on all of Ω."""
    val = _split(d, np.random.RandomState(seed + 1))
    tr = ~val
    scale = float(np.mean(d.values**2)) * d.rows.shape[0] / d.shape[0]
    best = None
    for ridge in RIDGES:
        U, V = als(d.rows[tr], d.cols[tr], d.values[tr], d.shape, rank, ridge * scale)
        err = relative_error(np.einsum("ij,ij->i", U[d.rows[val]], V[d.cols[val]]), d.values[val])
        if best is None or err < best[0]:
            best = (err, ridge)
    U, V = als(d.rows, d.cols, d.values, d.shape, rank, best[1] * scale)
    return np.einsum("ij,ij->i", U[d.test_rows], V[d.test_cols])


def als_oracle(d: Data, rank: int) -> float:
    """Rank-r ALS with the ridge tuned on the unobserved entries (a lower reference)."""
    scale = float(np.mean(d.values**2)) * d.rows.shape[0] / d.shape[0]
    errs = []
    for ridge in RIDGES:
        U, V = als(d.rows, d.cols, d.values, d.shape, rank, ridge * scale)
        errs.append(relative_error(np.einsum("ij,ij->i", U[d.test_rows], V[d.test_cols]),
                                   d.test_values))  # fmt: skip
    return min(errs)


def soft_impute_path(rows, cols, values, shape, lambdas) -> list[np.ndarray]:
    """SoftImpute ``Z ← SVT_λ(P_Ω(Y) + P_Ωᶜ(Z))`` along ``lambdas`` (warm starts)."""
    Z = np.zeros(shape)
    out = []
    for lam in lambdas:
        for _ in range(SOFT_ITER):
            filled = Z.copy()
            filled[rows, cols] = values
            u, s, vt = np.linalg.svd(filled, full_matrices=False)
            Z = (u * np.maximum(s - lam, 0.0)) @ vt
        out.append(Z)
    return out


def soft_impute_validated(d: Data, seed: int = 0) -> np.ndarray:
    """SoftImpute with λ chosen on a validation slice of Ω, refitted on all of Ω."""
    val = _split(d, np.random.RandomState(seed + 1))
    tr = ~val
    filled = np.zeros(d.shape)
    filled[d.rows, d.cols] = d.values
    top = np.linalg.norm(filled, 2)
    lambdas = top * np.geomspace(0.9, 0.01, SOFT_PATH)
    path = soft_impute_path(d.rows[tr], d.cols[tr], d.values[tr], d.shape, lambdas)
    errs = [relative_error(Z[d.rows[val], d.cols[val]], d.values[val]) for Z in path]
    best = int(np.argmin(errs))
    Z = soft_impute_path(d.rows, d.cols, d.values, d.shape, lambdas[: best + 1])[-1]
    return Z[d.test_rows, d.test_cols]


def network(d: Data, method: str, bound: int, **params: Any) -> tuple[np.ndarray, float, bool]:
    """The default fit of ``method``: predictions, seconds, whether it warned."""
    est = make_estimator(method, rank=bound, random_state=0, **params)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit((d.rows, d.cols, d.values, d.shape))
    seconds = time.perf_counter() - t0
    return est.predict_entries(d.test_rows, d.test_cols), seconds, bool(caught)


def run_case(case: Case, methods: list[str]) -> dict[str, Any]:
    """Every method on ``case``: errors (relative, unobserved entries), seconds, warnings."""
    d = make_case(case)
    res: dict[str, Any] = {"oracle": als_oracle(d, case.rank)}
    baselines = {
        "softimpute": lambda: soft_impute_validated(d),
        "als-r": lambda: als_validated(d, case.rank),
        "als-bound": lambda: als_validated(d, case.bound),
        "early-stop": lambda: network(d, "compressed", case.bound, early_stopping=True)[0],
    }
    for name, run in baselines.items():
        res[name] = relative_error(run(), d.test_values)
    clean = make_case(case._replace(noise=0.0, sampling="uniform"))
    res["clean_s"] = network(clean, "compressed", case.bound)[1]
    for method in methods:
        if method == "full" and case.shape[0] * case.shape[1] > 40_000:
            continue  # O(L·d³) a step: the full width is measured on the small cases
        pred, seconds, warned = network(d, method, case.bound)
        res[method] = relative_error(pred, d.test_values)
        res[f"{method}_s"], res[f"{method}_w"] = seconds, warned
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the suite only, no full width")
    args = parser.parse_args(argv)
    cases = SUITE if args.quick else SUITE + GRID
    methods = ["compressed", "narrow"] + ([] if args.quick else ["full"])
    base = ["softimpute", "als-r", "als-bound", "early-stop"]
    head = " | ".join(f"{m:>14}" for m in methods) + " | " + " | ".join(f"{b:>10}" for b in base)
    print(f"{'case':<44} | {'best':>6} | {'oracle':>6} | {head} | clean s")
    worst = {m: 0.0 for m in methods}
    for case in cases:
        res = run_case(case, methods)
        best = min(res[b] for b in base)
        cells = []
        for m in methods:
            if m not in res:
                cells.append(f"{'—':>14}")
                continue
            worst[m] = max(worst[m], res[m] / res["oracle"])
            mark = "!" if res[f"{m}_w"] else " "
            cells.append(f"{res[m] / best:5.2f}{mark} {res[f'{m}_s']:5.1f} s ")
        cells += [f"{res[b] / best:10.2f}" for b in base] + [f"{res['clean_s']:5.1f} s"]
        print(f"{case.label():<44} | {best:6.3f} | {res['oracle']:6.3f} | " + " | ".join(cells),
              flush=True)  # fmt: skip
    print("worst ratio to the oracle: " + ", ".join(f"{m} {v:.2f}" for m, v in worst.items()))


if __name__ == "__main__":
    main()

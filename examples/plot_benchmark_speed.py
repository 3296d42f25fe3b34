"""
================================
Benchmarking speed on CPU / CUDA
================================

How much cheaper is a step of the compressed network than a step of the full-width
network, as the matrix grows? This example times gradient steps of each network on
square rank-5 problems with 20 % of the entries observed, on the CPU and, when PyTorch
sees one, on a CUDA device (the CUDA runs are skipped otherwise).

The time per step is read from ``history_``: its ``seconds`` column is the fit's wall
clock at each check, so the difference between the last and the first check, divided by
the steps in between, leaves the initialisation out. Each figure is the median of three
fits: on a shared machine a single fit can be slowed several-fold by other processes,
enough to make a larger problem look faster than a smaller one. Timings depend on the
machine and its load: compare the networks within one run, as ratios.

To keep the documentation build under a minute, this is a small case: the full-width
network is timed up to 400 × 400 (its step costs O(L·d³); at 2000 × 2000 a few hundred
steps take tens of minutes) and the compressed one up to 1600 × 1600, a few steps
each. Larger problems (problem B, 1000 × 1000, where a compressed step is about 100×
cheaper than a full-width one, and MovieLens-sized shapes) are measured by
``benchmarks/speed_table.py`` and the asv suite in ``benchmarks/``: their figures are in
the README's *Speed* section and the :doc:`performance notes </performance>`.
"""

# %%
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning

from deepmc.datasets import make_problem
from deepmc.models import make_estimator

# The documentation build sets DEEPMC_DOCS_QUICK=1 for a short run.
QUICK = os.environ.get("DEEPMC_DOCS_QUICK") == "1"
SIZES = {
    "full": [100, 200] if QUICK else [100, 200, 400],
    "compressed": [100, 200, 400] if QUICK else [100, 200, 400, 800, 1600],
}
STEPS = {"full": 6, "compressed": 30}  # steps timed per fit
REPEATS = 1 if QUICK else 3  # fits per figure; the median is kept

devices = ["cpu"]
if torch.cuda.is_available():
    devices.append("cuda")
else:
    print("No CUDA device: timing the CPU only.")


def seconds_per_step(method: str, size: int, device: str) -> float:
    """Seconds per gradient step of ``method`` on a ``size × size`` rank-5 problem."""
    problem = make_problem(shape=(size, size), rank=5, fraction=0.2, random_state=0)
    steps = STEPS[method]
    times = []
    for _ in range(REPEATS):
        est = make_estimator(
            method,
            rank=5,
            max_iter=steps,
            tol=0.0,  # never stop early: time exactly `steps` steps
            check_every=steps // 2,
            device=device,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(problem.train)  # triplets: no dense copy of the input
        h = est.history_
        times.append(
            (h["seconds"].iloc[-1] - h["seconds"].iloc[0])
            / (h["iteration"].iloc[-1] - h["iteration"].iloc[0])
        )
    return float(np.median(times))


# %%
# Time the steps
# --------------
# Before timing, one tiny fit per device and network pays the one-time start-up (kernel
# dispatch, thread pools, the CUDA context).
for device in devices:
    tiny = make_problem(shape=(20, 20), rank=1, fraction=0.5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for method in ("full", "compressed"):
            make_estimator(method, rank=1, max_iter=3, device=device).fit(tiny.train)

rows = [
    {
        "device": device,
        "size": size,
        "method": method,
        "ms per step": 1e3 * seconds_per_step(method, size, device),
    }
    for device in devices
    for method, sizes in SIZES.items()
    for size in sizes
]
table = pd.DataFrame(rows).pivot_table(
    index=["device", "size"], columns="method", values="ms per step"
)
table["full / compressed"] = table["full"] / table["compressed"]
print(table.to_string(float_format="%.3g", na_rep="-"))

# %%
# Cost per step against size
# --------------------------
# A full-width step costs O(L·d³); a compressed step O(N·r̂ + (m + n)·r̂²), linear in
# the number of observed entries N, here 0.2·d². On a log-log plot the slopes show it:
# about 3 for the full-width network, about 2 for the compressed one once the fixed
# cost of a step's few dozen small kernels no longer dominates (below ~400 × 400).
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for device in devices:
    sub = table.loc[device]
    for method, style in (("full", "o-"), ("compressed", "s-")):
        points = sub[method].dropna()
        ax.loglog(points.index, points, style, label=f"{method} ({device})")
ax.set_xlabel("matrix size m = n")
ax.set_ylabel("milliseconds per step (median of fits)")
ax.legend()
plt.show()

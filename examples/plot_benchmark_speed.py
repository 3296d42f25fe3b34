"""
================================
Benchmarking speed on CPU / CUDA
================================

How much cheaper is a step of the compressed network than a step of the full-width
network, as the matrix grows? This example times a fixed number of gradient steps of
each network on square problems of growing size, on the CPU and, when PyTorch sees one,
on a CUDA device (the CUDA runs are skipped otherwise).

The time per step is read from ``history_``: its ``seconds`` column is the fit's wall
clock at each check, so the difference between the last and the first check, divided by
the steps in between, leaves the initialisation out. Timings depend on the machine and
its load: compare the networks within one run, as ratios. For systematic measurements
use the asv suite in ``benchmarks/`` (see ``CONTRIBUTING.md``).
"""

# %%
import os
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import torch
from sklearn.exceptions import ConvergenceWarning

from deepmc.datasets import make_problem
from deepmc.models import make_estimator

# The documentation build sets DEEPMC_DOCS_QUICK=1 for a short run.
QUICK = os.environ.get("DEEPMC_DOCS_QUICK") == "1"
SIZES = [100, 200, 300] if QUICK else [100, 300, 1000, 2000]
STEPS = 50 if QUICK else 200

devices = ["cpu"]
if torch.cuda.is_available():
    devices.append("cuda")
else:
    print("No CUDA device: timing the CPU only.")


def seconds_per_step(method: str, size: int, device: str) -> float:
    """Seconds per gradient step of ``method`` on a ``size × size`` rank-5 problem."""
    problem = make_problem(shape=(size, size), rank=5, fraction=0.2, random_state=0)
    est = make_estimator(
        method,
        rank=5,
        max_iter=STEPS,
        tol=0.0,  # never stop early: time exactly STEPS steps
        check_every=STEPS // 5,
        device=device,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(problem.train)  # triplets: no dense copy of the input
    h = est.history_
    return (h["seconds"].iloc[-1] - h["seconds"].iloc[0]) / (
        h["iteration"].iloc[-1] - h["iteration"].iloc[0]
    )


# %%
# Time the steps
# --------------
# Before timing, one tiny fit per device pays the one-time start-up (kernel dispatch,
# thread pools, the CUDA context).
for device in devices:
    tiny = make_problem(shape=(20, 20), rank=1, fraction=0.5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        make_estimator("compressed", rank=1, max_iter=3, device=device).fit(tiny.train)

rows = []
for device in devices:
    for size in SIZES:
        for method in ("full", "compressed"):
            rows.append(
                {
                    "device": device,
                    "size": size,
                    "method": method,
                    "ms per step": 1e3 * seconds_per_step(method, size, device),
                }
            )
table = pd.DataFrame(rows).pivot_table(
    index=["device", "size"], columns="method", values="ms per step"
)
table["full / compressed"] = table["full"] / table["compressed"]
print(table.to_string(float_format="%.3g"))

# %%
# Cost per step against size
# --------------------------
# A full-width step costs O(L·d³); a compressed step O(N·r̂ + (m + n)·r̂²), linear in
# the number of observed entries. On a log-log plot the slopes show it.
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for device in devices:
    sub = table.loc[device]
    for method, style in (("full", "o-"), ("compressed", "s-")):
        ax.loglog(sub.index, sub[method], style, label=f"{method} ({device})")
ax.set_xlabel("matrix size m = n")
ax.set_ylabel("milliseconds per step")
ax.legend()
plt.show()

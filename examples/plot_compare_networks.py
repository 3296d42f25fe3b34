"""
==========================================
Full-width, narrow and compressed networks
==========================================

The same completion problem fitted by the four networks deepmc can train, from the same
seed, with the held-out error recorded at every check:

* the **full-width** network (width ``d = max(m, n)``), the over-parameterised model
  the theory is about;
* the **narrow** network (width ``2 r̂``, random orthogonal initialisation);
* the **compressed** network ``U · W̃_L ⋯ W̃_1 · Vᵀ`` with its factors trained at a
  discrepant learning rate (Kwon et al., AISTATS 2024);
* the compressed network with **frozen factors** (``factor_lr_ratio=0``).

This is the experiment of Kwon et al. on their 100 × 100, rank-5, 30 %-observed problem,
with their initial scale ε = 0.01 (``problem.init_scale``; the estimators' default,
``init_scale="auto"``, starts larger and gets there in fewer steps, as ``deepmc demo``
and ``deepmc compare`` show).
Things to look for in the table and the curves: whether the compressed network reaches
the full-width network's error in a comparable number of iterations (the law of
parsimony says it follows the same trajectory, up to the initialisation of its
factors); how the narrow network, of the same width as the compressed one, compares;
and the stall of the compressed network when its factors are frozen (``γ = 0``). On a
problem this small a full-width step is cheap too; the gap in cost per step opens with
the size of the matrix (see the benchmarking example).
"""

# %%
import os
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from deepmc.datasets import make_problem
from deepmc.models import make_estimator

# The documentation build sets DEEPMC_DOCS_QUICK=1 for a short run.
QUICK = os.environ.get("DEEPMC_DOCS_QUICK") == "1"
MAX_ITER = 3_000 if QUICK else 30_000

problem = make_problem("A", random_state=0)
X = problem.observed_dense()

# %%
# Fit every network
# -----------------
# :func:`deepmc.models.make_estimator` turns a method name into an estimator; the narrow
# network has width ``2 * rank``. The seed fixes the initialisation, so the full-width
# and compressed networks start from the same end-to-end matrix.
methods = ["full", "narrow", "compressed", "compressed-no-dlr"]
histories = {}
summary = []
for method in methods:
    est = make_estimator(
        method,
        rank=problem.rank,
        depth=problem.depth,
        init_scale=problem.init_scale,
        max_iter=MAX_ITER,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the narrow network may need more
        est.fit(X, eval_set=problem.eval_set())
    histories[method] = est.history_
    summary.append(
        {
            "method": method,
            "iterations": est.n_iter_,
            "seconds": est.history_["seconds"].iloc[-1],
            "recovery error": problem.recovery_error(est),
        }
    )
print(pd.DataFrame(summary).to_string(index=False, float_format="%.3g"))

# %%
# Error against iterations and against time
# -----------------------------------------
# The time axis is the fit's wall clock without the time spent evaluating ``eval_set``.
fig, (ax_it, ax_s) = plt.subplots(1, 2, figsize=(10, 4), sharey=True, layout="constrained")
for method, history in histories.items():
    ax_it.semilogy(history["iteration"], history["eval_error"], label=method)
    ax_s.semilogy(history["seconds"], history["eval_error"], label=method)
ax_it.set_xlabel("iteration")
ax_s.set_xlabel("seconds")
ax_it.set_ylabel("relative recovery error")
ax_it.legend()
fig.suptitle(
    f"problem A: {problem.shape[0]}×{problem.shape[1]}, rank {problem.rank}, 30 % observed"
)
plt.show()

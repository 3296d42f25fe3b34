"""
===========
Quick start
===========

Complete a partially observed low-rank matrix with the compressed deep network, check
the error on the entries it never saw, and look at the history of the fit.
"""

# %%
# A low-rank matrix with missing entries
# --------------------------------------
# :func:`deepmc.datasets.make_problem` builds seeded test problems. Problem ``"A"`` is a
# 100 × 100 matrix of rank 5 with 30 % of its entries observed, the problem of Kwon et
# al. (AISTATS 2024). ``observed_dense()`` is the input a user would have: a NumPy array
# with ``np.nan`` where an entry is missing.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from deepmc import CompressedDeepMatrixCompletion
from deepmc.datasets import make_problem

problem = make_problem("A", random_state=0)
X = problem.observed_dense()
print(f"shape {X.shape}, observed entries: {np.isfinite(X).mean():.0%}")

# %%
# Fit and complete
# ----------------
# ``rank`` is r̂, an over-estimate of the rank; the learning rates and the initialisation
# scale are chosen from the data (``"auto"``). ``eval_set`` passes the held-out entries
# with their true values: their error is recorded during the fit but never used by it.
est = CompressedDeepMatrixCompletion(rank=5, random_state=0)
completed = est.fit_transform(X, eval_set=problem.eval_set())

observed = np.isfinite(X)
print(f"{est.n_iter_} gradient steps, stopped by: {est.history_['event'].iloc[-1]!r}")
print(f"observed entries kept exactly: {np.array_equal(completed[observed], X[observed])}")
print(f"relative error on the unobserved entries: {problem.recovery_error(est):.2e}")

# %%
# Single entries without forming the completed matrix
# ---------------------------------------------------
# For large matrices, ask for the entries you need: the compressed network computes
# them as row-wise products of its factors.
rows, cols = np.array([0, 1, 2]), np.array([3, 4, 5])
print(est.predict_entries(rows, cols))
print(problem.target.entries(rows, cols))

# %%
# DataFrames keep their labels
# ----------------------------
# With ``set_output(transform="pandas")`` the completed matrix comes back as a DataFrame
# with the index and columns of the input, like any scikit-learn transformer.
frame = pd.DataFrame(
    X,
    index=[f"user {i}" for i in range(X.shape[0])],
    columns=[f"item {j}" for j in range(X.shape[1])],
)
labelled = CompressedDeepMatrixCompletion(rank=5, random_state=0).set_output(transform="pandas")
print(labelled.fit_transform(frame).iloc[:3, :4])

# %%
# The history of the fit
# ----------------------
# ``history_`` is a DataFrame with one row per check: the training loss, the relative
# change of the fitted values that the stop rule compares with ``tol``, and the held-out
# errors. The long flat start is the plateau of small initialisation: gradient descent
# picks up the singular directions of the matrix one after another.
history = est.history_
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
ax.semilogy(history["iteration"], history["eval_error"], label="held-out relative error")
ax.semilogy(history["iteration"], history["residual"], label="training residual")
ax.set_xlabel("iteration")
ax.set_ylabel("relative error")
ax.legend()
plt.show()

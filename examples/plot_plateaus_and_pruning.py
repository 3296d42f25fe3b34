"""
==========================================
Saddle plateaus, the stop rule and pruning
==========================================

From a small initialisation, a deep linear network learns the singular directions of
its target one after another (incremental learning). Between two of them it sits on a
saddle: the loss is flat and the fitted values barely move, although one direction is
still missing. A stop rule that only watches the fitted values calls this plateau
*converged*.

This example fits a fully observed rank-2 matrix with singular values ``(1, 0.3)``
three ways with :class:`~deepmc.CompressedDeepMatrixCompletion`:

* plain gradient descent (``solver="gd"``, the papers' method) from ``ε = 0.01``,
  with a step budget that ends on the plateau: the fit warns instead of reporting
  convergence;
* the same, run to the end: it crosses the plateau and floors at about ``ε^L``;
* the default (``solver="auto"``): it finds the spectral gap, prunes the spurious
  directions and polishes the exact low-rank solution in a fraction of the steps.
"""

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np

from deepmc import CompressedDeepMatrixCompletion

rng = np.random.default_rng(0)
left = np.linalg.qr(rng.standard_normal((60, 2)))[0]
right = np.linalg.qr(rng.standard_normal((50, 2)))[0]
X = left @ np.diag([1.0, 0.3]) @ right.T  # every entry observed


def relative_error(est):
    """Relative error of the fitted network's X̂ (``predict_entries`` on every entry)."""
    fitted = est.predict_entries(*np.indices(X.shape).reshape(2, -1)).reshape(X.shape)
    return np.linalg.norm(fitted - X) / np.linalg.norm(X)


# %%
# Stopped on the plateau: a warning, not "converged"
# --------------------------------------------------
# With 700 steps, plain gradient descent has learned the first direction and is on
# the saddle before the second. The fitted values have settled (their relative change
# is below ``tol``), but the residual still has a direction of singular value 0.3
# outside the learned one, so the fit warns and says what is left.
short = CompressedDeepMatrixCompletion(rank=2, solver="gd", init_scale=0.01, max_iter=700)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    short.set_params(random_state=0).fit(X)
print(f"error after {short.n_iter_} steps: {relative_error(short):.2f}")
for w in caught:
    print(f"{w.category.__name__}: {w.message}")

# %%
# Run to the end: plain gradient descent and the default
# ------------------------------------------------------
gd = CompressedDeepMatrixCompletion(
    rank=2, solver="gd", init_scale=0.01, tol=1e-8, random_state=0
).fit(X)
default = CompressedDeepMatrixCompletion(rank=2, tol=1e-8, random_state=0).fit(X)
for name, est in (("plain GD, eps = 0.01", gd), ("default (prune and polish)", default)):
    print(f"{name:>28}: {est.n_iter_:5d} steps, error {relative_error(est):.1e}")

# %%
# The default fit's history records what it did and when:
events = default.history_.loc[default.history_["event"] != "", ["iteration", "residual", "event"]]
print(events.to_string(index=False))

# %%
# Residual and change along the fits
# ----------------------------------
# Left: the relative training residual. Plain gradient descent sits at 0.29 (the
# missing direction, ``0.3 / ‖(1, 0.3)‖``) for hundreds of steps, then learns the second
# direction and floors near ``ε^L``. The default fit re-balances the learned directions
# once they are in the linear regime, prunes at the spectral gap and polishes.
# Right: the relative change of the fitted values between checks, which the stop rule
# compares with ``tol``: on the plateau it falls below the default ``tol = 1e-6`` long
# before the fit is done, which is why the rule also reads the residual's spectrum.
fig, (ax_res, ax_change) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for name, est, color in (("plain GD (ε = 0.01)", gd, "tab:blue"), ("default", default, "tab:red")):
    h = est.history_
    ax_res.semilogy(h["iteration"], h["residual"], color=color, label=name)
    ax_change.semilogy(h["iteration"][1:], h["change"][1:], color=color, label=name)
for _, row in events.iterrows():
    ax_res.axvline(row["iteration"], color="tab:red", ls=":", lw=0.8)
ax_res.set(xlabel="iteration", ylabel="relative training residual")
ax_change.axhline(1e-6, color="k", ls="--", lw=0.8, label="default tol")
ax_change.set(xlabel="iteration", ylabel="relative change between checks")
ax_res.legend()
ax_change.legend()
plt.show()

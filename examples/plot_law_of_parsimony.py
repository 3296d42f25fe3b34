"""
====================
The law of parsimony
====================

Yaras et al. (2023, arXiv:2306.01154) observe that gradient descent on a deep linear
network from a small orthogonal initialisation moves each weight matrix only inside a
subspace of dimension ``2r``: of the ``d`` singular values of every layer, ``d − 2r`` stay
equal to each other all along training, while at most ``2r`` of them change.

This example trains a full-width network of depth 3 to factorise a fully observed
rank-3 matrix and records the singular values of each layer every few steps, by
continuing the fit in short warm-started chunks (``warm_start=True`` continues gradient
descent exactly where it stopped).
"""

# %%
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from deepmc import DeepMatrixCompletion
from deepmc.datasets import make_problem

rank, depth = 3, 3
problem = make_problem(shape=(40, 40), rank=rank, fraction=1.0, random_state=0)
X = problem.observed_dense()  # every entry observed: deep matrix factorisation

est = DeepMatrixCompletion(
    depth=depth, init_scale=0.1, max_iter=20, tol=0.0, warm_start=True, random_state=0
)
iterations, spectra = [], []
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # each chunk stops at max_iter
    for _ in range(40):
        est.fit(X)
        iterations.append(est.n_iter_)
        spectra.append([np.linalg.svd(W, compute_uv=False) for W in est.weights_])
spectra = np.array(spectra)  # (checkpoint, layer, singular value)
print(f"{est.n_iter_} steps, relative training residual {est.history_['residual'].iloc[-1]:.1e}")

# %%
# Which singular values move
# --------------------------
# A singular value *moves* if at some checkpoint it leaves the bulk, i.e. differs from the
# median singular value of its layer by more than 1e-6 (relative); the others are the
# static bulk. The law of parsimony says at most ``2r = 6`` per layer move: here 3 grow to
# fit the matrix and 3 fall below the bulk, while the remaining ``d − 2r = 34`` stay
# equal to each other and shrink together. The classification is by motion, not by
# position in the sorted spectrum: the moving values sit at both ends of it.
median = np.median(spectra, axis=2, keepdims=True)
moving = (np.abs(spectra - median) > 1e-6 * median).any(axis=0)  # (layer, index)
for layer in range(depth):
    print(f"W_{layer + 1}: {moving[layer].sum()} singular values move (2r = {2 * rank})")

fig, axes = plt.subplots(1, depth, figsize=(12, 3.8), sharey=True, layout="constrained")
for layer, ax in enumerate(axes):
    ax.semilogy(iterations, spectra[:, layer, ~moving[layer]], color="tab:blue", lw=0.8)
    ax.semilogy(iterations, spectra[:, layer, moving[layer]], color="tab:red", lw=1.2)
    ax.set_title(
        f"$W_{layer + 1}$: {moving[layer].sum()} moving (red), "
        f"{(~moving[layer]).sum()} static (blue)"
    )
    ax.set_xlabel("iteration")
axes[0].set_ylabel("singular values (normalised units)")
plt.show()

# %%
# How many singular values stay together?
# ---------------------------------------
# At the end of training, count the singular values of each layer that are equal (to
# 1e-6, relative) to the median one: the law of parsimony says ``d − 2r`` at least.
d = spectra.shape[2]
for layer in range(depth):
    s = spectra[-1, layer]
    bulk = np.sum(np.abs(s - np.median(s)) <= 1e-6 * np.median(s))
    print(f"W_{layer + 1}: {bulk} of {d} singular values equal (d - 2r = {d - 2 * rank})")

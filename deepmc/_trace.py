"""The end-to-end spectrum of a fitted network, and its trace over training.

Used by :mod:`deepmc.compare` (``--singular-values``) and by
:class:`deepmc.plotting.SingularValuesDisplay`, which both import it from here.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

__all__ = ["end_to_end_singular_values", "fit_quiet", "singular_value_trace"]


def end_to_end_singular_values(estimator: Any, k: int) -> np.ndarray:
    """The top ``k`` singular values of a fitted estimator's end-to-end matrix ``X̂``.

    Computed from the factors without forming ``X̂``: for the compressed network from
    ``U_``, the ``2r̂ × 2r̂`` cores and ``V_`` (QR of the factors, then an SVD of a
    ``2r̂ × 2r̂`` matrix); for the full-width and narrow networks from ``W_L ⋯ W_2`` and
    ``W_1``.

    Parameters
    ----------
    estimator : fitted DeepMatrixCompletion or CompressedDeepMatrixCompletion
    k : int

    Returns
    -------
    ndarray of shape (min(k, available),)
    """
    if hasattr(estimator, "cores_"):
        C = estimator.cores_[0]
        for W in estimator.cores_[1:]:
            C = W @ C
        left, right = estimator.U_ @ C, estimator.V_
    else:
        weights = estimator.weights_
        left = weights[-1]
        for W in reversed(weights[1:-1]):
            left = left @ W
        right = weights[0].T
    _, rl = np.linalg.qr(left)
    _, rr = np.linalg.qr(right)
    s = np.linalg.svd(rl @ rr.T, compute_uv=False)
    return estimator.scale_ * s[:k]


def fit_quiet(est: Any, X: Any, fit_params: dict[str, Any], notes: list[str]) -> None:
    """Fit, turning ConvergenceWarnings into notes and letting other warnings through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(X, **fit_params)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append("max_iter reached")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def singular_value_trace(
    estimator: Any,
    X: Any,
    *,
    n_iter: int,
    k: int,
    n_points: int = 30,
    **fit_params: Any,
) -> pd.DataFrame:
    """Top-``k`` singular values of the end-to-end matrix over training.

    A clone of ``estimator`` is refitted from its initialisation in ``n_points``
    warm-started chunks of ``ceil(n_iter / n_points)`` steps; after each chunk
    :func:`end_to_end_singular_values` reads the spectrum off the factors. Gradient
    descent is deterministic for a fixed ``random_state``, so the chunks retrace the
    trajectory of one fit of ``n_iter`` steps.

    Parameters
    ----------
    estimator : DeepMatrixCompletion or CompressedDeepMatrixCompletion
        Its parameters are used; it is not modified.
    X : array-like, sparse matrix, DataFrame or Observations
        The training data, as for ``fit``.
    n_iter : int
        Steps to trace.
    k : int
        Singular values kept at each point.
    n_points : int, default=30
        Chunks (points of the trace); fewer if the fit converges early.
    **fit_params
        Passed to every ``fit`` call (``eval_set``).

    Returns
    -------
    pandas.DataFrame
        Columns ``iteration``, ``s1``, …, ``sk`` (largest first), one row per chunk.
    """
    step = max(1, math.ceil(n_iter / n_points))
    est = clone(estimator).set_params(warm_start=True, verbose=0)
    records = []
    done = 0
    while done < n_iter:
        chunk = min(step, n_iter - done)
        est.set_params(max_iter=chunk)  # max_iter counts the steps of each call
        fit_quiet(est, X, fit_params, [])
        if done and est.n_iter_ == done:  # an estimator whose max_iter is a total
            est.set_params(max_iter=done + chunk)
            fit_quiet(est, X, fit_params, [])
        s = end_to_end_singular_values(est, k)
        records.append({"iteration": est.n_iter_, **{f"s{i + 1}": v for i, v in enumerate(s)}})
        if est.n_iter_ < done + chunk:  # converged before the chunk ended
            break
        done = est.n_iter_
    return pd.DataFrame.from_records(records)

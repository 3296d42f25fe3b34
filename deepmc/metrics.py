"""How results are measured: recovery error on the unobserved entries, RMSE."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["recovery_error", "relative_error", "rmse"]


def _as_pair(predicted: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"predicted and true must have the same shape, got {p.shape}, {t.shape}.")
    return p, t


def relative_error(predicted: Any, true: Any) -> float:
    """Relative error ``‖predicted − true‖_F / ‖true‖_F``.

    Parameters
    ----------
    predicted : array-like
        Predicted values.
    true : array-like of the same shape
        Reference values; must not be all zero.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If the shapes differ or ``true`` has zero norm.

    Examples
    --------
    >>> round(relative_error([1.0, 2.0], [1.0, 1.0]), 6)
    0.707107
    """
    p, t = _as_pair(predicted, true)
    denom = np.linalg.norm(t)
    if denom == 0:
        raise ValueError("true: the reference has zero norm; the relative error is undefined.")
    return float(np.linalg.norm(p - t) / denom)


def rmse(predicted: Any, true: Any) -> float:
    """Root-mean-square error ``sqrt(mean((predicted − true)²))``.

    Parameters
    ----------
    predicted : array-like
        Predicted values.
    true : array-like of the same shape
        Reference values.

    Returns
    -------
    float

    Examples
    --------
    >>> round(rmse([1.0, 3.0], [1.0, 1.0]), 6)
    1.414214
    """
    p, t = _as_pair(predicted, true)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def recovery_error(estimator: Any, rows: Any, cols: Any, true_values: Any) -> float:
    """Relative recovery error of a fitted estimator on the entries ``(rows, cols)``.

    ``‖P_S(X̂ − Φ)‖_F / ‖P_S(Φ)‖_F`` for a set ``S`` of entries, typically the unobserved
    entries Ωᶜ, or a large random sample of them when ``m·n`` is large. Uses
    ``estimator.predict_entries``, so no ``m × n`` matrix is formed.

    Parameters
    ----------
    estimator : fitted estimator with ``predict_entries(rows, cols)``
    rows, cols : array-like of int of shape (K,)
    true_values : array-like of shape (K,)
        ``Φ`` at those entries.

    Returns
    -------
    float
    """
    return relative_error(estimator.predict_entries(rows, cols), true_values)

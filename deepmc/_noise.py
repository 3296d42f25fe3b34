"""Telling signal from noise in a completion fit: the noise level and the noise edge.

On noisy data the residual on Ω always has directions that stand out of nothing but
the noise: its own top singular values. A network that keeps learning them interpolates
the noise, and a rank cut after that keeps too many directions. These pure functions
read, from the fit itself, how large the noise is and which learned directions stand
out of it:

* :func:`noise_level` — the noise standard deviation per observed entry, from the
  residual sum of squares on Ω of a rank-``k`` fit with its degrees of freedom
  ``k (m + n − k)`` taken out;
* :func:`noise_edge` — the smallest singular value of the end-to-end matrix that a
  signal direction needs to be told apart from that noise. With the observations
  rescaled by ``s = m·n/N``, the noise of ``s·P_Ω(Y)`` has i.i.d. entries of variance
  ``s·σ²`` and its singular values fill ``[0, √s σ (√m + √n)]`` (Marchenko–Pastur);
  a rank-one signal ``θ u vᵀ`` is visible above that bulk only when
  ``θ > √s σ (m n)^{1/4}`` (the BBP transition; Benaych-Georges & Nadakuditi 2012),
  and the optimal hard threshold of a fully observed square matrix keeps
  ``θ > √3 · σ √n`` (Gavish & Donoho 2014, the value whose observed singular value
  is ``(4/√3) σ √n``). A network fitting the noise learns its top directions at about
  the bulk edge, and above it as it goes on interpolating Ω, so the edge used is the
  bulk edge itself, :data:`EDGE` ``· √s σ (√m + √n)`` (for a square matrix ``2 √n``
  against Gavish & Donoho's ``√3 √n``: a signal direction between the two is given up);
* :func:`signal_rank` — how many singular values clear the edge;
* :func:`statistically_settled` — whether what gradient descent still has to move is
  negligible beside the statistical error of the fit (the stop after a cut);
* :func:`rss_by_rank` — the residual sum of squares of the fit cut to each rank;
* :func:`cut_rank` — the self-consistent rank ``k``: the most directions such that the
  ``k``-th clears the edge of the noise level estimated with ``k`` directions fitted.

:class:`deepmc._policy.SpectralMonitor` uses them to cut the fit at the noise edge and
stop polishing the noise; the estimators report :func:`noise_level` (in data units) as
``noise_level_``.

References
----------
M. Gavish, D. L. Donoho, "The optimal hard threshold for singular values is 4/√3",
IEEE Trans. Inf. Theory 60 (2014).
F. Benaych-Georges, R. R. Nadakuditi, "The singular values and vectors of low rank
perturbations of large rectangular random matrices", J. Multivariate Anal. 111 (2012).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = [
    "EDGE",
    "MIN_RESIDUAL_DOF",
    "cut_rank",
    "degrees_of_freedom",
    "noise_edge",
    "noise_level",
    "rss_by_rank",
    "signal_rank",
    "statistically_settled",
]

#: Multiple of the noise bulk edge ``√s σ (√m + √n)`` a learned singular value must
#: exceed to count as signal.
EDGE = 1.0
#: Fraction of the statistical error below which the distance left to the least-squares
#: fit does not matter (the polish after a cut at the noise edge stops there).
SETTLED = 1e-2
#: Smallest fraction of the observations left as residual degrees of freedom for the
#: noise level to be estimated (``N − k(m + n − k) ≥ MIN_RESIDUAL_DOF · N``).
MIN_RESIDUAL_DOF = 0.1


def degrees_of_freedom(shape: tuple[int, int], rank: int) -> int:
    """``k (m + n − k)``: the parameters of an ``m × n`` matrix of rank ``k``."""
    m, n = shape
    k = max(0, min(int(rank), m, n))
    return k * (m + n - k)


def noise_level(rss: float, n_observed: int, shape: tuple[int, int], rank: int) -> float | None:
    """The noise standard deviation per entry, ``√(RSS / (N − k(m + n − k)))``.

    Parameters
    ----------
    rss : float
        ``Σ_Ω (X − Y)²`` of a fit of rank ``rank`` (in the units of ``Y``).
    n_observed : int
        ``N = |Ω|``.
    shape : tuple of (int, int)
    rank : int
        The directions the fit has learned.

    Returns
    -------
    float or None
        ``None`` when fewer than :data:`MIN_RESIDUAL_DOF` · N degrees of freedom are left
        (the residual of a fit that close to interpolation says nothing of the noise).

    Examples
    --------
    >>> round(noise_level(2.0 * 900, 1000, (10, 10), 0), 3)
    1.342
    >>> noise_level(1.0, 100, (10, 10), 8) is None
    True
    """
    if not (math.isfinite(rss) and rss >= 0):
        raise ValueError(f"rss: expected a finite non-negative sum of squares, got {rss!r}.")
    left = int(n_observed) - degrees_of_freedom(shape, rank)
    if left < max(1.0, MIN_RESIDUAL_DOF * n_observed):
        return None
    return math.sqrt(rss / left)


def noise_edge(sigma: float, shape: tuple[int, int], sampling_scale: float) -> float:
    """The noise edge ``EDGE · √s · σ · (√m + √n)`` for the end-to-end singular values.

    Parameters
    ----------
    sigma : float
        The noise standard deviation per observed entry (:func:`noise_level`).
    shape : tuple of (int, int)
    sampling_scale : float
        ``s = m·n / N``.

    Returns
    -------
    float
        In the units of ``σ`` (the singular values of ``X`` are compared with it).

    Examples
    --------
    >>> round(noise_edge(0.1, (100, 100), 4.0), 3)
    4.0
    """
    m, n = shape
    return EDGE * math.sqrt(sampling_scale) * float(sigma) * (math.sqrt(m) + math.sqrt(n))


def signal_rank(singular_values: Any, edge: float) -> int:
    """How many singular values exceed ``edge`` (``singular_values`` in any order).

    Examples
    --------
    >>> signal_rank([5.0, 3.0, 0.2, 0.1], 1.0)
    2
    """
    s = np.asarray(singular_values, dtype=np.float64)
    return int(np.count_nonzero(s > edge))


def cut_rank(
    singular_values: Any,
    rss_by_rank: Any,
    n_observed: int,
    shape: tuple[int, int],
    sampling_scale: float,
) -> tuple[int, float | None]:
    """The directions of a fit that stand out of its noise: ``(k, σ)``.

    ``k`` is the largest count such that the ``k``-th singular value exceeds the
    :func:`noise_edge` of the :func:`noise_level` of the fit cut to its top ``k``
    directions (the edge grows with ``k`` while the singular values fall, so the
    condition holds for every count up to ``k`` and for none above). Measuring the
    noise on the *cut* fit matters: the noise that the directions past ``k`` have
    already learned is noise, and counts as such. ``σ`` is that noise level, or
    ``None`` when not even ``k = 0`` leaves enough residual degrees of freedom.

    Parameters
    ----------
    singular_values : array-like of shape (p,)
        Of the fitted matrix, decreasing.
    rss_by_rank : array-like of shape (q,)
        ``rss_by_rank[k]``: the residual sum of squares on Ω of the fit cut to its top
        ``k`` directions (``q ≤ p + 1``; counts past ``q − 1`` use the last).
    n_observed : int
    shape : tuple of (int, int)
    sampling_scale : float
        ``s = m·n / N``.

    Returns
    -------
    k : int
    sigma : float or None

    Examples
    --------
    >>> k, sigma = cut_rank([30.0, 25.0, 2.0, 1.0], [1500.0, 1000.0, 900.0], 1000,
    ...                     (50, 50), 2.5)
    >>> k, round(sigma, 3)
    (2, 1.058)
    """
    s = np.asarray(singular_values, dtype=np.float64)
    rss = np.asarray(rss_by_rank, dtype=np.float64)
    if rss.ndim != 1 or rss.size == 0:
        raise ValueError(f"rss_by_rank: expected a non-empty 1-D array, got {rss!r}.")
    sigma = noise_level(float(rss[0]), n_observed, shape, 0)
    keep = 0
    for k in range(1, s.size + 1):
        level = noise_level(float(rss[min(k, rss.size - 1)]), n_observed, shape, k)
        if level is None or s[k - 1] <= noise_edge(level, shape, sampling_scale):
            break
        keep, sigma = k, level
    return keep, sigma


def statistically_settled(
    change: float, previous_change: float | None, fitted_norm: float, sigma: float, dof: int
) -> bool:
    """Whether a linearly converging fit is within :data:`SETTLED` of its statistical error.

    Gradient descent on a rank-``k`` fit contracts the distance to its least-squares
    solution by ``ρ = change / previous_change`` per check, so about
    ``change · ρ / (1 − ρ)`` (relative to the fitted values) is left to move. The
    least-squares fit itself is off the truth by about ``σ √dof`` on Ω (``dof =
    k (m + n − k)`` parameters fitted to noise of standard deviation ``σ``): polishing
    to far below that changes nothing that can be measured.

    Parameters
    ----------
    change : float
        The relative change of the fitted values on Ω at this check.
    previous_change : float or None
        At the previous check.
    fitted_norm : float
        ``‖X_Ω‖`` (the norm ``change`` is relative to).
    sigma : float
        The noise level (same units as ``fitted_norm``).
    dof : int

    Returns
    -------
    bool

    Examples
    --------
    >>> statistically_settled(1e-5, 2e-5, 10.0, 0.1, 400)
    True
    >>> statistically_settled(1e-2, 1.01e-2, 10.0, 0.1, 400)
    False
    """
    if previous_change is None or not previous_change > 0:
        return False
    rho = change / previous_change
    if not 0.0 <= rho < 1.0:
        return False
    left = change * rho / (1.0 - rho) * fitted_norm
    return left <= SETTLED * sigma * math.sqrt(max(dof, 1))


def rss_by_rank(
    residual: torch.Tensor,
    P: torch.Tensor,
    sigma: torch.Tensor,
    Q: torch.Tensor,
    top: int,
    sampled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sum_: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
) -> list[float]:
    """``Σ_Ω (X_k − Y)²`` for ``X = P diag(σ) Qᵀ`` cut to its top ``k = 0, …, top``.

    Cutting direction ``i`` takes ``σ_i p_i q_iᵀ`` (on Ω) out of the residual
    ``X − Y``; the directions past ``top`` are left in. One sampled product per
    direction, accumulated from the last: ``O(N · top)`` time, ``O(N)`` memory.

    Parameters
    ----------
    residual : Tensor of shape (N,)
        ``X − Y`` on Ω.
    P : Tensor of shape (m, p)
    sigma : Tensor of shape (p,)
    Q : Tensor of shape (n, p)
    top : int
    sampled : callable
        ``(A, B) ↦ (A Bᵀ)`` on Ω, in the layout of ``residual``.
    sum_ : callable, default=identity
        Sums a scalar tensor over the holders of Ω's rows (a distributed fit).

    Returns
    -------
    list of float
        ``top + 1`` values (fewer when ``p < top``), index ``k`` for rank ``k``.
    """
    r = residual
    out = [float(sum_(r.square().sum()))]
    with torch.no_grad():
        for i in range(min(top, sigma.shape[0]) - 1, -1, -1):
            r = r - sampled(P[:, i : i + 1] * sigma[i], Q[:, i : i + 1])
            out.append(float(sum_(r.square().sum())))
    return out[::-1]

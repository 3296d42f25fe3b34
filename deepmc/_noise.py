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
  is ``(4/√3) σ √n``). :data:`EDGE` is that factor, applied to the sampled noise scale;
* :func:`signal_rank` — how many singular values clear the edge.

:class:`deepmc._prune.SpectralMonitor` uses them to cut the fit at the noise edge and
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
from typing import Any

import numpy as np

__all__ = ["EDGE", "MIN_RESIDUAL_DOF", "noise_edge", "noise_level", "signal_rank"]

#: Multiple of ``√s σ (m n)^{1/4}`` a learned singular value must exceed to count as
#: signal: Gavish & Donoho's ``√3`` for a square matrix.
EDGE = math.sqrt(3.0)
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
    """The noise edge ``EDGE · √s · σ · (m n)^{1/4}`` for the end-to-end singular values.

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
    3.464
    """
    m, n = shape
    return EDGE * math.sqrt(sampling_scale) * float(sigma) * (m * n) ** 0.25


def signal_rank(singular_values: Any, edge: float) -> int:
    """How many singular values exceed ``edge`` (``singular_values`` in any order).

    Examples
    --------
    >>> signal_rank([5.0, 3.0, 0.2, 0.1], 1.0)
    2
    """
    s = np.asarray(singular_values, dtype=np.float64)
    return int(np.count_nonzero(s > edge))

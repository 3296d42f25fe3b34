"""Fold-in: complete new rows with the fitted right factor fixed.

A fit is ``X̂ = left · rightᵀ`` (``left`` of shape (m, k), ``right`` of shape (n, k)). A new
row ``x``, observed on the columns ``o``, is completed as ``x̂ = a · rightᵀ`` with ``a`` a
k-variable regularised least-squares fit to ``x_o`` — what scikit-learn's ``NMF.transform``
does with its ``components_`` fixed, and what alternating least squares calls fold-in
(Hu, Koren & Volinsky 2008). The rows are independent, so completing a subset of rows gives
the same rows as completing all of them.

The regularisation is the Gaussian prior that the fitted rows themselves define: the rows
of ``X̂`` have a mean ``μ`` (the column means the fit implies) and a covariance ``Σ`` (rank
at most k), and with noise variance ``σ²`` on the observed entries the posterior mean of a
new row is

    x̂ = μ + α · Bᵀ,    α = (B_oᵀ B_o + σ² I)⁻¹ B_oᵀ (x_o − μ_o),

where ``B = Q E Λ^{1/2}`` whitens ``Σ = (Q E) Λ (Q E)ᵀ``. This is a ridge regression on
``B``: it does not depend on how the fit splits ``X̂`` into factors (the full-width,
narrow and compressed networks give the same ``B`` for the same ``X̂``), a row with few
entries is shrunk towards ``μ`` in proportion to ``σ²``, and a row with no entry gets ``μ``.
On exactly low-rank data ``σ² → 0`` and the fold-in interpolates the observed entries
within the fitted row space.

Every row's k × k normal equations are formed by one matrix product per block of rows
(``M · (B ⊙ B)`` with ``M`` the observation pattern), or, when few entries are observed,
by one batched product of each row's observed rows of ``B``, and solved by one batched
Cholesky factorisation: there is no loop over rows.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

__all__ = ["RowPrior", "complete_rows", "fold_in", "residual_noise_variance", "row_prior"]

#: Directions of the row covariance below this fraction of the largest are dropped.
_RTOL = 1e-10
#: Smallest σ², relative to the mean squared norm of the basis rows (keeps Cholesky safe).
_MIN_NOISE = 1e-12
#: Floats per block of the normal equations (the pattern, the values and ``k²`` per row).
_BLOCK_FLOATS = 1 << 23
#: Below this fraction of observed entries a block packs each row's observed entries.
_SPARSE_DENSITY = 0.1


class RowPrior(NamedTuple):
    """The distribution of the fitted rows: mean row and whitened directions.

    Attributes
    ----------
    mean : ndarray of shape (n,)
        ``μ``, the column means of ``X̂`` (the fold-in of a row with no entry).
    basis : ndarray of shape (n, r)
        ``B``, with ``B Bᵀ`` the covariance of the rows of ``X̂`` (``r ≤ k``).
    """

    mean: np.ndarray
    basis: np.ndarray


def row_prior(left: np.ndarray, right: np.ndarray, *, rtol: float = _RTOL) -> RowPrior:
    """The mean and whitened covariance of the rows of ``X̂ = left · rightᵀ``.

    ``X̂`` is never formed: with ``right = Q R`` (reduced QR), the rows of ``X̂`` are
    ``c_i Qᵀ`` with ``c_i = left_i Rᵀ``, and the mean and covariance are those of ``c``.

    Parameters
    ----------
    left : ndarray of shape (m, k)
    right : ndarray of shape (n, k)
    rtol : float, default=1e-10
        Covariance directions below ``rtol`` times the largest are dropped (the rows
        are constant along them: a fixed column of ones, a pruned direction).

    Returns
    -------
    RowPrior
        In float64.

    Examples
    --------
    >>> import numpy as np
    >>> left = np.array([[1.0], [3.0]]); right = np.array([[1.0], [2.0]])
    >>> prior = row_prior(left, right)
    >>> prior.mean.round(6).tolist(), np.abs(prior.basis).ravel().round(6).tolist()
    ([2.0, 4.0], [1.0, 2.0])
    """
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    q, r = np.linalg.qr(right)
    coords = left @ r.T
    centre = coords.mean(axis=0)
    centred = coords - centre
    cov = centred.T @ centred / max(coords.shape[0], 1)
    lam, vec = np.linalg.eigh((cov + cov.T) / 2)
    top = float(lam.max()) if lam.size else 0.0
    keep = lam > rtol * top if top > 0 else np.zeros(lam.shape, dtype=bool)
    basis = q @ (vec[:, keep] * np.sqrt(lam[keep]))
    return RowPrior(mean=q @ centre, basis=np.ascontiguousarray(basis))


def _outer_rows(basis: torch.Tensor) -> torch.Tensor:
    """``b_j b_jᵀ`` of every row ``b_j`` of ``basis``, flattened: shape (n, r²)."""
    n, r = basis.shape
    return (basis[:, :, None] * basis[:, None, :]).reshape(n, r * r)


def _block_systems(
    basis: torch.Tensor,
    outer: torch.Tensor | None,
    rows: np.ndarray,
    cols: np.ndarray,
    centred: np.ndarray,
    size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B_oᵀ B_o`` and ``B_oᵀ (x_o − μ_o)`` of every row of one block of ``size`` rows.

    ``rows`` are local to the block (sorted). With ``outer`` (:func:`_outer_rows`) and
    enough observed entries, the dense pattern is multiplied by it (one BLAS product);
    otherwise the observed rows of ``B`` are packed per row (:func:`_padded_systems`),
    which never forms an ``n × r²`` matrix.
    """
    n, r = basis.shape
    if outer is not None and rows.shape[0] >= _SPARSE_DENSITY * size * n:
        flat = rows * n + cols
        pattern = np.zeros(size * n)
        pattern[flat] = 1.0
        observed = np.zeros(size * n)
        observed[flat] = centred
        gram = torch.from_numpy(pattern.reshape(size, n)) @ outer
        rhs = torch.from_numpy(observed.reshape(size, n)) @ basis
        return gram.reshape(-1, r, r), rhs
    return _padded_systems(basis, rows, cols, centred, size)


def _padded_systems(
    basis: torch.Tensor, rows: np.ndarray, cols: np.ndarray, centred: np.ndarray, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The systems of :func:`_block_systems` from each row's observed rows of ``B``.

    Row ``i``'s observed rows of ``B`` are packed into a zero-padded ``(width, r)`` slab
    (``width`` its block's largest count) and ``B_oᵀ B_o`` is one batched product of the
    slabs: work in proportion to the observed entries, as BLAS, when few are observed.
    """
    r = basis.shape[1]
    counts = np.bincount(rows, minlength=size)
    offsets = np.cumsum(counts) - counts
    gram = torch.empty(size, r, r, dtype=basis.dtype)
    rhs = torch.empty(size, r, dtype=basis.dtype)
    step = max(1, _BLOCK_FLOATS // (max(int(counts.max()), 1) * (r + 1)))
    for first in range(0, size, step):
        last = min(first + step, size)
        lo, hi = offsets[first], offsets[last - 1] + counts[last - 1]
        local = rows[lo:hi] - first
        width = max(int(counts[first:last].max()), 1)
        pos = torch.from_numpy(np.arange(hi - lo) - (offsets[rows[lo:hi]] - lo))
        where = torch.from_numpy(local)
        slab = torch.zeros(last - first, width, r, dtype=basis.dtype)
        slab[where, pos] = basis[torch.from_numpy(cols[lo:hi])]
        values = torch.zeros(last - first, width, 1, dtype=basis.dtype)
        values[where, pos, 0] = torch.from_numpy(centred[lo:hi])
        gram[first:last] = slab.transpose(1, 2) @ slab
        rhs[first:last] = (slab.transpose(1, 2) @ values)[:, :, 0]
    return gram, rhs


def _solve(gram: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """``(gram_i + ridge·I)⁻¹ rhs_i`` for every row ``i``, by one batched Cholesky."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    system = gram + ridge * eye
    chol, info = torch.linalg.cholesky_ex(system)
    if bool((info != 0).any()):  # rounding on a nearly singular block: least squares
        return torch.linalg.lstsq(system, rhs.unsqueeze(-1)).solution.squeeze(-1)
    return torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)


def fold_in(
    prior: RowPrior,
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    n_rows: int,
    noise_var: float,
) -> np.ndarray:
    """The coefficients ``α`` of each new row (see the module docstring).

    Parameters
    ----------
    prior : RowPrior
        From :func:`row_prior`.
    rows, cols : ndarray of int of shape (N,)
        Positions of the observed entries (fastest with ``rows`` sorted).
    values : ndarray of shape (N,)
        The observed entries.
    n_rows : int
        Number of new rows (rows without entries get ``α = 0``, i.e. ``μ``).
    noise_var : float
        ``σ²``, the noise variance of an observed entry (the ridge); floored at a tiny
        multiple of the basis scale so that the systems stay positive definite.

    Returns
    -------
    ndarray of shape (n_rows, r)
        In float64.
    """
    n, r = prior.basis.shape
    alpha = np.zeros((n_rows, r))
    if r == 0 or rows.shape[0] == 0:
        return alpha
    basis = torch.from_numpy(prior.basis)
    scale = float(np.sum(prior.basis**2)) / n
    ridge = max(float(noise_var), _MIN_NOISE * scale, np.finfo(np.float64).tiny)
    if np.any(rows[1:] < rows[:-1]):
        order = np.argsort(rows, kind="stable")
        rows, cols, values = rows[order], cols[order], np.asarray(values)[order]
    centred = np.asarray(values, dtype=np.float64) - prior.mean[cols]
    # the dense product needs the n × r² outer products once, when they are small enough
    outer = _outer_rows(basis) if n * r * r <= _BLOCK_FLOATS else None
    block = max(1, _BLOCK_FLOATS // (2 * n + r * r))
    bounds = np.searchsorted(rows, np.arange(0, n_rows + block, block))
    for start, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if lo == hi:
            continue
        first = start * block
        size = min(block, n_rows - first)
        local = rows[lo:hi] - first
        gram, rhs = _block_systems(basis, outer, local, cols[lo:hi], centred[lo:hi], size)
        alpha[first : first + size] = _solve(gram, rhs, ridge).numpy()
    return alpha


def complete_rows(prior: RowPrior, alpha: np.ndarray) -> np.ndarray:
    """``μ + α Bᵀ``: the folded-in rows, of shape (n_rows, n), float64."""
    return prior.mean + alpha @ prior.basis.T


def residual_noise_variance(
    history: pd.DataFrame | None,
    *,
    sampling_scale: float,
    shape: tuple[int, int],
    rank: int,
    iteration: int | None = None,
) -> float:
    """σ² estimated from the fit's training residual, corrected for what the fit adapts.

    The training loss ``(s/2)·RSS`` recorded in ``history`` (``s = m·n/N``) gives the
    residual sum of squares; a rank-``r`` fit adapts ``r(m + n − r)`` values to the data,
    so ``σ² = RSS / (N − r(m + n − r))``, with the denominator kept at least ``N/2``
    (a fit with nearly as many parameters as observations tells little about the noise).

    Parameters
    ----------
    history : DataFrame or None
        The fit's ``history_`` (``iteration`` and ``loss`` columns, in user units).
    sampling_scale : float
        ``s``.
    shape : tuple of (int, int)
        ``(m, n)``.
    rank : int
        Rank of the fitted matrix.
    iteration : int, default=None
        The iteration whose state the fit kept (its best one); the last row otherwise.

    Returns
    -------
    float
        0.0 when the history holds no loss.
    """
    if history is None or len(history) == 0 or "loss" not in history:
        return 0.0
    row = history.iloc[-1]
    if iteration is not None and "iteration" in history:
        kept = history[history["iteration"] == iteration]
        if len(kept):
            row = kept.iloc[-1]
    loss = float(row["loss"])
    if not math.isfinite(loss) or sampling_scale <= 0:
        return 0.0
    m, n = shape
    n_obs = m * n / sampling_scale
    dof = rank * (m + n - rank)
    return 2.0 * loss / sampling_scale / max(n_obs - dof, n_obs / 2)

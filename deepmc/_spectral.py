"""Spectral algebra of the fits: gaps, sign conventions, the escaping direction.

The spectral policy (:mod:`deepmc._policy`) and the networks' own spectral edits
(:meth:`~deepmc.models._network.Network.spectrum`, ``prune``, …) share these pieces,
none of which knows a network:

* :func:`positive_qr` and :class:`LocalRows` — thin QR and SVD of tall matrices whose
  rows may be split over ranks (:data:`LOCAL`: one process holds them all);
* :func:`find_gap` — the largest ratio between consecutive singular values of ``X``;
  the learned directions of ``X = W_L ⋯ W_1`` stand apart from the not-yet-learned and
  spurious ones by such a gap (incremental learning; Saxe et al. 2014, Arora et al.
  2019, Li, Luo & Lyu 2021);
* :func:`fix_signs` — the sign convention of singular vectors;
* :func:`balanced_diagonal` — ``σ_i^{1/L}`` on the kept directions, the balanced
  share of each of ``L`` layers;
* :func:`escaping_direction` and :class:`ResidualProducts` — the top singular value of
  the residual ``R = s·P_Ω(X − Y)`` outside the ``keep`` learned directions of ``X``
  (``N = (I − PPᵀ) R (I − QQᵀ)``) and the RMS singular value ("bulk") of ``N``. A
  direction that stands out of that bulk and is not negligible beside the learned ones
  is a direction the data still ask for: the fit is on a plateau. Noise, and the
  sampling spread of the learned part's error, give a flat bulk (σ₁/bulk ≈ 2 for a
  square noise matrix) instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ._data import TrainingData
from ._kernels import SMALL_ELEMENTS, _csr

__all__ = [
    "LOCAL",
    "MIN_GAP",
    "LocalRows",
    "ResidualProducts",
    "balanced_diagonal",
    "escaping_direction",
    "find_gap",
    "fix_signs",
    "positive_qr",
]

#: Smallest ratio between consecutive singular values of ``X`` that counts as a gap.
MIN_GAP = 20.0


def positive_qr(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR ``Y = Q R`` with ``diag(R) ≥ 0``: unique for a full-rank ``Y``.

    Householder QR leaves the signs of ``R``'s diagonal to rounding; fixing them makes
    the factors of a matrix the same whatever algorithm computed them (one QR, or the
    TSQR of a distributed fit).
    """
    Q, R = torch.linalg.qr(Y)
    d = min(R.shape)
    sign = torch.sign(torch.diagonal(R)[:d])
    sign[sign == 0] = 1
    return Q[:, :d] * sign, R[:d] * sign[:, None]


class LocalRows:
    """The rows of every tall matrix (``m × b``) held by this one process.

    The spectral analysis works on tall matrices — the left factor ``U``, the residual's
    left singular vectors — through four operations, which a row-sharded fit replaces
    (``deepmc.distributed._linalg.ShardedRows``, the rows split over ranks) while
    everything else stays the same code:

    * :meth:`sum_` — sum a small result over the holders of the rows (here: itself);
    * :meth:`qr`, :meth:`svd` — thin QR (``R`` with a non-negative diagonal, so that
      the factors do not depend on how they were computed) and SVD of a tall matrix,
      returning this holder's rows of the left factor and the (replicated) small
      factors;
    * :meth:`n_rows` — the total row count from this holder's.
    """

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the holders of the rows, in place; returns it."""
        return t

    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Thin QR ``Y = Q R``, ``diag(R) ≥ 0``."""
        return positive_qr(Y)

    def svd(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``Y = A diag(σ) Bᴴ``."""
        return torch.linalg.svd(Y, full_matrices=False)

    def n_rows(self, m: int) -> int:
        """The number of rows of a matrix of which this holder has ``m``."""
        return m


#: The single-process :class:`LocalRows`.
LOCAL = LocalRows()


def find_gap(singular_values: Any, min_ratio: float = MIN_GAP) -> tuple[int, float]:
    """Where the singular values drop most: ``(keep, ratio)``.

    Parameters
    ----------
    singular_values : array-like of shape (k,)
        Non-negative, in decreasing order.
    min_ratio : float, default=MIN_GAP
        The smallest ratio ``σ_keep / σ_{keep+1}`` that counts as a gap.

    Returns
    -------
    keep : int
        The number of values above the largest ratio, or ``k`` when that ratio is below
        ``min_ratio`` (no gap: keep everything).
    ratio : float
        The largest ratio (``inf`` after an exact zero, 0 for fewer than two values).

    Examples
    --------
    >>> find_gap([63.0, 50.0, 31.0, 1e-3, 5e-4])
    (3, 31000.0)
    >>> find_gap([1.0, 0.5, 0.25])
    (3, 2.0)
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or (s.size and (not np.all(np.isfinite(s)) or s.min() < 0)):
        raise ValueError(
            f"singular_values: expected a 1-D array of finite non-negative values, got {s!r}."
        )
    if s.size < 2 or s[0] == 0:
        return int(s.size), 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(s[1:] > 0, s[:-1] / np.where(s[1:] > 0, s[1:], 1.0), np.inf)
    ratios[s[:-1] == 0] = 1.0  # 0 / 0: no gap between two exact zeros
    i = int(np.argmax(ratios))
    ratio = float(ratios[i])
    return (i + 1, ratio) if ratio >= min_ratio else (int(s.size), ratio)


def fix_signs(P: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P D, Q D)`` with ``D = ±1`` making each column's largest entry of ``Q`` positive.

    Singular vectors are defined up to a joint sign, which QR and SVD pick by rounding:
    this convention (as :func:`sklearn.utils.extmath.svd_flip`, decided by the right
    vectors, which every rank of a distributed fit holds whole) makes the networks'
    edits the same whichever factorisation produced the vectors.
    """
    if Q.numel() == 0:
        return P, Q
    idx = Q.abs().argmax(dim=0, keepdim=True)
    sign = torch.sign(torch.gather(Q, 0, idx))
    sign[sign == 0] = 1
    return P * sign, Q * sign


def balanced_diagonal(sigma: torch.Tensor, keep: int, depth: int) -> torch.Tensor:
    """``σ_i^{1/L}`` for the kept values, 0 for the others."""
    d = torch.zeros_like(sigma)
    d[:keep] = sigma[:keep].clamp_min(0) ** (1.0 / depth)
    return d


class ResidualProducts:
    """``R = s·P_Ω(r)`` for a residual vector ``r`` on Ω, as products with ``R``, ``Rᵀ``.

    A small matrix (``m·n`` ≤ ``SMALL_ELEMENTS``, where the kernels work densely too) is
    held dense and multiplied by BLAS; a larger one as CSR matrices of ``R`` and ``Rᵀ``.
    """

    def __init__(self, data: TrainingData) -> None:
        m, n = data.shape
        self.data = data
        self.small = m * n <= SMALL_ELEMENTS
        if not self.small:
            order = torch.argsort(data.cols * m + data.rows)
            self.order = order
            self.crow_t = torch._convert_indices_from_coo_to_csr(data.cols[order], n)
            self.col_t = data.rows[order]

    def bind(self, r: torch.Tensor) -> tuple[Any, Any, torch.Tensor | None]:
        """``(x ↦ R x, y ↦ Rᵀ y, R dense or None)``."""
        data = self.data
        m, n = data.shape
        vals = r * data.sampling_scale
        if self.small:
            D = torch.zeros((m, n), dtype=r.dtype, device=r.device)
            D[data.rows, data.cols] = vals
            return (lambda x: D @ x), (lambda y: D.T @ y), D
        R = _csr(data.pattern.crow, data.pattern.col, vals, (m, n))
        Rt = _csr(self.crow_t, self.col_t, vals[self.order], (n, m))
        return (lambda x: R @ x), (lambda y: Rt @ y), None


def escaping_direction(
    mv: Any,
    rmv: Any,
    fro2: float,
    P: torch.Tensor,
    Q: torch.Tensor,
    shape: tuple[int, int],
    n_vectors: int = 4,
    n_iter: int = 12,
    generator: torch.Generator | None = None,
    dense: torch.Tensor | None = None,
    rows: LocalRows = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Top singular triplets of ``−N = −(I − PPᵀ) R (I − QQᵀ)`` and the bulk of ``N``.

    Block subspace iteration with the products ``mv(x) = R x`` and ``rmv(y) = Rᵀ y``
    only (``R`` is never formed). With ``dense`` (``R`` itself, for a small matrix) the
    iteration forms ``NᵀN`` once and takes one product and one QR a step instead of
    two of each and four projections: the same iterates up to rounding (the start is
    orthogonal to ``Q`` and QR normalisation does not change the subspace), about a
    third of the cost on a 100 × 100 matrix. The bulk is the RMS singular value of ``N``,
    ``‖N‖_F / √(min(m, n) − keep)`` with
    ``‖N‖²_F = ‖R‖²_F − ‖PᵀR‖²_F − ‖RQ‖²_F + ‖PᵀRQ‖²_F``.

    With ``rows`` splitting the rows of ``R`` over ranks, every rank passes its own
    rows (of ``R``, ``P``, ``dense``) and its products; the sums over rows
    (``Rᵀ y``, ``Pᵀ y``, ``NᵀN``, the norms) are ``rows.sum_`` and the tall QR and SVD
    ``rows.qr`` and ``rows.svd``, so every rank ends with the same values and
    right vectors and its own rows of ``left``.

    Parameters
    ----------
    mv, rmv : callable
        ``x ↦ R x`` (``(n, b) → (m, b)``) and ``y ↦ Rᵀ y`` (with ``rows`` split over
        ranks: this rank's rows of ``R x`` and its term ``R_pᵀ y_p`` of the sum).
    fro2 : float
        ``‖R‖²_F`` (of the whole ``R``).
    P : Tensor of shape (m, keep)
    Q : Tensor of shape (n, keep)
        Orthonormal kept directions (``keep`` may be 0).
    shape : tuple of (int, int)
    n_vectors : int, default=4
        Triplets returned (the block has 4 more).
    n_iter : int, default=12
    generator : torch.Generator, default=None
        Of the random start (CPU).
    dense : Tensor of shape (m, n), default=None
        ``R`` as a dense matrix, when it is small enough to hold.
    rows : LocalRows, default=LOCAL
        How the rows of ``R`` are held.

    Returns
    -------
    left : Tensor of shape (m, n_vectors)
    values : Tensor of shape (n_vectors,)
        Decreasing; ``values[0]`` is ``σ₁(N)``.
    right : Tensor of shape (n, n_vectors)
        ``leftᵀ (−N) right = diag(values)``.
    bulk : float
    """
    m, n = shape
    keep = P.shape[1]

    def left_out(y: torch.Tensor) -> torch.Tensor:
        return y - P @ rows.sum_(P.T @ y) if keep else y

    def right_out(x: torch.Tensor) -> torch.Tensor:
        return x - Q @ (Q.T @ x) if keep else x

    def rmv_sum(y: torch.Tensor) -> torch.Tensor:
        return rows.sum_(rmv(y))

    b = min(n_vectors + 4, max(1, min(m, n) - keep))
    x = torch.randn(n, b, dtype=torch.float64, generator=generator).to(P)
    x = torch.linalg.qr(right_out(x))[0]
    if dense is not None:  # the same iterates, x ← orth(NᵀN x), one product a step
        N = left_out(right_out(dense.T).T)  # (I − PPᵀ) R (I − QQᵀ)
        gram = rows.sum_(N.T @ N)
        for _ in range(n_iter):
            x = torch.linalg.qr(gram @ x)[0]
    else:
        for _ in range(n_iter):
            y = rows.qr(left_out(mv(x)))[0]
            x = torch.linalg.qr(right_out(rmv_sum(y)))[0]
    y = -left_out(mv(x))  # = −N x
    a, values, bh = rows.svd(y)
    a, right = fix_signs(a, x @ bh.T)
    k = min(n_vectors, values.shape[0])
    if keep:
        RQ = mv(Q)
        PtR = rmv_sum(P).T
        PtRQ = rows.sum_(P.T @ RQ)
        fro2 = fro2 - float(rows.sum_(RQ.square().sum())) - float(PtR.square().sum())
        fro2 += float(PtRQ.square().sum())
    bulk = math.sqrt(max(fro2, 0.0) / max(min(m, n) - keep, 1))
    return a[:, :k], values[:k], right[:, :k], bulk

"""Top singular triplets of a row-sharded sparse matrix, never gathered on one rank.

:func:`sharded_top_singular` is the randomized SVD of
:func:`sklearn.utils.extmath.randomized_svd` (Halko, Martinsson & Tropp 2011, Algorithm
4.4: a Gaussian start, ``n_iter`` power iterations, ``n_components + n_oversamples``
vectors, the same transposition rule and the same sign convention), run on the row
blocks ``M_p`` of ``M = [M_1; …; M_P]``:

* ``M X`` is local (``X`` replicated, the result row-sharded);
* ``Mᵀ Y = Σ_p M_pᵀ Y_p`` is one all-reduce of an ``n × l`` block;
* a row-sharded block is orthonormalised by TSQR (Demmel et al. 2012): a local QR,
  then a QR of the stacked ``l × l`` factors, gathered on every rank.

Its starting matrix is drawn from the same seed as ``randomized_svd``'s, and the subspace
it returns does not depend on how the power iterates are normalised, so it agrees with
:func:`deepmc.init.top_singular` in every world size up to rounding errors — which makes a
distributed fit start where the single-process fit of the same seed starts. A small
matrix (``m·n`` ≤ :data:`deepmc._kernels.SMALL_ELEMENTS`) is gathered on every rank and
factored exactly, as :func:`deepmc.init.top_singular` does.

:class:`ShardedRows` gives the spectral analysis of a fit (the plateau-aware stop rule,
prune and polish) the same operations on row-sharded torch tensors: sums over ranks and
the TSQR.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import torch

from .._kernels import SMALL_ELEMENTS
from .._spectral import LocalRows, positive_qr
from ..init import dense_top_singular
from ._comm import Comm

__all__ = ["ShardedRows", "sharded_top_singular", "tsqr"]


def _sum(comm: Comm, a: np.ndarray) -> np.ndarray:
    """All-reduce sum of a NumPy array (float64), returned as a new array."""
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64).copy())
    return comm.sum_(t).numpy()


def tsqr(Y: np.ndarray, comm: Comm) -> tuple[np.ndarray, np.ndarray]:
    """Thin QR of the row-sharded ``Y = [Y_1; …; Y_P]``: ``Y_p = Q_p R`` with ``QᵀQ = I``.

    Each rank factors its block, every rank receives all the small ``R_p`` and factors
    their stack; ``Q_p = Q̂_p · (stacked Q)_p``. Any rank may hold zero rows.

    Parameters
    ----------
    Y : ndarray of shape (m_p, l)
        This rank's rows.
    comm : Comm

    Returns
    -------
    Q : ndarray of shape (m_p, q)
        This rank's rows of the orthonormal factor, ``q = min(m, l)``.
    R : ndarray of shape (q, l)
        The triangular factor (the same on every rank).
    """
    width = Y.shape[1]
    if Y.shape[0]:
        Q_loc, R_loc = np.linalg.qr(Y)
    else:
        Q_loc, R_loc = np.zeros((0, 0)), np.zeros((0, width))
    blocks = [b.numpy() for b in comm.gather_rows(torch.from_numpy(np.ascontiguousarray(R_loc)))]
    stacked = np.concatenate(blocks, axis=0)
    Q_s, R = np.linalg.qr(stacked)
    offset = sum(b.shape[0] for b in blocks[: comm.rank])
    return Q_loc @ Q_s[offset : offset + R_loc.shape[0]], R


class ShardedRows(LocalRows):
    """Tall matrices split by rows over the ranks of ``comm``, each rank its own block.

    The operations of :class:`deepmc._spectral.LocalRows` for a distributed fit: sums are
    all-reduces, and the thin QR of ``Y = [Y_1; …; Y_P]`` is the TSQR of :func:`tsqr`
    in torch (each rank keeps its rows of ``Q``; ``R`` is the same on every rank,
    computed by every rank from the same gathered factors).

    Parameters
    ----------
    comm : Comm
    """

    def __init__(self, comm: Comm) -> None:
        self.comm = comm

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place; returns it."""
        return self.comm.sum_(t)

    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """QR of the row-sharded ``Y``: this rank's rows of ``Q``, and ``R ≥ 0`` on its diagonal."""
        if Y.shape[0]:
            q_local, r_local = torch.linalg.qr(Y)
        else:  # a rank without rows
            q_local, r_local = Y.new_zeros((0, 0)), Y.new_zeros((0, Y.shape[1]))
        blocks = self.comm.gather_rows(r_local)
        q_stacked, r = positive_qr(torch.cat(blocks))
        offset = sum(b.shape[0] for b in blocks[: self.comm.rank])
        return q_local @ q_stacked[offset : offset + r_local.shape[0]], r

    def svd(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD of the row-sharded ``Y`` through its QR: ``Y = (Q A) diag(σ) Bᴴ``."""
        q, r = self.qr(Y)
        a, sigma, bh = torch.linalg.svd(r, full_matrices=False)
        return q @ a, sigma, bh

    def n_rows(self, m: int) -> int:
        """The rows of every rank together."""
        return int(self.comm.sum_(torch.tensor([float(m)], dtype=torch.float64))[0])


def _global_argmax_sign(U: np.ndarray, row_offset: int, comm: Comm) -> np.ndarray:
    """Sign of each column's entry of largest magnitude over all ranks (first on ties)."""
    k = U.shape[1]
    if U.shape[0]:
        idx = np.argmax(np.abs(U), axis=0)
        best = np.abs(U[idx, np.arange(k)])
        sign = np.sign(U[idx, np.arange(k)])
        where = idx + row_offset
    else:
        best, sign, where = np.full(k, -1.0), np.zeros(k), np.zeros(k)
    local = np.stack([best, sign, where.astype(np.float64)], axis=1)  # (k, 3)
    blocks = comm.gather_rows(torch.from_numpy(np.ascontiguousarray(local))[None])
    allv = np.concatenate([b.numpy() for b in blocks], axis=0)  # (P, k, 3)
    out = np.empty(k)
    for j in range(k):
        cand = allv[:, j, :]
        top = cand[:, 0].max()
        rows_at_top = cand[cand[:, 0] == top]
        out[j] = rows_at_top[np.argmin(rows_at_top[:, 2]), 1]
    return out


def sharded_top_singular(
    local: sp.csr_matrix,
    shape: tuple[int, int],
    row_offset: int,
    k: int,
    *,
    seed: int,
    comm: Comm,
    n_iter: int = 10,
    n_oversamples: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` singular triplets of ``M`` from its row block on each rank.

    The same randomized SVD as :func:`sklearn.utils.extmath.randomized_svd` called with
    ``random_state=seed`` (the signs too: the entry of largest magnitude of each left
    singular vector is positive), computed from row blocks: communication is a few
    all-reduces of ``n × l`` blocks and gathers of ``l × l`` factors, ``l = k +
    n_oversamples``; ``M`` is never assembled.

    Parameters
    ----------
    local : scipy.sparse.csr_matrix of shape (m_p, n)
        This rank's rows of ``M`` (rows ``row_offset : row_offset + m_p``).
    shape : tuple of (int, int)
        ``(m, n)`` of ``M``.
    row_offset : int
        Global index of this rank's first row.
    k : int
    seed : int
        Seed of the Gaussian starting matrix (NumPy ``RandomState``).
    comm : Comm
    n_iter, n_oversamples : int
        As in ``randomized_svd``.

    Returns
    -------
    u : ndarray of shape (m_p, k)
        This rank's rows of the left singular vectors.
    s : ndarray of shape (k,)
    v : ndarray of shape (n, k)
        The right singular vectors (on every rank).
    """
    m, n = shape
    if m * n <= SMALL_ELEMENTS:  # gathered and factored exactly, as top_singular does
        block = torch.from_numpy(local.toarray().astype(np.float64))
        full = torch.cat(comm.gather_rows(block), dim=0)
        u_t, s_t, v_t = dense_top_singular(full, k)
        u_local = u_t[row_offset : row_offset + local.shape[0]]
        return u_local.numpy(), s_t.numpy(), v_t.numpy()
    n_random = k + n_oversamples
    rng = np.random.RandomState(seed)
    M = local.astype(np.float64)
    Mt = M.T.tocsr()

    def col_sum(Y: np.ndarray) -> np.ndarray:  # Mᵀ Y, replicated
        return _sum(comm, Mt @ Y)

    def lu(X: np.ndarray) -> np.ndarray:  # replicated normaliser, as randomized_svd's
        return sla.lu(X, permute_l=True, check_finite=False)[0]

    if m >= n:  # randomized_svd works on M itself: the range finder is m-sized (sharded)
        Q = rng.normal(size=(n, n_random))
        for _ in range(n_iter):
            Y, _ = tsqr(M @ Q, comm)
            Q = lu(col_sum(Y))
        Y, _ = tsqr(M @ Q, comm)  # m_p × l
        B = col_sum(Y).T  # l × n
        Uhat, s, Vt = sla.svd(B, full_matrices=False, lapack_driver="gesdd")
        u, v = Y @ Uhat, Vt.T
    else:  # randomized_svd works on A = Mᵀ (n × m): its range finder is n-sized (replicated)
        Qfull = rng.normal(size=(m, n_random))
        Q = Qfull[row_offset : row_offset + M.shape[0]]
        del Qfull
        for _ in range(n_iter):
            Z = lu(col_sum(Q))  # A Q
            Q, _ = tsqr(M @ Z, comm)  # Aᵀ Z, sharded
        Qa, _ = sla.qr(col_sum(Q), mode="economic", check_finite=False)  # n × l
        # B = Qaᵀ A = (M Qa)ᵀ, sharded by columns: SVD through the TSQR of Bᵀ = Q2 R2
        Q2, R2 = tsqr(M @ Qa, comm)
        W, s, Zt = sla.svd(R2, full_matrices=False, lapack_driver="gesdd")
        u, v = Q2 @ W, Qa @ Zt.T
    signs = _global_argmax_sign(u[:, :k], row_offset, comm)
    return u[:, :k] * signs, s[:k], v[:, :k] * signs

"""Initialisations of the three networks (Yaras et al. 2023; Kwon et al. 2024).

* :func:`epsilon_orthogonal` — ε-scaled orthogonal layers, ``WᵀW = ε²I`` or ``WWᵀ = ε²I``
  depending on the shape (full-width and narrow networks).
* :func:`parsimony` — factors ``U(0), V(0)`` of the compressed network spanning the
  subspace in which gradient descent acts on the full-width network (Yaras et al.).
* :func:`spectral` — top-2r̂ singular vectors of the rescaled observations (Kwon et al.).
* :func:`random_frames` — random orthonormal factors.

All functions take keyword ``generator=`` (a CPU :class:`torch.Generator`), ``dtype=``
and ``device=``; random numbers are drawn on the CPU so that a seed gives the same
initialisation on every device.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.utils.extmath import randomized_svd
from threadpoolctl import ThreadpoolController

from ._kernels import SMALL_ELEMENTS
from ._validation import row_major

__all__ = [
    "dense_top_singular",
    "epsilon_orthogonal",
    "parsimony",
    "random_frames",
    "spectral",
    "top_singular",
]


def _seed(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def epsilon_orthogonal(
    rows: int,
    cols: int,
    *,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A Haar-random ``rows × cols`` matrix with orthonormal rows or columns, times ``scale``.

    ``WᵀW = ε²I`` when ``rows ≥ cols`` and ``WWᵀ = ε²I`` otherwise.

    Parameters
    ----------
    rows, cols : int
    scale : float, default=1.0
        ε.
    generator : torch.Generator, default=None
    dtype : torch.dtype, default=torch.float64
    device : torch.device or str, default=None

    Returns
    -------
    Tensor of shape (rows, cols)

    Examples
    --------
    >>> import torch
    >>> W = epsilon_orthogonal(5, 3, scale=0.1, generator=torch.Generator().manual_seed(0))
    >>> torch.allclose(W.T @ W, 0.01 * torch.eye(3, dtype=W.dtype))
    True
    """
    W = torch.empty(rows, cols, dtype=torch.float64)
    torch.nn.init.orthogonal_(W, gain=scale, generator=generator)
    return W.to(device=device, dtype=dtype)


def top_singular(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    k: int,
    *,
    generator: torch.Generator | None = None,
    n_iter: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` singular triplets of the sparse matrix with ``values`` on Ω.

    A small matrix (``m·n`` ≤ :data:`deepmc._kernels.SMALL_ELEMENTS`, where the kernels
    also work densely) is assembled and factored exactly (:func:`dense_top_singular`),
    which is both exact and cheaper than the power iterations on problem A (the
    performance notes). A larger one goes to a randomized SVD
    (:func:`sklearn.utils.extmath.randomized_svd`, ``n_iter`` power iterations) of the
    CSR matrix: cost O(n_iter · N · k), no dense ``m × n`` array. NumPy's BLAS runs it on
    one thread: its dense steps (QR of ``m × 2k`` blocks) are small, and a threaded BLAS
    call leaves worker threads spinning afterwards, which on a small machine slows the
    first training steps. Either way one seed is drawn from
    ``generator``, so the random numbers drawn after it do not depend on the path.

    Returns
    -------
    u : ndarray of shape (m, k)
    s : ndarray of shape (k,)
    v : ndarray of shape (n, k)
        Fewer than ``k`` columns when ``k > min(m, n)``. Signs: the entry of largest
        magnitude of each column of ``u`` is positive (as ``randomized_svd``'s).
    """
    seed = _seed(generator)
    if shape[0] * shape[1] <= SMALL_ELEMENTS:
        M = torch.zeros(shape, dtype=torch.float64)
        index = (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
        M.index_put_(index, torch.as_tensor(values, dtype=torch.float64), accumulate=True)
        u, s, v = dense_top_singular(M, k)
        return u.numpy(), s.numpy(), v.numpy()
    M = _csr(rows, cols, values, shape)
    with _blas_threads().limit(limits=1, user_api="blas"):
        u, s, vt = randomized_svd(
            M, n_components=k, n_iter=n_iter, random_state=seed, flip_sign=True
        )
    return u, s, vt.T


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]):
    """The float64 CSR matrix with ``values`` at ``(rows, cols)`` (repeats summed).

    Coordinates in strict row-major order (as fits pass them) give the row pointers by a
    count and the column indices as they are, in int32: no COO copies and no sort, the
    largest temporaries of the set-up of a large fit. The matrix is the one the COO route
    builds (same entries in the same order), so the products are the same to the bit.
    """
    rows, cols = np.asarray(rows), np.asarray(cols)
    fits_int32 = max(*shape, rows.shape[0]) < 2**31
    if fits_int32 and rows.shape[0] and row_major(rows, cols):
        indptr = np.zeros(shape[0] + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=shape[0]), out=indptr[1:])
        data = np.asarray(values, dtype=np.float64)
        return sp.csr_matrix((data, cols.astype(np.int32), indptr), shape=shape)
    return sp.csr_matrix((np.asarray(values, dtype=np.float64), (rows, cols)), shape=shape)


def dense_top_singular(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` singular triplets of a dense matrix by an exact SVD, signs as sklearn's.

    Parameters
    ----------
    M : Tensor of shape (m, n)
    k : int

    Returns
    -------
    u : Tensor of shape (m, q)
    s : Tensor of shape (q,)
    v : Tensor of shape (n, q)
        ``q = min(k, m, n)``; the entry of largest magnitude of each column of ``u`` is
        positive (the convention of :func:`sklearn.utils.extmath.svd_flip` as
        ``randomized_svd`` applies it), ``v`` flipped alike.
    """
    u, s, vh = torch.linalg.svd(M, full_matrices=False)
    q = min(k, s.shape[0])
    u, s, v = u[:, :q], s[:q], vh[:q].T
    top = u.abs().argmax(dim=0)
    signs = torch.sign(u[top, torch.arange(q, device=u.device)])
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return u * signs, s.contiguous(), v * signs


@functools.cache
def _blas_threads() -> ThreadpoolController:
    """The thread pools of the loaded BLAS libraries, inspected once per process."""
    return ThreadpoolController()


def _haar_action(
    V_: torch.Tensor, U_: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(O V_, Oᵀ U_)`` for one Haar-random orthogonal ``O`` on ``R^d``, never forming ``O``.

    ``O V_`` is a uniform orthonormal frame ``A``; writing ``U_ = A(AᵀU_) + F G`` with
    ``F ⊥ A``, ``OᵀA = V_`` and ``OᵀF`` is a uniform frame orthogonal to ``V_``.
    """
    d, r = V_.shape
    A = epsilon_orthogonal(d, r, generator=generator)
    coef = A.T @ U_
    _, G = torch.linalg.qr(U_ - A @ coef)  # U_ − A(AᵀU_) = F G with F ⊥ A
    Z = torch.randn(d, r, dtype=torch.float64, generator=generator)
    Z = Z - V_ @ (V_.T @ Z)
    H, _ = torch.linalg.qr(Z)
    return A, V_ @ coef + H @ G


def parsimony(
    u: np.ndarray,
    v: np.ndarray,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The law-of-parsimony factors ``U(0), V(0)`` of the compressed network.

    With the full-width network at ε-orthogonal init, ``W_{L:1}(0) = ε^L Q`` with ``Q``
    a Haar-random partial isometry (``Q = O[:m, :n]``, ``O`` Haar on ``R^{max(m, n)}``),
    and the gradient at init is ``≈ −s·P_Ω(Y)``, whose top-r̂ singular vectors are
    ``u``, ``v``. Gradient descent acts on the span of ``v`` and ``Qᵀu`` (right side) and
    ``u`` and ``Qv`` (left side). For ``m ≤ n``, ``V(0)`` is an orthonormal basis of
    ``span[v, Qᵀu]`` and ``U(0) = Q V(0)``, so that
    ``ε^L U(0) V(0)ᵀ = X_full(0) P_{span V(0)}``; for ``m > n`` the same holds for the
    transposed problem. ``Q`` is only ever applied to those 2r̂ directions.

    Parameters
    ----------
    u : ndarray of shape (m, r)
        Top-r̂ left singular vectors of ``P_Ω(Y)``.
    v : ndarray of shape (n, r)
        Top-r̂ right singular vectors.
    generator : torch.Generator, default=None
    dtype : torch.dtype, default=torch.float64
    device : torch.device or str, default=None

    Returns
    -------
    U : Tensor of shape (m, 2*r)
    V : Tensor of shape (n, 2*r)
    """
    u_t = torch.as_tensor(u, dtype=torch.float64)
    v_t = torch.as_tensor(v, dtype=torch.float64)
    m, n = u_t.shape[0], v_t.shape[0]
    if m > n:  # solve the transposed problem: Xᵀ = V C̃ᵀ Uᵀ
        V, U = parsimony(v, u, generator=generator, dtype=dtype, device=device)
        return U, V
    # m <= n: O is Haar on R^n, Q = O[:m, :], Q Qᵀ = I_m.
    u_pad = torch.zeros(n, u_t.shape[1], dtype=torch.float64)
    u_pad[:m] = u_t
    Ov, Qt_u = _haar_action(v_t, u_pad, generator)
    V, R = torch.linalg.qr(torch.cat([v_t, Qt_u], dim=1))
    # U = Q V = [Q v, Q Qᵀ u] R⁻¹ = [(O v)[:m], u] R⁻¹
    left = torch.cat([Ov[:m], u_t], dim=1)
    U = torch.linalg.solve_triangular(R, left, upper=True, left=False)
    return U.to(device=device, dtype=dtype), V.to(device=device, dtype=dtype)


def spectral(
    u: np.ndarray,
    v: np.ndarray,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral factors (Kwon et al.): the top-2r̂ singular vectors of ``s·P_Ω(Y)``.

    Parameters
    ----------
    u : ndarray of shape (m, 2*r)
    v : ndarray of shape (n, 2*r)

    Returns
    -------
    U : Tensor of shape (m, 2*r)
    V : Tensor of shape (n, 2*r)
    """
    return (
        torch.as_tensor(np.ascontiguousarray(u)).to(device=device, dtype=dtype),
        torch.as_tensor(np.ascontiguousarray(v)).to(device=device, dtype=dtype),
    )


def random_frames(
    m: int,
    n: int,
    k: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random orthonormal factors ``U ∈ R^{m×k}``, ``V ∈ R^{n×k}``."""
    U = epsilon_orthogonal(m, k, generator=generator, dtype=dtype, device=device)
    V = epsilon_orthogonal(n, k, generator=generator, dtype=dtype, device=device)
    return U, V

"""Tensor kernels: sampled dense-dense products, sparse gradients, matrix chains.

Everything here is a pure function of tensors. The compressed model never forms an
``m × n`` matrix: predictions on Ω are ``(A Bᵀ)[Ω]`` computed by
:func:`torch.sparse.sampled_addmm`, and gradients are CSR × dense products.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "ObservedPattern",
    "chain_backward",
    "chain_prefixes",
    "chain_product",
    "sampled_product",
    "sparse_matmul",
    "sparse_t_matmul",
]


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


@dataclass(frozen=True)
class ObservedPattern:
    """CSR structure of the observed set Ω, and of its transpose.

    Observations are stored sorted by (row, column), so the ``k``-th observation is the
    ``k``-th stored value of the CSR matrix; ``perm`` reorders them column-major for the
    transposed CSR.

    Parameters
    ----------
    crow, col : Tensor
        CSR row pointers (m + 1,) and column indices (N,) of Ω.
    crow_t, col_t : Tensor
        CSR row pointers (n + 1,) and column indices (N,) of Ωᵀ.
    perm : Tensor of shape (N,)
        ``values_t = values[perm]``.
    shape : tuple of (int, int)
    """

    crow: torch.Tensor
    col: torch.Tensor
    crow_t: torch.Tensor
    col_t: torch.Tensor
    perm: torch.Tensor
    shape: tuple[int, int]

    @classmethod
    def from_coo(
        cls, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]
    ) -> ObservedPattern:
        """Build from row-major-sorted coordinates ``rows``, ``cols`` (int64)."""
        m, n = shape
        crow = torch._convert_indices_from_coo_to_csr(rows, m)
        perm = torch.argsort(cols * m + rows)
        crow_t = torch._convert_indices_from_coo_to_csr(cols[perm], n)
        return cls(crow, cols, crow_t, rows[perm], perm, (m, n))

    @property
    def n_observed(self) -> int:
        return int(self.col.shape[0])

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """The sparse ``m × n`` CSR matrix with ``values`` on Ω."""
        return _csr(self.crow, self.col, values, self.shape)

    def matrix_t(self, values: torch.Tensor) -> torch.Tensor:
        """The sparse ``n × m`` CSR matrix ``(P_Ω values)ᵀ``."""
        return _csr(self.crow_t, self.col_t, values[self.perm], self.shape[::-1])


def sampled_product(pattern: ObservedPattern, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Entries of ``A @ B.T`` on Ω, in observation order, without forming ``A @ B.T``.

    Parameters
    ----------
    pattern : ObservedPattern
    A : Tensor of shape (m, k)
    B : Tensor of shape (n, k)

    Returns
    -------
    Tensor of shape (N,)
    """
    ones = torch.ones(pattern.n_observed, dtype=A.dtype, device=A.device)
    return torch.sparse.sampled_addmm(pattern.matrix(ones), A, B.T, beta=0.0).values()


def sparse_matmul(pattern: ObservedPattern, values: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``R @ B`` where ``R`` is the sparse matrix with ``values`` on Ω; shape (m, k)."""
    return pattern.matrix(values) @ B


def sparse_t_matmul(
    pattern: ObservedPattern, values: torch.Tensor, A: torch.Tensor
) -> torch.Tensor:
    """``Rᵀ @ A`` where ``R`` is the sparse matrix with ``values`` on Ω; shape (n, k)."""
    return pattern.matrix_t(values) @ A


def chain_prefixes(layers: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Partial products ``[W_1, W_2 W_1, …, W_L ⋯ W_1]`` for ``layers = [W_1, …, W_L]``.

    The last element is the end-to-end product; the others are reused by
    :func:`chain_backward`.
    """
    prefixes = [layers[0]]
    for W in layers[1:]:
        prefixes.append(W @ prefixes[-1])
    return prefixes


def chain_product(layers: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W_L ⋯ W_1`` for ``layers = [W_1, …, W_L]``."""
    return chain_prefixes(layers)[-1]


def chain_backward(
    layers: Sequence[torch.Tensor], prefixes: Sequence[torch.Tensor], grad_out: torch.Tensor
) -> list[torch.Tensor]:
    """Gradients of ``⟨G, W_L ⋯ W_1⟩`` with respect to each layer.

    ``∇_{W_l} = (W_L ⋯ W_{l+1})ᵀ G (W_{l-1} ⋯ W_1)ᵀ``, by back-propagation through the
    chain: 2(L − 1) matrix products given the forward ``prefixes``.

    Parameters
    ----------
    layers : sequence of Tensor
        ``[W_1, …, W_L]``.
    prefixes : sequence of Tensor
        Output of :func:`chain_prefixes` for ``layers``.
    grad_out : Tensor
        ``G``, the gradient of the loss with respect to the product.

    Returns
    -------
    list of Tensor
        ``[∇_{W_1}, …, ∇_{W_L}]``.

    Examples
    --------
    >>> import torch
    >>> Ws = [torch.randn(3, 3, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    >>> G = torch.randn(3, 3, dtype=torch.float64)
    >>> (chain_product(Ws) * G).sum().backward()
    >>> with torch.no_grad():
    ...     grads = chain_backward(Ws, chain_prefixes(Ws), G)
    >>> all(torch.allclose(g, W.grad) for g, W in zip(grads, Ws))
    True
    """
    grads: list[torch.Tensor] = [grad_out] * len(layers)
    back = grad_out
    for idx in range(len(layers) - 1, 0, -1):
        grads[idx] = back @ prefixes[idx - 1].T
        back = layers[idx].T @ back
    grads[0] = back
    return grads

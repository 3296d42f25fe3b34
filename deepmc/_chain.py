"""Products of a chain of layers ``W_L ⋯ W_1`` and their gradients, by back-propagation.

Pure functions of tensors, shared by the full-width and narrow networks (the whole
chain), the compressed network (its cores) and the spectral analysis.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["chain_backward", "chain_prefixes", "chain_product"]


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

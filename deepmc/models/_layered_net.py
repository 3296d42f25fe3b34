"""The layered network ``X = W_L ⋯ W_1`` on dense arrays, and what every layered network shares.

* :func:`full_residual_and_grads` (and :func:`full_loss_and_grads`) — the masked
  residual and the exact gradients on dense ``m × n`` arrays, :func:`layer_factors`;
* :func:`chain_spectrum` — the thin SVD of ``X`` (through QR of the outer layers for a
  narrow network);
* :func:`prune_layers` — cut ``X`` to its top ``keep`` directions, every layer a
  balanced rank-``keep`` factor;
* :class:`LayerEdits` — the spectral policy's edits of a layered network (spectrum and
  prune; no re-balance, no re-seed), shared by :class:`FullNetwork` and the narrow
  network on the kernels of Ω (:class:`deepmc.models._narrow_net.NarrowNetwork`);
* :class:`FullNetwork` — what :class:`~deepmc.models._full.DeepMatrixCompletion` hands
  the solver and the spectral policy at full width (``width=None``), and the dense
  reference of the narrow network at any width.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from .._data import TrainingData
from .._device import available_bytes
from .._kernels import chain_backward, chain_prefixes, chain_product
from .._params import Params
from .._spectral import LOCAL, LocalRows, balanced_diagonal, fix_signs
from ..init import epsilon_orthogonal

__all__ = [
    "FullNetwork",
    "LayerEdits",
    "chain_spectrum",
    "check_fits",
    "full_loss_and_grads",
    "full_residual_and_grads",
    "layer_factors",
    "prune_layers",
]


def layer_factors(layers: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left, right)`` with ``W_L ⋯ W_1 = left @ right.T``: ``W_L ⋯ W_2`` and ``W_1ᵀ``.

    Parameters
    ----------
    layers : list of Tensor
        ``[W_1, …, W_L]``, ``W_1`` of shape (width, n) and ``W_L`` of shape (m, width).

    Returns
    -------
    left : Tensor of shape (m, width)
    right : Tensor of shape (n, width)
    """
    left = layers[-1]
    for W in reversed(layers[1:-1]):
        left = left @ W
    return left, layers[0].T


def full_residual_and_grads(
    layers: list[torch.Tensor], Y: torch.Tensor, M: torch.Tensor, s: float
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Masked residual and the exact gradients of ``(s/2)‖M ⊙ (W_L⋯W_1 − Y)‖²``.

    Parameters
    ----------
    layers : list of Tensor
        ``[W_1 (w × n), W_2 (w × w), …, W_L (m × w)]``.
    Y : Tensor of shape (m, n)
        Observed values, zero elsewhere.
    M : Tensor of shape (m, n)
        1 on observed entries, 0 elsewhere.
    s : float
        Loss scale ``m·n / N``.

    Returns
    -------
    residual : Tensor of shape (m, n)
        ``M ⊙ (X − Y)``; the loss is ``(s/2)‖residual‖²``.
    grads : list of Tensor
    """
    prefixes = chain_prefixes(layers)
    D = (prefixes[-1] - Y) * M
    return D, chain_backward(layers, prefixes, s * D)


def full_loss_and_grads(
    layers: list[torch.Tensor], Y: torch.Tensor, M: torch.Tensor, s: float
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """:func:`full_residual_and_grads` with the loss ``(s/2)‖residual‖²`` first.

    Returns
    -------
    loss : Tensor (scalar)
    residual : Tensor of shape (m, n)
    grads : list of Tensor
    """
    D, grads = full_residual_and_grads(layers, Y, M, s)
    return 0.5 * s * torch.sum(D * D), D, grads


def chain_spectrum(
    layers: Sequence[torch.Tensor], *, rows: LocalRows = LOCAL
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``X = W_L ⋯ W_1`` (``W_1`` is ``w × n``, ``W_L`` is ``m × w``).

    A narrow network (``w < min(m, n)``) goes through QR of ``W_L`` and ``W_1ᵀ`` and a
    ``w × w`` SVD; a full-width one takes the SVD of the ``m × n`` product. With
    ``rows`` splitting ``W_L`` over ranks (a narrow network only), ``P`` has this rank's
    rows.

    Returns
    -------
    P : Tensor of shape (m, k)
    sigma : Tensor of shape (k,)
    Q : Tensor of shape (n, k)
        With ``k = min(m, n, w)``.
    """
    first, last = layers[0], layers[-1]
    m, n, w = rows.n_rows(last.shape[0]), first.shape[1], first.shape[0]
    if w >= min(m, n):
        a, sigma, bh = torch.linalg.svd(chain_product(layers), full_matrices=False)
        P, Q = fix_signs(a, bh.T)
        return P, sigma, Q
    ql, rl = rows.qr(last)
    qf, rf = torch.linalg.qr(first.T)
    middle = rl
    for W in reversed(layers[1:-1]):
        middle = middle @ W
    a, sigma, bh = torch.linalg.svd(middle @ rf.T)
    P, Q = fix_signs(ql @ a, qf @ bh.T)
    return P, sigma, Q


def prune_layers(
    layers: Sequence[torch.Tensor], keep: int, *, rows: LocalRows = LOCAL
) -> list[torch.Tensor]:
    """Cut ``X = W_L ⋯ W_1`` (full width or narrow) to its top ``keep`` directions, balanced.

    With ``X ≈ P diag(σ) Qᵀ`` truncated to ``keep`` directions, the hidden frames are the
    images of the kept input directions, ``A_0 = Q`` and ``A_l = orth(W_l A_{l−1})``
    (QR), and the layers become ``W_l ← A_l diag(σ^{1/L}) A_{l−1}ᵀ`` with ``A_L = P``:
    each layer is a balanced rank-``keep`` factor and their product is the truncated
    ``X``. Everything outside the kept directions is set to zero. By the law of
    parsimony (Yaras et al. 2023) that complement is ``ρ(t)·`` (an orthogonal map) with
    ``ρ → 0`` as ``ε → 0``, and its end-to-end contribution ``≈ ε^L`` is the error floor
    of small initialisation; pruning takes that limit ``ρ = 0``, which gradient descent
    then keeps (every gradient through the complement has two zero factors). The kept
    part is exactly the compressed network's after :func:`prune_compressed`, so the
    two still follow the same end-to-end trajectory.

    Parameters
    ----------
    layers : sequence of Tensor
        ``[W_1 (w × n), W_2 (w × w), …, W_L (m × w)]``.
    keep : int
    rows : LocalRows, default=LOCAL
        How the rows of ``W_L`` are held (split over ranks in a distributed fit).

    Returns
    -------
    list of Tensor
        New layers of the same shapes.
    """
    P, sigma, Q = chain_spectrum(layers, rows=rows)
    keep = min(keep, sigma.shape[0])
    d = balanced_diagonal(sigma, keep, len(layers))[:keep]
    frames = [Q[:, :keep]]
    for W in layers[:-1]:
        frames.append(torch.linalg.qr(W @ frames[-1])[0])
    frames.append(P[:, :keep])
    return [(frames[i + 1] * d) @ frames[i].T for i in range(len(layers))]


def check_fits(data: TrainingData, estimate: int, network: str, sizes: str, hint: str) -> None:
    """Raise ``MemoryError`` when ``estimate`` bytes exceed 80 % of the device's free memory.

    Parameters
    ----------
    data : TrainingData
        Its shape and device.
    estimate : int
        Bytes the fit needs.
    network, sizes, hint : str
        The estimator as the user wrote it, what the estimate counts, what to do.
    """
    available = available_bytes(data.device)
    if available is not None and estimate > 0.8 * available:
        m, n = data.shape
        raise MemoryError(
            f"{network} on a {m}×{n} matrix needs about {estimate / 2**30:.1f} GiB ({sizes}) "
            f"but {available / 2**30:.1f} GiB are available on {data.device}. {hint}"
        )


class LayerEdits:
    """The spectral policy's edits of ``X = W_L ⋯ W_1`` (parameter group ``"layers"``).

    A layered network has no factors apart from its layers: nothing to re-balance, and
    no spare slots to re-seed (its width is its capacity).
    """

    #: No spare slots to re-initialise.
    can_reseed = False
    #: No factors moving at their own rate.
    rebalances = False

    def spectrum(
        self, params: Params, *, rows: LocalRows = LOCAL
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD of the end-to-end ``X`` (see :func:`chain_spectrum`)."""
        return chain_spectrum(params["layers"], rows=rows)

    def prune(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """Cut ``X`` to its top ``keep`` directions in place (see :func:`prune_layers`)."""
        new = prune_layers(params["layers"], keep, rows=rows)
        for W, w in zip(params["layers"], new, strict=True):
            W.copy_(w)

    def rebalance(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """Nothing to re-balance (:attr:`rebalances` is false)."""

    def rebalance_for_polish(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> bool:
        """Nothing to re-balance after a prune: ``False``."""
        return False

    def reseed(
        self,
        params: Params,
        keep: int,
        left: torch.Tensor,
        right: torch.Tensor,
        *,
        rows: LocalRows = LOCAL,
    ) -> None:
        """Not available (:attr:`can_reseed` is false)."""
        raise NotImplementedError("a layered network has no spare slots to re-seed")


@dataclass(frozen=True)
class FullNetwork(LayerEdits):
    """``X = W_L ⋯ W_1`` at width ``w`` (``None``: ``max(m, n)``), trained on dense arrays.

    Every step forms ``X`` and the dense masked residual (``m × n``): the network of
    ``DeepMatrixCompletion(width=None)``, which stays single-process.

    Parameters
    ----------
    width : int or None
    depth : int
        L.
    init_scale : float
        ε of the orthogonal initialisation.
    """

    width: int | None
    depth: int
    init_scale: float

    #: No parameter held by rows: its dense layers stay in one process.
    row_group = None

    @property
    def lr_ratios(self) -> dict[str, float]:
        return {"layers": 1.0}

    @property
    def n_singular(self) -> int:
        return 1

    def _width(self, shape: tuple[int, int]) -> int:
        return max(shape) if self.width is None else int(self.width)

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Nothing to check: any width ≥ 1 defines a network (memory is checked later)."""

    def check_memory(self, data: TrainingData) -> None:
        """Refuse, before allocating, a network that cannot fit on the device."""
        m, n = data.shape
        w = self._width(data.shape)
        L = self.depth
        itemsize = torch.empty((), dtype=data.dtype).element_size()
        n_params = m * w + (L - 2) * w * w + w * n
        # weights, gradients, snapshot, optimizer state; forward prefixes; dense Y, M, D, X
        estimate = itemsize * (4 * n_params + (L - 1) * w * n + 5 * m * n)
        check_fits(
            data, estimate, f"DeepMatrixCompletion(width={self.width!r})",
            f"depth {L}, width {w}, dense {m}×{n} arrays",
            "Use CompressedDeepMatrixCompletion, whose memory is O(N + (m+n)·rank).",
        )  # fmt: skip

    def initialize(self, data: TrainingData, u, v, generator: torch.Generator) -> Params:
        self.check_memory(data)
        m, n = data.shape
        w = self._width(data.shape)
        shapes = [(w, n)] + [(w, w)] * (self.depth - 2) + [(m, w)]
        layers = [
            epsilon_orthogonal(
                r, c, scale=self.init_scale, generator=generator, dtype=data.dtype,
                device=data.device,
            )
            for r, c in shapes
        ]  # fmt: skip
        data.dense_targets()
        return {"layers": layers}

    def stepper(self, data: TrainingData) -> Callable[[Params], tuple[torch.Tensor, Params]]:
        """:meth:`residual_and_grads` on ``data`` (it keeps no workspace of its own)."""
        return partial(self.residual_and_grads, data)

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        Y, M = data.dense_targets()
        resid, grads = full_residual_and_grads(params["layers"], Y, M, data.sampling_scale)
        return resid, {"layers": grads}

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.dense_targets()[0]

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return layer_factors(params["layers"])

    def step_work(self, data: TrainingData) -> int:
        m, n = data.shape
        return m * n * max(m, n)

    def fitted_attributes(self, params: dict[str, list[np.ndarray]], lr: float) -> dict[str, Any]:
        layers = params["layers"]
        return {"weights_": layers, "width_": layers[0].shape[0]}

    def stored_params(self, attributes: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
        return {"layers": attributes["weights_"]}

"""The narrow network ``X = W_L ⋯ W_1`` (width ``w``) on the kernels of the observed set.

The narrow network is the compressed product ``U · C · Vᵀ`` with ``U = W_L``,
``V = W_1ᵀ`` and the cores ``C = W_{L−1} ⋯ W_2``, every layer moving at the same step:
its residual and gradients are those of
:func:`~deepmc.models._compressed_step.compressed_residual_and_grads`, which never
forms an ``m × n`` array apart from the dense row blocks its kernels choose
(:class:`~deepmc._kernels.PatternKernels`, ``method="auto"``). They equal the dense
formula of :class:`~deepmc.models._layered_net.FullNetwork` at the same width up to the
order of summation; the spectral edits are the layered network's
(:class:`~deepmc.models._layered_net.LayerEdits`).

:class:`NarrowNetwork` serves one process and, its last layer split by rows, the
distributed fit (:class:`deepmc.distributed._network.ShardedNetwork`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._data import TrainingData
from .._params import Params
from ..init import epsilon_orthogonal
from ._compressed_step import CompressedWorkspace, compressed_residual_and_grads
from ._layered_net import LayerEdits, check_fits, layer_factors

__all__ = ["NarrowNetwork", "NarrowStepper"]


@dataclass(frozen=True)
class NarrowNetwork(LayerEdits):
    """``X = W_L ⋯ W_1`` at width ``w``, trained on the observed entries only.

    Parameters
    ----------
    width : int
        w: ``W_1`` is ``w × n``, ``W_2 … W_{L−1}`` are ``w × w``, ``W_L`` is ``m × w``.
    depth : int
        L (≥ 2).
    init_scale : float
        ε of the orthogonal initialisation.
    """

    width: int
    depth: int
    init_scale: float

    @property
    def lr_ratios(self) -> dict[str, float]:
        return {"layers": 1.0}

    @property
    def n_singular(self) -> int:
        return 1

    @property
    def row_group(self) -> tuple[str, int]:
        """``W_L``, the parameter a distributed fit splits by rows: ``("layers", L − 1)``."""
        return ("layers", self.depth - 1)

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Nothing to check: any width ≥ 1 defines a network (memory is checked later)."""

    def check_memory(self, data: TrainingData) -> None:
        """Refuse, before allocating, a network that cannot fit on the device."""
        m, n = data.shape
        w, L = self.width, self.depth
        itemsize = torch.empty((), dtype=data.dtype).element_size()
        n_params = m * w + (L - 2) * w * w + w * n
        # weights, gradients, snapshot, optimizer state; the step's m × w and n × w
        # products, its w × w prefixes and gradients; the residual and its snapshot on Ω
        estimate = itemsize * (
            4 * n_params + 4 * (m + n) * w + 3 * L * w * w + 2 * data.pattern.n_observed
        )
        check_fits(
            data, estimate, f"DeepMatrixCompletion(width={w})", f"depth {L}, width {w}",
            "Use a smaller width, or CompressedDeepMatrixCompletion.",
        )  # fmt: skip

    def initialize(
        self,
        data: TrainingData,
        u: np.ndarray | None,
        v: np.ndarray | None,
        generator: torch.Generator,
    ) -> Params:
        """The ε-orthogonal layers ``W_1, …, W_L``, drawn in this order from ``generator``.

        ``u`` and ``v`` are not used. A distributed fit draws them for the whole matrix
        (``data.shape`` the global one: the QR of ``W_L`` needs every row) and keeps its
        rows of :attr:`row_group`.
        """
        self.check_memory(data)
        m, n = data.shape
        w = self.width
        shapes = [(w, n)] + [(w, w)] * (self.depth - 2) + [(m, w)]
        opts = {"dtype": data.dtype, "device": data.device}
        layers = [
            epsilon_orthogonal(r, c, scale=self.init_scale, generator=generator, **opts)
            for r, c in shapes
        ]
        return {"layers": layers}

    def stepper(self, data: TrainingData) -> NarrowStepper:
        """The steps of one fit on ``data`` (:class:`NarrowStepper`), built once.

        Its residual and gradients live in a workspace that the next call overwrites:
        the solver copies what it keeps.
        """
        return NarrowStepper(self, data)

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """One step's residual and gradients (a fresh :meth:`stepper`: for one-off calls)."""
        return self.stepper(data)(params)

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.y

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        return layer_factors(params["layers"])

    def step_work(self, data: TrainingData) -> int:
        return data.pattern.n_observed * self.width * self.depth

    def fitted_attributes(self, params: dict[str, list[np.ndarray]], lr: float) -> dict[str, Any]:
        layers = params["layers"]
        return {"weights_": layers, "width_": layers[0].shape[0]}

    def stored_params(self, attributes: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
        return {"layers": attributes["weights_"]}


class NarrowStepper:
    """One fit's steps of a narrow network: residual and gradients into one workspace.

    The layers are the compressed product's operands as they are: ``U = W_L``,
    ``V = W_1ᵀ`` (a transposed view), the cores ``W_2 … W_{L−1}``; at depth 2 a
    ``w × w`` identity, never trained, stands for the cores. Calling it with the
    parameters is :meth:`NarrowNetwork.residual_and_grads`; the gradient of ``W_1`` is
    ``∇Vᵀ`` (a view when the kernels write ``∇V`` column-major).

    Parameters
    ----------
    network : NarrowNetwork
    data : TrainingData
    """

    def __init__(self, network: NarrowNetwork, data: TrainingData) -> None:
        self.data = data
        kernels = data.pattern.kernels(data.dtype)
        w, L = network.width, network.depth
        self.workspace = CompressedWorkspace(kernels, w, max(L - 2, 1))
        self.identity = None
        if L == 2:
            self.identity = [torch.eye(w, dtype=data.dtype, device=data.device)]

    def __call__(self, params: Params) -> tuple[torch.Tensor, Params]:
        """``P_Ω(X − Y)`` on Ω and the gradients of ``[W_1, …, W_L]``."""
        layers, data = params["layers"], self.data
        cores = layers[1:-1] if self.identity is None else self.identity
        resid, gU, gV, gcores = compressed_residual_and_grads(
            data.pattern, data.y, data.sampling_scale, layers[-1], layers[0].t(), cores,
            workspace=self.workspace,
        )  # fmt: skip
        middle = gcores if self.identity is None else []
        return resid, {"layers": [gV.t(), *middle, gU]}

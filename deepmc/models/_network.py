"""What a network gives the estimator and the solver.

A network is a small record of resolved hyper-parameters (depth, width or rank, ε,
learning-rate ratios) with the model's mathematics as methods. The estimator builds it
(``_build_network``), initialises it, hands it to :func:`deepmc._solver.gradient_descent`
and stores its parameters; nothing in it reads an estimator. Parameters travel as named
groups ``{group: [tensor, ...]}``; each group moves at ``lr · lr_ratios[group]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from .._data import TrainingData
from .._params import Params

__all__ = ["Network"]


class Network(Protocol):
    """The contract of a network (see :class:`~deepmc.models._compressed.CompressedNetwork`).

    The solver uses ``lr_ratios``, :meth:`residual_and_grads`, :meth:`targets`,
    :meth:`factors` and :meth:`step_work`; the estimator the rest.
    """

    #: Per-group multiplier of the learning rate, e.g. ``{"cores": 1.0, "factors": γ}``.
    lr_ratios: Mapping[str, float]
    #: How many singular triplets of ``s·P_Ω(Y)`` :meth:`initialize` needs (≥ 1).
    n_singular: int

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Raise ``ValueError`` when the hyper-parameters do not fit an ``m × n`` matrix."""

    def initialize(
        self, data: TrainingData, u: np.ndarray, v: np.ndarray, generator: torch.Generator
    ) -> Params:
        """Initial parameters on ``data``'s device, from the top singular vectors ``u``, ``v``."""

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """``P_Ω(X − Y)`` (any layout) and the gradients of ``(s/2)‖P_Ω(X − Y)‖²``.

        The gradients come in the order of ``params``, group by group.
        """

    def targets(self, data: TrainingData) -> torch.Tensor:
        """``P_Ω(Y)`` in the layout of the residual."""

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` with ``X = left @ right.T`` (normalised units)."""

    def step_work(self, data: TrainingData) -> int:
        """Multiply-adds of one step (order of magnitude; picks the CPU thread count)."""

    def fitted_attributes(self, params: dict[str, list[np.ndarray]], lr: float) -> dict[str, Any]:
        """The estimator's fitted attributes (name → value) for trained ``params`` at ``lr``."""

    def stored_params(self, attributes: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
        """Inverse of :meth:`fitted_attributes`: the parameter groups, for a warm start."""

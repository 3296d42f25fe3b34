"""What a network gives the estimator and the solver.

A network is a small record of resolved hyper-parameters (depth, width or rank, ε,
learning-rate ratios) with the model's mathematics as methods. The estimator builds it
(``_build_network``), initialises it, hands it to :func:`deepmc._solver.gradient_descent`
and its spectral policy (:class:`deepmc._policy.SpectralMonitor`) and stores its
parameters; nothing in it reads an estimator, and the policy edits the parameters only
through the network's methods. Parameters travel as named
groups ``{group: [tensor, ...]}``; each group moves at ``lr · lr_ratios[group]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from .._data import TrainingData
from .._params import Params
from .._spectral import LOCAL, LocalRows

__all__ = ["Network"]


class Network(Protocol):
    """The contract of a network (see :class:`~deepmc.models._compressed_net.CompressedNetwork`).

    The solver uses ``lr_ratios``, :meth:`stepper`, :meth:`targets`,
    :meth:`factors` and :meth:`step_work`; the spectral policy ``init_scale``,
    ``depth``, ``can_reseed``, ``rebalances`` and the edits from :meth:`spectrum` on;
    the estimator the rest. Every edit takes ``rows``, how the rows of the left factor
    are held (:data:`~deepmc._spectral.LOCAL`, or split over the ranks of a distributed
    fit), and writes the parameters in place.
    """

    #: Per-group multiplier of the learning rate, e.g. ``{"cores": 1.0, "factors": γ}``.
    lr_ratios: Mapping[str, float]
    #: How many singular triplets of ``s·P_Ω(Y)`` :meth:`initialize` needs (≥ 1).
    n_singular: int
    #: ε of the initialisation; ``ε^L`` is the size of the directions not yet learned.
    init_scale: float
    #: L, the number of layers (or cores).
    depth: int
    #: Whether :meth:`reseed` is available (spare slots to re-initialise).
    can_reseed: bool
    #: Whether :meth:`rebalance` and :meth:`rebalance_for_polish` change anything.
    rebalances: bool
    #: ``(group, index)`` of the one parameter of shape ``(m, ·)`` that a distributed fit
    #: splits by rows (the left factor); ``None`` for a network that stays in one process.
    row_group: tuple[str, int] | None

    def check_shape(self, shape: tuple[int, int]) -> None:
        """Raise ``ValueError`` when the hyper-parameters do not fit an ``m × n`` matrix."""

    def initialize(
        self, data: TrainingData, u: np.ndarray, v: np.ndarray, generator: torch.Generator
    ) -> Params:
        """Initial parameters on ``data``'s device, from the top singular vectors ``u``, ``v``."""

    def stepper(self, data: TrainingData) -> Callable[[Params], tuple[torch.Tensor, Params]]:
        """:meth:`residual_and_grads` on ``data`` as a function of the parameters.

        Built once per fit, with whatever the steps reuse (buffers, constants of
        ``data``); what it returns may live in buffers that the next call overwrites.
        """

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """``P_Ω(X − Y)`` (any layout) and the gradients of ``(s/2)‖P_Ω(X − Y)‖²``.

        The gradients come in the order of ``params``, group by group. One call; a
        training loop takes its steps from a :meth:`stepper`.
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

    def spectrum(
        self, params: Params, *, rows: LocalRows = LOCAL
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``(P, σ, Q)`` of the end-to-end ``X``, signs fixed by ``Q``.

        ``σ`` is decreasing, of length the network's width (or ``min(m, n)`` if
        smaller); ``P`` holds this process's rows.
        """

    def prune(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """Cut ``X`` to its top ``keep`` directions, every layer balanced."""

    def rebalance(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """The same ``X``, its top ``keep`` directions carried so that they learn alike.

        Nothing happens when :attr:`rebalances` is false.
        """

    def rebalance_for_polish(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> bool:
        """After a prune to ``keep``: the balance of the polish; whether anything changed."""

    def reseed(
        self,
        params: Params,
        keep: int,
        left: torch.Tensor,
        right: torch.Tensor,
        *,
        rows: LocalRows = LOCAL,
    ) -> None:
        """Re-initialise the slots past ``keep`` at ε along ``left`` and ``right``.

        Only when :attr:`can_reseed`.
        """

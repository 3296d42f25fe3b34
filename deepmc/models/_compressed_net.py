"""The compressed network ``X = U · W̃_L ⋯ W̃_1 · Vᵀ``: its record and mathematics.

:class:`CompressedNetwork` is what the estimator
(:class:`~deepmc.models._compressed.CompressedDeepMatrixCompletion`) hands the solver and
the spectral policy: its step (:mod:`~deepmc.models._compressed_step`) and its spectral
edits (:mod:`~deepmc.models._compressed_spectral`) as the methods of
:class:`~deepmc.models._network.Network`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._data import TrainingData
from .._kernels import chain_product
from .._params import Params
from .._spectral import LOCAL, LocalRows
from ..init import parsimony, random_frames, spectral
from ._compressed_spectral import (
    compressed_spectrum,
    copy_compressed,
    prune_compressed,
    rebalance_compressed,
    rebalance_for_polish,
    reseed_compressed,
)
from ._compressed_step import CompressedStepper

__all__ = ["CompressedNetwork"]


@dataclass(frozen=True)
class CompressedNetwork:
    """``X = U · W̃_L ⋯ W̃_1 · Vᵀ``: cores at η, factors ``U``, ``V`` at γη.

    Parameters
    ----------
    rank : int
        r̂; the cores are ``2r̂ × 2r̂``.
    depth : int
        L.
    init : {"parsimony", "spectral", "random"}
        ``U(0), V(0)``.
    init_scale : float
        ε: ``W̃_l(0) = εI``.
    factor_lr_ratio : float
        γ.
    weight_decay : float, default=0.0
        λ, which the optimizer applies to every parameter uniformly.
    decay_weighting : float, default=0.0
        α: with ``λ > 0`` and ``α > 0``, the step (:meth:`stepper`) adds the excess
        ``λ(w_u − 1) U_u`` and ``λ(w_i − 1) V_i`` of the row-weighted decay (see
        :func:`~deepmc.models._compressed_step.decay_weights`) to the factor gradients,
        so that optimizer and network together apply ``λ w_u U_u``. With ``α = 0`` the
        gradients are untouched.
    bias_reg : float or None, default=None
        λ_b of the row and column biases (parameter group ``"biases"``: ``a`` of shape
        ``(m, 1)``, ``b`` of shape ``(n, 1)``); ``None``: no biases.
    bias_lr_ratio : float, default=0.0
        Step ratio of the biases, whose "gradient" is the Jacobi-preconditioned one:
        ``BIAS_STEP / η`` makes each step :data:`BIAS_STEP` of a Jacobi step.
    """

    rank: int
    depth: int
    init: str
    init_scale: float
    factor_lr_ratio: float
    weight_decay: float = 0.0
    decay_weighting: float = 0.0
    bias_reg: float | None = None
    bias_lr_ratio: float = 0.0

    #: ``U``, the parameter a distributed fit splits by rows.
    row_group = ("factors", 0)

    @property
    def lr_ratios(self) -> dict[str, float]:
        ratios = {"cores": 1.0, "factors": self.factor_lr_ratio}
        if self.bias_reg is not None:
            ratios["biases"] = self.bias_lr_ratio
        return ratios

    @property
    def n_singular(self) -> int:
        return {"parsimony": self.rank, "spectral": 2 * self.rank, "random": 1}[self.init]

    def check_shape(self, shape: tuple[int, int]) -> None:
        if min(shape) < 2:
            raise ValueError(
                f"X: the compressed network needs a matrix with at least 2 rows and 2 "
                f"columns (its width 2*rank is at least 2); got shape {shape} "
                f"(n_samples = {shape[0]}, n_features = {shape[1]})."
            )
        if 2 * self.rank > min(shape):
            raise ValueError(
                f"rank: the compressed network has width 2*rank = {2 * self.rank}, which "
                f"must not exceed min(m, n) = {min(shape)} for a matrix of shape {shape} "
                f"(n_samples={shape[0]}, n_features={shape[1]}); got rank={self.rank}, "
                f"expected 1 <= rank <= {min(shape) // 2}."
            )

    def initialize(self, data: TrainingData, u, v, generator: torch.Generator) -> Params:
        m, n = data.shape
        k = 2 * self.rank
        opts = {"dtype": data.dtype, "device": data.device}
        if self.init == "parsimony":
            U, V = parsimony(u, v, generator=generator, **opts)
        elif self.init == "spectral":
            U, V = spectral(u, v, **opts)
        else:
            U, V = random_frames(m, n, k, generator=generator, **opts)
        eye = torch.eye(k, **opts)
        cores = [self.init_scale * eye.clone() for _ in range(self.depth)]
        params = {"cores": cores, "factors": [U, V]}
        if self.bias_reg is not None:
            params["biases"] = [torch.zeros(m, 1, **opts), torch.zeros(n, 1, **opts)]
        return params

    def stepper(self, data: TrainingData) -> CompressedStepper:
        """The steps of one fit on ``data`` (:class:`CompressedStepper`), built once.

        Its residual and the gradients of ``U`` and ``V`` live in a workspace that the
        next call overwrites: the solver copies what it keeps.
        """
        return CompressedStepper(self, data)

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """One step's residual and gradients (a fresh :meth:`stepper`: for one-off calls)."""
        return self.stepper(data)(params)

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.y

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` with ``X = left · rightᵀ``: ``[U C, a, 1]`` and ``[V, 1, b]``."""
        U, V = params["factors"]
        left = U @ chain_product(params["cores"])
        if self.bias_reg is None:
            return left, V
        a, b = params["biases"]
        return torch.cat([left, a, torch.ones_like(a)], 1), torch.cat([V, torch.ones_like(b), b], 1)

    def step_work(self, data: TrainingData) -> int:
        return data.pattern.n_observed * 2 * self.rank * self.depth

    # ------------------------------------------------- the spectral policy's edits
    #: The spare slots can be re-initialised along the residual (:meth:`reseed`).
    can_reseed = True

    @property
    def rebalances(self) -> bool:
        """Whether the factors move (γ > 0): :meth:`rebalance` then applies."""
        return bool(self.factor_lr_ratio)

    def spectrum(
        self, params: Params, *, rows: LocalRows = LOCAL
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD of the end-to-end ``X`` (see :func:`compressed_spectrum`)."""
        U, V = params["factors"]
        return compressed_spectrum(U, V, params["cores"], rows=rows)

    def prune(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """Cut ``X`` to its top ``keep`` directions in place (see :func:`prune_compressed`)."""
        U, V = params["factors"]
        copy_compressed(params, prune_compressed(U, V, params["cores"], keep, rows=rows))

    def rebalance(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """The ``"rate"`` balance on the top ``keep`` directions, in place, nothing cut.

        See :func:`rebalance_compressed`.
        """
        U, V = params["factors"]
        copy_compressed(params, rebalance_compressed(U, V, params["cores"], keep, rows=rows))

    def rebalance_for_polish(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> bool:
        """After a prune to ``keep``: the ``"rate"`` balance when the factors move.

        See :func:`rebalance_for_polish`; returns whether ``params`` changed.
        """
        return rebalance_for_polish(params, keep, self.lr_ratios, rows=rows)

    def reseed(
        self,
        params: Params,
        keep: int,
        left: torch.Tensor,
        right: torch.Tensor,
        *,
        rows: LocalRows = LOCAL,
    ) -> None:
        """Re-initialise the slots past ``keep`` at ε along ``left``/``right``, in place."""
        U, V = params["factors"]
        new = reseed_compressed(
            U, V, params["cores"], keep, left, right, self.init_scale, rows=rows
        )
        copy_compressed(params, new)

    def fitted_attributes(self, params: dict[str, list[np.ndarray]], lr: float) -> dict[str, Any]:
        U, V = params["factors"]
        fitted = {
            "rank_": self.rank,
            "cores_": params["cores"],
            "U_": U,
            "V_": V,
            "factor_lr_": lr * self.factor_lr_ratio,
        }
        if self.bias_reg is not None:
            a, b = params["biases"]
            fitted.update(row_bias_=a[:, 0], col_bias_=b[:, 0])
        return fitted

    def stored_params(self, attributes: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
        stored = {"cores": attributes["cores_"], "factors": [attributes["U_"], attributes["V_"]]}
        if self.bias_reg is not None:
            a, b = attributes["row_bias_"], attributes["col_bias_"]
            stored["biases"] = [a.reshape(-1, 1), b.reshape(-1, 1)]
        return stored

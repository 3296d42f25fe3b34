"""Networks whose gradients are summed over the ranks: one all-reduce per step.

Each rank holds the rows of ``U`` (the network's ``row_group``: the compressed
network's left factor, or the narrow network's last layer ``W_L``) that match its
observations, and a replica of everything else. With ``R`` the residual on Ω split by
row blocks ``R_p``:

* ``∇U_p = s (R_p V) Cᵀ`` needs only the rank's rows;
* ``∇V = s Σ_p R_pᵀ (U_p C)`` and ``∇C = s Σ_p U_pᵀ (R_p V)`` are sums over ranks of
  local terms, linear in the residual.

So every rank computes the local terms with the single-process kernels and the ranks
sum the packed buffer ``[∇V, ∇cores, ‖R_p‖², N_p]`` — ``n·k + L·k² + 2`` values,
independent of the number of observations. Every rank receives the same sum, so the
replicas stay identical and the iterates are those of single-process gradient
descent, up to the order of summation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .._data import TrainingData
from .._solver import Params
from .._spectral import LOCAL, LocalRows
from ._comm import Comm

__all__ = ["ShardedNetwork"]


@dataclass
class ShardedNetwork:
    """A network of the row-sharded kind, its replicated gradients all-reduced per step.

    Parameters
    ----------
    inner : Network
        The single-process network, used on this rank's rows (``data`` of shape
        ``(m_p, n)``, with the global loss scale ``s``).
    comm : Comm
    local : tuple of (str, int), default=("factors", 0)
        The one parameter held by rows (group, index): the network's ``row_group``.
    """

    inner: Any
    comm: Comm
    local: tuple[str, int] = ("factors", 0)
    _last: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def last_loss_terms(self) -> tuple[float, float]:
        """``(‖P_Ω(X − Y)‖², N)`` summed over the ranks at the last step (normalised units)."""
        if self._last is None:
            return float("nan"), float("nan")
        return float(self._last[0]), float(self._last[1])

    @property
    def lr_ratios(self) -> Mapping[str, float]:
        return self.inner.lr_ratios

    @property
    def n_singular(self) -> int:
        return self.inner.n_singular

    @property
    def row_group(self) -> tuple[str, int]:
        """The parameter held by rows (``local``)."""
        return self.local

    # the spectral policy (deepmc._policy.SpectralMonitor) calls the inner network's
    # edits on this rank's rows, passing the ranks' ShardedRows
    @property
    def init_scale(self) -> float:
        return self.inner.init_scale

    @property
    def depth(self) -> int:
        return self.inner.depth

    @property
    def can_reseed(self) -> bool:
        return self.inner.can_reseed

    @property
    def rebalances(self) -> bool:
        return self.inner.rebalances

    def spectrum(
        self, params: Params, *, rows: LocalRows = LOCAL
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The inner network's :meth:`~deepmc.models._network.Network.spectrum`."""
        return self.inner.spectrum(params, rows=rows)

    def prune(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """The inner network's :meth:`~deepmc.models._network.Network.prune`."""
        self.inner.prune(params, keep, rows=rows)

    def rebalance(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """The inner network's :meth:`~deepmc.models._network.Network.rebalance`."""
        self.inner.rebalance(params, keep, rows=rows)

    def rebalance_for_polish(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> bool:
        """The inner network's :meth:`~deepmc.models._network.Network.rebalance_for_polish`."""
        return self.inner.rebalance_for_polish(params, keep, rows=rows)

    def reseed(
        self,
        params: Params,
        keep: int,
        left: torch.Tensor,
        right: torch.Tensor,
        *,
        rows: LocalRows = LOCAL,
    ) -> None:
        """The inner network's :meth:`~deepmc.models._network.Network.reseed`."""
        self.inner.reseed(params, keep, left, right, rows=rows)

    def stepper(self, data: TrainingData) -> Callable[[Params], tuple[torch.Tensor, Params]]:
        """The inner network's steps on this rank's rows, their replicated gradients summed."""
        if not data.pattern.n_observed:  # no observation on this rank: zero terms
            return lambda params: self._reduce(*_no_terms(data, params))
        local = self.inner.stepper(data)
        return lambda params: self._reduce(*local(params))

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """Local residual, the local gradient of the rows, and summed replicated gradients."""
        return self.stepper(data)(params)

    def _reduce(self, resid: torch.Tensor, grads: Params) -> tuple[torch.Tensor, Params]:
        """Sum the replicated gradients (and ``‖R_p‖², N_p``) over the ranks, in place."""
        shared = [
            (name, i)
            for name, gs in grads.items()
            for i in range(len(gs))
            if (name, i) != self.local
        ]
        extra = torch.stack([torch.dot(resid, resid), resid.new_tensor(float(resid.shape[0]))]).to(
            resid.dtype
        )
        flat = torch.cat([grads[name][i].reshape(-1) for name, i in shared] + [extra])
        self.comm.sum_(flat)
        offset = 0
        for name, i in shared:
            g = grads[name][i]
            grads[name][i] = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()
        self._last = flat[-2:]  # read back only on demand: no host sync per step
        return resid, grads

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.y

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left rows of this rank, right)``; predictions exist only for the rank's rows."""
        return self.inner.factors(params)

    def step_work(self, data: TrainingData) -> int:
        return self.inner.step_work(data)


def _no_terms(data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
    """A zero residual and zero gradients: the terms of a rank without observations."""
    return data.y.new_zeros(0), {k: [torch.zeros_like(p) for p in v] for k, v in params.items()}

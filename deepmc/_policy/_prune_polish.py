"""Prune & polish: cut the network at a spectral gap, re-seed it on a plateau, re-balance it.

Cut directions stay exactly zero under gradient descent (every gradient through them
has at least two zero factors), so once ``X`` is cut to the directions above its gap the
``ε^L`` floor that small initialisation leaves behind is gone and plain gradient descent
*polishes* the kept part to the exact low-rank solution. :class:`PrunePolish` decides
the edits; the network makes them (:meth:`~deepmc.models._network.Network.prune`,
``reseed``, ``rebalance``, ``rebalance_for_polish``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ._analysis import Analysis, SpectralAnalysis
from ._state import PolicyState

__all__ = ["GROWTH", "STABLE", "PrunePolish"]

#: Largest relative change of the kept singular values between checks for a prune.
STABLE = 1e-2
#: ``σ_{keep+1}`` growing by more than this factor per check is a direction being learned.
GROWTH = 1.1


class PrunePolish:
    """The edits at a spectral gap: prune, re-seed or re-balance (:meth:`__call__`).

    Parameters
    ----------
    state : PolicyState
        Records the edits (``pruned``, ``reseeds``, ``rebalanced``, ``gap_seen``).
    analysis : SpectralAnalysis
    """

    def __init__(self, state: PolicyState, analysis: SpectralAnalysis) -> None:
        self.state, self.analysis = state, analysis

    def __call__(self, check: Any, an: Analysis, previous: tuple | None) -> str | None:
        """Edit ``check.params`` in place when the gap says so; the history's note.

        At a gap of at least ``min_gap`` whose values above it have settled (relative
        change ≤ :data:`STABLE` since ``previous``, the previous check's singular values
        and ``σ_{keep+1}``):

        * no escaping direction outside the kept ones: prune to them (and give the
          polish its balance);
        * an escaping direction that the spare slots do not pick up (``σ_{keep+1}``
          neither above the ε-level nor growing by :data:`GROWTH`): re-seed them along
          the residual (a network that can);
        * otherwise, once the kept directions are in the linear regime, re-balance them
          (a network whose factors move), once per rank.

        Returns
        -------
        str or None
            The note, or None when nothing was edited.
        """
        state, network, rows = self.state, self.analysis.network, self.analysis.rows
        keep, sig = an.keep, an.sigma
        if an.ratio < self.analysis.min_gap or keep >= sig.shape[0] or previous is None:
            return None
        state.gap_seen = True
        prev_sig, prev_next = previous
        nxt = float(sig[keep])
        stable = bool(np.max(np.abs(sig[:keep] - prev_sig[:keep]) / sig[:keep]) <= STABLE)
        with torch.no_grad():
            if stable and not an.escaping(keep):
                network.prune(check.params, keep, rows=rows)
                network.rebalance_for_polish(check.params, keep, rows=rows)
                state.pruned = keep
                return f"pruned to rank {keep}"
            if (
                stable
                and network.can_reseed
                and state.reseeds < sig.shape[0]
                # the spare slots learn nothing
                and nxt <= min(self.analysis.level, GROWTH * prev_next)
            ):
                state.reseeds += 1
                left, values, right, _ = an.escape(keep)
                network.reseed(check.params, keep, left, right, rows=rows)
                state.rebalanced = None  # the re-seed balanced the kept part in the cores
                return (
                    f"re-seeded {sig.shape[0] - keep} direction(s) along the residual "
                    f"(its top singular value {float(values[0]):.3g} × σ₁)"
                )
            if network.rebalances and state.rebalanced != keep and an.in_linear_regime(keep):
                network.rebalance(check.params, keep, rows=rows)
                state.rebalanced = keep
                return f"re-balanced the top {keep} direction(s)"
        return None

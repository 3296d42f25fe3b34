"""The policy on noisy data: the cut at the noise edge, and the stop of its polish.

On noisy data no spectral gap forms: the network goes on learning the noise's own top
directions. :class:`NoiseCut` cuts the fit to the directions above the noise edge
instead, with the statistics of :mod:`deepmc._noise`, and tells when the polish after
that cut has settled to the noise's precision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._noise import (
    cut_rank,
    degrees_of_freedom,
    noise_edge,
    rss_by_rank,
    signal_rank,
    statistically_settled,
)
from ._analysis import Analysis, SpectralAnalysis
from ._state import PolicyState

__all__ = ["NOISE_LEARNED", "NOISE_OUTLIER", "NOISE_STABLE", "NOISE_TOGETHER", "NoiseCut"]

#: Largest relative change of the signal singular values between checks for a cut at
#: the noise edge (the noise the network learns meanwhile moves them a little).
NOISE_STABLE = 0.1
#: A direction below the noise edge counts as noise being learned from this fraction of
#: the edge on.
NOISE_LEARNED = 0.25
#: Directions below the noise edge learned together before they count as noise.
NOISE_TOGETHER = 2
#: The top singular value of the residual outside the kept directions may exceed the
#: noise edge by this factor (finite-size fluctuations) for the rest to count as noise.
NOISE_OUTLIER = 1.2


class NoiseCut:
    """The cut at the noise edge (:meth:`__call__`) and its stop (:meth:`settled`).

    Parameters
    ----------
    state : PolicyState
        Records the cut (``pruned``, ``noise``) and the last change (``last_change``).
    analysis : SpectralAnalysis
    tol : float
    scale : float
        The data scale, for the noise level written in the history (user units).
    """

    def __init__(
        self, state: PolicyState, analysis: SpectralAnalysis, tol: float, scale: float
    ) -> None:
        self.state, self.analysis, self.tol, self.scale = state, analysis, tol, scale

    def settled(self, check: Any) -> bool:
        """After a cut at the noise edge: change ≤ tol, or settled to the noise's precision."""
        state, data, rows = self.state, self.analysis.data, self.analysis.rows
        change, previous = check.row["change"], state.last_change
        state.last_change = change
        if change <= self.tol:
            return True
        r = self.analysis.on_omega(check.residual)
        fitted = math.sqrt(float(rows.sum_((r + data.y).square().sum())))
        dof = degrees_of_freedom(self.analysis.shape, state.pruned or 0)
        return statistically_settled(change, previous, fitted, state.noise, dof)

    def _rss_by_rank(self, an: Analysis, top: int) -> list[float]:
        """``Σ_Ω (X_k − Y)²`` for ``X`` cut to ``k = 0, …, top`` (:func:`rss_by_rank`)."""
        sampled = self.analysis.data.pattern.kernels(an.P.dtype).sampled
        sigma = torch.as_tensor(an.sigma).to(an.P)
        return rss_by_rank(an.residual(), an.P, sigma, an.Q, top, sampled, self.analysis.rows.sum_)

    def _signal(self, an: Analysis, prev_sig: np.ndarray) -> tuple[int, float] | None:
        """``(keep, noise level)`` when the network learns noise below the edge, else None."""
        learned = an.learned
        if learned == 0:
            return None
        m, n = self.analysis.shape
        s = self.analysis.data.sampling_scale
        keep, sigma = cut_rank(
            an.sigma, self._rss_by_rank(an, learned), round(m * n / s), (m, n), s
        )
        if sigma is None:
            return None
        edge = noise_edge(sigma, (m, n), s)
        # directions below the edge are being learned, beyond the ε-level growth, and
        # several at once: the top of the noise bulk is flat, so noise is learned by
        # several directions together where signal is learned one after another (one
        # more is asked before calling the whole matrix noise)
        together = NOISE_TOGETHER + (keep == 0)
        below = an.sigma[keep : keep + together]
        if keep >= learned or below.size < together or below[-1] < NOISE_LEARNED * edge:
            return None
        if signal_rank(prev_sig, edge) != keep:
            return None
        if an.ratio >= self.analysis.min_gap and an.keep == keep:  # a spectral gap: the prune's
            return None
        top = an.sigma[:keep]
        if keep and np.max(np.abs(top - prev_sig[:keep]) / top) > NOISE_STABLE:
            return None
        # the estimate needs the kept directions fitted (at least the top one learned),
        # and what is left outside them must look like noise of that level
        if not an.in_linear_regime(max(keep, 1)) or an.escaping(keep):
            return None
        if float(an.escape(keep)[1][0]) > NOISE_OUTLIER * edge:
            return None
        return keep, sigma

    def __call__(self, check: Any, an: Analysis, prev_sig: np.ndarray) -> str | None:
        """Prune at the noise edge once the network learns directions below it.

        With ``k`` the learned directions, the noise level is read off the residual
        (:func:`~deepmc._noise.noise_level`) and the learned singular values of ``X``
        above the noise edge (:func:`~deepmc._noise.noise_edge`) are the signal. When
        some learned ones are below it, the signal ones have settled (relative change
        ≤ :data:`NOISE_STABLE` since ``prev_sig``, the previous check's) and the
        residual outside them has no escaping direction, the network is fitting noise:
        it is cut to the signal directions, which are then polished, and the rank is
        locked (the state's ``noise`` records the level).

        Returns
        -------
        str or None
            The history's note of the cut, or None when nothing was cut.
        """
        found = self._signal(an, prev_sig)
        if found is None:
            return None
        keep, sigma = found
        network, rows = self.analysis.network, self.analysis.rows
        with torch.no_grad():
            network.prune(check.params, keep, rows=rows)
            network.rebalance_for_polish(check.params, keep, rows=rows)
        self.state.pruned, self.state.noise = keep, sigma
        return (
            f"noise level {sigma * self.scale:.3g}: pruned to rank {keep}, the directions "
            "above the noise edge"
        )

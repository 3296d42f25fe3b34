"""The spectral policy's coordinator: one analysis per check, handed to its parts."""

from __future__ import annotations

import math
from typing import Any

import torch

from .._data import TrainingData
from .._noise import noise_level
from .._spectral import LOCAL, MIN_GAP, LocalRows
from ._analysis import SpectralAnalysis
from ._momentum import MomentumSchedule
from ._noise_cut import NoiseCut
from ._plateau import PlateauRule
from ._prune_polish import PrunePolish
from ._state import PolicyState

__all__ = ["SpectralMonitor"]


class SpectralMonitor:
    """Plateau-aware stop rule and prune & polish, for :func:`deepmc._solver.gradient_descent`.

    ``stop_rule`` says ``"converged"`` only when the fitted values have settled
    (``change ≤ tol``) *and* the residual has no escaping direction
    (:func:`~deepmc._spectral.escaping_direction`): on a saddle between two learned
    directions it goes on, and records what is left in :attr:`plateau` for the
    estimator's warning (:class:`~deepmc._policy._plateau.PlateauRule`). ``callback``
    (with ``prune=True``) cuts the network to the directions above the spectral gap
    once the gap is at least ``min_gap``, the kept singular values have settled and
    cutting leaves no escaping direction; it records ``"pruned to rank k"`` in the
    history. When an escaping direction blocks the cut and nothing is being learned
    (``σ_{keep+1}`` not growing), a network that can re-seed re-initialises its spare
    slots along the residual's top directions (``"re-seeded ..."``). A network whose
    factors move is re-balanced (``"re-balanced the top k direction(s)"``) once the
    directions above the gap are in the linear regime, and again at the prune
    (:class:`~deepmc._policy._prune_polish.PrunePolish`). Two checks after the
    re-balance, or after the prune for networks without one, the descent turns to
    heavy-ball steps, β from the residual's contraction over those checks; every later
    edit restarts the velocity (a re-seed or re-balance also the measurement; the prune
    keeps β; :class:`~deepmc._policy._momentum.MomentumSchedule`). A fit that settles
    with a gap still uncut waits a few checks for the prune before ``stop_rule`` calls
    it converged.

    On noisy data no gap forms: the network goes on learning the noise's own top
    directions. ``callback`` then cuts at the noise edge instead
    (:class:`~deepmc._policy._noise_cut.NoiseCut`, ``"noise level …: pruned to rank
    k"``) and ``stop_rule`` stops the polish once it is settled to the noise's
    precision. A fit that settles without having learned any direction is on the
    plateau of a too small ``ε^L``: ``stop_rule`` never calls that converged
    (:attr:`plateau` says so for the warning).

    Every part reads the one :class:`~deepmc._policy._analysis.Analysis` of the check
    and edits the network only through its methods
    (:class:`~deepmc.models._network.Network`).

    Parameters
    ----------
    network : Network
    data : TrainingData
    tol : float
    n_iter_no_change : int, default=10
    prune : bool, default=False
    min_gap : float, default=MIN_GAP
    seed : int, default=0
        Of the random start of the subspace iterations.
    rows : LocalRows, default=LOCAL
        How the rows of the matrix are held: a distributed fit passes its ranks' split
        (``deepmc.distributed._linalg.ShardedRows``) with this rank's ``data``; every rank
        then takes the same decisions from the same sums.
    scale : float, default=1.0
        The data scale, for the noise level written in the history (user units).
    """

    def __init__(
        self,
        network: Any,
        data: TrainingData,
        tol: float,
        n_iter_no_change: int = 10,
        prune: bool = False,
        min_gap: float = MIN_GAP,
        seed: int = 0,
        rows: LocalRows = LOCAL,
        scale: float = 1.0,
    ) -> None:
        self.network, self.data, self.tol, self.prune = network, data, tol, prune
        self.rows, self.scale = rows, scale
        self.state = PolicyState()
        self.analysis = SpectralAnalysis(network, data, rows, min_gap, seed)
        self._plateau = PlateauRule(self.state, self.analysis, tol, n_iter_no_change, prune)
        self._noise_cut = NoiseCut(self.state, self.analysis, tol, scale)
        self._prune_polish = PrunePolish(self.state, self.analysis)
        self._momentum = MomentumSchedule(self.state)
        self._resumed_at: int | None = None

    @property
    def pruned(self) -> int | None:
        """The rank kept by the prune, if any."""
        return self.state.pruned

    @property
    def noise(self) -> float | None:
        """The noise level (normalised units) when the prune was a cut at the noise edge.

        The rank is then locked and the polish stops once settled to the noise's precision.
        """
        return self.state.noise

    @property
    def plateau(self) -> dict | None:
        """What is left at the last settled check that was not convergence.

        ``iteration``, ``keep``, ``value`` (σ₁ of the escaping direction, normalised
        units) and ``ratio`` (to the smallest kept singular value); or ``at_init`` when
        nothing was learned.
        """
        return self.state.plateau

    def state_dict(self) -> dict:
        """The monitor's decisions and measurements so far, for a checkpoint (copies)."""
        return self.state.state_dict()

    def load_state_dict(self, state: dict, iteration: int) -> None:
        """Resume from a :meth:`state_dict` taken at the check of ``iteration``.

        That check was processed before the state was saved: when the resumed run checks
        ``iteration`` again, the monitor neither decides nor measures anything.
        """
        self.state.load_state_dict(state)
        self.analysis.forget()
        self._resumed_at = int(iteration)

    # ----------------------------------------------------------------- solver hooks
    def stop_rule(self, check: Any) -> str:
        """``"converged"``, ``"early_stopping"`` or ``""`` (see the class docstring)."""
        if check.iteration == self._resumed_at:  # decided before the checkpoint
            return ""
        if self.state.noise is not None and self._noise_cut.settled(check):
            self.state.plateau = None  # cut at the noise edge: the rest is noise
            return "converged"
        return self._plateau(check)

    def callback(self, check: Any) -> bool:
        """Prune, re-seed or re-balance ``check.params`` in place when the spectrum says so."""
        try:
            return self._edit(check)
        finally:
            # the analysis (and the residual it refers to) is this check's: the next
            # check analyses afresh, so nothing is held past it
            self.analysis.forget()

    def _edit(self, check: Any) -> bool:
        state = self.state
        if not self.prune or check.iteration == self._resumed_at:
            return False
        if state.pruned is not None:
            self._momentum.accelerate(check)  # the parameters are not edited
            return False
        an = self.analysis(check, state.pruned)
        sig = an.sigma
        nxt = float(sig[an.keep]) if an.keep < sig.shape[0] else 0.0
        previous, state.previous = state.previous, (sig.copy(), nxt)
        note = None if previous is None else self._noise_cut(check, an, previous[0])
        if note is None:
            note = self._prune_polish(check, an, previous)
        if note is None:
            if state.rebalanced == an.keep:  # learned part in the linear regime
                self._momentum.accelerate(check)
            return False
        self._momentum.restart(check.optimizer, cut=state.pruned is not None)
        state.previous = None
        check.row["event"] = (check.row["event"] + " " + note).strip()
        return True

    def unconverged(self, last: dict, check_every: int, scale: float) -> str:
        """Why a fit that ran out of iterations has not converged, for its warning.

        See :meth:`~deepmc._policy._plateau.PlateauRule.unconverged`.
        """
        return self._plateau.unconverged(last, check_every, scale)

    def summary(self, params: Any, relative_residual: float) -> tuple[int, float]:
        """``(rank, noise)`` of the final fit: the directions kept and the noise level.

        The rank is the one the prune locked, or else the number of singular values of
        ``X`` learned (above :data:`~deepmc._policy._analysis.INIT_MARGIN` ``· ε^L``).
        The noise level (normalised units, NaN when too few residual degrees of freedom
        are left) is :func:`~deepmc._noise.noise_level` of the final residual at that
        rank.
        """
        if self.state.pruned is not None:
            rank = self.state.pruned
        else:
            with torch.no_grad():
                _, sigma, _ = self.network.spectrum(params, rows=self.rows)
            rank = int(torch.count_nonzero(sigma > self.analysis.level))
        m, n = self.analysis.shape
        rss = (relative_residual * self.data.y_norm) ** 2
        sigma = noise_level(rss, round(m * n / self.data.sampling_scale), (m, n), rank)
        return rank, math.nan if sigma is None else sigma

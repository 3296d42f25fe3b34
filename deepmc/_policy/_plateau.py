"""The plateau-aware stop rule: settled fitted values are not enough to converge.

From small initialisation a deep linear network learns the singular directions of its
target one after another. Between two directions the fitted values barely move, so a
stop rule on their change alone fires on the saddle between them. :class:`PlateauRule`
calls a settled fit converged only when the residual has no escaping direction outside
the learned ones (:meth:`~deepmc._policy._analysis.Analysis.escaping`), and describes
what is left when it has (:meth:`PlateauRule.unconverged`).
"""

from __future__ import annotations

import math
from typing import Any

from ._analysis import Analysis, SpectralAnalysis
from ._state import PolicyState

__all__ = ["AT_INIT", "PRUNE_WAIT", "PlateauRule"]

#: A settled fit that has learned no direction and whose relative training residual is
#: above this has not left its initialisation (it is not converged).
AT_INIT = 0.5
#: Checks a settled fit with a spectral gap waits for the prune before it may stop.
PRUNE_WAIT = 2


class PlateauRule:
    """``"converged"`` for a settled fit with nothing left to learn; early stopping.

    Parameters
    ----------
    state : PolicyState
        Records what is left (``plateau``) and the checks waited for the prune.
    analysis : SpectralAnalysis
    tol : float
    n_iter_no_change : int
    prune : bool
        Whether the fit prunes (a settled fit then waits for the prune).
    """

    def __init__(
        self,
        state: PolicyState,
        analysis: SpectralAnalysis,
        tol: float,
        n_iter_no_change: int,
        prune: bool,
    ) -> None:
        self.state, self.analysis = state, analysis
        self.tol, self.n_iter_no_change, self.prune = tol, n_iter_no_change, prune

    def __call__(self, check: Any) -> str:
        """``"converged"``, ``"early_stopping"`` or ``""``."""
        state = self.state
        if check.row["change"] <= self.tol:
            an = self.analysis(check, state.pruned)
            learned = an.learned if state.pruned is None else state.pruned
            if learned == 0 and state.pruned is None and check.row["residual"] > AT_INIT:
                # nothing learned, nothing fitted: the plateau of a too small ε^L
                state.plateau = {"iteration": check.iteration, "keep": 0, "at_init": True}
                return self._early(check)
            # with every slot learned there is no capacity left for another direction
            if learned >= an.sigma.shape[0] or not an.escaping(learned):
                state.plateau = None
                if self._prune_first(an):
                    return ""
                return "converged"
            s1 = float(an.escape(learned)[1][0])
            state.plateau = {
                "iteration": check.iteration,
                "keep": learned,
                "value": s1,
                "ratio": s1 / an.sigma[learned - 1] if learned else math.inf,
            }
        return self._early(check)

    def _early(self, check: Any) -> str:
        if check.since_best is not None and check.since_best >= self.n_iter_no_change:
            return "early_stopping"
        return ""

    def _prune_first(self, an: Analysis) -> bool:
        """Whether a settled fit should go on to be pruned (at most :data:`PRUNE_WAIT` checks).

        Settled with ε-level directions below a spectral gap, the fit sits on the
        ``ε^L`` floor that the prune removes: the callback cuts them at this check or the
        next (it needs two checks to see the kept values settled), and the polish goes on.
        """
        state = self.state
        if not self.prune or state.pruned is not None:
            return False
        if an.ratio < self.analysis.min_gap or an.keep >= an.sigma.shape[0]:
            return False
        state.waited += 1
        return state.waited <= PRUNE_WAIT

    def unconverged(self, last: dict, check_every: int, scale: float) -> str:
        """Why a fit that ran out of iterations has not converged, for its warning.

        Parameters
        ----------
        last : dict
            The last history row (``change``, ``residual``).
        check_every : int
        scale : float
            The data scale (singular values are reported in user units).
        """
        plateau, network = self.state.plateau, self.analysis.network
        if plateau is not None and plateau.get("at_init"):
            return (
                f"the fitted values settled (relative change ≤ tol={self.tol:g} at "
                f"iteration {plateau['iteration']}) without learning any direction "
                f"(training residual {last['residual']:.3g}): with ε^L = "
                f"{float(network.init_scale) ** int(network.depth):.3g} the "
                "initial plateau lasts about 1/(lr · ε^(L−2)) steps. Increase init_scale "
                "or decrease depth."
            )
        if plateau is not None:
            return (
                f"the fitted values settled (relative change ≤ tol={self.tol:g} at "
                f"iteration {plateau['iteration']}) but the residual still has a "
                f"direction with singular value {plateau['value'] * scale:.3g} "
                f"({plateau['ratio']:.2g} × the smallest of the {plateau['keep']} "
                "learned ones) outside them: the fit may be on a plateau between "
                "learning directions. Increase max_iter or init_scale."
            )
        what = (
            f"the fitted values did not settle (relative change {last['change']:.3g} "
            f"per {check_every} steps > tol={self.tol:g}; training residual "
            f"{last['residual']:.3g})"
        )
        if self.prune and self.state.pruned is None:
            what += (
                "; no spectral gap was found to prune at"
                if not self.state.gap_seen
                else "; a spectral gap was seen but not pruned at"
            )
        return what + ". Increase max_iter or tol."

"""The momentum schedule of the polish: heavy-ball steps once the learned part is posed.

After the policy's edits the learned part of ``X`` is a well-posed low-rank problem
whose loss is locally quadratic; :class:`MomentumSchedule` measures its contraction over
two checks of plain steps and turns to the heavy ball (Polyak 1964) with the critically
damped β.
"""

from __future__ import annotations

import math
from typing import Any

from ._state import PolicyState

__all__ = ["MAX_MOMENTUM", "MomentumSchedule"]

#: Largest heavy-ball β of the polish after a prune.
MAX_MOMENTUM = 0.9


class MomentumSchedule:
    """β of the heavy-ball steps, set on an optimizer that asks for a schedule.

    Only an optimizer with ``schedule_momentum`` (plain gradient descent) is touched; a
    fixed momentum chosen by the user is left alone.

    Parameters
    ----------
    state : PolicyState
        Where β (``momentum``) and the residuals it is measured from (``polish``) live.
    """

    def __init__(self, state: PolicyState) -> None:
        self.state = state

    def accelerate(self, check: Any) -> None:
        """Heavy-ball steps: β from the contraction of two checks of plain steps.

        Once re-balanced in the linear regime (compressed network) or pruned (every
        network), the learned part is a well-posed low-rank problem whose loss is
        locally quadratic. Gradient descent with step η contracts its slowest mode by
        ``ρ = 1 − ημ`` per step; with the same step, heavy ball with
        ``β = (1 − √(ημ))²`` contracts it by ``√β = 1 − √(ημ)`` (the critically damped
        choice; Polyak 1964), e.g. about 3× fewer steps for ``ημ = 0.02``. ``ρ`` is
        read off the residuals of the first two checks after the edit (a transient
        of the faster modes makes it an under-estimate of the slowest, so β errs on the
        small side); a residual that did not shrink leaves plain steps.
        """
        state, optimizer = self.state, check.optimizer
        if state.momentum is not None or not getattr(optimizer, "schedule_momentum", False):
            return
        state.polish.append((check.iteration, float(check.row["residual"])))
        if len(state.polish) < 2:
            return
        (i1, r1), (i2, r2) = state.polish[-2:]
        rho = (r2 / r1) ** (1.0 / (i2 - i1)) if r1 > 0 and i2 > i1 else math.inf
        beta = (1.0 - math.sqrt(1.0 - rho)) ** 2 if 0.0 < rho < 1.0 else 0.0
        state.momentum = min(beta, MAX_MOMENTUM)
        if state.momentum > 0:
            optimizer.momentum = state.momentum
            note = f"heavy-ball steps, momentum {state.momentum:.2f}"
            check.row["event"] = (check.row["event"] + " " + note).strip()

    def restart(self, optimizer: Any, cut: bool) -> None:
        """After an edit: fresh velocity; β kept across the prune, else measured again."""
        if not getattr(optimizer, "schedule_momentum", False):
            return
        state = self.state
        if cut and state.momentum:
            optimizer.momentum = state.momentum  # the velocity starts afresh
            return
        state.polish = []
        state.momentum = None
        if optimizer.momentum:
            optimizer.momentum = 0.0

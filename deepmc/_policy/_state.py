"""What the spectral policy carries from one check to the next."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import numpy as np

__all__ = ["PolicyState"]


@dataclass
class PolicyState:
    """Every decision and measurement of the spectral policy carried between checks.

    One record that the policy's parts (:mod:`deepmc._policy`) share, and that a
    checkpoint saves whole (:meth:`state_dict`).

    Attributes
    ----------
    pruned : int or None
        The rank kept by the prune, if any.
    reseeds : int
        Re-seeds so far.
    rebalanced : int or None
        The number of directions last re-balanced (``None``: none since the last edit).
    momentum : float or None
        The heavy-ball β measured for the polish (``None``: not measured yet).
    waited : int
        Settled checks spent waiting for the prune.
    polish : list of (int, float)
        ``(iteration, residual)`` of the checks since the last edit, for β.
    plateau : dict or None
        At the last settled check that was not convergence: what is left to learn.
    gap_seen : bool
        Whether a spectral gap was ever seen.
    previous : tuple of (ndarray, float) or None
        The singular values of ``X`` and ``σ_{keep+1}`` at the previous check (``None``
        right after an edit).
    noise : float or None
        The noise level (normalised units) of a cut at the noise edge.
    last_change : float or None
        The relative change of the fitted values at the previous check (after a cut at
        the noise edge).
    """

    pruned: int | None = None
    reseeds: int = 0
    rebalanced: int | None = None
    momentum: float | None = None
    waited: int = 0
    polish: list = field(default_factory=list)
    plateau: dict | None = None
    gap_seen: bool = False
    previous: tuple[np.ndarray, float] | None = None
    noise: float | None = None
    last_change: float | None = None

    #: The names under which :meth:`state_dict` saves the fields (those of the
    #: checkpoints written so far).
    _SAVED = {"waited": "_waited", "polish": "_polish", "previous": "_previous",
              "last_change": "_last_change"}  # fmt: skip

    def state_dict(self) -> dict:
        """Every field, copied, under its saved name."""
        return {
            self._SAVED.get(f.name, f.name): copy.deepcopy(getattr(self, f.name))
            for f in fields(self)
        }

    def load_state_dict(self, state: dict) -> None:
        """Set every field from a :meth:`state_dict` (copies)."""
        for f in fields(self):
            setattr(self, f.name, copy.deepcopy(state[self._SAVED.get(f.name, f.name)]))

"""SIGINT and SIGTERM as a stop request that every rank agrees on.

A signal reaches the ranks at different moments (Ctrl-C reaches every process of the
terminal's group; ``torchrun`` forwards SIGTERM; a scheduler may signal one node). If
each rank acted on its own signal, the ranks would leave the step loop at different
iterations and their next collectives would not match. Instead, the handler only sets
a local flag; the flag travels in the all-reduce that every check performs anyway (the
check's scalars), so the ranks learn together, at the same check, that one of them was
asked to stop. No collective is added to the step.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from ._comm import Comm

__all__ = ["FitInterrupted", "StopRequest"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class FitInterrupted(KeyboardInterrupt):
    """The fit stopped on SIGINT or SIGTERM, on every rank at the same iteration.

    Parameters
    ----------
    iteration : int
        The iteration at which the ranks stopped.
    checkpoint : str or None
        The checkpoint written there (``None`` without a checkpoint directory).
    signum : int
        The signal received.

    Attributes
    ----------
    iteration : int
        The iteration at which the ranks stopped.
    checkpoint : str or None
        The checkpoint written there (``None`` without a checkpoint directory).
    signum : int
        The signal received (the exit status of the command line is ``128 + signum``).
    """

    def __init__(self, iteration: int, checkpoint: str | None, signum: int) -> None:
        self.iteration, self.checkpoint, self.signum = iteration, checkpoint, signum
        where = (
            f"; checkpoint written to {checkpoint}: run the same command again to resume"
            if checkpoint
            else "; no checkpoint directory, so nothing was kept"
        )
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} at iteration {iteration}, before "
            f"the fit finished{where}. No model was written."
        )


class StopRequest:
    """SIGINT/SIGTERM → a local flag; :attr:`requested` once the ranks agree on it.

    Use as a context manager around the fit (main thread only; elsewhere no handler is
    installed and only the other ranks' signals count). A second SIGINT raises
    :class:`KeyboardInterrupt` at once, for a user who does not want to wait for the
    next check.

    Parameters
    ----------
    comm : Comm
    """

    def __init__(self, comm: Comm) -> None:
        self.comm = comm
        self.local = 0  # the signal number received here, 0 for none
        self.signum = 0  # the signal the ranks agreed on (the largest), 0 for none
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether the ranks agreed to stop (changes only inside :meth:`reduce`)."""
        return self.signum != 0

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.local and signum == signal.SIGINT:  # a second Ctrl-C: out now
            raise KeyboardInterrupt
        self.local = signum

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def reduce(self, packed: torch.Tensor) -> torch.Tensor:
        """The check's sum over ranks, with this rank's flag riding along (one all-reduce).

        ``packed`` holds non-negative sums of squares and norms; the flag is summed as a
        signal number, so any rank's signal makes the sum positive on every rank.
        """
        flag = packed.new_tensor([float(self.local)])
        both = self.comm.sum_(torch.cat([packed, flag]))
        if float(both[-1]) > 0 and not self.signum:  # the same sum, so the same branch, everywhere
            self.signum = self.comm.max_int(self.local)  # every rank names the same signal
        return both[:-1]

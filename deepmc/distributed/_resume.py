"""Checkpoints in the step loop: writing them at checks, resuming from the latest intact one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._data import TrainingData
from .._policy import SpectralMonitor
from .._solver import Check
from ._checkpoint import CheckpointStore
from ._signals import FitInterrupted, StopRequest

__all__ = ["Checkpointer", "resume"]

Params = dict[str, list[torch.Tensor]]


class Checkpointer:
    """A solver callback writing a checkpoint every ``every`` checks after ``start_iter``,
    and at the check where the ranks agreed to stop (then it raises :class:`FitInterrupted`).

    It runs after the monitor's callback: the checkpoint holds the parameters, the
    monitor's state and the optimizer's (heavy-ball velocity, Adam's moments) as they
    enter the next step, so a resumed run takes the same steps.
    """

    def __init__(
        self,
        store: CheckpointStore | None,
        history: list[dict],
        monitor: SpectralMonitor,
        stop: StopRequest,
        start_iter: int,
        check_every: int,
        every: int,
    ) -> None:
        self.store, self.history, self.monitor, self.stop = store, history, monitor, stop
        self.start_iter, self.check_every, self.every = start_iter, check_every, every

    def __call__(self, check: Check) -> bool:
        n_checks = (check.iteration - self.start_iter) // self.check_every
        due = check.iteration != self.start_iter and n_checks % self.every == 0
        written = None
        if self.store is not None and (due or self.stop.requested):
            state = {
                "iteration": check.iteration,
                "lr": check.row["lr"],
                "history": list(self.history),  # the solver's rows, this check's included
                "params": {
                    k: [p.detach().cpu().clone() for p in v] for k, v in check.params.items()
                },
                "monitor": self.monitor.state_dict(),
                "optimizer": _to_cpu(check.optimizer.state_dict()),
            }
            written = self.store.save(check.iteration, to_data(state))
        if self.stop.requested:
            raise FitInterrupted(
                check.iteration, str(written) if written else None, self.stop.signum
            )
        return False  # the parameters are not edited


_ARRAY = "__ndarray__"


def to_data(obj: Any) -> Any:
    """``obj`` in the types ``torch.load(weights_only=True)`` reads back: NumPy arrays as
    tagged tensors, NumPy scalars as Python numbers (dicts, lists and tuples walked)."""
    if isinstance(obj, np.ndarray):
        return {_ARRAY: torch.from_numpy(np.array(obj, copy=True))}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_data(v) for v in obj)
    return obj


def from_data(obj: Any) -> Any:
    """The inverse of :func:`to_data`."""
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            return obj[_ARRAY].numpy()
        return {k: from_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_data(v) for v in obj)
    return obj


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _optimizer_restorer(iteration: int, state: dict):
    """Solver callback: load the checkpoint's optimizer state when ``iteration`` is re-checked."""

    def restore(check: Check) -> bool:
        if check.iteration == iteration:
            check.optimizer.load_state_dict(state)
        return False  # the parameters are not edited

    return restore


def resume(
    store: CheckpointStore, monitor: SpectralMonitor, callbacks: list, data: TrainingData
) -> tuple[Params, int, list[dict], float] | None:
    """``(params, iteration, history, lr)`` of the latest intact checkpoint, or ``None``.

    The monitor takes the checkpoint's state, and a callback that loads the optimizer's
    state when the checkpoint's iteration is checked again goes first in ``callbacks``.
    """
    found = store.load_latest()
    if found is None:
        return None
    state = from_data(found[1])
    params = {
        k: [torch.as_tensor(a, dtype=data.dtype, device=data.device) for a in arrs]
        for k, arrs in state["params"].items()
    }
    monitor.load_state_dict(state["monitor"], state["iteration"])
    callbacks.insert(0, _optimizer_restorer(state["iteration"], state["optimizer"]))
    return params, state["iteration"], list(state["history"]), state["lr"]

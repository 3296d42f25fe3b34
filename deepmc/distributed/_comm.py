"""The process group: start-up from the ``torchrun`` environment, and the collectives used.

One code path serves every backend: gloo on the CPU and NCCL on CUDA, the device taken
from ``LOCAL_RANK`` (``torch.distributed`` documentation, "Launch utility"). Without a
process group (a plain ``python`` run) :class:`Comm` is a world of one whose collectives
are identities, so the distributed functions also run, unchanged, in one process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Comm", "RankFailure", "init_from_env"]

#: Seconds a collective waits for the other ranks before failing.
DEFAULT_TIMEOUT = 300.0
_CPU = torch.device("cpu")


class RankFailure(RuntimeError):
    """A collective failed: another rank died, stalled past the timeout, or disagreed."""


@dataclass(frozen=True)
class Comm:
    """The collectives of one rank of a process group (or a world of one).

    Parameters
    ----------
    rank : int
    world_size : int
    device : torch.device
        Where the tensors handed to the backend live (CUDA for NCCL, CPU for gloo).
    group : ProcessGroup or None, default=None
        ``None`` with ``world_size == 1`` means no process group at all.
    timeout : float or None, default=None
        The process group's collective timeout in seconds, when known (for messages).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = _CPU
    group: object | None = None
    timeout: float | None = None

    def _run(self, what: str, collective, *args, **kwargs) -> None:
        """Run a collective; turn a backend failure into a :class:`RankFailure` that says why."""
        try:
            collective(*args, group=self.group, **kwargs)
        except RuntimeError as exc:  # DistBackendError, gloo/NCCL timeouts, closed peers
            waited = f"at most {self.timeout:g} s" if self.timeout else "up to the timeout"
            raise RankFailure(
                f"rank {self.rank} of {self.world_size}: {what} failed. Another rank has "
                f"probably died or stalled (collectives wait {waited}); the job cannot "
                f"continue, and no model was completed by this run. Backend error: {exc}"
            ) from exc

    @classmethod
    def current(
        cls, device: torch.device | str | None = None, timeout: float | None = None
    ) -> Comm:
        """The default process group if one is initialised, else a world of one.

        Parameters
        ----------
        device : torch.device or str, default=None
            Device of the communicated tensors; ``None`` picks CUDA (the local rank's
            device) for NCCL and the CPU otherwise.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return cls(device=torch.device(device or "cpu"))
        if device is None:
            device = _local_device() if dist.get_backend() == "nccl" else torch.device("cpu")
        return cls(
            dist.get_rank(), dist.get_world_size(), torch.device(device), dist.group.WORLD, timeout
        )

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over the ranks, in place when it lives on :attr:`device`; returns the sum.

        Every rank receives the same bits (ring all-reduce), so replicated parameters
        updated from the sum stay identical.
        """
        if not self.distributed:
            return t
        buf = t if t.device == self.device else t.to(self.device)
        self._run("an all-reduce (sum)", dist.all_reduce, buf, op=dist.ReduceOp.SUM)
        if buf is not t:
            t.copy_(buf)
        return t

    def max_(self, t: torch.Tensor) -> torch.Tensor:
        """Element-wise maximum of ``t`` over the ranks, in place; returns ``t``."""
        if not self.distributed:
            return t
        buf = t if t.device == self.device else t.to(self.device)
        self._run("an all-reduce (max)", dist.all_reduce, buf, op=dist.ReduceOp.MAX)
        if buf is not t:
            t.copy_(buf)
        return t

    def max_int(self, value: int) -> int:
        """The largest ``value`` over the ranks."""
        if not self.distributed:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        self._run("an all-reduce (max)", dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def gather_rows(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``t`` (same columns, any number of rows), in rank order.

        The blocks are padded to the largest row count for the collective, and the
        padding is stripped on arrival.
        """
        if not self.distributed:
            return [t]
        counts = torch.zeros(self.world_size, dtype=torch.int64, device=self.device)
        counts[self.rank] = t.shape[0]
        self._run("an all-reduce (sum)", dist.all_reduce, counts)
        counts_host = counts.tolist()
        rows = max(counts_host)
        padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=self.device)
        padded[: t.shape[0]] = t.to(self.device)
        out = [torch.empty_like(padded) for _ in range(self.world_size)]
        self._run("an all-gather", dist.all_gather, out, padded)
        return [o[:c].to(t.device) for o, c in zip(out, counts_host, strict=True)]

    def barrier(self) -> None:
        """Wait until every rank arrives (no-op in a world of one)."""
        if self.distributed:
            ids = {"device_ids": [self.device.index or 0]} if self.device.type == "cuda" else {}
            self._run("a barrier", dist.barrier, **ids)


def _local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (the launcher's local rank; 0 when unset)."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(*, timeout: float = DEFAULT_TIMEOUT, device: str = "auto") -> Comm:
    """Join the process group described by the launcher's environment, if any.

    Under ``torchrun`` (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``… set) this initialises
    the default process group: NCCL with the device ``cuda:LOCAL_RANK`` when CUDA is used,
    gloo on the CPU. Without that environment it returns a world of one and starts
    nothing, so the same program runs as an ordinary single-process fit.

    Parameters
    ----------
    timeout : float, default=300
        Seconds a collective may wait for the other ranks. A rank that dies makes the
        others fail with an error after at most this long (gloo at once when the
        dead rank's connection closes; NCCL through its watchdog, which aborts the
        communicator after the timeout).
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``"auto"`` uses CUDA when it is available.

    Returns
    -------
    Comm
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but CUDA is not available.")
    if dist.is_available() and dist.is_initialized():
        return Comm.current(_local_device() if use_cuda else torch.device("cpu"), timeout)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Comm(device=_local_device() if use_cuda else torch.device("cpu"))
    dev = torch.device("cpu")
    if use_cuda:
        dev = _local_device()
        torch.cuda.set_device(dev)
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        timeout=datetime.timedelta(seconds=timeout),
        **({"device_id": dev} if use_cuda else {}),
    )
    return Comm.current(dev, timeout)

"""Device, dtype, generator, thread and memory policy (resolved at fit, never in ``__init__``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "available_bytes",
    "intra_op_threads",
    "make_generator",
    "resolve_device",
    "resolve_dtype",
    "synchronize",
]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "single": torch.float32,
    "double": torch.float64,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:k"`` into a :class:`torch.device`.

    Raises
    ------
    ValueError
        For an unknown device, or ``"cuda"`` when PyTorch sees no CUDA device.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but PyTorch sees no CUDA device (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda is not None}); use "
                "device='cpu' or device='auto'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}.")
    return dev


def resolve_dtype(dtype: Any, input_dtype: np.dtype) -> torch.dtype:
    """Resolve the ``dtype`` parameter; ``None`` keeps float32 input float32, else float64."""
    if dtype is None:
        return torch.float32 if np.dtype(input_dtype) == np.float32 else torch.float64
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    if np_dtype == np.float32:
        return torch.float32
    if np_dtype == np.float64:
        return torch.float64
    raise ValueError(f"dtype: expected None, 'float32' or 'float64', got {dtype!r}.")


def make_generator(random_state: np.random.RandomState) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded from a NumPy ``RandomState``.

    Initial weights are always drawn on the CPU and then moved, so the same
    ``random_state`` gives the same initialisation on every device.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(random_state.randint(0, 2**31 - 1)))
    return gen


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on the CPU); used around timings."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def available_bytes(device: torch.device) -> int:
    """Bytes free for new tensors on ``device``: CUDA free memory, or the available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


#: Multiply-adds per step below which a CPU fit runs on one intra-op thread.
SERIAL_WORK = 1 << 21


@contextlib.contextmanager
def intra_op_threads(device: torch.device, work: int) -> Iterator[None]:
    """Run small CPU problems on one intra-op thread; restore the setting afterwards.

    A step of a small problem is a few dozen kernels of microseconds each. Splitting
    them over threads buys nothing, and on a busy machine each parallel region waits
    for a descheduled worker. Measured on a 2-core EPYC, compressed step on problem A
    (N·k·L ≈ 10⁵): 0.25 ms with one thread, 0.37 ms with two on an idle machine and
    ≈ 40 ms with two under a load of 7–10. Problem B (N·k·L = 6·10⁶) gains from two
    threads when the machine is idle (3.1–4.2 ms against 5.0–6.5 ms) and loses under
    load (12–35 ms against 6–10 ms), so the threshold keeps it threaded.

    Parameters
    ----------
    device : torch.device
    work : int
        Multiply-adds per step; below :data:`SERIAL_WORK` the CPU uses one thread.
    """
    if device.type != "cpu" or work >= SERIAL_WORK or torch.get_num_threads() == 1:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

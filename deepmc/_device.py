"""Device, dtype, generator, thread and memory policy (resolved at fit, never in ``__init__``)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "available_bytes",
    "intra_op_threads",
    "make_generator",
    "release_freed_memory",
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


def available_bytes(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: CUDA free memory, or the available RAM.

    ``None`` where the platform does not tell (see :func:`available_host_bytes`).
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_host_bytes()


#: Multiply-adds per step below which a CPU fit runs on one intra-op thread.
SERIAL_WORK = 1 << 21


@contextlib.contextmanager
def intra_op_threads(device: torch.device, work: int) -> Iterator[None]:
    """Run small CPU problems on one intra-op thread; restore the setting afterwards.

    A step of a small problem is a few dozen kernels of microseconds each. Splitting
    them over threads buys nothing, and on a busy machine each parallel region waits
    for a descheduled worker. The compressed step of ``benchmarks/bench_scale.py`` on
    problem A (N·k·L ≈ 10⁵) is slower on two threads than on one; problem B
    (N·k·L = 6·10⁶) gains from two on an idle machine, so the threshold keeps it
    threaded (figures in the performance notes).

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


# ---------------------------------------------------------------------------------------
# Host memory probes. Resident and available memory come from psutil on every platform.
# A high-water mark that can be reset exists on Linux only (``/proc/self/clear_refs`` and
# ``VmHWM``, which psutil does not expose); elsewhere the lifetime peak is
# ``resource.getrusage`` (POSIX) or psutil's ``peak_wset`` (Windows). Where a figure
# cannot be read the functions return ``None`` instead of raising.


def _proc_status_kib(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``), or ``None``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_host_peak() -> bool:
    """Reset this process's resident-memory high-water mark, where the OS allows it.

    Returns
    -------
    bool
        ``True`` if the mark was reset (Linux: ``/proc/self/clear_refs``) and can be read
        back with :func:`host_peak_kib`; ``False`` elsewhere.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


def _memory_info() -> Any:
    """psutil's memory figures of this process, or ``None`` if they cannot be read."""
    import psutil

    try:
        return psutil.Process().memory_info()
    except (psutil.Error, OSError):
        return None


def host_rss_kib() -> int | None:
    """Resident memory of this process in KiB (psutil), or ``None`` if unreadable."""
    info = _memory_info()
    return None if info is None else int(info.rss) // 1024


def max_rss_kib() -> int | None:
    """The lifetime peak of this process's resident memory in KiB, or ``None``.

    ``ru_maxrss`` where ``resource`` exists (POSIX; macOS reports bytes, Linux KiB),
    else psutil's ``peak_wset`` (Windows).
    """
    import sys

    try:
        import resource
    except ImportError:
        info = _memory_info()
        peak = getattr(info, "peak_wset", None)
        return None if peak is None else int(peak) // 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def host_peak_kib(exact: bool) -> int | None:
    """The resident-memory high-water mark in KiB.

    Parameters
    ----------
    exact : bool
        The value :func:`reset_host_peak` returned: read the reset mark (``VmHWM``);
        otherwise, or if that fails, fall back to :func:`max_rss_kib`.

    Returns
    -------
    int or None
        ``None`` where neither figure exists.
    """
    hwm = _proc_status_kib("VmHWM") if exact else None
    return hwm if hwm is not None else max_rss_kib()


def available_host_bytes() -> int | None:
    """Memory available to a new allocation, in bytes (psutil), or ``None`` if unknown."""
    import psutil

    try:
        return int(psutil.virtual_memory().available)
    except (psutil.Error, OSError, RuntimeError):
        return None


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the operating system (glibc ``malloc_trim``).

    glibc keeps memory freed by NumPy and torch in its heap for later allocations, so a
    process that fits one large model after another (the members of
    :class:`~deepmc.RatingsCompletion`) grows by the fragments each fit leaves, although
    nothing of them is alive. Trimming between fits returns them. No effect where the C
    library has no ``malloc_trim`` (macOS, Windows, musl).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)

"""How many CPU threads a fit uses: the CPUs it may use, the work per step, and contention.

A gradient step of a deepmc network is a few dozen kernels. With several intra-op
threads every kernel is an OpenMP parallel region ending in a barrier; when another
process holds a core, the barrier waits for a descheduled thread (workers spin, then
sleep), and a step that takes milliseconds alone takes tens of milliseconds. Two fits
started together, each with as many threads as cores, are then many times slower
than one alone instead of twice. The policy here:

* **CPUs available**: at most the process's CPU affinity (``os.sched_getaffinity``),
  the cgroup CPU quota (containers) and torch's own setting
  (``torch.set_num_threads``, which is how a user caps the threads).
* **Work per step**: a step below :data:`SERIAL_WORK` multiply-adds runs on one
  thread; the kernels are too short to share.
* **Contention**: for larger steps, :class:`StepThreads` times the steps on one thread
  and on all available threads and keeps the faster, and re-measures when the step
  time drifts (another job started or stopped) and, less and less often, otherwise.
* **Outside the steps** (spectral initialisation, validation): :func:`fit_threads`
  sets torch's and the BLAS threads (through ``threadpoolctl``) to the CPUs not busy
  with other runnable work (``/proc/loadavg``), and restores the user's settings.
* **Processes**: members fitted by joblib workers get ``cpus // n_jobs`` threads each.

:func:`thread_limit` overrides all of it (see the performance notes of the docs).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from threadpoolctl import ThreadpoolController

__all__ = ["SERIAL_WORK", "StepThreads", "available_cpus", "fit_threads", "thread_limit"]

#: Multiply-adds per step below which a CPU fit runs on one intra-op thread.
SERIAL_WORK = 1 << 21
#: Timed steps per setting in a trial (after one untimed step to settle the new pool).
TRIAL_STEPS = 4
#: Steps between trials right after one; doubled after every trial that keeps the setting.
RETRY_STEPS = 100
#: Cap on the steps between trials.
MAX_RETRY_STEPS = 1600
#: A setting with more threads must be this much faster to be kept (it costs more CPU).
MIN_GAIN = 0.85
#: Step-time drift (ratio to the trial) that triggers a new trial.
DRIFT = 1.6

#: ``(n_threads, adaptive)`` set by :func:`thread_limit`; ``None`` = the automatic policy.
_LIMIT: contextvars.ContextVar[tuple[int | None, bool] | None] = contextvars.ContextVar(
    "deepmc_thread_limit", default=None
)
#: ``torch.get_num_threads()`` when the outermost :func:`fit_threads` began: the user's cap.
_USER_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "deepmc_user_threads", default=None
)


@contextlib.contextmanager
def thread_limit(n_threads: int | None = None, *, adaptive: bool = True) -> Iterator[None]:
    """Override the thread policy of the fits run inside this context.

    Parameters
    ----------
    n_threads : int, default=None
        Most intra-op (torch) and BLAS threads a fit may use; ``None`` keeps the
        automatic cap (CPU affinity, cgroup quota, ``torch.get_num_threads()``).
    adaptive : bool, default=True
        With ``False`` a fit uses exactly the cap for its large steps, without timing
        one thread against several or looking at the load (small steps still run on
        one thread). For reproducible timings on a machine you have to yourself.

    Examples
    --------
    >>> import deepmc
    >>> from deepmc.datasets import make_problem
    >>> problem = make_problem("A", random_state=0)
    >>> with deepmc.thread_limit(1):
    ...     est = deepmc.CompressedDeepMatrixCompletion(rank=5).fit(problem.train)
    """
    if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
        raise ValueError(f"n_threads: expected None or an int >= 1, got {n_threads!r}.")
    token = _LIMIT.set((n_threads, bool(adaptive)))
    try:
        yield
    finally:
        _LIMIT.reset(token)


def _cgroup_cpus() -> float | None:
    """CPUs allowed by the cgroup quota (v2 ``cpu.max`` or v1 CFS), ``None`` if unlimited."""
    candidates = [
        ("/sys/fs/cgroup/cpu.max", None),
        ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
    ]
    for quota_path, period_path in candidates:
        try:
            with open(quota_path) as fh:
                fields = fh.read().split()
            if period_path is not None:
                with open(period_path) as fh:
                    fields.append(fh.read().strip())
            if fields[0] in ("max", "-1"):
                return None
            return max(float(fields[0]) / float(fields[1]), 1.0)
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def available_cpus() -> int:
    """CPUs this process may use: affinity, cgroup quota and ``torch.get_num_threads()``.

    ``torch.get_num_threads()`` is the user's cap (it defaults to the physical cores).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    user = _USER_THREADS.get()
    cpus = min(cpus, torch.get_num_threads() if user is None else user)
    override = _LIMIT.get()
    if override is not None and override[0] is not None:
        cpus = min(cpus, override[0]) if override[1] else override[0]
    return max(int(cpus), 1)


def _adaptive() -> bool:
    override = _LIMIT.get()
    return override is None or override[1]


def _other_runnable() -> int:
    """Runnable tasks of other processes right now (``/proc/loadavg``), 0 if unknown."""
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0
    return max(running - 1, 0)  # this thread is one of them


def idle_cpus() -> int:
    """:func:`available_cpus` less the runnable tasks of other processes (at least 1)."""
    cpus = available_cpus()
    if not _adaptive():
        return cpus
    return max(cpus - _other_runnable(), 1)


@functools.cache
def _blas() -> ThreadpoolController:
    """The loaded BLAS thread pools, inspected once (inspecting costs milliseconds)."""
    return ThreadpoolController()


@contextlib.contextmanager
def fit_threads(n_threads: int | None = None) -> Iterator[None]:
    """Torch and BLAS threads for a fit's work outside the steps; restored afterwards.

    Parameters
    ----------
    n_threads : int, default=None
        Threads to use; ``None`` = :func:`idle_cpus`.
    """
    previous = torch.get_num_threads()
    token = _USER_THREADS.set(previous) if _USER_THREADS.get() is None else None
    n = idle_cpus() if n_threads is None else max(int(n_threads), 1)
    torch.set_num_threads(n)
    try:
        with _blas().limit(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)
        if token is not None:
            _USER_THREADS.reset(token)


def call_with_threads(
    n_threads: int | None, func: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """``func(*args, **kwargs)`` with at most ``n_threads`` threads (for joblib workers).

    ``None`` calls ``func`` as it is (members fitted in this process).
    """
    if n_threads is None:
        return func(*args, **kwargs)
    with thread_limit(n_threads), fit_threads():
        return func(*args, **kwargs)


class StepThreads:
    """Intra-op threads of the gradient steps, chosen by timing them; a context manager.

    ``tick(timed)`` is called after every step (``timed=False`` for a step that also
    ran a check). Small steps (``work < SERIAL_WORK``), one available CPU or a fixed
    :func:`thread_limit` need no timing; otherwise trials alternate one thread and
    all available threads for :data:`TRIAL_STEPS` steps each and keep the faster
    (more threads only if at most :data:`MIN_GAIN` of the one-thread time).

    Parameters
    ----------
    device : torch.device
    work : int
        Multiply-adds per step.
    """

    def __init__(self, device: torch.device, work: int) -> None:
        self.cpu = device.type == "cpu"
        cpus = available_cpus() if self.cpu else 1
        if work < SERIAL_WORK:
            cpus = 1
        self.options = [1, cpus] if cpus > 1 else [cpus]
        self.fixed = len(self.options) == 1 or not _adaptive()
        self.choice = self.options[-1] if not _adaptive() else self.options[0]
        self.queue: list[int] = []  # the settings still to time in this trial
        self.times: dict[int, list[float]] = {}
        self.reference = math.inf
        self.recent: list[float] = []
        self.retry, self.until_trial = RETRY_STEPS, 0
        self.last = 0.0
        self.previous = 0

    def __enter__(self) -> StepThreads:
        if self.cpu:
            self.previous = torch.get_num_threads()
            self._use(self.choice)
            if not self.fixed:
                self._start_trial()
        self.last = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cpu:
            torch.set_num_threads(self.previous)

    def _use(self, n: int) -> None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def _start_trial(self) -> None:
        self.queue = list(self.options)
        self.times = {n: [] for n in self.options}
        self._use(self.queue[0])
        self.settle = True

    def tick(self, timed: bool = True) -> None:
        """Record the step that just ended; switch threads when a trial says so."""
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        if self.fixed or not self.cpu or not timed:
            return
        if self.queue:
            self._trial_step(seconds)
            return
        self.recent.append(seconds)
        self.until_trial -= 1
        if len(self.recent) >= TRIAL_STEPS:
            drift = statistics.median(self.recent) / self.reference
            self.recent.clear()
            if drift > DRIFT or drift < 1 / DRIFT:
                self.retry = RETRY_STEPS
                self._start_trial()
                return
        if self.until_trial <= 0:
            self.retry = min(2 * self.retry, MAX_RETRY_STEPS)
            self._start_trial()

    def _trial_step(self, seconds: float) -> None:
        if self.settle:  # the first step on a new setting wakes or starts its threads
            self.settle = False
            return
        current = self.queue[0]
        self.times[current].append(seconds)
        if len(self.times[current]) < TRIAL_STEPS:
            return
        self.queue.pop(0)
        if self.queue:
            self._use(self.queue[0])
            self.settle = True
            return
        median = {n: statistics.median(t) for n, t in self.times.items()}
        best = self.options[0]
        for n in self.options[1:]:
            if median[n] <= MIN_GAIN * median[best]:
                best = n
        self.choice, self.reference = best, median[best]
        self._use(best)
        self.recent.clear()
        self.until_trial = self.retry

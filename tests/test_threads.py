"""The thread policy: caps, restoring the user's setting, and the timed choice of threads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import deepmc
from deepmc import _threads
from deepmc._threads import (
    SERIAL_WORK,
    TRIAL_STEPS,
    StepThreads,
    available_cpus,
    call_with_threads,
    fit_threads,
    thread_limit,
)
from deepmc.datasets import make_problem

CPU = torch.device("cpu")


@pytest.fixture
def two_threads():
    """torch at two intra-op threads (the cap the policy may use), restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def two_cpus(monkeypatch, two_threads):
    """Pretend the process may use two CPUs, whatever the test machine has."""
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(_threads, "_cgroup_cpus", lambda: None)


def test_available_cpus_caps(two_cpus):
    assert available_cpus() == 2
    with thread_limit(1):
        assert available_cpus() == 1
    with thread_limit(3, adaptive=False):  # a fixed override is used as given
        assert available_cpus() == 3
    torch.set_num_threads(1)  # the user's torch setting caps the policy
    assert available_cpus() == 1


def test_cgroup_quota_caps(two_cpus, monkeypatch):
    monkeypatch.setattr(_threads, "_cgroup_cpus", lambda: 1.0)
    assert available_cpus() == 1


def test_thread_limit_rejects_bad_values():
    with pytest.raises(ValueError, match="n_threads"):
        with thread_limit(0):
            pass


def test_fit_threads_restores_torch_and_sees_the_users_cap(two_cpus, monkeypatch):
    monkeypatch.setattr(_threads, "_other_runnable", lambda: 5)  # a busy machine
    with pytest.raises(RuntimeError):
        with fit_threads():
            assert torch.get_num_threads() == 1  # busy: one thread outside the steps
            # the steps still see the user's cap of two, not the one set above
            assert available_cpus() == 2
            raise RuntimeError
    assert torch.get_num_threads() == 2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_fit_restores_the_torch_setting(two_threads):
    problem = make_problem("A", random_state=0)
    deepmc.CompressedDeepMatrixCompletion(rank=5, max_iter=30).fit(problem.train)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    deepmc.CompressedDeepMatrixCompletion(rank=5, max_iter=30).fit(problem.train)
    assert torch.get_num_threads() == 1


class _Clock:
    """A fake ``perf_counter`` whose step time depends on torch's thread setting."""

    def __init__(self, seconds_by_threads: dict[int, float]) -> None:
        self.now = 0.0
        self.seconds = seconds_by_threads

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.seconds[torch.get_num_threads()]


def _run(monkeypatch, seconds: dict[int, float], steps: int, work: int = 4 * SERIAL_WORK):
    clock = _Clock(seconds)
    monkeypatch.setattr(_threads.time, "perf_counter", clock)
    used = []
    with StepThreads(CPU, work) as threads:
        for _ in range(steps):
            clock.step()
            used.append(torch.get_num_threads())
            threads.tick()
    return threads, used


def test_small_steps_run_on_one_thread(two_cpus, monkeypatch):
    threads, used = _run(monkeypatch, {1: 1.0, 2: 0.1}, 20, work=SERIAL_WORK // 2)
    assert set(used) == {1} and threads.fixed
    assert torch.get_num_threads() == 2  # restored


def test_trial_keeps_two_threads_when_they_are_faster(two_cpus, monkeypatch):
    threads, used = _run(monkeypatch, {1: 1.0, 2: 0.5}, 60)
    assert threads.choice == 2
    assert used[-1] == 2 and used[: TRIAL_STEPS + 1] == [1] * (TRIAL_STEPS + 1)


def test_trial_falls_back_to_one_thread_under_contention(two_cpus, monkeypatch):
    threads, used = _run(monkeypatch, {1: 1.0, 2: 8.0}, 60)
    assert threads.choice == 1
    # two threads ran only for their trial: one settling step and the timed ones
    assert used.count(2) == TRIAL_STEPS + 1


def test_drift_starts_a_new_trial(two_cpus, monkeypatch):
    clock = _Clock({1: 1.0, 2: 0.5})
    monkeypatch.setattr(_threads.time, "perf_counter", clock)
    with StepThreads(CPU, 4 * SERIAL_WORK) as threads:
        for _ in range(30):
            clock.step()
            threads.tick()
        assert threads.choice == 2
        clock.seconds = {1: 1.0, 2: 6.0}  # another job started
        for _ in range(40):
            clock.step()
            threads.tick()
        assert threads.choice == 1


def test_fixed_policy_uses_the_cap(two_cpus, monkeypatch):
    with thread_limit(adaptive=False):
        threads, used = _run(monkeypatch, {1: 1.0, 2: 8.0}, 30)
    assert set(used) == {2} and threads.fixed


def test_call_with_threads_limits_a_worker(two_cpus):
    assert call_with_threads(1, available_cpus) == 1
    assert call_with_threads(None, available_cpus) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("preset", [None, "50000"])
def test_import_sets_the_openmp_spin_count_unless_the_user_did(preset):
    # a fresh interpreter: libgomp reads GOMP_SPINCOUNT when torch loads it
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    code = "import os, deepmc; print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (preset or "1000")

"""Host-memory probes: exact on Linux, and None (never a crash) where the OS lacks them."""

from __future__ import annotations

import builtins
import math
import os
import sys

import numpy as np
import pytest

from deepmc import _device
from deepmc.compare import _run, load_task

LINUX = sys.platform.startswith("linux") and os.path.exists("/proc/self/status")


@pytest.fixture
def no_proc(monkeypatch):
    """Behave like macOS / Windows: no /proc."""
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if str(file).startswith("/proc"):
            raise FileNotFoundError(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.fixture
def no_resource(monkeypatch):
    """Behave like Windows: no ``resource`` module."""
    monkeypatch.setitem(sys.modules, "resource", None)


@pytest.mark.skipif(not LINUX, reason="needs /proc")
def test_linux_probes_are_exact():
    assert _device.reset_host_peak() is True
    rss = _device.host_rss_kib()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB: above malloc's mmap threshold, fresh pages
    during = _device.host_rss_kib()
    del block
    peak = _device.host_peak_kib(True)  # the mark keeps the freed block
    assert rss > 0 and during >= rss + 56 * 1024
    assert peak >= rss + 56 * 1024  # within the kernel's lazily synced RSS counters
    assert _device.available_host_bytes() > 0


def test_resident_and_available_memory_are_psutil_figures():
    import psutil

    rss = psutil.Process().memory_info().rss // 1024
    assert _device.host_rss_kib() == pytest.approx(rss, rel=0.05)
    total = psutil.virtual_memory().total
    assert 0 < _device.available_host_bytes() <= total


def test_without_proc_the_probes_fall_back(no_proc):
    assert _device.reset_host_peak() is False
    fallback = _device.max_rss_kib()
    if fallback is not None:  # POSIX: ru_maxrss
        assert _device.host_peak_kib(True) == pytest.approx(fallback, rel=0.1)
        assert _device.host_peak_kib(False) == pytest.approx(fallback, rel=0.1)


def test_without_resource_the_peak_is_psutils_windows_figure(no_proc, no_resource, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(_device, "_memory_info", lambda: SimpleNamespace(rss=1, peak_wset=2**30))
    assert _device.max_rss_kib() == 2**20
    assert _device.host_peak_kib(True) == 2**20


def test_unreadable_figures_are_none(no_proc, no_resource, monkeypatch):
    import psutil

    def denied(*args, **kwargs):
        raise psutil.AccessDenied()

    monkeypatch.setattr(psutil, "Process", denied)
    monkeypatch.setattr(psutil, "virtual_memory", denied)
    assert _device.host_rss_kib() is None
    assert _device.max_rss_kib() is None
    assert _device.host_peak_kib(False) is None
    assert _device.host_peak_kib(True) is None
    assert _device.available_host_bytes() is None


def test_compare_runs_and_says_so_when_memory_cannot_be_measured(monkeypatch):
    monkeypatch.setattr(_run, "reset_host_peak", lambda: False)
    monkeypatch.setattr(_run, "max_rss_kib", lambda: None)
    monkeypatch.setattr(_run, "host_peak_kib", lambda exact: None)
    task = load_task("20x20,rank=2")
    params = {"max_iter": 5, "check_every": 5, "device": "cpu", "random_state": 0, "verbose": 0}
    res = _run._run("compressed", task, params, log=lambda line: None)
    assert res.status == "ok" and res.estimator.n_iter_ == 5
    assert math.isnan(res.host_mib)
    assert "host memory not measurable on this platform" in res.notes


@pytest.mark.skipif(_device.max_rss_kib() is None, reason="no ru_maxrss here")
def test_compare_flags_the_ru_maxrss_lower_bound(monkeypatch):
    monkeypatch.setattr(_run, "reset_host_peak", lambda: False)  # no /proc
    task = load_task("20x20,rank=2")
    params = {"max_iter": 5, "check_every": 5, "device": "cpu", "random_state": 0, "verbose": 0}
    res = _run._run("compressed", task, params, log=lambda line: None)
    assert res.host_mib >= 0
    assert "host memory from ru_maxrss (lower bound)" in res.notes

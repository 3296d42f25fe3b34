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


def test_without_proc_the_probes_fall_back(no_proc):
    assert _device.reset_host_peak() is False
    assert _device.host_rss_kib() is None
    fallback = _device.max_rss_kib()
    if fallback is not None:  # POSIX: ru_maxrss
        assert _device.host_peak_kib(True) == pytest.approx(fallback, rel=0.1)
    available = _device.available_host_bytes()  # sysconf where it exists
    assert available is None or available > 0


def test_without_proc_resource_or_sysconf_everything_is_none(no_proc, no_resource, monkeypatch):
    monkeypatch.delattr(os, "sysconf", raising=False)
    assert _device.max_rss_kib() is None
    assert _device.host_peak_kib(False) is None
    assert _device.host_peak_kib(True) is None
    assert _device.available_host_bytes() is None


def test_sysconf_without_the_names_gives_none(no_proc, monkeypatch):
    def sysconf(name):
        raise ValueError(f"unrecognized configuration name {name!r}")

    monkeypatch.setattr(os, "sysconf", sysconf)
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

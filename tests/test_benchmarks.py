"""Smoke test of the asv suite: every benchmark runs on the cheap parameters.

The suite is imported as asv imports it (the ``benchmarks`` package at the repository
root) under the ``fast`` profile; each benchmark's ``setup`` and one call run for the
CPU combinations of problem A, and the skipped combinations say why.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("DEEPMC_BENCH_PROFILE", "fast")
    mp.setenv("DEEPMC_BENCH_CACHE", str(tmp_path_factory.mktemp("bench-cache")))
    mp.syspath_prepend(str(ROOT))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        mp.delitem(sys.modules, name)
    modules = [
        importlib.import_module(f"benchmarks.{p.stem}")
        for p in sorted((ROOT / "benchmarks").glob("bench_*.py"))
    ]
    yield modules
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        del sys.modules[name]
    mp.undo()


def _classes(modules):
    for module in modules:
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and any(
                re.match(r"(time|peakmem|track|mem)_", a) for a in dir(cls)
            ):
                yield cls


def test_config_is_offline_and_points_at_the_suite():
    text = (ROOT / "asv.conf.json").read_text()
    conf = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))
    assert conf["environment_type"] == "existing"
    assert conf["benchmark_dir"] == "benchmarks"
    assert (ROOT / conf["benchmark_dir"] / "__init__.py").exists()


def test_fit_benchmarks_run_on_the_cheap_parameters(suite):
    from benchmarks import common
    from benchmarks.bench_fit import Fit

    assert Fit.param_names == ["method", "device", "problem"]
    assert Fit.track_recovery_error.unit == "relative error"
    max_iter = common.MAX_ITER["fast"]["A"]
    for method in Fit.params[0]:  # every network: setup and one timed call
        bench = Fit()
        bench.setup(method, "cpu", "A")
        assert bench.time_fit(method, "cpu", "A") is None
    bench = Fit()  # the other benchmarks on the cheapest network
    bench.setup("compressed", "cpu", "A")
    bench.peakmem_fit("compressed", "cpu", "A")
    assert bench.track_n_iter("compressed", "cpu", "A") == max_iter  # too few to converge
    error = bench.track_recovery_error("compressed", "cpu", "A")
    assert 1e-3 < error < 1.5  # a few steps from ε-small init: barely moved from ‖Φ‖
    again = Fit()  # seeded and cached: the same number again
    again.setup("compressed", "cpu", "A")
    assert again.track_recovery_error("compressed", "cpu", "A") == error


def test_skipped_combinations_raise_not_implemented(suite):
    from benchmarks.bench_fit import Fit, FitGPUMemory

    with pytest.raises(NotImplementedError, match="infeasible"):
        _setup_in_profile(Fit(), "full", "C")
    with pytest.raises(NotImplementedError, match="profile"):
        Fit().setup("compressed", "cpu", "B")
    assert Fit.params == [["full", "narrow", "compressed"], ["cpu"], ["A"]]  # fast profile
    if not torch.cuda.is_available():
        with pytest.raises(NotImplementedError, match="CUDA"):
            Fit().setup("compressed", "cuda", "A")
        with pytest.raises(NotImplementedError, match="CUDA"):
            FitGPUMemory().setup("compressed", "A")


def _setup_in_profile(bench, method, problem):
    """``setup`` as under the regular profile, where problem C is listed."""
    from benchmarks import common

    saved = common.MAX_ITER[common.PROFILE]
    common.MAX_ITER[common.PROFILE] = common.MAX_ITER["regular"]
    try:
        bench.setup(method, "cpu", problem)
    finally:
        common.MAX_ITER[common.PROFILE] = saved


def test_every_benchmark_is_parameterised_and_reachable(suite):
    seen = []
    for cls in _classes(suite):
        names = [a for a in dir(cls) if re.match(r"(time|peakmem|track)_", a)]
        seen += names
        assert len(cls.param_names) == len(cls.params)
        for combo in itertools.product(*cls.params):
            bench = cls()
            try:
                bench.setup(*combo)
            except NotImplementedError as exc:
                assert str(exc)  # every skip states its reason
            finally:  # asv runs teardown after a skipped setup too
                if hasattr(bench, "teardown"):
                    bench.teardown(*combo)
    assert {"time_fit", "peakmem_fit", "track_recovery_error", "track_n_iter"} <= set(seen)
    assert "track_gpu_peak_bytes" in seen


def test_scale_benchmarks_measure_what_they_say(suite, monkeypatch):
    """bench_scale on problem A: the step budgets of TARGETS do reach the target errors."""
    from benchmarks import bench_scale
    from benchmarks.bench_scale import TARGETS, CompressedStep, TargetRatio, TimeToTarget

    step = CompressedStep()
    step.setup("A", "cpu", "float64")
    try:
        assert step.time_step("A", "cpu", "float64") is None
        assert step.track_observations_per_second("A", "cpu", "float64") > 0
    finally:
        step.teardown("A", "cpu", "float64")
    target, steps = TARGETS["A"]
    for method in ("compressed", "full"):
        bench = TimeToTarget()
        bench.setup(method, "A", "cpu")
        assert bench.track_steps(method, "A", "cpu") == steps[method]
        assert bench.track_recovery_error(method, "A", "cpu") <= target
    monkeypatch.setattr(bench_scale, "PROFILE", "regular")  # B is listed, not built
    with pytest.raises(NotImplementedError, match="not measured"):
        TimeToTarget().setup("full", "B", "cpu")
    monkeypatch.undo()
    ratio = TargetRatio()
    ratio.setup("A", "cpu")
    assert ratio.track_full_over_compressed("A", "cpu") > 0
    watch = bench_scale.EvalOverhead()
    watch.setup("A", "cpu")
    assert watch.track_watched_over_unwatched("A", "cpu") > 0

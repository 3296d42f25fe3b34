"""The GPU table script (``benchmarks/gpu_table.py``), run on the CPU with tiny problems."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_table():
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(ROOT))
    module = importlib.import_module("benchmarks.gpu_table")
    yield module
    mp.undo()


def test_without_cuda_it_says_so_and_exits_zero(gpu_table, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_table.main([]) == 0
    assert "No CUDA device" in capsys.readouterr().out


def test_cpu_table_with_tiny_problems(gpu_table, capsys, monkeypatch):
    monkeypatch.setattr(gpu_table, "RUN_SECONDS", 0.02)
    argv = ["--device", "cpu", "--tiny", "--problems", "A,C", "--dtypes", "float64"]
    assert gpu_table.main([*argv, "--target", "2", "--max-iter", "50"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\| [ABC] \|", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["A", "C"]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[1:-1]] for r in rows}
    a, c = cells["A"], cells["C"]
    assert float(a[3]) > 0 and float(a[4]) > 0 and a[5].endswith("×")  # both steps timed
    assert c[4] == "—" and c[5] == "—"  # no full-width network on C
    assert a[6] == "—"  # no CUDA memory on the CPU
    for row in (a, c):  # an error of 2 is met at the first check; its time includes init
        assert int(row[7]) == 0 and float(row[8]) > 0 and 0 < float(row[9]) < 2


def test_unknown_problem_is_an_error(gpu_table):
    with pytest.raises(SystemExit):
        gpu_table.main(["--device", "cpu", "--problems", "A,D"])


def test_measure_reports_not_reached(gpu_table):
    row = gpu_table.measure("A", "cpu", "float64", tiny=True, target=1e-30, max_iter=30)
    assert row["fit"]["steps"] is None and row["fit"]["n_iter"] == 30
    table = gpu_table.format_table([row], "cpu", 1e-30)
    assert "not reached (30)" in table

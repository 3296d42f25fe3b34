"""``deepmc compare``: files, table and figures on problem A, skips, ratings."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmc.__main__ import main
from deepmc.compare import (
    METHODS,
    _summary,
    compare,
    end_to_end_singular_values,
    format_table,
    load_task,
    parse_problem,
)

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
MAX_ITER = 20


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-a")
    table = compare(
        "A",
        methods=("full", "narrow", "compressed"),
        no_dlr=True,
        max_iter=MAX_ITER,
        check_every=10,
        device="cpu",
        seed=0,
        output_dir=out,
        singular_values=True,
        singular_points=2,
        log=lambda line: None,
    )
    return table, out


def test_problem_a_writes_histories_figures_and_summary(run_a):
    table, out = run_a
    for name in ["summary.csv", "compare.png", "singular_values.png"]:
        assert (out / name).stat().st_size > 1000 or name == "summary.csv"
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for method in METHODS:
        hist = pd.read_csv(out / f"history_{method}.csv")
        assert {"iteration", "seconds", "eval_error", "eval_rmse"} <= set(hist.columns)
        assert (hist["method"] == method).all()
        assert hist["iteration"].tolist() == list(range(0, MAX_ITER + 1, 10))
        assert (np.diff(hist["seconds"]) >= 0).all()
        assert hist["eval_error"].iloc[0] == pytest.approx(1.0, abs=1e-3)  # ε-small X(0)
        sv = pd.read_csv(out / f"singular_values_{method}.csv")
        assert sv["iteration"].tolist() == [MAX_ITER // 2, MAX_ITER]
        values = sv.drop(columns="iteration").to_numpy()
        assert values.shape[1] == 10  # top 2r̂ singular values
        assert (np.diff(values, axis=1) <= 1e-12).all()  # sorted, largest first
    saved = pd.read_csv(out / "summary.csv")
    assert saved["method"].tolist() == table["method"].tolist()


def test_problem_a_table(run_a):
    table, _ = run_a
    assert table["method"].tolist() == ["full", "narrow", "compressed", "compressed-no-dlr"]
    expected = {
        "status",
        "iterations",
        "seconds",
        "iter_to_1e-03",
        "sec_to_1e-03",
        "iter_to_1e-06",
        "sec_to_1e-06",
        "final_error",
        "peak_rss_increase_MiB",
        "cuda_peak_alloc_MiB",
        "speedup_vs_full",
    }
    assert expected <= set(table.columns)
    assert (table["status"] == "ok").all()
    assert (table["iterations"] == MAX_ITER).all()
    assert (table["seconds"] > 0).all()
    # 40 steps from ε = 1e-2 are still on the plateau: no threshold is reached
    assert table["iter_to_1e-03"].isna().all()
    assert table["final_error"].between(0.05, 1.01).all()
    assert (table["peak_rss_increase_MiB"] >= 0).all()
    assert table["cuda_peak_alloc_MiB"].isna().all()  # CPU run
    assert table.loc[0, "speedup_vs_full"] == pytest.approx(1.0)
    assert "seconds per iteration" in table.attrs["speedup_basis"]
    per_step = table["seconds"] / table["iterations"]
    np.testing.assert_allclose(table["speedup_vs_full"], per_step[0] / per_step)
    assert table["note"].str.contains("max_iter").all()
    text = format_table(table)
    assert text.splitlines()[0].split()[:3] == ["method", "status", "iterations"]
    assert "compressed-no-dlr" in text and "speedup_vs_full =" in text


def test_thresholds_and_speedup_from_history():
    class Fitted:
        def __init__(self, errors, step_seconds):
            its = np.arange(len(errors)) * 10
            self.history_ = pd.DataFrame(
                {"iteration": its, "seconds": its * step_seconds, "eval_error": errors}
            )
            self.n_iter_ = int(its[-1])

    from deepmc.compare import _Result

    task = load_task("20x20,rank=2")
    results = [
        _Result("full", "ok", Fitted([1, 1e-2, 5e-4, 1e-5, 5e-7], 0.4), seconds=17.0),
        _Result("compressed", "ok", Fitted([1, 5e-4, 1e-7], 0.1), seconds=2.1),
        _Result("narrow", "skipped", None, notes=["too big"]),
    ]
    table, basis = _summary(results, task, (1e-3, 1e-6))
    full, comp, narrow = (table.iloc[i] for i in range(3))
    assert (full["iter_to_1e-03"], full["sec_to_1e-03"]) == (20, 8.0)
    assert (full["iter_to_1e-06"], full["sec_to_1e-06"]) == (40, 16.0)
    assert (comp["iter_to_1e-03"], comp["iter_to_1e-06"]) == (10, 20)
    assert comp["speedup_vs_full"] == pytest.approx(16.0 / 2.0)
    assert "1e-06" in basis
    assert narrow["status"] == "skipped" and math.isnan(narrow["final_error"])


def test_dense_networks_on_a_shape_they_cannot_hold_are_skipped(tmp_path):
    # 100,000 × 50,000: dense m×n arrays need hundreds of GiB on any machine; the narrow
    # network trains on the kernels of Ω and holds it
    table = compare(
        "100000x50000,rank=2,count=2000",
        methods=["full", "narrow"],
        max_iter=3,
        device="cpu",
        output_dir=tmp_path,
        log=lambda line: None,
    )
    assert table["method"].tolist() == ["full", "narrow"]
    full, narrow = (row for _, row in table.iterrows())
    assert full["status"] == "skipped"
    assert "cannot hold" in full["note"] and "GiB" in full["note"]
    assert math.isnan(full["iterations"]) and math.isnan(full["speedup_vs_full"])
    assert narrow["status"] == "ok" and narrow["iterations"] == 3
    assert not (tmp_path / "history_full.csv").exists()
    assert (tmp_path / "history_narrow.csv").exists()
    assert "skipped" in format_table(table)


def test_end_to_end_singular_values_match_dense_svd(problem_a):
    from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion

    for est in (
        CompressedDeepMatrixCompletion(rank=5, max_iter=30, random_state=0),
        DeepMatrixCompletion(width=10, max_iter=30, random_state=0),
    ):
        with pytest.warns(Warning):
            est.fit(problem_a.train)
        dense = np.linalg.svd(est._complete(), compute_uv=False)[:10]
        np.testing.assert_allclose(end_to_end_singular_values(est, 10), dense, rtol=1e-8)


def test_parse_problem_and_errors():
    assert parse_problem("30x20,r=3,n=100,noise=0.1,depth=4") == {
        "shape": (30, 20),
        "rank": 3,
        "count": 100,
        "noise": 0.1,
        "depth": 4,
    }
    assert load_task("30x20,rank=3,depth=4").depth == 4
    with pytest.raises(ValueError, match="rank"):
        parse_problem("30x20")
    with pytest.raises(ValueError, match="key=value"):
        parse_problem("30x20,rank=3,colour=red")
    with pytest.raises(ValueError, match="methods"):
        compare("A", methods=["wide"])
    with pytest.raises(FileNotFoundError, match="grouplens"):
        compare("ml-1m", cache_dir="/nonexistent", methods=["compressed"])


@pytest.mark.skipif(not ML100K.is_file(), reason=f"{ML100K} is absent")
def test_ratings_compare_reports_held_out_rmse(tmp_path):
    table = compare(
        str(ML100K),
        methods=["compressed"],
        rank=4,
        max_iter=20,
        check_every=10,
        device="cpu",
        output_dir=tmp_path,
        log=lambda line: None,
    )
    row = table.iloc[0]
    assert table.attrs["kind"] == "ratings" and table.attrs["shape"] == (943, 1682)
    assert {"best_rmse", "iter_at_best", "final_rmse"} <= set(table.columns)
    assert "final_error" not in table.columns
    # predictions start at mean + biases: about 0.94 on MovieLens-100K (std 1.13)
    hist = pd.read_csv(tmp_path / "history_compressed.csv")
    assert 0.9 < hist["eval_rmse"].iloc[0] < 1.0
    assert row["best_rmse"] <= hist["eval_rmse"].iloc[0]
    assert row["final_rmse"] == pytest.approx(hist["eval_rmse"].iloc[-1])
    assert (tmp_path / "compare.png").exists()


def test_console_script_prints_the_table(tmp_path, capsys):
    code = main(
        [
            "compare",
            "--problem",
            "30x30,rank=2,fraction=0.5",
            "--methods",
            "narrow,compressed",
            "--max-iter",
            "15",
            "--device",
            "cpu",
            "--verbose",
            "0",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "[compare] 30x30-r2: 30×30, 450 observed, 450 held out" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["method", "status"])
    assert lines[header + 1].split()[0] == "narrow"
    assert lines[header + 2].split()[0] == "compressed"
    assert (tmp_path / "summary.csv").exists()


def test_compare_accepts_a_loaded_task_and_leaves_it_alone(tmp_path):
    task = load_task("20x20,rank=2", rank=3)
    lines = []
    table = compare(
        task,
        methods=["compressed"],
        init_scale=0.05,
        max_iter=5,
        check_every=5,
        device="cpu",
        output_dir=tmp_path,
        log=lines.append,
    )
    assert table.attrs["rank"] == 3 and table["iterations"].tolist() == [5]
    assert "r̂=3, depth 3, ε=0.05, seed 0" in lines[0]
    assert task.init_scale is None  # the caller's task is not modified


def test_without_matplotlib_the_table_is_printed_and_figures_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails
    args = ["compare", "--problem", "20x20,rank=2,fraction=0.5", "--methods", "compressed"]
    args += ["--max-iter", "5", "--device", "cpu", "--verbose", "0"]
    assert main([*args, "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if "matplotlib is not installed" in line]
    assert len(skipped) == 1 and 'pip install "matplotlib' in skipped[0]
    assert any(line.split()[:1] == ["compressed"] for line in out.splitlines())
    assert out.rstrip().endswith("(summary.csv, history_*.csv)")
    assert (tmp_path / "summary.csv").exists() and not (tmp_path / "compare.png").exists()

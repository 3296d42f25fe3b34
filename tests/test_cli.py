"""The command line: ``deepmc demo`` (the README's main job), ``--version``, usage errors."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from deepmc.__main__ import main


def test_demo_prints_both_networks_recovering_problem_a(capsys):
    assert main(["demo", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = dict(
        (m.group(1), (int(m.group(2)), float(m.group(3)), float(m.group(4))))
        for m in re.finditer(
            r"^(compressed|full-width)\s+(\d+)\s+([\d.]+)\s+([\d.e+-]+)$", out, flags=re.M
        )
    )
    assert set(rows) == {"compressed", "full-width"}
    for iterations, seconds, error in rows.values():
        assert iterations > 0 and seconds > 0
        assert error <= 1e-4
    assert "speed-up of compressed over full width" in out
    assert "the estimators' defaults (init_scale 'auto')" in out


def test_demo_and_compare_use_the_estimators_defaults_unless_told(tmp_path, monkeypatch):
    import deepmc.models

    made = []
    real = deepmc.models.make_estimator

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    import deepmc.compare._tasks

    # Patched where it is looked up: the registry (demo) and compare, which imported it.
    monkeypatch.setattr(deepmc.models, "make_estimator", recording)
    monkeypatch.setattr(deepmc.compare._tasks, "make_estimator", recording)
    out = str(tmp_path)

    def params():
        return [(e.get_params()["init_scale"], e.get_params()["tol"]) for e in made]

    main(["demo", "--device", "cpu"])
    assert params() == [("auto", 1e-6)] * 2  # compressed, full-width
    made.clear()
    main(["compare", "--methods", "compressed", "--device", "cpu", "--output-dir", out])
    assert set(params()) == {("auto", 1e-6)}  # a warm-up and the fit
    made.clear()
    main(["demo", "--device", "cpu", "--init-scale", "0.01"])
    assert params() == [(0.01, 1e-6)] * 2
    made.clear()
    args = ["--init-scale", "0.01", "--tol", "1e-9"]
    main(["compare", "--methods", "compressed", "--device", "cpu", "--output-dir", out, *args])
    assert set(params()) == {(0.01, 1e-9)}


# ---------------------------------------------------------------- usage errors
def test_version(capsys):
    import deepmc

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"deepmc {deepmc.__version__}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--methods", "bogus"], "argument --methods: expected comma-separated"),
        (["compare", "--methods", "narrow,wide"], "got 'narrow,wide'"),
        (["compare", "--methods", ","], "argument --methods"),
        (["compare", "--problem", "30x20,rank=x"], "argument --problem: rank='x'"),
        (["compare", "--problem", "30x20,colour=red"], "expected key=value"),
        (["compare", "--problem", "30x20"], "needs a rank"),
        (["compare", "--problem", "10x10,rank=20"], "rank <= min(m, n) = 10"),
        (["compare", "--problem", "ml-1m", "--cache-dir", "/nonexistent"], "grouplens"),
        (["compare", "--problem", "ml-100k", "--cache-dir", "/nonexistent"], "Pass --download"),
        (["compare", "--check-every", "0"], "argument --check-every: expected an integer >= 1"),
        (["compare", "--max-iter", "-5"], "argument --max-iter: expected an integer >= 1"),
        (["compare", "--max-iter", "ten"], "argument --max-iter: expected an integer >= 1"),
        (["compare", "--rank", "0"], "argument --rank"),
        (["compare", "--depth", "1"], "argument --depth: expected an integer >= 2"),
        (["compare", "--init-scale", "0"], "argument --init-scale: expected a positive"),
        (["compare", "--tol=-1e-3"], "argument --tol: expected a number >= 0"),
        (["compare", "--test-fraction", "1.5"], "argument --test-fraction"),
        (["compare", "--seed", "-1"], "argument --seed"),
        (["compare", "--device", "gpu"], "argument --device: expected auto, cpu, cuda"),
        (["compare", "--verbose", "-2"], "argument --verbose"),
        (["demo", "--problem", "Z"], "argument --problem: invalid choice: 'Z'"),
        (["demo", "--device", "tpu"], "argument --device"),
        (["demo", "--seed", "x"], "argument --seed"),
        ([], "the following arguments are required: command"),
    ],
)
def test_mistakes_are_one_line_usage_errors(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--output-dir", str(out)] if argv[:1] == ["compare"] else []
    with pytest.raises(SystemExit) as exc:
        main([*argv, *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("usage: deepmc")
    last = err.strip().splitlines()[-1]
    assert re.match(r"^deepmc( compare| demo)?: error: ", last)
    assert message in last
    assert not out.exists()  # nothing ran


def test_missing_problem_file_is_a_usage_error(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "u.data"
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--problem", str(missing), "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (
        f"deepmc compare: error: argument --problem: {missing}: no such ratings file "
        "(only release names can be downloaded)."
    )


def test_unreadable_problem_file_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "ratings.txt"
    bad.write_text("1,2,3\n")
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--problem", str(bad), "--output-dir", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "unknown ratings format" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("command", ["compare", "demo"])
def test_cuda_without_cuda_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--device", "cuda"])
    assert exc.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"deepmc {command}: error: argument --device: device='cuda' but")


def test_runtime_failures_still_raise(monkeypatch, tmp_path):
    import deepmc.compare._cli as cli

    def broken(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(cli, "compare", broken)
    with pytest.raises(RuntimeError, match="solver exploded"):
        main(["compare", "--problem", "20x20,rank=2", "--output-dir", str(tmp_path)])


def test_compare_command_never_silently_disappears(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    assert "--problem" in capsys.readouterr().out
    monkeypatch.setitem(sys.modules, "deepmc.compare", None)  # a broken install
    with pytest.raises(ImportError):
        main(["compare", "--help"])


def test_valid_arguments_reach_compare(monkeypatch, tmp_path, capsys):
    import deepmc.compare._cli as cli

    seen = {}

    def fake_compare(task, **kwargs):
        seen.update(task=task, **kwargs)
        raise KeyboardInterrupt  # stop before fitting

    monkeypatch.setattr(cli, "compare", fake_compare)
    with pytest.raises(KeyboardInterrupt):
        main(
            [
                "compare",
                "--problem",
                "30x20,rank=3,p=0.5,depth=4",
                "--methods",
                " narrow , compressed",
                "--rank",
                "4",
                "--check-every",
                "5",
                "--device",
                "cpu",
                "--output-dir",
                str(tmp_path),
            ]
        )
    assert seen["methods"] == ["narrow", "compressed"]
    assert seen["check_every"] == 5 and seen["device"] == "cpu"
    assert (seen["task"].shape, seen["task"].rank, seen["task"].depth) == ((30, 20), 4, 4)

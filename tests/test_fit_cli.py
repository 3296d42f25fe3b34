"""``deepmc fit``'s user errors: one line, exit status 2, the option or the line named."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmc.__main__ import main
from deepmc.distributed import load_ids, load_model


@pytest.fixture(scope="module")
def triplets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
    r, c = np.nonzero(rng.random(X.shape) < 0.5)
    return pd.DataFrame({"user": r, "item": c, "rating": X[r, c]})


def _fit(tmp_path: Path, data: Path, *extra: str) -> tuple[int, str]:
    argv = ["fit", "--data", str(data), "--rank", "3", "--output", str(tmp_path / "model")]
    argv += ["--max-iter", "50", "--dtype", "float64", *extra]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            status = exc.code
    return status, err.getvalue()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--depth", "1"], "argument --depth: The 'depth' parameter"),
        (["--depth", "0"], "argument --depth: "),
        (["--rank", "0"], "argument --rank: The 'rank' parameter"),
        (["--method", "narrow", "--rank", "0"], "width is 2 × --rank"),
        (["--init-scale", "0"], "argument --init-scale: "),
        (["--init-scale", "-1"], "argument --init-scale: "),
        (["--tol", "-1"], "argument --tol: "),
        (["--max-iter", "-5"], "argument --max-iter: "),
        (["--check-every", "-5"], "argument --check-every: "),
        (["--check-every", "0"], "argument --check-every: "),
        (["--seed", "-1"], "argument --seed: "),
        (["--index-base", "-1"], "argument --index-base: expected an integer >= 0"),
        (["--timeout", "-5"], "argument --timeout: expected a positive number"),
        (["--checkpoint-every", "0"], "argument --checkpoint-every: expected an integer >= 1"),
        (["--lr", "fast"], "argument --lr: expected 'auto' or a number"),
    ],
)
def test_every_hyper_parameter_is_validated_before_anything_runs(
    tmp_path, triplets, option, message
):
    data = tmp_path / "t.csv"
    triplets.to_csv(data, index=False)
    status, err = _fit(tmp_path, data, *option)
    assert status == 2
    assert "Traceback" not in err
    assert message in err.strip().splitlines()[-1]
    assert not (tmp_path / "model").exists()


def _edit(df: pd.DataFrame, what: str) -> pd.DataFrame:
    df = df.copy()
    if what == "huge id":
        df.loc[3, "user"] = 10**12
    elif what == "overflow":
        df["rating"] *= 1e153
    elif what == "underflow":
        df["rating"] *= 1e-200
    elif what == "zeros":
        df["rating"] = 0.0
    elif what == "complex":
        df = df.astype({"rating": object})
        df.loc[4, "rating"] = "1+2j"
    elif what == "string id":
        df = df.astype({"user": object})
        df.loc[2, "user"] = "alice"
    return df


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("huge id", "row id 1000000000000 would make a matrix with 1e+12 rows"),
        ("overflow", "too large: the fit squares them"),
        ("underflow", "underflow float64"),
        ("zeros", "every observed value is 0"),
        ("complex", "t.csv: line 6: expected a finite number as the value, got '1+2j', a complex"),
        ("string id", "t.csv: line 4: the row column must hold integer indices, got 'alice'"),
    ],
)
def test_data_errors_name_the_problem_and_the_fix(tmp_path, triplets, what, message):
    data = tmp_path / "t.csv"
    _edit(triplets, what).to_csv(data, index=False)
    status, err = _fit(tmp_path, data)
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err
    if what in ("huge id", "string id"):
        assert "--remap" in err


def test_a_ragged_line_is_named(tmp_path, triplets):
    data = tmp_path / "t.csv"
    text = triplets.to_csv(index=False).splitlines()
    text[5] = "7,3"  # line 6: a field short
    data.write_text("\n".join(text) + "\n")
    status, err = _fit(tmp_path, data)
    assert status == 2
    assert "t.csv: line 6 has 2 fields where the first line has 3 ('7,3')" in err
    text[5] = "7,3,0.5,9"  # a field too many
    data.write_text("\n".join(text) + "\n")
    status, err = _fit(tmp_path, data)
    assert status == 2 and "line 6 has 4 fields" in err


def test_debug_shows_the_traceback(tmp_path, triplets):
    with pytest.raises(FileNotFoundError):
        main(["fit", "--data", str(tmp_path / "none.csv"), "--rank", "2", "--output",
              str(tmp_path / "m"), "--debug"])  # fmt: skip
    status, err = _fit(tmp_path, tmp_path / "none.csv")
    assert status == 2 and "none.csv" in err and "Traceback" not in err


def test_remap_fits_sparse_and_string_ids_and_saves_the_maps(tmp_path, triplets):
    df = triplets.assign(
        user=triplets["user"] * 10**12 + 7, item="item-" + triplets["item"].astype(str)
    )
    data = tmp_path / "t.csv"
    df.to_csv(data, index=False)
    status, err = _fit(tmp_path, data)
    assert status == 2 and "--remap" in err
    status, err = _fit(tmp_path, data, "--remap")
    assert status == 0, err
    row_ids, col_ids = load_ids(tmp_path / "model")
    model = load_model(tmp_path / "model")
    assert model.shape_ == (row_ids.size, col_ids.size) == (30, 20)
    # the same fit as the dense ids: indices follow the sorted ids
    dense = tmp_path / "dense"
    dense.mkdir()
    rows = np.searchsorted(row_ids, df["user"].astype(str))
    cols = np.searchsorted(col_ids, df["item"])
    assert (row_ids[rows] == df["user"].astype(str)).all() and (col_ids[cols] == df["item"]).all()
    pd.DataFrame({"r": rows, "c": cols, "v": df["rating"]}).to_csv(dense / "t.csv", index=False)
    status, err = _fit(dense, dense / "t.csv")
    assert status == 0, err
    np.testing.assert_array_equal(load_model(dense / "model").U_, model.U_)


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["fit", "--help"]])
def test_version_and_help_do_not_import_torch(argv):
    import deepmc

    code = (
        f"import sys\nfrom deepmc.__main__ import main\ntry:\n    main({argv!r})\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    root = str(Path(deepmc.__file__).parents[1])  # this checkout, not an installed copy
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr

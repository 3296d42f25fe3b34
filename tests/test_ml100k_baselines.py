"""The MovieLens table script and its NumPy biased-ALS baseline, on small synthetic ratings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def modules():
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(BENCH))
    import ml100k_baselines
    import ml100k_table

    yield ml100k_baselines, ml100k_table
    for name in ("ml100k_baselines", "ml100k_table"):
        sys.modules.pop(name, None)
    mp.undo()


def synthetic(seed: int = 0, n_users: int = 60, n_items: int = 40) -> pd.DataFrame:
    """Rank-2 tastes plus user and item offsets, noisy, on a 1–5 scale, 50 % observed."""
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((n_users, 2)) @ rng.standard_normal((2, n_items))
    taste += 0.5 * rng.standard_normal((n_users, 1)) + 0.5 * rng.standard_normal((1, n_items))
    users, items = np.nonzero(rng.random(taste.shape) < 0.5)
    noisy = 3 + taste[users, items] + 0.3 * rng.standard_normal(users.size)
    return pd.DataFrame(
        {"user": users + 1, "item": items + 1, "rating": np.clip(np.round(noisy), 1, 5)}
    )


def test_biased_als_beats_the_biases(modules):
    baselines, table = modules
    frame = synthetic()
    test = frame.sample(frac=0.2, random_state=0)
    train = frame.drop(test.index)
    als = baselines.biased_als(train, rank=4)
    assert als.chosen.startswith("λ=")
    rmse_als = table.rmse(als(test), test)
    rmse_bias = table.rmse(baselines.biases_only(train)(test), test)
    rmse_mean = table.rmse(baselines.global_mean(train)(test), test)
    assert rmse_als < 0.8 * rmse_bias < 0.8 * rmse_mean, (rmse_als, rmse_bias, rmse_mean)
    # Unknown ids fall back to the mean plus the known bias, clipped.
    unseen = pd.DataFrame({"user": [10_000], "item": [train["item"].iloc[0]]})
    assert 1 <= als(unseen)[0] <= 5


def test_table_runs_and_skips_missing_libraries(modules, tmp_path, capsys, monkeypatch):
    baselines, table = modules
    data = tmp_path / "u.data"
    synthetic().assign(timestamp=0).to_csv(data, sep="\t", header=False, index=False)
    monkeypatch.setitem(baselines.BASELINES, "svd", ("Surprise SVD", "no_such_module_here", None))
    table.main(
        [
            "--data",
            str(data),
            "--seeds",
            "0",
            "1",
            "--rows",
            "previous",
            "--baselines",
            "mean",
            "als",
            "svd",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "Surprise SVD: skipped: the optional package providing 'no_such_module_here'" in out
    rows = [ln for ln in out.splitlines()[-3:] if ln.startswith("| ") and " ± " in ln]
    assert [r.split(" | ")[0] for r in rows] == [
        "| earlier defaults: one fit, rank 10",
        "| global mean",
        "| biased ALS, rank 20, λ from validation (ours, NumPy)",
    ]

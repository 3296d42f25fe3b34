"""``deepmc fit --ratings``: biases, early stopping agreed across ranks, clipped predictions."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _dist_workers import run_world

from deepmc import RatingsCompletion
from deepmc.__main__ import main
from deepmc.distributed import Comm, fit, load_model, shard_observations
from deepmc.distributed._ratings import RatingsModel, ratings_shard
from deepmc.models import make_estimator

ML100K = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k" / "u.data"


def _table(seed: int = 0, m: int = 300, n: int = 200, density: float = 0.25):
    """A noisy ratings table: mean + biases + a rank-2 term + noise, rounded to 1..5."""
    rng = np.random.default_rng(seed)
    score = 3.5 + 0.5 * rng.standard_normal((m, 1)) + 0.4 * rng.standard_normal((1, n))
    score = score + rng.standard_normal((m, 2)) @ rng.standard_normal((2, n)) * 0.6
    score += 0.4 * rng.standard_normal((m, n))
    ratings = np.clip(np.rint(score), 1, 5)
    rows, cols = np.nonzero(rng.random((m, n)) < density)
    test = rng.random(rows.size) < 0.2
    return rows, cols, ratings[rows, cols], (m, n), test


def _write(path: Path, rows, cols, values) -> None:
    pd.DataFrame({"user": rows, "item": cols, "rating": values}).to_csv(path, index=False)


def _rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - truth) ** 2)))


def _reference_rmse(rows, cols, values, test) -> float:
    train = pd.DataFrame({"user": rows[~test], "item": cols[~test], "rating": values[~test]})
    ref = RatingsCompletion(random_state=0, rank=10).fit(train)
    return _rmse(ref.predict(pd.DataFrame({"user": rows[test], "item": cols[test]})), values[test])


def test_cli_ratings_predicts_in_range_and_near_ratings_completion(tmp_path):
    rows, cols, values, shape, test = _table()
    data = tmp_path / "train.csv"
    _write(data, rows[~test], cols[~test], values[~test])
    args = ["fit", "--data", str(data), "--rank", "10", "--ratings", "--shape", *map(str, shape)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, "--output", str(tmp_path / "model")]) == 0
    model = load_model(tmp_path / "model")
    assert isinstance(model, RatingsModel)
    assert model.rating_range_ == (1.0, 5.0)
    assert model.network_.n_iter_ < model.network_.max_iter  # stopped on validation
    pred = model.predict_entries(rows[test], cols[test])
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    # every entry of the matrix, including never-rated pairs, stays in the range
    r, c = np.divmod(np.arange(shape[0] * shape[1]), shape[1])
    full = model.predict_entries(r, c)
    assert full.min() >= 1.0 and full.max() <= 5.0
    ours, ref = _rmse(pred, values[test]), _reference_rmse(rows, cols, values, test)
    assert ours < ref + 0.03, (ours, ref)
    assert ours < _rmse(np.mean(values[~test]), values[test]) - 0.05  # better than the mean
    # fold-in of new rows is centred and clipped too
    X = np.full((2, shape[1]), np.nan)
    X[0, :5] = 5.0
    X[1, :5] = 1.0
    folded = model.predict(X)
    assert folded.shape == X.shape and folded.min() >= 1.0 and folded.max() <= 5.0
    kept = model.transform(X)
    assert np.array_equal(kept[:, :5], X[:, :5])


def test_ratings_validation_needs_no_checkpoints(tmp_path):
    rows, cols, values, shape, _ = _table(m=30, n=20, density=0.5)
    shard = shard_observations((rows, cols, values, shape), bounds=[0, 30])
    train, val, _ = ratings_shard(shard, seed=0, comm=Comm.current())
    est = make_estimator("compressed", rank=3, early_stopping=False)
    with pytest.raises(ValueError, match="checkpoint_dir=None"):
        fit(est, train, validation=val, checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(ValueError, match="validation_fraction"):
        ratings_shard(shard, validation_fraction=1.5, comm=Comm.current())


def test_cli_refuses_a_validation_fraction_outside_0_1(tmp_path, capsys):
    args = ["fit", "--data", "x.csv", "--rank", "3", "--output", str(tmp_path), "--ratings"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "--validation-fraction", "1"])
    assert exc.value.code == 2
    assert "--validation-fraction: expected a number in (0, 1)" in capsys.readouterr().err


def _ratings_worker(rank: int, world: int, tmp: Path) -> dict:
    rows, cols, values, shape, test = _table()
    keep = ~test
    shard = shard_observations((rows[keep], cols[keep], values[keep], shape), bounds=[0, 140, 300])
    comm = Comm.current()
    train, val, terms = ratings_shard(shard, seed=1, comm=comm)
    est = make_estimator(
        "compressed", rank=10, init="spectral", solver="gd", init_scale=0.1, lr=0.3,
        max_iter=2000, tol=1e-4, check_every=5, n_iter_no_change=8, weight_decay=0.01,
        random_state=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = fit(est, train, validation=val, comm=comm)
    model.ratings = terms
    model.save(tmp / "model", comm)
    return {"history": model.history, "stop": model.stop, "n_iter": model.n_iter}


@pytest.mark.slow  # spawns two ranks
def test_two_ranks_agree_on_the_validation_stop(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = run_world(2, tmp_path, _ratings_worker, timeout=120.0)
    a, b = out
    assert a["stop"] == b["stop"] == "early_stopping"
    assert a["n_iter"] == b["n_iter"]
    assert np.array_equal(a["history"]["val_rmse"], b["history"]["val_rmse"])
    model = load_model(tmp_path / "model")
    best = a["history"]["val_rmse"].idxmin()
    assert model.network_.n_iter_ == a["n_iter"] > a["history"]["iteration"][best]
    rows, cols, values, _, test = _table()
    pred = model.predict_entries(rows[test], cols[test])
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    ours, ref = _rmse(pred, values[test]), _reference_rmse(rows, cols, values, test)
    assert ours < ref + 0.03, (ours, ref)


@pytest.mark.slow
@pytest.mark.skipif(not ML100K.exists(), reason="MovieLens-100K is not available")
def test_movielens_ratings_fit_within_003_of_ratings_completion(tmp_path):
    d = pd.read_csv(ML100K, sep="\t", header=None, names=["user", "item", "rating", "ts"])
    test = np.random.RandomState(0).rand(len(d)) < 0.2
    _write(tmp_path / "train.csv", d.user[~test], d.item[~test], d.rating[~test])
    t0 = time.perf_counter()
    args = ["fit", "--data", str(tmp_path / "train.csv"), "--index-base", "1", "--rank", "10"]
    assert main([*args, "--ratings", "--output", str(tmp_path / "m")]) == 0
    assert time.perf_counter() - t0 < 120
    model = load_model(tmp_path / "m")
    te = d[test]
    pred = model.predict_entries(te.user.values - 1, te.item.values - 1)
    assert pred.min() >= 1.0 and pred.max() <= 5.0
    ref = RatingsCompletion(random_state=0).fit(
        d[~test][["user", "item", "rating"]]
    ).predict(te[["user", "item"]])  # fmt: skip
    ours = _rmse(pred, te.rating.values)
    assert ours < _rmse(ref, te.rating.values) + 0.03

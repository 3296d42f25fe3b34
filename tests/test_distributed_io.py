"""Row partitioning, shard readers and the sharded randomized SVD, in one process."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from deepmc.distributed import Comm, balanced_row_ranges, read_shard, shard_observations
from deepmc.distributed._io import TripletFile, count_rows, read_rows
from deepmc.distributed._linalg import sharded_top_singular, tsqr
from deepmc.init import top_singular


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_balanced_row_ranges_are_contiguous_and_balanced(world):
    rng = np.random.default_rng(world)
    counts = rng.integers(0, 20, size=50)
    b = balanced_row_ranges(counts, world)
    assert b[0] == 0 and b[-1] == 50 and np.all(np.diff(b) >= 0) and len(b) == world + 1
    per_rank = [counts[b[p] : b[p + 1]].sum() for p in range(world)]
    assert sum(per_rank) == counts.sum()
    assert max(per_rank) <= counts.sum() / world + counts.max()


def test_balanced_row_ranges_give_empty_ranks_when_rows_are_few():
    b = balanced_row_ranges([0, 9, 0], 4)
    per_rank = [int(np.sum([0, 9, 0][b[p] : b[p + 1]])) for p in range(4)]
    assert sorted(per_rank) == [0, 0, 0, 9]
    with pytest.raises(ValueError, match="world_size"):
        balanced_row_ranges([1, 2], 0)


def _triplets(m=30, n=20, frac=0.4, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((m, n)) < frac
    r, c = np.nonzero(mask)
    return r, c, rng.standard_normal(r.size)


@pytest.mark.parametrize("layout", ["csv-header", "csv-plain", "tsv-1based", "parquet"])
def test_read_rows_keeps_only_the_range(tmp_path, layout):
    r, c, v = _triplets()
    df = pd.DataFrame({"user": r, "item": c, "rating": v, "extra": 7})
    base = 1 if layout == "tsv-1based" else 0
    if layout == "parquet":
        pytest.importorskip("pyarrow")
        path = tmp_path / "t.parquet"
        df.to_parquet(path, row_group_size=50)
    elif layout == "tsv-1based":
        path = tmp_path / "t.tsv"
        df.assign(user=r + 1, item=c + 1).to_csv(path, sep="\t", header=False, index=False)
    else:
        path = tmp_path / "t.csv"
        df.to_csv(path, header=layout == "csv-header", index=False)
    source = TripletFile(path, index_base=base)
    np.testing.assert_array_equal(count_rows(source), np.bincount(r))
    rows, cols, vals = read_rows(source, 10, 17)
    keep = (r >= 10) & (r < 17)
    np.testing.assert_array_equal(rows, r[keep])
    np.testing.assert_array_equal(cols, c[keep])
    np.testing.assert_allclose(vals, v[keep], rtol=1e-15)


def test_read_shard_and_shard_observations_agree_in_one_process(tmp_path):
    r, c, v = _triplets()
    path = tmp_path / "t.csv"
    pd.DataFrame({"r": r, "c": c, "v": v}).to_csv(path, index=False)
    shard = read_shard(path)
    assert shard.shape == (30, 20) and shard.partition.n_observed == r.size
    same = shard_observations((r, c, v, (30, 20)))
    np.testing.assert_array_equal(shard.observations.rows, same.observations.rows)
    np.testing.assert_allclose(shard.observations.values, same.observations.values, rtol=1e-15)


def test_reader_errors_name_the_file_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,c\nx,1,2.0\n")
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: the row column must hold integer"):
        count_rows(TripletFile(path))
    path.write_text("0,1\n")
    with pytest.raises(ValueError, match="at least three columns"):
        count_rows(TripletFile(path))
    path.write_text("1,1,2.0\n")
    with pytest.raises(ValueError, match="below the first index 2"):
        count_rows(TripletFile(path, index_base=2))
    path.write_text("r,c,v\n1,1,2.0\n")
    with pytest.raises(ValueError, match="'rating' is not a column"):
        count_rows(TripletFile(path, columns=["r", "c", "rating"]))


def test_tsqr_in_one_process_is_a_thin_qr():
    Y = np.random.default_rng(0).standard_normal((9, 4))
    Q, R = tsqr(Y, Comm())
    np.testing.assert_allclose(Q @ R, Y, atol=1e-13)
    np.testing.assert_allclose(Q.T @ Q, np.eye(4), atol=1e-13)


@pytest.mark.parametrize("shape", [(60, 40), (40, 60), (150, 120), (120, 150)])
def test_sharded_svd_equals_the_single_process_svd(shape):
    """Small: both exact (dense); large: same seed, start and power iterations."""
    m, n = shape
    r, c, v = _triplets(m, n, 0.3, seed=1)
    gen = torch.Generator().manual_seed(5)
    u, s, vv = top_singular(r, c, v, shape, 4, generator=gen)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch.Generator().manual_seed(5)))
    M = sp.csr_matrix((v, (r, c)), shape=shape)
    u2, s2, v2 = sharded_top_singular(M, shape, 0, 4, seed=seed, comm=Comm())
    np.testing.assert_allclose(s2, s, rtol=1e-12)
    np.testing.assert_allclose(u2, u, atol=1e-12)
    np.testing.assert_allclose(v2, vv, atol=1e-12)


def _small():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 24))
    r, c = np.nonzero(rng.random(X.shape) < 0.5)
    return r, c, X[r, c], X.shape


def test_fit_in_a_world_of_one_is_the_estimators_fit(tmp_path):
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed import fit, load_model

    est = CompressedDeepMatrixCompletion(
        rank=2, max_iter=60, check_every=20, solver="gd", random_state=1
    )
    with pytest.warns(ConvergenceWarning):
        ref = clone(est).fit(_small())
    with pytest.warns(ConvergenceWarning):
        model = fit(est, shard_observations(_small()))
    np.testing.assert_allclose(model.history["loss"], ref.history_["loss"], rtol=1e-12)
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_allclose(loaded.U_, ref.U_, rtol=1e-12, atol=1e-14)
    r, c, _, _ = _small()
    np.testing.assert_allclose(loaded.predict_entries(r, c), ref.predict_entries(r, c), rtol=1e-10)
    assert loaded.n_iter_ == ref.n_iter_ == 60
    (tmp_path / "model" / "COMPLETE").unlink()
    with pytest.raises(ValueError, match="no complete model"):
        load_model(tmp_path / "model")


def _held_out_of_small():
    """The entries of :func:`_small`'s matrix that it does not observe."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 24))
    r, c = np.nonzero(~(rng.random(X.shape) < 0.5))
    return r, c, X[r, c], X.shape


def _held_out_of_small_shard():
    return shard_observations(_held_out_of_small())


def test_eval_set_in_a_world_of_one_is_the_estimators_eval_set():
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed import fit

    est = CompressedDeepMatrixCompletion(
        rank=2, max_iter=60, check_every=20, solver="gd", random_state=1
    )
    with pytest.warns(ConvergenceWarning):
        ref = clone(est).fit(_small(), eval_set=_held_out_of_small())
    with pytest.warns(ConvergenceWarning):
        plain = fit(est, shard_observations(_small()))
    with pytest.warns(ConvergenceWarning):
        model = fit(est, shard_observations(_small()), eval_set=_held_out_of_small_shard())
    for col in ("eval_error", "eval_rmse"):
        np.testing.assert_allclose(model.history[col], ref.history_[col], rtol=1e-10)
    # it only watches the fit
    pd.testing.assert_frame_equal(
        model.history[plain.history.columns].drop(columns="seconds"),
        plain.history.drop(columns="seconds"),
    )
    r, c, v, _ = _held_out_of_small()
    other = shard_observations((r, c, v, (31, 24)))  # entries of another matrix
    with pytest.raises(ValueError, match="eval_set: expected on every rank"):
        fit(est, shard_observations(_small()), eval_set=other)


def test_noise_cut_event_of_a_world_of_one_is_the_estimators():
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed import fit

    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 2)) @ rng.standard_normal((2, 50))
    X += rng.standard_normal(X.shape)  # noise as large as the signal's entries
    r, c = np.nonzero(rng.random(X.shape) < 0.5)
    est = CompressedDeepMatrixCompletion(rank=5, max_iter=3000, random_state=0)
    ref = clone(est).fit((r, c, X[r, c], X.shape))
    model = fit(est, shard_observations((r, c, X[r, c], X.shape)))
    events = [e for e in model.history["event"] if e]
    assert any(e.startswith("noise level") for e in events), events  # in data units
    assert events == [e for e in ref.history_["event"] if e]


def test_distributed_fit_refuses_what_it_cannot_do():
    from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion
    from deepmc.distributed import fit

    shard = shard_observations(_small())
    with pytest.raises(ValueError, match="stays single-process"):
        fit(DeepMatrixCompletion(), shard)
    with pytest.raises(ValueError, match="early_stopping"):
        fit(CompressedDeepMatrixCompletion(rank=2, early_stopping=True), shard)
    with pytest.raises(TypeError, match="CompressedDeepMatrixCompletion or a narrow"):
        fit(object(), shard)
    with pytest.raises(ValueError, match="bounds"):
        shard_observations(_small(), bounds=[0, 10])


def test_checkpoint_store_keeps_the_last_complete_sets_of_its_run(tmp_path):
    from deepmc.distributed._checkpoint import COMPLETE, CheckpointStore

    store = CheckpointStore(tmp_path, Comm(), keep=2, fingerprint="run-a")
    for step in (25, 50, 75):
        store.save(step, {"iteration": step})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == [
        "step-0000000050",
        "step-0000000075",
    ]
    assert store.latest() == 75 and store.load(75) == {"iteration": 75}
    (tmp_path / "step-0000000075" / COMPLETE).unlink()  # a set whose marker never came
    assert store.latest() == 50
    other = CheckpointStore(tmp_path, Comm(), fingerprint="run-b")  # another run's files
    assert other.latest() is None
    assert not list(tmp_path.rglob(".*.tmp-*"))


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_resume_restores_the_optimizer_state(tmp_path, optimizer):
    """A run resumed from a checkpoint takes the uninterrupted run's steps, moments included."""
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed import fit

    est = CompressedDeepMatrixCompletion(
        rank=2, optimizer=optimizer, max_iter=200, check_every=25, tol=0.0, random_state=1,
        dtype="float64",
    )  # fmt: skip
    shard = shard_observations(_small())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter on purpose
        full = fit(est, shard)
        fit(clone(est).set_params(max_iter=100), shard, checkpoint_dir=tmp_path)  # ckpt at 75
        resumed = fit(est, shard, checkpoint_dir=tmp_path)
    pd.testing.assert_frame_equal(
        resumed.history.drop(columns="seconds"), full.history.drop(columns="seconds")
    )
    for a, b in zip(resumed.params["factors"], full.params["factors"], strict=True):
        np.testing.assert_array_equal(a, b)

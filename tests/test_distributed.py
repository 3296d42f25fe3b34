"""Distributed fits on spawned gloo ranks (float64, one thread each) against one process.

Each world size is one spawn running several fits, to keep process start-up (the bulk
of the time on a 2-core machine) to a minimum.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _dist_workers import run_world
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from deepmc.__main__ import main
from deepmc.distributed import (
    Comm,
    fit,
    load_model,
    shard_observations,
)
from deepmc.distributed._checkpoint import COMPLETE

# Every test here starts process groups (a torch import per rank): seconds each.
pytestmark = pytest.mark.slow

M, N = 40, 30
UNOBSERVED_ROWS = slice(12, 17)  # not among the first 2r̂ rows (see _problem)



def _fitted_matrix(est, shape):
    """The fitted network's whole ``X̂`` (``transform`` folds rows in instead)."""
    rows, cols = np.indices(shape)
    return est.predict_entries(rows.ravel(), cols.ravel()).reshape(shape)

def _problem():
    """A rank-2 40×30 matrix, 40 % observed, rows 12–16 without any observation.

    The empty rows sit away from the first ``2r̂`` rows: there, the QR inside the
    parsimony initialisation would meet an exactly singular leading block, whose sign
    convention is decided by rounding noise and could flip a column of ``U`` and ``V``
    (the same function, another gauge) between two summation orders.
    """
    rng = np.random.default_rng(0)
    X = rng.standard_normal((M, 2)) @ rng.standard_normal((2, N))
    mask = rng.random((M, N)) < 0.4
    mask[UNOBSERVED_ROWS] = False
    r, c = np.nonzero(mask)
    return r, c, X[r, c], (M, N)


def _estimators() -> dict:
    kw = dict(max_iter=200, check_every=25, tol=0.0, solver="gd", random_state=3, device="cpu")
    kw["dtype"] = "float64"
    return {
        "compressed": CompressedDeepMatrixCompletion(rank=3, **kw),
        "spectral": CompressedDeepMatrixCompletion(rank=3, init="spectral", **kw),
        "narrow": DeepMatrixCompletion(width=6, **kw),
    }


#: Row bounds per world size and network: uneven ranges, a rank whose rows have no
#: observation (rows 12–16) and, for the spectral fit, a rank with an empty range.
BOUNDS = {
    2: {"compressed": [0, 17, 40], "spectral": [0, 0, 40], "narrow": [0, 21, 40]},
    3: {"compressed": [0, 12, 17, 40], "spectral": [0, 0, 23, 40], "narrow": [0, 12, 17, 40]},
}


def _fitted(model) -> dict:
    est = model.gather()
    return {k: v for k, v in vars(est).items() if k.endswith("_") and k != "history_"}


def _equivalence_worker(rank: int, world: int, tmp: Path) -> dict:
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter is reached on purpose
        for name, est in _estimators().items():
            shard = shard_observations(_problem(), bounds=BOUNDS[world][name])
            model = fit(est, shard)
            out[name] = (model.history, _fitted(model), model.partition.bounds)
        if world == 2:  # resume: stop at 100 (checkpoint at 50), rerun to 200
            est = _estimators()["compressed"]
            shard = shard_observations(_problem(), bounds=BOUNDS[world]["compressed"])
            ckpt = tmp / "ckpt"
            fit(est.set_params(max_iter=100), shard, checkpoint_dir=ckpt, checkpoint_every=50)
            Comm.current().barrier()
            steps = sorted(p.name for p in ckpt.glob("step-*") if (p / COMPLETE).exists())
            resumed = fit(est.set_params(max_iter=200), shard, checkpoint_dir=ckpt)
            out["resumed"] = (resumed.history, _fitted(resumed), steps)
    return out


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-300))


def _assert_weights_close(est, fitted: dict, tol: float, name: str) -> None:
    """Every weight of the single-process ``est`` within ``tol`` (relative) of ``fitted``."""
    for key in ("U_", "V_", "cores_", "weights_"):
        if hasattr(est, key):
            ref, got = getattr(est, key), fitted[key]
            pairs = zip(ref, got, strict=True) if isinstance(ref, list) else [(ref, got)]
            for a, b in pairs:
                assert _rel(a, b) < tol, (name, key)


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_fit_equals_single_process_fit(world, tmp_path, one_thread):
    results = run_world(world, tmp_path, _equivalence_worker)
    empty_ranks = []
    for name, est in _estimators().items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(_problem())
        hist, fitted, bounds = results[0][name]
        counts = np.bincount(_problem()[0], minlength=M)
        per_rank = [int(counts[bounds[p] : bounds[p + 1]].sum()) for p in range(world)]
        assert len(set(per_rank)) == world  # uneven
        empty_ranks.append(0 in per_rank)
        assert list(hist["iteration"]) == list(est.history_["iteration"])
        assert hist["iteration"].iloc[-1] == 200
        for col in ("loss", "residual"):
            assert _rel(est.history_[col], hist[col]) < 1e-10, (name, col)
        change = est.history_["change"].to_numpy()[1:]  # the first check has no baseline
        assert _rel(change, hist["change"].to_numpy()[1:]) < 1e-10
        _assert_weights_close(est, fitted, 1e-10, name)
        assert fitted["scale_"] == pytest.approx(est.scale_, rel=1e-12)
        # every rank holds the same history (seconds aside)
        for other in results[1:]:
            pd.testing.assert_frame_equal(
                other[name][0].drop(columns="seconds"), hist.drop(columns="seconds")
            )
    assert any(empty_ranks)  # a rank without observations took part
    if world == 2:
        hist, fitted, steps = results[0]["resumed"]
        full_hist, full_fitted, _ = results[0]["compressed"]
        assert steps == ["step-0000000050"]  # the stop at 100 writes no checkpoint
        pd.testing.assert_frame_equal(
            hist.drop(columns="seconds"), full_hist.drop(columns="seconds")
        )
        for key in ("U_", "V_"):
            np.testing.assert_array_equal(fitted[key], full_fitted[key])
        for a, b in zip(fitted["cores_"], full_fitted["cores_"], strict=True):
            np.testing.assert_array_equal(a, b)


def _unobserved_of_problem():
    """The entries of :func:`_problem`'s matrix that it does not observe."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((M, 2)) @ rng.standard_normal((2, N))
    mask = rng.random((M, N)) < 0.4
    mask[UNOBSERVED_ROWS] = False
    r, c = np.nonzero(~mask)
    return r, c, X[r, c], (M, N)


def _eval_worker(rank: int, world: int, tmp: Path) -> pd.DataFrame:
    bounds = BOUNDS[world]["compressed"]
    shard = shard_observations(_problem(), bounds=bounds)
    held_out = shard_observations(_unobserved_of_problem(), bounds=bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter is reached on purpose
        return fit(_estimators()["compressed"], shard, eval_set=held_out).history


def test_distributed_eval_set_is_the_single_process_eval_set(tmp_path, one_thread):
    results = run_world(2, tmp_path, _eval_worker)
    est = _estimators()["compressed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(_problem(), eval_set=_unobserved_of_problem())
    for hist in results:
        assert list(hist["iteration"]) == list(est.history_["iteration"])
        for col in ("eval_error", "eval_rmse", "residual"):
            assert _rel(est.history_[col], hist[col]) < 1e-10, col
    pd.testing.assert_frame_equal(
        results[0].drop(columns=["seconds", "eval_seconds"]),
        results[1].drop(columns=["seconds", "eval_seconds"]),
    )


def _die_after_checkpoint(marker: Path, death: Path) -> None:
    """Kill this process abruptly (no clean-up) once ``marker`` exists."""
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.005)
    death.write_text(repr(time.time()))
    os._exit(0)


def _killed_worker(rank: int, world: int, tmp: Path) -> dict:
    """Rank 1 dies mid-fit, after the checkpoint of step 50; rank 0 must fail clearly."""
    args = ["fit", "--data", str(tmp / "small.csv"), "--rank", "3", "--output", str(tmp / "model")]
    args += ["--max-iter", "1000000", "--tol", "0", "--timeout", "10", "--dtype", "float64"]
    if rank == 1:
        marker = tmp / "model" / "checkpoints" / "step-0000000050" / COMPLETE
        watcher = threading.Thread(
            target=_die_after_checkpoint, args=(marker, tmp / "death"), daemon=True
        )
        watcher.start()
        main(args)
        return {}
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(args)
    return {"status": status, "error": err.getvalue(), "at": time.time()}


def _write_small_csv(path: Path) -> None:
    r, c, v, _ = _problem()
    order = np.random.default_rng(1).permutation(r.size)  # a file in no particular order
    pd.DataFrame({"user": r[order], "item": c[order], "rating": v[order]}).to_csv(path, index=False)


def test_a_killed_rank_fails_the_others_clearly_and_leaves_no_complete_model(tmp_path):
    _write_small_csv(tmp_path / "small.csv")
    model = tmp_path / "model"
    result = run_world(2, tmp_path, _killed_worker, timeout=10.0)[0]
    assert result["status"] == 1  # a failed job, reported on one line
    assert len(result["error"].strip().splitlines()) == 1
    assert "rank 0 of 2" in result["error"] and "died or stalled" in result["error"]
    died_at = float((tmp_path / "death").read_text())
    assert result["at"] - died_at < 10 + 5  # within the configured timeout
    assert not (model / COMPLETE).exists()
    with pytest.raises(ValueError, match="no complete model"):
        load_model(model)
    marked = 0
    for step in (model / "checkpoints").glob("step-*"):
        # a file under its final name is whole (only temporary names can be torn)
        for f in step.glob("rank-*.pt"):
            assert torch.load(f, weights_only=True)["iteration"] == int(step.name[5:])
        if (step / COMPLETE).exists():  # and a marked checkpoint has every rank's file
            marked += 1
            assert len(list(step.glob("rank-*.pt"))) == 2
    assert marked >= 1


def test_cli_under_torchrun_matches_the_single_process_cli(tmp_path):
    data = tmp_path / "small.csv"
    _write_small_csv(data)
    common = ["--data", str(data), "--rank", "3", "--max-iter", "200", "--dtype", "float64"]
    common += ["--seed", "3", "--init-scale", "0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "deepmc", "fit", *common, "--output", str(tmp_path / "two")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("deepmc fit:") == 1  # only rank 0 prints
    assert "2 process(es)" in proc.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", *common, "--output", str(tmp_path / "one")]) == 0
    two, one = load_model(tmp_path / "two"), load_model(tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "two").glob("model-*/rows-*")) == [
        "rows-00000-of-00002.npy",
        "rows-00001-of-00002.npy",
    ]
    assert two.n_iter_ == one.n_iter_ == 200
    assert _rel(one.history_["loss"], two.history_["loss"]) < 1e-10
    assert _rel(one.U_, two.U_) < 1e-10 and _rel(one.V_, two.V_) < 1e-10
    r, c, _, _ = _problem()
    assert _rel(one.predict_entries(r, c), two.predict_entries(r, c)) < 1e-10


# ------------------------------------------------------------- the plateau-aware stop rule


def _plateau_problem():
    """A fully observed rank-2 matrix with singular values (1, 0.3): plain GD from small
    initialisation settles on the saddle before the second direction (about 29 % error)."""
    from deepmc.datasets import make_problem

    problem = make_problem(
        shape=(60, 50), rank=2, fraction=1.0, spectrum=[1.0, 0.3], random_state=0
    )
    tr = problem.train
    return tr.rows, tr.cols, tr.values, tr.shape


def _plateau_estimators() -> dict:
    kw = dict(solver="gd", random_state=0, device="cpu", dtype="float64")
    return {
        "compressed": CompressedDeepMatrixCompletion(rank=2, max_iter=20_000, **kw),
        "narrow": DeepMatrixCompletion(width=4, max_iter=20_000, **kw),
        "short": CompressedDeepMatrixCompletion(rank=2, max_iter=700, **kw),
    }


#: A rank with an empty row range takes part in every collective of the analysis.
PLATEAU_BOUNDS = [0, 0, 23, 60]


def _sharded_escape(rows_split, problem, keep: int, dense: bool):
    """The escaping direction of a random residual on Ω, computed on this rank's rows."""
    from deepmc._spectral import LOCAL, escaping_direction

    r, c, _, (m, n) = problem
    rng = np.random.default_rng(5)
    R = np.zeros((m, n))
    R[r, c] = rng.standard_normal(r.size)
    P = np.linalg.qr(rng.standard_normal((m, keep)))[0]
    Q = np.linalg.qr(rng.standard_normal((n, keep)))[0]
    lo, hi = rows_split
    R_loc, P_loc = torch.from_numpy(R[lo:hi]), torch.from_numpy(P[lo:hi])
    Q_t = torch.from_numpy(Q)
    fro2 = float(np.sum(R * R))
    gen = torch.Generator().manual_seed(0)
    if hi - lo == m:  # one process: every row here
        rows = LOCAL
    else:
        from deepmc.distributed._linalg import ShardedRows

        rows = ShardedRows(Comm.current())
    left, values, right, bulk = escaping_direction(
        lambda x: R_loc @ x, lambda y: R_loc.T @ y, fro2, P_loc, Q_t, (m, n),
        n_vectors=3, generator=gen, dense=R_loc if dense else None, rows=rows,
    )  # fmt: skip
    return left.numpy(), values.numpy(), right.numpy(), bulk


def _plateau_worker(rank: int, world: int, tmp: Path) -> dict:
    out = {}
    problem = _plateau_problem()
    shard = shard_observations(problem, bounds=PLATEAU_BOUNDS)
    for name, est in _plateau_estimators().items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fit(est, shard)
        messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
        out[name] = (model.history, model.stop, messages, model.gather())
    split = (PLATEAU_BOUNDS[rank], PLATEAU_BOUNDS[rank + 1])
    out["escape"] = {
        (keep, dense): _sharded_escape(split, problem, keep, dense)
        for keep in (0, 2)
        for dense in (False, True)
    }
    return out


def test_distributed_stop_rule_tells_the_plateau_from_convergence(tmp_path, one_thread):
    """The ranks run the single-process plateau-aware rule on their rows: the same stops."""
    results = run_world(3, tmp_path, _plateau_worker)
    problem = _plateau_problem()
    r, c, v, shape = problem
    X = np.zeros(shape)
    X[r, c] = v
    for name, est in _plateau_estimators().items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(problem)
        ref_messages = [str(w.message) for w in caught if w.category is ConvergenceWarning]
        hist, stop, messages, gathered = results[0][name]
        assert list(hist["iteration"]) == list(est.history_["iteration"]), name
        assert list(hist["event"]) == list(est.history_["event"]), name
        assert _rel(est.history_["loss"], hist["loss"]) < 1e-8, name
        for other in results[1:]:  # every rank took the same decisions
            assert list(other[name][0]["event"]) == list(hist["event"])
            assert other[name][1] == stop
        err = np.linalg.norm(_fitted_matrix(gathered, X.shape) - X) / np.linalg.norm(X)
        if name == "short":  # settled on the saddle: a warning, not "converged"
            assert stop == "max_iter" and gathered.n_iter_ == 700
            assert (hist["change"] <= est.tol).any()
            assert len(messages) == 1 and "plateau between learning directions" in messages[0]
            assert messages == ref_messages
            assert err > 0.2
        else:  # past the saddle (the old rule stopped there at 29 % error) to the solution
            assert stop == "converged" and not messages
            assert err < 1e-4, (name, err)
    # the analysis itself: the sharded escaping direction is the single-process one
    for (keep, dense), ref in (
        (key, _sharded_escape((0, shape[0]), problem, *key)) for key in results[0]["escape"]
    ):
        left = np.concatenate([res["escape"][(keep, dense)][0] for res in results])
        values, right, bulk = results[0]["escape"][(keep, dense)][1:]
        np.testing.assert_allclose(values, ref[1], rtol=1e-8)
        assert bulk == pytest.approx(ref[3], rel=1e-10)
        signs = np.sign(np.sum(left * ref[0], axis=0))  # singular vectors up to sign
        np.testing.assert_allclose(left * signs, ref[0], atol=1e-8)
        np.testing.assert_allclose(right * signs, ref[2], atol=1e-8)


# ------------------------------------------------------- prune and polish (solver="auto")


def _auto_estimators() -> dict:
    kw = dict(random_state=3, device="cpu", dtype="float64")  # solver="auto", the default
    return {
        "compressed": (CompressedDeepMatrixCompletion(rank=3, **kw), _problem),
        "narrow": (DeepMatrixCompletion(width=4, **kw), _plateau_problem),
    }


def _auto_worker(rank: int, world: int, tmp: Path) -> dict:
    out = {}
    bounds = {"compressed": [0, 17, 40], "narrow": [0, 0, 60]}
    for name, (est, problem) in _auto_estimators().items():
        shard = shard_observations(problem(), bounds=bounds[name])
        model = fit(est, shard)
        out[name] = (model.history, model.stop, _fitted(model))
    # interrupted after the heavy-ball steps began (checkpoint at 200 with a velocity),
    # then resumed to the end
    est, problem = _auto_estimators()["compressed"]
    shard = shard_observations(problem(), bounds=bounds["compressed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter on purpose
        fit(clone(est).set_params(max_iter=225), shard, checkpoint_dir=tmp / "ckpt",
            checkpoint_every=25)  # fmt: skip
    Comm.current().barrier()
    resumed = fit(est, shard, checkpoint_dir=tmp / "ckpt")
    out["resumed"] = (resumed.history, resumed.stop, _fitted(resumed))
    return out


def test_distributed_default_fit_prunes_and_polishes_as_one_process(tmp_path, one_thread):
    results = run_world(2, tmp_path, _auto_worker)
    for name, (est, problem) in _auto_estimators().items():
        est.fit(problem())
        hist, stop, fitted = results[0][name]
        events = [e for e in hist["event"] if e]
        assert any(e.startswith("pruned to rank 2") for e in events), events
        assert list(hist["event"]) == list(est.history_["event"]), name
        assert list(hist["iteration"]) == list(est.history_["iteration"])
        assert stop == "converged"
        assert _rel(est.history_["loss"], hist["loss"]) < 1e-8, name
        _assert_weights_close(est, fitted, 1e-8, name)
        assert list(results[1][name][0]["event"]) == list(hist["event"])
    # the resumed run takes the uninterrupted run's steps, heavy-ball velocity included
    hist, stop, fitted = results[0]["resumed"]
    full_hist, full_stop, full_fitted = results[0]["compressed"]
    assert any("heavy-ball" in e for e in full_hist["event"][full_hist["iteration"] <= 200])
    assert stop == full_stop == "converged"
    pd.testing.assert_frame_equal(hist.drop(columns="seconds"), full_hist.drop(columns="seconds"))
    for key in ("U_", "V_"):
        np.testing.assert_array_equal(fitted[key], full_fitted[key])

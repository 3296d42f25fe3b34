"""Fault injection on ``deepmc fit``: signals, damaged and planted files, failing refits.

Every test runs the command line in this process (or on two spawned gloo ranks with a
``file://`` rendezvous) on a 40×30 rank-2 matrix, and checks what a user relies on: a
stopped fit exits non-zero and never leaves a model marked complete, a checkpoint is
resumed only when it is intact and of the same run, the previous model survives any
failed refit, and rerunning the command resumes where the fit stopped.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _dist_workers import run_world

from deepmc.__main__ import main
from deepmc.distributed import load_model
from deepmc.distributed._checkpoint import COMPLETE

M, N = 40, 30


def _write_csv(path: Path, scale: float = 1.0, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((M, 2)) @ rng.standard_normal((2, N))
    mask = rng.random((M, N)) < 0.5
    r, c = np.nonzero(mask)
    pd.DataFrame({"user": r, "item": c, "rating": scale * X[r, c]}).to_csv(path, index=False)
    return path


def _args(data: Path, output: Path, max_iter: int, *extra: str) -> list[str]:
    return [
        "fit", "--data", str(data), "--rank", "3", "--output", str(output), "--max-iter",
        str(max_iter), "--tol", "0", "--dtype", "float64", "--seed", "1", "--solver", "gd",
        "--init-scale", "0.1",
        *extra,
    ]  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str]:
    """``deepmc fit``'s exit status and stderr (warnings recorded, not shown)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main(argv)
    return status, err.getvalue()


def _steps(ckpt: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in ckpt.glob("step-*") if (p / COMPLETE).exists())


def _same_fit(a, b, rtol: float = 0.0) -> None:
    """The same history and factors: bit for bit, or within ``rtol`` (another order of
    summation, across ranks)."""
    pd.testing.assert_frame_equal(
        a.history_.drop(columns="seconds"), b.history_.drop(columns="seconds"),
        check_exact=rtol == 0, rtol=max(rtol, 1e-300),
    )  # fmt: skip
    np.testing.assert_allclose(a.U_, b.U_, rtol=rtol, atol=0)
    np.testing.assert_allclose(a.V_, b.V_, rtol=rtol, atol=0)


def _signal_when(path: Path, signum: int, *, delay: float = 0.0) -> threading.Thread:
    """Send ``signum`` to this process once ``path`` exists (a thread; the handler runs in
    the main thread, between two steps of the fit)."""

    def wait() -> None:
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 400-iteration fit, and its data file."""
    tmp = tmp_path_factory.mktemp("reference")
    data = _write_csv(tmp / "data.csv")
    status, err = _run(_args(data, tmp / "model", 400, "--checkpoint-dir", "none"))
    assert status == 0, err
    return data, load_model(tmp / "model")


# ------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_with_a_checkpoint_and_no_model_and_rerunning_resumes(
    tmp_path, reference, signum, one_thread
):
    data, full = reference
    out = tmp_path / "model"
    marker = out / "checkpoints" / "step-0000000050" / COMPLETE
    thread = _signal_when(marker, signum)
    status, err = _run(_args(data, out, 10**6))
    thread.join()
    assert status == 128 + signum
    assert len(err.strip().splitlines()) == 1
    assert f"interrupted by {signal.Signals(signum).name}" in err and "resume" in err
    assert not (out / COMPLETE).exists()  # an unfinished model is never marked complete
    with pytest.raises(ValueError, match="no complete model"):
        load_model(out)
    stopped = _steps(out / "checkpoints")[-1]
    assert stopped >= 50 and f"iteration {stopped}" in err  # the last checkpoint: the stop
    # rerunning the same command (here with the reference's length) resumes from there
    status, err = _run(_args(data, out, 400))
    assert status == 0, err
    _same_fit(load_model(out), full)


# ----------------------------------------------------------- damaged and planted files


class _Payload:
    """Unpickling this runs ``Path(target).touch()``: what a planted checkpoint could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _checkpointed(tmp_path: Path, data: Path) -> Path:
    """A stopped fit with checkpoints at 250 and 300 kept (the stop at 350 writes none)."""
    out = tmp_path / "model"
    status, err = _run(_args(data, out, 350, "--checkpoint-every", "50"))
    assert status == 0, err
    assert _steps(out / "checkpoints") == [250, 300]
    (out / COMPLETE).unlink()  # as if the job had stopped after the checkpoint of 300
    return out


@pytest.mark.parametrize("damage", ["flipped byte", "planted pickle", "planted and marked"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(
    tmp_path, reference, damage, one_thread
):
    data, full = reference
    out = _checkpointed(tmp_path, data)
    newest = out / "checkpoints" / "step-0000000300"
    victim = newest / "rank-00000.pt"
    pwned = tmp_path / "pwned"
    if damage == "flipped byte":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        victim.write_bytes(bytes(raw))
    else:
        victim.write_bytes(pickle.dumps({"iteration": 300, "x": _Payload(pwned)}))
    if damage == "planted and marked":  # the checksum in the marker forged too
        import hashlib
        import json

        info = json.loads((newest / COMPLETE).read_text())
        info["files"]["rank-00000.pt"] = hashlib.sha256(victim.read_bytes()).hexdigest()
        (newest / COMPLETE).write_text(json.dumps(info))
    status, err = _run(_args(data, out, 400))
    assert status == 0, err
    messages = [line for line in err.splitlines() if str(newest) in line]
    assert len(messages) == 1 and str(victim) in messages[0], err
    assert "Resuming from the checkpoint of iteration 250" in messages[0]
    assert not pwned.exists()  # nothing in the file ran
    _same_fit(load_model(out), full)  # resumed from 250: the uninterrupted run's steps


def test_checkpoints_of_other_data_or_parameters_are_refused_unless_overwritten(
    tmp_path, reference, one_thread
):
    data, _ = reference
    out = _checkpointed(tmp_path, data)
    other = _write_csv(tmp_path / "other.csv", scale=1.5)  # same shape and count
    status, err = _run(_args(other, out, 400))
    assert status == 2 and "other data" in err and "step-0000000250" in err
    assert len(err.strip().splitlines()) == 1
    status, err = _run(_args(data, out, 400, "--lr", "0.05"))
    assert status == 2 and "lr=" in err
    status, err = _run(_args(other, out, 100, "--overwrite"))
    assert status == 0, err
    assert _steps(out / "checkpoints") == [50, 75]  # the other run's were discarded


# ------------------------------------------------------------------- failing refits


@pytest.fixture
def fitted(tmp_path, reference):
    data = reference[0]
    out = tmp_path / "model"
    status, err = _run(_args(data, out, 400, "--checkpoint-dir", "none"))
    assert status == 0, err
    return data, out


def _unchanged(out: Path, full) -> None:
    _same_fit(load_model(out), full)
    assert len(list(out.glob("model-*"))) <= 2  # the old one, and perhaps a failed new one


def test_a_failing_refit_leaves_the_previous_model_loadable(
    tmp_path, fitted, reference, monkeypatch, one_thread
):
    data, out = fitted
    full = reference[1]
    bad = tmp_path / "bad.csv"
    bad.write_text(data.read_text().replace("\n", "\n3,4,nan\n", 1))
    status, err = _run(_args(bad, out, 400, "--checkpoint-dir", "none"))
    assert status == 2 and "bad.csv: line 2: expected a finite number" in err
    _unchanged(out, full)
    status, err = _run(_args(tmp_path / "typo.csv", out, 400, "--checkpoint-dir", "none"))
    assert status == 2 and "typo.csv" in err
    _unchanged(out, full)
    other = _write_csv(tmp_path / "other.csv", seed=5)
    status, err = _run(_args(other, out, 400, "--checkpoint-dir", "none"))
    assert status == 2 and "--overwrite" in err
    _unchanged(out, full)

    # the disk fills while the new model is written: the switch never happens
    import deepmc.distributed._model_io as model_io

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_io, "_write_replicated", full_disk)
    status, err = _run(_args(data, out, 100, "--checkpoint-dir", "none"))
    assert status == 2 and "No space left" in err
    _unchanged(out, full)


def test_a_damaged_model_file_is_refused_by_name(fitted, reference):
    _, out = fitted
    rows = next(out.glob("model-*/rows-*.npy"))
    raw = bytearray(rows.read_bytes())
    raw[-1] ^= 0x01
    rows.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{rows.name}: its checksum does not match"):
        load_model(out)


# ------------------------------------------------------------- two ranks (gloo)


def _two_rank_worker(rank: int, world: int, tmp: Path, data: str) -> dict:
    """Rank 1 alone gets SIGTERM; then rank 1's newest checkpoint file is stale; then the
    command is rerun on both ranks to the end."""
    out = tmp / "model"
    argv = _args(Path(data), out, 10**6, "--timeout", "60")
    if rank == 1:
        _signal_when(out / "checkpoints" / "step-0000000100" / COMPLETE, signal.SIGTERM)
    status, err = _run(argv)
    torch.distributed.barrier()
    result = {"status": status, "error": err, "steps": _steps(out / "checkpoints")}
    newest = out / "checkpoints" / f"step-{result['steps'][-1]:010d}"
    if rank == 1:  # a file of another step under the newest name
        older = out / "checkpoints" / f"step-{result['steps'][-2]:010d}"
        (newest / "rank-00001.pt").write_bytes((older / "rank-00001.pt").read_bytes())
    torch.distributed.barrier()
    t0 = time.perf_counter()
    status, err = _run(_args(Path(data), out, 400, "--timeout", "60"))
    result.update(resumed=status, resume_error=err, seconds=time.perf_counter() - t0)
    return result


@pytest.mark.slow
def test_two_ranks_agree_on_a_signal_and_fall_back_together(tmp_path, reference):
    data, full = reference
    results = run_world(2, tmp_path, _two_rank_worker, str(data), timeout=60.0)
    for r in results:  # both stopped, at the same iteration, on one rank's signal
        assert r["status"] == 128 + signal.SIGTERM
        assert r["steps"] == results[0]["steps"]
    assert "interrupted by SIGTERM" in results[0]["error"]
    assert results[1]["error"] == ""  # rank 1's echo of the stop is left to rank 0
    assert all(r["resumed"] == 0 for r in results), results[1]["resume_error"]
    assert max(r["seconds"] for r in results) < 30  # nobody waited out the 60 s timeout
    stopped = results[0]["steps"][-1]
    fallback = f"Resuming from the checkpoint of iteration {results[0]['steps'][-2]} instead"
    assert f"rank 1 failed to read checkpoint {stopped}" in results[0]["resume_error"]
    assert fallback in results[0]["resume_error"]
    assert "rank-00001.pt: its checksum does not match" in results[1]["resume_error"]
    _same_fit(load_model(tmp_path / "model"), full, rtol=1e-9)

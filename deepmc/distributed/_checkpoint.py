"""Atomic files, per-rank checkpoints with a completion marker, and the saved model.

A file is written under a temporary name, flushed to disk (``fsync``) and renamed over
its final name (``os.replace`` is atomic on POSIX), so a reader sees the old file or the
new one, never a torn one. A set of files written by several ranks (a checkpoint, the
fitted model) counts only once its completion marker exists: every rank writes its
part, all meet at a barrier, then rank 0 writes the marker, last. A job killed at any
point leaves either a complete set or one without a marker, which is ignored on resume
and never mistaken for a finished model. The directories must be on a file system that
every rank sees (a shared one across nodes).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ._comm import Comm

__all__ = ["COMPLETE", "CheckpointStore", "atomic_write", "is_complete"]

#: Name of the completion marker of a checkpoint or model directory.
COMPLETE = "COMPLETE"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through ``write(fh)`` atomically: temporary file, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as JSON."""
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=1, default=str).encode()))


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a complete set (its completion marker exists)."""
    return (Path(directory) / COMPLETE).is_file()


def mark_complete(directory: Path, comm: Comm, info: dict) -> None:
    """Barrier, then rank 0 writes the completion marker (the last file of the set)."""
    comm.barrier()
    if comm.rank == 0:
        write_json(directory / COMPLETE, info)
    comm.barrier()


def unmark(directory: Path, comm: Comm) -> None:
    """Remove a completion marker before the set is rewritten (rank 0), then barrier."""
    if comm.rank == 0:
        marker = directory / COMPLETE
        if marker.exists():
            marker.unlink()
            _fsync_dir(directory)
    comm.barrier()


class CheckpointStore:
    """Checkpoints ``DIR/step-<iteration>/rank-<r>.pt``, each set valid once marked.

    Parameters
    ----------
    directory : str or os.PathLike
    comm : Comm
    keep : int, default=2
        Complete checkpoints kept; older ones are deleted after a new one is marked.
    fingerprint : str, default=""
        Identifies the run (hyper-parameters, data size, world size): only checkpoints
        with the same fingerprint are resumed from.
    """

    def __init__(
        self, directory: str | os.PathLike, comm: Comm, keep: int = 2, fingerprint: str = ""
    ) -> None:
        self.directory = Path(directory)
        self.comm = comm
        self.keep = max(1, int(keep))
        self.fingerprint = fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)

    def _step_dir(self, step: int) -> Path:
        return self.directory / f"step-{step:010d}"

    def _complete_steps(self) -> list[int]:
        steps = []
        for d in self.directory.glob("step-*"):
            if is_complete(d):
                info = json.loads((d / COMPLETE).read_text())
                if info.get("fingerprint") == self.fingerprint:
                    steps.append(int(d.name.split("-")[1]))
        return sorted(steps)

    def latest(self) -> int | None:
        """The last complete checkpoint's iteration, as seen by rank 0, on every rank."""
        step = -1
        if self.comm.rank == 0:
            steps = self._complete_steps()
            step = steps[-1] if steps else -1
        step = self.comm.max_int(step if self.comm.rank == 0 else -1)
        return None if step < 0 else step

    def save(self, step: int, state: dict) -> None:
        """Write this rank's ``state`` for ``step``; rank 0 marks the set and prunes."""
        d = self._step_dir(step)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / f"rank-{self.comm.rank:05d}.pt", lambda fh: torch.save(state, fh))
        mark_complete(d, self.comm, {"step": step, "fingerprint": self.fingerprint})
        if self.comm.rank == 0:
            for old in self._complete_steps()[: -self.keep]:
                old_dir = self._step_dir(old)
                (old_dir / COMPLETE).unlink()
                shutil.rmtree(old_dir, ignore_errors=True)

    def load(self, step: int) -> dict:
        """This rank's state of checkpoint ``step``."""
        path = self._step_dir(step) / f"rank-{self.comm.rank:05d}.pt"
        return torch.load(path, map_location="cpu", weights_only=False)

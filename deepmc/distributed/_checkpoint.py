"""Atomic files, checksummed per-rank checkpoints with a completion marker.

A file is written under a temporary name, flushed to disk (``fsync``) and renamed over
its final name (``os.replace`` is atomic on POSIX), so a reader sees the old file or the
new one, never a torn one. A set of files written by several ranks counts only once its
completion marker exists: every rank writes its part, the ranks exchange the SHA-256 of
what they wrote, then rank 0 writes the marker, last, with the checksums and the run's
fingerprint in it. A job killed at any point leaves either a complete set or one
without a marker, which is ignored.

Reading back, a file is data only: its checksum is verified against the marker before
it is parsed, and checkpoints are parsed with ``torch.load(weights_only=True)``, which
builds tensors and plain containers and never runs code from the file. A checkpoint
that fails on any rank (damaged, missing, planted) is reported with its file name, and
the ranks fall back together to the previous intact checkpoint. The directories must be
on a file system that every rank sees (a shared one across nodes).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ._comm import Comm
from ._fingerprint import describe_mismatch

__all__ = [
    "COMPLETE",
    "CheckpointError",
    "CheckpointStore",
    "CheckpointWarning",
    "PeerFailure",
    "agree",
    "atomic_write",
]

#: Name of the completion marker of a checkpoint or model directory.
COMPLETE = "COMPLETE"


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be used: damaged, planted, or of another run."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped in favour of an older intact one."""


class PeerFailure(RuntimeError):
    """Another rank failed a step that every rank takes together (its own message says why)."""


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


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> str:
    """Write ``path`` through ``write(fh)`` atomically: temporary file, fsync, rename.

    Returns
    -------
    str
        The SHA-256 of the bytes written (hexadecimal).
    """
    path = Path(path)
    buf = io.BytesIO()
    write(buf)
    payload = buf.getvalue()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return hashlib.sha256(payload).hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """Atomically write ``obj`` as JSON; its SHA-256."""
    text = json.dumps(obj, indent=1, default=str).encode()
    return atomic_write(path, lambda fh: fh.write(text))


def read_verified(path: Path, expected: str | None) -> bytes:
    """The bytes of ``path`` if their SHA-256 is ``expected``; else a :class:`CheckpointError`."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    if expected is None or hashlib.sha256(payload).hexdigest() != expected:
        raise CheckpointError(
            f"{path}: its checksum does not match the one recorded when it was written: the "
            "file was changed, damaged or put there by something else, and is not read."
        )
    return payload


def read_marker(directory: Path) -> dict | None:
    """The completion marker's content (``None`` without one; a damaged one raises)."""
    marker = directory / COMPLETE
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{marker}: not a completion marker written by deepmc.") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{marker}: not a completion marker written by deepmc.")
    return info


def gather_digests(comm: Comm, digest: str) -> list[str]:
    """Every rank's SHA-256 (hexadecimal), in rank order (a collective)."""
    t = torch.tensor([list(bytes.fromhex(digest))], dtype=torch.int64)
    return [bytes(b[0].tolist()).hex() for b in comm.gather_rows(t)]


def agree(comm: Comm, fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on every rank; if it raised on any rank, every rank raises (one all-reduce).

    The rank that failed raises its own exception; the others a :class:`PeerFailure`
    naming it, instead of waiting for it in the next collective until the timeout.
    """
    error: BaseException | None = None
    try:
        result = fn()
    except Exception as exc:  # re-raised below, on this rank and as a peer failure elsewhere
        error = exc
    if comm.distributed:
        flags = torch.zeros(comm.world_size, dtype=torch.float64)
        flags[comm.rank] = error is not None
        failed = [r for r, f in enumerate(comm.sum_(flags).tolist()) if f]
    else:
        failed = [0] if error is not None else []
    if error is not None:
        raise error
    if failed:
        raise PeerFailure(
            f"rank {failed[0]} failed {what} (its own message says why); this rank stops too."
        )
    return result


class CheckpointStore:
    """Checkpoints ``DIR/step-<iteration>/rank-<r>.pt``, each set valid once marked.

    Parameters
    ----------
    directory : str or os.PathLike
    comm : Comm
    keep : int, default=2
        Complete checkpoints kept; older ones are deleted after a new one is marked.
    fingerprint : dict
        Identifies the run (data, hyper-parameters, row split): only checkpoints with
        the same fingerprint are resumed from; others are an error (see
        :meth:`check_foreign`).
    """

    def __init__(
        self, directory: str | os.PathLike, comm: Comm, keep: int = 2, fingerprint: Any = None
    ) -> None:
        self.directory = Path(directory)
        self.comm = comm
        self.keep = max(1, int(keep))
        self.fingerprint = fingerprint
        agree(comm, lambda: self.directory.mkdir(parents=True, exist_ok=True), "to create it")

    def _step_dir(self, step: int) -> Path:
        return self.directory / f"step-{step:010d}"

    def _scan(self) -> tuple[list[int], list[tuple[Path, str]]]:
        """``(steps of this run, [(marker, why) of other runs' or damaged markers])``."""
        mine, foreign = [], []
        for d in sorted(self.directory.glob("step-*")):
            try:
                info = read_marker(d)
                step = int(d.name.split("-")[1])
            except (CheckpointError, ValueError) as exc:
                foreign.append((d / COMPLETE, str(exc)))
                continue
            if info is None:
                continue
            if info.get("fingerprint") == self.fingerprint:
                mine.append(step)
            else:
                foreign.append(
                    (d / COMPLETE, describe_mismatch(info.get("fingerprint"), self.fingerprint))
                )
        return sorted(mine), foreign

    def check_foreign(self, discard: bool = False) -> None:
        """Refuse (or, with ``discard``, delete) the complete checkpoints of another run.

        Raises
        ------
        CheckpointError
            On every rank, naming the first such checkpoint and what differs.
        """
        message = ""
        if self.comm.rank == 0:
            _, foreign = self._scan()
            if foreign and discard:
                for marker, _ in foreign:
                    marker.unlink(missing_ok=True)
                    shutil.rmtree(marker.parent, ignore_errors=True)
            elif foreign:
                marker, why = foreign[0]
                message = (
                    f"{marker.parent}: a checkpoint that this run cannot resume from: {why}. "
                    "Remove it, use another checkpoint directory, or pass --overwrite "
                    "(overwrite=True) to discard it."
                )
        if self.comm.max_int(1 if message else 0):
            if not message:  # rank 0 says which and why
                raise PeerFailure(f"rank 0 refused the checkpoints in {self.directory}.")
            raise CheckpointError(message)

    def _newest_before(self, limit: int | None) -> int | None:
        step = -1
        if self.comm.rank == 0:
            steps = [s for s in self._scan()[0] if limit is None or s < limit]
            step = steps[-1] if steps else -1
        step = self.comm.max_int(step if self.comm.rank == 0 else -1)
        return None if step < 0 else step

    def latest(self) -> int | None:
        """The last complete checkpoint's iteration, as seen by rank 0, on every rank."""
        return self._newest_before(None)

    def save(self, step: int, state: dict) -> Path:
        """Write this rank's ``state`` for ``step``; rank 0 marks the set and prunes.

        Returns
        -------
        Path
            The checkpoint's directory.
        """
        d = self._step_dir(step)
        d.mkdir(parents=True, exist_ok=True)
        digest = atomic_write(d / f"rank-{self.comm.rank:05d}.pt", lambda fh: torch.save(state, fh))
        digests = gather_digests(self.comm, digest)
        if self.comm.rank == 0:
            files = {f"rank-{r:05d}.pt": h for r, h in enumerate(digests)}
            write_json(
                d / COMPLETE, {"step": step, "fingerprint": self.fingerprint, "files": files}
            )
            for old in self._scan()[0][: -self.keep]:
                old_dir = self._step_dir(old)
                (old_dir / COMPLETE).unlink()
                shutil.rmtree(old_dir, ignore_errors=True)
        self.comm.barrier()
        return d

    def load(self, step: int) -> dict:
        """This rank's state of checkpoint ``step``, verified; a :class:`CheckpointError` if not."""
        d = self._step_dir(step)
        name = f"rank-{self.comm.rank:05d}.pt"
        info = read_marker(d) or {}
        payload = read_verified(d / name, (info.get("files") or {}).get(name))
        try:
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:  # an unpickling error of any kind: the file is not data
            why = (
                "it holds Python objects other than tensors and plain data, which are never "
                "loaded (nothing in it was run)"
                if isinstance(exc, pickle.UnpicklingError)
                else f"it cannot be parsed ({type(exc).__name__})"
            )
            raise CheckpointError(f"{d / name}: not a checkpoint of deepmc: {why}.") from None
        if not isinstance(state, dict) or state.get("iteration") != step:
            raise CheckpointError(f"{d / name}: not the checkpoint of iteration {step}.")
        return state

    def load_latest(self) -> tuple[int, dict] | None:
        """``(step, this rank's state)`` of the newest checkpoint intact on every rank.

        A checkpoint that fails on any rank is skipped with a :class:`CheckpointWarning`
        (the failing rank's names its file and why), and the ranks try the one before.

        Raises
        ------
        CheckpointError
            If complete checkpoints exist but none is intact on every rank.
        """
        step, failures = self._newest_before(None), []
        while step is not None:
            what = f"to read checkpoint {step}"
            try:
                return step, agree(self.comm, lambda s=step: self.load(s), what)
            except (CheckpointError, PeerFailure) as exc:
                failures.append(str(exc))
            step = self._newest_before(step)
            if step is not None:
                warnings.warn(
                    f"{failures[-1]} Resuming from the checkpoint of iteration {step} instead.",
                    CheckpointWarning,
                    stacklevel=2,
                )
        if failures:
            raise CheckpointError(
                f"{self.directory}: no intact checkpoint to resume from ({failures[0]}) "
                "Remove the directory or pass --overwrite (overwrite=True) to start afresh."
            )
        return None

"""Fingerprints: what a checkpoint or a saved model was computed from.

The data's fingerprint is a hash of the triplets as read, computed without moving
them: each rank hashes each of its entries ``(row, col, value)`` to 64 bits and sums
the hashes; the ranks add their sums (one all-reduce). A sum does not depend on the
order of the entries or on how the rows are split across ranks, so the same file gives
the same fingerprint in one process or in many, and any changed, added or removed
entry changes it (up to the collisions of a 64-bit multiset hash).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

from .._validation import Observations
from ._comm import Comm
from ._partition import RowPartition

__all__ = ["data_fingerprint", "describe_mismatch", "run_fingerprint"]

#: Version of what a checkpoint holds; checkpoints of another version are not resumed.
CHECKPOINT_FORMAT = 3

_CHUNK = 1 << 20
#: The 64-bit hash is summed in three 22-bit pieces, so that the int64 sums stay exact
#: for up to 2**41 entries.
_PIECES = ((0, 0x3FFFFF), (22, 0x3FFFFF), (44, 0xFFFFF))


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 that spreads every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _entry_hash_sums(obs: Observations) -> list[int]:
    sums = [0, 0, 0]
    with np.errstate(over="ignore"):
        for lo in range(0, obs.n_observed, _CHUNK):
            hi = lo + _CHUNK
            r = obs.rows[lo:hi].astype(np.uint64)
            c = obs.cols[lo:hi].astype(np.uint64)
            v = np.ascontiguousarray(obs.values[lo:hi], dtype=np.float64).view(np.uint64)
            h = _mix(_mix(_mix(r + np.uint64(0x9E3779B97F4A7C15)) ^ c) ^ v)
            for k, (shift, mask) in enumerate(_PIECES):
                sums[k] += int(((h >> np.uint64(shift)) & np.uint64(mask)).sum(dtype=np.uint64))
    return sums


def data_fingerprint(obs: Observations, comm: Comm) -> str:
    """A hash of every rank's triplets together (a collective: every rank calls it).

    Parameters
    ----------
    obs : Observations
        This rank's entries, with global indices and the global shape.
    comm : Comm

    Returns
    -------
    str
        32 hexadecimal digits, the same on every rank.
    """
    sums = torch.tensor([*_entry_hash_sums(obs), obs.n_observed], dtype=torch.int64)
    total = comm.sum_(sums).tolist()
    payload = json.dumps({"shape": list(obs.shape), "sums": total})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def run_fingerprint(estimator: Any, part: RowPartition, data: str) -> dict:
    """What a checkpoint must match to be resumed from: the data and the run, not its length."""
    return {
        "format": CHECKPOINT_FORMAT,
        "estimator": type(estimator).__name__,
        "params": {
            k: str(v)
            for k, v in sorted(estimator.get_params().items())
            if k not in ("verbose", "max_iter")  # neither changes the trajectory
        },
        "data": data,
        "shape": [int(d) for d in part.shape],
        "n_observed": int(part.n_observed),
        "bounds": [int(b) for b in part.bounds],
    }


def describe_mismatch(found: Any, expected: dict) -> str:
    """What differs between two run fingerprints, in words."""
    if not isinstance(found, dict):
        return "it was written by another version of deepmc"
    what = []
    if found.get("format") != expected["format"]:
        return "it was written by another version of deepmc"
    if found.get("data") != expected["data"] or found.get("shape") != expected["shape"]:
        what.append("other data")
    if found.get("estimator") != expected["estimator"]:
        what.append(f"another network ({found.get('estimator')})")
    params = found.get("params") or {}
    changed = sorted(k for k in expected["params"] if params.get(k) != expected["params"][k])
    if changed:
        what.append(
            "other hyper-parameters ("
            + ", ".join(f"{k}={params.get(k)} here, {expected['params'][k]} now" for k in changed)
            + ")"
        )
    if not what and found.get("bounds") != expected["bounds"]:
        what.append(f"another number of processes ({len(found.get('bounds', [0])) - 1})")
    return "it was written by a run with " + "; ".join(what) if what else "its run differs"

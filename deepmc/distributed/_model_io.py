"""The fitted model on disk: each rank's rows, the replicated parts, the history, a marker.

Layout of a model directory::

    COMPLETE                  which version is the model, with every file's SHA-256
    model-<id>/
        rows-00000-of-00002.npy   rank 0's rows of U (the narrow network: of W_L)
        rows-00001-of-00002.npy   rank 1's rows
        replicated.npz            V and the cores (the narrow network: W_1 … W_{L-1})
        history.csv               one row per check
        model.json                estimator, hyper-parameters, shape, row bounds, scale …
    checkpoints/              the default checkpoint directory of ``deepmc fit``

A new model is written beside the old one, in a new ``model-<id>`` folder; the switch is
the atomic replacement of ``COMPLETE``, the last file written. Until then the old model
stays complete and loadable: a refit that fails, or is interrupted, at any point leaves
it as it was. :func:`load_model` verifies every file's checksum and reads data only
(NumPy arrays without pickles, CSV, JSON).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone

from .. import models
from .._pipeline import FittedState
from ._checkpoint import (
    COMPLETE,
    CheckpointError,
    agree,
    atomic_write,
    gather_digests,
    read_marker,
    read_verified,
    write_json,
)
from ._comm import Comm

__all__ = ["load_ids", "load_model", "save_model", "saved_data_fingerprint"]

#: The estimators a model directory may name (nothing else is instantiated from it).
_ESTIMATORS = ("CompressedDeepMatrixCompletion", "DeepMatrixCompletion")
_VERSION = re.compile(r"model-[0-9a-f]{1,32}")


def _rows_name(rank: int, world: int) -> str:
    return f"rows-{rank:05d}-of-{world:05d}.npy"


def _npy(array: np.ndarray):
    return lambda fh: np.save(fh, np.asarray(array), allow_pickle=False)


def _write_replicated(version: Path, model: Any, comm: Comm) -> dict[str, str]:
    """Rank 0's files: the replicated parameters, the history, the description."""
    group, index = model.local_key
    part = model.partition
    replicated = {
        f"{name}_{i}": np.asarray(a)
        for name, arrays in model.params.items()
        for i, a in enumerate(arrays)
        if (name, i) != (group, index)
    }
    csv = model.history.to_csv(index=False).encode()
    meta = {
        "estimator": type(model.estimator).__name__,
        "params": {k: _jsonable(v) for k, v in model.estimator.get_params().items()},
        "groups": {name: len(arrays) for name, arrays in model.params.items()},
        "sharded": [group, index],
        "shape": list(part.shape),
        "n_observed": part.n_observed,
        "bounds": [int(b) for b in part.bounds],
        "world_size": comm.world_size,
        **{k: v for k, v in model._fit_info().items() if k not in ("history", "shape")},
        "stop": model.stop,
    }
    files = {}
    if getattr(model, "ids", None) is not None:
        row_ids, col_ids = (_plain(a) for a in model.ids)
        files["ids.npz"] = atomic_write(
            version / "ids.npz", lambda fh: np.savez(fh, rows=row_ids, cols=col_ids)
        )
    return files | {
        "replicated.npz": atomic_write(
            version / "replicated.npz", lambda fh: np.savez(fh, **replicated)
        ),
        "history.csv": atomic_write(version / "history.csv", lambda fh: fh.write(csv)),
        "model.json": write_json(version / "model.json", meta),
    }


def save_model(model: Any, directory: str | os.PathLike, comm: Comm) -> None:
    """Write a :class:`~deepmc.distributed.ShardedModel` (a collective: every rank calls it).

    The files go to a new folder inside ``directory``; the model becomes the directory's
    model only when rank 0 replaces the completion marker, after every file is in
    place. A model already there stays loadable until then.

    Parameters
    ----------
    model : ShardedModel
        This rank's result of :func:`deepmc.distributed.fit`.
    directory : str or os.PathLike
        The model directory, on a file system every rank sees.
    comm : Comm
        The process group the model was fitted in.
    """
    directory = Path(directory)
    token = comm.max_int(time.time_ns() if comm.rank == 0 else -1)
    version = directory / f"model-{token:x}"
    agree(comm, lambda: version.mkdir(parents=True, exist_ok=True), f"to create {version}")
    group, index = model.local_key
    rows = model.params[group][index]
    name = _rows_name(comm.rank, comm.world_size)
    digest = agree(comm, lambda: atomic_write(version / name, _npy(rows)), f"to write {version}")
    digests = gather_digests(comm, digest)

    ratings = getattr(model, "ratings", None)
    if ratings is not None:  # O(m) per rank: every row's user bias, for rank 0 to write
        bias = torch.from_numpy(np.ascontiguousarray(ratings.user_bias, dtype=np.float64))
        user_bias = torch.cat(comm.gather_rows(bias)).numpy()

    def finish() -> None:
        files = {_rows_name(r, comm.world_size): h for r, h in enumerate(digests)}
        files.update(_write_replicated(version, model, comm))
        if ratings is not None:
            terms = {
                "mean": np.float64(ratings.mean), "user_bias": user_bias,
                "item_bias": np.asarray(ratings.item_bias, dtype=np.float64),
                "range": np.array([ratings.low, ratings.high], dtype=np.float64),
            }  # fmt: skip
            files["ratings.npz"] = atomic_write(
                version / "ratings.npz", lambda fh: np.savez(fh, **terms)
            )
        marker = {
            "model": version.name,
            "files": files,
            "world_size": comm.world_size,
            "data": getattr(model, "data_fingerprint", ""),
        }
        write_json(directory / COMPLETE, marker)  # the switch
        for old in directory.glob("model-*"):
            if old.name != version.name:
                shutil.rmtree(old, ignore_errors=True)

    agree(comm, finish if comm.rank == 0 else lambda: None, f"to complete {directory}")
    comm.barrier()


def _plain(ids: np.ndarray) -> np.ndarray:
    """Ids as an array NumPy saves without pickling (numbers, or fixed-width text)."""
    ids = np.asarray(ids)
    return ids.astype(str) if ids.dtype == object else ids


def load_ids(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """The row and column ids of the model's indices 0, 1, … (``None`` without ``remap``).

    Parameters
    ----------
    directory : str or os.PathLike
        A model written by ``deepmc fit --remap`` (``read_shard(remap=True)``).

    Returns
    -------
    (row_ids, col_ids) : tuple of ndarray, or None
        ``row_ids[i]`` is the id of row ``i`` of the fitted matrix.
    """
    directory = Path(directory)
    info = _marker(directory)
    name = "ids.npz"
    if name not in (info.get("files") or {}):
        return None
    try:
        payload = read_verified(directory / info["model"] / name, info["files"][name])
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    with np.load(io.BytesIO(payload), allow_pickle=False) as ids:
        return ids["rows"], ids["cols"]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def fitted_estimator(estimator: Any, params: dict[str, list[np.ndarray]], info: dict) -> Any:
    """A clone of ``estimator`` with the fitted attributes of a whole-matrix fit.

    ``info`` is :meth:`ShardedModel._fit_info` (or the saved ``model.json`` with the
    history); the best iteration is the last one.
    """
    est = clone(estimator)
    state = FittedState(
        network=est._build_network(info["init_scale"]),
        params=params,
        scale=float(info["scale"]),
        shape=tuple(int(d) for d in info["shape"]),
        device="cpu",
        init_scale=float(info["init_scale"]),
        sampling_scale=float(info["sampling_scale"]),
        lr=float(info["lr"]),
        n_iter=int(info["n_iter"]),
        best_iteration=int(info["n_iter"]),
        history=info["history"],
    )
    est._set_fitted(state)
    return est


def _marker(directory: Path) -> dict:
    try:
        info = read_marker(directory)
    except CheckpointError as exc:
        raise ValueError(str(exc)) from None
    if info is None:
        raise ValueError(
            f"{directory}: no complete model here (no {directory / COMPLETE} marker): the "
            "job writing it did not finish, or this is not a model directory."
        )
    if not (isinstance(info.get("model"), str) and _VERSION.fullmatch(info["model"])):
        raise ValueError(f"{directory / COMPLETE}: not a model marker written by deepmc.")
    return info


def saved_data_fingerprint(directory: str | os.PathLike) -> str | None:
    """The data fingerprint of the complete model in ``directory`` (``None`` without one)."""
    directory = Path(directory)
    if not (directory / COMPLETE).exists():
        return None
    try:
        return str(_marker(directory).get("data") or "")
    except ValueError:
        return ""


def load_model(directory: str | os.PathLike) -> Any:
    """The fitted estimator saved in ``directory``, its rows gathered from every shard file.

    Parameters
    ----------
    directory : str or os.PathLike
        Written by :meth:`ShardedModel.save` or ``deepmc fit``.

    Returns
    -------
    CompressedDeepMatrixCompletion or DeepMatrixCompletion or RatingsModel
        Fitted, as if fitted in one process (``predict``, ``transform``, pickling); a
        model of ``deepmc fit --ratings`` is a :class:`RatingsModel` around the network,
        which adds the mean and biases and clips to the rating range.

    Raises
    ------
    ValueError
        If the directory has no completion marker (the job that wrote it did not
        finish), misses a file, or a file's checksum does not match (naming the file).
    """
    directory = Path(directory)
    info = _marker(directory)
    version = directory / info["model"]
    files = info.get("files") or {}

    def read(name: str) -> io.BytesIO:
        try:
            return io.BytesIO(read_verified(version / name, files.get(name)))
        except CheckpointError as exc:
            raise ValueError(str(exc)) from None

    meta = json.loads(read("model.json").getvalue())
    if meta.get("estimator") not in _ESTIMATORS:
        raise ValueError(f"{version / 'model.json'}: unknown estimator {meta.get('estimator')!r}.")
    estimator = getattr(models, meta["estimator"])(**meta["params"])
    group, index = meta["sharded"]
    world = int(meta["world_size"])
    blocks = [np.load(read(_rows_name(r, world)), allow_pickle=False) for r in range(world)]
    with np.load(read("replicated.npz"), allow_pickle=False) as rep:
        params = {
            name: [
                np.concatenate(blocks) if (name, i) == (group, index) else rep[f"{name}_{i}"]
                for i in range(count)
            ]
            for name, count in meta["groups"].items()
        }
    info = {**meta, "history": pd.read_csv(read("history.csv"), keep_default_na=False)}
    network = fitted_estimator(estimator, params, info)
    if "ratings.npz" not in files:
        return network
    from ._ratings import RatingsModel, RatingsTerms

    with np.load(read("ratings.npz"), allow_pickle=False) as t:
        low, high = (float(v) for v in t["range"])
        terms = RatingsTerms(float(t["mean"]), t["user_bias"], t["item_bias"], low, high)
    return RatingsModel(network, terms)

"""The fitted model on disk: each rank's rows, the replicated parts, the history, a marker.

Layout of a model directory::

    rows-00000-of-00002.npy   rank 0's rows of U (the narrow network: of W_L)
    rows-00001-of-00002.npy   rank 1's rows
    replicated.npz            V and the cores (the narrow network: W_1 … W_{L-1})
    history.csv               one row per check
    model.json                estimator, hyper-parameters, shape, row bounds, scale …
    COMPLETE                  written last, once every other file is in place

Every file is written atomically; :func:`load_model` refuses a directory without the
marker.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .. import models
from ._checkpoint import atomic_write, is_complete, mark_complete, unmark, write_json
from ._comm import Comm

__all__ = ["load_model", "save_model"]


def _rows_name(rank: int, world: int) -> str:
    return f"rows-{rank:05d}-of-{world:05d}.npy"


def save_model(model: Any, directory: str | os.PathLike, comm: Comm) -> None:
    """Write a :class:`~deepmc.distributed.ShardedModel` (a collective: every rank calls it).

    Any completion marker already in ``directory`` is removed first, so that the
    directory never looks complete while it holds a mix of two models.

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
    directory.mkdir(parents=True, exist_ok=True)
    unmark(directory, comm)
    group, index = model.local_key
    part = model.partition

    def save_npy(array: np.ndarray):
        return lambda fh: np.save(fh, array, allow_pickle=False)

    atomic_write(
        directory / _rows_name(comm.rank, comm.world_size), save_npy(model.params[group][index])
    )
    if comm.rank == 0:
        replicated = {
            f"{name}_{i}": np.asarray(a)
            for name, arrays in model.params.items()
            for i, a in enumerate(arrays)
            if (name, i) != (group, index)
        }
        buf = io.BytesIO()
        np.savez(buf, **replicated)
        atomic_write(directory / "replicated.npz", lambda fh: fh.write(buf.getvalue()))
        csv = model.history.to_csv(index=False).encode()
        atomic_write(directory / "history.csv", lambda fh: fh.write(csv))
        write_json(
            directory / "model.json",
            {
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
            },
        )
    mark_complete(directory, comm, {"world_size": comm.world_size})


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def fitted_estimator(estimator: Any, params: dict[str, list[np.ndarray]], info: dict) -> Any:
    """A clone of ``estimator`` with the fitted attributes of a whole-matrix fit."""
    est = clone(estimator)
    network = est._build_network(info["init_scale"])
    est._network = network
    est.scale_ = float(info["scale"])
    est.shape_ = tuple(int(d) for d in info["shape"])
    est.device_ = "cpu"
    est.init_scale_ = float(info["init_scale"])
    est.sampling_scale_ = float(info["sampling_scale"])
    est.lr_ = float(info["lr"])
    est.n_iter_ = int(info["n_iter"])
    est.best_iteration_ = int(info["n_iter"])
    est.history_ = info["history"]
    est.n_features_in_ = est.shape_[1]
    for name, value in network.fitted_attributes(params, est.lr_).items():
        setattr(est, name, value)
    return est


def load_model(directory: str | os.PathLike) -> Any:
    """The fitted estimator saved in ``directory``, its rows gathered from every shard file.

    Parameters
    ----------
    directory : str or os.PathLike
        Written by :meth:`ShardedModel.save` or ``deepmc fit``.

    Returns
    -------
    CompressedDeepMatrixCompletion or DeepMatrixCompletion
        Fitted, as if fitted in one process (``predict``, ``transform``, pickling).

    Raises
    ------
    ValueError
        If the directory has no completion marker (the job that wrote it did not
        finish) or misses a file.
    """
    directory = Path(directory)
    if not is_complete(directory):
        raise ValueError(
            f"{directory}: no complete model here (no {directory / 'COMPLETE'} marker): the "
            "job writing it did not finish, or this is not a model directory."
        )
    meta = json.loads((directory / "model.json").read_text())
    estimator = getattr(models, meta["estimator"])(**meta["params"])
    group, index = meta["sharded"]
    world = meta["world_size"]
    blocks = [np.load(directory / _rows_name(r, world)) for r in range(world)]
    with np.load(directory / "replicated.npz") as rep:
        params = {
            name: [
                np.concatenate(blocks) if (name, i) == (group, index) else rep[f"{name}_{i}"]
                for i in range(count)
            ]
            for name, count in meta["groups"].items()
        }
    info = {**meta, "history": pd.read_csv(directory / "history.csv", keep_default_na=False)}
    return fitted_estimator(estimator, params, info)

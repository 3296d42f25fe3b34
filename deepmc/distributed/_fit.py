"""The distributed fit: the single-process solver on a row shard, with summed gradients."""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from .._data import TrainingData
from .._device import make_generator, resolve_device, resolve_dtype
from .._kernels import ObservedPattern
from .._prune import SpectralMonitor
from .._solver import Check, Params, gradient_descent
from ..init import _seed
from ..models import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from ._checkpoint import CheckpointStore
from ._comm import Comm
from ._linalg import ShardedRows, sharded_top_singular
from ._model_io import fitted_estimator, save_model
from ._network import NarrowShardedNetwork, ShardedNetwork
from ._partition import RowPartition
from ._shard import Shard

__all__ = ["ShardedModel", "fit"]

#: Version of what a checkpoint holds; checkpoints of another version are not resumed.
CHECKPOINT_FORMAT = 2


@dataclass
class ShardedModel:
    """A network fitted across ranks: this rank's rows of the left factor, and the rest.

    Attributes
    ----------
    estimator : CompressedDeepMatrixCompletion or DeepMatrixCompletion
        The (unfitted) estimator whose hyper-parameters were used.
    partition : RowPartition
    params : dict of str to list of ndarray
        The parameter groups in normalised units; the row-sharded one
        (``params["factors"][0]`` = ``U``, or the narrow network's ``params["layers"][-1]``
        = ``W_L``) holds rows ``partition.start:partition.stop`` only.
    scale : float
        σ₁ of ``s·P_Ω(Y)``: ``X̂ = scale · left @ right.T``.
    init_scale : float
    lr : float
    n_iter : int
    stop : str
    history : pandas.DataFrame
        The same on every rank, except the ``seconds`` column.
    """

    estimator: Any
    partition: RowPartition
    params: dict[str, list[np.ndarray]]
    scale: float
    init_scale: float
    lr: float
    n_iter: int
    stop: str
    history: pd.DataFrame

    @property
    def local_key(self) -> tuple[str, int]:
        """``(group, index)`` of the row-sharded parameter."""
        if "factors" in self.params:
            return ("factors", 0)
        return ("layers", len(self.params["layers"]) - 1)

    def gather(self, comm: Comm | None = None) -> Any:
        """A fitted single-process estimator, its sharded rows gathered from every rank.

        A collective: every rank must call it, and every rank receives the estimator
        (``O(m·k)`` memory per rank).
        """
        comm = comm or Comm.current()
        group, i = self.local_key
        blocks = comm.gather_rows(torch.from_numpy(np.ascontiguousarray(self.params[group][i])))
        params = {k: list(v) for k, v in self.params.items()}
        params[group][i] = torch.cat(blocks).numpy()
        return fitted_estimator(self.estimator, params, self._fit_info())

    def _fit_info(self) -> dict:
        m, n = self.partition.shape
        return {
            "scale": self.scale,
            "init_scale": self.init_scale,
            "lr": self.lr,
            "n_iter": self.n_iter,
            "shape": self.partition.shape,
            "sampling_scale": m * n / self.partition.n_observed,
            "history": self.history,
        }

    def save(self, directory: str | Path, comm: Comm | None = None) -> None:
        """Write the model to ``directory`` (every rank its rows), marked complete last.

        See :func:`deepmc.distributed.save_model`.
        """
        save_model(self, directory, comm or Comm.current())


def _sharded_network(
    estimator: Any, init_scale: float, comm: Comm, shape: tuple[int, int]
) -> ShardedNetwork:
    """The row-sharded form of ``estimator``'s network."""
    if isinstance(estimator, CompressedDeepMatrixCompletion):
        inner = estimator._build_network(init_scale)
        inner.check_shape(shape)
        return ShardedNetwork(inner, comm, ("factors", 0))
    if isinstance(estimator, DeepMatrixCompletion):
        if estimator.width is None:
            raise ValueError(
                "DeepMatrixCompletion(width=None) is the full-width network, whose "
                "max(m, n) × max(m, n) layers are dense: it stays single-process. Distribute "
                "the narrow network (width=2*rank) or CompressedDeepMatrixCompletion."
            )
        narrow = NarrowShardedNetwork(int(estimator.width), int(estimator.depth), init_scale)
        return ShardedNetwork(narrow, comm, ("layers", int(estimator.depth) - 1))
    raise TypeError(
        "estimator: expected a CompressedDeepMatrixCompletion or a narrow "
        f"DeepMatrixCompletion, got {type(estimator).__name__}."
    )


def _check_supported(estimator: Any) -> None:
    if not isinstance(estimator, (CompressedDeepMatrixCompletion, DeepMatrixCompletion)):
        raise TypeError(
            "estimator: expected a CompressedDeepMatrixCompletion or a narrow "
            f"DeepMatrixCompletion, got {type(estimator).__name__}."
        )
    unsupported = {
        "early_stopping": estimator.early_stopping,
        "warm_start": estimator.warm_start,
        # the row-weighted decay counts the observations of whole columns
        "decay_weighting": getattr(estimator, "decay_weighting", 0) != 0,
        "bias_reg": getattr(estimator, "bias_reg", None) is not None,
    }
    on = [k for k, v in unsupported.items() if v]
    if on:
        raise ValueError(
            f"{', '.join(on)}: not supported by the distributed fit (a validation split, "
            "a warm start, the row-weighted decay and the biases are whole-matrix "
            "operations); set them to False (decay_weighting to 0, bias_reg to None), or "
            "resume from a checkpoint instead of warm_start."
        )


def _local_data(
    shard: Shard, scale: float, device: torch.device, dtype: torch.dtype, comm: Comm
) -> TrainingData:
    """This rank's observations in local row numbering, with the global loss scale and norm.

    The values are scaled exactly as :func:`deepmc._data.prepare` scales them; the
    loss scale ``s = m·n/N`` and ``‖P_Ω(Y)‖`` are those of the whole matrix.
    """
    obs, part = shard.observations, shard.partition
    m, n = part.shape
    sq = torch.tensor([float(np.dot(obs.values, obs.values))], dtype=torch.float64)
    y_norm = float(comm.sum_(sq)[0]) ** 0.5
    rows = torch.as_tensor(obs.rows - part.start, device=device)
    cols = torch.as_tensor(obs.cols, device=device)
    y = torch.as_tensor(obs.values.astype(np.float64) / scale, dtype=dtype, device=device)
    return TrainingData(
        shape=(part.n_rows, n),
        rows=rows,
        cols=cols,
        y=y,
        sampling_scale=m * n / part.n_observed,
        pattern=ObservedPattern.from_coo(rows, cols, (part.n_rows, n)),
        device=device,
        dtype=dtype,
        y_norm=y_norm / scale,
    )


def _initial_params(
    network: ShardedNetwork,
    shard: Shard,
    data: TrainingData,
    u_local: np.ndarray,
    v: np.ndarray,
    generator: torch.Generator,
    comm: Comm,
) -> Params:
    """The single-process initialisation, restricted to this rank's rows."""
    part = shard.partition
    inner = network.inner
    if isinstance(inner, NarrowShardedNetwork):
        return inner.initialize(data, part.shape, part.start, generator)
    if inner.init == "spectral":  # row-local: U(0) is this rank's rows of u
        return inner.initialize(data, u_local, v, generator)
    # parsimony and random frames act on whole columns of U: O(m·k) transient per rank
    u_full = torch.cat(comm.gather_rows(torch.from_numpy(np.ascontiguousarray(u_local)))).numpy()
    params = inner.initialize(dataclasses.replace(data, shape=part.shape), u_full, v, generator)
    U = params["factors"][0]
    params["factors"][0] = U[part.start : part.stop].clone()
    return params


def _fingerprint(estimator: Any, part: RowPartition) -> str:
    """What a checkpoint must match to be resumed from: the run, not its length."""
    return json.dumps(
        {
            # what a checkpoint holds (2: with the monitor's and the optimizer's state)
            "format": CHECKPOINT_FORMAT,
            "estimator": type(estimator).__name__,
            "params": {
                k: str(v)
                for k, v in estimator.get_params().items()
                if k not in ("verbose", "max_iter")  # neither changes the trajectory
            },
            "shape": list(part.shape),
            "n_observed": part.n_observed,
            "bounds": [int(b) for b in part.bounds],
        },
        sort_keys=True,
    )


def _checkpointer(
    store: CheckpointStore,
    history: list[dict],
    monitor: SpectralMonitor,
    start_iter: int,
    check_every: int,
    every: int,
):
    """A solver callback writing a checkpoint every ``every`` checks after ``start_iter``.

    It runs after the monitor's callback: the checkpoint holds the parameters, the
    monitor's state and the optimizer's (heavy-ball velocity, Adam's moments) as they
    enter the next step, so a resumed run takes the same steps.
    """

    def checkpoint(check: Check) -> bool:
        n_checks = (check.iteration - start_iter) // check_every
        if check.iteration != start_iter and n_checks % every == 0:
            params = {k: [p.detach().cpu().clone() for p in v] for k, v in check.params.items()}
            state = {
                "iteration": check.iteration,
                "lr": check.row["lr"],
                "history": list(history),  # the solver's rows, this check's included
                "params": params,
                "monitor": monitor.state_dict(),
                "optimizer": _to_cpu(check.optimizer.state_dict()),
            }
            store.save(check.iteration, state)
        return False  # the parameters are not edited

    return checkpoint


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it copied to the CPU (dicts, lists and tuples walked)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _optimizer_restorer(iteration: int, state: dict):
    """Solver callback: load the checkpoint's optimizer state when ``iteration`` is re-checked."""

    def restore(check: Check) -> bool:
        if check.iteration == iteration:
            check.optimizer.load_state_dict(state)
        return False  # the parameters are not edited

    return restore


def _initial_state(
    estimator: Any, shard: Shard, network: ShardedNetwork, comm: Comm
) -> tuple[float, TrainingData, Params]:
    """``(σ₁ scale, this rank's data, initial parameters)``, as the single-process fit's.

    σ₁ and the singular vectors of the spectral and parsimony initialisations come from
    the sharded randomized SVD of ``s·P_Ω(Y)``, started from the seed that
    :func:`deepmc.init.top_singular` draws.
    """
    part, obs = shard.partition, shard.observations
    device = resolve_device(estimator.device)
    if device.type == "cuda" and comm.device.type == "cuda":
        device = comm.device
    dtype = resolve_dtype(estimator.dtype, obs.values.dtype)
    generator = make_generator(check_random_state(estimator.random_state))
    m, n = part.shape
    s = m * n / part.n_observed
    M_local = sp.csr_matrix(
        (s * obs.values.astype(np.float64), (obs.rows - part.start, obs.cols)),
        shape=(part.n_rows, n),
    )
    seed = _seed(generator)  # the draw deepmc.init.top_singular makes
    u_local, sig, v = sharded_top_singular(
        M_local, part.shape, part.start, network.n_singular, seed=seed, comm=comm
    )
    scale = float(sig[0]) if sig[0] > 0 else 1.0
    data = _local_data(shard, scale, device, dtype, comm)
    return scale, data, _initial_params(network, shard, data, u_local, v, generator, comm)


def _resume(
    store: CheckpointStore, monitor: SpectralMonitor, callbacks: list, data: TrainingData
) -> tuple[Params, int, list[dict], float] | None:
    """``(params, iteration, history, lr)`` of the latest checkpoint in ``store``, or ``None``.

    The monitor takes the checkpoint's state, and a callback that loads the optimizer's
    state when the checkpoint's iteration is checked again goes first in ``callbacks``.
    """
    step = store.latest()
    if step is None:
        return None
    state = store.load(step)
    params = {
        k: [torch.as_tensor(a, dtype=data.dtype, device=data.device) for a in arrs]
        for k, arrs in state["params"].items()
    }
    monitor.load_state_dict(state["monitor"], state["iteration"])
    callbacks.insert(0, _optimizer_restorer(state["iteration"], state["optimizer"]))
    return params, state["iteration"], list(state["history"]), state["lr"]


def fit(
    estimator: Any,
    shard: Shard,
    *,
    comm: Comm | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
) -> ShardedModel:
    """Fit ``estimator``'s network on this rank's shard, in step with the other ranks.

    Every rank of the process group calls it with its own :class:`Shard` (from
    :func:`read_shard` or :func:`shard_observations`). Each rank keeps its rows of ``U``
    (the narrow network: of ``W_L``); ``V`` and the cores are replicated, seeded
    identically, and updated from one all-reduce per step. The σ₁ scaling and the
    spectral/parsimony initialisation come from a sharded randomized SVD that starts
    from the same seed as the single-process one, so the fit follows the trajectory of
    ``estimator.fit`` on the whole matrix, up to the order of summation.

    Parameters
    ----------
    estimator : CompressedDeepMatrixCompletion or DeepMatrixCompletion
        Its hyper-parameters are used; it is not modified. ``DeepMatrixCompletion``
        must be narrow (``width`` set): the full-width network stays single-process.
        ``early_stopping`` and ``warm_start`` are not supported.
    shard : Shard
    comm : Comm, default=None
        The process group (default: the initialised one, or a world of one).
    checkpoint_dir : str or Path, default=None
        Where to write checkpoints (on a file system every rank sees). If it holds a
        complete checkpoint of a run with the same world size, the fit resumes from
        the latest one and ends with the model of an uninterrupted run.
    checkpoint_every : int, default=None
        Iterations between checkpoints, rounded up to a multiple of ``check_every``;
        ``None`` writes one at every check.

    Returns
    -------
    ShardedModel
        The same replicated parts and history on every rank; :meth:`ShardedModel.gather`
        assembles a fitted estimator, :meth:`ShardedModel.save` writes the model.
    """
    comm = comm or Comm.current()
    _check_supported(estimator)
    t_start = time.perf_counter()
    part = shard.partition
    init_scale = estimator._resolve_init_scale()
    network = _sharded_network(estimator, init_scale, comm, part.shape)
    scale, data, params = _initial_state(estimator, shard, network, comm)
    lr = estimator._resolve_learning_rate()
    # the plateau-aware stop rule, prune and polish of the single-process fit, on the
    # ranks' rows: every decision comes from sums over the ranks, the same on each
    monitor = SpectralMonitor(
        network, data, tol=estimator.tol, n_iter_no_change=estimator.n_iter_no_change,
        prune=estimator._prunes(), rows=ShardedRows(comm),
    )  # fmt: skip
    callbacks = [monitor.callback]
    start_iter, history = 0, []
    if checkpoint_dir is not None:
        store = CheckpointStore(checkpoint_dir, comm, fingerprint=_fingerprint(estimator, part))
        resumed = _resume(store, monitor, callbacks, data)
        if resumed is not None:
            params, start_iter, history, lr = resumed
        every = -(-(checkpoint_every or estimator.check_every) // estimator.check_every)
        callbacks.append(
            _checkpointer(
                store, history, monitor, start_iter, estimator.check_every, max(1, every)
            )
        )
    n_resumed_rows = len(history)
    result = gradient_descent(
        network, data, params, lr=lr, optimizer=estimator.optimizer,
        weight_decay=estimator.weight_decay,
        max_iter=max(int(estimator.max_iter) - start_iter, 0), tol=estimator.tol,
        check_every=estimator.check_every, start_iter=start_iter, history=history,
        backoff=estimator.lr == "auto", scale=scale, t_start=t_start,
        name=type(estimator).__name__, verbose=estimator.verbose if comm.rank == 0 else 0,
        reduce=comm.sum_, stop_rule=monitor.stop_rule, callbacks=callbacks,
    )  # fmt: skip
    if n_resumed_rows and len(history) > n_resumed_rows:
        # the resumed run re-checks the checkpoint's iteration (without a change
        # baseline): drop that repeated row, kept from before the restart
        del history[n_resumed_rows]
    if result.stop == "max_iter" and comm.rank == 0:
        what = monitor.unconverged(history[-1], estimator.check_every, scale)
        warnings.warn(
            f"{type(estimator).__name__} reached max_iter={estimator.max_iter} before "
            f"converging: {what}",
            ConvergenceWarning,
            stacklevel=2,
        )
    arrays = {k: [t.detach().cpu().numpy().copy() for t in v] for k, v in result.params.items()}
    return ShardedModel(
        estimator=clone(estimator),
        partition=part,
        params=arrays,
        scale=scale,
        init_scale=init_scale,
        lr=result.lr,
        n_iter=result.n_iter,
        stop=result.stop,
        history=pd.DataFrame.from_records(history),
    )

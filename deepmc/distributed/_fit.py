"""The distributed fit: the single-process solver on a row shard, with summed gradients."""

from __future__ import annotations

import dataclasses
import math
import numbers
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.utils import check_random_state

from .._data import TrainingData
from .._device import make_generator, resolve_device, resolve_dtype
from .._kernels import ObservedPattern
from .._pipeline import make_plan, numpy_params, run_plan
from .._solver import Params
from .._validation import check_params
from ..init import _seed
from ..models import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from ._checkpoint import CheckpointStore
from ._comm import Comm
from ._fingerprint import data_fingerprint, run_fingerprint
from ._linalg import ShardedRows, sharded_top_singular
from ._model_io import fitted_estimator, save_model
from ._network import ShardedNetwork
from ._partition import RowPartition
from ._ratings import ShardedHeldOut
from ._resume import Checkpointer, resume
from ._shard import Shard
from ._signals import FitInterrupted, StopRequest

__all__ = ["ShardedModel", "fit"]


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
    data_fingerprint : str
        A hash of the triplets fitted (see :func:`deepmc.distributed.read_shard`),
        saved with the model.
    ids : tuple of (ndarray, ndarray) or None
        The row and column ids of indices 0, 1, … when the shard was read with
        ``remap=True``; saved with the model.
    ratings : RatingsTerms or None
        The mean, this rank's user biases, the item biases and the rating range of a
        ratings fit (``deepmc fit --ratings``); saved with the model.
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
    data_fingerprint: str = ""
    ids: tuple[np.ndarray, np.ndarray] | None = None
    ratings: Any = None

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
    """The row-sharded form of ``estimator``'s network: its ``row_group`` split by rows."""
    inner = estimator._build_network(init_scale)
    inner.check_shape(shape)
    if inner.row_group is None:
        raise ValueError(
            f"{type(estimator).__name__}(width=None) is the full-width network, whose "
            "max(m, n) × max(m, n) layers are dense: it stays single-process. Distribute "
            "the narrow network (width=2*rank) or CompressedDeepMatrixCompletion."
        )
    return ShardedNetwork(inner, comm, inner.row_group)


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


def _check_magnitude(shard: Shard, comm: Comm) -> None:
    """Refuse values whose squares leave float64 (the loss and σ₁ are sums of squares).

    The sums are taken in logarithms (the largest magnitude times the norm of the
    values divided by it), so the check itself neither overflows nor underflows.
    """
    v = shard.observations.values
    peak = float(np.max(np.abs(v))) if v.size else 0.0
    peak = comm.max_(torch.tensor([peak], dtype=torch.float64))[0].item()
    if peak == 0.0:
        raise ValueError(
            "every observed value is 0: the completion is the zero matrix, there is nothing to fit."
        )
    sq = comm.sum_(torch.tensor([float(np.sum((v / peak) ** 2))], dtype=torch.float64))
    m, n = shard.partition.shape
    s = m * n / shard.partition.n_observed  # the loss scale multiplies the values
    log_norm = math.log10(peak) + 0.5 * math.log10(float(sq[0])) + math.log10(s)
    if log_norm > _LOG_NORM_MAX:
        raise ValueError(
            f"values up to {peak:.3g} are too large: the fit squares them and sums the "
            "squares, which leaves float64 (largest 1.8e308). Divide the values by a "
            f"constant (e.g. {10 ** math.floor(math.log10(peak)):.0e}) and multiply the "
            "predictions by it."
        )
    if log_norm < -_LOG_NORM_MAX:
        raise ValueError(
            f"the values are at most {peak:.3g}: the fit squares them and sums the squares, "
            "which underflow float64 (smallest 2.2e-308). Multiply the values by a constant "
            f"(e.g. {10 ** -math.floor(math.log10(peak)):.0e}) and divide the predictions by it."
        )


#: ``log10`` of the largest (and of the inverse of the smallest) norm ``s‖P_Ω(Y)‖``
#: whose square float64 holds with room for the loss and its scale.
_LOG_NORM_MAX = 150.0


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
    """The single-process initialisation, restricted to this rank's rows.

    The network initialises the whole matrix (parsimony, random frames and the
    ε-orthogonal layers act on whole columns of the row-sharded parameter; the spectral
    factors are row-local, and cut the same): O(m·k) transient memory per rank. The
    parameter of its ``row_group`` is then cut to this rank's rows.
    """
    part = shard.partition
    inner = network.inner
    u_full = torch.cat(comm.gather_rows(torch.from_numpy(np.ascontiguousarray(u_local)))).numpy()
    params = inner.initialize(dataclasses.replace(data, shape=part.shape), u_full, v, generator)
    group, i = network.local
    params[group][i] = params[group][i][part.start : part.stop].clone()
    return params


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


def _check_arguments(
    estimator: Any, checkpoint_dir: Any, checkpoint_every: Any, validation: Any
) -> None:
    """Refuse what the distributed fit does not support, as :func:`fit` documents."""
    _check_supported(estimator)
    check_params(estimator)
    if checkpoint_every is not None and not (
        isinstance(checkpoint_every, numbers.Integral) and checkpoint_every >= 1
    ):
        raise ValueError(f"checkpoint_every: expected an integer >= 1, got {checkpoint_every!r}.")
    if validation is not None and checkpoint_dir is not None:
        raise ValueError(
            "validation: early stopping keeps the best iterate in memory, which a "
            "checkpoint does not hold; pass checkpoint_dir=None."
        )


def _on_rows(name: str, held: Any, shard: Shard, comm: Comm, data: TrainingData) -> ShardedHeldOut:
    """Held-out entries of this rank's rows (global indices), errors summed over the ranks.

    Every rank checks its entries and the ranks agree, so that all of them raise
    together when one rank's are not of its rows.
    """
    obs, part = getattr(held, "observations", held), shard.partition
    rows = np.asarray(obs.rows)
    outside = tuple(obs.shape) != tuple(part.shape) or bool(
        rows.size and (rows.min() < part.start or rows.max() >= part.stop)
    )
    if comm.max_int(int(outside)):
        raise ValueError(
            f"{name}: expected on every rank held-out entries of its own rows of the "
            f"{part.shape[0]} × {part.shape[1]} matrix (global indices)."
        )
    return ShardedHeldOut.on_rows(obs, part.start, part.n_rows, comm, data.device, data.dtype)


def fit(
    estimator: Any,
    shard: Shard,
    *,
    comm: Comm | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    overwrite: bool = False,
    validation: Any = None,
    eval_set: Any = None,
) -> ShardedModel:
    """Fit ``estimator``'s network on this rank's shard, in step with the other ranks.

    Every rank of the process group calls it with its own :class:`Shard` (from
    :func:`read_shard` or :func:`shard_observations`). Each rank keeps its rows of ``U``
    (the narrow network: of ``W_L``); ``V`` and the cores are replicated, seeded
    identically, and updated from one all-reduce per step. The σ₁ scaling and the
    spectral/parsimony initialisation come from a sharded randomized SVD that starts
    from the same seed as the single-process one, so the fit follows the trajectory of
    ``estimator.fit`` on the whole matrix, up to the order of summation.

    SIGINT and SIGTERM (in the main thread) stop every rank at the same check: a last
    checkpoint is written there and :class:`FitInterrupted` is raised; no model is
    returned. Rerunning the fit with the same ``checkpoint_dir`` resumes.

    Parameters
    ----------
    estimator : CompressedDeepMatrixCompletion or DeepMatrixCompletion
        Its hyper-parameters are used, validated as the estimator's ``fit`` validates
        them; it is not modified. ``DeepMatrixCompletion`` must be narrow (``width``
        set): the full-width network stays single-process. ``early_stopping`` and
        ``warm_start`` are not supported.
    shard : Shard
    comm : Comm, default=None
        The process group (default: the initialised one, or a world of one).
    checkpoint_dir : str or Path, default=None
        Where to write checkpoints (on a file system every rank sees). If it holds a
        complete checkpoint of this run (the same data, hyper-parameters other than
        ``max_iter`` and ``verbose``, and row split), the fit resumes from the latest
        intact one and ends with the model of an uninterrupted run. A damaged newest
        checkpoint is skipped, with a warning, for the one before.
    checkpoint_every : int, default=None
        Iterations between checkpoints, rounded up to a multiple of ``check_every``;
        ``None`` writes one at every check.
    overwrite : bool, default=False
        Delete the checkpoints of another run found in ``checkpoint_dir``; without it
        they are an error.
    validation : Observations, default=None
        Held-out entries of this rank's rows (global indices): the fit stops after
        ``estimator.n_iter_no_change`` checks without a better validation RMSE, summed
        over the ranks, and returns the best iterate. Not with ``checkpoint_dir`` (a
        resumed run would not know the best iterate).
    eval_set : Observations or Shard, default=None
        Held-out entries of this rank's rows (global indices) with their true values,
        as the estimator's ``fit(eval_set=...)``: their relative error and RMSE, summed
        over the ranks, are recorded in the history (``eval_error``, ``eval_rmse``) at
        every check; they never influence the fit.

    Returns
    -------
    ShardedModel
        The same replicated parts and history on every rank; :meth:`ShardedModel.gather`
        assembles a fitted estimator, :meth:`ShardedModel.save` writes the model.

    Raises
    ------
    InvalidParameterError
        For a hyper-parameter the estimator's ``fit`` would refuse.
    CheckpointError
        If ``checkpoint_dir`` holds checkpoints of another run (without ``overwrite``),
        or only damaged ones; the message names the file.
    FitInterrupted
        On SIGINT or SIGTERM, on every rank at the same iteration.
    """
    comm = comm or Comm.current()
    _check_arguments(estimator, checkpoint_dir, checkpoint_every, validation)
    t_start = time.perf_counter()
    part = shard.partition
    _check_magnitude(shard, comm)
    data_hash = shard.fingerprint or data_fingerprint(shard.observations, comm)
    plan = make_plan(
        estimator, part.shape, lambda eps: _sharded_network(estimator, eps, comm, part.shape)
    )
    store = None
    if checkpoint_dir is not None:
        fingerprint = run_fingerprint(estimator, part, data_hash)
        store = CheckpointStore(checkpoint_dir, comm, fingerprint=fingerprint)
        store.check_foreign(discard=overwrite)
    scale, data, params = _initial_state(estimator, shard, plan.network, comm)
    held_out = None if validation is None else _on_rows("validation", validation, shard, comm, data)
    t_monitor = time.perf_counter()
    monitors = {}
    if eval_set is not None:  # only watches the fit: not billed to the fit's seconds
        monitors["eval"] = _on_rows("eval_set", eval_set, shard, comm, data)
        t_start += time.perf_counter() - t_monitor
    # the plateau-aware stop rule, prune and polish of the single-process fit, on the
    # ranks' rows: every decision comes from sums over the ranks, the same on each
    monitor = plan.monitor(data, scale=scale, rows=ShardedRows(comm))
    callbacks, start_iter, history, lr = [], 0, [], None
    if store is not None:
        resumed = resume(store, monitor, callbacks, data)
        if resumed is not None:
            params, start_iter, history, lr = resumed
    every = -(-(checkpoint_every or plan.check_every) // plan.check_every)
    stop = StopRequest(comm)
    # last: it may write a checkpoint and stop the fit once the ranks agreed to stop
    callbacks.append(
        Checkpointer(store, history, monitor, stop, start_iter, plan.check_every, every)
    )
    with stop:
        result = run_plan(
            plan, data, params, scale=scale, t_start=t_start, monitor=monitor,
            monitors=monitors, validation=held_out, callbacks=callbacks,
            lr=lr, steps=max(int(plan.max_iter) - start_iter, 0), start_iter=start_iter,
            history=history, resumed=True, reduce=stop.reduce, interrupt=stop,
            verbose=plan.verbose if comm.rank == 0 else 0, summary=False,
        )  # fmt: skip
    solve = result.solve
    if solve.stop == "interrupted":  # agreed at a check that backed off: no new checkpoint
        raise FitInterrupted(solve.n_iter, None, stop.signum or int(signal.SIGINT))
    if comm.rank == 0:
        result.warn(stacklevel=2)
    return ShardedModel(
        estimator=clone(estimator), partition=part, params=numpy_params(solve.params),
        scale=scale, init_scale=plan.init_scale, lr=solve.lr, n_iter=solve.n_iter,
        stop=solve.stop, history=pd.DataFrame.from_records(solve.history),
        data_fingerprint=data_hash, ids=shard.ids,
    )  # fmt: skip

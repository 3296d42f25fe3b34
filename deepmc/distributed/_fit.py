"""The distributed fit: the single-process solver on a row shard, with summed gradients."""

from __future__ import annotations

import dataclasses
import math
import numbers
import signal
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
from .._policy import SpectralMonitor
from .._solver import Params, gradient_descent
from .._validation import check_params
from ..init import _seed
from ..models import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from ._checkpoint import CheckpointStore
from ._comm import Comm
from ._fingerprint import data_fingerprint, run_fingerprint
from ._linalg import ShardedRows, sharded_top_singular
from ._model_io import fitted_estimator, save_model
from ._network import NarrowShardedNetwork, ShardedNetwork
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


def fit(
    estimator: Any,
    shard: Shard,
    *,
    comm: Comm | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    overwrite: bool = False,
    validation: Any = None,
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
    t_start = time.perf_counter()
    part = shard.partition
    _check_magnitude(shard, comm)
    data_hash = shard.fingerprint or data_fingerprint(shard.observations, comm)
    init_scale = estimator._resolve_init_scale()
    network = _sharded_network(estimator, init_scale, comm, part.shape)
    store = None
    if checkpoint_dir is not None:
        fingerprint = run_fingerprint(estimator, part, data_hash)
        store = CheckpointStore(checkpoint_dir, comm, fingerprint=fingerprint)
        store.check_foreign(discard=overwrite)
    scale, data, params = _initial_state(estimator, shard, network, comm)
    lr = estimator._resolve_learning_rate()
    held_out = None
    if validation is not None:
        held_out = ShardedHeldOut.on_rows(
            validation, part.start, part.n_rows, comm, data.device, data.dtype
        )
    # the plateau-aware stop rule, prune and polish of the single-process fit, on the
    # ranks' rows: every decision comes from sums over the ranks, the same on each
    monitor = SpectralMonitor(
        network, data, tol=estimator.tol, n_iter_no_change=estimator.n_iter_no_change,
        prune=estimator._prunes(), rows=ShardedRows(comm),
    )  # fmt: skip
    callbacks = [monitor.callback]
    start_iter, history = 0, []
    if store is not None:
        resumed = resume(store, monitor, callbacks, data)
        if resumed is not None:
            params, start_iter, history, lr = resumed
    every = -(-(checkpoint_every or estimator.check_every) // estimator.check_every)
    stop = StopRequest(comm)
    # last: it may write a checkpoint and stop the fit once the ranks agreed to stop
    callbacks.append(
        Checkpointer(store, history, monitor, stop, start_iter, estimator.check_every, every)
    )
    n_resumed_rows = len(history)
    with stop:
        result = gradient_descent(
            network, data, params, lr=lr, optimizer=estimator.optimizer,
            weight_decay=estimator.weight_decay,
            max_iter=max(int(estimator.max_iter) - start_iter, 0), tol=estimator.tol,
            check_every=estimator.check_every, start_iter=start_iter, history=history,
            backoff=estimator.lr == "auto", scale=scale, t_start=t_start,
            name=type(estimator).__name__, verbose=estimator.verbose if comm.rank == 0 else 0,
            reduce=stop.reduce, stop_rule=monitor.stop_rule, callbacks=callbacks,
            interrupt=stop, validation=held_out,
        )  # fmt: skip
    if result.stop == "interrupted":  # agreed at a check that backed off: no new checkpoint
        raise FitInterrupted(result.n_iter, None, stop.signum or int(signal.SIGINT))
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
        data_fingerprint=data_hash,
        ids=shard.ids,
    )

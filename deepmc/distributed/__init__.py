"""Exact distributed gradient descent on ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

The observed entries are split by contiguous row ranges balanced by count; each rank
keeps its rows of ``U`` (of ``W_L`` for the narrow network), while ``V`` and the cores
are replicated and updated from one all-reduce per step of the packed buffer
``[∇V, ∇cores, loss, count]``. Every replicated gradient is linear in the residual, so
the sum over ranks is the full gradient and the iterates are those of single-process
gradient descent, up to the order of summation. σ₁ and the spectral / parsimony
initialisations come from a randomized SVD run on the row blocks
(:func:`~deepmc.distributed._linalg.sharded_top_singular`) from the same seed as the
single-process one, so a distributed fit starts, and stays, where the single-process
fit of the same ``random_state`` goes.

In a script started by ``torchrun --nproc-per-node N script.py``::

    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed import fit, init_from_env, read_shard

    comm = init_from_env()                        # gloo on CPU, NCCL on cuda:LOCAL_RANK
    shard = read_shard("ratings.csv", comm=comm)  # only this rank's rows are read
    model = fit(CompressedDeepMatrixCompletion(rank=10, random_state=0), shard,
                checkpoint_dir="ckpt")            # resumes after a restart
    model.save("model")                           # rows per rank, marked complete last

The same script without ``torchrun`` is an ordinary single-process fit. ``deepmc fit``
does all of this from the command line, and :func:`load_model` reads the model back as
a fitted estimator.

What stays single-process, and why:

* the full-width network (``DeepMatrixCompletion()``): its ``max(m, n)``-wide layers are
  dense and every step forms ``X``; a row split would all-reduce ``d × d`` blocks;
* :class:`~deepmc.RatingsCompletion`: its pipeline needs a global id → index map
  (arbitrary ids, a distributed sort and exchange), alternating bias sweeps with item
  biases summed over ranks, and early stopping on a random validation slice, whose
  errors the solver evaluates on one process. Map the ids to indices and subtract the
  biases beforehand, then fit the residual triplets with ``deepmc fit``;
* ``early_stopping``, ``eval_set`` and ``warm_start``: whole-matrix evaluations or
  states (resume from a checkpoint instead of a warm start).

The spectral analysis of the single-process fit runs on the ranks' rows too
(``ShardedRows``: sums over ranks, TSQR): the
plateau-aware stop rule (a saddle between two learned directions is not convergence)
and, with ``solver="auto"``, prune and polish, with the same decisions on every rank
and at the same iterations as in one process.

SIGINT or SIGTERM (Ctrl-C, ``torchrun`` stopping its workers, a scheduler) makes every
rank stop at the same check: the ranks agree through the check's all-reduce, write a
last checkpoint and raise :class:`FitInterrupted`; no model is written. Run the same
command again to resume. Checkpoints hold the parameters, the monitor's decisions and
the optimizer's state (the polish's heavy-ball velocity, the moments of
``optimizer="momentum"`` and ``"adam"``), so a resumed run takes the uninterrupted run's
steps. They are read back as data only (checksums, then ``torch.load`` with
``weights_only=True``), and only by a run of the same data and hyper-parameters.
"""

import importlib
from typing import Any

#: Public name → the module defining it, imported on first use (``deepmc fit --help``
#: needs only the command line's module, not PyTorch).
_EXPORTS = {
    "CheckpointError": "._checkpoint",
    "Comm": "._comm",
    "FitInterrupted": "._signals",
    "RankFailure": "._comm",
    "RatingsModel": "._ratings",
    "RatingsTerms": "._ratings",
    "RowPartition": "._partition",
    "Shard": "._shard",
    "ShardedModel": "._fit",
    "balanced_row_ranges": "._partition",
    "configure_parser": "._cli",
    "fit": "._fit",
    "init_from_env": "._comm",
    "load_ids": "._model_io",
    "load_model": "._model_io",
    "ratings_shard": "._ratings",
    "read_shard": "._shard",
    "run_fit": "._cli",
    "save_model": "._model_io",
    "shard_observations": "._shard",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

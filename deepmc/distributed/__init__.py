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

Ctrl-C under ``torchrun`` ends the job (torchrun stops the workers); restart it to
resume from the last checkpoint. Checkpoints hold the parameters, the monitor's
decisions and the optimizer's state (the polish's heavy-ball velocity, the moments of
``optimizer="momentum"`` and ``"adam"``), so a resumed run takes the uninterrupted run's
steps.
"""

from ._cli import configure_parser, run_fit
from ._comm import Comm, RankFailure, init_from_env
from ._fit import ShardedModel, fit
from ._model_io import load_model, save_model
from ._partition import RowPartition, balanced_row_ranges
from ._shard import Shard, read_shard, shard_observations

__all__ = [
    "Comm",
    "RankFailure",
    "RowPartition",
    "Shard",
    "ShardedModel",
    "balanced_row_ranges",
    "configure_parser",
    "fit",
    "init_from_env",
    "load_model",
    "read_shard",
    "run_fit",
    "save_model",
    "shard_observations",
]

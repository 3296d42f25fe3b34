"""Exact distributed gradient descent on ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

The observed entries are split by contiguous row ranges balanced by count; each rank
keeps its rows of ``U`` (or of the narrow network's last layer), while ``V`` and the
cores are replicated and updated from one all-reduce per step of the packed buffer
``[∇V, ∇cores, loss, count]``. Every replicated gradient is linear in the residual, so
the sum over ranks is the full gradient and the iterates are those of single-process
gradient descent, up to the order of summation.
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

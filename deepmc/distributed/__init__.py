"""Exact distributed gradient descent on ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

The observed entries are split by contiguous row ranges balanced by count; each rank
keeps its rows of ``U`` (or of the narrow network's last layer), while ``V`` and the
cores are replicated and updated from one all-reduce per step of the packed buffer
``[∇V, ∇cores, loss, count]``. Every replicated gradient is linear in the residual, so
the sum over ranks is the full gradient and the iterates are those of single-process
gradient descent, up to the order of summation.
"""

from ._comm import Comm, init_from_env
from ._fit import ShardedModel, fit
from ._partition import RowPartition, balanced_row_ranges
from ._shard import Shard, read_shard, shard_observations

__all__ = [
    "Comm",
    "RowPartition",
    "Shard",
    "ShardedModel",
    "balanced_row_ranges",
    "fit",
    "init_from_env",
    "read_shard",
    "shard_observations",
]

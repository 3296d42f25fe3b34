"""
===================================
A distributed fit with ``torchrun``
===================================

The compressed and the narrow networks fit across processes with
:mod:`torch.distributed`, exactly: the observed entries are split by contiguous row
ranges (balanced by count), each process keeps its rows of ``U``, and ``V`` and the cores
are replicated. Every step all-reduces one buffer of ``n·k + L·k² + 2`` numbers (the
gradients of the replicated parts, the loss and the count), whatever the number of
observations, so the iterates are those of single-process gradient descent up to
summation order. The full-width network stays single-process.

This script is shown but not run by the documentation build: it needs several
processes. Run it with ``torchrun``::

    torchrun --nproc-per-node 2 distributed_fit.py

or use the command line, which runs unchanged with or without ``torchrun``::

    deepmc fit --data ratings.csv --rank 10 --output model/
    torchrun --nproc-per-node 2 -m deepmc fit --data ratings.csv --rank 10 --output model/

``--data`` is a CSV or Parquet file of ``(row, col, value)`` triplets; each process reads
only its own row range.
"""

# %%
import torch.distributed as dist

from deepmc import CompressedDeepMatrixCompletion
from deepmc.datasets import make_problem

# torchrun sets RANK, WORLD_SIZE and the rendezvous; gloo runs on the CPU, NCCL on CUDA.
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()

# Every process builds the same seeded problem here; a real job would read only its
# own row range of the data (as ``deepmc fit`` does).
problem = make_problem("B", random_state=0)

# Inside an initialised process group the estimator fits on the observed entries, split
# by row ranges across the processes, with the same seed everywhere.
est = CompressedDeepMatrixCompletion(rank=5, device="cpu", random_state=0)
est.fit(problem.train)

if rank == 0:
    print(f"{world} processes, {est.n_iter_} steps, error {problem.recovery_error(est):.2e}")
    print(est.history_.tail())
dist.destroy_process_group()

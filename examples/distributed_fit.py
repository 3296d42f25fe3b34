"""
===================================
A distributed fit with ``torchrun``
===================================

The compressed and the narrow networks fit across processes with
:mod:`torch.distributed`, exactly: the observed entries are split by contiguous row
ranges (balanced by count), each process keeps its rows of ``U``, and ``V`` and the cores
are replicated. Every step all-reduces one buffer of ``n·k + L·k² + 2`` numbers (the
gradients of the replicated parts, the loss and the count), whatever the number of
observations, so the iterates are those of single-process gradient descent up to the
order of summation. The full-width network stays single-process.

This script is shown but not run by the documentation build: it is meant to be started
on several processes. Run it with ``torchrun`` (gloo on the CPU, NCCL on CUDA, one GPU
per process)::

    torchrun --standalone --nproc-per-node 2 distributed_fit.py

Without ``torchrun`` it is an ordinary single-process fit. The command line does the
same for a CSV or Parquet file of ``(row, col, value)`` triplets, each process reading
only its own row range, and writes the model directory shard by shard::

    deepmc fit --data ratings.csv --rank 10 --output model/
    torchrun --standalone --nproc-per-node 2 -m deepmc fit \\
        --data ratings.csv --rank 10 --output model/

Across machines, start the same command on each machine with a rendezvous endpoint;
``--max-restarts`` restarts a failed job, which resumes from its last checkpoint::

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \\
        --rdzv-endpoint HOST:29400 --max-restarts 3 \\
        -m deepmc fit --data ratings.parquet --rank 10 --output /shared/model/
"""

# %%
from deepmc import CompressedDeepMatrixCompletion
from deepmc.datasets import make_problem
from deepmc.distributed import fit, init_from_env, load_model, shard_observations

# The process group from torchrun's environment (a world of one without torchrun).
comm = init_from_env()

# %%
# Each process takes its own rows
# -------------------------------
# Every process builds the same seeded problem here and keeps only its row range of the
# observed entries; with a file, ``read_shard("ratings.csv", comm=comm)`` reads only
# those rows from disk.
problem = make_problem("B", random_state=0)  # 1000 × 1000, rank 5, 20 % observed
shard = shard_observations(problem.train, comm=comm)

# %%
# Fit together
# ------------
# Every process runs the same estimator with the same seed; checkpoints are written at
# the checks, so a job restarted by ``torchrun --max-restarts`` resumes where it stopped
# and ends with the model of an uninterrupted run.
model = fit(
    CompressedDeepMatrixCompletion(rank=5, random_state=0),
    shard,
    comm=comm,
    checkpoint_dir="checkpoints",
)
model.save("model", comm=comm)  # every process its rows, marked complete last

# %%
# Use the model
# -------------
# :func:`~deepmc.distributed.load_model` reads the directory back as an ordinary fitted
# estimator, on any machine.
if comm.rank == 0:
    est = load_model("model")
    print(f"{comm.world_size} process(es), {est.n_iter_} steps")
    print(f"recovery error {problem.recovery_error(est):.2e}")

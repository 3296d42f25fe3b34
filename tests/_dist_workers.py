"""Worker functions of the distributed tests (imported by the spawned processes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, world: int, tmp: str, fn: Callable, args: tuple, timeout: float) -> None:
    import datetime

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp}/rendezvous",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout),
    )
    try:
        out = fn(rank, world, Path(tmp), *args)
        torch.save(out, Path(tmp) / f"result-{rank}.pt")
        # meet before tearing the group down: a rank that destroys its group while a
        # peer still talks to it can abort the peer at exit under load
        try:
            dist.barrier()
        except RuntimeError:  # a peer ended on purpose (the killed-rank test)
            pass
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_world(world: int, tmp: Path, fn: Callable, *args, timeout: float = 60.0) -> list:
    """Run ``fn(rank, world, tmp, *args)`` on ``world`` spawned gloo ranks; their results.

    A rank that ended without returning (killed on purpose) has ``None``.
    """
    mp.spawn(_entry, args=(world, str(tmp), fn, args, timeout), nprocs=world, join=True)
    paths = [tmp / f"result-{r}.pt" for r in range(world)]
    return [torch.load(p, weights_only=False) if p.exists() else None for p in paths]

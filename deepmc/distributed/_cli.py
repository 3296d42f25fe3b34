"""``deepmc fit``: fit a triplet file, in one process or under ``torchrun``.

The same command runs as an ordinary single-process fit or, unchanged, on every rank of
``torchrun --nproc-per-node N [--nnodes K …]``: each rank reads only its row range of
the file, the ranks fit together, and the model directory is written shard by shard
and marked complete last. Only rank 0 prints.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

__all__ = ["configure_parser", "run_fit"]


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``deepmc fit`` to ``parser`` and set its handler."""
    parser.description = (
        "Fit a deep matrix completion network to a CSV or Parquet file of (row, col, value) "
        "triplets. Runs as one process, or under torchrun across processes and machines."
    )
    parser.add_argument("--data", required=True, help="CSV or Parquet file of triplets")
    parser.add_argument(
        "--rank", type=int, required=True, help="r̂, an over-estimate of the matrix rank"
    )
    parser.add_argument("--output", required=True, help="directory for the fitted model")
    parser.add_argument(
        "--method",
        default="compressed",
        choices=["compressed", "compressed-no-dlr", "narrow"],
        help="the network (the full-width one is single-process only)",
    )
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--init", default="parsimony", choices=["parsimony", "spectral", "random"])
    parser.add_argument(
        "--solver",
        default="auto",
        choices=["auto", "gd"],
        help="auto: prune and polish; gd: the papers' plain constant-step GD",
    )
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--check-every", type=int, default=25)
    parser.add_argument("--lr", default="auto", help="'auto' or a number")
    parser.add_argument("--init-scale", default="auto", help="'auto' or a number")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default=None, choices=["float32", "float64"])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument(
        "--columns", default=None, help="row,col,value column names or positions (default: 0,1,2)"
    )
    parser.add_argument(
        "--header", default="auto", choices=["auto", "yes", "no"], help="CSV header line"
    )
    parser.add_argument(
        "--index-base", type=int, default=0, help="index of the first row/column in the file"
    )
    parser.add_argument("--shape", type=int, nargs=2, default=None, metavar=("M", "N"))
    parser.add_argument(
        "--checkpoint-dir", default=None, help="default: OUTPUT/checkpoints; 'none' disables"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="iterations (default: every check)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds a rank waits for the others before failing",
    )
    parser.add_argument("--verbose", type=int, default=0)
    parser.set_defaults(func=run_fit)
    return parser


def _number_or_auto(text: str, name: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"deepmc fit: --{name} expects 'auto' or a number, got {text!r}") from None


def _columns(text: str | None) -> list | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    return [int(p) if p.isdigit() else p for p in parts]


def run_fit(args: argparse.Namespace) -> int:
    """Handler of ``deepmc fit``."""
    from pathlib import Path

    import torch.distributed as dist

    from ..models import make_estimator
    from ._checkpoint import unmark
    from ._comm import init_from_env
    from ._fit import fit
    from ._shard import read_shard

    started_group = not (dist.is_available() and dist.is_initialized())
    comm = init_from_env(timeout=args.timeout, device=args.device)
    started_group = started_group and comm.distributed
    try:
        t0 = time.perf_counter()
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        unmark(output, comm)  # a directory being rewritten never looks complete
        shard = read_shard(
            args.data,
            comm=comm,
            shape=None if args.shape is None else tuple(args.shape),
            columns=_columns(args.columns),
            header={"auto": None, "yes": True, "no": False}[args.header],
            index_base=args.index_base,
        )
        params = {
            "depth": args.depth,
            "solver": args.solver,
            "max_iter": args.max_iter,
            "tol": args.tol,
            "check_every": args.check_every,
            "lr": _number_or_auto(args.lr, "lr"),
            "init_scale": _number_or_auto(args.init_scale, "init-scale"),
            "random_state": args.seed,
            "dtype": args.dtype,
            "device": args.device,
            "verbose": args.verbose,
        }
        if args.method != "narrow":
            params["init"] = args.init
        estimator = make_estimator(args.method, rank=args.rank, **params)
        ckpt = args.checkpoint_dir
        ckpt = None if ckpt == "none" else Path(ckpt) if ckpt else output / "checkpoints"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fit(
                estimator, shard, comm=comm, checkpoint_dir=ckpt,
                checkpoint_every=args.checkpoint_every,
            )  # fmt: skip
        model.save(output, comm)
        if comm.rank == 0:
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            m, n = shard.shape
            last = model.history.iloc[-1]
            print(
                f"deepmc fit: {args.method} network, {m}x{n} matrix, "
                f"{shard.partition.n_observed} observed entries, {comm.world_size} process(es); "
                f"{model.n_iter} iterations ({model.stop}), relative training residual "
                f"{last['residual']:.3e}, {time.perf_counter() - t0:.1f} s; model written to "
                f"{output}"
            )
    finally:
        if started_group and dist.is_initialized():
            dist.destroy_process_group()
    return 0

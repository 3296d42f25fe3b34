"""``deepmc fit``: fit a triplet file, in one process or under ``torchrun``.

The same command runs as an ordinary single-process fit or, unchanged, on every rank of
``torchrun --nproc-per-node N [--nnodes K …]``: each rank reads only its row range of
the file, the ranks fit together, and the model is written beside the previous one and
switched in last. Only rank 0 prints.

This module imports nothing heavy at import time, so that ``deepmc fit --help`` is
immediate; PyTorch and the fit are imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any

__all__ = ["configure_parser", "run_fit"]

#: Exit status of a user error (as argparse's usage errors), and of a failed job.
USAGE_ERROR, FAILURE = 2, 1


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _number_or_auto(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``deepmc fit`` to ``parser`` and set its handler."""
    parser.description = (
        "Fit a deep matrix completion network to a CSV or Parquet file of (row, col, value) "
        "triplets. Runs as one process, or under torchrun across processes and machines. "
        "Checkpoints are written as it goes: after an interruption (Ctrl-C, SIGTERM, a "
        "killed process), run the same command again to resume. Exit status: 0 done, "
        "1 failed, 2 usage or data error, 128+N stopped by signal N."
    )
    for add in (_model_options, _ratings_options, _solver_options, _file_options, _run_options):
        add(parser)
    parser.set_defaults(func=run_fit)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The data, the network and where the model goes."""
    parser.add_argument("--data", required=True, help="CSV or Parquet file of triplets")
    parser.add_argument(
        "--rank", type=_int, required=True, help="r̂, an over-estimate of the matrix rank"
    )
    parser.add_argument("--output", required=True, help="directory for the fitted model")
    parser.add_argument(
        "--method",
        default="compressed",
        choices=["compressed", "compressed-no-dlr", "narrow"],
        help="the network (the full-width one is single-process only)",
    )
    parser.add_argument("--depth", type=_int, default=3)


def _ratings_options(parser: argparse.ArgumentParser) -> None:
    """``--ratings`` and its validation slice."""
    parser.add_argument(
        "--ratings",
        action="store_true",
        help="fit ratings as deepmc.RatingsCompletion does: the global mean and regularised "
        "user and item biases are fitted first and the network completes their residuals, "
        "stopped at the best RMSE on a seeded validation slice of every process's ratings "
        "(--validation-fraction) and restored to that iterate; predictions of the loaded "
        "model are clipped to the observed rating range. Its defaults: --init spectral "
        "--solver gd --max-iter 2000 --tol 1e-4 --check-every 5 --lr 0.3 --init-scale 0.1, "
        "weight decay 0.01. "
        "No checkpoints (the fit is short)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=0.1,
        help="with --ratings: the fraction of the ratings held out for early stopping",
    )


def _solver_options(parser: argparse.ArgumentParser) -> None:
    """The initialisation, the solver's settings, seed, dtype and device."""
    parser.add_argument(
        "--init", default=None, choices=["parsimony", "spectral", "random"],
        help="default: parsimony (--ratings: spectral)",
    )  # fmt: skip
    parser.add_argument(
        "--solver",
        default=None,
        choices=["auto", "gd"],
        help="auto: prune and polish; gd: the papers' plain constant-step GD "
        "(default: auto; --ratings: gd)",
    )
    parser.add_argument("--max-iter", type=_int, default=None, help="default: 20000")
    parser.add_argument("--tol", type=_number, default=None, help="default: 1e-6")
    parser.add_argument("--check-every", type=_int, default=None, help="default: 25")
    parser.add_argument(
        "--lr", type=_number_or_auto, default=None, help="'auto' or a number (default: auto)"
    )
    parser.add_argument(
        "--init-scale",
        type=_number_or_auto,
        default=None,
        help="'auto' or a number (default: auto)",
    )
    parser.add_argument("--seed", type=_int, default=0)
    parser.add_argument("--dtype", default=None, choices=["float32", "float64"])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _file_options(parser: argparse.ArgumentParser) -> None:
    """How the triplet file is read."""
    parser.add_argument(
        "--columns", default=None, help="row,col,value column names or positions (default: 0,1,2)"
    )
    parser.add_argument(
        "--header", default="auto", choices=["auto", "yes", "no"], help="CSV header line"
    )
    parser.add_argument(
        "--index-base",
        type=_int_at_least(0),
        default=0,
        help="index of the first row/column in the file (1 for MovieLens)",
    )
    parser.add_argument(
        "--remap",
        action="store_true",
        help="map the distinct row and column ids (any integers or strings) to 0, 1, …; "
        "the maps are saved with the model",
    )
    parser.add_argument("--shape", type=_int_at_least(1), nargs=2, default=None, metavar=("M", "N"))


def _run_options(parser: argparse.ArgumentParser) -> None:
    """Checkpoints, the model directory, waiting for the ranks, output."""
    parser.add_argument(
        "--checkpoint-dir", default=None, help="default: OUTPUT/checkpoints; 'none' disables"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_int_at_least(1),
        default=None,
        help="iterations (default: every check)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a model of other data in OUTPUT and discard another run's checkpoints",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=300.0,
        help="seconds a rank waits for the others before failing",
    )
    parser.add_argument("--verbose", type=_int, default=0)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _columns(text: str | None) -> list | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    return [int(p) if p.isdigit() else p for p in parts]


def _flag(param: str) -> str:
    return {"random_state": "--seed", "width": "--rank"}.get(param, "--" + param.replace("_", "-"))


#: The options' defaults outside ``--ratings``.
_DEFAULTS = {
    "solver": "auto", "max_iter": 20_000, "tol": 1e-6, "check_every": 25, "lr": "auto",
    "init_scale": "auto",
}  # fmt: skip


def _estimator(args: argparse.Namespace) -> Any:
    """The estimator of the options, validated as its ``fit`` validates it."""
    from .._validation import InvalidParameterError, check_params
    from ..models import make_estimator
    from ._ratings import RATINGS_DEFAULTS

    given = {
        "solver": args.solver,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "check_every": args.check_every,
        "lr": args.lr,
        "init_scale": args.init_scale,
    }
    defaults = dict(_DEFAULTS)
    if args.ratings:
        defaults.update(RATINGS_DEFAULTS)
    params = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    params.update(
        depth=args.depth, random_state=args.seed, dtype=args.dtype, device=args.device,
        verbose=args.verbose,
    )  # fmt: skip
    if args.method != "narrow":
        params["init"] = args.init or ("spectral" if args.ratings else "parsimony")
    estimator = make_estimator(args.method, rank=args.rank, **params)
    try:
        check_params(estimator)
    except InvalidParameterError as exc:
        param = str(exc).split("'")[1] if "'" in str(exc) else ""
        note = " (the narrow network's width is 2 × --rank)" if param == "width" else ""
        raise InvalidParameterError(f"argument {_flag(param)}: {exc}{note}") from None
    return estimator


def _check_output(output: Any, shard: Any, comm: Any, overwrite: bool) -> None:
    """Refuse to replace a model of other data in ``output`` unless ``overwrite``."""
    from ._model_io import saved_data_fingerprint

    found = saved_data_fingerprint(output) if comm.rank == 0 else None
    other = found is not None and found != shard.fingerprint and not overwrite
    if comm.max_int(int(other)):
        raise FileExistsError(
            f"{output} holds a model fitted to other data; pass --overwrite to replace it, "
            "or choose another --output."
        )


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch.distributed as dist

    from ._checkpoint import CheckpointWarning, agree
    from ._comm import init_from_env
    from ._fit import fit
    from ._ratings import ratings_shard
    from ._shard import read_shard

    estimator = _estimator(args)
    started_group = not (dist.is_available() and dist.is_initialized())
    comm = init_from_env(timeout=args.timeout, device=args.device)
    started_group = started_group and comm.distributed
    try:
        t0 = time.perf_counter()
        output = Path(args.output)
        agree(comm, lambda: output.mkdir(parents=True, exist_ok=True), f"to create {output}")
        shard = read_shard(
            args.data,
            comm=comm,
            shape=None if args.shape is None else tuple(args.shape),
            columns=_columns(args.columns),
            header={"auto": None, "yes": True, "no": False}[args.header],
            index_base=args.index_base,
            remap=args.remap,
        )
        _check_output(output, shard, comm, args.overwrite)
        ckpt = args.checkpoint_dir
        ckpt = None if ckpt == "none" else Path(ckpt) if ckpt else output / "checkpoints"
        validation = terms = None
        if args.ratings:
            shard, validation, terms = ratings_shard(
                shard, validation_fraction=args.validation_fraction, seed=args.seed, comm=comm
            )
            ckpt = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = fit(
                estimator, shard, comm=comm, checkpoint_dir=ckpt,
                checkpoint_every=args.checkpoint_every, overwrite=args.overwrite,
                validation=validation,
            )  # fmt: skip
            model.ratings = terms
            model.save(output, comm)
        for w in caught:  # a damaged checkpoint file is named by the rank that read it
            if comm.rank == 0 or issubclass(w.category, CheckpointWarning):
                who = f" (rank {comm.rank})" if comm.rank else ""
                print(f"warning{who}: {w.message}", file=sys.stderr)
        if comm.rank == 0:
            m, n = shard.shape
            last = model.history.iloc[-1]
            val = ""
            if args.ratings:
                best = model.history["val_rmse"].min()
                val = f", best validation RMSE {best:.4f} (ratings {terms.low:g} to {terms.high:g})"
            print(
                f"deepmc fit: {args.method} network, {m}x{n} matrix, "
                f"{shard.partition.n_observed} observed entries, {comm.world_size} process(es); "
                f"{model.n_iter} iterations ({model.stop}), relative training residual "
                f"{last['residual']:.3e}{val}, {time.perf_counter() - t0:.1f} s; model written to "
                f"{output}"
            )
        if started_group:
            # every rank's collectives have completed before any rank tears gloo down: a
            # rank destroying its group while a peer still works in one can abort at exit
            comm.barrier()
    finally:
        if started_group and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _report(exc: BaseException) -> int:
    """One line on stderr for ``exc``; the exit status. Unknown errors are re-raised."""
    import torch.distributed as dist

    from .._solver import DivergenceError
    from ._checkpoint import PeerFailure
    from ._comm import RankFailure
    from ._signals import FitInterrupted

    # the launcher's RANK, or the rank in a process group started by the caller
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    echoed = isinstance(exc, (PeerFailure, RankFailure, FitInterrupted))
    prefix = f"deepmc fit (rank {rank})" if rank else "deepmc fit"
    if isinstance(exc, FitInterrupted):
        status, text = 128 + exc.signum, f"{prefix}: {exc}"
    elif isinstance(exc, KeyboardInterrupt):
        status, text = 130, f"{prefix}: interrupted; no model was written."
    elif isinstance(exc, (PeerFailure, RankFailure, DivergenceError)):
        status, text = FAILURE, f"{prefix}: {exc}"
    elif isinstance(exc, (ValueError, TypeError, OSError, ImportError)):
        status, text = USAGE_ERROR, f"{prefix}: error: {exc}"
    else:
        raise exc
    if rank == 0 or not echoed:
        print(" ".join(text.split()), file=sys.stderr)
    return status


def run_fit(args: argparse.Namespace) -> int:
    """Handler of ``deepmc fit``: the fit, with errors reported on one line.

    A user error (an option out of range, a malformed file, a checkpoint or model of
    other data) exits with status 2, a failed job (another rank died, the fit diverged)
    with 1, and a fit stopped by signal ``N`` with ``128 + N``; ``--debug`` shows the
    traceback instead.
    """
    try:
        return _run(args)
    except BaseException as exc:
        if args.debug or isinstance(exc, SystemExit):
            raise
        return _report(exc)

"""``deepmc compare``: arguments, their checks, and the handler.

Mistakes in the arguments (an unknown method, a ``--problem`` that is neither a
reference problem, a valid synthetic spec nor a readable ratings file, a non-positive
count, an unavailable device) end in argparse's one-line usage error with exit status 2;
failures while fitting still raise.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Callable
from typing import Any

from ._report import format_table
from ._run import compare
from ._tasks import METHODS, load_task

__all__ = ["check_device", "configure_parser"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _number(kind: type, test: Callable[[Any], bool], what: str) -> Callable[[str], int | float]:
    """An argparse ``type`` that parses ``kind`` and requires ``test`` (``what`` says how)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: v > 0 and v != float("inf"), "a positive number")
nonnegative_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
open_fraction = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
depth_int = _number(int, lambda v: v >= 2, "an integer >= 2 (the depth L)")


def method_list(text: str) -> list[str]:
    """Parse ``--methods``: comma-separated names among :data:`METHODS`."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names among {','.join(METHODS)}, got {text!r}"
        )
    return names


def device_name(text: str) -> str:
    """Parse ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:K``."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:K, got {text!r}")
    return text


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """Usage error if ``device`` names a CUDA device that PyTorch cannot see."""
    from .._device import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        parser.error(f"argument --device: {exc}")


def _cli(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    check_device(parser, args.device)
    try:
        task = load_task(
            args.problem,
            rank=args.rank,
            depth=args.depth,
            seed=args.seed,
            test_fraction=args.test_fraction,
            cache_dir=args.cache_dir,
            download=args.download,
        )
    except (ValueError, OSError) as exc:
        message = str(exc).removeprefix("problem: ")
        # the loader's advice, in the command line's terms
        message = message.replace("Pass download=True", "Pass --download")
        message = message.replace("pass its path to load_movielens()", "pass its path as --problem")
        parser.error(f"argument --problem: {message}")
    table = compare(
        task,
        methods=args.methods,
        no_dlr=args.no_dlr,
        init_scale=args.init_scale,
        max_iter=args.max_iter,
        tol=args.tol,
        check_every=args.check_every,
        device=args.device,
        seed=args.seed,
        output_dir=args.output_dir,
        singular_values=args.singular_values,
        verbose=args.verbose,
    )
    print(format_table(table))
    written = ", ".join(["summary.csv", "history_*.csv", *table.attrs["figures"]])
    print(f"wrote {table.attrs['output_dir']}/ ({written})")
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``deepmc compare`` arguments to ``parser`` and set its handler.

    Parameters
    ----------
    parser : argparse.ArgumentParser

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.description = (
        "Fit the full-width, narrow and compressed networks to one problem from one seed; "
        "write histories (CSV), figures, and print a summary table."
    )
    add = parser.add_argument
    add(
        "--problem",
        default="A",
        help="A, B, C; a synthetic spec like 300x200,rank=4,fraction=0.25; or a MovieLens "
        "file, folder or release name (ml-100k, ...)",
    )
    add(
        "--methods",
        type=method_list,
        default=["full", "narrow", "compressed"],
        help=f"comma-separated, among {','.join(METHODS)} (default: full,narrow,compressed)",
    )
    add("--no-dlr", action="store_true", help="also run compressed with γ=0")
    add("--rank", type=positive_int, default=None, help="r̂ (default: true rank / 10)")
    add("--depth", type=depth_int, default=None)
    add("--init-scale", type=positive_float, default=None, help="ε (default: the estimators' auto)")
    add("--max-iter", type=positive_int, default=None, help="default: estimators' (ratings: 2000)")
    add("--tol", type=nonnegative_float, default=None, help="default: estimators' (ratings: 1e-4)")
    add("--check-every", type=positive_int, default=25)
    add("--device", type=device_name, default="auto", help="auto, cpu, cuda or cuda:K")
    add("--seed", type=nonnegative_int, default=0)
    add("--output-dir", default="compare-output")
    add(
        "--singular-values",
        action="store_true",
        help="also plot the top singular values of the end-to-end matrix over training",
    )
    add("--test-fraction", type=open_fraction, default=0.2, help="ratings hold-out")
    add("--cache-dir", default=None, help="folder of MovieLens releases")
    add(
        "--download",
        action="store_true",
        help="fetch a MovieLens release (ml-100k) missing from the cache folder, sha256-checked",
    )
    add("--verbose", type=nonnegative_int, default=1, help="progress bars (0 to hide)")
    parser.set_defaults(func=functools.partial(_cli, parser))
    return parser

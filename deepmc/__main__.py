"""The ``deepmc`` command line: ``deepmc demo``, ``deepmc compare`` and ``deepmc fit``."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Fit the compressed and the full-width network to a synthetic problem."""
    import warnings

    from sklearn.base import clone

    from .compare._cli import check_device
    from .datasets import make_problem
    from .models import make_estimator

    check_device(parser, args.device)

    problem = make_problem(args.problem, random_state=args.seed)
    m, n = problem.shape
    print(
        f"problem {args.problem}: {m}x{n}, rank {problem.rank}, "
        f"{problem.train.n_observed} observed entries ({problem.train.n_observed / (m * n):.0%}), "
        f"depth {problem.depth}; the estimators' defaults (init_scale 'auto')"
    )
    estimators = (
        ("compressed", make_estimator("compressed", rank=problem.rank, device=args.device)),
        ("full-width", make_estimator("full", device=args.device)),
    )
    # One-time library start-up (kernel dispatch, thread pools, CUDA context) is paid on
    # a tiny problem first, so it is not billed to whichever network is timed first.
    tiny = make_problem(shape=(12, 10), rank=1, fraction=0.5, random_state=0)
    for _, est in estimators:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clone(est).set_params(max_iter=3, random_state=0).fit(tiny.train)
    rows = []
    for label, est in estimators:
        est.set_params(depth=problem.depth, random_state=args.seed, verbose=args.verbose)
        if args.init_scale is not None:
            est.set_params(init_scale=args.init_scale)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            est.fit(problem.train)
        seconds = time.perf_counter() - t0
        error = problem.recovery_error(est)
        rows.append((label, est.n_iter_, seconds, error))
        for w in caught:
            print(f"  warning ({label}): {w.message}")
    print(f"{'network':<12}{'iterations':>12}{'seconds':>10}{'recovery error':>16}")
    for label, it, sec, err in rows:
        print(f"{label:<12}{it:>12d}{sec:>10.3f}{err:>16.2e}")
    print(f"speed-up of compressed over full width: {rows[1][2] / rows[0][2]:.1f}x (wall clock)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepmc`` console script.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status (argparse exits with status 2 on a usage error).
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="deepmc", description="Deep matrix completion with compressed deep linear networks."
    )
    parser.add_argument("--version", action="version", version=f"deepmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "demo": sub.add_parser(
            "demo", help="fit the compressed and full-width networks to a reference problem"
        ),
        "compare": sub.add_parser("compare", help="compare networks on one problem"),
        "fit": sub.add_parser("fit", help="fit a triplet file (one process, or under torchrun)"),
    }
    # only the command that runs is configured: its module may import PyTorch, which
    # `deepmc --version` and `deepmc --help` do without
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in commands:
        _CONFIGURE[command](commands[command])
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def _configure_demo(demo: argparse.ArgumentParser) -> None:
    from .compare._cli import device_name, nonnegative_int, positive_float

    demo.add_argument("--problem", default="A", choices=["A", "B"], help="reference problem")
    demo.add_argument("--device", type=device_name, default="auto", help="auto, cpu or cuda")
    demo.add_argument("--seed", type=nonnegative_int, default=0)
    demo.add_argument(
        "--init-scale",
        type=positive_float,
        default=None,
        help="ε (default: the estimators' auto; the papers' reference: 0.01 on A, 0.001 on B)",
    )
    demo.add_argument("--verbose", type=nonnegative_int, default=0)
    demo.set_defaults(func=functools.partial(_demo, demo))


def _configure_compare(parser: argparse.ArgumentParser) -> None:
    from .compare import configure_parser

    configure_parser(parser)


def _configure_fit(parser: argparse.ArgumentParser) -> None:
    from .distributed._cli import configure_parser

    configure_parser(parser)


_CONFIGURE = {"demo": _configure_demo, "compare": _configure_compare, "fit": _configure_fit}


if __name__ == "__main__":
    sys.exit(main())

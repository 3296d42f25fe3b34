"""deepmc: deep matrix completion with full-width, narrow and compressed deep linear networks.

The compressed network trains ``L`` cores of size ``2r̂ × 2r̂`` and two factors at a
discrepant learning rate, which the law of parsimony in gradient descent says is
equivalent to the full-width network, and never builds an ``m × n`` matrix.
"""

import importlib
import os
from typing import Any

# An OpenMP thread that finishes a parallel region spins GOMP_SPINCOUNT times (300,000 by
# default) before it sleeps. A fit's step is many short parallel regions, so with the
# default two fits at once, or a fit beside other work, spin on each other's cores
# (benchmarks/loaded_ratio.py). libgomp reads the variable when PyTorch loads it, so it
# only takes effect when deepmc is imported before torch; a value already set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.1.0"

#: Public name → the module defining it. They are imported on first use, so that
#: ``import deepmc`` (and ``deepmc --version`` or ``--help``) does not load PyTorch.
_EXPORTS = {
    "CompressedDeepMatrixCompletion": ".models",
    "DeepMatrixCompletion": ".models",
    "DivergenceError": "._solver",
    "Observations": "._validation",
    "RatingsCompletion": ".ratings",
    "SingularValuesDisplay": ".plotting",
    "plot_history": ".plotting",
    "recovery_error": ".metrics",
    "relative_error": ".metrics",
    "rmse": ".metrics",
    "thread_limit": "._threads",
}
_SUBMODULES = {
    "compare",
    "datasets",
    "distributed",
    "init",
    "metrics",
    "models",
    "plotting",
    "ratings",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})

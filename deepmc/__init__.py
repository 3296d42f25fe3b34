"""deepmc: deep matrix completion with full-width, narrow and compressed deep linear networks.

The compressed network trains ``L`` cores of size ``2r̂ × 2r̂`` and two factors at a
discrepant learning rate, which the law of parsimony in gradient descent says is
equivalent to the full-width network, and never builds an ``m × n`` matrix.
"""

from ._solver import DivergenceError
from ._threads import thread_limit
from ._validation import Observations
from .metrics import recovery_error, relative_error, rmse
from .models import CompressedDeepMatrixCompletion, DeepMatrixCompletion
from .plotting import SingularValuesDisplay, plot_history
from .ratings import RatingsCompletion

__version__ = "0.1.0"

__all__ = [
    "CompressedDeepMatrixCompletion",
    "DeepMatrixCompletion",
    "DivergenceError",
    "Observations",
    "RatingsCompletion",
    "SingularValuesDisplay",
    "__version__",
    "plot_history",
    "recovery_error",
    "relative_error",
    "rmse",
    "thread_limit",
]

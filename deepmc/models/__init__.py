"""The networks: full width / narrow (:class:`DeepMatrixCompletion`) and compressed."""

from ._compressed import CompressedDeepMatrixCompletion
from ._full import DeepMatrixCompletion

__all__ = ["CompressedDeepMatrixCompletion", "DeepMatrixCompletion"]

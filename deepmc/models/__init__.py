"""The networks: full width / narrow (:class:`DeepMatrixCompletion`) and compressed.

:func:`make_estimator` is the one place where a method name becomes an estimator; the
command line, the comparison, the benchmarks and :class:`deepmc.RatingsCompletion` all go
through it.
"""

from __future__ import annotations

from typing import Any

from ._compressed import CompressedDeepMatrixCompletion
from ._full import DeepMatrixCompletion

__all__ = ["METHODS", "CompressedDeepMatrixCompletion", "DeepMatrixCompletion", "make_estimator"]

#: The networks by method name, with how tables and legends name them: ``"full"`` is the
#: full-width network (width ``max(m, n)``, ε-orthogonal init: the baseline),
#: ``"narrow"`` the same network with width ``2*rank``, ``"compressed"`` the network
#: ``U W̃_L ⋯ W̃_1 Vᵀ`` with ``2*rank × 2*rank`` cores and factors at γη, and
#: ``"compressed-no-dlr"`` the compressed network with frozen factors (γ = 0). The command
#: line, :mod:`deepmc.compare` and the benchmarks take these names.
METHODS: dict[str, str] = {
    "full": "full width",
    "narrow": "narrow (2r̂)",
    "compressed": "compressed",
    "compressed-no-dlr": "compressed, γ=0",
}


def make_estimator(
    method: str, rank: int | None = None, **params: Any
) -> DeepMatrixCompletion | CompressedDeepMatrixCompletion:
    """The estimator of ``method``.

    Parameters
    ----------
    method : {"full", "narrow", "compressed", "compressed-no-dlr"}
        See :data:`METHODS`.
    rank : int, default=None
        r̂, an over-estimate of the rank: the compressed network's ``rank`` and half the
        narrow network's width. Required by every method but ``"full"`` (ignored there).
    **params
        Passed to the estimator (``depth``, ``max_iter``, ``tol``, ``device``, …).

    Returns
    -------
    DeepMatrixCompletion or CompressedDeepMatrixCompletion
        Unfitted.

    Examples
    --------
    >>> from deepmc.models import make_estimator
    >>> make_estimator("narrow", rank=5, depth=3)
    DeepMatrixCompletion(width=10)
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}.")
    if method == "full":
        return DeepMatrixCompletion(**params)
    if rank is None:
        raise ValueError(f"method {method!r} needs a rank (r̂, an over-estimate of the rank).")
    if method == "narrow":
        return DeepMatrixCompletion(width=2 * rank, **params)
    if method == "compressed-no-dlr":
        params = {**params, "factor_lr_ratio": 0.0}
    return CompressedDeepMatrixCompletion(rank=rank, **params)

"""The one spectral analysis of a check that every part of the policy reads.

:class:`SpectralAnalysis` takes the spectrum of the end-to-end ``X`` once per check
(through the network's :meth:`~deepmc.models._network.Network.spectrum`) and hands
out an :class:`Analysis`: the singular values and vectors, the gap (:func:`find_gap`),
the directions learned, and, computed on demand and kept for the rest of the check,
what the residual ``R = s·P_Ω(X − Y)`` has left outside the top directions
(:func:`~deepmc._spectral.escaping_direction`) and along them (:meth:`Analysis.linear`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._data import TrainingData
from .._spectral import LocalRows, ResidualProducts, escaping_direction, find_gap

__all__ = ["INIT_MARGIN", "LINEAR", "OUTLIER", "RESOLUTION", "Analysis", "SpectralAnalysis"]

#: ``σ₁(N) / bulk(N)`` above which a residual direction stands out of the noise bulk.
OUTLIER = 3.0
#: A residual direction weaker than ``σ₁(X) / RESOLUTION`` is below the resolution of
#: the fit (the spurious directions of ε = 0.1 initialisation sit at ≈ 10⁻³ σ₁).
RESOLUTION = 100.0
#: A direction of ``X`` counts as learned once its singular value exceeds this multiple
#: of ``ε^L``, the size of the directions small initialisation leaves behind.
INIT_MARGIN = 10.0
#: A kept direction is in the linear regime, where the ``"rate"`` balance of
#: :func:`~deepmc.models._compressed_spectral.prune_compressed` is safe, once the
#: residual along it is at most this fraction of its singular value:
#: ``|p_iᵀ R q_i| ≤ LINEAR · σ_i``.
LINEAR = 0.1
_TINY = float(np.finfo(float).tiny)


class SpectralAnalysis:
    """Reads the spectrum of ``X`` at a check, once; what an :class:`Analysis` needs.

    Parameters
    ----------
    network : Network
    data : TrainingData
        This process's rows of the observations.
    rows : LocalRows
        How the rows of the matrix are held.
    min_gap : float
        The smallest ratio of consecutive singular values that counts as a gap.
    seed : int
        Of the random start of the subspace iterations.
    """

    def __init__(
        self, network: Any, data: TrainingData, rows: LocalRows, min_gap: float, seed: int
    ) -> None:
        self.network, self.data, self.rows = network, data, rows
        self.min_gap, self.seed = min_gap, seed
        self._last: Analysis | None = None
        self._products: ResidualProducts | None = None
        self._shape: tuple[int, int] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)`` of the whole matrix (``data`` may hold some of its rows)."""
        if self._shape is None:
            m, n = self.data.shape
            self._shape = (self.rows.n_rows(m), n)
        return self._shape

    @property
    def level(self) -> float:
        """:data:`INIT_MARGIN` ``· ε^L``: the singular value of a learned direction."""
        return INIT_MARGIN * float(self.network.init_scale) ** int(self.network.depth)

    @property
    def products(self) -> ResidualProducts:
        """Products with ``R`` on this process's rows (set up at the first use)."""
        if self._products is None:
            self._products = ResidualProducts(self.data)
        return self._products

    def on_omega(self, residual: torch.Tensor) -> torch.Tensor:
        """The residual as a vector on Ω (a dense masked one is gathered)."""
        data = self.data
        return residual if residual.shape == data.y.shape else residual[data.rows, data.cols]

    def forget(self) -> None:
        """Drop the analysis kept for the current check (after a resume)."""
        self._last = None

    def __call__(self, check: Any, pruned: int | None) -> Analysis:
        """The analysis of ``check``: computed at its first call, then the same one.

        ``pruned`` (the rank of a prune, if any) replaces the gap as the kept rank.
        """
        if self._last is not None and self._last.iteration == check.iteration:
            return self._last
        with torch.no_grad():
            P, sigma, Q = self.network.spectrum(check.params, rows=self.rows)
        sig = sigma.detach().to("cpu", torch.float64).numpy()
        keep, ratio = find_gap(sig, self.min_gap)
        if pruned is not None:
            keep = pruned
        learned = int(np.count_nonzero(sig > self.level))
        self._last = Analysis(check.iteration, P, sig, Q, keep, ratio, learned, self, check)
        return self._last


@dataclass
class Analysis:
    """The spectrum of ``X = P diag(σ) Qᵀ`` at one check, and what the residual has left.

    Attributes
    ----------
    iteration : int
    P : Tensor of shape (m, k)
        This process's rows.
    sigma : ndarray of shape (k,)
    Q : Tensor of shape (n, k)
    keep : int
        The directions above the largest gap (or the rank of the prune).
    ratio : float
        The largest ratio of consecutive singular values.
    learned : int
        The directions above :data:`INIT_MARGIN` ``· ε^L``.
    """

    iteration: int
    P: torch.Tensor
    sigma: np.ndarray
    Q: torch.Tensor
    keep: int
    ratio: float
    learned: int
    context: SpectralAnalysis = field(repr=False)
    check: Any = field(repr=False)
    _escape: dict = field(default_factory=dict, repr=False)  # keep -> escaping_direction

    def residual(self) -> torch.Tensor:
        """The check's residual as a vector on Ω."""
        return self.context.on_omega(self.check.residual)

    def escape(self, keep: int) -> tuple:
        """``(left, values, right, bulk)`` of the residual outside the top ``keep`` directions.

        The residual of ``X`` cut to those directions (:func:`escaping_direction`), kept
        for the rest of the check.
        """
        if keep in self._escape:
            return self._escape[keep]
        ctx, data = self.context, self.context.data
        r = self.residual()
        with torch.no_grad():
            if keep < self.sigma.shape[0] and self.sigma[keep] > 0:  # the cut part leaves X
                cut_left = self.P[:, keep:] * torch.as_tensor(self.sigma[keep:]).to(self.P)
                kernels = data.pattern.kernels(self.P.dtype)
                r = r - kernels.sampled(cut_left, self.Q[:, keep:])
            mv, rmv, dense = ctx.products.bind(r)
            fro2 = float(ctx.rows.sum_(r.square().sum())) * data.sampling_scale**2
            gen = torch.Generator().manual_seed(ctx.seed)
            spare = max(1, self.sigma.shape[0] - keep)
            self._escape[keep] = escaping_direction(
                mv, rmv, fro2, self.P[:, :keep], self.Q[:, :keep], ctx.shape,
                n_vectors=spare, generator=gen, dense=dense, rows=ctx.rows,
            )  # fmt: skip
        return self._escape[keep]

    def escaping(self, keep: int) -> bool:
        """Whether a residual direction outside the top ``keep`` stands out of the bulk.

        Out of the bulk by :data:`OUTLIER` and above :data:`RESOLUTION` ``· σ₁(X)``: a
        direction the data still ask for.
        """
        _, values, _, bulk = self.escape(keep)
        s1 = float(values[0]) if values.numel() else 0.0
        floor = self.sigma[0] / RESOLUTION if keep else 0.0
        return s1 > OUTLIER * bulk and s1 > floor

    def linear(self, keep: int) -> float:
        """``max_i |p_iᵀ R q_i| / σ_i`` over the top ``keep`` directions of ``X``.

        ``p_iᵀ R q_i`` estimates ``σ_i − p_iᵀ Y q_i`` (``R = s·P_Ω(X − Y)`` is unbiased
        for ``X − Y`` under uniform sampling): the relative error left along the
        direction.
        """
        if keep == 0:
            return 0.0
        ctx = self.context
        mv, _, _ = ctx.products.bind(self.residual())
        along = ctx.rows.sum_((self.P[:, :keep] * mv(self.Q[:, :keep])).sum(dim=0)).abs()
        sigma = torch.as_tensor(self.sigma[:keep]).to(along)
        return float((along / sigma.clamp_min(_TINY)).max())

    def in_linear_regime(self, keep: int) -> bool:
        """Whether :meth:`linear` is at most :data:`LINEAR`: the top ``keep`` are fitted."""
        return self.linear(keep) <= LINEAR

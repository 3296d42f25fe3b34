"""The observations as the solver sees them: normalised, on the fitting device.

:func:`prepare` turns validated :class:`~deepmc._validation.Observations` into a
:class:`TrainingData` divided by a scale (σ₁ of ``s·P_Ω(Y)``, from :func:`top_spectrum`),
so that the initial scale and the learning rates are relative to the data.
:class:`HeldOut` holds entries that are watched (an evaluation set) or steer early
stopping (a validation set); :func:`split_validation` carves the latter out of the
observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ._kernels import ObservedPattern, PatternKernels
from ._validation import Observations
from .init import top_singular

__all__ = [
    "HeldOut",
    "TrainingData",
    "prepare",
    "split_validation",
    "top_spectrum",
    "validation_mask",
]


@dataclass
class TrainingData:
    """The normalised observations on the fitting device.

    Attributes
    ----------
    shape : tuple of (int, int)
        ``(m, n)``.
    rows, cols : Tensor of shape (N,)
        Coordinates of Ω, sorted by row then column (int64).
    y : Tensor of shape (N,)
        Observed values divided by the scale, in the same order.
    sampling_scale : float
        ``s = m·n / N``.
    pattern : ObservedPattern
        CSR structure of Ω.
    device : torch.device
    dtype : torch.dtype
    y_norm : float
        ``‖P_Ω(Y)‖_F`` divided by the scale.
    """

    shape: tuple[int, int]
    rows: torch.Tensor
    cols: torch.Tensor
    y: torch.Tensor
    sampling_scale: float
    pattern: ObservedPattern
    device: torch.device
    dtype: torch.dtype
    y_norm: float
    _dense: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    def dense_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Y, M)``: the observations and their 0/1 mask as dense ``m × n`` tensors.

        Built on the first call and kept; only the full-width network, which forms
        ``X`` at every step anyway, asks for them.
        """
        if self._dense is None:
            m, n = self.shape
            Y = torch.zeros(m, n, dtype=self.dtype, device=self.device)
            M = torch.zeros(m, n, dtype=self.dtype, device=self.device)
            Y[self.rows, self.cols] = self.y
            M[self.rows, self.cols] = 1.0
            self._dense = (Y, M)
        return self._dense


@dataclass
class HeldOut:
    """Held-out entries with their true values, on the fitting device.

    Attributes
    ----------
    kernels : PatternKernels
        Of the held-out pattern (rows sorted), in the fitting dtype.
    values : Tensor of shape (K,)
        True values in user units, float64, in the pattern's order.
    norm : float
        ``‖values‖``, at least the smallest positive float.
    """

    kernels: PatternKernels
    values: torch.Tensor
    norm: float

    @classmethod
    def from_observations(
        cls, obs: Observations, device: torch.device, dtype: torch.dtype
    ) -> HeldOut:
        """Move ``obs`` to ``device`` and build its sampled-product kernels."""
        pattern = ObservedPattern.from_coo(
            torch.as_tensor(obs.rows, device=device),
            torch.as_tensor(obs.cols, device=device),
            obs.shape,
        )
        values = torch.as_tensor(obs.values, dtype=torch.float64, device=device)
        norm = max(float(torch.linalg.vector_norm(values)), np.finfo(float).tiny)
        return cls(pattern.kernels(dtype), values, norm)

    def errors(self, left: torch.Tensor, right: torch.Tensor, scale: float) -> tuple[float, float]:
        """Relative error and RMSE (user units) of ``scale · left @ right.T`` on these entries.

        The predictions are the sampled product on the held-out pattern, so a large
        held-out set costs about one training step and no ``K × width`` gather is
        formed. The arithmetic stays in torch on the fitting device: only two numbers
        come back, and NumPy's BLAS threads, which spin on after each call, are never
        woken to compete with torch's.
        """
        pred = self.kernels.sampled(left, right)
        diff = pred.to(torch.float64).mul_(scale).sub_(self.values)
        err = float(torch.linalg.vector_norm(diff))
        return err / self.norm, err / math.sqrt(diff.shape[0])


def top_spectrum(
    obs: Observations, k: int, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top-``k`` singular triplets ``(u, σ, v)`` of ``s·P_Ω(Y)``, ``s = m·n/N``.

    ``σ[0]`` is the scale :func:`prepare` divides by; ``u`` and ``v`` feed the
    spectral and parsimony initialisations.
    """
    s = obs.shape[0] * obs.shape[1] / obs.n_observed
    values = np.multiply(obs.values, s, dtype=np.float64)  # one float64 copy, not two
    return top_singular(obs.rows, obs.cols, values, obs.shape, k, generator=generator)


def prepare(
    obs: Observations, device: torch.device, dtype: torch.dtype, *, scale: float
) -> TrainingData:
    """The observations divided by ``scale``, on ``device`` in ``dtype``.

    Parameters
    ----------
    obs : Observations
        Validated, sorted by row then column, at least one entry.
    device : torch.device
    dtype : torch.dtype
    scale : float
        Positive; typically σ₁ of ``s·P_Ω(Y)`` (:func:`top_spectrum`).

    Returns
    -------
    TrainingData
    """
    # in torch: a NumPy BLAS call here would leave its threads spinning into the
    # first training steps (see deepmc.init.top_singular)
    y_norm = float(torch.linalg.vector_norm(torch.as_tensor(obs.values, dtype=torch.float64)))
    rows = torch.as_tensor(obs.rows, device=device)
    cols = torch.as_tensor(obs.cols, device=device)
    y = torch.as_tensor(np.divide(obs.values, scale, dtype=np.float64), dtype=dtype, device=device)
    return TrainingData(
        shape=obs.shape,
        rows=rows,
        cols=cols,
        y=y,
        sampling_scale=obs.shape[0] * obs.shape[1] / obs.n_observed,
        pattern=ObservedPattern.from_coo(rows, cols, obs.shape),
        device=device,
        dtype=dtype,
        y_norm=y_norm / scale,
    )


def validation_mask(
    n: int, fraction: float, rng: np.random.RandomState, *, noun: str = "entries"
) -> np.ndarray:
    """A boolean mask marking ``round(fraction · n)`` of ``n`` items, drawn from ``rng``.

    Raises
    ------
    ValueError
        When the training or the validation part would be empty (``noun`` names the
        items in the message).
    """
    n_val = round(fraction * n)
    if n_val < 1 or n_val >= n:
        raise ValueError(
            f"validation_fraction={fraction} leaves {n - n_val} training and {n_val} "
            f"validation {noun} out of {n}; both must be at least 1."
        )
    is_val = np.zeros(n, dtype=bool)
    is_val[rng.permutation(n)[:n_val]] = True
    return is_val


def split_validation(
    obs: Observations, fraction: float, rng: np.random.RandomState
) -> tuple[Observations, Observations]:
    """``(train, validation)``: ``fraction`` of the observations carved out at random."""
    is_val = validation_mask(obs.n_observed, fraction, rng)

    def part(sel: np.ndarray) -> Observations:
        return Observations(obs.rows[sel], obs.cols[sel], obs.values[sel], obs.shape)

    return part(~is_val), part(is_val)

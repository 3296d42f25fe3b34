"""Ratings on a row shard: global mean, biases, a validation slice, clipping.

The distributed counterpart of one member of :class:`deepmc.RatingsCompletion`: the
mean and the regularised user / item biases of :func:`deepmc.ratings.fit_biases` are
fitted on the training ratings (the user biases are row-local, the item sums are
all-reduced), the network completes their residuals, stopped early on a seeded
validation slice of every rank's ratings (its RMSE summed over the ranks, so every
rank stops at the same check), and predictions are clipped to the observed range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .._data import HeldOut
from .._ratings_fit import _BIAS_SWEEPS
from .._validation import Observations, check_indices
from ._comm import Comm
from ._shard import Shard

__all__ = ["RatingsModel", "RatingsTerms", "ShardedHeldOut", "ratings_shard"]

#: ``deepmc.RatingsCompletion``'s defaults for the network, used by ``deepmc fit --ratings``.
RATINGS_DEFAULTS = {
    "init_scale": 0.1,
    "lr": 0.3,
    "weight_decay": 0.01,
    "max_iter": 2000,
    "tol": 1e-4,
    "check_every": 5,
    "n_iter_no_change": 8,
    "solver": "gd",
}


@dataclass
class RatingsTerms:
    """What the network's completion is added to, and the range it is clipped to.

    Attributes
    ----------
    mean : float
        μ, the mean training rating.
    user_bias : ndarray of shape (n_rows,)
        ``b_u`` of this rank's rows (after :meth:`gather`, of every row).
    item_bias : ndarray of shape (n,)
    low, high : float
        The smallest and largest observed rating.
    """

    mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    low: float
    high: float


class ShardedHeldOut(HeldOut):
    """Held-out entries of this rank's rows whose errors are summed over the ranks.

    Every rank gets the same relative error and RMSE, so the early stopping of
    :func:`deepmc._solver.gradient_descent` takes the same decision on every rank.
    """

    comm: Comm

    @classmethod
    def on_rows(
        cls, obs: Observations, start: int, n_rows: int, comm: Comm,
        device: torch.device, dtype: torch.dtype,
    ) -> ShardedHeldOut:  # fmt: skip
        """The held-out entries of rows ``start:start + n_rows`` in local numbering."""
        local = Observations(obs.rows - start, obs.cols, obs.values, (n_rows, obs.shape[1]))
        held = cls.from_observations(local, device, dtype)
        held.comm = comm
        return held

    def errors(self, left: torch.Tensor, right: torch.Tensor, scale: float) -> tuple[float, float]:
        """Relative error and RMSE over every rank's held-out entries."""
        pred = self.kernels.sampled(left, right)
        diff = pred.to(torch.float64).mul_(scale).sub_(self.values)
        sums = torch.stack(
            [diff.square().sum(), self.values.square().sum(), torch.tensor(diff.shape[0]).to(diff)]
        )
        sq, norm_sq, count = self.comm.sum_(sums.cpu()).tolist()
        err = math.sqrt(sq)
        return err / max(math.sqrt(norm_sq), np.finfo(float).tiny), err / math.sqrt(max(count, 1))


def _biases(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int, n: int,
    reg: float, comm: Comm,
) -> tuple[float, np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`deepmc.ratings.fit_biases` over the ranks: ``rows`` local, ``cols`` global."""
    total = comm.sum_(torch.tensor([values.sum(), float(values.size)], dtype=torch.float64))
    mean = float(total[0] / max(float(total[1]), 1.0))
    centred = values - mean
    n_user = np.bincount(rows, minlength=n_rows)
    n_item = comm.sum_(torch.from_numpy(np.bincount(cols, minlength=n).astype(np.float64))).numpy()
    user_bias = np.zeros(n_rows)
    item_bias = np.zeros(n)
    for _ in range(_BIAS_SWEEPS):
        part = np.bincount(cols, centred - user_bias[rows], minlength=n).astype(np.float64)
        item_bias = comm.sum_(torch.from_numpy(part)).numpy() / (reg + n_item)
        user_bias = np.bincount(rows, centred - item_bias[cols], minlength=n_rows) / (reg + n_user)
    return mean, np.nan_to_num(user_bias), np.nan_to_num(item_bias)


def ratings_shard(
    shard: Shard,
    *,
    validation_fraction: float = 0.1,
    bias_reg: float = 5.0,
    seed: int = 0,
    comm: Comm,
) -> tuple[Shard, Observations, RatingsTerms]:
    """Split this rank's ratings, fit the biases, and return the residuals to complete.

    Parameters
    ----------
    shard : Shard
        This rank's ratings.
    validation_fraction : float, default=0.1
        Fraction of every rank's ratings held out (drawn from ``seed`` and the rank).
    bias_reg : float, default=5.0
        λ of :func:`deepmc.ratings.fit_biases`.
    seed : int, default=0
    comm : Comm

    Returns
    -------
    train : Shard
        The training residuals ``r − μ − b_u − b_i`` (the partition's N is the global
        number of training ratings; the fingerprint is that of all the ratings).
    validation : Observations
        The held-out residuals of this rank's rows (global row indices).
    terms : RatingsTerms
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction: expected a number in (0, 1), got {validation_fraction!r}."
        )
    obs, part = shard.observations, shard.partition
    rng = np.random.default_rng([int(seed), part.rank])
    is_val = rng.random(obs.n_observed) < validation_fraction
    n_train = int(comm.sum_(torch.tensor([float((~is_val).sum())], dtype=torch.float64))[0])
    n_val = part.n_observed - n_train
    if n_train < 1 or n_val < 1:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves {n_train} training and "
            f"{n_val} validation ratings; both must be at least 1."
        )
    values = obs.values.astype(np.float64)
    local_rows = obs.rows - part.start
    fit_ = ~is_val
    mean, user_bias, item_bias = _biases(
        local_rows[fit_], obs.cols[fit_], values[fit_], part.n_rows, part.shape[1], bias_reg, comm
    )
    residual = values - mean - user_bias[local_rows] - item_bias[obs.cols]
    # a rank without ratings (more ranks than rows with ratings) has no range of its own
    low, high = (values.min(), values.max()) if values.size else (math.inf, -math.inf)
    peak = comm.max_(torch.tensor([-low, high], dtype=torch.float64))
    terms = RatingsTerms(mean, user_bias, item_bias, -float(peak[0]), float(peak[1]))

    def pick(mask: np.ndarray) -> Observations:
        return Observations(obs.rows[mask], obs.cols[mask], residual[mask], obs.shape)

    train = replace(shard, observations=pick(fit_), partition=replace(part, n_observed=n_train))
    return train, pick(is_val), terms


class RatingsModel:
    """A loaded ``deepmc fit --ratings`` model: ``clip(μ + b_u + b_i + X̂, low, high)``.

    Parameters
    ----------
    network : CompressedDeepMatrixCompletion or DeepMatrixCompletion
        The fitted network of the residuals.
    terms : RatingsTerms
        With every row's user bias.

    Attributes
    ----------
    network_ : CompressedDeepMatrixCompletion or DeepMatrixCompletion
    mean_ : float
        μ.
    user_bias_ : ndarray of shape (m,)
    item_bias_ : ndarray of shape (n,)
    rating_range_ : tuple of (float, float)
        The smallest and largest training rating; predictions are clipped to it.
    shape_ : tuple of (int, int)

    Examples
    --------
    >>> from deepmc.distributed import load_model  # doctest: +SKIP
    >>> model = load_model("model")  # written by deepmc fit --ratings  # doctest: +SKIP
    >>> model.predict_entries([0, 1], [3, 4])  # doctest: +SKIP
    array([3.61, 4.02])
    """

    def __init__(self, network: Any, terms: RatingsTerms) -> None:
        self.network_ = network
        self.mean_ = terms.mean
        self.user_bias_ = terms.user_bias
        self.item_bias_ = terms.item_bias
        self.rating_range_ = (terms.low, terms.high)
        self.shape_ = network.shape_

    def predict_entries(self, rows: Any, cols: Any) -> np.ndarray:
        """Predicted ratings of the fitted matrix's entries ``(rows[k], cols[k])``, clipped.

        Parameters
        ----------
        rows, cols : array-like of int of shape (K,)
            Row and column indices into the fitted matrix.

        Returns
        -------
        ndarray of shape (K,)
        """
        rows, cols = check_indices(rows, cols, self.shape_, name="predict_entries")
        x = self.network_.predict_entries(rows, cols).astype(np.float64)
        x += self.mean_ + self.user_bias_[rows] + self.item_bias_[cols]
        return np.clip(x, *self.rating_range_)

    def predict(self, X: Any) -> np.ndarray:
        """Ratings of new rows (NaN where missing), folded in; clipped to the range.

        A new row's user bias is 0 (as for an unseen user of
        :class:`deepmc.RatingsCompletion`); its ratings are centred by ``μ + b_i``
        and folded into the network (:meth:`~deepmc.CompressedDeepMatrixCompletion.predict`).

        Parameters
        ----------
        X : array-like of shape (n_rows, n)
            Ratings of new rows over the fitted items, ``np.nan`` where missing.

        Returns
        -------
        ndarray of shape (n_rows, n)
        """
        X = np.array(X, dtype=np.float64, ndmin=2)
        if X.ndim != 2 or X.shape[1] != self.shape_[1]:
            raise ValueError(f"X: expected rows of {self.shape_[1]} columns, got shape {X.shape}.")
        base = self.mean_ + self.item_bias_[None, :]
        x = self.network_.predict(X - base) + base
        return np.clip(x, *self.rating_range_)

    def transform(self, X: Any) -> np.ndarray:
        """:meth:`predict`, with the observed ratings of ``X`` kept.

        Parameters
        ----------
        X : array-like of shape (n_rows, n)
            Ratings of new rows over the fitted items, ``np.nan`` where missing.

        Returns
        -------
        ndarray of shape (n_rows, n)
        """
        X = np.array(X, dtype=np.float64, ndmin=2)
        out = self.predict(X)
        seen = ~np.isnan(X)
        out[seen] = X[seen]
        return out

"""Prediction from a fitted estimator: entries, rows folded in, the score.

:class:`_PredictMixin` holds what reads the fitted network and never changes it; the
estimator base (:class:`deepmc._base._BaseDeepMC`) adds the parameters, the fit and
``transform`` (which scikit-learn's ``set_output`` wraps on the class that defines it).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ._foldin import RowPrior, complete_rows, fold_in, residual_noise_variance, row_prior
from ._validation import TRANSDUCTIVE_ADVICE, Observations, check_indices, check_same_matrix

#: Observations per chunk when predicting on the host.
_PREDICT_CHUNK = 1 << 18


class _PredictMixin:
    """``predict_entries``, ``predict``, ``score`` and the fold-in of rows.

    For :class:`deepmc._base._BaseDeepMC`: it reads the fitted attributes (``scale_``,
    ``shape_``, the weights through ``_network``) and ``_validate_input``.
    """

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(left, right)`` with ``X̂ = left @ right.T`` in user units, from the fit."""
        stored = self._network.stored_params(vars(self))
        params = {k: [torch.tensor(a) for a in v] for k, v in stored.items()}
        with torch.no_grad():
            left, right = self._network.factors(params)
        return self.scale_ * left.numpy(), right.numpy()

    def predict_entries(self, rows: Any, cols: Any) -> np.ndarray:
        """Predicted entries ``X̂[rows[k], cols[k]]``, without forming ``X̂``.

        Parameters
        ----------
        rows : array-like of int of shape (K,)
            Row indices into the fitted ``m × n`` matrix.
        cols : array-like of int of shape (K,)
            Column indices, one per row index.

        Returns
        -------
        ndarray of shape (K,)
            The network's predictions (observed entries are not written back).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            If the indices are not 1-D integers of equal length inside ``shape_``.
        """
        check_is_fitted(self)
        rows, cols = check_indices(rows, cols, self.shape_, name="predict_entries")
        left, right = self._factors()
        out = np.empty(rows.shape[0], dtype=np.result_type(left, right))
        for start in range(0, rows.shape[0], _PREDICT_CHUNK):
            sl = slice(start, start + _PREDICT_CHUNK)
            out[sl] = np.einsum("ij,ij->i", left[rows[sl]], right[cols[sl]])
        return out

    def predict(self, X: Any, cols: Any = None, *, mask: Any = None) -> np.ndarray:
        """The network's completion of the rows of ``X``, observed entries not written back.

        Each row of ``X`` (any number of rows, the fitted columns) is folded in as in
        :meth:`transform`; unlike :meth:`transform`, the observed entries are not copied
        into the result. For entries of the fitted matrix itself use
        :meth:`predict_entries`, which reads the fitted network and never forms ``X̂``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n), DataFrame, sparse matrix or triplets
            Rows with the fitted columns (``np.nan`` where missing).
        cols : array-like of int of shape (K,), default=None
            Deprecated: ``predict(rows, cols)`` is ``predict_entries(rows, cols)``, which
            it calls with a :class:`FutureWarning`.
        mask : array-like of bool of shape (n_rows, n), default=None
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_rows, n)
            In the dtype of ``X`` (float32 stays float32), or of shape (K,) in the
            deprecated two-argument form.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            If ``X`` does not have the fitted columns (their number, or their names for
            a DataFrame).
        """
        if cols is not None:
            warnings.warn(
                "predict(rows, cols) is deprecated and will be removed in a future release; "
                "use predict_entries(rows, cols). predict(X) now returns the prediction of "
                "the rows of X, as in scikit-learn.",
                FutureWarning,
                stacklevel=2,
            )
            return self.predict_entries(X, cols)
        check_is_fitted(self)
        obs = self._check_columns(X, mask, method="predict")
        return self._fold_in(obs)

    def _complete(self) -> np.ndarray:
        left, right = self._factors()
        return left @ right.T

    def _check_fitted_shape(self, X: Any, mask: Any, *, method: str) -> Observations:
        """Validate ``X`` against the fit (features, names, shape) for ``method``."""
        obs = self._validate_input(X, mask, reset=False)
        if obs.shape != self.shape_:
            raise ValueError(
                f"{method}: this {type(self).__name__} was fitted on a matrix of shape "
                f"{self.shape_}, got X of shape {obs.shape}. {TRANSDUCTIVE_ADVICE}"
            )
        return obs

    def _check_columns(self, X: Any, mask: Any, *, method: str) -> Observations:
        """Validate ``X`` as rows with the fitted columns (number and names) for ``method``."""
        obs = self._validate_input(X, mask, reset=False)
        if obs.shape[1] != self.shape_[1]:
            raise ValueError(
                f"{method}: X has {obs.shape[1]} columns, but this {type(self).__name__} "
                f"was fitted on {self.shape_[1]} columns; new rows must have the fitted "
                "columns, in the same order."
            )
        return obs

    def _noise_variance(self, prior: RowPrior) -> float:
        """σ² of the fold-in's ridge: the fit's noise level, else its residual variance."""
        level = getattr(self, "noise_level_", None)
        if level is not None and np.isfinite(level):
            return float(level) ** 2
        return residual_noise_variance(
            getattr(self, "history_", None),
            sampling_scale=self.sampling_scale_,
            shape=self.shape_,
            rank=prior.basis.shape[1],
            iteration=getattr(self, "best_iteration_", None),
        )

    def _fold_in(self, obs: Observations) -> np.ndarray:
        """Every row of ``obs`` completed with the fitted right factor fixed."""
        left, right = self._factors()
        prior = row_prior(left, right)
        alpha = fold_in(
            prior, obs.rows, obs.cols, obs.values, obs.shape[0], self._noise_variance(prior)
        )
        return complete_rows(prior, alpha).astype(obs.values.dtype, copy=False)

    def score(self, X: Any, y: Any = None, *, mask: Any = None) -> float:
        """Negative relative error on the observed entries of ``X`` (higher is better).

        ``-‖X̂_Ω − X_Ω‖_F / ‖X_Ω‖_F`` where Ω are the observed entries of ``X``, typically
        entries held out of the fit (a matrix of the fitted shape, NaN elsewhere). ``X``
        must be the fitted matrix: another shape, or entries that contradict those seen
        at fit (as in a cross-validation fold of rows), raise a ``ValueError`` that says
        how to hold out entries instead.

        Parameters
        ----------
        X : array-like of shape (m, n), DataFrame, sparse matrix or triplets
            Held-out entries of the fitted matrix.
        y : None
            Ignored.
        mask : array-like of bool of shape (m, n), default=None
            As in :meth:`fit`.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        obs = self._check_fitted_shape(X, mask, method="score")
        sample = getattr(self, "_entry_sample", None)  # absent in models pickled before
        if sample is not None:
            check_same_matrix(sample, obs, name="score")
        pred = self.predict_entries(obs.rows, obs.cols)
        denom = max(float(np.linalg.norm(obs.values)), np.finfo(float).tiny)
        return -float(np.linalg.norm(pred - obs.values) / denom)

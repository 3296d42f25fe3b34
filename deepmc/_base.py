"""The estimator base: parameters, validation, scaling, warm start, prediction.

:meth:`_BaseDeepMC.fit`, in the manner of scikit-learn's NMF, validates and then hands
the numerical work to pure functions:

1. validate the input into sorted :class:`~deepmc._validation.Observations`;
2. resolve ε, the network (γ included, :meth:`_build_network`) and ``lr="auto"``;
3. estimate σ₁ of ``s·P_Ω(Y)`` (``s = m·n/N``, :func:`~deepmc._data.top_spectrum`) and
   normalise the observations by it (:func:`~deepmc._data.prepare`), so that
   ``init_scale`` and the learning rates are scale-free;
4. initialise the network (or continue from the fitted weights with ``warm_start``);
5. run :func:`~deepmc._solver.gradient_descent`;
6. store the weights as NumPy arrays; ``transform`` folds rows in (:mod:`deepmc._foldin`)
   and writes their observed entries back.
"""

from __future__ import annotations

import time
import warnings
from abc import abstractmethod
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from ._data import HeldOut, prepare, split_validation, top_spectrum
from ._device import make_generator, resolve_device, resolve_dtype
from ._foldin import RowPrior, complete_rows, fold_in, residual_noise_variance, row_prior
from ._policy import SpectralMonitor
from ._solver import DivergenceError, SolveResult, gradient_descent
from ._threads import fit_threads
from ._validation import (
    TRANSDUCTIVE_ADVICE,
    Interval,
    Observations,
    StrOptions,
    check_indices,
    check_observations,
    check_params,
    check_same_matrix,
    check_value_range,
    entry_sample,
)

if TYPE_CHECKING:
    from .models._network import Network

__all__ = ["DivergenceError"]

#: Observations per chunk when predicting on the host.
_PREDICT_CHUNK = 1 << 18
#: ε (relative) of ``init_scale="auto"`` when the fit prunes: the fastest of the clip range.
_PRUNE_INIT_SCALE = 0.1


class _BaseDeepMC(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Common parameters and machinery of the deep matrix completion estimators.

    A subclass adds its own parameters and implements :meth:`_build_network`, which
    returns the network record (:class:`~deepmc.models._network.Network`: initialisation,
    residual and gradients, factors, per-group learning-rate ratios, fitted attributes).
    ``fit`` resolves ε, the network and η once, then everything numerical happens in
    :mod:`deepmc._data` and :func:`deepmc._solver.gradient_descent`.
    """

    _parameter_constraints: dict = {
        "depth": [Interval(Integral, 2, None, closed="left")],
        "init_scale": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "lr": [StrOptions({"auto"}), Interval(Real, 0, None, closed="neither")],
        "optimizer": [StrOptions({"gd", "momentum", "adam"})],
        "solver": [StrOptions({"auto", "gd"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "check_every": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [None, str, type, np.dtype, torch.dtype],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        depth: int = 3,
        init_scale: float | str = "auto",
        lr: float | str = "auto",
        optimizer: str = "gd",
        solver: str = "auto",
        weight_decay: float = 0.0,
        max_iter: int = 20_000,
        tol: float = 1e-6,
        check_every: int = 25,
        device: str = "auto",
        dtype: Any = None,
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
    ) -> None:
        self.depth = depth
        self.init_scale = init_scale
        self.lr = lr
        self.optimizer = optimizer
        self.solver = solver
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.tol = tol
        self.check_every = check_every
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change

    # ------------------------------------------------------------------ the network
    @abstractmethod
    def _build_network(self, init_scale: float) -> Network:
        """The network record of these hyper-parameters at initial scale ε (resolved)."""

    def _network_for(self, shape: tuple[int, int], init_scale: float) -> Network:
        """The network to fit a matrix of ``shape``: :meth:`_build_network`, checked."""
        network = self._build_network(init_scale)
        network.check_shape(shape)
        return network

    def _factors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(left, right)`` with ``X̂ = left @ right.T`` in user units, from the fit."""
        stored = self._network.stored_params(vars(self))
        params = {k: [torch.tensor(a) for a in v] for k, v in stored.items()}
        with torch.no_grad():
            left, right = self._network.factors(params)
        return self.scale_ * left.numpy(), right.numpy()

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        # float32 input is fitted and returned in float32 (see ``dtype``)
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # ------------------------------------------------------------------ validation
    def _validate_input(self, X: Any, mask: Any, *, reset: bool) -> Observations:
        obs = check_observations(X, mask=mask)
        if isinstance(X, tuple):
            if reset:
                self.n_features_in_ = obs.shape[1]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
        else:
            validate_data(self, X, skip_check_array=True, reset=reset)
        return obs

    def _resolve_learning_rate(self) -> float:
        """η in normalised units (σ₁ = 1): 1/L for GD, scaled for the other optimizers.

        Gradient descent near a solution is stable for η < 2/(L σ₁^{2−2/L}); with the
        data normalised to σ₁ = 1 that is 2/L and ``lr="auto"`` takes half
        of it. Heavy-ball momentum (β = 0.9) multiplies the step by 1/(1 − β); Adam's
        step is per coordinate and is set to 1e-2 of the unit scale.
        """
        if self.lr != "auto":
            return float(self.lr)
        base = 1.0 / self.depth
        return {"gd": base, "momentum": 0.1 * base, "adam": 1e-2}[self.optimizer]

    def _prunes(self) -> bool:
        """Whether this fit prunes and polishes (``solver="auto"`` with plain GD)."""
        return self.solver == "auto" and self.optimizer == "gd"

    def _prune_init_scale(self, shape: tuple[int, int] | None = None) -> float:
        """``init_scale="auto"`` when the fit prunes (see :meth:`_resolve_init_scale`)."""
        return _PRUNE_INIT_SCALE

    def _resolve_init_scale(self, shape: tuple[int, int] | None = None) -> float:
        """ε relative to σ₁^{1/L} when ``"auto"``: 0.1 with pruning, else ``tol^{1/L}``.

        The attainable recovery error of plain gradient descent is roughly ε^L while the
        initial plateau lasts about 1/(η ε^{L−2}) steps, so without pruning ε =
        ``tol^{1/L}`` (clipped to [1e-3, 0.1]) is the largest initialisation whose error
        floor does not exceed the requested tolerance. Pruning removes that floor (the
        spurious directions are cut), so a large ε is used (:meth:`_prune_init_scale`).
        """
        if self.init_scale != "auto":
            return float(self.init_scale)
        if self._prunes():
            return self._prune_init_scale(shape)
        return float(min(0.1, max(1e-3, max(self.tol, 1e-12) ** (1.0 / self.depth))))

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        mask: Any = None,
        eval_set: Any = None,
        validation_set: Any = None,
    ):
        """Fit the network to the observed entries of ``X``.

        Parameters
        ----------
        X : array-like of shape (m, n), DataFrame, sparse matrix or triplets
            The partially observed matrix: ``np.nan`` marks missing entries of a dense
            array or DataFrame; the stored entries of a sparse matrix are the observed
            ones (explicit zeros included); ``(rows, cols, values[, shape])`` triplets.
        y : None
            Ignored; present for API consistency.
        mask : array-like of bool of shape (m, n), default=None
            Explicit observation mask for a dense ``X`` (``True`` = observed).
        eval_set : same formats as ``X``, default=None
            Held-out entries with their true values. Their relative error and RMSE are
            recorded in ``history_`` at every check; they never influence the fit.
        validation_set : same formats as ``X``, default=None
            Entries held out by the caller for early stopping, used instead of the random
            ``validation_fraction`` split (with ``early_stopping=True`` or not): the fit
            stops when their RMSE has not improved for ``n_iter_no_change`` checks and
            keeps the best state. For callers that must hold the validation entries out
            of their own preprocessing too (see :class:`deepmc.RatingsCompletion`).

        Returns
        -------
        self : object
            The fitted estimator.
        """
        check_params(self)
        obs = self._validate_input(X, mask, reset=True)
        check_value_range(obs)
        held_out = {}
        for name, value in (("eval_set", eval_set), ("validation_set", validation_set)):
            if value is not None:
                try:
                    held_out[name] = check_observations(value)
                except (ValueError, TypeError) as exc:  # its messages name "X"
                    raise type(exc)(f"{name}: {exc}") from exc
                if held_out[name].shape != obs.shape:
                    raise ValueError(
                        f"{name}: expected a matrix of shape {obs.shape} (that of X), got "
                        f"{held_out[name].shape}."
                    )
        with fit_threads():  # torch and BLAS threads by CPUs and load; restored after
            self._fit(obs, held_out.get("eval_set"), held_out.get("validation_set"))
        self._entry_sample = entry_sample(obs)  # lets score recognise another matrix
        return self

    def _fit(
        self,
        obs: Observations,
        eval_obs: Observations | None,
        val_obs: Observations | None = None,
    ) -> None:
        """Validate, scale, initialise; hand the descent to :func:`gradient_descent`; store."""
        if obs.n_observed == 0:
            raise ValueError(
                f"X: no observed entries in a matrix of shape {obs.shape}; at least one "
                "finite entry is needed."
            )
        init_scale = self._resolve_init_scale(obs.shape)
        network = self._network_for(obs.shape, init_scale)
        t_start = time.perf_counter()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, obs.values.dtype)
        rng = check_random_state(self.random_state)
        generator = make_generator(rng)
        if val_obs is None and self.early_stopping:
            obs, val_obs = split_validation(obs, self.validation_fraction, rng)
        warm = (
            self.warm_start
            and hasattr(self, "n_iter_")
            and getattr(self, "shape_", None) == obs.shape
        )
        if warm:
            scale = self.scale_
        else:
            u, sig, v = top_spectrum(obs, network.n_singular, generator)
            scale = float(sig[0]) if sig[0] > 0 else 1.0
        data = prepare(obs, device, dtype, scale=scale)
        lr = self._resolve_learning_rate()
        if warm:
            params = {
                k: [torch.as_tensor(a, dtype=dtype, device=device) for a in arrs]
                for k, arrs in self._network.stored_params(vars(self)).items()
            }
            start_iter, history = self.n_iter_, self.history_.to_dict("records")
            lr = self.lr_ if self.lr == "auto" else lr
        else:
            params = network.initialize(data, u, v, generator)
            start_iter, history = 0, []
        t_monitor = time.perf_counter()
        monitors = {}
        if eval_obs is not None:
            monitors["eval"] = HeldOut.from_observations(eval_obs, device, dtype)
        validation = None if val_obs is None else HeldOut.from_observations(val_obs, device, dtype)
        # eval_set only watches the fit: its set-up is not billed to the fit's seconds
        if eval_obs is not None:
            t_start += time.perf_counter() - t_monitor
        monitor = SpectralMonitor(
            network, data, tol=self.tol, n_iter_no_change=self.n_iter_no_change,
            prune=self._prunes(), scale=scale,
        )  # fmt: skip
        result = gradient_descent(
            network, data, params, lr=lr, optimizer=self.optimizer,
            weight_decay=self.weight_decay, max_iter=self.max_iter, tol=self.tol,
            check_every=self.check_every, start_iter=start_iter, history=history,
            monitors=monitors, validation=validation,
            backoff=self.lr == "auto", scale=scale, t_start=t_start,
            name=type(self).__name__, verbose=self.verbose,
            stop_rule=monitor.stop_rule, callbacks=[monitor.callback],
        )  # fmt: skip
        self._network = network
        self.scale_ = scale
        self.shape_ = obs.shape
        self.device_ = str(device)
        self.init_scale_ = init_scale
        self.sampling_scale_ = data.sampling_scale
        self._store(result, monitor)

    def _store(self, result: SolveResult, monitor: SpectralMonitor) -> None:
        """Write the solver's result to the fitted attributes (NumPy) and warn on its stop."""
        self.lr_ = result.lr
        self.n_iter_ = result.n_iter
        self.best_iteration_ = result.best_iteration
        self.history_ = pd.DataFrame.from_records(result.history)
        arrays = {k: [t.detach().cpu().numpy().copy() for t in v] for k, v in result.params.items()}
        for name, value in self._network.fitted_attributes(arrays, result.lr).items():
            setattr(self, name, value)
        last = result.history[-1]
        self.rank_, noise = monitor.summary(result.params, float(last["residual"]))
        self.noise_level_ = noise * self.scale_
        if monitor.noise is not None and self.rank_ == 0:
            warnings.warn(
                f"{type(self).__name__}: no direction of the data stands out of the noise "
                f"(estimated noise level {self.noise_level_:.3g}); the fit is the zero "
                "matrix (rank_ = 0). The data may be pure noise, or too few entries are "
                "observed to tell their structure from it.",
                UserWarning,
                stacklevel=4,
            )
        if result.stop == "interrupted":
            warnings.warn(
                f"{type(self).__name__}: fit interrupted at iteration {result.n_iter}; keeping "
                "the state reached so far (see history_).",
                RuntimeWarning,
                stacklevel=4,
            )
        elif result.stop == "max_iter":
            what = monitor.unconverged(last, self.check_every, self.scale_)
            warnings.warn(
                f"{type(self).__name__} reached max_iter={self.max_iter} before converging: "
                f"{what}",
                ConvergenceWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------------ prediction
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

    def transform(self, X: Any, *, mask: Any = None) -> np.ndarray:
        """Complete the rows of ``X`` with the fitted columns, observed entries kept.

        Each row is *folded in*: its coefficients on the fitted right factor are fitted
        to its observed entries by ridge regression with that factor fixed (as
        scikit-learn's ``NMF.transform`` does with ``components_`` fixed), with the prior
        the fitted rows define and the fit's noise level as the ridge, so a row with few
        entries is shrunk towards the column means the fit implies; a row with no entry
        gets those means. Rows are independent: ``transform(X[idx])`` is
        ``transform(X)[idx]``. ``X`` may be the fitted matrix, new rows, or both; the
        fitted matrix is folded in like any other (:meth:`fit_transform` returns the
        fit's own completion instead). With ``set_output(transform="pandas")`` the result
        is a DataFrame with the columns and index of a DataFrame ``X``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n), DataFrame, sparse matrix or triplets
            Rows with the fitted columns (``np.nan`` where missing).
        mask : array-like of bool of shape (n_rows, n), default=None
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_rows, n)
            In the dtype of ``X`` (float32 stays float32).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            If ``X`` does not have the fitted columns (their number, or their names for
            a DataFrame).
        """
        check_is_fitted(self)
        obs = self._check_columns(X, mask, method="transform")
        out = self._fold_in(obs)
        out[obs.rows, obs.cols] = obs.values
        return out

    def fit_transform(
        self,
        X: Any,
        y: Any = None,
        *,
        mask: Any = None,
        eval_set: Any = None,
        validation_set: Any = None,
    ) -> np.ndarray:
        """Fit to ``X`` and return the fit's completion of it (observed entries kept).

        This is the fitted network's ``X̂`` itself, not the fold-in of ``X`` that
        :meth:`transform` returns afterwards (the two agree on exactly low-rank data).

        Parameters
        ----------
        X : array-like of shape (m, n), DataFrame, sparse matrix or triplets
            As in :meth:`fit`.
        y : None
            Ignored.
        mask : array-like of bool of shape (m, n), default=None
            As in :meth:`fit`.
        eval_set : same formats as ``X``, default=None
            As in :meth:`fit`.
        validation_set : same formats as ``X``, default=None
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (m, n)
        """
        self.fit(X, mask=mask, eval_set=eval_set, validation_set=validation_set)
        obs = self._check_fitted_shape(X, mask, method="fit_transform")
        out = self._complete().astype(obs.values.dtype, copy=False)
        out[obs.rows, obs.cols] = obs.values
        return out

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

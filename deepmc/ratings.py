"""Rating prediction with deep matrix completion: ids, biases, clipping, early stopping.

Real ratings differ from the synthetic low-rank targets of the benchmarks: the ids are
arbitrary labels, most of the variance is a global mean plus per-user and per-item
offsets, the residual is noisy (an RMSE near 0.9 on MovieLens is the noise level, not
an optimisation failure), and predictions must stay in the rating scale.
:class:`RatingsCompletion` handles those and delegates the low-rank part to one of the
deep matrix completion estimators, so the full-width, narrow and compressed networks are
compared through the same pipeline.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._ratings_fit import (
    fit_biases,
    fit_ensemble,
    fit_member,
    row_major_ratings,
    validation_folds,
)
from ._ratings_foldin import FoldedRows, fold_in_ratings, folded_terms, member_priors, merge_folded
from ._ratings_ids import (
    _check_id_kind,
    _check_ids,
    _check_unique_pairs,
    _encode_ids,
    _positions,
    input_pairs,
)
from ._validation import Interval, StrOptions, check_params
from .models import CompressedDeepMatrixCompletion, DeepMatrixCompletion, make_estimator

__all__ = ["RatingsCompletion", "fit_biases", "fit_member", "validation_folds"]

#: Default λ of :class:`RatingsCompletion` (with row-weighted decay, ``decay_weighting=1``).
WEIGHT_DECAY = 0.01


class RatingsCompletion(BaseEstimator):
    r"""Predict ratings from a (user, item, rating) table with a deep linear network.

    The model is

    .. math::

        \hat r_{ui} = \operatorname{clip}\big(\mu + b_u + b_i + X_{ui},\;
        r_{\min},\, r_{\max}\big), \qquad X = \text{deep linear network},

    fitted in two stages: ``μ`` (mean training rating) and the biases ``b_u``, ``b_i``
    by regularised alternating means (:func:`fit_biases`); then the network completes the
    ``n_users × n_items`` matrix of residuals ``r_ui − μ − b_u − b_i`` by gradient
    descent from a small initialisation, stopped early on a validation slice of the
    training ratings and restored to the iteration with the lowest validation RMSE
    (``early_stopping=True`` of the deepmc estimators). By default the compressed
    network starts from the residual's top singular vectors, decays its factor rows in
    proportion to their ratings (the weighted trace norm), and learns user and item
    biases of its own with the low-rank part (``joint_biases``). Ids are arbitrary
    (ints, strings); they are mapped to rows and columns in sorted order.

    **Unseen users and items.** ``predict`` returns ``μ + b_u + b_i`` where a bias is
    taken as 0 for an id absent from training, and the network term only when both
    ids were seen: an unknown user gets ``μ + b_i``, an unknown item ``μ + b_u``, and a
    pair of unknowns ``μ`` — always clipped to the training rating range.

    Parameters
    ----------
    rank : int, default=40
        r̂ of the compressed network (cores ``2r̂ × 2r̂``) and half the width of the
        narrow one; unused by ``network="full"``; capped at ``min(n_users, n_items) // 2``.
        Early stopping, not the rank, sets the effective rank, but a wider network still
        helps: on a validation slice of MovieLens-100K training ratings, rank 10, 20, 40
        gave RMSEs 0.9283, 0.9267, 0.9249 (one fit, mean of five splits).
    network : {"compressed", "full", "narrow"}, default="compressed"
        :class:`~deepmc.CompressedDeepMatrixCompletion`,
        :class:`~deepmc.DeepMatrixCompletion` at full width ``max(n_users, n_items)``
        (dense ``O(L·d³)`` steps: slow on large tables), or at width ``2*rank``.
    depth : int, default=3
        Number of layers / cores ``L``. On validation slices of MovieLens-100K training
        ratings (rank 10, one fit, five splits) depth 2, 3, 4 gave RMSEs 0.9322, 0.9283,
        0.9302.
    init_scale : float, default=0.1
        ε relative to σ₁^{1/L} (the networks normalise the residual matrix by σ₁). The
        synthetic default ``tol^{1/L}`` aims at exact recovery; here the noise floor is
        far above the ε^L error floor, and a smaller ε only lengthens the initial plateau
        (about ``1/(η ε^{L−2})`` steps): measured on MovieLens-100K, ε = 0.01 needs ~450
        steps for a worse test RMSE (0.928 against 0.921) and ε = 0.001 had not left the
        plateau after 3000; ε = 0.3 loses the low-rank bias of small initialisation
        (0.926).
    lr : float, default=0.3
        η in normalised units (σ₁ = 1), ``0.9/L``, near the synthetic ``"auto"`` step
        ``1/L``: the validation optimum comes after ~70 steps, which checks every 5
        steps resolve. On validation slices (one fit, three splits) 0.05, 0.1, 0.15
        gave the same RMSE (within 0.0002), the best step at ~510, ~250, ~170; on five
        80/20 splits of MovieLens-100K, 0.3 (with ``check_every=5``,
        ``n_iter_no_change=8``) gave the test RMSE of 0.1 (with 10 and 15) within 0.0003
        per split, in a third of the steps. A member still improving its validation
        RMSE after 100 steps (large power-law tables, where σ₁ comes from the most-rated
        rows) continues from its best state at twice ``lr``, at most ``1.8 / depth``
        (``deepmc._ratings_fit.fit_network``).
    weight_decay : float, default=0.01
        λ: every core decays at λ, the factor rows as ``decay_weighting`` says. Early
        stopping regularises a row through its slow growth, which is slowest for rarely
        rated users and items; the row-weighted decay adds what it leaves to the frequent
        ones. On validation slices of MovieLens-100K training ratings (rank 40, one fit,
        three splits, lr 0.05), λ = 0.003, 0.007, 0.01, 0.013, 0.02, 0.03 changed the
        RMSE by −0.0016, −0.0034, −0.0035, −0.0008, +0.007, +0.022 against λ = 0:
        beyond ~0.013 the decay of the most frequent rows (weights up to ~10) holds the
        network on its initial plateau. With the spectral init and the joint biases
        (lr 0.1), λ = 0, 0.007, 0.01, 0.013, 0.02 gave validation RMSEs 0.9261, 0.9212,
        0.9194, 0.9191, 0.9300. Uniform decay (``decay_weighting=0``) bought < 0.001 at
        1e-3 – 3e-2. Where the largest weight ``w`` (``decay_weighting`` below) exceeds
        20 (MovieLens-100K: ~10; ~100 at MovieLens-20M's density, whose most-rated rows
        then held the network at its first step), λ is scaled by ``20 / w``
        (``deepmc._ratings_fit.scale_decay``; each member's ``weight_decay`` says λ).
    decay_weighting : float, default=1.0
        α of :class:`~deepmc.CompressedDeepMatrixCompletion`: row ``u`` of ``U`` decays
        at ``λ (n_u / n̄)^α`` with ``n_u`` the user's training ratings and ``n̄`` their
        mean, likewise for items. α = 1 is the weighted trace norm (Salakhutdinov &
        Srebro 2010) and ALS-WR's ridge (Zhou et al. 2008): every rating costs the same
        decay. On the validation slices, α = 0.5 (λ = 0.01) and α = 0.75 (λ = 0.013) gave
        −0.0029 and −0.0036, α = 1 (λ = 0.01) −0.0035. Compressed network only (the
        others decay uniformly).
    init : {"spectral", "parsimony", "random"}, default="spectral"
        ``init`` of :class:`~deepmc.CompressedDeepMatrixCompletion` (compressed network
        only): ``U(0), V(0)`` span the top ``2*rank`` singular vectors of the residual
        matrix. On the validation slices (one fit, three splits) ``"spectral"`` gave
        −0.0029 against ``"parsimony"`` (random frames of the full-width init), and
        −0.0058 together with ``joint_biases``.
    joint_biases : bool, default=True
        Learn a bias per user and per item inside the network, with it (compressed
        network only; ``bias_reg`` of :class:`~deepmc.CompressedDeepMatrixCompletion`
        set to this ``bias_reg``), on top of the pre-fitted ones: the biases then
        adjust to what the low-rank part explains. On the validation slices (one fit,
        three splits): −0.0029 (parsimony init). A half or a quarter or a whole Jacobi
        step per gradient step (``BIAS_STEP``) gave the same RMSE to 1e-4, and λ_b = 2
        or 20 instead of ``bias_reg`` within 0.0002. The network term of a prediction
        includes them, so a user or item unseen in training gets neither.
    bias_reg : float, default=5.0
        λ of :func:`fit_biases`, and of the joint biases: a bias counts as if it had
        ``bias_reg`` extra ratings at the global mean (2 and 10 gave validation RMSEs
        0.0004 and 0.0021 worse, before the joint biases).
    n_estimators : int, default=5
        Number of networks averaged. Member ``k`` holds out its own slice ``k`` of
        ``validation_fraction`` of the training ratings (the slices are disjoint), fits
        the biases and an early-stopped network on the rest, and the predictions are
        averaged before clipping: bagging by cross-fitting, which lowers the variance of
        early-stopped fits and lets every rating train most members. At most
        ``1 / validation_fraction``. The fit costs ``n_estimators`` single fits.
    validation_fraction : float, default=0.1
        Fraction of the training ratings held out for early stopping.
    n_iter_no_change : int, default=8
        Stop after this many checks (40 steps) without a better validation RMSE: about
        half the steps to the optimum. At lr 0.1, 15 and 30 checks of 10 steps chose
        the same step on the validation slices (10 as well).
    check_every : int, default=5
        Gradient steps between checks (validation RMSE, stopping rules).
    max_iter : int, default=2000
        Cap on gradient steps; early stopping ends MovieLens fits after ~110.
    tol : float, default=1e-4
        Stop when the fitted values on the training ratings change by at most ``tol``
        (relative) between checks.
    network_params : dict, default=None
        Further keyword arguments of the network estimator (e.g. ``factor_lr_ratio``,
        ``init``, ``optimizer`` for the compressed network).
    n_jobs : int, default=None
        Members fitted in parallel by :class:`joblib.Parallel` (processes); ``None`` is
        1 unless inside a :func:`joblib.parallel_config` context, ``-1`` all cores.
        Results do not depend on it (each member has its own seed). Each worker process
        uses its share of the CPUs (``cpus // n_jobs`` threads); starting the workers
        (importing torch) costs seconds, so on a small table one process with the
        automatic threads is as fast. See the performance notes of the docs for the
        thread policy and :func:`deepmc.thread_limit`.
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``"auto"`` uses CUDA when available.
    dtype : {"float32", "float64"}, default="float32"
        Ratings carry about two significant digits; float32 halves the time per step.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation slice and the initialisation.
    verbose : int, default=0
        Show a progress bar per member.

    Attributes
    ----------
    users_ : ndarray of shape (n_users,)
        Training user ids, sorted; ``users_[k]`` is row ``k``.
    items_ : ndarray of shape (n_items,)
        Training item ids, sorted; ``items_[k]`` is column ``k``.
    global_mean_ : float
        μ.
    user_bias_ : ndarray of shape (n_users,)
    item_bias_ : ndarray of shape (n_items,)
    rating_range_ : tuple of (float, float)
        ``(r_min, r_max)`` of the training ratings; predictions are clipped to it.
    networks_ : list of CompressedDeepMatrixCompletion or DeepMatrixCompletion
        The members' fitted networks on their residual matrices (each ``history_``
        holds the ``val_rmse`` curve, in rating units); ``None`` for a member with
        nothing to fit (a single user or item, or ratings the biases explain exactly).
    network_ : CompressedDeepMatrixCompletion, DeepMatrixCompletion or None
        ``networks_[0]``.
    n_iter_ : int
        Gradient steps taken, all members together.
    best_iterations_ : ndarray of int of shape (n_fitted,)
        Step whose state each fitted member restored (lowest validation RMSE).
    best_iteration_ : int
        ``best_iterations_[0]`` (0 without a network).
    history_ : pandas.DataFrame
        ``network_.history_`` (empty without a network). A member continued at the
        larger step after 100 steps (``lr``) holds the rows of both runs: the second
        repeats the first's last iteration, and its ``seconds`` start again from 0.

    See Also
    --------
    CompressedDeepMatrixCompletion : The default network.
    DeepMatrixCompletion : The full-width and narrow networks.
    fit_biases : The bias stage.

    Notes
    -----
    Each member's validation slice is held out of both its biases and its network, so
    the ``val_rmse`` that chooses its stopping iteration is a held-out estimate.

    Defaults were chosen on validation slices of the training ratings of MovieLens-100K
    splits (never on test ratings); the step schedule (``lr``, ``check_every``,
    ``n_iter_no_change``) was then shortened for speed and checked to leave the test
    RMSE unchanged. ``benchmarks/ml100k_table.py`` prints the test RMSEs and fit
    seconds of the defaults, of each ingredient removed, and of classical baselines.

    References
    ----------
    .. [1] R. Salakhutdinov, N. Srebro. "Collaborative Filtering in a Non-Uniform World:
       Learning with the Weighted Trace Norm", NeurIPS 2010.
    .. [2] Y. Zhou, D. Wilkinson, R. Schreiber, R. Pan. "Large-Scale Parallel
       Collaborative Filtering for the Netflix Prize", AAIM 2008.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from deepmc import RatingsCompletion
    >>> rng = np.random.default_rng(0)
    >>> taste = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
    >>> users, items = np.nonzero(rng.random(taste.shape) < 0.6)
    >>> noisy = taste[users, items] + 0.5 * rng.standard_normal(users.size)
    >>> ratings = pd.DataFrame({
    ...     "user": [f"u{k}" for k in users], "item": items + 100,
    ...     "rating": np.clip(np.round(3 + noisy), 1, 5)})
    >>> # A tiny table: a larger step and shorter patience than the defaults.
    >>> model = RatingsCompletion(rank=2, lr=0.5, check_every=5, n_iter_no_change=10,
    ...                           random_state=0).fit(ratings)
    >>> pred = model.predict(["u0", "u0", "someone new"], [100, 101, 100])
    >>> pred.shape, bool(np.all((pred >= 1) & (pred <= 5)))
    ((3,), True)
    """

    _parameter_constraints: dict = {
        "rank": [Interval(Integral, 1, None, closed="left")],
        "network": [StrOptions({"compressed", "full", "narrow"})],
        "depth": [Interval(Integral, 2, None, closed="left")],
        "init_scale": [Interval(Real, 0, None, closed="neither")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "decay_weighting": [Interval(Real, 0, None, closed="left")],
        "init": [StrOptions({"parsimony", "spectral", "random"})],
        "joint_biases": ["boolean"],
        "bias_reg": [Interval(Real, 0, None, closed="left")],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "check_every": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "network_params": [None, dict],
        "n_jobs": [None, Integral],
        "device": "no_validation",
        "dtype": "no_validation",
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        rank: int = 40,
        *,
        network: str = "compressed",
        depth: int = 3,
        init_scale: float = 0.1,
        lr: float = 0.3,
        weight_decay: float = WEIGHT_DECAY,
        decay_weighting: float = 1.0,
        init: str = "spectral",
        joint_biases: bool = True,
        bias_reg: float = 5.0,
        n_estimators: int = 5,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 8,
        check_every: int = 5,
        max_iter: int = 2000,
        tol: float = 1e-4,
        network_params: dict | None = None,
        n_jobs: int | None = None,
        device: str = "auto",
        dtype: Any = "float32",
        random_state: Any = None,
        verbose: int = 0,
    ) -> None:
        self.rank = rank
        self.network = network
        self.depth = depth
        self.init_scale = init_scale
        self.lr = lr
        self.weight_decay = weight_decay
        self.decay_weighting = decay_weighting
        self.init = init
        self.joint_biases = joint_biases
        self.bias_reg = bias_reg
        self.n_estimators = n_estimators
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.check_every = check_every
        self.max_iter = max_iter
        self.tol = tol
        self.network_params = network_params
        self.n_jobs = n_jobs
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def _make_network(
        self, shape: tuple[int, int]
    ) -> CompressedDeepMatrixCompletion | DeepMatrixCompletion:
        common = {
            "depth": self.depth,
            "init_scale": self.init_scale,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "check_every": self.check_every,
            "device": self.device,
            "dtype": self.dtype,
            "random_state": self.random_state,
            "verbose": self.verbose,
            "early_stopping": True,
            # plain steps: an early-stopped noisy fit has no spectral gap to prune at
            "solver": "gd",
            "validation_fraction": self.validation_fraction,
            "n_iter_no_change": self.n_iter_no_change,
        }
        if self.network == "compressed":
            common["decay_weighting"] = self.decay_weighting
            common["init"] = self.init
            common["bias_reg"] = float(self.bias_reg) if self.joint_biases else None
        common.update(self.network_params or {})
        # rank is an over-estimate: on a table narrower than 2*rank, use what fits.
        return make_estimator(self.network, rank=min(self.rank, min(shape) // 2), **common)

    def fit(self, X: Any, y: Any = None) -> RatingsCompletion:
        """Fit the biases and the network to a table of ratings.

        Parameters
        ----------
        X : DataFrame or array-like of shape (N, 2) or (N, 3)
            A DataFrame with ``user`` and ``item`` columns and a ``rating`` column (unless
            ``y`` is given), or an array of ``(user, item)`` pairs with ``y``, or of
            ``(user, item, rating)`` rows. Ids may be any sortable values.
        y : array-like of shape (N,), default=None
            The ratings, when ``X`` holds only the pairs.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        check_params(self)
        users, items, ratings = input_pairs(X, y, need_ratings=True)
        self.n_features_in_ = int(np.shape(X)[1]) if np.ndim(X) == 2 else 2
        if ratings.shape[0] == 0:
            raise ValueError("X: no ratings; at least one is needed.")
        self.users_, rows = _encode_ids(users, "user")
        self.items_, cols = _encode_ids(items, "item")
        _check_unique_pairs(rows, cols, self.users_, self.items_)
        shape = (self.users_.shape[0], self.items_.shape[0])
        folds = validation_folds(
            ratings.shape[0],
            self.validation_fraction,
            self.n_estimators,
            random_state=check_random_state(self.random_state),
        )
        self.rating_range_ = (float(ratings.min()), float(ratings.max()))
        # rebinding frees the unsorted arrays before the members copy their parts
        rows, cols, ratings, folds = row_major_ratings(rows, cols, ratings, folds)
        ensemble = fit_ensemble(
            rows,
            cols,
            ratings,
            shape,
            folds,
            self._make_network(shape),
            bias_reg=float(self.bias_reg),
            n_jobs=self.n_jobs,
        )
        self.global_mean_ = ensemble.global_mean
        self.user_bias_, self.item_bias_ = ensemble.user_bias, ensemble.item_bias
        self.networks_ = ensemble.networks
        self.network_ = self.networks_[0]
        fitted = [net for net in self.networks_ if net is not None]
        self.n_iter_ = int(sum(net.n_iter_ for net in fitted))
        self.best_iterations_ = np.array([net.best_iteration_ for net in fitted], dtype=np.int64)
        self.best_iteration_ = int(self.best_iterations_[0]) if fitted else 0
        self.history_ = self.network_.history_ if self.network_ is not None else pd.DataFrame()
        self._forget_folded()
        return self

    # ------------------------------------------------------------------ predict
    def _index(self, users: Any, items: Any) -> tuple[np.ndarray, np.ndarray]:
        rows = pd.Index(self.users_).get_indexer(pd.Index(np.asarray(users).ravel()))
        cols = pd.Index(self.items_).get_indexer(pd.Index(np.asarray(items).ravel()))
        return rows, cols

    def predict(self, users: Any, items: Any = None) -> np.ndarray:
        """Predicted ratings of (user, item) pairs, clipped to the training range.

        Ids never seen in training contribute no bias and no network term: an unknown
        user gets ``μ + b_i``, an unknown item ``μ + b_u``, both unknown ``μ``. Users
        folded in by :meth:`partial_fit_users` (and items by :meth:`partial_fit_items`)
        use their folded bias and network rows, which take precedence over the fit's; a
        folded user and a folded item together get their biases only.

        Parameters
        ----------
        users : array-like of shape (K,), or DataFrame / array of shape (K, 2)
            User ids; or, with ``items=None``, the pairs themselves (a DataFrame with
            ``user`` and ``item`` columns or an array of ``(user, item)`` rows).
        items : array-like of shape (K,), default=None
            Item ids.

        Returns
        -------
        ndarray of shape (K,)
        """
        check_is_fitted(self)
        if items is None:
            users, items, _ = input_pairs(users, None, need_ratings=False)
        users, items = _check_ids(users, "user"), _check_ids(items, "item")
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(
                f"predict: users and items must be 1-D of equal length, got shapes "
                f"{users.shape} and {items.shape}."
            )
        _check_id_kind(users, self.users_, "user")
        _check_id_kind(items, self.items_, "item")
        rows, cols = self._index(users, items)
        new_u, fu = self._folded_index("users", users)
        new_i, fi = self._folded_index("items", items)
        known_u, known_i = (rows >= 0) & ~new_u, (cols >= 0) & ~new_i
        pred = np.full(rows.shape[0], self.global_mean_)
        pred[known_u] += self.user_bias_[rows[known_u]]
        pred[known_i] += self.item_bias_[cols[known_i]]
        if new_u.any():
            pred[new_u] += self.folded_users_.bias[fu[new_u]]
        if new_i.any():
            pred[new_i] += self.folded_items_.bias[fi[new_i]]
        both = known_u & known_i
        fitted = [net for net in self.networks_ if net is not None]
        if both.any() and fitted:
            # The members' network terms averaged (a missing network contributes 0).
            pred[both] += sum(net.predict_entries(rows[both], cols[both]) for net in fitted) / len(
                self.networks_
            )
        for side, where, own, other in (
            ("users", new_u & known_i, fu, cols),
            ("items", new_i & known_u, fi, rows),
        ):
            if where.any():
                folded = getattr(self, f"folded_{side}_")
                pred[where] += folded_terms(
                    self._fold_priors(side), folded, own[where], other[where]
                )
        return np.clip(pred, *self.rating_range_)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative RMSE of the predictions on held-out ratings (higher is better).

        Parameters
        ----------
        X, y
            As in :meth:`fit`.

        Returns
        -------
        float
        """
        users, items, ratings = input_pairs(X, y, need_ratings=True)
        pred = self.predict(users, items)
        return -float(np.sqrt(np.mean((pred - ratings) ** 2)))

    # ------------------------------------------------------------------ fold-in
    def partial_fit_users(
        self, X: Any, y: Any = None, *, unknown: str = "error"
    ) -> RatingsCompletion:
        """Fold in users who are new or whose ratings changed, with the items fixed.

        Each user's bias and, in every ensemble member, their row of the network are
        fitted to their ratings by ridge regression with the items' biases and factors
        fixed (see the user guide's section on new users): the bias has the fit's
        ``bias_reg``, the row the prior the fitted users define and the member's noise
        level, so a user with few ratings is shrunk towards the average user. Nothing
        else changes; :meth:`predict` then uses the folded users. A later call replaces
        the rows of users it folds in again, and :meth:`fit` forgets them all.

        Parameters
        ----------
        X : DataFrame or array-like of shape (N, 2) or (N, 3)
            As in :meth:`fit`: *every* rating of each user to fold in (a user's previous
            ratings are replaced, not added to).
        y : array-like of shape (N,), default=None
            The ratings, when ``X`` holds only the pairs.
        unknown : {"error", "ignore"}, default="error"
            What to do with ratings of items not seen in the fit (fold those in first
            with :meth:`partial_fit_items`): raise a ``ValueError`` naming them, or skip
            those ratings.

        Returns
        -------
        self : object

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> from deepmc import RatingsCompletion
        >>> rng = np.random.default_rng(0)
        >>> taste = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 20))
        >>> users, items = np.nonzero(rng.random(taste.shape) < 0.6)
        >>> ratings = pd.DataFrame({"user": users, "item": items,
        ...                         "rating": np.clip(np.round(3 + taste[users, items]), 1, 5)})
        >>> model = RatingsCompletion(rank=2, lr=0.5, check_every=5, n_estimators=2,
        ...                           random_state=0).fit(ratings[ratings.user < 30])
        >>> newcomers = ratings[(ratings.user >= 30) & (ratings["item"] < 10)]
        >>> model = model.partial_fit_users(newcomers)
        >>> model.predict([35, 35], [12, 15]).shape, len(model.folded_users_.ids)
        ((2,), 10)
        """
        return self._partial_fit(X, y, side="users", unknown=unknown)

    def partial_fit_items(
        self, X: Any, y: Any = None, *, unknown: str = "error"
    ) -> RatingsCompletion:
        """Fold in items that are new or whose ratings changed, with the users fixed.

        The transpose of :meth:`partial_fit_users`: each item's bias and rows of the
        members' networks are fitted to its ratings with the users' biases and factors
        fixed.

        Parameters
        ----------
        X : DataFrame or array-like of shape (N, 2) or (N, 3)
            Every rating of each item to fold in.
        y : array-like of shape (N,), default=None
            The ratings, when ``X`` holds only the pairs.
        unknown : {"error", "ignore"}, default="error"
            What to do with ratings by users not seen in the fit.

        Returns
        -------
        self : object
        """
        return self._partial_fit(X, y, side="items", unknown=unknown)

    def _partial_fit(self, X: Any, y: Any, *, side: str, unknown: str) -> RatingsCompletion:
        check_is_fitted(self)
        method = f"partial_fit_{side}"
        if unknown not in ("error", "ignore"):
            raise ValueError(f"{method}: unknown must be 'error' or 'ignore', got {unknown!r}.")
        users, items, ratings = input_pairs(X, y, need_ratings=True)
        new, fixed = (users, items) if side == "users" else (items, users)
        fixed_labels = self.items_ if side == "users" else self.users_
        fixed_bias = self.item_bias_ if side == "users" else self.user_bias_
        other = "item" if side == "users" else "user"
        index = pd.Index(fixed_labels).get_indexer(pd.Index(fixed))
        unseen = index < 0
        if unseen.any() and unknown == "error":
            raise ValueError(
                f"{method}: {_positions(unseen)} ratings are of {other}s not seen in the fit, "
                f"e.g. {other} {fixed[unseen][:1].tolist()[0]!r}; fold those {other}s in first, "
                "or pass unknown='ignore' to skip their ratings."
            )
        new, index, ratings = new[~unseen], index[~unseen], ratings[~unseen]
        if ratings.shape[0] == 0:
            raise ValueError(f"{method}: no ratings of {other}s seen in the fit to fold in.")
        labels, codes = _encode_ids(new, side[:-1])
        pairs = (
            (codes, index, labels, fixed_labels)
            if side == "users"
            else (index, codes, fixed_labels, labels)
        )
        _check_unique_pairs(*pairs)
        bias, alphas = fold_in_ratings(
            self._fold_priors(side),
            codes,
            index,
            ratings - self.global_mean_ - fixed_bias[index],
            labels.shape[0],
            n_other=fixed_labels.shape[0],
            bias_reg=float(self.bias_reg),
        )
        name = f"folded_{side}_"
        setattr(
            self, name, merge_folded(getattr(self, name, None), FoldedRows(labels, bias, alphas))
        )
        return self

    def _fold_priors(self, side: str) -> list:
        """Each member's prior for folding ``side`` in (computed once per fit)."""
        cache = self.__dict__.setdefault("_fold_prior_cache", {})
        if side not in cache:
            cache[side] = member_priors(self.networks_, transpose=side == "items")
        return cache[side]

    def _folded_index(self, side: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which ``ids`` were folded in on ``side``, and their positions among the folded."""
        folded = getattr(self, f"folded_{side}_", None)
        if folded is None:
            return np.zeros(len(ids), dtype=bool), np.full(len(ids), -1)
        where = pd.Index(folded.ids).get_indexer(pd.Index(np.asarray(ids).ravel()))
        return where >= 0, where

    def _forget_folded(self) -> None:
        """Drop the users and items folded into a previous fit."""
        for name in ("folded_users_", "folded_items_", "_fold_prior_cache"):
            self.__dict__.pop(name, None)

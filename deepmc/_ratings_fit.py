"""The fit of :class:`~deepmc.RatingsCompletion` as pure functions.

Biases by regularised alternating means (:func:`fit_biases`), disjoint validation slices
and seeds for the ensemble members (:func:`validation_folds`), one member's biases and
early-stopped network (:func:`fit_member`), and the members fitted, in parallel or not,
and averaged (:func:`fit_ensemble`).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from ._device import release_freed_memory
from ._threads import available_cpus, call_with_threads, fit_threads

__all__ = [
    "Ensemble",
    "fit_biases",
    "fit_ensemble",
    "fit_member",
    "row_major_ratings",
    "validation_folds",
]

#: Sweeps of the alternating bias updates; the estimate changes by < 1e-4 after ~5.
_BIAS_SWEEPS = 10
#: Residuals below this (relative to the mean rating) count as exactly explained.
_ZERO_RESIDUAL = 1e-9
#: Steps after which a network still improving its validation RMSE continues at a larger
#: step (:func:`fit_network`): beyond the reach of the default schedule on MovieLens-100K
#: (best steps 70–80 of 5 × 5 members), so its fits are unchanged.
BOOST_AFTER = 100
#: The factor of that larger step: ``lr = 0.6`` throughout kept the test RMSE of a
#: power-law table at 5M ratings (0.8197 against 0.8192) in 155 steps instead of 365, and
#: ``0.9`` oscillated; but a larger step from the start costs MovieLens-100K ~0.0002.
BOOST = 2.0
#: The largest row weight ``(n_u m / N)^α`` of the row-weighted decay at which ``λ``
#: applies as given (:func:`scale_decay`): twice MovieLens-100K's (about 10), above the
#: 1M-rating table's of ``benchmarks/ratings_scale.py`` (15.6): those fits are unchanged.
DECAY_WEIGHT_REF = 20.0


def fit_biases(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    *,
    reg: float = 5.0,
    n_sweeps: int = _BIAS_SWEEPS,
) -> tuple[float, np.ndarray, np.ndarray]:
    r"""Global mean and regularised user / item biases by alternating means.

    Minimises, over ``b_u`` and ``b_i`` with ``μ`` the mean rating,

    .. math::

        \sum_{(u,i)\in\Omega} (r_{ui} - \mu - b_u - b_i)^2
        + \lambda \Big(\sum_u b_u^2 + \sum_i b_i^2\Big)

    by exact coordinate updates ``b_i = Σ_u (r_ui − μ − b_u) / (λ + n_i)`` and likewise
    for ``b_u``: each bias is shrunk towards 0 as if it had ``λ`` extra ratings at the
    global mean.

    Parameters
    ----------
    rows, cols : ndarray of int of shape (N,)
        User (row) and item (column) index of each rating.
    values : ndarray of shape (N,)
        The ratings.
    shape : tuple of (int, int)
        ``(n_users, n_items)``.
    reg : float, default=5.0
        λ.
    n_sweeps : int, default=10
        Alternating sweeps (item biases, then user biases).

    Returns
    -------
    mean : float
    user_bias : ndarray of shape (n_users,)
    item_bias : ndarray of shape (n_items,)

    Examples
    --------
    >>> import numpy as np
    >>> mu, bu, bi = fit_biases(np.array([0, 0, 1]), np.array([0, 1, 0]),
    ...                         np.array([5.0, 4.0, 3.0]), (2, 2), reg=0.0)
    >>> round(mu, 3), np.round(bu + bi[0], 3).tolist()
    (4.0, [1.0, -1.0])
    """
    m, n = shape
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    centred = values - mean
    n_user = np.bincount(rows, minlength=m)
    n_item = np.bincount(cols, minlength=n)
    user_bias = np.zeros(m)
    item_bias = np.zeros(n)
    for _ in range(n_sweeps):
        item_bias = np.bincount(cols, centred - user_bias[rows], minlength=n) / (reg + n_item)
        user_bias = np.bincount(rows, centred - item_bias[cols], minlength=m) / (reg + n_user)
    # With reg = 0 a user unseen in the data would divide 0 by 0.
    np.nan_to_num(item_bias, copy=False)
    np.nan_to_num(user_bias, copy=False)
    return mean, user_bias, item_bias


def validation_folds(
    n_ratings: int,
    validation_fraction: float,
    n_members: int,
    *,
    random_state: np.random.RandomState,
) -> list[tuple[np.ndarray, int]]:
    """Disjoint validation slices, one per ensemble member, and each member's seed.

    The ratings are permuted once; member ``k`` holds out slice ``k`` of
    ``round(validation_fraction * n_ratings)`` ratings, so that the members stop on
    different ratings and, together, every rating of up to ``1 / validation_fraction``
    members trains most of them (cross-fitting, as in K-fold bagging).

    Parameters
    ----------
    n_ratings : int
    validation_fraction : float
    n_members : int
    random_state : numpy.random.RandomState

    Returns
    -------
    list of (ndarray of bool of shape (n_ratings,), int)
        The validation mask and the seed of each member.
    """
    n_val = round(validation_fraction * n_ratings)
    if n_val < 1 or n_val >= n_ratings:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves {n_ratings - n_val} training "
            f"and {n_val} validation ratings out of {n_ratings}; both must be at least 1."
        )
    if n_members * n_val > n_ratings:
        raise ValueError(
            f"n_estimators={n_members} disjoint validation slices of {n_val} ratings "
            f"(validation_fraction={validation_fraction}) need {n_members * n_val} ratings, "
            f"got {n_ratings}; use at most {n_ratings // n_val} estimators or a smaller "
            "validation_fraction."
        )
    perm = random_state.permutation(n_ratings)
    seeds = random_state.randint(np.iinfo(np.int32).max, size=n_members)
    folds = []
    for k in range(n_members):
        is_val = np.zeros(n_ratings, dtype=bool)
        is_val[perm[k * n_val : (k + 1) * n_val]] = True
        folds.append((is_val, int(seeds[k])))
    return folds


def fit_member(
    rows: np.ndarray,
    cols: np.ndarray,
    ratings: np.ndarray,
    shape: tuple[int, int],
    is_val: np.ndarray,
    *,
    bias_reg: float,
    network: Any,
) -> tuple[float, np.ndarray, np.ndarray, Any]:
    """Biases, then the network on their residuals, both without the validation slice.

    The slice is held out of every stage, so the validation RMSE that chooses the
    stopping step of the network is an honest held-out estimate.

    Parameters
    ----------
    rows, cols : ndarray of int of shape (N,)
    ratings : ndarray of shape (N,)
    shape : tuple of (int, int)
    is_val : ndarray of bool of shape (N,)
        The validation slice.
    bias_reg : float
        λ of :func:`fit_biases`.
    network : estimator
        An unfitted deepmc network; fitted with ``validation_set`` = the slice.

    Returns
    -------
    mean, user_bias, item_bias
        As in :func:`fit_biases`.
    network : estimator or None
        Fitted; ``None`` when nothing is left for it: one user or one item (the biases
        then fit every rating), or residuals that are zero to rounding.
    """
    fit_ = ~is_val
    # int64 as the network keeps them: it then shares these arrays rather than copying
    fit_rows, fit_cols = rows[fit_].astype(np.int64), cols[fit_].astype(np.int64)
    mean, user_bias, item_bias = fit_biases(fit_rows, fit_cols, ratings[fit_], shape, reg=bias_reg)
    residual = ratings - mean - user_bias[rows] - item_bias[cols]
    if min(shape) < 2 or np.all(np.abs(residual) <= _ZERO_RESIDUAL * max(1.0, abs(mean))):
        return mean, user_bias, item_bias, None
    fit_residual, val_residual = residual[fit_], residual[is_val]
    del residual, fit_
    scale_decay(network, fit_rows, fit_cols, shape)
    fit_network(
        network,
        (fit_rows, fit_cols, fit_residual, shape),
        (rows[is_val], cols[is_val], val_residual, shape),
    )
    return mean, user_bias, item_bias, network


def scale_decay(network: Any, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> Any:
    """Scale ``λ`` of a row-weighted decay down so that its largest weight is ≤ the reference's.

    The compressed network decays row ``u`` of its factors at ``λ (n_u m / N)^α``
    (``decay_weighting`` α; likewise for the columns). The weights grow with the
    spread of the degrees: up to about 10 on MovieLens-100K, where ``λ`` was tuned, but
    ~100 on a power-law table of MovieLens-20M's density, whose most-rated rows are
    then decayed ten times harder and hold the whole network at its first step (best
    step 0 on such a table whose taste a smaller ``λ`` learns). When the largest
    weight ``w`` exceeds :data:`DECAY_WEIGHT_REF`, ``λ`` is multiplied by
    ``DECAY_WEIGHT_REF / w``: no row decays faster than at ``λ · DECAY_WEIGHT_REF``.

    Parameters
    ----------
    network : estimator
        Its ``weight_decay`` is set (in place) when scaled; a network without
        ``decay_weighting`` (or with α = 0 or λ = 0) is left alone.
    rows, cols : ndarray of int of shape (N,)
        The training entries.
    shape : tuple of (int, int)

    Returns
    -------
    network : estimator
    """
    params = network.get_params()
    alpha, lam = params.get("decay_weighting", 0.0), params["weight_decay"]
    if not alpha or not lam or rows.size == 0:
        return network
    m, n = shape
    top = max(np.bincount(rows, minlength=m).max() * m, np.bincount(cols, minlength=n).max() * n)
    weight = (top / rows.size) ** alpha
    if weight > DECAY_WEIGHT_REF:
        network.set_params(weight_decay=lam * DECAY_WEIGHT_REF / weight)
    return network


def fit_network(network: Any, train: tuple, validation: tuple) -> Any:
    """Fit ``network`` early-stopped; past :data:`BOOST_AFTER` steps, at a larger step.

    The networks' step is ``lr`` in units of σ₁ of the residual matrix. On a large
    power-law table σ₁ comes from the most-rated users and items, where the
    residual matrix is sampled densely; the taste of the many rarely-rated ones lies in
    weaker directions, which a step safe for σ₁'s converge to slowly: the validation
    optimum comes after hundreds of steps. The network is fitted for
    :data:`BOOST_AFTER` steps; if its validation RMSE still improved at one of the
    last two checks, it continues from its best state (``warm_start``) at
    :data:`BOOST` times the step (at most ``1.8 / depth``, 0.9 of the stable step
    ``2/L`` of gradient descent in these units) until early stopping ends it. A fit
    that stops by itself before is left as it is; one that has stopped improving by
    then stops there, its best state restored (early stopping, at fewer checks
    without improvement than ``n_iter_no_change``: no warning of ``max_iter``).
    Plain gradient descent with early stopping and a numeric ``lr`` only; other
    fits run as given.

    Parameters
    ----------
    network : estimator
        An unfitted deepmc network with ``early_stopping=True``.
    train, validation : tuple
        ``(rows, cols, values, shape)`` of the training and validation residuals.

    Returns
    -------
    network : estimator
        Fitted, its parameters (``lr``, ``max_iter``, ``warm_start``) as given.
    """
    params = network.get_params()
    max_iter, lr = params["max_iter"], params["lr"]
    boost = (
        lr != "auto"
        and max_iter > BOOST_AFTER
        and params.get("early_stopping", False)
        and params.get("optimizer", "gd") == "gd"
    )
    with warnings.catch_warnings():
        if boost:  # the horizon is not the caller's max_iter: no warning of reaching it
            network.set_params(max_iter=BOOST_AFTER)
            warnings.filterwarnings("ignore", ".* reached max_iter", ConvergenceWarning)
        network.fit(train, validation_set=validation)
    recent = network.n_iter_ - 2 * params["check_every"]
    if boost and network.n_iter_ == BOOST_AFTER and network.best_iteration_ >= recent:
        # never past 0.9 of the stable step 2/L (normalised units) of gradient descent
        boosted = max(lr, min(BOOST * lr, 1.8 / params["depth"]))
        network.set_params(warm_start=True, lr=boosted, max_iter=max_iter - BOOST_AFTER)
        network.fit(train, validation_set=validation)
    network.set_params(**{k: params[k] for k in ("max_iter", "lr", "warm_start")})
    return network


def _fit_member_and_release(*args: Any, **kwargs: Any) -> tuple:
    """:func:`fit_member`, then the heap it freed handed back to the OS.

    Each member frees its copies of the data when it returns, but glibc keeps the freed
    pages in its heap, fragmented by what the member left alive (its fitted factors):
    without the trim (:func:`deepmc._device.release_freed_memory`) the process grows from
    member to member on a table of millions of ratings.
    """
    out = fit_member(*args, **kwargs)
    release_freed_memory()
    return out


def row_major_ratings(
    rows: np.ndarray,
    cols: np.ndarray,
    ratings: np.ndarray,
    folds: list[tuple[np.ndarray, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[np.ndarray, int]]]:
    """The ratings and the folds' validation slices sorted by row, then column.

    The order the networks keep their observations in: every member's training part
    (a subsequence) is then sorted already, and the network uses it as it is instead of
    sorting a copy of it, the largest temporaries of a member's fit. Each member keeps
    the same validation ratings.

    Parameters
    ----------
    rows, cols : ndarray of int of shape (N,)
    ratings : ndarray of shape (N,)
    folds : list of (ndarray of bool of shape (N,), int)
        From :func:`validation_folds`.

    Returns
    -------
    rows, cols, ratings, folds
        Permuted alike.
    """
    order = np.lexsort((cols, rows))
    return (
        rows[order],
        cols[order],
        ratings[order],
        [(is_val[order], seed) for is_val, seed in folds],
    )


class Ensemble(NamedTuple):
    """The members of a fit, averaged where predictions are linear in them.

    Attributes
    ----------
    global_mean : float
        μ, averaged over the members.
    user_bias, item_bias : ndarray of shape (n_users,) and (n_items,)
        Averaged over the members.
    networks : list of (estimator or None)
        Each member's fitted network (``None`` where :func:`fit_member` fitted none).
    """

    global_mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    networks: list[Any]


def fit_ensemble(
    rows: np.ndarray,
    cols: np.ndarray,
    ratings: np.ndarray,
    shape: tuple[int, int],
    folds: list[tuple[np.ndarray, int]],
    network: Any,
    *,
    bias_reg: float,
    n_jobs: int | None,
) -> Ensemble:
    """Fit one member per fold (:func:`fit_member`) and average their biases.

    Parameters
    ----------
    rows, cols : ndarray of int of shape (N,)
        Best in row-major order (:func:`row_major_ratings`): each member's network then
        shares its part of them rather than sorting a copy.
    ratings : ndarray of shape (N,)
    shape : tuple of (int, int)
    folds : list of (ndarray of bool of shape (N,), int)
        From :func:`validation_folds`: each member's validation slice and seed.
    network : estimator
        An unfitted deepmc network, cloned for each member with its seed.
    bias_reg : float
        λ of :func:`fit_biases`.
    n_jobs : int or None
        Members fitted in parallel by :class:`joblib.Parallel`.

    Returns
    -------
    Ensemble
    """
    # members in worker processes share the CPUs: each worker gets its part of them
    n_workers = min(effective_n_jobs(n_jobs), len(folds))
    per_worker = max(available_cpus() // n_workers, 1) if n_workers > 1 else None
    with fit_threads():
        members = Parallel(n_jobs=n_jobs)(
            delayed(call_with_threads)(
                per_worker,
                _fit_member_and_release,
                rows,
                cols,
                ratings,
                shape,
                is_val,
                bias_reg=bias_reg,
                network=clone(network).set_params(random_state=seed),
            )
            for is_val, seed in folds
        )
    # Predictions are linear in the members' terms until the final clip, so the
    # averaged biases are exactly the bias part of the averaged prediction.
    return Ensemble(
        global_mean=float(np.mean([m[0] for m in members])),
        user_bias=np.mean([m[1] for m in members], axis=0),
        item_bias=np.mean([m[2] for m in members], axis=0),
        networks=[m[3] for m in members],
    )

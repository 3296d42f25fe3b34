"""Fold-in of users (or items) into a fitted :class:`~deepmc.RatingsCompletion`.

A rating is predicted as ``μ + b_u + b_i + x̂_ui`` averaged over the ensemble members,
with ``x̂`` each member's network. A user who is new, or whose ratings changed, gets a
bias and, in every member, a row of ``x̂`` fitted to their ratings with the items fixed:
the row is a ridge regression on the member's fitted item factor with the prior the
fitted users define (:mod:`deepmc._foldin`), and the bias is one more coefficient of the
same regression whose penalty ``λ b_u²`` is the ``bias_reg`` of the fit (a bias shrunk as
if it had ``λ`` extra ratings at the mean, as in :func:`deepmc.ratings.fit_biases`).
Items fold in the same way with the users fixed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ._foldin import RowPrior, fold_in, row_prior

__all__ = ["FoldedRows", "fold_in_ratings", "folded_terms", "member_priors", "merge_folded"]


class FoldedRows(NamedTuple):
    """Users (or items) folded into a fitted model.

    Attributes
    ----------
    ids : ndarray of shape (f,)
        Their ids.
    bias : ndarray of shape (f,)
        Their bias, averaged over the members.
    alphas : list of (ndarray of shape (f, r_k) or None)
        Their coefficients on each member's prior (``None`` for a member without network).
    """

    ids: np.ndarray
    bias: np.ndarray
    alphas: list[np.ndarray | None]


def member_priors(networks: list[Any], *, transpose: bool) -> list[tuple[RowPrior, float] | None]:
    """Each member's row prior and noise variance (users' rows, or items' with ``transpose``).

    Parameters
    ----------
    networks : list of fitted estimators or None
        The members' networks (``RatingsCompletion.networks_``).
    transpose : bool
        Fold items in (the rows of ``X̂ᵀ``) rather than users.

    Returns
    -------
    list of (RowPrior, float) or None
    """
    priors: list[tuple[RowPrior, float] | None] = []
    for net in networks:
        if net is None:
            priors.append(None)
            continue
        left, right = net._factors()
        prior = row_prior(right, left) if transpose else row_prior(left, right)
        priors.append((prior, net._noise_variance(prior)))
    return priors


def fold_in_ratings(
    priors: list[tuple[RowPrior, float] | None],
    rows: np.ndarray,
    cols: np.ndarray,
    targets: np.ndarray,
    n_new: int,
    *,
    n_other: int,
    bias_reg: float,
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Bias and per-member coefficients of ``n_new`` rows from their bias-free ratings.

    Parameters
    ----------
    priors : list
        From :func:`member_priors`.
    rows : ndarray of int of shape (N,)
        Index of each rating's new row, in ``[0, n_new)``.
    cols : ndarray of int of shape (N,)
        Index of each rating's fixed side (an item when users fold in).
    targets : ndarray of shape (N,)
        The ratings less ``μ`` and the fixed side's bias.
    n_new : int
    n_other : int
        Size of the fixed side (items when users fold in).
    bias_reg : float
        λ of the bias.

    Returns
    -------
    bias : ndarray of shape (n_new,)
        Averaged over the members.
    alphas : list of (ndarray of shape (n_new, r_k) or None)
    """
    order = np.argsort(rows, kind="stable")
    rows, cols, targets = rows[order], cols[order], np.asarray(targets, float)[order]
    spread = float(np.var(targets)) if targets.size else 1.0
    biases, alphas = [], []
    for member in priors:
        if member is None:
            prior, noise_var = None, spread
        else:
            prior, noise_var = member
        noise_var = max(noise_var, 1e-12)
        scale = np.sqrt(noise_var / max(bias_reg, 1e-12))  # the bias's prior std
        mean = np.zeros(n_other) if prior is None else prior.mean
        basis = np.zeros((n_other, 0)) if prior is None else prior.basis
        ones = np.full((n_other, 1), scale)
        coef = fold_in(
            RowPrior(mean, np.hstack([basis, ones])), rows, cols, targets, n_new, noise_var
        )
        biases.append(scale * coef[:, -1])
        alphas.append(None if prior is None else coef[:, :-1])
    return np.mean(biases, axis=0), alphas


def folded_terms(
    priors: list[tuple[RowPrior, float] | None],
    folded: FoldedRows,
    where: np.ndarray,
    other: np.ndarray,
) -> np.ndarray:
    """The members' averaged network term of folded rows ``where`` at ``other``.

    Parameters
    ----------
    priors : list
        From :func:`member_priors`, as at the fold-in.
    folded : FoldedRows
    where : ndarray of int of shape (K,)
        Positions in ``folded.ids``.
    other : ndarray of int of shape (K,)
        Index of the fixed side (an item when users were folded in).

    Returns
    -------
    ndarray of shape (K,)
    """
    out = np.zeros(where.shape[0])
    for member, alpha in zip(priors, folded.alphas, strict=True):
        if member is None or alpha is None:
            continue
        prior = member[0]
        out += (prior.mean[other] + np.einsum("kr,kr->k", alpha[where], prior.basis[other])) / len(
            priors
        )
    return out


def merge_folded(old: FoldedRows | None, new: FoldedRows) -> FoldedRows:
    """``old`` with the rows of ``new`` added, or replacing those of the same id."""
    if old is None:
        return new
    keep = ~pd.Index(old.ids).isin(pd.Index(new.ids))
    alphas = [
        None if a is None else np.concatenate([a[keep], b])
        for a, b in zip(old.alphas, new.alphas, strict=True)
    ]
    return FoldedRows(
        ids=np.concatenate([old.ids[keep], new.ids]),
        bias=np.concatenate([old.bias[keep], new.bias]),
        alphas=alphas,
    )

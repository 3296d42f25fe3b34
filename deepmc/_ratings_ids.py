"""Ids and input tables of :class:`~deepmc.RatingsCompletion`: checks and encoding.

Users and items are arbitrary labels (ints, strings); they are checked (no missing or
infinite ids, one kind of id, no pair rated twice) and mapped to rows and columns in
sorted order. The input is a DataFrame with ``user``, ``item`` (and ``rating``) columns,
an array of ``(user, item[, rating])`` rows, or pairs with the ratings apart.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["input_pairs"]


def _positions(mask: np.ndarray, limit: int = 5) -> str:
    """``"3 (at positions [0, 7, 9])"``: the count and the first positions of ``mask``."""
    where = np.flatnonzero(mask)
    shown = ", ".join(str(k) for k in where[:limit]) + (", ..." if where.size > limit else "")
    return f"{where.size} (at positions [{shown}])"


def _check_ids(ids: np.ndarray, name: str) -> np.ndarray:
    """``ids`` as a 1-D array, rejecting missing ids (NaN, None, NaT) by name and position.

    A NaN id would otherwise become a user called ``"nan"`` (after a string conversion) or
    make the sorting of the ids fail with a bare ``TypeError``.
    """
    ids = np.asarray(ids)
    missing = np.asarray(pd.isna(ids), dtype=bool).reshape(ids.shape)
    if missing.any():
        raise ValueError(
            f"{name}: found {_positions(missing)} missing ids (NaN or None); drop or fill "
            "those rows first."
        )
    if ids.dtype.kind == "f" and np.isinf(ids).any():
        raise ValueError(
            f"{name}: found {_positions(np.isinf(ids))} infinite ids; ids must be finite."
        )
    return ids


def _id_kind(ids: np.ndarray) -> str | None:
    """``"number"`` or ``"string"`` for ids all of one kind, ``None`` for a mix."""
    if ids.dtype.kind in "biuf":
        return "number"
    if ids.dtype.kind in "US":
        return "string"
    values = ids.ravel().tolist()
    if all(isinstance(v, numbers.Number) for v in values):
        return "number"
    if all(isinstance(v, str) for v in values):
        return "string"
    return None


def _check_id_kind(ids: np.ndarray, fitted: np.ndarray, name: str) -> None:
    """Refuse ids of another kind than the fitted ones: every one would be unknown."""
    kind, fitted_kind = _id_kind(ids), _id_kind(fitted)
    if ids.size and kind and fitted_kind and kind != fitted_kind:
        raise ValueError(
            f"predict: the {name} ids are {kind}s (e.g. {ids.ravel()[0]!r}) but the model "
            f"was fitted on {fitted_kind} ids (e.g. {fitted.ravel()[0]!r}), so none of them "
            "is known and every prediction would fall back to the mean. Pass the ids as "
            "they were given to fit."
        )


def _encode_ids(ids: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and the index of each id among them."""
    try:
        labels, codes = np.unique(ids, return_inverse=True)
    except TypeError as exc:
        kinds = sorted({type(v).__name__ for v in ids.ravel().tolist()})
        raise ValueError(
            f"{name}: ids must be mutually sortable, got a mix of types {kinds}; convert "
            f"them to one type (e.g. all str) first."
        ) from exc
    # int32 where the ids allow: the codes are the fit's largest arrays after the ratings
    index_dtype = np.int32 if labels.shape[0] < 2**31 else np.int64
    return labels, codes.astype(index_dtype).ravel()


def _check_unique_pairs(
    rows: np.ndarray, cols: np.ndarray, users: np.ndarray, items: np.ndarray
) -> None:
    """Reject a (user, item) pair rated more than once, naming the first one."""
    key = rows * np.int64(items.shape[0]) + cols
    # sorting a copy finds repeats in place of a hash table several times its size
    ordered = np.sort(key)
    if not np.any(ordered[1:] == ordered[:-1]):
        return
    del ordered
    dup = pd.Index(key).duplicated(keep=False)
    if dup.any():
        first = np.flatnonzero(dup)[0]
        at = np.flatnonzero(key == key[first])
        n_pairs = int(pd.Index(key[dup]).nunique())
        raise ValueError(
            f"X: {n_pairs} (user, item) pair(s) are rated more than once, e.g. user "
            f"{users[rows[first]]!r} and item {items[cols[first]]!r} at positions "
            f"{at[:5].tolist()}. Aggregate them first, e.g. "
            "df.groupby(['user', 'item'], as_index=False)['rating'].mean()."
        )


def input_pairs(X: Any, y: Any, *, need_ratings: bool) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(users, items, ratings)`` from a DataFrame, an (N, 2|3) array, or pairs + y."""
    ratings = None
    if sp.issparse(X):
        raise TypeError(
            "X: sparse input is not supported; pass a DataFrame with 'user' and 'item' "
            "columns or an array of (user, item) pairs (ids, not a feature matrix)."
        )
    if isinstance(X, pd.DataFrame):
        missing = [c for c in ("user", "item") if c not in X.columns]
        if missing:
            raise ValueError(
                f"X: a DataFrame needs 'user' and 'item' columns (and 'rating' unless "
                f"y is given); missing {missing}, got columns {list(X.columns)}."
            )
        users, items = X["user"].to_numpy(), X["item"].to_numpy()
        if y is None and "rating" in X.columns:
            ratings = X["rating"].to_numpy()
    else:
        arr = np.asarray(X, dtype=object if not hasattr(X, "dtype") else None)
        if arr.ndim != 2 or arr.shape[1] not in (2, 3):
            raise ValueError(
                "X: expected a DataFrame with 'user', 'item'[, 'rating'] columns or an "
                f"array of shape (N, 2) (user, item) or (N, 3) (user, item, rating); "
                f"got shape {arr.shape}."
            )
        users, items = arr[:, 0], arr[:, 1]
        if arr.shape[1] == 3 and y is None:
            ratings = arr[:, 2]
    if y is not None:
        ratings = np.asarray(y)
    if ratings is not None:
        ratings = np.asarray(ratings)
        if ratings.dtype.kind == "c" or (
            ratings.dtype == object and ratings.size and isinstance(ratings.flat[0], complex)
        ):
            raise ValueError(
                "ratings: complex values are not supported (their imaginary part would "
                "be dropped); pass real ratings."
            )
        try:
            ratings = np.asarray(ratings, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ratings must be numeric: {exc}") from exc
        if ratings.shape != users.shape:
            raise ValueError(
                f"ratings: expected {users.shape[0]} values (one per (user, item) pair), "
                f"got shape {ratings.shape}."
            )
        bad = ~np.isfinite(ratings)
        if bad.any():
            raise ValueError(
                f"ratings: found {_positions(bad)} NaN or infinite values; drop those rows first."
            )
    elif need_ratings:
        raise ValueError(
            "fit: no ratings given; pass a DataFrame with a 'rating' column, an (N, 3) "
            "array, or (user, item) pairs with y=ratings."
        )
    return _check_ids(users, "user"), _check_ids(items, "item"), ratings

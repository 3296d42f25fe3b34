"""Input conversion: every accepted input becomes sorted ``Observations``.

Accepted inputs:

* a dense array or :class:`pandas.DataFrame` with ``np.nan`` marking missing entries;
* a dense array plus an explicit boolean ``mask`` (``True`` = observed); values where the
  mask is ``False`` are ignored, NaN included;
* a :mod:`scipy.sparse` matrix or array whose *stored* entries are the observed ones
  (explicit zeros included);
* triplets ``(rows, cols, values)`` or ``(rows, cols, values, shape)``, or an
  :class:`Observations`.

Refused, with a ``ValueError`` naming the argument: arrays that are not 2-D, empty
matrices, non-finite observed values (``inf``, or NaN stored in a sparse matrix),
complex, object and string dtypes, a mask of another shape or not boolean, out-of-range,
non-integer or duplicate triplet indices. A ``TypeError``: a ``mask`` with sparse or
triplet input.

The caller's arrays are never modified: everything below reads and copies.

Hyper-parameters are checked by :mod:`deepmc._param_checks` (re-exported here).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.utils import check_array

from ._param_checks import Interval, InvalidParameterError, StrOptions, check_params

__all__ = [
    "ENTRY_SAMPLE_SIZE",
    "TRANSDUCTIVE_ADVICE",
    "Interval",
    "InvalidParameterError",
    "Observations",
    "StrOptions",
    "check_indices",
    "check_observations",
    "check_params",
    "check_same_matrix",
    "entry_sample",
    "row_major",
]


class Observations(NamedTuple):
    """Observed entries of an ``m × n`` matrix, in coordinate form.

    Attributes
    ----------
    rows : ndarray of shape (N,), dtype int64
        Row index of each observation.
    cols : ndarray of shape (N,), dtype int64
        Column index of each observation.
    values : ndarray of shape (N,), dtype float32 or float64
        Observed values.
    shape : tuple of (int, int)
        ``(m, n)``, the shape of the full matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from deepmc import Observations
    >>> obs = Observations(np.array([0, 1]), np.array([1, 0]), np.array([2.0, 3.0]), (2, 2))
    >>> obs.shape
    (2, 2)
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    @property
    def n_observed(self) -> int:
        """Number of observed entries N."""
        return int(self.values.shape[0])

    def to_dense(self) -> np.ndarray:
        """Return the ``m × n`` array with ``np.nan`` at unobserved entries."""
        out = np.full(self.shape, np.nan, dtype=self.values.dtype)
        out[self.rows, self.cols] = self.values
        return out


def _float_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


def _check_numeric_dtype(dtype: np.dtype, what: str) -> None:
    """Refuse complex, object, string and other non-real dtypes with a specific message."""
    kind = np.dtype(dtype).kind
    if kind in "biuf":
        return
    if kind == "c":
        raise ValueError(
            f"{what}: Complex data not supported; got dtype {dtype}. Expected real numbers "
            "(float, int or bool)."
        )
    hint = (
        " Convert it first, e.g. X.astype(float) with np.nan for missing entries."
        if kind in "OUS"
        else ""
    )
    raise ValueError(
        f"{what}: expected a numeric matrix (float, int or bool) with np.nan for missing "
        f"entries, got dtype {dtype}.{hint}"
    )


def _check_not_empty(shape: tuple[int, ...], what: str) -> None:
    if shape[0] == 0:
        raise ValueError(
            f"{what}: empty matrix: found array with 0 sample(s) (shape={tuple(shape)}) "
            "while a minimum of 1 is required."
        )
    if shape[1] == 0:
        raise ValueError(
            f"{what}: empty matrix: found array with 0 feature(s) (shape={tuple(shape)}) "
            "while a minimum of 1 is required."
        )


def check_indices(rows: Any, cols: Any, shape: tuple[int, int], *, name: str = "rows/cols"):
    """Validate integer index arrays against ``shape``.

    Parameters
    ----------
    rows, cols : array-like of int
        Row and column indices, same length.
    shape : tuple of (int, int)
        Shape of the matrix the indices address.
    name : str, default="rows/cols"
        Argument name used in error messages.

    Returns
    -------
    rows, cols : ndarray of int64

    Raises
    ------
    ValueError
        If the indices are not 1-D integers of equal length within ``shape``.
    """
    out = []
    for label, idx, bound in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
        arr = np.asarray(idx)
        if arr.ndim != 1:
            raise ValueError(
                f"{name}: {label} must be a 1-D array of integer indices, got an array "
                f"with shape {arr.shape}."
            )
        if arr.dtype.kind not in "iu":
            if (
                arr.dtype.kind == "f"
                and arr.size
                and np.all(np.isfinite(arr))
                and np.all(arr == np.round(arr))
            ):
                arr = arr.astype(np.int64)
            elif arr.size == 0:
                arr = arr.astype(np.int64)
            else:
                raise ValueError(
                    f"{name}: {label} must hold integer indices, got dtype {arr.dtype}."
                )
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (arr.min() < 0 or arr.max() >= bound):
            raise ValueError(
                f"{name}: {label} must lie in [0, {bound}) for a matrix of shape {shape}, "
                f"got values in [{arr.min()}, {arr.max()}]."
            )
        out.append(arr)
    if out[0].shape != out[1].shape:
        raise ValueError(
            f"{name}: rows and cols must have the same length, got {out[0].shape[0]} and "
            f"{out[1].shape[0]}."
        )
    return out[0], out[1]


def _check_finite_values(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{what}: observed values must be finite, got {int(bad.sum())} non-finite "
            f"value(s) (e.g. {values[bad][0]!r}). Mark missing entries as unobserved instead."
        )


def check_value_range(obs: Observations, what: str = "X") -> None:
    """Refuse observations that floating point cannot fit: all zero, or too large or small.

    The fit divides the values by the largest singular value of the sampled matrix and
    sums squares of them; values whose squares overflow or underflow the dtype would end
    in an overflow or a spurious divergence, so they are refused with the way out.
    """
    if obs.n_observed == 0:
        return
    amax = float(np.max(np.abs(obs.values)))
    if amax == 0:
        raise ValueError(
            f"{what}: every observed entry is 0, so there is nothing to complete (the "
            "completion would be the zero matrix). Check that the values were read correctly."
        )
    info = np.finfo(obs.values.dtype)
    # the sum of N squares must stay finite, and the squares must not all underflow
    high = float(np.sqrt(info.max)) / (10.0 * np.sqrt(obs.n_observed))
    low = float(np.sqrt(info.tiny)) * 1e3
    if not low <= amax <= high:
        raise ValueError(
            f"{what}: the largest observed magnitude is {amax:.3g}, outside what a "
            f"{info.dtype} fit can represent ({low:.1g} to {high:.1g} for "
            f"{obs.n_observed} entries). Rescale the values first (e.g. divide X by "
            f"{amax:.3g}) and multiply the completion back."
        )


#: Entries per slice of :func:`row_major`'s comparisons (bounds its temporaries).
_CHECK_CHUNK = 1 << 20


def row_major(rows: np.ndarray, cols: np.ndarray) -> bool:
    """Whether the entries are strictly increasing in row-major order (sorted, no repeats)."""
    for a in range(0, rows.shape[0] - 1, _CHECK_CHUNK):
        b = min(a + _CHECK_CHUNK, rows.shape[0] - 1)
        r0, r1 = rows[a:b], rows[a + 1 : b + 1]
        if np.any(r1 < r0) or np.any((r1 == r0) & (cols[a + 1 : b + 1] <= cols[a:b])):
            return False
    return True


def _sorted(rows, cols, values, shape) -> Observations:
    shape = (int(shape[0]), int(shape[1]))
    # Input already in row-major order (a caller that sorted once for several fits) is
    # kept as it is: the permuted copies would be the fit's largest temporaries.
    if row_major(rows, cols):
        return Observations(rows, cols, values, shape)
    order = np.lexsort((cols, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    if rows.size > 1:
        dup = (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])
        if dup.any():
            k = int(np.argmax(dup))
            raise ValueError(
                f"X: entry ({rows[k]}, {cols[k]}) is observed more than once "
                f"({int(dup.sum())} duplicate(s)); each entry may be observed at most once."
            )
    return Observations(rows, cols, values, shape)


def _from_triplets(X: tuple) -> Observations:
    if len(X) not in (3, 4):
        raise ValueError(
            "X: a tuple input must be (rows, cols, values) or (rows, cols, values, shape), "
            f"got a tuple of length {len(X)}."
        )
    values = np.asarray(X[2])
    if values.ndim != 1:
        raise ValueError(f"X: triplet values must be 1-D, got shape {values.shape}.")
    _check_numeric_dtype(values.dtype, "X (triplet values)")
    if len(X) == 4:
        shape = tuple(X[3])
        if len(shape) != 2 or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape):
            raise ValueError(f"X: shape must be two positive integers, got {X[3]!r}.")
    else:
        r, c = np.asarray(X[0]), np.asarray(X[1])
        if r.size == 0:
            raise ValueError("X: no observed entries; cannot infer the shape from triplets.")
        shape = (int(np.max(r)) + 1, int(np.max(c)) + 1)
    rows, cols = check_indices(X[0], X[1], shape, name="X")
    if values.shape[0] != rows.shape[0]:
        raise ValueError(
            f"X: rows, cols and values must have the same length, got {rows.shape[0]} "
            f"indices and {values.shape[0]} values."
        )
    values = values.astype(_float_dtype(values.dtype), copy=True)
    _check_finite_values(values, "X")
    return _sorted(rows, cols, values, shape)


def check_observations(X: Any, *, mask: Any = None) -> Observations:
    """Convert any accepted input into sorted :class:`Observations`.

    Parameters
    ----------
    X : array-like, DataFrame, sparse matrix, tuple or Observations
        The partially observed matrix; see the module docstring for the formats.
    mask : array-like of bool of shape (m, n), default=None
        Explicit observation mask for a dense ``X`` (``True`` = observed).

    Returns
    -------
    Observations
        Sorted by row then column; values are float32 if the input was float32, else
        float64; arrays are copies.

    Raises
    ------
    ValueError
        On any malformed input, naming the argument, what was received and what is
        expected.
    TypeError
        If ``mask`` is given with a sparse or triplet ``X``.
    """
    if isinstance(X, tuple):
        if mask is not None:
            raise TypeError("mask: only valid with a dense X; triplets are all observed.")
        return _from_triplets(X)
    if sp.issparse(X):
        if mask is not None:
            raise TypeError(
                "mask: only valid with a dense X; the stored entries of a sparse X are the "
                "observed ones."
            )
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D matrix, got {X.ndim} dimension(s).")
        _check_numeric_dtype(X.dtype, "X (sparse matrix)")
        _check_not_empty(X.shape, "X")
        coo = sp.coo_matrix(X)  # a new object; X is untouched
        values = np.array(coo.data, dtype=_float_dtype(coo.dtype), copy=True)
        _check_finite_values(values, "X (stored entries of the sparse matrix)")
        rows = np.asarray(coo.row, dtype=np.int64)
        cols = np.asarray(coo.col, dtype=np.int64)
        return _sorted(rows, cols, values, coo.shape)

    if isinstance(X, pd.DataFrame):
        non_numeric = [c for c, t in X.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
        if non_numeric:
            raise ValueError(
                f"X: DataFrame columns must be numeric, got non-numeric column(s) "
                f"{non_numeric[:5]!r}."
            )
        all_f32 = X.shape[1] > 0 and all(t == np.float32 for t in X.dtypes)
        arr = X.to_numpy(dtype=np.float32 if all_f32 else np.float64, na_value=np.nan)
    else:
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"X: could not convert the input of type {type(X).__name__} to a 2-D numeric "
                f"array ({exc})."
            ) from exc
    _check_numeric_dtype(arr.dtype, "X")
    if arr.ndim != 2:
        hint = (
            " Reshape your data with X.reshape(1, -1) for a single row or X.reshape(-1, 1) "
            "for a single column."
            if arr.ndim == 1
            else ""
        )
        raise ValueError(
            f"X: expected a 2-D matrix, got an array with {arr.ndim} dimension(s) and shape "
            f"{arr.shape}.{hint}"
        )
    _check_not_empty(arr.shape, "X")
    arr = check_array(
        arr,
        dtype=(np.float64, np.float32),
        ensure_all_finite=False,
        copy=False,
        input_name="X",
    )
    if mask is None:
        observed = ~np.isnan(arr)
    else:
        m = mask.to_numpy() if isinstance(mask, pd.DataFrame) else np.asarray(mask)
        if m.shape != arr.shape:
            raise ValueError(f"mask: expected shape {arr.shape} (that of X), got {m.shape}.")
        if m.dtype != np.bool_:
            raise ValueError(
                f"mask: expected a boolean array (True = observed), got dtype {m.dtype}."
            )
        observed = m
    rows, cols = np.nonzero(observed)
    values = np.array(arr[rows, cols], copy=True)
    _check_finite_values(values, "X")
    return Observations(rows.astype(np.int64), cols.astype(np.int64), values, arr.shape)


#: Observed entries an estimator keeps from ``fit`` to recognise its matrix later.
ENTRY_SAMPLE_SIZE = 256
#: Why a matrix estimator refuses another matrix, and what to do instead.
TRANSDUCTIVE_ADVICE = (
    "score compares with held-out entries of the fitted matrix; a matrix with other rows "
    "is another problem (transform(X) completes new rows by folding them in, and a Pipeline "
    "with deepmc as a step cross-validates over rows). To score the completion itself, hold "
    "out entries rather than rows: fit on X with the held-out entries set to np.nan and "
    "score a matrix holding only those entries."
)


def entry_sample(obs: Observations, size: int = ENTRY_SAMPLE_SIZE) -> Observations:
    """Up to ``size`` observations of ``obs``, evenly spaced in row-major order.

    A small fingerprint of the fitted matrix (no random draw, so fitting stays
    reproducible): :func:`check_same_matrix` compares it with a later input.

    Parameters
    ----------
    obs : Observations
        Sorted observations (as :func:`check_observations` returns them).
    size : int, default=256
        Most observations kept.

    Returns
    -------
    Observations
    """
    if obs.n_observed == 0:
        return obs
    idx = np.unique(np.linspace(0, obs.n_observed - 1, num=min(size, obs.n_observed)))
    idx = idx.astype(np.int64)
    return Observations(obs.rows[idx], obs.cols[idx], obs.values[idx].copy(), obs.shape)


def check_same_matrix(sample: Observations, obs: Observations, *, name: str) -> None:
    """Refuse ``obs`` if an entry observed in both it and ``sample`` has another value.

    Held-out entries of the fitted matrix pass (they are not in ``sample``, or agree
    with it); the rows of another matrix of the same shape, such as a cross-validation
    fold of rows, almost surely disagree on some shared position.

    Parameters
    ----------
    sample : Observations
        :func:`entry_sample` of the fitted matrix.
    obs : Observations
        Sorted observations of the input, of the fitted shape.
    name : str
        The calling method, for the message.

    Raises
    ------
    ValueError
        Naming the first entry whose value differs.
    """
    if obs.n_observed == 0 or sample.n_observed == 0:
        return
    n = obs.shape[1]
    keys = obs.rows * n + obs.cols  # increasing: the observations are sorted row-major
    pos = np.minimum(np.searchsorted(keys, sample.rows * n + sample.cols), keys.shape[0] - 1)
    shared = keys[pos] == sample.rows * n + sample.cols
    fitted = sample.values.astype(obs.values.dtype)
    differ = np.flatnonzero(shared & (obs.values[pos] != fitted))
    if differ.size:
        k = differ[0]
        raise ValueError(
            f"{name}: X is not the matrix this estimator was fitted on: entry "
            f"({sample.rows[k]}, {sample.cols[k]}) was {fitted[k]!r} at fit and is "
            f"{obs.values[pos[k]]!r} here. {TRANSDUCTIVE_ADVICE}"
        )

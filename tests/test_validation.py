"""Property-based tests of the input conversion :func:`deepmc._validation.check_observations`.

Whatever the shape, mask, dtype and format, the observed entries come back exactly (sorted
by row then column, as copies, float32 kept float32); invalid input always raises a
``ValueError`` or ``TypeError`` that names the argument.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from deepmc._validation import Observations, check_indices, check_observations

SETTINGS = settings(max_examples=60, deadline=None)
DTYPES = [np.float32, np.float64, np.int32, np.int64]
FORMATS = ["dense", "dataframe", "csr", "csc", "coo", "coo_array", "triplets", "mask"]


@st.composite
def partial_matrices(draw):
    """A matrix, its observation mask and its dtype (values include explicit zeros)."""
    m = draw(st.integers(1, 7))
    n = draw(st.integers(1, 7))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.kind == "f":
        elements = st.floats(-1e6, 1e6, width=dtype.itemsize * 8) | st.just(0.0)
    else:
        elements = st.integers(-1000, 1000)
    values = draw(hnp.arrays(dtype, (m, n), elements=elements))
    mask = draw(hnp.arrays(np.bool_, (m, n)))
    return values, mask


def _as_format(values, mask, fmt):
    """The same observations in format ``fmt``: (X, kwargs), or None if not expressible."""
    r, c = np.nonzero(mask)
    if fmt in ("dense", "dataframe"):
        if values.dtype.kind != "f":
            return None  # NaN marks missing entries: needs a float dtype
        dense = np.where(mask, values, np.nan).astype(values.dtype)
        return (pd.DataFrame(dense) if fmt == "dataframe" else dense), {}
    if fmt == "mask":
        junk = np.where(mask, values, values.dtype.type(-7))  # ignored where unobserved
        return junk, {"mask": mask.copy()}
    if fmt == "triplets":
        return (r, c, values[r, c], values.shape), {}
    coo = sp.coo_matrix((values[r, c], (r, c)), shape=values.shape)
    if fmt == "coo_array":
        return sp.coo_array(coo), {}
    return getattr(coo, f"to{fmt}")() if fmt != "coo" else coo, {}


def _arrays(X, kwargs) -> list[np.ndarray]:
    """Copies of every array the caller passed (sparse: its data and index arrays)."""
    if isinstance(X, tuple):
        parts = [np.asarray(x) for x in X]
    elif isinstance(X, pd.DataFrame):
        parts = [X.to_numpy()]
    elif sp.issparse(X):
        names = ("data", "indices", "indptr", "row", "col")
        parts = [getattr(X, a) for a in names if hasattr(X, a)]
    else:
        parts = [X]
    return [np.array(p, copy=True) for p in [*parts, *kwargs.values()]]


@SETTINGS
@given(partial_matrices(), st.sampled_from(FORMATS))
def test_observed_entries_come_back_exactly(matrix, fmt):
    values, mask = matrix
    converted = _as_format(values, mask, fmt)
    if converted is None:
        return
    X, kwargs = converted
    before = _arrays(X, kwargs)
    obs = check_observations(X, **kwargs)
    for a, b in zip(before, _arrays(X, kwargs), strict=True):  # the input is untouched
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    want_rows, want_cols = np.nonzero(mask)  # row-major: sorted by row, then column
    assert isinstance(obs, Observations)
    assert obs.shape == values.shape
    np.testing.assert_array_equal(obs.rows, want_rows)
    np.testing.assert_array_equal(obs.cols, want_cols)
    assert obs.rows.dtype == obs.cols.dtype == np.int64
    want_dtype = np.float32 if values.dtype == np.float32 else np.float64
    assert obs.values.dtype == want_dtype
    np.testing.assert_array_equal(obs.values, values[mask].astype(want_dtype))  # exact
    if obs.n_observed:
        # copies, never views of the caller's memory
        assert not np.shares_memory(obs.values, values)
        dense = obs.to_dense()
        np.testing.assert_array_equal(np.isnan(dense), ~mask)


def _invalid(draw, values, mask):
    """One invalid variant of a valid (values, mask) pair: (X, kwargs, argument name)."""
    m, n = values.shape
    r, c = np.nonzero(mask)
    dense = np.where(mask, values, np.nan).astype(float)
    kind = draw(
        st.sampled_from(
            [
                "inf",
                "sparse nan",
                "sparse inf",
                "strings",
                "objects",
                "complex",
                "1-D",
                "3-D",
                "empty",
                "mask shape",
                "mask dtype",
                "mask with sparse",
                "triplets out of range",
                "triplets negative",
                "triplets length",
                "triplets fractional",
                "triplets duplicate",
                "triplets bad shape",
                "ragged",
            ]
        )
    )
    k = draw(st.integers(0, max(len(r) - 1, 0)))
    bad = draw(st.sampled_from([np.inf, -np.inf]))
    if kind == "inf":
        dense.flat[np.ravel_multi_index((r[k], c[k]), (m, n))] = bad
        return dense, {}, "X"
    if kind in ("sparse nan", "sparse inf"):
        v = values[r, c].astype(float)
        v[k] = np.nan if kind == "sparse nan" else bad
        return sp.csr_matrix((v, (r, c)), shape=(m, n)), {}, "X"
    if kind == "strings":
        return dense.astype(str), {}, "X"
    if kind == "objects":
        return dense.astype(object), {}, "X"
    if kind == "complex":
        return dense + 1j, {}, "X"
    if kind == "1-D":
        return dense.ravel(), {}, "X"
    if kind == "3-D":
        return dense[None], {}, "X"
    if kind == "empty":
        return np.empty(draw(st.sampled_from([(0, n), (m, 0), (0, 0)]))), {}, "X"
    if kind == "mask shape":
        return dense, {"mask": np.ones((m + 1, n), bool)}, "mask"
    if kind == "mask dtype":
        return dense, {"mask": mask.astype(draw(st.sampled_from([int, float])))}, "mask"
    if kind == "mask with sparse":
        return sp.csr_matrix(np.nan_to_num(dense)), {"mask": mask}, "mask"
    if kind == "triplets out of range":
        return (r, c + n, values[r, c], (m, n)), {}, "X"
    if kind == "triplets negative":
        return (r - m, c, values[r, c], (m, n)), {}, "X"
    if kind == "triplets length":
        return (r, c, np.r_[values[r, c], 1.0], (m, n)), {}, "X"
    if kind == "triplets fractional":
        return (r + 0.25, c, values[r, c], (m + 1, n)), {}, "X"
    if kind == "triplets duplicate":
        return (np.r_[r, r[k]], np.r_[c, c[k]], np.r_[values[r, c], 0.0]), {}, "X"
    if kind == "triplets bad shape":
        return (r, c, values[r, c], draw(st.sampled_from([(m,), (m, 0), (m, -1)]))), {}, "X"
    return [[1.0] * n, [1.0] * (n + 1)], {}, "X"  # ragged


@SETTINGS
@given(partial_matrices(), st.data())
def test_invalid_input_raises_a_documented_error(matrix, data):
    values, mask = matrix
    mask.flat[0] = True  # at least one observation for the triplet variants
    X, kwargs, argument = _invalid(data.draw, values, mask)
    with pytest.raises((ValueError, TypeError)) as info:
        check_observations(X, **kwargs)
    assert str(info.value).startswith(argument), str(info.value)


def test_explicit_zeros_of_a_sparse_matrix_are_observed():
    X = sp.csr_matrix((np.array([0.0, 2.0, 0.0]), (np.array([0, 1, 2]), np.array([2, 0, 1]))))
    assert X.nnz == 3
    obs = check_observations(X)
    np.testing.assert_array_equal(obs.rows, [0, 1, 2])
    np.testing.assert_array_equal(obs.values, [0.0, 2.0, 0.0])


def test_nullable_dataframe_columns_mark_missing_entries():
    df = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [0.5, 1.5, np.nan]})
    obs = check_observations(df)
    np.testing.assert_array_equal(obs.rows, [0, 0, 1, 2])
    np.testing.assert_array_equal(obs.cols, [0, 1, 1, 0])
    np.testing.assert_array_equal(obs.values, [1.0, 0.5, 1.5, 3.0])


def test_float32_dataframe_stays_float32():
    df = pd.DataFrame(np.array([[1.0, np.nan], [np.nan, 2.0]], dtype=np.float32))
    assert check_observations(df).values.dtype == np.float32


@SETTINGS
@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.lists(st.integers(-10, 10), min_size=1, max_size=5),
)
def test_check_indices_accepts_exactly_the_in_range_integers(m, n, idx):
    idx = np.array(idx)
    inside = bool(np.all((idx >= 0) & (idx < min(m, n))))
    if inside:
        rows, cols = check_indices(idx, idx, (m, n))
        np.testing.assert_array_equal(rows, idx)
        assert rows.dtype == cols.dtype == np.int64
    else:
        with pytest.raises(ValueError, match=r"rows/cols: (rows|cols) must lie in \[0, "):
            check_indices(idx, idx, (m, n))

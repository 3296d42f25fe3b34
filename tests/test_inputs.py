"""Every input format gives the same fit; observed entries come back exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion, Observations
from deepmc.datasets import make_problem


@pytest.fixture(scope="module")
def small():
    return make_problem(shape=(24, 18), rank=2, fraction=0.5, random_state=4)


def _formats(problem):
    o = problem.train
    dense = problem.observed_dense()
    filled = np.where(np.isnan(dense), 123.0, dense)  # junk where unobserved
    mask = ~np.isnan(dense)
    return {
        "nan-dense": (dense, {}),
        "dataframe": (pd.DataFrame(dense, columns=[f"c{j}" for j in range(dense.shape[1])]), {}),
        "sparse-csr": (sp.csr_matrix((o.values, (o.rows, o.cols)), shape=o.shape), {}),
        "sparse-coo-array": (sp.coo_array((o.values, (o.rows, o.cols)), shape=o.shape), {}),
        "mask": (filled, {"mask": mask}),
        "triplets": ((o.rows, o.cols, o.values, o.shape), {}),
        "observations": (Observations(*o), {}),
    }


@pytest.mark.parametrize(
    "Est, kwargs",
    [(CompressedDeepMatrixCompletion, {"rank": 2}), (DeepMatrixCompletion, {"width": 8})],
)
def test_all_formats_give_the_same_fit(small, device, Est, kwargs):
    results = {}
    for name, (X, fit_kw) in _formats(small).items():
        est = Est(device=device, random_state=0, init_scale=0.1, tol=1e-4, **kwargs)
        est.fit(X, **fit_kw)
        results[name] = (est.n_iter_, est.predict_entries(small.test_rows, small.test_cols))
    ref_iter, ref_pred = results["nan-dense"]
    for name, (n_iter, pred) in results.items():
        assert n_iter == ref_iter, name
        np.testing.assert_array_equal(pred, ref_pred, err_msg=name)


def test_explicit_zeros_in_sparse_are_observed():
    values = np.array([0.0, 1.0, 0.0, 2.0])
    X = sp.csr_matrix((values, ([0, 1, 2, 3], [0, 1, 2, 3])), shape=(4, 4))
    est = CompressedDeepMatrixCompletion(rank=1, random_state=0, init_scale=0.1, tol=1e-3)
    out = est.fit_transform(X)
    assert np.array_equal(np.diag(out), [0.0, 1.0, 0.0, 2.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_keeps_observed_entries_bit_for_bit(small, dtype):
    X = small.observed_dense().astype(dtype)
    i, j = small.train.rows[0], small.train.cols[0]
    X[i, j] = np.float32(1) / 3  # an observed value float arithmetic would not reproduce
    est = CompressedDeepMatrixCompletion(rank=2, random_state=0, init_scale=0.1, tol=1e-4)
    out = est.fit_transform(X)
    observed = ~np.isnan(X)
    assert out.dtype == dtype
    assert np.array_equal(out[observed], X[observed])
    assert np.isfinite(out).all()
    # predictions at held-out entries are the same values transform returns there
    np.testing.assert_allclose(
        out[small.test_rows, small.test_cols],
        est.predict_entries(small.test_rows, small.test_cols).astype(dtype),
        rtol=1e-5,
        atol=1e-6,
    )


def test_float32_input_stays_float32(small):
    X = small.observed_dense().astype(np.float32)
    est = CompressedDeepMatrixCompletion(rank=2, random_state=0, init_scale=0.1, tol=1e-4).fit(X)
    assert est.U_.dtype == np.float32
    assert est.transform(X).dtype == np.float32

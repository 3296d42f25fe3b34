"""The solver's view of the observations: scaling, dense targets, validation splits."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from deepmc._data import prepare, split_validation, validation_mask
from deepmc._validation import Observations, check_observations


def _obs() -> Observations:
    rows = np.array([0, 0, 1, 2, 2, 2], dtype=np.int64)
    cols = np.array([0, 3, 1, 0, 2, 3], dtype=np.int64)
    return Observations(rows, cols, np.arange(1.0, 7.0), (3, 4))


def test_prepare_divides_by_the_scale():
    obs = _obs()
    data = prepare(obs, torch.device("cpu"), torch.float32, scale=2.0)
    assert data.sampling_scale == 12 / 6
    assert data.y.dtype == torch.float32
    np.testing.assert_array_equal(data.y.numpy(), (obs.values / 2.0).astype(np.float32))
    assert data.y_norm == pytest.approx(np.linalg.norm(obs.values) / 2.0)
    Y, M = data.dense_targets()
    assert data.dense_targets()[0] is Y  # built once
    dense = np.zeros((3, 4), dtype=np.float32)
    dense[obs.rows, obs.cols] = obs.values / 2.0
    np.testing.assert_array_equal(Y.numpy(), dense)
    assert M.sum() == 6 and bool((M[obs.rows, obs.cols] == 1).all())


def test_split_validation_is_a_seeded_partition():
    obs = _obs()
    train, val = split_validation(obs, 0.5, np.random.RandomState(0))
    assert train.n_observed == val.n_observed == 3
    pairs = {*zip(train.rows, train.cols)} | {*zip(val.rows, val.cols)}
    assert pairs == {*zip(obs.rows, obs.cols)}
    again = split_validation(obs, 0.5, np.random.RandomState(0))[1]
    np.testing.assert_array_equal(again.values, val.values)
    # the same draw as a bare permutation of the seed (what RatingsCompletion relies on)
    expected = np.sort(np.random.RandomState(0).permutation(6)[:3])
    np.testing.assert_array_equal(
        np.flatnonzero(validation_mask(6, 0.5, np.random.RandomState(0))), expected
    )


@pytest.mark.parametrize("fraction", [0.01, 0.99])
def test_split_validation_refuses_an_empty_side(fraction):
    with pytest.raises(ValueError, match=r"validation_fraction=.* validation entries out of 6"):
        split_validation(_obs(), fraction, np.random.RandomState(0))
    with pytest.raises(ValueError, match="validation ratings"):
        validation_mask(6, fraction, np.random.RandomState(0), noun="ratings")


def _sparse_low_rank(m: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 3)) @ rng.standard_normal((3, n))
    r, c = np.nonzero(rng.random((m, n)) < 0.3)
    return r, c, X[r, c] + 1e-3 * rng.standard_normal(r.size)


def test_top_singular_is_an_exact_svd_on_a_small_matrix(monkeypatch):
    """Below the kernels' dense threshold: one dense SVD, no power iterations."""
    import deepmc.init as init_module

    def refuse(*args, **kwargs):
        raise AssertionError("a small matrix went to the randomized SVD")

    monkeypatch.setattr(init_module, "randomized_svd", refuse)
    m, n = 60, 40
    r, c, v = _sparse_low_rank(m, n)
    gen = torch.Generator().manual_seed(3)
    u, s, vv = init_module.top_singular(r, c, v, (m, n), 5, generator=gen)
    dense = np.zeros((m, n))
    dense[r, c] = v
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:5], rtol=1e-12)
    np.testing.assert_allclose(u.T @ dense @ vv, np.diag(s), atol=1e-12)
    top = np.abs(u).argmax(axis=0)
    assert np.all(u[top, np.arange(5)] > 0)  # randomized_svd's sign convention
    # one seed drawn, as on the randomized path: later draws do not depend on the path
    ref = torch.Generator().manual_seed(3)
    torch.randint(0, 2**31 - 1, (1,), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_top_singular_is_randomized_on_a_large_matrix(monkeypatch):
    """Above the threshold: the randomized SVD, which agrees with the exact one here."""
    import deepmc.init as init_module
    from deepmc._kernels import SMALL_ELEMENTS

    calls = []
    real = init_module.randomized_svd

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(init_module, "randomized_svd", counted)
    m, n = 150, 120
    assert m * n > SMALL_ELEMENTS
    r, c, v = _sparse_low_rank(m, n)
    u, s, vv = init_module.top_singular(r, c, v, (m, n), 3, generator=torch.Generator())
    assert calls == [1]
    dense = np.zeros((m, n))
    dense[r, c] = v
    np.testing.assert_allclose(s, np.linalg.svd(dense, compute_uv=False)[:3], rtol=1e-8)
    np.testing.assert_allclose(u.T @ dense @ vv, np.diag(s), atol=1e-8 * s[0])


def test_csr_of_row_major_entries_is_the_coo_routes_matrix():
    # fits pass row-major entries: the CSR is built without the COO copies, to the bit
    from deepmc.init import _csr

    rng = np.random.default_rng(0)
    keys = np.sort(rng.choice(40 * 30, size=300, replace=False))
    rows, cols = np.divmod(keys, 30)
    values = rng.standard_normal(300)
    direct = _csr(rows, cols, values, (40, 30))
    via_coo = sp.csr_matrix((values, (rows, cols)), shape=(40, 30))
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(direct, name), getattr(via_coo, name))
    assert direct.indices.dtype == np.int32
    # out of order (or repeated) entries take the COO route, which sums repeats
    shuffled = rng.permutation(300)
    other = _csr(rows[shuffled], cols[shuffled], values[shuffled], (40, 30))
    np.testing.assert_allclose(other.toarray(), via_coo.toarray())


def test_row_major_entries_are_kept_without_a_copy():
    from deepmc._validation import row_major

    rows, cols = np.array([0, 0, 1, 3]), np.array([1, 2, 0, 0])
    assert row_major(rows, cols) and row_major(rows[:1], cols[:1])
    assert not row_major(np.array([0, 0]), np.array([1, 1]))  # a repeat
    assert not row_major(np.array([1, 0]), np.array([0, 1]))
    values = np.arange(4.0)
    obs = check_observations((rows, cols, values, (4, 3)))
    assert obs.rows is rows and obs.cols is cols
    unsorted = check_observations((rows[::-1], cols[::-1], values[::-1], (4, 3)))
    np.testing.assert_array_equal(unsorted.values, values)

"""The solver's view of the observations: scaling, dense targets, validation splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepmc._data import prepare, split_validation, validation_mask
from deepmc._validation import Observations


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

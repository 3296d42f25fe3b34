"""The larger step of a ratings network still improving past ``BOOST_AFTER`` steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning

from deepmc import CompressedDeepMatrixCompletion, RatingsCompletion, _ratings_fit
from deepmc._ratings_fit import BOOST, BOOST_AFTER, DECAY_WEIGHT_REF, fit_network, scale_decay


def power_law_ratings(m: int, n: int, n_pairs: int, seed: int = 0) -> pd.DataFrame:
    """Ratings 1–5 of a rank-10 taste as strong as the noise, power-law degrees.

    As ``benchmarks/ratings_scale.py`` builds them (``--taste-scale 0.5``), small: user
    and item propensities ``∝ k^-0.5`` and ``k^-0.8``, distinct pairs.
    """
    rng = np.random.default_rng(seed)
    pu = rng.permutation(np.arange(1, m + 1) ** -0.5)
    pi = rng.permutation(np.arange(1, n + 1) ** -0.8)
    keys = np.unique(
        rng.choice(m, 2 * n_pairs, p=pu / pu.sum()) * n
        + rng.choice(n, 2 * n_pairs, p=pi / pi.sum())
    )
    users, items = np.divmod(rng.permutation(keys)[:n_pairs], n)
    taste = np.einsum(
        "ij,ij->i",
        0.5 * rng.standard_normal((m, 10))[users],
        0.5 * rng.standard_normal((n, 10))[items],
    )
    raw = 3.5 + rng.normal(0, 0.4, m)[users] + rng.normal(0, 0.5, n)[items] + taste
    ratings = np.clip(np.round(raw + rng.normal(0, 0.8, users.size)), 1, 5)
    return pd.DataFrame({"user": users, "item": items, "rating": ratings})


def rmse(model: RatingsCompletion, test: pd.DataFrame) -> float:
    return -model.score(test)


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    table = power_law_ratings(2000, 1000, 150_000)
    is_test = np.random.RandomState(0).rand(len(table)) < 0.1
    return table[~is_test], table[is_test]


def test_power_law_taste_learnt_at_the_larger_step(split) -> None:
    """The fit is still improving at ``BOOST_AFTER``: it continues at ``BOOST × lr``.

    It learns the taste well beyond the biases (RMSE ~0.90 against ~1.04) and sooner
    than at the plain step (best step 120 against 135 at ``lr = 0.3`` throughout).
    """
    train, test = split
    model = RatingsCompletion(n_estimators=1, random_state=0).fit(train)
    net = model.network_
    assert net.history_["lr"].max() == pytest.approx(BOOST * 0.3)
    assert BOOST_AFTER < model.best_iteration_ <= 150
    assert net.get_params()["lr"] == 0.3 and not net.warm_start  # restored
    with pytest.warns(ConvergenceWarning, match="max_iter=1"):  # the biases, a step
        biases = RatingsCompletion(n_estimators=1, max_iter=1, random_state=0).fit(train)
    assert rmse(model, test) < rmse(biases, test) - 0.1


def test_without_the_boost_it_takes_longer(split, monkeypatch) -> None:
    """What the larger step saves: at ``lr = 0.3`` throughout the best step is later."""
    train, _ = split
    boosted = RatingsCompletion(n_estimators=1, random_state=0).fit(train)
    monkeypatch.setattr(_ratings_fit, "BOOST", 1.0)
    plain = RatingsCompletion(n_estimators=1, random_state=0).fit(train)
    assert plain.best_iteration_ > boosted.best_iteration_


def test_a_fit_done_before_the_horizon_is_unchanged() -> None:
    """A fit that stops improving before ``BOOST_AFTER`` steps keeps its own best state."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 30))
    rows, cols = np.nonzero(rng.random(truth.shape) < 0.5)
    values = truth[rows, cols] + rng.standard_normal(rows.size)
    is_val = rng.random(rows.size) < 0.2
    train = (rows[~is_val], cols[~is_val], values[~is_val], truth.shape)
    val = (rows[is_val], cols[is_val], values[is_val], truth.shape)
    kw = {"lr": 0.3, "init": "spectral", "init_scale": 0.1, "early_stopping": True,
          "solver": "gd", "check_every": 5, "n_iter_no_change": 4, "max_iter": 2000,
          "random_state": 0}  # fmt: skip
    plain = CompressedDeepMatrixCompletion(rank=3, **kw).fit(train, validation_set=val)
    assert plain.n_iter_ < BOOST_AFTER
    staged = fit_network(CompressedDeepMatrixCompletion(rank=3, **kw), train, val)
    assert staged.n_iter_ == plain.n_iter_
    assert staged.best_iteration_ == plain.best_iteration_
    np.testing.assert_array_equal(staged.U_, plain.U_)


def test_decay_scaled_to_the_reference_weight() -> None:
    """λ shrinks by ``DECAY_WEIGHT_REF / w`` when the largest decay weight ``w`` exceeds it."""
    net = CompressedDeepMatrixCompletion(weight_decay=0.01, decay_weighting=1.0)
    # 100 rows × 50 columns; row 0 rated 50 times, the others once: N = 149
    rows = np.r_[np.zeros(50, dtype=int), np.arange(1, 100)]
    cols = np.r_[np.arange(50), np.arange(99) % 50]
    scale_decay(net, rows, cols, (100, 50))
    weight = 50 * 100 / 149  # row 0's n_u m / N, above every column's
    assert net.weight_decay == pytest.approx(0.01 * DECAY_WEIGHT_REF / weight)
    even = CompressedDeepMatrixCompletion(weight_decay=0.01, decay_weighting=1.0)
    scale_decay(even, np.arange(100) % 10, np.arange(100) % 7, (10, 7))
    assert even.weight_decay == 0.01


def test_the_decay_lets_a_power_law_table_learn() -> None:
    """A table whose most-rated rows have decay weights ~30 still learns its taste.

    With λ as given (0.01 on weights up to 30.6) the best step is 0 here (validation
    RMSE 1.048 at every check); with λ scaled, ~0.956 at step ~200.
    """
    table = power_law_ratings(8000, 2000, 300_000, seed=1)
    model = RatingsCompletion(n_estimators=1, random_state=0).fit(table)
    assert model.network_.weight_decay == pytest.approx(0.01 * DECAY_WEIGHT_REF / 30.6, rel=0.01)
    assert model.best_iteration_ > 100
    assert model.history_["val_rmse"].min() < model.history_["val_rmse"].iloc[0] - 0.05


def test_no_boost_without_early_stopping_or_with_another_optimizer() -> None:
    """Only early-stopped plain gradient descent is continued at a larger step."""
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
    rows, cols = np.nonzero(rng.random(truth.shape) < 0.6)
    data = (rows, cols, truth[rows, cols], truth.shape)
    for kw in ({"early_stopping": False}, {"early_stopping": True, "optimizer": "momentum"}):
        net = CompressedDeepMatrixCompletion(
            rank=2, lr=0.05, solver="gd", max_iter=150, tol=0.0, random_state=0, **kw
        )
        with pytest.warns(ConvergenceWarning, match="max_iter=150"):
            fit_network(net, data, data)
        assert net.n_iter_ == 150
        assert set(net.history_["lr"]) == {0.05}

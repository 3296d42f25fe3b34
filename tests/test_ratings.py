"""RatingsCompletion: id mapping, unseen ids, clipping, and MovieLens-100K quality."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion, RatingsCompletion
from deepmc.datasets import load_movielens
from deepmc.ratings import fit_biases

ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"


def make_ratings(seed: int = 0, n_users: int = 30, n_items: int = 20) -> pd.DataFrame:
    """Noisy rank-2 ratings on a 1–5 scale, string user ids and int item ids."""
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((n_users, 2)) @ rng.standard_normal((2, n_items))
    users, items = np.nonzero(rng.random(taste.shape) < 0.6)
    noisy = 3 + taste[users, items] + 0.5 * rng.standard_normal(users.size)
    return pd.DataFrame(
        {
            "user": [f"u{k:02d}" for k in users],
            "item": items * 7 + 1000,
            "rating": np.clip(np.round(noisy), 1, 5),
        }
    )


# A large step and short patience keep these tiny fits to ~100 steps; the defaults are
# exercised on MovieLens below.
FAST = {"lr": 0.5, "check_every": 5, "n_iter_no_change": 10, "rank": 2, "random_state": 0}


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return make_ratings()


@pytest.fixture(scope="module")
def fitted(ratings) -> RatingsCompletion:
    return RatingsCompletion(**FAST).fit(ratings)


def test_id_mapping_round_trip(ratings, fitted):
    assert list(fitted.users_) == sorted(ratings["user"].unique())
    assert list(fitted.items_) == sorted(ratings["item"].unique())
    rows, cols = fitted._index(ratings["user"], ratings["item"])
    assert np.all(rows >= 0) and np.all(cols >= 0)
    np.testing.assert_array_equal(fitted.users_[rows], ratings["user"].to_numpy())
    np.testing.assert_array_equal(fitted.items_[cols], ratings["item"].to_numpy())
    # Predictions follow the ids, not the row order of the table.
    pred = fitted.predict(ratings["user"], ratings["item"])
    perm = np.random.default_rng(1).permutation(len(ratings))
    shuffled = ratings.iloc[perm]
    np.testing.assert_allclose(fitted.predict(shuffled["user"], shuffled["item"]), pred[perm])
    np.testing.assert_allclose(fitted.predict(ratings[["user", "item"]]), pred)


def test_relabelled_ids_give_the_same_model(ratings, fitted):
    """Order-preserving relabelling of the ids changes nothing but the labels."""
    relabelled = ratings.assign(
        user=ratings["user"].str[1:].astype(int) + 500, item=ratings["item"].astype(str)
    )
    # str() of the item ids sorts like the ints here (all four digits).
    other = RatingsCompletion(**FAST).fit(relabelled)
    np.testing.assert_allclose(
        other.predict(relabelled["user"], relabelled["item"]),
        fitted.predict(ratings["user"], ratings["item"]),
        rtol=1e-5,
    )


def test_input_formats_agree(ratings, fitted):
    pairs = ratings[["user", "item"]].to_numpy()
    values = ratings["rating"].to_numpy()
    from_pairs = RatingsCompletion(**FAST).fit(pairs, values)
    from_rows = RatingsCompletion(**FAST).fit(ratings.to_numpy())
    expected = fitted.predict(ratings["user"], ratings["item"])
    for other in (from_pairs, from_rows):
        np.testing.assert_allclose(other.predict(pairs[:, 0], pairs[:, 1]), expected, rtol=1e-5)
    assert fitted.score(ratings) == pytest.approx(from_pairs.score(pairs, values))


def test_unseen_users_and_items(fitted):
    user, item = fitted.users_[3], fitted.items_[5]
    pred = fitted.predict(["nobody", user, "nobody", user], [item, -1, -1, item])
    lo, hi = fitted.rating_range_
    mu = fitted.global_mean_
    assert pred[0] == pytest.approx(np.clip(mu + fitted.item_bias_[5], lo, hi))
    assert pred[1] == pytest.approx(np.clip(mu + fitted.user_bias_[3], lo, hi))
    assert pred[2] == pytest.approx(np.clip(mu, lo, hi))
    network = fitted.network_.predict_entries([3], [5])
    known = mu + fitted.user_bias_[3] + fitted.item_bias_[5] + network
    assert pred[3] == pytest.approx(np.clip(known[0], lo, hi))


def test_predictions_are_clipped_to_the_training_range(ratings, fitted, monkeypatch):
    assert fitted.rating_range_ == (ratings["rating"].min(), ratings["rating"].max())
    users, items = ratings["user"], ratings["item"]
    for shift, bound in ((100.0, fitted.rating_range_[1]), (-100.0, fitted.rating_range_[0])):
        constant = lambda r, c, s=shift: np.full(len(r), s)  # noqa: E731
        monkeypatch.setattr(fitted.network_, "predict_entries", constant)
        np.testing.assert_array_equal(fitted.predict(users, items), bound)
        monkeypatch.undo()
    pred = fitted.predict(users, items)
    assert pred.min() >= 1 and pred.max() <= 5


def test_fit_biases_matches_least_squares():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 6, 40), rng.integers(0, 5, 40)
    values = rng.normal(3, 1, 40)
    reg = 2.0
    mu, bu, bi = fit_biases(rows, cols, values, (6, 5), reg=reg, n_sweeps=500)
    design = np.zeros((40, 11))
    design[np.arange(40), rows] = 1
    design[np.arange(40), 6 + cols] = 1
    lhs = design.T @ design + reg * np.eye(11)
    exact = np.linalg.solve(lhs, design.T @ (values - values.mean()))
    np.testing.assert_allclose(np.r_[bu, bi], exact, atol=1e-8)
    assert mu == pytest.approx(values.mean())


@pytest.mark.parametrize(
    ("network", "expected"),
    [("compressed", CompressedDeepMatrixCompletion), ("narrow", DeepMatrixCompletion)],
)
def test_network_choice_and_early_stopping(ratings, network, expected):
    model = RatingsCompletion(network=network, **FAST).fit(ratings)
    assert type(model.network_) is expected
    assert model.network_.early_stopping
    assert "val_rmse" in model.history_
    best = model.history_["val_rmse"].idxmin()
    assert model.best_iteration_ == model.history_["iteration"][best]
    if network == "narrow":
        assert model.network_.width_ == 4


def test_full_network(ratings):
    model = RatingsCompletion(network="full", **FAST).fit(ratings)
    assert model.network_.width_ == max(len(model.users_), len(model.items_))


def test_estimator_contract(ratings, fitted):
    est = RatingsCompletion()
    assert est.get_params()["rank"] == 10 and not hasattr(est, "users_")
    with pytest.raises(Exception, match="not fitted"):
        est.predict(["a"], [1])
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        restored.predict(ratings[["user", "item"]]), fitted.predict(ratings[["user", "item"]])
    )
    assert clone(fitted).get_params() == fitted.get_params()


def test_invalid_input(ratings):
    with pytest.raises(ValueError, match="no ratings"):
        RatingsCompletion().fit(ratings[["user", "item"]])
    with pytest.raises(ValueError, match="'user' and 'item'"):
        RatingsCompletion().fit(ratings.rename(columns={"user": "customer"}))
    with pytest.raises(ValueError, match="NaN"):
        RatingsCompletion().fit(ratings.assign(rating=np.nan))
    with pytest.raises(ValueError, match="network"):
        RatingsCompletion(network="huge").fit(ratings)


def load_split(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random 80/20 split of the MovieLens-100K ratings (original ids)."""
    train, test = load_movielens(ML100K).train_test_split(0.2, random_state=seed)
    columns = ["user", "item", "rating"]
    return train.frame[columns], test.frame[columns]


@pytest.mark.slow
@pytest.mark.skipif(not ML100K.exists(), reason="MovieLens-100K not found at " + str(ML100K))
def test_movielens_100k_rmse(one_thread):
    """Issue 6: default compressed network, test RMSE ≤ 0.93 on a seeded 80/20 split."""
    train, test = load_split(0)
    model = RatingsCompletion(random_state=0).fit(train)
    rmse = -model.score(test)
    assert rmse <= 0.93, rmse
    assert model.best_iteration_ < model.n_iter_  # stopped early, best state restored

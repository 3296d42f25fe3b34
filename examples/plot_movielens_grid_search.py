"""
==============================================
MovieLens ratings with a grid search over rank
==============================================

:class:`deepmc.RatingsCompletion` completes a table of ``(user, item, rating)`` rows: it
centres the ratings with a global mean and regularised user and item biases, completes
the residual matrix with a deep network stopped early on a validation slice, and clips
predictions to the rating range. Its ``score`` is the negative RMSE, so it plugs into
scikit-learn's model selection: here :class:`~sklearn.model_selection.GridSearchCV` picks
the rank and the depth by cross-validation over the ratings, and the chosen model is
scored on a held-out test split.

The data are MovieLens-100K (943 users, 1,682 movies, 100,000 ratings; GroupLens,
https://grouplens.org/datasets/movielens/100k/, research use under the GroupLens terms).
``load_movielens("ml-100k", download=True)`` fetches it once into the user cache folder
(``$DEEPMC_DATA`` to choose another) and checks its sha256. Without a network, and in the
documentation's quick build, the example uses a small synthetic ratings table of the
same form, so it always runs.

To run in under a minute on two cores, the search is small: two folds, and each
candidate is one network (``n_estimators=1``) instead of the default ensemble of five;
the chosen rank and depth are then fitted once with the defaults. A real search would
try more ranks and depths, with more folds.
"""

# %%
import os
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold, train_test_split

from deepmc import RatingsCompletion
from deepmc.datasets import load_movielens

# The documentation build sets DEEPMC_DOCS_QUICK=1 for a short run.
QUICK = os.environ.get("DEEPMC_DOCS_QUICK") == "1"


def synthetic_ratings(n_users=300, n_items=200, n_ratings=12_000, rank=3, seed=0):
    """A MovieLens-like table: a low-rank taste model, biases, noise, stars 1 to 5."""
    rng = np.random.default_rng(seed)
    taste = rng.standard_normal((n_users, rank)) @ rng.standard_normal((rank, n_items)) / rank
    score = 3.5 + 0.5 * rng.standard_normal((n_users, 1)) + 0.5 * rng.standard_normal(n_items)
    score = score + taste
    flat = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    users, items = np.unravel_index(flat, (n_users, n_items))
    noisy = score[users, items] + 0.5 * rng.standard_normal(n_ratings)
    stars = np.clip(np.rint(noisy), 1, 5)
    return pd.DataFrame({"user": users, "item": items, "rating": stars})


frame = None
if not QUICK:
    try:
        frame = load_movielens("ml-100k", download=True).frame[["user", "item", "rating"]]
        print("MovieLens-100K:", end=" ")
    except OSError as exc:  # no network, or the download failed
        print(f"MovieLens-100K not loaded ({type(exc).__name__}): a synthetic table instead.")
if frame is None:
    frame = synthetic_ratings()
    print("synthetic ratings:", end=" ")
print(f"{frame['user'].nunique()} users, {frame['item'].nunique()} items, {len(frame)} ratings")

# %%
# A test split, and cross-validation on the rest
# ----------------------------------------------
# The rows of the table are ratings, so scikit-learn's splitters split ratings: every
# fold keeps most users and items, and ids never seen in training fall back to the
# biases that are known. ``X`` holds the ``(user, item)`` pairs and ``y`` the ratings.
X, y = frame[["user", "item"]].to_numpy(), frame["rating"].to_numpy(dtype=float)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)

param_grid = {"rank": [2, 5] if QUICK else [10, 40], "depth": [2, 3]}
MAX_ITER = 300 if QUICK else 2_000
search = GridSearchCV(
    RatingsCompletion(n_estimators=1, max_iter=MAX_ITER, device="cpu", random_state=0),
    param_grid,
    cv=KFold(n_splits=2, shuffle=True, random_state=0),
    refit=False,
)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    search.fit(X_train, y_train)

results = pd.DataFrame(search.cv_results_)
results["cv RMSE"] = -results["mean_test_score"]
print(results[["param_rank", "param_depth", "cv RMSE", "mean_fit_time"]].to_string(index=False))

# %%
# The chosen model on the test split
# ----------------------------------
# The best rank and depth, fitted on all the training ratings with the default
# ensemble of five networks.
best = RatingsCompletion(**search.best_params_, max_iter=MAX_ITER, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    best.fit(X_train, y_train)
print(f"best parameters: {search.best_params_}")
print(f"test RMSE: {-best.score(X_test, y_test):.3f}")
baseline = np.sqrt(np.mean((y_test - y_train.mean()) ** 2))
print(f"RMSE of the global mean, for scale: {baseline:.3f}")

"""MovieLens-100K: users held out of the fit, then folded in with half of their ratings.

A seeded set of users is held out of the fit of :class:`deepmc.RatingsCompletion`; each
of them then gives a random half of their ratings through ``partial_fit_users`` and is
scored on the other half (ratings of items the fit has seen). Printed RMSEs on those
scored ratings:

``no fold-in``
    The model as fitted: an unknown user gets ``μ + b_i`` (biases only).
``bias fold-in``
    The user's bias alone fitted to the given half (``fit_biases``' shrinkage, items
    fixed), no network row.
``fold-in``
    ``partial_fit_users``: bias and network rows, items fixed.
``seen in the fit``
    The same users fitted with the same half of their ratings (a second fit that
    includes them): the RMSE of users seen in the fit with as many ratings.

Usage::

    .venv/bin/python benchmarks/ml100k_foldin.py [--data PATH] [--held-users 150]
        [--seed 0] [--estimators 5]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from deepmc import RatingsCompletion
from deepmc.datasets import load_movielens

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
COLUMNS = ["user", "item", "rating"]


def _rmse(model: RatingsCompletion, ratings: pd.DataFrame) -> float:
    pred = model.predict(ratings["user"].to_numpy(), ratings["item"].to_numpy())
    return float(np.sqrt(np.mean((pred - ratings["rating"].to_numpy()) ** 2)))


def _bias_only(model: RatingsCompletion, given: pd.DataFrame, scored: pd.DataFrame) -> float:
    """RMSE with each held-out user's bias fitted to ``given``, items fixed, no network."""
    item = pd.Index(model.items_).get_indexer(given["item"])
    resid = given["rating"].to_numpy() - model.global_mean_ - model.item_bias_[item]
    sums = pd.Series(resid).groupby(given["user"].to_numpy()).agg(["sum", "count"])
    bias = sums["sum"] / (model.bias_reg + sums["count"])
    pred = (
        model.global_mean_
        + model.item_bias_[pd.Index(model.items_).get_indexer(scored["item"])]
        + bias.reindex(scored["user"].to_numpy()).fillna(0.0).to_numpy()
    )
    pred = np.clip(pred, *model.rating_range_)
    return float(np.sqrt(np.mean((pred - scored["rating"].to_numpy()) ** 2)))


def experiment(
    path: str | Path, *, held_users: int = 150, seed: int = 0, **params: Any
) -> dict[str, float]:
    """The four RMSEs (see the module docstring) and the seconds of the fold-in (wall, CPU).

    Parameters
    ----------
    path : str or Path
        MovieLens-100K ``u.data``.
    held_users : int, default=150
        Users held out of the fit.
    seed : int, default=0
        Seeds the users held out, the halves and the fits.
    **params
        Passed to :class:`~deepmc.RatingsCompletion` (``random_state`` defaults to ``seed``).

    Returns
    -------
    dict
    """
    frame = load_movielens(path).frame[COLUMNS]
    rng = np.random.default_rng(seed)
    held = rng.choice(frame["user"].unique(), held_users, replace=False)
    is_held = frame["user"].isin(held).to_numpy()
    given = is_held & (rng.random(len(frame)) < 0.5)
    params = {"random_state": seed, **params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = RatingsCompletion(**params).fit(frame[~is_held])
        seen = RatingsCompletion(**params).fit(frame[~is_held | given])
    scored = frame[is_held & ~given & frame["item"].isin(model.items_).to_numpy()]
    out = {"no fold-in": _rmse(model, scored)}
    out["bias fold-in"] = _bias_only(model, frame[given], scored)
    start, start_cpu = time.perf_counter(), time.process_time()
    model.partial_fit_users(frame[given], unknown="ignore")
    out["fold-in seconds"] = time.perf_counter() - start
    out["fold-in CPU seconds"] = time.process_time() - start_cpu
    out["fold-in"] = _rmse(model, scored)
    out["seen in the fit"] = _rmse(seen, scored)
    out["scored ratings"] = float(len(scored))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--held-users", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--estimators", type=int, default=5)
    args = parser.parse_args()
    result = experiment(
        args.data, held_users=args.held_users, seed=args.seed, n_estimators=args.estimators
    )
    for name, value in result.items():
        print(f"{name:>18}: {value:.4f}" if "ratings" not in name else f"{name:>18}: {value:.0f}")


if __name__ == "__main__":
    main()

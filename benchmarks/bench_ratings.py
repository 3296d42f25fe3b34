"""Ratings: the default :class:`~deepmc.RatingsCompletion` fit, and fits on a busy machine.

* :class:`RatingsFit` — wall clock, test RMSE and gradient steps of the default fit on
  the seed-0 80/20 split of MovieLens-100K (``u.data`` next to the repository, as for
  ``benchmarks/ml100k_table.py``; skipped without it).
* :class:`LoadedRatio` — two default fits started together in two processes: the
  slower one's time over that of the same fit alone (``benchmarks/loaded_ratio.py``),
  for problem B's default fit and the ratings fit. Fair share on ``c ≥ 2`` cores is 1–2.

Both are skipped under the ``fast`` profile (CI smoke).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

PROFILE = os.environ.get("DEEPMC_BENCH_PROFILE", "regular")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"


def _skip(needs_data: bool) -> None:
    if PROFILE == "fast":
        raise NotImplementedError("the fast profile leaves out the ratings benchmarks")
    if needs_data and not DATA.exists():
        raise NotImplementedError("MovieLens-100K u.data not found next to the repository")


class RatingsFit:
    """The default ratings fit on MovieLens-100K (seed-0 80/20 split)."""

    param_names = ["data"]
    params = [["ml-100k"]]
    processes = 1
    number = 1
    repeat = (1, 3, 120.0)
    warmup_time = 0
    timeout = 600

    def setup(self, data: str) -> None:
        _skip(needs_data=True)
        from deepmc.datasets import load_movielens

        train, test = load_movielens(DATA).train_test_split(0.2, random_state=0)
        self.train = train.frame[["user", "item", "rating"]]
        self.test = test.frame[["user", "item", "rating"]]

    def _fit(self) -> Any:
        from deepmc import RatingsCompletion

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return RatingsCompletion(random_state=0).fit(self.train)

    def time_fit(self, data: str) -> None:
        self._fit()

    def track_test_rmse(self, data: str) -> float:
        return -self._fit().score(self.test)

    track_test_rmse.unit = "RMSE"

    def track_n_iter(self, data: str) -> int:
        return self._fit().n_iter_

    track_n_iter.unit = "steps"


class LoadedRatio:
    """Two default fits at once, each against one alone (max of the two / solo)."""

    param_names = ["fit"]
    params = [["B", "ratings"]]
    processes = 1
    number = 1
    repeat = 1
    timeout = 1200

    def setup(self, fit: str) -> None:
        _skip(needs_data=fit == "ratings")

    def track_loaded_over_quiet(self, fit: str) -> float:
        from .loaded_ratio import loaded_ratio

        return loaded_ratio(fit, data=DATA)[0]

    track_loaded_over_quiet.unit = "ratio"

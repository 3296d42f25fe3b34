"""Noisy matrices: held-out error and time of the defaults with a rank bound 2× the truth.

The case is the 100 × 100, rank-5, 30 %, ν = 0.3 matrix of ``noisy_table.py`` (rank
bound 10); ``track_error_ratio`` is the held-out relative error over that of rank-5
least squares (ALS without ridge) on the same entries, so 1.0 is the oracle's error.
The ``fast`` profile fits the compressed network only.
"""

from __future__ import annotations

import warnings
from typing import Any

from .common import PROFILE

METHODS = ["compressed", "narrow", "full"] if PROFILE == "regular" else ["compressed"]


def _case() -> tuple[Any, float]:
    from .noisy_table import Case, als, make_case, relative_error

    case = Case((100, 100), 5, 0.30, 0.3, 10)
    data = make_case(case)
    U, V = als(data.rows, data.cols, data.values, data.shape, case.rank, 0.0)
    oracle = relative_error((U[data.test_rows] * V[data.test_cols]).sum(1), data.test_values)
    return data, oracle


class NoisyFit:
    """Default fit of each network on a noisy matrix with a loose rank bound."""

    param_names = ["method"]
    params = [METHODS]
    processes = 1
    number = 1
    repeat = (1, 3, 30.0)
    warmup_time = 0
    timeout = 600

    def setup(self, method: str) -> None:
        self.data, self.oracle = _case()

    def _fit(self, method: str) -> Any:
        from deepmc.models import make_estimator

        d = self.data
        est = make_estimator(method, rank=10, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit((d.rows, d.cols, d.values, d.shape))
        return est

    def time_fit(self, method: str) -> None:
        self._fit(method)

    def track_error_ratio(self, method: str) -> float:
        from .noisy_table import relative_error

        d = self.data
        est = self._fit(method)
        pred = est.predict_entries(d.test_rows, d.test_cols)
        return relative_error(pred, d.test_values) / self.oracle

    track_error_ratio.unit = "ratio"

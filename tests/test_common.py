"""scikit-learn's estimator checks on every estimator, with its defaults and small fits.

The checks each estimator is expected to fail, and why, ship with the package
(:mod:`deepmc.utils.estimator_checks`), so users' own test suites can use them.
"""

from __future__ import annotations

import pytest
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion, RatingsCompletion
from deepmc.utils import expected_failed_checks

pytestmark = pytest.mark.usefixtures("one_thread")

ESTIMATORS = [
    CompressedDeepMatrixCompletion(rank=1, max_iter=20, device="cpu"),
    DeepMatrixCompletion(max_iter=20, device="cpu"),
    RatingsCompletion(rank=1, max_iter=20, device="cpu", random_state=0),
]
#: The estimators as a user makes them: scikit-learn's small test matrices are narrower
#: than the compressed network's default 2*rank, which is then clipped with a warning.
DEFAULTS = [CompressedDeepMatrixCompletion(), DeepMatrixCompletion(), RatingsCompletion()]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks(DEFAULTS, expected_failed_checks=expected_failed_checks)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.DataDimensionalityWarning")
def test_sklearn_compatible_with_defaults(estimator, check):
    check(estimator)


def test_expected_failures_ship_with_the_package():
    for estimator in ESTIMATORS:
        expected = expected_failed_checks(estimator)
        assert expected and all(isinstance(r, str) and r for r in expected.values())
    assert expected_failed_checks(object()) == {}


class _CompressedTransformOnly(CompressedDeepMatrixCompletion):
    @property
    def predict(self):
        raise AttributeError("hidden: the sparse checks expect one prediction per row")


class _FullTransformOnly(DeepMatrixCompletion):
    @property
    def predict(self):
        raise AttributeError("hidden: the sparse checks expect one prediction per row")


@pytest.mark.parametrize(
    "check_name", ["check_estimator_sparse_array", "check_estimator_sparse_matrix"]
)
@pytest.mark.parametrize(
    "estimator",
    [
        _CompressedTransformOnly(rank=1, max_iter=20, device="cpu"),
        _FullTransformOnly(max_iter=20, device="cpu"),
    ],
    ids=["compressed", "full"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sparse_checks_on_transform(estimator, check_name):
    assert not hasattr(estimator, "predict")
    getattr(ec, check_name)(type(estimator).__name__, estimator)

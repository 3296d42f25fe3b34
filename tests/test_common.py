"""scikit-learn's estimator checks on every estimator, each exemption with its reason.

The matrix estimators are transformers whose ``transform(X)`` folds every row of ``X``
(any rows with the fitted columns) into the fitted network and ``predict(X)`` returns the
same completion without the observed entries written back; rows are independent, so the
subset and sample-order checks apply. :class:`~deepmc.RatingsCompletion` takes a table
of ``(user, item)`` id pairs, so checks that feed it feature matrices of another width
cannot apply.
"""

from __future__ import annotations

import pytest
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion, RatingsCompletion

MATRIX_PREDICT = (
    "the check expects predict to return one value per row; predict returns the "
    "completed (m, n) matrix (sparse input itself is supported: the check is re-run "
    "with predict hidden in test_sparse_checks_on_transform)"
)
OBJECT = "object arrays are refused with a clear error rather than converted silently"
PAIRS = (
    "X is a table of (user, item) id pairs (or (user, item, rating) rows); a feature "
    "matrix of another width is refused with an error that says so"
)

MATRIX_EXPECTED_FAILED = {
    "check_estimator_sparse_array": MATRIX_PREDICT,
    "check_estimator_sparse_matrix": MATRIX_PREDICT,
    "check_dtype_object": OBJECT,
}
RATINGS_EXPECTED_FAILED = {
    name: PAIRS
    for name in [
        "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit",
        "check_estimators_dtypes",
        "check_complex_data",
        "check_dtype_object",
        "check_estimators_empty_data_messages",
        "check_fit2d_1sample",
        "check_fit2d_1feature",
        "check_fit2d_predict1d",
    ]
}

pytestmark = pytest.mark.usefixtures("one_thread")

ESTIMATORS = [
    CompressedDeepMatrixCompletion(rank=1, max_iter=20, device="cpu"),
    DeepMatrixCompletion(max_iter=20, device="cpu"),
    RatingsCompletion(rank=1, max_iter=20, device="cpu", random_state=0),
]


def _expected_failed(estimator) -> dict[str, str]:
    if isinstance(estimator, RatingsCompletion):
        return RATINGS_EXPECTED_FAILED
    return MATRIX_EXPECTED_FAILED


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failed)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


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

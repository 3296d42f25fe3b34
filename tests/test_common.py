"""scikit-learn's estimator checks on both estimators, every exemption with its reason.

Two deliberate departures from a feature-matrix transformer make some checks fail:

* ``predict(rows, cols)`` takes entry *indices* (held-out entries of the fitted matrix),
  not a feature matrix; the checks call ``predict(X)``, which gets a ``TypeError`` that
  says so. Those checks are run a second time on :class:`_TransformOnly`, the same
  estimator with ``predict`` hidden, so that what they check on ``transform`` (pickling,
  idempotence, an unchanged ``__dict__``, dtypes, sparse input, ...) is still checked.
* completion is transductive: ``transform`` needs a matrix of the fitted shape, so
  transforming a subset or a permutation of the rows is refused with an explanation.
"""

from __future__ import annotations

import pytest
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import parametrize_with_checks

from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion

PREDICT = (
    "predict(rows, cols) takes entry indices, not a feature matrix; the check calls "
    "predict(X). Re-run on transform in test_checks_on_transform."
)
TRANSDUCTIVE = (
    "completion is transductive: transform needs the fitted (m, n) shape, so a subset "
    "or a permutation of the rows is another matrix and is refused with an explanation."
)
OBJECT = (
    "object arrays are refused with a clear error (no silent conversion of "
    "object/string data); predict(X) is also called."
)
#: checks that fail only because they call predict(X); re-run on _TransformOnly
PREDICT_CHECKS = [
    "check_n_features_in_after_fitting",
    "check_estimators_dtypes",
    "check_estimator_sparse_array",
    "check_estimator_sparse_matrix",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_dict_unchanged",
    "check_fit2d_predict1d",
]
EXPECTED_FAILED = {
    **dict.fromkeys(PREDICT_CHECKS, PREDICT),
    "check_estimators_pickle(readonly_memmap=True)": PREDICT,
    "check_fit_idempotent": TRANSDUCTIVE
    + " (it transforms a held-out split; idempotence is tested in test_robustness.py)",
    "check_methods_sample_order_invariance": TRANSDUCTIVE,
    "check_methods_subset_invariance": TRANSDUCTIVE,
    "check_dtype_object": OBJECT,
}


pytestmark = pytest.mark.usefixtures("one_thread")


ESTIMATORS = [
    CompressedDeepMatrixCompletion(rank=1, max_iter=20, device="cpu"),
    DeepMatrixCompletion(max_iter=20, device="cpu"),
]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_sklearn_compatible(estimator, check):
    check(estimator)


class _CompressedTransformOnly(CompressedDeepMatrixCompletion):
    @property
    def predict(self):
        raise AttributeError("hidden: the checks' predict(X) is not deepmc's predict")


class _FullTransformOnly(DeepMatrixCompletion):
    @property
    def predict(self):
        raise AttributeError("hidden: the checks' predict(X) is not deepmc's predict")


@pytest.mark.parametrize("check_name", PREDICT_CHECKS)
@pytest.mark.parametrize(
    "estimator",
    [
        _CompressedTransformOnly(rank=1, max_iter=20, device="cpu"),
        _FullTransformOnly(max_iter=20, device="cpu"),
    ],
    ids=["compressed", "full"],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_checks_on_transform(estimator, check_name):
    assert not hasattr(estimator, "predict")
    getattr(ec, check_name)(type(estimator).__name__, estimator)

"""The scikit-learn estimator checks deepmc's estimators are expected to fail, and why.

scikit-learn's common checks assume an estimator maps rows of features to one output per
row. deepmc's matrix estimators are transformers whose ``transform(X)`` folds every row of
``X`` (any rows with the fitted columns) into the fitted network and ``predict(X)`` returns
the same completion without the observed entries written back; rows are independent, so
the subset and sample-order checks apply, but ``predict`` returns a matrix, not one value
per row. :class:`~deepmc.RatingsCompletion` takes a table of ``(user, item)`` id pairs, so
checks that feed it feature matrices of another width cannot apply.

Pass :func:`expected_failed_checks` to scikit-learn's
:func:`~sklearn.utils.estimator_checks.parametrize_with_checks` or
:func:`~sklearn.utils.estimator_checks.check_estimator`, as scikit-learn-contrib
projects do::

    from sklearn.utils.estimator_checks import parametrize_with_checks
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.utils import expected_failed_checks

    @parametrize_with_checks(
        [CompressedDeepMatrixCompletion(max_iter=20)],
        expected_failed_checks=expected_failed_checks,
    )
    def test_sklearn_compatible(estimator, check):
        check(estimator)
"""

from __future__ import annotations

from typing import Any

__all__ = ["MATRIX_EXPECTED_FAILED", "RATINGS_EXPECTED_FAILED", "expected_failed_checks"]

MATRIX_PREDICT = (
    "the check expects predict to return one value per row; predict returns the "
    "completed (m, n) matrix (sparse input itself is supported, through transform)"
)
OBJECT = "object arrays are refused with a clear error rather than converted silently"
PAIRS = (
    "X is a table of (user, item) id pairs (or (user, item, rating) rows); a feature "
    "matrix of another width is refused with an error that says so"
)

#: Checks :class:`~deepmc.DeepMatrixCompletion` and
#: :class:`~deepmc.CompressedDeepMatrixCompletion` fail, with the reason.
MATRIX_EXPECTED_FAILED: dict[str, str] = {
    "check_estimator_sparse_array": MATRIX_PREDICT,
    "check_estimator_sparse_matrix": MATRIX_PREDICT,
    "check_dtype_object": OBJECT,
}

#: Checks :class:`~deepmc.RatingsCompletion` fails, with the reason.
RATINGS_EXPECTED_FAILED: dict[str, str] = {
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


def expected_failed_checks(estimator: Any) -> dict[str, str]:
    """The scikit-learn checks ``estimator`` is expected to fail: ``{check name: reason}``.

    Parameters
    ----------
    estimator : estimator instance
        A deepmc estimator (or a subclass); other estimators get an empty dict.

    Returns
    -------
    dict of str to str
        A new dict, for ``expected_failed_checks=`` of
        :func:`~sklearn.utils.estimator_checks.parametrize_with_checks` and
        :func:`~sklearn.utils.estimator_checks.check_estimator`.

    Examples
    --------
    >>> from deepmc import RatingsCompletion
    >>> "check_fit2d_1feature" in expected_failed_checks(RatingsCompletion())
    True
    """
    from .. import CompressedDeepMatrixCompletion, DeepMatrixCompletion, RatingsCompletion

    if isinstance(estimator, RatingsCompletion):
        return dict(RATINGS_EXPECTED_FAILED)
    if isinstance(estimator, (CompressedDeepMatrixCompletion, DeepMatrixCompletion)):
        return dict(MATRIX_EXPECTED_FAILED)
    return {}

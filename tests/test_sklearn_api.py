"""The scikit-learn contract beyond ``check_estimator``: public API only, predict(X) and
predict_entries, set_output, dtypes, fit_transform's arguments, cross-validation."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.utils import get_tags

import deepmc
from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion, RatingsCompletion
from deepmc._validation import InvalidParameterError
from deepmc.datasets import make_problem

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

PACKAGE = Path(deepmc.__file__).resolve().parent  # the package under test, wherever installed
ESTIMATORS = [
    lambda **kw: CompressedDeepMatrixCompletion(
        **{"rank": 2, "max_iter": 60, "device": "cpu", "random_state": 0, **kw}
    ),
    lambda **kw: DeepMatrixCompletion(**{"max_iter": 60, "device": "cpu", "random_state": 0, **kw}),
]
IDS = ["compressed", "full"]


@pytest.fixture(scope="module")
def small():
    problem = make_problem(shape=(20, 15), rank=2, fraction=0.5, random_state=0)
    return problem, problem.observed_dense()


# ------------------------------------------------------------------ public API only
def test_no_private_scikit_learn_api_is_imported():
    offenders = []
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10, sources
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sklearn"):
                private_module = any(p.startswith("_") for p in node.module.split("."))
                private_names = [a.name for a in node.names if a.name.startswith("_")]
                if private_module or private_names:
                    offenders.append(f"{path.name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sklearn") and "._" in alias.name:
                        offenders.append(f"{path.name}:{node.lineno} import {alias.name}")
    assert not offenders, offenders


BAD_PARAMS = [
    ("rank", 0, r"The 'rank' parameter of \w+ must be an int in the range \[1, inf\)\. Got 0 "),
    ("tol", -1.0, r"'tol' parameter .* a float in the range \[0\.0, inf\)\. Got -1\.0"),
    ("lr", "fast", r"'lr' parameter .* a str among \{'auto'\} or a float .*Got 'fast'"),
    ("warm_start", "yes", r"'warm_start' parameter .* a bool\. Got 'yes'"),
    ("verbose", -1, r"'verbose' parameter .* non-negative int .*Got -1"),
    ("random_state", "seed", r"'random_state' parameter .*RandomState.*Got 'seed'"),
    ("depth", 2.5, r"'depth' parameter .*int.*Got 2\.5"),
]


@pytest.mark.parametrize("name, value, match", BAD_PARAMS, ids=[p[0] for p in BAD_PARAMS])
def test_invalid_parameters_raise_a_value_and_type_error(name, value, match, small):
    _, X = small
    with pytest.raises(InvalidParameterError, match=match) as info:
        ESTIMATORS[0](**{name: value}).fit(X)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)
    ratings = np.array([[0, 0, 1.0], [1, 1, 2.0], [0, 1, 3.0]])
    with pytest.raises(InvalidParameterError, match=r"'network' parameter of RatingsCompletion"):
        RatingsCompletion(network="wide").fit(ratings)


# ------------------------------------------------------------------ predict
def _fitted_completion(est) -> np.ndarray:
    """The fitted network's ``X̂``, entry by entry."""
    rows, cols = np.indices(est.shape_).reshape(2, -1)
    return est.predict_entries(rows, cols).reshape(est.shape_)


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_predict_is_transform_without_the_observed_entries(make, small):
    _, X = small
    est = make().fit(X)
    observed = np.isfinite(X)
    pred, completed = est.predict(X), est.transform(X)
    assert pred.shape == X.shape
    # transform = predict with the observed entries written back, and nothing else
    np.testing.assert_array_equal(completed[~observed], pred[~observed])
    np.testing.assert_array_equal(completed[observed], X[observed])
    assert not np.array_equal(pred[observed], X[observed])  # a 60-step fit is not exact
    # fit_transform is the fitted network's own completion, predict_entries reads it
    fitted = est.fit_transform(X)
    np.testing.assert_allclose(_fitted_completion(est)[~observed], fitted[~observed], rtol=1e-12)


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_predict_rows_cols_is_deprecated_for_predict_entries(make, small):
    _, X = small
    est = make().fit(X)
    with pytest.warns(FutureWarning, match=r"predict\(rows, cols\) is deprecated.*predict_entries"):
        old = est.predict([0, 3, 7], [1, 2, 14])
    np.testing.assert_array_equal(old, est.predict_entries([0, 3, 7], [1, 2, 14]))


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_predict_takes_any_rows_but_only_the_fitted_columns(make, small):
    _, X = small
    est = make().fit(X)
    np.testing.assert_allclose(est.predict(X[:-1]), est.predict(X)[:-1], rtol=1e-10)
    with pytest.raises(ValueError, match=r"X has 14 features"):
        est.predict(X[:, :-1])
    with pytest.raises(ValueError, match=r"transform: X has 14 columns.*fitted on 15 columns"):
        est.transform((np.array([0]), np.array([0]), np.array([1.0]), (3, 14)))


# ------------------------------------------------------------------ outputs and dtypes
@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_set_output_pandas_keeps_the_labels(make, small):
    _, X = small
    frame = pd.DataFrame(
        X,
        index=[f"user{i}" for i in range(X.shape[0])],
        columns=[f"item{j}" for j in range(X.shape[1])],
    )
    est = make().set_output(transform="pandas")
    out = est.fit_transform(frame)
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_index_equal(out.index, frame.index)
    pd.testing.assert_index_equal(out.columns, frame.columns)
    again = est.transform(frame.iloc[:7])  # new rows are folded in, labels kept
    pd.testing.assert_index_equal(again.index, frame.index[:7])
    pd.testing.assert_index_equal(again.columns, frame.columns)
    observed = np.isfinite(X[:7])
    np.testing.assert_array_equal(again.to_numpy()[observed], X[:7][observed])
    np.testing.assert_array_equal(est.get_feature_names_out(), frame.columns.to_numpy(object))
    # the default output stays NumPy
    plain = clone(est).set_output(transform="default").fit_transform(frame)
    assert isinstance(plain, np.ndarray)
    np.testing.assert_array_equal(plain, out.to_numpy())


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_float32_in_float32_out_and_the_tags_say_so(make, small):
    _, X = small
    X32 = X.astype(np.float32)
    est = make()
    assert "float32" in get_tags(est).transformer_tags.preserves_dtype
    assert est.fit_transform(X32).dtype == np.float32
    assert est.transform(X32).dtype == np.float32
    assert est.predict(X32).dtype == np.float32
    assert est.predict_entries([0], [0]).dtype == np.float32
    assert make().fit_transform(X).dtype == np.float64


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_fit_transform_takes_fits_keyword_arguments(make, small):
    problem, X = small
    mask = np.isfinite(X)
    filled = np.where(mask, X, 0.0)
    held = problem.eval_set()
    val = (problem.test_rows[:20], problem.test_cols[:20], problem.test_values[:20], X.shape)
    out = make().fit_transform(filled, mask=mask, eval_set=held, validation_set=val)
    ref = make().fit(filled, mask=mask, eval_set=held, validation_set=val)
    np.testing.assert_array_equal(out[mask], filled[mask])
    np.testing.assert_allclose(out[~mask], _fitted_completion(ref)[~mask], rtol=1e-12)
    assert "eval_error" in ref.history_ and "val_rmse" in ref.history_


# ------------------------------------------------------------------ cross-validation
@pytest.mark.parametrize(
    "cv, match",
    [
        # 3 folds of 20 rows: fit 13 or 14 rows, score the other 7 or 6
        (
            3,
            r"score: .*fitted on a matrix of shape \(1[34], 15\).*hold out entries rather than",
        ),
        # 2 folds: fit 10 rows, score the other 10, a matrix of the same shape
        (2, r"score: X is not the matrix this estimator was fitted on: entry .*hold out entries"),
    ],
    ids=["other-shape", "same-shape"],
)
def test_cross_val_score_over_rows_is_a_clear_error(cv, match, small):
    _, X = small
    est = ESTIMATORS[0]()
    with pytest.raises(ValueError, match=match):
        cross_val_score(est, X, cv=cv, error_score="raise")
    with pytest.warns(UserWarning, match=r"hold out entries rather than rows"):
        scores = cross_val_score(est, X, cv=cv)
    assert np.isnan(scores).all()


@pytest.mark.parametrize("make", ESTIMATORS, ids=IDS)
def test_score_accepts_the_fitted_matrix_in_any_form(make, small):
    problem, X = small
    est = make().fit(X)
    ref = est.score(X)
    assert est.score(X.astype(np.float32)) == pytest.approx(ref, rel=1e-5)
    assert est.score(pd.DataFrame(X)) == ref
    assert est.score(problem.train) == ref  # the same entries as triplets
    changed = X.copy()
    i, j = np.argwhere(np.isfinite(X))[0]
    changed[i, j] += 1.0
    with pytest.raises(ValueError, match=rf"entry \({i}, {j}\) was .* at fit and is"):
        est.score(changed)


def test_held_out_entries_give_a_real_score(small):
    problem, X = small
    est = ESTIMATORS[0](max_iter=300).fit(X)
    held = np.full(X.shape, np.nan)
    held[problem.test_rows, problem.test_cols] = problem.test_values
    score = est.score(held)
    assert score == pytest.approx(-problem.recovery_error(est))
    assert -1.0 < score < 0.0

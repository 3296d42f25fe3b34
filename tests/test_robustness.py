"""Bad input, divergence, reproducibility, persistence, interruption.

Every test uses a tiny problem (20×15, rank 2) and few gradient steps.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import signal
import subprocess
import sys
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning, DataDimensionalityWarning, NotFittedError

import deepmc._base as base
import deepmc._data as data_module
import deepmc._solver as solver
import deepmc.models._layered_net as layered_module
from deepmc import CompressedDeepMatrixCompletion, DeepMatrixCompletion, DivergenceError

M, N = 20, 15


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> dict:
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((M, 2)) @ rng.standard_normal((2, N))
    mask = rng.random((M, N)) < 0.6
    return {"phi": phi, "mask": mask, "X": np.where(mask, phi, np.nan)}


def _compressed(**kw) -> CompressedDeepMatrixCompletion:
    return CompressedDeepMatrixCompletion(
        **{"rank": 2, "max_iter": 300, "device": "cpu", "random_state": 0, **kw}
    )


def _full(**kw) -> DeepMatrixCompletion:
    return DeepMatrixCompletion(**{"max_iter": 300, "device": "cpu", "random_state": 0, **kw})


ESTIMATORS = [pytest.param(_compressed, id="compressed"), pytest.param(_full, id="full")]


def _quiet_fit(est, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, **kw)


@pytest.fixture
def no_work(monkeypatch):
    """Make any start of the numerical work fail loudly: errors must come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the fit started working before rejecting its input")

    monkeypatch.setattr(data_module, "top_singular", refuse)


# --------------------------------------------------------------------------- bad input


def _with(X, i, j, value):
    X = X.copy()
    X[i, j] = value
    return X


def _bad_inputs(d):
    X, mask = d["X"], d["mask"]
    r, c = np.nonzero(mask)
    nan_sparse = sp.csr_matrix((np.r_[np.nan, d["phi"][r[1:], c[1:]]], (r, c)), shape=(M, N))
    return {
        "1-D": ((X[0],), {}, r"X: expected a 2-D matrix.*1 dimension\(s\).*\(15,\).*Reshape"),
        "3-D": ((X[None],), {}, r"X: expected a 2-D matrix.*3 dimension\(s\).*\(1, 20, 15\)"),
        "no rows": ((np.empty((0, N)),), {}, r"X: empty matrix.*0 sample\(s\).*\(0, 15\)"),
        "no cols": ((np.empty((M, 0)),), {}, r"X: empty matrix.*0 feature\(s\).*\(20, 0\)"),
        "all missing": (
            (np.full((M, N), np.nan),),
            {},
            r"X: no observed entries in a matrix of shape \(20, 15\)",
        ),
        "inf": ((_with(X, r[0], c[0], np.inf),), {}, r"X: observed values must be finite.*inf"),
        "-inf in DataFrame": (
            (pd.DataFrame(_with(X, r[0], c[0], -np.inf)),),
            {},
            r"X: observed values must be finite.*-inf",
        ),
        "NaN stored in sparse": (
            (nan_sparse,),
            {},
            r"X \(stored entries of the sparse matrix\): observed values must be finite.*nan",
        ),
        "strings": ((X.astype(str),), {}, r"X: expected a numeric matrix.*got dtype <U"),
        "objects": ((X.astype(object),), {}, r"X: expected a numeric matrix.*got dtype object"),
        "complex": ((X.astype(complex),), {}, r"X: Complex data not supported.*complex128"),
        "string column": (
            (pd.DataFrame({"a": ["x"] * M, "b": np.ones(M)}),),
            {},
            r"X: DataFrame columns must be numeric.*\['a'\]",
        ),
        "mask shape": (
            (X,),
            {"mask": mask[:, :-1]},
            r"mask: expected shape \(20, 15\) \(that of X\), got \(20, 14\)",
        ),
        "mask dtype": (
            (X,),
            {"mask": mask.astype(int)},
            r"mask: expected a boolean array.*got dtype int64",
        ),
        "NaN under mask": ((X,), {"mask": np.ones((M, N), bool)}, r"X: .*must be finite.*nan"),
        "triplets out of range": (
            ((r, c, X[r, c], (M, N - 5)),),
            {},
            r"X: cols must lie in \[0, 10\).*got values in \[0, 14\]",
        ),
        "triplets length": (
            ((r, c, X[r, c][:-1]),),
            {},
            r"X: rows, cols and values must have the same length",
        ),
        "triplets duplicate": (
            ((np.r_[r, r[0]], np.r_[c, c[0]], np.r_[X[r, c], 1.0]),),
            {},
            r"X: entry \(\d+, \d+\) is observed more than once",
        ),
        "triplets float indices": (
            ((r + 0.5, c, X[r, c]),),
            {},
            r"X: rows must hold integer indices, got dtype float64",
        ),
    }


@pytest.mark.parametrize("make", ESTIMATORS)
def test_bad_input_is_refused_before_any_work(make, data, no_work):
    for case, (args, kwargs, match) in _bad_inputs(data).items():
        with pytest.raises(ValueError, match=match):
            make().fit(*args, **kwargs)
            pytest.fail(f"no error for {case}")


def test_mask_with_sparse_or_triplets_is_a_type_error(data, no_work):
    with pytest.raises(TypeError, match="mask: only valid with a dense X"):
        _compressed().fit(sp.csr_matrix(np.nan_to_num(data["X"])), mask=data["mask"])
    r, c = np.nonzero(data["mask"])
    with pytest.raises(TypeError, match="mask: only valid with a dense X"):
        _compressed().fit((r, c, data["phi"][r, c]), mask=data["mask"])


@pytest.mark.parametrize(
    "make, params, match",
    [
        (_compressed, {"rank": 0}, r"'rank' parameter .*range \[1, inf\)\. Got 0 "),
        (_compressed, {"rank": -2}, r"'rank' parameter .*range \[1, inf\)\. Got -2 "),
        (_compressed, {"depth": 1}, r"'depth' parameter .*range \[2, inf\)\. Got 1 "),
        (_full, {"depth": 1}, r"'depth' parameter .*range \[2, inf\)\. Got 1 "),
        (
            _compressed,
            {"init_scale": 0.0},
            r"'init_scale' parameter .*range \(0.0, inf\).*Got 0.0 ",
        ),
        (_full, {"init_scale": -1e-2}, r"'init_scale' parameter .*Got -0.01"),
        (_compressed, {"lr": 0.0}, r"'lr' parameter .*range \(0.0, inf\).*Got 0.0 "),
        (_full, {"lr": -1.0}, r"'lr' parameter .*Got -1.0"),
        (_compressed, {"max_iter": 0}, r"'max_iter' parameter .*range \[1, inf\)\. Got 0 "),
        (_full, {"max_iter": -5}, r"'max_iter' parameter .*Got -5"),
        (_compressed, {"init": "svd"}, r"'init' parameter .*\{.*'parsimony'.*\}.*Got 'svd'"),
        (_full, {"optimizer": "sgd"}, r"'optimizer' parameter .*\{.*'adam'.*\}.*Got 'sgd'"),
        (_compressed, {"device": "tpu"}, r"device: expected 'auto', 'cpu' or 'cuda', got 'tpu'"),
        (_full, {"dtype": "float16"}, r"dtype: expected None, 'float32' or 'float64'.*float16"),
        (_full, {"width": 0}, r"'width' parameter .*range \[1, inf\).*Got 0 "),
    ],
)
def test_bad_parameter_is_refused_before_any_work(make, params, match, data, no_work):
    est = make(**params)  # __init__ stores, never raises
    assert est.get_params()[next(iter(params))] == next(iter(params.values()))
    with pytest.raises(ValueError, match=match):
        est.fit(data["X"])


@pytest.mark.parametrize("noise", [0.0, 0.1], ids=["exact", "noisy"])
def test_a_rank_too_large_for_the_matrix_is_clipped_with_a_warning(noise, data):
    rng = np.random.default_rng(1)
    X = data["X"] + noise * rng.standard_normal(data["X"].shape)  # NaNs stay NaN
    match = r"rank=8: .*2\*rank = 16 exceeds min\(m, n\) = 15 .*fitting rank 7"
    with pytest.warns(DataDimensionalityWarning, match=match):
        est = _quiet_fit(_compressed(rank=8, max_iter=20), X)
    # the parameter is left as given; rank_ counts the directions kept, at most 7
    assert est.rank == 8 and est.rank_ <= 7
    assert est.U_.shape == (M, 14) and est.V_.shape == (N, 14)
    assert np.isfinite(est.predict(X)).all()
    fits = _quiet_fit(_compressed(rank=7, max_iter=20), X)
    np.testing.assert_allclose(est.predict(X), fits.predict(X))  # the same fit as rank=7


@pytest.mark.parametrize("shape", [(1, 12), (9, 1)])
def test_single_row_or_column_is_refused_by_the_compressed_network(shape, no_work):
    X = np.arange(float(np.prod(shape))).reshape(shape)
    match = r"at least 2 rows and 2 columns.*shape " + re.escape(str(shape))
    with pytest.raises(ValueError, match=match):
        _compressed(rank=1).fit(X)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_refused(device, data, no_work):
    with pytest.raises(ValueError, match=rf"device='{device}' but PyTorch sees no CUDA device"):
        _compressed(device=device).fit(data["X"])


@pytest.mark.parametrize("make", ESTIMATORS)
def test_predict_and_transform_check_their_input(make, data):
    with pytest.raises(NotFittedError):
        make().predict_entries([0], [0])
    with pytest.raises(NotFittedError):
        make().transform(data["X"])
    est = _quiet_fit(make(max_iter=10), data["X"])
    with pytest.raises(ValueError, match=r"predict_entries: rows must lie in \[0, 20\).*\[0, 20\]"):
        est.predict_entries([0, 20], [0, 1])
    with pytest.raises(ValueError, match=r"predict_entries: cols must lie in \[0, 15\).*\[-1, 3\]"):
        est.predict_entries([0, 1], [-1, 3])
    with pytest.raises(
        ValueError, match=r"predict_entries: rows must hold integer indices.*float64"
    ):
        est.predict_entries([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"predict_entries: rows must hold integer indices.*bool"):
        est.predict_entries([True, False], [0, 1])
    with pytest.raises(
        ValueError, match=r"predict_entries: rows and cols must have the same length"
    ):
        est.predict_entries([0, 1], [0])
    with pytest.raises(ValueError, match=r"predict_entries: rows must be a 1-D array.*\(20, 15\)"):
        est.predict_entries(np.zeros((M, N), int), np.zeros((M, N), int))
    with pytest.raises(TypeError, match=r"cols"):
        est.predict_entries([0, 1])
    # integer-valued floats are accepted as indices
    np.testing.assert_array_equal(
        est.predict_entries([1.0, 2.0], [3, 4]), est.predict_entries([1, 2], [3, 4])
    )
    with pytest.raises(ValueError, match=r"X has 14 features, but \w+ is expecting 15"):
        est.transform(data["X"][:, :-1])
    frame = pd.DataFrame(data["X"], columns=[f"c{j}" for j in range(N)])
    named = _quiet_fit(make(max_iter=10), frame)
    with pytest.raises(ValueError, match=r"Feature names unseen at fit time:\n- other"):
        named.transform(frame.rename(columns={"c0": "other"}))


def test_full_width_too_large_is_refused_before_allocating(data, monkeypatch):
    monkeypatch.setattr(layered_module, "available_bytes", lambda device: 10_000)

    def no_alloc(*args, **kwargs):
        raise AssertionError("weights allocated before the memory check")

    monkeypatch.setattr(layered_module, "epsilon_orthogonal", no_alloc)
    with pytest.raises(
        MemoryError, match=r"needs about .* GiB.*Use CompressedDeepMatrixCompletion"
    ):
        _full().fit(data["X"])
    # the compressed estimator, to which the message points, has no such limit
    _quiet_fit(_compressed(max_iter=5), data["X"])


def _inputs(d):
    X, mask, phi = d["X"], d["mask"], d["phi"]
    r, c = np.nonzero(mask)
    coo = sp.coo_matrix((phi[r, c], (r, c)), shape=(M, N))
    return {
        "dense": ((X,), {}),
        "dataframe": ((pd.DataFrame(X, columns=[f"c{j}" for j in range(N)]),), {}),
        "csr": ((coo.tocsr(),), {}),
        "coo": ((coo,), {}),
        "triplets": (((r, c, phi[r, c], (M, N)),), {}),
        "mask": ((np.where(mask, phi, -7.0),), {"mask": mask}),
    }


def _deep_copy(obj):
    return pickle.loads(pickle.dumps(obj))


def _assert_same(a, b):
    if isinstance(a, tuple):
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif sp.issparse(a):
        assert a.format == b.format
        for attr in ("data", "row", "col", "indices", "indptr"):
            if hasattr(a, attr):
                np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype and a.flags.writeable == b.flags.writeable
    else:
        assert a == b


@pytest.mark.parametrize("make", ESTIMATORS)
def test_caller_inputs_are_never_modified(make, data):
    for name, (args, kwargs) in _inputs(data).items():
        before = _deep_copy((args, kwargs))
        est = _quiet_fit(make(max_iter=10), *args, **kwargs, eval_set=args[0])
        est.transform(*args, **kwargs)
        est.score(*args, **kwargs)
        _assert_same(before[0], args)
        for key in kwargs:
            _assert_same(before[1][key], kwargs[key])
        assert np.isfinite(est.transform(*args, **kwargs)).all(), name


# ------------------------------------------------------------ rows/cols with no observations
def _fitted_completion(est) -> np.ndarray:
    """The fitted network's ``X̂``, entry by entry."""
    rows, cols = np.indices(est.shape_).reshape(2, -1)
    return est.predict_entries(rows, cols).reshape(est.shape_)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_rows_and_columns_without_observations_are_allowed(make, data):
    X = data["X"].copy()
    X[3, :] = np.nan
    X[:, 5] = np.nan
    est = _quiet_fit(make(), X)
    completed = _fitted_completion(est)
    assert np.isfinite(completed).all()
    rms = np.sqrt(np.nanmean(X**2))
    # the network has no information there: what it gives stays small (order ε)
    assert np.sqrt(np.mean(completed[3] ** 2)) < 0.2 * rms
    assert np.sqrt(np.mean(completed[:, 5] ** 2)) < 0.2 * rms
    # transform folds the empty row in: it gets the column means the fit implies
    np.testing.assert_allclose(est.transform(X)[3], completed.mean(axis=0), atol=1e-8 * rms)


def test_spectral_init_predicts_exact_zeros_without_observations(data):
    X = data["X"].copy()
    X[3, :] = np.nan
    X[:, 5] = np.nan
    est = _quiet_fit(_compressed(init="spectral"), X)
    completed = _fitted_completion(est)
    rms = np.sqrt(np.nanmean(X**2))
    # zero up to the rounding of the truncated SVD
    assert np.abs(completed[3]).max() < 1e-12 * rms
    assert np.abs(completed[:, 5]).max() < 1e-12 * rms


# --------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("make", ESTIMATORS)
def test_explicit_large_lr_raises_divergence_error(make, data):
    with pytest.raises(DivergenceError, match=r"diverged at iteration \d+ .*lr=50\.0"):
        make(lr=50.0).fit(data["X"])


@pytest.mark.parametrize("make", ESTIMATORS)
def test_auto_lr_backs_off_and_records_it(make, data, monkeypatch):
    monkeypatch.setattr(base._BaseDeepMC, "_resolve_learning_rate", lambda self: 50.0)
    est = _quiet_fit(make(max_iter=200), data["X"])
    assert est.lr == "auto"
    events = est.history_["event"]
    backoffs = events.str.count("lr halved").sum()
    assert backoffs >= 1
    assert est.lr_ == pytest.approx(50.0 / 2**backoffs)
    assert (est.history_["lr"].iloc[-1]) == est.lr_
    assert np.isfinite(est.history_["loss"]).all()
    assert np.isfinite(est.transform(data["X"])).all()


def test_auto_lr_gives_up_with_an_error_rather_than_nan(data, monkeypatch):
    monkeypatch.setattr(base._BaseDeepMC, "_resolve_learning_rate", lambda self: 1e8)
    est = _compressed()
    with pytest.raises(
        DivergenceError, match=r"diverged at iteration \d+.*lr='auto'.*halved 8 time"
    ):
        est.fit(data["X"])
    assert not hasattr(est, "U_")  # nothing half-fitted is left behind


@pytest.mark.parametrize("make", ESTIMATORS)
def test_max_iter_before_tol_warns(make, data):
    with pytest.warns(ConvergenceWarning, match=r"reached max_iter=7 .*Increase max_iter or tol"):
        est = make(max_iter=7, tol=0.0).fit(data["X"])
    assert est.n_iter_ == 7
    assert est.history_["event"].iloc[-1] == "max_iter"


# ------------------------------------------------------------- reproducibility, persistence


def _state(est) -> list[np.ndarray]:
    if isinstance(est, CompressedDeepMatrixCompletion):
        return [est.U_, est.V_, *est.cores_]
    return list(est.weights_)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_same_random_state_is_bit_for_bit(make, data):
    a = _quiet_fit(make(max_iter=100), data["X"])
    b = _quiet_fit(make(max_iter=100), data["X"])
    for x, y in zip(_state(a), _state(b)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.history_["loss"], b.history_["loss"])
    # fitting is idempotent: refitting the same estimator gives the same model
    first = a.transform(data["X"])
    np.testing.assert_array_equal(_quiet_fit(a, data["X"]).transform(data["X"]), first)
    c = _quiet_fit(make(max_iter=100, random_state=1), data["X"])
    assert any(not np.array_equal(x, y) for x, y in zip(_state(a), _state(c)))


@pytest.mark.parametrize("make", ESTIMATORS)
def test_pickle_and_joblib_round_trips_keep_predictions(make, data):
    est = _quiet_fit(make(max_iter=50), pd.DataFrame(data["X"]))
    rows, cols = np.nonzero(~data["mask"])
    want_pred, want_full = est.predict_entries(rows, cols), est.transform(pd.DataFrame(data["X"]))
    blob = pickle.dumps(est)
    assert b"torch" not in blob  # fitted state is NumPy: loads without a GPU
    buffer = io.BytesIO()
    joblib.dump(est, buffer)
    buffer.seek(0)
    for loaded in (pickle.loads(blob), joblib.load(buffer)):
        np.testing.assert_array_equal(loaded.predict_entries(rows, cols), want_pred)
        np.testing.assert_array_equal(loaded.transform(pd.DataFrame(data["X"])), want_full)
        pd.testing.assert_frame_equal(loaded.history_, est.history_)
        assert loaded.get_params() == est.get_params()


_LOAD_WITHOUT_GPU = """
import pickle, sys
import numpy as np
import torch
assert not torch.cuda.is_available()
est = pickle.load(open(sys.argv[1], "rb"))
np.save(sys.argv[2], est.predict_entries(np.arange(20), np.arange(20) % 15))
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("make", ESTIMATORS)
def test_model_fitted_on_cuda_predicts_without_gpu(make, data, tmp_path):
    est = _quiet_fit(make(device="cuda", max_iter=50), data["X"])
    assert est.device_.startswith("cuda")
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(est))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_GPU, str(path), str(tmp_path / "pred.npy")],
        check=True,
        env=env,
    )
    want = est.predict_entries(np.arange(20), np.arange(20) % 15)
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_is_reproducible_and_close_to_cpu(data):
    a = _quiet_fit(_compressed(device="cuda", max_iter=100), data["X"])
    b = _quiet_fit(_compressed(device="cuda", max_iter=100), data["X"])
    c = _quiet_fit(_compressed(device="cpu", max_iter=100), data["X"])
    np.testing.assert_allclose(a.transform(data["X"]), b.transform(data["X"]), rtol=1e-10)
    np.testing.assert_allclose(a.transform(data["X"]), c.transform(data["X"]), atol=1e-8)


@pytest.mark.parametrize("make", ESTIMATORS)
def test_warm_start_continues_training(make, data):
    est = _quiet_fit(make(max_iter=100, tol=0.0, warm_start=True), data["X"])
    n1, h1 = est.n_iter_, est.history_.copy()
    loss1 = h1["loss"].iloc[-1]
    _quiet_fit(est, data["X"])
    assert n1 == 100 and est.n_iter_ == 200
    h2 = est.history_
    pd.testing.assert_frame_equal(h2.iloc[: len(h1)], h1)  # history continues ...
    assert (np.diff(h2["iteration"]) >= 0).all() and h2["iteration"].iloc[-1] == 200
    assert h2["loss"].iloc[-1] < loss1  # ... and so does the descent
    # without warm_start the same call starts over
    cold = _quiet_fit(make(max_iter=100, tol=0.0), data["X"])
    _quiet_fit(cold, data["X"])
    assert cold.n_iter_ == 100


# --------------------------------------------------------------------------- interruption


def _sigint_at(monkeypatch, est, steps):
    """Send a real SIGINT to this process while computing the gradient of ``steps``."""
    calls = {"n": 0}
    network = type(est._build_network(1e-2))
    original = network.stepper

    def stepper(self, data):
        step = original(self, data)

        def loss_and_grads(params):
            if calls["n"] in steps:
                os.kill(os.getpid(), signal.SIGINT)
            calls["n"] += 1
            return step(params)

        return loss_and_grads

    monkeypatch.setattr(network, "stepper", stepper)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("make", ESTIMATORS)
def test_ctrl_c_stops_and_keeps_the_state(make, data, monkeypatch):
    est = make(max_iter=100_000, tol=0.0)
    _sigint_at(monkeypatch, est, {40})
    handler = signal.getsignal(signal.SIGINT)
    with pytest.warns(RuntimeWarning, match=r"fit interrupted at iteration 40"):
        est.fit(data["X"])
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert est.n_iter_ == 40
    assert est.history_["event"].iloc[-1] == "interrupted"
    assert est.history_["iteration"].iloc[-1] == 40
    assert np.isfinite(est.transform(data["X"])).all()
    assert est.history_["loss"].iloc[-1] < est.history_["loss"].iloc[0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_second_ctrl_c_aborts(data, monkeypatch):
    est = _compressed(max_iter=100_000, tol=0.0, check_every=1000)
    _sigint_at(monkeypatch, est, {10})
    original = solver.Interrupt._handle

    def handle_twice(self, signum, frame):
        original(self, signum, frame)
        original(self, signum, frame)  # the user pressed Ctrl-C again

    monkeypatch.setattr(solver.Interrupt, "_handle", handle_twice)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        est.fit(data["X"])
    assert signal.getsignal(signal.SIGINT) is handler
    assert not hasattr(est, "n_iter_")


@pytest.mark.parametrize("make", ESTIMATORS)
@pytest.mark.parametrize(
    "factor, match",
    [
        (1e153, r"largest observed magnitude is .*e\+153.*Rescale the values first"),
        (1e-200, r"largest observed magnitude is .*e-200.*Rescale the values first"),
        (0.0, r"every observed entry is 0"),
    ],
    ids=["huge", "tiny", "zeros"],
)
def test_values_floating_point_cannot_fit_are_refused_before_any_work(
    make, factor, match, data, no_work
):
    with pytest.raises(ValueError, match=match):
        make().fit(data["X"] * factor)


@pytest.mark.parametrize("factor", [1e100, 1e-100])
def test_large_and_small_values_within_range_are_fitted_to_scale(factor, data):
    ref = _quiet_fit(_compressed(), data["X"])
    est = _quiet_fit(_compressed(), data["X"] * factor)
    rows, cols = np.indices(data["X"].shape)
    np.testing.assert_allclose(
        est.predict_entries(rows.ravel(), cols.ravel()) / factor,
        ref.predict_entries(rows.ravel(), cols.ravel()),
        rtol=1e-6,
        atol=1e-8,
    )

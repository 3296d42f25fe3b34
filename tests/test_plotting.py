"""Public plots: ``plot_history`` and ``SingularValuesDisplay`` draw what the fit recorded."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import deepmc
from deepmc import CompressedDeepMatrixCompletion, SingularValuesDisplay, plot_history
from deepmc.compare import end_to_end_singular_values, singular_value_trace
from deepmc.datasets import make_problem


@pytest.fixture(scope="module")
def small():
    return make_problem(shape=(30, 24), rank=2, fraction=0.5, random_state=1)


def _fit(est, X, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, **fit_params)


@pytest.fixture(scope="module")
def fitted(small):
    est = CompressedDeepMatrixCompletion(rank=2, max_iter=40, check_every=10, random_state=0)
    return _fit(est, small.train, eval_set=small.eval_set())


def test_plot_history_draws_the_eval_error_of_a_fitted_estimator(fitted):
    ax = Figure().subplots()
    assert plot_history(fitted, ax=ax) is ax
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), fitted.history_["iteration"])
    np.testing.assert_array_equal(line.get_ydata(), fitted.history_["eval_error"])
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "iteration"
    assert ax.get_ylabel() == "relative recovery error on eval_set"
    assert ax.get_title() == "CompressedDeepMatrixCompletion: relative recovery error on eval_set"
    assert ax.get_legend() is None


def test_plot_history_marks_the_events_where_they_happened():
    history = pd.DataFrame(
        {
            "iteration": [0, 25, 50, 75, 100],
            "seconds": [0.0, 0.1, 0.2, 0.3, 0.4],
            "residual": [1.0, 1e-2, 1e-4, 1e-6, 1e-8],
            "lr": [0.5] * 5,
            "event": [
                "",
                "pruned to rank 3",
                "",
                "re-seeded 2 direction(s) (its top)",
                "converged",
            ],
        }
    )
    ax = plot_history(history, x="seconds", ax=Figure().subplots())
    (marks,) = ax.collections
    xs = [segment[0, 0] for segment in marks.get_segments()]
    assert xs == [0.1, 0.3, 0.4]  # on the x axis asked for, at the rows with an event
    assert [t.get_text() for t in ax.texts] == [
        "pruned to rank 3",
        "re-seeded 2 direction(s)",
        "converged",
    ]
    assert [t.get_position()[0] for t in ax.texts] == xs
    assert ax.get_xlabel() == "seconds since fit (evaluation excluded)"
    assert ax.get_title().startswith("relative training residual")  # a bare history
    assert len(ax.lines) == 1 and ax.get_yscale() == "log"
    quiet = plot_history(history, y="lr", events=False, title="η", ax=Figure().subplots())
    assert not quiet.collections and not quiet.texts
    assert quiet.get_yscale() == "linear" and quiet.get_title() == "η"  # lr: not an error


def test_plot_history_keeps_a_title_already_set(fitted):
    ax = Figure().subplots()
    ax.set_title("mine")
    plot_history(fitted, ax=ax)
    assert ax.get_title() == "mine"


def test_plot_history_defaults_to_the_residual_without_an_eval_set(small):
    est = _fit(CompressedDeepMatrixCompletion(rank=2, max_iter=20, random_state=0), small.train)
    ax = plot_history(est.history_, x="seconds", ax=Figure().subplots(), logy=False)
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), est.history_["seconds"])
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), est.history_["residual"])
    assert ax.get_yscale() == "linear"


def test_plot_history_adds_lines_and_legend_entries(fitted):
    ax = Figure().subplots()
    plot_history(fitted, y="eval_rmse", ax=ax, label="first")
    plot_history(fitted, y="loss", ax=ax, label="second")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["first", "second"]
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), fitted.history_["loss"])


def test_plot_history_errors(fitted):
    ax = Figure().subplots()
    with pytest.raises(ValueError, match=r"y='bogus' is not a column.*'iteration'"):
        plot_history(fitted, y="bogus", ax=ax)
    with pytest.raises(ValueError, match="x='time'"):
        plot_history(fitted, x="time", ax=ax)
    with pytest.raises(NotFittedError):
        plot_history(CompressedDeepMatrixCompletion(rank=2), ax=ax)
    with pytest.raises(TypeError, match="expected a fitted deepmc estimator"):
        plot_history([1, 2, 3], ax=ax)
    assert not ax.lines


def test_missing_matplotlib_says_how_to_install_it(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(
        ImportError, match=r'pip install "matplotlib>=3.6", the \[plot\] extra of deepmc'
    ):
        plot_history(fitted)
    with pytest.raises(
        ImportError, match=r'pip install "matplotlib>=3.6", the \[plot\] extra of deepmc'
    ):
        SingularValuesDisplay(iterations=[1], singular_values=[[1.0]]).plot()


def test_singular_values_display_from_trace():
    trace = pd.DataFrame({"iteration": [5, 10, 15], "s1": [0.1, 1.0, 3.0], "s2": [0.1, 0.1, 2.0]})
    ax = Figure().subplots()
    display = SingularValuesDisplay.from_trace(trace, ax=ax, title="compressed")
    assert display.ax_ is ax and display.figure_ is ax.figure
    assert len(display.lines_) == 2 and display.lines_ == list(ax.lines)
    for line, col in zip(display.lines_, ["s1", "s2"]):
        np.testing.assert_array_equal(line.get_xdata(), trace["iteration"])
        np.testing.assert_array_equal(line.get_ydata(), trace[col])
    assert ax.get_title() == "compressed" and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="'iteration' column"):
        SingularValuesDisplay.from_trace(trace.drop(columns="iteration"))


def test_singular_values_display_from_estimator_retraces_the_fit(small):
    est = CompressedDeepMatrixCompletion(rank=2, max_iter=20, tol=0, random_state=0)
    display = SingularValuesDisplay.from_estimator(
        est, small.train, n_points=4, ax=Figure().subplots()
    )
    assert not hasattr(est, "n_iter_")  # the estimator itself is not fitted
    assert len(display.lines_) == 4  # 2r̂ singular values
    np.testing.assert_array_equal(display.iterations, [5, 10, 15, 20])
    # the last point is the spectrum of one uninterrupted fit of 20 steps
    whole = _fit(
        CompressedDeepMatrixCompletion(rank=2, max_iter=20, tol=0, random_state=0), small.train
    )
    last = [line.get_ydata()[-1] for line in display.lines_]
    np.testing.assert_allclose(last, end_to_end_singular_values(whole, 4), rtol=1e-8)
    np.testing.assert_array_equal(display.lines_[0].get_ydata(), display.singular_values[:, 0])


def test_singular_value_trace_defaults_from_a_fitted_estimator(fitted, small):
    trace = singular_value_trace(fitted, small.train, n_iter=fitted.n_iter_, k=3, n_points=2)
    assert trace.columns.tolist() == ["iteration", "s1", "s2", "s3"]
    assert trace["iteration"].tolist() == [20, 40]
    display = SingularValuesDisplay.from_estimator(
        fitted, small.train, n_points=2, k=3, ax=Figure().subplots()
    )
    np.testing.assert_allclose(display.singular_values, trace.drop(columns="iteration"))


def test_plots_without_axes_use_a_new_pyplot_figure():
    plt = pytest.importorskip("matplotlib.pyplot")
    trace = pd.DataFrame({"iteration": [1, 2], "s1": [1.0, 2.0]})
    display = SingularValuesDisplay.from_trace(trace)
    try:
        assert display.figure_ in [plt.figure(n) for n in plt.get_fignums()]
    finally:
        plt.close("all")


@pytest.mark.slow  # a subprocess that imports torch, then draws
def test_deepmc_imports_matplotlib_only_to_draw_and_never_pyplot(tmp_path):
    # one subprocess (importing torch is the slow part): importing deepmc, deepmc.compare
    # and deepmc.plotting imports no matplotlib; compare's files are drawn without pyplot
    # and without switching the backend. (Platforms without ``resource``: test_host_memory.)
    code = (
        "import sys\n"
        "import deepmc, deepmc.compare, deepmc.plotting, deepmc.__main__\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
        "import matplotlib\n"
        "def use(*args, **kwargs):\n"
        "    raise AssertionError('matplotlib.use called')\n"
        "matplotlib.use = use\n"
        f"deepmc.compare.compare('20x20,rank=2', methods=['compressed'], max_iter=10,\n"
        f"    check_every=5, device='cpu', output_dir={str(tmp_path)!r}, singular_values=True,\n"
        "    singular_points=2, log=lambda line: None)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'\n"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True)
    for name in ("compare.png", "singular_values.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"plot_history", "SingularValuesDisplay"} <= set(deepmc.__all__)

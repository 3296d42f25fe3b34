"""The progress bar: forced by ``verbose``, by itself on long fits at a terminal, silent
otherwise; it ends where the fit stops and shows loss, change vs tol and held-out error."""

from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

from deepmc import CompressedDeepMatrixCompletion
from deepmc import _progress as progress
from deepmc.datasets import make_problem

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def problem():
    return make_problem(shape=(20, 15), rank=2, fraction=0.5, random_state=0)


def _fit(problem, **params):
    est = CompressedDeepMatrixCompletion(
        **{"rank": 2, "max_iter": 2000, "tol": 1e-3, "device": "cpu", "random_state": 0, **params}
    )
    return est.fit(problem.observed_dense(), eval_set=problem.eval_set())


def test_verbose_bar_ends_where_the_fit_stops_with_its_figures(problem, monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    est = _fit(problem, verbose=1)
    assert est.n_iter_ < 2000  # stopped by tol, long before max_iter
    final = err.getvalue().split("\r")[-1]
    stop = est.history_["event"].iloc[-1]
    assert final.startswith(f"[CompressedDeepMatrixCompletion] {stop}")
    assert f"{est.n_iter_}/{est.n_iter_}" in final  # full at the stop, not at max_iter
    assert "100%" in final
    shown = dict(re.findall(r"(\w+)=([-+.\de]+)", final))
    last = est.history_.iloc[-1]
    assert float(shown["loss"]) == pytest.approx(last["loss"], rel=1e-3)
    assert float(shown["change"]) == pytest.approx(last["change"], rel=1e-2)
    assert float(shown["eval_error"]) == pytest.approx(last["eval_error"], rel=1e-3)
    # while running, the description names the tolerance the change is compared with
    assert "[CompressedDeepMatrixCompletion] tol=0.001" in err.getvalue()


def test_silent_without_a_terminal(problem, monkeypatch):
    err = io.StringIO()  # a log file or CI: not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)
    _fit(problem)
    assert err.getvalue() == ""


def test_short_fit_at_a_terminal_stays_silent(problem, monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    assert progress.PROGRESS_DELAY >= 1.0
    _fit(problem)  # well under the delay
    assert err.getvalue() == ""


def test_long_fit_at_a_terminal_shows_the_bar_by_itself(problem, monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "PROGRESS_DELAY", 0.0)  # every fit counts as long
    est = _fit(problem)
    assert f"{est.n_iter_}/{est.n_iter_}" in err.getvalue().split("\r")[-1]


def test_bar_goes_back_with_a_backed_off_step(monkeypatch):
    # a back-off returns to the last checked iteration: the bar follows it back
    bar = progress.progress_bar(1, "X", 0, 100, 1e-6)
    row = {"loss": 1.0, "change": np.inf}
    progress.show_progress(bar, 50, row)
    progress.show_progress(bar, 25, row)
    assert bar.n == 25
    progress.finish_progress(bar, 40, "X", "converged")
    assert (bar.n, bar.total) == (40, 40)
    bar.close()

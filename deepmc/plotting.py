"""Plots of a fit: its history and the dynamics of the end-to-end singular values.

They follow scikit-learn's plotting convention: functions and ``Display`` objects draw
on a given matplotlib ``Axes`` (or a new pyplot one) and return it, and matplotlib is
imported only when something is drawn. It is never switched to another backend, so
the plots show inline in a notebook and also draw on a bare
``matplotlib.figure.Figure`` (no pyplot, no display) for files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._trace import singular_value_trace

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = ["SingularValuesDisplay", "plot_history"]

#: How to get matplotlib, for messages: the package itself, or deepmc's ``plot`` extra.
PLOT_INSTALL = 'pip install "matplotlib>=3.6", the [plot] extra of deepmc'


def _check_matplotlib(what: str) -> None:
    """Raise a clear ImportError if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{what} needs matplotlib: {PLOT_INSTALL}") from exc


def _new_axes(ax: Axes | None) -> Axes:
    """``ax``, or the axes of a new pyplot figure (shown by the user's backend)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots()[1]


def _history_frame(history_or_estimator: Any) -> pd.DataFrame:
    if isinstance(history_or_estimator, pd.DataFrame):
        return history_or_estimator
    if hasattr(history_or_estimator, "get_params"):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(history_or_estimator, "history_")
        return history_or_estimator.history_
    raise TypeError(
        "plot_history: expected a fitted deepmc estimator or its history_ DataFrame, got "
        f"{type(history_or_estimator).__name__}."
    )


#: Axis labels of the history's columns.
HISTORY_LABELS: dict[str, str] = {
    "iteration": "iteration",
    "seconds": "seconds since fit (evaluation excluded)",
    "loss": "training loss (data-fit term)",
    "residual": "relative training residual ‖P_Ω(X − Y)‖ / ‖P_Ω(Y)‖",
    "change": "relative change of the fitted values (stop rule)",
    "lr": "learning rate η",
    "eval_error": "relative recovery error on eval_set",
    "eval_rmse": "RMSE on eval_set",
    "eval_seconds": "seconds spent evaluating eval_set",
    "val_error": "relative error on the validation set",
    "val_rmse": "RMSE on the validation set",
}

#: Columns drawn on a logarithmic axis by default: errors, residuals, losses.
_LOG_COLUMNS = {"loss", "residual", "change", "eval_error", "eval_rmse", "val_error", "val_rmse"}


def plot_history(
    history_or_estimator: Any,
    *,
    x: str = "iteration",
    y: str | None = None,
    ax: Axes | None = None,
    label: str | None = None,
    logy: bool | None = None,
    events: bool = True,
    title: str | None = None,
) -> Axes:
    """Plot one column of a fit's history against another, with its events marked.

    Parameters
    ----------
    history_or_estimator : fitted estimator or pandas.DataFrame
        A fitted deepmc estimator (its ``history_`` is used) or such a history.
    x : str, default="iteration"
        The column on the horizontal axis (``"iteration"`` or ``"seconds"``).
    y : str, default=None
        The column plotted; default ``"eval_error"`` (relative recovery error on the
        evaluation set) when the fit had one, else ``"residual"``.
    ax : matplotlib Axes, default=None
        Where to draw; default a new pyplot figure.
    label : str, default=None
        Legend entry of the line; a legend is drawn when given.
    logy : bool, default=None
        Logarithmic vertical axis; default on for errors, residuals and losses
        (when the plotted values are positive), off for other columns.
    events : bool, default=True
        Mark the rows of the ``event`` column (prune, re-seed, rank and momentum
        decisions, the stop) with a dotted vertical line and a short label.
    title : str, default=None
        Axes title; default the estimator's class name and the quantity plotted, unless
        the axes already have a title.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on; the new line is ``ax.lines[-1]`` (the event marks are a
        collection and texts).

    Raises
    ------
    ValueError
        If ``x`` or ``y`` is not a column of the history.
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import pandas as pd
    >>> from matplotlib.figure import Figure
    >>> history = pd.DataFrame({"iteration": [0, 10, 20], "residual": [1.0, 0.1, 0.01],
    ...                         "event": ["", "pruned to rank 2", "converged"]})
    >>> ax = plot_history(history, ax=Figure().subplots())
    >>> ax.lines[-1].get_ydata().tolist(), ax.get_yscale(), ax.get_ylabel()[:19]
    ([1.0, 0.1, 0.01], 'log', 'relative training r')
    >>> [t.get_text() for t in ax.texts]
    ['pruned to rank 2', 'converged']
    """
    _check_matplotlib("plot_history")
    history = _history_frame(history_or_estimator)
    if y is None:
        y = "eval_error" if "eval_error" in history.columns else "residual"
    for name, col in (("x", x), ("y", y)):
        if col not in history.columns:
            raise ValueError(
                f"plot_history: {name}={col!r} is not a column of the history; "
                f"expected one of {list(history.columns)}."
            )
    ax = _new_axes(ax)
    values = history[y].to_numpy(dtype=float)
    ax.plot(history[x].to_numpy(), values, label=label)
    if logy is None:
        logy = y in _LOG_COLUMNS and bool(np.all(values[np.isfinite(values)] > 0))
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(HISTORY_LABELS.get(x, x))
    ax.set_ylabel(HISTORY_LABELS.get(y, y))
    if title is None and not ax.get_title():
        owner = (
            ""
            if isinstance(history_or_estimator, pd.DataFrame)
            else (type(history_or_estimator).__name__ + ": ")
        )
        title = f"{owner}{HISTORY_LABELS.get(y, y)}"
    if title is not None:
        ax.set_title(title)
    if events and "event" in history.columns:
        _mark_events(ax, history, x)
    if label is not None:
        ax.legend()
    return ax


def _mark_events(ax: Axes, history: pd.DataFrame, x: str) -> None:
    """A dotted vertical line and a short rotated label at each row with an event."""
    text = history["event"].fillna("").astype(str).str.strip()
    rows = history.loc[text != "", x].to_numpy()
    if rows.size == 0:
        return
    ax.vlines(
        rows, 0, 1, transform=ax.get_xaxis_transform(), colors="0.5", linestyles=":", linewidth=0.8
    )
    for pos, event in zip(rows, text[text != ""]):
        short = event.split(" (")[0]
        short = short if len(short) <= 28 else short[:27] + "…"
        ax.text(
            pos,
            0.98,
            short,
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="right",
            va="top",
            fontsize=7,
            color="0.35",
        )


def _default_k(estimator: Any) -> int:
    """2r̂ for the compressed network, the width of a narrow one, else 10."""
    params = estimator.get_params()
    if params.get("rank") is not None:
        return 2 * int(params["rank"])
    if params.get("width") is not None:
        return int(params["width"])
    return 10


class SingularValuesDisplay:
    """The top singular values of the end-to-end matrix over training.

    From small initialisation, gradient descent learns the singular directions of the
    target one after another, while the remaining singular values stay near their
    initial scale (the law of parsimony, Yaras et al. 2023): this display shows that
    picture. Create it with :meth:`from_estimator` (which traces a fit) or
    :meth:`from_trace` (from a trace already computed, e.g. the
    ``singular_values_<method>.csv`` written by ``deepmc compare --singular-values``).

    Parameters
    ----------
    iterations : array-like of shape (n_points,)
        The iteration of each point.
    singular_values : array-like of shape (n_points, k)
        The top ``k`` singular values at each point, largest first.
    title : str, default=None
        Title of the axes.

    Attributes
    ----------
    lines_ : list of matplotlib Line2D
        One line per singular value.
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        Its figure.

    References
    ----------
    C. Yaras, P. Wang, W. Hu, Z. Zhu, L. Balzano, Q. Qu, "The Law of Parsimony in
    Gradient Descent for Learning Deep Linear Networks", arXiv:2306.01154, 2023.

    Examples
    --------
    >>> import pandas as pd
    >>> from matplotlib.figure import Figure
    >>> trace = pd.DataFrame({"iteration": [10, 20], "s1": [0.5, 2.0], "s2": [0.1, 0.1]})
    >>> display = SingularValuesDisplay.from_trace(trace, ax=Figure().subplots())
    >>> [line.get_ydata().tolist() for line in display.lines_]
    [[0.5, 2.0], [0.1, 0.1]]
    """

    def __init__(self, *, iterations: Any, singular_values: Any, title: str | None = None):
        self.iterations = np.asarray(iterations)
        self.singular_values = np.asarray(singular_values, dtype=float)
        self.title = title

    def plot(self, ax: Axes | None = None, *, logy: bool = True) -> SingularValuesDisplay:
        """Draw one line per singular value against the iterations.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Where to draw; default a new pyplot figure.
        logy : bool, default=True
            Logarithmic vertical axis.

        Returns
        -------
        SingularValuesDisplay
            ``self``, with ``lines_``, ``ax_`` and ``figure_`` set.
        """
        _check_matplotlib("SingularValuesDisplay")
        values = self.singular_values.reshape(len(self.iterations), -1)
        ax = _new_axes(ax)
        self.lines_: list[Line2D] = [
            ax.plot(self.iterations, values[:, i], lw=1)[0] for i in range(values.shape[1])
        ]
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("iterations")
        ax.set_ylabel("singular values of X̂")
        ax.grid(True, which="both", alpha=0.3)
        if self.title is not None:
            ax.set_title(self.title)
        self.ax_: Axes = ax
        self.figure_: Figure = ax.figure
        return self

    @classmethod
    def from_trace(
        cls,
        trace: pd.DataFrame,
        *,
        ax: Axes | None = None,
        title: str | None = None,
        logy: bool = True,
    ) -> SingularValuesDisplay:
        """Plot a trace with columns ``iteration``, ``s1``, …, ``sk``.

        Parameters
        ----------
        trace : pandas.DataFrame
            As returned by :func:`deepmc.compare.singular_value_trace` or written to
            ``singular_values_<method>.csv`` by ``deepmc compare``.
        ax : matplotlib Axes, default=None
        title : str, default=None
        logy : bool, default=True

        Returns
        -------
        SingularValuesDisplay
        """
        if "iteration" not in trace.columns:
            raise ValueError(f"trace: expected an 'iteration' column, got {list(trace.columns)}.")
        values = trace.drop(columns="iteration").to_numpy(dtype=float)
        display = cls(iterations=trace["iteration"].to_numpy(), singular_values=values, title=title)
        return display.plot(ax=ax, logy=logy)

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        X: Any,
        *,
        n_iter: int | None = None,
        k: int | None = None,
        n_points: int = 30,
        ax: Axes | None = None,
        title: str | None = None,
        logy: bool = True,
        **fit_params: Any,
    ) -> SingularValuesDisplay:
        """Trace a fit of ``estimator`` to ``X`` and plot its singular values.

        The trace refits a clone of ``estimator`` from its initialisation in
        ``n_points`` warm-started chunks (see
        :func:`deepmc.compare.singular_value_trace`); ``estimator`` is not modified.

        Parameters
        ----------
        estimator : DeepMatrixCompletion or CompressedDeepMatrixCompletion
            Fitted or not; its parameters (``random_state`` included) are used.
        X : array-like, sparse matrix, DataFrame or Observations
            The training data.
        n_iter : int, default=None
            Steps to trace; default the fitted ``n_iter_``, else ``max_iter``.
        k : int, default=None
            Singular values shown; default 2r̂ (compressed), the width (narrow), else 10.
        n_points : int, default=30
        ax : matplotlib Axes, default=None
        title : str, default=None
        logy : bool, default=True
        **fit_params
            Passed to ``fit`` (``eval_set``).

        Returns
        -------
        SingularValuesDisplay
        """
        _check_matplotlib("SingularValuesDisplay")
        if n_iter is None:
            n_iter = getattr(estimator, "n_iter_", None) or estimator.get_params()["max_iter"]
        trace = singular_value_trace(
            estimator,
            X,
            n_iter=int(n_iter),
            k=_default_k(estimator) if k is None else int(k),
            n_points=n_points,
            **fit_params,
        )
        return cls.from_trace(trace, ax=ax, title=title, logy=logy)

"""The comparison's figures, drawn with :mod:`deepmc.plotting` and saved without pyplot.

Figures are :class:`matplotlib.figure.Figure` objects saved with ``savefig``: that needs
no display and leaves the user's pyplot backend alone. matplotlib is imported inside the
functions only.
"""

from __future__ import annotations

from pathlib import Path

from ..plotting import SingularValuesDisplay, plot_history
from ._result import _Result
from ._tasks import METHODS, Task

__all__ = ["plot_histories", "plot_singular"]


def plot_histories(results: list[_Result], task: Task, path: Path) -> None:
    """Error (RMSE for ratings) against iterations and against seconds, one line per method."""
    from matplotlib.figure import Figure

    ylabel = "held-out RMSE" if task.kind == "ratings" else "relative recovery error"
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    for res in results:
        if res.estimator is None:
            continue
        for ax, x in zip(axes, ("iteration", "seconds")):
            plot_history(
                res.estimator,
                x=x,
                y=task.metric,
                ax=ax,
                label=METHODS[res.method],
                events=False,
                title="",
            )
    for ax, xlabel in zip(axes, ("iterations", "seconds (fit, init included, eval excluded)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].get_legend().remove()
    m, n = task.shape
    fig.suptitle(f"{task.name}: {m}×{n}, r̂={task.rank}, depth {task.depth}")
    fig.savefig(path, dpi=100)


def plot_singular(results: list[_Result], task: Task, path: Path) -> None:
    """One panel per method: the top 2r̂ singular values of X̂ over training."""
    from matplotlib.figure import Figure

    traced = [r for r in results if r.singular is not None and not r.singular.empty]
    fig = Figure(figsize=(4.5 * len(traced), 3.8))
    axes = fig.subplots(1, len(traced), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.84, wspace=0.25)
    for ax, res in zip(axes[0], traced):
        SingularValuesDisplay.from_trace(res.singular, ax=ax, title=METHODS[res.method])
        if ax is not axes[0][0]:
            ax.set_ylabel("")
    fig.suptitle(f"{task.name}: top {2 * task.rank} singular values of the end-to-end matrix")
    fig.savefig(path, dpi=100)

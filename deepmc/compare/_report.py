"""The comparison's summary table: thresholds reached, memory, speed-up over full width."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ._result import _Result
from ._tasks import Task

__all__ = ["format_table"]


def _first_reaching(history: pd.DataFrame, column: str, threshold: float) -> tuple[float, float]:
    hit = history.loc[history[column] <= threshold]
    if hit.empty:
        return math.nan, math.nan
    return float(hit["iteration"].iloc[0]), float(hit["seconds"].iloc[0])


def _threshold_name(t: float) -> str:
    return f"{t:.0e}"


def _progress_columns(
    history: pd.DataFrame | None, task: Task, thresholds: tuple[float, ...]
) -> dict[str, float]:
    """Ratings: best and final held-out RMSE; synthetic: first crossing of each threshold."""
    h = history
    row: dict[str, float] = {}
    if task.kind == "ratings":
        best = h["eval_rmse"].idxmin() if h is not None else None
        row["best_rmse"] = h["eval_rmse"].min() if h is not None else math.nan
        row["iter_at_best"] = h.loc[best, "iteration"] if h is not None else math.nan
        row["sec_at_best"] = h.loc[best, "seconds"] if h is not None else math.nan
        row["final_rmse"] = h["eval_rmse"].iloc[-1] if h is not None else math.nan
        return row
    for t in thresholds:
        it, sec = _first_reaching(h, "eval_error", t) if h is not None else (math.nan,) * 2
        row[f"iter_to_{_threshold_name(t)}"] = it
        row[f"sec_to_{_threshold_name(t)}"] = sec
    row["final_error"] = h["eval_error"].iloc[-1] if h is not None else math.nan
    return row


def _add_speedup(table: pd.DataFrame, task: Task, thresholds: tuple[float, ...]) -> str:
    """Fill ``speedup_vs_full`` in place; return how it was computed.

    Seconds to the smallest threshold full width reached, when it reached one; else
    seconds per iteration.
    """
    full = table.loc[(table["method"] == "full") & (table["status"] == "ok")]
    table["speedup_vs_full"] = math.nan
    if full.empty:
        return "full width not run"
    reached = [
        t
        for t in thresholds
        if task.kind != "ratings" and np.isfinite(full[f"sec_to_{_threshold_name(t)}"].iloc[0])
    ]
    if reached:
        col = f"sec_to_{_threshold_name(min(reached))}"
        table["speedup_vs_full"] = full[col].iloc[0] / table[col]
        return f"full width's seconds to reach error {min(reached):g} / the method's"
    per_step = table["seconds"] / table["iterations"]
    table["speedup_vs_full"] = per_step.loc[full.index[0]] / per_step
    return "seconds per iteration of full width / the method's"


def _summary(
    results: list[_Result], task: Task, thresholds: tuple[float, ...]
) -> tuple[pd.DataFrame, str]:
    """One row per method, and the basis of its ``speedup_vs_full`` column."""
    rows = []
    for res in results:
        row: dict[str, Any] = {"method": res.method, "status": res.status}
        h = res.estimator.history_ if res.estimator is not None else None
        row["iterations"] = res.estimator.n_iter_ if h is not None else math.nan
        row["seconds"] = res.seconds
        row.update(_progress_columns(h, task, thresholds))
        row["peak_rss_increase_MiB"] = res.host_mib
        row["cuda_peak_alloc_MiB"] = res.cuda_mib
        row["note"] = "; ".join(res.notes)
        rows.append(row)
    table = pd.DataFrame.from_records(rows)
    basis = _add_speedup(table, task, thresholds)
    return table, basis


def _fmt(pattern: str) -> Callable[[Any], str]:
    return lambda v: "—" if pd.isna(v) else pattern.format(v)


def format_table(table: pd.DataFrame) -> str:
    """The summary as aligned text (what ``deepmc compare`` prints).

    Parameters
    ----------
    table : pandas.DataFrame
        What :func:`deepmc.compare.compare` returns.

    Returns
    -------
    str
    """
    shown = table.drop(columns=["note"])
    if shown["cuda_peak_alloc_MiB"].isna().all():
        shown = shown.drop(columns=["cuda_peak_alloc_MiB"])
    formatters = {}
    for col in shown.columns:
        if col.startswith(("iter", "iterations")):
            formatters[col] = _fmt("{:.0f}")
        elif "error" in col or "rmse" in col:
            formatters[col] = _fmt("{:.2e}")
        elif shown[col].dtype.kind == "f":
            formatters[col] = _fmt("{:.2f}")
    text = shown.to_string(index=False, formatters=formatters, na_rep="—")
    notes = [f"  {m}: {note}" for m, note in zip(table["method"], table["note"]) if note]
    basis = table.attrs.get("speedup_basis")
    tail = [f"speedup_vs_full = {basis}"] if basis else []
    tail.append(
        "peak_rss_increase_MiB = host resident-memory high-water mark during fit minus "
        "resident memory before it (torch CPU tensors included)"
    )
    return "\n".join([text, *tail, *(["notes:", *notes] if notes else [])])

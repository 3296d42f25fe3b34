"""What a running fit shows and hears: its progress bar, and Ctrl-C between steps."""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["PROGRESS_DELAY", "Interrupt", "finish_progress", "progress_bar", "show_progress"]

#: Seconds after which a fit with ``verbose=0`` shows its progress bar on a terminal.
PROGRESS_DELAY = 5.0


def progress_bar(verbose: int, name: str, start_iter: int, end_iter: int, tol: float) -> Any:
    """The tqdm bar of a fit, advanced at its checks and completed where the fit stops.

    ``verbose`` forces the bar on from the start. Otherwise it appears by itself after
    :data:`PROGRESS_DELAY` seconds, and only when stderr is a terminal (tqdm's
    ``disable=None``), so short fits, logs and CI stay silent. Its postfix shows the
    training loss, the relative change of the fitted values that the stop rule compares
    with ``tol`` (in the description), and the held-out error.
    """
    from tqdm.auto import tqdm

    return tqdm(
        total=end_iter,
        initial=start_iter,
        desc=f"[{name}] tol={tol:g}",
        unit="step",
        disable=False if verbose else None,
        delay=0.0 if verbose else PROGRESS_DELAY,
        dynamic_ncols=True,
    )


def show_progress(bar: Any, it: int, row: dict) -> None:
    """Advance ``bar`` to iteration ``it`` with the check's figures (may go back on back-off)."""
    postfix = {"loss": f"{row['loss']:.3e}", "change": f"{row['change']:.2e}"}
    for key in ("eval_error", "val_rmse"):
        if key in row:
            postfix[key] = f"{row[key]:.3e}"
    bar.set_postfix(postfix, refresh=False)
    bar.update(it - bar.n)


def finish_progress(bar: Any, it: int, name: str, stop: str) -> None:
    """End the bar where the fit stopped (full), saying why, instead of at ``max_iter``."""
    bar.total = max(it, bar.n, 1)
    bar.n = it
    bar.set_description_str(f"[{name}] {stop}", refresh=False)


class Interrupt:
    """SIGINT → a flag read between steps (main thread only); a second SIGINT raises.

    Use as a context manager; the previous handler is restored on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: the user wants out now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

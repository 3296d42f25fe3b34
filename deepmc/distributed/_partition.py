"""Contiguous row ranges balanced by the number of observed entries."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RowPartition", "balanced_row_ranges"]


def balanced_row_ranges(row_counts: np.ndarray, world_size: int) -> np.ndarray:
    """Boundaries of ``world_size`` contiguous row ranges with about ``N / P`` entries each.

    Rank ``p`` owns rows ``bounds[p]:bounds[p + 1]``. Boundary ``p`` is the first row at
    which the cumulative count reaches ``p·N/P``, so every range holds at most
    ``N/P + max(row_counts)`` entries. A range may be empty, or hold rows without any
    observation (more ranks than rows, or a few very long rows): its rank then has zero
    observations, which the distributed fit allows.

    Parameters
    ----------
    row_counts : array-like of int of shape (m,)
        Observed entries per row.
    world_size : int
        Number of ranks P ≥ 1.

    Returns
    -------
    ndarray of int64 of shape (P + 1,)
        Non-decreasing, from 0 to m.

    Examples
    --------
    >>> balanced_row_ranges([5, 1, 1, 1, 1, 1], 2).tolist()
    [0, 1, 6]
    >>> balanced_row_ranges([3, 0, 0], 3).tolist()
    [0, 1, 1, 3]
    """
    counts = np.asarray(row_counts)
    if counts.ndim != 1 or (counts.size and counts.min() < 0):
        raise ValueError(
            f"row_counts: expected a 1-D array of non-negative counts, got shape {counts.shape}."
        )
    if int(world_size) < 1:
        raise ValueError(f"world_size: expected a positive integer, got {world_size!r}.")
    m = counts.shape[0]
    cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    total = int(cum[-1])
    targets = [(p * total + world_size - 1) // world_size for p in range(1, world_size)]
    inner = np.searchsorted(cum, targets, side="left") if total else np.full(world_size - 1, m)
    return np.concatenate([[0], np.minimum(inner, m), [m]]).astype(np.int64)


@dataclass(frozen=True)
class RowPartition:
    """The row range of one rank and the global problem it belongs to.

    Parameters
    ----------
    bounds : ndarray of shape (P + 1,)
        Row boundaries of all ranks (:func:`balanced_row_ranges`).
    rank : int
    shape : tuple of (int, int)
        Global ``(m, n)``.
    n_observed : int
        Global number of observations N.
    """

    bounds: np.ndarray
    rank: int
    shape: tuple[int, int]
    n_observed: int

    @property
    def start(self) -> int:
        """First global row of this rank."""
        return int(self.bounds[self.rank])

    @property
    def stop(self) -> int:
        """One past the last global row of this rank."""
        return int(self.bounds[self.rank + 1])

    @property
    def n_rows(self) -> int:
        return self.stop - self.start

    @property
    def world_size(self) -> int:
        return len(self.bounds) - 1

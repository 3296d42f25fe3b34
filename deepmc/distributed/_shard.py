"""A rank's shard of the observations: its contiguous row range and the entries in it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validation import Observations, check_observations
from ._checkpoint import agree
from ._comm import Comm
from ._fingerprint import data_fingerprint
from ._io import TripletFile, check_dense, collect_ids, count_rows, read_rows
from ._partition import RowPartition, balanced_row_ranges

__all__ = ["Shard", "read_shard", "shard_observations"]


@dataclass(frozen=True)
class Shard:
    """The observations of one rank's rows, with global indices, and the split they belong to.

    Attributes
    ----------
    observations : Observations
        Entries of rows ``partition.start:partition.stop`` (global row and column
        indices, sorted by row then column), with the global ``shape``.
    partition : RowPartition
        Every rank's row range, this rank, the global shape and N.
    fingerprint : str
        A hash of every rank's triplets, the same on every rank and for any split
        (:func:`~deepmc.distributed._fingerprint.data_fingerprint`); checkpoints and
        saved models record it.
    ids : tuple of (ndarray, ndarray) or None
        With ``remap=True``: the row and column ids of indices 0, 1, … (saved with the
        model, read back by :func:`~deepmc.distributed.load_ids`).
    """

    observations: Observations
    partition: RowPartition
    fingerprint: str = ""
    ids: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.partition.shape

    @property
    def n_local(self) -> int:
        return self.observations.n_observed


def _check_agreement(comm: Comm, shape: tuple[int, int], n_observed: int, bounds) -> None:
    """Every rank must hold the same global shape, N and row bounds (one all-reduce)."""
    if not comm.distributed:
        return
    mine = torch.tensor([shape[0], shape[1], n_observed, *bounds], dtype=torch.float64)
    both = torch.stack([mine, -mine])
    comm.max_(both)
    if not torch.equal(both[0], -both[1]):
        raise ValueError(
            f"rank {comm.rank}: the ranks disagree on the global problem (shape, N, row "
            f"bounds): this rank has shape {shape}, N={n_observed}, bounds {list(bounds)}; "
            f"the maxima over ranks are {both[0].long().tolist()}. Every rank must "
            "describe the same matrix."
        )


def shard_observations(
    X: Any,
    *,
    comm: Comm | None = None,
    bounds: Sequence[int] | None = None,
) -> Shard:
    """This rank's shard of a matrix that every rank holds (small data, tests).

    Parameters
    ----------
    X : array-like, DataFrame, sparse matrix or triplets
        The whole partially observed matrix, identical on every rank (any input that
        the estimators' ``fit`` accepts).
    comm : Comm, default=None
        The process group (default: the initialised one, or a world of one).
    bounds : sequence of int, default=None
        Row boundaries ``[0, b_1, …, m]`` of the ranks; ``None`` balances the entries
        (:func:`balanced_row_ranges`).

    Returns
    -------
    Shard
    """
    comm = comm or Comm.current()
    obs = check_observations(X)
    m = obs.shape[0]
    if bounds is None:
        bounds = balanced_row_ranges(np.bincount(obs.rows, minlength=m), comm.world_size)
    bounds = _check_bounds(bounds, m, comm.world_size)
    lo, hi = np.searchsorted(obs.rows, [bounds[comm.rank], bounds[comm.rank + 1]])
    local = Observations(obs.rows[lo:hi], obs.cols[lo:hi], obs.values[lo:hi], obs.shape)
    part = RowPartition(bounds, comm.rank, obs.shape, obs.n_observed)
    _check_agreement(comm, obs.shape, obs.n_observed, bounds)
    return Shard(local, part, data_fingerprint(local, comm))


def _check_bounds(bounds: Sequence[int], m: int, world_size: int) -> np.ndarray:
    b = np.asarray(bounds, dtype=np.int64)
    if (
        b.ndim != 1
        or b.shape[0] != world_size + 1
        or b[0] != 0
        or b[-1] != m
        or np.any(np.diff(b) < 0)
    ):
        raise ValueError(
            f"bounds: expected {world_size + 1} non-decreasing row boundaries from 0 to "
            f"m={m} (one range per rank), got {np.asarray(bounds).tolist()}."
        )
    return b


def read_shard(
    path: str | os.PathLike,
    *,
    comm: Comm | None = None,
    shape: tuple[int, int] | None = None,
    columns: Sequence[str | int] | None = None,
    header: bool | None = None,
    index_base: int = 0,
    remap: bool = False,
) -> Shard:
    """Read this rank's rows of a (row, col, value) triplet file.

    A first pass reads only the row column and counts the entries per row; the ranks
    split the rows into contiguous ranges balanced by count
    (:func:`balanced_row_ranges`); a second pass keeps only this rank's range (chunked
    CSV, or a Parquet row filter). The global number of columns is the largest column
    index over all ranks plus one, unless ``shape`` is given.

    Parameters
    ----------
    path : str or os.PathLike
        CSV or Parquet file (see :class:`TripletFile`).
    comm : Comm, default=None
        The process group (default: the initialised one, or a world of one).
    shape : tuple of (int, int), default=None
        ``(m, n)``; by default one more than the largest row and column index.
    columns, header, index_base
        See :class:`TripletFile`.
    remap : bool, default=False
        Map the distinct row and column ids (integers or strings, however sparse) to
        indices 0, 1, … in sorted order; ``shape`` is then the numbers of distinct ids.

    Returns
    -------
    Shard
    """
    comm = comm or Comm.current()
    source = TripletFile(path, columns=columns, header=header, index_base=index_base, remap=remap)
    if remap:
        if shape is not None:
            raise ValueError("shape: not with remap (the shape is the number of distinct ids).")
        row_ids, counts, col_ids = collect_ids(source)
        source = dataclasses.replace(source, ids=(row_ids, col_ids))
        shape = (row_ids.size, col_ids.size)
    else:
        counts = count_rows(source)
    m = counts.shape[0] if shape is None else int(shape[0])
    if counts.shape[0] > m:
        raise ValueError(
            f"{path}: row index {counts.shape[0] - 1 + index_base} is outside shape {shape}."
        )
    counts = np.pad(counts, (0, m - counts.shape[0]))
    n_observed = int(counts.sum())
    if n_observed == 0:
        raise ValueError(f"{path}: no (row, col, value) entries found.")
    bounds = balanced_row_ranges(counts, comm.world_size)
    lo, hi = int(bounds[comm.rank]), int(bounds[comm.rank + 1])

    # a malformed line lies in one rank's rows: every rank stops, not only that one
    rows, cols, values = agree(comm, lambda: read_rows(source, lo, hi), f"to read {path}")
    n_cols = comm.max_int(int(cols.max()) + 1 if cols.size else 0)
    if shape is None:
        check_dense(path, "column", n_cols - 1 + index_base, n_observed)
    if shape is not None:
        if n_cols > int(shape[1]):
            raise ValueError(
                f"{path}: column index {n_cols - 1 + index_base} is outside shape {shape}."
            )
        n_cols = int(shape[1])
    full_shape = (m, n_cols)
    local = agree(
        comm,
        lambda: (
            check_observations((rows, cols, values, full_shape))
            if rows.size
            else Observations(rows, cols, values, full_shape)
        ),
        f"to check its rows of {path}",
    )
    _check_agreement(comm, full_shape, n_observed, bounds)
    part = RowPartition(bounds, comm.rank, full_shape, n_observed)
    return Shard(local, part, data_fingerprint(local, comm), source.ids)

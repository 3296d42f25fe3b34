"""Readers of (row, col, value) triplet files that keep only one rank's row range.

CSV is read in chunks (:func:`pandas.read_csv` with ``chunksize``), so the memory is one
chunk plus the rank's own entries whatever the file's size; Parquet is read with a
pyarrow row filter (``filters=[(row, ">=", start), (row, "<", stop)]``), which skips row
groups whose statistics lie outside the range. The balanced split needs the entries per
row first: :func:`count_rows` reads only the row column (a second chunked pass for CSV).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TripletFile", "count_rows", "read_rows"]

#: Lines per CSV chunk: about 30 MB of parsed columns.
CHUNK_ROWS = 1 << 20
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


@dataclass(frozen=True)
class TripletFile:
    """Where a triplet file's (row, col, value) columns are and how they are indexed.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV (any delimiter among ``,``, tab, ``;``, ``|`` or white space, detected from
        the first line) or Parquet file (``.parquet``, ``.pq``, ``.parq``).
    columns : sequence of 3 str or int, default=None
        The row, column and value columns, by name or position; ``None`` takes the
        first three columns.
    header : bool or None, default=None
        Whether a CSV file starts with a header line; ``None`` detects it (the first
        line is a header unless its first three fields are numbers).
    index_base : int, default=0
        The index of the first row and column in the file (1 for MovieLens files).
    """

    path: str | os.PathLike
    columns: Sequence[str | int] | None = None
    header: bool | None = None
    index_base: int = 0

    @property
    def is_parquet(self) -> bool:
        return str(self.path).lower().endswith(_PARQUET_SUFFIXES)

    def _csv_layout(self) -> tuple[str, int | None]:
        """``(sep, header)`` arguments of :func:`pandas.read_csv` for this file."""
        with open(self.path, newline="") as fh:
            first = fh.readline()
        if not first.strip():
            raise ValueError(f"{self.path}: the file is empty; expected (row, col, value) lines.")
        sep = next((s for s in ("\t", ",", ";", "|") if s in first), r"\s+")
        fields = (
            next(csv.reader([first.strip()], delimiter=sep)) if sep != r"\s+" else (first.split())
        )
        header = self.header
        if header is None:
            try:
                [float(f) for f in fields[:3]]
            except ValueError:
                header = True
            else:
                header = False
        if len(fields) < 3 and self.columns is None:
            raise ValueError(
                f"{self.path}: expected at least three columns (row, col, value), found "
                f"{len(fields)} in the first line {first.strip()!r} (delimiter {sep!r})."
            )
        return sep, (0 if header else None)

    def _names(self, available: Sequence) -> list:
        if self.columns is None:
            return list(available[:3])
        cols = list(self.columns)
        if len(cols) != 3:
            raise ValueError(f"columns: expected three columns (row, col, value), got {cols!r}.")
        out = []
        for c in cols:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if not 0 <= c < len(available):
                    raise ValueError(
                        f"columns: position {c} is outside the {len(available)} columns of "
                        f"{self.path}."
                    )
                out.append(available[c])
            elif c in available:
                out.append(c)
            else:
                raise ValueError(
                    f"columns: {c!r} is not a column of {self.path}; its columns are "
                    f"{list(available)!r}."
                )
        return out

    def chunks(
        self, *, which: str = "all", bounds: tuple[int, int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """``(rows, cols, values)`` chunks with 0-based indices (``cols``, ``values`` None
        when ``which="rows"``), restricted to rows ``bounds[0]:bounds[1]`` if given."""
        if self.is_parquet:
            yield from self._parquet_chunks(which, bounds)
            return
        sep, header = self._csv_layout()
        head = pd.read_csv(self.path, sep=sep, header=header, nrows=1)
        names = self._names(list(head.columns))
        use = names[:1] if which == "rows" else names
        with pd.read_csv(
            self.path, sep=sep, header=header, usecols=use, chunksize=CHUNK_ROWS
        ) as reader:
            for chunk in reader:
                yield self._convert(
                    *(chunk[c].to_numpy() for c in use), *(None,) * (3 - len(use)), bounds=bounds
                )

    def _parquet_chunks(self, which: str, bounds: tuple[int, int] | None):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{self.path}: reading Parquet needs pyarrow; install deepmc[parquet]."
            ) from exc
        names = self._names(pq.read_schema(self.path).names)
        use = names[:1] if which == "rows" else names
        if bounds is None:
            batches = pq.ParquetFile(self.path).iter_batches(columns=use, batch_size=CHUNK_ROWS)
        else:
            lo, hi = bounds[0] + self.index_base, bounds[1] + self.index_base
            table = pq.read_table(
                self.path, columns=use, filters=[(names[0], ">=", lo), (names[0], "<", hi)]
            )
            batches = table.to_batches(max_chunksize=CHUNK_ROWS)
        for batch in batches:
            arrays = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(len(use))]
            yield self._convert(*arrays, *(None,) * (3 - len(use)), bounds=bounds)

    def _convert(self, rows, cols, values, *, bounds):
        rows = _as_index(rows, "row", self.path) - self.index_base
        if cols is not None:
            cols = _as_index(cols, "column", self.path) - self.index_base
        for label, idx in (("row", rows), ("column", cols)):
            if idx is not None and idx.size and idx.min() < 0:
                raise ValueError(
                    f"{self.path}: {label} index {int(idx.min()) + self.index_base} is below "
                    f"the first index {self.index_base} (index_base)."
                )
        if values is not None:
            values = np.asarray(values, dtype=np.float64)
        if bounds is not None:
            keep = (rows >= bounds[0]) & (rows < bounds[1])
            if not keep.all():
                rows = rows[keep]
                cols = cols[keep] if cols is not None else None
                values = values[keep] if values is not None else None
        return rows, cols, values


def _as_index(a: np.ndarray, label: str, path) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    raise ValueError(
        f"{path}: the {label} column must hold integer indices, got dtype {a.dtype}"
        + (f" (e.g. {a[0]!r})" if a.size else "")
        + ". Use RatingsCompletion for arbitrary ids, or pass columns=."
    )


def count_rows(source: TripletFile) -> np.ndarray:
    """Observed entries per row (0-based), from the row column alone.

    Returns
    -------
    ndarray of int64 of shape (max_row + 1,)
    """
    counts = np.zeros(0, dtype=np.int64)
    for rows, _, _ in source.chunks(which="rows"):
        c = np.bincount(rows)
        if c.shape[0] > counts.shape[0]:
            c[: counts.shape[0]] += counts
            counts = c
        else:
            counts[: c.shape[0]] += c
    return counts


def read_rows(source: TripletFile, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """The entries of rows ``start:stop`` (0-based, global indices), in file order.

    Returns
    -------
    rows, cols : ndarray of int64
    values : ndarray of float64
    """
    parts = list(source.chunks(bounds=(start, stop)))
    if not parts:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

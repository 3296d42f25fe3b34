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
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["TripletFile", "check_dense", "collect_ids", "count_rows", "read_rows"]

#: Lines per CSV chunk: about 30 MB of parsed columns.
CHUNK_ROWS = 1 << 20
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
#: Characters of a CSV file read to infer its delimiter and header.
_SAMPLE_CHARS = 1 << 16
_DELIMITERS = ",\t;| "
#: Ids are refused as indices beyond ``max(SPARSE_LIMIT, SPARSE_RATIO · N)``.
SPARSE_LIMIT = 1 << 20
SPARSE_RATIO = 64


@dataclass(frozen=True)
class TripletFile:
    """Where a triplet file's (row, col, value) columns are and how they are indexed.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV (any delimiter among ``,``, tab, ``;``, ``|`` or white space, inferred
        from the first lines by :class:`csv.Sniffer`) or Parquet file (``.parquet``,
        ``.pq``, ``.parq``).
    columns : sequence of 3 str or int, default=None
        The row, column and value columns, by name or position; ``None`` takes the
        first three columns.
    header : bool or None, default=None
        Whether a CSV file starts with a header line; ``None`` infers it
        (:meth:`csv.Sniffer.has_header`: a first line whose fields differ in kind from
        the lines below is a header).
    index_base : int, default=0
        The index of the first row and column in the file (1 for MovieLens files).
    remap : bool, default=False
        The row and column fields are ids of any kind, read as text from a CSV file
        (as they are stored in a Parquet file), to be mapped to indices.
    ids : tuple of (ndarray, ndarray), default=None
        With ``remap``: the sorted distinct row and column ids, mapped to indices
        0, 1, … in that order (:func:`collect_ids`); ``index_base`` is then ignored.
    """

    path: str | os.PathLike
    columns: Sequence[str | int] | None = None
    header: bool | None = None
    index_base: int = 0
    remap: bool = False
    ids: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def is_parquet(self) -> bool:
        return str(self.path).lower().endswith(_PARQUET_SUFFIXES)

    def _csv_layout(self) -> tuple[str, int | None]:
        """``(sep, header)`` arguments of :func:`pandas.read_csv` for this file.

        The delimiter and the header are inferred by :class:`csv.Sniffer` from the
        first lines (as ``pandas.read_csv(sep=None)`` infers the delimiter).
        """
        with open(self.path, newline="") as fh:
            sample = fh.read(_SAMPLE_CHARS)
        if not sample.strip():
            raise ValueError(f"{self.path}: the file is empty; expected (row, col, value) lines.")
        if len(sample) == _SAMPLE_CHARS and "\n" in sample:
            sample = sample[: sample.rindex("\n") + 1]  # whole lines only
        sniffer = csv.Sniffer()
        try:
            sep = sniffer.sniff(sample, delimiters=_DELIMITERS).delimiter
        except csv.Error:
            first = sample.strip().splitlines()[0]
            raise ValueError(
                f"{self.path}: cannot tell the delimiter from the first lines (first line "
                f"{first[:80]!r}); expected (row, col, value) fields separated by commas, "
                "tabs, semicolons, bars or spaces."
            ) from None
        sep = r"\s+" if sep == " " else sep
        first = sample.strip().splitlines()[0]
        fields = first.split() if sep == r"\s+" else next(csv.reader([first], delimiter=sep))
        header = self.header
        if header is None:
            # a line of numbers is data whatever the sniffer's vote (it needs two lines)
            numeric = pd.to_numeric(pd.Series(fields[:3]), errors="coerce").notna().all()
            try:
                header = not numeric and sniffer.has_header(sample)
            except csv.Error:  # a single column or line: nothing to compare with
                header = not numeric
        if len(fields) < 3 and self.columns is None:
            raise ValueError(
                f"{self.path}: expected at least three columns (row, col, value), found "
                f"{len(fields)} in the first line {first!r} (delimiter {sep!r})."
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
        when ``which="rows"``), restricted to rows ``bounds[0]:bounds[1]`` if given.

        ``which="ids"`` yields the raw ``(rows, cols, first_record)`` instead."""
        if self.is_parquet:
            yield from self._parquet_chunks(which, bounds)
            return
        sep, header = self._csv_layout()
        head = pd.read_csv(self.path, sep=sep, header=header, nrows=1)
        names = self._names(list(head.columns))
        use = {"rows": names[:1], "ids": names[:2]}.get(which, names)
        done = 0
        # every column is read, so that pandas checks that each line has the same number
        # of fields (with usecols, extra fields on a line would be dropped silently)
        as_text = {name: str for name in names[:2]} if self.remap else None
        with pd.read_csv(
            self.path, sep=sep, header=header, chunksize=CHUNK_ROWS, dtype=as_text
        ) as reader:
            while True:
                try:
                    chunk = next(reader)
                except StopIteration:
                    break
                except pd.errors.ParserError as exc:
                    raise ValueError(_ragged_message(self.path, str(exc))) from None
                arrays = [chunk[c].to_numpy() for c in use]
                if which == "ids":
                    yield (*arrays, done)
                    done += len(chunk)
                    continue
                yield self._convert(
                    *arrays, *(None,) * (3 - len(use)), bounds=bounds, first_record=done,
                    header=header is not None,
                )  # fmt: skip
                done += len(chunk)

    def _parquet_chunks(self, which: str, bounds: tuple[int, int] | None):
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"{self.path}: reading Parquet needs pyarrow; install deepmc[parquet]."
            ) from exc
        names = self._names(pq.read_schema(self.path).names)
        use = {"rows": names[:1], "ids": names[:2]}.get(which, names)
        if bounds is None:
            batches = pq.ParquetFile(self.path).iter_batches(columns=use, batch_size=CHUNK_ROWS)
        elif bounds[0] >= bounds[1]:
            batches = []
        else:
            if self.ids is None:
                lo, hi = bounds[0] + self.index_base, bounds[1] + self.index_base - 1
            else:
                lo, hi = self.ids[0][bounds[0]], self.ids[0][bounds[1] - 1]
            table = pq.read_table(
                self.path, columns=use, filters=[(names[0], ">=", lo), (names[0], "<=", hi)]
            )
            batches = table.to_batches(max_chunksize=CHUNK_ROWS)
        done = 0
        for batch in batches:
            arrays = [batch.column(i).to_numpy(zero_copy_only=False) for i in range(len(use))]
            if which == "ids":
                yield (*arrays, done)
            else:
                yield self._convert(*arrays, *(None,) * (3 - len(use)), bounds=bounds)
            done += batch.num_rows

    def _where(self, record: int | None, header: bool) -> str:
        """``" line L:"`` of data record ``record`` of a CSV file (``""`` for Parquet),
        with what is wrong with the line if it has fewer fields than the first."""
        if record is None:
            return ""
        number, text = _line_of(self.path, record, header)
        sep = self._csv_layout()[0]
        fields = text.split() if sep == r"\s+" else next(csv.reader([text], delimiter=sep), [])
        with open(self.path, newline="") as fh:
            first = next(line for line in fh if line.strip()).strip()
        expected = len(first.split() if sep == r"\s+" else next(csv.reader([first], delimiter=sep)))
        if len(fields) < expected:
            return (
                f" line {number} has {len(fields)} fields where the first line has {expected} "
                f"({text!r}):"
            )
        return f" line {number}:"

    def _convert(self, rows, cols, values, *, bounds, first_record=None, header=False):
        def where(i: int) -> str:
            return self._where(None if first_record is None else first_record + i, header)

        if self.ids is not None:
            rows = np.searchsorted(self.ids[0], rows).astype(np.int64)
            cols = None if cols is None else np.searchsorted(self.ids[1], cols).astype(np.int64)
        else:
            rows = _as_index(rows, "row", self.path, where) - self.index_base
            if cols is not None:
                cols = _as_index(cols, "column", self.path, where) - self.index_base
        for label, idx in (("row", rows), ("column", cols)):
            if idx is not None and idx.size and idx.min() < 0:
                raise ValueError(
                    f"{self.path}: {label} index {int(idx.min()) + self.index_base} is below "
                    f"the first index {self.index_base} (index_base)."
                )
        if values is not None:
            values = _as_values(values, self.path, where)
        if bounds is not None:
            keep = (rows >= bounds[0]) & (rows < bounds[1])
            if not keep.all():
                rows = rows[keep]
                cols = cols[keep] if cols is not None else None
                values = values[keep] if values is not None else None
        return rows, cols, values


def _ragged_message(path, text: str) -> str:
    """pandas' tokenizer error, in words that name the line."""
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if not found:
        return f"{path}: cannot be parsed as a triplet file ({text.strip()})."
    expected, line, saw = found.groups()
    return (
        f"{path}: line {line} has {saw} fields where the lines before it have {expected}; "
        "every line must hold the same (row, col, value[, …]) fields."
    )


def _line_of(path, record: int, header: bool) -> tuple[int, str]:
    """The 1-based number and the text of the line of data record ``record`` (blank lines
    are skipped, as :func:`pandas.read_csv` skips them)."""
    seen = -1 if header else 0
    with open(path, newline="") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            if seen == record:
                return number, line.strip()
            seen += 1
    return number, ""  # pragma: no cover - the record exists


def _first_bad(a: np.ndarray) -> tuple[int, object]:
    """Index and value of the first entry of ``a`` that is not a finite real number."""
    numeric = pd.to_numeric(pd.Series(a), errors="coerce").to_numpy(dtype=np.float64)
    i = int(np.flatnonzero(~np.isfinite(numeric))[0])
    return i, a[i]


def _as_index(a: np.ndarray, label: str, path, where) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return a.astype(np.int64, copy=False)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.all(np.isfinite(a)):
        i = int(np.flatnonzero(a != np.round(a))[0])
        got = f"{a[i]!r}"
    else:
        i, value = _first_bad(a) if a.size else (0, None)
        got = "a missing or NaN field" if _missing(value) else f"{value!r}"
    return _raise(
        f"{path}:{where(i)} the {label} column must hold integer indices, got {got}. Map "
        "the ids to 0, 1, … first (deepmc fit --remap), use RatingsCompletion for "
        "arbitrary ids, or pass columns=."
    )


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


def _as_values(a: np.ndarray, path, where) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "c":
        i = int(np.flatnonzero(a.imag != 0)[0]) if np.any(a.imag != 0) else 0
        _raise(f"{path}:{where(i)} complex value {a[i]!r}: the values must be real numbers.")
    if a.dtype.kind in "iuf" and np.all(np.isfinite(a)):
        return a.astype(np.float64, copy=False)
    i, value = _first_bad(a)
    if _missing(value):
        what = "a missing or NaN field"
    else:
        what = f"{value!r}"
        try:
            if complex(str(value).replace(" ", "")).imag != 0:
                what += ", a complex number: the values must be real numbers"
        except ValueError:
            pass
    return _raise(f"{path}:{where(i)} expected a finite number as the value, got {what}.")


def _raise(message: str):
    raise ValueError(message)


def check_dense(path, label: str, largest: int, n_observed: int) -> None:
    """Refuse ids too sparse to be indices (a matrix mostly of empty rows or columns).

    ``largest + 1`` rows (columns) each hold a row of ``U`` (of ``V``): ids such as
    ``10**12`` would allocate terabytes for a handful of entries.
    """
    limit = max(SPARSE_LIMIT, SPARSE_RATIO * n_observed)
    if largest + 1 > limit:
        raise ValueError(
            f"{path}: {label} id {largest} would make a matrix with {largest + 1:.3g} "
            f"{label}s for {n_observed} entries: the ids are too sparse to be indices. Map "
            "the distinct ids to 0, 1, … (deepmc fit --remap, remap=True, or "
            "pandas.factorize)."
        )


def count_rows(source: TripletFile) -> np.ndarray:
    """Observed entries per row (0-based), from the row column alone.

    Returns
    -------
    ndarray of int64 of shape (max_row + 1,)

    Raises
    ------
    ValueError
        If the row ids are too sparse to be indices (see :func:`check_dense`).
    """
    uniques, counts, largest, total = [], [], -1, 0
    for rows, _, _ in source.chunks(which="rows"):
        if rows.size:
            u, c = np.unique(rows, return_counts=True)
            uniques.append(u)
            counts.append(c)
            largest, total = max(largest, int(u[-1])), total + rows.size
    check_dense(source.path, "row", largest + source.index_base, total)
    out = np.zeros(largest + 1, dtype=np.int64)
    for u, c in zip(uniques, counts, strict=True):
        np.add.at(out, u, c)
    return out


def collect_ids(source: TripletFile) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted distinct row and column ids of the file, and the entries per row id.

    Returns
    -------
    row_ids : ndarray
    counts : ndarray of int64
        Entries of each row id.
    col_ids : ndarray
    """
    rows_u, counts, cols_u = [], [], []
    header = not source.is_parquet and source._csv_layout()[1] is not None
    for rows, cols, first in source.chunks(which="ids"):
        for label, ids in (("row", rows), ("column", cols)):
            missing = pd.isna(ids)
            if missing.any():
                i = int(np.flatnonzero(missing)[0])
                line = (
                    ""
                    if source.is_parquet
                    else f" line {_line_of(source.path, first + i, header)}:"
                )
                raise ValueError(f"{source.path}:{line} the {label} id is missing.")
        u, c = np.unique(rows, return_counts=True)
        rows_u.append(u)
        counts.append(c)
        cols_u.append(np.unique(cols))
    if not rows_u:
        raise ValueError(f"{source.path}: no (row, col, value) entries found.")
    row_ids, inverse = np.unique(np.concatenate(rows_u), return_inverse=True)
    per_row = np.bincount(inverse, weights=np.concatenate(counts), minlength=row_ids.size)
    return row_ids, per_row.astype(np.int64), np.unique(np.concatenate(cols_u))


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

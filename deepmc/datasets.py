"""Synthetic low-rank problems, the reference problems of DESIGN.md §5, and ratings data.

Targets follow the papers: the ``r`` singular values of a Gaussian matrix at spread-out
indices ``0, d/(2r), 2d/(2r), …`` together with its singular vectors. Observed sets are
sampled as flat indices, so even a 138,493 × 26,744 problem never builds an ``m × n``
array.

Real ratings come from the GroupLens MovieLens files, read from local disk only
(:func:`load_movielens`; nothing is downloaded at run time). The top-level ``datasets/``
folder of the repository lists their sources, checksums and licences.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from ._validation import Observations

__all__ = [
    "MOVIELENS",
    "PROBLEMS",
    "CompletionProblem",
    "LowRankMatrix",
    "Ratings",
    "load_movielens",
    "low_rank_matrix",
    "make_problem",
    "sample_entries",
]

#: Dense SVD of the Gaussian generator is used up to this many entries.
_DENSE_LIMIT = 4_000_000
#: Entries of the smaller Gaussian matrix whose spectrum stands in above ``_DENSE_LIMIT``.
_SURROGATE_SIZE = 250_000
#: Held-out entries sampled from Ωᶜ when it is too large to use whole.
_TEST_SAMPLE = 100_000


@dataclass(frozen=True)
class LowRankMatrix:
    """A matrix ``Φ = left @ right.T`` kept in factored form.

    Attributes
    ----------
    left : ndarray of shape (m, r)
    right : ndarray of shape (n, r)
    """

    left: np.ndarray
    right: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[0])

    @property
    def rank(self) -> int:
        return self.left.shape[1]

    def entries(self, rows: Any, cols: Any) -> np.ndarray:
        """``Φ[rows, cols]`` without forming ``Φ``."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        return np.einsum("ij,ij->i", self.left[rows], self.right[cols])

    def toarray(self) -> np.ndarray:
        """The dense ``m × n`` matrix."""
        return self.left @ self.right.T

    def singular_values(self) -> np.ndarray:
        """The ``r`` non-zero singular values, largest first."""
        _ql, rl = np.linalg.qr(self.left)
        _qr, rr = np.linalg.qr(self.right)
        return np.linalg.svd(rl @ rr.T, compute_uv=False)

    def scaled(self, factor: float) -> LowRankMatrix:
        """``factor · Φ``."""
        return LowRankMatrix(self.left * factor, self.right)


def low_rank_matrix(
    shape: tuple[int, int],
    rank: int,
    *,
    spectrum: str | Any = "spread",
    random_state: Any = None,
) -> LowRankMatrix:
    """A random rank-``rank`` matrix.

    Parameters
    ----------
    shape : tuple of (int, int)
    rank : int
    spectrum : "spread", "flat" or array-like of shape (rank,), default="spread"
        ``"spread"``: the singular values and vectors of a Gaussian ``m × n`` matrix at
        indices ``k·min(m, n)/(2·rank)`` (the papers' targets); for shapes above 4·10⁶
        entries the values come from a proportionally smaller Gaussian matrix of about
        2.5·10⁵ entries (rescaled; the same aspect ratio, so the same Marchenko–Pastur
        profile) and the vectors are random orthonormal frames. ``"flat"``: all ones. An array:
        those singular values with random orthonormal singular vectors.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    LowRankMatrix

    Examples
    --------
    >>> Phi = low_rank_matrix((100, 100), 5, random_state=0)
    >>> Phi.shape, Phi.rank
    ((100, 100), 5)
    """
    m, n = (int(shape[0]), int(shape[1]))
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"rank: expected 1 <= rank <= min(m, n) = {min(m, n)}, got {rank}.")
    rng = check_random_state(random_state)
    if isinstance(spectrum, str) and spectrum == "spread" and m * n <= _DENSE_LIMIT:
        G = rng.standard_normal((m, n))
        u, s, vt = np.linalg.svd(G, full_matrices=False)
        idx = [k * min(m, n) // (2 * rank) for k in range(rank)]
        return LowRankMatrix(u[:, idx] * s[idx], vt[idx].T.copy())
    if isinstance(spectrum, str) and spectrum == "spread":
        f = np.sqrt(_SURROGATE_SIZE / (m * n))
        ms, ns = max(2 * rank, round(m * f)), max(2 * rank, round(n * f))
        s_small = np.linalg.svd(rng.standard_normal((ms, ns)), compute_uv=False)
        idx = [k * min(ms, ns) // (2 * rank) for k in range(rank)]
        values = s_small[idx] * np.sqrt(m / ms)
    elif isinstance(spectrum, str) and spectrum == "flat":
        values = np.ones(rank)
    elif isinstance(spectrum, str):
        raise ValueError(f"spectrum: expected 'spread', 'flat' or an array, got {spectrum!r}.")
    else:
        values = np.asarray(spectrum, dtype=np.float64)
        if values.shape != (rank,):
            raise ValueError(f"spectrum: expected {rank} singular values, got {values.shape}.")
    u, _ = np.linalg.qr(rng.standard_normal((m, rank)))
    v, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    return LowRankMatrix(u * values, v)


def sample_entries(
    shape: tuple[int, int],
    *,
    fraction: float | None = None,
    count: int | None = None,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct entries drawn uniformly, sorted by row then column.

    Flat indices are drawn with replacement, de-duplicated and topped up, so memory is
    O(count) whatever ``m·n``.

    Parameters
    ----------
    shape : tuple of (int, int)
    fraction : float, default=None
        Fraction of the ``m·n`` entries (rounded); give this or ``count``.
    count : int, default=None
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    rows, cols : ndarray of int64
    """
    m, n = (int(shape[0]), int(shape[1]))
    total = m * n
    if (fraction is None) == (count is None):
        raise ValueError("sample_entries: give exactly one of fraction and count.")
    if count is None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}.")
        count = round(fraction * total)
    if not 0 < count <= total:
        raise ValueError(f"count: expected 1 <= count <= m·n = {total}, got {count}.")
    rng = check_random_state(random_state)
    if count > total // 4:  # dense regime: a permutation of all entries is cheap enough
        keys = np.sort(rng.permutation(total)[:count])
    else:
        keys = np.unique(rng.randint(0, total, size=int(count * 1.05) + 16, dtype=np.int64))
        while keys.size < count:
            more = rng.randint(0, total, size=count - keys.size + 16, dtype=np.int64)
            keys = np.union1d(keys, more)
        keys = np.sort(rng.choice(keys, size=count, replace=False))
    return (keys // n).astype(np.int64), (keys % n).astype(np.int64)


@dataclass(frozen=True)
class CompletionProblem:
    """A completion problem with ground truth.

    Attributes
    ----------
    name : str
    target : LowRankMatrix
        Φ.
    train : Observations
        The observed entries (values of Φ, plus noise if any).
    test_rows, test_cols : ndarray of int64
        Unobserved entries Ωᶜ, or a uniform sample of them for large ``m·n``.
    rank : int
        True rank r.
    depth : int
        Reference depth L.
    init_scale : float or None
        Reference ε (``None``: the estimator's default).
    """

    name: str
    target: LowRankMatrix
    train: Observations
    test_rows: np.ndarray
    test_cols: np.ndarray
    rank: int
    depth: int = 3
    init_scale: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.target.shape

    @property
    def test_values(self) -> np.ndarray:
        """Φ on the held-out entries."""
        return self.target.entries(self.test_rows, self.test_cols)

    def observed_dense(self) -> np.ndarray:
        """The ``m × n`` input with ``np.nan`` at unobserved entries (small problems)."""
        return self.train.to_dense()

    def eval_set(self) -> tuple:
        """Held-out entries as triplets ``(rows, cols, values, shape)`` for ``eval_set``."""
        return (self.test_rows, self.test_cols, self.test_values, self.shape)

    def recovery_error(self, estimator: Any) -> float:
        """‖P_{Ωᶜ}(X̂ − Φ)‖_F / ‖P_{Ωᶜ}(Φ)‖_F on the held-out entries."""
        from .metrics import recovery_error

        return recovery_error(estimator, self.test_rows, self.test_cols, self.test_values)

    def scaled(self, factor: float) -> CompletionProblem:
        """The same problem with Φ and the observations multiplied by ``factor``."""
        train = self.train._replace(values=self.train.values * factor)
        return replace(
            self, target=self.target.scaled(factor), train=train, name=f"{self.name}×{factor:g}"
        )


#: The reference problems of DESIGN.md §5: shape, rank, observed (fraction or count),
#: depth, ε.
PROBLEMS: dict[str, dict[str, Any]] = {
    "A": {"shape": (100, 100), "rank": 5, "fraction": 0.3, "depth": 3, "init_scale": 1e-2},
    "B": {"shape": (1000, 1000), "rank": 5, "fraction": 0.2, "depth": 3, "init_scale": 1e-3},
    "C": {
        "shape": (138_493, 26_744),
        "rank": 10,
        "count": 20_000_263,
        "depth": 3,
        "init_scale": None,
    },
}


def make_problem(
    name: str | None = None,
    *,
    shape: tuple[int, int] | None = None,
    rank: int | None = None,
    fraction: float | None = None,
    count: int | None = None,
    noise: float = 0.0,
    spectrum: str | Any = "spread",
    random_state: Any = 0,
) -> CompletionProblem:
    """A seeded completion problem: a reference problem by name, or a custom one.

    Parameters
    ----------
    name : {"A", "B", "C"}, default=None
        A reference problem of DESIGN.md §5; other arguments given override it.
    shape, rank, fraction, count
        The custom problem (``fraction`` or ``count`` of observed entries).
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to the observations, relative to the
        RMS of Φ.
    spectrum : "spread", "flat" or array-like, default="spread"
    random_state : int, RandomState instance or None, default=0

    Returns
    -------
    CompletionProblem

    Examples
    --------
    >>> p = make_problem("A")
    >>> p.shape, p.train.n_observed, p.test_rows.shape[0]
    ((100, 100), 3000, 7000)
    """
    spec: dict[str, Any] = {"depth": 3, "init_scale": None}
    if name is not None:
        if name not in PROBLEMS:
            raise ValueError(f"name: expected one of {sorted(PROBLEMS)}, got {name!r}.")
        spec.update(PROBLEMS[name])
    for key, val in (("shape", shape), ("rank", rank)):
        if val is not None:
            spec[key] = val
    if fraction is not None or count is not None:
        spec.pop("fraction", None)
        spec.pop("count", None)
        spec["fraction" if fraction is not None else "count"] = (
            fraction if fraction is not None else count
        )
    if "shape" not in spec or "rank" not in spec:
        raise ValueError("make_problem: give a reference name or both shape and rank.")
    if "fraction" not in spec and "count" not in spec:
        raise ValueError("make_problem: give fraction or count of observed entries.")
    rng = check_random_state(random_state)
    m, n = spec["shape"]
    target = low_rank_matrix((m, n), spec["rank"], spectrum=spectrum, random_state=rng)
    rows, cols = sample_entries(
        (m, n), fraction=spec.get("fraction"), count=spec.get("count"), random_state=rng
    )
    values = target.entries(rows, cols)
    if noise:
        rms = np.linalg.norm(target.singular_values()) / np.sqrt(m * n)
        values = values + noise * rms * rng.standard_normal(values.shape)
    train = Observations(rows, cols, values, (m, n))
    if m * n <= _DENSE_LIMIT:
        observed = np.zeros(m * n, dtype=bool)
        observed[rows * n + cols] = True
        test = np.flatnonzero(~observed)
    else:
        test = np.unique(rng.randint(0, m * n, size=_TEST_SAMPLE, dtype=np.int64))
        test = test[~np.isin(test, rows * n + cols)]
    return CompletionProblem(
        name=name or f"{m}x{n}-r{spec['rank']}",
        target=target,
        train=train,
        test_rows=(test // n).astype(np.int64),
        test_cols=(test % n).astype(np.int64),
        rank=spec["rank"],
        depth=spec["depth"],
        init_scale=spec["init_scale"],
    )


# ---------------------------------------------------------------------------- MovieLens

_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"

#: The GroupLens MovieLens releases: the folder their zip unpacks to, the ratings file in
#: it, its format, the download address, the sha256 of the ratings file when known, and
#: the published counts (``None`` where the release changes over time).
MOVIELENS: dict[str, dict[str, Any]] = {
    "ml-100k": {
        "folder": "ml-100k",
        "file": "u.data",
        "format": "udata",
        "url": _GROUPLENS + "ml-100k.zip",
        "sha256": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
        "counts": (943, 1682, 100_000),
    },
    "ml-1m": {
        "folder": "ml-1m",
        "file": "ratings.dat",
        "format": "dat",
        "url": _GROUPLENS + "ml-1m.zip",
        "sha256": None,
        "counts": (6040, 3706, 1_000_209),
    },
    "ml-10m": {
        "folder": "ml-10M100K",
        "file": "ratings.dat",
        "format": "dat",
        "url": _GROUPLENS + "ml-10m.zip",
        "sha256": None,
        "counts": (69_878, 10_677, 10_000_054),
    },
    "ml-20m": {
        "folder": "ml-20m",
        "file": "ratings.csv",
        "format": "csv",
        "url": _GROUPLENS + "ml-20m.zip",
        "sha256": None,
        "counts": (138_493, 26_744, 20_000_263),
    },
    "ml-25m": {
        "folder": "ml-25m",
        "file": "ratings.csv",
        "format": "csv",
        "url": _GROUPLENS + "ml-25m.zip",
        "sha256": None,
        "counts": (162_541, 59_047, 25_000_095),
    },
    "ml-latest-small": {
        "folder": "ml-latest-small",
        "file": "ratings.csv",
        "format": "csv",
        "url": _GROUPLENS + "ml-latest-small.zip",
        "sha256": None,
        "counts": None,
    },
    "ml-latest": {
        "folder": "ml-latest",
        "file": "ratings.csv",
        "format": "csv",
        "url": _GROUPLENS + "ml-latest.zip",
        "sha256": None,
        "counts": None,
    },
}

_COLUMNS = ["user", "item", "rating", "timestamp"]


@dataclass(frozen=True)
class Ratings:
    """Ratings with the remapping of user and item ids to contiguous rows and columns.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per rating with columns ``user``, ``item`` (the original ids),
        ``rating``, ``timestamp``, and ``row``, ``col`` (their positions in the
        ``n_users × n_items`` matrix).
    user_ids : ndarray of shape (n_users,)
        ``user_ids[row]`` is the original id of matrix row ``row`` (sorted ascending).
    item_ids : ndarray of shape (n_items,)
        ``item_ids[col]`` is the original id of matrix column ``col``.
    name : str
        Where the ratings came from.

    Examples
    --------
    >>> import pandas as pd
    >>> r = Ratings.from_frame(pd.DataFrame({"user": [7, 3, 7], "item": [10, 10, 20],
    ...                                      "rating": [4.0, 3.0, 5.0]}))
    >>> r.shape, r.user_ids.tolist(), r.item_ids.tolist()
    ((2, 2), [3, 7], [10, 20])
    >>> obs = r.to_observations()
    >>> obs.rows.tolist(), obs.cols.tolist(), obs.values.tolist()
    ([1, 0, 1], [0, 0, 1], [4.0, 3.0, 5.0])
    >>> [int(i) for i in r.to_ids([1], [1])[0]], [int(i) for i in r.to_ids([1], [1])[1]]
    ([7], [20])
    """

    frame: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    name: str = "ratings"

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, *, name: str = "ratings") -> Ratings:
        """Remap the ``user`` and ``item`` columns of ``frame`` to contiguous indices.

        Parameters
        ----------
        frame : pandas.DataFrame
            Columns ``user``, ``item``, ``rating`` and optionally ``timestamp``.
        name : str, default="ratings"

        Returns
        -------
        Ratings
        """
        missing = {"user", "item", "rating"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"frame: expected columns user, item, rating (and timestamp), missing "
                f"{sorted(missing)}."
            )
        if len(frame) == 0:
            raise ValueError("frame: no ratings.")
        frame = frame.reset_index(drop=True)
        if "timestamp" not in frame.columns:
            frame = frame.assign(timestamp=np.zeros(len(frame), dtype=np.int64))
        rows, user_ids = pd.factorize(frame["user"], sort=True)
        cols, item_ids = pd.factorize(frame["item"], sort=True)
        out = frame[_COLUMNS].assign(row=rows.astype(np.int64), col=cols.astype(np.int64))
        return cls(out, np.asarray(user_ids), np.asarray(item_ids), name)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        return (len(self.user_ids), len(self.item_ids))

    @property
    def n_ratings(self) -> int:
        """Number of ratings."""
        return len(self.frame)

    def to_observations(self, dtype: Any = np.float64) -> Observations:
        """The ratings as :class:`~deepmc.Observations` of the ``n_users × n_items`` matrix.

        Parameters
        ----------
        dtype : dtype, default=np.float64

        Returns
        -------
        Observations
        """
        return Observations(
            self.frame["row"].to_numpy(np.int64),
            self.frame["col"].to_numpy(np.int64),
            self.frame["rating"].to_numpy(dtype),
            self.shape,
        )

    def to_ids(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """Original ``(user ids, item ids)`` of matrix positions ``(rows, cols)``."""
        return self.user_ids[np.asarray(rows)], self.item_ids[np.asarray(cols)]

    def to_index(self, users: Any, items: Any) -> tuple[np.ndarray, np.ndarray]:
        """Matrix ``(rows, cols)`` of original user and item ids.

        Raises
        ------
        KeyError
            If an id did not occur in the loaded ratings.
        """

        def lookup(ids: np.ndarray, query: Any, what: str) -> np.ndarray:
            query = np.asarray(query)
            pos = np.searchsorted(ids, query).clip(0, len(ids) - 1)
            bad = ids[pos] != query
            if np.any(bad):
                raise KeyError(f"unknown {what} id(s): {query[bad][:5].tolist()}")
            return pos.astype(np.int64)

        return lookup(self.user_ids, users, "user"), lookup(self.item_ids, items, "item")

    def train_test_split(
        self, test_fraction: float = 0.2, *, random_state: Any = 0
    ) -> tuple[Ratings, Ratings]:
        """A seeded uniform split of the ratings; both parts keep this id remapping.

        Parameters
        ----------
        test_fraction : float, default=0.2
            Fraction of the ratings held out (rounded, at least one each side).
        random_state : int, RandomState instance or None, default=0

        Returns
        -------
        train, test : Ratings
            Same ``user_ids``, ``item_ids`` and ``shape`` as ``self``, so predictions on
            ``test.to_observations()`` map back with :meth:`to_ids`.
        """
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}.")
        n_test = round(test_fraction * self.n_ratings)
        if not 1 <= n_test < self.n_ratings:
            raise ValueError(
                f"test_fraction={test_fraction} of {self.n_ratings} ratings leaves an empty side."
            )
        perm = check_random_state(random_state).permutation(self.n_ratings)
        test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])

        def part(idx: np.ndarray, suffix: str) -> Ratings:
            frame = self.frame.iloc[idx].reset_index(drop=True)
            return Ratings(frame, self.user_ids, self.item_ids, f"{self.name}[{suffix}]")

        return part(train_idx, "train"), part(test_idx, "test")


def data_home(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where named datasets are looked for.

    ``cache_dir`` if given, else the ``DEEPMC_DATA`` environment variable, else
    ``~/.cache/deepmc``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEEPMC_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepmc"


def _release_key(name: str) -> str | None:
    key = name.lower().strip()
    for prefix in ("movielens-", "movielens", "ml-", "ml"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    key = "ml-" + key
    return key if key in MOVIELENS else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _format_of(path: Path) -> str:
    if path.name == "u.data":
        return "udata"
    if path.suffix == ".dat":
        return "dat"
    if path.suffix == ".csv":
        return "csv"
    raise ValueError(
        f"{path}: unknown ratings format; expected u.data (tab-separated), ratings.dat "
        "('::'-separated) or ratings.csv (with a header)."
    )


def _read_ratings(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "udata":
        frame = pd.read_csv(path, sep="\t", header=None, names=_COLUMNS)
    elif fmt == "dat":
        # "u::i::r::t" split on ":" gives empty fields in between; the C parser is fast.
        frame = pd.read_csv(path, sep=":", header=None, usecols=[0, 2, 4, 6], names=None)
        frame.columns = _COLUMNS
    else:
        frame = pd.read_csv(path).rename(
            columns={"userId": "user", "movieId": "item", "userid": "user", "movieid": "item"}
        )
    missing = set(_COLUMNS) - set(frame.columns)
    if missing or frame.shape[1] != 4:
        raise ValueError(
            f"{path}: expected 4 columns (user, item, rating, timestamp), got "
            f"{list(frame.columns)}."
        )
    return frame


def _missing_message(path: Path, release: str | None) -> str:
    if release is None:
        return f"{path}: no such ratings file (this loader never downloads)."
    info = MOVIELENS[release]
    return (
        f"MovieLens {release} ratings not found at {path}. deepmc does not download at run "
        f"time: download {info['url']} (GroupLens, research use only — see "
        f"https://grouplens.org/datasets/movielens/), unzip it so that the file lies at "
        f"{path}, or pass its path to load_movielens(). The search folder is cache_dir, "
        "else $DEEPMC_DATA, else ~/.cache/deepmc."
    )


def load_movielens(
    path_or_name: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
) -> Ratings:
    """Load GroupLens MovieLens ratings from local disk, with ids remapped.

    Parameters
    ----------
    path_or_name : str or path-like
        A release name of :data:`MOVIELENS` (``"ml-100k"``, ``"100k"``, ``"ml-1m"``,
        ``"ml-10m"``, ``"ml-20m"``, ``"ml-25m"``, ``"ml-latest-small"``, ``"ml-latest"``),
        looked for as ``<cache_dir>/<folder>/<file>`` (the layout of the unzipped
        GroupLens archive, e.g. ``ml-100k/u.data``); or the path of a ratings file
        (``u.data``: tab-separated; ``ratings.dat``: ``::``-separated; ``*.csv``: with a
        ``userId,movieId,rating,timestamp`` header) or of a folder holding one.
    cache_dir : str or path-like, default=None
        The search folder for release names; default ``$DEEPMC_DATA`` or
        ``~/.cache/deepmc``.
    verify : bool, default=True
        Check the file's sha256 when it is a known release whose checksum is recorded.

    Returns
    -------
    Ratings

    Raises
    ------
    FileNotFoundError
        If the file is absent; the message says what to download and where to put it.
    ValueError
        On a checksum mismatch or an unreadable format.

    Examples
    --------
    >>> load_movielens("ml-1m", cache_dir="/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: MovieLens ml-1m ratings not found at ... download https://files...
    """
    text = os.fspath(path_or_name)
    release = _release_key(text) if not os.path.exists(text) else None
    if release is not None:
        info = MOVIELENS[release]
        path = data_home(cache_dir) / info["folder"] / info["file"]
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            found = [
                path / f for f in ("u.data", "ratings.dat", "ratings.csv") if (path / f).exists()
            ]
            if not found:
                raise FileNotFoundError(
                    f"{path}: no u.data, ratings.dat or ratings.csv in this folder."
                )
            path = found[0]
        release = next(
            (
                key
                for key, info in MOVIELENS.items()
                if path.name == info["file"] and path.parent.name == info["folder"]
            ),
            None,
        )
    if not path.is_file():
        raise FileNotFoundError(_missing_message(path, release))
    expected = MOVIELENS[release]["sha256"] if release is not None else None
    if verify and expected is not None:
        actual = _sha256(path)
        if actual != expected:
            raise ValueError(
                f"{path}: sha256 {actual} does not match the recorded {expected} for "
                f"MovieLens {release}. Download {MOVIELENS[release]['url']} again, or pass "
                "verify=False to load a modified copy."
            )
    frame = _read_ratings(path, _format_of(path))
    return Ratings.from_frame(frame, name=release or path.name)

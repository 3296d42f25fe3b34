"""GroupLens MovieLens ratings: the release registry, local files, checksums, id remapping.

Ratings are read from local disk (:func:`load_movielens`); with ``download=True`` a release
absent from the cache folder is fetched from GroupLens once with pooch, its ratings file
checked against the recorded sha256 and moved into place atomically. The releases, their
addresses and checksums live in one place, the ``manifest.json`` shipped in this package;
:data:`MOVIELENS` and the download registry are generated from it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import platformdirs
from sklearn.utils import check_random_state

from .._validation import Observations

__all__ = [
    "MOVIELENS",
    "Ratings",
    "data_home",
    "download_movielens",
    "load_movielens",
    "movielens_registry",
]


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


def _read_manifest() -> dict[str, Any]:
    """The dataset manifest shipped with the package (sources, checksums, licences)."""
    return json.loads(files(__package__).joinpath("manifest.json").read_text("utf-8"))


#: The GroupLens MovieLens releases, from the package's ``manifest.json``: the folder
#: their zip unpacks to, the ratings file in it, its format, the download address, the
#: sha256 of the ratings file when known, and the published counts (``None`` where the
#: release changes over time).
MOVIELENS: dict[str, dict[str, Any]] = {
    entry["name"]: {
        "folder": entry["folder"],
        "file": entry["file"],
        "format": _format_of(Path(entry["file"])),
        "url": entry["url"],
        "sha256": entry["sha256"],
        "counts": tuple(entry["counts"]) if entry["counts"] else None,
    }
    for entry in _read_manifest()["datasets"]
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

    ``cache_dir`` if given, else the ``DEEPMC_DATA`` environment variable, else the
    user's cache folder for deepmc (:func:`platformdirs.user_cache_dir`: e.g.
    ``~/.cache/deepmc`` on Linux, ``~/Library/Caches/deepmc`` on macOS).
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEEPMC_DATA")
    return Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("deepmc"))


def _release_key(name: str) -> str | None:
    key = name.lower().strip()
    for prefix in ("movielens-", "movielens", "ml-", "ml"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    key = "ml-" + key
    return key if key in MOVIELENS else None


def _sha256(path: Path) -> str:
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


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
        return f"{path}: no such ratings file (only release names can be downloaded)."
    info = MOVIELENS[release]
    return (
        f"MovieLens {release} ratings not found at {path}. Pass download=True to fetch "
        f"{info['url']} (GroupLens, research use only — see "
        f"https://grouplens.org/datasets/movielens/), or download and unzip it so that the "
        f"file lies at {path}, or pass its path to load_movielens(). The search folder is "
        "cache_dir, else $DEEPMC_DATA, else the user cache folder (~/.cache/deepmc on Linux)."
    )


#: Fetches a URL into a file for :func:`download_movielens`, as a pooch downloader
#: ``(url, output_file, pooch)``; ``None``: pooch's HTTP downloader with a progress bar.
#: A module attribute so tests can serve a local archive.
_downloader: Callable[..., Any] | None = None


def _archive_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def movielens_registry(path: str | os.PathLike) -> Any:
    """A :class:`pooch.Pooch` of the MovieLens archives, generated from the manifest.

    The manifest records the sha256 of each release's *ratings file*, not of its zip, so
    the registry leaves the archives' hashes open (``None``) and
    :func:`download_movielens` checks the ratings file once it is unpacked.

    Parameters
    ----------
    path : path-like
        Where pooch stores the archives.

    Returns
    -------
    pooch.Pooch
        Archive names (``ml-100k.zip``, ...) with their GroupLens addresses.
    """
    import pooch

    names = {_archive_name(info["url"]): info["url"] for info in MOVIELENS.values()}
    return pooch.create(
        path=path, base_url="", registry=dict.fromkeys(names), urls=names, retry_if_failed=2
    )


def download_movielens(release: str, path: Path) -> Path:
    """Fetch a GroupLens archive and put its verified ratings file at ``path``.

    pooch downloads the zip into a temporary folder next to ``path`` and unpacks the
    ratings file ``<folder>/<file>``; its sha256 is compared with the manifest's, and
    only then is it moved to ``path`` with :func:`os.replace` (atomic on one file
    system). The temporary folder, archive included, is removed either way: an
    interrupted or corrupted download never leaves a file that :func:`load_movielens`
    would read.

    Parameters
    ----------
    release : str
        A key of :data:`MOVIELENS` with a recorded sha256.
    path : Path
        Where the ratings file goes.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If no checksum is recorded for the release, the archive lacks the ratings file,
        or the checksum does not match (nothing is written then).
    """
    import pooch

    info = MOVIELENS[release]
    if info["sha256"] is None:
        raise ValueError(
            f"MovieLens {release}: no sha256 is recorded for its ratings file, so it is not "
            f"downloaded automatically; download {info['url']} by hand and unzip it so that "
            f"the file lies at {path}."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    member = f"{info['folder']}/{info['file']}"
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".download-") as tmp:
        unpacked = Path(tmp) / "unpacked"
        movielens_registry(tmp).fetch(
            _archive_name(info["url"]),
            processor=pooch.Unzip(members=[member], extract_dir=str(unpacked)),
            downloader=_downloader or pooch.HTTPDownloader(progressbar=True),
        )
        extracted = unpacked / member
        if not extracted.is_file():
            raise ValueError(f"{info['url']}: the archive has no {member}.")
        actual = _sha256(extracted)
        if actual != info["sha256"]:
            raise ValueError(
                f"{info['url']}: {member} has sha256 {actual}, not the recorded "
                f"{info['sha256']}; nothing was written to {path}."
            )
        os.replace(extracted, path)
    return path


def _locate(path_or_name: str | os.PathLike, cache_dir: Any) -> tuple[Path, str | None]:
    """The ratings file a release name, file or folder points to, and its release key."""
    text = os.fspath(path_or_name)
    release = _release_key(text) if not os.path.exists(text) else None
    if release is not None:
        info = MOVIELENS[release]
        return data_home(cache_dir) / info["folder"] / info["file"], release
    path = Path(text).expanduser()
    if path.is_dir():
        found = [path / f for f in ("u.data", "ratings.dat", "ratings.csv") if (path / f).exists()]
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
    return path, release


def load_movielens(
    path_or_name: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    verify: bool = True,
    download: bool = False,
) -> Ratings:
    """Load GroupLens MovieLens ratings, with ids remapped.

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
    download : bool, default=False
        If a release name is given and its file is not in the search folder, fetch the
        GroupLens archive into it (:func:`download_movielens`: sha256-checked, written
        atomically; only releases with a recorded checksum). Off by default: nothing
        touches the network unless asked.

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
    FileNotFoundError: MovieLens ml-1m ratings not found at ... Pass download=True to fetch https://files...
    """
    path, release = _locate(path_or_name, cache_dir)
    if not path.is_file() and download and release is not None:
        download_movielens(release, path)
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

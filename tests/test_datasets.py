"""Synthetic problems, the reference problems, and the MovieLens loader."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmc.datasets import (
    MOVIELENS,
    PROBLEMS,
    Ratings,
    load_movielens,
    low_rank_matrix,
    make_problem,
    sample_entries,
)

#: The real MovieLens-100K file lives beside the repository, never inside it.
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data"
needs_ml100k = pytest.mark.skipif(not ML100K.is_file(), reason=f"{ML100K} is absent")


# ---------------------------------------------------------------- synthetic targets
def test_spread_spectrum_matches_gaussian_singular_values():
    Phi = low_rank_matrix((60, 40), 4, random_state=3)
    G = np.random.RandomState(3).standard_normal((60, 40))
    s = np.linalg.svd(G, compute_uv=False)
    expected = s[[k * 40 // 8 for k in range(4)]]  # indices 0, d/(2r), 2d/(2r), ...
    np.testing.assert_allclose(Phi.singular_values(), expected, rtol=1e-10)
    assert np.linalg.matrix_rank(Phi.toarray()) == 4


def test_low_rank_matrix_seeds_and_spectra():
    a = low_rank_matrix((30, 20), 3, random_state=0)
    b = low_rank_matrix((30, 20), 3, random_state=0)
    c = low_rank_matrix((30, 20), 3, random_state=1)
    np.testing.assert_array_equal(a.toarray(), b.toarray())
    assert not np.allclose(a.toarray(), c.toarray())
    np.testing.assert_allclose(
        low_rank_matrix((30, 20), 3, spectrum="flat", random_state=0).singular_values(), 1.0
    )
    np.testing.assert_allclose(
        low_rank_matrix((30, 20), 3, spectrum=[5.0, 2.0, 1.0], random_state=0).singular_values(),
        [5.0, 2.0, 1.0],
    )
    with pytest.raises(ValueError, match="rank"):
        low_rank_matrix((30, 20), 21)
    with pytest.raises(ValueError, match="spectrum"):
        low_rank_matrix((30, 20), 3, spectrum="steep")


def test_huge_shape_is_never_dense():
    shape = PROBLEMS["C"]["shape"]
    tracemalloc.start()
    try:
        Phi = low_rank_matrix(shape, 10, random_state=0)
        rows, cols = sample_entries(shape, count=50_000, random_state=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    m, n = shape
    assert peak < 100 * 2**20  # an m×n float array would be 29 GiB
    assert Phi.shape == shape and Phi.rank == 10
    s = Phi.singular_values()
    assert np.all(np.diff(s) < 0) and s[-1] > 0  # spread, distinct
    assert rows.shape == cols.shape == (50_000,)
    assert rows.max() < m and cols.max() < n
    assert np.unique(rows * n + cols).size == 50_000
    vals = Phi.entries(rows[:5], cols[:5])
    np.testing.assert_allclose(
        vals, [Phi.left[i] @ Phi.right[j] for i, j in zip(rows[:5], cols[:5])]
    )


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(1, 300),
    n=st.integers(1, 300),
    frac=st.floats(0.001, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_entries_distinct_sorted_exact(m, n, frac, seed):
    count = max(1, round(frac * m * n))
    rows, cols = sample_entries((m, n), count=count, random_state=seed)
    keys = rows * n + cols
    assert keys.shape == (count,)
    assert np.all(np.diff(keys) > 0)  # sorted by row then column, distinct
    assert rows.min() >= 0 and rows.max() < m and cols.min() >= 0 and cols.max() < n
    again = sample_entries((m, n), count=count, random_state=seed)
    np.testing.assert_array_equal(rows, again[0])
    np.testing.assert_array_equal(cols, again[1])


def test_sample_entries_fraction_and_errors():
    rows, _ = sample_entries((50, 40), fraction=0.25, random_state=0)
    assert rows.size == 500
    with pytest.raises(ValueError, match="exactly one"):
        sample_entries((5, 5), fraction=0.5, count=3)
    with pytest.raises(ValueError, match="count"):
        sample_entries((5, 5), count=26)


def test_make_problem_reference_a():
    p = make_problem("A", random_state=0)
    m, n = p.shape
    assert (m, n, p.rank, p.depth, p.init_scale) == (100, 100, 5, 3, 1e-2)
    assert p.train.n_observed == 3000
    # the held-out set is exactly the complement of the observed set
    train_keys = p.train.rows * n + p.train.cols
    test_keys = p.test_rows * n + p.test_cols
    assert np.intersect1d(train_keys, test_keys).size == 0
    assert train_keys.size + test_keys.size == m * n
    Phi = p.target.toarray()
    np.testing.assert_allclose(p.train.values, Phi[p.train.rows, p.train.cols])
    np.testing.assert_allclose(p.test_values, Phi[p.test_rows, p.test_cols])
    dense = p.observed_dense()
    assert np.isnan(dense).sum() == 7000
    # seeded: the same seed gives the same problem, another seed another one
    q = make_problem("A", random_state=0)
    np.testing.assert_array_equal(q.train.values, p.train.values)
    assert not np.array_equal(make_problem("A", random_state=1).train.rows, p.train.rows)


def test_make_problem_custom_noise_scale_and_large_shape():
    p = make_problem(shape=(40, 30), rank=2, count=300, noise=0.1, random_state=0)
    exact = p.target.entries(p.train.rows, p.train.cols)
    rel = np.linalg.norm(p.train.values - exact) / np.linalg.norm(exact)
    assert 0.03 < rel < 0.3  # noise of 10 % of the RMS entry
    s = p.scaled(1e3)
    np.testing.assert_allclose(s.test_values, 1e3 * p.test_values)
    big = make_problem(shape=(4000, 2000), rank=3, count=20_000, random_state=0)
    n = big.shape[1]
    assert big.train.n_observed == 20_000
    assert 90_000 < big.test_rows.size <= 100_000  # a sample of the complement
    assert (
        np.intersect1d(big.train.rows * n + big.train.cols, big.test_rows * n + big.test_cols).size
        == 0
    )
    with pytest.raises(ValueError, match="expected one of"):
        make_problem("Z")


# ---------------------------------------------------------------- MovieLens
@needs_ml100k
def test_movielens_100k_counts_and_remapping():
    r = load_movielens(ML100K)
    assert r.name == "ml-100k"  # recognised from ml-100k/u.data, checksum verified
    assert r.shape == (943, 1682)
    assert r.n_ratings == 100_000
    assert r.frame["user"].nunique() == 943 and r.frame["item"].nunique() == 1682
    assert list(r.frame.columns[:4]) == ["user", "item", "rating", "timestamp"]
    assert set(r.frame["rating"].unique()) == {1, 2, 3, 4, 5}
    assert (r.user_ids == np.arange(1, 944)).all()  # 1-based ids, all present
    obs = r.to_observations()
    assert obs.shape == (943, 1682) and obs.n_observed == 100_000
    first = r.frame.iloc[0]
    assert (first["user"], first["item"], first["rating"]) == (196, 242, 3)
    users, items = r.to_ids(obs.rows[:1], obs.cols[:1])
    assert (users[0], items[0]) == (196, 242)
    rows, cols = r.to_index([196], [242])
    assert (rows[0], cols[0]) == (obs.rows[0], obs.cols[0])
    # the same file found by release name in a cache folder
    assert load_movielens("ml-100k", cache_dir=ML100K.parents[1]).n_ratings == 100_000


@needs_ml100k
def test_movielens_split_is_seeded_disjoint_and_keeps_ids():
    r = load_movielens(ML100K.parent)  # a folder holding u.data
    train, test = r.train_test_split(0.2, random_state=0)
    assert (train.n_ratings, test.n_ratings) == (80_000, 20_000)
    assert train.shape == test.shape == r.shape
    assert train.user_ids is r.user_ids
    key = ["user", "item"]
    merged = pd.concat([train.frame[key], test.frame[key]])
    assert not merged.duplicated().any() and len(merged) == r.n_ratings
    again = r.train_test_split(0.2, random_state=0)[1]
    pd.testing.assert_frame_equal(again.frame, test.frame)
    other = r.train_test_split(0.2, random_state=1)[1]
    assert not other.frame[key].equals(test.frame[key])


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name, text",
    [
        ("ratings.dat", "10::5::4::978300760\n3::5::2.5::978302109\n10::7::1::978301968\n"),
        (
            "ratings.csv",
            "userId,movieId,rating,timestamp\n10,5,4.0,978300760\n3,5,2.5,978302109\n"
            "10,7,1.0,978301968\n",
        ),
        ("u.data", "10\t5\t4\t978300760\n3\t5\t2.5\t978302109\n10\t7\t1\t978301968\n"),
    ],
)
def test_movielens_formats(tmp_path, name, text):
    r = load_movielens(_write(tmp_path / "any" / name, text))
    assert r.shape == (2, 2) and r.n_ratings == 3
    assert r.user_ids.tolist() == [3, 10] and r.item_ids.tolist() == [5, 7]
    assert r.frame["rating"].tolist() == [4.0, 2.5, 1.0]
    assert r.frame["timestamp"].tolist() == [978300760, 978302109, 978301968]
    obs = r.to_observations()
    assert obs.rows.tolist() == [1, 0, 1] and obs.cols.tolist() == [0, 0, 1]


def test_movielens_absent_file_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_movielens("ml-20m", cache_dir=tmp_path)
    message = str(info.value)
    assert MOVIELENS["ml-20m"]["url"] in message
    assert str(tmp_path / "ml-20m" / "ratings.csv") in message
    with pytest.raises(FileNotFoundError, match="no such ratings file"):
        load_movielens(tmp_path / "nothing.csv")


def test_movielens_checksum_mismatch(tmp_path):
    fake = _write(tmp_path / "ml-100k" / "u.data", "1\t1\t5\t0\n2\t2\t4\t0\n")
    with pytest.raises(ValueError, match="sha256"):
        load_movielens("100k", cache_dir=tmp_path)
    assert load_movielens(fake, verify=False).n_ratings == 2


def test_ratings_errors():
    r = Ratings.from_frame(pd.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [3.0, 4.0]}))
    with pytest.raises(KeyError, match="user"):
        r.to_index([5], [1])
    with pytest.raises(ValueError, match="test_fraction"):
        r.train_test_split(1.5)
    with pytest.raises(ValueError, match="columns"):
        Ratings.from_frame(pd.DataFrame({"user": [1]}))


def test_releases_and_registry_come_from_the_shipped_manifest():
    import json
    from importlib.resources import files

    from deepmc.datasets import movielens_registry

    shipped = json.loads(files("deepmc.datasets").joinpath("manifest.json").read_text())
    entries = {d["name"]: d for d in shipped["datasets"]}
    assert set(entries) == set(MOVIELENS)
    for name, info in MOVIELENS.items():
        for key in ("url", "folder", "file", "sha256"):
            assert entries[name][key] == info[key], (name, key)
    registry = movielens_registry("unused")
    assert set(registry.registry) == {d["url"].rsplit("/", 1)[1] for d in entries.values()}
    assert registry.get_url("ml-100k.zip") == entries["ml-100k"]["url"]
    if ML100K.is_file():  # the one recorded checksum is that of the real file
        import pooch

        assert pooch.file_hash(str(ML100K)) == entries["ml-100k"]["sha256"]


def test_cache_folder_is_the_platform_user_cache(tmp_path, monkeypatch):
    import platformdirs

    from deepmc.datasets import data_home

    monkeypatch.delenv("DEEPMC_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # honoured on Linux
    assert data_home() == Path(platformdirs.user_cache_dir("deepmc"))
    monkeypatch.setenv("DEEPMC_DATA", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env"
    assert data_home(tmp_path / "given") == tmp_path / "given"


# ------------------------------------------------------------------ opt-in download
def _fake_release(tmp_path, monkeypatch, content: bytes, *, sha256: str | None = None):
    """ml-100k pointed at a local zip (a file:// URL, served by a copying downloader)."""
    import hashlib
    import shutil
    import zipfile
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    import deepmc.datasets._movielens as movielens

    def serve(url, output_file, pooch):
        shutil.copyfile(url2pathname(urlparse(url).path), output_file)  # a path from pooch

    archive = tmp_path / "served" / "ml-100k.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ml-100k/u.data", content)
        zf.writestr("ml-100k/README", "not the ratings")
    info = {
        **MOVIELENS["ml-100k"],
        "url": archive.as_uri(),
        "sha256": sha256 if sha256 is not None else hashlib.sha256(content).hexdigest(),
    }
    monkeypatch.setitem(MOVIELENS, "ml-100k", info)
    monkeypatch.setattr(movielens, "_downloader", serve)
    return info


def test_download_is_opt_in_verified_and_cached(tmp_path, monkeypatch):
    content = b"1\t10\t5\t0\n2\t10\t3\t0\n2\t20\t4\t0\n"
    _fake_release(tmp_path, monkeypatch, content)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_movielens("ml-100k", cache_dir=cache)  # no download unless asked
    assert not cache.exists()
    ratings = load_movielens("ml-100k", cache_dir=cache, download=True)
    assert ratings.n_ratings == 3 and ratings.shape == (2, 2)
    assert (cache / "ml-100k" / "u.data").read_bytes() == content
    assert sorted(p.name for p in (cache / "ml-100k").iterdir()) == ["u.data"]  # no leftovers
    # Cached: a second call does not fetch again.
    import deepmc.datasets._movielens as movielens

    monkeypatch.setattr(movielens, "_downloader", lambda *a: pytest.fail("fetched twice"))
    assert load_movielens("ml-100k", cache_dir=cache, download=True).n_ratings == 3


def test_download_with_a_wrong_checksum_writes_nothing(tmp_path, monkeypatch):
    _fake_release(tmp_path, monkeypatch, b"1\t10\t5\t0\n", sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="nothing was written"):
        load_movielens("ml-100k", cache_dir=cache, download=True)
    assert list((cache / "ml-100k").iterdir()) == []


def test_download_needs_a_recorded_checksum(tmp_path, monkeypatch):
    import deepmc.datasets._movielens as movielens

    monkeypatch.setattr(movielens, "_downloader", lambda *a: pytest.fail("must not fetch"))
    with pytest.raises(ValueError, match="no sha256 is recorded"):
        load_movielens("ml-1m", cache_dir=tmp_path, download=True)

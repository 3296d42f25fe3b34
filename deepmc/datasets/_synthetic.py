"""Synthetic low-rank completion problems and the reference problems A, B and C.

Targets follow the papers (Yaras et al. 2023; Kwon et al. 2024): the ``r`` singular
values of a Gaussian matrix at spread-out indices ``0, d/(2r), 2d/(2r), …`` together with
its singular vectors. Observed sets are sampled as flat indices, so even a 138,493 × 26,744
problem never builds an ``m × n`` array.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.utils import check_random_state

from .._validation import Observations

__all__ = [
    "PROBLEMS",
    "CompletionProblem",
    "LowRankMatrix",
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
        from ..metrics import recovery_error

        return recovery_error(estimator, self.test_rows, self.test_cols, self.test_values)

    def scaled(self, factor: float) -> CompletionProblem:
        """The same problem with Φ and the observations multiplied by ``factor``."""
        train = self.train._replace(values=self.train.values * factor)
        return replace(
            self, target=self.target.scaled(factor), train=train, name=f"{self.name}×{factor:g}"
        )


#: The reference problems (the user guide, "Comparing networks"): shape, rank, observed
#: (fraction or count), depth, ε.
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


def _problem_spec(name: str | None, **given: Any) -> dict[str, Any]:
    """A reference problem's settings overridden by the ``given`` ones that are not None."""
    spec: dict[str, Any] = {"depth": 3, "init_scale": None}
    if name is not None:
        if name not in PROBLEMS:
            raise ValueError(f"name: expected one of {sorted(PROBLEMS)}, got {name!r}.")
        spec.update(PROBLEMS[name])
    for key in ("shape", "rank"):
        if given[key] is not None:
            spec[key] = given[key]
    fraction, count = given["fraction"], given["count"]
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
    return spec


def _held_out(
    shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray, rng: np.random.RandomState
) -> np.ndarray:
    """Flat indices of Ωᶜ, or of a uniform sample of it when ``m·n`` is large."""
    m, n = shape
    if m * n <= _DENSE_LIMIT:
        observed = np.zeros(m * n, dtype=bool)
        observed[rows * n + cols] = True
        return np.flatnonzero(~observed)
    test = np.unique(rng.randint(0, m * n, size=_TEST_SAMPLE, dtype=np.int64))
    return test[~np.isin(test, rows * n + cols)]


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
        A reference problem (see :data:`PROBLEMS`); other arguments given override it.
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
    spec = _problem_spec(name, shape=shape, rank=rank, fraction=fraction, count=count)
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
    test = _held_out((m, n), rows, cols, rng)
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

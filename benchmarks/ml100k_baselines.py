"""Classical rating predictors for the MovieLens table of ``ml100k_table.py``.

Each baseline takes the training table (``user``, ``item``, ``rating`` columns) and returns
a function that predicts ratings for a test table. Hyper-parameters that the libraries do
not default (λ of ALS, the shrinkage of SoftImpute) are chosen on a seeded validation slice
of the training ratings, then the model is refitted on all of them: the test ratings are
never looked at.

Library rows use the optional packages ``scikit-surprise`` (SVD, SVD++; Hug 2020) and
``fancyimpute`` (SoftImpute; Mazumder, Hastie & Tibshirani 2010). A missing package makes
:func:`available` say so and the row is skipped; the tests never need them. ``implicit``
is not used: its ALS fits confidence-weighted implicit feedback over every (user, item)
cell (Hu, Koren & Volinsky 2008), not explicit ratings.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from deepmc.ratings import fit_biases

__all__ = ["BASELINES", "available", "biased_als"]

Predictor = Callable[[pd.DataFrame], np.ndarray]


def _encode(
    train: pd.DataFrame,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    users, rows = np.unique(train["user"].to_numpy(), return_inverse=True)
    items, cols = np.unique(train["item"].to_numpy(), return_inverse=True)
    return users, items, rows.ravel(), cols.ravel(), train["rating"].to_numpy(np.float64)


def _lookup(users: np.ndarray, items: np.ndarray, test: pd.DataFrame) -> tuple[np.ndarray, ...]:
    tu = pd.Index(users).get_indexer(test["user"].to_numpy())
    ti = pd.Index(items).get_indexer(test["item"].to_numpy())
    return tu, ti


def _validation_split(n: int, fraction: float = 0.1, seed: int = 0) -> np.ndarray:
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.RandomState(seed).permutation(n)[: round(fraction * n)]] = True
    return is_val


# ---------------------------------------------------------------------- global mean, biases
def global_mean(train: pd.DataFrame) -> Predictor:
    """The mean training rating for every pair."""
    mu = float(train["rating"].mean())
    return lambda test: np.full(len(test), mu)


def biases_only(train: pd.DataFrame) -> Predictor:
    """``μ + b_u + b_i`` of :func:`deepmc.ratings.fit_biases` (λ = 5), clipped."""
    users, items, rows, cols, r = _encode(train)
    mu, bu, bi = fit_biases(rows, cols, r, (len(users), len(items)))
    lo, hi = r.min(), r.max()

    def predict(test: pd.DataFrame) -> np.ndarray:
        tu, ti = _lookup(users, items, test)
        pred = np.full(len(test), mu)
        pred[tu >= 0] += bu[tu[tu >= 0]]
        pred[ti >= 0] += bi[ti[ti >= 0]]
        return np.clip(pred, lo, hi)

    return predict


# ---------------------------------------------------------------------- our biased ALS
def _als_half(
    index: np.ndarray, other: np.ndarray, target: np.ndarray, n: int, reg: float
) -> np.ndarray:
    """Ridge solve of every row's ``[p, b]`` against the other side's ``[q, 1]``.

    Row ``u`` minimises ``Σ_i (t_ui − [p_u, b_u]·[q_i, 1])² + reg·n_u·‖[p_u, b_u]‖²``
    (the weighted-λ regularisation of Zhou et al. 2008).
    """
    k = other.shape[1]
    indicator = sp.csr_matrix(
        (np.ones(index.size), (index, np.arange(index.size))), (n, index.size)
    )
    gram = np.zeros((n, k * k))
    for start in range(0, index.size, 8192):
        block = other[start : start + 8192]
        gram += indicator[:, start : start + 8192] @ (
            block[:, :, None] * block[:, None, :]
        ).reshape(block.shape[0], k * k)
    counts = np.asarray(indicator.sum(axis=1)).ravel()
    lhs = gram.reshape(n, k, k) + (reg * np.maximum(counts, 1))[:, None, None] * np.eye(k)
    rhs = indicator @ (other * target[:, None])
    return np.linalg.solve(lhs, rhs[:, :, None])[:, :, 0]


def _fit_als(
    rows: np.ndarray,
    cols: np.ndarray,
    r: np.ndarray,
    shape: tuple[int, int],
    rank: int,
    reg: float,
    n_sweeps: int,
    seed: int,
) -> tuple[float, np.ndarray, np.ndarray]:
    m, n = shape
    mu = float(r.mean())
    rng = np.random.default_rng(seed)
    item_f = np.hstack([0.1 * rng.standard_normal((n, rank)), np.zeros((n, 1))])
    user_f = np.zeros((m, rank + 1))
    for _ in range(n_sweeps):
        # users: [p_u, b_u] against [q_i, 1] with target r − μ − b_i
        q1 = np.hstack([item_f[:, :rank], np.ones((n, 1))])
        user_f = _als_half(rows, q1[cols], r - mu - item_f[cols, rank], m, reg)
        p1 = np.hstack([user_f[:, :rank], np.ones((m, 1))])
        item_f = _als_half(cols, p1[rows], r - mu - user_f[rows, rank], n, reg)
    return mu, user_f, item_f


def _als_predict(mu, user_f, item_f, rows, cols, rank) -> np.ndarray:
    return (
        mu
        + user_f[rows, rank]
        + item_f[cols, rank]
        + np.einsum("ij,ij->i", user_f[rows, :rank], item_f[cols, :rank])
    )


def biased_als(
    train: pd.DataFrame,
    *,
    rank: int = 20,
    regs: tuple[float, ...] = (0.05, 0.08, 0.12, 0.18, 0.25),
    n_sweeps: int = 15,
    seed: int = 0,
) -> Predictor:
    """Biased ALS (``μ + b_u + b_i + p_u·q_i``, weighted-λ), λ chosen on a validation slice.

    Parameters
    ----------
    train : DataFrame
        ``user``, ``item``, ``rating`` columns.
    rank : int, default=20
    regs : tuple of float
        The λ grid; the one with the lowest RMSE on 10 % of the training ratings is refitted
        on all of them.
    n_sweeps : int, default=15
    seed : int, default=0

    Returns
    -------
    callable
        ``predict(test_frame) -> ndarray``, clipped to the training range.
    """
    users, items, rows, cols, r = _encode(train)
    shape = (len(users), len(items))
    is_val = _validation_split(r.size, seed=seed)
    fit_ = ~is_val
    scores = []
    for reg in regs:
        mu, uf, itf = _fit_als(rows[fit_], cols[fit_], r[fit_], shape, rank, reg, n_sweeps, seed)
        pred = np.clip(
            _als_predict(mu, uf, itf, rows[is_val], cols[is_val], rank), r.min(), r.max()
        )
        scores.append(float(np.sqrt(np.mean((pred - r[is_val]) ** 2))))
    best = regs[int(np.argmin(scores))]
    mu, uf, itf = _fit_als(rows, cols, r, shape, rank, best, n_sweeps, seed)
    lo, hi = r.min(), r.max()

    def predict(test: pd.DataFrame) -> np.ndarray:
        tu, ti = _lookup(users, items, test)
        pred = np.full(len(test), mu)
        known_u, known_i = tu >= 0, ti >= 0
        pred[known_u] += uf[tu[known_u], rank]
        pred[known_i] += itf[ti[known_i], rank]
        both = known_u & known_i
        pred[both] += np.einsum("ij,ij->i", uf[tu[both], :rank], itf[ti[both], :rank])
        return np.clip(pred, lo, hi)

    predict.chosen = f"λ={best}"  # type: ignore[attr-defined]
    return predict


# ---------------------------------------------------------------------- library rows
def _surprise(algo_name: str, train: pd.DataFrame, seed: int) -> Predictor:
    import surprise

    reader = surprise.Reader(rating_scale=(train["rating"].min(), train["rating"].max()))
    data = surprise.Dataset.load_from_df(train[["user", "item", "rating"]], reader)
    algo = getattr(surprise, algo_name)(random_state=seed)
    algo.fit(data.build_full_trainset())

    def predict(test: pd.DataFrame) -> np.ndarray:
        return np.array(
            [algo.predict(u, i).est for u, i in zip(test["user"], test["item"], strict=True)]
        )

    return predict


def surprise_svd(train: pd.DataFrame, seed: int = 0) -> Predictor:
    """Surprise ``SVD`` (biased MF by SGD; Funk/Koren), library defaults."""
    return _surprise("SVD", train, seed)


def surprise_svdpp(train: pd.DataFrame, seed: int = 0) -> Predictor:
    """Surprise ``SVDpp`` (Koren 2008), library defaults."""
    return _surprise("SVDpp", train, seed)


def soft_impute(
    train: pd.DataFrame, seed: int = 0, shrinkages: tuple[float, ...] = (5.0, 10.0, 20.0)
) -> Predictor:
    """fancyimpute ``SoftImpute`` on the bias-centred matrix, shrinkage λ from validation."""
    from fancyimpute import SoftImpute

    users, items, rows, cols, r = _encode(train)
    shape = (len(users), len(items))
    is_val = _validation_split(r.size, seed=seed)

    def complete(
        sel: np.ndarray, shrinkage: float
    ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        mu, bu, bi = fit_biases(rows[sel], cols[sel], r[sel], shape)
        dense = np.full(shape, np.nan)
        dense[rows[sel], cols[sel]] = r[sel] - mu - bu[rows[sel]] - bi[cols[sel]]
        filled = SoftImpute(
            shrinkage_value=shrinkage, verbose=False, init_fill_method="zero"
        ).fit_transform(dense)
        return mu, bu, bi, filled

    scores = []
    for lam in shrinkages:
        mu, bu, bi, filled = complete(~is_val, lam)
        pred = mu + bu[rows[is_val]] + bi[cols[is_val]] + filled[rows[is_val], cols[is_val]]
        pred = np.clip(pred, r.min(), r.max())
        scores.append(float(np.sqrt(np.mean((pred - r[is_val]) ** 2))))
    best = shrinkages[int(np.argmin(scores))]
    mu, bu, bi, filled = complete(np.ones(r.size, dtype=bool), best)

    def predict(test: pd.DataFrame) -> np.ndarray:
        tu, ti = _lookup(users, items, test)
        pred = np.full(len(test), mu)
        known_u, known_i = tu >= 0, ti >= 0
        pred[known_u] += bu[tu[known_u]]
        pred[known_i] += bi[ti[known_i]]
        both = known_u & known_i
        pred[both] += filled[tu[both], ti[both]]
        return np.clip(pred, r.min(), r.max())

    predict.chosen = f"λ={best}"  # type: ignore[attr-defined]
    return predict


#: name -> (label, required module or None, factory(train, seed)).
BASELINES: dict[str, tuple[str, str | None, Callable[..., Predictor]]] = {
    "mean": ("global mean", None, lambda train, seed: global_mean(train)),
    "biases": ("μ + b_u + b_i (λ = 5)", None, lambda train, seed: biases_only(train)),
    "als": (
        "biased ALS, rank 20, λ from validation (ours, NumPy)",
        None,
        lambda train, seed: biased_als(train, seed=seed),
    ),
    "svd": ("Surprise SVD (defaults)", "surprise", surprise_svd),
    "svdpp": ("Surprise SVD++ (defaults)", "surprise", surprise_svdpp),
    "softimpute": (
        "fancyimpute SoftImpute, bias-centred, λ from validation",
        "fancyimpute",
        soft_impute,
    ),
}


def available(name: str) -> str | None:
    """``None`` if the baseline can run here, else why not."""
    module = BASELINES[name][1]
    if module is not None and importlib.util.find_spec(module) is None:
        return f"skipped: the optional package providing {module!r} is not installed"
    if name == "softimpute":
        # fancyimpute 0.7.0 (its latest release) passes check_array(force_all_finite=...),
        # which scikit-learn 1.8 removed.
        from fancyimpute import SoftImpute

        try:
            SoftImpute(max_iters=1, verbose=False).fit_transform(np.array([[1.0, np.nan]] * 2))
        except TypeError as exc:
            return f"skipped: fancyimpute does not run with this scikit-learn ({exc})"
    return None

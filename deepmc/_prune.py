"""The end-to-end spectrum of a fit: plateau-aware stopping, and prune & polish.

From small initialisation a deep linear network learns the singular directions of its
target one after another (incremental learning; Saxe et al. 2014, Arora et al. 2019,
Li, Luo & Lyu 2021). Between two directions the fitted values barely move, so a stop
rule on their change alone fires on the saddle between them. The learned directions of
``X = W_L ⋯ W_1`` stand apart from the not-yet-learned and spurious ones by a *gap* in
its singular values; what is left to learn shows in the residual ``R = s·P_Ω(X − Y)``.
This module reads both:

* :func:`find_gap` — the largest ratio between consecutive singular values of ``X``;
* :func:`escaping_direction` — the top singular value of ``R`` outside the ``keep``
  learned directions of ``X``, once the directions below the gap are cut
  (``N = (I − PPᵀ) R' (I − QQᵀ)`` with ``R'`` the residual of the cut matrix), and the
  RMS singular value ("bulk") of ``N``. A direction that *stands out* of that bulk
  (``σ₁(N) > OUTLIER · bulk``) and is not negligible beside the learned ones
  (``σ₁(N) > σ₁(X) / RESOLUTION``) is a direction the data still ask for: the fit is
  on a plateau. Noise, and the sampling spread of the learned part's error, give a flat
  bulk (σ₁/bulk ≈ 2 for a square noise matrix) instead;
* :func:`prune_compressed`, :func:`prune_layers` — cut ``X`` to its top ``keep``
  directions and re-balance the layers (each carries the L-th root of the kept
  singular values). Cut directions stay exactly zero under gradient descent (every
  gradient through them has at least two zero factors), so the ε^L floor that small
  initialisation leaves behind is gone and plain gradient descent *polishes* the kept
  part to the exact low-rank solution;
* :func:`rebalance_compressed` — the same ``X`` with its learned directions carried by
  the factors (``U = P diag(u)``, ``u_i ∝ σ_i``), so that every one is corrected at the
  rate of the top one (the ``"rate"`` balance of :func:`prune_compressed`);
* :func:`reseed_compressed` — on a plateau the compressed network may have lost the
  missing direction from the span of its factors; the spare slots are re-initialised
  at scale ε along the top singular vectors of the residual, as greedy low-rank
  learning does (Li, Luo & Lyu 2021).

:class:`SpectralMonitor` applies them at the solver's checks (its ``stop_rule`` and
``callback``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._data import TrainingData
from ._kernels import SMALL_ELEMENTS, _csr, chain_product
from ._noise import (
    cut_rank,
    degrees_of_freedom,
    noise_edge,
    noise_level,
    rss_by_rank,
    signal_rank,
    statistically_settled,
)

__all__ = [
    "LINEAR",
    "LOCAL",
    "MIN_GAP",
    "OUTLIER",
    "RESOLUTION",
    "LocalRows",
    "SpectralMonitor",
    "chain_spectrum",
    "compressed_spectrum",
    "escaping_direction",
    "find_gap",
    "positive_qr",
    "prune_compressed",
    "prune_layers",
    "rebalance_compressed",
    "rebalance_for_polish",
    "reseed_compressed",
]

#: Smallest ratio between consecutive singular values of ``X`` that counts as a gap.
MIN_GAP = 20.0
#: ``σ₁(N) / bulk(N)`` above which a residual direction stands out of the noise bulk.
OUTLIER = 3.0
#: A residual direction weaker than ``σ₁(X) / RESOLUTION`` is below the resolution of
#: the fit (the spurious directions of ε = 0.1 initialisation sit at ≈ 10⁻³ σ₁).
RESOLUTION = 100.0
#: Largest relative change of the kept singular values between checks for a prune.
STABLE = 1e-2
#: Largest relative change of the signal singular values between checks for a cut at
#: the noise edge (the noise the network learns meanwhile moves them a little).
NOISE_STABLE = 0.1
#: A direction below the noise edge counts as noise being learned from this fraction of
#: the edge on.
NOISE_LEARNED = 0.25
#: A settled fit that has learned no direction and whose relative training residual is
#: above this has not left its initialisation (it is not converged).
AT_INIT = 0.5
#: Directions below the noise edge learned together before they count as noise.
NOISE_TOGETHER = 2
#: The top singular value of the residual outside the kept directions may exceed the
#: noise edge by this factor (finite-size fluctuations) for the rest to count as noise.
NOISE_OUTLIER = 1.2
#: ``σ_{keep+1}`` growing by more than this factor per check is a direction being learned.
GROWTH = 1.1
#: A direction of ``X`` counts as learned once its singular value exceeds this multiple
#: of ``ε^L``, the size of the directions small initialisation leaves behind.
INIT_MARGIN = 10.0
#: A kept direction is in the linear regime, where the ``"rate"`` balance of
#: :func:`prune_compressed` is safe, once the residual along it is at most this fraction
#: of its singular value: ``|p_iᵀ R q_i| ≤ LINEAR · σ_i``.
LINEAR = 0.1
#: Largest heavy-ball β of the polish after a prune.
MAX_MOMENTUM = 0.9
#: Checks a settled fit with a spectral gap waits for the prune before it may stop.
PRUNE_WAIT = 2
_TINY = float(np.finfo(float).tiny)


def positive_qr(Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Thin QR ``Y = Q R`` with ``diag(R) ≥ 0``: unique for a full-rank ``Y``.

    Householder QR leaves the signs of ``R``'s diagonal to rounding; fixing them makes
    the factors of a matrix the same whatever algorithm computed them (one QR, or the
    TSQR of a distributed fit).
    """
    Q, R = torch.linalg.qr(Y)
    d = min(R.shape)
    sign = torch.sign(torch.diagonal(R)[:d])
    sign[sign == 0] = 1
    return Q[:, :d] * sign, R[:d] * sign[:, None]


class LocalRows:
    """The rows of every tall matrix (``m × b``) held by this one process.

    The spectral analysis works on tall matrices — the left factor ``U``, the residual's
    left singular vectors — through four operations, which a row-sharded fit replaces
    (``deepmc.distributed._linalg.ShardedRows``, the rows split over ranks) while
    everything else stays the same code:

    * :meth:`sum_` — sum a small result over the holders of the rows (here: itself);
    * :meth:`qr`, :meth:`svd` — thin QR (``R`` with a non-negative diagonal, so that
      the factors do not depend on how they were computed) and SVD of a tall matrix,
      returning this holder's rows of the left factor and the (replicated) small
      factors;
    * :meth:`n_rows` — the total row count from this holder's.
    """

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the holders of the rows, in place; returns it."""
        return t

    def qr(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Thin QR ``Y = Q R``, ``diag(R) ≥ 0``."""
        return positive_qr(Y)

    def svd(self, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD ``Y = A diag(σ) Bᴴ``."""
        return torch.linalg.svd(Y, full_matrices=False)

    def n_rows(self, m: int) -> int:
        """The number of rows of a matrix of which this holder has ``m``."""
        return m


#: The single-process :class:`LocalRows`.
LOCAL = LocalRows()


def find_gap(singular_values: Any, min_ratio: float = MIN_GAP) -> tuple[int, float]:
    """Where the singular values drop most: ``(keep, ratio)``.

    Parameters
    ----------
    singular_values : array-like of shape (k,)
        Non-negative, in decreasing order.
    min_ratio : float, default=MIN_GAP
        The smallest ratio ``σ_keep / σ_{keep+1}`` that counts as a gap.

    Returns
    -------
    keep : int
        The number of values above the largest ratio, or ``k`` when that ratio is below
        ``min_ratio`` (no gap: keep everything).
    ratio : float
        The largest ratio (``inf`` after an exact zero, 0 for fewer than two values).

    Examples
    --------
    >>> find_gap([63.0, 50.0, 31.0, 1e-3, 5e-4])
    (3, 31000.0)
    >>> find_gap([1.0, 0.5, 0.25])
    (3, 2.0)
    """
    s = np.asarray(singular_values, dtype=np.float64)
    if s.ndim != 1 or (s.size and (not np.all(np.isfinite(s)) or s.min() < 0)):
        raise ValueError(
            f"singular_values: expected a 1-D array of finite non-negative values, got {s!r}."
        )
    if s.size < 2 or s[0] == 0:
        return int(s.size), 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(s[1:] > 0, s[:-1] / np.where(s[1:] > 0, s[1:], 1.0), np.inf)
    ratios[s[:-1] == 0] = 1.0  # 0 / 0: no gap between two exact zeros
    i = int(np.argmax(ratios))
    ratio = float(ratios[i])
    return (i + 1, ratio) if ratio >= min_ratio else (int(s.size), ratio)


def _signed(P: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P D, Q D)`` with ``D = ±1`` making each column's largest entry of ``Q`` positive.

    Singular vectors are defined up to a joint sign, which QR and SVD pick by rounding:
    this convention (as :func:`sklearn.utils.extmath.svd_flip`, decided by the right
    vectors, which every rank of a distributed fit holds whole) makes the networks'
    edits the same whichever factorisation produced the vectors.
    """
    if Q.numel() == 0:
        return P, Q
    idx = Q.abs().argmax(dim=0, keepdim=True)
    sign = torch.sign(torch.gather(Q, 0, idx))
    sign[sign == 0] = 1
    return P * sign, Q * sign


def compressed_spectrum(
    U: torch.Tensor,
    V: torch.Tensor,
    cores: Sequence[torch.Tensor],
    *,
    rows: LocalRows = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``X = P diag(σ) Qᵀ`` of ``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` without forming ``X``.

    With ``U = Q_U R_U`` and ``V = Q_V R_V`` (QR), ``X = Q_U (R_U C R_Vᵀ) Q_Vᵀ``: a
    ``k × k`` SVD. Cost O((m + n)·k²). With ``rows`` splitting ``U`` over ranks, ``P``
    has this rank's rows (the QR of ``U`` is ``rows.qr``).

    Returns
    -------
    P : Tensor of shape (m, k)
    sigma : Tensor of shape (k,)
    Q : Tensor of shape (n, k)
    """
    qu, ru = rows.qr(U)
    qv, rv = torch.linalg.qr(V)
    a, sigma, bh = torch.linalg.svd(ru @ chain_product(cores) @ rv.T)
    P, Q = _signed(qu @ a, qv @ bh.T)
    return P, sigma, Q


def chain_spectrum(
    layers: Sequence[torch.Tensor], *, rows: LocalRows = LOCAL
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``X = W_L ⋯ W_1`` (``W_1`` is ``w × n``, ``W_L`` is ``m × w``).

    A narrow network (``w < min(m, n)``) goes through QR of ``W_L`` and ``W_1ᵀ`` and a
    ``w × w`` SVD; a full-width one takes the SVD of the ``m × n`` product. With
    ``rows`` splitting ``W_L`` over ranks (a narrow network only), ``P`` has this rank's
    rows.

    Returns
    -------
    P : Tensor of shape (m, k)
    sigma : Tensor of shape (k,)
    Q : Tensor of shape (n, k)
        With ``k = min(m, n, w)``.
    """
    first, last = layers[0], layers[-1]
    m, n, w = rows.n_rows(last.shape[0]), first.shape[1], first.shape[0]
    if w >= min(m, n):
        a, sigma, bh = torch.linalg.svd(chain_product(layers), full_matrices=False)
        P, Q = _signed(a, bh.T)
        return P, sigma, Q
    ql, rl = rows.qr(last)
    qf, rf = torch.linalg.qr(first.T)
    middle = rl
    for W in reversed(layers[1:-1]):
        middle = middle @ W
    a, sigma, bh = torch.linalg.svd(middle @ rf.T)
    P, Q = _signed(ql @ a, qf @ bh.T)
    return P, sigma, Q


def _balanced(sigma: torch.Tensor, keep: int, depth: int) -> torch.Tensor:
    """``σ_i^{1/L}`` for the kept values, 0 for the others."""
    d = torch.zeros_like(sigma)
    d[:keep] = sigma[:keep].clamp_min(0) ** (1.0 / depth)
    return d


def prune_compressed(
    U: torch.Tensor,
    V: torch.Tensor,
    cores: Sequence[torch.Tensor],
    keep: int,
    *,
    balance: str = "cores",
    rows: LocalRows = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Cut ``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` to its top ``keep`` directions, balanced.

    With the thin SVD ``X = P diag(σ) Qᵀ`` (:func:`compressed_spectrum`), the factors
    become the rotated frames ``U ← P diag(u)``, ``V ← Q diag(u)`` (all ``k`` columns, so
    that the kept directions can still turn inside the span of the factors; the ``k −
    keep`` spare columns stay orthonormal) and every core ``W̃_l ← diag(w_1, …, w_keep,
    0, …, 0)`` with ``u_i² w_i^L = σ_i``: the end-to-end matrix is the rank-``keep``
    truncation of ``X``.

    ``balance`` splits each ``σ_i`` between the factors and the cores:

    ``"cores"``
        ``u = 1``, ``w = σ^{1/L}``: orthonormal factors and balanced cores, the state
        the full-width network reaches after :func:`prune_layers` (with frozen factors
        the two then follow the same trajectory).
    ``"rate"``
        ``u_i = σ_i · σ₁^{−(L+1)/(L+2)}``, ``w_i = (σ_i / u_i²)^{1/L}``: the factors
        carry the spectrum, for factors that move (γ > 0). A step of ``U`` moves ``X`` by
        ``−γη R V CᵀC Vᵀ = −γη R Q diag(σ_i² / u_i²) Qᵀ`` (``C`` the core product,
        ``R`` the residual), so every kept direction is corrected at the rate of the
        top one instead of ``γη σ_i²``: the ``κ²`` of the polish (``κ = σ₁/σ_keep``)
        leaves the factor steps, as in scaled gradient descent (Tong, Ma & Chi 2021),
        here by a change of balance alone. The top direction is balanced over all
        ``L + 2`` matrices (``u₁ = w₁ = σ₁^{1/(L+2)}``), so the largest curvature — the
        step-size limit — is that of a balanced network. Gradient descent keeps the
        imbalance (``UᵀU/γ − W̃_L W̃_Lᵀ`` and ``W̃_{l+1}ᵀW̃_{l+1} − W̃_l W̃_lᵀ`` are
        conserved by gradient flow), so the polish keeps this rate.

    Parameters
    ----------
    U : Tensor of shape (m, k)
    V : Tensor of shape (n, k)
    cores : sequence of Tensor of shape (k, k)
        ``[W̃_1, …, W̃_L]``.
    keep : int
        Directions kept, ``0 ≤ keep ≤ k``.
    balance : {"cores", "rate"}, default="cores"
    rows : LocalRows, default=LOCAL
        How the rows of ``U`` are held (split over ranks in a distributed fit).

    Returns
    -------
    U, V, cores
        New tensors (the inputs are not modified).

    References
    ----------
    T. Tong, C. Ma, Y. Chi, "Accelerating ill-conditioned low-rank matrix estimation
    via scaled gradient descent", JMLR 22 (2021).
    """
    if balance not in ("cores", "rate"):
        raise ValueError(f"balance: expected 'cores' or 'rate', got {balance!r}.")
    P, sigma, Q = compressed_spectrum(U, V, cores, rows=rows)
    depth = len(cores)
    if balance == "cores":
        d = torch.diag(_balanced(sigma, keep, depth))
        return P, Q, [d.clone() for _ in cores]
    u, w = _rate_scales(sigma, keep, depth)
    w[keep:] = 0
    d = torch.diag(w)
    return P * u, Q * u, [d.clone() for _ in cores]


def _rate_scales(sigma: torch.Tensor, keep: int, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, w)`` with ``u_i² w_i^L = σ_i``: the ``"rate"`` balance on the top ``keep``.

    The others get ``u = 1``, ``w = σ^{1/L}`` (orthonormal factors, balanced cores).
    """
    s = sigma.clamp_min(0)
    u = torch.ones_like(s)
    w = s ** (1.0 / depth)
    if keep == 0 or float(s[0]) <= 0:
        return u, w
    u[:keep] = s[:keep] * s[0] ** (-(depth + 1) / (depth + 2))
    live = torch.zeros_like(s, dtype=torch.bool)
    live[:keep] = s[:keep] > 0  # an exact zero kept gets u = w = 0 there
    w[:keep] = 0
    w[live] = (s[live] / u[live].square()) ** (1.0 / depth)
    return u, w


def rebalance_compressed(
    U: torch.Tensor,
    V: torch.Tensor,
    cores: Sequence[torch.Tensor],
    keep: int,
    *,
    rows: LocalRows = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The same ``X``, with the ``"rate"`` balance on its top ``keep`` directions, nothing cut.

    As :func:`prune_compressed` with ``balance="rate"``, except that the directions past
    ``keep`` stay (``u = 1``, cores ``σ^{1/L}``, as at ε-initialisation): the learned
    directions are corrected at the rate of the top one while the spare slots keep
    their own dynamics, free to learn a direction still missing.

    Parameters
    ----------
    U, V, cores, keep, rows
        As in :func:`prune_compressed`.

    Returns
    -------
    U, V, cores
        New tensors with ``U · W̃_L ⋯ W̃_1 · Vᵀ`` equal to the input's.
    """
    P, sigma, Q = compressed_spectrum(U, V, cores, rows=rows)
    u, w = _rate_scales(sigma, keep, len(cores))
    d = torch.diag(w)
    return P * u, Q * u, [d.clone() for _ in cores]


def prune_layers(
    layers: Sequence[torch.Tensor], keep: int, *, rows: LocalRows = LOCAL
) -> list[torch.Tensor]:
    """Cut ``X = W_L ⋯ W_1`` (full width or narrow) to its top ``keep`` directions, balanced.

    With ``X ≈ P diag(σ) Qᵀ`` truncated to ``keep`` directions, the hidden frames are the
    images of the kept input directions, ``A_0 = Q`` and ``A_l = orth(W_l A_{l−1})``
    (QR), and the layers become ``W_l ← A_l diag(σ^{1/L}) A_{l−1}ᵀ`` with ``A_L = P``:
    each layer is a balanced rank-``keep`` factor and their product is the truncated
    ``X``. Everything outside the kept directions is set to zero. By the law of
    parsimony (Yaras et al. 2023) that complement is ``ρ(t)·`` (an orthogonal map) with
    ``ρ → 0`` as ``ε → 0``, and its end-to-end contribution ``≈ ε^L`` is the error floor
    of small initialisation; pruning takes that limit ``ρ = 0``, which gradient descent
    then keeps (every gradient through the complement has two zero factors). The kept
    part is exactly the compressed network's after :func:`prune_compressed`, so the
    two still follow the same end-to-end trajectory.

    Parameters
    ----------
    layers : sequence of Tensor
        ``[W_1 (w × n), W_2 (w × w), …, W_L (m × w)]``.
    keep : int
    rows : LocalRows, default=LOCAL
        How the rows of ``W_L`` are held (split over ranks in a distributed fit).

    Returns
    -------
    list of Tensor
        New layers of the same shapes.
    """
    P, sigma, Q = chain_spectrum(layers, rows=rows)
    keep = min(keep, sigma.shape[0])
    d = _balanced(sigma, keep, len(layers))[:keep]
    frames = [Q[:, :keep]]
    for W in layers[:-1]:
        frames.append(torch.linalg.qr(W @ frames[-1])[0])
    frames.append(P[:, :keep])
    return [(frames[i + 1] * d) @ frames[i].T for i in range(len(layers))]


def reseed_compressed(
    U: torch.Tensor,
    V: torch.Tensor,
    cores: Sequence[torch.Tensor],
    keep: int,
    left: torch.Tensor,
    right: torch.Tensor,
    scale: float,
    *,
    rows: LocalRows = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Keep the top ``keep`` directions balanced; re-initialise the other slots at ``scale``.

    The spare ``k − keep`` columns of ``U`` and ``V`` become ``left`` and ``right``
    (directions orthogonal to the kept ones, e.g. the top singular vectors of the
    residual outside them, oriented so that ``leftᵀ (Y − X) right ≥ 0``) and the cores
    ``diag(σ^{1/L}, ε, …, ε)``: a fresh ε-initialisation of the spare capacity along what
    the data still ask for.

    Parameters
    ----------
    U, V, cores
        As in :func:`prune_compressed`.
    keep : int
    left : Tensor of shape (m, k - keep)
    right : Tensor of shape (n, k - keep)
    scale : float
        ε of the new slots.
    rows : LocalRows, default=LOCAL
        How the rows of ``U`` and ``left`` are held.

    Returns
    -------
    U, V, cores
        New tensors.
    """
    P, sigma, Q = compressed_spectrum(U, V, cores, rows=rows)
    d = _balanced(sigma, keep, len(cores))
    d[keep:] = scale
    U_new = torch.cat([P[:, :keep], left], dim=1)
    V_new = torch.cat([Q[:, :keep], right], dim=1)
    return U_new, V_new, [torch.diag(d) for _ in cores]


def rebalance_for_polish(
    params: dict[str, list[torch.Tensor]],
    keep: int,
    lr_ratios: Any,
    *,
    rows: LocalRows = LOCAL,
) -> bool:
    """Give a pruned compressed network whose factors move the ``"rate"`` balance, in place.

    After a prune the compressed network (``params`` with ``"factors"`` ``[U, V]`` and
    ``"cores"``) polishes a rank-``keep`` factorisation. With factors that move
    (``lr_ratios["factors"] > 0``) its state becomes :func:`prune_compressed`'s
    ``balance="rate"`` of the same end-to-end matrix, so that every kept direction is
    polished at the rate of the top one; other networks (no ``"factors"`` group, or
    frozen factors) are left alone.

    Parameters
    ----------
    params : dict of str to list of Tensor
        The network's parameter groups, edited in place.
    keep : int
        The rank kept by the prune.
    lr_ratios : mapping of str to float
        The network's per-group learning-rate ratios (γ for ``"factors"``).
    rows : LocalRows, default=LOCAL
        How the rows of ``U`` are held.

    Returns
    -------
    bool
        Whether ``params`` were re-balanced.
    """
    if not _moving_factors(params, lr_ratios):
        return False
    U, V = params["factors"]
    new = prune_compressed(U, V, params["cores"], keep, balance="rate", rows=rows)
    _copy_params(params, new)
    return True


def _moving_factors(params: dict[str, list[torch.Tensor]], lr_ratios: Any) -> bool:
    """Whether ``params`` are a compressed network's with factors that move (γ > 0)."""
    return "factors" in params and "cores" in params and bool(lr_ratios.get("factors", 0.0))


def _copy_params(
    params: dict[str, list[torch.Tensor]],
    new: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
) -> None:
    U, V = params["factors"]
    with torch.no_grad():
        for p, q in zip([U, V, *params["cores"]], [new[0], new[1], *new[2]], strict=True):
            p.copy_(q)


class _Residual:
    """``R = s·P_Ω(r)`` for a residual vector ``r`` on Ω, as products with ``R``, ``Rᵀ``.

    A small matrix (``m·n`` ≤ ``SMALL_ELEMENTS``, where the kernels work densely too) is
    held dense and multiplied by BLAS; a larger one as CSR matrices of ``R`` and ``Rᵀ``.
    """

    def __init__(self, data: TrainingData) -> None:
        m, n = data.shape
        self.data = data
        self.small = m * n <= SMALL_ELEMENTS
        if not self.small:
            order = torch.argsort(data.cols * m + data.rows)
            self.order = order
            self.crow_t = torch._convert_indices_from_coo_to_csr(data.cols[order], n)
            self.col_t = data.rows[order]

    def bind(self, r: torch.Tensor) -> tuple[Any, Any, torch.Tensor | None]:
        """``(x ↦ R x, y ↦ Rᵀ y, R dense or None)``."""
        data = self.data
        m, n = data.shape
        vals = r * data.sampling_scale
        if self.small:
            D = torch.zeros((m, n), dtype=r.dtype, device=r.device)
            D[data.rows, data.cols] = vals
            return (lambda x: D @ x), (lambda y: D.T @ y), D
        R = _csr(data.pattern.crow, data.pattern.col, vals, (m, n))
        Rt = _csr(self.crow_t, self.col_t, vals[self.order], (n, m))
        return (lambda x: R @ x), (lambda y: Rt @ y), None


def escaping_direction(
    mv: Any,
    rmv: Any,
    fro2: float,
    P: torch.Tensor,
    Q: torch.Tensor,
    shape: tuple[int, int],
    n_vectors: int = 4,
    n_iter: int = 12,
    generator: torch.Generator | None = None,
    dense: torch.Tensor | None = None,
    rows: LocalRows = LOCAL,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Top singular triplets of ``−N = −(I − PPᵀ) R (I − QQᵀ)`` and the bulk of ``N``.

    Block subspace iteration with the products ``mv(x) = R x`` and ``rmv(y) = Rᵀ y``
    only (``R`` is never formed). With ``dense`` (``R`` itself, for a small matrix) the
    iteration forms ``NᵀN`` once and takes one product and one QR a step instead of
    two of each and four projections: the same iterates up to rounding (the start is
    orthogonal to ``Q`` and QR normalisation does not change the subspace), about a
    third of the cost on a 100 × 100 matrix. The bulk is the RMS singular value of ``N``,
    ``‖N‖_F / √(min(m, n) − keep)`` with
    ``‖N‖²_F = ‖R‖²_F − ‖PᵀR‖²_F − ‖RQ‖²_F + ‖PᵀRQ‖²_F``.

    With ``rows`` splitting the rows of ``R`` over ranks, every rank passes its own
    rows (of ``R``, ``P``, ``dense``) and its products; the sums over rows
    (``Rᵀ y``, ``Pᵀ y``, ``NᵀN``, the norms) are ``rows.sum_`` and the tall QR and SVD
    ``rows.qr`` and ``rows.svd``, so every rank ends with the same values and
    right vectors and its own rows of ``left``.

    Parameters
    ----------
    mv, rmv : callable
        ``x ↦ R x`` (``(n, b) → (m, b)``) and ``y ↦ Rᵀ y`` (with ``rows`` split over
        ranks: this rank's rows of ``R x`` and its term ``R_pᵀ y_p`` of the sum).
    fro2 : float
        ``‖R‖²_F`` (of the whole ``R``).
    P : Tensor of shape (m, keep)
    Q : Tensor of shape (n, keep)
        Orthonormal kept directions (``keep`` may be 0).
    shape : tuple of (int, int)
    n_vectors : int, default=4
        Triplets returned (the block has 4 more).
    n_iter : int, default=12
    generator : torch.Generator, default=None
        Of the random start (CPU).
    dense : Tensor of shape (m, n), default=None
        ``R`` as a dense matrix, when it is small enough to hold.
    rows : LocalRows, default=LOCAL
        How the rows of ``R`` are held.

    Returns
    -------
    left : Tensor of shape (m, n_vectors)
    values : Tensor of shape (n_vectors,)
        Decreasing; ``values[0]`` is ``σ₁(N)``.
    right : Tensor of shape (n, n_vectors)
        ``leftᵀ (−N) right = diag(values)``.
    bulk : float
    """
    m, n = shape
    keep = P.shape[1]

    def left_out(y: torch.Tensor) -> torch.Tensor:
        return y - P @ rows.sum_(P.T @ y) if keep else y

    def right_out(x: torch.Tensor) -> torch.Tensor:
        return x - Q @ (Q.T @ x) if keep else x

    def rmv_sum(y: torch.Tensor) -> torch.Tensor:
        return rows.sum_(rmv(y))

    b = min(n_vectors + 4, max(1, min(m, n) - keep))
    x = torch.randn(n, b, dtype=torch.float64, generator=generator).to(P)
    x = torch.linalg.qr(right_out(x))[0]
    if dense is not None:  # the same iterates, x ← orth(NᵀN x), one product a step
        N = left_out(right_out(dense.T).T)  # (I − PPᵀ) R (I − QQᵀ)
        gram = rows.sum_(N.T @ N)
        for _ in range(n_iter):
            x = torch.linalg.qr(gram @ x)[0]
    else:
        for _ in range(n_iter):
            y = rows.qr(left_out(mv(x)))[0]
            x = torch.linalg.qr(right_out(rmv_sum(y)))[0]
    y = -left_out(mv(x))  # = −N x
    a, values, bh = rows.svd(y)
    a, right = _signed(a, x @ bh.T)
    k = min(n_vectors, values.shape[0])
    if keep:
        RQ = mv(Q)
        PtR = rmv_sum(P).T
        PtRQ = rows.sum_(P.T @ RQ)
        fro2 = fro2 - float(rows.sum_(RQ.square().sum())) - float(PtR.square().sum())
        fro2 += float(PtRQ.square().sum())
    bulk = math.sqrt(max(fro2, 0.0) / max(min(m, n) - keep, 1))
    return a[:, :k], values[:k], right[:, :k], bulk


@dataclass
class _Analysis:
    iteration: int
    P: torch.Tensor
    sigma: np.ndarray
    Q: torch.Tensor
    keep: int  # above the largest gap
    ratio: float
    learned: int  # above INIT_MARGIN · ε^L
    escape: dict = field(default_factory=dict)  # keep -> (left, values, right, bulk)


@dataclass
class SpectralMonitor:
    """Plateau-aware stop rule and prune & polish, for :func:`deepmc._solver.gradient_descent`.

    ``stop_rule`` says ``"converged"`` only when the fitted values have settled
    (``change ≤ tol``) *and* the residual has no escaping direction
    (:func:`escaping_direction`): on a saddle between two learned directions it goes
    on, and records what is left in :attr:`plateau` for the estimator's warning.
    ``callback`` (with ``prune=True``) cuts the network to the directions above the
    spectral gap once the gap is at least :data:`MIN_GAP`, the kept singular values
    have settled (relative change ≤ :data:`STABLE` since the previous check) and
    cutting leaves no escaping direction; it records ``"pruned to rank k"`` in the
    history. When an escaping direction blocks the cut and nothing is being learned
    (``σ_{keep+1}`` not growing), a network with ``reseed`` re-initialises its spare
    slots along the residual's top directions (``"re-seeded ..."``). A compressed
    network with moving factors is re-balanced (:func:`rebalance_compressed`, ``"re-balanced
    the top k direction(s)"``) once the directions above the gap are in the linear regime
    (``|p_iᵀ R q_i| ≤`` :data:`LINEAR` ``· σ_i``), and again at the prune
    (:func:`rebalance_for_polish`). Two checks after the re-balance, or after the prune
    for networks without one, the descent turns to heavy-ball steps, β from the
    residual's contraction over those checks (:meth:`_accelerate`); every later edit
    restarts the velocity (a re-seed or re-balance also the measurement; the prune keeps
    β). A fit that settles with a gap still uncut waits up to
    :data:`PRUNE_WAIT` checks for the prune before ``stop_rule`` calls it converged.

    On noisy data no gap forms: the network goes on learning the noise's own top
    directions. ``callback`` then cuts at the noise edge instead (:meth:`_noise_cut`,
    :mod:`deepmc._noise`, ``"noise level …: pruned to rank k"``) and ``stop_rule``
    stops the polish once it is settled to the noise's precision. A fit that settles
    without having learned any direction is on the plateau of a too small ``ε^L``:
    ``stop_rule`` never calls that converged (:attr:`plateau` says so for the warning).

    Parameters
    ----------
    network : Network
        Gives ``spectrum(params)``, ``prune(params, keep)`` and, optionally,
        ``reseed(params, keep, left, right)``.
    data : TrainingData
    tol : float
    n_iter_no_change : int, default=10
    prune : bool, default=False
    min_gap : float, default=MIN_GAP
    seed : int, default=0
        Of the random start of the subspace iterations.
    rows : LocalRows, default=LOCAL
        How the rows of the matrix are held: a distributed fit passes its ranks' split
        (``deepmc.distributed._linalg.ShardedRows``) with this rank's ``data``; every rank
        then takes the same decisions from the same sums.
    scale : float, default=1.0
        The data scale, for the noise level written in the history (user units).

    Attributes
    ----------
    pruned : int or None
        The rank kept by the prune, if any.
    noise : float or None
        The noise level (normalised units) when the prune was a cut at the noise edge
        (:meth:`_noise_cut`): the rank is then locked and the polish stops once settled
        to the noise's precision.
    plateau : dict or None
        At the last settled check that was not convergence: ``iteration``, ``keep``,
        ``value`` (σ₁ of the escaping direction, normalised units) and ``ratio`` (to
        the smallest kept singular value).
    """

    network: Any
    data: TrainingData
    tol: float
    n_iter_no_change: int = 10
    prune: bool = False
    min_gap: float = MIN_GAP
    seed: int = 0
    rows: LocalRows = LOCAL
    scale: float = 1.0
    pruned: int | None = None
    reseeds: int = 0
    rebalanced: int | None = None
    momentum: float | None = None
    _waited: int = field(default=0, repr=False)
    _polish: list = field(default_factory=list, repr=False)
    plateau: dict | None = None
    gap_seen: bool = False
    noise: float | None = None
    _analysis: _Analysis | None = field(default=None, repr=False)
    _previous: tuple[np.ndarray, float] | None = field(default=None, repr=False)
    _residual: _Residual | None = field(default=None, repr=False)
    _shape: tuple[int, int] | None = field(default=None, repr=False)
    _resumed_at: int | None = field(default=None, repr=False)
    _last_change: float | None = field(default=None, repr=False)

    #: What :meth:`state_dict` saves: every decision and measurement carried between checks.
    _STATE = (
        "pruned", "reseeds", "rebalanced", "momentum", "_waited", "_polish", "plateau",
        "gap_seen", "_previous", "noise", "_last_change",
    )  # fmt: skip

    def state_dict(self) -> dict:
        """The monitor's decisions and measurements so far, for a checkpoint (copies)."""
        return {name: copy.deepcopy(getattr(self, name)) for name in self._STATE}

    def load_state_dict(self, state: dict, iteration: int) -> None:
        """Resume from a :meth:`state_dict` taken at the check of ``iteration``.

        That check was processed before the state was saved: when the resumed run checks
        ``iteration`` again, the monitor neither decides nor measures anything.
        """
        for name in self._STATE:
            setattr(self, name, copy.deepcopy(state[name]))
        self._analysis = None
        self._resumed_at = int(iteration)

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)`` of the whole matrix (``data`` may hold some of its rows)."""
        if self._shape is None:
            m, n = self.data.shape
            self._shape = (self.rows.n_rows(m), n)
        return self._shape

    # ----------------------------------------------------------------- analysis
    def _analyse(self, check: Any) -> _Analysis:
        if self._analysis is not None and self._analysis.iteration == check.iteration:
            return self._analysis
        with torch.no_grad():
            P, sigma, Q = self.network.spectrum(check.params, rows=self.rows)
        sig = sigma.detach().to("cpu", torch.float64).numpy()
        keep, ratio = find_gap(sig, self.min_gap)
        if self.pruned is not None:
            keep = self.pruned
        level = INIT_MARGIN * float(self.network.init_scale) ** int(self.network.depth)
        learned = int(np.count_nonzero(sig > level))
        self._analysis = _Analysis(check.iteration, P, sig, Q, keep, ratio, learned)
        return self._analysis

    def _escape(self, check: Any, an: _Analysis, keep: int) -> tuple:
        if keep in an.escape:
            return an.escape[keep]
        data = self.data
        r = check.residual
        if r.shape != data.y.shape:  # a dense masked residual (full-width network)
            r = r[data.rows, data.cols]
        with torch.no_grad():
            if keep < an.sigma.shape[0] and an.sigma[keep] > 0:  # the cut part leaves X
                cut_left = an.P[:, keep:] * torch.as_tensor(an.sigma[keep:]).to(an.P)
                kernels = data.pattern.kernels(an.P.dtype)
                r = r - kernels.sampled(cut_left, an.Q[:, keep:])
            if self._residual is None:
                self._residual = _Residual(data)
            mv, rmv, dense = self._residual.bind(r)
            fro2 = float(self.rows.sum_(r.square().sum())) * data.sampling_scale**2
            gen = torch.Generator().manual_seed(self.seed)
            spare = max(1, an.sigma.shape[0] - keep)
            an.escape[keep] = escaping_direction(
                mv, rmv, fro2, an.P[:, :keep], an.Q[:, :keep], self.shape,
                n_vectors=spare, generator=gen, dense=dense, rows=self.rows,
            )  # fmt: skip
        return an.escape[keep]

    def _linear(self, check: Any, an: _Analysis, keep: int) -> float:
        """``max_i |p_iᵀ R q_i| / σ_i`` over the top ``keep`` directions of ``X``.

        ``p_iᵀ R q_i`` estimates ``σ_i − p_iᵀ Y q_i`` (``R = s·P_Ω(X − Y)`` is unbiased
        for ``X − Y`` under uniform sampling): the relative error left along the
        direction.
        """
        if keep == 0:
            return 0.0
        data = self.data
        r = check.residual
        if r.shape != data.y.shape:  # a dense masked residual
            r = r[data.rows, data.cols]
        if self._residual is None:
            self._residual = _Residual(data)
        mv, _, _ = self._residual.bind(r)
        along = self.rows.sum_((an.P[:, :keep] * mv(an.Q[:, :keep])).sum(dim=0)).abs()
        sigma = torch.as_tensor(an.sigma[:keep]).to(along)
        return float((along / sigma.clamp_min(_TINY)).max())

    def _escaping(self, check: Any, an: _Analysis, keep: int) -> bool:
        _, values, _, bulk = self._escape(check, an, keep)
        s1 = float(values[0]) if values.numel() else 0.0
        floor = an.sigma[0] / RESOLUTION if keep else 0.0
        return s1 > OUTLIER * bulk and s1 > floor

    # ----------------------------------------------------------------- solver hooks
    def stop_rule(self, check: Any) -> str:
        """``"converged"``, ``"early_stopping"`` or ``""`` (see the class docstring)."""
        if check.iteration == self._resumed_at:  # decided before the checkpoint
            return ""
        if self.noise is not None and self._noise_settled(check):
            self.plateau = None  # cut at the noise edge: the rest is noise
            return "converged"
        if check.row["change"] <= self.tol:
            an = self._analyse(check)
            learned = an.learned if self.pruned is None else self.pruned
            if learned == 0 and self.pruned is None and check.row["residual"] > AT_INIT:
                # nothing learned, nothing fitted: the plateau of a too small ε^L
                self.plateau = {"iteration": check.iteration, "keep": 0, "at_init": True}
                return self._early(check)
            # with every slot learned there is no capacity left for another direction
            if learned >= an.sigma.shape[0] or not self._escaping(check, an, learned):
                self.plateau = None
                if self._prune_first(an):
                    return ""
                return "converged"
            s1 = float(an.escape[learned][1][0])
            self.plateau = {
                "iteration": check.iteration,
                "keep": learned,
                "value": s1,
                "ratio": s1 / an.sigma[learned - 1] if learned else math.inf,
            }
        return self._early(check)

    def _early(self, check: Any) -> str:
        if check.since_best is not None and check.since_best >= self.n_iter_no_change:
            return "early_stopping"
        return ""

    def unconverged(self, last: dict, check_every: int, scale: float) -> str:
        """Why a fit that ran out of iterations has not converged, for its warning.

        Parameters
        ----------
        last : dict
            The last history row (``change``, ``residual``).
        check_every : int
        scale : float
            The data scale (singular values are reported in user units).
        """
        plateau = self.plateau
        if plateau is not None and plateau.get("at_init"):
            return (
                f"the fitted values settled (relative change ≤ tol={self.tol:g} at "
                f"iteration {plateau['iteration']}) without learning any direction "
                f"(training residual {last['residual']:.3g}): with ε^L = "
                f"{float(self.network.init_scale) ** int(self.network.depth):.3g} the "
                "initial plateau lasts about 1/(lr · ε^(L−2)) steps. Increase init_scale "
                "or decrease depth."
            )
        if plateau is not None:
            return (
                f"the fitted values settled (relative change ≤ tol={self.tol:g} at "
                f"iteration {plateau['iteration']}) but the residual still has a "
                f"direction with singular value {plateau['value'] * scale:.3g} "
                f"({plateau['ratio']:.2g} × the smallest of the {plateau['keep']} "
                "learned ones) outside them: the fit may be on a plateau between "
                "learning directions. Increase max_iter or init_scale."
            )
        what = (
            f"the fitted values did not settle (relative change {last['change']:.3g} "
            f"per {check_every} steps > tol={self.tol:g}; training residual "
            f"{last['residual']:.3g})"
        )
        if self.prune and self.pruned is None:
            what += (
                "; no spectral gap was found to prune at"
                if not self.gap_seen
                else "; a spectral gap was seen but not pruned at"
            )
        return what + ". Increase max_iter or tol."

    def _prune_first(self, an: _Analysis) -> bool:
        """Whether a settled fit should go on to be pruned (at most :data:`PRUNE_WAIT` checks).

        Settled with ε-level directions below a spectral gap, the fit sits on the
        ``ε^L`` floor that the prune removes: the callback cuts them at this check or the
        next (it needs two checks to see the kept values settled), and the polish goes on.
        """
        if not self.prune or self.pruned is not None:
            return False
        if an.ratio < self.min_gap or an.keep >= an.sigma.shape[0]:
            return False
        self._waited += 1
        return self._waited <= PRUNE_WAIT

    def _accelerate(self, check: Any) -> None:
        """Heavy-ball steps: β from the contraction of two checks of plain steps.

        Once re-balanced in the linear regime (compressed network) or pruned (every
        network), the learned part is a well-posed low-rank problem whose loss is
        locally quadratic. Gradient descent with step η contracts its slowest mode by
        ``ρ = 1 − ημ`` per step; with the same step, heavy ball with
        ``β = (1 − √(ημ))²`` contracts it by ``√β = 1 − √(ημ)`` (the critically damped
        choice; Polyak 1964), e.g. about 3× fewer steps for ``ημ = 0.02``. ``ρ`` is
        read off the residuals of the first two checks after the edit (a transient
        of the faster modes makes it an under-estimate of the slowest, so β errs on the
        small side); a residual that did not shrink leaves plain steps.
        """
        optimizer = check.optimizer
        if self.momentum is not None or not getattr(optimizer, "schedule_momentum", False):
            return
        self._polish.append((check.iteration, float(check.row["residual"])))
        if len(self._polish) < 2:
            return
        (i1, r1), (i2, r2) = self._polish[-2:]
        rho = (r2 / r1) ** (1.0 / (i2 - i1)) if r1 > 0 and i2 > i1 else math.inf
        beta = (1.0 - math.sqrt(1.0 - rho)) ** 2 if 0.0 < rho < 1.0 else 0.0
        self.momentum = min(beta, MAX_MOMENTUM)
        if self.momentum > 0:
            optimizer.momentum = self.momentum
            note = f"heavy-ball steps, momentum {self.momentum:.2f}"
            check.row["event"] = (check.row["event"] + " " + note).strip()

    def callback(self, check: Any) -> bool:
        """Prune or re-seed ``check.params`` in place when the spectrum says so."""
        if not self.prune or check.iteration == self._resumed_at:
            return False
        if self.pruned is not None:
            self._accelerate(check)  # the parameters are not edited
            return False
        an = self._analyse(check)
        keep, sig = an.keep, an.sigma
        nxt = float(sig[keep]) if keep < sig.shape[0] else 0.0
        previous, self._previous = self._previous, (sig.copy(), nxt)
        if previous is not None and self._noise_cut(check, an, previous[0]):
            return True
        if an.ratio < self.min_gap or keep >= sig.shape[0] or previous is None:
            if self.rebalanced == keep:  # learned part in the linear regime
                self._accelerate(check)
            return False
        self.gap_seen = True
        prev_sig, prev_next = previous
        stable = bool(np.max(np.abs(sig[:keep] - prev_sig[:keep]) / sig[:keep]) <= STABLE)
        level = INIT_MARGIN * float(self.network.init_scale) ** int(self.network.depth)
        moving = _moving_factors(check.params, self.network.lr_ratios)
        with torch.no_grad():
            if stable and not self._escaping(check, an, keep):
                self.network.prune(check.params, keep, rows=self.rows)
                rebalance_for_polish(check.params, keep, self.network.lr_ratios, rows=self.rows)
                self.pruned = keep
                note = f"pruned to rank {keep}"
            elif (
                stable
                and hasattr(self.network, "reseed")
                and self.reseeds < sig.shape[0]
                and nxt <= min(level, GROWTH * prev_next)  # the spare slots learn nothing
            ):
                self.reseeds += 1
                left, values, right, _ = self._escape(check, an, keep)
                self.network.reseed(check.params, keep, left, right, rows=self.rows)
                self.rebalanced = None  # the re-seed balanced the kept part in the cores
                note = (
                    f"re-seeded {sig.shape[0] - keep} direction(s) along the residual "
                    f"(its top singular value {float(values[0]):.3g} × σ₁)"
                )
            elif moving and self.rebalanced != keep and self._linear(check, an, keep) <= LINEAR:
                U, V = check.params["factors"]
                new = rebalance_compressed(U, V, check.params["cores"], keep, rows=self.rows)
                _copy_params(check.params, new)
                self.rebalanced = keep
                note = f"re-balanced the top {keep} direction(s)"
            else:
                if self.rebalanced == keep:  # learned part in the linear regime
                    self._accelerate(check)
                return False
        self._restart(check.optimizer, cut=self.pruned is not None)
        self._previous = None
        check.row["event"] = (check.row["event"] + " " + note).strip()
        return True

    def summary(self, params: Any, relative_residual: float) -> tuple[int, float]:
        """``(rank, noise)`` of the final fit: the directions kept and the noise level.

        The rank is the one the prune locked, or else the number of singular values of
        ``X`` learned (above :data:`INIT_MARGIN` ``· ε^L``). The noise level (normalised
        units, NaN when too few residual degrees of freedom are left) is
        :func:`~deepmc._noise.noise_level` of the final residual at that rank.
        """
        if self.pruned is not None:
            rank = self.pruned
        else:
            with torch.no_grad():
                _, sigma, _ = self.network.spectrum(params, rows=self.rows)
            level = INIT_MARGIN * float(self.network.init_scale) ** int(self.network.depth)
            rank = int(torch.count_nonzero(sigma > level))
        m, n = self.shape
        rss = (relative_residual * self.data.y_norm) ** 2
        sigma = noise_level(rss, round(m * n / self.data.sampling_scale), (m, n), rank)
        return rank, math.nan if sigma is None else sigma

    def _noise_settled(self, check: Any) -> bool:
        """After a cut at the noise edge: change ≤ tol, or settled to the noise's precision."""
        change, previous = check.row["change"], self._last_change
        self._last_change = change
        if change <= self.tol:
            return True
        data = self.data
        r = check.residual
        if r.shape != data.y.shape:  # a dense masked residual
            r = r[data.rows, data.cols]
        fitted = math.sqrt(float(self.rows.sum_((r + data.y).square().sum())))
        dof = degrees_of_freedom(self.shape, self.pruned or 0)
        return statistically_settled(change, previous, fitted, self.noise, dof)

    def _rss_by_rank(self, check: Any, an: _Analysis, top: int) -> list[float]:
        """``Σ_Ω (X_k − Y)²`` for ``X`` cut to ``k = 0, …, top`` (:func:`rss_by_rank`)."""
        r = check.residual
        if r.shape != self.data.y.shape:  # a dense masked residual: zero off Ω
            r = r[self.data.rows, self.data.cols]
        sampled = self.data.pattern.kernels(an.P.dtype).sampled
        sigma = torch.as_tensor(an.sigma).to(an.P)
        return rss_by_rank(r, an.P, sigma, an.Q, top, sampled, self.rows.sum_)

    def _noise_cut(self, check: Any, an: _Analysis, prev_sig: np.ndarray) -> bool:
        """Prune at the noise edge once the network learns directions below it.

        With ``k`` the learned directions, the noise level is read off the residual
        (:func:`~deepmc._noise.noise_level`) and the learned singular values of ``X``
        above the noise edge (:func:`~deepmc._noise.noise_edge`) are the signal. When
        some learned ones are below it, the signal ones have settled (relative change
        ≤ :data:`STABLE`) and the residual outside them has no escaping direction, the
        network is fitting noise: it is cut to the signal directions, which are then
        polished, and the rank is locked (:attr:`noise` records the level).
        """
        learned = an.learned
        if learned == 0:
            return False
        m, n = self.shape
        s = self.data.sampling_scale
        rss = self._rss_by_rank(check, an, learned)
        keep, sigma = cut_rank(an.sigma, rss, round(m * n / s), (m, n), s)
        if sigma is None:
            return False
        edge = noise_edge(sigma, (m, n), s)
        # directions below the edge are being learned, beyond the ε-level growth, and
        # several at once: the top of the noise bulk is flat, so noise is learned by
        # several directions together where signal is learned one after another (one
        # more is asked before calling the whole matrix noise)
        together = NOISE_TOGETHER + (keep == 0)
        below = an.sigma[keep : keep + together]
        if keep >= learned or below.size < together or below[-1] < NOISE_LEARNED * edge:
            return False
        if signal_rank(prev_sig, edge) != keep:
            return False
        if an.ratio >= self.min_gap and an.keep == keep:  # a spectral gap: the prune's
            return False
        top = an.sigma[:keep]
        if keep and np.max(np.abs(top - prev_sig[:keep]) / top) > NOISE_STABLE:
            return False
        # the estimate needs the kept directions fitted (at least the top one learned),
        # and what is left outside them must look like noise of that level
        if self._linear(check, an, max(keep, 1)) > LINEAR or self._escaping(check, an, keep):
            return False
        top_left = float(self._escape(check, an, keep)[1][0])
        if top_left > NOISE_OUTLIER * edge:
            return False
        with torch.no_grad():
            self.network.prune(check.params, keep, rows=self.rows)
            rebalance_for_polish(check.params, keep, self.network.lr_ratios, rows=self.rows)
        self.pruned, self.noise = keep, sigma
        self._restart(check.optimizer, cut=True)
        self._previous = None
        note = (
            f"noise level {sigma * self.scale:.3g}: pruned to rank {keep}, the directions "
            "above the noise edge"
        )
        check.row["event"] = (check.row["event"] + " " + note).strip()
        return True

    def _restart(self, optimizer: Any, cut: bool) -> None:
        """After an edit: fresh velocity; β kept across the prune, else measured again."""
        if not getattr(optimizer, "schedule_momentum", False):
            return
        if cut and self.momentum:
            optimizer.momentum = self.momentum  # the velocity starts afresh
            return
        self._polish = []
        self.momentum = None
        if optimizer.momentum:
            optimizer.momentum = 0.0

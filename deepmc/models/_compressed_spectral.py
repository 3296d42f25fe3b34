"""The compressed network's spectral edits: its spectrum, prune, re-balance and re-seed.

For ``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` (:class:`~deepmc.models._compressed_net.CompressedNetwork`):

* :func:`compressed_spectrum` — the thin SVD of ``X`` without forming it;
* :func:`prune_compressed` — cut ``X`` to its top ``keep`` directions and re-balance the
  layers (each core carries the L-th root of the kept singular values). Cut directions
  stay exactly zero under gradient descent (every gradient through them has at least
  two zero factors), so the ε^L floor that small initialisation leaves behind is gone
  and plain gradient descent *polishes* the kept part to the exact low-rank solution;
* :func:`rebalance_compressed` — the same ``X`` with its learned directions carried by
  the factors (``U = P diag(u)``, ``u_i ∝ σ_i``), so that every one is corrected at the
  rate of the top one (the ``"rate"`` balance of :func:`prune_compressed`), and
  :func:`rebalance_for_polish`, that balance after a prune;
* :func:`reseed_compressed` — on a plateau the compressed network may have lost the
  missing direction from the span of its factors; the spare slots are re-initialised
  at scale ε along the top singular vectors of the residual, as greedy low-rank
  learning does (Li, Luo & Lyu 2021).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .._kernels import chain_product
from .._spectral import LOCAL, LocalRows, balanced_diagonal, fix_signs

__all__ = [
    "compressed_spectrum",
    "copy_compressed",
    "prune_compressed",
    "rebalance_compressed",
    "rebalance_for_polish",
    "reseed_compressed",
]


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
    P, Q = fix_signs(qu @ a, qv @ bh.T)
    return P, sigma, Q


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
        the full-width network reaches after
        :func:`~deepmc.models._layered_net.prune_layers` (with frozen factors the two
        then follow the same trajectory).
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
        d = torch.diag(balanced_diagonal(sigma, keep, depth))
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
    d = balanced_diagonal(sigma, keep, len(cores))
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
    copy_compressed(params, new)
    return True


def _moving_factors(params: dict[str, list[torch.Tensor]], lr_ratios: Any) -> bool:
    """Whether ``params`` are a compressed network's with factors that move (γ > 0)."""
    return "factors" in params and "cores" in params and bool(lr_ratios.get("factors", 0.0))


def copy_compressed(
    params: dict[str, list[torch.Tensor]],
    new: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]],
) -> None:
    """Write ``new = (U, V, cores)`` into the compressed network's ``params`` in place."""
    U, V = params["factors"]
    with torch.no_grad():
        for p, q in zip([U, V, *params["cores"]], [new[0], new[1], *new[2]], strict=True):
            p.copy_(q)

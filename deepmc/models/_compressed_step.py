"""The compressed network's step: residual and gradients on Ω, and its workspace.

``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` never forms an ``m × n`` matrix: the predictions on Ω are a
sampled product and the gradients sparse × dense products
(:class:`~deepmc._kernels.PatternKernels`). The step writes into a workspace of
buffers (:class:`CompressedWorkspace`) that the network's :class:`CompressedStepper`
builds once per fit, with the other per-fit constants of the step: the weights of the
row-weighted decay and the denominators of the row and column bias steps that
:class:`~deepmc.models._compressed_net.CompressedNetwork` adds to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .._data import TrainingData
from .._kernels import ObservedPattern, PatternKernels
from .._params import Params

if TYPE_CHECKING:
    from ._compressed_net import CompressedNetwork

__all__ = [
    "BIAS_STEP",
    "CompressedStepper",
    "CompressedWorkspace",
    "bias_denominators",
    "compressed_loss_and_grads",
    "compressed_residual_and_grads",
    "decay_excess",
    "decay_weights",
    "jacobi_bias_steps",
]


def compressed_residual_and_grads(
    pattern: ObservedPattern,
    y: torch.Tensor,
    s: float,
    U: torch.Tensor,
    V: torch.Tensor,
    cores: list[torch.Tensor],
    *,
    workspace: CompressedWorkspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Residual on Ω and gradients of ``ℓ = (s/2) Σ_Ω ((U C Vᵀ)_ij − y_ij)²``, ``C = W̃_L ⋯ W̃_1``.

    Never forms an ``m × n`` matrix (only row blocks of bounded size, see
    :class:`~deepmc._kernels.PatternKernels`), except for tiny matrices where dense BLAS
    products are faster: with ``A = U C``, the predictions on Ω are the
    sampled product ``(A Vᵀ)_Ω`` and, with ``R`` the sparse residual ``P_Ω(X) − y``,
    ``∇_V = s Rᵀ A``, ``∇_U = s (R V) Cᵀ`` and ``∇_C = s Uᵀ (R V)``, back-propagated
    through the cores. Cost O(N·k + (m+n)·k² + L·k³) for ``k = 2r̂``. The loss itself is
    ``(s/2)‖residual‖²``; the training loop reads it only at its checks.

    Parameters
    ----------
    pattern : ObservedPattern
        CSR structure of Ω (observations sorted by row, then column).
    y : Tensor of shape (N,)
        Observed values in the same order.
    s : float
        Loss scale ``m·n / N``.
    U : Tensor of shape (m, k)
    V : Tensor of shape (n, k)
    cores : list of Tensor of shape (k, k)
        ``[W̃_1, …, W̃_L]``.
    workspace : CompressedWorkspace, default=None
        Write the residual and all the gradients into its tensors instead of new ones,
        so that a training loop allocates nothing per step. The results are then
        overwritten by the next call with the same workspace.

    Returns
    -------
    residual : Tensor of shape (N,)
        ``X_Ω − y``.
    grad_U : Tensor of shape (m, k)
    grad_V : Tensor of shape (n, k)
        Column-major (transposed views) when the pattern's kernels write them so
        (:meth:`~deepmc._kernels.PatternKernels.tall`).
    grad_cores : list of Tensor of shape (k, k)
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in (U, V, *cores)):
        with torch.no_grad():  # closed-form gradients: nothing to record, and out= needs it
            return _residual_and_grads(pattern, y, s, U, V, cores, workspace)
    return _residual_and_grads(pattern, y, s, U, V, cores, workspace)


def _residual_and_grads(
    pattern: ObservedPattern,
    y: torch.Tensor,
    s: float,
    U: torch.Tensor,
    V: torch.Tensor,
    cores: list[torch.Tensor],
    workspace: CompressedWorkspace | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """:func:`compressed_residual_and_grads`, every product written with ``out=``.

    A step of a small problem is a few dozen kernels of a few microseconds each, so it
    is bounded by dispatch: no product here allocates its result (with a workspace), no
    transposed view is taken here per step, and the loops run over operands unrolled
    once per buffer set. The back-propagation through the cores runs
    on transposes, ``Tₗ = backₗᵀ``: with ``P_l = W_l ⋯ W_1`` the forward prefixes,

        ``T_L = Gᵀ = (s R V)ᵀ U``, ``∇_{W_l}ᵀ = P_{l−1} T_l``, ``T_{l−1} = T_l W_l``,

    so that every product takes the parameters as they are and writes its result
    through a transposed view made once (:class:`CompressedWorkspace`).
    """
    kernels = pattern.kernels(U.dtype)
    L = len(cores)
    b = CompressedWorkspace(kernels, U.shape[1], L, zeros=False) if workspace is None else workspace
    # forward: P_1 = W_1, P_l = W_l P_{l-1}; C = P_L
    P = cores[0]
    for i, out in b.forward:
        P = torch.mm(cores[i], P, out=out)
    A = torch.mm(U, P, out=b.A)
    resid, sRV, grad_V = kernels.residual_pair(A, V, y, alpha=s, out=b.pair)
    grad_U = torch.mm(sRV, b.C_t if L > 1 else cores[0].t(), out=b.grad_U)
    # backward on transposes: T_L = Gᵀ, ∇W_lᵀ = P_{l-1} T_l, T_{l-1} = T_l W_l
    T = torch.mm(b.sRV_t, U, out=b.T_L)
    for i, prefix, grad_t, back in b.backward:  # layer l = i + 1
        torch.mm(cores[0] if prefix is None else prefix, T, out=grad_t)
        T = torch.mm(T, cores[i], out=back)
    return resid, grad_U, grad_V, list(b.grads)  # a list of its own: callers may edit it


class CompressedWorkspace:
    """Results and temporaries of one compressed step, with the transposed views it writes through.

    Every step overwrites them. The ``m × k`` and ``n × k`` ones take the layout of
    :meth:`~deepmc._kernels.PatternKernels.tall`, in which the kernels write them
    fastest (column-major for small matrices): ``∇U`` and ``∇V`` may then be transposed
    views.

    Parameters
    ----------
    kernels : PatternKernels
        Of the pattern and dtype of the step.
    k : int
        The width of the factors and cores.
    L : int
        The number of cores.
    zeros : bool, default=True
        Start from zeros (no product ever meets stale NaNs, whatever its β = 0
        handling), else uninitialised (a workspace of one call).
    """

    def __init__(self, kernels: PatternKernels, k: int, L: int, *, zeros: bool = True) -> None:
        m, n = kernels.pattern.shape
        device = kernels.pattern.col.device
        fill = torch.zeros if zeros else torch.empty

        def new(shape: tuple[int, ...]) -> torch.Tensor:
            return fill(shape, dtype=kernels.dtype, device=device)

        def tall(rows: int) -> torch.Tensor:
            out = kernels.tall(rows, k)
            return out.zero_() if zeros else out

        self.A = tall(m)
        self.resid = new((kernels.pattern.n_observed,))
        self.sRV = tall(m)
        self.grad_V = tall(n)
        self.grad_U = tall(m)
        self.prefixes = [new((k, k)) for _ in range(2, L + 1)]
        self.back = [new((k, k)) for _ in range(2)]
        self.grads = [new((k, k)) for _ in range(1, L + 1)]
        self.grad_t = [g.t() for g in self.grads]
        self.sRV_t = self.sRV.t()
        self.C_t = self.prefixes[-1].t() if self.prefixes else None
        # the loops' operands, unrolled once: (core index, out) of the forward products and
        # (i, prefix P_{i-1} or None for W_1, ∇W_{i+1}ᵀ, next T) of the backward ones
        self.pair = (self.resid, self.sRV, self.grad_V)
        self.forward = list(zip(range(1, L), self.prefixes, strict=True))
        self.T_L = self.grad_t[0] if L == 1 else self.back[(L - 1) % 2]
        self.backward = [
            (
                i,
                None if i == 1 else self.prefixes[i - 2],
                self.grad_t[i],
                self.grad_t[0] if i == 1 else self.back[(i - 1) % 2],
            )
            for i in range(L - 1, 0, -1)
        ]


def compressed_loss_and_grads(
    pattern: ObservedPattern,
    y: torch.Tensor,
    s: float,
    U: torch.Tensor,
    V: torch.Tensor,
    cores: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """:func:`compressed_residual_and_grads` with the loss ``(s/2)‖residual‖²`` first.

    Returns
    -------
    loss : Tensor (scalar)
    residual, grad_U, grad_V, grad_cores
        As in :func:`compressed_residual_and_grads`.
    """
    resid, grad_U, grad_V, grad_cores = compressed_residual_and_grads(pattern, y, s, U, V, cores)
    return torch.dot(resid, resid).mul_(0.5 * s), resid, grad_U, grad_V, grad_cores


def decay_weights(pattern: ObservedPattern, exponent: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative row and column counts of Ω to the power α: ``(n_u m / N)^α``, ``(n_i n / N)^α``.

    The weights of the row-weighted decay of :class:`CompressedDeepMatrixCompletion`
    (``decay_weighting``). An empty row or column has weight 0 (for α > 0): nothing
    is learnt about it, and it keeps its initial factor row.

    Parameters
    ----------
    pattern : ObservedPattern
    exponent : float
        α.

    Returns
    -------
    row_weights : Tensor of shape (m,)
    col_weights : Tensor of shape (n,)

    Examples
    --------
    >>> import torch
    >>> from deepmc._kernels import ObservedPattern
    >>> pattern = ObservedPattern.from_coo(
    ...     torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 2, 0]), (2, 3))
    >>> [w.tolist() for w in decay_weights(pattern, 1.0)]
    [[1.5, 0.5], [1.5, 0.75, 0.75]]
    """
    m, n = pattern.shape
    n_obs = max(pattern.n_observed, 1)
    rows = (pattern.crow[1:] - pattern.crow[:-1]).to(torch.float64)
    cols = torch.bincount(pattern.col, minlength=n).to(torch.float64)
    return (rows * (m / n_obs)) ** exponent, (cols * (n / n_obs)) ** exponent


def decay_excess(
    pattern: ObservedPattern, exponent: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w − 1`` of :func:`decay_weights`, as ``(m, 1)`` and ``(n, 1)`` columns of ``dtype``."""
    return tuple(  # type: ignore[return-value]
        (w - 1).to(dtype)[:, None] for w in decay_weights(pattern, exponent)
    )


#: Fraction of a Jacobi step the row and column biases take per gradient step.
BIAS_STEP = 0.5


def bias_denominators(
    data: TrainingData, reg: float, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_u + λ_b`` per row and ``n_i + λ_b`` per column, as ``(m, 1)`` and ``(n, 1)`` columns.

    Of the dtype and device of ``like`` (a vector on Ω); floored at 1e-12: an empty row
    with λ_b = 0 would divide 0 by 0, and its step is 0 either way.
    """
    m, n = data.shape
    ones = torch.ones_like(like)
    n_u = torch.zeros(m, dtype=like.dtype, device=like.device).index_add_(0, data.rows, ones)
    n_i = torch.zeros(n, dtype=like.dtype, device=like.device).index_add_(0, data.cols, ones)
    return tuple((c + reg).clamp_(min=1e-12)[:, None] for c in (n_u, n_i))  # type: ignore[return-value]


def jacobi_bias_steps(
    data: TrainingData,
    resid: torch.Tensor,
    biases: list[torch.Tensor],
    reg: float,
    denominators: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """``(Σ_{j∈Ω_u} r_uj + λ_b a_u) / (n_u + λ_b)`` per row, likewise per column.

    The exact minimiser of the penalised loss over one row's bias, with everything else
    fixed, is ``a_u`` minus this; a step of η·ratio = :data:`BIAS_STEP` moves halfway.
    ``denominators`` are :func:`bias_denominators` (computed here when not given).
    """
    a, b = biases
    n = data.shape[1]
    den_u, den_i = denominators or bias_denominators(data, reg, resid)
    # Ω is sorted by row: the row sums are segment sums over the CSR offsets; 1-D
    # index_add_ for the columns (the (N, 1) form takes a slower per-slice path)
    sum_u = torch.segment_reduce(resid, "sum", offsets=data.pattern.crow)[:, None]
    sum_i = torch.zeros(n, dtype=resid.dtype, device=resid.device)
    sum_i = sum_i.index_add_(0, data.cols, resid)[:, None]
    return [sum_u.add_(a, alpha=reg).div_(den_u), sum_i.add_(b, alpha=reg).div_(den_i)]


class CompressedStepper:
    """One fit's steps of a compressed network: residual and gradients into one workspace.

    Built once per fit (:meth:`CompressedNetwork.stepper
    <deepmc.models._compressed_net.CompressedNetwork.stepper>`) with what every step
    reuses: the :class:`CompressedWorkspace`, the weights of the row-weighted decay and
    the denominators of the bias steps. Calling it with the parameters is
    :meth:`~deepmc.models._network.Network.residual_and_grads`; the residual and the
    gradients of ``U`` and ``V`` live in the workspace, which the next call overwrites:
    the solver copies what it keeps.

    Parameters
    ----------
    network : CompressedNetwork
    data : TrainingData
    """

    def __init__(self, network: CompressedNetwork, data: TrainingData) -> None:
        self.network, self.data = network, data
        kernels = data.pattern.kernels(data.dtype)
        self.workspace = CompressedWorkspace(kernels, 2 * network.rank, network.depth)
        self.excess = None
        if network.weight_decay != 0 and network.decay_weighting != 0:
            self.excess = decay_excess(data.pattern, network.decay_weighting, data.dtype)
        self.denominators = None
        if network.bias_reg is not None:
            self.denominators = bias_denominators(data, network.bias_reg, data.y)

    def __call__(self, params: Params) -> tuple[torch.Tensor, Params]:
        """``P_Ω(X − Y)`` and the gradients, group by group in the order of ``params``."""
        network, data = self.network, self.data
        U, V = params["factors"]
        y = data.y
        if network.bias_reg is not None:  # the network fits what the biases leave
            a, b = params["biases"]
            y = y - a.reshape(-1).index_select(0, data.rows)  # faster than a[rows, 0]
            y = y.sub_(b.reshape(-1).index_select(0, data.cols))
        resid, gU, gV, gcores = compressed_residual_and_grads(
            data.pattern, y, data.sampling_scale, U, V, params["cores"], workspace=self.workspace
        )
        if self.excess is not None:
            excess_u, excess_v = self.excess
            gU.addcmul_(excess_u, U, value=network.weight_decay)
            gV.addcmul_(excess_v, V, value=network.weight_decay)
        grads = {"cores": gcores, "factors": [gU, gV]}
        if network.bias_reg is not None:
            grads["biases"] = jacobi_bias_steps(
                data, resid, params["biases"], network.bias_reg, self.denominators
            )
        return resid, grads

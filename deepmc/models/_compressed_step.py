"""The compressed network's step: residual and gradients on Ω, and its workspace.

``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` never forms an ``m × n`` matrix: the predictions on Ω are a
sampled product and the gradients sparse × dense products
(:class:`~deepmc._kernels.PatternKernels`). The step writes into a workspace of
buffers kept by the pattern (:class:`_StepBuffers`). Also here: the weights of the
row-weighted decay and the row and column bias steps that
:class:`~deepmc.models._compressed.CompressedNetwork` adds to the step.
"""

from __future__ import annotations

import torch

from .._data import TrainingData
from .._kernels import ObservedPattern, PatternKernels

__all__ = [
    "BIAS_STEP",
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
    reuse: bool = False,
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
    reuse : bool, default=False
        Write the residual and all the gradients into buffers kept by ``pattern``
        (:meth:`~deepmc._kernels.PatternKernels.buffer`) instead of new tensors, so
        that a training loop allocates nothing per step. The results are then
        overwritten by the next call with ``reuse=True``.

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
            return _residual_and_grads(pattern, y, s, U, V, cores, reuse)
    return _residual_and_grads(pattern, y, s, U, V, cores, reuse)


def _residual_and_grads(
    pattern: ObservedPattern,
    y: torch.Tensor,
    s: float,
    U: torch.Tensor,
    V: torch.Tensor,
    cores: list[torch.Tensor],
    reuse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """:func:`compressed_residual_and_grads`, every product written with ``out=``.

    A step of a small problem is a few dozen kernels of a few microseconds each, so it
    is bounded by dispatch: no product here allocates its result (with ``reuse``), no
    transposed view is taken here per step, and the loops run over operands unrolled
    once per buffer set. The back-propagation through the cores runs
    on transposes, ``Tₗ = backₗᵀ``: with ``P_l = W_l ⋯ W_1`` the forward prefixes,

        ``T_L = Gᵀ = (s R V)ᵀ U``, ``∇_{W_l}ᵀ = P_{l−1} T_l``, ``T_{l−1} = T_l W_l``,

    so that every product takes the parameters as they are and writes its result
    through a transposed view made once (:class:`_StepBuffers`).
    """
    kernels = pattern.kernels(U.dtype)
    k, L = U.shape[1], len(cores)
    if reuse:
        b = kernels.memo(("compressed.step", k, L), lambda: _StepBuffers(kernels, k, L, True))
    else:
        b = _StepBuffers(kernels, k, L, False)
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


class _StepBuffers:
    """Results and temporaries of one compressed step, with the transposed views it writes through.

    With ``persistent`` the tensors are :meth:`~deepmc._kernels.PatternKernels.buffer`
    tensors of the pattern (the residual, ``s·R V``, ``∇V`` and ``∇U`` under the names
    ``"compressed.<name>"``), kept by :meth:`~deepmc._kernels.PatternKernels.memo` and
    overwritten by every step; otherwise they are new. The ``m × k`` and ``n × k``
    ones take the layout of :meth:`~deepmc._kernels.PatternKernels.tall`, in which the
    kernels write them fastest (column-major for small matrices): ``∇U`` and ``∇V``
    may then be transposed views.
    """

    def __init__(self, kernels: PatternKernels, k: int, L: int, persistent: bool) -> None:
        m, n = kernels.pattern.shape
        if persistent:
            def new(name: str, shape: tuple[int, ...]) -> torch.Tensor:
                return kernels.buffer(f"compressed.{name}", shape)

            def tall(name: str, rows: int) -> torch.Tensor:
                return kernels.tall(rows, k, name=f"compressed.{name}")
        else:
            device = kernels.pattern.col.device

            def new(name: str, shape: tuple[int, ...]) -> torch.Tensor:
                return torch.empty(shape, dtype=kernels.dtype, device=device)

            def tall(name: str, rows: int) -> torch.Tensor:
                return kernels.tall(rows, k)

        self.A = tall("A", m)
        self.resid = new("residual", (kernels.pattern.n_observed,))
        self.sRV = tall("sRV", m)
        self.grad_V = tall("grad_V", n)
        self.grad_U = tall("grad_U", m)
        self.prefixes = [new(f"prefix{j}", (k, k)) for j in range(2, L + 1)]
        self.back = [new(f"back{i}", (k, k)) for i in range(2)]
        self.grads = [new(f"grad_core{j}", (k, k)) for j in range(1, L + 1)]
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


def jacobi_bias_steps(
    data: TrainingData, resid: torch.Tensor, biases: list[torch.Tensor], reg: float
) -> list[torch.Tensor]:
    """``(Σ_{j∈Ω_u} r_uj + λ_b a_u) / (n_u + λ_b)`` per row, likewise per column.

    The exact minimiser of the penalised loss over one row's bias, with everything else
    fixed, is ``a_u`` minus this; a step of η·ratio = :data:`BIAS_STEP` moves halfway.
    """
    a, b = biases
    m, n = data.shape
    kernels = data.pattern.kernels(resid.dtype)

    def counts() -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones_like(resid)
        n_u = torch.zeros(m, dtype=resid.dtype, device=resid.device).index_add_(0, data.rows, ones)
        n_i = torch.zeros(n, dtype=resid.dtype, device=resid.device).index_add_(0, data.cols, ones)
        # an empty row with λ_b = 0 would divide 0 by 0: its step is 0 either way
        return tuple((c + reg).clamp_(min=1e-12)[:, None] for c in (n_u, n_i))

    den_u, den_i = kernels.memo(("compressed.bias_counts", reg), counts)
    # Ω is sorted by row: the row sums are segment sums over the CSR offsets; 1-D
    # index_add_ for the columns (the (N, 1) form takes a slower per-slice path)
    sum_u = torch.segment_reduce(resid, "sum", offsets=data.pattern.crow)[:, None]
    sum_i = torch.zeros(n, dtype=resid.dtype, device=resid.device)
    sum_i = sum_i.index_add_(0, data.cols, resid)[:, None]
    return [sum_u.add_(a, alpha=reg).div_(den_u), sum_i.add_(b, alpha=reg).div_(den_i)]

"""The compressed deep network ``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` (law of parsimony)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from .._base import _BaseDeepMC
from .._data import TrainingData
from .._kernels import ObservedPattern, PatternKernels, chain_product
from .._prune import LOCAL, LocalRows, compressed_spectrum, prune_compressed, reseed_compressed
from .._solver import Params
from .._validation import Interval, StrOptions
from ..init import parsimony, random_frames, spectral

__all__ = [
    "CompressedDeepMatrixCompletion",
    "CompressedNetwork",
    "compressed_loss_and_grads",
    "compressed_residual_and_grads",
    "decay_weights",
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


class CompressedDeepMatrixCompletion(_BaseDeepMC):
    r"""Deep matrix completion with the compressed network of the law of parsimony.

    Gradient descent on a deep linear network from ε-orthogonal init only changes each
    layer inside a 2r-dimensional subspace (Yaras et al. 2023). The compressed network
    trains only that part:

    .. math::

        X = U \, \tilde W_L \cdots \tilde W_1 \, V^\top, \qquad
        U \in \mathbb{R}^{m\times 2\hat r},\; V \in \mathbb{R}^{n\times 2\hat r},\;
        \tilde W_l \in \mathbb{R}^{2\hat r\times 2\hat r},\; \tilde W_l(0) = \varepsilon I,

    by gradient descent on the loss of :class:`DeepMatrixCompletion`,
    ``ℓ = (s/2) Σ_Ω (X_ij − Y_ij)²`` with ``s = m·n/N``: the cores with step η and the
    factors ``U``, ``V`` with the discrepant step γη (Yaras et al. 2024; Kwon et al.
    2024), without which completion stalls. No ``m × n`` array is formed: predictions
    on Ω are sampled products and gradients sparse × dense products, so a step costs
    O(N·r̂ + (m+n)·r̂² + L·r̂³) and the memory is O(N + (m+n)·r̂).

    As for :class:`DeepMatrixCompletion`, the observations are divided by σ₁ of
    ``s·P_Ω(Y)`` (``scale_``), which makes ``init_scale`` and the learning rates
    relative.

    Parameters
    ----------
    rank : int, default=10
        r̂, an over-estimate of the rank; the cores are ``2r̂ × 2r̂``. ``2*rank`` must not
        exceed ``min(m, n)``.
    depth : int, default=3
        Number of cores ``L`` (≥ 2).
    init : {"parsimony", "spectral", "random"}, default="parsimony"
        ``U(0), V(0)``: ``"parsimony"`` spans the subspace in which gradient descent
        acts on the full-width network at its ε-orthogonal init, so that
        ``X(0)`` is the full-width ``X(0)`` restricted to it (see
        :func:`deepmc.init.parsimony`); ``"spectral"`` takes the top-2r̂ singular
        vectors of ``s·P_Ω(Y)``; ``"random"`` random orthonormal frames.
    init_scale : float or "auto", default="auto"
        ε, relative to σ₁^{1/L}; ``"auto"`` is 0.1 when the fit prunes
        (``solver="auto"`` with ``optimizer="gd"``) and ``tol^{1/L}`` clipped to
        [1e-3, 0.1] otherwise, as in :class:`DeepMatrixCompletion`.
    lr : float or "auto", default="auto"
        η for the cores, normalised units (σ₁ = 1): ``"auto"`` is ``1/L`` for GD.
    factor_lr_ratio : float or "auto", default="auto"
        γ: ``U`` and ``V`` use ``γη``. ``"auto"`` is ``0.2·L`` for ``"gd"`` and
        ``"momentum"`` — a factor step of 0.2/σ₁², inside the range 0.1–0.3 found to
        converge on the benchmark problems — and 1 for ``"adam"``.
        ``0`` freezes the factors.
    optimizer : {"gd", "momentum", "adam"}, default="gd"
    solver : {"auto", "gd"}, default="auto"
        ``"auto"``: prune and polish, as in :class:`DeepMatrixCompletion`. The
        spectrum of ``X`` comes from QR of ``U`` and ``V`` and a ``2r̂ × 2r̂`` SVD (no
        ``m × n`` array); the prune rotates ``U``, ``V`` to the singular frames of
        ``X`` (all ``2r̂`` columns, so the kept directions can still turn) and sets
        every core to ``diag(σ₁^{1/L}, …, σ_k^{1/L}, 0, …)``. When the fit sits on a
        plateau whose missing direction the spare slots do not pick up (``σ_{k+1}``
        not growing from the ε^L level), those slots are re-initialised at ε along the
        residual's top singular vectors outside the learned directions, as greedy
        low-rank learning does (``"re-seeded ..."`` in ``history_["event"]``).
        ``"gd"``: plain gradient descent, step for step the papers' method.
    weight_decay : float, default=0.0
        λ: every core decays at λ (``W ← W − η(∇ℓ + λW)``); ``U`` and ``V`` at λ, or
        row by row as ``decay_weighting`` says.
    decay_weighting : float, default=0.0
        α: row ``u`` of ``U`` decays at ``λ·w_u`` and row ``i`` of ``V`` at ``λ·w_i``,
        with ``w_u = (n_u / n̄_row)^α``, ``w_i = (n_i / n̄_col)^α``, ``n_u`` the
        observations in row ``u`` and ``n̄_row = N/m`` their mean (likewise for columns).
        ``0``: uniform decay, plain weight decay. ``1``: the penalty
        ``λ/2 (Σ_u n_u/n̄ ‖U_u‖² + Σ_l ‖W̃_l‖² + Σ_i n_i/n̄ ‖V_i‖²)``, whose minimum over
        the factorisations of ``X`` is the Schatten-``2/(L+2)`` quasi-norm of
        ``D_r^{1/2} X D_c^{1/2}`` (``D`` the diagonal of the relative row and column
        counts): the weighted trace norm of Salakhutdinov & Srebro (2010) for a deep
        product, and the frequency-weighted ridge of ALS-WR (Zhou et al. 2008). Rows
        seen often are shrunk more in absolute terms, i.e. each observation costs the
        same. No effect when ``weight_decay=0``.
    bias_reg : float or None, default=None
        ``None``: no bias terms. A float λ_b ≥ 0 adds a bias per row and per column,
        ``X = U W̃_L ⋯ W̃_1 Vᵀ + a 1ᵀ + 1 bᵀ``, learnt with the network and penalised by
        ``(λ_b/2)(‖a‖² + ‖b‖²)`` in the loss's units ``s/2``: each bias counts as if it
        had λ_b extra observations at 0. They take a half Jacobi step per gradient step,
        ``a_u ← a_u − ½ (Σ_{j∈Ω_u} (X − Y)_{uj} + λ_b a_u) / (n_u + λ_b)`` (the diagonal
        of the bias Hessian spans the row counts, which rules out a common step);
        ``weight_decay`` adds ``λ a`` to that step as to any parameter.
    max_iter : int, default=20000
        Maximum number of gradient steps.
    tol : float, default=1e-6
        Stop when the fitted values on Ω change by at most ``tol`` (relative) between
        two checks and the residual shows no escaping direction, as in
        :class:`DeepMatrixCompletion`.
    check_every : int, default=25
        Steps between checks (tolerance, divergence, spectrum, history, progress).
        Nothing is read back from the device between checks.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the observed entries (seeded by
        ``random_state``), stop when their RMSE has not improved for
        ``n_iter_no_change`` checks, and keep the weights of the best check.
    validation_fraction : float, default=0.1
        Fraction of the observations held out when ``early_stopping=True``.
    n_iter_no_change : int, default=10
        Checks without improvement of the validation RMSE before stopping.
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``"auto"`` uses CUDA when available. Results are NumPy arrays on the host.
    dtype : {None, "float32", "float64"}, default=None
        ``None`` keeps float32 input in float32 and uses float64 otherwise.
    random_state : int, RandomState instance or None, default=None
        Seed of the initialisation (and of the validation split).
    verbose : int, default=0
        Show a progress bar with the current loss.
    warm_start : bool, default=False
        Continue from the fitted weights when refitting a matrix of the same shape, for
        another ``max_iter`` steps (``n_iter_`` and ``history_`` continue).

    Attributes
    ----------
    U_ : ndarray of shape (m, 2*rank)
    V_ : ndarray of shape (n, 2*rank)
    cores_ : list of ndarray of shape (2*rank, 2*rank)
        ``[W̃_1, …, W̃_L]``; ``X̂ = scale_ · U_ · W̃_L ⋯ W̃_1 · V_ᵀ`` (plus the biases).
    row_bias_ : ndarray of shape (m,)
        ``a`` (normalised units, like ``U_``), only with ``bias_reg`` set.
    col_bias_ : ndarray of shape (n,)
        ``b``, only with ``bias_reg`` set.
    scale_ : float
    lr_ : float
        η used for the cores (normalised units).
    factor_lr_ : float
        γη used for ``U`` and ``V``.
    init_scale_ : float
    n_iter_ : int
    best_iteration_ : int
    history_ : pandas.DataFrame
        As in :class:`DeepMatrixCompletion`.
    shape_ : tuple of (int, int)
    sampling_scale_ : float
    device_ : str
    n_features_in_ : int

    See Also
    --------
    DeepMatrixCompletion : The full-width and narrow networks.

    Notes
    -----
    Rows and columns without any observation are allowed, but nothing is learnt about
    them: their rows of ``U`` (or ``V``) receive no gradient and keep their initial
    values. Their predictions are therefore set by ``init``: zero (to rounding) for
    ``"spectral"``, whose singular vectors vanish there; small but nonzero for
    ``"parsimony"`` (the random frame of the full-width init, a few per cent of the
    data scale); arbitrary, of the data's scale, for ``"random"``. Do not use them as
    estimates.

    Divergence, Ctrl-C, ``warm_start`` and persistence behave as in
    :class:`DeepMatrixCompletion`.

    References
    ----------
    .. [1] C. Yaras, P. Wang, W. Hu, Z. Zhu, L. Balzano, Q. Qu. "The Law of Parsimony
       in Gradient Descent for Learning Deep Linear Networks", arXiv:2306.01154, 2023.
    .. [2] S. M. Kwon, Z. Zhang, D. Song, L. Balzano, Q. Qu. "Efficient Low-Dimensional
       Compression of Overparameterized Models", AISTATS 2024.
    .. [3] Z. Li, Y. Luo, K. Lyu. "Towards Resolving the Implicit Bias of Gradient
       Descent for Matrix Factorization: Greedy Low-Rank Learning", ICLR 2021.
    .. [4] R. Salakhutdinov, N. Srebro. "Collaborative Filtering in a Non-Uniform World:
       Learning with the Weighted Trace Norm", NeurIPS 2010.
    .. [5] Y. Zhou, D. Wilkinson, R. Schreiber, R. Pan. "Large-Scale Parallel
       Collaborative Filtering for the Netflix Prize", AAIM 2008.

    Examples
    --------
    >>> import numpy as np
    >>> from deepmc import CompressedDeepMatrixCompletion
    >>> rng = np.random.default_rng(0)
    >>> Phi = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 30))
    >>> X = np.where(rng.random(Phi.shape) < 0.5, Phi, np.nan)
    >>> est = CompressedDeepMatrixCompletion(rank=3, random_state=0).fit(X)
    >>> est.U_.shape, est.V_.shape, est.cores_[0].shape
    ((40, 6), (30, 6), (6, 6))
    >>> bool(np.linalg.norm(est.transform(X) - Phi) / np.linalg.norm(Phi) < 1e-3)
    True
    """

    _parameter_constraints: dict = {
        **_BaseDeepMC._parameter_constraints,
        "rank": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"parsimony", "spectral", "random"})],
        "factor_lr_ratio": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "decay_weighting": [Interval(Real, 0, None, closed="left")],
        "bias_reg": [None, Interval(Real, 0, None, closed="left")],
    }

    def __init__(
        self,
        rank: int = 10,
        *,
        depth: int = 3,
        init: str = "parsimony",
        init_scale: float | str = "auto",
        lr: float | str = "auto",
        factor_lr_ratio: float | str = "auto",
        optimizer: str = "gd",
        solver: str = "auto",
        weight_decay: float = 0.0,
        decay_weighting: float = 0.0,
        bias_reg: float | None = None,
        max_iter: int = 20_000,
        tol: float = 1e-6,
        check_every: int = 25,
        device: str = "auto",
        dtype: Any = None,
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 10,
    ) -> None:
        super().__init__(
            depth=depth,
            init_scale=init_scale,
            lr=lr,
            optimizer=optimizer,
            solver=solver,
            weight_decay=weight_decay,
            max_iter=max_iter,
            tol=tol,
            check_every=check_every,
            device=device,
            dtype=dtype,
            random_state=random_state,
            verbose=verbose,
            warm_start=warm_start,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
        )
        self.rank = rank
        self.init = init
        self.factor_lr_ratio = factor_lr_ratio
        self.decay_weighting = decay_weighting
        self.bias_reg = bias_reg

    def _resolve_factor_lr_ratio(self) -> float:
        """γ: ``0.2·L`` for ``"gd"`` and ``"momentum"``, 1 for ``"adam"``, when ``"auto"``."""
        if self.factor_lr_ratio != "auto":
            return float(self.factor_lr_ratio)
        return 1.0 if self.optimizer == "adam" else 0.2 * self.depth

    def _build_network(self, init_scale: float) -> CompressedNetwork:
        return CompressedNetwork(
            rank=self.rank,
            depth=self.depth,
            init=self.init,
            init_scale=init_scale,
            factor_lr_ratio=self._resolve_factor_lr_ratio(),
            weight_decay=float(self.weight_decay),
            decay_weighting=float(self.decay_weighting),
            bias_reg=None if self.bias_reg is None else float(self.bias_reg),
            bias_lr_ratio=BIAS_STEP / self._resolve_learning_rate(),
        )


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


def _decay_excess(
    pattern: ObservedPattern, exponent: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``w − 1`` of :func:`decay_weights`, as ``(m, 1)`` and ``(n, 1)`` columns of ``dtype``."""
    return tuple(  # type: ignore[return-value]
        (w - 1).to(dtype)[:, None] for w in decay_weights(pattern, exponent)
    )


#: Fraction of a Jacobi step the row and column biases take per gradient step.
BIAS_STEP = 0.5


def _jacobi_bias_steps(
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


def _copy_into(params: Params, new: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]) -> None:
    U, V, cores = new
    for p, q in zip([*params["factors"], *params["cores"]], [U, V, *cores], strict=True):
        p.copy_(q)


@dataclass(frozen=True)
class CompressedNetwork:
    """``X = U · W̃_L ⋯ W̃_1 · Vᵀ``: cores at η, factors ``U``, ``V`` at γη.

    Parameters
    ----------
    rank : int
        r̂; the cores are ``2r̂ × 2r̂``.
    depth : int
        L.
    init : {"parsimony", "spectral", "random"}
        ``U(0), V(0)``.
    init_scale : float
        ε: ``W̃_l(0) = εI``.
    factor_lr_ratio : float
        γ.
    weight_decay : float, default=0.0
        λ, which the optimizer applies to every parameter uniformly.
    decay_weighting : float, default=0.0
        α: with ``λ > 0`` and ``α > 0``, :meth:`residual_and_grads` adds the excess
        ``λ(w_u − 1) U_u`` and ``λ(w_i − 1) V_i`` of the row-weighted decay (see
        :func:`decay_weights`) to the factor gradients, so that optimizer and network
        together apply ``λ w_u U_u``. With ``α = 0`` the gradients are untouched.
    bias_reg : float or None, default=None
        λ_b of the row and column biases (parameter group ``"biases"``: ``a`` of shape
        ``(m, 1)``, ``b`` of shape ``(n, 1)``); ``None``: no biases.
    bias_lr_ratio : float, default=0.0
        Step ratio of the biases, whose "gradient" is the Jacobi-preconditioned one:
        ``BIAS_STEP / η`` makes each step :data:`BIAS_STEP` of a Jacobi step.
    """

    rank: int
    depth: int
    init: str
    init_scale: float
    factor_lr_ratio: float
    weight_decay: float = 0.0
    decay_weighting: float = 0.0
    bias_reg: float | None = None
    bias_lr_ratio: float = 0.0

    @property
    def lr_ratios(self) -> dict[str, float]:
        ratios = {"cores": 1.0, "factors": self.factor_lr_ratio}
        if self.bias_reg is not None:
            ratios["biases"] = self.bias_lr_ratio
        return ratios

    @property
    def n_singular(self) -> int:
        return {"parsimony": self.rank, "spectral": 2 * self.rank, "random": 1}[self.init]

    def check_shape(self, shape: tuple[int, int]) -> None:
        if min(shape) < 2:
            raise ValueError(
                f"X: the compressed network needs a matrix with at least 2 rows and 2 "
                f"columns (its width 2*rank is at least 2); got shape {shape} "
                f"(n_samples = {shape[0]}, n_features = {shape[1]})."
            )
        if 2 * self.rank > min(shape):
            raise ValueError(
                f"rank: the compressed network has width 2*rank = {2 * self.rank}, which "
                f"must not exceed min(m, n) = {min(shape)} for a matrix of shape {shape} "
                f"(n_samples={shape[0]}, n_features={shape[1]}); got rank={self.rank}, "
                f"expected 1 <= rank <= {min(shape) // 2}."
            )

    def initialize(self, data: TrainingData, u, v, generator: torch.Generator) -> Params:
        m, n = data.shape
        k = 2 * self.rank
        opts = {"dtype": data.dtype, "device": data.device}
        if self.init == "parsimony":
            U, V = parsimony(u, v, generator=generator, **opts)
        elif self.init == "spectral":
            U, V = spectral(u, v, **opts)
        else:
            U, V = random_frames(m, n, k, generator=generator, **opts)
        eye = torch.eye(k, **opts)
        cores = [self.init_scale * eye.clone() for _ in range(self.depth)]
        params = {"cores": cores, "factors": [U, V]}
        if self.bias_reg is not None:
            params["biases"] = [torch.zeros(m, 1, **opts), torch.zeros(n, 1, **opts)]
        return params

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """As :func:`compressed_residual_and_grads` with ``reuse=True``.

        The residual and the gradients of ``U`` and ``V`` live in buffers of
        ``data.pattern`` that the next call overwrites: the solver copies what it keeps.
        """
        U, V = params["factors"]
        y = data.y
        if self.bias_reg is not None:  # the network fits what the biases leave
            a, b = params["biases"]
            y = y - a.reshape(-1).index_select(0, data.rows)  # faster than a[rows, 0]
            y = y.sub_(b.reshape(-1).index_select(0, data.cols))
        resid, gU, gV, gcores = compressed_residual_and_grads(
            data.pattern, y, data.sampling_scale, U, V, params["cores"], reuse=True
        )
        if self.weight_decay != 0 and self.decay_weighting != 0:
            kernels = data.pattern.kernels(U.dtype)
            key = ("compressed.decay_excess", self.decay_weighting)
            excess_u, excess_v = kernels.memo(
                key, lambda: _decay_excess(data.pattern, self.decay_weighting, U.dtype)
            )
            gU.addcmul_(excess_u, U, value=self.weight_decay)
            gV.addcmul_(excess_v, V, value=self.weight_decay)
        grads = {"cores": gcores, "factors": [gU, gV]}
        if self.bias_reg is not None:
            grads["biases"] = _jacobi_bias_steps(data, resid, params["biases"], self.bias_reg)
        return resid, grads

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.y

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)`` with ``X = left · rightᵀ``: ``[U C, a, 1]`` and ``[V, 1, b]``."""
        U, V = params["factors"]
        left = U @ chain_product(params["cores"])
        if self.bias_reg is None:
            return left, V
        a, b = params["biases"]
        return torch.cat([left, a, torch.ones_like(a)], 1), torch.cat([V, torch.ones_like(b), b], 1)

    def step_work(self, data: TrainingData) -> int:
        return data.pattern.n_observed * 2 * self.rank * self.depth

    def spectrum(
        self, params: Params, *, rows: LocalRows = LOCAL
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD of the end-to-end ``X`` (see :func:`deepmc._prune.compressed_spectrum`)."""
        U, V = params["factors"]
        return compressed_spectrum(U, V, params["cores"], rows=rows)

    def prune(self, params: Params, keep: int, *, rows: LocalRows = LOCAL) -> None:
        """Cut ``X`` to its top ``keep`` directions in place (see ``prune_compressed``)."""
        U, V = params["factors"]
        _copy_into(params, prune_compressed(U, V, params["cores"], keep, rows=rows))

    def reseed(
        self,
        params: Params,
        keep: int,
        left: torch.Tensor,
        right: torch.Tensor,
        *,
        rows: LocalRows = LOCAL,
    ) -> None:
        """Re-initialise the slots past ``keep`` at ε along ``left``/``right``, in place."""
        U, V = params["factors"]
        new = reseed_compressed(
            U, V, params["cores"], keep, left, right, self.init_scale, rows=rows
        )
        _copy_into(params, new)

    def fitted_attributes(self, params: dict[str, list[np.ndarray]], lr: float) -> dict[str, Any]:
        U, V = params["factors"]
        fitted = {
            "cores_": params["cores"],
            "U_": U,
            "V_": V,
            "factor_lr_": lr * self.factor_lr_ratio,
        }
        if self.bias_reg is not None:
            a, b = params["biases"]
            fitted.update(row_bias_=a[:, 0], col_bias_=b[:, 0])
        return fitted

    def stored_params(self, attributes: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
        stored = {"cores": attributes["cores_"], "factors": [attributes["U_"], attributes["V_"]]}
        if self.bias_reg is not None:
            a, b = attributes["row_bias_"], attributes["col_bias_"]
            stored["biases"] = [a.reshape(-1, 1), b.reshape(-1, 1)]
        return stored

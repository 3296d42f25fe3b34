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
from .._prune import compressed_spectrum, prune_compressed, reseed_compressed
from .._solver import Params
from .._validation import Interval, StrOptions
from ..init import parsimony, random_frames, spectral

__all__ = [
    "CompressedDeepMatrixCompletion",
    "CompressedNetwork",
    "compressed_loss_and_grads",
    "compressed_residual_and_grads",
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
    is bounded by dispatch: no product here allocates its result (with ``reuse``), and
    no transposed view is taken per step. The back-propagation through the cores runs
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
    for W, out in zip(cores[1:], b.prefixes, strict=True):
        P = torch.mm(W, P, out=out)
    C_t = b.C_t if L > 1 else cores[0].t()
    A = torch.mm(U, P, out=b.A)
    resid = kernels.sampled(A, V, out=b.resid).sub_(y)
    sRV, grad_V = kernels.matmul_pair(resid, A, V, alpha=s, out=(b.sRV, b.grad_V))
    grad_U = torch.mm(sRV, C_t, out=b.grad_U)
    # backward on transposes: T_L = Gᵀ, ∇W_lᵀ = P_{l-1} T_l, T_{l-1} = T_l W_l
    T = torch.mm(b.sRV_t, U, out=b.grad_t[0] if L == 1 else b.back[(L - 1) % 2])
    for i in range(L - 1, 0, -1):  # layer l = i + 1
        torch.mm(cores[0] if i == 1 else b.prefixes[i - 2], T, out=b.grad_t[i])
        T = torch.mm(T, cores[i], out=b.grad_t[0] if i == 1 else b.back[(i - 1) % 2])
    return resid, grad_U, grad_V, list(b.grads)  # a list of its own: callers may edit it


class _StepBuffers:
    """Results and temporaries of one compressed step, with the transposed views it writes through.

    With ``persistent`` the tensors are :meth:`~deepmc._kernels.PatternKernels.buffer`
    tensors of the pattern (the residual, ``s·R V``, ``∇V`` and ``∇U`` under the names
    ``"compressed.<name>"``), kept by :meth:`~deepmc._kernels.PatternKernels.memo` and
    overwritten by every step; otherwise they are new.
    """

    def __init__(self, kernels: PatternKernels, k: int, L: int, persistent: bool) -> None:
        m, n = kernels.pattern.shape
        if persistent:
            def new(name: str, shape: tuple[int, ...]) -> torch.Tensor:
                return kernels.buffer(f"compressed.{name}", shape)
        else:
            device = kernels.pattern.col.device

            def new(name: str, shape: tuple[int, ...]) -> torch.Tensor:
                return torch.empty(shape, dtype=kernels.dtype, device=device)

        self.A = new("A", (m, k))
        self.resid = new("residual", (kernels.pattern.n_observed,))
        self.sRV = new("sRV", (m, k))
        self.grad_V = new("grad_V", (n, k))
        self.grad_U = new("grad_U", (m, k))
        self.prefixes = [new(f"prefix{j}", (k, k)) for j in range(2, L + 1)]
        self.back = [new(f"back{i}", (k, k)) for i in range(2)]
        self.grads = [new(f"grad_core{j}", (k, k)) for j in range(1, L + 1)]
        self.grad_t = [g.t() for g in self.grads]
        self.sRV_t = self.sRV.t()
        self.C_t = self.prefixes[-1].t() if self.prefixes else None


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
    max_iter : int, default=20000
    tol : float, default=1e-6
        Stop when the fitted values on Ω change by at most ``tol`` (relative) between
        two checks and the residual shows no escaping direction, as in
        :class:`DeepMatrixCompletion`.
    check_every : int, default=25
    early_stopping : bool, default=False
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=10
        As in :class:`DeepMatrixCompletion`.
    device : {"auto", "cpu", "cuda"}, default="auto"
    dtype : {None, "float32", "float64"}, default=None
    random_state : int, RandomState instance or None, default=None
    verbose : int, default=0
    warm_start : bool, default=False

    Attributes
    ----------
    U_ : ndarray of shape (m, 2*rank)
    V_ : ndarray of shape (n, 2*rank)
    cores_ : list of ndarray of shape (2*rank, 2*rank)
        ``[W̃_1, …, W̃_L]``; ``X̂ = scale_ · U_ · W̃_L ⋯ W̃_1 · V_ᵀ``.
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
        )


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
    """

    rank: int
    depth: int
    init: str
    init_scale: float
    factor_lr_ratio: float

    @property
    def lr_ratios(self) -> dict[str, float]:
        return {"cores": 1.0, "factors": self.factor_lr_ratio}

    @property
    def n_singular(self) -> int:
        return {"parsimony": self.rank, "spectral": 2 * self.rank, "random": 1}[self.init]

    def check_shape(self, shape: tuple[int, int]) -> None:
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
        return {"cores": cores, "factors": [U, V]}

    def residual_and_grads(self, data: TrainingData, params: Params) -> tuple[torch.Tensor, Params]:
        """As :func:`compressed_residual_and_grads` with ``reuse=True``.

        The residual and the gradients of ``U`` and ``V`` live in buffers of
        ``data.pattern`` that the next call overwrites: the solver copies what it keeps.
        """
        U, V = params["factors"]
        resid, gU, gV, gcores = compressed_residual_and_grads(
            data.pattern, data.y, data.sampling_scale, U, V, params["cores"], reuse=True
        )
        return resid, {"cores": gcores, "factors": [gU, gV]}

    def targets(self, data: TrainingData) -> torch.Tensor:
        return data.y

    def factors(self, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        U, V = params["factors"]
        return U @ chain_product(params["cores"]), V

    def step_work(self, data: TrainingData) -> int:
        return data.pattern.n_observed * 2 * self.rank * self.depth

    def spectrum(self, params: Params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Thin SVD of the end-to-end ``X`` (see :func:`deepmc._prune.compressed_spectrum`)."""
        U, V = params["factors"]
        return compressed_spectrum(U, V, params["cores"])

    def prune(self, params: Params, keep: int) -> None:
        """Cut ``X`` to its top ``keep`` directions in place (see ``prune_compressed``)."""
        U, V = params["factors"]
        _copy_into(params, prune_compressed(U, V, params["cores"], keep))

    def reseed(self, params: Params, keep: int, left: torch.Tensor, right: torch.Tensor) -> None:
        """Re-initialise the slots past ``keep`` at ε along ``left``/``right``, in place."""
        U, V = params["factors"]
        new = reseed_compressed(U, V, params["cores"], keep, left, right, self.init_scale)
        _copy_into(params, new)

    def fitted_attributes(self, params: dict[str, list[np.ndarray]], lr: float) -> dict[str, Any]:
        U, V = params["factors"]
        return {
            "cores_": params["cores"],
            "U_": U,
            "V_": V,
            "factor_lr_": lr * self.factor_lr_ratio,
        }

    def stored_params(self, attributes: Mapping[str, Any]) -> dict[str, list[np.ndarray]]:
        return {"cores": attributes["cores_"], "factors": [attributes["U_"], attributes["V_"]]}

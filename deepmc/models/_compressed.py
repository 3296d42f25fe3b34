"""The compressed deep network ``X = U · W̃_L ⋯ W̃_1 · Vᵀ`` (law of parsimony)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from numbers import Integral, Real
from typing import Any

from sklearn.exceptions import DataDimensionalityWarning

from .._base import _BaseDeepMC
from .._validation import Interval, StrOptions
from ._compressed_net import CompressedNetwork
from ._compressed_step import BIAS_STEP

__all__ = ["CompressedDeepMatrixCompletion"]


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
        r̂, an over-estimate of the rank; the cores are ``2r̂ × 2r̂``. ``2*rank`` cannot
        exceed ``min(m, n)``: on a smaller matrix the fit uses the largest rank that fits,
        ``min(m, n) // 2`` (``U_`` then has ``2 * (min(m, n) // 2)`` columns), with a
        :class:`~sklearn.exceptions.DataDimensionalityWarning`.
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
    U_ : ndarray of shape (m, 2*r̂)
        ``r̂`` is the rank bound fitted: ``rank``, or ``min(m, n) // 2`` if ``rank``
        did not fit.
    V_ : ndarray of shape (n, 2*r̂)
    cores_ : list of ndarray of shape (2*r̂, 2*r̂)
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
    rank_ : int
        The directions of ``X`` kept (at most ``r̂``), as in :class:`DeepMatrixCompletion`.
    noise_level_ : float
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

    def _network_for(self, shape: tuple[int, int], init_scale: float) -> CompressedNetwork:
        """The network, its rank clipped to ``min(m, n) // 2`` (with a warning) if larger."""
        network = self._build_network(init_scale)
        fits = min(shape) // 2
        if fits >= 1 and network.rank > fits:
            warnings.warn(
                f"rank={network.rank}: the compressed network's width 2*rank = "
                f"{2 * network.rank} exceeds min(m, n) = {min(shape)} for X of shape {shape}; "
                f"fitting rank {fits}, the largest that fits.",
                DataDimensionalityWarning,
                stacklevel=4,
            )
            network = replace(network, rank=fits)
        network.check_shape(shape)
        return network

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

"""The deep matrix factorisation ``X = W_L ⋯ W_1`` at full width or narrow width."""

from __future__ import annotations

from numbers import Integral
from typing import Any

from .._base import _BaseDeepMC
from .._validation import Interval
from ._layered_net import FullNetwork
from ._narrow_net import NarrowNetwork

__all__ = ["DeepMatrixCompletion"]


class DeepMatrixCompletion(_BaseDeepMC):
    r"""Deep matrix completion with a full-width (or narrow) deep linear network.

    Fits ``X = W_L ⋯ W_1`` to the observed entries Ω of ``Y`` by gradient descent on

    .. math::

        \ell(\Theta) = \frac{s}{2} \sum_{(i,j)\in\Omega} (X_{ij} - Y_{ij})^2
        + \frac{\lambda}{2} \sum_l \|W_l\|_F^2, \qquad s = \frac{mn}{N},

    so that ℓ ≈ ½‖X − Φ‖²_F whatever the sampling rate, from the ε-scaled orthogonal
    initialisation ``W_lᵀW_l = ε²I`` or ``W_lW_lᵀ = ε²I``, with ``W_1 ∈ R^{w×n}``,
    ``W_l ∈ R^{w×w}``, ``W_L ∈ R^{m×w}``. With ``width=None`` (``w = max(m, n)``) this is
    the "original" over-parameterised network of the law of parsimony, trained exactly:
    every step forms ``X`` and costs O(L·w³). ``width=2*rank`` gives the narrow network
    the papers compare against. A given width is trained on the observed entries with
    the products of :class:`~deepmc.CompressedDeepMatrixCompletion` (``U = W_L``,
    ``V = W_1ᵀ``, the cores ``W_2 … W_{L−1}``): the same gradients, up to rounding,
    without the ``m × n`` arrays.

    Internally the observations are divided by σ₁, the top singular value of
    ``s·P_Ω(Y)`` (stored in ``scale_``), so ``init_scale`` and ``lr`` are relative:
    one value fits every data scale.

    Parameters
    ----------
    width : int, default=None
        Hidden width ``w``; ``None`` means ``max(m, n)``.
    depth : int, default=3
        Number of layers ``L`` (≥ 2).
    init_scale : float or "auto", default="auto"
        ε, relative to σ₁^{1/L}. The initial plateau lasts about 1/(η ε^{L−2}) steps
        and plain gradient descent floors at a recovery error of about ε^L. ``"auto"``
        is 0.1 (0.03 at full width, ``width=None``) when the fit prunes
        (``solver="auto"`` with ``optimizer="gd"``: the prune removes the floor) and
        ``tol^{1/L}`` clipped to [1e-3, 0.1] otherwise.
    lr : float or "auto", default="auto"
        Step size η for the normalised problem (σ₁ = 1). ``"auto"`` is ``1/L`` for
        ``"gd"`` (half the stability limit 2/(L σ₁^{2−2/L})), ``0.1/L`` for
        ``"momentum"`` and ``1e-2`` for ``"adam"``.
    optimizer : {"gd", "momentum", "adam"}, default="gd"
        Plain gradient descent (the papers' setting), heavy ball (β = 0.9), or Adam.
    solver : {"auto", "gd"}, default="auto"
        ``"auto"``: prune and polish. At the checks the singular values of the
        end-to-end ``X`` are read; once the largest ratio between consecutive ones is
        at least 20, the values above it have settled and cutting the ones below
        leaves no residual direction that the data still ask for, ``X`` is cut to the
        directions above the gap and every layer re-set to a balanced factorisation of
        them (the hidden frames are the images of the kept input directions; the
        complement, which the law of parsimony shows to be ``ρ(t)·`` an orthogonal
        map with ``ρ → 0`` as ε → 0, is set to its limit 0). Gradient descent then
        polishes the exact low-rank solution: the cut directions stay zero, so the
        ε^L error floor is gone; two checks after the prune it takes heavy-ball steps
        with β set from the contraction those checks measured (``"heavy-ball steps,
        momentum β"``). The rank is never given: the gap finds it. The prune
        is recorded as ``"pruned to rank k"`` in ``history_["event"]``; with
        ``optimizer`` other than ``"gd"`` nothing is pruned. ``"gd"``: plain
        constant-step gradient descent from the ε-orthogonal initialisation, the
        papers' method, step for step (the fidelity mode for studying it). Both stop
        by the rule of ``tol``.
    weight_decay : float, default=0.0
        λ; the GD step is ``W ← (1 − ηλ)W − η∇ℓ``.
    max_iter : int, default=20000
        Maximum number of gradient steps.
    tol : float, default=1e-6
        Stop when the fitted values on Ω change by at most ``tol`` relative to their
        norm between two checks, ``‖X_Ω(t) − X_Ω(t − check_every)‖_F / ‖X_Ω(t)‖_F ≤ tol``,
        *and* the fit is not on a saddle: deep linear networks learn one singular
        direction after another, and between two of them the fitted values barely
        move. The residual ``s·P_Ω(X − Y)`` outside the learned directions of ``X``
        (those above 10·ε^L) must have no singular value that stands out of its bulk
        (3× its RMS singular value) and exceeds 1 % of σ₁(X); otherwise the fit goes
        on, and ends, at ``max_iter``, with a ``ConvergenceWarning`` that names the
        direction left. This ends an exact fit, a fit at the ε^L floor of small
        initialisation and a fit of noisy data alike; the relative training residual
        ``‖P_Ω(X − Y)‖_F / ‖P_Ω(Y)‖_F`` is recorded in ``history_`` beside it.
    check_every : int, default=25
        Steps between checks (tolerance, divergence, history, progress). Nothing is
        read back from the device between checks.
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
        Seed of the initialisation.
    verbose : int, default=0
        Show a progress bar with the current loss.
    warm_start : bool, default=False
        Continue from the fitted weights when refitting a matrix of the same shape, for
        another ``max_iter`` steps (``n_iter_`` and ``history_`` continue).

    Attributes
    ----------
    weights_ : list of ndarray
        ``[W_1, …, W_L]`` in normalised units: ``X̂ = scale_ · W_L ⋯ W_1``.
    scale_ : float
        σ₁ of ``s·P_Ω(Y)``, the normalisation of the observations.
    lr_ : float
        The step size η used (normalised units; after any divergence back-off).
    init_scale_ : float
        The ε used.
    width_ : int
        The hidden width used.
    n_iter_ : int
        Number of gradient steps taken.
    best_iteration_ : int
        The iteration whose weights were kept: ``n_iter_`` unless early stopping
        restored an earlier check.
    rank_ : int
        The directions of ``X`` kept: the rank of the prune (at a spectral gap, or at
        the noise edge on noisy data), else the number learned.
    noise_level_ : float
        The noise standard deviation per entry estimated from the final residual at
        ``rank_``, in the data's units (about 0 on exact low-rank data; NaN when too
        few degrees of freedom are left). See the documentation's *Noisy matrices*.
    history_ : pandas.DataFrame
        One row per check: ``iteration``, ``seconds`` (since ``fit`` was called,
        initialisation included, less the time spent evaluating ``eval_set``),
        ``loss`` (data-fit term, in the units of the data), ``residual`` (relative
        training residual), ``change`` (the stopping quantity), ``lr``,
        ``eval_error``/``eval_rmse``/``eval_seconds`` (evaluation time so far) when
        ``eval_set`` is given, ``val_error``/``val_rmse`` with early stopping or a
        ``validation_set`` (their time counts: they steer the fit), and ``event`` (``pruned
        to rank k``, divergence
        back-off, ``converged``, ``early_stopping``, ``max_iter`` or ``interrupted``).
    shape_ : tuple of (int, int)
        ``(m, n)``.
    sampling_scale_ : float
        ``s = m·n / N``.
    device_ : str
        The device the fit ran on.
    n_features_in_ : int
        ``n``.

    See Also
    --------
    CompressedDeepMatrixCompletion : The compressed network, O((m+n)·r̂) per step.

    Notes
    -----
    Memory is O(L·w² + m·n) at full width and O(N + (m+n)·w + L·w²) at a given width;
    the fit refuses to start (``MemoryError``, before any weight is allocated) when the
    estimate exceeds the memory available on the device.

    Rows and columns without any observation are allowed, but nothing is learnt about
    them: the rows of ``W_L`` (and columns of ``W_1``) that they touch receive no
    gradient and keep their ε-scale initial values, so their predictions are small
    (of order ε relative to the data) and carry no information.

    A diverging step raises :class:`~deepmc.DivergenceError` with an explicit ``lr``;
    with ``lr="auto"`` the step is halved from the last check (recorded in the
    ``event`` column of ``history_``). Ctrl-C stops at the end of the current step and
    keeps the state reached, with a ``RuntimeWarning``; a second Ctrl-C aborts. With
    ``warm_start=True`` a refit continues for another ``max_iter`` steps. The fitted
    state is NumPy, so a model fitted on CUDA pickles and predicts without a GPU.

    References
    ----------
    .. [1] C. Yaras, P. Wang, W. Hu, Z. Zhu, L. Balzano, Q. Qu. "The Law of Parsimony
       in Gradient Descent for Learning Deep Linear Networks", arXiv:2306.01154, 2023.

    Examples
    --------
    >>> import numpy as np
    >>> from deepmc import DeepMatrixCompletion
    >>> rng = np.random.default_rng(0)
    >>> Phi = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 30))
    >>> X = np.where(rng.random(Phi.shape) < 0.5, Phi, np.nan)
    >>> est = DeepMatrixCompletion(random_state=0).fit(X)
    >>> completed = est.transform(X)
    >>> bool(np.linalg.norm(completed - Phi) / np.linalg.norm(Phi) < 1e-3)
    True
    """

    _parameter_constraints: dict = {
        **_BaseDeepMC._parameter_constraints,
        "width": [None, Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        width: int | None = None,
        *,
        depth: int = 3,
        init_scale: float | str = "auto",
        lr: float | str = "auto",
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
        self.width = width

    def _prune_init_scale(self, shape: tuple[int, int] | None = None) -> float:
        # At full width the ε-sized complement spans every direction of X; at ε = 0.1 it
        # fits the unobserved entries before a spectral gap forms (problem A: no gap in
        # 3,000 steps), while ε = 0.03 prunes at step 275 and reaches 1e-6 at 775. A
        # "narrow" width of at least min(m, n) spans every direction too.
        full = self.width is None or (shape is not None and self.width >= min(shape))
        return 0.03 if full else super()._prune_init_scale(shape)

    def _build_network(self, init_scale: float) -> FullNetwork | NarrowNetwork:
        # full width: dense square layers, X formed at every step; a given width: the
        # same model on the kernels of Ω (the products of the compressed network)
        if self.width is None:
            return FullNetwork(width=None, depth=self.depth, init_scale=init_scale)
        return NarrowNetwork(width=int(self.width), depth=self.depth, init_scale=init_scale)

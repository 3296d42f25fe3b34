"""The spectral policy of a fit: plateau-aware stopping, and prune & polish.

From small initialisation a deep linear network learns the singular directions of its
target one after another; :class:`SpectralMonitor` reads the spectrum of ``X`` and the
residual at the solver's checks (its ``stop_rule`` and ``callback``) with
:mod:`deepmc._spectral`, and edits the network through its own methods (``prune``,
``rebalance``, ``reseed``: :class:`~deepmc.models._network.Network`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._data import TrainingData
from ._noise import (
    cut_rank,
    degrees_of_freedom,
    noise_edge,
    noise_level,
    rss_by_rank,
    signal_rank,
    statistically_settled,
)
from ._spectral import (
    LOCAL,
    MIN_GAP,
    LocalRows,
    ResidualProducts,
    escaping_direction,
    find_gap,
)

__all__ = ["LINEAR", "OUTLIER", "RESOLUTION", "SpectralMonitor"]

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
    _residual: ResidualProducts | None = field(default=None, repr=False)
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
                self._residual = ResidualProducts(data)
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
            self._residual = ResidualProducts(data)
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
        with torch.no_grad():
            if stable and not self._escaping(check, an, keep):
                self.network.prune(check.params, keep, rows=self.rows)
                self.network.rebalance_for_polish(check.params, keep, rows=self.rows)
                self.pruned = keep
                note = f"pruned to rank {keep}"
            elif (
                stable
                and self.network.can_reseed
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
            elif (
                self.network.rebalances
                and self.rebalanced != keep
                and self._linear(check, an, keep) <= LINEAR
            ):
                self.network.rebalance(check.params, keep, rows=self.rows)
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
            self.network.rebalance_for_polish(check.params, keep, rows=self.rows)
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

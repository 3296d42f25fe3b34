"""The spectral policy of a fit: plateau-aware stopping, and prune & polish.

From small initialisation a deep linear network learns the singular directions of its
target one after another (incremental learning; Saxe et al. 2014, Arora et al. 2019,
Li, Luo & Lyu 2021). :class:`SpectralMonitor` reads the spectrum of ``X`` and the
residual at the solver's checks (its ``stop_rule`` and ``callback``) and acts on them
through the network's own methods (:class:`~deepmc.models._network.Network`). Its parts
share one analysis per check:

* :mod:`~deepmc._policy._analysis` — the spectrum of ``X``, its gap, the directions
  learned, and what the residual has left outside and along them;
* :mod:`~deepmc._policy._plateau` — the stop rule: settled and nothing left to learn;
* :mod:`~deepmc._policy._prune_polish` — prune at a spectral gap, re-seed on a plateau,
  re-balance in the linear regime;
* :mod:`~deepmc._policy._noise_cut` — on noisy data, the cut at the noise edge and the
  stop of its polish (with the statistics of :mod:`deepmc._noise`);
* :mod:`~deepmc._policy._momentum` — heavy-ball steps once the learned part is posed;
* :mod:`~deepmc._policy._state` — what is carried between checks (and checkpointed).
"""

from __future__ import annotations

from ._monitor import SpectralMonitor

__all__ = ["SpectralMonitor"]

"""The optimizers of the training loop: gradient descent, heavy ball (both
:class:`GradientDescent`) and Adam, each parameter group at its own step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ._params import Params

__all__ = ["GradientDescent", "make_optimizer", "step"]


class GradientDescent:
    """Plain gradient descent ``W ← (1 − ηλ)W − η∇ℓ`` over parameter groups.

    The arithmetic of :class:`torch.optim.SGD` with ``momentum=0`` (the gradient plus
    ``λW``, then ``W − η·that``, element by element), without its per-step dispatch
    overhead, and without the lazy import of ``torch._dynamo`` that the first
    ``SGD.step()`` of a process triggers (seconds, which would dominate the wall clock
    of a small fit).

    Parameters
    ----------
    param_groups : list of dict
        As for :class:`torch.optim.SGD`: ``"params"`` and ``"lr"`` in each; other keys
        are kept.
    weight_decay : float, default=0.0
        λ.
    momentum : float, default=0.0
        A fixed β for the whole run (``optimizer="momentum"``: 0.9); with the default 0
        the steps are plain until a callback sets :attr:`momentum`.

    Attributes
    ----------
    momentum : float
        β of heavy-ball steps ``v ← βv + ∇ℓ``, ``W ← W − ηv`` (Polyak 1964), the
        arithmetic of :class:`torch.optim.SGD` with ``momentum=β``; 0 is plain steps.
        Setting it starts the velocity afresh.
    schedule_momentum : bool
        Whether a callback may set :attr:`momentum` (the polish after a prune sets β
        from the contraction it measures): true unless β was fixed at construction.

    Examples
    --------
    >>> import torch
    >>> W = torch.ones(2)
    >>> W.grad = torch.full((2,), 0.5)
    >>> GradientDescent([{"params": [W], "lr": 0.1}], weight_decay=1.0).step()
    >>> W
    tensor([0.8500, 0.8500])
    """

    def __init__(
        self, param_groups: list[dict], weight_decay: float = 0.0, momentum: float = 0.0
    ) -> None:
        self.param_groups = [dict(g, params=list(g["params"])) for g in param_groups]
        self.weight_decay = float(weight_decay)
        self.state: dict = {}
        self.momentum = momentum
        self.schedule_momentum = momentum == 0

    @property
    def momentum(self) -> float:
        return self._momentum

    @momentum.setter
    def momentum(self, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum: expected 0 <= beta < 1, got {beta!r}.")
        self._momentum = float(beta)
        self.state = {}

    def step(self, grads: Sequence[Sequence[torch.Tensor]] | None = None) -> None:
        """One step with the ``.grad`` of every parameter (parameters without one are skipped).

        Parameters
        ----------
        grads : sequence of sequence of Tensor, default=None
            The gradients instead, one sequence per parameter group (in the order of
            ``param_groups``) with one tensor per parameter; no ``.grad`` is read.
            The training loop passes its gradients so: setting and reading ``.grad``
            is a measurable share of the small step of problem A.
        """
        groups = self.param_groups
        if torch.is_grad_enabled() and any(p.requires_grad for g in groups for p in g["params"]):
            with torch.no_grad():  # in-place updates of leaves that require grad
                self._step(grads)
        else:  # the fit's parameters: no grad-mode switch
            self._step(grads)

    def _step(self, given: Sequence[Sequence[torch.Tensor]] | None) -> None:
        wd = self.weight_decay
        groups = self.param_groups
        for group, group_grads in zip(groups, given or [None] * len(groups), strict=True):
            if group_grads is None:
                params = [p for p in group["params"] if p.grad is not None]
                grads = [p.grad for p in params]
            else:
                params, grads = group["params"], list(group_grads)
                if len(grads) != len(params):
                    raise ValueError(
                        f"grads: expected {len(params)} tensors for a group of "
                        f"{len(params)} parameters, got {len(grads)}."
                    )
            if wd != 0:
                grads = torch._foreach_add(grads, params, alpha=wd)
            if self._momentum:
                grads = self._velocity(params, grads)
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    def _velocity(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list:
        """``v ← βv + g`` per parameter (``v = g`` at its first step); returns the ``v``.

        A new velocity starts at 0, so that every step is the same two foreach calls
        over the group (fewer launches on problem A's small step than two kernels per
        parameter launched from Python), with the same roundings.
        """
        velocity = []
        for p, g in zip(params, grads, strict=True):
            v = self.state.get(id(p))
            if v is None:  # its own tensor: g may be a buffer that the next gradient overwrites
                v = self.state[id(p)] = torch.zeros_like(g)
            velocity.append(v)
        torch._foreach_mul_(velocity, self._momentum)
        torch._foreach_add_(velocity, grads)
        return velocity

    def state_dict(self) -> dict:
        """β and the velocity of every parameter (``None`` before its first heavy-ball step).

        As :meth:`torch.optim.Optimizer.state_dict`, the state is listed in the order of
        the parameters, group by group, so that it loads into an optimizer over other
        tensors of the same shapes (a run resumed from a checkpoint).
        """
        params = [p for g in self.param_groups for p in g["params"]]
        velocity = [self.state.get(id(p)) for p in params]
        return {
            "momentum": self._momentum,
            "velocity": [None if v is None else v.clone() for v in velocity],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (β, then the velocities onto these parameters)."""
        params = [p for g in self.param_groups for p in g["params"]]
        if len(state["velocity"]) != len(params):
            raise ValueError(
                f"state: expected the velocity of {len(params)} parameters, got "
                f"{len(state['velocity'])}."
            )
        self.momentum = state["momentum"]
        for p, v in zip(params, state["velocity"], strict=True):
            if v is not None:
                self.state[id(p)] = v.to(device=p.device, dtype=p.dtype).clone()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None


def make_optimizer(
    params: Params,
    lr: float,
    *,
    lr_ratios: Mapping[str, float],
    kind: str = "gd",
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer | GradientDescent:
    """The optimizer of ``kind`` over ``params``, group ``name`` at ``lr · lr_ratios[name]``.

    Parameters
    ----------
    params : dict of str to list of Tensor
        Named parameter groups.
    lr : float
        η, the base step.
    lr_ratios : mapping of str to float
        Per-group multiplier of η (missing groups use 1); every key must name a group of
        ``params``, so that a misspelt one cannot leave its group at η.
    kind : {"gd", "momentum", "adam"}, default="gd"
        Plain gradient descent, heavy ball with a fixed β = 0.9 (both
        :class:`GradientDescent`), or Adam.
    weight_decay : float, default=0.0
        λ.

    Raises
    ------
    ValueError
        If a key of ``lr_ratios`` is not a group of ``params``.
    """
    unknown = sorted(set(lr_ratios) - set(params))
    if unknown:
        raise ValueError(
            f"lr_ratios: no parameter group named {', '.join(map(repr, unknown))}; the "
            f"network's groups are {', '.join(map(repr, params))}."
        )
    param_groups = [
        {"params": ps, "lr": lr * lr_ratios.get(name, 1.0), "name": name}
        for name, ps in params.items()
    ]
    wd = float(weight_decay)
    if kind == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd)
    if kind in ("gd", "momentum"):  # the arithmetic of SGD, less overhead
        return GradientDescent(param_groups, weight_decay=wd, momentum=0.9 * (kind == "momentum"))
    raise ValueError(f"optimizer: expected 'gd', 'momentum' or 'adam', got {kind!r}.")


def step(flat: Sequence[torch.Tensor], grads: Params, optimizer: Any) -> None:
    """One optimizer step: ``grads`` (in the order of ``flat``) become the ``.grad``.

    A :class:`GradientDescent` (whose groups are those of ``grads``, as
    :func:`make_optimizer` builds them) takes them directly instead.
    """
    if isinstance(optimizer, GradientDescent):
        optimizer.step(list(grads.values()))
        return
    for p, g in zip(flat, (g for gs in grads.values() for g in gs), strict=True):
        p.grad = g
    optimizer.step()

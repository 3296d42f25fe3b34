"""Named parameter groups: what a network hands the optimizer, the loop and the policy.

Defined apart from the solver and the network protocol so that both can name it without
importing each other.
"""

from __future__ import annotations

import torch

__all__ = ["Params"]

#: Parameters (or their gradients) as named groups of tensors; group ``g`` moves at
#: ``lr · network.lr_ratios[g]``.
Params = dict[str, list[torch.Tensor]]

"""Shared fixtures: seeded problems and the devices to run on."""

from __future__ import annotations

import pytest
import torch

from deepmc.datasets import make_problem

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def problem_a():
    """DESIGN.md problem A: 100×100, rank 5, 30 % observed (seed 0)."""
    return make_problem("A", random_state=0)

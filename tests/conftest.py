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
    """Reference problem A (Kwon et al. 2024): 100×100, rank 5, 30 % observed (seed 0)."""
    return make_problem("A", random_state=0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny problems, restored afterwards.

    A step on a tiny problem is a few dozen microsecond kernels; with two threads on a
    contended machine most of the time goes to OpenMP synchronisation.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

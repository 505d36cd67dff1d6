"""Shared fixtures."""

from __future__ import annotations

import os

# One torch/OpenMP thread per pytest-xdist worker: with two workers on two cores, torch's default
# thread pool oversubscribes the CPUs and its spinning threads starve the simulators (a 10 s
# digits training took 12 minutes beside a Verilator build). Set before any test imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402

from spikeforge.image import Image

from .strategies import random_image


@pytest.fixture
def small_image() -> Image:
    return random_image(1, (6, 10, 3), split=True, recurrent=0)

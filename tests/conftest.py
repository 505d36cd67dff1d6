"""Shared fixtures."""

from __future__ import annotations

import pytest

from spikeforge.image import Image

from .strategies import random_image


@pytest.fixture
def small_image() -> Image:
    return random_image(1, (6, 10, 3), split=True, recurrent=0)

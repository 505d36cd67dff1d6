"""The virtual board (whole SoC in Verilator) whose gateware holds the image without its
weights and loads them from a simulated SPI flash at reset: outputs equal the golden model of
the flashed image; a corrupt flash leaves every step refused with NOT_LOADED."""

from __future__ import annotations

import time

import numpy as np
import pytest

from spikeforge.boards.runtime import Board, BoardError
from spikeforge.hdl.flashload import PyLoadError, image_blob
from spikeforge.hdl.rtl import available_simulators
from spikeforge.sim import golden

from .strategies import random_image

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="the virtual board needs Verilator")


def _wait_loaded(board, want_error=False):
    for _ in range(100):
        device = board.status().device
        if (device.load_error != 0) if want_error else not device.not_loaded:
            return device
        time.sleep(0.05)
    raise AssertionError("the flash loader never finished")


def _case():
    """The first small split image whose golden outputs spike on its random input (a test of
    something), whatever the image strategy draws for a given seed."""
    for seed in range(21, 121):
        image = random_image(seed, (6, 10, 4), split=True)
        rng = np.random.default_rng(seed)
        x = (rng.random((2, 6, image.n_inputs)) < 0.5).astype(np.uint8)
        if golden.run(image, x).spikes.sum() > 0:
            return image, x
    raise AssertionError("no image of seeds 21..120 spikes at its output")


def test_virtual_board_loads_from_flash_and_matches_golden():
    image, x = _case()
    with Board.virtual(image, flash=True) as board:
        _wait_loaded(board)
        result = board.run(x)
    expect = golden.run(image, x)
    assert expect.spikes.sum() > 0
    assert (result.spikes == expect.spikes).all()
    assert (result.sops == expect.sops).all()


def test_virtual_board_with_a_corrupt_flash_refuses_to_run():
    image, _ = _case()
    blob = bytearray(image_blob(image))
    blob[-1] ^= 0xFF
    with Board.virtual(image, flash=bytes(blob)) as board:
        device = _wait_loaded(board, want_error=True)
        assert device.not_loaded and device.load_error == PyLoadError.CRC
        with pytest.raises(BoardError, match="NOT_LOADED"):
            board.run(np.zeros((1, 2, image.n_inputs), dtype=np.uint8))

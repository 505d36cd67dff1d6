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


def test_virtual_board_loads_from_flash_and_matches_golden():
    image = random_image(21, (6, 10, 4), split=True)
    rng = np.random.default_rng(21)
    x = (rng.random((2, 6, image.n_inputs)) < 0.5).astype(np.uint8)
    with Board.virtual(image, flash=True) as board:
        _wait_loaded(board)
        result = board.run(x)
    expect = golden.run(image, x)
    assert expect.spikes.sum() > 0  # a test of something
    assert (result.spikes == expect.spikes).all()
    assert (result.sops == expect.sops).all()


def test_virtual_board_with_a_corrupt_flash_refuses_to_run():
    image = random_image(21, (6, 10, 4), split=True)
    blob = bytearray(image_blob(image))
    blob[-1] ^= 0xFF
    with Board.virtual(image, flash=bytes(blob)) as board:
        device = _wait_loaded(board, want_error=True)
        assert device.not_loaded and device.load_error == PyLoadError.CRC
        with pytest.raises(BoardError, match="NOT_LOADED"):
            board.run(np.zeros((1, 2, image.n_inputs), dtype=np.uint8))

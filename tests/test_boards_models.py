"""The neuron models of docs/neuron.md on the virtual board (the SpikeSoC's RTL in Verilator,
reached over a pseudo-terminal by spikeforge.Board): a multi-spike output layer's counts come
back as repeated STEP events, an LI readout's membranes are read from its cores' STATE words
after every step, and a stream runs in chunks without CLEAR; all against the golden model.

Each board builds a Verilator model of the whole SoC (minutes): the tests are slow."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl.rtl import available_simulators
from spikeforge.sim import golden

from .test_sim_rtl_models import li_image, multi_image
from .test_streaming import board_chunks_equal, cuts

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("verilator" not in available_simulators(),
                                 reason="the virtual board needs Verilator")]

IMAGES = {"multi": multi_image, "li": li_image}


@pytest.fixture(scope="module", params=sorted(IMAGES))
def model_board(request):
    from spikeforge.boards.runtime import Board

    image = IMAGES[request.param]()
    with Board.virtual(image) as board:
        yield board, image


@settings(max_examples=4, deadline=None)
@given(data=st.data(), steps=st.integers(1, 12), seed=st.integers(0, 2**31))
def test_models_on_the_virtual_board_in_chunks_equal_one_golden_run(model_board, data, steps,
                                                                    seed):
    board, image = model_board
    x = (np.random.default_rng(seed).random((1, steps, image.n_inputs)) < 0.5).astype(np.uint8)
    whole = golden.run(image, x)
    parts = board_chunks_equal(board, x, cuts(data.draw, steps), whole)
    if whole.values is None:
        assert all(p.values is None for p in parts)
    else:
        np.testing.assert_array_equal(np.concatenate([p.values for p in parts], axis=1),
                                      whole.values)
        assert all(p.scale == whole.scale for p in parts)


def test_a_batch_on_the_virtual_board_equals_the_golden_model(model_board):
    board, image = model_board
    x = (np.random.default_rng(5).random((2, 8, image.n_inputs)) < 0.5).astype(np.uint8)
    want = golden.run(image, x)
    got = board.run(x)
    np.testing.assert_array_equal(got.spikes, want.spikes)
    np.testing.assert_array_equal(got.spike_counts, want.spike_counts)
    if want.values is not None:
        np.testing.assert_array_equal(got.values, want.values)
        assert np.abs(got.values).max() > 0
    else:
        assert got.spikes.max() > 1  # counts above 1 came back as repeated events

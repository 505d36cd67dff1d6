"""Streaming: a run continues from the state another run ended in, so a continuous signal can
run in chunks; the chunks together equal one long run bit for bit, in the golden model (every
neuron model, Hypothesis over the chunk boundaries) and on the virtual board (the SoC's RTL in
Verilator, driven by `Board.run(spikes, clear=False)`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.compiler.quantize import plain_image, quantize
from spikeforge.hdl.rtl import available_simulators
from spikeforge.sim import golden

from .strategies import neuron_networks, random_image


def cuts(draw, steps: int) -> list[int]:
    """Sorted chunk boundaries in 0..steps (empty chunks included)."""
    inner = draw(st.lists(st.integers(0, steps), max_size=4))
    return [0, *sorted(inner), steps]


def board_chunks_equal(board, x, bounds, whole):
    """Run `x` on `board` in the chunks `bounds` (CLEAR before the first only) and check they
    add up to the golden run `whole`: spikes step by step, the counters summed; returns the
    chunks' results."""
    parts = [board.run(x[:, lo:hi], clear=(k == 0))
             for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]
    np.testing.assert_array_equal(np.concatenate([p.spikes for p in parts], axis=1), whole.spikes)
    for field in ("sops", "spike_counts", "saturations"):
        np.testing.assert_array_equal(sum(getattr(p, field) for p in parts),
                                      getattr(whole, field), err_msg=field)
    return parts


@settings(max_examples=60, deadline=None)
@given(network=neuron_networks(exact=False), data=st.data(), steps=st.integers(0, 30),
       batch=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_golden_chunks_equal_one_run(network, data, steps, batch, seed):
    layers, _ = quantize(network)
    image = plain_image(layers, network.n_inputs)
    x = (np.random.default_rng(seed).random((batch, steps, network.n_inputs)) < 0.5) \
        .astype(np.uint8)
    whole = golden.run(image, x, record=True)
    bounds = cuts(data.draw, steps)
    state, parts = None, []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        parts.append(spikeforge.simulate(image, x[:, lo:hi], record=True, state=state))
        state = parts[-1].state
    for index in range(len(layers)):
        for field in ("layer_spikes", "membranes", "currents"):
            want = getattr(whole, field)[index]
            if want is not None:
                got = np.concatenate([getattr(p, field)[index] for p in parts], axis=1)
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(state.v[index], whole.state.v[index])
        np.testing.assert_array_equal(state.counts[index], whole.state.counts[index])
        if whole.state.syn[index] is not None:
            np.testing.assert_array_equal(state.syn[index], whole.state.syn[index])
    for field in ("events_in", "sops", "spike_counts", "saturations"):
        np.testing.assert_array_equal(sum(getattr(p, field) for p in parts),
                                      getattr(whole, field))
    if whole.values is not None:
        np.testing.assert_array_equal(np.concatenate([p.values for p in parts], axis=1),
                                      whole.values)
    assert state.steps == steps


def test_state_is_not_changed_by_a_continuing_run():
    image = random_image(3, (5, 6, 4), recurrent=1)
    x = (np.random.default_rng(3).random((2, 10, 5)) < 0.5).astype(np.uint8)
    first = golden.run(image, x)
    kept = first.state.copy()
    a = golden.run(image, x, state=first.state)
    b = golden.run(image, x, state=first.state)
    np.testing.assert_array_equal(a.spikes, b.spikes)
    for v, w in zip(first.state.v, kept.v):
        np.testing.assert_array_equal(v, w)


def test_state_that_does_not_fit_is_refused_in_one_line():
    image = random_image(4, (5, 6, 4))
    x = np.zeros((2, 3, 5), np.uint8)
    state = golden.run(image, x).state
    with pytest.raises(ValueError, match=r"^state must fit the image and a batch of 1 "
                                         r"\(layer 0: \[1, 6\]\), not \[2, 6\]$"):
        golden.run(image, x[:1], state=state)
    other = random_image(4, (5, 7, 4))
    with pytest.raises(ValueError, match=r"^state must fit the image"):
        golden.run(other, x, state=state)
    with pytest.raises(TypeError, match=r"^state must be a GoldenState, not dict$"):
        golden.run(image, x, state={})
    with pytest.raises(ValueError, match=r"^state= continues a golden-model run; on the "
                                         r"virtual board use Board.run\(spikes, clear=False\)$"):
        spikeforge.simulate(image, x, engine="rtl", state=state)


# -- the virtual board ---------------------------------------------------------------------------

needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="the virtual board needs Verilator")


@pytest.fixture(scope="module")
def stream_board():
    from spikeforge.boards.runtime import Board

    image = random_image(11, (6, 8, 5), lanes=(2, 3), recurrent=0, weight_bits=4, v_bits=10)
    with Board.virtual(image) as board:
        yield board, image


@needs_verilator
@settings(max_examples=6, deadline=None)
@given(data=st.data(), steps=st.integers(1, 24), seed=st.integers(0, 2**31))
def test_virtual_board_chunks_equal_one_golden_run(stream_board, data, steps, seed):
    board, image = stream_board
    x = (np.random.default_rng(seed).random((1, steps, image.n_inputs)) < 0.4).astype(np.uint8)
    whole = golden.run(image, x)
    board_chunks_equal(board, x, cuts(data.draw, steps), whole)


@needs_verilator
def test_virtual_board_clear_false_takes_one_sample(stream_board):
    board, image = stream_board
    with pytest.raises(ValueError, match=r"^clear=False continues one stream without learning: "
                                         r"give one sample of a network that does not learn, "
                                         r"not 2 samples$"):
        board.run(np.zeros((2, 3, image.n_inputs), np.uint8), clear=False)

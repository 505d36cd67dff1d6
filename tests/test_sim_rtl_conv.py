"""Convolutional networks in the core array (hdl/conv.py ConvCore beside LifCore), run in the
RTL through cocotb, against the golden model: spikes, final membranes and spikes of every layer,
and the counters (a convolution's synaptic operations are the accumulator updates its events
make). The default run covers one fixed network on Icarus with Hypothesis varying the spike
trains; `-m slow` adds Hypothesis-drawn conv and pooling geometries on Verilator (kernel 1-5,
stride 1-2, padding 0-2, 1-8 channels, maps up to 16 x 16, a second convolution over the first's
map, split cores and lanes)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import api
from spikeforge.hdl import rtl
from spikeforge.image import ConvSpec

from .strategies import conv_image, conv_specs
from .test_sim_rtl import ICARUS, SLOW_SETTINGS, VERILATOR, assert_matches_golden, spike_trains


def fixed_conv_image():
    """A 3x3 convolution with padding over 2 x 6 x 6 (max pool 2, 3 channels over two cores),
    a 2x2 convolution of its 3 x 3 x 3 map (4 channels, sum pool 2), a dense readout."""
    first = ConvSpec(2, 6, 6, 3, 3, stride=1, padding=1, pool="max", pool_size=2)
    second = dict(out_channels=4, kernel=2, stride=1, padding=0, pool="sum", pool_size=2)
    return conv_image(11, first, second=second, readout=3, lanes=(2, 3), split=True)


FIXED = fixed_conv_image()


@pytest.mark.parametrize("simulator", [ICARUS])
@settings(max_examples=3, **SLOW_SETTINGS)
@given(spikes=spike_trains(FIXED.n_inputs, max_batch=2, max_steps=4))
def test_conv_network_matches_golden(simulator, spikes):
    assert_matches_golden(FIXED, spikes, rtl.run_rtl(FIXED, spikes, simulator=simulator))


@st.composite
def conv_networks(draw):
    first = draw(conv_specs(max_channels=8, max_map=16))
    second = None
    if draw(st.booleans()):
        # a second geometry drawn over the first's output map (its shape decides what fits)
        channels, height, width = first.out_shape
        kernel = draw(st.integers(1, min(3, height, width)))
        spec = ConvSpec(channels, height, width, draw(st.integers(1, 4)), kernel,
                        stride=draw(st.integers(1, 2)), padding=0)
        conv_h, conv_w = spec.conv_shape
        pools = [p for p in (2, 3) if conv_h % p == 0 and conv_w % p == 0]
        pool = draw(st.sampled_from(["none"] + (["max", "sum"] if pools else [])))
        second = dict(out_channels=spec.out_channels, kernel=kernel, stride=spec.stride,
                      padding=0, pool=pool,
                      pool_size=1 if pool == "none" else draw(st.sampled_from(pools)))
    return conv_image(draw(st.integers(0, 2**31)), first, second=second,
                      readout=draw(st.sampled_from([None, 2, 5])),
                      lanes=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                      split=draw(st.booleans()))


@pytest.mark.slow
@pytest.mark.parametrize("simulator", [VERILATOR])
@settings(max_examples=10, **SLOW_SETTINGS)
@given(data=st.data())
def test_random_conv_networks_match_golden(simulator, data):
    image = data.draw(conv_networks())
    spikes = data.draw(spike_trains(image.n_inputs, max_batch=2, max_steps=3))
    assert_matches_golden(image, spikes, rtl.run_rtl(image, spikes, simulator=simulator))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "board"), [("sinabs_conv_int", "ulx3s-85f"),
                                             ("snntorch_conv", "icebreaker")])
def test_library_conv_fixtures_on_a_board_match_golden(name, board):
    """The convolutional graphs Sinabs and snnTorch exported (tests/fixtures/nir, recorded from
    the libraries) compile for a board and run in the RTL as in the golden model, which
    tests/test_nir_fixtures.py holds to the library's own output. (Sinabs's multi-spike IAF
    layers, two convolution cores with count stages, need more LUTs than the UP5K has.)"""
    from .test_nir_fixtures import FIXTURES, fixture, overrides

    meta, arrays = fixture(name)
    image = api.compile(FIXTURES / f"{name}.nir", exporter=meta["library"], weight_bits=8,
                        board=board, **overrides(meta))
    assert any(layer.conv is not None for layer in image.layers)
    spikes = arrays["input"][:2]
    assert_matches_golden(image, spikes, rtl.run_rtl(image, spikes))

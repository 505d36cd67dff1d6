"""The neuron models of docs/neuron.md in the generated RTL (Verilator and Icarus, through
cocotb) against the golden model: the synaptic current (CubaLIF), multi-spike counts, both
compares and reset timings, and the LI readout whose membranes the host reads back.

One small fixed image per model runs in the default suite (Icarus); `-m slow` adds both
simulators on Hypothesis-drawn images of each model (tests/strategies.py `model_images`).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl import rtl
from spikeforge.image import CoreConfig, HwConfig, Image
from spikeforge.sim import golden

from .strategies import MODELS, model_images, random_layer
from .test_sim_rtl import ICARUS, SIMULATORS, SLOW_SETTINGS, assert_matches_golden, spike_trains


def _layer(seed, name, n_in, n_out, **kwargs):
    return random_layer(np.random.default_rng(seed), name, n_in, n_out, **kwargs)


def cuba_image() -> Image:
    """Two current-based layers: a recurrent one split over two cores (shift alpha, current
    added in its own step, reset at the spike, compare >=) and an output layer (mul alpha and
    beta, the current of the step before, zero reset)."""
    layers = [
        _layer(21, "syn", 7, 9, weight_bits=5, v_bits=10, decay_mode="shift", recurrent=True,
               syn_decay_mode="shift", syn_bits=9, compare=">=", reset_delay=False),
        _layer(22, "out", 9, 5, weight_bits=6, v_bits=12, reset="zero", decay_mode="mul",
               syn_decay_mode="mul", syn_bits=8, syn_delay=1, in_max_spikes=1),
    ]
    cores = (CoreConfig(0, 0, 4, 2), CoreConfig(0, 4, 9, 3), CoreConfig(1, 0, 5, 2))
    return Image(7, layers, HwConfig("iCE40UP5K", cores))


def multi_image() -> Image:
    """Two multi-spike layers: a recurrent one (K = 3, snnTorch's delayed subtract reset)
    split over two cores, and an output layer (K = 4, reset at the spike, compare >=, mul
    decay) whose counts come out as repeated events."""
    hidden = _layer(23, "multi", 8, 6, weight_bits=4, v_bits=9, decay_mode="shift",
                    recurrent=True, max_spikes=3)
    out = _layer(24, "out", 6, 5, weight_bits=5, v_bits=11, decay_mode="mul", max_spikes=4,
                 in_max_spikes=3, compare=">=", reset_delay=False)
    cores = (CoreConfig(0, 0, 3, 2), CoreConfig(0, 3, 6, 3), CoreConfig(1, 0, 5, 3))
    return Image(8, [hidden, out], HwConfig("iCE40UP5K", cores))


def li_image() -> Image:
    """A current-based multi-spike layer (K = 2) into an LI readout with a current of the
    step before, split over two cores: its membranes are read back after every step."""
    hidden = _layer(25, "h", 6, 7, weight_bits=4, v_bits=10, reset="zero", decay_mode="shift",
                    syn_decay_mode="shift", syn_bits=10, max_spikes=2)
    out = _layer(26, "readout", 7, 4, weight_bits=5, v_bits=12, decay_mode="shift",
                 syn_decay_mode="mul", syn_bits=11, syn_delay=1, in_max_spikes=2,
                 spiking=False)
    cores = (CoreConfig(0, 0, 7, 4), CoreConfig(1, 0, 2, 1), CoreConfig(1, 2, 4, 2))
    return Image(6, [hidden, out], HwConfig("iCE40UP5K", cores))


FIXED = {"cuba": cuba_image, "multi": multi_image, "li": li_image}


def assert_models_match_golden(image: Image, spikes: np.ndarray, got: rtl.RtlResult) -> None:
    """`assert_matches_golden` (spikes as counts, last-step counts, counters), plus the final
    synaptic currents and an LI readout's membranes at every step."""
    assert_matches_golden(image, spikes, got)
    want = golden.run(image, spikes, record=True)
    for index, layer in enumerate(image.layers):
        if layer.current_based:
            np.testing.assert_array_equal(got.final_currents[index], want.currents[index][:, -1],
                                          err_msg=f"final currents of layer {layer.name!r}")
    if image.layers[-1].spiking:
        assert got.values is None
    else:
        np.testing.assert_array_equal(got.values, want.values, err_msg="LI readout values")
        assert got.scale == want.scale


@pytest.mark.parametrize("simulator", [ICARUS])
@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_model_image_matches_golden(name, simulator):
    image = FIXED[name]()
    rng = np.random.default_rng(7)
    spikes = (rng.random((2, 6, image.n_inputs)) < 0.5).astype(np.uint8)
    got = rtl.run_rtl(image, spikes, simulator=simulator, seed=3, idle=0.2, stall=0.3)
    assert_models_match_golden(image, spikes, got)
    if name == "multi":  # the counts above 1 came out as repeated events
        assert got.spikes.max() > 1
    if name == "li":
        assert np.abs(got.values).max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("kind", [*MODELS, "li"])
def test_rtl_matches_golden_on_random_model_images(kind, simulator):
    @settings(max_examples=6, **SLOW_SETTINGS)
    @given(image=model_images(max_layers=3, max_width=9, kind=kind), data=st.data())
    def check(image, data):
        spikes = data.draw(spike_trains(image.n_inputs, max_batch=2, max_steps=6))
        got = rtl.run_rtl(image, spikes, simulator=simulator, seed=data.draw(
            st.integers(0, 1000)), idle=0.2, stall=0.3)
        assert_models_match_golden(image, spikes, got)

    check()

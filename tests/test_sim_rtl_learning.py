"""On-chip learning in the generated RTL (Verilator / Icarus through cocotb, `run_rtl`) against
the golden model: output spikes, every weight after the run, the learned image and the
learning cycle counts. Two fixed images in the default run (one Verilator build each); more,
drawn by Hypothesis, under `-m slow`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.hdl import rtl
from spikeforge.sim import golden

from .test_hdl_learning import learning_cases, learning_image, modulators_for
from .test_sim_rtl import SLOW_SETTINGS, VERILATOR

FOUND = rtl.available_simulators()
ICARUS = pytest.param("icarus", marks=[pytest.mark.slow, pytest.mark.skipif(
    "icarus" not in FOUND, reason="Icarus Verilog (iverilog) is not installed")])


def assert_learns_as_golden(image, x, mods, got):
    want = golden.run(image, x, modulators=mods)
    assert np.array_equal(got.spikes, want.spikes), "output spikes differ"
    for index, (w_rtl, w_ref) in enumerate(zip(got.weights, want.weights)):
        if not np.array_equal(w_rtl, w_ref):
            i, j = np.argwhere(w_rtl != w_ref)[0]
            raise AssertionError(f"layer {index}: weight [{i}, {j}] is {w_rtl[i, j]}, the golden "
                                 f"model says {w_ref[i, j]}")
    for entry in image.learning:
        assert got.learning[entry.layer]["update_cycles"] == \
            want.learning[entry.layer]["update_cycles"]
    assert not got.overflow.any()
    # The learned image holds the learned weights and the rule.
    assert got.image.learning == image.learning
    for layer, w in zip(got.image.layers, want.weights):
        assert np.array_equal(layer.weights, w)
    return want


FIXED = {
    # three-factor on a split output layer, stochastic rounding, odd lane counts
    "three_factor_last": dict(image_seed=3, sizes=(6, 7, 5), layer=1, rule="three_factor",
                              stochastic=True, split=True, lanes=(2, 3), trace_inc=100,
                              mod_shift=7),
    # STDP on the first of two layers, floor rounding
    "stdp_first": dict(image_seed=8, sizes=(5, 6, 4), layer=0, rule="stdp", stochastic=False,
                       split=True, lanes=(3, 2), trace_inc=120, ltp_shift=3, ltd_shift=4),
}


@pytest.mark.parametrize("simulator", [VERILATOR, ICARUS])
@pytest.mark.parametrize("name", sorted(FIXED))
def test_rtl_learns_as_golden(name, simulator):
    image = learning_image(**FIXED[name])
    rng = np.random.default_rng(5)
    x = (rng.random((3, 6, image.n_inputs)) < 0.5).astype(np.uint8)
    mods = modulators_for(image, rng, 3, 6)
    got = spikeforge.simulate(image, x, engine="rtl", simulator=simulator, modulators=mods)
    want = assert_learns_as_golden(image, x, mods, got)
    assert not np.array_equal(want.weights[image.learning[0].layer],
                              image.layers[image.learning[0].layer].weights)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", [VERILATOR])
def test_rtl_learns_as_golden_on_random_images(simulator):
    @settings(max_examples=6, **SLOW_SETTINGS)
    @given(image=learning_cases(), data=st.data())
    def check(image, data):
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        batch, steps = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6))
        x = (rng.random((batch, steps, image.n_inputs)) < 0.6).astype(np.uint8)
        mods = modulators_for(image, rng, batch, steps)
        got = rtl.run_rtl(image, x, simulator=simulator, modulators=mods,
                          seed=data.draw(st.integers(0, 1000)),
                          idle=data.draw(st.sampled_from([0.0, 0.3])),
                          stall=data.draw(st.sampled_from([0.0, 0.3])))
        assert_learns_as_golden(image, x, mods, got)

    check()

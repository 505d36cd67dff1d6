"""hdl/conv.py alone in the Amaranth simulator against the golden model's convolution: random
geometries and spike maps (Hypothesis), the pooled currents of each step in C order, and the
integration's cycle count against conv_cycles."""

from __future__ import annotations

import numpy as np
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.hdl.conv import ConvAccumulator, conv_cycles
from spikeforge.sim.golden import conv_currents

from .strategies import conv_layer, conv_specs


def run_core(layer, steps: np.ndarray, lanes: int):
    """Feed each step's events (ascending addresses, then eos); collect the pooled currents
    and the cycles from each step's first event to its eos being accepted."""
    dut = ConvAccumulator(layer, lanes=lanes)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out: list[list[int]] = []
    cycles: list[int] = []

    async def bench(ctx):
        for step in steps:
            count = 0
            for addr in np.flatnonzero(step):
                ctx.set(dut.i.payload, {"addr": int(addr), "eos": 0})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                count += 1
                while not ctx.get(dut.i.ready):
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                    count += 1
            ctx.set(dut.i.valid, 0)
            await ctx.tick()
            while not ctx.get(dut.i.ready):
                await ctx.tick()
                count += 1
            cycles.append(count)
            ctx.set(dut.i.payload, {"addr": 0, "eos": 1})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            values = []
            ctx.set(dut.o.ready, 1)
            while True:
                _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                if valid:
                    values.append(payload.value)
                    if payload.last:
                        break
            ctx.set(dut.o.ready, 0)
            out.append(values)
            while ctx.get(dut.busy):
                await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return np.array(out, dtype=np.int64), cycles


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_specs(max_channels=4, max_map=7), st.integers(1, 4), st.integers(0, 2**31))
def test_conv_accumulator_equals_golden(spec, lanes, seed):
    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, "c", spec)
    lanes = min(lanes, spec.out_channels)
    steps = (rng.random((2, spec.n_in)) < 0.3).astype(np.uint8)
    got, cycles = run_core(layer, steps, lanes)
    want = conv_currents(steps.astype(np.float64), spec,
                         layer.weights.T.astype(np.float64)).astype(np.int64)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (2, spec.n_out)
    # each event: accepted in one cycle, then K^2 * ceil(C_out / lanes) cycles of integration
    for step, count in zip(steps, cycles, strict=True):
        assert count == conv_cycles(int(step.sum()), spec, lanes)


def run_conv_core(layer, steps: np.ndarray, lanes: int) -> np.ndarray:
    """Spikes [time, n_out] of a ConvCore fed each step's events then eos, with back-pressure
    on its output every third cycle."""
    from spikeforge.hdl.conv import ConvCore

    dut = ConvCore(layer, lanes=lanes)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out = np.zeros((len(steps), layer.n_out), np.uint8)

    async def feed(ctx):
        for step in steps:
            for addr in [*np.flatnonzero(step), None]:
                ctx.set(dut.i.payload, {"addr": 0 if addr is None else int(addr),
                                        "eos": addr is None})
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def drain(ctx):
        for t in range(len(steps)):
            cycle = 0
            while True:
                cycle += 1
                ctx.set(dut.o.ready, cycle % 3 != 0)
                _, _, valid, ready, payload = await ctx.tick().sample(
                    dut.o.valid, dut.o.ready, dut.o.payload)
                if valid and ready:
                    if payload.eos:
                        break
                    out[t, payload.addr] = 1

    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_specs(max_channels=3, max_map=6), st.integers(1, 3), st.integers(0, 2**31),
       st.sampled_from(["subtract", "zero"]), st.sampled_from(["none", "shift", "mul"]))
def test_conv_core_equals_golden(spec, lanes, seed, reset, decay):
    from dataclasses import replace

    from spikeforge.image import CoreConfig, HwConfig, Image
    from spikeforge.sim import golden

    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, "c", spec, v_bits=10)
    extra = {"decay_mode": decay, "decay_shift": None, "decay_mul": None, "decay_frac": 0}
    if decay == "shift":
        extra["decay_shift"] = rng.integers(0, 5, spec.n_out)
    elif decay == "mul":
        extra.update(decay_mul=rng.integers(0, 257, spec.n_out), decay_frac=8)
    layer = replace(layer, reset=reset, **extra)
    lanes = min(lanes, spec.out_channels)
    steps = (rng.random((4, spec.n_in)) < 0.4).astype(np.uint8)
    image = Image(spec.n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, spec.n_out, 1),)))
    want = golden.run(image, steps[None]).spikes[0]
    np.testing.assert_array_equal(run_conv_core(layer, steps, lanes), want)

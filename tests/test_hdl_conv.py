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

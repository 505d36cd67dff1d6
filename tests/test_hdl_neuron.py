"""NeuronUpdate (the core's pipelined neuron update) and SkidBuffer in the Amaranth simulator:
the update against the golden model's one-step update, the skid buffer against a queue."""

import dataclasses
import itertools

import numpy as np
import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.hdl.core import param_layout
from spikeforge.hdl.neuron import NeuronUpdate
from spikeforge.hdl.skid import SkidBuffer
from spikeforge.image import DECAY_MODES, RESET_MODES, bias_bits
from spikeforge.sim.lif import NeuronParams, _decay

from .strategies import random_layer

SETTINGS = settings(deadline=None, max_examples=25,
                    suppress_health_check=[HealthCheck.too_slow])


def _update(layer, stored):
    fields = param_layout(layer).members
    values = {"threshold": layer.threshold, "bias": layer.bias}
    if layer.decay_mode == "shift":
        values["decay"] = layer.decay_shift
    elif layer.decay_mode == "mul":
        values["decay"] = layer.decay_mul
    layout = data.StructLayout({name: fields[name] for name in stored})
    constants = {name: int(vals[0]) for name, vals in values.items() if name not in stored}
    dut = NeuronUpdate(layer, stored=layout, constants=constants, bias_bits=bias_bits(layer.bias),
                       tag_width=8)
    return dut, values


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), reset=st.sampled_from(RESET_MODES),
       decay_mode=st.sampled_from(DECAY_MODES), v_bits=st.integers(4, 16),
       uniform=st.booleans(), en=st.lists(st.booleans(), min_size=1, max_size=5))
def test_update_matches_golden(seed, reset, decay_mode, v_bits, uniform, en):
    """Random v, s, acc (over the whole ranges, so clamps happen) and parameters, thresholds
    up to v_max included, with cycles of en low: every neuron's result is the golden model's."""
    rng = np.random.default_rng(seed)
    n = 24
    layer = random_layer(rng, "l", 4, n, weight_bits=6, v_bits=v_bits, reset=reset,
                         decay_mode=decay_mode)
    v_max = (1 << (v_bits - 1)) - 1
    theta = rng.integers(0, v_max + 1, n)
    theta[rng.random(n) < 0.3] = v_max
    if uniform:
        theta[:] = theta[0]
    layer = dataclasses.replace(layer, threshold=theta)
    stored = () if uniform else tuple(param_layout(layer).members)
    if uniform:
        layer = dataclasses.replace(layer, bias=np.full(n, layer.bias[0]))
        if decay_mode == "shift":
            layer = dataclasses.replace(layer, decay_shift=np.full(n, layer.decay_shift[0]))
        elif decay_mode == "mul":
            layer = dataclasses.replace(layer, decay_mul=np.full(n, layer.decay_mul[0]))
    dut, values = _update(layer, stored)
    v = rng.integers(-v_max - 1, v_max + 1, n)
    s = rng.integers(0, 2, n)
    a_max = (1 << (layer.acc_bits - 1)) - 1
    acc = rng.integers(-a_max - 1, a_max + 1, n)
    golden = NeuronParams(layer, np.int64)
    want_v, _, want_s, _ = golden.update(v, None, s, acc)
    # u before the clamp, from the golden model's own terms
    kept = v * (1 - s) if reset == "zero" else v
    u = _decay(kept, decay_mode, golden.shift, golden.beta_q, layer.decay_frac) + acc + golden.bias
    if reset == "subtract":
        u = u - golden.theta * s

    async def bench(ctx):
        pattern = itertools.cycle([*en, True])
        fed, got = 0, []
        while len(got) < n:
            on = next(pattern)
            ctx.set(dut.en, on)
            if fed < n:
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_tag, fed)
                ctx.set(dut.acc, int(acc[fed]))
                ctx.set(dut.v, int(v[fed]))
                ctx.set(dut.s, int(s[fed]))
                for name in stored:
                    ctx.set(dut.params[name], int(values[name][fed]))
            else:
                ctx.set(dut.i_valid, 0)
            _, _, valid, tag, v_new, spike, sat = await ctx.tick().sample(
                dut.o_valid, dut.o_tag, dut.v_new, dut.spike, dut.saturated)
            if on and valid:
                got.append((tag, v_new, spike, sat))
            if on and fed < n:
                fed += 1
        for index, (tag, v_new, spike, sat) in enumerate(got):
            assert tag == index
            assert (v_new, spike) == (want_v[index], want_s[index]), f"neuron {index}"
            assert sat == (u[index] != want_v[index]), f"neuron {index}: saturated"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_update_rejects_missing_parameters():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, "l", 2, 3, decay_mode="shift")
    layout = data.StructLayout({"threshold": unsigned(layer.v_bits - 1)})
    with pytest.raises(ValueError, match=r"^Parameters must be \['bias', 'decay', 'threshold'\], "
                                         r"not \['threshold'\]$"):
        NeuronUpdate(layer, stored=layout, constants={}, bias_bits=4, tag_width=4)
    with pytest.raises(ValueError, match=r"^Tag width must be at least 1, not 0$"):
        NeuronUpdate(layer, stored=layout, constants={"bias": 0, "decay": 1}, bias_bits=4,
                     tag_width=0)


@settings(deadline=None, max_examples=30)
@given(items=st.lists(st.integers(0, 255), max_size=40),
       valid=st.lists(st.booleans(), min_size=1, max_size=5),
       ready=st.lists(st.booleans(), min_size=1, max_size=5))
def test_skid_buffer_keeps_order_and_registers_ready(items, valid, ready):
    """Everything offered comes out once, in order, under random valid/ready patterns; ready
    and valid at the outputs only change at clock edges (they are registers): within a cycle,
    changing o.ready or i.valid does not change them."""
    dut = SkidBuffer(signed(9))

    async def bench(ctx):
        offer, take = itertools.cycle([*valid, True]), itertools.cycle([*ready, True])
        sent, out = 0, []
        while len(out) < len(items):
            presenting = sent < len(items) and next(offer)
            ctx.set(dut.i.valid, presenting)
            if presenting:
                ctx.set(dut.i.payload, items[sent])
            want = next(take)
            before = (ctx.get(dut.i.ready), ctx.get(dut.o.valid))
            ctx.set(dut.o.ready, not want)
            ctx.set(dut.i.valid, not presenting)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == before
            ctx.set(dut.o.ready, want)
            ctx.set(dut.i.valid, presenting)
            _, _, i_ready, o_valid, payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload)
            if presenting and i_ready:
                sent += 1
            if want and o_valid:
                out.append(payload)
        assert out == items
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.empty)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

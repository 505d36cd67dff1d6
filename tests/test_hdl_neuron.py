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
from spikeforge.image import DECAY_MODES, NEURON_ARRAYS, RESET_MODES, param_values
from spikeforge.sim.golden import NeuronParams

from .strategies import neuron_models, random_layer

SETTINGS = settings(deadline=None, max_examples=25,
                    suppress_health_check=[HealthCheck.too_slow])


def _update(layer, stored, input_stage=True, late_acc=False, sum_stage=True):
    fields = param_layout(layer).members
    values = param_values(layer)
    layout = data.StructLayout({name: fields[name] for name in stored})
    constants = {name: int(vals[0]) for name, vals in values.items() if name not in stored}
    dut = NeuronUpdate(layer, stored=layout, constants=constants, bias_bits=fields["bias"].width,
                       tag_width=8, input_stage=input_stage, late_acc=late_acc,
                       sum_stage=sum_stage)
    return dut, values


def run_update(layer, stored, v, c, syn, acc, en, input_stage=True, late_acc=False,
               sum_stage=True):
    """Feed neurons (v, c, syn, acc, per-neuron parameters) through NeuronUpdate with cycles of
    `en` low; per neuron: (tag, v_new, syn_new, count, events, saturations). Checks that the
    first result comes after `latency` cycles with `en` high and `hold` low."""
    dut, values = _update(layer, stored, input_stage, late_acc, sum_stage)
    n = len(v)

    async def bench(ctx):
        pattern = itertools.cycle([*en, True])
        fed, got, events, advances, seen = 0, [], 0, 0, False
        while len(got) < n:
            on = next(pattern)
            ctx.set(dut.en, on)
            if fed < n:
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_tag, fed)
                ctx.set(dut.acc, int(acc[fed]))
                ctx.set(dut.v, int(v[fed]))
                ctx.set(dut.c, int(c[fed]))
                if layer.current_based:
                    ctx.set(dut.syn, int(syn[fed]))
                for name in stored:
                    ctx.set(dut.params[name], int(values[name][fed]))
            else:
                ctx.set(dut.i_valid, 0)
            hold = ctx.get(dut.hold)
            outs = (dut.o_valid, dut.o_tag, dut.v_new, dut.spike, dut.last, dut.count,
                    dut.saturated) + ((dut.syn_new,) if layer.current_based else ())
            _, _, valid, tag, v_new, spike, last, count, sat, *syn_new = \
                await ctx.tick().sample(*outs)
            if valid and not seen:  # (sampled before this cycle's edge)
                assert advances == dut.latency, "the first result after the latency"
                seen = True
            advances += on and not hold
            if on and valid:
                events += spike
                if last:
                    got.append((tag, v_new, syn_new[0] if syn_new else None, count, events,
                                sat))
                    events = 0
            if on and not hold and fed < n:
                fed += 1
        results.extend(got)

    results = []
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def _uniform(layer, n):
    """`layer` with every per-neuron array set to its first neuron's value."""
    return dataclasses.replace(layer, **{
        name: np.full(n, getattr(layer, name)[0]) for name in NEURON_ARRAYS
        if getattr(layer, name) is not None})


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), reset=st.sampled_from(RESET_MODES),
       decay_mode=st.sampled_from(DECAY_MODES), v_bits=st.integers(4, 16),
       uniform=st.booleans(), en=st.lists(st.booleans(), min_size=1, max_size=5),
       model=neuron_models(last=True), input_stage=st.booleans(), late_acc=st.booleans(),
       sum_stage=st.booleans())
def test_update_matches_golden(seed, reset, decay_mode, v_bits, uniform, en, model,
                               input_stage, late_acc, sum_stage):
    """Random v, c, syn, acc (over the whole ranges, so clamps happen) and parameters,
    thresholds up to v_max included (and 0), in every neuron model, with cycles of en low, with
    and without stages A and C: every neuron's v, syn, count, events and saturations are the
    golden model's."""
    rng = np.random.default_rng(seed)
    n = 24
    layer = random_layer(rng, "l", 4, n, weight_bits=6, v_bits=v_bits, reset=reset,
                         decay_mode=decay_mode, **model)
    v_max = (1 << (v_bits - 1)) - 1
    if layer.spiking:
        theta = rng.integers(0, v_max + 1, n)
        theta[rng.random(n) < 0.2] = v_max
        small = rng.random(n) < 0.4  # several spikes per step
        theta[small] = rng.integers(0, 4, n)[small]
        layer = dataclasses.replace(layer, threshold=theta)
    if uniform:
        layer = _uniform(layer, n)
    stored = () if uniform else tuple(param_layout(layer).members)
    v = rng.integers(-v_max - 1, v_max + 1, n)
    c = rng.integers(0, layer.max_spikes + 1, n) if layer.spiking else np.zeros(n, np.int64)
    syn = None
    if layer.current_based:
        s_max = (1 << (layer.syn_bits - 1)) - 1
        syn = rng.integers(-s_max - 1, s_max + 1, n)
    a_max = (1 << (layer.acc_bits - 1)) - 1
    acc = rng.integers(-a_max - 1, a_max + 1, n)
    golden = NeuronParams(layer, np.int64)
    want_v, want_syn, want_c, want_sats = golden.update(v[None], None if syn is None else syn[None],
                                                        c[None], acc[None])
    got = run_update(layer, stored, v, c, syn, acc, en, input_stage, late_acc, sum_stage)
    assert [g[0] for g in got] == list(range(n))
    for index, (_, v_new, syn_new, count, events, _) in enumerate(got):
        assert v_new == want_v[0, index], f"neuron {index}: v"
        if syn is not None:
            assert syn_new == want_syn[0, index], f"neuron {index}: syn"
        assert count == want_c[0, index], f"neuron {index}: count"
        assert events == count, f"neuron {index}: events"
    assert sum(g[5] for g in got) == int(np.sum(want_sats)), "saturations"


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("model, input_stage, late_acc, merged", [
    ({}, False, False, True),  # B, then the sum, clamp and compare into O
    ({}, True, False, True),
    ({}, False, True, False),  # the accumulator joins C: the stage stays
    ({"max_spikes": 3, "reset": "zero"}, False, False, False),
    ({"syn_decay_mode": "none", "syn_delay": 1}, False, False, False),
])
def test_sum_stage_is_left_out_for_the_single_spike_plain_lif(model, input_stage, late_acc,
                                                              merged):
    """``sum_stage`` False leaves stage C out where the update allows it: a cycle less than
    with it (A, B, C, O: one cycle each; M in place of O for multi-spike)."""
    rng = np.random.default_rng(1)
    layer = random_layer(rng, "l", 4, 6, decay_mode="none", **model)
    stored = tuple(param_layout(layer).members)
    dut, _ = _update(layer, stored, input_stage, late_acc, sum_stage=False)
    assert dut.merged_sum is merged
    assert dut.input_stage is input_stage
    assert dut.latency == input_stage + 1 + (not merged) + 1
    assert _update(layer, stored, input_stage, late_acc)[0].latency == input_stage + 3


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_update_rejects_missing_parameters():
    rng = np.random.default_rng(0)
    layer = random_layer(rng, "l", 2, 3, decay_mode="shift")
    layout = data.StructLayout({"threshold": unsigned(layer.v_bits - 1)})
    with pytest.raises(ValueError, match=r"^Parameters must be \['bias', 'decay', 'threshold'\], "
                                         r"not \['threshold'\]$"):
        NeuronUpdate(layer, stored=layout, constants={}, bias_bits=4, tag_width=4)
    with pytest.raises(ValueError, match=r"^Tag width must be at least 0, not -1$"):
        NeuronUpdate(layer, stored=layout, constants={"bias": 0, "decay": 1}, bias_bits=4,
                     tag_width=-1)


async def pass_through(ctx, dut, items, valid, ready) -> list:
    """Offer ``items`` at a one-entry stream stage ``dut`` (``i``, ``o``) with the cycling
    ``valid`` and ``ready`` patterns and return what comes out at ``o``; checks in every cycle
    that ``i.ready`` and ``o.valid`` are registers (changing ``o.ready`` or ``i.valid`` within
    the cycle does not change them). (SkidBuffer here, hdl.skid.StreamRegister in
    tests/test_hdl_hostlink_parts.py.)"""
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
    return out


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
        assert await pass_through(ctx, dut, items, valid, ready) == items
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.empty)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

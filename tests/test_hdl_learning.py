"""The learning unit in the Amaranth simulator: CoreArray with a learning layer against the
golden model (sim/learning.py): every weight after the run, every output spike, the traces and
the learning cycle counters, on Hypothesis-drawn images, rules, rounding and I/O patterns."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from spikeforge.compiler.mapper import spram_cores
from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.core import LifCore, MemSpace
from spikeforge.hdl.learning import Lfsr
from spikeforge.image import Image, assemble_weights
from spikeforge.lfsr import lfsr_sequence, lfsr_start
from spikeforge.sim import golden

from .strategies import random_image
from .test_hdl_array import exchange, mem_access, spike_steps

SETTINGS = settings(deadline=None, max_examples=25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def learning_image(image_seed, sizes, *, layer, rule, stochastic, split, lanes, weight_bits=5,
                   **rates):
    image = random_image(image_seed, sizes, lanes=lanes, split=split, weight_bits=weight_bits,
                         v_bits=10)
    # A low threshold on the learning layer: its neurons fire, so STDP has work to do.
    index = layer % len(image.layers)
    layers = list(image.layers)
    layers[index] = replace(layers[index], threshold=layers[index].threshold % 3)
    image = Image(image.n_inputs, layers, image.config)
    return image.with_learning(layer=layer, rule=rule, stochastic=stochastic, **rates)


def modulators_for(image, rng, batch, steps):
    rule = [e for e in image.learning if e.rule == "three_factor"]
    if not rule:
        return None
    n_out = image.layers[rule[0].layer].n_out
    return rng.integers(-128, 128, (batch, steps, n_out)).astype(np.int8)


async def write_modulators(ctx, dut, image, mods):
    """One step's modulators into every core of the three-factor layer (MOD space)."""
    layer = [e for e in image.learning if e.rule == "three_factor"][0].layer
    for index, core in enumerate(image.config.cores):
        if core.layer == layer:
            for n in range(core.neurons):
                await mem_access(ctx, dut, index, MemSpace.MOD, n,
                                 int(mods[core.lo + n]) & 0xFF)


async def read_weights(ctx, dut, image):
    """Every layer's [n_out, n_in] weights, read back word by word through the WEIGHTS space."""
    memories = {}
    for index, core in enumerate(image.config.cores):
        layer = image.layers[core.layer]
        words = [await mem_access(ctx, dut, index, MemSpace.WEIGHTS, a)
                 for a in range(layer.fan_in * core.groups)]
        nbytes = -(-core.lanes * layer.weight_bits // 8)
        memories[index] = np.array([list(w.to_bytes(nbytes, "little")) for w in words],
                                   dtype=np.uint8)
    return [assemble_weights(image.config.cores, index, layer.n_out, layer.fan_in,
                             layer.weight_bits, memories.__getitem__)[:, :layer.n_in]
            for index, layer in enumerate(image.layers)]


def run_learning_array(image, x, mods, gaps, readiness):
    """Samples in sequence (clear between them, weights carry over); per step the modulators
    go in before the step's events. Returns per-sample output steps, learn_cycles per sample,
    and the weights after the run."""
    dut = CoreArray(image)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got = {"steps": [], "cycles": []}

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        for b, sample in enumerate(x):
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            await ctx.tick().until(dut.idle)
            if mods is None:  # steps back to back, layers pipelined
                steps = await exchange(ctx, dut, spike_steps(sample), gaps, readiness)
            else:
                steps = []
                for t, row in enumerate(sample):
                    await write_modulators(ctx, dut, image, mods[b, t])
                    steps += await exchange(ctx, dut, spike_steps(row[None]), gaps, readiness)
            await ctx.tick().until(dut.idle)
            got["steps"].append(steps)
            got["cycles"].append([ctx.get(dut.learn_cycles[k]) for k in range(len(image.layers))])
        got["weights"] = await read_weights(ctx, dut, image)

    sim.add_testbench(bench)
    sim.run()
    return got


def check(image, x, mods, got):
    ref = golden.run(image, x, modulators=mods)
    for b, steps in enumerate(got["steps"]):
        assert steps == spike_steps(ref.spikes[b]), f"sample {b}: output spikes differ"
    for index, (w_rtl, w_ref) in enumerate(zip(got["weights"], ref.weights)):
        if not np.array_equal(w_rtl, w_ref):
            i, j = np.argwhere(w_rtl != w_ref)[0]
            raise AssertionError(f"layer {index}: weight [{i}, {j}] is {w_rtl[i, j]}, the golden "
                                 f"model says {w_ref[i, j]} ({(w_rtl != w_ref).sum()} differ)")
    cycles = np.array(got["cycles"]).sum(axis=0)
    for entry in image.learning:
        assert cycles[entry.layer] == ref.learning[entry.layer]["update_cycles"]
    return ref


@st.composite
def learning_cases(draw):
    n_layers = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(2, 9)) for _ in range(n_layers + 1))
    layer = draw(st.sampled_from([0, n_layers - 1]))
    rule = draw(st.sampled_from(["stdp", "three_factor"]))
    rates = dict(trace_bits=draw(st.integers(2, 9)), trace_shift=draw(st.integers(0, 3)),
                 ltp_shift=draw(st.integers(0, 5)), ltd_shift=draw(st.integers(0, 5)),
                 mod_shift=draw(st.integers(0, 10)), seed=draw(st.integers(1, 0xFFFF)))
    top = (1 << rates["trace_bits"]) - 1
    rates["trace_inc"] = draw(st.integers(top // 2 + 1, top))
    image = learning_image(draw(st.integers(0, 2**31)), sizes, layer=layer, rule=rule,
                           stochastic=draw(st.booleans()), split=draw(st.booleans()),
                           lanes=tuple(draw(st.lists(st.integers(1, 4), min_size=1,
                                                     max_size=3))),
                           weight_bits=draw(st.integers(2, 8)), **rates)
    # Many small cores can overflow the UP5K's block RAM by the mapper's count, which then
    # places some core's weights in SPRAM; a learning core there is refused by name
    # (tests/test_spram_placement.py::test_learning_layer_in_spram_is_refused_by_name), so
    # such an image is no case for this test.
    assume(not spram_cores(image.layers, image.config))
    return image


def io_patterns(data):
    gaps = data.draw(st.lists(st.booleans(), max_size=4).map(lambda bits: [*bits, False]))
    ready = data.draw(st.lists(st.booleans(), max_size=4).map(lambda bits: [*bits, True]))
    return itertools.cycle(gaps), itertools.cycle(ready)


@SETTINGS
@given(image=learning_cases(), data=st.data())
def test_learning_array_matches_golden(image, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    batch, steps = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 5))
    x = (rng.random((batch, steps, image.n_inputs)) < data.draw(
        st.sampled_from([0.4, 0.8]))).astype(np.uint8)
    mods = modulators_for(image, rng, batch, steps)
    gaps, readiness = io_patterns(data)
    entry = image.learning[0]
    event(f"{entry.rule}, stochastic={entry.stochastic}")
    ref = check(image, x, mods, run_learning_array(image, x, mods, gaps, readiness))
    changed = not np.array_equal(ref.weights[entry.layer], image.layers[entry.layer].weights)
    event(f"weights changed: {changed}")


@pytest.mark.parametrize("rule", ["stdp", "three_factor"])
@pytest.mark.parametrize("stochastic", [False, True])
def test_fixed_learning_cases(rule, stochastic):
    """Split learning layer in the middle of three, both rules, both roundings."""
    image = learning_image(3, (6, 7, 5, 3), layer=1, rule=rule, stochastic=stochastic,
                           split=True, lanes=(2, 3, 2), trace_inc=100, ltp_shift=3,
                           ltd_shift=4, mod_shift=7)
    rng = np.random.default_rng(4)
    x = (rng.random((2, 5, 6)) < 0.5).astype(np.uint8)
    mods = modulators_for(image, rng, 2, 5)
    forever = itertools.repeat
    ref = check(image, x, mods, run_learning_array(image, x, mods, forever(False),
                                                   forever(True)))
    assert not np.array_equal(ref.weights[1], image.layers[1].weights)


def test_lfsr_follows_the_sequence():
    seq = lfsr_sequence()
    start = lfsr_start(77, 3)
    dut = Lfsr(int(seq[start]))

    async def bench(ctx):
        for k in range(40):
            assert ctx.get(dut.state) == int(seq[(start + k // 2) % len(seq)])
            ctx.set(dut.step, k % 2)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_core_without_learning_has_no_learning_port():
    image = random_image(1, (4, 5))
    assert not hasattr(LifCore.from_image(image, 0), "updating")


@pytest.mark.parametrize("rule", [None, "stdp", "three_factor"])
def test_integration_keeps_one_word_per_cycle(rule):
    """With or without learning, back-to-back events keep the integration loop at one weight
    word per cycle; after the pass the unit updates one synapse per cycle: n_in per neuron with
    a modulator (three-factor), n_out per input spike plus n_in per output spike (STDP)."""
    from spikeforge.image import CoreConfig, HwConfig, LayerParams

    rng = np.random.default_rng(7)
    n_in, n_out, lanes = 32, 24, 8
    layer = LayerParams("h", rng.integers(-128, 128, (n_out, n_in)), np.zeros(n_out),
                        np.full(n_out, 200), 8, 24, 24, decay_shift=3)
    image = Image(n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, n_out, lanes),)))
    if rule is not None:
        image = image.with_learning(0, rule, stochastic=True)
    dut = LifCore.from_image(image, 0)
    trace = []  # (integrating, updating, o.valid & eos) per cycle from the first handshake

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        if rule == "three_factor":  # m_i = 1 for every neuron
            for n in range(n_out):
                ctx.set(dut.mem.space, MemSpace.MOD)
                ctx.set(dut.mem.addr, n)
                ctx.set(dut.mem.wdata, 1)
                ctx.set(dut.mem.we, 1)
                await ctx.tick().until(dut.mem.ready)
            ctx.set(dut.mem.we, 0)
        ctx.set(dut.o.ready, 1)
        queue = [(addr, 0) for addr in range(n_in)] + [(0, 1)]
        while queue or not ctx.get(dut.idle):
            if queue:
                ctx.set(dut.i.payload, {"addr": queue[0][0], "eos": queue[0][1]})
            ctx.set(dut.i.valid, bool(queue))
            sampled = await ctx.tick().sample(dut.i.ready, dut.integrating, dut.o.valid,
                                              dut.o.payload)
            _, _, ready, integrating, valid, payload = sampled
            if queue and ready:
                queue.pop(0)
            updating = ctx.get(dut.updating) if rule is not None else 0
            trace.append((integrating, updating, int(valid and payload.eos)))
        ctx.set(dut.i.valid, 0)

    simulate_core(dut, bench)
    issuing = [t[0] for t in trace]
    span = len(issuing) - issuing[::-1].index(1) - issuing.index(1)
    groups = -(-n_out // lanes)
    assert sum(issuing) == span == n_in * groups  # no bubble between words or events
    eos = [t[2] for t in trace].index(1)
    sweep = sum(t[1] for t in trace[eos:])
    ref = golden.run(image, np.ones((1, 1, n_in), np.uint8),
                     modulators=np.ones((1, 1, n_out), np.int8) if rule == "three_factor"
                     else None)
    if rule == "three_factor":
        assert sweep == n_in * n_out
    elif rule == "stdp":
        fired = int(ref.spikes[0, 0].sum())
        assert 0 < fired < n_out
        assert sweep == n_in * n_out + n_in * fired
    if rule is not None:
        assert ref.learning[0]["update_cycles"] == sweep
        # the trace sweeps (n_in + n_out reads) and the updates
        print(f"{rule}: {len(trace) - eos} cycles from the eos to idle, {sweep} of them "
              f"weight updates")


def simulate_core(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()

"""hdl/conv.py ConvCore in the Amaranth simulator against the golden model: random geometries,
pools, channel slices, lanes, kernel and accumulators in block RAM or SPRAM, neuron modes and
several steps (Hypothesis); spikes per step, final STATE, synaptic operations, saturations and
the integration's cycles (conv_cycles); the memory port and the refusals."""

from __future__ import annotations

import gc
import itertools
import warnings
from dataclasses import replace

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.hdl.conv import (
    ConvCore,
    conv_acc_address,
    conv_cycles,
    conv_kernel_memory,
    conv_mem_shape,
    conv_memory_shapes,
)
from spikeforge.hdl.core import MemSpace, state_layout
from spikeforge.image import ConvSpec, CoreConfig, HwConfig, Image, param_words
from spikeforge.sim import golden
from spikeforge.sim.golden import NeuronParams, conv_currents, work_dtype

from .strategies import conv_layer, conv_specs, signed
from .test_hdl_core import core_access


async def wait_idle(ctx, dut):
    while not ctx.get(dut.idle):
        await ctx.tick()


def run_conv(dut, steps, *, rng, kernel_words=None, out_pattern=(1, 1, 0), prelude=None):
    """Feed each step's events (each input's count as repeated events, shuffled) then eos,
    with the output stalled by `out_pattern`; after the last step read every neuron's STATE.
    `prelude(ctx)` runs first, once the core is idle (and the kernel written).
    Returns (spike addresses per step, integrating cycles, ops, saturations, state words)."""
    queue = []
    for step in steps:
        events = np.repeat(np.arange(step.size), step)
        rng.shuffle(events)
        queue += [(int(a), 0) for a in events] + [(0, 1)]
    result = {"spikes": [], "integrating": 0, "ops": 0, "saturated": 0, "state": []}

    async def bench(ctx):
        await wait_idle(ctx, dut)  # the power-on sweep
        if kernel_words is not None:
            for addr, word in enumerate(kernel_words):
                await core_access(ctx, dut, MemSpace.WEIGHTS, addr, word)
        if prelude is not None:
            await prelude(ctx)
        sent, current = 0, []
        pattern = itertools.cycle(out_pattern)
        while len(result["spikes"]) < len(steps):
            if sent < len(queue):
                ctx.set(dut.i.payload, {"addr": queue[sent][0], "eos": queue[sent][1]})
            ctx.set(dut.i.valid, sent < len(queue))
            ctx.set(dut.o.ready, next(pattern))
            _, _, i_ready, o_valid, o_ready, payload, integ, ops, sat = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload, dut.integrating,
                dut.ops, dut.saturated)
            result["integrating"] += integ
            result["ops"] += ops
            result["saturated"] += sat
            if sent < len(queue) and i_ready:
                sent += 1
            if o_valid and o_ready:
                if payload.eos:
                    result["spikes"].append(current)
                    current = []
                else:
                    current.append(payload.addr)
        ctx.set(dut.i.valid, 0)
        await wait_idle(ctx, dut)
        for n in range(dut.config.neurons):
            result["state"].append(await core_access(ctx, dut, MemSpace.STATE, n))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


def slice_layer(layer, first, channels):
    """The layer's output channels [first, first + channels) as a layer of their own: the
    golden model of one core's slice (channels are independent)."""
    conv = replace(layer.conv, out_channels=channels)
    per = layer.conv.n_out // layer.conv.out_channels
    cut = slice(first * per, (first + channels) * per)
    arrays = {name: getattr(layer, name)[cut] for name in ("bias", "threshold", "decay_shift",
                                                           "decay_mul", "syn_decay_shift",
                                                           "syn_decay_mul")
              if getattr(layer, name) is not None}
    return replace(layer, weights=layer.weights[first:first + channels], conv=conv, **arrays)


def golden_steps(layer, steps):
    """The golden model's step of a one-layer convolution (sim/golden.py's loop) fed input
    counts [time, n_in]: (counts [time, n_out], final v, final syn or None, synaptic
    operations, saturations). Counts above 1 (a multi-spike source) are what a previous layer
    of an image would send."""
    params = NeuronParams(layer, work_dtype(layer))
    v = np.zeros((1, layer.n_out), params.dtype)
    syn = np.zeros((1, layer.n_out), params.dtype) if layer.current_based else None
    c = np.zeros((1, layer.n_out), np.uint8)
    kernel_t = layer.weights.T.astype(np.float64)
    spikes, sats = [], 0
    for x in steps:
        acc = conv_currents(x[None].astype(np.float64), layer.conv, kernel_t)
        v, syn, c, saturated = params.update(v, syn, c, acc.astype(params.dtype))
        sats += int(np.sum(saturated))
        spikes.append(c[0].copy())
    sops = int(steps.sum(axis=0, dtype=np.int64) @ layer.fan_out)
    return np.array(spikes), v[0], None if syn is None else syn[0], sops, sats


def check_core(layer, first, channels, lanes, steps, *, spram_kernel, spram_acc, seed,
               prelude=None):
    """Run the core of channels [first, first + channels) and compare it with the golden
    model of the slice (from rest: `prelude` may do anything that `clear` undoes)."""
    per = layer.conv.n_out // layer.conv.out_channels
    lo, hi = first * per, (first + channels) * per
    config = CoreConfig(0, lo, hi, lanes)
    dut = ConvCore(config, layer, spram_kernel=spram_kernel, spram_acc=spram_acc)
    words = None
    if spram_kernel:
        words = [int.from_bytes(row.tobytes(), "little")
                 for row in conv_kernel_memory(layer, config)]
    got = run_conv(dut, steps, rng=np.random.default_rng(seed), kernel_words=words,
                   prelude=None if prelude is None else lambda ctx: prelude(ctx, dut))

    part = slice_layer(layer, first, channels)
    spikes, v_final, syn_final, sops, sats = golden_steps(part, steps)
    if steps.max(initial=0) <= 1:  # the one-layer image through golden.run says the same
        image = Image(part.n_in, [part], HwConfig("iCE40UP5K", (CoreConfig(0, 0, hi - lo, 1),)))
        run = golden.run(image, steps[None])
        np.testing.assert_array_equal(run.spikes[0], spikes)
        np.testing.assert_array_equal(run.final_membranes[0][0], v_final)
        assert (run.sops[0, 0], run.saturations[0, 0]) == (sops, sats)
    for t, addrs in enumerate(got["spikes"]):
        assert addrs == sorted(addrs)
        assert addrs == [lo + int(n) for n in np.repeat(np.arange(hi - lo), spikes[t])], \
            f"step {t}"
    fields = state_layout(layer).members
    v_bits, c_bits = fields["v"].width, fields["c"].width
    words = np.array(got["state"], dtype=object)
    np.testing.assert_array_equal([signed(w, v_bits) for w in words], v_final)
    np.testing.assert_array_equal([(w >> v_bits) & ((1 << c_bits) - 1) for w in words],
                                  spikes[-1])
    if layer.current_based:
        np.testing.assert_array_equal(
            [signed(w >> (v_bits + c_bits), layer.syn_bits) for w in words], syn_final)
    assert got["ops"] == sops
    assert got["saturated"] == sats
    assert got["integrating"] == conv_cycles(steps, layer.conv, lanes, spram_acc=spram_acc,
                                             channels=channels)


@st.composite
def conv_cores(draw, max_channels=3, max_map=6):
    """(layer, first channel, channels, lanes, steps, spram_kernel, spram_acc, seed)."""
    spec = draw(conv_specs(max_channels=max_channels, max_map=max_map))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    in_max = draw(st.sampled_from([1, 1, 2]))
    decay = draw(st.sampled_from(["none", "shift", "mul"]))
    layer = conv_layer(rng, "c", spec, v_bits=draw(st.sampled_from([6, 8, 12])),
                       decay_mode="shift" if decay == "shift" else "none",
                       in_max_spikes=in_max)
    if decay == "mul":
        layer = replace(layer, decay_mode="mul", decay_mul=rng.integers(0, 257, spec.n_out),
                        decay_frac=8)
    per = spec.n_out // spec.out_channels
    if draw(st.booleans()):  # a per-channel bias (the usual conv bias), uniform threshold
        layer = replace(layer, bias=np.repeat(rng.integers(-7, 8, spec.out_channels), per),
                        threshold=np.full(spec.n_out, int(rng.integers(1, 20))))
    layer = replace(layer, reset=draw(st.sampled_from(["subtract", "zero"])),
                    compare=draw(st.sampled_from([">", ">="])),
                    reset_delay=draw(st.booleans()))
    kind = draw(st.sampled_from(["lif", "lif", "multi", "cuba"]))
    if kind == "multi":  # thresholds from 0 up, so counts > 1 happen
        layer = replace(layer, max_spikes=draw(st.sampled_from([2, 3])),
                        threshold=rng.integers(0, 8, spec.n_out))
    elif kind == "cuba":
        mode = draw(st.sampled_from(["none", "shift", "mul"]))
        extra = {"syn_decay_shift": rng.integers(0, 5, spec.n_out)} if mode == "shift" else \
            {"syn_decay_mul": rng.integers(0, 257, spec.n_out), "syn_decay_frac": 8} \
            if mode == "mul" else {}
        layer = replace(layer, syn_decay_mode=mode, syn_bits=draw(st.sampled_from([6, 10])),
                        syn_delay=draw(st.integers(0, 1)), **extra)
    first = draw(st.integers(0, spec.out_channels - 1))
    channels = draw(st.integers(1, spec.out_channels - first))
    lanes = draw(st.integers(1, channels))
    density = draw(st.sampled_from([0.2, 0.5]))
    steps = (rng.random((3, spec.n_in)) < density) * rng.integers(1, in_max + 1,
                                                                   (3, spec.n_in))
    return (layer, first, channels, lanes, steps.astype(np.uint8), draw(st.booleans()),
            draw(st.booleans()), seed)


def check_case(case):
    """`check_core` on a case drawn by `conv_cores`."""
    layer, first, channels, lanes, steps, spram_kernel, spram_acc, seed = case
    check_core(layer, first, channels, lanes, steps, spram_kernel=spram_kernel,
               spram_acc=spram_acc, seed=seed)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cores(max_channels=3, max_map=5))
def test_conv_core_equals_golden(case):
    check_case(case)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cores(max_channels=8, max_map=16))
def test_conv_core_equals_golden_wide(case):
    check_case(case)


TUTORIAL = ConvSpec(2, 8, 8, 4, 5, pool="max", pool_size=2)
STRIDED = ConvSpec(2, 7, 7, 4, 3, stride=2, padding=1, pool="sum", pool_size=2)
MULTI = {"max_spikes": 3, "threshold": 4}
CUBA = {"syn_decay_mode": "shift", "syn_bits": 6, "syn_delay": 1, "syn_decay_shift": 2}


@pytest.mark.parametrize(("spec", "spram", "model"), [
    (TUTORIAL, False, {}), (TUTORIAL, True, {}), (STRIDED, False, {}), (STRIDED, True, {}),
    (STRIDED, True, MULTI), (STRIDED, False, CUBA),
])
def test_conv_core_fixed(spec, spram, model):
    """Fixed cases: tutorial 6's shape (5x5 kernel, max pool 2, per-channel bias) and a strided,
    padded, sum-pooled one (also with multi-spike neurons and with a synaptic current);
    channels 1..3 of four over two lanes (a partial last group)."""
    rng = np.random.default_rng(6)
    layer = conv_layer(rng, "c", spec, v_bits=8)
    layer = replace(layer, bias=np.repeat([3, -2, 0, 5], spec.n_out // 4),
                    threshold=np.full(spec.n_out, model.get("threshold", 9)))
    extra = {name: np.full(spec.n_out, value) if name.endswith("shift") else value
             for name, value in model.items() if name != "threshold"}
    layer = replace(layer, **extra)
    steps = (rng.random((3, spec.n_in)) < 0.3).astype(np.uint8)
    check_core(layer, 1, 3, 2, steps, spram_kernel=spram, spram_acc=spram, seed=1)


@pytest.mark.parametrize("spram", [False, True])
def test_clear_mid_step(spram):
    """A step cut off by `clear` after half its events (accumulators full, a pass never run)
    and a written membrane leave nothing behind: the steps after it equal the golden model
    from rest."""
    rng = np.random.default_rng(4)
    layer = conv_layer(rng, "c", STRIDED, v_bits=8)
    steps = (rng.random((2, STRIDED.n_in)) < 0.4).astype(np.uint8)
    cut = np.flatnonzero(rng.random(STRIDED.n_in) < 0.5)

    async def prelude(ctx, dut):
        await core_access(ctx, dut, MemSpace.STATE, 1, 0x55)
        for addr in cut:
            ctx.set(dut.i.payload, {"addr": int(addr), "eos": 0})
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        for _ in range(4):
            await ctx.tick()
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await wait_idle(ctx, dut)

    check_core(layer, 0, 4, 3, steps, spram_kernel=spram, spram_acc=spram, seed=2,
               prelude=prelude)


# -- the memory port ---------------------------------------------------------------------------

def small_core(**kwargs):
    spec = ConvSpec(2, 5, 5, 3, 3, padding=1)
    rng = np.random.default_rng(3)
    layer = conv_layer(rng, "c", spec)
    per = spec.n_out // 3
    config = CoreConfig(0, per, 3 * per, 2)
    return ConvCore(config, layer, **kwargs), layer, config


@pytest.mark.parametrize("spram", [False, True])
def test_mem_port(spram):
    """WEIGHTS and STATE write then read back, PARAMS reads the layer's words, ACC reads the
    swept zeros, `clear` sweeps the state, and no request is taken during a step."""
    dut, layer, config = small_core(spram_kernel=spram, spram_acc=spram)
    width, depth = conv_mem_shape(layer, config)
    assert len(dut.mem.wdata) == width and len(dut.mem.addr) == (depth - 1).bit_length()
    kernel = [int.from_bytes(row.tobytes(), "little")
              for row in conv_kernel_memory(layer, config)]
    rng = np.random.default_rng(0)
    states = rng.integers(0, 1 << state_layout(layer).size, config.neurons)

    async def bench(ctx):
        await wait_idle(ctx, dut)
        fresh = [int(w) ^ 0x5 for w in kernel]
        for addr, word in enumerate(fresh):
            await core_access(ctx, dut, MemSpace.WEIGHTS, addr, word)
        for addr, word in enumerate(fresh):
            assert await core_access(ctx, dut, MemSpace.WEIGHTS, addr) == word
        for n, word in enumerate(states):
            await core_access(ctx, dut, MemSpace.STATE, n, int(word))
        for n, word in enumerate(states):
            assert await core_access(ctx, dut, MemSpace.STATE, n) == word
        for n, word in enumerate(param_words(layer, config.lo, config.hi)):
            assert await core_access(ctx, dut, MemSpace.PARAMS, n) == word
        for channel, y, x in ((0, 0, 0), (1, 2, 3), (1, 4, 4)):
            addr = conv_acc_address(layer, config, channel, y, x, spram_acc=spram)
            assert await core_access(ctx, dut, MemSpace.ACC, addr) == 0
        # a step in flight: the port is not ready until the core is idle again
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"addr": 7, "eos": 0})
        ctx.set(dut.i.valid, 1)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.payload, {"addr": 0, "eos": 1})
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.mem.space, MemSpace.STATE)
        ctx.set(dut.mem.addr, 0)
        ctx.set(dut.mem.re, 1)
        waited = 0
        while True:
            _, _, ready, idle = await ctx.tick().sample(dut.mem.ready, dut.idle)
            if ready:
                break
            assert not idle
            waited += 1
        ctx.set(dut.mem.re, 0)
        assert waited > 9  # the event's 9 taps, then the pass
        # clear: the sweep keeps idle low, then the state reads zero
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.idle)
        await wait_idle(ctx, dut)
        for n in range(config.neurons):
            assert await core_access(ctx, dut, MemSpace.STATE, n) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- refusals and the cycle formula --------------------------------------------------------------

def test_refusals():
    spec = ConvSpec(1, 4, 4, 2, 3)
    layer = conv_layer(np.random.default_rng(0), "c", spec)
    cases = [
        (CoreConfig(0, 1, 8, 1), layer, r"^Core neurons must be whole output channels of 4 "
                                        r"neurons within the layer's 8, not \[1, 8\)$"),
        (CoreConfig(0, 0, 8, 3), layer, r"^Lane count must be 1\.\.2 \(the core's channels\), "
                                        r"not 3$"),
        (CoreConfig(0, 0, 8, 1), replace(layer, spiking=False, threshold=np.zeros(8)),
         r"^A convolution core runs spiking neurons, not an LI readout \(layer 'c'\)$"),
    ]
    with warnings.catch_warnings():  # the half-built components are never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        for config, bad, message in cases:
            with pytest.raises(ValueError, match=message):
                ConvCore(config, bad)
        with pytest.raises(TypeError, match=r"^layer must be a convolutional LayerParams"):
            ConvCore(CoreConfig(0, 0, 8, 1), replace(layer, conv=None,
                                                     weights=np.zeros((8, 16))))
        gc.collect()
    with pytest.raises(ValueError, match=r"^events must be per-input counts \[\.\.\., 16\] "
                                         r"with SPRAM accumulators"):
        conv_cycles(5, spec, 1, spram_acc=True)


def test_conv_cycles_closed_form():
    """Block RAM: K^2 * groups an event; SPRAM: 2 * C per tap on the map, 1 per tap off it
    (a corner input of a 3x3 kernel without padding reaches one position)."""
    spec = ConvSpec(1, 4, 4, 3, 3)
    assert conv_cycles(4, spec, 2) == 4 * 9 * 2
    counts = np.zeros(16, np.int64)
    counts[0] = 1
    assert conv_cycles(counts, spec, 2, spram_acc=True) == 1 * 2 * 3 + 8
    assert conv_cycles(counts, spec, 1, spram_acc=True, channels=1) == 2 + 8


def test_memory_shapes_of_tutorial_6():
    """Closed forms for tutorial 6's conv2 (12x12x12 -> 64C5, max pool 2, 8-bit weights, a
    per-channel bias): 300 kernel rows x 32 groups of two lanes; 64 x 8 x 8 accumulators."""
    spec = ConvSpec(12, 12, 12, 64, 5, pool="max", pool_size=2)
    layer = conv_layer(np.random.default_rng(0), "c", spec, weight_bits=8, v_bits=12,
                       threshold=np.full(spec.n_out, 50))
    layer = replace(layer, bias=np.repeat(np.arange(64) % 7 - 3, 16),
                    decay_shift=np.full(spec.n_out, 2))
    config = CoreConfig(0, 0, 1024, 2)
    acc = layer.acc_bits
    assert conv_memory_shapes(layer, config, spram_acc=True) == {
        "kernel": (16, 9600), "acc": (acc, 4096), "state": (13, 1024)}
    assert conv_memory_shapes(layer, config)["acc"] == (2 * acc, 2048)
    varied = replace(layer, threshold=np.arange(1024) % 50 + 1)
    assert conv_memory_shapes(varied, config)["params"] == (11, 1024)

"""LifCore and router blocks in the Amaranth simulator: integration against a numpy closed form,
the neuron pass against the golden model, the memory port, merge order and broadcast."""

import dataclasses
import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.hdl.core import LifCore, MemSpace, state_layout
from spikeforge.hdl.router import EventFifo, EventFork, EventMerge
from spikeforge.image import (
    DECAY_MODES,
    RESET_MODES,
    CoreConfig,
    HwConfig,
    Image,
    LayerParams,
    pack_weights,
)
from spikeforge.sim import golden

from .strategies import signed

SETTINGS = settings(deadline=None, max_examples=20,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# weight_bank_depth: one memory (0), or banks of 1, 2, 4 words (hdl.memport.BankedMemory)
BANK_DEPTHS = (0, 1, 2, 4)


async def core_access(ctx, dut, space, addr, wdata=None):
    """One access through a core's memory port; a read answers `read_latency` cycles after
    acceptance (a LifCore 2, 3 with banked weights; a ConvCore 1); `rdata` is zero unless
    `rvalid` is high (an array ORs its cores' answers)."""
    ctx.set(dut.mem.space, space)
    ctx.set(dut.mem.addr, addr)
    strobe = dut.mem.re if wdata is None else dut.mem.we
    if wdata is not None:
        ctx.set(dut.mem.wdata, wdata)
    ctx.set(strobe, 1)
    await ctx.tick().until(dut.mem.ready)
    ctx.set(strobe, 0)
    if wdata is None:
        for _ in range(dut.read_latency - 1):
            assert not ctx.get(dut.mem.rvalid)
            assert ctx.get(dut.mem.rdata) == 0
            await ctx.tick()
        assert ctx.get(dut.mem.rvalid)
        return ctx.get(dut.mem.rdata)
    return None


async def run_core(ctx, dut, steps, *, gaps=None):
    """Feed steps of feed-forward events (non-recurrent core), take every output; return the
    output steps and the cycles spent between the first event and the step's eos."""
    gaps = gaps or itertools.repeat(False)
    ctx.set(dut.o.ready, 1)
    received, current = [], []
    queue = [(a, 0) for events in steps for a in events] if False else \
        [item for events in steps for item in [*((a, 0) for a in events), (0, 1)]]
    sent, presenting, busy = 0, False, 0
    while len(received) < len(steps):
        if not presenting and sent < len(queue) and not next(gaps):
            ctx.set(dut.i.payload, {"addr": queue[sent][0], "eos": queue[sent][1]})
            presenting = True
        ctx.set(dut.i.valid, presenting)
        _, _, ready, integrating, valid, payload = await ctx.tick().sample(
            dut.i.ready, dut.integrating, dut.o.valid, dut.o.payload)
        busy += integrating
        if presenting and ready:
            sent += 1
            presenting = False
        if valid:
            if payload.eos:
                received.append(current)
                current = []
            else:
                current.append(payload.addr)
    ctx.set(dut.i.valid, 0)
    return received, busy


def single_core_image(layer, lanes, lo=0, hi=None):
    hi = layer.n_out if hi is None else hi
    return Image(layer.n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, lo, hi, lanes),)))


def make_core(image, shared, pad=0, **kwargs):
    """Core 0 of `image`, its state and stored parameters in one memory word (the parameters
    `pad` bits above the state) when `shared` and it stores any, else in two memories: both
    layouts, whichever the mapper would choose for the image."""
    core = LifCore.from_image(image, 0, params_offset=None, **kwargs)
    if not (shared and core.stored_params):
        return core
    offset = state_layout(image.layers[0]).size + pad
    return LifCore.from_image(image, 0, params_offset=offset, **kwargs)


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- integration: v = sum of weight rows over all events, one word per cycle ----------------

@SETTINGS
@given(n_in=st.integers(1, 12), n_out=st.integers(1, 20), lanes=st.integers(1, 8),
       w_bits=st.integers(2, 8), seed=st.integers(0, 2**32 - 1), registered=st.booleans(),
       bank=st.sampled_from(BANK_DEPTHS))
def test_integration_closed_form(n_in, n_out, lanes, w_bits, seed, registered, bank):
    rng = np.random.default_rng(seed)
    steps = 3
    x = (rng.random((steps, n_in)) < 0.7).astype(np.int64)
    w_max = 1 << (w_bits - 1)
    weights = rng.integers(-w_max, w_max, (n_out, n_in))
    # No decay, no bias, an unreachable threshold: v[T] = sum_t W @ x[t], exactly.
    v_bits = 24
    layer = LayerParams("l", weights, np.zeros(n_out), np.full(n_out, (1 << (v_bits - 1)) - 1),
                        w_bits, v_bits, 20, decay_mode="none")
    layer = dataclasses.replace(layer, acc_bits=layer.acc_bits_needed())
    image = single_core_image(layer, lanes)
    dut = LifCore.from_image(image, 0, registered_reads=registered, weight_bank_depth=bank)
    groups = image.config.cores[0].groups
    expected = weights @ x.sum(axis=0)

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        out, busy = await run_core(ctx, dut, [list(np.flatnonzero(row)) for row in x])
        assert out == [[]] * steps
        # Exactly one weight word per integrating cycle, and no bubbles between events.
        assert busy == int(x.sum()) * groups
        await ctx.tick().until(dut.idle)
        got = [signed(await core_access(ctx, dut, MemSpace.STATE, n), v_bits)
               for n in range(n_out)]
        assert got == expected.tolist()
        # Accumulators are cleared by the pass.
        # (one a word, at (group << ceil_log2(lanes)) | lane: every lane of every group)
        lanes_now = image.config.cores[0].lanes
        lane_bits = (lanes_now - 1).bit_length()
        for g in range(groups):
            for p in range(lanes_now):
                assert await core_access(ctx, dut, MemSpace.ACC, g << lane_bits | p) == 0

    simulate(dut, bench)


def test_integration_throughput():
    """Back-to-back events keep the loop at one word per cycle: lanes synapses per cycle."""
    rng = np.random.default_rng(7)
    n_in, n_out, lanes = 64, 128, 8
    layer = LayerParams("h", rng.integers(-128, 128, (n_out, n_in)), np.zeros(n_out),
                        np.full(n_out, 500), 8, 16, 16, decay_shift=3)
    dut = LifCore.from_image(single_core_image(layer, lanes), 0)
    events = list(range(n_in))
    issuing = []  # integrating, per cycle, from the first handshake to the pass

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        ctx.set(dut.o.ready, 1)
        queue = [(addr, 0) for addr in events] + [(0, 1)]
        while queue or issuing[-1]:
            if queue:
                ctx.set(dut.i.payload, {"addr": queue[0][0], "eos": queue[0][1]})
            ctx.set(dut.i.valid, bool(queue))
            _, _, ready, integrating = await ctx.tick().sample(dut.i.ready, dut.integrating)
            if queue and ready:
                queue.pop(0)
            if issuing or ready:
                issuing.append(integrating)
        ctx.set(dut.i.valid, 0)

    simulate(dut, bench)
    span = len(issuing) - issuing[::-1].index(1) - issuing.index(1)
    rate = len(events) * n_out / span  # from the first word issued to the last
    print(f"integration: {rate:.3f} SOP/cycle over {span} cycles, bound {lanes}")
    assert sum(issuing) == len(events) * n_out // lanes
    assert rate >= 0.9 * lanes, f"{rate:.2f} SOP/cycle, bound {lanes}"


# -- the neuron pass against the golden model ----------------------------------------------

@st.composite
def single_layers(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_in, n_out = draw(st.integers(1, 8)), draw(st.integers(1, 12))
    w_bits, v_bits = draw(st.integers(2, 6)), draw(st.integers(4, 12))
    w_max, v_max = 1 << (w_bits - 1), (1 << (v_bits - 1)) - 1
    uniform = draw(st.booleans())

    def per_neuron(lo, hi):
        values = rng.integers(lo, hi + 1, n_out)
        return np.full(n_out, values[0]) if uniform else values

    decay_mode = draw(st.sampled_from(DECAY_MODES))
    frac = draw(st.integers(1, 10))
    layer = LayerParams(
        "l", rng.integers(-w_max // 2, w_max, (n_out, n_in)),
        per_neuron(max(-2 * w_max, -v_max - 1), min(2 * w_max, v_max)),
        per_neuron(0, min(v_max, 2 * w_max)), w_bits, v_bits, 40,
        reset=draw(st.sampled_from(RESET_MODES)), decay_mode=decay_mode,
        decay_shift=per_neuron(0, 31) if decay_mode == "shift" else None,
        decay_mul=per_neuron(0, 1 << frac) if decay_mode == "mul" else None,
        decay_frac=frac if decay_mode == "mul" else 0)
    return dataclasses.replace(layer, acc_bits=layer.acc_bits_needed())


@SETTINGS
@given(layer=single_layers(), lanes=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       gaps=st.lists(st.booleans(), max_size=4), registered=st.booleans(),
       shared=st.booleans(), pad=st.integers(0, 8), bank=st.sampled_from(BANK_DEPTHS))
def test_pass_matches_golden(layer, lanes, seed, gaps, registered, shared, pad, bank):
    rng = np.random.default_rng(seed)
    x = (rng.random((6, layer.n_in)) < 0.6).astype(np.uint8)
    image = single_core_image(layer, lanes)
    ref = golden.run(image, x, record=True)
    dut = make_core(image, shared, pad, registered_reads=registered, weight_bank_depth=bank)

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        out, _ = await run_core(ctx, dut, [list(np.flatnonzero(row)) for row in x],
                                gaps=itertools.cycle([*gaps, False]))
        assert out == [np.flatnonzero(row).tolist() for row in ref.spikes[0]]
        await ctx.tick().until(dut.idle)
        for n in range(layer.n_out):
            word = await core_access(ctx, dut, MemSpace.STATE, n)
            assert signed(word, layer.v_bits) == ref.final_membranes[0][0, n]
            assert word >> layer.v_bits == ref.spikes[0, -1, n]

    simulate(dut, bench)


@st.composite
def edge_layers(draw):
    """Layers at the ends of every range the image allows (spikeforge.image.NEURON_ARRAYS):
    bias at -2^(V-1) or 2^(V-1)-1, threshold at 0 or 2^(V-1)-1, shift 0 or 31, beta_q 0 or
    2^f, the widest weights: where a golden model that wraps and gateware that saturates would
    part."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_in, n_out = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    w_bits, v_bits = draw(st.integers(2, 8)), draw(st.integers(4, 12))
    w_lo, w_hi = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    v_lo, v_hi = -(1 << (v_bits - 1)), (1 << (v_bits - 1)) - 1
    frac = draw(st.integers(1, 16))
    decay_mode = draw(st.sampled_from(DECAY_MODES))

    def ends(lo, hi):
        return rng.choice([lo, hi], n_out)

    layer = LayerParams(
        "edge", rng.choice([w_lo, w_hi, 0], (n_out, n_in)), ends(v_lo, v_hi), ends(0, v_hi),
        w_bits, v_bits, 40, reset=draw(st.sampled_from(RESET_MODES)), decay_mode=decay_mode,
        decay_shift=ends(0, 31) if decay_mode == "shift" else None,
        decay_mul=ends(0, 1 << frac) if decay_mode == "mul" else None,
        decay_frac=frac if decay_mode == "mul" else 0)
    return dataclasses.replace(layer, acc_bits=layer.acc_bits_needed())


@SETTINGS
@given(layer=edge_layers(), lanes=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_pass_matches_golden_at_range_ends(layer, lanes, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random((5, layer.n_in)) < 0.7).astype(np.uint8)
    image = single_core_image(layer, min(lanes, layer.n_out))
    ref = golden.run(image, x, record=True)
    dut = LifCore.from_image(image, 0)

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        out, _ = await run_core(ctx, dut, [list(np.flatnonzero(row)) for row in x])
        assert out == [np.flatnonzero(row).tolist() for row in ref.spikes[0]]
        await ctx.tick().until(dut.idle)
        for n in range(layer.n_out):
            word = await core_access(ctx, dut, MemSpace.STATE, n)
            assert signed(word, layer.v_bits) == ref.final_membranes[0][0, n]

    simulate(dut, bench)


# -- memory port ----------------------------------------------------------------------------

@settings(deadline=None, max_examples=10)
@given(layer=single_layers(), lanes=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
       shared=st.booleans(), registered=st.booleans(), bank=st.sampled_from(BANK_DEPTHS))
def test_memory_port_rewrites_weights_and_params(layer, lanes, seed, shared, registered, bank):
    """Read the image's weights and params back, write new ones, and run against the golden
    model of the rewritten layer (weights also in banks: a read answers a cycle later)."""
    rng = np.random.default_rng(seed)
    w_max = 1 << (layer.weight_bits - 1)
    new_w = rng.integers(-w_max, w_max, layer.weights.shape)
    new_theta = rng.integers(0, 2 * w_max + 1, layer.n_out).clip(
        0, (1 << (layer.v_bits - 1)) - 1)
    new_layer = dataclasses.replace(layer, weights=new_w, acc_bits=40)
    new_layer = dataclasses.replace(new_layer, acc_bits=max(new_layer.acc_bits_needed(),
                                                            layer.acc_bits))
    dut_image = single_core_image(dataclasses.replace(layer, acc_bits=new_layer.acc_bits),
                                  lanes)
    dut = make_core(dut_image, shared, registered_reads=registered, weight_bank_depth=bank)
    stored = "threshold" in dut.stored_params
    if stored:
        new_layer = dataclasses.replace(new_layer, threshold=new_theta)
    image = single_core_image(new_layer, lanes)
    x = (rng.random((4, layer.n_in)) < 0.6).astype(np.uint8)
    ref = golden.run(image, x)
    old_words = dut_image.weight_memory(0)
    new_words = image.weight_memory(0)
    layout = dut.param_layout

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        for addr, row in enumerate(old_words):
            assert await core_access(ctx, dut, MemSpace.WEIGHTS, addr) == \
                int.from_bytes(row.tobytes(), "little")
        for n in range(layer.n_out):
            fields = layout.from_bits(await core_access(ctx, dut, MemSpace.PARAMS, n))
            assert fields.threshold == layer.threshold[n]
            assert fields.bias == layer.bias[n]
        for addr, row in enumerate(new_words):
            await core_access(ctx, dut, MemSpace.WEIGHTS, addr, int.from_bytes(row.tobytes(),
                                                                              "little"))
        if stored:
            for n in range(layer.n_out):
                word = layout.const({"threshold": int(new_theta[n]),
                                     "bias": int(layer.bias[n]),
                                     **({"decay": int(dut._param_values["decay"][n])}
                                        if "decay" in layout.members else {})})
                await core_access(ctx, dut, MemSpace.PARAMS, n, word.as_bits())
        out, _ = await run_core(ctx, dut, [list(np.flatnonzero(row)) for row in x])
        assert out == [np.flatnonzero(row).tolist() for row in ref.spikes[0]]

    simulate(dut, bench)
    assert np.array_equal(new_words, pack_weights(new_w, layer.weight_bits, lanes))


@settings(deadline=None, max_examples=10)
@given(layer=single_layers(), seed=st.integers(0, 2**32 - 1), shared=st.booleans(),
       pad=st.integers(0, 8))
def test_state_and_params_writes_leave_each_other(layer, seed, shared, pad):
    """Host writes to STATE leave PARAMS as the image has them, and writes to PARAMS leave the
    STATE just written, whether the two share a memory word or not (closed form: each space
    reads back what was last written to it)."""
    rng = np.random.default_rng(seed)
    dut = make_core(single_core_image(layer, 1), shared, pad)
    state_bits = state_layout(layer).size
    states = rng.integers(0, 1 << state_bits, layer.n_out).tolist()
    layout = dut.param_layout
    params = [layout.const({name: int(dut._param_values[name][n]) for name in layout.members})
              .as_bits() for n in range(layer.n_out)]
    stored = dut.stored_params
    flipped = layout.const({name: -1 if layout.members[name].signed else 1
                            for name in stored}).as_bits()

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        for n in range(layer.n_out):
            await core_access(ctx, dut, MemSpace.STATE, n, states[n])
        for n in range(layer.n_out):
            assert await core_access(ctx, dut, MemSpace.PARAMS, n) == params[n]
            assert await core_access(ctx, dut, MemSpace.STATE, n) == states[n]
        for n in range(0, layer.n_out, 2):
            await core_access(ctx, dut, MemSpace.PARAMS, n, params[n] ^ flipped)
        for n in range(layer.n_out):
            assert await core_access(ctx, dut, MemSpace.STATE, n) == states[n]
            assert await core_access(ctx, dut, MemSpace.PARAMS, n) == \
                params[n] ^ (flipped if n % 2 == 0 else 0)

    simulate(dut, bench)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weight_bank_depth": 3}, r"^Weight bank depth must be 0 or a power of 2, not 3$"),
    ({"weight_bank_depth": -2}, r"^Weight bank depth must be 0 or a power of 2, not -2$"),
    ({"weight_bank_depth": 4, "transparent_weights": True},
     r"^layer 'l': a banked weight memory must be a block RAM only the host writes \(no "
     r"learning, transparent or SPRAM weights\), not weight_bank_depth=4$"),
])
def test_bad_weight_banks_are_named(kwargs, message):
    layer = LayerParams("l", np.ones((3, 4), dtype=np.int64), np.zeros(3), np.full(3, 5), 4, 8,
                        12, decay_mode="none")
    with pytest.raises(ValueError, match=message):
        LifCore.from_image(single_core_image(layer, 1), 0, **kwargs)


# -- router blocks --------------------------------------------------------------------------

@settings(deadline=None, max_examples=15)
@given(data=st.data())
def test_merge_orders_steps_and_fork_broadcasts(data):
    """Merge n producers (each a core-like range of ascending addresses), fork the result to
    k consumers with random readiness through a FIFO: every consumer sees the concatenation."""
    n = data.draw(st.integers(1, 4))
    k = data.draw(st.integers(1, 3))
    steps = data.draw(st.integers(1, 3))
    bounds = sorted(data.draw(st.lists(st.integers(0, 30), min_size=n - 1, max_size=n - 1)))
    ranges = list(zip([0, *bounds], [*bounds, 31]))
    produced = [[sorted(data.draw(st.sets(st.integers(lo, max(lo, hi - 1)), max_size=4)))
                 if hi > lo else [] for lo, hi in ranges] for _ in range(steps)]
    expected = [[a for part in step for a in part] for step in produced]
    ready_patterns = [itertools.cycle(data.draw(st.lists(st.booleans(), max_size=4))
                                      + [True]) for _ in range(k)]
    valid_patterns = [itertools.cycle(data.draw(st.lists(st.booleans(), max_size=4))
                                      + [True]) for _ in range(n)]

    from amaranth.hdl import Module
    from amaranth.lib import wiring

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({})
            self.merge, self.fifo, self.fork = EventMerge(n), EventFifo(3), EventFork(k)

        def elaborate(self, platform):
            m = Module()
            m.submodules += [self.merge, self.fifo, self.fork]
            wiring.connect(m, self.merge.o, self.fifo.i)
            wiring.connect(m, self.fifo.o, self.fork.i)
            return m

    top = Top()
    got = [[[]] for _ in range(k)]
    queues = [[(a, 0) for step in produced for a in [*step[j]]] for j in range(n)]
    queues = [[item for step in produced for item in [*((a, 0) for a in step[j]), (0, 1)]]
              for j in range(n)]

    async def bench(ctx):
        sent = [0] * n
        presenting = [False] * n
        while any(len(g) <= steps for g in got) and sum(len(g) - 1 for g in got) < k * steps:
            for j, port in enumerate(top.merge.i):
                if not presenting[j] and sent[j] < len(queues[j]) and next(valid_patterns[j]):
                    addr, eos = queues[j][sent[j]]
                    ctx.set(port.payload, {"addr": addr, "eos": eos})
                    presenting[j] = True
                ctx.set(port.valid, presenting[j])
            readies = [next(p) for p in ready_patterns]
            for c, port in enumerate(top.fork.o):
                ctx.set(port.ready, readies[c])
            sampled = await ctx.tick().sample(
                *(p.ready for p in top.merge.i), *(p.valid for p in top.fork.o),
                *(p.payload for p in top.fork.o))
            values = sampled[2:]
            for j in range(n):
                if presenting[j] and values[j]:
                    sent[j] += 1
                    presenting[j] = False
            for c in range(k):
                if readies[c] and values[n + c]:
                    payload = values[n + k + c]
                    if payload.eos:
                        got[c].append([])
                    else:
                        got[c][-1].append(payload.addr)

    simulate(top, bench)
    for c in range(k):
        assert got[c][:-1] == expected, f"consumer {c}"

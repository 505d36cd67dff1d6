"""CoreArray in the Amaranth simulator against the golden model: every output spike of every
step, the final membranes and previous spikes (read through the memory port) and the counters,
bit-exact, on random images with random input idles and output backpressure."""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.core import MemSpace
from spikeforge.image import (
    DECAY_MODES,
    RESET_MODES,
    CoreConfig,
    HwConfig,
    Image,
    LayerParams,
)
from spikeforge.sim import golden

from .strategies import signed

SETTINGS = settings(deadline=None, max_examples=30,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- random images --------------------------------------------------------------------------

def random_layer(rng, draw, name, n_in, n_out, recurrent):
    w_bits = draw(st.integers(2, 6))
    v_bits = draw(st.integers(4, 10))
    uniform = draw(st.booleans())
    w_max = 1 << (w_bits - 1)
    v_max = (1 << (v_bits - 1)) - 1

    def per_neuron(lo, hi):
        values = rng.integers(lo, hi + 1, n_out)
        return np.full(n_out, values[0]) if uniform else values

    decay_mode = draw(st.sampled_from(DECAY_MODES))
    decay_frac = draw(st.integers(1, 8))
    kwargs = dict(
        name=name, weights=rng.integers(-w_max // 2, w_max, (n_out, n_in)),
        bias=per_neuron(max(-w_max, -v_max - 1), min(w_max, v_max)),
        threshold=per_neuron(0, min(v_max, 2 * w_max)),
        weight_bits=w_bits, v_bits=v_bits, acc_bits=40,
        reset=draw(st.sampled_from(RESET_MODES)), decay_mode=decay_mode,
        decay_shift=per_neuron(0, 12) if decay_mode == "shift" else None,
        decay_mul=per_neuron(0, 1 << decay_frac) if decay_mode == "mul" else None,
        decay_frac=decay_frac if decay_mode == "mul" else 0,
        rec_weights=rng.integers(-w_max, w_max, (n_out, n_out)) if recurrent else None)
    needed = LayerParams(**kwargs).acc_bits_needed()
    kwargs["acc_bits"] = needed + draw(st.integers(0, 2))
    return LayerParams(**kwargs)


@st.composite
def images(draw, max_layers=3, max_neurons=9):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_layers = draw(st.integers(1, max_layers))
    rec_layer = draw(st.sampled_from([None, *range(n_layers)]))
    n_inputs = draw(st.integers(1, 8))
    layers, cores, width = [], [], n_inputs
    for index in range(n_layers):
        n_out = draw(st.integers(1, max_neurons))
        layers.append(random_layer(rng, draw, f"l{index}", width, n_out, index == rec_layer))
        n_cores = draw(st.integers(1, min(3, n_out)))
        cuts = sorted(rng.choice(np.arange(1, n_out), n_cores - 1, replace=False).tolist())
        for lo, hi in zip([0, *cuts], [*cuts, n_out]):
            cores.append(CoreConfig(index, lo, hi, draw(st.integers(1, 4))))
        width = n_out
    # Cores in any order: the array sorts a layer's cores by address.
    order = draw(st.permutations(range(len(cores))))
    image = Image(n_inputs, layers, HwConfig("iCE40UP5K", tuple(cores[k] for k in order)))
    image.check()
    return image


# -- drivers --------------------------------------------------------------------------------

def spike_steps(x):
    return [[int(a) for a in np.flatnonzero(row)] for row in x]


async def exchange(ctx, dut, steps, gaps, readiness):
    """Send the steps' events (and an eos per step) into ``dut.i`` with idle cycles where
    ``gaps`` says so, while taking ``dut.o`` with ``ready`` as ``readiness`` says; return the
    output steps (lists of addresses)."""
    queue = [(addr, 0) for events in steps for addr in [*events, None]]
    queue = [(0 if addr is None else addr, int(addr is None)) for addr, _ in queue]
    sent, presenting = 0, False
    received, current = [], []
    while len(received) < len(steps):
        if not presenting and sent < len(queue) and not next(gaps):
            addr, eos = queue[sent]
            ctx.set(dut.i.payload, {"addr": addr, "eos": eos})
            presenting = True
        ctx.set(dut.i.valid, presenting)
        ready = next(readiness)
        ctx.set(dut.o.ready, ready)
        _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(
            dut.i.ready, dut.o.valid, dut.o.payload)
        if presenting and i_ready:
            sent += 1
            presenting = False
        if ready and o_valid:
            if o_payload.eos:
                received.append(current)
                current = []
            else:
                current.append(o_payload.addr)
    assert sent == len(queue)
    ctx.set(dut.i.valid, 0)
    ctx.set(dut.o.ready, 0)
    return received


async def mem_access(ctx, dut, core, space, addr, wdata=None):
    """One access through the memory port, checking its documented timing."""
    ctx.set(dut.mem.core, core)
    ctx.set(dut.mem.space, space)
    ctx.set(dut.mem.addr, addr)
    strobe = dut.mem.re if wdata is None else dut.mem.we
    if wdata is not None:
        ctx.set(dut.mem.wdata, wdata)
    ctx.set(strobe, 1)
    await ctx.tick().until(dut.mem.ready)
    ctx.set(strobe, 0)
    if wdata is not None:
        return None
    # the core performs it in the taking cycle (ready between steps) and answers from a
    # register (its read_latency, two cycles and more); the array ORs the answers
    waited = 1
    while not ctx.get(dut.mem.rvalid):
        await ctx.tick()
        waited += 1
        assert waited <= 16, "no answer"
    assert waited >= 2, "rdata comes at least 2 cycles after the taking cycle"
    value = ctx.get(dut.mem.rdata)
    await ctx.tick()
    assert not ctx.get(dut.mem.rvalid)
    return value


async def read_state(ctx, dut, image):
    """Final (v, s) per layer, through the STATE space."""
    v = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    s = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    for index, core in enumerate(image.config.cores):
        v_bits = image.layers[core.layer].v_bits
        for n in range(core.neurons):
            word = await mem_access(ctx, dut, index, MemSpace.STATE, n)
            v[core.layer][core.lo + n] = signed(word, v_bits)
            s[core.layer][core.lo + n] = (word >> v_bits) & 1
    return v, s


def counters(ctx, dut, n_layers):
    get = ctx.get
    return {
        "sops": [get(dut.sops[k]) for k in range(n_layers)],
        "spikes": [get(dut.spikes[k]) for k in range(n_layers)],
        "saturations": [get(dut.saturations[k]) for k in range(n_layers)],
        "events_in": get(dut.events_in), "events_out": get(dut.events_out),
        "overflow": get(dut.overflow),
    }


def expected_counters(ref, x, b):
    return {
        "sops": ref.sops[b].tolist(), "spikes": ref.spike_counts[b].tolist(),
        "saturations": ref.saturations[b].tolist(), "events_in": int(x[b].sum()),
        "events_out": int(ref.spikes[b].sum()), "overflow": 0,
    }


def run_batch(image, x, gaps, readiness, *, fifo_depth=0, before=None):
    """Run every sample of x [batch, time, n] after a clear; return per sample
    (output steps, final v, final s, counters)."""
    dut = CoreArray(image, fifo_depth=fifo_depth)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    results = []

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        # SPRAM starts zeroed: the weights the mapper placed there come through the port
        for core in sorted(dut.spram_cores):
            for addr, row in enumerate(image.weight_memory(core)):
                await mem_access(ctx, dut, core, MemSpace.WEIGHTS, addr,
                                 int.from_bytes(row.tobytes(), "little"))
        if before is not None:
            await before(ctx, dut)
        for sample in x:
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            await ctx.tick().until(dut.idle)
            steps = await exchange(ctx, dut, spike_steps(sample), gaps, readiness)
            await ctx.tick().until(dut.idle)
            v, s = await read_state(ctx, dut, image)
            results.append((steps, v, s, counters(ctx, dut, len(image.layers))))

    sim.add_testbench(bench)
    sim.run()
    return results


def check_against_golden(image, x, results):
    ref = golden.run(image, x, record=True)
    for b, (steps, v, s, count) in enumerate(results):
        assert steps == spike_steps(ref.spikes[b]), f"sample {b}: output spikes differ"
        for index in range(len(image.layers)):
            assert v[index].tolist() == ref.final_membranes[index][b].tolist(), \
                f"sample {b}: final membranes of layer {index} differ"
            assert s[index].tolist() == ref.layer_spikes[index][b, -1].tolist(), \
                f"sample {b}: previous spikes of layer {index} differ"
        assert count == expected_counters(ref, x, b), f"sample {b}: counters differ"


def gaps_and_readiness(data):
    """Cycles of input idles (True = idle) and output ready, each sometimes progressing."""
    gaps = data.draw(st.lists(st.booleans(), max_size=5).map(lambda bits: [*bits, False]),
                     label="input idle pattern")
    ready = data.draw(st.lists(st.booleans(), max_size=5).map(lambda bits: [*bits, True]),
                      label="output ready pattern")
    return itertools.cycle(gaps), itertools.cycle(ready)


# -- tests --------------------------------------------------------------------------------

@SETTINGS
@given(image=images(), data=st.data())
def test_array_matches_golden(image, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    steps = data.draw(st.integers(1, 5))
    density = data.draw(st.sampled_from([0.2, 0.5, 0.9]))
    x = (rng.random((2, steps, image.n_inputs)) < density).astype(np.uint8)
    gaps, readiness = gaps_and_readiness(data)
    depth = data.draw(st.sampled_from([0, 3]))
    ref = golden.run(image, x)
    event(f"output spikes: {'none' if not ref.spikes.any() else 'some'}")
    event(f"saturations: {'none' if not ref.saturations.any() else 'some'}")
    check_against_golden(image, x, run_batch(image, x, gaps, readiness, fifo_depth=depth))


def hidden_and_out(seed, n_in, n_hidden, n_out, *, threshold, v_bits, decay_shift):
    """Two dense layers of random 8-bit weights and biases, their accumulators as wide as the
    weights need."""
    rng = np.random.default_rng(seed)
    layers = []
    for name, fan_in, neurons in (("hidden", n_in, n_hidden), ("out", n_hidden, n_out)):
        kwargs = dict(name=name, weights=rng.integers(-128, 128, (neurons, fan_in)),
                      bias=rng.integers(-20, 20, neurons), threshold=np.full(neurons, threshold),
                      weight_bits=8, v_bits=v_bits, acc_bits=40,
                      decay_shift=np.full(neurons, decay_shift))
        kwargs["acc_bits"] = LayerParams(**kwargs).acc_bits_needed()
        layers.append(LayerParams(**kwargs))
    return layers


def digits_image(device="iCE40UP5K"):
    """64-128-10 with 8-bit weights, 8 lanes for the hidden layer and 2 for the output. On the
    UP5K that is more than its block RAM: the mapper's placement puts the hidden layer's
    weights in SPRAM (compiler.mapper.spram_cores)."""
    layers = hidden_and_out(0, 64, 128, 10, threshold=500, v_bits=16, decay_shift=3)
    return Image(64, layers, HwConfig(device, (CoreConfig(0, 0, 128, 8),
                                                    CoreConfig(1, 0, 10, 2))))


@pytest.mark.slow
def test_digits_array_fits_half_an_up5k(tmp_path, monkeypatch):
    """synth_ice40 on a digits-sized array: <= 50% of the UP5K's LUTs, and the large
    memories (weights, accumulators, state) in EBR. YoWASP's ABC does not run here, so this
    uses Yosys's own LUT mapping (-noabc), which over-counts LUTs."""
    import re
    import subprocess

    from amaranth.back import verilog

    from spikeforge.hdl.synth import yosys_command

    monkeypatch.chdir(tmp_path)  # YoWASP sees the working directory, not /tmp
    # on an HX8K (no SPRAM) every memory stays in block RAM
    (tmp_path / "top.v").write_text(verilog.convert(CoreArray(digits_image("iCE40HX8K")),
                                                    name="top"))
    log = subprocess.run([*yosys_command(), "-p", "read_verilog top.v; "
                          "synth_ice40 -top top -noabc; stat"],
                         capture_output=True, text=True, check=True).stdout
    luts = int(re.findall(r"(\d+)\s+SB_LUT4", log)[-1])
    assert luts <= 5280 // 2, f"{luts} LUTs"
    # (state and parameters may share one memory, "neuron": compiler.mapper.shared_params_offset)
    for memory in ("core0.weights", "core0.acc", "core0.(state|neuron)", "core1.weights",
                   "core1.(state|neuron)"):
        # Yosys may suffix a memory it rewrote (top.core0.acc$93)
        assert re.search(rf"mapping memory top\.{memory.replace('.', chr(92) + '.')}(\$\d+)? "
                         r"via \$__ICE40_RAM4K_", log), memory


def test_digits_array_matches_golden():
    """A digits-sized array on spike-coded sklearn digits, against the golden model."""
    from sklearn.datasets import load_digits

    image = digits_image()
    rng = np.random.default_rng(1)
    pixels = load_digits().data[:2] / 16.0
    x = (rng.random((2, 6, 64)) < pixels[:, None, :] * 0.5).astype(np.uint8)
    forever = itertools.repeat
    check_against_golden(image, x, run_batch(image, x, forever(False), forever(True)))


def test_ecp5_banked_weights_match_golden():
    """On the ECP5 a core's weight memory deeper than a row of DP16KDs is banked, its read data
    registered before the bank select (hdl.memport.BankedMemory): a 600-input layer at 4 lanes
    of 8 bits (1200 words of 32 bits, three banks of 512) against the golden model, and its
    words read back across the banks through the memory port."""
    from spikeforge.compiler.mapper import BRAM_SHAPES
    from spikeforge.hdl.memport import bank_depth

    layers = hidden_and_out(3, 600, 8, 3, threshold=300, v_bits=14, decay_shift=2)
    image = Image(600, layers, HwConfig("LFE5U-85F", (CoreConfig(0, 0, 8, 4),
                                                      CoreConfig(1, 0, 3, 3))))
    assert bank_depth(32, 1200, BRAM_SHAPES["ecp5"]) == 512
    words = image.weight_memory(0)

    async def read_back(ctx, dut):
        for addr in (0, 511, 512, 1023, 1024, 1199, 5):
            got = await mem_access(ctx, dut, 0, MemSpace.WEIGHTS, addr)
            assert got == int.from_bytes(words[addr].tobytes(), "little"), addr

    x = (np.random.default_rng(4).random((2, 3, 600)) < 0.05).astype(np.uint8)
    forever = itertools.repeat
    check_against_golden(image, x, run_batch(image, x, forever(False), forever(True),
                                             before=read_back))

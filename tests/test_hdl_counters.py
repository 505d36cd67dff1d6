"""STATUS's counters in a block RAM (hdl/counters.py), in the Amaranth simulator, against a count
kept here: every increment since the last CLEAR (the array's counters) or since reset (the
link's), modulo the counter's bytes, laid out as docs/host-protocol.md's STATUS payload and read
back by ``protocol.parse_status``. Increments come at random and at each counter's most, with
CLEARs and reads of the payload in between. Which form a SoC gets is the mapper's
(``status_in_bram``), checked here against its block-RAM count."""

import random

from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import protocol
from spikeforge.hdl.counters import (
    HEADER_BYTES,
    CounterSpec,
    StatusCounters,
    array_step_layout,
    status_counter_specs,
)

from .strategies import plastic_image, random_image


def specs_for(n_layers: int, sops_gap: int, link_gap: int) -> list[CounterSpec]:
    """The payload's counters (the names ``status_counter_specs`` gives), with a layer's sops
    as a core that adds 7 at most every ``sops_gap`` cycles, saturations 2 a cycle, and the
    link's counters at most once every ``link_gap`` cycles a source (``dropped_frames`` two
    sources, ``overruns`` any cycle), as UART byte times bound them."""
    sources = {"dropped_frames": 2, "overruns": 0}
    specs = [CounterSpec(name, 2, ((1, link_gap),) * sources.get(name, 1) or ((1, 1),),
                         cleared=False, error=name != "duplicates")
             for name in protocol.LINK_COUNTERS]
    specs += [CounterSpec(name, 3) for name in protocol.ARRAY_COUNTERS]
    terms = {"sops": ((7, sops_gap),), "spikes": ((1, 1),), "saturations": ((2, 1),),
             "learn_cycles": ((1, 1),)}
    specs += [CounterSpec(f"{name}_{k}", 3, terms[name])
              for name in protocol.LAYER_COUNTERS for k in range(n_layers)]
    return specs


def expected(specs, values, n_layers, *, overflow, idle, error, not_loaded,
             load_error) -> bytes:
    flags = overflow | idle << 1 | error << 2 | not_loaded << 3 | load_error << 5
    out = bytearray([protocol.PROTOCOL_VERSION, flags, n_layers, 0])
    for spec in specs:
        out += (values[spec.name] % (1 << 8 * spec.nbytes)).to_bytes(spec.nbytes, "little")
    return bytes(out)


@settings(deadline=None, max_examples=60)
@given(n_layers=st.integers(1, 2), sops_gap=st.integers(1, 4), link_gap=st.integers(1, 200),
       in_bram=st.booleans(), data=st.data())
def test_status_counters_count_every_increment(n_layers, sops_gap, link_gap, in_bram, data):
    # both forms: in a block RAM with pre-counters, and (no block RAM left) as registers
    specs = specs_for(n_layers, sops_gap, link_gap)
    dut = StatusCounters(specs, n_layers, in_bram=in_bram)
    assert dut.length == protocol.status_length(n_layers)
    # per counter: silent, at its most every cycle it may, or at random
    modes = {s.name: data.draw(st.sampled_from(["zero", "most", "random"])) for s in specs}
    seed = data.draw(st.integers(0, 2**32 - 1))
    phases = data.draw(st.lists(st.tuples(st.integers(1, 300), st.booleans(),
                                          st.integers(0, 5)), min_size=1, max_size=4))
    flags = {"overflow": data.draw(st.integers(0, 1)), "idle": data.draw(st.integers(0, 1)),
             "not_loaded": data.draw(st.integers(0, 1)),
             "load_error": data.draw(st.integers(0, 7))}
    values = dict.fromkeys((s.name for s in specs), 0)
    error = [0]
    rng = random.Random(seed)

    async def bench(ctx):
        for name, value in flags.items():
            ctx.set(getattr(dut, name), value)
        # cycles since the last add of each term
        since = {(s.name, k): 10**9 for s in specs for k in range(len(s.terms))}
        for cycles, clear_at_end, reads in phases:
            for t in range(cycles):
                clear = clear_at_end and t == cycles - 1
                ctx.set(dut.clear, clear)
                for spec in specs:
                    inc = 0
                    for k, (most, gap) in enumerate(spec.terms):
                        since[spec.name, k] += 1
                        add = 0
                        if since[spec.name, k] >= gap and modes[spec.name] != "zero":
                            add = most if modes[spec.name] == "most" else rng.randint(0, most)
                        if add:
                            since[spec.name, k] = 0
                        inc += add
                    ctx.set(dut.inc[spec.name], inc)
                    if clear and spec.cleared:
                        values[spec.name] = 0  # the increment of a CLEAR's cycle is lost
                    else:
                        values[spec.name] += inc
                    if spec.error and inc:
                        error[0] = 1
                # a stray read every third cycle at most, as the executor reads
                ctx.set(dut.read, t % 3 == 0 and t // 3 < reads)
                ctx.set(dut.index, rng.randrange(dut.length))
                await ctx.tick()
            ctx.set(dut.clear, 0)
            ctx.set(dut.read, 0)
            for spec in specs:
                ctx.set(dut.inc[spec.name], 0)
            # STATUS: flush, wait, then read the payload a byte every third cycle
            ctx.set(dut.flush, 1)
            waited = 0
            while not ctx.get(dut.flushed):
                await ctx.tick()
                waited += 1
                assert waited <= 3 * dut.length + 8, "a flush takes at most two sweeps"
            got = bytearray()
            for index in range(dut.length):
                ctx.set(dut.index, index)
                ctx.set(dut.read, 1)
                await ctx.tick()
                ctx.set(dut.read, 0)
                got.append(ctx.get(dut.byte))
                await ctx.tick().repeat(2)
                assert ctx.get(dut.byte) == got[-1]  # held until the next read
            ctx.set(dut.flush, 0)
            await ctx.tick()
            want = expected(specs, values, n_layers, error=error[0], **flags)
            assert bytes(got) == want
            status = protocol.parse_status(bytes(got), n_layers)
            assert status.events_in == values["events_in"] % (1 << 24)
            assert status.link["crc_errors"] == values["crc_errors"] % (1 << 16)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_pre_counters_hold_what_a_counter_adds_between_visits():
    # the widths follow the rates: a 1-a-cycle counter over the window, a dense core's
    # operations once an event (`groups` cycles), nothing for a layer that does not learn
    image = random_image(3, (8, 6, 3))
    specs = status_counter_specs(image)
    dut = StatusCounters(specs, len(image.layers))
    window = dut.window
    assert window == 3 * (dut.length - HEADER_BYTES) + 4
    by_name = {s.name: s for s in specs}
    assert dut.pre_bits(by_name["busy_cycles"]) == (window + 1).bit_length()
    core = image.config.cores_of(0)[0]
    assert by_name["sops_0"].bound(window) == (window // core.groups + 1) * core.neurons
    assert dut.pre_bits(by_name["learn_cycles_0"]) == 0
    assert not by_name["crc_errors"].cleared and by_name["events_in"].cleared
    assert [s.error for s in specs[:6]] == [name != "duplicates"
                                            for name in protocol.LINK_COUNTERS]
    # the link's counters move at most once per half a UART byte time a source (a byte of 400
    # cycles: 10 cycles a bit), but for the overruns (the executor's lost events)
    uart = {s.name: s for s in status_counter_specs(image, byte_cycles=400)}
    assert dut.pre_bits(uart["crc_errors"]) == (window // 200 + 1).bit_length()
    assert uart["dropped_frames"].bound(window) == 2 * (window // 200 + 1)
    assert uart["overruns"].terms == ((1, 1),) == by_name["crc_errors"].terms
    # the array's increments are as wide as a cycle's most
    layout = array_step_layout(image)
    assert layout.size == sum(s.step_max.bit_length() for s in specs if s.cleared)
    # a learning layer counts a cycle a core (split: two cores a layer)
    learning = plastic_image(3, (8, 6, 3), [None, ("three_factor", False)])
    learns = {s.name: s for s in status_counter_specs(learning)}
    assert learns["learn_cycles_1"].step_max == len(learning.config.cores_of(1))
    assert learns["learn_cycles_0"].terms == ()


def test_the_counters_take_a_block_ram_only_where_one_is_free():
    # the digits network takes 29 of the UP5K's 30 block RAMs: the counters take the last;
    # with a three-factor readout it takes all 30, and they are registers
    import spikeforge
    from spikeforge.compiler.mapper import estimate_resources, status_in_bram
    from spikeforge.digits import build_model

    image = spikeforge.compile(build_model(), weight_bits=8, board="icebreaker")
    learning = image.with_learning(-1, "three_factor")
    assert status_in_bram(image.layers, image.config, image.learning)
    assert not status_in_bram(learning.layers, learning.config, learning.learning)
    for im in (image, learning):
        assert estimate_resources(im.layers, im.config, learning=im.learning)["bram"] == (30, 30)


def test_hello_reads_back_beside_the_payload():
    # HELLO's payload is a constant table from hello_base on, read as the payload is, in
    # either form; the counters' sweep never writes it
    from spikeforge.hdl.counters import hello_base

    hello = bytes(range(7, 7 + protocol.HELLO_BYTES))
    for in_bram in (True, False):
        specs = specs_for(2, 1, 1)
        dut = StatusCounters(specs, 2, in_bram=in_bram, hello=hello)
        assert dut.hello_base == hello_base(2) >= dut.length
        got = bytearray()

        async def bench(ctx, dut=dut, got=got):
            for name in ("events_in", "crc_errors"):
                ctx.set(dut.inc[name], 1)
            await ctx.tick().repeat(3 * dut.length)  # sweeps over the counters' bytes
            for index in range(len(hello)):
                ctx.set(dut.index, dut.hello_base + index)
                ctx.set(dut.read, 1)
                await ctx.tick()
                ctx.set(dut.read, 0)
                got.append(ctx.get(dut.byte))
                await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        assert bytes(got) == hello, f"in_bram={in_bram}"

"""hdl.memport: the banked memory against a dictionary of words (a read two cycles after its
address sees every earlier write), its bank depth against the mapper's block count, and yosys's
mapping of it onto ECP5 DP16KDs (one row of blocks per bank, each bank's data registered)."""

from __future__ import annotations

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.compiler.mapper import BRAM_SHAPES, blocks_for
from spikeforge.hdl.memport import BankedMemory, bank_depth
from spikeforge.hdl.synth import synth_rtlil_stats

ECP5 = BRAM_SHAPES["ecp5"]


@settings(max_examples=15, deadline=None)
@given(width=st.integers(1, 20), depth=st.integers(1, 40), bank=st.sampled_from([1, 2, 4, 8]),
       seed=st.integers(0, 2**32 - 1))
def test_banked_memory_reads_two_cycles_late(width, depth, bank, seed):
    rnd = random.Random(seed)
    init = [rnd.getrandbits(width) for _ in range(rnd.randint(0, depth))]
    dut = BankedMemory(width=width, depth=depth, bank_depth=bank, init=init)
    words = init + [0] * (depth - len(init))
    expect = []  # the word each cycle's read returns, two cycles later

    async def bench(ctx):
        for _ in range(150):
            r_addr, w_addr = rnd.randrange(depth), rnd.randrange(depth)
            write = rnd.random() < 0.4 and w_addr != r_addr  # same-cycle collisions undefined
            w_data = rnd.getrandbits(width)
            ctx.set(dut.r_addr, r_addr)
            ctx.set(dut.w_addr, w_addr)
            ctx.set(dut.w_data, w_data)
            ctx.set(dut.w_en, write)
            expect.append(words[r_addr])
            await ctx.tick()
            if write:
                words[w_addr] = w_data
            if len(expect) >= dut.read_latency:  # now: the read of read_latency - 1 cycles ago
                assert ctx.get(dut.r_data) == expect[-dut.read_latency]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize(("width", "depth"), [
    (64, 6272), (64, 1024), (64, 512), (40, 128), (32, 1200), (20, 1024), (8, 5000), (4, 6000),
    (1, 20000), (72, 513)])
def test_bank_depth_keeps_the_fewest_blocks(width, depth):
    """Banks of the chosen depth, each one row of blocks in that shape, take no more blocks
    than the cheapest unbanked shape (compiler.mapper.blocks_for): banking costs no RAM."""
    bank = bank_depth(width, depth, ECP5)
    shape_width = dict((d, w) for w, d in ECP5)[bank]
    rows = -(-depth // bank)
    assert rows * -(-width // shape_width) == blocks_for(width, depth, ECP5)


def test_one_bank_when_a_row_of_blocks_holds_the_memory():
    assert bank_depth(64, 512, ECP5) == 512
    assert bank_depth(4, 4096, ECP5) == 4096
    assert bank_depth(40, 128, ECP5) == 512
    assert bank_depth(64, 513, ECP5) == 512
    assert BankedMemory(width=8, depth=9, bank_depth=4).banks == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"width": 8, "depth": 0, "bank_depth": 4}, r"^Depth must be a positive integer, not 0$"),
    ({"width": 8, "depth": 9, "bank_depth": 3}, r"^Bank depth must be a power of 2, not 3$"),
    ({"width": 8, "depth": 9, "bank_depth": 0}, r"^Bank depth must be a power of 2, not 0$"),
])
def test_bad_shapes_are_named(kwargs, message):
    with warnings.catch_warnings():  # the half-built component is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message):
            BankedMemory(**kwargs)
        gc.collect()


def test_ecp5_maps_each_bank_to_one_row_of_dp16kd():
    """784-128-10's hidden core (64-bit words, 6272 deep) in banks: yosys takes the mapper's
    count of DP16KDs, and a flip-flop per bank and bit holds the banks' data."""
    from amaranth.back import rtlil

    width, depth = 64, 6272
    bank = bank_depth(width, depth, ECP5)
    dut = BankedMemory(width=width, depth=depth, bank_depth=bank,
                       init=[random.Random(1).getrandbits(width) for _ in range(depth)])
    stats = synth_rtlil_stats(rtlil.convert(dut, name="top", emit_src=False), "LFE5U-85F")
    assert stats["bram"] == blocks_for(width, depth, ECP5) == 26, stats
    assert dut.banks * width <= stats["ffs"] < dut.banks * width + 64, stats

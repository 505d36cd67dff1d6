"""SB_SPRAM256KA and SpramMemory: the behavioural model against the primitive's documented timing
(tests/spram_model.py) in the Amaranth simulator, Verilator and Icarus; yosys's mapping onto the
primitive on the UP5K."""

from __future__ import annotations

import gc
import json
import random
import warnings
from types import SimpleNamespace

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl import rtl
from spikeforge.hdl.spram import SPRAM_POISON, Spram, SpramMemory
from spikeforge.hdl.synth import synth_rtlil_stats

from .spram_model import SpramMemoryModel, random_ops

SIMULATORS = [s for s in ("verilator", "icarus") if s in rtl.available_simulators()]


def _run(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_primitive_reads_one_cycle_late_holds_without_select_and_poisons_after_write():
    dut = Spram()

    async def bench(ctx):
        async def cycle(addr, *, cs=1, wren=0, mask=0, data=0):
            ctx.set(dut.addr, addr)
            ctx.set(dut.cs, cs)
            ctx.set(dut.wren, wren)
            ctx.set(dut.mask_wren, mask)
            ctx.set(dut.data_in, data)
            await ctx.tick()
            return ctx.get(dut.data_out)

        assert await cycle(5, wren=1, mask=0b1111, data=0x1234) == SPRAM_POISON
        assert await cycle(5, wren=1, mask=0b0101, data=0xABCD) == SPRAM_POISON  # nibbles 0, 2
        assert await cycle(5) == 0x1B3D
        assert await cycle(9, cs=0) == 0x1B3D  # deselected: holds
        assert await cycle(16383, wren=1, mask=0b1000, data=0xF000) == SPRAM_POISON
        assert await cycle(16383, cs=0) == SPRAM_POISON  # holds the undefined output too
        assert await cycle(16383) == 0xF000
        assert await cycle(0) == 0

    _run(dut, bench)


@pytest.mark.parametrize(("width", "depth"), [(20, 100), (8, 40000), (36, 17000)])
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_memory_matches_the_timing_model(width, depth, seed):
    dut = SpramMemory(width=width, depth=depth)
    ops = random_ops(random.Random(seed), width, depth, 120)
    model = SpramMemoryModel(width, depth)

    async def bench(ctx):
        for addr, r_en, w_en, w_data in ops:
            ctx.set(dut.addr, addr)
            ctx.set(dut.r_en, r_en)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, w_data)
            await ctx.tick()
            model.cycle(addr, r_en, w_en, w_data)
            assert model.agrees(f"{ctx.get(dut.r_data):0{width}b}"), model.r_data

    _run(dut, bench)


def test_memory_shape():
    assert (SpramMemory(width=64, depth=16384).primitives,
            SpramMemory(width=16, depth=65536).primitives,
            SpramMemory(width=17, depth=16385).primitives) == (4, 4, 4)
    assert len(SpramMemory(width=9, depth=10).w_en) == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"width": 0, "depth": 4}, r"^SPRAM word width must be 1\.\.64 bits, not 0$"),
    ({"width": 65, "depth": 4}, r"^SPRAM word width must be 1\.\.64 bits, not 65$"),
    ({"width": 8, "depth": 65537}, r"^SPRAM depth must be 1\.\.65536 words, not 65537$"),
])
def test_bad_shapes_are_named(kwargs, message):
    with warnings.catch_warnings():  # the half-built component is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message):
            SpramMemory(**kwargs)
        gc.collect()


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_behavioural_model_in_rtl_simulators(simulator, tmp_path):
    dut = SpramMemory(width=24, depth=20000)
    build = rtl.build_simulator(rtl.generate_verilog(dut, simulator=simulator),
                                simulator=simulator)
    spec = {"seed": 7, "width": 24, "depth": 20000, "count": 400}
    rtl.run_cocotb(build, "tests.rtl_spram_tb", test_dir=tmp_path,
                   extra_env={"SPRAM_JOB": json.dumps(spec)})


def test_yosys_maps_the_model_onto_four_primitives_on_the_up5k():
    from amaranth.back import rtlil

    up5k = SimpleNamespace(device="iCE40UP5K")
    text = rtlil.convert(SpramMemory(width=64, depth=16384), name="top", platform=up5k,
                         emit_src=False)
    stats = synth_rtlil_stats(text, "iCE40UP5K")
    assert (stats["spram"], stats["bram"]) == (4, 0)

"""`hdl.compare`: compares with a constant as logic. Oracles: Python's own `<` and `>=` over
every value of the width (Amaranth's simulator), and yosys's iCE40 netlist, in which the logic
form takes no carry cells where the `<` operator takes one a bit."""

import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl.compare import at_least, below
from spikeforge.hdl.synth import yosys_command


class Compare(wiring.Component):
    """`lt` = value < bound and `ge` = value >= bound, by `hdl.compare` or by the operators."""

    def __init__(self, width: int, bound: int, *, logic: bool = True):
        self._bound = bound
        self._logic = logic
        super().__init__({"value": In(width), "lt": Out(1), "ge": Out(1)})

    def elaborate(self, platform):
        m = Module()
        if self._logic:
            m.d.comb += [self.lt.eq(below(self.value, self._bound)),
                         self.ge.eq(at_least(self.value, self._bound))]
        else:
            m.d.comb += [self.lt.eq(self.value < self._bound),
                         self.ge.eq(self.value >= self._bound)]
        return m


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8).flatmap(
    lambda width: st.tuples(st.just(width), st.integers(-2, (1 << width) + 2))))
def test_below_and_at_least_match_python_for_every_value(case):
    width, bound = case
    dut = Compare(width, bound)
    seen = []

    async def bench(ctx):
        for value in range(1 << width):
            ctx.set(dut.value, value)
            seen.append((value, ctx.get(dut.lt), ctx.get(dut.ge)))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(value, int(value < bound), int(value >= bound))
                    for value in range(1 << width)]


def test_signed_values_are_refused():
    with pytest.raises(TypeError, match="unsigned"):
        below(Signal(signed(8)), 3)


def _ice40_cells(dut, tmp_path) -> dict[str, int]:
    (tmp_path / "top.il").write_text(rtlil.convert(dut, name="top", emit_src=False))
    subprocess.run([*yosys_command(), "-q", "-p",
                    "read_rtlil top.il; synth_ice40 -top top; tee -q -o stat.json stat -json"],
                   cwd=tmp_path, check=True, capture_output=True)
    report = json.loads((tmp_path / "stat.json").read_text())
    design = report.get("design") or report["modules"]["\\top"]
    return {name.lstrip("\\$"): int(n) for name, n in design["num_cells_by_type"].items()}


def test_the_logic_form_takes_no_carry_chain(tmp_path):
    """A 12-bit compare with 1000: the operators' carry chain (SB_CARRY cells, each a logic cell
    of its own after packing) against a few LUTs."""
    operators = _ice40_cells(Compare(12, 1000, logic=False), tmp_path)
    logic = _ice40_cells(Compare(12, 1000), tmp_path)
    assert operators.get("SB_CARRY", 0) >= 8  # (1000 ends in three zero bits)
    assert logic.get("SB_CARRY", 0) == 0
    assert logic["SB_LUT4"] < operators.get("SB_CARRY", 0)

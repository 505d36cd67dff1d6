"""bench/logic_depth.py's level count on hand-made netlists (closed forms)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
from logic_depth import depths  # noqa: E402


def cell(kind, inputs, outputs):
    connections = {**inputs, **outputs}
    directions = {**dict.fromkeys(inputs, "input"), **dict.fromkeys(outputs, "output")}
    return {"type": kind, "connections": connections, "port_directions": directions}


def netlist(cells):
    return {"modules": {"top": {"cells": cells}}}


def test_luts_between_flip_flops_count_one_level_each():
    # q0 -> LUT -> LUT -> LUT -> d1; the chain's nets are 10, 11, 12, 13
    cells = {
        "ff0": cell("SB_DFF", {"C": [1], "D": [99]}, {"Q": [10]}),
        "l1": cell("SB_LUT4", {"I0": [10], "I1": ["0"], "I2": ["0"], "I3": ["0"]}, {"O": [11]}),
        "l2": cell("SB_LUT4", {"I0": [11], "I1": [10], "I2": ["0"], "I3": ["0"]}, {"O": [12]}),
        "l3": cell("SB_LUT4", {"I0": [12], "I1": ["0"], "I2": ["0"], "I3": ["0"]}, {"O": [13]}),
        "ff1": cell("SB_DFFE", {"C": [1], "D": [13], "E": [10]}, {"Q": [14]}),
    }
    found = sorted(levels for levels, start, end in depths(netlist(cells))
                   if (start, end) == ("ff0", "ff1"))
    assert found == [pytest.approx(0.0), pytest.approx(3.0)]  # E straight from q0; D: 3 LUTs


def test_a_carry_chain_counts_its_entry_and_each_bit():
    # a RAM output (1.5) feeds a LUT (2.5) that enters a 4-bit carry chain (+0.5, then 0.08 a
    # bit), whose carry out goes through one more LUT into a flip-flop
    cells = {
        "ram": cell("SB_RAM40_4K", {"RCLK": [1], "RADDR": [2]}, {"RDATA": [20]}),
        "l0": cell("SB_LUT4", {"I0": [20], "I1": ["0"], "I2": ["0"], "I3": ["0"]}, {"O": [21]}),
        "c0": cell("SB_CARRY", {"CI": ["0"], "I0": [21], "I1": ["0"]}, {"CO": [30]}),
        "c1": cell("SB_CARRY", {"CI": [30], "I0": ["0"], "I1": ["0"]}, {"CO": [31]}),
        "c2": cell("SB_CARRY", {"CI": [31], "I0": ["0"], "I1": ["0"]}, {"CO": [32]}),
        "c3": cell("SB_CARRY", {"CI": [32], "I0": ["0"], "I1": ["0"]}, {"CO": [33]}),
        "l1": cell("SB_LUT4", {"I0": [33], "I1": ["0"], "I2": ["0"], "I3": ["0"]}, {"O": [34]}),
        "ff": cell("SB_DFF", {"C": [1], "D": [34]}, {"Q": [35]}),
    }
    (levels, start), = {(lv, s) for lv, s, e in depths(netlist(cells)) if e == "ff"}
    assert start == "ram"
    assert levels == pytest.approx(1.5 + 1 + 0.5 + 3 * 0.08 + 1)

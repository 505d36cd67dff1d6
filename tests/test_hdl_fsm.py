"""`hdl.fsm.one_hot`: the attribute on the state register, and yosys's own log and netlist as
the oracle that it recodes the machine one-hot (one flip-flop a state) where it otherwise keeps
the binary encoding."""

import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeforge.hdl.fsm import one_hot
from spikeforge.hdl.synth import yosys_command

STATES = 6


class Walker(wiring.Component):
    """Six states in a ring, stepping on `go`; `at` says which."""

    go: In(1)
    at: Out(STATES)

    def __init__(self, recode: bool):
        self._recode = recode
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        with m.FSM() as fsm:
            for k in range(STATES):
                with m.State(f"S{k}"):
                    m.d.comb += self.at[k].eq(1)
                    with m.If(self.go):
                        m.next = f"S{(k + 1) % STATES}"
        if self._recode:
            one_hot(fsm)
        return m


def synthesize(tmp_path, recode: bool) -> tuple[str, dict]:
    text = rtlil.convert(Walker(recode), name="top")
    (tmp_path / "top.il").write_text(text)
    subprocess.run([*yosys_command(), "-q", "-l", "yosys.log", "-p",
                    "read_rtlil top.il; synth_ice40 -top top; write_json top.json"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=300)
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    return (tmp_path / "yosys.log").read_text(), cells


def flip_flops(cells: dict) -> int:
    return sum(cell["type"].startswith("SB_DFF") for cell in cells.values())


@pytest.mark.parametrize("recode", [False, True])
def test_one_hot_recodes_the_state_register(tmp_path, recode):
    text = rtlil.convert(Walker(recode), name="top")
    assert ('attribute \\fsm_encoding "one-hot"' in text) == recode
    log, cells = synthesize(tmp_path, recode)
    recoded = "using `one-hot' encoding" in log
    assert recoded == recode
    # binary: ceil(log2(6)) = 3 state flip-flops; one-hot: one a state
    assert flip_flops(cells) == (STATES if recode else 3)

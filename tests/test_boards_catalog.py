"""Board catalog against amaranth-boards, PLL settings against icepll/ecppll, BoardTop elaboration.

Oracles: the amaranth-boards platform classes themselves (device, clock, UART pins, LEDs),
compiler/devices.py (device family), the IceStorm `icepll` and Trellis `ecppll` tools (YoWASP
wheels) for the PLL dividers, and the PLL's frequency equations for every setting.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.vendor import LatticeECP5Platform, LatticeICE40Platform
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.boards.catalog import BOARD_DEVICES, BOARDS, find_board, resolve_board
from spikeforge.boards.top import BoardTop, PllError, clock_below, ecp5_pll, ice40_pll, plan_clock
from spikeforge.compiler.devices import DEVICES

from .strategies import random_image

BIN = Path(sys.executable).parent
BUILDABLE = [name for name, board in BOARDS.items() if board.buildable]


def test_required_boards():
    required = {"icebreaker": "iCE40UP5K", "ice40-hx8k-b-evn": "iCE40HX8K",
                "ulx3s-25f": "LFE5U-25F", "ulx3s-85f": "LFE5U-85F"}
    for name, device in required.items():
        assert BOARDS[name].device == device and BOARDS[name].buildable
    other_ecp5 = [b for b in BOARDS.values() if b.family == "ecp5" and b.buildable
                  and not b.name.startswith("ulx3s")]
    assert other_ecp5, "one more buildable ECP5 board"


@pytest.mark.parametrize("name", [n for n, b in BOARDS.items() if b.platform])
def test_catalog_matches_amaranth_boards(name):
    board = BOARDS[name]
    platform = board.platform_class()()
    assert board.device in DEVICES
    assert platform.device == (board.part or board.device)
    family_class = LatticeICE40Platform if board.family == "ice40" else LatticeECP5Platform
    assert isinstance(platform, family_class)
    assert DEVICES[board.device].family == board.family
    # the part's fabric is the device's: same size suffix ("45F"), same family
    assert re.sub(r"^LFE5UM?5?G?-", "", platform.device) == re.sub(r"^LFE5U-", "",
                                                                       board.device)
    assert platform.default_clk_frequency == board.clock_hz
    uarts = [r for (kind, _), r in platform.resources.items() if kind == "uart"]
    if board.uart is None:
        assert not uarts
    else:
        pins = {sub.name: sub.ios[0].names for sub in uarts[0].ios}
        assert (pins["rx"], pins["tx"]) == ([board.uart[0]], [board.uart[1]])
        assert board.uart_bridge
    leds = [r for (kind, _), r in platform.resources.items() if kind == "led"]
    assert board.leds <= len(leds)
    assert board.programmers and board.programmer in ("openfpgaloader", "iceprog",
                                                      "dfu-util", "icesprog")


def test_board_devices_come_from_the_catalog():
    assert set(BOARD_DEVICES) == set(BOARDS)
    for name, board in BOARDS.items():
        assert resolve_board(name.upper()) == (board.device, board.clock_hz)
    with pytest.raises(ValueError, match=r"^unknown board 'ulx3s85'; did you mean ulx3s-85f"):
        find_board("ulx3s85")
    with pytest.raises(ValueError, match="amaranth-boards gives it no UART"):
        BoardTop(random_image(0, (4, 3)), "orangecrab")
    with pytest.raises(ValueError, match="not in amaranth-boards"):
        BoardTop(random_image(0, (4, 3)), "colorlight-i5")


# -- PLL -----------------------------------------------------------------------------------------
def _tool(name, *args):
    return subprocess.run([str(BIN / f"yowasp-{name}"), *map(str, args)], capture_output=True,
                          text=True, check=True, timeout=120, cwd="/tmp").stdout


def _icepll(f_in, f_out):
    text = _tool("icepll", "-i", f_in / 1e6, "-o", f_out / 1e6)
    num = {k: float(re.search(rf"{k}:\s+([\d.]+)", text).group(1))
           for k in ("DIVR", "DIVF", "DIVQ", "FILTER_RANGE", "F_PFD", "F_VCO")}
    achieved = float(re.search(r"F_PLLOUT:\s+([\d.]+) MHz \(achieved\)", text).group(1))
    return achieved * 1e6, num


def _ecppll(f_in, f_out):
    text = _tool("ecppll", "-i", f_in / 1e6, "-o", f_out / 1e6)
    return float(re.search(r"clkout0 frequency: ([\d.]+) MHz", text).group(1)) * 1e6


def _check_ice40(cfg):
    assert 10e6 <= cfg.f_pfd <= 133e6 and 533e6 <= cfg.f_vco <= 1066e6
    assert cfg.f_pfd == pytest.approx(cfg.f_in / (cfg.divr + 1))
    assert cfg.f_vco == pytest.approx(cfg.f_pfd * (cfg.divf + 1))
    assert cfg.f_out == pytest.approx(cfg.f_vco / 2 ** cfg.divq)
    assert 0 <= cfg.divr < 16 and 0 <= cfg.divf < 128 and 1 <= cfg.divq <= 6


def _check_ecp5(cfg):
    assert 3.125e6 <= cfg.f_pfd <= 400e6 and 400e6 <= cfg.f_vco <= 800e6
    assert cfg.f_pfd == pytest.approx(cfg.f_in / cfg.clki_div)
    assert cfg.f_out == pytest.approx(cfg.f_pfd * cfg.clkfb_div)
    assert cfg.f_vco == pytest.approx(cfg.f_out * cfg.clkop_div)


def _no_worse(mine, theirs, target):
    """Ours is the closest not above the target when theirs is not above it either."""
    if theirs <= target * (1 + 1e-6):
        assert mine == pytest.approx(theirs, rel=1e-4)
    else:
        assert mine <= target * (1 + 1e-6) or mine == pytest.approx(theirs, rel=1e-4)


@pytest.mark.parametrize("name", BUILDABLE)
def test_board_clock_plan(name):
    board = BOARDS[name]
    cfg = plan_clock(board)
    if not cfg.primitive:
        assert board.fabric_hz == board.clock_hz == cfg.f_out
        return
    assert cfg.primitive == board.pll
    if board.family == "ice40":
        _check_ice40(cfg)
        achieved, num = _icepll(board.clock_hz, board.fabric_hz)
        _no_worse(cfg.f_out, achieved, board.fabric_hz)
        if cfg.f_pfd == pytest.approx(num["F_PFD"] * 1e6):
            assert cfg.filter_range == num["FILTER_RANGE"]
    else:
        _check_ecp5(cfg)
        _no_worse(cfg.f_out, _ecppll(board.clock_hz, board.fabric_hz), board.fabric_hz)
    assert cfg.f_out == pytest.approx(board.fabric_hz, rel=1e-6)  # catalog targets are exact


@settings(deadline=None, max_examples=12)
@given(st.integers(10, 100), st.integers(16, 200))
def test_ice40_pll_vs_icepll(f_in_mhz, f_out_mhz):
    cfg = ice40_pll(f_in_mhz * 1e6, f_out_mhz * 1e6)
    _check_ice40(cfg)
    achieved, num = _icepll(f_in_mhz * 1e6, f_out_mhz * 1e6)
    if achieved >= 16e6:  # icepll does not hold its output to the data sheet's 16 MHz minimum
        _no_worse(cfg.f_out, achieved, f_out_mhz * 1e6)
    if cfg.f_pfd == pytest.approx(num["F_PFD"] * 1e6):
        assert cfg.filter_range == num["FILTER_RANGE"]


@settings(deadline=None, max_examples=12)
@given(st.integers(8, 200), st.integers(10, 300))
def test_ecp5_pll_vs_ecppll(f_in_mhz, f_out_mhz):
    cfg = ecp5_pll(f_in_mhz * 1e6, f_out_mhz * 1e6)
    _check_ecp5(cfg)
    _no_worse(cfg.f_out, _ecppll(f_in_mhz * 1e6, f_out_mhz * 1e6), f_out_mhz * 1e6)


def test_pll_out_of_range():
    with pytest.raises(PllError, match="input must be 10..133 MHz, not 3.3 MHz"):
        ice40_pll(3.3e6, 24e6)
    with pytest.raises(PllError, match="output must be 16..275 MHz, not 300 MHz"):
        ice40_pll(12e6, 300e6)
    with pytest.raises(PllError, match="output must be 3.125..400 MHz, not 500 MHz"):
        ecp5_pll(25e6, 500e6)
    with pytest.raises(PllError, match="no PLL configured"):
        plan_clock("nandland-go", 50e6)
    assert plan_clock("icebreaker", 12e6).primitive == ""  # the oscillator itself


def _ice40_outputs(f_in: float) -> set[float]:
    # every SIMPLE-feedback output, from the equations in the iCE40 PLL usage guide
    return {f_in / (r + 1) * (f + 1) / 2 ** q for r in range(16) for f in range(128)
            for q in range(1, 7) if 10e6 <= f_in / (r + 1) <= 133e6
            and 533e6 <= f_in / (r + 1) * (f + 1) <= 1066e6
            and 16e6 <= f_in / (r + 1) * (f + 1) / 2 ** q <= 275e6}


def _divides(clock: float, baud: float) -> bool:
    # the UART's rule (docs/host-protocol.md): at least 4 cycles a bit, within 2 % of the rate
    cycles = round(clock / baud)
    return cycles >= 4 and abs(clock / cycles - baud) <= 0.02 * baud


@settings(deadline=None, max_examples=15)
@given(st.floats(16e6, 120e6), st.sampled_from([8_000_000, 6_000_000, 3_000_000, 115200]))
def test_clock_below_is_the_fastest_pll_output_the_rate_divides(limit, baud):
    # build's fallback clock (FALLBACK_MARGIN): against every output of the PLL's equations
    board = BOARDS["icebreaker"]
    fits = [f for f in _ice40_outputs(board.clock_hz)
            if f <= limit * (1 + 1e-9) and _divides(f, baud)]
    found = clock_below(board, limit, baud)
    if not fits:
        assert found is None
    else:
        assert found is not None and found.f_out == pytest.approx(max(fits), abs=1.0)
        _check_ice40(found)


def test_clock_below_on_other_boards():
    # 84 MHz (25 * 84 / 25, 28 cycles a bit) qualifies: the fastest is at least that
    ulx3s = clock_below("ulx3s-85f", 86e6, 3_000_000)
    assert 84e6 <= ulx3s.f_out <= 86e6 and _divides(ulx3s.f_out, 3_000_000)
    assert ulx3s.f_out == pytest.approx(ulx3s.f_in / ulx3s.clki_div * ulx3s.clkfb_div)
    assert clock_below("nandland-go", 20e6, 115200) is None  # no PLL: only its oscillator
    assert clock_below("icebreaker", 30e6, 8_000_000) is None  # under 4 cycles a bit


# -- BoardTop ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_image():
    return random_image(3, (8, 6, 3))


@pytest.mark.parametrize("name", BUILDABLE)
def test_board_top_elaborates(name, tiny_image):
    board = BOARDS[name]
    top = BoardTop(tiny_image, board)
    platform = board.platform_class()()
    text = rtlil.convert(top, platform=platform, ports=[])
    if top.clock.primitive:
        assert f"cell \\{top.clock.primitive} " in text
        params = {"SB_PLL40_PAD": ("DIVF", top.clock.divf), "SB_PLL40_CORE":
                  ("DIVF", top.clock.divf), "EHXPLLL": ("CLKFB_DIV", top.clock.clkfb_div)}
        key, value = params[top.clock.primitive]
        assert re.search(rf"parameter \\{key} {value}\b", text), key
    uart = {sub.name: sub.ios[0].names[0] for sub in
            platform.resources["uart", 0].ios}
    assert (uart["rx"], uart["tx"]) == board.uart
    assert "SpikeSoC" in text or "soc" in text


def test_cli_boards_lists_uart_and_programmer():
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "boards", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {row["board"]: row for row in json.loads(proc.stdout)}
    assert set(rows) == set(BOARDS)
    assert rows["icebreaker"]["uart"]["rx"] == "6" and rows["icebreaker"]["programmer"]
    assert rows["orangecrab"]["uart"] is None and not rows["orangecrab"]["buildable"]
    assert rows["ulx3s-85f"]["target_hz"] == BOARDS["ulx3s-85f"].fabric_hz


def test_ecp5_design_clocks_and_rates_are_exact():
    # every buildable ECP5 board: 90 MHz for a dense image, 60 MHz with convolutions, both exact
    # EHXPLLL outputs of its oscillator (the PLL equations), and its bridge's rate an exact
    # divisor of both (FT231X 3 Mbaud, FT2232H 6 Mbaud, others 115,200 within 2 %)
    from spikeforge.boards.top import check_baud
    from spikeforge.hdl.uart import uart_divisor

    bridges = {"FT231X (USB)": 3_000_000, "FT2232H channel B (USB)": 6_000_000}
    for board in (b for b in BOARDS.values() if b.family == "ecp5" and b.buildable):
        assert (board.design(False)[0], board.design(True)[0]) == (90e6, 60e6), board.name
        assert board.baud == bridges.get(board.uart_bridge, 115200), board.name
        for clock in (90e6, 60e6):
            pll = plan_clock(board, clock)
            assert pll.f_out == clock == pll.f_in / pll.clki_div * pll.clkfb_div, board.name
            assert check_baud(board, None, clock) == board.baud
            if board.baud > 115200:
                assert clock % board.baud == 0 and uart_divisor(clock, board.baud) >= 10

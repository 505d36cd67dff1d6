"""The board top: oscillator -> PLL -> `sync` domain, reset synchroniser, UART, LEDs, SoC.

`BoardTop(image, board)` binds the board-agnostic `hdl.soc.SpikeSoC` to an amaranth-boards
platform. The fabric clock is the board's `target_hz` (or `clock_hz=`), made by

- iCE40: `SB_PLL40_PAD` (the oscillator enters on the PLL's own pad) or `SB_PLL40_CORE` (it
  comes from a global buffer), SIMPLE feedback::

      f_pfd = f_in / (DIVR + 1)         10 .. 133 MHz
      f_vco = f_pfd * (DIVF + 1)        533 .. 1066 MHz
      f_out = f_vco / 2**DIVQ           16 .. 275 MHz, DIVQ 1 .. 6

- ECP5: `EHXPLLL`, feedback from CLKOP::

      f_pfd = f_in / CLKI_DIV           3.125 .. 400 MHz
      f_out = f_pfd * CLKFB_DIV         3.125 .. 400 MHz
      f_vco = f_out * CLKOP_DIV         400 .. 800 MHz

or the oscillator itself when it already is the target. Reset is held until the PLL locks (and
while the board's reset button, if any, is pressed), released synchronously to `sync`.

Flash: when the SoC loads its memories from the board's SPI configuration flash (`flash=True`,
or by default when the image has weights placed in SPRAM, which the bitstream cannot hold, and
the mapper's estimate with the loader still fits the device; else they come over the link), the
SoC's loader reads the blob at `flashimage.FLASH_OFFSETS[family]` (where `spikeforge flash
--image` writes it) through the platform's `spi_flash_1x` (or `spi_flash`) resource: chip
select, COPI, CIPO, and WP/HOLD held inactive; the clock on its pin, or on ECP5, where the
configuration clock pin is not user I/O, through the `USRMCLK` primitive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from ..flashimage import FLASH_OFFSETS
from .catalog import Board, check_baud_rate, find_board

__all__ = ["BoardTop", "check_baud", "clock_below", "flash_resource", "PllConfig", "ice40_pll",
           "ecp5_pll", "plan_clock", "PllError"]


class PllError(ValueError):
    """No PLL setting reaches the requested clock within the ranges of the family."""


@dataclass(frozen=True)
class PllConfig:
    primitive: str  # SB_PLL40_PAD | SB_PLL40_CORE | EHXPLLL | "" (no PLL)
    f_in: float
    f_out: float
    f_pfd: float = 0.0
    f_vco: float = 0.0
    # iCE40
    divr: int = 0
    divf: int = 0
    divq: int = 0
    filter_range: int = 0
    # ECP5
    clki_div: int = 0
    clkfb_div: int = 0
    clkop_div: int = 0


def _pick(candidates, f_in, f_out, family, vco_mid):
    """The candidate closest to f_out, not above it when any is at or below; among equals the
    one whose VCO is nearest the middle of its range."""
    if not candidates:
        raise PllError(f"no {family} PLL setting makes {f_out / 1e6:g} MHz from "
                       f"{f_in / 1e6:g} MHz")
    below = [c for c in candidates if c.f_out <= f_out * (1 + 1e-9)]
    pool = below or candidates
    return min(pool, key=lambda c: (round(abs(c.f_out - f_out)), abs(c.f_vco - vco_mid)))


def ice40_pll(f_in: float, f_out: float, primitive: str = "SB_PLL40_CORE") -> PllConfig:
    """DIVR/DIVF/DIVQ/FILTER_RANGE of an iCE40 PLL (SIMPLE feedback), as icepll picks them."""
    if not 10e6 <= f_in <= 133e6:
        raise PllError(f"iCE40 PLL input must be 10..133 MHz, not {f_in / 1e6:g} MHz")
    if not 16e6 <= f_out <= 275e6:
        raise PllError(f"iCE40 PLL output must be 16..275 MHz, not {f_out / 1e6:g} MHz")
    found = []
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = f_vco / (1 << divq)
                if 16e6 <= out <= 275e6:
                    found.append(PllConfig(primitive, f_in, out, f_pfd, f_vco, divr=divr,
                                           divf=divf, divq=divq,
                                           filter_range=_filter_range(f_pfd)))
    return _pick(found, f_in, f_out, "iCE40", vco_mid=800e6)


def _filter_range(f_pfd: float) -> int:
    mhz = f_pfd / 1e6
    for limit, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if mhz < limit:
            return value
    return 6


def ecp5_pll(f_in: float, f_out: float) -> PllConfig:
    """CLKI_DIV/CLKFB_DIV/CLKOP_DIV of an ECP5 EHXPLLL with CLKOP feedback."""
    if not 8e6 <= f_in <= 400e6:
        raise PllError(f"ECP5 PLL input must be 8..400 MHz, not {f_in / 1e6:g} MHz")
    if not 3.125e6 <= f_out <= 400e6:
        raise PllError(f"ECP5 PLL output must be 3.125..400 MHz, not {f_out / 1e6:g} MHz")
    found = []
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = f_pfd * clkfb_div
            if not 3.125e6 <= out <= 400e6:
                continue
            # the VCO nearest the middle of its range
            clkop_div = min(128, max(1, round(600e6 / out)))
            f_vco = out * clkop_div
            if 400e6 <= f_vco <= 800e6:
                found.append(PllConfig("EHXPLLL", f_in, out, f_pfd, f_vco, clki_div=clki_div,
                                       clkfb_div=clkfb_div, clkop_div=clkop_div))
    return _pick(found, f_in, f_out, "ECP5", vco_mid=600e6)


def plan_clock(board: Board | str, clock_hz: float | None = None, image=None) -> PllConfig:
    """How `board` makes its fabric clock (`clock_hz`, default the board's target for
    `image`: `Board.clock_for`)."""
    board = find_board(board) if isinstance(board, str) else board
    target = float(clock_hz) if clock_hz is not None else board.clock_for(image)
    if not target > 0:
        raise ValueError(f"clock must be positive, not {clock_hz!r}")
    if abs(target - board.clock_hz) < 1.0:
        return PllConfig("", board.clock_hz, board.clock_hz)
    if board.pll is None:
        raise PllError(f"board {board.name!r} runs from its {board.clock_hz / 1e6:g} MHz "
                       f"oscillator (no PLL configured), not {target / 1e6:g} MHz")
    if board.pll == "EHXPLLL":
        return ecp5_pll(board.clock_hz, target)
    return ice40_pll(board.clock_hz, target, board.pll)


def clock_below(board: Board | str, limit_hz: float, baud: float) -> PllConfig | None:
    """The fastest clock `board`'s PLL makes at or below `limit_hz` from which the UART divider
    makes `baud` (``hdl.uart.uart_divisor``: at least 4 cycles a bit, within 2 %); None when
    the board has no PLL or no such clock exists."""
    from ..hdl.uart import uart_divisor

    board = find_board(board) if isinstance(board, str) else board
    if board.pll is None:
        return None
    limit = float(limit_hz)
    while limit >= 3.5 * baud:  # below that no divisor of 4 or more is within 2 %
        try:
            clock = plan_clock(board, limit)
        except PllError:
            return None
        if clock.f_out > limit * (1 + 1e-9):  # the PLL's slowest output is above the limit
            return None
        try:
            uart_divisor(clock.f_out, baud)
        except ValueError:
            limit = clock.f_out - 1.0
            continue
        return clock
    return None


def _default_soc(image, clk_freq: float, baud: float = 115200, **options):
    from ..hdl.soc import SpikeSoC

    return SpikeSoC(image, clk_freq=clk_freq, baud=baud, **options)


def check_baud(board: Board | str, baud: float | None = None,
               clock_hz: float | None = None, image=None) -> int:
    """The UART rate the SoC on `board` talks at (default the catalog's for `image`:
    `Board.baud_for`), checked: the divider at the fabric clock (default `Board.clock_for`)
    must give it within 2 % (ValueError in one line otherwise)."""
    from ..hdl.uart import uart_divisor

    board = find_board(board) if isinstance(board, str) else board
    rate = board.baud_for(image) if baud is None else baud
    check_baud_rate(rate)
    clock = float(clock_hz) if clock_hz is not None else board.clock_for(image)
    try:
        uart_divisor(clock, rate)
    except ValueError as exc:
        raise ValueError(f"board {board.name!r}: {exc}") from None
    return int(rate)


FLASH_RESOURCES = ("spi_flash_1x", "spi_flash")


def flash_resource(board: Board | str) -> str | None:
    """The name of `board`'s SPI flash resource (number 0) that the flash loader can use, or
    None: it needs chip select, COPI and CIPO, and on iCE40 a clock pin; on ECP5 the clock is
    the configuration clock CCLK, reached through `USRMCLK`, so a resource that lists it as a
    pin (Versa, ECPIX-5, iCESugar-Pro, ECP5-5G EVN, Icepi Zero: the platform would constrain a
    user I/O on the dedicated pin) is not used."""
    board = find_board(board) if isinstance(board, str) else board
    if board.platform is None:
        return None
    resources = {(r.name, r.number): r for r in board.platform_class().resources}
    for name in FLASH_RESOURCES:
        resource = resources.get((name, 0))
        if resource is None:
            continue
        subsignals = {io.name for io in resource.ios if hasattr(io, "ios")}
        if {"cs", "copi", "cipo"} <= subsignals and (("clk" in subsignals)
                                                    == (board.family != "ecp5")):
            return name
    return None


def _needs_flash(image, board: Board) -> bool:
    """The image has weights in SPRAM and, with the flash loader, still fits `board`."""
    from dataclasses import replace

    from ..compiler.mapper import estimate_resources, spram_cores

    if not spram_cores(image.layers, image.config):
        return False
    config = replace(image.config, device=board.device)
    estimate = estimate_resources(image.layers, config, flash=True)
    return all(need <= cap for need, cap in estimate.values())


class BoardTop(Elaboratable):
    """An image's SoC on a board: `platform.build(BoardTop(image, "icebreaker"))`.

    `soc(image, clk_freq)` builds the SoC component (ports `uart_rx` In(1), `uart_tx` Out(1),
    `leds` Out(4), clocked by `sync`); the default is `hdl.soc.SpikeSoC`. With flash it is
    called as `soc(image, clk_freq, flash_offset=OFFSET)` and must also have the ports
    `flash_cs_n`, `flash_sck`, `flash_copi` Out(1) and `flash_cipo` In(1).

    `flash`: load the memories from the board's SPI flash at power-up (True; the board must
    have a flash resource), or not (False). The default (None) loads from flash when the image
    has weights in SPRAM, the board has a flash resource and the mapper's estimate with the
    loader (`compiler.mapper.LUT_FLASH_LOADER`) fits the device.
    The SoC talks at `baud` (default the board's catalog rate, checked by
    :func:`check_baud`).
    """

    def __init__(self, image, board: Board | str, *, clock_hz: float | None = None,
                 soc: Callable | None = None, flash: bool | None = None,
                 baud: float | None = None):
        self._board = find_board(board) if isinstance(board, str) else board
        if not self._board.buildable:
            raise ValueError(self._board.why_not_buildable)
        if flash not in (None, True, False):
            raise TypeError(f"flash must be None, True or False, not {flash!r}")
        self._image = image
        self._clock = plan_clock(self._board, clock_hz, image)
        self._baud = check_baud(self._board, baud, self._clock.f_out, image)
        self._soc_factory = soc or functools.partial(_default_soc, baud=self._baud)
        self._flash_resource = flash_resource(self._board)
        if flash and self._flash_resource is None:
            raise ValueError(f"board {self._board.name!r} has no SPI flash resource the "
                             f"flash loader can use")
        if flash is None:
            flash = self._flash_resource is not None and _needs_flash(image, self._board)
        self._flash_offset = FLASH_OFFSETS[self._board.family] if flash else None

    @property
    def board(self) -> Board:
        return self._board

    @property
    def clock(self) -> PllConfig:
        return self._clock

    @property
    def clk_freq(self) -> float:
        return self._clock.f_out

    @property
    def flash_offset(self) -> int | None:
        """Where the SoC's loader reads the image's blob in the board's flash, or None when
        the SoC does not load from flash."""
        return self._flash_offset

    @property
    def baud(self) -> int:
        return self._baud

    def elaborate(self, platform):
        m = Module()
        pll = self._clock
        if abs(platform.default_clk_frequency - pll.f_in) > 1.0:
            raise ValueError(f"platform {type(platform).__name__} clocks at "
                             f"{platform.default_clk_frequency / 1e6:g} MHz, the catalog says "
                             f"{pll.f_in / 1e6:g} MHz for {self._board.name!r}")
        m.domains.sync = cd_sync = ClockDomain("sync")
        locked = Signal()
        clk_port = platform.request(platform.default_clk, 0, dir="-")
        if pll.primitive == "SB_PLL40_PAD":
            m.submodules.pll = Instance(
                "SB_PLL40_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=pll.divr, p_DIVF=pll.divf,
                p_DIVQ=pll.divq, p_FILTER_RANGE=pll.filter_range,
                i_PACKAGEPIN=clk_port.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=cd_sync.clk, o_LOCK=locked)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
            if pll.primitive == "SB_PLL40_CORE":
                m.submodules.pll = Instance(
                    "SB_PLL40_CORE", p_FEEDBACK_PATH="SIMPLE", p_DIVR=pll.divr,
                    p_DIVF=pll.divf, p_DIVQ=pll.divq, p_FILTER_RANGE=pll.filter_range,
                    i_REFERENCECLK=clk_buf.i, i_RESETB=Const(1), i_BYPASS=Const(0),
                    o_PLLOUTGLOBAL=cd_sync.clk, o_LOCK=locked)
            elif pll.primitive == "EHXPLLL":
                m.submodules.pll = Instance(
                    "EHXPLLL",
                    a_FREQUENCY_PIN_CLKI=f"{pll.f_in / 1e6:g}",
                    a_FREQUENCY_PIN_CLKOP=f"{pll.f_out / 1e6:g}",
                    a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                    a_MFG_GMCREF_SEL="2",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED",
                    p_STDBY_ENABLE="DISABLED", p_DPHASE_SOURCE="DISABLED",
                    p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                    p_CLKI_DIV=pll.clki_div, p_CLKOP_DIV=pll.clkop_div,
                    p_CLKOP_CPHASE=pll.clkop_div - 1, p_CLKOP_FPHASE=0,
                    p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=pll.clkfb_div,
                    i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_buf.i,
                    o_CLKOP=cd_sync.clk, i_CLKFB=cd_sync.clk,
                    i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                    i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                    i_ENCLKOP=Const(0), o_LOCK=locked)
            else:
                m.d.comb += [cd_sync.clk.eq(clk_buf.i), locked.eq(1)]
        # nextpnr derives the PLL output's constraint from the oscillator pin's (which the
        # platform sets) and the dividers, so none is added here

        hold = ~locked
        if platform.default_rst is not None:
            rst_port = platform.request(platform.default_rst, 0, dir="-")
            m.submodules.rst_buf = rst_buf = io.Buffer("i", rst_port)
            hold = hold | rst_buf.i
        m.submodules.reset_sync = ResetSynchronizer(hold, domain="sync")

        if self._flash_offset is None:
            m.submodules.soc = soc = self._soc_factory(self._image, pll.f_out)
        else:
            m.submodules.soc = soc = self._soc_factory(self._image, pll.f_out,
                                                       flash_offset=self._flash_offset)
            self._bind_flash(m, platform, soc)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        # the SoC's UART receiver synchronises its input itself
        m.d.comb += [soc.uart_rx.eq(rx_buf.i), tx_buf.o.eq(soc.uart_tx)]

        for index in range(min(4, self._board.leds)):
            led = platform.request("led", index, dir="-")
            buf = io.Buffer("o", led)
            m.submodules[f"led{index}_buf"] = buf
            m.d.comb += buf.o.eq(soc.leds[index])
        return m

    def _bind_flash(self, m, platform, soc):
        flash = platform.request(self._flash_resource, 0, dir="-")
        # the resource's PinsN invert cs/wp/hold: the buffers take active-high levels
        outputs = {"cs": ~soc.flash_cs_n, "copi": soc.flash_copi, "wp": 0, "hold": 0}
        for name, value in outputs.items():
            if hasattr(flash, name):
                m.submodules[f"flash_{name}_buf"] = buf = io.Buffer("o", getattr(flash, name))
                m.d.comb += buf.o.eq(value)
        m.submodules.flash_cipo_buf = cipo = io.Buffer("i", flash.cipo)
        m.d.comb += soc.flash_cipo.eq(cipo.i)
        if hasattr(flash, "clk"):
            m.submodules.flash_clk_buf = clk = io.Buffer("o", flash.clk)
            m.d.comb += clk.o.eq(soc.flash_sck)
        else:
            # ECP5: the configuration clock pin (CCLK) is reached only through USRMCLK
            m.submodules.flash_usrmclk = Instance("USRMCLK", i_USRMCLKI=soc.flash_sck,
                                                  i_USRMCLKTS=Const(0))

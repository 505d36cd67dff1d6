"""The board catalog: which boards spikeforge builds for, and how it talks to and flashes them.

Pure data, no Amaranth import: `board_target` gives the compiler's mapper a board's device and
clock (`BOARD_DEVICES` lists them all). Each `Board` names its amaranth-boards
platform as "module:Class", loaded only when a bitstream is built.

A board is *buildable* when amaranth-boards describes it and it has a UART the host reaches
(the host link runs over it). Boards without one stay in the catalog as compile targets, so an
image can be sized for them, and `build` refuses them naming the reason.

Clocks: `clock_hz` is the board oscillator (what `spikeforge compile --board` records);
`target_hz` is what the gateware runs at after the PLL (`boards.top.BoardTop`), chosen below the
Fmax nextpnr reports for the SoC (docs/boards.md) with margin: the UP5K boards at 18 MHz
(the digits SoC reaches 25.4 MHz, limited by the host link's status multiplexer; 18 MHz is
12 MHz * 48 / 32 exactly), the ULX3S at 50 MHz (the digits SoC reaches 64 MHz on the 85F,
again limited by the host link), the other ECP5 boards at 40 MHz.
`pll` names the PLL primitive (also used when `--clock` asks for another frequency):
iCE40 "SB_PLL40_PAD" when the oscillator enters on the PLL's own pad, "SB_PLL40_CORE" when it
comes from a global buffer; ECP5 "EHXPLLL"; None runs from the oscillator directly.

Programmers: `programmers` maps a kind to its board-specific arguments; the first is the
default. Kinds: "openfpgaloader" (args: board or cable selection), "iceprog", "dfu-util",
"icesprog" (see boards/flash.py for the commands each builds).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field

__all__ = ["BOARD_DEVICES", "Board", "BOARDS", "board_capacities", "board_names", "board_target",
           "find_board", "resolve_board", "suggest"]


@dataclass(frozen=True)
class Board:
    name: str  # catalog key, lower case with dashes
    title: str  # human name
    device: str  # a name in compiler/devices.py (resources for the mapper)
    clock_hz: float  # board oscillator
    platform: str | None = None  # amaranth-boards "module:Class"
    part: str | None = None  # the FPGA part on the board when it differs from `device`
    target_hz: float | None = None  # fabric clock after the PLL (None: the oscillator)
    pll: str | None = None  # SB_PLL40_PAD | SB_PLL40_CORE | EHXPLLL | None
    uart: tuple[str, str] | None = None  # (rx pin, tx pin) of amaranth-boards' uart 0
    uart_bridge: str | None = None  # what carries the UART to the host
    leds: int = 0  # `led` resources (the SoC drives up to 4)
    programmers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    flash_default: bool = True  # without --sram/--flash: write the configuration flash
    notes: str = ""
    baud: int = 115200  # default UART rate of the host link (the bridge and the divider allow it)

    @property
    def family(self) -> str:
        return "ice40" if self.device.lower().startswith("ice40") else "ecp5"

    @property
    def buildable(self) -> bool:
        return self.platform is not None and self.uart is not None

    @property
    def why_not_buildable(self) -> str | None:
        if self.platform is None:
            return f"board {self.name!r} has no amaranth-boards platform"
        if self.uart is None:
            return (f"board {self.name!r} has no UART in amaranth-boards, and the host link "
                    f"needs one")
        return None

    @property
    def fabric_hz(self) -> float:
        return self.target_hz if self.target_hz is not None else self.clock_hz

    @property
    def programmer(self) -> str | None:
        return next(iter(self.programmers), None)

    def platform_class(self):
        """The amaranth-boards platform class (imports amaranth_boards)."""
        if self.platform is None:
            raise ValueError(self.why_not_buildable)
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(f"amaranth_boards.{module}"), cls)

    def to_dict(self) -> dict:
        return {
            "board": self.name, "title": self.title, "device": self.device,
            "part": self.part or self.device, "family": self.family,
            "clock_hz": self.clock_hz, "target_hz": self.fabric_hz, "pll": self.pll,
            "platform": self.platform, "buildable": self.buildable,
            "uart": ({"rx": self.uart[0], "tx": self.uart[1], "bridge": self.uart_bridge}
                     if self.uart else None),
            "leds": self.leds, "baud": self.baud, "programmer": self.programmer,
            "programmers": list(self.programmers), "notes": self.notes,
        }


_OFL = "openfpgaloader"

BOARDS: dict[str, Board] = {b.name: b for b in (
    # -- iCE40 -------------------------------------------------------------------------------
    Board("icebreaker", "1BitSquared iCEBreaker", "iCE40UP5K", 12e6,
          "icebreaker:ICEBreakerPlatform", target_hz=18e6, pll="SB_PLL40_PAD",
          uart=("6", "9"), uart_bridge="FT2232H channel B (USB)", leds=2,
          programmers={_OFL: ("-b", "icebreaker"), "iceprog": ()}, baud=3_000_000),
    Board("icesugar", "MuseLab iCESugar", "iCE40UP5K", 12e6,
          "icesugar:ICESugarPlatform", target_hz=18e6, pll="SB_PLL40_PAD",
          uart=("4", "6"), uart_bridge="iCELink (USB CDC)", leds=3,
          programmers={"icesprog": ()}),
    Board("ice40-hx8k-b-evn", "Lattice iCE40-HX8K Breakout", "iCE40HX8K", 12e6,
          "ice40_hx8k_b_evn:ICE40HX8KBEVNPlatform", target_hz=24e6, pll="SB_PLL40_CORE",
          uart=("B10", "B12"), uart_bridge="FT2232H channel B (USB)", leds=8,
          programmers={"iceprog": (), _OFL: ("-b", "ice40_generic")}, flash_default=False,
          notes="SRAM programming needs jumpers J6 horizontal, J7 on"),
    Board("icestick", "Lattice iCEstick", "iCE40HX1K", 12e6,
          "icestick:ICEStickPlatform", target_hz=24e6, pll="SB_PLL40_CORE",
          uart=("9", "8"), uart_bridge="FT2232H channel B (USB)", leds=5,
          programmers={_OFL: ("-b", "ice40_generic"), "iceprog": ()}),
    Board("nandland-go", "Nandland Go Board", "iCE40HX1K", 25e6,
          "nandland_go:NandlandGoPlatform", uart=("73", "74"),
          uart_bridge="FT2232H channel B (USB)", leds=4,
          programmers={"iceprog": (), _OFL: ("-b", "ice40_generic")}),
    Board("upduino-v3", "tinyVision UPduino v3", "iCE40UP5K", 48e6,
          "upduino_v3:UpduinoV3Platform", programmers={"iceprog": ()},
          notes="no UART resource in amaranth-boards: compile target only"),
    Board("fomu-pvt", "Fomu PVT", "iCE40UP5K", 48e6, "fomu_pvt:FomuPVTPlatform",
          programmers={"dfu-util": ()}, notes="USB only, no UART: compile target only"),
    Board("ice40-hx1k-blink-evn", "Lattice iCE40-HX1K Blink EVN", "iCE40HX1K", 3.3e6,
          "ice40_hx1k_blink_evn:ICE40HX1KBlinkEVNPlatform", programmers={"iceprog": ()},
          notes="no UART: compile target only"),
    # -- ECP5 --------------------------------------------------------------------------------
    *(Board(f"ulx3s-{size}f", f"Radiona ULX3S {size}F", f"LFE5U-{size}F", 25e6,
            f"ulx3s:ULX3S_{size}F_Platform", target_hz=50e6, pll="EHXPLLL",
            uart=("M1", "L4"), uart_bridge="FT231X (USB)", leds=8,
            programmers={_OFL: ("-b", "ulx3s")}, flash_default=False)
      for size in (25, 45, 85)),
    Board("versa-ecp5", "Lattice ECP5 Versa", "LFE5U-45F", 100e6,
          "versa_ecp5:VersaECP5Platform", part="LFE5UM-45F", target_hz=40e6, pll="EHXPLLL",
          uart=("C11", "A11"), uart_bridge="FT2232H channel B (USB)", leds=8,
          programmers={_OFL: ("-c", "ft2232")}, flash_default=False,
          notes="LFE5UM-45F: the LFE5U-45F fabric and memories plus SERDES"),
    Board("ecp5-5g-evn", "Lattice ECP5-5G Evaluation Board", "LFE5U-85F", 12e6,
          "ecp5_5g_evn:ECP55GEVNPlatform", part="LFE5UM5G-85F", target_hz=40e6,
          pll="EHXPLLL", uart=("P2", "P3"), uart_bridge="FT2232H channel B (USB)", leds=8,
          programmers={_OFL: ("-b", "ecp5_evn")}, flash_default=False,
          notes="LFE5UM5G-85F: the LFE5U-85F fabric and memories plus SERDES"),
    *(Board(f"ecpix5-{size}", f"LambdaConcept ECPIX-5 {size}F", f"LFE5U-{size}F", 100e6,
            f"ecpix5:ECPIX5{size}Platform", part=f"LFE5UM5G-{size}F", target_hz=40e6,
            pll="EHXPLLL", uart=("R26", "R24"), uart_bridge="FT2232H channel B (USB)",
            programmers={_OFL: ("-c", "ft2232")}, flash_default=False,
            notes=f"LFE5UM5G-{size}F: the LFE5U-{size}F fabric; RGB LEDs are not driven")
      for size in (45, 85)),
    Board("colorlight-5a-75b", "Colorlight 5A-75B v7.0", "LFE5U-25F", 25e6,
          "colorlight_5a75b_r7_0:Colorlight_5A75B_R70Platform", target_hz=40e6, pll="EHXPLLL",
          uart=("M13", "P11"), uart_bridge="header pins: needs a USB-UART adapter",
          programmers={_OFL: ("-c", "ft232")}, flash_default=False,
          notes="needs an external JTAG cable and USB-UART adapter; its LED shares the UART "
                "tx pin and is not driven"),
    Board("icesugar-pro", "MuseLab iCESugar-Pro", "LFE5U-25F", 25e6,
          "icesugar_pro:ICESugarProPlatform", target_hz=40e6, pll="EHXPLLL",
          uart=("A9", "B9"), uart_bridge="iCELink (USB CDC)",
          programmers={"icesprog": ()}, notes="RGB LED is not driven"),
    Board("icepi-zero", "Icepi Zero v1.3", "LFE5U-25F", 50e6,
          "icepi_zero:IcepiZero1_3Platform", target_hz=40e6, pll="EHXPLLL",
          uart=("K16", "K15"),
          uart_bridge="USB-UART (USB)", leds=5, programmers={_OFL: ("-b", "icepi-zero")}),
    Board("orangecrab", "Good Stuff Department OrangeCrab r0.2 25F", "LFE5U-25F", 48e6,
          "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", programmers={"dfu-util": ()},
          notes="USB only, no UART: compile target only"),
    Board("orangecrab-85f", "Good Stuff Department OrangeCrab r0.2 85F", "LFE5U-85F", 48e6,
          "orangecrab_r0_2:OrangeCrabR0_2_85FPlatform", programmers={"dfu-util": ()},
          notes="USB only, no UART: compile target only"),
    Board("colorlight-i5", "Colorlight i5", "LFE5U-25F", 25e6,
          programmers={_OFL: ("-b", "colorlight-i5")},
          notes="not in amaranth-boards: compile target only"),
)}


def board_names(*, buildable: bool | None = None) -> list[str]:
    return [name for name, board in BOARDS.items()
            if buildable is None or board.buildable == buildable]


def suggest(name: str, names: list[str] | None = None) -> str:
    """`unknown board 'x'; did you mean a, b? known boards: ...` in one line."""
    names = list(BOARDS) if names is None else names
    key = name.lower().replace("_", "-")
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown board {name!r}; {hint}known boards: {', '.join(names)}"


def find_board(name: str) -> Board:
    """A board by name (case and `_`/`-` forgiven); unknown names get the closest suggested."""
    key = name.lower().replace("_", "-")
    if key in BOARDS:
        return BOARDS[key]
    raise ValueError(suggest(name))


# Board name -> (device, board oscillator in Hz).
BOARD_DEVICES: dict[str, tuple[str, float]] = {
    name: (board.device, board.clock_hz) for name, board in BOARDS.items()}


def resolve_board(name: str) -> tuple[str, float]:
    """(device name, oscillator in Hz) of a board; unknown names get the closest suggested."""
    board = find_board(name)
    return board.device, board.clock_hz


def board_target(board: str, device: str | None = None) -> tuple[str, str, float]:
    """(catalog name, device, oscillator in Hz) to map a network for ``board``; ``device``, when
    given, must be the board's."""
    from ..compiler.mapper import resolve_device

    found = find_board(board)
    if device is not None and resolve_device(device).name != found.device:
        raise ValueError(f"board {board!r} carries a {found.device}, not {device!r}")
    return found.name, found.device, found.clock_hz


def board_capacities() -> list[dict]:
    """Per board: its oscillator and what fits on its device (``compiler.capacity``)."""
    from ..compiler.capacity import device_capacity

    cache: dict[str, dict] = {}
    rows = []
    for name, (device, clock_hz) in BOARD_DEVICES.items():
        if device not in cache:
            cache[device] = device_capacity(device)
        rows.append({"board": name, "clock_hz": clock_hz, **cache[device]})
    return rows

"""The board catalog: which boards spikeforge builds for, and how it talks to and flashes them.

Pure data, no Amaranth import: `board_target` gives the compiler's mapper a board's device and
clock (`BOARD_DEVICES` lists them all). Each `Board` names its amaranth-boards
platform as "module:Class", loaded only when a bitstream is built.

What a board can do (`Board.can`, the "can do" column of `spikeforge boards`):

- *buildable*: amaranth-boards describes it and gives it a UART the host reaches. spikeforge
  compiles for it, builds a bitstream, flashes it and runs the network over the host link.
- *compile only*: no amaranth-boards platform (colorlight-i5), or one without a UART
  (upduino-v3, fomu-pvt, orangecrab, orangecrab-85f, ice40-hx1k-blink-evn). An image can be
  compiled and sized for it, but no bitstream is built: the core array takes its input spikes
  only over the host link, so a bitstream without one could never be given any input.
  `build` refuses these boards with the same reason (`why_not_buildable`).

Whether a network fits is the mapper's answer, not the catalog's: `board_capacities` asks it
(`compiler.mapper.device_capacity`) and says "nothing" for the iCE40HX1K boards, which fit
none (there `compile --board` and `build` refuse every image).

Clocks: `clock_hz` is the board oscillator (what `spikeforge compile --board` records);
`target_hz` is what the gateware runs at after the PLL (`boards.top.BoardTop`), an exact PLL
output below the Fmax nextpnr reports for the digits demo SoC (`make bitstreams`), with margin.
The figures at each board are the measured ones (docs/boards.md).
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
           "check_baud_rate", "find_board", "resolve_board", "suggest"]


def check_baud_rate(baud) -> None:
    """Raise ValueError unless ``baud`` is a positive number (the runtime's and the build's
    check before any divider is worked out)."""
    if isinstance(baud, bool) or not isinstance(baud, (int, float)) or not baud > 0:
        raise ValueError(f"baud rate must be a positive number, not {baud!r}")


def _has_conv(image) -> bool:
    return image is not None and any(layer.conv is not None for layer in image.layers)


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
    # An image with a convolution layer meets a lower clock (its cores' lane-serial SPRAM
    # updates and a fuller device): its fabric clock and rate, when they differ from the above
    conv_target_hz: float | None = None
    conv_baud: int | None = None

    @property
    def family(self) -> str:
        return "ice40" if self.device.lower().startswith("ice40") else "ecp5"

    @property
    def buildable(self) -> bool:
        return self.platform is not None and self.uart is not None

    @property
    def why_not_buildable(self) -> str | None:
        """Why `build` refuses the board (None when it builds); `can` says the same."""
        if self.platform is None:
            return (f"board {self.name!r} is a compile target only: it is not in "
                    f"amaranth-boards, so no bitstream is built for it")
        if self.uart is None:
            return (f"board {self.name!r} is a compile target only: amaranth-boards gives it no "
                    f"UART, and the core array takes its input spikes only over the host link, "
                    f"so no bitstream is built for it")
        return None

    @property
    def can(self) -> str:
        """What spikeforge does with the board, in a few words (`spikeforge boards`)."""
        if self.platform is None:
            return "compile only; no bitstream (not in amaranth-boards)"
        if self.uart is None:
            return "compile only; no bitstream (no UART in amaranth-boards: no host link)"
        return "compile, build, flash, run over the host link"

    @property
    def fabric_hz(self) -> float:
        return self.target_hz if self.target_hz is not None else self.clock_hz

    def design(self, conv: bool) -> tuple[float, int]:
        """(fabric clock, host-link rate) of a design without or with convolution layers:
        `fabric_hz` and `baud`, or `conv_target_hz` and `conv_baud` where they are set."""
        if not conv:
            return self.fabric_hz, self.baud
        return (self.conv_target_hz if self.conv_target_hz is not None else self.fabric_hz,
                self.conv_baud if self.conv_baud is not None else self.baud)

    def clock_for(self, image=None) -> float:
        """The fabric clock the gateware for `image` runs at unless told (`design`)."""
        return self.design(_has_conv(image))[0]

    def baud_for(self, image=None) -> int:
        """The host link's rate for `image` unless told (`design`)."""
        return self.design(_has_conv(image))[1]

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
            "platform": self.platform, "buildable": self.buildable, "can": self.can,
            "uart": ({"rx": self.uart[0], "tx": self.uart[1], "bridge": self.uart_bridge}
                     if self.uart else None),
            "leds": self.leds, "baud": self.baud,
            "conv_target_hz": self.design(True)[0], "conv_baud": self.design(True)[1],
            "programmer": self.programmer,
            "programmers": list(self.programmers), "notes": self.notes,
        }


_OFL = "openfpgaloader"

BOARDS: dict[str, Board] = {b.name: b for b in (
    # -- iCE40 -------------------------------------------------------------------------------
    # UP5K at 40.5 MHz (12 * 54 / 16) and 8 Mbaud (the FT2232H's 12 MHz / 1.5; divisor 5, the
    # SoC's side 8.1 Mbaud, 1.25 % fast: within the UART's 2 %): the nearest PLL output at or
    # above 40 MHz (the PLL's phase detector runs at 12 MHz, so its steps are 0.75 MHz). The
    # digits demo, 64-40-24-10, 784-128-10 and 784-256-10 with their flash loader meet it
    # (bench/fmax.py, docs/boards.md "Catalog clocks per design"); `build` places a design that
    # misses it again with other seeds (boards.build.PLACEMENTS). An image with convolutions
    # (tutorial 6: 23-24 MHz, 95 % of the cells) stays at 18 MHz (12 * 48 / 32) and 3 Mbaud
    # (divisor 6).
    Board("icebreaker", "1BitSquared iCEBreaker", "iCE40UP5K", 12e6,
          "icebreaker:ICEBreakerPlatform", target_hz=40.5e6, pll="SB_PLL40_PAD",
          uart=("6", "9"), uart_bridge="FT2232H channel B (USB)", leds=2,
          programmers={_OFL: ("-b", "icebreaker"), "iceprog": ()}, baud=8_000_000,
          conv_target_hz=18e6, conv_baud=3_000_000),
    Board("icesugar", "MuseLab iCESugar", "iCE40UP5K", 12e6,
          "icesugar:ICESugarPlatform", target_hz=18e6, pll="SB_PLL40_PAD",
          uart=("4", "6"), uart_bridge="iCELink (USB CDC)", leds=3,
          programmers={"icesprog": ()}),
    # HX8K at 48 MHz (12 * 64 / 16): the digits demo reached Fmax 78.7 MHz at 48 (81.4 at 24)
    Board("ice40-hx8k-b-evn", "Lattice iCE40-HX8K Breakout", "iCE40HX8K", 12e6,
          "ice40_hx8k_b_evn:ICE40HX8KBEVNPlatform", target_hz=48e6, pll="SB_PLL40_CORE",
          uart=("B10", "B12"), uart_bridge="FT2232H channel B (USB)", leds=8,
          programmers={"iceprog": (), _OFL: ("-b", "ice40_generic")}, flash_default=False,
          notes="SRAM programming needs jumpers J6 horizontal, J7 on"),
    # no network fits an HX1K: its clock is not measured
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
          notes="no UART in amaranth-boards"),
    Board("fomu-pvt", "Fomu PVT", "iCE40UP5K", 48e6, "fomu_pvt:FomuPVTPlatform",
          programmers={"dfu-util": ()}, notes="USB only (no UART)"),
    Board("ice40-hx1k-blink-evn", "Lattice iCE40-HX1K Blink EVN", "iCE40HX1K", 3.3e6,
          "ice40_hx1k_blink_evn:ICE40HX1KBlinkEVNPlatform", programmers={"iceprog": ()},
          notes="no UART; an iCE40HX1K, which no network fits"),
    # -- ECP5 --------------------------------------------------------------------------------
    # ECP5 at 90 MHz, an exact EHXPLLL output from every oscillator here, for images without
    # convolutions: with the registered core, the banked weight memories and the registered
    # link every dense build reaches more than 100 MHz (bench/fmax.py: the ULX3S-85F 106.9-110.7
    # MHz at --clock 100 for the digits, 64-40-24-10 and 784-128-10; the Icepi Zero, a speed
    # grade 6 LFE5U-25F as the Colorlight 5A-75B and the iCESugar-Pro, 108.0 MHz at 90; make
    # bitstreams at 60: 103.6-167.9 MHz, docs/boards.md). Convolutions are not measured on ECP5:
    # they stay at 60 MHz. The rate is the bridge's: the FT231X does 3 Mbaud (divisor 30 at 90
    # MHz, 20 at 60), the FT2232H 6 Mbaud (its 12 MHz / 2; divisor 15, 10); the others keep
    # 115,200 (their bridges are not specified for more).
    *(Board(f"ulx3s-{size}f", f"Radiona ULX3S {size}F", f"LFE5U-{size}F", 25e6,
            f"ulx3s:ULX3S_{size}F_Platform", target_hz=90e6, pll="EHXPLLL",
            uart=("M1", "L4"), uart_bridge="FT231X (USB)", leds=8,
            programmers={_OFL: ("-b", "ulx3s")}, flash_default=False, baud=3_000_000,
            conv_target_hz=60e6)
      for size in (25, 45, 85)),
    Board("versa-ecp5", "Lattice ECP5 Versa", "LFE5U-45F", 100e6,
          "versa_ecp5:VersaECP5Platform", part="LFE5UM-45F", target_hz=90e6, pll="EHXPLLL",
          uart=("C11", "A11"), uart_bridge="FT2232H channel B (USB)", leds=8,
          programmers={_OFL: ("-c", "ft2232")}, flash_default=False, baud=6_000_000,
          conv_target_hz=60e6,
          notes="LFE5UM-45F: the LFE5U-45F fabric and memories plus SERDES"),
    Board("ecp5-5g-evn", "Lattice ECP5-5G Evaluation Board", "LFE5U-85F", 12e6,
          "ecp5_5g_evn:ECP55GEVNPlatform", part="LFE5UM5G-85F", target_hz=90e6,
          pll="EHXPLLL", uart=("P2", "P3"), uart_bridge="FT2232H channel B (USB)", leds=8,
          programmers={_OFL: ("-b", "ecp5_evn")}, flash_default=False, baud=6_000_000,
          conv_target_hz=60e6,
          notes="LFE5UM5G-85F: the LFE5U-85F fabric and memories plus SERDES"),
    *(Board(f"ecpix5-{size}", f"LambdaConcept ECPIX-5 {size}F", f"LFE5U-{size}F", 100e6,
            f"ecpix5:ECPIX5{size}Platform", part=f"LFE5UM5G-{size}F", target_hz=90e6,
            pll="EHXPLLL", uart=("R26", "R24"), uart_bridge="FT2232H channel B (USB)",
            programmers={_OFL: ("-c", "ft2232")}, flash_default=False, baud=6_000_000,
            conv_target_hz=60e6,
            notes=f"LFE5UM5G-{size}F: the LFE5U-{size}F fabric; RGB LEDs are not driven")
      for size in (45, 85)),
    Board("colorlight-5a-75b", "Colorlight 5A-75B v7.0", "LFE5U-25F", 25e6,
          "colorlight_5a75b_r7_0:Colorlight_5A75B_R70Platform", target_hz=90e6,
          conv_target_hz=60e6, pll="EHXPLLL",
          uart=("M13", "P11"), uart_bridge="header pins: needs a USB-UART adapter",
          programmers={_OFL: ("-c", "ft232")}, flash_default=False,
          notes="needs an external JTAG cable and USB-UART adapter; its LED shares the UART "
                "tx pin and is not driven"),
    Board("icesugar-pro", "MuseLab iCESugar-Pro", "LFE5U-25F", 25e6,
          "icesugar_pro:ICESugarProPlatform", target_hz=90e6, conv_target_hz=60e6, pll="EHXPLLL",
          uart=("A9", "B9"), uart_bridge="iCELink (USB CDC)",
          programmers={"icesprog": ()}, notes="RGB LED is not driven"),
    Board("icepi-zero", "Icepi Zero v1.3", "LFE5U-25F", 50e6,
          "icepi_zero:IcepiZero1_3Platform", target_hz=90e6, conv_target_hz=60e6, pll="EHXPLLL",
          uart=("K16", "K15"),
          uart_bridge="USB-UART (USB)", leds=5, programmers={_OFL: ("-b", "icepi-zero")}),
    Board("orangecrab", "Good Stuff Department OrangeCrab r0.2 25F", "LFE5U-25F", 48e6,
          "orangecrab_r0_2:OrangeCrabR0_2_25FPlatform", programmers={"dfu-util": ()},
          notes="USB only (no UART)"),
    Board("orangecrab-85f", "Good Stuff Department OrangeCrab r0.2 85F", "LFE5U-85F", 48e6,
          "orangecrab_r0_2:OrangeCrabR0_2_85FPlatform", programmers={"dfu-util": ()},
          notes="USB only (no UART)"),
    Board("colorlight-i5", "Colorlight i5", "LFE5U-25F", 25e6,
          programmers={_OFL: ("-b", "colorlight-i5")},
          notes="not in amaranth-boards"),
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


_RESOURCE_NAMES = {"luts": "LUTs", "bram": "block RAMs", "spram": "SPRAMs", "dsp": "DSPs"}


def _over_text(over: dict) -> str:
    return ", ".join(f"{need:,} {_RESOURCE_NAMES.get(r, r)} of {cap:,}"
                     for r, (need, cap) in over.items())


def board_capacities() -> list[dict]:
    """Per board: its catalog entry (`Board.to_dict`) and what fits on its device, by the
    mapper (`compiler.mapper.device_capacity`). A board that fits no network says so in
    `can`: `compile --board` and `build` refuse every image there."""
    from ..compiler.mapper import device_capacity

    cache: dict[str, dict] = {}
    rows = []
    for board in BOARDS.values():
        if board.device not in cache:
            cache[board.device] = device_capacity(board.device)
        row = {**board.to_dict(), **cache[board.device]}
        if row["smallest"]:
            row["can"] = (f"nothing: one neuron (16-bit membrane) needs "
                          f"{_over_text(row['smallest'])}; compile and build refuse every "
                          f"network")
        rows.append(row)
    return rows

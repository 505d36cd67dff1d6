"""The digits demo built for every board with a host link: `make bitstreams`, or
`python -m spikeforge.bitstreams OUT [--board NAME ...] [--clock MHZ]` (docs/boards.md).

Every buildable board of the catalog is built (its UART carries the host link), except those
where the mapper fits no network at all (the iCE40HX1K boards): they are skipped, naming the
reason. Per board, OUT/<board>.json holds the build report (`fmax_mhz`, `clock_mhz`,
`timing_met`, `utilization` with `luts` and `bram`, the mapper's `estimate`, `limiting_path`)
or, when the board fails, `{"board", "error"}` with the one-line reason (plus the report when
only timing failed). OUT/summary.json lists one line per board. The exit status is 1 when any
board that was built failed (does not fit, a tool failed, timing missed), 2 on a bad argument.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .api import compile  # noqa: A004
from .boards.build import BuildError, TimingError, build
from .boards.catalog import board_capacities, find_board
from .compiler.mapper import FitError
from .digits import build_model, load_digits

__all__ = ["demo_boards", "build_demo_boards", "summary_line", "main"]


def demo_boards() -> dict[str, str | None]:
    """Every board with a host link -> None when the demo is built for it, or why it is
    skipped (no network fits its device)."""
    return {row["board"]: (None if row["neurons"] else row["can"])
            for row in board_capacities() if row["buildable"]}


def summary_line(report: dict) -> str:
    """`icebreaker: Fmax 25.4 MHz at 18 MHz (met), LUTs 4300/5280, block RAM 29/30` or the
    board's error."""
    name = report["board"]
    if "skipped" in report:
        return f"{name}: skipped: {report['skipped']}"
    util = report.get("utilization") or {}
    used = ", ".join(f"{label} {util[key]['used']}/{util[key]['available']}"
                     for key, label in (("luts", "LUTs"), ("bram", "block RAM"),
                                        ("spram", "SPRAM"), ("dsp", "DSP")) if key in util)
    if report.get("fmax_mhz") is not None:
        verdict = "met" if report.get("timing_met") else "MISSED"
        missed = report.get("fallback_from")
        if missed:
            verdict += f"; its {missed['clock_hz'] / 1e6:g} MHz catalog clock was missed"
        line = (f"{name}: Fmax {report['fmax_mhz']:g} MHz at {report['clock_mhz']:g} MHz "
                f"({verdict}), {used}")
        return line if "error" not in report else f"{line}: {report['error']}"
    return f"{name}: FAILED: {report['error']}"


def build_demo_boards(out_root: str | os.PathLike = "build/bitstreams",
                      boards: list[str] | None = None, *, clock_hz: float | None = None,
                      say: Callable[[str], None] = print) -> list[dict]:
    """Build the digits demo network (untrained, 64-128-10, 8-bit) for `boards` (default: every
    board with a host link, `demo_boards`) at `clock_hz` (default: each board's catalog clock).

    Writes out_root/<board>.json per board and out_root/summary.json; returns the reports. A
    board named in `boards` that has no host link raises ValueError before anything is built.
    The throughput estimate uses rate-coded digits.
    """
    plan = demo_boards()
    if boards:
        names = [find_board(name).name for name in boards]
        for name in names:
            if name not in plan:
                raise ValueError(find_board(name).why_not_buildable)
        plan = {name: plan[name] for name in names}
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    model = build_model()
    spikes = load_digits().test_spikes[:32]
    rows = []
    for name, skip in plan.items():
        started = time.monotonic()
        if skip is not None:
            report = {"board": name, "skipped": skip}
        else:
            say(f"{name}: building")
            try:
                image = compile(model, weight_bits=8, board=name)
                report = build(image, name, root / name, clock_hz=clock_hz,
                               spikes=spikes).to_dict()
            except TimingError as exc:
                report = {**exc.report.to_dict(), "error": str(exc)}
            except (FitError, BuildError, ValueError) as exc:
                report = {"board": name, "error": str(exc).splitlines()[0]}
            report["wall_seconds"] = round(time.monotonic() - started, 1)
        (root / f"{name}.json").write_text(json.dumps(report, indent=1))
        say(summary_line(report))
        rows.append(report)
    (root / "summary.json").write_text(json.dumps([summary_line(r) for r in rows], indent=1))
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spikeforge.bitstreams",
                                     description="build the digits demo for every board with "
                                                 "a host link")
    parser.add_argument("out", nargs="?", default="build/bitstreams",
                        help="output folder (default: %(default)s)")
    parser.add_argument("--board", action="append",
                        help="only this board (repeatable; default: every board with a UART)")
    parser.add_argument("--clock", type=float,
                        help="fabric clock in MHz for every board (default: each board's)")
    args = parser.parse_args(argv)
    try:
        rows = build_demo_boards(args.out, args.board,
                                 clock_hz=args.clock * 1e6 if args.clock else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [row["board"] for row in rows if "error" in row]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The digits demo built for every board: `make bitstreams`, or
`python -m spikeforge.bitstreams OUT [--board NAME] [--clock MHZ]` (docs/boards.md)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .api import compile  # noqa: A004
from .boards.build import BuildError, TimingError, build
from .boards.catalog import board_names
from .compiler.mapper import FitError
from .digits import build_model, load_digits


def build_demo_boards(out_root: str | os.PathLike = "build/bitstreams",
                      boards: list[str] | None = None, *, clock_hz: float | None = None,
                      say: Callable[[str], None] = print) -> list[dict]:
    """Build the digits demo network (untrained, 64-128-10, 8-bit) for every buildable board.

    Writes out_root/<board>.json per board: the build report, or {"board", "error"} when the
    network does not fit or the build fails. The throughput estimate uses rate-coded digits.
    """

    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    model = build_model()
    spikes = load_digits().test_spikes[:32]
    rows = []
    for name in boards or board_names(buildable=True):
        started = time.monotonic()
        say(f"{name}: building")
        try:
            image = compile(model, weight_bits=8, board=name)
            report = build(image, name, root / name, clock_hz=clock_hz, spikes=spikes).to_dict()
        except TimingError as exc:
            report = {**exc.report.to_dict(), "error": str(exc)}
        except (FitError, BuildError, ValueError) as exc:
            report = {"board": name, "error": str(exc).splitlines()[0]}
        report["wall_seconds"] = round(time.monotonic() - started, 1)
        (root / f"{name}.json").write_text(json.dumps(report, indent=1))
        fmax = report.get("fmax_mhz")
        say(f"{name}: " + (f"Fmax {fmax} MHz at {report['clock_mhz']:g} MHz, "
                           f"{report['utilization'].get('luts')}" if fmax else report["error"]))
        rows.append(report)
    return rows


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spikeforge.bitstreams",
                                     description="build the digits demo for every board")
    parser.add_argument("out", nargs="?", default="build/bitstreams")
    parser.add_argument("--board", action="append", help="only this board (repeatable)")
    parser.add_argument("--clock", type=float, help="fabric clock in MHz for every board")
    args = parser.parse_args(argv)
    rows = build_demo_boards(args.out, args.board,
                             clock_hz=args.clock * 1e6 if args.clock else None)
    return 0 if all("error" not in row or "fit" in row["error"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Fmax and resources of full board builds (SoC: host link + array), from nextpnr's report.

For each board and network builds a bitstream with `spikeforge.boards.build.build` at the
requested clock (default: the board's catalog clock) and prints one JSON object: board, network,
clock and achieved Fmax in MHz, whether timing was met, LUTs, block RAM, SPRAM and DSPs
(used / available) and the critical path (start cell, end cell, delay, logic levels).

Networks (`--net`, repeatable; default all that fit the board):

- digits8, digits4: the digits demo network (snnTorch 64-128-10, untrained weights, as
  `make bitstreams` builds it) compiled at 8 / 4 bits;
- demo8, demo4: the same network trained as `make demo` trains it (seeded, about 10 s) and
  compiled as the demo compiles it, with the training spikes as calibration: the bitstream a
  user of the demo gets (its trained weights need narrower membranes and thresholds than the
  untrained ones, so it takes a few dozen cells less);
- three: a 3-layer random network 64-40-24-10 (about 3,800 synapses), 8-bit weights;
- mnist4: 784-128-10 with random 4-bit weights;
- mnist256: 784-256-10 with random 4-bit weights;
- digits8-3f: digits8 whose output layer learns on chip by the three-factor rule.

`--flash` builds the SoC with the power-up flash loader (`build(..., flash=True)`), `--no-flash`
without it; by default the build decides (docs/flash.md). `--skip-fit-check` builds even when
the mapper's estimate says the design does not fit, so nextpnr reports the real figure (the
row's `estimate_luts` keeps the estimate).

Run: .venv/bin/python bench/fmax.py --board icebreaker --net digits8 --clock 40
     .venv/bin/python bench/fmax.py --board icebreaker --net mnist4 --flash --seed 1 \
         --skip-fit-check
One nextpnr build at a time; each takes minutes.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from pathlib import Path

from spikeforge.boards.build import BuildError, TimingError, build
from spikeforge.boards.catalog import board_target
from spikeforge.compiler.mapper import FitError, map_network
from spikeforge.image import Image

sys.path.insert(0, str(Path(__file__).parent))
from core_throughput import random_network  # noqa: E402

NETS = ("digits8", "digits4", "three", "mnist4", "mnist256", "digits8-3f", "demo8", "demo4")


@functools.cache
def _trained_digits():
    """`make demo`'s data and trained model (spikeforge.demo.train_digits: seeded)."""
    from spikeforge.demo import train_digits

    return train_digits(progress=False)


def make_image(net: str, board: str) -> Image:
    if net in ("demo8", "demo4"):
        from spikeforge.demo import compile_digits

        data, model = _trained_digits()
        return compile_digits(model, data, int(net[4]), board)
    if net in ("digits8", "digits4", "digits8-3f"):
        import spikeforge
        from spikeforge.digits import build_model

        image = spikeforge.compile(build_model(), weight_bits=int(net[6]), board=board)
        return image.with_learning(-1, "three_factor") if net.endswith("-3f") else image
    # map_network's `board` only labels the configuration: the board's device is mapped for
    name, device, _ = board_target(board)
    shapes = {"three": ((64, 40, 24, 10), 8, 4, 0.3), "mnist4": ((784, 128, 10), 4, 2, 0.1),
              "mnist256": ((784, 256, 10), 4, 2, 0.1)}
    if net in shapes:
        sizes, bits, seed, activity = shapes[net]
        layers = random_network(sizes, bits, seed=seed, activity=activity)
        return Image(sizes[0], layers,
                     map_network(layers, sizes[0], device=device, board=name))
    raise ValueError(f"network must be one of {', '.join(NETS)}, not {net!r}")


def _used(report: dict, resource: str) -> list[int] | None:
    entry = report.get("utilization", {}).get(resource)
    return None if entry is None else [entry["used"], entry["available"]]


def measure(board: str, net: str, clock_mhz: float | None, out_dir: Path,
            seed: int | None, flash: bool | None = None, skip_fit_check: bool = False) -> dict:
    row: dict = {"board": board, "network": net}
    try:
        image = make_image(net, board)
        if skip_fit_check:
            from spikeforge.boards import build as build_module
            from spikeforge.compiler.mapper import estimate_resources

            def estimate_only(image, board, *, flash=False):
                estimate = estimate_resources(image.layers, image.config, flash=flash)
                row["estimate_luts"] = list(estimate["luts"])
                return estimate

            build_module.check_fit = estimate_only
        clock_hz = None if clock_mhz is None else clock_mhz * 1e6
        report = build(image, board, out_dir, clock_hz=clock_hz, seed=seed,
                       flash=flash).to_dict()
    except TimingError as exc:
        report = exc.report.to_dict()
    except (FitError, BuildError) as exc:
        return {**row, "error": str(exc).splitlines()[0]}
    path = report.get("limiting_path") or {}
    row.update({
        "clock_mhz": report["clock_mhz"], "fmax_mhz": report["fmax_mhz"],
        "timing_met": report["timing_met"],
        "luts": _used(report, "luts"), "bram": _used(report, "bram"),
        "spram": _used(report, "spram"), "dsp": _used(report, "dsp"),
        "critical_path": {"from": path.get("from"), "to": path.get("to"),
                          "delay_ns": path.get("delay_ns"),
                          "logic_levels": path.get("logic_levels")},
        "lanes": [c.lanes for c in image.config.cores],
        "flash_offset": report.get("flash_offset"),
        # the catalog clock, when this build missed it and was built again below it
        "fallback_from_mhz": (report.get("fallback_from") or {}).get("clock_hz", 0) / 1e6
                             or None,
        "seconds": report["seconds"],
    })
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", action="append", help="board (repeatable; default "
                        "icebreaker and ulx3s-85f)")
    parser.add_argument("--net", action="append", choices=NETS,
                        help="network (repeatable; default all)")
    parser.add_argument("--clock", type=float, default=None,
                        help="fabric clock in MHz (default: the board's catalog clock)")
    parser.add_argument("--seed", type=int, default=None, help="nextpnr placer seed")
    parser.add_argument("--out", default=None, help="build folder (default: a temporary one)")
    parser.add_argument("--flash", action=argparse.BooleanOptionalAction, default=None,
                        help="with (--flash) or without (--no-flash) the flash loader "
                             "(default: as the build decides)")
    parser.add_argument("--skip-fit-check", action="store_true",
                        help="build even when the mapper's estimate does not fit")
    args = parser.parse_args()
    boards = args.board or ["icebreaker", "ulx3s-85f"]
    nets = args.net or list(NETS)
    with tempfile.TemporaryDirectory(prefix="spikeforge-fmax-") as tmp:
        root = Path(args.out or tmp)
        for board in boards:
            for net in nets:
                row = measure(board, net, args.clock, root / f"{board}-{net}", args.seed,
                              args.flash, args.skip_fit_check)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

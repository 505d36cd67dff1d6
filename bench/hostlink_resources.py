"""Resources of the host link alone (HostLink, no UART, no array), from yosys synthesis.

For each device prints one JSON object: LUTs, flip-flops and block RAMs of the link that serves
the digits-like network (64-128-10, 8-bit weights, mapped by the compiler's mapper for that
device), at the SoC's defaults (115200 baud at 12 MHz, 128 byte times of receive timeout,
256-byte payloads). The array's counters enter as top-level ports, so the figure holds the
link's STATUS serialisation but no counter adders. `--parts` adds one object per component of
the link, each synthesized alone (their sum exceeds the link's: yosys optimizes across them;
the receiver and the sender share one `LinkCrc`, its own object).
`--encoder`: the image encodes on chip, so the link holds the rate encoder (docs/host-protocol.md).
Run: .venv/bin/python bench/hostlink_resources.py [--device iCE40UP5K] [--parts] [--encoder]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from spikeforge.compiler.mapper import map_network
from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.counters import StatusCounters, status_counter_specs
from spikeforge.hdl.hostlink import (
    FrameReceiver,
    HostLink,
    LinkCrc,
    RequestChecker,
    RequestExecutor,
    ResponseSender,
)
from spikeforge.hdl.synth import synth_rtlil_stats
from spikeforge.image import Image

sys.path.insert(0, str(Path(__file__).parent))
from core_throughput import random_network  # noqa: E402

DEVICES = ("iCE40UP5K", "LFE5U-85F")


def main() -> None:
    from amaranth.back import rtlil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="device (repeatable); default both")
    parser.add_argument("--parts", action="store_true", help="also each component alone")
    parser.add_argument("--encoder", action="store_true",
                        help="an image that encodes on chip: the link holds the rate encoder")
    args = parser.parse_args()
    layers = random_network((64, 128, 10), 8, seed=1, activity=0.3)
    for device in args.device or DEVICES:
        image = Image(64, layers, map_network(layers, 64, device=device))
        if args.encoder:
            from spikeforge.sim.encode import with_rate_encoder

            image = with_rate_encoder(image)
        array = CoreArray(image)
        link = HostLink.for_array(array, byte_cycles=10 * 104)
        blocks = {"HostLink": link}
        if args.parts:
            blocks |= {
                "FrameReceiver": FrameReceiver(max_payload=link.max_payload,
                                               timeout_cycles=link.timeout_cycles,
                                               addr_bits=link.addr_bits),
                "RequestChecker": RequestChecker(image, word_bytes=link.word_bytes),
                "RequestExecutor": RequestExecutor(
                    image, mem_data_width=array.mem_data_width,
                    mem_addr_width=array.mem_addr_width, max_payload=link.max_payload,
                    hello=link.hello),
                "StatusCounters": StatusCounters(status_counter_specs(image),
                                                 len(image.layers)),
                "ResponseSender": ResponseSender(),
                "LinkCrc": LinkCrc(),
            }
        for name, block in blocks.items():
            start = time.monotonic()
            stats = synth_rtlil_stats(rtlil.convert(block, name="top", emit_src=False), device)
            print(json.dumps({"block": name, "network": "digits-like 64-128-10",
                              "device": device, "luts": stats["luts"], "ffs": stats["ffs"],
                              "bram": stats["bram"],
                              "seconds": round(time.monotonic() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()

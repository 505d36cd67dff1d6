"""End-to-end time per sample on the iCEBreaker: link time from the protocol's real byte counts,
compute time from the golden model's counters at the catalog clock.

For every sample the bench builds the exact frames `Board.run` sends and the answers the
device gives (`spikeforge.protocol.encode_request` / `encode_response`, with the output events
and counters of the golden model), sums their bytes, and times them at the board's catalog UART
rate (10 bits per byte, 8N1; requests are stop-and-wait, so link and compute add up). Compute
is the golden model's cycles per step (`boards.build.step_cycles`: events x groups + neurons + 2
per layer) plus the host link's own cycles for the input encoding (bitmap: 3 per byte; on-chip
encoder: n_inputs + 2 per step), at the board's fabric clock.

Modes: `aer-v3` (protocol 3's runtime: AER only, STATUS after every step), `aer+bitmap` (per
step the shorter of AER and bitmap, STATUS every `status_interval` steps), `encoder` (the
image encodes on chip: intensities once per sample, STEP_ENCODED per step).

Networks: digits (64-128-10, random 8-bit weights, sklearn digits), and 784-128-10 (random
4-bit weights) on the digits upsampled to 28 x 28 and on Bernoulli 10 % activity. One JSON
line per (network, inputs, mode, baud). Run: .venv/bin/python bench/link_throughput.py
[--baud RATE --clock MHZ] (a rate the divider cannot make at that clock is refused).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from spikeforge import protocol
from spikeforge.boards.build import step_cycles
from spikeforge.boards.catalog import find_board
from spikeforge.boards.runtime import status_interval
from spikeforge.boards.top import check_baud
from spikeforge.compiler.mapper import FitError, map_network
from spikeforge.image import Image
from spikeforge.protocol import Command, Status
from spikeforge.sim import golden
from spikeforge.sim.encode import rate_lfsr, with_rate_encoder

sys.path.insert(0, str(Path(__file__).parent))
from core_throughput import random_network  # noqa: E402

MAX_PAYLOAD = 256  # the SoC's default (HELLO reports it)
TARGET_MS = 2.0  # issue 11: with the encoder, a 784-input sample in at most this


def exchange(command: Command, payload: bytes = b"", answer: bytes = b"") -> int:
    """Bytes on the wire of one request and its OK answer."""
    return (len(protocol.encode_request(0, command, payload))
            + len(protocol.encode_response(0, command, Status.OK, answer)))


def sample_bytes(image: Image, spikes: np.ndarray, outputs: np.ndarray, mode: str,
                 intensity: np.ndarray | None) -> int:
    """Bytes `Board.run` moves for one sample (spikes [T, n], its golden outputs [T, n_out])."""
    steps = spikes.shape[0]
    n_layers = len(image.layers)
    status = exchange(Command.STATUS, answer=bytes(protocol.status_length(n_layers)))
    total = exchange(Command.CLEAR)
    if mode == "encoder":
        per = MAX_PAYLOAD - 2
        for k in range(0, image.n_inputs, per):
            total += exchange(Command.INTENSITY,
                              protocol.intensity_payload(k, intensity[k:k + per].tolist()))
    every = 1 if mode == "aer-v3" else status_interval(image)
    for t in range(steps):
        answer = protocol.push_payload(np.flatnonzero(outputs[t]).tolist())
        if mode == "encoder":
            total += exchange(Command.STEP_ENCODED, answer=answer)
        else:
            requests = protocol.step_requests(np.flatnonzero(spikes[t]).tolist(),
                                              image.n_inputs, MAX_PAYLOAD,
                                              bitmap=mode != "aer-v3")
            total += sum(exchange(command, payload) for command, payload in requests[:-1])
            total += exchange(*requests[-1], answer=answer)
        if (t + 1) % every == 0 or t == steps - 1:
            total += status
    return total


def link_cycles(image: Image, spikes: np.ndarray, mode: str) -> float:
    """The host link's own cycles per step for the input encoding (beyond the array's)."""
    if mode == "encoder":
        return image.n_inputs + 2
    if mode == "aer-v3":
        return 0.0
    chosen = [protocol.step_requests(np.flatnonzero(row).tolist(), image.n_inputs, MAX_PAYLOAD)
              [-1][0] for row in spikes]
    bitmap = sum(c == Command.STEP_BITMAP for c in chosen) / len(chosen)
    return bitmap * 3 * protocol.bitmap_bytes(image.n_inputs)


def measure(name: str, inputs: str, image: Image, intensity: np.ndarray, steps: int,
            board: str, baud: int, fabric: float) -> list[dict]:
    coded = with_rate_encoder(image, seed=1)
    spikes = rate_lfsr(intensity, steps, seed=1)  # the same trains in every mode
    result = golden.run(coded, spikes)
    array_cycles, _, _ = step_cycles(image, spikes)
    rows = []
    for mode in ("aer-v3", "aer+bitmap", "encoder"):
        rates = [115200, baud] if mode == "aer-v3" else [baud]
        nbytes = np.array([sample_bytes(image, spikes[b], result.spikes[b], mode,
                                        intensity[b]) for b in range(len(spikes))])
        cycles = (array_cycles + link_cycles(image, spikes[0], mode)) * steps
        for rate in rates:
            link_ms = 1e3 * nbytes.mean() * 10 / rate
            compute_ms = 1e3 * cycles / fabric
            row = {"network": name, "inputs": inputs, "mode": mode, "board": board,
                   "baud": rate, "clock_hz": fabric, "steps": steps,
                   "samples": int(len(spikes)), "input_activity": round(float(spikes.mean()), 4),
                   "bytes_per_sample": round(float(nbytes.mean()), 1),
                   "link_ms": round(link_ms, 3), "compute_ms": round(compute_ms, 3),
                   "total_ms": round(link_ms + compute_ms, 3),
                   "cycles_per_step": round(cycles / steps, 1)}
            if image.n_inputs == 784 and mode == "encoder":
                row["target_ms"] = TARGET_MS
                row["meets_target"] = bool(link_ms + compute_ms <= TARGET_MS)
            rows.append(row)
    return rows


def map_for(layers, n_inputs: int, device: str) -> tuple[Image, str]:
    """The image on `device`; where its weights do not fit, mapped for the LFE5U-85F instead
    (16 lanes for the hidden layer: what the UP5K's SPRAM gives, issue 11)."""
    try:
        return Image(n_inputs, layers, map_network(layers, n_inputs, device=device)), device
    except FitError:
        return Image(n_inputs, layers, map_network(layers, n_inputs, device="LFE5U-85F")), \
            "LFE5U-85F lanes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--baud", type=int, default=None,
                        help="UART rate (default: the board's catalog rate)")
    parser.add_argument("--clock", type=float, default=None,
                        help="fabric clock in MHz (default: the board's catalog clock)")
    parser.add_argument("--steps", type=int, default=20, help="timesteps (default %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="samples (default %(default)s)")
    args = parser.parse_args()
    board = find_board(args.board)
    baud = args.baud or board.baud
    fabric = args.clock * 1e6 if args.clock else board.fabric_hz
    check_baud(board, baud, fabric)

    from sklearn.datasets import load_digits

    from spikeforge.digits import upsample_28

    pixels = load_digits().data[:args.batch] / 16.0
    digits8 = np.rint(pixels * 255).astype(np.uint8)
    layers = random_network((64, 128, 10), 8, seed=1, activity=0.3)
    image, mapped = map_for(layers, 64, board.device)
    for row in measure(f"digits 64-128-10 ({mapped})", "sklearn digits", image, digits8,
                       args.steps, board.name, baud, fabric):
        print(json.dumps(row), flush=True)

    layers = random_network((784, 128, 10), 4, seed=2, activity=0.1)
    image, mapped = map_for(layers, 784, board.device)
    digits28 = np.rint(upsample_28(pixels) * 255).astype(np.uint8)
    rng = np.random.default_rng(3)
    bernoulli = rng.integers(0, 52, (args.batch, 784)).astype(np.uint8)  # mean 25.5/256: 10 %
    for inputs, intensity in (("digits upsampled to 28x28", digits28),
                              ("uniform intensities, 10% activity", bernoulli)):
        for row in measure(f"784-128-10 ({mapped})", inputs, image, intensity, args.steps,
                           board.name, baud, fabric):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

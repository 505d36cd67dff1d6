"""End-to-end time per sample on the iCEBreaker: link time from the protocol's real byte counts,
compute time from the golden model's event counts and the gateware's cycle model.

For every sample the bench builds the exact frames `Board.run` sends and the answers the
device gives (`spikeforge.protocol.encode_request` / `encode_response`, with the output events
and counters of the golden model), sums their bytes, and times them at the UART rate (10 bits
per byte, 8N1). Requests are stop-and-wait: the link time and the device's time add up.

Modes: `aer-v3` (protocol 3's runtime: AER only, STATUS after every step), `aer+bitmap` (per
step the shorter of AER and bitmap, STATUS every `status_interval` steps), `encoder` (the image
encodes on chip: intensities once per sample, a STEP_ENCODED request per step), `run` (protocol
5: intensities once, the sample's steps in RUN_ENCODED requests of up to HELLO's `run_steps`
and `status_interval` steps, a STATUS after each; what `Board.run` does).

Device cycles (per step, at the fabric clock), `boards.build.core_step_cycles` per layer l:
integration I_l (its input events x groups) and neuron pass P_l (neurons + 2), the layer's
W_l = I_l + P_l (the slowest of its cores).
- aer-v3, aer+bitmap: sum of W_l, plus the link's bitmap decoding (3 cycles a bitmap byte);
- encoder: max(n_inputs + 2, I_0) + P_0 + sum of W_l for l >= 1: the encoder's scan runs while
  layer 0 integrates the events already queued (hdl/encoder.py's queue);
- run: per step max(n_inputs + 2, W_0, W_1, ...): the encoder scans step t + 1 while the array
  is on step t, and layers pipeline; plus the later layers' W_l once (the last step drains).
Both encoder modes add 2 cycles per intensity byte (INTENSITY's writes). Cycles the model
leaves out: the queue running full or dry for a few cycles where the encoder and layer 0 are
nearly even, the requests' own few cycles of decode and answer set-up.

`--measure N` checks the model against the gateware: HostLink + CoreArray of the 784-128-10
image in the Amaranth simulator (tests/test_hdl_hostlink.py's StreamBoard: bytes in every 3
cycles, out every cycle; the SPRAM weights loaded over the link first, about 7 minutes), N
samples of each input set through INTENSITY and RUN_ENCODED, and through INTENSITY and
STEP_ENCODED per step, each checked against the golden model; the device's cycles are the
simulated cycles of those requests less their bytes' cycles. One JSON line per (inputs,
mode) with `measured_cycles_per_step` and `model_cycles_per_step`.

Networks: digits (64-128-10, random 8-bit weights, sklearn digits), and 784-128-10 (random
4-bit weights) on the digits upsampled to 28 x 28 and on uniform intensities 0..51 (10 %
activity). Rates: the board's catalog clock and UART rate (the iCEBreaker: 40.5 MHz, 8 Mbaud,
5 clocks a bit), and two others the FT2232H makes exactly (48 MHz / 12 Mbaud, its top rate at
4 clocks a bit, above what the UP5K designs reach; 30 MHz / 6 Mbaud); `--clock MHZ --baud
RATE` for one chosen pair instead (a rate the divider cannot make at that clock is refused).
One JSON line per (network, inputs, mode, clock, rate).
Run: .venv/bin/python bench/link_throughput.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from spikeforge import protocol
from spikeforge.boards.build import core_step_cycles
from spikeforge.boards.catalog import find_board
from spikeforge.boards.runtime import status_interval
from spikeforge.boards.top import check_baud
from spikeforge.compiler.mapper import FitError, map_network
from spikeforge.hdl.hostlink import output_buffer
from spikeforge.image import Image
from spikeforge.protocol import Command, Status
from spikeforge.sim import golden
from spikeforge.sim.encode import rate_lfsr, with_rate_encoder

sys.path.insert(0, str(Path(__file__).parent))
from core_throughput import random_network  # noqa: E402

MAX_PAYLOAD = 256  # the SoC's default (HELLO reports it)
TARGET_MS = 2.0  # issue 11: with the encoder, a 784-input sample in at most this
OTHER_RATES = ((48e6, 12_000_000), (30e6, 6_000_000))  # the FT2232H makes both exactly
MODES = ("aer-v3", "aer+bitmap", "encoder", "run")
CYCLE_MODEL = {
    "aer-v3": "per step sum of layers' (events x groups + neurons + 2)",
    "aer+bitmap": "per step sum of layers' (events x groups + neurons + 2), plus 3 cycles "
                  "per bitmap byte",
    "encoder": "per step max(n_inputs + 2, layer 0's events x groups) + layer 0's neurons + 2 "
               "+ later layers' (events x groups + neurons + 2); plus 2 cycles per intensity",
    "run": "per step max(n_inputs + 2, each layer's events x groups + neurons + 2), plus the "
           "later layers once (drain); plus 2 cycles per intensity",
}


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
    if mode in ("encoder", "run"):
        per = MAX_PAYLOAD - 2
        for k in range(0, image.n_inputs, per):
            total += exchange(Command.INTENSITY,
                              protocol.intensity_payload(k, intensity[k:k + per].tolist()))
    events = [protocol.push_payload(np.flatnonzero(row).tolist()) for row in outputs]
    if mode == "run":
        chunk = min(status_interval(image), output_buffer(image, encoder=True)[1])
        for t0 in range(0, steps, chunk):
            answer = b"".join(e + protocol.STEP_END.to_bytes(2, "little")
                              for e in events[t0:t0 + chunk])
            total += exchange(Command.RUN_ENCODED,
                              protocol.run_payload(min(chunk, steps - t0)), answer) + status
        return total
    every = 1 if mode == "aer-v3" else status_interval(image)
    for t in range(steps):
        if mode == "encoder":
            total += exchange(Command.STEP_ENCODED, answer=events[t])
        else:
            requests = protocol.step_requests(np.flatnonzero(spikes[t]).tolist(),
                                              image.n_inputs, MAX_PAYLOAD,
                                              bitmap=mode != "aer-v3")
            total += sum(exchange(command, payload) for command, payload in requests[:-1])
            total += exchange(*requests[-1], answer=events[t])
        if (t + 1) % every == 0 or t == steps - 1:
            total += status
    return total


def sample_cycles(image: Image, spikes: np.ndarray, mode: str) -> float:
    """Device cycles of a sample (spikes [batch, T, n]: the mean over the batch) by the model
    of the module docstring."""
    steps = spikes.shape[1]
    cores, _ = core_step_cycles(image, spikes)
    n_layers = len(image.layers)
    integrate, sweep, work = [0.0] * n_layers, [0.0] * n_layers, [0.0] * n_layers
    for layer, cycles, pass_ in cores:
        if cycles + pass_ >= work[layer]:
            integrate[layer], sweep[layer], work[layer] = cycles, pass_, cycles + pass_
    scan = image.n_inputs + 2
    if mode in ("aer-v3", "aer+bitmap"):
        extra = 0.0
        if mode == "aer+bitmap":
            chosen = [protocol.step_requests(np.flatnonzero(row).tolist(), image.n_inputs,
                                             MAX_PAYLOAD)[-1][0]
                      for row in spikes.reshape(-1, image.n_inputs)]
            bitmap = sum(c == Command.STEP_BITMAP for c in chosen) / len(chosen)
            extra = bitmap * 3 * protocol.bitmap_bytes(image.n_inputs)
        return steps * (sum(work) + extra)
    writes = 2 * image.n_inputs
    if mode == "encoder":
        return writes + steps * (max(scan, integrate[0]) + sweep[0] + sum(work[1:]))
    return writes + steps * max(scan, *work) + sum(work[1:])


def rows_for(name: str, inputs: str, image: Image, intensity: np.ndarray, steps: int,
             board: str, rates: list[tuple[float, int, str]]) -> list[dict]:
    coded = with_rate_encoder(image, seed=1)
    spikes = rate_lfsr(intensity, steps, seed=1)  # the same trains in every mode
    result = golden.run(coded, spikes)
    rows = []
    for mode in MODES:
        nbytes = np.array([sample_bytes(image, spikes[b], result.spikes[b], mode,
                                        intensity[b]) for b in range(len(spikes))])
        cycles = sample_cycles(image, spikes, mode)
        pairs = [(fabric, baud, source) for fabric, baud, source in rates]
        if mode == "aer-v3":  # and where the runtime began: 115,200 baud
            pairs = [(rates[0][0], 115200, rates[0][2]), *pairs]
        for fabric, baud, source in pairs:
            link_ms = 1e3 * nbytes.mean() * 10 / baud
            compute_ms = 1e3 * cycles / fabric
            row = {"network": name, "inputs": inputs, "mode": mode, "board": board,
                   "clock_hz": fabric, "baud": baud, "rates": source, "steps": steps,
                   "samples": int(len(spikes)), "input_activity": round(float(spikes.mean()), 4),
                   "bytes_per_sample": round(float(nbytes.mean()), 1),
                   "link_ms": round(link_ms, 3), "compute_ms": round(compute_ms, 3),
                   "total_ms": round(link_ms + compute_ms, 3),
                   "cycles_per_step": round(cycles / steps, 1),
                   "cycle_model": CYCLE_MODEL[mode]}
            if image.n_inputs == 784 and mode in ("encoder", "run"):
                row["target_ms"] = TARGET_MS
                row["meets_target"] = bool(link_ms + compute_ms <= TARGET_MS)
            rows.append(row)
    return rows


def measure_rows(name: str, image: Image, inputs: dict[str, np.ndarray],
                 steps: int) -> list[dict]:
    """Device cycles per step of the gateware in the Amaranth simulator (module docstring)."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from spikeforge.boards.runtime import Board
    from tests.test_hdl_hostlink import StreamBoard

    coded = with_rate_encoder(image, seed=1)
    device = StreamBoard(coded)
    host = Board("stream", transport=device, baud=10 / device.byte_time, timeout=5.0)
    host.load(coded, verify=False)
    client = host.client

    rows = []
    for kind, intensity in inputs.items():
        spikes = rate_lfsr(intensity, steps, seed=1)
        want = golden.run(coded, spikes)
        for mode in ("run", "encoder"):
            total = 0
            for b in range(len(intensity)):
                client.clear()
                start = device.cycles
                client.intensity(intensity[b].tolist())
                if mode == "run":
                    got = client.run_encoded(steps)
                else:
                    got = [client.step_encoded() for _ in range(steps)]
                # request bytes go in at GAP cycles each, answer bytes out at one
                requests, answers = wire_bytes(mode, intensity[b], got)
                total += device.cycles - start - device.GAP * requests - answers
                if [list(np.flatnonzero(row)) for row in want.spikes[b]] != got:
                    raise AssertionError(f"{kind}, {mode}, sample {b}: the gateware's output "
                                         f"events differ from the golden model's")
            model = sample_cycles(image, spikes, mode)
            rows.append({"network": name, "inputs": kind, "mode": mode,
                         "measured": "Amaranth simulator, HostLink + CoreArray",
                         "samples": len(intensity), "steps": steps,
                         "measured_cycles_per_step": round(total / len(intensity) / steps, 1),
                         "model_cycles_per_step": round(model / steps, 1),
                         "cycle_model": CYCLE_MODEL[mode]})
    host.close()
    return rows


def wire_bytes(mode: str, intensity: np.ndarray, got: list[list[int]]) -> tuple[int, int]:
    """Bytes of a sample's INTENSITY and step requests, and of their answers (``got``: each
    step's output events)."""
    per = MAX_PAYLOAD - 2
    chunks = [protocol.intensity_payload(k, intensity[k:k + per].tolist())
              for k in range(0, len(intensity), per)]
    requests = sum(len(protocol.encode_request(0, Command.INTENSITY, c)) for c in chunks)
    answers = len(chunks) * len(protocol.encode_response(0, Command.INTENSITY, Status.OK))
    if mode == "run":
        run = b"".join(protocol.push_payload(e) + b"\xff\xff" for e in got)
        requests += len(protocol.encode_request(0, Command.RUN_ENCODED,
                                                protocol.run_payload(len(got))))
        return requests, answers + len(protocol.encode_response(0, Command.RUN_ENCODED,
                                                                Status.OK, run))
    for events in got:
        requests += len(protocol.encode_request(0, Command.STEP_ENCODED))
        answers += len(protocol.encode_response(0, Command.STEP_ENCODED, Status.OK,
                                                protocol.push_payload(events)))
    return requests, answers


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
                        help="UART rate (with --clock: only this pair; default: the catalog's "
                             "rate, and 8 and 6 Mbaud at 40 and 30 MHz)")
    parser.add_argument("--clock", type=float, default=None,
                        help="fabric clock in MHz (default: the board's catalog clock)")
    parser.add_argument("--steps", type=int, default=20, help="timesteps (default %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="samples (default %(default)s)")
    parser.add_argument("--measure", type=int, default=0, metavar="N",
                        help="also measure the gateware's cycles on N samples of each 784-input "
                             "set in the Amaranth simulator (minutes; default: no)")
    args = parser.parse_args()
    board = find_board(args.board)
    if args.baud is None and args.clock is None:
        rates = [(board.fabric_hz, board.baud, "catalog"),
                 *((clock, baud, "other") for clock, baud in OTHER_RATES)]
    else:
        rates = [(args.clock * 1e6 if args.clock else board.fabric_hz,
                  args.baud or board.baud, "chosen")]
    for fabric, baud, _ in rates:
        check_baud(board, baud, fabric)

    from sklearn.datasets import load_digits

    from spikeforge.digits import upsample_28

    pixels = load_digits().data[:args.batch] / 16.0
    digits8 = np.rint(pixels * 255).astype(np.uint8)
    layers = random_network((64, 128, 10), 8, seed=1, activity=0.3)
    image, mapped = map_for(layers, 64, board.device)
    for row in rows_for(f"digits 64-128-10 ({mapped})", "sklearn digits", image, digits8,
                        args.steps, board.name, rates):
        print(json.dumps(row), flush=True)

    layers = random_network((784, 128, 10), 4, seed=2, activity=0.1)
    image, mapped = map_for(layers, 784, board.device)
    digits28 = np.rint(upsample_28(pixels) * 255).astype(np.uint8)
    rng = np.random.default_rng(3)
    uniform = rng.integers(0, 52, (args.batch, 784)).astype(np.uint8)  # mean 25.5/256: 10 %
    for inputs, intensity in (("digits upsampled to 28x28", digits28),
                              ("uniform intensities, 10% activity", uniform)):
        for row in rows_for(f"784-128-10 ({mapped})", inputs, image, intensity, args.steps,
                            board.name, rates):
            print(json.dumps(row), flush=True)
    if args.measure:
        for row in measure_rows(f"784-128-10 ({mapped})", image,
                                {"digits upsampled to 28x28": digits28[:args.measure],
                                        "uniform intensities, 10% activity":
                                            uniform[:args.measure]}, args.steps):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

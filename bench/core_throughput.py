"""Throughput of the core array, measured in RTL simulation (cocotb + Verilator by default).

For each network prints one JSON object: cycles per timestep (first input event to last output
eos, steps streamed back to back, no idling or backpressure), synaptic operations per cycle in
the integration phase (sops / cycles in which some core's integration loop read a weight row),
and the memory bound: a core reads `lanes` weights per cycle, so a layer whose cores hold L
lanes in all can do at most L SOP/cycle; for a network the bound is the time-weighted one,
sum(sops) / sum(sops_l / L_l) (the layers integrating one after another). `ratio` = measured /
bound. The RTL's outputs are checked against the golden model (`bit_exact`).

Cases: (a) digits-like 64-128-10 (8-bit random weights, or `--image NET.sfi`, e.g. the trained
digits image) on real digits rate-coded; (b) 784-128-10, random 4-bit weights (or
`--mnist-image NET.sfi`, a compiled 784-input image), 10% input activity, mapped for the
iCE40UP5K unless `--device` says otherwise (its hidden layer's weights go to SPRAM; the
testbench writes them through the memory port first).

For every case the JSON also gives `ratio_16` (measured SOP/cycle over the 16 SOP/cycle a core
reads from 64-bit SPRAM or block RAM words at 4 bits) and, with `--fmax MHZ` (a build's Fmax,
e.g. `spikeforge build --json`'s `fmax_hz`) or `--report build/.../report.json`,
`ms_per_sample_T20`: 20 timesteps of the measured cycles per timestep at that clock.
Run: .venv/bin/python bench/core_throughput.py [--image digits.sfi] [--fmax 20.1]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from spikeforge.compiler.mapper import map_network, spram_cores
from spikeforge.hdl.rtl import run_rtl
from spikeforge.image import Image, LayerParams, load_image
from spikeforge.sim import golden


def random_network(sizes: tuple[int, ...], weight_bits: int, *, seed: int,
                   activity: float = 0.1) -> list[LayerParams]:
    """Uniform random weights; thresholds at the spread of one step's input current when a
    fraction `activity` of the inputs fire, so layers neither fall silent nor fire every step."""
    rng = np.random.default_rng(seed)
    wmax = (1 << (weight_bits - 1)) - 1
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights = rng.integers(-wmax - 1, wmax + 1, (n_out, n_in))
        v_bits = 16
        spread = wmax / np.sqrt(3) * np.sqrt(n_in * activity)
        theta = int(min(max(1, spread), (1 << (v_bits - 1)) - 1))
        layer = LayerParams(f"fc{index}", weights, bias=np.zeros(n_out), threshold=theta,
                            weight_bits=weight_bits, v_bits=v_bits, acc_bits=40,
                            decay_mode="shift", decay_shift=3)
        layers.append(replace(layer, acc_bits=layer.acc_bits_needed()))
    return layers


def digits_spikes(steps: int, batch: int) -> np.ndarray:
    from spikeforge import digits
    data = digits.load_digits(steps=steps)
    return data.test_spikes[:batch]


MEMORY_BOUND_SOP = 16  # 64-bit weight words of 4-bit weights: the UP5K's four SPRAMs


def measure(name: str, image: Image, spikes: np.ndarray, simulator: str | None,
            fmax_hz: float | None = None) -> dict:
    got = run_rtl(image, spikes, simulator=simulator, idle=0.0, stall=0.0)
    want = golden.run(image, spikes)
    exact = bool(np.array_equal(got.spikes, want.spikes) and all(
        np.array_equal(a, b) for a, b in zip(got.final_membranes, want.final_membranes)))
    lanes = [sum(c.lanes for c in image.config.cores_of(index))
             for index in range(len(image.layers))]
    sops = got.sops.sum(axis=0)
    integrate = int(got.integrate_cycles.sum())
    ideal_cycles = sum(s / lane for s, lane in zip(sops, lanes))
    bound = float(sops.sum() / ideal_cycles) if ideal_cycles else 0.0
    sop_per_cycle = float(sops.sum() / integrate) if integrate else 0.0
    steps = spikes.shape[1]
    cycles_per_step = float(got.cycles.mean()) / steps
    timing = {} if fmax_hz is None else {
        "fmax_mhz": round(fmax_hz / 1e6, 2),
        "ms_per_sample_T20": round(20 * cycles_per_step / fmax_hz * 1e3, 3)}
    return {
        "network": name,
        "simulator": got.simulator,
        "sop_per_cycle": round(sop_per_cycle, 3),
        "bound_sop_per_cycle": round(bound, 3),
        "ratio": round(sop_per_cycle / bound, 3) if bound else None,
        "ratio_16": round(sop_per_cycle / MEMORY_BOUND_SOP, 3),
        "cycles_per_timestep": round(cycles_per_step, 1),
        **timing,
        "integrate_cycles_per_timestep": round(integrate / got.cycles.size / steps, 1),
        "layers": [{"name": layer.name, "n_in": layer.n_in, "n_out": layer.n_out,
                    "weight_bits": layer.weight_bits, "lanes": lane,
                    "cores": len(image.config.cores_of(index)),
                    "events_per_step": round(float(got.events_in[:, index].mean()) / steps, 1),
                    "sops": int(sops[index])}
                   for index, (layer, lane) in enumerate(zip(image.layers, lanes))],
        "input_activity": round(float(spikes.mean()), 3),
        "steps": steps, "batch": int(spikes.shape[0]),
        "device": image.config.device,
        "spram_cores": sorted(spram_cores(image.layers, image.config)),
        "bit_exact": exact,
    }



def case(path, shape, bits, seed, activity, device, label):
    """The image of a bench case and its name: a compiled image from `path`, or else a random
    network of `shape` at `bits` mapped for `device`."""
    if path:
        image = load_image(path)
        dims = [image.n_inputs] + [layer.n_out for layer in image.layers]
        return image, f"{path} ({'-'.join(map(str, dims))})"
    layers = random_network(shape, bits, seed=seed, activity=activity)
    return Image(shape[0], layers, map_network(layers, shape[0], device=device)), label

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="a compiled 64-input image (e.g. the trained digits "
                                        "network) instead of random 8-bit weights")
    parser.add_argument("--mnist-image", help="a compiled 784-input image instead of the "
                                              "random 784-128-10")
    parser.add_argument("--device", default="iCE40UP5K",
                        help="device the mapper targets (default %(default)s; the 784-128-10 "
                             "network's weights go to its SPRAM)")
    clock = parser.add_mutually_exclusive_group()
    clock.add_argument("--fmax", type=float, help="clock in MHz for ms_per_sample_T20")
    clock.add_argument("--report", help="a build's report.json: its Fmax")
    parser.add_argument("--steps", type=int, default=16, help="timesteps (default %(default)s)")
    parser.add_argument("--batch", type=int, default=2, help="samples (default %(default)s)")
    parser.add_argument("--simulator", choices=("verilator", "icarus"), default=None)
    parser.add_argument("--only", choices=("digits", "mnist"), default=None)
    args = parser.parse_args()
    fmax_hz = args.fmax * 1e6 if args.fmax else None
    if args.report:
        with open(args.report) as f:
            report = json.load(f)
        fmax_hz = float(report.get("fmax_hz") or report["fmax_mhz"] * 1e6)

    if args.only in (None, "digits"):
        image, name = case(args.image, (64, 128, 10), 8, 1, 0.3, args.device,
                           "digits-like 64-128-10, random 8-bit weights")
        spikes = digits_spikes(args.steps, args.batch)
        print(json.dumps(measure(name, image, spikes, args.simulator, fmax_hz)), flush=True)
    if args.only in (None, "mnist"):
        image, name = case(args.mnist_image, (784, 128, 10), 4, 2, 0.1, args.device,
                           "784-128-10, random 4-bit weights")
        name += ", 10% input activity"
        rng = np.random.default_rng(3)
        spikes = (rng.random((args.batch, args.steps, image.n_inputs)) < 0.1).astype(np.uint8)
        print(json.dumps(measure(name, image, spikes, args.simulator, fmax_hz)), flush=True)


if __name__ == "__main__":
    main()

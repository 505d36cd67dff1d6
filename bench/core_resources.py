"""Resources of the core array alone, from yosys synthesis (`synth_ice40`, `synth_ecp5`).

For each network and device prints one JSON object: LUTs, flip-flops, block RAMs (iCE40 EBR /
ECP5 DP16KD), SPRAMs and DSPs, each with its share of the device. The array only: no host link,
no PLL; before place and route. Networks as bench/core_throughput.py builds them (digits-like
64-128-10 with 8-bit weights or `--image NET.sfi`; 784-128-10 with 4-bit weights), mapped by
the compiler's mapper for each device.
`--learning` instead prints, per device, one core alone (LifCore, no array counters): the
digits-like output layer (128 inputs, 10 neurons, lanes as the mapper gives them or
`--lanes N`) without learning, with a learning layer's widths but no unit, with STDP and with
the three-factor rule (stochastic rounding). `unit_luts_pct` is the unit's share (over the core
of the same widths), `learning_luts_pct` the whole cost of learning (over the plain core).
`--model` turns the random networks' layers into another neuron model of docs/neuron.md:
`cuba` (a synaptic current, shift alpha, 16 bits), `multi` (up to 4 spikes per step, subtract
reset), `li` (the output layer an LI readout); `lif` (default) keeps the plain LIF.
Run: .venv/bin/python bench/core_resources.py [--image digits.sfi] [--device iCE40UP5K]
     .venv/bin/python bench/core_resources.py --model cuba --device iCE40UP5K
     .venv/bin/python bench/core_resources.py --learning [--lanes 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from spikeforge.compiler.mapper import FitError, map_network
from spikeforge.hdl.synth import synth_rtlil_stats, synth_stats
from spikeforge.image import Image, LayerParams, load_image

sys.path.insert(0, str(Path(__file__).parent))
from core_throughput import random_network  # noqa: E402

DEVICES = ("iCE40UP5K", "LFE5U-85F")


def networks(image_path: str | None):
    if image_path:
        image = load_image(image_path)
        shape = "-".join(map(str, [image.n_inputs] + [layer.n_out for layer in image.layers]))
        yield f"{image_path} ({shape})", image.layers, image.n_inputs
    else:
        yield ("digits-like 64-128-10, 8-bit weights",
               random_network((64, 128, 10), 8, seed=1, activity=0.3), 64)
    yield ("784-128-10, 4-bit weights",
           random_network((784, 128, 10), 4, seed=2, activity=0.1), 784)


MODELS = ("lif", "cuba", "multi", "li")


def with_model(layers: list[LayerParams], model: str) -> list[LayerParams]:
    """The layers in neuron model `model` (module docstring); weights and widths kept."""
    out, in_max = [], 1
    for index, layer in enumerate(layers):
        fields = {"in_max_spikes": in_max, "acc_bits": 40}
        if model == "cuba":
            fields.update(syn_decay_mode="shift", syn_decay_shift=layer.threshold * 0 + 2,
                          syn_bits=16)
        elif model == "multi":
            fields["max_spikes"] = 4
        elif model == "li" and index == len(layers) - 1:
            fields.update(spiking=False, threshold=layer.threshold * 0)
        layer = replace(layer, **fields)
        out.append(replace(layer, acc_bits=layer.acc_bits_needed()))
        in_max = layer.max_spikes
    return out


def learning_rows(device: str, lanes: int | None = None):
    """One core of the digits-like output layer: without learning; with the widths a learning
    layer needs (accumulator and membrane for any weights in range) but no learning unit; with
    STDP; with the three-factor rule (both with stochastic rounding)."""
    from amaranth.back import rtlil

    from spikeforge.hdl.core import LifCore
    from spikeforge.image import CoreConfig, HwConfig

    layers = random_network((64, 128, 10), 8, seed=1, activity=0.3)
    config = map_network(layers, 64, device=device)
    if lanes is not None:
        config = HwConfig(device, tuple(CoreConfig(c.layer, c.lo, c.hi, lanes)
                                        if c.layer == 1 else c for c in config.cores))
    plain = Image(64, layers, config)
    index = next(k for k, core in enumerate(config.cores) if core.layer == 1)
    core = config.cores[index]
    luts = {}
    for name in ("none", "widths only", "stdp", "three_factor"):
        rule = name if name in ("stdp", "three_factor") else None
        image = plain if name == "none" else plain.with_learning(1, rule or "stdp",
                                                                 stochastic=True)
        learning = image.learning_of(1) if rule else None
        start = time.perf_counter()
        dut = LifCore(image.config.cores[index], image.layers[1], image.weight_memory(index),
                      learning=learning, core_index=index)
        stats = synth_rtlil_stats(rtlil.convert(dut, name="top", emit_src=False), device)
        luts[name] = stats["luts"]
        row = {"core": "128 inputs -> 10 neurons, 8-bit weights", "device": device,
               "learning": name, "lanes": core.lanes, "groups": core.groups,
               "acc_bits": image.layers[1].acc_bits, "v_bits": image.layers[1].v_bits,
               **{key: stats[key] for key in ("luts", "ffs", "bram", "spram", "dsp")}}
        if rule:
            unit = stats["luts"] - luts["widths only"]
            row["unit_luts"] = unit
            row["unit_luts_pct"] = round(100 * unit / luts["widths only"], 1)
            row["learning_luts_pct"] = round(100 * (stats["luts"] - luts["none"])
                                             / luts["none"], 1)
        row["synth_seconds"] = round(time.perf_counter() - start, 1)
        yield row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="a compiled image instead of the random 64-128-10")
    parser.add_argument("--device", action="append", choices=DEVICES,
                        help="device (repeatable; default: both)")
    parser.add_argument("--learning", action="store_true",
                        help="one core without and with the learning unit, per device")
    parser.add_argument("--lanes", type=int, help="--learning: lanes of the core")
    parser.add_argument("--model", choices=MODELS, default="lif",
                        help="neuron model of the networks' layers (default lif)")
    args = parser.parse_args()
    if args.learning:
        for device in args.device or DEVICES:
            for row in learning_rows(device, args.lanes):
                print(json.dumps(row), flush=True)
        return
    for name, layers, n_inputs in networks(args.image):
        layers = with_model(layers, args.model)
        for device in args.device or DEVICES:
            row = {"network": name, "device": device, "model": args.model}
            try:
                config = map_network(layers, n_inputs, device=device)
            except FitError as exc:
                print(json.dumps({**row, "error": str(exc)}), flush=True)
                continue
            start = time.perf_counter()
            stats = synth_stats(Image(n_inputs, list(layers), config), device)
            row.update({key: value for key, value in stats.items() if key != "cells"})
            row["cores"] = [{"layer": c.layer, "neurons": c.neurons, "lanes": c.lanes}
                            for c in config.cores]
            row["synth_seconds"] = round(time.perf_counter() - start, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

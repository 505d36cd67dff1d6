"""snnTorch's tutorial-6 network (12C5-MP2-64C5-MP2-FC10) on the digits upsampled to 28 x 28.

Trains it briefly (seeded, one thread), compiles it for a board (default the iCEBreaker) at
each weight width and prints one JSON object per width: agreement with snnTorch's classes, both
accuracies, the mapping (cores, lanes, which memories the mapper put in SPRAM, the resource
estimate) and per layer the input events and synaptic operations per sample and step that the
golden model counts, with the integration cycles per step of its cores by ``hdl.conv.
conv_cycles`` (block-RAM accumulators: events x K^2 x ceil(C / lanes); SPRAM accumulators:
2 x C cycles per tap that reaches the map, 1 per tap that does not), and the time per sample
of the slowest layer at the board's fabric clock (the bound if layers overlapped fully on
consecutive steps).

``--rtl N`` also runs the first N test samples in the RTL (Verilator through cocotb) and adds,
per width, the measured cycles per step (first input event to the last output eos) and the
cycles in which some core integrated, beside the model's slowest layer and its sum over the
layers, the measured time per sample at the fabric clock (`rtl` in the JSON), and whether the
RTL's spikes equal the golden model's (`bit_exact`).

Run: .venv/bin/python bench/conv_tutorial6.py [--epochs 3] [--bits 8 4] [--board icebreaker]
     [--rtl 2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from spikeforge import api
from spikeforge import digits as D
from spikeforge.boards.build import integration_cycles
from spikeforge.boards.catalog import find_board
from spikeforge.compiler.mapper import memory_placement
from spikeforge.sim import golden


def layer_rows(image, result, spikes) -> list[dict]:
    """Per layer: events and SOPs per step, and its slowest core's integration cycles per step
    (``boards.build.integration_cycles``)."""
    steps = spikes.shape[0] * spikes.shape[1]
    placement = memory_placement(image.layers, image.config)
    cycles = integration_cycles(image, spikes, result)
    rows = []
    for index, layer in enumerate(image.layers):
        cores = [k for k, c in enumerate(image.config.cores) if c.layer == index]
        rows.append({
            "layer": layer.name,
            "events_per_step": round(float(result.events_in[:, index].sum() / steps), 1),
            "sops_per_step": round(float(result.sops[:, index].sum() / steps), 1),
            "integration_cycles_per_step": round(max(cycles[k] for k in cores), 1),
            "cores": [{"channels_or_neurons": [image.config.cores[k].lo,
                                               image.config.cores[k].hi],
                       "lanes": image.config.cores[k].lanes,
                       "weights_spram": placement[k].weights_spram,
                       "acc_spram": placement[k].acc_spram} for k in cores]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--board", default="icebreaker")
    parser.add_argument("--rtl", type=int, default=0, metavar="N",
                        help="also run the first N test samples in the RTL")
    args = parser.parse_args()
    torch.set_num_threads(1)
    board = find_board(args.board)
    data = D.load_digits_28()
    model = D.build_conv_model()
    D.train(model, data, epochs=args.epochs, batch=32, lr=1e-2)
    theirs = D.predict(D.forward(model, data.test_spikes))
    steps = data.test_spikes.shape[1]
    for bits in args.bits:
        image = api.compile(model, weight_bits=bits, calibration=data.train_spikes[:100],
                            board=board.name)
        result = golden.run(image, data.test_spikes, record=True)
        ours = D.predict(result.spikes)
        layers = layer_rows(image, result, data.test_spikes)
        slowest = max(row["integration_cycles_per_step"] for row in layers)
        out = {
            "bench": "conv_tutorial6", "board": board.name, "weight_bits": bits,
            "epochs": args.epochs, "samples": int(len(ours)), "steps": steps,
            "agreement": round(float(np.mean(ours == theirs)), 4),
            "snntorch_accuracy": round(float(np.mean(theirs == data.test_labels)), 4),
            "golden_accuracy": round(float(np.mean(ours == data.test_labels)), 4),
            "saturations": int(result.saturations.sum()),
            "resources": image.meta.get("resources"), "fabric_hz": board.fabric_hz,
            "ms_per_sample_slowest_layer": round(1e3 * slowest * steps / board.fabric_hz, 2),
            "layers": layers}
        if args.rtl:
            from spikeforge.hdl.rtl import run_rtl

            x = data.test_spikes[:args.rtl]
            got = run_rtl(image, x)
            want = golden.run(image, x, record=True)
            model_rows = layer_rows(image, want, x)
            out["rtl"] = {
                "samples": args.rtl, "bit_exact": bool(np.array_equal(got.spikes, want.spikes)),
                "cycles_per_step": round(float(got.cycles.mean()) / steps, 1),
                "integrate_cycles_per_step": round(float(got.integrate_cycles.mean()) / steps,
                                                   1),
                "model_slowest_layer_cycles_per_step": max(
                    row["integration_cycles_per_step"] for row in model_rows),
                "model_sum_cycles_per_step": round(sum(
                    row["integration_cycles_per_step"] for row in model_rows), 1),
                "ms_per_sample": round(1e3 * float(got.cycles.mean()) / board.fabric_hz, 2)}
        print(json.dumps(out))


if __name__ == "__main__":
    main()

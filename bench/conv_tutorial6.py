"""snnTorch's tutorial-6 network (12C5-MP2-64C5-MP2-FC10) on the digits upsampled to 28 x 28.

Trains it briefly (seeded, one thread), compiles it at each weight width and prints one JSON
object per width: agreement with snnTorch's classes, both accuracies, and per layer the input
events and synaptic operations per sample and step that the golden model counts, with the cycles
an event-driven convolution core would spend on them, events x K^2 x ceil(C_out / lanes)
(docs/neuron.md), for the given lane count. The gateware has no convolution core yet, so the
cycles are the formula's, not a measurement.

Run: .venv/bin/python bench/conv_tutorial6.py [--epochs 3] [--lanes 8] [--bits 8 4]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from spikeforge import api
from spikeforge import digits as D
from spikeforge.sim import golden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lanes", type=int, default=8)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = D.load_digits_28()
    model = D.build_conv_model()
    D.train(model, data, epochs=args.epochs, batch=32, lr=1e-2)
    theirs = D.predict(D.forward(model, data.test_spikes))
    steps = data.test_spikes.shape[1]
    for bits in args.bits:
        image = api.compile(model, weight_bits=bits, calibration=data.train_spikes[:100])
        result = golden.run(image, data.test_spikes)
        ours = D.predict(result.spikes)
        layers = []
        for index, layer in enumerate(image.layers):
            events = float(result.events_in[:, index].mean() / steps)
            row = {"layer": layer.name, "events_per_step": round(events, 1),
                   "sops_per_step": round(float(result.sops[:, index].mean() / steps), 1)}
            if layer.conv is not None:
                k, c_out = layer.conv.kernel, layer.conv.out_channels
                row["conv_cycles_per_step"] = round(
                    events * k * k * math.ceil(c_out / args.lanes), 1)
            layers.append(row)
        print(json.dumps({
            "bench": "conv_tutorial6", "weight_bits": bits, "epochs": args.epochs,
            "samples": int(len(ours)), "steps": steps, "lanes": args.lanes,
            "agreement": round(float(np.mean(ours == theirs)), 4),
            "snntorch_accuracy": round(float(np.mean(theirs == data.test_labels)), 4),
            "golden_accuracy": round(float(np.mean(ours == data.test_labels)), 4),
            "saturations": int(result.saturations.sum()), "layers": layers}))


if __name__ == "__main__":
    main()

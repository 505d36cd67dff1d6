"""Time the golden model against snnTorch's forward pass on the same quantized network and batch.

Prints one JSON object: seconds per batch for each (best of --repeats), their ratio, and whether
the two agree on the batch's predicted classes. Run: .venv/bin/python bench/golden_vs_snntorch.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import spikeforge
from spikeforge import digits as D
from spikeforge.compiler.scales import neuron_scales
from spikeforge.sim import golden


def dequantized_model(image, hidden: int):
    """The snnTorch network carrying the image's quantized weights (W_q * s, s per neuron)."""
    model = D.build_model(hidden=hidden)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for index, (linear, layer) in enumerate(zip(linears, image.layers, strict=True)):
            s = neuron_scales(image, index)
            linear.weight.copy_(torch.as_tensor(layer.weights * s[:, None]))
            linear.bias.copy_(torch.as_tensor(layer.bias * s))
    return model


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    data = D.load_digits(steps=args.steps)
    spikes = np.concatenate([data.train_spikes, data.test_spikes])[:args.batch]
    model = D.build_model(hidden=args.hidden)
    D.train(model, data, epochs=5)
    image = spikeforge.compile(model, weight_bits=8, calibration=spikes)
    reference = dequantized_model(image, args.hidden)

    golden_s = best_time(lambda: golden.run(image, spikes), args.repeats)
    snn_s = best_time(lambda: D.forward(reference, spikes), args.repeats)
    agree = float((D.predict(golden.run(image, spikes).spikes)
                   == D.predict(D.forward(reference, spikes))).mean())
    print(json.dumps({
        "bench": "golden_vs_snntorch", "network": f"64-{args.hidden}-10",
        "batch": int(spikes.shape[0]), "steps": args.steps,
        "golden_s": round(golden_s, 5), "snntorch_s": round(snn_s, 5),
        "speedup": round(snn_s / golden_s, 3), "prediction_agreement": agree,
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()

"""On-chip learning on scikit-learn's digits, in the golden model (and its cost in cycles).

Three-factor case: the 64-128-10 demo network, its hidden layer trained off chip, its output
layer reset to zero weights and trained only by the on-chip three-factor rule with
m_i[t] = K * (target_i - s_i[t]) (s from an inference pass of the sample on the current weights).
STDP case: one neuron, fed a fixed spike pattern hidden in Poisson noise, becomes selective to it.
With `--rtl-samples N` (default 3, 0 skips it) the three-factor case also runs its first N
training samples through the generated RTL (Verilator, `run_rtl`) from the same start, and
reports the RTL's learning cycles (`learn_cycles`) beside the golden model's, and whether every
learned weight agrees.
Prints one JSON object per case. Run: .venv/bin/python bench/onchip_learning.py
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np

from spikeforge import digits as D
from spikeforge.api import compile
from spikeforge.image import CoreConfig, HwConfig, Image, LayerParams
from spikeforge.sim import golden


def rtl_check(image: Image, plain: Image, data, gain: int, samples: int) -> dict:
    """The first `samples` training samples through the RTL and the golden model."""
    from spikeforge.hdl.rtl import run_rtl

    x = data.train_spikes[:samples]
    s = golden.run(plain, x).spikes.astype(np.int64)  # [B, T, 10], on the starting weights
    target = np.zeros_like(s)
    target[np.arange(samples), :, data.train_labels[:samples]] = 1
    mods = np.clip(gain * (target - s), -128, 127).astype(np.int8)
    want = golden.run(image, x, modulators=mods)
    got = run_rtl(image, x, modulators=mods, idle=0.0, stall=0.0)
    steps = samples * x.shape[1]
    return {"samples": samples, "steps": steps,
            "weights_equal": all(np.array_equal(a, b) for a, b in zip(got.weights, want.weights)),
            "spikes_equal": bool(np.array_equal(got.spikes, want.spikes)),
            "update_cycles": got.learning[1]["update_cycles"],
            "golden_update_cycles": want.learning[1]["update_cycles"],
            "cycles_per_step": float(got.cycles.sum() / steps),
            "integrate_cycles_per_step": float(got.integrate_cycles.sum() / steps)}


def three_factor(epochs: int, gain: int, mod_shift: int, seed: int, rtl_samples: int = 0) -> dict:
    data = D.load_digits(seed=seed)
    model = D.build_model(seed=seed)
    D.train(model, data, epochs=40, seed=seed)
    image = compile(model, weight_bits=8, board="icebreaker", calibration=data.train_spikes)
    out = image.layers[-1]
    zero = replace(out, weights=np.zeros_like(out.weights), bias=np.zeros_like(out.bias))
    image = Image(image.n_inputs, [image.layers[0], zero], image.config, dict(image.meta))
    image = image.with_learning(layer=-1, rule="three_factor", mod_shift=mod_shift,
                                stochastic=True, seed=seed + 1)
    plain = Image(image.n_inputs, image.layers, image.config)  # the same net, not learning
    rtl = rtl_check(image, plain, data, gain, rtl_samples) if rtl_samples else None
    rng = np.random.default_rng(seed)
    updates = cycles = 0
    for _ in range(epochs):
        for index in rng.permutation(len(data.train_labels)):
            x = data.train_spikes[index:index + 1]
            s = golden.run(plain, x).spikes[0].astype(np.int64)  # [T, 10]
            target = np.zeros(10, np.int64)
            target[data.train_labels[index]] = 1
            mods = np.clip(gain * (target[None] - s), -128, 127).astype(np.int8)[None]
            result = golden.run(image, x, modulators=mods)
            image = result.image
            plain = Image(image.n_inputs, image.layers, image.config)
            updates += result.learning[1]["updates"]
            cycles += result.learning[1]["update_cycles"]
    test = golden.run(plain, data.test_spikes)
    accuracy = float((D.predict(test.spikes) == data.test_labels).mean())
    steps = epochs * len(data.train_labels) * data.train_spikes.shape[1]
    return {"case": "three_factor_digits_readout", "accuracy": accuracy, "epochs": epochs,
            "train_samples": int(len(data.train_labels)), "updates": int(updates),
            "update_cycles": int(cycles), "update_cycles_per_step": cycles / steps,
            "synapse_updates_per_cycle": updates / max(cycles, 1),
            **({"rtl": rtl} if rtl is not None else {})}


def stdp_selectivity(seed: int) -> dict:
    """20 inputs firing in a fixed 5-step order, hidden in 3% Poisson noise, are learnt: after
    100 presentations the neuron answers the pattern and stays silent on noise alone."""
    rng = np.random.default_rng(seed)
    n_in, steps, samples, window = 100, 40, 100, slice(15, 20)
    members = rng.choice(n_in, 20, replace=False)
    pattern = np.zeros((5, n_in), np.uint8)
    pattern[np.arange(20) % 5, members] = 1

    def trains(count):
        noise = (rng.random((count, steps, n_in)) < 0.03).astype(np.uint8)
        with_pattern = noise.copy()
        with_pattern[:, window] |= pattern
        return noise, with_pattern

    layer = LayerParams("out", np.full((1, n_in), 5), bias=[0], threshold=[160], weight_bits=8,
                        v_bits=16, acc_bits=16, decay_mode="shift", decay_shift=[2])
    plain = Image(n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, 1, 1),)))
    image = plain.with_learning(layer=0, rule="stdp", ltp_shift=4, ltd_shift=3, trace_inc=64)
    _, train = trains(samples)
    result = golden.run(image, train)
    learned = Image(n_in, result.image.layers, plain.config)
    noise, test = trains(40)

    def response(img):  # output spikes per presentation, in the pattern window + 2 steps
        spikes = golden.run(img, test).spikes[:, 15:22].sum() / len(test)
        alone = golden.run(img, noise).spikes[:, 15:22].sum() / len(noise)
        return float(spikes), float(alone)

    before, after = response(plain), response(learned)
    return {"case": "stdp_pattern_selectivity", "presentations": samples,
            "response_to_pattern_before": before[0], "response_to_noise_before": before[1],
            "response_to_pattern_after": after[0], "response_to_noise_after": after[1],
            "updates": result.learning[0]["updates"],
            "update_cycles": result.learning[0]["update_cycles"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--gain", type=int, default=4)
    parser.add_argument("--mod-shift", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtl-samples", type=int, default=3,
                        help="training samples also run in the RTL (0: none)")
    args = parser.parse_args()
    print(json.dumps(three_factor(args.epochs, args.gain, args.mod_shift, args.seed,
                                  args.rtl_samples)))
    print(json.dumps(stdp_selectivity(args.seed)))


if __name__ == "__main__":
    main()

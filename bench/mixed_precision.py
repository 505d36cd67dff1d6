"""Hessian-aware mixed precision on digits: bits per layer, size and accuracy per budget.

For each network (the demo's 64-128-10 and a deeper 64-256-128-10), trained briefly with
snnTorch, and each budget (percent of the uniform 8-bit weight memory), prints one JSON line:
the bits per layer weight_bits="auto" chose, the size, float (snnTorch) and golden accuracy on
the held-out split, and the uniform width at the nearest equal or larger size with its golden
accuracy. Then, for uniform widths b (--equal-bits), mixed at exactly the b-bit size against
uniform b. A last line per network says whether the figures hold: at 42 % golden within 1 point
of float, at 30 % within 3, mixed never below uniform at equal size (and, reported beside it, at
the nearest equal or larger size).

Run: .venv/bin/python bench/mixed_precision.py   (about a minute per network on one core)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import spikeforge
from spikeforge import digits as D
from spikeforge.sim import golden

NETWORKS = {"digits": (128,), "digits-deep": (256, 128)}
DEVICE = "LFE5U-85F"  # the largest device: every budget maps, the budget alone decides


def build(hidden: tuple[int, ...], seed: int = 0):
    import snntorch as snn
    import torch
    from torch import nn

    torch.manual_seed(seed)
    mods, width = [], 64
    for n in hidden:
        mods += [nn.Linear(width, n), snn.Leaky(beta=D.BETA, init_hidden=True)]
        width = n
    mods += [nn.Linear(width, 10), snn.Leaky(beta=D.BETA, init_hidden=True, output=True)]
    return nn.Sequential(*mods)


def golden_accuracy(image, data) -> float:
    return float((D.predict(golden.run(image, data.test_spikes).spikes)
                  == data.test_labels).mean())


def weights_of(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model if isinstance(m, torch.nn.Linear))


def run(name: str, args, data) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = build(NETWORKS[name], seed=args.seed)
    D.train(model, data, epochs=args.epochs, seed=args.seed)
    train_s = time.perf_counter() - start
    float_acc = float((D.predict(D.forward(model, data.test_spikes)) == data.test_labels).mean())
    n_weights = weights_of(model)
    calib = data.train_spikes[:args.calibration]
    labels = data.train_labels[:args.calibration]
    uniform_cache: dict[int, float] = {}

    def uniform(bits: int) -> float:
        if bits not in uniform_cache:
            image = spikeforge.compile(model, weight_bits=bits, device=DEVICE,
                                       calibration=calib)
            uniform_cache[bits] = golden_accuracy(image, data)
        return uniform_cache[bits]

    rows = []
    for percent in args.budgets:
        start = time.perf_counter()
        image = spikeforge.compile(model, weight_bits="auto", device=DEVICE, calibration=calib,
                                   labels=labels, budget=percent / 100)
        plan = image.meta["mixed_precision"]
        size = plan["size_bits"]
        gold = golden_accuracy(image, data)
        u_bits = min(8, math.ceil(size / n_weights))
        row = {
            "network": name, "budget_percent": percent,
            "bits": [layer["bits"] for layer in plan["layers"]],
            "traces": [round(layer["trace"], 4) for layer in plan["layers"]],
            "size_bits": size, "size_percent": round(100 * size / (8 * n_weights), 2),
            "float_accuracy": float_acc, "golden_accuracy": gold,
            "drop_points": round(100 * (float_acc - gold), 2),
            "uniform_bits": u_bits, "uniform_size_bits": u_bits * n_weights,
            "uniform_golden_accuracy": uniform(u_bits),
            "compile_s": round(time.perf_counter() - start, 2), "train_s": round(train_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    # Equal size: mixed at exactly the uniform b-bit size, for each b of --equal-bits.
    equal = []
    for bits in args.equal_bits:
        image = spikeforge.compile(model, weight_bits="auto", device=DEVICE, calibration=calib,
                                   labels=labels, budget=bits * n_weights)
        plan = image.meta["mixed_precision"]
        row = {"network": name, "equal_size_to_uniform_bits": bits,
               "bits": [layer["bits"] for layer in plan["layers"]],
               "size_bits": plan["size_bits"], "uniform_size_bits": bits * n_weights,
               "golden_accuracy": golden_accuracy(image, data),
               "uniform_golden_accuracy": uniform(bits)}
        equal.append(row)
        print(json.dumps(row), flush=True)
    by = {row["budget_percent"]: row for row in rows}
    verdict = {"network": name, "float_accuracy": float_acc,
               "mixed_never_below_uniform_at_equal_size": all(
                   r["golden_accuracy"] >= r["uniform_golden_accuracy"] for r in equal),
               "mixed_never_below_uniform_at_equal_or_larger_size": all(
                   r["golden_accuracy"] >= r["uniform_golden_accuracy"] for r in rows)}
    if 42 in by:
        verdict["at_42_within_1_point"] = by[42]["drop_points"] <= 1.0
    if 30 in by:
        verdict["at_30_within_3_points"] = by[30]["drop_points"] <= 3.0
    print(json.dumps(verdict), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS),
                        help=f"comma-separated, of {', '.join(NETWORKS)}")
    parser.add_argument("--budgets", default="100,50,42,30",
                        help="percent of the 8-bit weight memory, comma-separated")
    parser.add_argument("--equal-bits", default="2,3,4",
                        help="uniform widths to compare with mixed at exactly their size")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--calibration", type=int, default=512,
                        help="training samples used as calibration data (with labels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.equal_bits = [int(b) for b in args.equal_bits.split(",") if b]
    data = D.load_digits(seed=args.seed)
    for name in args.networks.split(","):
        if name not in NETWORKS:
            parser.error(f"network must be one of {', '.join(NETWORKS)}, not {name!r}")
        run(name, args, data)


if __name__ == "__main__":
    main()

"""Hessian-aware mixed precision on digits: bits per layer, size and accuracy per budget.

For each network (the demo's 64-128-10 and a deeper 64-256-128-10), trained briefly with
snnTorch, and each budget (percent of the uniform 8-bit weight memory), prints one JSON line:
the bits per layer weight_bits="auto" chose (and the candidates it compared on the labelled
calibration data), the size, float (snnTorch) and golden accuracy on the held-out split, and the
uniform width at the nearest equal or larger size with its golden accuracy. With --qat-epochs
(default 5), the same allocation and the same uniform width are also fine-tuned with
spikeforge.qat on the training split and compiled again (qat_* keys: the tuned model's float
and golden accuracy). Then, for uniform widths b (--equal-bits), mixed at exactly the b-bit size
against uniform b, with and without QAT. A last line per network says whether the figures hold:
at 42 % golden within 1 point of float, at 30 % within 3, mixed never below uniform at equal
size (and, beside it, at the nearest equal or larger size), each with and without QAT.

Run: .venv/bin/python bench/mixed_precision.py   (about 5 minutes per network on one core)
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


def float_accuracy(model, data) -> float:
    return float((D.predict(D.forward(model, data.test_spikes)) == data.test_labels).mean())


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
    float_acc = float_accuracy(model, data)
    n_weights = weights_of(model)
    calib, labels = args.calib
    cache: dict = {}

    def tuned(bits) -> tuple[float, float]:
        """(float, golden) held-out accuracy after QAT at `bits` (an int or bits per layer)."""
        key = ("qat", str(bits))
        if key not in cache:
            widths = bits if isinstance(bits, int) else dict(enumerate(bits))
            qmodel = spikeforge.qat(model, data.train_spikes, data.train_labels,
                                    weight_bits=widths, epochs=args.qat_epochs, lr=args.qat_lr,
                                    seed=args.seed)
            image = spikeforge.compile(qmodel, weight_bits=qmodel.spikeforge_qat["weight_bits"],
                                       device=DEVICE, calibration=calib)
            cache[key] = (float_accuracy(qmodel, data), golden_accuracy(image, data))
        return cache[key]

    def uniform(bits: int) -> float:
        if bits not in cache:
            image = spikeforge.compile(model, weight_bits=bits, device=DEVICE,
                                       calibration=calib)
            cache[bits] = golden_accuracy(image, data)
        return cache[bits]

    def mixed(budget) -> tuple[dict, float]:
        image = spikeforge.compile(model, weight_bits="auto", device=DEVICE, calibration=calib,
                                   labels=labels, budget=budget)
        return image.meta["mixed_precision"], golden_accuracy(image, data)

    def with_qat(row: dict, bits, u_bits: int) -> None:
        if args.qat_epochs:
            qf, qg = tuned(bits)
            row.update({"qat_float_accuracy": qf, "qat_golden_accuracy": qg,
                        "qat_drop_points": round(100 * (float_acc - qg), 2),
                        "uniform_qat_golden_accuracy": tuned(u_bits)[1]})

    rows = []
    for percent in args.budgets:
        start = time.perf_counter()
        plan, gold = mixed(percent / 100)
        bits = [layer["bits"] for layer in plan["layers"]]
        size = plan["size_bits"]
        u_bits = min(8, math.ceil(size / n_weights))
        row = {
            "network": name, "budget_percent": percent, "bits": bits,
            "traces": [round(layer["trace"], 4) for layer in plan["layers"]],
            "size_bits": size, "size_percent": round(100 * size / (8 * n_weights), 2),
            "float_accuracy": float_acc, "golden_accuracy": gold,
            "drop_points": round(100 * (float_acc - gold), 2),
            "uniform_bits": u_bits, "uniform_size_bits": u_bits * n_weights,
            "uniform_golden_accuracy": uniform(u_bits),
            "candidates": [[c["bits"], c["calibration_accuracy"]] for c in plan["candidates"]],
        }
        with_qat(row, bits, u_bits)
        row.update({"s": round(time.perf_counter() - start, 1), "train_s": round(train_s, 1)})
        rows.append(row)
        print(json.dumps(row), flush=True)
    # Equal size: mixed at exactly the uniform b-bit size, for each b of --equal-bits.
    equal = []
    for u_bits in args.equal_bits:
        plan, gold = mixed(u_bits * n_weights)
        bits = [layer["bits"] for layer in plan["layers"]]
        row = {"network": name, "equal_size_to_uniform_bits": u_bits, "bits": bits,
               "size_bits": plan["size_bits"], "uniform_size_bits": u_bits * n_weights,
               "golden_accuracy": gold, "uniform_golden_accuracy": uniform(u_bits)}
        with_qat(row, bits, u_bits)
        equal.append(row)
        print(json.dumps(row), flush=True)
    by = {row["budget_percent"]: row for row in rows}
    at_equal = equal + [r for r in rows if r["size_bits"] == r["uniform_size_bits"]]
    verdict = {"network": name, "float_accuracy": float_acc}
    for tag, key, ukey in (("", "golden_accuracy", "uniform_golden_accuracy"),
                           ("qat_", "qat_golden_accuracy", "uniform_qat_golden_accuracy")):
        if tag and not args.qat_epochs:
            continue
        verdict[f"{tag}mixed_never_below_uniform_at_equal_size"] = all(
            r[key] >= r[ukey] for r in at_equal)
        verdict[f"{tag}mixed_never_below_uniform_at_equal_or_larger_size"] = all(
            r[key] >= r[ukey] for r in rows + equal)
        drop = f"{tag}drop_points" if tag else "drop_points"
        if 42 in by:
            verdict[f"{tag}at_42_within_1_point"] = by[42][drop] <= 1.0
        if 30 in by:
            verdict[f"{tag}at_30_within_3_points"] = by[30][drop] <= 3.0
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
    parser.add_argument("--validation", type=int, default=0,
                        help="hold this many training samples back from training and QAT and "
                             "calibrate on them instead (0: calibrate on training samples)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--qat-epochs", type=int, default=5,
                        help="epochs of spikeforge.qat on the training split (0: no QAT rows)")
    parser.add_argument("--qat-lr", type=float, default=1e-3)
    args = parser.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",")]
    args.equal_bits = [int(b) for b in args.equal_bits.split(",") if b]
    data = D.load_digits(seed=args.seed)
    if args.validation:  # held back from training (and QAT): the calibration set
        n = args.validation
        args.calib = data.train_spikes[-n:], data.train_labels[-n:]
        data = D.DigitsData(data.train_spikes[:-n], data.train_labels[:-n], data.test_spikes,
                            data.test_labels)
    else:
        args.calib = (data.train_spikes[:args.calibration],
                      data.train_labels[:args.calibration])
    for name in args.networks.split(","):
        if name not in NETWORKS:
            parser.error(f"network must be one of {', '.join(NETWORKS)}, not {name!r}")
        run(name, args, data)


if __name__ == "__main__":
    main()

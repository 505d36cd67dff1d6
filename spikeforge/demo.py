"""`spikeforge demo`: train on digits, compile at 8 and 4 bits, check the golden model."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from . import digits as D
from .image import load_image


def evaluate(image, model, data: D.DigitsData) -> dict:
    """Float (snnTorch) vs golden accuracy and per-sample agreement on the test split."""
    from .sim.golden import run

    float_pred = D.predict(D.forward(model, data.test_spikes))
    gold = run(image, data.test_spikes)
    gold_pred = D.predict(gold.spikes)
    return {
        "float_accuracy": float((float_pred == data.test_labels).mean()),
        "golden_accuracy": float((gold_pred == data.test_labels).mean()),
        "agreement": float((gold_pred == float_pred).mean()),
        "saturations": int(gold.saturations.sum()),
        "sops_per_sample": float(gold.sops.sum(axis=1).mean()),
    }


def train_digits(epochs: int = 40, seed: int = 0, progress: bool = True):
    """The demo's data and trained model (seeded: the same network every time)."""
    from rich.progress import Progress

    data = D.load_digits(seed=seed)
    model = D.build_model(seed=seed)
    if progress:
        with Progress(transient=True) as bar:
            task = bar.add_task("training on digits", total=epochs)
            D.train(model, data, epochs=epochs, seed=seed,
                    progress=lambda done, total: bar.update(task, completed=done))
    else:
        D.train(model, data, epochs=epochs, seed=seed)
    return data, model


def compile_digits(model, data: D.DigitsData, bits: int, board: str):
    """The demo's image of its trained `model`: `bits`-bit weights for `board`, calibrated on
    the training spikes (`run_demo`, and bench/fmax.py's demo8 / demo4)."""
    from .api import compile

    return compile(model, weight_bits=bits, board=board, calibration=data.train_spikes)


def check_rtl(image, data: D.DigitsData, samples: int) -> dict:
    """The generated gateware (Verilator) against the golden model on the first test samples."""
    from .api import simulate
    from .sim.golden import run

    spikes = data.test_spikes[:samples]
    rtl = simulate(image, spikes, engine="rtl")
    gold = run(image, spikes)
    same = bool(np.array_equal(rtl.spikes, gold.spikes)
                and all(np.array_equal(a, b) for a, b in zip(rtl.final_membranes,
                                                              gold.final_membranes))
                and np.array_equal(rtl.sops, gold.sops))
    if not same:
        raise RuntimeError("the RTL differs from the golden model on the digits network")
    return {"samples": samples, "bit_exact": same, "simulator": rtl.simulator,
            "sop_per_cycle": float(rtl.sops.sum() / max(rtl.integrate_cycles.sum(), 1))}


def build_bitstream(image, out_dir: Path, board: str, console) -> dict:
    from rich.table import Table

    from .api import build, flash

    with console.status(f"building the {board} bitstream (yosys, nextpnr)"):
        report = build(image, board, out_dir / board)
    table = Table(title=f"{board}: {report.device} bitstream")
    for col in ("resource", "used", "available", "use"):
        table.add_column(col)
    for name, row in report.utilization.items():
        used, total = row["used"], row["available"]
        table.add_row(name, str(used), str(total), f"{100 * used / total:.1f}%" if total else "-")
    console.print(table)
    console.print(f"Fmax {report.fmax_mhz:.1f} MHz at a {report.clock_mhz:g} MHz clock; "
                  f"{report.cycles_per_step:.0f} cycles per timestep = "
                  f"{report.steps_per_s:,.0f} timesteps/s")
    command = flash(report.bitstream, board, dry_run=True).command
    console.print("flash it with: [bold]spikeforge flash "
                  f"{report.bitstream} --board {board}[/] (runs: {' '.join(command)})")
    return {**report.to_dict(), "flash_command": command}


def run_demo(out_dir: Path, *, epochs: int = 40, json_out: bool = False,
             rtl_samples: int = 4, bitstream: bool = True, board: str = "icebreaker") -> dict:
    import torch
    from rich.console import Console
    from rich.table import Table

    console = Console(quiet=json_out, highlight=False,
                      width=None if sys.stdout.isatty() else 160)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, model = train_digits(epochs=epochs, progress=not json_out)
    torch.save(model.state_dict(), out_dir / "digits-state.pt")
    report: dict = {"epochs": epochs, "test_samples": int(len(data.test_labels)), "images": {}}
    table = Table(title="digits: snnTorch float vs spikeforge golden model (test split)")
    for col in ("weights", "float acc", "golden acc", "agreement", "saturations",
                "LUTs", "block RAM", "image"):
        table.add_column(col)
    for bits in (8, 4):
        image = compile_digits(model, data, bits, board)
        path = out_dir / f"digits-{bits}bit.sfi"
        image.save(path)
        figures = evaluate(image, model, data)
        figures["resources"] = image.meta.get("resources", {})
        report["images"][f"{bits}bit"] = {"path": str(path), **figures}
        res = figures["resources"]
        table.add_row(f"{bits} bit", f"{figures['float_accuracy']:.1%}",
                      f"{figures['golden_accuracy']:.1%}", f"{figures['agreement']:.1%}",
                      str(figures["saturations"]), _use(res, "luts"), _use(res, "bram"),
                      str(path))
    console.print(table)
    image8 = load_image(out_dir / "digits-8bit.sfi")
    if rtl_samples:
        with console.status(f"checking the gateware against the golden model "
                            f"({rtl_samples} samples, Verilator)"):
            report["rtl"] = check_rtl(image8, data, rtl_samples)
        console.print(f"RTL (Verilator) equals the golden model on {rtl_samples} test samples: "
                      f"every spike, membrane and counter; "
                      f"{report['rtl']['sop_per_cycle']:.2f} synaptic ops per cycle")
    if bitstream:
        report["bitstream"] = build_bitstream(image8, out_dir, board, console)
    report["metrics"] = demo_metrics(image8, data, out_dir, console, rtl_samples=rtl_samples,
                                     build=out_dir / board if bitstream else None)
    report["figures"] = demo_figures(image8, data, out_dir, console)
    return report


def demo_metrics(image, data: D.DigitsData, out_dir: Path, console, *, rtl_samples: int,
                 build: Path | None) -> dict:
    """NeuroBench's metrics on the test split (golden), and with the hardware's cycles on the
    first test samples in RTL (at the bitstream's Fmax when one was built)."""
    import json

    from .measure import metrics

    figures = {"golden": metrics(image, data.test_spikes, data.test_labels)}
    if rtl_samples:
        figures["rtl"] = metrics(image, data.test_spikes[:rtl_samples],
                                 data.test_labels[:rtl_samples], engine="rtl", build=build)
    (out_dir / "metrics.json").write_text(json.dumps(figures, indent=1, allow_nan=False))
    gold = figures["golden"]
    console.print(f"NeuroBench metrics (8 bit, golden): footprint {gold['footprint']} bytes, "
                  f"activation sparsity {gold['activation_sparsity']:.3f}, "
                  f"{gold['synaptic_operations']['Effective_ACs']:.0f} Effective_ACs per sample, "
                  f"accuracy {gold['classification_accuracy']:.1%}; {out_dir / 'metrics.json'}")
    return figures


def demo_figures(image, data: D.DigitsData, out_dir: Path, console) -> dict:
    """Raster, membrane, activity and resources figures of the 8-bit network (PNG), from the
    test split, which is written beside them (digits-test.npz: `spikes`, `labels`) for
    `spikeforge metrics` and `spikeforge plot`."""
    from .plot import plot

    spikes = data.test_spikes
    np.savez_compressed(out_dir / "digits-test.npz", spikes=spikes, labels=data.test_labels)
    paths = {}
    try:
        for kind in ("raster", "membrane", "activity", "resources"):
            paths[kind] = str(out_dir / f"{kind}.png")
            plot(kind, image, spikes, paths[kind])
    except ImportError as exc:
        console.print(f"no figures: {exc}")
        return {}
    console.print(f"figures: {', '.join(paths.values())}")
    return paths


def _use(resources: dict, key: str) -> str:
    if key not in resources:
        return "-"
    need, cap = resources[key]
    return f"{need}/{cap}"


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    run_demo(Path("build/demo"))

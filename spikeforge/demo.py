"""`spikeforge demo`: train on digits, compile at 8 and 4 bits, check the golden model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import digits as D


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


def run_demo(out_dir: Path, *, epochs: int = 40, json_out: bool = False) -> dict:
    import torch
    from rich.console import Console
    from rich.table import Table

    from .api import compile

    console = Console(quiet=json_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, model = train_digits(epochs=epochs, progress=not json_out)
    torch.save(model.state_dict(), out_dir / "digits-state.pt")
    report: dict = {"epochs": epochs, "test_samples": int(len(data.test_labels)), "images": {}}
    table = Table(title="digits: snnTorch float vs spikeforge golden model (test split)")
    for col in ("weights", "float acc", "golden acc", "agreement", "saturations",
                "LUTs", "block RAM", "image"):
        table.add_column(col)
    for bits in (8, 4):
        image = compile(model, weight_bits=bits, board="icebreaker",
                        calibration=data.train_spikes)
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
    return report


def _use(resources: dict, key: str) -> str:
    if key not in resources:
        return "-"
    need, cap = resources[key]
    return f"{need}/{cap}"


if __name__ == "__main__":
    np.set_printoptions(linewidth=120)
    run_demo(Path("build/demo"))

"""The public Python API: compile a model into an image, load it, simulate it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .compiler.image import Image, load_image
from .sim.encode import given

ENGINES = ("golden", "rtl")


def compile(model_or_path, weight_bits: int | dict = 8, board: str | None = None,  # noqa: A001
            device: str | None = None, dt: float | None = None,
            calibration: np.ndarray | None = None, *, allow_pickle: bool = False,
            lanes: int | None = None, decay: str = "auto") -> Image:
    """Quantize and map a trained network; returns the image (nothing is written).

    `model_or_path`: a torch.nn.Module, a nir.NIRGraph, or a path to a .nir file (or to a
    pickled module, with `allow_pickle=True`). `calibration`: input spikes
    [batch, time, n_inputs] that set the membrane width so nothing saturates on them.
    """
    from .compiler.frontend import load_network
    from .compiler.mapper import estimate_resources, map_network
    from .compiler.quantize import quantize

    if isinstance(model_or_path, (str, os.PathLike)):
        model_or_path = Path(model_or_path)
    network = load_network(model_or_path, dt=dt, allow_pickle=allow_pickle)
    if calibration is not None:
        calibration = given(calibration, network.n_inputs)
    layers, report = quantize(network, weight_bits=weight_bits, calibration=calibration,
                              decay=decay)
    config = map_network(layers, network.n_inputs, device=device, board=board, lanes=lanes)
    resources = estimate_resources(layers, config)
    meta = {"source": network.source, "quantization": report.to_dict(),
            "resources": {name: list(pair) for name, pair in resources.items()}}
    image = Image(network.n_inputs, layers, config, meta)
    image.check()
    return image


def simulate(image: Image | str | os.PathLike, spikes: np.ndarray, engine: str = "golden",
             *, simulator: str | None = None, waves: str | os.PathLike | None = None,
             record: bool = False):
    """Run spike trains through the image on the golden model or the generated RTL.

    `spikes`: uint8 [batch, time, n_inputs] (or [time, n_inputs] for one sample). The result's
    `spikes` is uint8 [batch, time, n_outputs]; counters are per sample and layer.
    """
    if not isinstance(image, Image):
        image = load_image(image)
    spikes = given(spikes, image.n_inputs)
    if engine == "golden":
        if simulator is not None or waves is not None:
            raise ValueError("the golden engine takes no simulator and writes no waves")
        from .sim.golden import run
        return run(image, spikes, record=record)
    if engine == "rtl":
        if record:
            raise ValueError("the rtl engine records output spikes and final membranes only")
        from .sim.rtl import run_rtl
        return run_rtl(image, spikes, simulator=simulator, waves=waves)
    raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["compile", "simulate", "load_image", "Image"]

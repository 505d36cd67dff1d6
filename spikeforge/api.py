"""The public Python API: compile a model into an image, load it, simulate it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .image import Image, load_image
from .sim.encode import encoded_inputs, given

ENGINES = ("golden", "rtl")


def compile(model_or_path, weight_bits: int | dict | str = 8,  # noqa: A001
            board: str | None = None, device: str | None = None, dt: float | None = None,
            calibration: np.ndarray | None = None, *, allow_pickle: bool = False,
            lanes: int | None = None, decay: str = "auto", exporter: str | None = None,
            reset: str | None = None, max_spikes: int | None = None,
            labels: np.ndarray | None = None, budget: float | int | None = None,
            scales: str = "neuron", clip: str = "mse",
            input_shape: tuple[int, ...] | None = None) -> Image:
    """Quantize and map a trained network; returns the image (nothing is written).

    `model_or_path`: a torch.nn.Module, a nir.NIRGraph, or a path to a .nir file (or to a
    pickled module, with `allow_pickle=True`). `calibration`: input spikes
    [batch, time, n_inputs] that set the membrane width so nothing saturates on them.
    For NIR graphs: `exporter` (snntorch, norse, sinabs, rockpool, spikingjelly) applies that
    library's convention (docs/nir.md); `dt`, `reset` ("zero"/"subtract") and `max_spikes`
    override single facts of it. Without an exporter, an open choice is refused.
    `input_shape` (C, H, W) is the input map of a network that starts with a convolution.
    `image.meta["provenance"]` gives per layer the dt, betas, input gain and integer threshold
    used, and where each came from.
    `decay`: "auto", "none", "shift" or "mul", the integer leak (docs/neuron.md). Current-based,
    multi-spike and LI readout layers compile for a hardware target like the plain LIF (the
    gateware runs them); a convolution compiles without `board`/`device` only (for the golden
    model), and a hardware target refuses it, naming the layers.
    `weight_bits="auto"` chooses bits per layer from the Hessian trace on the calibration spikes
    and `labels` within `budget` (a float: fraction of the 8-bit weight memory; an int: bits;
    None: what fits the device); see docs/mixed-precision.md. `scales` ("neuron" or "layer") and
    `clip` ("mse" or "max") choose the weight scales.
    """
    from .compiler.frontend import load_network
    from .compiler.mapper import estimate_resources, map_network
    from .compiler.quantize import quantize

    clock_hz = None
    if board is not None:
        from .boards.catalog import board_target

        board, device, clock_hz = board_target(board, device)
    if isinstance(model_or_path, (str, os.PathLike)):
        model_or_path = Path(model_or_path)
    network = load_network(model_or_path, dt=dt, allow_pickle=allow_pickle, exporter=exporter,
                           reset=reset, max_spikes=max_spikes, input_shape=input_shape)
    if calibration is not None:
        try:
            calibration = given(calibration, network.n_inputs)
        except ValueError as exc:
            raise ValueError(f"calibration {exc}") from None
    target = dict(device=device, board=board, lanes=lanes, clock_hz=clock_hz)
    weight_bits, plan = _plan_bits(network, weight_bits, calibration, labels, budget,
                                   scales, clip, target, decay)
    layers, report = quantize(network, weight_bits=weight_bits, calibration=calibration,
                              decay=decay, scales=scales, clip=clip)
    _check_quantized(network, layers)
    config = map_network(layers, network.n_inputs, **target)
    # a layer the gateware cannot run has no core on the device (only the golden model's)
    resources = {} if any(layer.gateware_features() for layer in layers) else \
        estimate_resources(layers, config)
    meta = {"source": network.source, "quantization": report.to_dict(),
            "resources": {name: list(pair) for name, pair in resources.items()}}
    if network.provenance:
        meta["provenance"] = _provenance(network, layers)
    meta.update(_precision_report(plan, network, layers, report, calibration, labels))
    image = Image(network.n_inputs, layers, config, meta)
    image.check()
    return image


def _plan_bits(network, weight_bits, calibration, labels, budget, scales, clip, target, decay):
    """weight_bits="auto" resolved to bits per layer (compiler/mixed.py)."""
    from .compiler.ir import ModelError
    from .compiler.mapper import FitError, map_network
    from .compiler.mixed import plan_weight_bits
    from .compiler.quantize import quantize

    conv = [layer.name for layer in network.layers if layer.conv is not None]
    if conv and weight_bits == "auto":  # its torch float reference has dense layers only
        raise ModelError(f"weight_bits='auto' cannot weigh convolutional layers yet "
                         f"({', '.join(map(repr, conv))}): give the bits per layer")

    def fits(bits: dict) -> bool:
        layers, _ = quantize(network, weight_bits=bits, calibration=calibration, decay=decay,
                             scales=scales, clip=clip)
        try:
            map_network(layers, network.n_inputs, **target)
        except FitError:
            return False
        return True

    return plan_weight_bits(network, weight_bits, calibration, labels, budget, scales=scales,
                            clip=clip, fits=fits, decay=decay)


def _precision_report(plan, network, layers, report, calibration, labels) -> dict:
    from .compiler.mixed import precision_report

    return precision_report(plan, network, layers, report, calibration, labels)


def _check_quantized(network, layers) -> None:
    """A layer whose weights or thresholds all round to 0 cannot do what the model did."""
    from .compiler.ir import ModelError

    for layer, params in zip(network.layers, layers, strict=True):
        if np.any(layer.weight != 0) and not np.any(params.weights):
            raise ModelError(f"layer {layer.name!r}: every weight quantizes to 0 at "
                             f"{params.weight_bits} bits")
        if layer.spiking and np.any(layer.threshold != 0) and not np.any(params.threshold):
            raise ModelError(f"layer {layer.name!r}: every threshold quantizes to 0 (thresholds "
                             f"{layer.threshold.min():.4g}..{layer.threshold.max():.4g}, one "
                             f"LSB = {params.scale:.4g}): the weights dwarf the threshold")


def _provenance(network, layers) -> list[dict]:
    """The front end's per-layer provenance with the integer thresholds the quantizer chose."""
    out = []
    for prov, params in zip(network.provenance, layers, strict=True):
        prov = dict(prov)
        if prov.get("threshold") is not None:
            prov["threshold"] = dict(prov["threshold"],
                                     integer=[int(params.threshold.min()),
                                              int(params.threshold.max())],
                                     lsb=float(params.scale))
        out.append(prov)
    return out


def simulate(image: Image | str | os.PathLike, spikes: np.ndarray | None = None,
             engine: str = "golden", *, simulator: str | None = None,
             waves: str | os.PathLike | None = None, record: bool = False,
             modulators: np.ndarray | None = None, state=None,
             intensities: np.ndarray | None = None, steps: int | None = None):
    """Run spike trains through the image on the golden model or the generated RTL.

    `spikes`: uint8 [batch, time, n_inputs] (or [time, n_inputs] for one sample). The result's
    `spikes` is uint8 [batch, time, n_outputs] (spike counts for a multi-spike output layer);
    counters are per sample and layer. An LI readout's membrane comes as `values`, int32
    [batch, time, n_outputs], worth `scale` each. `result.state` is the network's state after
    the last step; `state=result.state` continues from it (golden engine), so a stream can run
    in chunks that together equal one long run bit for bit. For an image that encodes on chip
    (`spikeforge compile --encoder rate`, `sim.encode.with_rate_encoder`) give `intensities`
    (uint8 [batch, n_inputs]) and `steps` instead of spikes: the run sees the spikes of the
    on-chip rate encoder, `sim.encode.rate_lfsr`, bit for bit as the board. When the
    image learns (`image.with_learning`), samples run in sequence with weights carried over,
    `modulators` (int8 [batch, time, neurons of the three-factor layer]) feed the three-factor
    rule, `result.weights` holds every layer's weights after the run and `result.image` an image
    with them.
    """
    if not isinstance(image, Image):
        image = load_image(image)
    spikes, _ = encoded_inputs(image, spikes, intensities=intensities, steps=steps)
    if engine == "golden":
        if simulator is not None or waves is not None:
            raise ValueError("the golden engine takes no simulator and writes no waves")
        from .sim.golden import run
        return run(image, spikes, record=record, modulators=modulators, state=state)
    if engine == "rtl":
        if state is not None:
            raise ValueError("state= continues a golden-model run; on the virtual board use "
                             "Board.run(spikes, clear=False)")
        if record:
            raise ValueError("the rtl engine records output spikes and final membranes only")
        from .hdl.rtl import run_rtl
        if modulators is not None or image.learning:
            return run_rtl(image, spikes, simulator=simulator, waves=waves,
                           modulators=modulators)
        return run_rtl(image, spikes, simulator=simulator, waves=waves)
    raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


def build(image: Image | str | os.PathLike, board: str, out_dir: str | os.PathLike | None = None,
          *, clock_hz: float | None = None, progress=None, seed: int | None = None,
          flash: bool | None = None, baud: float | None = None):
    """Build a bitstream of `image` for `board` (default folder build/<board>); the host link
    talks at `baud` (default the board's catalog rate, `spikeforge boards`). `flash`: the
    gateware loads the image's memories from the board's SPI flash at power-up (default: when
    the image has weights in SPRAM and the board has a flash resource; docs/flash.md).

    Returns `boards.build.BuildReport`; raises FitError before synthesis when the network does
    not fit, TimingError (with `.report`) when nextpnr's Fmax is below the clock.
    """
    from .boards.build import build as _build
    from .boards.catalog import find_board

    name = find_board(board).name
    out_dir = Path("build") / name if out_dir is None else Path(out_dir)
    return _build(image, name, out_dir, clock_hz=clock_hz, progress=progress, seed=seed,
                  flash=flash, baud=baud)


def flash(bitstream: str | os.PathLike, board: str, *, mode: str | None = None,
          programmer: str | None = None, dry_run: bool = False,
          image: Image | str | os.PathLike | None = None):
    """Write a bitstream to a board ("sram" or "flash"; default the board's usual memory);
    with `image`, also its memory contents into the flash past the bitstream (docs/flash.md).

    Returns `boards.flash.FlashResult` (its `command` and `image_command` are what ran, or
    would run with `dry_run=True`)."""
    from .boards.flash import flash as _flash

    return _flash(bitstream, board, mode=mode, programmer=programmer, dry_run=dry_run,
                  image=image)


def deploy(model_or_path, board: str, out_dir: str | os.PathLike | None = None, *,
           weight_bits: int | dict = 8, dt: float | None = None,
           calibration: np.ndarray | None = None, allow_pickle: bool = False,
           exporter: str | None = None, reset: str | None = None, max_spikes: int | None = None,
           clock_hz: float | None = None, mode: str | None = None,
           programmer: str | None = None, dry_run: bool = False, progress=None,
           standalone: bool = False, baud: float | None = None) -> dict:
    """Compile a model for `board`, build its bitstream and flash it (`standalone`: with the
    memory contents in the flash past it, docs/flash.md).

    Writes out_dir/model.sfi and the build products; returns {"image", "build", "flash"}.
    """
    from .boards.catalog import find_board
    from .boards.top import check_baud

    name = find_board(board).name
    check_baud(name, baud, clock_hz)  # refused before the long steps
    out_dir = Path("build") / name if out_dir is None else Path(out_dir)
    if progress is not None:
        progress("compiling")
    image = compile(model_or_path, weight_bits=weight_bits, board=name, dt=dt,
                    calibration=calibration, allow_pickle=allow_pickle, exporter=exporter,
                    reset=reset, max_spikes=max_spikes)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_path = out_dir / "model.sfi"
    image.save(image_path)
    report = build(image, name, out_dir, clock_hz=clock_hz, progress=progress,
                   flash=True if standalone else None, baud=baud)
    if progress is not None:
        progress("flashing")
    result = flash(report.bitstream, name, mode=mode, programmer=programmer, dry_run=dry_run,
                   image=image if standalone else None)
    return {"image": str(image_path), "build": report.to_dict(), "flash": result.to_dict()}


def metrics(image: Image | str | os.PathLike, spikes: np.ndarray, labels=None,
            engine: str = "golden", **options) -> dict:
    """NeuroBench's metrics of `image` on `spikes` at the image's true integer widths, and the
    hardware's figures (cycles, latency, SOP/s, host-link bytes) on engine "rtl" or "board"
    (`port=`); options as `spikeforge.measure.metrics` (`build=`, `fmax_hz=`, `baud=`).
    Returns a JSON-ready dict (docs/metrics.md)."""
    from .measure import metrics as _metrics

    return _metrics(image, spikes, labels, engine, **options)


__all__ = ["compile", "simulate", "build", "flash", "deploy", "load_image", "metrics", "Image"]

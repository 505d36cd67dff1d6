"""Quantizer: float LIF layers (compiler/ir.py) -> integer LayerParams (spikeforge/image.py).

Per neuron i, in an integer domain where one LSB is worth `s_i` in the float model's units
(compiler/scales.py; the spikes do not depend on s_i, docs/neuron.md "Per-neuron scales"):

    s_i     = r_i * max|W[i], W_rec[i]| / (2^(b-1) - 1)   symmetric, b = weight bits (2..16),
              clipping ratio r_i from the least squared weight error (clip="mse") or 1 ("max");
              one s for the whole layer with scales="layer"
            = 1 when W, W_rec, b, theta are already integers that fit (the image is exact)
    W_q     = clip(round(W / s_i), -qmax, qmax)          round half to even (numpy.rint)
    bias_q  = round(bias / s_i),  theta_q = round(theta / s_i)    (theta_q >= 0)

so v_q ~ v / s_i step for step; LayerParams.scale is the layer's largest s_i. The leak is chosen
per layer:

    "none"   every beta == 1
    "shift"  decay(v) = v - (v >> k), beta = 1 - 2^-k, k in 0..31 (k = 0 gives beta = 0), when
             every neuron's beta lies within 2^-(f+1) of such a value (as accurate as the
             multiplier would be), or when asked for with decay="shift" (nearest k)
    "mul"    decay(v) = (v * beta_q) >> f, beta_q = round(beta * 2^f), f = 8 by default

Widths: the accumulator is exact (LayerParams.acc_bits_needed()). The membrane holds the
threshold, the bias and either the largest |v| seen when the calibration spikes run through the
quantized network with 32-bit membranes (plus one bit of headroom) or, without calibration, the
proven bound |v| <= (|I|max + theta + 1) / (1 - beta_q) (24 bits when beta = 1), the smaller of
the two; clamped to [8, 24] bits. A membrane that is still too narrow saturates, and the golden
model counts every saturation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..image import CoreConfig, HwConfig, Image, LayerParams
from ..sim import golden
from ..sim.encode import given
from .ir import LifLayer, ModelError, Network
from .scales import check_scale_options, weight_scales

DECAY_CHOICES = ("auto", "none", "shift", "mul")
DEFAULT_DECAY_FRAC = 8
MIN_V_BITS = 8
MAX_V_BITS = 24
MAX_SHIFT = 31
WEIGHT_BITS_RANGE = (2, 16)


@dataclass
class LayerQuant:
    """What quantizing one layer did, in numbers a user can judge."""

    name: str
    weight_bits: int
    scale: float  # float value of one weight / membrane LSB
    exact: bool  # integer-valued layer kept at scale 1: the weights are exact
    weight_rms_error: float  # RMS of W - W_q * scale, in the model's units
    weight_max_rel_error: float  # max |W - W_q * scale| / max |W|
    decay_mode: str  # "none" | "shift" | "mul"
    decay: str  # the shifts or multipliers used, summarized
    beta_max_error: float  # max |beta - beta realized by the integer decay|
    v_bits: int
    v_source: str  # "calibration" | "bound" | "bound (calibration larger)"
    acc_bits: int
    v_peak: int | None = None  # largest |v_q| seen in calibration
    clip: float = 1.0  # clipping ratio (clip = ratio * max|W|), mean over the layer's neurons
    neuron_scales: list[float] | None = field(default=None, repr=False)  # scale per neuron


@dataclass
class QuantReport:
    layers: list[LayerQuant]
    decay_frac: int
    calibrated: bool
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict]:
        """One flat dict per layer, in order (for tables)."""
        rows = [asdict(layer) for layer in self.layers]
        for row in rows:
            row.pop("neuron_scales")
        return rows

    def to_dict(self) -> dict:
        return {"layers": self.rows(), "decay_frac": self.decay_frac,
                "calibrated": self.calibrated, "notes": list(self.notes),
                "neuron_scales": [layer.neuron_scales for layer in self.layers]}


# -- public entry --------------------------------------------------------------------------------
def quantize(network: Network, *, weight_bits: int | dict[str | int, int] = 8,
             calibration: np.ndarray | None = None, decay: str = "auto",
             decay_frac: int = DEFAULT_DECAY_FRAC, scales: str = "neuron",
             clip: str = "mse") -> tuple[list[LayerParams], QuantReport]:
    """Quantize every layer of `network`; see the module docstring for the arithmetic.

    `weight_bits` is one width for all layers or a dict keyed by layer name or index (layers it
    does not name get 8). `calibration` is a batch of input spike trains [batch, time, n_inputs]
    used to size the membranes. `decay` is "auto", "none", "shift" or "mul". `scales` ("neuron"
    or "layer") and `clip` ("mse" or "max") choose the weight scales (compiler/scales.py).
    """
    check_scale_options(scales, clip)
    if decay not in DECAY_CHOICES:
        raise ValueError(f"decay must be one of {DECAY_CHOICES}, not {decay!r}")
    decay_frac = int(decay_frac)
    if not 1 <= decay_frac <= 16:
        raise ValueError(f"decay_frac must be 1..16 fraction bits, not {decay_frac!r}")
    widths = _weight_bits_per_layer(network, weight_bits)
    _check_thresholds(network)

    notes: list[str] = []
    layers: list[LayerParams] = []
    reports: list[LayerQuant] = []
    for layer, bits in zip(network.layers, widths, strict=True):
        params, report = _quantize_layer(layer, bits, decay, decay_frac, notes,
                                         (scales, clip))
        layers.append(params)
        reports.append(report)

    peaks = _calibrate(layers, network.n_inputs, calibration) if calibration is not None \
        else [None] * len(layers)
    final = []
    for index, (params, report) in enumerate(zip(layers, reports, strict=True)):
        bound_bits = _bound_v_bits(params)
        if peaks[index] is None:
            v_bits, source = bound_bits, "bound"
        else:
            report.v_peak = peaks[index]
            seen = max(peaks[index], _param_peak(params))
            calib_bits = _clamp_v_bits(seen.bit_length() + 2)  # sign bit + one bit of headroom
            v_bits, source = (calib_bits, "calibration") if calib_bits <= bound_bits \
                else (bound_bits, "bound (calibration larger)")
        if peaks[index] is not None and peaks[index] > (1 << (MAX_V_BITS - 1)) - 1:
            notes.append(f"layer {params.name!r}: calibration reached |v| = {peaks[index]}, "
                         f"beyond the widest {MAX_V_BITS}-bit membrane; it will saturate")
        if peaks[index] is None and bound_bits == MAX_V_BITS:
            notes.append(f"layer {params.name!r}: membrane width {MAX_V_BITS} bits is a cap, "
                         f"not a bound; give calibration data to size it")
        report.v_bits, report.v_source = v_bits, source
        final.append(replace(params, v_bits=v_bits))
    return final, QuantReport(reports, decay_frac, calibration is not None, notes)


def accuracy_report(network: Network, layers: list[LayerParams], spikes: np.ndarray,
                    labels: np.ndarray) -> dict:
    """Float vs quantized accuracy by output spike-count argmax on labelled spike trains.

    Returns {"samples", "float_accuracy", "quant_accuracy", "agreement", "saturations"}, where
    agreement is the fraction of samples on which both predict the same class.
    """
    from .float_ref import run_float

    labels = np.asarray(labels).reshape(-1)
    x = given(spikes, network.n_inputs)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {x.shape[0]} samples")
    float_pred = run_float(network, x).sum(axis=1).argmax(axis=1)
    result = golden.run(plain_image(layers, network.n_inputs), x)
    quant_pred = result.spikes.sum(axis=1).argmax(axis=1)
    return {"samples": int(x.shape[0]),
            "float_accuracy": float(np.mean(float_pred == labels)),
            "quant_accuracy": float(np.mean(quant_pred == labels)),
            "agreement": float(np.mean(float_pred == quant_pred)),
            "saturations": int(result.saturations.sum())}


def plain_image(layers: list[LayerParams], n_inputs: int) -> Image:
    """An image with one single-lane core per layer, for the golden model (which ignores the
    hardware configuration)."""
    cores = tuple(CoreConfig(index, 0, layer.n_out, 1) for index, layer in enumerate(layers))
    return Image(n_inputs, list(layers), HwConfig(device="iCE40UP5K", cores=cores))


# -- per layer -----------------------------------------------------------------------------------
def _weight_bits_per_layer(network: Network, weight_bits) -> list[int]:
    names = [layer.name for layer in network.layers]
    if isinstance(weight_bits, dict):
        widths = [8] * len(names)
        unknown = []
        for key, value in weight_bits.items():
            if isinstance(key, int) and not isinstance(key, bool) and \
                    -len(names) <= key < len(names):
                widths[key] = value
            elif isinstance(key, str) and key in names:
                widths[names.index(key)] = value
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"weight_bits names no layer of the network: "
                             f"{', '.join(repr(k) for k in unknown)}; layers are "
                             f"{', '.join(repr(n) for n in names)} (or indices "
                             f"0..{len(names) - 1})")
    else:
        widths = [weight_bits] * len(names)
    lo, hi = WEIGHT_BITS_RANGE
    bad = [f"{name!r}: {w!r}" for name, w in zip(names, widths, strict=True)
           if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or not lo <= w <= hi]
    if bad:
        raise ValueError(f"weight_bits must be an integer {lo}..{hi}, not {'; '.join(bad)}")
    return [int(w) for w in widths]


def _check_thresholds(network: Network) -> None:
    bad = [f"{layer.name!r} (min {layer.threshold.min():g})" for layer in network.layers
           if layer.threshold.min() < 0]
    if bad:
        raise ModelError(f"the hardware needs thresholds >= 0; negative in layer "
                         f"{', '.join(bad)}")


def _is_integer(arr: np.ndarray | None) -> bool:
    return arr is None or bool(np.all(arr == np.rint(arr)))


def _is_exact(layer: LifLayer, bits: int) -> bool:
    """Integer-valued weights that fit `bits` and a threshold and bias that fit the membrane."""
    wmin, wmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    vmax = (1 << (MAX_V_BITS - 1)) - 1
    arrays = (layer.weight, layer.rec_weight, layer.bias, layer.threshold)
    if not all(_is_integer(a) for a in arrays):
        return False
    for w in (layer.weight, layer.rec_weight):
        if w is not None and w.size and (w.min() < wmin or w.max() > wmax):
            return False
    return bool(np.all(np.abs(layer.bias) <= vmax) and np.all(layer.threshold <= vmax))


def _quantize_layer(layer: LifLayer, bits: int, decay: str, decay_frac: int,
                    notes: list[str], options=("neuron", "mse")) -> tuple[LayerParams, LayerQuant]:
    qmax = (1 << (bits - 1)) - 1
    w_all = layer.weight if layer.rec_weight is None else \
        np.concatenate([layer.weight, layer.rec_weight], axis=1)
    w_peak = float(np.abs(w_all).max(initial=0.0))
    exact = _is_exact(layer, bits)
    scale, ratio = _layer_scales(layer, w_all, bits, exact, options, notes)
    col = scale[:, None]
    lo = -qmax - 1 if exact else -qmax
    w_q = np.clip(np.rint(layer.weight / col), lo, qmax).astype(np.int64)
    rec_q = None if layer.rec_weight is None else \
        np.clip(np.rint(layer.rec_weight / col), lo, qmax).astype(np.int64)
    bias_q = np.rint(layer.bias / scale).astype(np.int64)
    theta_q = np.rint(layer.threshold / scale).astype(np.int64)

    wq_all = w_q if rec_q is None else np.concatenate([w_q, rec_q], axis=1)
    err = w_all - wq_all * col
    rms = float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0
    max_rel = float(np.abs(err).max() / w_peak) if w_peak > 0 else 0.0

    mode, shift, mul, beta_err, summary = choose_decay(layer.beta, decay, decay_frac, layer.name)
    provisional = LayerParams(
        name=layer.name, weights=w_q, rec_weights=rec_q, bias=bias_q, threshold=theta_q,
        weight_bits=bits, v_bits=32, acc_bits=40, reset=layer.reset, decay_mode=mode,
        decay_shift=shift, decay_mul=mul, decay_frac=decay_frac if mode == "mul" else 0,
        scale=float(scale.max()) if scale.size else 1.0)
    acc_bits = provisional.acc_bits_needed()
    params = replace(provisional, acc_bits=acc_bits)
    report = LayerQuant(
        name=layer.name, weight_bits=bits, scale=params.scale, exact=exact,
        weight_rms_error=rms, weight_max_rel_error=max_rel, decay_mode=mode, decay=summary,
        beta_max_error=beta_err, v_bits=0, v_source="", acc_bits=acc_bits,
        clip=float(ratio.mean()), neuron_scales=[float(x) for x in scale])
    return params, report


def _layer_scales(layer: LifLayer, w_all: np.ndarray, bits: int, exact: bool, options,
                  notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron scales [n_out] and clipping ratios (compiler/scales.py); 1 for an exact
    integer layer. A neuron whose threshold or bias would not fit the widest membrane (with one
    bit to spare) at its scale gets a coarser scale."""
    if exact:
        return np.ones(layer.n_out), np.ones(layer.n_out)
    scales, clip = options
    qmax = (1 << (bits - 1)) - 1
    scale, ratio = weight_scales(w_all, bits, scales=scales, clip=clip)
    p_peak = np.maximum(layer.threshold, np.abs(layer.bias))
    if scales == "layer":
        p_peak = np.full(layer.n_out, p_peak.max(initial=0.0))
    scale = np.where(scale > 0, scale, p_peak / qmax)
    scale = np.where(scale > 0, scale, 1.0)
    limit = (1 << (MAX_V_BITS - 2)) - 1
    raised = p_peak / scale > limit
    if np.any(raised):
        scale = np.where(raised, p_peak / limit, scale)
        w_peak = float(np.abs(w_all).max(initial=0.0))
        ratio_text = f"{p_peak.max() / w_peak:.3g}" if w_peak > 0 else "infinitely many"
        notes.append(f"layer {layer.name!r}: threshold/bias are {ratio_text} times the largest "
                     f"weight in {int(raised.sum())} neuron(s); their scale was raised to fit "
                     f"a {MAX_V_BITS}-bit membrane, so their weights keep fewer levels")
    return scale, ratio


def choose_decay(beta: np.ndarray, decay: str, decay_frac: int, name: str = "?"):
    """Pick the integer leak for per-neuron `beta`.

    Returns (mode, shift or None, beta_q or None, max |beta error|, summary string).
    """
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    one = 1 << decay_frac
    if decay == "mul":
        return _mul_decay(beta, decay_frac)
    if np.all(beta == 1.0):
        return "none", None, None, 0.0, "-"
    if decay == "none":
        worst = beta[np.argmax(np.abs(beta - 1.0))]
        raise ValueError(f"layer {name!r}: decay='none' needs every beta == 1, "
                         f"but one is {worst:g}")
    ks = np.arange(MAX_SHIFT + 1)
    realizable = 1.0 - 2.0 ** -ks.astype(np.float64)
    realizable[0] = 0.0
    errors = np.abs(beta[:, None] - realizable[None, :])
    shift = errors.argmin(axis=1)
    shift_err = errors[np.arange(beta.size), shift]
    if decay == "shift" or np.all(shift_err <= 0.5 / one):
        lo, hi = int(shift.min()), int(shift.max())
        summary = f"k={lo}" if lo == hi else f"k={lo}..{hi}"
        return "shift", shift.astype(np.int32), None, float(shift_err.max()), summary
    return _mul_decay(beta, decay_frac)


def _mul_decay(beta: np.ndarray, decay_frac: int):
    one = 1 << decay_frac
    beta_q = np.clip(np.rint(beta * one), 0, one).astype(np.int64)
    err = float(np.abs(beta - beta_q / one).max(initial=0.0))
    lo, hi = int(beta_q.min()), int(beta_q.max())
    summary = f"beta_q={lo}/{one}" if lo == hi else f"beta_q={lo}..{hi}/{one}"
    return "mul", None, beta_q.astype(np.int32), err, summary


# -- membrane width ------------------------------------------------------------------------------
def _clamp_v_bits(bits: int) -> int:
    return min(MAX_V_BITS, max(MIN_V_BITS, bits))


def _param_peak(layer: LayerParams) -> int:
    return int(max(layer.threshold.max(initial=0), np.abs(layer.bias).max(initial=0)))


def _bound_v_bits(layer: LayerParams) -> int:
    """Membrane width from the proven bound |v| <= (|I|max + theta + 1) / (1 - beta_q).

    The floor in both integer decays makes |decay(v)| <= beta_q * |v| + 1, hence the +1.
    """
    if layer.decay_mode == "none":
        return MAX_V_BITS
    w = layer.all_weights().astype(np.int64)
    bias = layer.bias.astype(np.int64)
    up = np.clip(w, 0, None).sum(axis=1) + np.clip(bias, 0, None)
    down = (-np.clip(w, None, 0)).sum(axis=1) + np.clip(-bias, 0, None)
    drive = np.maximum(up, down) + 1
    if layer.reset == "subtract":
        drive = drive + layer.threshold.astype(np.int64)
    if layer.decay_mode == "shift":
        beta = 1.0 - 2.0 ** -layer.decay_shift.astype(np.float64)
        beta[layer.decay_shift == 0] = 0.0
    else:
        beta = layer.decay_mul.astype(np.float64) / (1 << layer.decay_frac)
    if np.any(beta >= 1.0):
        return MAX_V_BITS
    bound = math.ceil(float(np.max(drive / (1.0 - beta), initial=0.0)))
    bound = max(bound, _param_peak(layer))
    return _clamp_v_bits(bound.bit_length() + 1)


def _calibrate(layers: list[LayerParams], n_inputs: int,
               calibration: np.ndarray) -> list[int]:
    """Largest |v| per layer when the calibration spikes run with 32-bit membranes."""
    wide = [replace(layer, v_bits=32) for layer in layers]
    result = golden.run(plain_image(wide, n_inputs), given(calibration, n_inputs),
                        record=True)
    peaks = []
    for index, membranes in enumerate(result.membranes):
        peak = int(np.abs(membranes.astype(np.int64)).max(initial=0))
        if result.saturations[:, index].sum():
            peak = max(peak, 1 << 31)
        peaks.append(peak)
    return peaks

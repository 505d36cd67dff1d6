"""Quantizer: float LIF layers (compiler/ir.py) -> integer LayerParams (spikeforge/image.py).

Per neuron i, in an integer domain where one LSB is worth `s_i` in the float model's units
(compiler/scales.py; the spikes do not depend on s_i, docs/neuron.md "Per-neuron scales"):

    s_i     = r_i * max|W[i], W_rec[i]| / (2^(b-1) - 1)   symmetric, b = weight bits (2..16),
              clipping ratio r_i from the least squared weight error (clip="mse") or 1 ("max");
              one s for the whole layer with scales="layer"
            = 1 when W, W_rec, b, theta are already integers that fit (the image is exact)
    W_q     = clip(round(W / s_i), -qmax, qmax)          round half to even (numpy.rint)
    bias_q  = round(bias / s_i),  theta_q = round(theta / s_i)    (theta_q >= 0)

so v_q ~ v / s_i step for step (and syn_q ~ syn / s_i: the synaptic current is the neuron's own
and shares its membrane's LSB, so it enters v with gain 1). LayerParams.scale is the layer's
largest s_i. An LI readout has no threshold (theta_q = 0) and its membranes are the output, read
side by side with one `scale` telling the host what one LSB is worth: its neurons share one scale
(scales="layer" for that layer). Input gains (NIR w_in, r, dt/tau) are already in W by the front
end. The leak is chosen per layer, for beta and, in a current-based layer, for alpha alike:

    "none"   every beta == 1
    "shift"  decay(v) = v - (v >> k), beta = 1 - 2^-k, k in 0..31 (k = 0 gives beta = 0), when
             every neuron's beta lies within 2^-(f+1) of such a value (as accurate as the
             multiplier would be) and none is exactly 1 (no shift keeps a negative v), or
             when asked for with decay="shift" (nearest k)
    "mul"    decay(v) = (v * beta_q) >> f, beta_q = round(beta * 2^f), f = 8 by default

Widths: the accumulator is exact (LayerParams.acc_bits_needed()). The membrane holds the
threshold, the bias and either the largest |v| seen when the calibration spikes run through the
quantized network with 32-bit membranes (plus one bit of headroom) or, without calibration, the
proven bound |v| <= (|J|max + K * theta + 1) / (1 - beta_q) (24 bits when beta = 1), the
smaller of the two; clamped to [8, 24] bits. The synaptic current is sized the same way, from
calibration or from |syn| <= (|A|max + |b| + 1) / (1 - alpha_q), and |J|max is its largest
value. A membrane that is still too narrow saturates, and the golden
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
    model: str = "LIF"  # "LIF" | "CubaLIF" | "LI" | "CubaLI", with "xK" for multi-spike
    syn_decay_mode: str | None = None  # the synaptic current's leak, as decay_mode
    syn_decay: str | None = None
    alpha_max_error: float | None = None
    syn_bits: int | None = None
    syn_peak: int | None = None  # largest |syn_q| seen in calibration


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
    does not name get the width keyed "*", else 8). `calibration` is a batch of input spike
    trains [batch, time, n_inputs] used to size the membranes. `decay` is "auto", "none",
    "shift" or "mul". `scales` ("neuron" or "layer") and `clip` ("mse" or "max") choose the
    weight scales (compiler/scales.py).
    """
    check_scale_options(scales, clip)
    if decay not in DECAY_CHOICES:
        raise ValueError(f"decay must be one of {DECAY_CHOICES}, not {decay!r}")
    decay_frac = int(decay_frac)
    if not 1 <= decay_frac <= 16:
        raise ValueError(f"decay_frac must be 1..16 fraction bits, not {decay_frac!r}")
    widths = _weight_bits_per_layer(network, weight_bits)
    _check_thresholds(network)
    if calibration is not None:
        _check_calibration(calibration)

    notes: list[str] = []
    layers: list[LayerParams] = []
    reports: list[LayerQuant] = []
    source_k = 1
    for layer, bits in zip(network.layers, widths, strict=True):
        params, report = _quantize_layer(layer, bits, decay, decay_frac, notes, source_k,
                                         (scales, clip))
        layers.append(params)
        reports.append(report)
        source_k = layer.max_spikes

    peaks, syn_peaks = _calibrate(layers, network.n_inputs, calibration) \
        if calibration is not None else ([None] * len(layers), [None] * len(layers))
    # the synaptic current first: the membrane's bound depends on its width
    for index, (params, report) in enumerate(zip(layers, reports, strict=True)):
        if not params.current_based:
            continue
        bound_bits = _bound_syn_bits(params)
        syn_bits = bound_bits
        if syn_peaks[index] is not None:
            report.syn_peak = syn_peaks[index]
            seen = max(syn_peaks[index], int(np.abs(params.bias).max(initial=0)))
            syn_bits = min(bound_bits, _clamp_v_bits(seen.bit_length() + 2))
        report.syn_bits = syn_bits
        layers[index] = replace(params, syn_bits=syn_bits)
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
    """Float vs quantized accuracy by output spike-count argmax (an LI readout: summed membrane
    argmax, `predictions`) on labelled spike trains.

    Returns {"samples", "float_accuracy", "quant_accuracy", "agreement", "saturations"}, where
    agreement is the fraction of samples on which both predict the same class.
    """
    from .float_ref import simulate_float

    labels = np.asarray(labels).reshape(-1)
    x = given(spikes, network.n_inputs)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {x.shape[0]} samples")
    ref = simulate_float(network, x)
    float_pred = predictions(ref.spikes, ref.values)
    result = golden.run(plain_image(layers, network.n_inputs), x)
    quant_pred = predictions(result.spikes, result.values)
    return {"samples": int(x.shape[0]),
            "float_accuracy": float(np.mean(float_pred == labels)),
            "quant_accuracy": float(np.mean(quant_pred == labels)),
            "agreement": float(np.mean(float_pred == quant_pred)),
            "saturations": int(result.saturations.sum())}


def predictions(spikes: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """Class per sample: the output spike-count argmax, or an LI readout's summed membrane
    argmax (`values`, in any positive units: one scale for the layer keeps the argmax)."""
    out = spikes if values is None else values
    return np.asarray(out).sum(axis=1).argmax(axis=1)


def plain_image(layers: list[LayerParams], n_inputs: int) -> Image:
    """An image with one single-lane core per layer, for the golden model (which ignores the
    hardware configuration)."""
    cores = tuple(CoreConfig(index, 0, layer.n_out, 1) for index, layer in enumerate(layers))
    return Image(n_inputs, list(layers), HwConfig(device="iCE40UP5K", cores=cores))


# -- per layer -----------------------------------------------------------------------------------
def _weight_bits_per_layer(network: Network, weight_bits) -> list[int]:
    names = [layer.name for layer in network.layers]
    if isinstance(weight_bits, dict):
        widths = [weight_bits.get("*", 8)] * len(names)
        unknown = []
        for key, value in weight_bits.items():
            if key == "*":
                continue
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


def _check_calibration(calibration: np.ndarray) -> None:
    """A calibration set sizes the membranes from the largest |v| it reaches: one without a
    sample, a step or a spike reaches none and would shrink them to the minimum."""
    shape = np.shape(calibration)
    shape = (1, *shape) if len(shape) == 2 else shape  # [time, inputs]: one sample
    if len(shape) != 3 or shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"calibration must hold at least one sample of one step "
                         f"[batch, time, inputs], not shape {list(shape)}")
    if not np.any(calibration):
        raise ValueError("calibration must hold at least one spike, not none (it would size "
                         "every membrane for silence); give real input or no calibration")


def _check_thresholds(network: Network) -> None:
    bad = [f"{layer.name!r} (min {layer.threshold.min():g})" for layer in network.layers
           if layer.spiking and layer.threshold.min() < 0]
    if bad:
        raise ModelError(f"the hardware needs thresholds >= 0; negative in layer "
                         f"{', '.join(bad)}")


def _is_integer(arr: np.ndarray | None) -> bool:
    return arr is None or bool(np.all(arr == np.rint(arr)))


def _is_exact(layer: LifLayer, bits: int) -> bool:
    """Integer-valued weights that fit `bits` and a threshold and bias that fit the membrane."""
    wmin, wmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    vmax = (1 << (MAX_V_BITS - 1)) - 1
    threshold = layer.threshold if layer.spiking else np.zeros(0)
    arrays = (layer.weight, layer.rec_weight, layer.bias, threshold)
    if not all(_is_integer(a) for a in arrays):
        return False
    for w in (layer.weight, layer.rec_weight):
        if w is not None and w.size and (w.min() < wmin or w.max() > wmax):
            return False
    return bool(np.all(np.abs(layer.bias) <= vmax) and np.all(threshold <= vmax))


def _quantize_layer(layer: LifLayer, bits: int, decay: str, decay_frac: int,
                    notes: list[str], source_k: int,
                    options=("neuron", "mse")) -> tuple[LayerParams, LayerQuant]:
    qmax = (1 << (bits - 1)) - 1
    w_all = layer.weight if layer.rec_weight is None else \
        np.concatenate([layer.weight, layer.rec_weight], axis=1)
    w_peak = float(np.abs(w_all).max(initial=0.0))
    exact = _is_exact(layer, bits)
    scale, ratio = _layer_scales(layer, w_all, bits, exact, options, notes)
    # a weight row's scale: its neuron's, or for a convolution the layer's one scale
    col = scale[:, None] if layer.conv is None else np.full((w_all.shape[0], 1), scale[0])
    lo = -qmax - 1 if exact else -qmax
    w_q = np.clip(np.rint(layer.weight / col), lo, qmax).astype(np.int64)
    rec_q = None if layer.rec_weight is None else \
        np.clip(np.rint(layer.rec_weight / col), lo, qmax).astype(np.int64)
    bias_q = np.rint(layer.bias / scale).astype(np.int64)
    theta_q = np.rint(layer.threshold / scale).astype(np.int64) if layer.spiking \
        else np.zeros(layer.n_out, np.int64)

    wq_all = w_q if rec_q is None else np.concatenate([w_q, rec_q], axis=1)
    err = w_all - wq_all * col
    rms = float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0
    max_rel = float(np.abs(err).max() / w_peak) if w_peak > 0 else 0.0

    mode, shift, mul, beta_err, summary = choose_decay(layer.beta, decay, decay_frac, layer.name)
    syn = {}
    syn_report = {}
    if layer.alpha is not None:
        a_mode, a_shift, a_mul, alpha_err, a_summary = choose_decay(
            layer.alpha, decay, decay_frac, layer.name, what="alpha")
        syn = dict(syn_decay_mode=a_mode, syn_decay_shift=a_shift, syn_decay_mul=a_mul,
                   syn_decay_frac=decay_frac if a_mode == "mul" else 0, syn_bits=32,
                   syn_delay=layer.syn_delay)
        syn_report = dict(syn_decay_mode=a_mode, syn_decay=a_summary, alpha_max_error=alpha_err)
    provisional = LayerParams(
        name=layer.name, weights=w_q, rec_weights=rec_q, bias=bias_q, threshold=theta_q,
        weight_bits=bits, v_bits=32, acc_bits=40, reset=layer.reset, decay_mode=mode,
        decay_shift=shift, decay_mul=mul, decay_frac=decay_frac if mode == "mul" else 0,
        scale=float(scale.max()) if scale.size else 1.0,
        max_spikes=layer.max_spikes if layer.spiking else 1,
        in_max_spikes=source_k, compare=layer.compare, reset_delay=layer.reset_delay,
        spiking=layer.spiking, conv=layer.conv, **syn)
    acc_bits = provisional.acc_bits_needed()
    params = replace(provisional, acc_bits=acc_bits)
    model = ("Cuba" if layer.alpha is not None else "") + ("LIF" if layer.spiking else "LI")
    if layer.spiking and layer.max_spikes > 1:
        model += f" x{layer.max_spikes}"
    report = LayerQuant(
        name=layer.name, weight_bits=bits, scale=params.scale, exact=exact,
        weight_rms_error=rms, weight_max_rel_error=max_rel, decay_mode=mode, decay=summary,
        beta_max_error=beta_err, v_bits=0, v_source="", acc_bits=acc_bits,
        clip=float(ratio.mean()) if ratio.size else 1.0,
        neuron_scales=[float(x) for x in scale], model=model, **syn_report)
    return params, report


def _layer_scales(layer: LifLayer, w_all: np.ndarray, bits: int, exact: bool, options,
                  notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-neuron scales [n_out] and clipping ratios (compiler/scales.py); 1 for an exact
    integer layer. A neuron whose threshold or bias would not fit the widest membrane (with one
    bit to spare) at its scale gets a coarser scale. A non-spiking (LI) layer's membranes are its
    output, compared across neurons under one LayerParams.scale, so its neurons share one scale;
    so do a convolution's, whose kernel rows are shared by every position of their channel."""
    if exact:
        return np.ones(layer.n_out), np.ones(layer.n_out)
    scales, clip = options
    if not layer.spiking or layer.conv is not None:
        scales = "layer"
    qmax = (1 << (bits - 1)) - 1
    scale, ratio = weight_scales(w_all, bits, scales=scales, clip=clip)
    if scales == "layer":  # one value per neuron (a conv layer's rows are its channels)
        scale = np.full(layer.n_out, scale.max(initial=0.0))
        ratio = np.full(layer.n_out, float(ratio[0]) if ratio.size else 1.0)
    theta = layer.threshold if layer.spiking else np.zeros(layer.n_out)
    p_peak = np.maximum(theta, np.abs(layer.bias))
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


def choose_decay(beta: np.ndarray, decay: str, decay_frac: int, name: str = "?",
                 what: str = "beta"):
    """Pick the integer leak for per-neuron `beta` (or alpha, as `what` says).

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
        raise ValueError(f"layer {name!r}: decay='none' needs every {what} == 1, "
                         f"but one is {worst:g}")
    ks = np.arange(MAX_SHIFT + 1)
    realizable = 1.0 - 2.0 ** -ks.astype(np.float64)
    realizable[0] = 0.0
    errors = np.abs(beta[:, None] - realizable[None, :])
    shift = errors.argmin(axis=1)
    shift_err = errors[np.arange(beta.size), shift]
    # beta = 1 has no shift: v - (v >> 31) still adds 1 to a negative v every step, while the
    # multiplier keeps it exactly ((v * 2^f) >> f = v)
    exact_one = decay == "auto" and bool(np.any(beta == 1.0))
    if decay == "shift" or (not exact_one and np.all(shift_err <= 0.5 / one)):
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


def _realized(mode: str, shift, mul, frac: int) -> np.ndarray | None:
    """The factor an integer decay realizes per neuron (None for mode "none")."""
    if mode == "none":
        return None
    if mode == "shift":
        factor = 1.0 - 2.0 ** -shift.astype(np.float64)
        factor[shift == 0] = 0.0
        return factor
    return mul.astype(np.float64) / (1 << frac)


def _drive(layer: LayerParams) -> np.ndarray:
    """Per neuron, the largest |A + b| any spike pattern can give, plus 1."""
    k_in, k_rec = layer.in_max_spikes, layer.max_spikes
    w = layer.weights.astype(np.int64) * k_in
    if layer.rec_weights is not None:
        w = np.concatenate([w, layer.rec_weights.astype(np.int64) * k_rec], axis=1)
    bias = layer.bias.astype(np.int64)
    up, down = np.clip(w, 0, None).sum(axis=1), (-np.clip(w, None, 0)).sum(axis=1)
    if layer.conv is not None:  # per output channel, for each of its positions
        tiles = layer.conv.pool_size ** 2 if layer.conv.pool == "sum" else 1
        positions = layer.n_out // layer.conv.out_channels
        up, down = np.repeat(up * tiles, positions), np.repeat(down * tiles, positions)
    up = up + np.clip(bias, 0, None)
    down = down + np.clip(-bias, 0, None)
    return np.maximum(up, down) + 1


def _bound_syn_bits(layer: LayerParams) -> int:
    """Current width from the proven bound |syn| <= (|A + b|max + 1) / (1 - alpha_q)."""
    alpha = _realized(layer.syn_decay_mode, layer.syn_decay_shift, layer.syn_decay_mul,
                      layer.syn_decay_frac)
    if alpha is None or np.any(alpha >= 1.0):
        return MAX_V_BITS
    bound = math.ceil(float(np.max(_drive(layer) / (1.0 - alpha), initial=0.0)))
    return _clamp_v_bits(bound.bit_length() + 1)


def _bound_v_bits(layer: LayerParams) -> int:
    """Membrane width from the proven bound |v| <= (|J|max + K * theta + 1) / (1 - beta_q).

    The floor in both integer decays makes |decay(v)| <= beta_q * |v| + 1, hence the +1.
    |J|max is |A + b|max, or the synaptic current's largest value.
    """
    beta = _realized(layer.decay_mode, layer.decay_shift, layer.decay_mul, layer.decay_frac)
    if beta is None:
        return MAX_V_BITS
    if layer.current_based:
        drive = np.full(layer.n_out, (1 << (layer.syn_bits - 1)) + 1, dtype=np.int64)
    else:
        drive = _drive(layer)
    if layer.reset == "subtract" and layer.spiking:
        drive = drive + layer.threshold.astype(np.int64) * layer.max_spikes
    if np.any(beta >= 1.0):
        return MAX_V_BITS
    bound = math.ceil(float(np.max(drive / (1.0 - beta), initial=0.0)))
    bound = max(bound, _param_peak(layer))
    return _clamp_v_bits(bound.bit_length() + 1)


def _calibrate(layers: list[LayerParams], n_inputs: int,
               calibration: np.ndarray) -> tuple[list[int], list[int | None]]:
    """Largest |v| and |syn| per layer when the calibration spikes run with 32-bit states."""
    wide = [replace(layer, v_bits=32, syn_bits=32 if layer.current_based else 0)
            for layer in layers]
    result = golden.run(plain_image(wide, n_inputs), given(calibration, n_inputs),
                        record=True)
    peaks, syn_peaks = [], []
    for index, membranes in enumerate(result.membranes):
        peak = int(np.abs(membranes.astype(np.int64)).max(initial=0))
        currents = result.currents[index]
        syn_peak = None if currents is None else \
            int(np.abs(currents.astype(np.int64)).max(initial=0))
        if result.saturations[:, index].sum():
            peak = max(peak, 1 << 31)
            syn_peak = None if syn_peak is None else max(syn_peak, 1 << 31)
        peaks.append(peak)
        syn_peaks.append(syn_peak)
    return peaks, syn_peaks

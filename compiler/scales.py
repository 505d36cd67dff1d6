"""Weight scales: how much of the float range one integer weight LSB is worth, per neuron.

A LIF neuron's spikes do not change when its weights (feed-forward and recurrent), bias and
threshold are all multiplied by one positive number c: the membrane is c * v at every step, the
reset subtracts c * theta, and c * v > c * theta exactly when v > theta (docs/neuron.md,
"Per-neuron scales"). Its output is a spike, so the next layer sees nothing of c. The quantizer
therefore gives every neuron i its own scale s_i and folds it into the neuron's threshold and bias,
which the hardware holds per neuron anyway:

    W_q[i] = clip(round(W[i] / s_i), -qmax, qmax)     qmax = 2^(b-1) - 1
    bias_q[i] = round(bias[i] / s_i),  theta_q[i] = round(theta[i] / s_i)

The clipping: s_i = r_i * max|W[i]| / qmax, where r_i in (0, 1] minimises the squared error
||s_i * W_q[i] - W[i]||^2 over a grid (clip="mse"), or r_i = 1 (clip="max", the largest weight is
exact and nothing clips). scales="layer" gives every neuron of a layer the same scale, chosen the
same way over the whole matrix.
"""

from __future__ import annotations

import numpy as np

SCALE_CHOICES = ("neuron", "layer")
CLIP_CHOICES = ("mse", "max")
# Clipping ratios searched: fine near 1 (8 bits clips little), down to 0.05 (2 bits, ternary).
RATIOS = np.unique(np.concatenate([np.linspace(0.05, 1.0, 96), 1.0 - np.geomspace(1e-3, 0.05,
                                                                                  24)]))
_CHUNK_ELEMENTS = 1 << 22  # grid points x weights evaluated at once


def qmax_of(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def check_scale_options(scales: str, clip: str) -> None:
    if scales not in SCALE_CHOICES:
        raise ValueError(f"scales must be one of {SCALE_CHOICES}, not {scales!r}")
    if clip not in CLIP_CHOICES:
        raise ValueError(f"clip must be one of {CLIP_CHOICES}, not {clip!r}")


def _errors(w: np.ndarray, peak: np.ndarray, qmax: int, ratios: np.ndarray) -> np.ndarray:
    """Squared error per grid ratio and row: [len(ratios), rows], w [rows, n], peak [rows]."""
    out = np.empty((ratios.size, w.shape[0]))
    step = max(1, _CHUNK_ELEMENTS // max(w.size, 1))
    for lo in range(0, ratios.size, step):
        r = ratios[lo:lo + step, None, None]
        s = r * peak[None, :, None] / qmax
        s = np.where(s > 0, s, 1.0)
        q = np.clip(np.rint(w[None] / s), -qmax, qmax)
        out[lo:lo + step] = ((q * s - w[None]) ** 2).sum(axis=2)
    return out


def weight_scales(w_all: np.ndarray, bits: int, *, scales: str = "neuron",
                  clip: str = "mse") -> tuple[np.ndarray, np.ndarray]:
    """Scale per row of `w_all` [n_out, fan_in] and its clipping ratio r (clip = r * max|W|).

    Rows whose weights are all zero get the layer's largest scale (any scale is exact for them).
    """
    check_scale_options(scales, clip)
    w_all = np.asarray(w_all, dtype=np.float64)
    qmax = qmax_of(bits)
    n_out = w_all.shape[0]
    if scales == "layer":
        flat = w_all.reshape(1, -1)
        peak = np.abs(flat).max(axis=1, initial=0.0)
        ratio = np.ones(1) if clip == "max" else RATIOS[_errors(flat, peak, qmax,
                                                                RATIOS).argmin(axis=0)]
        return np.full(n_out, ratio[0] * peak[0] / qmax), np.full(n_out, ratio[0])
    peak = np.abs(w_all).max(axis=1, initial=0.0)
    ratio = np.ones(n_out) if clip == "max" else \
        RATIOS[_errors(w_all, peak, qmax, RATIOS).argmin(axis=0)]
    scale = ratio * peak / qmax
    if np.any(peak == 0):
        scale[peak == 0] = scale.max(initial=0.0)
        ratio[peak == 0] = 1.0
    return scale, ratio


def quantization_error(w_all: np.ndarray, bits: int, *, scales: str = "neuron",
                       clip: str = "mse") -> float:
    """||Q_b(W) - W||^2 with the scales `weight_scales` chooses (the allocation's cost)."""
    w_all = np.asarray(w_all, dtype=np.float64)
    scale, _ = weight_scales(w_all, bits, scales=scales, clip=clip)
    qmax = qmax_of(bits)
    s = np.where(scale > 0, scale, 1.0)[:, None]
    q = np.clip(np.rint(w_all / s), -qmax, qmax)
    return float(((q * s - w_all) ** 2).sum())


def neuron_scales(image, index: int) -> np.ndarray:
    """The per-neuron scales of layer `index` of a compiled image (float [n_out]): from the
    quantization report when it holds them, else the layer's one scale."""
    layer = image.layers[index]
    stored = image.meta.get("quantization", {}).get("neuron_scales")
    if stored is not None and index < len(stored) and len(stored[index]) == layer.n_out:
        return np.asarray(stored[index], dtype=np.float64)
    return np.full(layer.n_out, float(layer.scale))

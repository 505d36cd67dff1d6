"""The LIF update of one layer and the work it counts: the core of the golden model
(sim/golden.py runs whole images; sim/learning.py adds plasticity on top).

The equations are docs/neuron.md's, written out in sim/golden.py's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..image import Image, LayerParams

__all__ = ["GoldenResult", "NeuronParams", "count_work", "work_dtype"]


@dataclass
class GoldenResult:
    spikes: np.ndarray  # uint8 [batch, time, n_out] of the output layer
    layer_spikes: list[np.ndarray] | None  # per layer uint8 [batch, time, n]; when recorded
    membranes: list[np.ndarray] | None  # per layer int32 [batch, time, n]; when recorded
    final_membranes: list[np.ndarray]  # per layer int32 [batch, n]: v after the last step
    events_in: np.ndarray  # int64 [batch, layers]: input events (feed-forward + recurrent)
    sops: np.ndarray  # int64 [batch, layers]: synaptic operations = events x fan-out
    spike_counts: np.ndarray  # int64 [batch, layers]
    saturations: np.ndarray  # int64 [batch, layers]: membrane updates that saturated
    weights: list[np.ndarray] | None = None  # with learning: every layer's weights after the run
    image: Image | None = None  # with learning: the image holding the learned weights
    learning: dict | None = None  # with learning: per layer, updates and their cycles


def _decay(v: np.ndarray, mode: str, shift, beta_q, frac: int) -> np.ndarray:
    if mode == "none":
        return v
    if mode == "shift":
        return v - (v >> shift)
    return (v * beta_q) >> frac


class NeuronParams:
    """A layer's per-neuron constants in the integer type the update runs in."""

    def __init__(self, layer: LayerParams, dtype):
        self.layer = layer
        self.bias = layer.bias.astype(dtype)
        self.theta = layer.threshold.astype(dtype)
        self.shift = None if layer.decay_shift is None else layer.decay_shift.astype(dtype)
        self.beta_q = None if layer.decay_mul is None else layer.decay_mul.astype(dtype)
        self.lo, self.hi = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1

    def update(self, v: np.ndarray, s_prev: np.ndarray, current: np.ndarray):
        """One step of docs/neuron.md: (v[t], s[t], saturations per row) from v[t-1],
        s[t-1] and I[t] - bias."""
        layer = self.layer
        vv = v * (1 - s_prev) if layer.reset == "zero" else v
        u = _decay(vv, layer.decay_mode, self.shift, self.beta_q, layer.decay_frac)
        u = u + current + self.bias
        if layer.reset == "subtract":
            u -= self.theta * s_prev
        sats = 0
        if u.max(initial=0) > self.hi or u.min(initial=0) < self.lo:
            clipped = np.clip(u, self.lo, self.hi)
            sats = np.count_nonzero(clipped != u, axis=-1)
            u = clipped
        return u, (u > self.theta).view(np.uint8), sats


def work_dtype(layer: LayerParams) -> type:
    """int32 where no intermediate of the update can reach 2^31, else int64."""
    theta_bits = int(layer.threshold.max(initial=0)).bit_length() + 1
    widest = max(layer.v_bits, layer.acc_bits, theta_bits) + 2
    if layer.decay_mode == "mul":
        widest = max(widest, layer.v_bits + layer.decay_frac + 2)
    return np.int32 if widest <= 31 else np.int64


def count_work(image: Image, x_all: np.ndarray, layer_spikes: list[np.ndarray]):
    """Per sample and layer: spikes, input events (feed-forward + recurrent), synaptic ops."""
    counts = np.stack([o.sum(axis=(1, 2), dtype=np.int64) for o in layer_spikes], axis=1)
    events = np.zeros_like(counts)
    source = x_all.sum(axis=(1, 2), dtype=np.int64)
    for index, layer in enumerate(image.layers):
        events[:, index] = source
        if layer.recurrent:  # the spikes of steps 0..T-2 come back as inputs one step later
            events[:, index] += counts[:, index] - layer_spikes[index][:, -1].sum(
                axis=1, dtype=np.int64)
        source = counts[:, index]
    sops = events * np.array([layer.n_out for layer in image.layers], dtype=np.int64)
    return counts, events, sops

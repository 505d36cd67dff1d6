"""The golden model: the bit-exact integer specification of the core array.

For every layer, in order, at every timestep t (docs/neuron.md):

    A[t]  = W @ s_in[t] + W_rec @ s[t-1]                 exact: acc_bits cannot overflow
    I[t]  = A[t] + b
    subtract reset:  u = decay(v[t-1]) + I[t] - theta * s[t-1]
    zero reset:      u = decay(v[t-1] * (1 - s[t-1])) + I[t]
    v[t]  = clamp(u, -2^(V-1), 2^(V-1) - 1)              saturation is counted
    s[t]  = v[t] > theta
    decay(v) = v                     ("none", beta = 1)
             | v - (v >> k)          ("shift", beta = 1 - 2^-k; >> is floor)
             | (v * beta_q) >> f     ("mul", beta = beta_q / 2^f)

Layer l sees layer l-1's spikes of the same step. Work is counted as the hardware counts it:
an input event to a layer reads one weight row and performs one synaptic operation per neuron.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..image import Image, LayerParams
from .encode import given


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


def _work_dtype(layer: LayerParams) -> type:
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


def run(image: Image, spikes: np.ndarray, *, record: bool = False,
        modulators: np.ndarray | None = None) -> GoldenResult:
    """Run a batch of spike trains through the image; every sample starts from rest.

    An image with learning rules runs its samples in sequence (sim/learning.py); `modulators`
    feeds the three-factor rule.
    """
    if image.learning or modulators is not None:
        from .learning import run_learning
        return run_learning(image, spikes, modulators, record=record)
    x_all = given(spikes, image.n_inputs)
    batch, steps, _ = x_all.shape
    # Sums of 0/1 spikes times integer weights are exact in floating point while they stay
    # below 2^24 (float32) or 2^53 (float64); acc_bits bounds them, so BLAS accumulates.
    fdt = [np.float32 if layer.acc_bits <= 24 else np.float64 for layer in image.layers]
    idt = [_work_dtype(layer) for layer in image.layers]
    w_ff = [layer.weights.T.astype(f) for layer, f in zip(image.layers, fdt)]
    w_rec = [None if layer.rec_weights is None else layer.rec_weights.T.astype(f)
             for layer, f in zip(image.layers, fdt)]
    x_steps = np.ascontiguousarray(x_all.transpose(1, 0, 2))  # [time, batch, n]
    v = [np.zeros((batch, layer.n_out), dtype=d) for layer, d in zip(image.layers, idt)]
    s = [np.zeros((batch, layer.n_out), dtype=np.uint8) for layer in image.layers]
    sats = np.zeros((batch, len(image.layers)), dtype=np.int64)
    out_spikes = [np.zeros((steps, batch, layer.n_out), dtype=np.uint8) for layer in image.layers]
    out_v = [np.zeros((steps, batch, layer.n_out), dtype=np.int32) if record else None
             for layer in image.layers]
    params = [NeuronParams(layer, d) for layer, d in zip(image.layers, idt)]
    for t in range(steps):
        x = x_steps[t]
        for index in range(len(image.layers)):
            s_prev = s[index]
            acc = x @ w_ff[index] if x.dtype == fdt[index] else x.astype(fdt[index]) @ w_ff[index]
            if w_rec[index] is not None:
                acc += s_prev.astype(fdt[index]) @ w_rec[index]
            # exact: the sums are whole numbers
            v[index], s[index], saturated = params[index].update(v[index], s_prev,
                                                                 acc.astype(idt[index]))
            sats[:, index] += saturated
            out_spikes[index][t] = s[index]
            if record:
                out_v[index][t] = v[index]
            x = s[index]
    layer_spikes = [np.ascontiguousarray(o.transpose(1, 0, 2)) for o in out_spikes]
    counts, events, sops = count_work(image, x_all, layer_spikes)
    return GoldenResult(
        spikes=layer_spikes[-1],
        layer_spikes=layer_spikes if record else None,
        membranes=[np.ascontiguousarray(o.transpose(1, 0, 2)) for o in out_v] if record
        else None,
        final_membranes=[vi.astype(np.int32) for vi in v],
        events_in=events, sops=sops, spike_counts=counts, saturations=sats)

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

from ..compiler.image import Image, LayerParams
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


def decay(v: np.ndarray, layer: LayerParams) -> np.ndarray:
    if layer.decay_mode == "none":
        return v
    if layer.decay_mode == "shift":
        return v - (v >> layer.decay_shift.astype(np.int64))
    return (v * layer.decay_mul.astype(np.int64)) >> layer.decay_frac


def run(image: Image, spikes: np.ndarray, *, record: bool = False) -> GoldenResult:
    """Run a batch of spike trains through the image; every sample starts from rest."""
    x_all = given(spikes, image.n_inputs)
    batch, steps, _ = x_all.shape
    n_layers = len(image.layers)
    # Integer sums of 0/1 spikes times small integer weights are exact in float64 far beyond
    # any accumulator width the image allows (40 bits), so BLAS does the accumulation.
    w_ff = [layer.weights.T.astype(np.float64) for layer in image.layers]
    w_rec = [None if layer.rec_weights is None else layer.rec_weights.T.astype(np.float64)
             for layer in image.layers]
    v = [np.zeros((batch, layer.n_out), dtype=np.int64) for layer in image.layers]
    s = [np.zeros((batch, layer.n_out), dtype=np.int64) for layer in image.layers]
    events = np.zeros((batch, n_layers), dtype=np.int64)
    sops = np.zeros((batch, n_layers), dtype=np.int64)
    counts = np.zeros((batch, n_layers), dtype=np.int64)
    sats = np.zeros((batch, n_layers), dtype=np.int64)
    rec_spikes = [np.zeros((batch, steps, layer.n_out), dtype=np.uint8) for layer in image.layers]
    rec_v = [np.zeros((batch, steps, layer.n_out), dtype=np.int32) if record else None
             for layer in image.layers]
    for t in range(steps):
        x = x_all[:, t, :].astype(np.float64)
        for index, layer in enumerate(image.layers):
            s_prev = s[index]
            acc = x @ w_ff[index]
            n_events = x.sum(axis=1)
            if w_rec[index] is not None:
                acc = acc + s_prev.astype(np.float64) @ w_rec[index]
                n_events = n_events + s_prev.sum(axis=1)
            current = np.rint(acc).astype(np.int64) + layer.bias
            theta = layer.threshold.astype(np.int64)
            if layer.reset == "subtract":
                u = decay(v[index], layer) + current - theta * s_prev
            else:
                u = decay(v[index] * (1 - s_prev), layer) + current
            lo, hi = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1
            sats[:, index] += ((u < lo) | (u > hi)).sum(axis=1)
            v[index] = np.clip(u, lo, hi)
            s[index] = (v[index] > theta).astype(np.int64)
            events[:, index] += n_events.astype(np.int64)
            sops[:, index] += n_events.astype(np.int64) * layer.n_out
            counts[:, index] += s[index].sum(axis=1)
            rec_spikes[index][:, t] = s[index]
            if record:
                rec_v[index][:, t] = v[index]
            x = s[index].astype(np.float64)
    return GoldenResult(
        spikes=rec_spikes[-1],
        layer_spikes=rec_spikes if record else None,
        membranes=rec_v if record else None,
        final_membranes=[vi.astype(np.int32) for vi in v],
        events_in=events, sops=sops, spike_counts=counts, saturations=sats)

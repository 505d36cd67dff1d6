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

import numpy as np

from ..image import Image
from .encode import given
from .learning import run_learning
from .lif import GoldenResult, NeuronParams, count_work, work_dtype

__all__ = ["GoldenResult", "NeuronParams", "count_work", "run"]


def run(image: Image, spikes: np.ndarray, *, record: bool = False,
        modulators: np.ndarray | None = None) -> GoldenResult:
    """Run a batch of spike trains through the image; every sample starts from rest.

    An image with learning rules runs its samples in sequence (sim/learning.py); `modulators`
    feeds the three-factor rule.
    """
    if image.learning or modulators is not None:
        return run_learning(image, spikes, modulators, record=record)
    x_all = given(spikes, image.n_inputs)
    batch, steps, _ = x_all.shape
    # Sums of 0/1 spikes times integer weights are exact in floating point while they stay
    # below 2^24 (float32) or 2^53 (float64); acc_bits bounds them, so BLAS accumulates.
    fdt = [np.float32 if layer.acc_bits <= 24 else np.float64 for layer in image.layers]
    idt = [work_dtype(layer) for layer in image.layers]
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

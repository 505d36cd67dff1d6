"""The golden model: the bit-exact integer specification of the core array.

For every layer, in order, at every timestep t (docs/neuron.md), with c the neurons' spike
counts (0/1 for single-spike layers):

    A[t]   = W @ c_in[t] + W_rec @ c[t-1]              exact: acc_bits cannot overflow
    current-based (syn_decay_mode set):
        syn[t] = clamp_S(decay_a(syn[t-1]) + A[t] + b)  saturation is counted
        J[t]   = syn[t - syn_delay]
    plain LIF:  J[t] = A[t] + b
    subtract reset, reset_delay:   u = decay(v[t-1]) + J[t] - theta * c[t-1]
    subtract reset, at the spike:  u = decay(v[t-1] - theta * c[t-1]) + J[t]
    zero reset:                    u = decay(v[t-1] * (c[t-1] == 0)) + J[t]
    LI readout (no spikes):        u = decay(v[t-1]) + J[t]
    v[t]   = clamp_V(u)                                saturation is counted
    c[t]   = min(K, #levels j >= 1 with v[t] > j * theta)     (>= with compare ">=")
    decay(v) = v                     ("none", beta = 1)
             | v - (v >> k)          ("shift", beta = 1 - 2^-k; >> is floor)
             | (v * beta_q) >> f     ("mul", beta = beta_q / 2^f)

Layer l sees layer l-1's counts of the same step. Work is counted as the hardware counts it:
each of an input's c spikes is an event that reads one weight row and performs one synaptic
operation per neuron. A run starts from rest, or from the `GoldenState` a previous run ended
in, so a stream can run in chunks and equal one long run bit for bit.
"""


from __future__ import annotations

import numpy as np

from ..image import Image
from .encode import given
from .learning import run_learning
from .lif import GoldenResult, GoldenState, NeuronParams, conv_currents, count_work, work_dtype

__all__ = ["GoldenResult", "GoldenState", "NeuronParams", "conv_currents", "count_work", "run",
           "work_dtype"]


def run(image: Image, spikes: np.ndarray, *, record: bool = False,
        modulators: np.ndarray | None = None, state: GoldenState | None = None) -> GoldenResult:
    """Run a batch of spike trains through the image; every sample starts from rest, or from
    `state` (a previous result's `.state`, for the same batch size), which is not changed.

    An image with learning rules runs its samples in sequence (sim/learning.py); `modulators`
    feeds the three-factor rule.
    """
    if image.learning or modulators is not None:
        if state is not None:
            raise ValueError("state cannot continue a learning run: its samples run in "
                             "sequence, each from rest")
        return run_learning(image, spikes, modulators, record=record)
    x_all = given(spikes, image.n_inputs)
    batch, steps, _ = x_all.shape
    if state is None:
        state = GoldenState.rest(image, batch)
    else:
        GoldenState.check(state, image, batch)
    layers = image.layers
    # Sums of counts times integer weights are exact in floating point while they stay
    # below 2^24 (float32) or 2^53 (float64); acc_bits bounds them, so BLAS accumulates.
    fdt = [np.float32 if layer.acc_bits <= 24 else np.float64 for layer in layers]
    idt = [work_dtype(layer) for layer in layers]
    w_ff = [layer.weights.T.astype(f) for layer, f in zip(layers, fdt)]
    w_rec = [None if layer.rec_weights is None else layer.rec_weights.T.astype(f)
             for layer, f in zip(layers, fdt)]
    x_steps = np.ascontiguousarray(x_all.transpose(1, 0, 2))  # [time, batch, n]
    v = [a.astype(d) for a, d in zip(state.v, idt)]
    syn = [None if a is None else a.astype(d) for a, d in zip(state.syn, idt)]
    c = [a.copy() for a in state.counts]
    sats = np.zeros((batch, len(layers)), dtype=np.int64)
    out_spikes = [np.zeros((steps, batch, layer.n_out), dtype=np.uint8) for layer in layers]
    keep_v = [record or (index == len(layers) - 1 and not layer.spiking)
              for index, layer in enumerate(layers)]
    out_v = [np.zeros((steps, batch, layer.n_out), dtype=np.int32) if keep else None
             for layer, keep in zip(layers, keep_v)]
    out_syn = [np.zeros((steps, batch, layer.n_out), dtype=np.int32)
               if record and layer.current_based else None for layer in layers]
    params = [NeuronParams(layer, d) for layer, d in zip(layers, idt)]
    for t in range(steps):
        x = x_steps[t]
        for index in range(len(layers)):
            if layers[index].conv is not None:
                acc = conv_currents(x.astype(fdt[index]), layers[index].conv, w_ff[index])
            elif x.dtype == fdt[index]:
                acc = x @ w_ff[index]
            else:
                acc = x.astype(fdt[index]) @ w_ff[index]
            if w_rec[index] is not None:
                acc += c[index].astype(fdt[index]) @ w_rec[index]
            # exact: the sums are whole numbers
            v[index], syn[index], c[index], saturated = params[index].update(
                v[index], syn[index], c[index], acc.astype(idt[index]))
            sats[:, index] += saturated
            out_spikes[index][t] = c[index]
            if keep_v[index]:
                out_v[index][t] = v[index]
            if out_syn[index] is not None:
                out_syn[index][t] = syn[index]
            x = c[index]
    layer_spikes = [np.ascontiguousarray(o.transpose(1, 0, 2)) for o in out_spikes]
    counts, events, sops = count_work(image, x_all, layer_spikes, state)
    membranes = [None if o is None else np.ascontiguousarray(o.transpose(1, 0, 2))
                 for o in out_v]
    last = layers[-1]
    return GoldenResult(
        spikes=layer_spikes[-1],
        layer_spikes=layer_spikes if record else None,
        membranes=membranes if record else None,
        final_membranes=[vi.astype(np.int32) for vi in v],
        events_in=events, sops=sops, spike_counts=counts, saturations=sats,
        values=None if last.spiking else membranes[-1],
        scale=None if last.spiking else float(last.scale),
        state=GoldenState([vi.astype(np.int64) for vi in v],
                          [None if si is None else si.astype(np.int64) for si in syn],
                          c, state.steps + steps),
        currents=[None if o is None else np.ascontiguousarray(o.transpose(1, 0, 2))
                  for o in out_syn] if record else None)

"""The golden model of on-chip learning: bit-exact STDP and three-factor plasticity.

docs/learning.md is the prose of this file. Samples run in sequence: weights (and the LFSRs)
carry over from sample to sample; membranes, spikes and traces start from zero with each sample
(the `clear` of the hardware). Within timestep t, for a learning layer:

1. Integration and the neuron pass exactly as sim/golden.py: the weights are only read.
2. Then each core of the layer (neurons [lo, hi)) runs its learning phase, in this order:

   a. for each input row j ascending: x_j <- sat(x_j - (x_j >> trace_shift) + trace_inc *
      s_in[j, t]); STDP: if input j spiked at t, for each neuron i of the core ascending:
      w_ij <- clip(w_ij - R(y_i, ltd_shift))        (y_i is still y_i[t-1])
   b. STDP: for each neuron i of the core ascending: y_i <- sat(y_i - (y_i >> trace_shift) +
      trace_inc * s_i[t]); if i fired at t, for each row j ascending:
      w_ij <- clip(w_ij + R(x_j[t], ltp_shift))
      Three-factor: for each neuron i of the core ascending with m_i[t] != 0, for each row j
      ascending: w_ij <- clip(w_ij + R(m_i[t] * x_j[t], mod_shift))

sat clips a trace to 2^trace_bits - 1; clip a weight to its signed range. R(a, n) = a >> n
(floor) or, with stochastic rounding, (a + (r & (2^n - 1))) >> n where r is the state of the
core's 16-bit Galois LFSR (taps 0xB400; spikeforge/lfsr.py). Each core holds one LFSR; it
steps once per weight update (one update is one clock cycle of the learning unit) and never
otherwise. Core c's LFSR starts at LFSR_SEQUENCE[(position of seed + 251 * 256 * c) mod 65535].
"""

from __future__ import annotations

import numpy as np

from ..image import Image, LearningConfig
from ..lfsr import LFSR_PERIOD, lfsr_sequence, lfsr_start
from .encode import given
from .lif import GoldenResult, NeuronParams, conv_currents, count_work


def check_modulators(image: Image, modulators, batch: int, steps: int) -> np.ndarray | None:
    """int8 [batch, time, n_out of the three-factor layer], or None when no layer needs one."""
    needs = [e for e in image.learning if e.rule == "three_factor"]
    if not needs:
        if modulators is not None:
            raise ValueError("modulators given, but no layer learns by the three-factor rule")
        return None
    n_out = image.layers[needs[0].layer].n_out
    if modulators is None:
        raise ValueError(f"layer {needs[0].layer} learns by the three-factor rule: give "
                         f"modulators, int8 [batch, time, {n_out}]")
    arr = np.asarray(modulators)
    if arr.ndim == 2 and batch == 1:
        arr = arr[None]
    if arr.shape != (batch, steps, n_out):
        raise ValueError(f"modulators must be int8 [batch, time, neurons] = "
                         f"{[batch, steps, n_out]}, not {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"modulators must be integers (int8), not dtype {arr.dtype}")
    if arr.size and (arr.min() < -128 or arr.max() > 127):
        raise ValueError("modulators must lie in the int8 range -128..127")
    return arr.astype(np.int64)


class _Plastic:
    """One learning layer's weights, traces and per-core LFSR draw counters."""

    def __init__(self, image: Image, entry: LearningConfig):
        self.entry = entry
        self.layer = image.layers[entry.layer]
        self.w = self.layer.weights.astype(np.int64)
        self.wmin = -(1 << (self.layer.weight_bits - 1))
        self.wmax = (1 << (self.layer.weight_bits - 1)) - 1
        self.tmax = (1 << entry.trace_bits) - 1
        self.cores = [(c_index, core) for c_index, core in enumerate(image.config.cores)
                      if core.layer == entry.layer]
        self.start = {c: lfsr_start(entry.seed, c) for c, _ in self.cores}
        self.draws = {c: 0 for c, _ in self.cores}
        self.updates = 0
        self.clear()

    def clear(self) -> None:
        self.x = np.zeros(self.layer.n_in, dtype=np.int64)
        self.y = np.zeros(self.layer.n_out, dtype=np.int64)

    def _round(self, value: np.ndarray, shift: int, core: int) -> np.ndarray:
        """R(value, shift) for `value.size` successive updates of `core` (in C order)."""
        n = value.size
        if self.entry.stochastic and shift and n:
            k = self.start[core] + self.draws[core] + np.arange(n).reshape(value.shape)
            value = value + (lfsr_sequence()[k % LFSR_PERIOD] & ((1 << shift) - 1))
        self.draws[core] += n
        self.updates += n
        return value >> shift

    def _trace(self, old: np.ndarray, spikes: np.ndarray) -> np.ndarray:
        e = self.entry
        return np.minimum(old - (old >> e.trace_shift) + e.trace_inc * spikes, self.tmax)

    def learn(self, x_in: np.ndarray, s_out: np.ndarray, m: np.ndarray | None) -> None:
        """The learning phase of step t (a, then b, core by core) after the neuron pass."""
        e = self.entry
        rows = np.flatnonzero(x_in)
        x_new = self._trace(self.x, x_in)
        for c, core in self.cores:
            neurons = np.arange(core.lo, core.hi)
            if e.rule == "stdp":
                # a. rows that spiked, ascending; neurons of the core ascending; y is y[t-1]
                dw = self._round(np.broadcast_to(self.y[neurons], (rows.size, neurons.size)),
                                 e.ltd_shift, c)
                block = self.w[np.ix_(neurons, rows)]
                self.w[np.ix_(neurons, rows)] = np.clip(block - dw.T, self.wmin, self.wmax)
                # b. neurons that fired, ascending; rows ascending
                active = neurons[s_out[neurons] > 0]
                dw = self._round(np.broadcast_to(x_new, (active.size, x_new.size)),
                                 e.ltp_shift, c)
                self.w[active] = np.clip(self.w[active] + dw, self.wmin, self.wmax)
            else:
                active = neurons[m[neurons] != 0]
                dw = self._round(m[active][:, None] * x_new[None, :], e.mod_shift, c)
                self.w[active] = np.clip(self.w[active] + dw, self.wmin, self.wmax)
        self.x = x_new
        if e.rule == "stdp":
            self.y = self._trace(self.y, s_out)


def run_learning(image: Image, spikes: np.ndarray, modulators=None, *, record: bool = False):
    """Samples in sequence with the image's learning rules; returns a GoldenResult with
    `weights` (every layer's [n_out, n_in] after the run) and `image` (the learned image)."""
    x_all = given(spikes, image.n_inputs)
    batch, steps, _ = x_all.shape
    mods = check_modulators(image, modulators, batch, steps)
    plastic = {e.layer: _Plastic(image, e) for e in image.learning}
    results = []
    current = image
    for b in range(batch):
        for p in plastic.values():
            p.clear()
        trace = _run_sample(current, x_all[b], plastic, None if mods is None else mods[b])
        results.append(trace)
        current = current.with_weights([plastic[i].w.astype(np.int32) if i in plastic
                                        else layer.weights
                                        for i, layer in enumerate(image.layers)])
    layer_spikes = [np.stack([r[0][i] for r in results]) for i in range(len(image.layers))]
    membranes = [np.stack([r[1][i] for r in results]) for i in range(len(image.layers))]
    sats = np.stack([r[2] for r in results])
    counts, events, sops = count_work(image, x_all, layer_spikes)
    learned = current
    return GoldenResult(
        spikes=layer_spikes[-1], layer_spikes=layer_spikes if record else None,
        membranes=membranes if record else None,
        final_membranes=[m[:, -1] if steps else np.zeros((batch, m.shape[2]), np.int32)
                         for m in membranes],
        events_in=events, sops=sops, spike_counts=counts, saturations=sats,
        weights=[layer.weights.copy() for layer in learned.layers], image=learned,
        learning={e.layer: {"updates": plastic[e.layer].updates,
                            "update_cycles": plastic[e.layer].updates}
                  for e in image.learning})


def _run_sample(image: Image, x: np.ndarray, plastic: dict, mods: np.ndarray | None):
    """One sample, step by step (docs/neuron.md + the learning order above)."""
    steps = x.shape[0]
    n_layers = len(image.layers)
    v = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    syn = [np.zeros(layer.n_out, dtype=np.int64) if layer.current_based else None
           for layer in image.layers]
    s = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    params = [NeuronParams(layer, np.int64) for layer in image.layers]
    spk = [np.zeros((steps, layer.n_out), dtype=np.uint8) for layer in image.layers]
    mem = [np.zeros((steps, layer.n_out), dtype=np.int32) for layer in image.layers]
    sats = np.zeros(n_layers, dtype=np.int64)
    for t in range(steps):
        inp = x[t].astype(np.int64)
        for index, layer in enumerate(image.layers):
            p = plastic.get(index)
            if layer.conv is not None:  # a convolution never learns (LearningConfig.check)
                acc = conv_currents(inp[None].astype(np.float64), layer.conv,
                                    layer.weights.T.astype(np.float64))[0].astype(np.int64)
            else:
                w = p.w if p is not None else layer.weights
                acc = w @ inp  # the weights are only read during integration
            s_prev = s[index]
            if layer.recurrent:
                acc = acc + layer.rec_weights.astype(np.int64) @ s_prev
            v[index], syn[index], spikes, saturated = params[index].update(
                v[index], syn[index], s_prev, acc)
            s[index] = spikes.astype(np.int64)
            sats[index] += saturated
            spk[index][t] = s[index]
            mem[index][t] = v[index]
            if p is not None:
                p.learn(inp, s[index], None if mods is None else mods[t])
            inp = s[index]
    return spk, mem, sats


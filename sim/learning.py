"""The golden model of on-chip learning: bit-exact STDP and three-factor plasticity.

docs/learning.md is the prose of this file. Samples run in sequence: weights (and the LFSRs)
carry over from sample to sample; membranes, spikes and traces start from zero with each sample
(the `clear` of the hardware). Within timestep t, for a learning layer, in this order:

1. Integration. The step's input events arrive in ascending address order; each reads its
   weight row (the membrane update uses the weights as read). STDP only: the same read-modify-
   write depresses the row: w_ij <- clip(w_ij - R(y_i[t-1], ltd_shift)) for every neuron i.
2. Neuron pass: v, s[t] exactly as sim/golden.py.
3. Traces: y_i[t] = sat(y_i[t-1] - (y_i[t-1] >> trace_shift) + trace_inc * s_i[t]) and the
   same for x_j[t] with the input spikes s_in[j, t]; sat clips to 2^trace_bits - 1.
4. STDP: for each lane group that holds a spiking neuron (ascending), for each row j
   (ascending): w_ij <- clip(w_ij + R(x_j[t], ltp_shift)) for the spiking neurons i of the group.
   Three-factor: for each row j, for each group: w_ij <- clip(w_ij + R(m_i[t] * x_j[t],
   mod_shift)) for every neuron i of the group.

R(a, n) = a >> n (floor) or, with stochastic rounding, (a + (r & (2^n - 1))) >> n where r is the
state of the lane's 16-bit Galois LFSR (taps 0xB400). Every lane of a core holds one LFSR; all
of a core's LFSRs step once per weight read-modify-write cycle of the core (the cycles listed
above: groups per input event in 1., n_in per spiking group in 4. for STDP, n_in x groups in 4.
for three-factor), whether or not that lane's update is used, and never step otherwise. Lane p
of core c starts at LFSR_SEQUENCE[(position of seed + 251 * (256 c + p)) mod 65535].
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..compiler.image import Image, LearningConfig
from .encode import given

LFSR_TAPS = 0xB400
LFSR_PERIOD = 0xFFFF
LANE_STRIDE = 251


@lru_cache(maxsize=1)
def lfsr_sequence() -> np.ndarray:
    """The 65535 states of the 16-bit Galois LFSR, starting from state 1."""
    out = np.empty(LFSR_PERIOD, dtype=np.int64)
    state = 1
    for index in range(LFSR_PERIOD):
        out[index] = state
        lsb = state & 1
        state >>= 1
        if lsb:
            state ^= LFSR_TAPS
    return out


@lru_cache(maxsize=1)
def _positions() -> np.ndarray:
    pos = np.empty(LFSR_PERIOD + 1, dtype=np.int64)
    pos[lfsr_sequence()] = np.arange(LFSR_PERIOD)
    return pos


def lfsr_start(seed: int, core: int, lane: int) -> int:
    """Index into lfsr_sequence() of the first state of lane `lane` of core `core`."""
    return int((_positions()[seed] + LANE_STRIDE * (256 * core + lane)) % LFSR_PERIOD)


def lfsr_initial_state(seed: int, core: int, lane: int) -> int:
    """The value the gateware loads into that lane's LFSR at reset."""
    return int(lfsr_sequence()[lfsr_start(seed, core, lane)])


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
        self.start = {c: np.array([lfsr_start(entry.seed, c, p) for p in range(core.lanes)])
                      for c, core in self.cores}
        self.draws = {c: 0 for c, _ in self.cores}
        self.updates = 0
        self.cycles = 0
        self.clear()

    def clear(self) -> None:
        self.x = np.zeros(self.layer.n_in, dtype=np.int64)
        self.y = np.zeros(self.layer.n_out, dtype=np.int64)

    def _round(self, value: np.ndarray, shift: int, core: int, k: np.ndarray) -> np.ndarray:
        """R(value, shift); `k` [..., lanes] are the draw indices of each lane."""
        if self.entry.stochastic and shift:
            states = lfsr_sequence()[(self.start[core] + k) % LFSR_PERIOD]
            value = value + (states & ((1 << shift) - 1))
        return value >> shift

    def _tile(self, core):
        """Padded neuron indices [groups, lanes] of a core and their validity."""
        idx = core.lo + np.arange(core.groups * core.lanes).reshape(core.groups, core.lanes)
        return np.minimum(idx, core.hi - 1), idx < core.hi

    def depress(self, x_in: np.ndarray) -> None:
        """STDP, during integration: each input event's row loses R(y_i, ltd_shift)."""
        rows = np.flatnonzero(x_in)
        if not rows.size:
            return
        for c, core in self.cores:
            idx, valid = self._tile(core)
            k = (self.draws[c] + np.arange(rows.size)[:, None, None] * core.groups
                 + np.arange(core.groups)[None, :, None] + np.zeros(core.lanes, np.int64))
            dw = self._round(np.broadcast_to(self.y[idx][None], k.shape), self.entry.ltd_shift,
                             c, k)
            cols = np.broadcast_to(rows[:, None, None], dw.shape)
            sel = np.broadcast_to(valid, dw.shape)
            rows_i = np.broadcast_to(idx, dw.shape)
            self.w[rows_i[sel], cols[sel]] = np.clip(
                self.w[rows_i[sel], cols[sel]] - dw[sel], self.wmin, self.wmax)
            self.draws[c] += rows.size * core.groups
            self.cycles += rows.size * core.groups
            self.updates += int(sel.sum())

    def traces(self, x_in: np.ndarray, s_out: np.ndarray) -> None:
        e = self.entry
        self.x = np.minimum(self.x - (self.x >> e.trace_shift) + e.trace_inc * x_in, self.tmax)
        self.y = np.minimum(self.y - (self.y >> e.trace_shift) + e.trace_inc * s_out, self.tmax)

    def potentiate(self, s_out: np.ndarray) -> None:
        """STDP, after the pass: spiking neurons gain R(x_j, ltp_shift) on every row j."""
        n_in = self.layer.n_in
        for c, core in self.cores:
            idx, valid = self._tile(core)
            fired = (s_out[idx] > 0) & valid  # [G, P]
            groups = np.flatnonzero(fired.any(axis=1))
            for q, g in enumerate(groups):
                k = self.draws[c] + q * n_in + np.arange(n_in)[:, None] + np.zeros(
                    core.lanes, np.int64)  # [n_in, P]
                dw = self._round(np.broadcast_to(self.x[:, None], k.shape), self.entry.ltp_shift,
                                 c, k)
                lanes = np.flatnonzero(fired[g])
                neurons = idx[g, lanes]
                self.w[neurons, :] = np.clip(self.w[neurons, :] + dw[:, lanes].T,
                                             self.wmin, self.wmax)
                self.updates += lanes.size * n_in
            self.draws[c] += groups.size * n_in
            self.cycles += groups.size * n_in

    def modulate(self, m: np.ndarray) -> None:
        """Three-factor, end of step: w_ij += R(m_i x_j, mod_shift) for all i, j."""
        n_in = self.layer.n_in
        for c, core in self.cores:
            idx, valid = self._tile(core)
            k = (self.draws[c] + np.arange(n_in)[:, None, None] * core.groups
                 + np.arange(core.groups)[None, :, None] + np.zeros(core.lanes, np.int64))
            dw = self._round(np.broadcast_to(m[idx][None] * self.x[:, None, None], k.shape),
                             self.entry.mod_shift, c, k)
            sel = valid.reshape(-1)
            neurons = idx.reshape(-1)[sel]
            dw = dw.reshape(n_in, -1)[:, sel]  # [n_in, neurons of the core]
            self.w[neurons, :] = np.clip(self.w[neurons, :] + dw.T, self.wmin, self.wmax)
            self.draws[c] += n_in * core.groups
            self.cycles += n_in * core.groups
            self.updates += neurons.size * n_in


def run_learning(image: Image, spikes: np.ndarray, modulators=None, *, record: bool = False):
    """Samples in sequence with the image's learning rules; returns a GoldenResult with
    `weights` (every layer's [n_out, n_in] after the run) and `image` (the learned image)."""
    from .golden import GoldenResult, count_work

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
                            "update_cycles": plastic[e.layer].cycles}
                  for e in image.learning})


def _run_sample(image: Image, x: np.ndarray, plastic: dict, mods: np.ndarray | None):
    """One sample, step by step (docs/neuron.md + the learning order above)."""
    from .golden import NeuronParams

    steps = x.shape[0]
    n_layers = len(image.layers)
    v = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    s = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    params = [NeuronParams(layer, np.int64) for layer in image.layers]
    spk = [np.zeros((steps, layer.n_out), dtype=np.uint8) for layer in image.layers]
    mem = [np.zeros((steps, layer.n_out), dtype=np.int32) for layer in image.layers]
    sats = np.zeros(n_layers, dtype=np.int64)
    for t in range(steps):
        inp = x[t].astype(np.int64)
        for index, layer in enumerate(image.layers):
            p = plastic.get(index)
            w = p.w if p is not None else layer.weights
            acc = w @ inp  # the rows as read, before this step's depression
            if p is not None and p.entry.rule == "stdp":
                p.depress(inp)
            s_prev = s[index]
            if layer.recurrent:
                acc = acc + layer.rec_weights.astype(np.int64) @ s_prev
            v[index], spikes, saturated = params[index].update(v[index], s_prev, acc)
            s[index] = spikes.astype(np.int64)
            sats[index] += saturated
            spk[index][t] = s[index]
            mem[index][t] = v[index]
            if p is not None:
                p.traces(inp, s[index])
                if p.entry.rule == "stdp":
                    p.potentiate(s[index])
                else:
                    p.modulate(mods[t])
            inp = s[index]
    return spk, mem, sats


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

from dataclasses import dataclass

import numpy as np

from ..image import ConvSpec, Image, LayerParams
from .encode import given


@dataclass
class GoldenState:
    """The network's state after a step: every layer's membrane (before its reset), synaptic
    current (None for a layer without one) and spike counts, per sample of the batch."""

    v: list[np.ndarray]  # per layer int64 [batch, n]
    syn: list[np.ndarray | None]  # per layer int64 [batch, n], or None
    counts: list[np.ndarray]  # per layer uint8 [batch, n]: the last step's spike counts
    steps: int = 0  # steps run since rest

    @classmethod
    def rest(cls, image: Image, batch: int) -> GoldenState:
        return cls(v=[np.zeros((batch, layer.n_out), np.int64) for layer in image.layers],
                   syn=[np.zeros((batch, layer.n_out), np.int64) if layer.current_based
                        else None for layer in image.layers],
                   counts=[np.zeros((batch, layer.n_out), np.uint8) for layer in image.layers])

    @property
    def batch(self) -> int:
        return self.v[0].shape[0]

    def copy(self) -> GoldenState:
        return GoldenState([v.copy() for v in self.v],
                           [None if s is None else s.copy() for s in self.syn],
                           [c.copy() for c in self.counts], self.steps)

    def check(self, image: Image, batch: int) -> None:
        """Raise ValueError unless this state belongs to `image` and a batch of `batch`."""
        if not isinstance(self, GoldenState):
            raise TypeError(f"state must be a GoldenState, not {type(self).__name__}")
        if not (len(self.v) == len(self.syn) == len(self.counts) == len(image.layers)):
            raise ValueError(f"state must hold {len(image.layers)} layers, not {len(self.v)}")
        for index, layer in enumerate(image.layers):
            shape = (batch, layer.n_out)
            arrays = (self.v[index], self.counts[index]) + \
                ((self.syn[index],) if layer.current_based else ())
            if any(np.shape(a) != shape for a in arrays) or \
                    (self.syn[index] is None) == layer.current_based:
                got = list(np.shape(self.v[index]))
                raise ValueError(f"state must fit the image and a batch of {batch} "
                                 f"(layer {index}: {list(shape)}), not {got}")
            lo, hi = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1
            if self.v[index].size and (self.v[index].min() < lo or self.v[index].max() > hi):
                raise ValueError(f"state of layer {index}: membranes must fit {layer.v_bits} "
                                 f"bits")
            if self.counts[index].size and int(self.counts[index].max()) > layer.max_spikes:
                raise ValueError(f"state of layer {index}: counts must be 0..{layer.max_spikes}")


@dataclass
class GoldenResult:
    spikes: np.ndarray  # uint8 [batch, time, n_out] of the output layer (counts)
    layer_spikes: list[np.ndarray] | None  # per layer uint8 [batch, time, n]; when recorded
    membranes: list[np.ndarray] | None  # per layer int32 [batch, time, n]; when recorded
    final_membranes: list[np.ndarray]  # per layer int32 [batch, n]: v after the last step
    events_in: np.ndarray  # int64 [batch, layers]: input events (feed-forward + recurrent)
    sops: np.ndarray  # int64 [batch, layers]: synaptic operations = events x fan-out
    spike_counts: np.ndarray  # int64 [batch, layers]
    saturations: np.ndarray  # int64 [batch, layers]: membrane and current updates that saturated
    weights: list[np.ndarray] | None = None  # with learning: every layer's weights after the run
    image: Image | None = None  # with learning: the image holding the learned weights
    learning: dict | None = None  # with learning: per layer, updates and their cycles
    values: np.ndarray | None = None  # LI readout: int32 [batch, time, n_out], its v
    scale: float | None = None  # LI readout: the real value of one LSB of `values`
    state: GoldenState | None = None  # the state after the last step (run(..., state=) goes on)
    currents: list[np.ndarray | None] | None = None  # per layer int32 [batch, time, n] of syn
    # (None for a layer without one); when recorded


def _decay(v: np.ndarray, mode: str, shift, beta_q, frac: int) -> np.ndarray:
    if mode == "none":
        return v
    if mode == "shift":
        return v - (v >> shift)
    return (v * beta_q) >> frac


def _saturate(u: np.ndarray, lo: int, hi: int):
    """(clamp(u, lo, hi), saturations per row)."""
    if u.max(initial=0) > hi or u.min(initial=0) < lo:
        clipped = np.clip(u, lo, hi)
        return clipped, np.count_nonzero(clipped != u, axis=-1)
    return u, 0


class NeuronParams:
    """A layer's per-neuron constants in the integer type the update runs in."""

    def __init__(self, layer: LayerParams, dtype):
        self.layer = layer
        self.dtype = dtype
        self.bias = layer.bias.astype(dtype)
        self.theta = layer.threshold.astype(dtype)
        self.shift = None if layer.decay_shift is None else layer.decay_shift.astype(dtype)
        self.beta_q = None if layer.decay_mul is None else layer.decay_mul.astype(dtype)
        self.lo, self.hi = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1
        self.syn_shift = None if layer.syn_decay_shift is None else \
            layer.syn_decay_shift.astype(dtype)
        self.alpha_q = None if layer.syn_decay_mul is None else layer.syn_decay_mul.astype(dtype)
        if layer.current_based:
            self.syn_lo, self.syn_hi = -(1 << (layer.syn_bits - 1)), (1 << (layer.syn_bits - 1)) - 1
        self.theta_safe = np.maximum(self.theta, 1)  # the division below never sees theta = 0

    def decay(self, v: np.ndarray) -> np.ndarray:
        layer = self.layer
        return _decay(v, layer.decay_mode, self.shift, self.beta_q, layer.decay_frac)

    def decay_syn(self, syn: np.ndarray) -> np.ndarray:
        layer = self.layer
        return _decay(syn, layer.syn_decay_mode, self.syn_shift, self.alpha_q,
                      layer.syn_decay_frac)

    def update(self, v: np.ndarray, syn: np.ndarray | None, c_prev: np.ndarray,
               a: np.ndarray):
        """One step of docs/neuron.md: (v[t], syn[t], c[t], saturations per row) from v[t-1],
        syn[t-1], c[t-1] and the accumulator A[t]."""
        layer = self.layer
        sats = 0
        if layer.current_based:
            syn_new, sats = _saturate(self.decay_syn(syn) + a + self.bias,
                                      self.syn_lo, self.syn_hi)
            j = syn if layer.syn_delay else syn_new
        else:
            syn_new, j = None, a + self.bias
        reset = c_prev.astype(self.dtype)
        if not layer.spiking:
            u = self.decay(v) + j
        elif layer.reset == "zero":
            u = self.decay(v * (reset == 0)) + j
        elif layer.reset_delay:
            u = self.decay(v) + j - self.theta * reset
        else:
            u = self.decay(v - self.theta * reset) + j
        v_new, sats_v = _saturate(u, self.lo, self.hi)
        return v_new, syn_new, self.fire(v_new), sats + sats_v

    def fire(self, v: np.ndarray) -> np.ndarray:
        """c = min(K, number of levels j >= 1 with v > j * theta), or v >= j * theta."""
        layer = self.layer
        if not layer.spiking:
            return np.zeros(v.shape, np.uint8)
        strict = layer.compare == ">"
        if layer.max_spikes == 1:
            return ((v > self.theta) if strict else (v >= self.theta)).view(np.uint8)
        k = layer.max_spikes
        # integers: v > j * theta  <=>  j <= (v - 1) // theta;  v >= j * theta  <=>  j <= v // theta
        levels = (v - 1) // self.theta_safe if strict else v // self.theta_safe
        at_zero = np.where((v > 0) if strict else (v >= 0), k, 0)  # theta = 0: all K or none
        levels = np.where(self.theta == 0, at_zero, levels)
        return np.clip(levels, 0, k).astype(np.uint8)


def conv_currents(x: np.ndarray, conv: ConvSpec, kernel_t: np.ndarray) -> np.ndarray:
    """A[t] of a convolutional layer: [batch, n_out] from the source's counts [batch, n_in]
    and the kernel transposed, [C_in * K * K, C_out], both of a float dtype in which the
    integer sums are exact (acc_bits bounds them). docs/neuron.md:

        conv[o, y, x] = sum_{c,i,j} W[o, c, i, j] * s_in[c, y*stride + i - pad, x*stride + j - pad]
                        (positions off the map read 0)
        A[o, y, x]    = conv[o, y, x]                                   pool "none"
                      = max_{a, b < p} conv[o, p*y + a, p*x + b]        pool "max"
                      = sum_{a, b < p} conv[o, p*y + a, p*x + b]        pool "sum"
    """
    batch = x.shape[0]
    k, s, pad, p = conv.kernel, conv.stride, conv.padding, conv.pool_size
    conv_h, conv_w = conv.conv_shape
    maps = x.reshape(batch, conv.in_channels, conv.height, conv.width)
    if pad:
        maps = np.pad(maps, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(maps, (k, k), axis=(2, 3))
    windows = windows[:, :, :(conv_h - 1) * s + 1:s, :(conv_w - 1) * s + 1:s]
    # [batch, conv_h, conv_w, C_in * K * K] in the kernel's (c, i, j) order
    patches = windows.transpose(0, 2, 3, 1, 4, 5).reshape(batch, conv_h, conv_w, -1)
    acc = (patches @ kernel_t).transpose(0, 3, 1, 2)  # [batch, C_out, conv_h, conv_w]
    if conv.pool != "none":
        tiles = acc.reshape(batch, conv.out_channels, conv_h // p, p, conv_w // p, p)
        acc = tiles.max(axis=(3, 5)) if conv.pool == "max" else tiles.sum(axis=(3, 5))
    return np.ascontiguousarray(acc).reshape(batch, -1)


def _work_dtype(layer: LayerParams) -> type:
    """int32 where no intermediate of the update can reach 2^31, else int64."""
    theta_bits = (int(layer.threshold.max(initial=0)) * layer.max_spikes).bit_length() + 1
    widest = max(layer.v_bits, layer.acc_bits, theta_bits, layer.syn_bits) + 2
    if layer.decay_mode == "mul":
        widest = max(widest, layer.v_bits + layer.decay_frac + 2)
    if layer.syn_decay_mode == "mul":
        widest = max(widest, layer.syn_bits + layer.syn_decay_frac + 2)
    return np.int32 if widest <= 31 else np.int64


def count_work(image: Image, x_all: np.ndarray, layer_spikes: list[np.ndarray],
               start: GoldenState | None = None):
    """Per sample and layer: spikes, input events (feed-forward + recurrent), synaptic ops.

    Each of a count's spikes is one event. A recurrent layer's spikes of the step before the run
    (`start`) come back as inputs at its first step."""
    counts = np.stack([o.sum(axis=(1, 2), dtype=np.int64) for o in layer_spikes], axis=1)
    events = np.zeros_like(counts)
    source = x_all.sum(axis=(1, 2), dtype=np.int64)
    for index, layer in enumerate(image.layers):
        events[:, index] = source
        if layer.recurrent and layer_spikes[index].shape[1]:
            # the spikes of steps -1..T-2 come back as inputs one step later
            events[:, index] += counts[:, index] - layer_spikes[index][:, -1].sum(
                axis=1, dtype=np.int64)
            if start is not None:
                events[:, index] += start.counts[index].sum(axis=1, dtype=np.int64)
        source = counts[:, index]
    sops = events * np.array([layer.n_out for layer in image.layers], dtype=np.int64)
    for index, layer in enumerate(image.layers):
        if layer.conv is not None:  # an event reaches only the positions its kernel touches
            source = x_all if index == 0 else layer_spikes[index - 1]
            sops[:, index] = source.sum(axis=1, dtype=np.int64) @ layer.fan_out
    return counts, events, sops


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
        from .learning import run_learning
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
    idt = [_work_dtype(layer) for layer in layers]
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

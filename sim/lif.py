"""The LIF update of one layer and the work it counts: the core of the golden model
(sim/golden.py runs whole images; sim/learning.py adds plasticity on top).

The equations are docs/neuron.md's, written out in sim/golden.py's docstring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..image import ConvSpec, Image, LayerParams

__all__ = ["GoldenResult", "GoldenState", "NeuronParams", "conv_currents", "count_work",
           "work_dtype"]


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


def work_dtype(layer: LayerParams) -> type:
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

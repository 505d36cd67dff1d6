"""The fixed-point image: hardware configuration, per-layer parameters and weight memories.

The image is the one artefact the golden model, the gateware generator and the board runtime
share. Its weights are stored as the device's weight memories hold them (see
docs/image-format.md): per core, one word per (fan-in row, lane group), `lanes` two's-complement
weights of `weight_bits` bits packed little-endian, lane p in bits [p*w, (p+1)*w).
"""

from __future__ import annotations

import json
import operator
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

MAGIC = b"SFIMAGE\x00"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sHHII")  # magic, version, reserved, header and payload lengths
_TRAILER = struct.Struct("<I")  # CRC-32 of everything before it

DECAY_MODES = ("none", "shift", "mul")
RESET_MODES = ("subtract", "zero")
COMPARES = (">", ">=")
MAX_SPIKES_LIMIT = 255  # spike counts travel as uint8


class ImageError(ValueError):
    """An image file or image object is malformed; the message says what is wrong."""


def _signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


POOLS = ("none", "max", "sum")


@dataclass(frozen=True)
class ConvSpec:
    """The geometry of a convolutional layer (docs/neuron.md, "Convolution and pooling").

    The source's counts form a map [in_channels, height, width] in C order. The layer convolves
    it with a square kernel (cross-correlation, as torch's Conv2d), with `stride` and zero
    `padding`, giving currents [out_channels, conv_height, conv_width]; `pool` ("none", "max"
    on the integer currents, or "sum") over `pool` x `pool` tiles with stride = size gives the
    neurons [out_channels, out_height, out_width], again in C order. The layer's `weights` are
    the kernel flattened per output channel: [out_channels, in_channels * kernel * kernel].
    """

    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    pool: str = "none"
    pool_size: int = 1

    FIELDS = ("in_channels", "height", "width", "out_channels", "kernel", "stride", "padding",
              "pool", "pool_size")

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "convolution") -> None:
        """Raise ImageError unless the geometry is whole: every check of a conv field."""
        for name, low in (("in_channels", 1), ("height", 1), ("width", 1), ("out_channels", 1),
                          ("kernel", 1), ("stride", 1), ("padding", 0), ("pool_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or value < low:
                raise ImageError(f"{where}: {name} must be an integer >= {low}, not {value!r}")
        if self.pool not in POOLS:
            raise ImageError(f"{where}: pool must be one of {POOLS}, not {self.pool!r}")
        if (self.pool == "none") != (self.pool_size == 1):
            raise ImageError(f"{where}: pool size must be 1 exactly when pool is 'none', "
                             f"not {self.pool_size!r} with pool {self.pool!r}")
        if self.padding >= self.kernel:
            raise ImageError(f"{where}: padding must be smaller than the kernel "
                             f"{self.kernel}, not {self.padding!r}")
        conv_h, conv_w = self.conv_shape
        if conv_h < 1 or conv_w < 1:
            raise ImageError(f"{where}: a {self.kernel}x{self.kernel} kernel with padding "
                             f"{self.padding} does not fit a {self.height}x{self.width} map")
        if conv_h % self.pool_size or conv_w % self.pool_size:
            raise ImageError(f"{where}: a {self.pool_size}x{self.pool_size} pool must tile the "
                             f"{conv_h}x{conv_w} map")

    @property
    def conv_shape(self) -> tuple[int, int]:
        """Height and width of the convolution's output, before pooling."""
        span = self.kernel - 1
        return ((self.height + 2 * self.padding - span - 1) // self.stride + 1,
                (self.width + 2 * self.padding - span - 1) // self.stride + 1)

    @property
    def out_shape(self) -> tuple[int, int, int]:
        conv_h, conv_w = self.conv_shape
        return self.out_channels, conv_h // self.pool_size, conv_w // self.pool_size

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.in_channels, self.height, self.width

    @property
    def n_in(self) -> int:
        return self.in_channels * self.height * self.width

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def taps(self) -> int:
        """Weights per output channel: in_channels * kernel^2."""
        return self.in_channels * self.kernel * self.kernel

    def to_dict(self) -> dict:
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}

    @classmethod
    def from_dict(cls, entry, where: str = "convolution") -> ConvSpec:
        if not isinstance(entry, dict) or set(entry) != set(cls.FIELDS):
            raise ImageError(f"{where}: a convolution must hold the fields "
                             f"{', '.join(cls.FIELDS)}, not {entry!r}")
        try:
            return cls(**entry)
        except ImageError as exc:
            raise ImageError(f"{where}: {str(exc).removeprefix('convolution: ')}") from None


def conv_fan_out(conv: ConvSpec) -> np.ndarray:
    """int64 [n_in]: for each input (c, y, x), the output positions its event touches times
    out_channels (positions off the convolution's map are not touched)."""
    conv_h, conv_w = conv.conv_shape

    def reach(size: int, span: int) -> np.ndarray:
        # output o reads input o * stride - padding + k for k in 0..kernel-1
        out = np.arange(span)[:, None] * conv.stride - conv.padding + np.arange(conv.kernel)
        return np.array([np.count_nonzero((out == i).any(axis=1)) for i in range(size)])

    rows, cols = reach(conv.height, conv_h), reach(conv.width, conv_w)
    per_pos = (rows[:, None] * cols[None, :]).astype(np.int64) * conv.out_channels
    return np.broadcast_to(per_pos, conv.in_shape).reshape(-1).copy()


@dataclass(frozen=True)
class LayerParams:
    """One quantized LIF layer, all integers (see docs/neuron.md for the arithmetic)."""

    name: str
    weights: np.ndarray  # int32 [n_out, n_in]
    bias: np.ndarray  # int32 [n_out]
    threshold: np.ndarray  # int32 [n_out], > 0
    weight_bits: int
    v_bits: int  # signed membrane width; v saturates to it
    acc_bits: int  # signed accumulator width; sized so it cannot overflow
    reset: str = "subtract"
    decay_mode: str = "shift"
    decay_shift: np.ndarray | None = None  # int32 [n_out], k: decay(v) = v - (v >> k)
    decay_mul: np.ndarray | None = None  # int32 [n_out], beta_q: decay(v) = (v * beta_q) >> f
    decay_frac: int = 0  # f
    rec_weights: np.ndarray | None = None  # int32 [n_out, n_out]; column = source neuron
    scale: float = 1.0  # real value of one weight LSB (and of one membrane LSB)
    # Neuron models beyond the single-spike LIF (docs/neuron.md). A synaptic current exists
    # when syn_decay_mode is not None; it decays like v (shift k_a or beta_a_q / 2^f_a) and
    # saturates to syn_bits.
    syn_decay_mode: str | None = None
    syn_decay_shift: np.ndarray | None = None  # int32 [n_out]
    syn_decay_mul: np.ndarray | None = None  # int32 [n_out]
    syn_decay_frac: int = 0
    syn_bits: int = 0  # signed width of the synaptic current (0 without one)
    syn_delay: int = 0  # the membrane adds syn[t - syn_delay]
    max_spikes: int = 1  # K: spikes per neuron and step
    in_max_spikes: int = 1  # the largest count one input carries (the source's K)
    compare: str = ">"  # fire level j when v > j * theta (or >=)
    reset_delay: bool = True  # False: a subtract reset applies before the next decay
    spiking: bool = True  # False: an LI readout; its output is v
    conv: ConvSpec | None = None  # a convolution: weights are its kernel [C_out, C_in*K*K]

    SCALARS = ("syn_decay_mode", "syn_decay_frac", "syn_bits", "syn_delay", "max_spikes",
               "in_max_spikes", "compare", "reset_delay", "spiking")
    ARRAYS = ("bias", "threshold", "decay_shift", "decay_mul", "syn_decay_shift",
              "syn_decay_mul")

    def __post_init__(self) -> None:
        cast = object.__setattr__
        cast(self, "weights", np.ascontiguousarray(self.weights, dtype=np.int32))
        n_out = self.n_out
        for name in self.ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arr = np.asarray(value, dtype=np.int32).reshape(-1)
                cast(self, name, np.ascontiguousarray(np.broadcast_to(arr, (n_out,))))
        if self.rec_weights is not None:
            cast(self, "rec_weights", np.ascontiguousarray(self.rec_weights, dtype=np.int32))
        self.check()

    # -- shape ---------------------------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.weights.shape[1] if self.conv is None else self.conv.n_in

    @property
    def n_out(self) -> int:
        return self.weights.shape[0] if self.conv is None else self.conv.n_out

    @property
    def recurrent(self) -> bool:
        return self.rec_weights is not None

    @property
    def current_based(self) -> bool:
        return self.syn_decay_mode is not None

    @property
    def fan_out(self) -> np.ndarray:
        """int64 [n_in]: the neuron updates one event of each input makes (its synaptic ops);
        a recurrent event reaches all n_out neurons."""
        if self.conv is None:
            return np.full(self.n_in, self.n_out, np.int64)
        return conv_fan_out(self.conv)

    def features(self) -> list[str]:
        """The models beyond the plain single-spike LIF this layer uses (the gateware runs only
        that one); empty for a plain LIF layer."""
        found = []
        if self.conv is not None:
            found.append(f"convolution ({self.conv.kernel}x{self.conv.kernel} kernel"
                         + ("" if self.conv.pool == "none" else
                            f", {self.conv.pool} pool {self.conv.pool_size}") + ")")
        if not self.spiking:
            found.append("LI readout (no spikes)")
        if self.current_based:
            found.append("synaptic current (CubaLIF/Synaptic)")
        if self.spiking and self.max_spikes > 1:
            found.append(f"multi-spike (up to {self.max_spikes} per step)")
        if self.in_max_spikes > 1:
            found.append(f"multi-spike input (up to {self.in_max_spikes} per step)")
        if self.spiking and self.compare != ">":
            found.append(f"compare {self.compare!r}")
        if self.spiking and self.reset == "subtract" and not self.reset_delay:
            found.append("reset at the spike (reset_delay=False)")
        return found

    @property
    def fan_in(self) -> int:
        """Rows of the weight memory: feed-forward inputs, then the layer's own neurons."""
        return self.n_in + (self.n_out if self.recurrent else 0)

    def all_weights(self) -> np.ndarray:
        """[n_out, fan_in]: feed-forward columns then recurrent columns."""
        if self.rec_weights is None:
            return self.weights
        return np.concatenate([self.weights, self.rec_weights], axis=1)

    # -- validation ----------------------------------------------------------------------------
    def check(self) -> None:
        where = f"layer {self.name!r}"
        if self.weights.ndim != 2:
            raise ImageError(f"{where}: weights must be 2-D, not {self.weights.shape}")
        if self.conv is not None:
            self._check_conv(where)
        if not 2 <= self.weight_bits <= 16:
            raise ImageError(f"{where}: weight width must be 2..16 bits, not {self.weight_bits}")
        if not 4 <= self.v_bits <= 32:
            raise ImageError(f"{where}: membrane width must be 4..32 bits, not {self.v_bits}")
        if not 2 <= self.acc_bits <= 40:
            raise ImageError(f"{where}: accumulator width must be 2..40 bits, not {self.acc_bits}")
        if self.reset not in RESET_MODES:
            raise ImageError(f"{where}: reset must be one of {RESET_MODES}, not {self.reset!r}")
        if self.decay_mode not in DECAY_MODES:
            raise ImageError(f"{where}: decay mode must be one of {DECAY_MODES}, "
                             f"not {self.decay_mode!r}")
        wmin, wmax = _signed_range(self.weight_bits)
        for what, arr in (("weights", self.weights), ("recurrent weights", self.rec_weights)):
            if arr is not None and arr.size and (arr.min() < wmin or arr.max() > wmax):
                raise ImageError(f"{where}: {what} exceed {self.weight_bits} bits")
        if self.rec_weights is not None and self.rec_weights.shape != (self.n_out, self.n_out):
            raise ImageError(f"{where}: recurrent weights must be {(self.n_out, self.n_out)}")
        for what in ("bias", "threshold"):
            arr = getattr(self, what)
            if arr is None or arr.shape != (self.n_out,):
                raise ImageError(f"{where}: {what} must have one value per neuron")
        vmin, vmax = _signed_range(self.v_bits)
        if self.threshold.min() < 0 or self.threshold.max() > vmax:
            raise ImageError(f"{where}: threshold must lie in [0, {vmax}] for a "
                             f"{self.v_bits}-bit membrane")
        if self.decay_mode == "shift":
            if self.decay_shift is None or self.decay_shift.min() < 0 \
                    or self.decay_shift.max() > 31:
                raise ImageError(f"{where}: shift decay needs a shift 0..31 per neuron")
        if self.decay_mode == "mul":
            if not 1 <= self.decay_frac <= 16:
                raise ImageError(f"{where}: multiplier decay needs 1..16 fraction bits, "
                                 f"not {self.decay_frac}")
            if self.decay_mul is None or self.decay_mul.min() < 0 \
                    or self.decay_mul.max() > (1 << self.decay_frac):
                raise ImageError(f"{where}: multiplier decay needs beta_q in "
                                 f"[0, 2^{self.decay_frac}] per neuron")
        self._check_neuron_model(where)
        if self.acc_bits < self.acc_bits_needed():
            raise ImageError(f"{where}: a {self.acc_bits}-bit accumulator can overflow; "
                             f"this layer needs {self.acc_bits_needed()} bits")

    def _check_conv(self, where: str) -> None:
        """Every check of the convolution's fields (the file loader relies on these)."""
        if not isinstance(self.conv, ConvSpec):
            raise ImageError(f"{where}: conv must be a ConvSpec, not {self.conv!r}")
        self.conv.check(where)
        shape = (self.conv.out_channels, self.conv.taps)
        if self.weights.shape != shape:
            raise ImageError(f"{where}: a convolution's weights must be its kernel "
                             f"{list(shape)}, not {list(self.weights.shape)}")
        if self.rec_weights is not None:
            raise ImageError(f"{where}: a convolution cannot be recurrent")

    def _check_neuron_model(self, where: str) -> None:
        for name in ("max_spikes", "in_max_spikes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not 1 <= value <= MAX_SPIKES_LIMIT:
                raise ImageError(f"{where}: {name} must be an integer 1..{MAX_SPIKES_LIMIT}, "
                                 f"not {value!r}")
        if self.compare not in COMPARES:
            raise ImageError(f"{where}: compare must be one of {COMPARES}, not {self.compare!r}")
        for name in ("reset_delay", "spiking"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ImageError(f"{where}: {name} must be a bool, not {getattr(self, name)!r}")
        if self.syn_delay not in (0, 1) or isinstance(self.syn_delay, bool):
            raise ImageError(f"{where}: syn_delay must be 0 or 1, not {self.syn_delay!r}")
        if not self.spiking and self.recurrent:
            raise ImageError(f"{where}: an LI readout emits no spikes, so it cannot be recurrent")
        mode = self.syn_decay_mode
        if mode is None:
            if self.syn_bits != 0 or self.syn_delay != 0 or self.syn_decay_shift is not None \
                    or self.syn_decay_mul is not None:
                raise ImageError(f"{where}: synaptic-current fields need syn_decay_mode")
            return
        if mode not in DECAY_MODES:
            raise ImageError(f"{where}: synaptic decay mode must be one of {DECAY_MODES}, "
                             f"not {mode!r}")
        if not 4 <= self.syn_bits <= 32:
            raise ImageError(f"{where}: synaptic current width must be 4..32 bits, "
                             f"not {self.syn_bits!r}")
        if mode == "shift" and (self.syn_decay_shift is None or self.syn_decay_shift.min() < 0
                                or self.syn_decay_shift.max() > 31):
            raise ImageError(f"{where}: shift synaptic decay needs a shift 0..31 per neuron")
        if mode == "mul":
            if not 1 <= self.syn_decay_frac <= 16:
                raise ImageError(f"{where}: multiplier synaptic decay needs 1..16 fraction "
                                 f"bits, not {self.syn_decay_frac!r}")
            if self.syn_decay_mul is None or self.syn_decay_mul.min() < 0 \
                    or self.syn_decay_mul.max() > (1 << self.syn_decay_frac):
                raise ImageError(f"{where}: multiplier synaptic decay needs alpha_q in "
                                 f"[0, 2^{self.syn_decay_frac}] per neuron")

    def acc_bits_needed(self) -> int:
        """Signed width that holds the largest |sum of weights x counts| any spike pattern can
        give (inputs carry up to in_max_spikes, recurrent sources up to max_spikes)."""
        w = self.weights.astype(np.int64) * self.in_max_spikes
        if self.conv is not None and self.conv.pool == "sum":
            w = w * self.conv.pool_size ** 2  # a sum pool adds that many positions' currents
        if self.rec_weights is not None:
            w = np.concatenate([w, self.rec_weights.astype(np.int64) * self.max_spikes], axis=1)
        worst = max(int(np.clip(w, 0, None).sum(axis=1).max(initial=0)),
                    int((-np.clip(w, None, 0)).sum(axis=1).max(initial=0)))
        return max(2, worst.bit_length() + 1)


@dataclass(frozen=True)
class CoreConfig:
    """One core: neurons [lo, hi) of one layer, integrated over `lanes` parallel lanes."""

    layer: int
    lo: int
    hi: int
    lanes: int

    @property
    def neurons(self) -> int:
        return self.hi - self.lo

    @property
    def groups(self) -> int:
        """Lane groups: words per weight row, and cycles per input event."""
        return -(-self.neurons // self.lanes)


@dataclass(frozen=True)
class HwConfig:
    """What the gateware generator builds: the device target and the cores."""

    device: str
    cores: tuple[CoreConfig, ...]
    board: str | None = None
    clock_hz: float = 12e6

    def cores_of(self, layer: int) -> list[CoreConfig]:
        return [c for c in self.cores if c.layer == layer]


LEARNING_RULES = ("stdp", "three_factor")


@dataclass(frozen=True)
class LearningConfig:
    """On-chip plasticity of one layer's feed-forward weights (docs/learning.md).

    Traces are unsigned `trace_bits`-bit values: every step `x <- x - (x >> trace_shift)`, then
    `+ trace_inc` on a spike, saturating. STDP: a postsynaptic spike adds `x_j >> ltp_shift` to
    w_ij, a presynaptic spike subtracts `y_i >> ltd_shift`. Three-factor: at the end of a step
    `w_ij += (m_i * x_j) >> mod_shift` for a signed int8 modulator m_i. Weights clip to their
    range. With `stochastic`, each shift rounds stochastically with bits of a 16-bit LFSR
    seeded from `seed`.
    """

    layer: int
    rule: str
    trace_bits: int = 8
    trace_shift: int = 2
    trace_inc: int = 128
    ltp_shift: int = 5
    ltd_shift: int = 5
    mod_shift: int = 8
    stochastic: bool = False
    seed: int = 1

    RATES = ("trace_bits", "trace_shift", "trace_inc", "ltp_shift", "ltd_shift", "mod_shift",
             "stochastic", "seed")

    def check(self, layers: list[LayerParams]) -> None:
        if not 0 <= self.layer < len(layers):
            raise ImageError(f"learning names layer {self.layer}, the image has "
                             f"{len(layers)} layers")
        where = f"learning on layer {self.layer} ({layers[self.layer].name!r})"
        if self.rule not in LEARNING_RULES:
            raise ImageError(f"{where}: rule must be one of {LEARNING_RULES}, not {self.rule!r}")
        if layers[self.layer].conv is not None:
            raise ImageError(f"{where}: a convolution cannot learn (its kernel is shared by "
                             f"every position)")
        if layers[self.layer].recurrent:
            raise ImageError(f"{where}: a recurrent layer cannot learn (its recurrent weights "
                             f"share the weight memory with the learned ones)")
        if not 2 <= self.trace_bits <= 16:
            raise ImageError(f"{where}: trace_bits must be 2..16, not {self.trace_bits}")
        for name in ("trace_shift", "ltp_shift", "ltd_shift", "mod_shift"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or not 0 <= value <= 15:
                raise ImageError(f"{where}: {name} must be an integer 0..15, not {value!r}")
        if not 0 <= self.trace_inc < (1 << self.trace_bits):
            raise ImageError(f"{where}: trace_inc must be 0..{(1 << self.trace_bits) - 1}, "
                             f"not {self.trace_inc}")
        if not 1 <= self.seed <= 0xFFFF:
            raise ImageError(f"{where}: the LFSR seed must be 1..65535, not {self.seed}")

    def to_dict(self) -> dict:
        return {"layer": self.layer, "rule": self.rule,
                **{name: getattr(self, name) for name in self.RATES}}


@dataclass
class Image:
    n_inputs: int
    layers: list[LayerParams]
    config: HwConfig
    meta: dict = field(default_factory=dict)
    learning: tuple[LearningConfig, ...] = ()

    def learning_of(self, layer: int) -> LearningConfig | None:
        for entry in self.learning:
            if entry.layer == layer:
                return entry
        return None

    def with_learning(self, layer: int = -1, rule: str = "three_factor", **rates) -> Image:
        """A copy in which `layer` learns on chip by `rule` (replacing its earlier rule)."""
        index = operator.index(layer)
        if index < 0:
            index += len(self.layers)
        unknown = sorted(set(rates) - set(LearningConfig.RATES))
        if unknown:
            raise ImageError(f"unknown learning parameter(s) {', '.join(unknown)}; known: "
                             f"{', '.join(LearningConfig.RATES)}")
        entry = LearningConfig(index, rule, **rates)
        entry.check(self.layers)
        learning = tuple(e for e in self.learning if e.layer != index) + (entry,)
        # learnt weights may take any value of their range: size the accumulator for that
        layers = list(self.layers)
        layer = layers[index]
        worst = layer.fan_in << (layer.weight_bits - 1)
        acc_bits = max(layer.acc_bits, worst.bit_length() + 1)
        layers[index] = replace(layer, acc_bits=acc_bits, v_bits=max(layer.v_bits, acc_bits))
        return Image(self.n_inputs, layers, self.config, dict(self.meta),
                     tuple(sorted(learning, key=lambda e: e.layer)))

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    def check(self) -> None:
        width = self.n_inputs
        for index, layer in enumerate(self.layers):
            if layer.n_in != width:
                raise ImageError(f"layer {index} expects {layer.n_in} inputs but its source "
                                 f"gives {width}")
            width = layer.n_out
            source_k = 1 if index == 0 else self.layers[index - 1].max_spikes
            if layer.in_max_spikes != source_k:
                raise ImageError(f"layer {index}: in_max_spikes must be its source's "
                                 f"max_spikes {source_k}, not {layer.in_max_spikes!r}")
            if not layer.spiking and index != len(self.layers) - 1:
                raise ImageError(f"layer {index}: an LI readout emits no spikes, so it must "
                                 f"be the last layer")
            cores = sorted(self.config.cores_of(index), key=lambda c: c.lo)
            covered = 0
            for core in cores:
                if core.lo != covered or core.hi <= core.lo or core.lanes < 1:
                    raise ImageError(f"layer {index}: cores do not tile its neurons")
                covered = core.hi
            if covered != layer.n_out:
                raise ImageError(f"layer {index}: cores cover {covered} of "
                                 f"{layer.n_out} neurons")
        if len(self.config.cores) != sum(len(self.config.cores_of(i))
                                          for i in range(len(self.layers))):
            raise ImageError("a core names a layer the image does not have")
        for entry in self.learning:
            entry.check(self.layers)
        if len({e.layer for e in self.learning}) != len(self.learning):
            raise ImageError("a layer has more than one learning rule")

    def check_gateware(self) -> None:
        """Raise ImageError, naming every layer and feature, unless the gateware can run the
        image: it runs the single-spike LIF; the other neuron models of docs/neuron.md come
        with the pipelined core and run in the golden model until then."""
        bad = [f"layer {index} ({layer.name!r}) uses {', '.join(layer.features())}"
               for index, layer in enumerate(self.layers) if layer.features()]
        if bad:
            raise ImageError(f"the gateware runs single-spike LIF layers only, but "
                             f"{'; '.join(bad)}: run it in the golden model (compile without "
                             f"a board or device)")

    def with_weights(self, weights: list[np.ndarray], rec_weights=None) -> Image:
        """A copy with new integer weights per layer (e.g. learned ones)."""
        layers = []
        for index, (layer, w) in enumerate(zip(self.layers, weights, strict=True)):
            rec = layer.rec_weights if rec_weights is None else rec_weights[index]
            layers.append(replace(layer, weights=w, rec_weights=rec))
        return Image(self.n_inputs, layers, self.config, dict(self.meta), self.learning)

    # -- device memories -----------------------------------------------------------------------
    def weight_memory(self, core_index: int) -> np.ndarray:
        """The core's weight memory: uint8 [fan_in * groups, bytes_per_word], little-endian."""
        core = self.config.cores[core_index]
        layer = self.layers[core.layer]
        if layer.conv is not None:
            raise ImageError(f"layer {core.layer} ({layer.name!r}) is a convolution: its kernel "
                             f"has no core weight memory (the gateware runs no convolution)")
        return pack_weights(self.layers[core.layer].all_weights()[core.lo:core.hi],
                            self.layers[core.layer].weight_bits, core.lanes)

    # -- file ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        self.check()
        arrays: list[tuple[str, np.ndarray]] = []
        layers_json = []
        for index, layer in enumerate(self.layers):
            entry = {
                "name": layer.name, "n_in": layer.n_in, "n_out": layer.n_out,
                "recurrent": layer.recurrent, "weight_bits": layer.weight_bits,
                "v_bits": layer.v_bits, "acc_bits": layer.acc_bits, "reset": layer.reset,
                "decay_mode": layer.decay_mode, "decay_frac": layer.decay_frac,
                "scale": layer.scale,
                **{name: _plain(getattr(layer, name)) for name in LayerParams.SCALARS},
            }
            if layer.conv is not None:
                # the kernel has no core weight memory yet: it is stored as it is
                entry["conv"] = layer.conv.to_dict()
                arrays.append((f"layer{index}.kernel", layer.weights.astype("<i4")))
            layers_json.append(entry)
            for name in LayerParams.ARRAYS:
                value = getattr(layer, name)
                if value is not None:
                    arrays.append((f"layer{index}.{name}", value.astype("<i4")))
        for index, core in enumerate(self.config.cores):
            if self.layers[core.layer].conv is None:
                arrays.append((f"core{index}.weights", self.weight_memory(index)))
        table, offset, blobs = [], 0, []
        for name, arr in arrays:
            raw = np.ascontiguousarray(arr).tobytes()
            table.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                          "offset": offset, "nbytes": len(raw)})
            blobs.append(raw)
            offset += len(raw)
        header = {
            "n_inputs": self.n_inputs,
            "config": {"device": self.config.device, "board": self.config.board,
                       "clock_hz": self.config.clock_hz,
                       "cores": [{"layer": c.layer, "lo": c.lo, "hi": c.hi, "lanes": c.lanes}
                                 for c in self.config.cores]},
            "layers": layers_json,
            "arrays": table,
            "payload_bytes": offset,
            "meta": self.meta,
            "learning": [entry.to_dict() for entry in self.learning],
        }
        head = json.dumps(header, sort_keys=True).encode()
        body = (_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(head), offset) + head
                + b"".join(blobs))
        return body + _TRAILER.pack(zlib.crc32(body))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a failure leaves no partial file behind."""
        write_atomic(path, self.to_bytes())


def _plain(value):
    """A JSON-ready scalar (numpy integers and bools become Python's)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pack_weights(weights: np.ndarray, weight_bits: int, lanes: int) -> np.ndarray:
    """Pack [neurons, fan_in] weights as memory words: address = row * groups + group."""
    neurons, fan_in = weights.shape
    groups = -(-neurons // lanes)
    padded = np.zeros((groups * lanes, fan_in), dtype=np.int64)
    padded[:neurons] = weights
    mask = (1 << weight_bits) - 1
    # [fan_in, groups, lanes] of unsigned lane fields
    fields = (padded.T.reshape(fan_in, groups, lanes) & mask).astype(object)
    word_bytes = -(-lanes * weight_bits // 8)
    out = np.zeros((fan_in * groups, word_bytes), dtype=np.uint8)
    flat = fields.reshape(fan_in * groups, lanes)
    for address in range(flat.shape[0]):
        word = 0
        for lane in range(lanes):
            word |= int(flat[address, lane]) << (lane * weight_bits)
        out[address] = np.frombuffer(word.to_bytes(word_bytes, "little"), dtype=np.uint8)
    return out


def unpack_weights(memory: np.ndarray, weight_bits: int, lanes: int, neurons: int,
                   fan_in: int) -> np.ndarray:
    """Inverse of pack_weights: [neurons, fan_in] int32."""
    groups = -(-neurons // lanes)
    if memory.shape[0] != fan_in * groups:
        raise ImageError(f"weight memory holds {memory.shape[0]} words, "
                         f"expected {fan_in * groups}")
    mask = (1 << weight_bits) - 1
    sign = 1 << (weight_bits - 1)
    out = np.zeros((fan_in, groups * lanes), dtype=np.int64)
    for address in range(memory.shape[0]):
        word = int.from_bytes(memory[address].tobytes(), "little")
        row, group = divmod(address, groups)
        for lane in range(lanes):
            value = (word >> (lane * weight_bits)) & mask
            out[row, group * lanes + lane] = value - (value & sign) * 2
    return out[:, :neurons].T.astype(np.int32)


def image_from_bytes(data: bytes, *, source: str = "image") -> Image:
    if len(data) < _PREAMBLE.size + _TRAILER.size:
        if data[:len(MAGIC)] != MAGIC[:len(data)] or not data:
            raise ImageError(f"{source}: not a spikeforge image (no SFIMAGE magic)")
        raise ImageError(f"{source}: truncated image ({len(data)} bytes)")
    magic, version, _, head_len, payload_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ImageError(f"{source}: not a spikeforge image (no SFIMAGE magic)")
    if version != FORMAT_VERSION:
        raise ImageError(f"{source}: image format version {version} is not supported "
                         f"(this spikeforge reads version {FORMAT_VERSION})")
    head_end = _PREAMBLE.size + head_len
    expected = head_end + payload_len + _TRAILER.size
    if len(data) < expected:
        raise ImageError(f"{source}: truncated image ({len(data)} of {expected} bytes)")
    if len(data) > expected:
        raise ImageError(f"{source}: {len(data) - expected} unexpected bytes after the image")
    (crc,) = _TRAILER.unpack_from(data, expected - _TRAILER.size)
    if zlib.crc32(data[:expected - _TRAILER.size]) != crc:
        raise ImageError(f"{source}: checksum mismatch: the image is corrupt")
    try:
        header = json.loads(data[_PREAMBLE.size:head_end])
        if int(header["payload_bytes"]) != payload_len:
            raise ValueError("payload length")
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageError(f"{source}: corrupt image header ({exc.__class__.__name__})") from None
    try:
        return _image_from_header(header, data, head_end)
    except ImageError as exc:
        raise ImageError(f"{source}: {exc}") from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ImageError(f"{source}: inconsistent image ({exc})") from None


def _image_from_header(header: dict, data: bytes, base: int) -> Image:
    arrays = {}
    for entry in header["arrays"]:
        start = base + entry["offset"]
        raw = data[start:start + entry["nbytes"]]
        arrays[entry["name"]] = np.frombuffer(raw, dtype=np.dtype(entry["dtype"])).reshape(
            entry["shape"])
    cfg = header["config"]
    cores = tuple(CoreConfig(c["layer"], c["lo"], c["hi"], c["lanes"]) for c in cfg["cores"])
    config = HwConfig(device=cfg["device"], board=cfg["board"], clock_hz=cfg["clock_hz"],
                      cores=cores)
    layers = []
    for index, entry in enumerate(header["layers"]):
        n_in, n_out = entry["n_in"], entry["n_out"]
        conv = None if entry.get("conv") is None else \
            ConvSpec.from_dict(entry["conv"], f"layer {entry['name']!r}")
        if conv is not None:
            if (conv.n_in, conv.n_out) != (n_in, n_out) or entry["recurrent"]:
                raise ImageError(f"layer {index}: its convolution maps {conv.n_in} inputs to "
                                 f"{conv.n_out} neurons, not {n_in} to {n_out}")
            kernel = arrays.get(f"layer{index}.kernel")
            if kernel is None:
                raise ImageError(f"layer {index}: the convolution's kernel is missing")
            n_in, n_out = kernel.shape[1], kernel.shape[0]
        fan_in = n_in + (n_out if entry["recurrent"] else 0)
        full = np.zeros((n_out, fan_in), dtype=np.int32)
        if conv is not None:
            full[:] = kernel
        for core_index, core in enumerate(cores):
            if core.layer == index and conv is None:
                full[core.lo:core.hi] = unpack_weights(arrays[f"core{core_index}.weights"],
                                                       entry["weight_bits"], core.lanes,
                                                       core.neurons, fan_in)

        def arr(name, index=index):
            return arrays.get(f"layer{index}.{name}")

        layers.append(LayerParams(
            name=entry["name"], weights=full[:, :n_in],
            rec_weights=full[:, n_in:] if entry["recurrent"] else None,
            bias=arr("bias"), threshold=arr("threshold"), weight_bits=entry["weight_bits"],
            v_bits=entry["v_bits"], acc_bits=entry["acc_bits"], reset=entry["reset"],
            decay_mode=entry["decay_mode"], decay_shift=arr("decay_shift"),
            decay_mul=arr("decay_mul"), decay_frac=entry["decay_frac"], scale=entry["scale"],
            syn_decay_shift=arr("syn_decay_shift"), syn_decay_mul=arr("syn_decay_mul"),
            conv=conv,
            **{name: entry[name] for name in LayerParams.SCALARS if name in entry}))
    learning = tuple(LearningConfig(**entry) for entry in header.get("learning", []))
    image = Image(header["n_inputs"], layers, config, header.get("meta", {}), learning)
    image.check()
    return image


def load_image(path: str | os.PathLike) -> Image:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    return image_from_bytes(data, source=str(path))

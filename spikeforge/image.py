"""The fixed-point image: hardware configuration, per-layer parameters and weight memories.

The image is the one artefact the golden model, the gateware generator and the board runtime
share. Its weights are stored as the device's weight memories hold them (see
docs/image-format.md): per core, one word per (fan-in row, lane group), `lanes` two's-complement
weights of `weight_bits` bits packed little-endian, lane p in bits [p*w, (p+1)*w).

Every value an image may hold is checked in one place per field: the tables `LAYER_FIELDS`
(scalars of a layer), `NEURON_ARRAYS` (per-neuron arrays) and `LEARNING_FIELDS` (a learning
rule). `LayerParams`, `LearningConfig`, `Image.to_bytes` and the loader all read them, so a new
field is one table entry beside its dataclass attribute.
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"SFIMAGE\x00"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sHHII")  # magic, version, reserved, header and payload lengths
_TRAILER = struct.Struct("<I")  # CRC-32 of everything before it

DECAY_MODES = ("none", "shift", "mul")
RESET_MODES = ("subtract", "zero")
COMPARES = (">", ">=")
MAX_SPIKES_LIMIT = 255  # spike counts travel as uint8
LEARNING_RULES = ("stdp", "three_factor")

# -- caps (docs/image-format.md): loading costs time and memory in proportion to the declared
# sizes, and these bound the declared sizes.
MAX_HEADER_BYTES = 1 << 20  # the JSON header
MAX_PAYLOAD_BYTES = 16 << 20  # the arrays; the largest catalog device holds < 0.5 MiB of weights
MAX_JSON_DEPTH = 16  # nesting of JSON objects and arrays in the header (and of meta)
MAX_NEURONS = 1 << 16  # neurons of a layer, and its inputs: AER addresses are 16 bits
MAX_LAYERS = 256
MAX_CORES = 256  # the host protocol addresses a core with one byte
MAX_NAME_CHARS = 256  # a layer name, the device and board names
MAX_CLOCK_HZ = 1e10
MAX_KERNEL = 32  # a convolution's kernel side, stride and pool size
MAX_CONV_POSITIONS = 1 << 20  # a convolution's accumulators before pooling, C_out x conv map


#: Features (`LayerParams.features`) a convolution core runs: the rest are refused by name.
CONV_CORE_FEATURES = ("convolution", "synaptic current", "multi-spike", "compare",
                      "reset at the spike")


class ImageError(ValueError):
    """An image file or image object is malformed; the message says what is wrong."""


def _signed_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _show(value: Any) -> str:
    """repr of a value for a message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def _is_float(value: Any) -> bool:
    """A finite number that a float holds exactly (the image keeps it as a float)."""
    if _is_int(value):
        return abs(value) < 1 << 53
    return isinstance(value, (float, np.floating)) and math.isfinite(value)


# -- the field tables ----------------------------------------------------------------------------
Getter = Callable[[str], Any]
_REQUIRED = object()  # the default of a Field that every file must hold


@dataclass(frozen=True)
class Field:
    """One scalar field: its kind and the values it may take (which may depend on the fields
    listed before it, read through `get`).

    kind "int": `bounds(get)` gives (lo, hi); "choice": `bounds` is the tuple of choices;
    "name": a string of 1..MAX_NAME_CHARS characters; "positive": a finite number > 0;
    "bool": True or False.

    A field added after format version 1 gives a `default`: files without it read as the
    default, and `save` leaves it out while it holds the default, so older files keep loading
    and images that do not use it stay byte-identical.
    """

    kind: str
    bounds: Any = None
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def problem(self, value: Any, get: Getter) -> str | None:
        """What is wrong with `value` ("must be ..., not ..."), or None."""
        if self.kind == "int":
            lo, hi = self.bounds(get)
            if not _is_int(value) or not lo <= value <= hi:
                span = f"{lo}" if lo == hi else f"{lo}..{hi}"
                return f"must be an integer {span}, not {_show(value)}"
        elif self.kind == "choice":  # None is a choice where the bounds list it
            if not (value is None and None in self.bounds) and (
                    not isinstance(value, str) or value not in self.bounds):
                return f"must be one of {', '.join(map(repr, self.bounds))}, not {_show(value)}"
        elif self.kind == "name":
            if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS:
                return f"must be a string of 1..{MAX_NAME_CHARS} characters, not {_show(value)}"
        elif self.kind == "positive":
            if not _is_float(value) or not value > 0:
                return f"must be a finite number > 0, not {_show(value)}"
        elif self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                return f"must be true or false, not {_show(value)}"
        return None

    def normal(self, value: Any) -> Any:
        """The value as the image holds it (Python int / float / bool)."""
        if self.kind == "int":
            return operator.index(value)
        if self.kind == "positive":
            return float(value)
        if self.kind == "bool":
            return bool(value)
        return value


def _const(lo: int, hi: int) -> Callable[[Getter], tuple[int, int]]:
    return lambda get: (lo, hi)


#: Scalar fields of a layer, in the order they are checked (later bounds read earlier fields).
LAYER_FIELDS: dict[str, Field] = {
    "name": Field("name"),
    "weight_bits": Field("int", _const(2, 16)),
    "v_bits": Field("int", _const(4, 32)),
    "acc_bits": Field("int", _const(2, 40)),
    "reset": Field("choice", RESET_MODES),
    "decay_mode": Field("choice", DECAY_MODES),
    "decay_frac": Field("int", lambda get: (1, 16) if get("decay_mode") == "mul" else (0, 0)),
    "scale": Field("positive"),
    # Neuron models beyond the single-spike LIF (docs/neuron.md), added to format version 1
    # with defaults: a synaptic current when syn_decay_mode is set, multi-spike counts, the
    # compare, the timing of a subtract reset, and the LI readout (spiking false).
    "syn_decay_mode": Field("choice", (None, *DECAY_MODES), default=None),
    "syn_decay_frac": Field("int", lambda get: (1, 16) if get("syn_decay_mode") == "mul"
                            else (0, 0), default=0),
    "syn_bits": Field("int", lambda get: (0, 0) if get("syn_decay_mode") is None else (4, 32),
                      default=0),
    "syn_delay": Field("int", lambda get: (0, 0) if get("syn_decay_mode") is None else (0, 1),
                       default=0),
    "max_spikes": Field("int", _const(1, MAX_SPIKES_LIMIT), default=1),
    "in_max_spikes": Field("int", _const(1, MAX_SPIKES_LIMIT), default=1),
    "compare": Field("choice", COMPARES, default=">"),
    "reset_delay": Field("bool", default=True),
    "spiking": Field("bool", default=True),
}


@dataclass(frozen=True)
class NeuronArray:
    """A per-neuron int32 array of a layer: when the layer has it, and its range (closed)."""

    needed: Callable[[Getter], bool]
    bounds: Callable[[Getter], tuple[int, int]]


#: Per-neuron arrays of a layer. Each range keeps the golden model and the gateware equal:
#: the gateware's parameter word holds exactly these values (hdl/core.py param_layout), and the
#: golden model computes exactly within them (sim/lif.py work_dtype).
NEURON_ARRAYS: dict[str, NeuronArray] = {
    "bias": NeuronArray(lambda get: True, lambda get: _signed_range(get("v_bits"))),
    "threshold": NeuronArray(lambda get: True,
                             lambda get: (0, _signed_range(get("v_bits"))[1])),
    "decay_shift": NeuronArray(lambda get: get("decay_mode") == "shift", _const(0, 31)),
    "decay_mul": NeuronArray(lambda get: get("decay_mode") == "mul",
                             lambda get: (0, 1 << get("decay_frac"))),
    "syn_decay_shift": NeuronArray(lambda get: get("syn_decay_mode") == "shift", _const(0, 31)),
    "syn_decay_mul": NeuronArray(lambda get: get("syn_decay_mode") == "mul",
                                 lambda get: (0, 1 << get("syn_decay_frac"))),
}

#: Fields of a learning rule (after `layer` and `rule`), in checking order.
LEARNING_FIELDS: dict[str, Field] = {
    "trace_bits": Field("int", _const(2, 16)),
    "trace_shift": Field("int", _const(0, 15)),
    "trace_inc": Field("int", lambda get: (0, (1 << get("trace_bits")) - 1)),
    "ltp_shift": Field("int", _const(0, 15)),
    "ltd_shift": Field("int", _const(0, 15)),
    "mod_shift": Field("int", _const(0, 15)),
    "stochastic": Field("bool"),
    "seed": Field("int", _const(1, 0xFFFF)),
}


POOLS = ("none", "max", "sum")

#: Fields of a convolution (ConvSpec), in checking order. The caps bound the work a declared
#: geometry costs: its maps are bounded by the neuron counts, the rest by MAX_KERNEL.
CONV_FIELDS: dict[str, Field] = {
    "in_channels": Field("int", _const(1, MAX_NEURONS)),
    "height": Field("int", _const(1, MAX_NEURONS)),
    "width": Field("int", _const(1, MAX_NEURONS)),
    "out_channels": Field("int", _const(1, MAX_NEURONS)),
    "kernel": Field("int", _const(1, MAX_KERNEL)),
    "stride": Field("int", _const(1, MAX_KERNEL)),
    "padding": Field("int", _const(0, MAX_KERNEL - 1)),
    "pool": Field("choice", POOLS),
    "pool_size": Field("int", _const(1, MAX_KERNEL)),
}


def _check_fields(fields: dict[str, Field], get: Getter, where: str) -> None:
    for name, spec in fields.items():
        problem = spec.problem(get(name), get)
        if problem is not None:
            raise ImageError(f"{where}: {name} {problem}")


def _int_array(value: Any, what: str, where: str) -> np.ndarray:
    """An int32 array of integer values (refused, not wrapped or truncated, when they are not)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" and not (arr.dtype.kind == "b" or arr.size == 0):
        raise ImageError(f"{where}: {what} must be integers, not dtype {arr.dtype}")
    if arr.size and arr.dtype.kind == "f" and not np.array_equal(arr, np.rint(arr)):
        raise ImageError(f"{where}: {what} must be integers, not fractions")
    if arr.size and (arr.min() < -(1 << 31) or arr.max() > (1 << 31) - 1):
        raise ImageError(f"{where}: {what} must fit 32 bits")
    arr = arr.astype(np.int32, copy=False)
    return np.ascontiguousarray(arr) if arr.ndim else arr  # (which would make a scalar 1-D)


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

    FIELDS = tuple(CONV_FIELDS)

    def __post_init__(self) -> None:
        self.check()
        for name, spec in CONV_FIELDS.items():
            object.__setattr__(self, name, spec.normal(getattr(self, name)))

    def check(self, where: str = "convolution") -> None:
        """Raise ImageError unless the geometry is whole: every check of a conv field (the
        file loader runs it before it allocates anything)."""
        _check_fields(CONV_FIELDS, lambda name: getattr(self, name), where)
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
        for what, size in (("inputs", self.n_in), ("neurons", self.n_out)):
            if size > MAX_NEURONS:
                raise ImageError(f"{where}: its {size} {what} exceed {MAX_NEURONS}")
        positions = self.out_channels * conv_h * conv_w
        if positions > MAX_CONV_POSITIONS:
            raise ImageError(f"{where}: its {positions} positions before pooling exceed "
                             f"{MAX_CONV_POSITIONS}")

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
        return math.prod(self.out_shape)

    @property
    def taps(self) -> int:
        """Weights per output channel: in_channels * kernel^2."""
        return self.in_channels * self.kernel * self.kernel

    def to_dict(self) -> dict:
        return {name: spec.normal(getattr(self, name)) for name, spec in CONV_FIELDS.items()}

    @classmethod
    def from_dict(cls, entry: Any, where: str = "convolution") -> ConvSpec:
        """The geometry of a file's "conv" entry: every key present, every check passed."""
        _keys(entry, where, cls.FIELDS)
        try:
            return cls(**entry)
        except ImageError as exc:
            raise ImageError(f"{where}: {str(exc).removeprefix('convolution: ')}") from None


def conv_fan_out(conv: ConvSpec) -> np.ndarray:
    """int64 [n_in]: for each input (c, y, x), the output positions its event touches times
    out_channels (positions off the convolution's map are not touched)."""
    conv_h, conv_w = conv.conv_shape

    def reach(size: int, span: int) -> np.ndarray:
        # output o reads input o * stride - padding + k for k in 0..kernel-1, each k another
        # input, so an input's count of (o, k) pairs is its count of outputs
        taps = (np.arange(span)[:, None] * conv.stride - conv.padding
                + np.arange(conv.kernel)).reshape(-1)
        return np.bincount(taps[(taps >= 0) & (taps < size)], minlength=size)

    rows, cols = reach(conv.height, conv_h), reach(conv.width, conv_w)
    per_pos = (rows[:, None] * cols[None, :]).astype(np.int64) * conv.out_channels
    return np.broadcast_to(per_pos, conv.in_shape).reshape(-1).copy()


@dataclass(frozen=True)
class LayerParams:
    """One quantized LIF layer, all integers (see docs/neuron.md for the arithmetic)."""

    name: str
    weights: np.ndarray  # int32 [n_out, n_in]
    bias: np.ndarray  # int32 [n_out], within the V-bit membrane range
    threshold: np.ndarray  # int32 [n_out], 0..2^(V-1)-1
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

    # the neuron-model fields, as `inspect` shows them
    SCALARS = ("syn_decay_mode", "syn_decay_frac", "syn_bits", "syn_delay", "max_spikes",
               "in_max_spikes", "compare", "reset_delay", "spiking")
    ARRAYS = tuple(NEURON_ARRAYS)

    def __post_init__(self) -> None:
        cast = object.__setattr__
        where = f"layer {self.name!r}" if isinstance(self.name, str) else "a layer"
        weights = _int_array(self.weights, "weights", where)
        if weights.ndim != 2:
            raise ImageError(f"{where}: weights must be 2-D [n_out, n_in], not shape "
                             f"{list(weights.shape)}")
        cast(self, "weights", weights)
        n_out = self.conv.n_out if isinstance(self.conv, ConvSpec) else weights.shape[0]
        for name in NEURON_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arr = _int_array(value, name, where)
                if arr.ndim == 0:  # one value for every neuron (the Python API's shorthand)
                    arr = np.full(n_out, arr, dtype=np.int32)
                cast(self, name, arr)
        if self.rec_weights is not None:
            cast(self, "rec_weights", _int_array(self.rec_weights, "recurrent weights", where))
        _check_fields(LAYER_FIELDS, lambda name: getattr(self, name), where)
        for name, spec in LAYER_FIELDS.items():
            cast(self, name, spec.normal(getattr(self, name)))
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
        """The models beyond the plain single-spike LIF this layer uses; empty for a plain LIF
        layer. The gateware's LIF core runs all of them, its convolution core all but the LI
        readout (`gateware_features`)."""
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

    def gateware_features(self) -> list[str]:
        """The features of this layer the core array cannot run; empty when it runs the layer.
        A dense layer runs on the LIF core, which runs every neuron model of docs/neuron.md; a
        convolution runs on the convolution core (``hdl.conv.ConvCore``), whose neurons go
        through the LIF core's update (synaptic current, multi-spike, either compare and reset
        timing), but whose pooled map cannot be an LI readout (its membranes are not streamed
        out)."""
        if self.conv is None:
            return []
        return [f for f in self.features()
                if not f.startswith(CONV_CORE_FEATURES)]

    @property
    def fan_in(self) -> int:
        """Inputs of a neuron: feed-forward inputs, then the layer's own neurons (the rows of a
        dense core's weight memory; a convolution's are `weight_rows`)."""
        return self.n_in + (self.n_out if self.recurrent else 0)

    @property
    def weight_rows(self) -> int:
        """Rows of a core's weight memory: `fan_in`, or a convolution's kernel taps
        C_in * K * K."""
        return self.fan_in if self.conv is None else self.conv.taps

    @property
    def positions(self) -> int:
        """Neurons per output channel: out_h * out_w of a convolution's pooled map, 1 for a
        dense layer."""
        if self.conv is None:
            return 1
        _, out_h, out_w = self.conv.out_shape
        return out_h * out_w

    def all_weights(self) -> np.ndarray:
        """[n_out, fan_in]: feed-forward columns then recurrent columns."""
        if self.rec_weights is None:
            return self.weights
        return np.concatenate([self.weights, self.rec_weights], axis=1)

    # -- validation ----------------------------------------------------------------------------
    def check(self) -> None:
        where = f"layer {self.name!r}"
        get = lambda name: getattr(self, name)  # noqa: E731
        _check_fields(LAYER_FIELDS, get, where)
        if self.conv is not None:
            self._check_conv(where)
        for what, size in (("n_in", self.n_in), ("n_out", self.n_out)):
            if not 1 <= size <= MAX_NEURONS:
                raise ImageError(f"{where}: {what} must be 1..{MAX_NEURONS}, not {size}")
        wmin, wmax = _signed_range(self.weight_bits)
        for what, arr in (("weights", self.weights), ("recurrent weights", self.rec_weights)):
            if arr is not None and arr.size and (arr.min() < wmin or arr.max() > wmax):
                raise ImageError(f"{where}: {what} exceed {self.weight_bits} bits")
        if self.rec_weights is not None and self.rec_weights.shape != (self.n_out, self.n_out):
            raise ImageError(f"{where}: recurrent weights must be {[self.n_out, self.n_out]}, "
                             f"not {list(self.rec_weights.shape)}")
        for name, spec in NEURON_ARRAYS.items():
            arr = getattr(self, name)
            if not spec.needed(get):
                if arr is not None:
                    raise ImageError(f"{where}: {name} has no use in this layer (decay mode "
                                     f"{self.decay_mode!r}, synaptic decay mode "
                                     f"{self.syn_decay_mode!r}); leave it None")
                continue
            if arr is None or arr.shape != (self.n_out,):
                raise ImageError(f"{where}: {name} must have one value per neuron "
                                 f"({self.n_out}), not "
                                 f"{'none' if arr is None else list(arr.shape)}")
            lo, hi = spec.bounds(get)
            if arr.min() < lo or arr.max() > hi:
                bad = arr[(arr < lo) | (arr > hi)][0]
                raise ImageError(f"{where}: {name} must lie in [{lo}, {hi}], not {int(bad)}")
        if not self.spiking and self.recurrent:
            raise ImageError(f"{where}: an LI readout emits no spikes, so it cannot be recurrent")
        if self.acc_bits < self.acc_bits_needed():
            raise ImageError(f"{where}: a {self.acc_bits}-bit accumulator can overflow; "
                             f"this layer needs {self.acc_bits_needed()} bits")

    def _check_conv(self, where: str) -> None:
        """Every check of the convolution's fields (the file loader relies on these)."""
        if not isinstance(self.conv, ConvSpec):
            raise ImageError(f"{where}: conv must be a ConvSpec, not {_show(self.conv)}")
        self.conv.check(where)
        shape = (self.conv.out_channels, self.conv.taps)
        if self.weights.shape != shape:
            raise ImageError(f"{where}: a convolution's weights must be its kernel "
                             f"{list(shape)}, not {list(self.weights.shape)}")
        if self.rec_weights is not None:
            raise ImageError(f"{where}: a convolution cannot be recurrent")

    def acc_bits_needed(self) -> int:
        """Signed width that holds the largest |sum of weights x counts| any spike pattern can
        give (inputs carry up to in_max_spikes, recurrent sources up to max_spikes; a sum pool
        adds pool_size^2 positions' currents)."""
        rows = self.weights.shape[0]  # neurons, or a convolution's output channels
        total = np.zeros(rows, dtype=np.int64)
        size = np.zeros(rows, dtype=np.int64)  # sum of |w| x count per neuron
        pooled = 1 if self.conv is None or self.conv.pool != "sum" else self.conv.pool_size ** 2
        for arr, count in ((self.weights, self.in_max_spikes * pooled),
                           (self.rec_weights, self.max_spikes)):
            if arr is not None and arr.size:
                total += arr.sum(axis=1, dtype=np.int64) * count
                size += np.abs(arr).sum(axis=1, dtype=np.int64) * count
        up, down = (size + total) // 2, (size - total) // 2  # sums of positive, negative weights
        return max(2, int(max(up.max(initial=0), down.max(initial=0))).bit_length() + 1)


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
        """Lane groups of a dense core: words per weight row, and cycles per input event (a
        convolution's core: `core_groups`)."""
        return -(-self.neurons // self.lanes)


def core_channels(layer: LayerParams, core: CoreConfig) -> tuple[int, int]:
    """The output channels [c0, c1) a core of `layer` holds: its neurons over the layer's
    `positions` (a dense layer: its neurons [lo, hi))."""
    return core.lo // layer.positions, -(-core.hi // layer.positions)


def core_groups(layer: LayerParams, core: CoreConfig) -> int:
    """Lane groups of a core: words per weight-memory row and cycles per input event (per
    kernel tap of a convolution): ceil(neurons / lanes), for a convolution's core
    ceil(channels / lanes)."""
    c0, c1 = core_channels(layer, core)
    return -(-(c1 - c0) // core.lanes)


def weight_depth(layer: LayerParams, core: CoreConfig) -> int:
    """Words of a core's weight memory (a convolution's core: of its kernel slice):
    ``layer.weight_rows * core_groups(layer, core)``; word ``row * groups + group``."""
    return layer.weight_rows * core_groups(layer, core)


@dataclass(frozen=True)
class HwConfig:
    """What the gateware generator builds: the device target and the cores."""

    device: str
    cores: tuple[CoreConfig, ...]
    board: str | None = None
    clock_hz: float = 12e6

    def cores_of(self, layer: int) -> list[CoreConfig]:
        return [c for c in self.cores if c.layer == layer]


def learning_acc_bits(layer: LayerParams) -> int:
    """Accumulator width a learning layer needs: learned weights may take any value of their
    range, so every input at the most negative weight must not overflow (sized as
    `LayerParams.acc_bits_needed` sizes a sum, which the learned weights must pass)."""
    return (layer.fan_in << (layer.weight_bits - 1)).bit_length() + 1


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

    RATES = tuple(LEARNING_FIELDS)

    def check(self, layers: list[LayerParams]) -> None:
        if not _is_int(self.layer) or not 0 <= self.layer < len(layers):
            raise ImageError(f"learning names layer {_show(self.layer)}, the image has "
                             f"{len(layers)} layers")
        layer = layers[self.layer]
        where = f"learning on layer {self.layer} ({layer.name!r})"
        if not isinstance(self.rule, str) or self.rule not in LEARNING_RULES:
            raise ImageError(f"{where}: rule must be one of {LEARNING_RULES}, not "
                             f"{_show(self.rule)}")
        if layer.conv is not None:
            raise ImageError(f"{where}: a convolution cannot learn (its kernel is shared by "
                             f"every position)")
        if layer.recurrent:
            raise ImageError(f"{where}: a recurrent layer cannot learn (its recurrent weights "
                             f"share the weight memory with the learned ones)")
        if layer.features():
            raise ImageError(f"{where}: learning needs a single-spike LIF layer, not one with "
                             f"{', '.join(layer.features())}")
        _check_fields(LEARNING_FIELDS, lambda name: getattr(self, name), where)
        need = learning_acc_bits(layer)
        if layer.acc_bits < need:
            raise ImageError(f"{where}: a {layer.acc_bits}-bit accumulator can overflow once "
                             f"weights learn; a learning layer needs {need} bits")

    def to_dict(self) -> dict:
        return {"layer": operator.index(self.layer), "rule": self.rule,
                **{name: spec.normal(getattr(self, name))
                   for name, spec in LEARNING_FIELDS.items()}}


def _check_meta(meta: Any) -> None:
    """meta is free-form JSON, except the fields spikeforge reads back (its own reports)."""
    if not isinstance(meta, dict):
        raise ImageError(f"meta must be an object, not {_show(meta)}")
    _check_json(meta, "meta", 1)
    if "source" in meta and not isinstance(meta["source"], str):
        raise ImageError(f"meta.source must be a string, not {_show(meta['source'])}")
    resources = meta.get("resources")
    if resources is not None:
        if not isinstance(resources, dict) or not all(
                isinstance(v, list) and len(v) == 2 and all(_is_number(x) and x >= 0 for x in v)
                for v in resources.values()):
            raise ImageError(f"meta.resources must map each resource to [need, capacity], "
                             f"not {_show(resources)}")
    encoder = meta.get("encoder")
    if encoder is not None and not (
            isinstance(encoder, dict) and set(encoder) == {"kind", "seed"}
            and encoder["kind"] == "rate_lfsr" and _is_int(encoder["seed"])
            and 1 <= encoder["seed"] <= 0xFFFF):
        raise ImageError(f"meta.encoder must be {{'kind': 'rate_lfsr', 'seed': 1..65535}} "
                         f"(the on-chip rate encoder, sim/encode.py), not {_show(encoder)}")
    quant = meta.get("quantization")
    if quant is not None:
        if not isinstance(quant, dict):
            raise ImageError(f"meta.quantization must be an object, not {_show(quant)}")
        rows = quant.get("layers")
        if rows is not None and (not isinstance(rows, list)
                                 or not all(isinstance(row, dict) for row in rows)):
            raise ImageError(f"meta.quantization.layers must be a list of objects, not "
                             f"{_show(rows)}")
        notes = quant.get("notes")
        if notes is not None and (not isinstance(notes, list)
                                  or not all(isinstance(n, str) for n in notes)):
            raise ImageError(f"meta.quantization.notes must be a list of strings, not "
                             f"{_show(notes)}")


def _check_json(value: Any, where: str, depth: int) -> None:
    """JSON values only (finite numbers, string keys), nested at most MAX_JSON_DEPTH deep."""
    if depth > MAX_JSON_DEPTH:
        raise ImageError(f"{where} is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ImageError(f"{where} has a key that is not a string: {_show(key)}")
            _check_json(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ImageError(f"{where} must be a finite number, not {value!r}")
    elif not (value is None or isinstance(value, (str, int))):
        raise ImageError(f"{where} must be a JSON value, not {_show(value)}")


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
        if not 0 <= index < len(self.layers):
            raise ImageError(f"learning names layer {layer}, the image has "
                             f"{len(self.layers)} layers")
        # learnt weights may take any value of their range: size the accumulator for that
        layers = list(self.layers)
        old = layers[index]
        acc_bits = max(old.acc_bits, learning_acc_bits(old))
        layers[index] = replace(old, acc_bits=acc_bits, v_bits=max(old.v_bits, acc_bits))
        entry = LearningConfig(index, rule, **rates)
        entry.check(layers)
        learning = tuple(e for e in self.learning if e.layer != index) + (entry,)
        return Image(self.n_inputs, layers, self.config, dict(self.meta),
                     tuple(sorted(learning, key=lambda e: e.layer)))

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    def check(self) -> None:
        if not _is_int(self.n_inputs) or not 1 <= self.n_inputs <= MAX_NEURONS:
            raise ImageError(f"n_inputs must be 1..{MAX_NEURONS}, not {_show(self.n_inputs)}")
        if not 1 <= len(self.layers) <= MAX_LAYERS:
            raise ImageError(f"an image must have 1..{MAX_LAYERS} layers, not "
                             f"{len(self.layers)}")
        width = self.n_inputs
        for index, layer in enumerate(self.layers):
            if layer.n_in != width:
                raise ImageError(f"layer {index} expects {layer.n_in} inputs but its source "
                                 f"gives {width}")
            width = layer.n_out
        _check_config(self.config, [layer.n_out for layer in self.layers],
                      [layer.conv for layer in self.layers])
        for entry in self.learning:
            entry.check(self.layers)
        if len({e.layer for e in self.learning}) != len(self.learning):
            raise ImageError("a layer has more than one learning rule")
        _check_meta(self.meta)

    def check_gateware(self) -> None:
        """Raise ImageError, naming every layer and feature, unless the gateware can run the
        image: its LIF core runs every neuron model of docs/neuron.md (synaptic current,
        multi-spike, compare, reset timing, LI readout) on a dense layer; its convolution core
        runs all of them but the LI readout (`LayerParams.gateware_features`); a convolution
        does not learn."""
        bad = [f"layer {index} ({layer.name!r}) is a convolution with "
               f"{', '.join(layer.gateware_features())}"
               for index, layer in enumerate(self.layers) if layer.gateware_features()]
        if bad:
            raise ImageError(f"the gateware's convolution core streams spikes, not membranes, "
                             f"but {'; '.join(bad)}: run it in the golden model "
                             f"(compile without a board or device)")

    def with_weights(self, weights: list[np.ndarray], rec_weights=None) -> Image:
        """A copy with new integer weights per layer (e.g. learned ones)."""
        layers = []
        for index, (layer, w) in enumerate(zip(self.layers, weights, strict=True)):
            rec = layer.rec_weights if rec_weights is None else rec_weights[index]
            layers.append(replace(layer, weights=w, rec_weights=rec))
        return Image(self.n_inputs, layers, self.config, dict(self.meta), self.learning)

    # -- device memories -----------------------------------------------------------------------
    def weight_memory(self, core_index: int) -> np.ndarray:
        """The core's weight memory: uint8 [weight_depth, bytes_per_word], little-endian, word
        ``row * groups + group`` (`weight_depth`, `core_groups`). A dense core's rows are its
        fan-in; a convolution's core holds the kernel rows of its output channels c0..c1
        (`core_channels`), ``pack_weights(kernel[c0:c1], weight_bits, lanes)``, rows
        C_in * K * K (index ``(c * K + i) * K + j``)."""
        core = self.config.cores[core_index]
        layer = self.layers[core.layer]
        if layer.conv is not None:
            c0, c1 = core_channels(layer, core)
            return pack_weights(layer.weights[c0:c1], layer.weight_bits, core.lanes)
        return pack_weights(layer.all_weights()[core.lo:core.hi], layer.weight_bits, core.lanes)

    # -- file ----------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        self.check()
        arrays: list[tuple[str, np.ndarray]] = []
        layers_json = []
        for index, layer in enumerate(self.layers):
            entry = {"n_in": layer.n_in, "n_out": layer.n_out, "recurrent": layer.recurrent,
                     **{name: getattr(layer, name) for name, spec in LAYER_FIELDS.items()
                        if spec.required or getattr(layer, name) != spec.default}}
            if layer.conv is not None:
                # the kernel has no core weight memory: it is stored as it is
                entry["conv"] = layer.conv.to_dict()
                arrays.append((f"layer{index}.kernel", layer.weights.astype("<i4")))
            layers_json.append(entry)
            for name in NEURON_ARRAYS:
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
        cfg = self.config
        header = {
            "n_inputs": operator.index(self.n_inputs),
            "config": {"device": cfg.device, "board": cfg.board, "clock_hz": float(cfg.clock_hz),
                       "cores": [{"layer": operator.index(c.layer), "lo": operator.index(c.lo),
                                  "hi": operator.index(c.hi), "lanes": operator.index(c.lanes)}
                                 for c in cfg.cores]},
            "layers": layers_json,
            "arrays": table,
            "payload_bytes": offset,
            "meta": self.meta,
            "learning": [entry.to_dict() for entry in self.learning],
        }
        try:
            head = json.dumps(header, sort_keys=True, allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ImageError(f"the image header cannot be written as JSON ({exc})") from None
        if len(head) > MAX_HEADER_BYTES or offset > MAX_PAYLOAD_BYTES:
            raise ImageError(f"the image is too large: header {len(head)} bytes (at most "
                             f"{MAX_HEADER_BYTES}), payload {offset} bytes (at most "
                             f"{MAX_PAYLOAD_BYTES})")
        body = (_PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(head), offset) + head
                + b"".join(blobs))
        return body + _TRAILER.pack(zlib.crc32(body))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a failure leaves no partial file behind."""
        write_atomic(path, self.to_bytes())


def _check_config(config: HwConfig, n_outs: list[int],
                  convs: Sequence[ConvSpec | None]) -> None:
    """Device, clock and cores: each layer tiled by cores in order of `lo`, lanes in range; a
    convolution's cores hold whole output channels and at most as many lanes as channels."""
    if not isinstance(config.device, str) or not 1 <= len(config.device) <= MAX_NAME_CHARS:
        raise ImageError(f"config.device must be a string of 1..{MAX_NAME_CHARS} characters, "
                         f"not {_show(config.device)}")
    if config.board is not None and (not isinstance(config.board, str)
                                     or not 1 <= len(config.board) <= MAX_NAME_CHARS):
        raise ImageError(f"config.board must be null or a string of 1..{MAX_NAME_CHARS} "
                         f"characters, not {_show(config.board)}")
    if not _is_float(config.clock_hz) or not 0 < config.clock_hz <= MAX_CLOCK_HZ:
        raise ImageError(f"config.clock_hz must be a number in (0, {MAX_CLOCK_HZ:g}], not "
                         f"{_show(config.clock_hz)}")
    if not 1 <= len(config.cores) <= MAX_CORES:
        raise ImageError(f"an image must have 1..{MAX_CORES} cores, not {len(config.cores)}")
    tiles: list[list[tuple[int, int]]] = [[] for _ in n_outs]
    for index, core in enumerate(config.cores):
        where = f"core {index}"
        for name in ("layer", "lo", "hi", "lanes"):
            if not _is_int(getattr(core, name)):
                raise ImageError(f"{where}: {name} must be an integer, not "
                                 f"{_show(getattr(core, name))}")
        if not 0 <= core.layer < len(n_outs):
            raise ImageError(f"{where} names layer {core.layer}; the image has {len(n_outs)} "
                             f"layers")
        if not 0 <= core.lo < core.hi <= n_outs[core.layer]:
            raise ImageError(f"{where}: neurons [{core.lo}, {core.hi}) are not a range of "
                             f"layer {core.layer}'s {n_outs[core.layer]} neurons")
        if not 1 <= core.lanes <= MAX_NEURONS:
            raise ImageError(f"{where}: lanes must be 1..{MAX_NEURONS}, not {core.lanes}")
        conv = convs[core.layer]
        if conv is not None:
            channels, out_h, out_w = conv.out_shape
            per = out_h * out_w
            if core.lo % per or core.hi % per:
                raise ImageError(f"{where}: layer {core.layer} is a convolution of {channels} "
                                 f"channels of {out_h}x{out_w} neurons, so its cores must hold "
                                 f"whole channels (lo and hi multiples of {per}), not neurons "
                                 f"[{core.lo}, {core.hi})")
            if core.lanes > (core.hi - core.lo) // per:
                raise ImageError(f"{where}: lanes must be 1..{(core.hi - core.lo) // per} (the "
                                 f"convolution channels it holds), not {core.lanes}")
        tiles[core.layer].append((core.lo, core.hi))
    for index, (ranges, n_out) in enumerate(zip(tiles, n_outs, strict=True)):
        covered = 0
        for lo, hi in sorted(ranges):
            if lo != covered:
                raise ImageError(f"layer {index}: its cores do not tile its {n_out} neurons "
                                 f"(neurons {min(lo, covered)}..{max(lo, covered) - 1} are "
                                 f"{'covered twice' if lo < covered else 'on no core'})")
            covered = hi
        if covered != n_out:
            raise ImageError(f"layer {index}: cores cover {covered} of {n_out} neurons")


class WriteError(OSError):
    """An output file cannot be written; the message names the requested path."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "cannot write"


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def output_target(path: str | os.PathLike) -> tuple[Path, int | None]:
    """The file that writing `path` replaces (symbolic links followed) and the permission bits
    it keeps (None: a new file, created with 0666 less the umask, as open() creates one).

    Raises WriteError when `path` is a FIFO, a device, a socket or a directory: those are not
    replaced by a file.
    """
    target = Path(os.path.realpath(path))
    try:
        info = os.stat(target)
    except FileNotFoundError:
        return target, None
    except OSError as exc:
        raise WriteError(f"{path}: cannot write ({exc.strerror})") from None
    for test, kind in _KINDS:
        if test(info.st_mode):
            raise WriteError(f"{path}: is {kind}, not a regular file; refusing to replace it")
    return target, stat.S_IMODE(info.st_mode)


class StagedFile:
    """`data` written whole to a temporary file beside `path`'s target; `commit()` renames it
    into place (atomically: readers see the old file or the new one), `discard()` removes it.
    Errors name `path`, never the temporary file."""

    def __init__(self, path: str | os.PathLike, data: bytes):
        self.path = Path(path)
        self.target, mode = output_target(path)
        self.tmp: Path | None = None
        for attempt in range(100):
            tmp = self.target.with_name(f".{self.target.name}.{os.getpid()}.{attempt}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            except OSError as exc:
                raise WriteError(f"{self.path}: cannot write ({exc.strerror})") from None
            self.tmp = tmp
            break
        else:
            raise WriteError(f"{self.path}: cannot write (no free temporary name)")
        try:
            with os.fdopen(fd, "wb") as f:
                if mode is not None:
                    os.fchmod(f.fileno(), mode)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.discard()
            raise WriteError(f"{self.path}: cannot write ({exc.strerror})") from None
        except BaseException:
            self.discard()
            raise

    def commit(self) -> None:
        try:
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            raise WriteError(f"{self.path}: cannot write ({exc.strerror})") from None
        self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` whole or not at all (see StagedFile and output_target)."""
    StagedFile(path, data).commit()


# -- weight memories -----------------------------------------------------------------------------
def word_bytes(lanes: int, weight_bits: int) -> int:
    """Bytes of one weight-memory word: `lanes` fields of `weight_bits`, rounded up."""
    return -(-lanes * weight_bits // 8)


def _lane_spans(lanes: int, weight_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Per lane: the first byte of its field and the field's bit offset in that byte. A field
    of at most 16 bits spans at most 3 bytes from there."""
    start = np.arange(lanes, dtype=np.int64) * weight_bits
    return start // 8, (start % 8).astype(np.uint32)


def pack_weights(weights: np.ndarray, weight_bits: int, lanes: int) -> np.ndarray:
    """Pack [neurons, fan_in] weights as memory words: address = row * groups + group."""
    neurons, fan_in = weights.shape
    groups = -(-neurons // lanes)
    nbytes = word_bytes(lanes, weight_bits)
    padded = np.zeros((groups * lanes, fan_in), dtype=np.int64)
    padded[:neurons] = weights
    fields = (padded.T.reshape(fan_in * groups, lanes) & ((1 << weight_bits) - 1))
    fields = fields.astype(np.uint32)
    out = np.zeros((fan_in * groups, nbytes + 2), dtype=np.uint8)  # 2 spare bytes for spans
    first, offset = _lane_spans(lanes, weight_bits)
    for lane in range(lanes):
        shifted = fields[:, lane] << offset[lane]
        for k in range(3):
            out[:, first[lane] + k] |= ((shifted >> (8 * k)) & 0xFF).astype(np.uint8)
    return np.ascontiguousarray(out[:, :nbytes])


def unpack_weights(memory: np.ndarray, weight_bits: int, lanes: int, neurons: int,
                   fan_in: int) -> np.ndarray:
    """Inverse of pack_weights: [neurons, fan_in] int32.

    Refuses a memory of the wrong shape, padding bits past the last lane that are not zero,
    and weights in the lanes past the core's last neuron that are not zero.
    """
    groups = -(-neurons // lanes)
    shape = (fan_in * groups, word_bytes(lanes, weight_bits))
    memory = np.asarray(memory)
    if memory.dtype != np.uint8 or memory.shape != shape:
        raise ImageError(f"weight memory must be uint8 {list(shape)} (words, bytes per word), "
                         f"not {memory.dtype} {list(memory.shape)}")
    used = lanes * weight_bits
    if used % 8 and shape[0]:
        stray = memory[:, -1] >> (used % 8)
        if stray.any():
            raise ImageError(f"weight memory word {int(np.flatnonzero(stray)[0])} has padding "
                             f"bits past its {lanes} lanes set; they must be zero")
    first, offset = _lane_spans(lanes, weight_bits)
    mask, sign = (1 << weight_bits) - 1, 1 << (weight_bits - 1)
    spare = np.zeros((shape[0], shape[1] + 2), dtype=np.uint8)
    spare[:, :shape[1]] = memory
    out = np.empty((shape[0], lanes), dtype=np.int32)
    step = max(1, (1 << 20) // max(1, lanes))  # words per slice: bounded temporaries
    for lo in range(0, shape[0], step):
        part = spare[lo:lo + step]
        value = part[:, first].astype(np.uint32)
        value |= part[:, first + 1].astype(np.uint32) << 8
        value |= part[:, first + 2].astype(np.uint32) << 16
        value = ((value >> offset) & mask).astype(np.int32)
        out[lo:lo + step] = value - ((value & sign) << 1)
    out = out.reshape(fan_in, groups * lanes)
    if neurons < groups * lanes and out[:, neurons:].any():
        raise ImageError(f"weight memory has weights in the {groups * lanes - neurons} unused "
                         f"lanes of its last group; they must be zero")
    return np.ascontiguousarray(out[:, :neurons].T)


def assemble_weights(cores: Sequence[CoreConfig], layer: int, n_out: int, fan_in: int,
                     weight_bits: int, memory: Callable[[int], np.ndarray]) -> np.ndarray:
    """Layer ``layer``'s weights, int32 [n_out, fan_in], stitched from the weight memories of its
    cores; ``memory(core_index)`` gives core ``core_index``'s memory as
    :meth:`Image.weight_memory` lays it out."""
    full = np.zeros((n_out, fan_in), dtype=np.int32)
    for core_index, core in enumerate(cores):
        if core.layer == layer:
            try:
                full[core.lo:core.hi] = unpack_weights(memory(core_index), weight_bits,
                                                       core.lanes, core.neurons, fan_in)
            except ImageError as exc:
                raise ImageError(f"core {core_index}: {exc}") from None
    return full


def assemble_kernel(layer: LayerParams, cores: Sequence[CoreConfig], index: int,
                    memory: Callable[[int], np.ndarray]) -> np.ndarray:
    """A convolutional layer's kernel, int32 [out_channels, C_in * K * K], stitched from the
    weight memories of its cores (layer `index` of `cores`); ``memory(core_index)`` gives a
    core's memory as :meth:`Image.weight_memory` lays it out (`weight_depth` words)."""
    kernel = np.zeros((layer.conv.out_channels, layer.conv.taps), dtype=np.int32)
    for core_index, core in enumerate(cores):
        if core.layer == index:
            c0, c1 = core_channels(layer, core)
            try:
                kernel[c0:c1] = unpack_weights(memory(core_index), layer.weight_bits,
                                               core.lanes, c1 - c0, layer.conv.taps)
            except ImageError as exc:
                raise ImageError(f"core {core_index}: {exc}") from None
    return kernel


# -- the per-neuron parameter word ---------------------------------------------------------------
@dataclass(frozen=True)
class ParamField:
    """One field of a layer's parameter word: bits [offset, offset + width), two's complement
    when ``signed``."""

    name: str  # "threshold" | "bias" | "decay" | "syn_decay"
    width: int
    signed: bool
    offset: int


def bias_bits(bias: np.ndarray) -> int:
    """Signed width that holds every value of ``bias`` (at least 2)."""
    values = np.asarray(bias, dtype=np.int64).reshape(-1)
    # b >= 0 needs bit_length(b) + 1 bits, b < 0 needs bit_length(-b - 1) + 1 (= ~b)
    magnitude = np.where(values >= 0, values, ~values)
    return max(2, int(magnitude.max(initial=0)).bit_length() + 1)


def param_fields(layer: LayerParams) -> tuple[ParamField, ...]:
    """The fields of the layer's per-neuron parameter word, lowest bits first: the PARAMS
    memory space of a core and the gateware's ``hdl.core.param_layout``.

    threshold  unsigned, v_bits - 1      (0 <= theta <= 2^(v_bits-1) - 1)
    bias       signed, bias_bits(bias)   (the narrowest width that holds the layer's biases)
    decay      unsigned, 5 (shift k) or decay_frac + 1 (mul beta_q); absent for "none"
    syn_decay  unsigned, 5 (shift k_a) or syn_decay_frac + 1 (mul alpha_q); only with a
               synaptic current whose decay mode is not "none"
    """
    widths = [("threshold", layer.v_bits - 1, False), ("bias", bias_bits(layer.bias), True)]
    if layer.decay_mode == "shift":
        widths.append(("decay", 5, False))
    elif layer.decay_mode == "mul":
        widths.append(("decay", layer.decay_frac + 1, False))
    if layer.syn_decay_mode == "shift":
        widths.append(("syn_decay", 5, False))
    elif layer.syn_decay_mode == "mul":
        widths.append(("syn_decay", layer.syn_decay_frac + 1, False))
    fields, offset = [], 0
    for name, width, signed in widths:
        fields.append(ParamField(name, width, signed, offset))
        offset += width
    return tuple(fields)


def param_values(layer: LayerParams) -> dict[str, np.ndarray]:
    """Per-neuron values of each field of :func:`param_fields`, int32 [n_out]."""
    values = {"threshold": layer.threshold, "bias": layer.bias}
    if layer.decay_mode == "shift":
        values["decay"] = layer.decay_shift
    elif layer.decay_mode == "mul":
        values["decay"] = layer.decay_mul
    if layer.syn_decay_mode == "shift":
        values["syn_decay"] = layer.syn_decay_shift
    elif layer.syn_decay_mode == "mul":
        values["syn_decay"] = layer.syn_decay_mul
    return values


def pack_params(fields: Sequence[ParamField], values: dict[str, int]) -> int:
    """One parameter word from a value per field; a value must fit its field."""
    word = 0
    for f in fields:
        value = operator.index(values[f.name])
        low, high = _signed_range(f.width) if f.signed else (0, (1 << f.width) - 1)
        if not low <= value <= high:
            raise ValueError(f"{f.name} must fit {'a signed' if f.signed else 'an unsigned'} "
                             f"{f.width}-bit field, not {value!r}")
        word |= (value & ((1 << f.width) - 1)) << f.offset
    return word


def unpack_params(fields: Sequence[ParamField], word: int) -> dict[str, int]:
    """Inverse of :func:`pack_params` (bits above the fields are ignored)."""
    values = {}
    for f in fields:
        value = (operator.index(word) >> f.offset) & ((1 << f.width) - 1)
        if f.signed and value >> (f.width - 1):
            value -= 1 << f.width
        values[f.name] = value
    return values


def param_words(layer: LayerParams, lo: int, hi: int) -> list[int]:
    """The parameter words of neurons [lo, hi) of the layer (a core's PARAMS space)."""
    fields = param_fields(layer)
    values = param_values(layer)
    return [pack_params(fields, {name: int(v[n]) for name, v in values.items()})
            for n in range(lo, hi)]


# -- loading ---------------------------------------------------------------------------------
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth(text: bytes) -> int:
    """Deepest nesting of [ and { in a JSON text (strings skipped), without parsing it."""
    bare = np.frombuffer(_STRING.sub(b'""', text), dtype=np.uint8)
    step = (np.isin(bare, (ord("["), ord("{"))).astype(np.int32)
            - np.isin(bare, (ord("]"), ord("}"))).astype(np.int32))
    return int(np.cumsum(step).max(initial=0))


def _no_constants(name: str) -> Any:
    raise ImageError(f"the header holds {name}, which is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ImageError(f"the header names key {dup!r} twice in one object")
    return out


def _check_preamble(data: bytes, size: int, source: str) -> tuple[int, int]:
    """(header length, payload length) from the first bytes of a file of `size` bytes."""
    if size < _PREAMBLE.size + _TRAILER.size:
        if data[:len(MAGIC)] != MAGIC[:len(data)] or not data:
            raise ImageError(f"{source}: not a spikeforge image (no SFIMAGE magic)")
        raise ImageError(f"{source}: truncated image ({size} bytes)")
    magic, version, reserved, head_len, payload_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ImageError(f"{source}: not a spikeforge image (no SFIMAGE magic)")
    if version != FORMAT_VERSION:
        raise ImageError(f"{source}: image format version {version} is not supported "
                         f"(this spikeforge reads version {FORMAT_VERSION})")
    expected = _PREAMBLE.size + head_len + payload_len + _TRAILER.size
    if size < expected:
        raise ImageError(f"{source}: truncated image ({size} of {expected} bytes)")
    if size > expected:
        raise ImageError(f"{source}: {size - expected} unexpected bytes after the image")
    if reserved != 0:
        raise ImageError(f"{source}: the reserved preamble field must be 0, not {reserved}")
    if head_len > MAX_HEADER_BYTES:
        raise ImageError(f"{source}: the header is {head_len} bytes; at most "
                         f"{MAX_HEADER_BYTES} are allowed")
    if payload_len > MAX_PAYLOAD_BYTES:
        raise ImageError(f"{source}: the payload is {payload_len} bytes; at most "
                         f"{MAX_PAYLOAD_BYTES} are allowed")
    return head_len, payload_len


def image_from_bytes(data: bytes, *, source: str = "image") -> Image:
    data = bytes(data)
    head_len, payload_len = _check_preamble(data, len(data), source)
    head_end = _PREAMBLE.size + head_len
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(memoryview(data)[:len(data) - _TRAILER.size]) != crc:
        raise ImageError(f"{source}: checksum mismatch: the image is corrupt")
    text = data[_PREAMBLE.size:head_end]
    try:
        if _json_depth(text) > MAX_JSON_DEPTH:
            raise ImageError(f"the header is nested deeper than {MAX_JSON_DEPTH} levels")
        header = json.loads(text.decode("utf-8"), parse_constant=_no_constants,
                            object_pairs_hook=_unique_keys)
        payload = memoryview(data)[head_end:head_end + payload_len]
        return _image_from_header(header, payload)
    except ImageError as exc:
        raise ImageError(f"{source}: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImageError(f"{source}: the header is not valid UTF-8 JSON ({exc})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of too many digits
        raise ImageError(f"{source}: corrupt image header ({exc})") from None


def _keys(value: Any, where: str, required: tuple[str, ...],
          optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise ImageError(f"{where} must be an object, not {_show(value)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise ImageError(f"{where} lacks {', '.join(map(repr, missing))}")
    extra = sorted(set(value) - set(required) - set(optional))
    if extra:
        raise ImageError(f"{where} has unknown key(s) {', '.join(map(repr, extra))}")
    return value


def _list(value: Any, where: str, lo: int, hi: int) -> list:
    if not isinstance(value, list) or not lo <= len(value) <= hi:
        span = f"{lo}" if lo == hi else f"{lo}..{hi}"
        got = f"{len(value)} entries" if isinstance(value, list) else _show(value)
        raise ImageError(f"{where} must be a list of {span} entries, not {got}")
    return value


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    problem = Field("int", _const(lo, hi)).problem(value, lambda name: None)
    if problem:
        raise ImageError(f"{where} {problem}")
    return value


_HEADER_KEYS = ("arrays", "config", "layers", "learning", "meta", "n_inputs", "payload_bytes")
_LAYER_KEYS = ("n_in", "n_out", "recurrent",
               *(name for name, spec in LAYER_FIELDS.items() if spec.required))
_LAYER_OPTIONAL = tuple(name for name, spec in LAYER_FIELDS.items() if not spec.required)
_ARRAY_KEYS = ("dtype", "name", "nbytes", "offset", "shape")


def _image_from_header(header: Any, payload: memoryview) -> Image:
    """Check every header field, then the array table against the payload, then read."""
    _keys(header, "the header", _HEADER_KEYS)
    n_inputs = _int(header["n_inputs"], "n_inputs", 1, MAX_NEURONS)
    _int(header["payload_bytes"], "payload_bytes", len(payload), len(payload))
    entries = list(_list(header["layers"], "layers", 1, MAX_LAYERS))
    width, shapes, convs = n_inputs, [], []
    for index, entry in enumerate(entries):
        where = f"layer {index}"
        _keys(entry, where, _LAYER_KEYS, (*_LAYER_OPTIONAL, "conv"))
        entry = {**{name: LAYER_FIELDS[name].default for name in _LAYER_OPTIONAL}, **entry}
        entries[index] = entry
        _check_fields(LAYER_FIELDS, entry.get, where)
        n_in = _int(entry["n_in"], f"{where}: n_in", 1, MAX_NEURONS)
        n_out = _int(entry["n_out"], f"{where}: n_out", 1, MAX_NEURONS)
        if n_in != width:
            raise ImageError(f"{where} expects {n_in} inputs but its source gives {width}")
        if not isinstance(entry["recurrent"], bool):
            raise ImageError(f"{where}: recurrent must be true or false, not "
                             f"{_show(entry['recurrent'])}")
        conv = None
        if "conv" in entry:  # checked whole (and capped) before the kernel is read
            conv = ConvSpec.from_dict(entry["conv"], f"{where}: conv")
            if (conv.n_in, conv.n_out) != (n_in, n_out):
                raise ImageError(f"{where}: its convolution maps {conv.n_in} inputs to "
                                 f"{conv.n_out} neurons, not {n_in} to {n_out}")
            if entry["recurrent"]:
                raise ImageError(f"{where}: a convolution cannot be recurrent")
        shapes.append((n_in, n_out, entry["recurrent"]))
        convs.append(conv)
        width = n_out

    cfg = _keys(header["config"], "config", ("board", "clock_hz", "cores", "device"))
    cores = []
    for index, core in enumerate(_list(cfg["cores"], "config.cores", 1, MAX_CORES)):
        _keys(core, f"core {index}", ("hi", "lanes", "layer", "lo"))
        bounds = {"layer": (0, MAX_LAYERS - 1), "lo": (0, MAX_NEURONS - 1),
                  "hi": (1, MAX_NEURONS), "lanes": (1, MAX_NEURONS)}
        cores.append(CoreConfig(*(_int(core[k], f"core {index}: {k}", *bounds[k])
                                  for k in ("layer", "lo", "hi", "lanes"))))
    config = HwConfig(device=cfg["device"], cores=tuple(cores), board=cfg["board"],
                      clock_hz=cfg["clock_hz"])
    _check_config(config, [n_out for _, n_out, _ in shapes], convs)

    rules = []
    for index, entry in enumerate(_list(header["learning"], "learning", 0, len(entries))):
        _keys(entry, f"learning entry {index}", ("layer", "rule", *LEARNING_FIELDS))
        _int(entry["layer"], f"learning entry {index}: layer", 0, len(entries) - 1)
        rules.append(LearningConfig(**entry))
    _check_meta(header["meta"])

    # The array table: exactly the arrays the layers and cores need, in the order save writes
    # them, back to back.
    expected = []
    for index, entry in enumerate(entries):
        if convs[index] is not None:
            expected.append((f"layer{index}.kernel", "<i4",
                             [convs[index].out_channels, convs[index].taps]))
        for name, spec in NEURON_ARRAYS.items():
            if spec.needed(entry.get):
                expected.append((f"layer{index}.{name}", "<i4", [shapes[index][1]]))
    for index, core in enumerate(cores):
        if convs[core.layer] is not None:
            continue  # a convolution's kernel is the layer's, its cores hold no weights
        n_in, n_out, recurrent = shapes[core.layer]
        fan_in = n_in + (n_out if recurrent else 0)
        expected.append((f"core{index}.weights", "|u1",
                         [fan_in * core.groups,
                          word_bytes(core.lanes, entries[core.layer]["weight_bits"])]))
    table = _list(header["arrays"], "arrays", len(expected), len(expected))
    arrays, offset = {}, 0
    for entry, (name, dtype, shape) in zip(table, expected, strict=True):
        _keys(entry, f"array {name!r}", _ARRAY_KEYS)
        if entry["name"] != name:
            raise ImageError(f"arrays lists {_show(entry['name'])} where {name!r} belongs "
                             f"(save order: per layer its arrays, then each core's weights)")
        where = f"array {name!r}"
        if entry["dtype"] != dtype:
            raise ImageError(f"{where}: dtype must be {dtype!r}, not {_show(entry['dtype'])}")
        if entry["shape"] != shape or not all(_is_int(n) for n in entry["shape"]):
            raise ImageError(f"{where}: shape must be {shape}, not {_show(entry['shape'])}")
        nbytes = math.prod(shape) * (4 if dtype == "<i4" else 1)
        _int(entry["nbytes"], f"{where}: nbytes", nbytes, nbytes)
        start = entry["offset"]
        if not _is_int(start) or not 0 <= start <= len(payload) - nbytes:
            raise ImageError(f"{where}: offset {_show(start)} puts its {nbytes} bytes outside "
                             f"the {len(payload)}-byte payload")
        if start != offset:
            raise ImageError(f"{where}: offset must be {offset} (arrays lie back to back, with "
                             f"no gap and no overlap), not {start}")
        arrays[name] = np.frombuffer(payload, dtype=np.dtype(dtype), count=math.prod(shape),
                                     offset=start).reshape(shape)
        offset = start + nbytes
    if offset != len(payload):
        raise ImageError(f"the payload's last {len(payload) - offset} bytes belong to no array")

    layers = []
    for index, ((n_in, n_out, recurrent), entry) in enumerate(zip(shapes, entries, strict=True)):
        if convs[index] is not None:
            weights, rec_weights = arrays[f"layer{index}.kernel"], None
        else:
            fan_in = n_in + (n_out if recurrent else 0)
            full = assemble_weights(cores, index, n_out, fan_in, entry["weight_bits"],
                                    lambda core_index: arrays[f"core{core_index}.weights"])
            weights, rec_weights = full[:, :n_in], full[:, n_in:] if recurrent else None
        layers.append(LayerParams(
            weights=weights, rec_weights=rec_weights, conv=convs[index],
            **{name: entry[name] for name in LAYER_FIELDS},
            **{name: arrays.get(f"layer{index}.{name}") for name in NEURON_ARRAYS}))
    image = Image(n_inputs, layers, config, header["meta"], tuple(rules))
    image.check()
    return image


def load_image(path: str | os.PathLike) -> Image:
    """Read and check an image file. Only a regular file is read, and no more of it than its
    preamble declares (within the caps above) once that matches the file's size."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open the image file ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{path}: is a directory, not an image file")
        raise ImageError(f"{path}: not a regular file (a pipe or a device); an image is read "
                         f"from a file")
    with os.fdopen(fd, "rb") as f:
        try:
            start = f.read(_PREAMBLE.size)
            _check_preamble(start, info.st_size, str(path))
            data = start + f.read(info.st_size - len(start))
        except OSError as exc:
            raise ImageError(f"{path}: cannot read the image file ({exc.strerror})") from None
    if len(data) != info.st_size:
        raise ImageError(f"{path}: the file changed while it was read")
    return image_from_bytes(data, source=str(path))

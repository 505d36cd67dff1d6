"""Shapes of spike maps between layers, and pools folded into projections: shared by the torch
and NIR front ends.

A projection (Linear/Affine or Conv2d) may pool its currents before its neuron: "max", or
"sum" (an average pool is the sum pool of W / p^2). A sum or average pool of spikes, after a
spiking layer, folds exactly into the next projection (`Maps`' docstring gives the identities).
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from ..image import ConvSpec, ImageError
from .ir import ModelError


class Projection:
    """A Linear or Conv2d (with its pool of currents) waiting for its neuron."""

    def __init__(self, path: str, mod, weight: np.ndarray, conv: ConvSpec | None,
                 bias: np.ndarray | None = None):
        self.path, self.mod, self.weight, self.conv = path, mod, weight, conv
        self.bias = bias  # per output (channel), or None
        self.bias_gain = 1.0  # a sum pool of the currents adds p^2 biases

    def bias_per_neuron(self) -> np.ndarray:
        """The bias at every neuron (a convolution's per channel at every position)."""
        n_out = self.weight.shape[0] if self.conv is None else self.conv.n_out
        if self.bias is None:
            return np.zeros(n_out)
        bias = np.asarray(self.bias, dtype=np.float64).reshape(-1) * self.bias_gain
        if self.conv is None:
            return bias
        return np.repeat(bias, n_out // self.conv.out_channels)

    def add_pool(self, kind: str, size: int) -> None:
        conv = self.conv
        if conv is None:
            raise ModelError("pooling needs a map, not the output of a Linear")
        if conv.pool != "none":
            raise ModelError(f"a second pool before the neuron (the {conv.pool} pool "
                             f"{conv.pool_size} already pools this convolution)")
        conv_h, conv_w = conv.conv_shape
        if conv_h % size or conv_w % size:
            raise ModelError(f"a {size}x{size} pool must tile the {conv_h}x{conv_w} map")
        if kind == "avg":  # avg(conv(x) + b) = sum(conv_{W/p^2}(x)) + b
            self.weight = self.weight / size ** 2
            kind = "sum"
        elif kind == "sum":  # sum(conv(x) + b) = sum(conv(x)) + p^2 b
            self.bias_gain *= size ** 2
        self.conv = replace(conv, pool=kind, pool_size=size)


class Maps:
    """The shape of the spike map between layers, and sum or average pools of spikes waiting to
    be folded into the next projection:

        conv_W(sumpool_p(s)) = conv_W'(s),  W'[o, c, p*i + a, p*j + b] = W[o, c, i, j],
                               stride * p, padding * p       (avg: W' / p^2)
        W @ sumpool_p(s)     = W' @ s,      W'[:, (c, y, x)] = W[:, (c, y // p, x // p)]
    """

    def __init__(self, input_shape):
        self.shape: tuple[int, int, int] | None = None
        self.known = True  # False after a refused module: later shapes are not checked
        self.layered = False  # True once a layer was built
        if input_shape is not None:
            shape = tuple(int(n) for n in np.atleast_1d(input_shape))
            if len(shape) == 3:
                self.shape = shape
        self.pool = 1  # spike pool waiting to be folded: its size,
        self.pool_gain = 1.0  # 1 for a sum, 1 / p^2 for an average
        self.notes: list[str] = []

    def lost(self) -> None:
        self.known, self.shape, self.pool, self.pool_gain = False, None, 1, 1.0

    def after(self, conv: ConvSpec | None) -> None:
        self.layered = True
        self.shape = None if conv is None else conv.out_shape

    def unflatten(self, size: tuple[int, int, int]) -> None:
        self.shape = size

    def pool_spikes(self, size: int, kind: str = "avg") -> None:
        if self.shape is None:
            raise ModelError("pooling spikes needs the map of a convolution before it")
        c, h, w = self.shape
        if h % size or w % size:
            raise ModelError(f"a {size}x{size} pool must tile the {h}x{w} map")
        self.pool *= size
        if kind == "avg":
            self.pool_gain /= size ** 2
        self.shape = (c, h // size, w // size)

    def _unpooled(self) -> tuple[int, int, int]:
        c, h, w = self.shape
        return c, h * self.pool, w * self.pool

    def conv(self, geometry: dict, weight: np.ndarray) -> tuple[np.ndarray, ConvSpec]:
        if self.shape is None:
            raise ModelError("the map it reads is unknown (an earlier module was refused)"
                             if not self.known else
                             "a convolution after a Linear layer has no map to read"
                             if self.layered else
                             "a convolution needs the map it reads: give input_shape (C, H, W)")
        c_out, c_in, k, _ = weight.shape
        if c_in != self.shape[0]:
            raise ModelError(f"it reads {c_in} channels, the map before it has "
                             f"{self.shape[0]}")
        p = self.pool
        _, h, w = self._unpooled()
        stride, padding = geometry["stride"] * p, geometry["padding"] * p
        if p > 1:
            weight = np.repeat(np.repeat(weight, p, axis=2), p, axis=3) * self.pool_gain
            self.notes.append(f"a {p}x{p} pool of spikes folded into a {k * p}x{k * p} "
                              f"kernel with stride {stride}")
        try:
            spec = ConvSpec(c_in, h, w, c_out, k * p, stride=stride, padding=padding)
        except ImageError as exc:
            raise ModelError(re.sub(r"^[^:]*: ", "", str(exc))) from None
        self.pool, self.pool_gain = 1, 1.0
        return weight.reshape(c_out, -1), spec

    def fold_dense(self, weight: np.ndarray) -> np.ndarray:
        if self.pool == 1:
            self.shape = None
            return weight
        c, h, w = self.shape
        if weight.shape[1] != c * h * w:
            raise ModelError(f"it takes {weight.shape[1]} inputs, the pooled map gives "
                             f"{c * h * w}")
        p = self.pool
        maps = weight.reshape(-1, c, h, w)
        weight = np.repeat(np.repeat(maps, p, axis=2), p, axis=3).reshape(weight.shape[0], -1)
        self.notes.append(f"a {p}x{p} pool of spikes folded into the Linear's columns")
        weight = weight * self.pool_gain
        self.shape, self.pool, self.pool_gain = None, 1, 1.0
        return weight


def pair(value, what: str) -> int:
    """One integer for both axes (an int, or a pair of equal ints as torch and NIR write)."""
    values = tuple(np.asarray(value).reshape(-1).tolist()) \
        if isinstance(value, (tuple, list, np.ndarray)) else (value, value)
    if len(values) not in (1, 2) or len(set(values)) != 1 or isinstance(values[0], bool) \
            or not float(values[0]).is_integer():
        raise ModelError(f"{what} must be one integer for both axes, not {value!r}")
    return int(values[0])

"""Float graph IR: what the front ends produce and the quantizer consumes.

A network is a chain of LIF layers. Each layer is a dense projection (feed-forward weights, an
optional bias, optional all-to-all recurrent weights) followed by a leaky integrate-and-fire
population, exactly the discrete neuron of docs/neuron.md in real numbers:

    I[t] = W @ s_in[t] + W_rec @ s[t-1] + b
    subtract reset:  v[t] = beta * v[t-1] + I[t] - theta * s[t-1]
    zero reset:      v[t] = beta * (v[t-1] * (1 - s[t-1])) + I[t]
    s[t] = v[t] > theta
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

RESET_MODES = ("subtract", "zero")


class ModelError(ValueError):
    """The model cannot be run by the hardware; the message names every offending node."""


@dataclass
class LifLayer:
    name: str
    weight: np.ndarray  # float64 [n_out, n_in]
    bias: np.ndarray  # float64 [n_out] (zeros when the model has none)
    beta: np.ndarray  # float64 [n_out], in [0, 1]
    threshold: np.ndarray  # float64 [n_out]
    reset: str = "subtract"
    rec_weight: np.ndarray | None = None  # float64 [n_out, n_out], source = column

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float64)
        if self.weight.ndim != 2:
            raise ModelError(f"layer {self.name!r}: weight must be 2-D, not {self.weight.shape}")
        n_out = self.weight.shape[0]
        self.bias = _per_neuron(self.bias, n_out, self.name, "bias")
        self.beta = _per_neuron(self.beta, n_out, self.name, "beta")
        self.threshold = _per_neuron(self.threshold, n_out, self.name, "threshold")
        if self.reset not in RESET_MODES:
            raise ModelError(f"layer {self.name!r}: reset must be one of {RESET_MODES}, "
                             f"not {self.reset!r}")
        if np.any(self.beta < 0) or np.any(self.beta > 1):
            raise ModelError(f"layer {self.name!r}: beta must lie in [0, 1]")
        if self.rec_weight is not None:
            self.rec_weight = np.asarray(self.rec_weight, dtype=np.float64)
            if self.rec_weight.shape != (n_out, n_out):
                raise ModelError(f"layer {self.name!r}: recurrent weight must be "
                                 f"{(n_out, n_out)}, not {self.rec_weight.shape}")
        for what, arr in (("weight", self.weight), ("bias", self.bias), ("beta", self.beta),
                          ("threshold", self.threshold), ("recurrent weight", self.rec_weight)):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ModelError(f"layer {self.name!r}: {what} holds NaN or infinity")

    @property
    def n_in(self) -> int:
        return self.weight.shape[1]

    @property
    def n_out(self) -> int:
        return self.weight.shape[0]

    @property
    def recurrent(self) -> bool:
        return self.rec_weight is not None


@dataclass
class Network:
    n_inputs: int
    layers: list[LifLayer]
    source: str = ""  # where it came from, for reports
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ModelError("the model has no LIF layer")
        width = self.n_inputs
        for layer in self.layers:
            if layer.n_in != width:
                raise ModelError(f"layer {layer.name!r} expects {layer.n_in} inputs but its "
                                 f"source gives {width}")
            width = layer.n_out

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out


def _per_neuron(value, n: int, layer: str, what: str) -> np.ndarray:
    arr = np.asarray(0.0 if value is None else value, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return np.full(n, float(arr[0]))
    if arr.size != n:
        raise ModelError(f"layer {layer!r}: {what} has {arr.size} values for {n} neurons")
    return arr.copy()

"""Float graph IR: what the front ends produce and the quantizer consumes.

A network is a chain of neuron layers. Each layer is a dense projection (feed-forward weights, an
optional bias, optional all-to-all recurrent weights) followed by a population of one neuron
model, the discrete neuron of docs/neuron.md in real numbers. For neuron i at step t, with
c[t] the neuron's spike count (0/1 for single-spike neurons) and every state 0 at t = -1:

    A[t]   = W @ s_in[t] + W_rec @ c[t-1]                       s_in: the source's counts
    current-based (alpha is not None; NIR CubaLIF, snnTorch Synaptic):
        syn[t] = alpha * syn[t-1] + A[t] + b
        J[t]   = syn[t - syn_delay]                             syn_delay 0 (snnTorch) or 1
    plain LIF (alpha is None):
        J[t]   = A[t] + b
    subtract reset, reset_delay=True:   v[t] = beta * v[t-1] + J[t] - theta * c[t-1]
    subtract reset, reset_delay=False:  v[t] = beta * (v[t-1] - theta * c[t-1]) + J[t]
    zero reset (either reset_delay):    v[t] = beta * (v[t-1] * (1 - [c[t-1] > 0])) + J[t]
    c[t]   = #{ j in 1..K : v[t] > j * theta }                  compare ">"  (K = max_spikes)
           = #{ j in 1..K : v[t] >= j * theta }                 compare ">="
    LI readout (spiking=False): c[t] = 0 always, so v[t] = beta * v[t-1] + J[t]; its output is
        v itself (threshold, reset, compare and max_spikes are ignored). Only the last layer.

v[t] is the membrane *before* its reset, the value compared with theta (snnTorch's `mem`).
`reset_delay=False` is the convention of libraries that reset at the spike (Norse, Sinabs,
Rockpool, SpikingJelly, snnTorch with reset_delay=False): their post-reset membrane is
v[t] - theta * c[t] (subtract) or v[t] * (1 - [c[t] > 0]) (zero), and it decays next step.
For the zero reset both timings give the same v and c. With K = 1, compare ">" and
reset_delay=True this is snnTorch's Leaky; with alpha, snnTorch's Synaptic (subtract reset).

syn_delay = 1 is the order in which the membrane integrates the current of the previous step
before the current takes this step's input (Norse's LIFCell). Every input gain (NIR r, w_in,
dt/tau) is folded into W, W_rec and b by the front end, so J enters v with gain 1.

A convolutional layer (`conv` set, spikeforge/image.py ConvSpec) replaces W @ s_in by the
convolution of the source's map with the kernel `weight` [C_out, C_in*K*K], followed by its
pooling of the currents ("max" or "sum"; an average pool is a sum pool of W / p^2); b, beta and
theta are then per neuron of the pooled map [C_out, H_out, W_out] in C order, and b is added
after the pooling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..image import ConvSpec, ImageError

RESET_MODES = ("subtract", "zero")
COMPARES = (">", ">=")
MAX_SPIKES_LIMIT = 255  # counts travel as uint8


class ModelError(ValueError):
    """The model cannot be run by the hardware; the message names every offending node."""


def raise_problems(problems: list[str], extra: list[str] = (), order: list[str] = ()) -> None:
    """Raise one ModelError naming every problem, in the model's own `order` (problems start
    with the node's quoted name; strays last), then the `extra` sentences; or nothing."""
    def position(text: str) -> int:
        return next((i for i, name in enumerate(order) if text.startswith(f"{name!r} (")),
                    len(order))

    problems = sorted(problems, key=position)
    parts = []
    if problems:
        parts.append("the hardware cannot run: " + ", ".join(problems))
    parts.extend(extra)
    if parts:
        raise ModelError("; ".join(parts))


@dataclass
class LifLayer:
    """One layer of the float IR; the module docstring gives its equations exactly."""

    name: str
    weight: np.ndarray  # float64 [n_out, n_in]
    bias: np.ndarray  # float64 [n_out] (zeros when the model has none)
    beta: np.ndarray  # float64 [n_out], in [0, 1]: membrane decay
    threshold: np.ndarray  # float64 [n_out] (0 for an LI readout)
    reset: str = "subtract"
    rec_weight: np.ndarray | None = None  # float64 [n_out, n_out], source = column
    alpha: np.ndarray | None = None  # float64 [n_out] in [0, 1]: synaptic current decay
    syn_delay: int = 0  # the membrane adds syn[t - syn_delay]
    max_spikes: int = 1  # K: spikes a neuron may emit per step
    compare: str = ">"  # fire when v > j * theta, or v >= j * theta
    reset_delay: bool = True  # True: the reset applies after the next decay (snnTorch)
    spiking: bool = True  # False: an LI readout whose output is its membrane
    conv: ConvSpec | None = None  # a convolution: weight is its kernel [C_out, C_in*K*K]

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float64)
        if self.weight.ndim != 2:
            raise ModelError(f"layer {self.name!r}: weight must be 2-D, not {self.weight.shape}")
        if self.conv is not None:
            try:
                self.conv.check(f"layer {self.name!r}")
            except ImageError as exc:
                raise ModelError(str(exc)) from None
            if self.weight.shape != (self.conv.out_channels, self.conv.taps):
                raise ModelError(f"layer {self.name!r}: a convolution's weight must be its "
                                 f"kernel {(self.conv.out_channels, self.conv.taps)}, not "
                                 f"{self.weight.shape}")
            if self.rec_weight is not None:
                raise ModelError(f"layer {self.name!r}: a convolution cannot be recurrent")
        n_out = self.n_out
        self.bias = _per_neuron(self.bias, n_out, self.name, "bias")
        self.beta = _per_neuron(self.beta, n_out, self.name, "beta")
        self.threshold = _per_neuron(self.threshold, n_out, self.name, "threshold")
        if self.alpha is not None:
            self.alpha = _per_neuron(self.alpha, n_out, self.name, "alpha")
        if self.reset not in RESET_MODES:
            raise ModelError(f"layer {self.name!r}: reset must be one of {RESET_MODES}, "
                             f"not {self.reset!r}")
        if self.compare not in COMPARES:
            raise ModelError(f"layer {self.name!r}: compare must be one of {COMPARES}, "
                             f"not {self.compare!r}")
        if isinstance(self.max_spikes, bool) or not isinstance(self.max_spikes, (int, np.integer)) \
                or not 1 <= self.max_spikes <= MAX_SPIKES_LIMIT:
            raise ModelError(f"layer {self.name!r}: max_spikes must be an integer "
                             f"1..{MAX_SPIKES_LIMIT}, not {self.max_spikes!r}")
        self.max_spikes = int(self.max_spikes)
        if self.syn_delay not in (0, 1) or isinstance(self.syn_delay, bool):
            raise ModelError(f"layer {self.name!r}: syn_delay must be 0 or 1, "
                             f"not {self.syn_delay!r}")
        if self.syn_delay and self.alpha is None:
            raise ModelError(f"layer {self.name!r}: syn_delay needs a synaptic current (alpha)")
        self.reset_delay = bool(self.reset_delay)
        self.spiking = bool(self.spiking)
        if np.any(self.beta < 0) or np.any(self.beta > 1):
            raise ModelError(f"layer {self.name!r}: beta must lie in [0, 1]")
        if self.alpha is not None and (np.any(self.alpha < 0) or np.any(self.alpha > 1)):
            raise ModelError(f"layer {self.name!r}: alpha must lie in [0, 1]")
        if self.rec_weight is not None:
            self.rec_weight = np.asarray(self.rec_weight, dtype=np.float64)
            if self.rec_weight.shape != (n_out, n_out):
                raise ModelError(f"layer {self.name!r}: recurrent weight must be "
                                 f"{(n_out, n_out)}, not {self.rec_weight.shape}")
            if not self.spiking:
                raise ModelError(f"layer {self.name!r}: an LI readout emits no spikes, so it "
                                 f"cannot be recurrent")
        for what, arr in (("weight", self.weight), ("bias", self.bias), ("beta", self.beta),
                          ("threshold", self.threshold), ("recurrent weight", self.rec_weight),
                          ("alpha", self.alpha)):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise ModelError(f"layer {self.name!r}: {what} holds NaN or infinity")

    @property
    def n_in(self) -> int:
        return self.weight.shape[1] if self.conv is None else self.conv.n_in

    @property
    def n_out(self) -> int:
        return self.weight.shape[0] if self.conv is None else self.conv.n_out

    @property
    def recurrent(self) -> bool:
        return self.rec_weight is not None

    @property
    def current_based(self) -> bool:
        return self.alpha is not None

    def features(self) -> list[str]:
        """The models beyond the plain single-spike LIF this layer uses (for refusals)."""
        found = []
        if self.conv is not None:
            found.append("convolution")
        if not self.spiking:
            found.append("LI readout (no spikes)")
        if self.alpha is not None:
            found.append("synaptic current (CubaLIF/Synaptic)")
        if self.spiking and self.max_spikes > 1:
            found.append(f"multi-spike (up to {self.max_spikes} per step)")
        if self.spiking and self.compare != ">":
            found.append(f"compare {self.compare!r}")
        if self.spiking and self.reset == "subtract" and not self.reset_delay:
            found.append("reset at the spike (reset_delay=False)")
        return found


@dataclass
class Network:
    n_inputs: int
    layers: list[LifLayer]
    source: str = ""  # where it came from, for reports
    notes: list[str] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)  # per layer: numbers and their sources

    def __post_init__(self) -> None:
        if not self.layers:
            raise ModelError("the model has no LIF layer")
        width = self.n_inputs
        for layer in self.layers:
            if layer.n_in != width:
                raise ModelError(f"layer {layer.name!r} expects {layer.n_in} inputs but its "
                                 f"source gives {width}")
            width = layer.n_out
        for layer in self.layers[:-1]:
            if not layer.spiking:
                raise ModelError(f"layer {layer.name!r}: an LI readout emits no spikes, so it "
                                 f"must be the last layer")

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

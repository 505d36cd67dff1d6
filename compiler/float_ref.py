"""Float reference: the network of compiler/ir.py stepped in float64, as the model was trained.

Vectorized over the batch; the equations are compiler/ir.py's, term for term:

    A[t]   = W @ c_in[t] + W_rec @ c[t-1]
    syn[t] = alpha * syn[t-1] + A[t] + b,  J[t] = syn[t - syn_delay]     (current-based)
    J[t]   = A[t] + b                                                     (plain LIF)
    subtract, reset_delay:  v[t] = beta * v[t-1] + J[t] - theta * c[t-1]
    subtract, at the spike: v[t] = beta * (v[t-1] - theta * c[t-1]) + J[t]
    zero reset:             v[t] = beta * (v[t-1] * (1 - [c[t-1] > 0])) + J[t]
    c[t]   = #{j in 1..K: v[t] > j * theta}  (or >=);  0 for an LI readout

Layer l sees layer l-1's spike counts of the same step, as in the golden model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sim.encode import as_batch
from ..sim.golden import conv_currents
from .ir import LifLayer, Network


@dataclass
class FloatResult:
    spikes: np.ndarray  # uint8 [batch, time, n_out] of the output layer (counts)
    layer_spikes: list[np.ndarray]  # per layer uint8 [batch, time, n]
    membranes: list[np.ndarray] | None  # per layer float64 [batch, time, n]; when recorded
    values: np.ndarray | None = None  # float64 [batch, time, n_out]: an LI readout's v


def _check_spikes(spikes: np.ndarray, n_inputs: int) -> np.ndarray:
    return as_batch(spikes, n_inputs).astype(np.float64)


def simulate_float(network: Network, spikes: np.ndarray, *, record: bool = False) -> FloatResult:
    """Run a batch of input spike trains [batch, time, n_inputs]; every sample starts at rest.

    Inputs need not be binary: a real-valued input current (e.g. direct pixel encoding) is
    multiplied by the weights as it is.
    """
    x_all = _check_spikes(spikes, network.n_inputs)
    batch, steps, _ = x_all.shape
    layers = network.layers
    v = [np.zeros((batch, layer.n_out)) for layer in layers]
    syn = [np.zeros((batch, layer.n_out)) for layer in layers]
    c = [np.zeros((batch, layer.n_out)) for layer in layers]
    out_spikes = [np.zeros((batch, steps, layer.n_out), dtype=np.uint8) for layer in layers]
    out_v = [np.zeros((batch, steps, layer.n_out)) for layer in layers]
    for t in range(steps):
        x = x_all[:, t, :]
        for index, layer in enumerate(layers):
            v[index], syn[index], c[index] = step(layer, v[index], syn[index], c[index], x)
            out_spikes[index][:, t] = c[index]
            out_v[index][:, t] = v[index]
            x = c[index]
    last = layers[-1]
    return FloatResult(spikes=out_spikes[-1], layer_spikes=out_spikes,
                       membranes=out_v if record else None,
                       values=None if last.spiking else out_v[-1])


def step(layer: LifLayer, v: np.ndarray, syn: np.ndarray, c_prev: np.ndarray,
         x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of one layer: (v[t], syn[t], c[t]) from v[t-1], syn[t-1], c[t-1] and the
    source's counts c_in[t]."""
    if layer.conv is not None:
        a = conv_currents(x, layer.conv, layer.weight.T)
    else:
        a = x @ layer.weight.T
    if layer.rec_weight is not None:
        a = a + c_prev @ layer.rec_weight.T
    if layer.alpha is not None:
        syn_new = layer.alpha * syn + a + layer.bias
        j = syn if layer.syn_delay else syn_new
    else:
        syn_new = syn
        j = a + layer.bias
    if layer.reset == "zero":
        v = layer.beta * (v * (c_prev == 0)) + j
    elif layer.reset_delay:
        v = layer.beta * v + j - layer.threshold * c_prev
    else:
        v = layer.beta * (v - layer.threshold * c_prev) + j
    if not layer.spiking:
        return v, syn_new, np.zeros_like(v)
    levels = np.arange(1, layer.max_spikes + 1)[:, None, None] * layer.threshold
    fired = v > levels if layer.compare == ">" else v >= levels
    return v, syn_new, fired.sum(axis=0).astype(np.float64)


def run_float(network: Network, spikes: np.ndarray) -> np.ndarray:
    """Output-layer spikes uint8 [batch, time, n_out] of the float network."""
    return simulate_float(network, spikes).spikes

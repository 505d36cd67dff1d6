"""Float reference: the network of compiler/ir.py stepped in float64, as the model was trained.

Vectorized over the batch; the equations are compiler/ir.py's, term for term:

    I[t] = W @ s_in[t] + W_rec @ s[t-1] + b
    subtract reset:  v[t] = beta * v[t-1] + I[t] - theta * s[t-1]
    zero reset:      v[t] = beta * (v[t-1] * (1 - s[t-1])) + I[t]
    s[t] = v[t] > theta

Layer l sees layer l-1's spikes of the same step, as in the golden model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..sim.encode import as_batch
from .ir import Network


@dataclass
class FloatResult:
    spikes: np.ndarray  # uint8 [batch, time, n_out] of the output layer
    layer_spikes: list[np.ndarray]  # per layer uint8 [batch, time, n]
    membranes: list[np.ndarray] | None  # per layer float64 [batch, time, n]; when recorded


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
    s = [np.zeros((batch, layer.n_out)) for layer in layers]
    out_spikes = [np.zeros((batch, steps, layer.n_out), dtype=np.uint8) for layer in layers]
    out_v = [np.zeros((batch, steps, layer.n_out)) for layer in layers] if record else None
    for t in range(steps):
        x = x_all[:, t, :]
        for index, layer in enumerate(layers):
            s_prev = s[index]
            current = x @ layer.weight.T + layer.bias
            if layer.rec_weight is not None:
                current = current + s_prev @ layer.rec_weight.T
            if layer.reset == "subtract":
                v[index] = layer.beta * v[index] + current - layer.threshold * s_prev
            else:
                v[index] = layer.beta * (v[index] * (1.0 - s_prev)) + current
            s[index] = (v[index] > layer.threshold).astype(np.float64)
            out_spikes[index][:, t] = s[index]
            if out_v is not None:
                out_v[index][:, t] = v[index]
            x = s[index]
    return FloatResult(spikes=out_spikes[-1], layer_spikes=out_spikes, membranes=out_v)


def run_float(network: Network, spikes: np.ndarray) -> np.ndarray:
    """Output-layer spikes uint8 [batch, time, n_out] of the float network."""
    return simulate_float(network, spikes).spikes

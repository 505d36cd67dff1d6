"""NeuroBench's metrics of an image and a run, at the image's true integer widths.

Names and definitions follow the `neurobench` package (2.x), computed on what spikeforge knows
exactly: the integer weights and per-neuron parameters of the image, and every layer's spikes
and membranes of a run (docs/metrics.md writes each one out).

Static, from the image alone:

    footprint            bytes of the weights and per-neuron parameters at their widths:
                         ceil((sum_l weights_l*weight_bits + n_out*param_bits) / 8)
    parameter_count      sum_l weights_l + n_out        (weights incl. recurrent, and biases)
                         where weights_l = n_out*fan_in (a convolution: its kernel, C_out*C_in*K^2)
    connection_sparsity  zero weights / all weights     (feed-forward and recurrent)

Workload, from a run of B samples of T steps (per sample = summed, then divided by B):

    activation_sparsity  1 - (spikes of every layer) / (B * T * sum_l n_out)
    synaptic_operations  Effective_ACs: every input spike of a layer counted once per non-zero
                         weight it meets (recurrent spikes of step t-1 too), per sample;
                         Effective_MACs: 0 (every layer input is binary);
                         Dense: T * sum_l sum_j fan_out_j (n_out * fan_in without a
                         convolution), per sample
    membrane_updates     per layer n_out at the first step, then the neurons whose membrane
                         changed from one step to the next; per sample
    classification_accuracy  predicted class (spike-count argmax, ties to the lower index)
                         equals the label, over the samples

The hardware's own count of synaptic operations (`GoldenResult.sops`: one per neuron of the
layer for each input event, zero weights included, as the cores do them) is reported beside
these, not instead of them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..image import Image, LayerParams, param_fields
from .lif import conv_currents

__all__ = ["activation_sparsity", "classification_accuracy", "connection_sparsity",
           "dense_synops", "effective_acs", "footprint", "footprint_bits", "input_acs",
           "membrane_updates", "param_bits", "parameter_count", "predict"]


# -- static ------------------------------------------------------------------------------------

def param_bits(layer: LayerParams) -> dict[str, int]:
    """Bits of each per-neuron parameter as the core's parameter word holds it
    (`spikeforge.image.param_fields`): the threshold (unsigned, V-1 bits), the bias (the
    narrowest signed width of the layer's biases) and the decay (shift k: 5 bits; beta_q: f+1)."""
    return {field.name: field.width for field in param_fields(layer)}


def footprint_bits(image: Image) -> dict[str, int]:
    """{"weights": bits, "parameters": bits} of the whole image."""
    weights = sum(layer.all_weights().size * layer.weight_bits for layer in image.layers)
    params = sum(layer.n_out * sum(param_bits(layer).values()) for layer in image.layers)
    return {"weights": weights, "parameters": params}


def footprint(image: Image) -> int:
    """Bytes of the weights and per-neuron parameters at their true widths."""
    return math.ceil(sum(footprint_bits(image).values()) / 8)


def parameter_count(image: Image) -> int:
    """Weights (feed-forward and recurrent) and biases."""
    return sum(layer.all_weights().size + layer.n_out for layer in image.layers)


def connection_sparsity(image: Image) -> float:
    """Zero integer weights over all weights."""
    zeros = sum(int(np.count_nonzero(layer.all_weights() == 0)) for layer in image.layers)
    total = sum(layer.all_weights().size for layer in image.layers)
    return zeros / total if total else 0.0


# -- workload ----------------------------------------------------------------------------------

def _check_run(image: Image, x: np.ndarray, layer_spikes: list[np.ndarray]) -> tuple[int, int]:
    if x.ndim != 3 or x.shape[2] != image.n_inputs:
        raise ValueError(f"inputs must be [batch, time, {image.n_inputs}], not {x.shape}")
    if len(layer_spikes) != len(image.layers):
        raise ValueError(f"need the spikes of {len(image.layers)} layers, "
                         f"not {len(layer_spikes)}")
    for layer, s in zip(image.layers, layer_spikes):
        if s.shape != x.shape[:2] + (layer.n_out,):
            raise ValueError(f"spikes of layer {layer.name!r} must be "
                             f"{x.shape[:2] + (layer.n_out,)}, not {s.shape}")
    return x.shape[0], x.shape[1]


def input_acs(layer: LayerParams, counts: np.ndarray) -> np.ndarray:
    """int64 [...]: the non-zero feed-forward weights the input events `counts` (int
    [..., n_in]) meet. A convolution's event meets each non-zero kernel tap at each position
    before pooling it reaches."""
    counts = np.asarray(counts, dtype=np.int64)
    if layer.conv is None:
        return counts @ np.count_nonzero(layer.weights, axis=0).astype(np.int64)
    unpooled = replace(layer.conv, pool="none", pool_size=1)
    flat = counts.reshape(-1, layer.n_in).astype(np.float64)  # exact: sums stay far below 2^53
    met = conv_currents(flat, unpooled, (layer.weights != 0).T.astype(np.float64))
    return np.rint(met.sum(axis=1)).astype(np.int64).reshape(counts.shape[:-1])


def effective_acs(image: Image, x: np.ndarray, layer_spikes: list[np.ndarray]) -> float:
    """Input spikes of every layer, each counted once per non-zero weight it meets; per
    sample. A recurrent layer's spikes of step t meet its recurrent weights at step t+1."""
    batch, _ = _check_run(image, x, layer_spikes)
    total = 0
    source = x
    for layer, s in zip(image.layers, layer_spikes):
        total += int(input_acs(layer, source.sum(axis=(0, 1), dtype=np.int64)))
        if layer.recurrent:
            nnz_rec = np.count_nonzero(layer.rec_weights, axis=0).astype(np.int64)
            total += int(s[:, :-1].sum(axis=(0, 1), dtype=np.int64) @ nnz_rec)
        source = s
    return total / batch if batch else 0.0


def dense_synops(image: Image, steps: int) -> int:
    """Every weight used at every step: per sample."""
    return steps * sum(int(layer.fan_out.sum()) + (layer.n_out ** 2 if layer.recurrent else 0)
                       for layer in image.layers)


def activation_sparsity(image: Image, spike_counts: np.ndarray, steps: int) -> float:
    """1 - spikes / activations, over every layer, step and sample; `spike_counts` is
    int [batch, layers] (the golden model's, the RTL's or the board's counters)."""
    counts = np.asarray(spike_counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] != len(image.layers):
        raise ValueError(f"spike counts must be [batch, {len(image.layers)}], "
                         f"not {counts.shape}")
    total = counts.shape[0] * steps * sum(layer.n_out for layer in image.layers)
    return 1.0 - int(counts.sum()) / total if total else 0.0


def membrane_updates(membranes: list[np.ndarray]) -> float:
    """Per layer, every neuron at the first step, then each neuron whose membrane changed
    from one step to the next (NeuroBench's MembraneUpdates); per sample. `membranes` per layer
    int [batch, time, n]."""
    if not membranes:
        return 0.0
    batch = membranes[0].shape[0]
    total = 0
    for v in membranes:
        if v.shape[1]:
            total += v.shape[0] * v.shape[2] + int(np.count_nonzero(v[:, 1:] != v[:, :-1]))
    return total / batch if batch else 0.0


def predict(spikes: np.ndarray) -> np.ndarray:
    """Spike-count argmax over time per sample (ties go to the lower class index), as
    NeuroBench's ChooseMaxCount."""
    return np.asarray(spikes).sum(axis=1).argmax(axis=1)


def classification_accuracy(spikes: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose predicted class equals the label; `spikes` [batch, time,
    n_out], `labels` int [batch]."""
    labels = np.asarray(labels)
    if labels.shape != (spikes.shape[0],):
        raise ValueError(f"labels must be one per sample, shape ({spikes.shape[0]},), "
                         f"not {labels.shape}")
    return float((predict(spikes) == labels).mean()) if len(labels) else 0.0

"""Quantisation-aware fine-tuning of snnTorch models (`spikeforge.qat`): train what the golden
model will run.

`qat(model, spikes, labels, weight_bits=...)` fine-tunes a copy of an snnTorch model
(nn.Linear -> Leaky/Synaptic layers) with its weights, biases and thresholds replaced, in every
forward pass, by the values the compiler will give them (compiler/quantize.py), per neuron i of a
layer with b bits:

    s_i      = the quantizer's scale for the current weights (compiler/scales.py: per-neuron
               or per-layer, MSE or max clipping, exactly as `spikeforge.compile` chooses it)
    W_fq[i]  = s_i * clip(round(W[i] / s_i), -qmax, qmax)         qmax = 2^(b-1) - 1
    b_fq[i]  = s_i * round(bias[i] / s_i),  theta_fq[i] = s_i * round(theta[i] / s_i)

The rounding has no useful derivative, so the backward pass is a straight-through estimator
(STE): dW_fq/dW = 1 where the weight lies inside the clipping range (|W| <= qmax * s_i) and 0
outside, dbias_fq/dbias = 1; the scales are recomputed from the weights at every batch and carry
no gradient. The loss is snnTorch's rate cross-entropy, as `spikeforge.digits.train`.

The returned model holds W_fq, b_fq and a per-neuron theta_fq as its parameters, so compiling it
at the same widths, scales and clipping reproduces the integers the training saw exactly (the
quantizer's scale search finds s_i again: on a grid whose largest level is qmax, any other
clipping has a non-zero error). What remains between the fine-tuned float forward pass and the
golden model is the integer leak (v - (v >> k) floors, docs/neuron.md) and saturation.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np

from .sim.encode import given


def qat(model, spikes, labels, *, weight_bits: int | dict | str = 4,
        budget: float | int | None = None, epochs: int = 5, lr: float = 1e-3,
        batch: int = 128, seed: int = 0, scales: str = "neuron", clip: str = "mse",
        decay: str = "auto", progress=None):
    """Fine-tune a copy of snnTorch `model` on (`spikes` [batch, time, inputs], integer `labels`
    [batch]) with fake-quantised weights (module docstring); returns the copy (the membranes
    of `model` itself are reset, nothing else of it changes).

    `weight_bits`: 2..16, a dict per layer (index or name), or "auto" (the allocation
    `spikeforge.compile(weight_bits="auto", calibration=spikes, labels=labels, budget=budget)`
    would choose, docs/mixed-precision.md). The copy's `spikeforge_qat` attribute holds
    {"weight_bits": {index: bits}, "scales", "clip", "loss": [mean loss per epoch]}; compile it
    with `spikeforge.compile(qmodel, weight_bits=qmodel.spikeforge_qat["weight_bits"],
    scales=..., clip=...)` (the same scales and clip) so the golden model runs what was trained.
    """
    import torch

    from .compiler.frontend import load_network
    from .compiler.mixed import plan_weight_bits
    from .compiler.quantize import _weight_bits_per_layer
    from .compiler.scales import check_scale_options
    from .compiler.sensitivity import check_labels

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (snnTorch), not "
                        f"{type(model).__name__}")
    check_scale_options(scales, clip)
    epochs, batch = _count("epochs", epochs, 0), _count("batch", batch, 1)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, not {lr!r}")
    network = load_network(model)
    x = given(spikes, network.n_inputs)
    y = check_labels(labels, x.shape[0], network.n_outputs)
    if isinstance(weight_bits, str) and weight_bits == "auto":
        bits, _ = plan_weight_bits(network, "auto", x, y, budget, scales=scales, clip=clip,
                                   decay=decay)
        bits = [bits[i] for i in range(len(network.layers))]
    else:
        if isinstance(weight_bits, str):
            raise ValueError(f"weight_bits must be 2..16, a dict per layer or 'auto', "
                             f"not {weight_bits!r}")
        if budget is not None:
            raise ValueError(f"budget is for weight_bits='auto', not {weight_bits!r}")
        bits = _weight_bits_per_layer(network, weight_bits)
    _reset_state(model)  # a membrane left by training holds its graph, which cannot be copied
    model = copy.deepcopy(model)
    targets = _targets(model, network)
    losses = _train(model, targets, network, bits, x, y, epochs=epochs, lr=lr, batch=batch,
                    seed=seed, options=(scales, clip), progress=progress)
    with torch.no_grad():
        for target, layer, b in zip(targets, network.layers, bits, strict=True):
            w, bias, theta, _ = _fake_quantized(target, layer, b, (scales, clip))
            target.linear.weight.copy_(w)
            if target.linear.bias is not None:
                target.linear.bias.copy_(bias)
            _set_threshold(target.neuron, theta)
    model.spikeforge_qat = {"weight_bits": dict(enumerate(bits)), "scales": scales,
                            "clip": clip, "loss": losses}
    return model


def _count(name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
    return int(value)


class _Target:
    """One layer of the model: its nn.Linear, its snnTorch neuron, and the neuron's threshold
    as given (per neuron, float64), which the fake quantisation rounds afresh at every scale."""

    def __init__(self, linear, neuron, threshold: np.ndarray):
        self.linear, self.neuron, self.threshold = linear, neuron, threshold


def _targets(model, network) -> list[_Target]:
    """Pair the IR's layers with the model's nn.Linear and neuron modules, in order."""
    from torch import nn

    bad = [layer.name for layer in network.layers
           if layer.rec_weight is not None or layer.conv is not None or not layer.spiking]
    if bad:
        raise ValueError(f"qat must have feed-forward nn.Linear layers with spiking neurons, "
                         f"not {', '.join(map(repr, bad))} (recurrent, convolutional or LI)")
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    neurons = [m for m in model.modules() if hasattr(m, "threshold") and hasattr(m, "beta")]
    if len(linears) != len(network.layers) or len(neurons) != len(network.layers):
        raise ValueError(f"qat must have one nn.Linear and one snnTorch neuron per layer "
                         f"({len(network.layers)}), not {len(linears)} and {len(neurons)}")
    out = []
    for linear, neuron, layer in zip(linears, neurons, network.layers, strict=True):
        if tuple(linear.weight.shape) != layer.weight.shape or \
                not np.array_equal(linear.weight.detach().double().numpy(), layer.weight):
            raise ValueError(f"qat must see the model's weights as the compiler does; layer "
                             f"{layer.name!r} differs")
        out.append(_Target(linear, neuron, np.broadcast_to(layer.threshold,
                                                           (layer.n_out,)).copy()))
    return out


def _scales(weight: np.ndarray, bias: np.ndarray, layer, bits: int, options):
    """The quantizer's per-neuron scales [n_out] for these float weights and bias, and the
    lowest integer weight (-qmax, or -qmax - 1 for an exact integer layer kept at scale 1)."""
    from .compiler.quantize import _is_exact, _layer_scales

    now = replace(layer, weight=weight, bias=bias)
    exact = _is_exact(now, bits)
    scale, _ = _layer_scales(now, weight, bits, exact, options, [])
    qmax = (1 << (bits - 1)) - 1
    return scale, (-qmax - 1 if exact else -qmax)


def _fake_quantized(target: _Target, layer, bits: int, options):
    """(W_fq, b_fq, theta_fq, scale) as torch tensors, W_fq with the STE's gradient to W and
    b_fq with an identity gradient to the bias (module docstring)."""
    import torch

    weight = target.linear.weight
    bias = target.linear.bias
    w_np = weight.detach().double().numpy()
    b_np = np.zeros(layer.n_out) if bias is None else bias.detach().double().numpy()
    scale_np, lo = _scales(w_np, b_np, layer, bits, options)
    qmax = (1 << (bits - 1)) - 1
    scale = torch.as_tensor(scale_np, dtype=weight.dtype)
    w_fq = fake_quantize(weight, scale, lo, qmax)
    b_fq = None
    if bias is not None:
        b_q = torch.as_tensor(np.rint(b_np / scale_np) * scale_np, dtype=bias.dtype)
        b_fq = b_q + (bias - bias.detach())
    theta = torch.as_tensor(np.rint(target.threshold / scale_np) * scale_np,
                            dtype=weight.dtype)
    return w_fq, b_fq, theta, scale


def fake_quantize(weight, scale, lo: int, hi: int):
    """scale_i * clip(round(W[i] / scale_i), lo, hi) per row i, with the straight-through
    gradient: 1 where lo * scale_i <= W[i, j] <= hi * scale_i, else 0 (torch tensors; `scale`
    [rows], carries no gradient)."""
    import torch

    s = scale.detach().reshape(-1, 1)
    ratio = weight / s
    q = torch.clamp(torch.round(ratio.detach()), lo, hi)
    inside = ((ratio.detach() >= lo) & (ratio.detach() <= hi)).to(weight.dtype)
    return q * s + (weight - weight.detach()) * inside


def _set_threshold(neuron, theta) -> None:
    """Give the snnTorch neuron a per-neuron threshold (a buffer, or a parameter when it
    learns its threshold)."""
    import torch

    if isinstance(neuron.threshold, torch.nn.Parameter):
        neuron.threshold = torch.nn.Parameter(theta.detach().clone(),
                                              requires_grad=neuron.threshold.requires_grad)
    else:
        neuron.threshold = theta.detach().clone()


def _reset_state(model) -> None:
    from .digits import reset_state

    reset_state(model)


def _train(model, targets, network, bits, x, y, *, epochs, lr, batch, seed, options,
           progress) -> list[float]:
    """Backprop through time on the fake-quantised model (snnTorch's forward pass with the
    weights, biases and thresholds swapped in by torch.func.functional_call)."""
    import torch
    from snntorch import functional as SF
    from torch.func import functional_call

    names = {id(p): n for n, p in model.named_parameters()}
    buffers = {id(b): n for n, b in model.named_buffers()}
    neuron_names = {id(m): n for n, m in model.named_modules()}
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = SF.ce_rate_loss()
    x_all = torch.as_tensor(x, dtype=torch.float32)
    y_all = torch.as_tensor(y)
    losses = []
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(len(y_all))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = torch.as_tensor(order[start:start + batch])
            xb, yb = x_all[idx], y_all[idx]
            swap = {}
            for target, layer, b in zip(targets, network.layers, bits, strict=True):
                w, bias, theta, _ = _fake_quantized(target, layer, b, options)
                swap[names[id(target.linear.weight)]] = w
                if bias is not None:
                    swap[names[id(target.linear.bias)]] = bias
                th = target.neuron.threshold
                key = names.get(id(th)) or buffers.get(id(th)) or \
                    f"{neuron_names[id(target.neuron)]}.threshold"
                swap[key] = theta
            _reset_state(model)
            out = []
            for t in range(xb.shape[1]):
                result = functional_call(model, swap, (xb[:, t],), strict=False)
                out.append(result[0] if isinstance(result, tuple) else result)
            loss = loss_fn(torch.stack(out), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(order))
        if progress is not None:
            progress(epoch + 1, epochs)
    model.eval()
    return losses

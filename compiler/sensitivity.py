"""Sensitivity of the loss to each layer's weights: the Hessian trace, by Hutchinson's estimator.

The network is spikeforge's float reference (compiler/float_ref.py) written again as a torch
module, `TorchNetwork`, for any model the front ends read (snnTorch modules and NIR graphs alike).
Its forward pass is the float reference's, step for step (the spikes are the same); its backward
pass replaces the Heaviside step's derivative by a surrogate, the derivative of

    sg(x) = atan(pi / 2 * alpha * x) / pi      (snnTorch's default `atan`, alpha = 2)

and, as in snnTorch, no gradient flows through the reset. The surrogate is smooth, so
second derivatives exist and torch autograd gives Hessian-vector products (double backward).

Hutchinson: for a symmetric H and Rademacher z (entries +-1), E[z^T H z] = tr(H). With z drawn for
all layers at once, the cross-layer blocks of H average out and z_i^T (H z)_i estimates the trace
of layer i's own block H_ii. The loss is snnTorch's rate cross-entropy: the mean over steps of the
cross-entropy of the output spikes read as logits.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from .ir import Network

ALPHA = 2.0


def check_labels(labels, samples: int, n_classes: int) -> np.ndarray:
    """Labels as int64 [samples] in 0..n_classes-1, or a one-line ValueError/TypeError."""
    arr = np.asarray(labels)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)
                                   or np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"labels must be an integer array, not {arr.dtype} "
                        f"{'array' if arr.ndim else 'value'}")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or arr.shape[0] != samples:
        raise ValueError(f"labels must be one per calibration sample ({samples}), not "
                         f"shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        bad = int(arr.min() if arr.min() < 0 else arr.max())
        raise ValueError(f"labels must be classes 0..{n_classes - 1}, not {bad}")
    return arr.astype(np.int64)


def _torch_module(network: Network, dtype):
    import torch
    from torch import nn

    class Spike(torch.autograd.Function):
        """Heaviside forward (x > 0, or x >= 0 when `inclusive`), the atan surrogate's derivative
        backward (twice differentiable: the backward is written in torch operations)."""

        @staticmethod
        def forward(ctx, x, inclusive=False):
            ctx.save_for_backward(x)
            return (x >= 0 if inclusive else x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (ALPHA / 2) / (1 + (math.pi / 2 * ALPHA * x) ** 2), None

    class TorchNetwork(nn.Module):
        """The float reference as a torch module: forward(x [batch, time, n_inputs]) gives the
        output layer's spikes (counts) [batch, time, n_out] with surrogate gradients, or an LI
        readout's membrane."""

        def __init__(self, network: Network):
            super().__init__()
            self.names = [layer.name for layer in network.layers]
            self.weights = nn.ParameterList()
            self.rec_weights = nn.ParameterList()
            self.recurrent = []
            self.models = []
            for index, layer in enumerate(network.layers):
                self.weights.append(nn.Parameter(torch.tensor(layer.weight, dtype=dtype)))
                self.recurrent.append(layer.rec_weight is not None)
                if layer.rec_weight is not None:
                    self.rec_weights.append(
                        nn.Parameter(torch.tensor(layer.rec_weight, dtype=dtype)))
                for what in ("bias", "beta", "threshold", "alpha"):
                    value = getattr(layer, what)
                    self.register_buffer(f"{what}{index}", None if value is None
                                         else torch.tensor(value, dtype=dtype))
                self.models.append(dict(reset=layer.reset, syn_delay=layer.syn_delay,
                                        max_spikes=layer.max_spikes, spiking=layer.spiking,
                                        inclusive=layer.compare == ">=",
                                        reset_delay=layer.reset_delay))

        def layer_parameters(self) -> list[list]:
            """Per layer, its weight tensors (feed-forward, then recurrent when present)."""
            out, rec = [], iter(self.rec_weights)
            for weight, recurrent in zip(self.weights, self.recurrent, strict=True):
                out.append([weight, next(rec)] if recurrent else [weight])
            return out

        def _step(self, index, tensors, state, inp):
            """compiler/float_ref.py's `step`, in torch, with no gradient through the reset."""
            model = self.models[index]
            bias = getattr(self, f"bias{index}")
            beta = getattr(self, f"beta{index}")
            theta = getattr(self, f"threshold{index}")
            alpha = getattr(self, f"alpha{index}")
            v, syn, c_prev = state
            a = inp @ tensors[0].T
            if len(tensors) == 2:
                a = a + c_prev @ tensors[1].T
            if alpha is not None:
                syn_new = alpha * syn + a + bias
                current = syn if model["syn_delay"] else syn_new
            else:
                syn_new, current = syn, a + bias
            reset = c_prev.detach()
            if model["reset"] == "zero":
                v = beta * (v * (reset == 0).to(v.dtype)) + current
            elif model["reset_delay"]:
                v = beta * v + current - theta * reset
            else:
                v = beta * (v - theta * reset) + current
            if not model["spiking"]:
                return v, syn_new, torch.zeros_like(v)
            c = sum(Spike.apply(v - j * theta, model["inclusive"])
                    for j in range(1, model["max_spikes"] + 1))
            return v, syn_new, c

        def forward(self, x, *, all_layers: bool = False):
            batch, steps, _ = x.shape
            params = self.layer_parameters()
            state = [None] * len(params)
            out = [[] for _ in params]
            for t in range(steps):
                inp = x[:, t]
                for index, tensors in enumerate(params):
                    if state[index] is None:
                        zero = torch.zeros(batch, tensors[0].shape[0], dtype=x.dtype)
                        state[index] = (zero, zero, zero)
                    state[index] = self._step(index, tensors, state[index], inp)
                    v, _, c = state[index]
                    out[index].append(c if self.models[index]["spiking"] else v)
                    inp = c
            stacked = [torch.stack(o, dim=1) for o in out]
            return stacked if all_layers else stacked[-1]

    return TorchNetwork(network)


def torch_network(network: Network, dtype=None):
    """A `TorchNetwork` (see module docstring) holding a copy of `network`'s float parameters."""
    import torch

    return _torch_module(network, torch.float64 if dtype is None else dtype)


def rate_loss(spikes, labels):
    """snnTorch's `ce_rate_loss`: cross-entropy of each step's output spikes, averaged over
    steps. spikes [batch, time, classes], labels int64 [batch]."""
    import torch.nn.functional as F

    steps = spikes.shape[1]
    return sum(F.cross_entropy(spikes[:, t], labels) for t in range(steps)) / steps


def hutchinson_trace(loss, params: list, *, samples: int = 32, seed: int = 0):
    """Estimate tr(H_kk) for every tensor k of `params`, H the Hessian of scalar `loss` (a torch
    tensor built from `params` with its graph). Returns (mean, standard error) float64 arrays,
    from `samples` Rademacher draws."""
    import torch

    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples!r}")
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(int(seed))
    draws = np.zeros((samples, len(params)))
    for k in range(samples):
        zs = [torch.randint(0, 2, p.shape, generator=gen).to(p.dtype) * 2 - 1 for p in params]
        hz = torch.autograd.grad(grads, params, grad_outputs=zs, retain_graph=True,
                                 allow_unused=True)
        for j, (z, h) in enumerate(zip(zs, hz, strict=True)):
            draws[k, j] = 0.0 if h is None else float((z * h).sum())
    stderr = draws.std(axis=0, ddof=1) / math.sqrt(samples) if samples > 1 else \
        np.full(len(params), np.inf)
    return draws.mean(axis=0), stderr


def ggn_trace(outputs, labels, groups: list[list], *, samples: int = 16, seed: int = 0):
    """Hutchinson estimate of tr(G_ii) per group of tensors, G = J^T H_o J the Gauss-Newton part
    of the Hessian of `rate_loss(outputs, labels)` (J: outputs' Jacobian through the surrogate,
    H_o: the loss's Hessian in the outputs, positive semi-definite). Each draw is
    (J_i z_i)^T H_o (J_i z_i) >= 0 with z_i Rademacher on group i alone; J_i z_i comes from
    double backward (the transpose of J^T u in u). Returns (mean, standard error) [groups]."""
    import torch

    samples = int(samples)
    if samples < 1:
        raise ValueError(f"samples must be at least 1, not {samples!r}")
    flat = [p for group in groups for p in group]
    u = torch.zeros_like(outputs, requires_grad=True)
    jt_u = torch.autograd.grad(outputs, flat, grad_outputs=u, create_graph=True)
    steps = outputs.shape[1]
    p = torch.softmax(outputs.detach(), dim=-1)
    norm = 1.0 / (outputs.shape[0] * steps)
    gen = torch.Generator().manual_seed(int(seed))
    draws = np.zeros((samples, len(groups)))
    for k in range(samples):
        start = 0
        for i, group in enumerate(groups):
            zs = [torch.randint(0, 2, t.shape, generator=gen).to(t.dtype) * 2 - 1 for t in group]
            (q,) = torch.autograd.grad(jt_u[start:start + len(group)], u, grad_outputs=zs,
                                       retain_graph=True)
            start += len(group)
            quad = (p * q ** 2).sum(-1) - (p * q).sum(-1) ** 2
            draws[k, i] = float(quad.sum()) * norm
    stderr = draws.std(axis=0, ddof=1) / math.sqrt(samples) if samples > 1 else \
        np.full(len(groups), np.inf)
    return draws.mean(axis=0), stderr


CURVATURES = ("ggn", "hessian")


def layer_traces(network: Network, spikes: np.ndarray, labels: np.ndarray | None = None, *,
                 samples: int = 16, batch: int = 256, seed: int = 0, curvature: str = "ggn"):
    """Trace of the rate loss's curvature with respect to each layer's weights (feed-forward and
    recurrent together), on up to `batch` calibration samples [batch, time, n_inputs].

    curvature="ggn" (default): the Gauss-Newton part of the Hessian (`ggn_trace`), positive
    semi-definite, so every draw is >= 0 and `samples` draws per layer bound the relative
    standard error by sqrt(2 / samples). curvature="hessian": the full Hessian (`hutchinson_trace`,
    one joint draw for all layers), whose surrogate second-derivative terms make it indefinite
    and, on the first layer of a spiking network, far noisier (docs/mixed-precision.md).
    Without labels the float network's own predictions (spike-count argmax, or an LI readout's
    summed membrane argmax) are the targets.
    Returns (traces, standard errors), float64 arrays [layers].
    """
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {CURVATURES}, not {curvature!r}")
    import torch

    from .float_ref import simulate_float
    from .quantize import predictions

    x = np.asarray(spikes)[:batch]
    if labels is None:
        ref = simulate_float(network, x)
        y = predictions(ref.spikes, ref.values)
    else:
        y = np.asarray(labels).reshape(-1)[:batch]
    with _one_thread():
        module = torch_network(network)
        out = module(torch.as_tensor(x, dtype=torch.float64))
        groups = module.layer_parameters()
        if curvature == "ggn":
            return ggn_trace(out, torch.as_tensor(y), groups, samples=samples, seed=seed)
        loss = rate_loss(out, torch.as_tensor(y))
        flat = [p for group in groups for p in group]
        mean, stderr = hutchinson_trace(loss, flat, samples=samples, seed=seed)
    traces, errors, k = [], [], 0
    for group in groups:
        traces.append(mean[k:k + len(group)].sum())
        errors.append(math.sqrt(float((stderr[k:k + len(group)] ** 2).sum())))
        k += len(group)
    return np.asarray(traces), np.asarray(errors)


@contextlib.contextmanager
def _one_thread():
    """Small tensors: torch's thread pool costs more than it gives (several times slower on a
    loaded machine), so the estimate runs on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

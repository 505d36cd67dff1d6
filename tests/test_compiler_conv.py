"""The torch front end on convolutional snnTorch networks: Conv2d, MaxPool2d / AvgPool2d on the
currents or (average) on the spikes, Flatten; each network's float IR against snnTorch's own
forward pass in float64, and one-line refusals that name the node."""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikeforge.compiler.float_ref import run_float
from spikeforge.compiler.frontend import load_network
from spikeforge.compiler.ir import ModelError


def snntorch_forward(model, spikes: np.ndarray) -> np.ndarray:
    """snnTorch's forward pass over time (float32, as it runs): spikes [batch, time, n]."""
    for module in model.modules():
        if hasattr(module, "reset_mem") and getattr(module, "mem", None) is not None:
            module.reset_mem()
    x = torch.as_tensor(spikes, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y = model(x[:, t])
            out.append(y[0] if isinstance(y, tuple) else y)
    return torch.stack(out, dim=1).numpy().astype(np.uint8)


def _leaky(output=False, beta=0.75, threshold=0.5):
    return snn.Leaky(beta=beta, threshold=threshold, init_hidden=True, output=output)


def _networks(seed: int, shape, channels, kernel, stride, padding, pool_kind):
    torch.manual_seed(seed)
    c, h, w = shape
    conv = nn.Conv2d(c, channels, kernel, stride=stride, padding=padding)
    conv_h = (h + 2 * padding - kernel) // stride + 1
    conv_w = (w + 2 * padding - kernel) // stride + 1
    mods = [nn.Unflatten(1, shape), conv]
    p = 2 if conv_h % 2 == 0 and conv_w % 2 == 0 else 1
    if pool_kind == "max-current" and p == 2:
        mods.append(nn.MaxPool2d(2))
    elif pool_kind == "avg-current" and p == 2:
        mods.append(nn.AvgPool2d(2))
    else:
        p = 1
    mods.append(_leaky())
    out_h, out_w = conv_h // p, conv_w // p
    if pool_kind == "avg-spikes" and out_h % 2 == 0 and out_w % 2 == 0:
        mods.append(nn.AvgPool2d(2))
        out_h, out_w = out_h // 2, out_w // 2
    mods += [nn.Flatten(), nn.Linear(channels * out_h * out_w, 5), _leaky(output=True)]
    return nn.Sequential(*mods)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 3), st.integers(4, 12), st.integers(1, 4),
       st.integers(1, 5), st.integers(1, 2), st.integers(0, 2),
       st.sampled_from(["none", "max-current", "avg-current", "avg-spikes"]))
def test_conv_float_ir_is_snntorch(seed, c, size, channels, kernel, stride, padding, pool):
    kernel = min(kernel, size)
    padding = min(padding, kernel - 1)
    model = _networks(seed, (c, size, size), channels, kernel, stride, padding, pool)
    network = load_network(model)
    rng = np.random.default_rng(seed)
    x = (rng.random((3, 6, c * size * size)) < 0.4).astype(np.uint8)
    ours = run_float(network, x)
    theirs = snntorch_forward(model, x)
    # float32 there, float64 here: only a membrane within rounding of the threshold differs
    assert np.mean(ours == theirs) >= 0.98


def test_avg_pool_of_spikes_folds_into_the_next_conv():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 3, 3, padding=1), _leaky(),
                          nn.AvgPool2d(2), nn.Conv2d(3, 4, 3, padding=1), _leaky(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3), _leaky(output=True))
    network = load_network(model)
    second = network.layers[1].conv
    assert (second.kernel, second.stride, second.padding, second.height) == (6, 2, 2, 8)
    x = (np.random.default_rng(0).random((4, 8, 64)) < 0.5).astype(np.uint8)
    assert np.mean(run_float(network, x) == snntorch_forward(model, x)) >= 0.99


def test_first_conv_needs_its_input_shape():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), _leaky(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2),
                          _leaky(output=True))
    with pytest.raises(ModelError, match=r"^the hardware cannot run: '0' \(Conv2d: a convolution "
                                         r"needs the map it reads: give input_shape \(C, H, W\)\)"):
        load_network(model)
    network = load_network(model, input_shape=(2, 6, 6))
    assert network.n_inputs == 72 and network.layers[0].conv.out_shape == (3, 4, 4)


@pytest.mark.parametrize("mods, message", [
    ([nn.Conv2d(1, 2, 3, dilation=2)], r"'1' \(Conv2d: dilation must be 1, not \(2, 2\)\)"),
    ([nn.Conv2d(2, 2, 3, groups=2)], r"'1' \(Conv2d: groups must be 1, not 2\)"),
    ([nn.Conv2d(1, 2, 3, stride=(1, 2))],
     r"'1' \(Conv2d: stride must be one integer for both axes, not \(1, 2\)\)"),
    ([nn.Conv2d(1, 2, (3, 1))],
     r"'1' \(Conv2d: kernel size must be one integer for both axes, not \(3, 1\)\)"),
    ([nn.Conv2d(1, 2, 3, padding="same")],
     r"'1' \(Conv2d: padding must be an integer or 'valid', not 'same'\)"),
    ([nn.Conv2d(1, 2, 2), nn.MaxPool2d(2)],
     r"'2' \(MaxPool2d: a 2x2 pool must tile the 7x7 map\)"),
    ([nn.Conv2d(1, 2, 3), nn.MaxPool2d(3, stride=1)],
     r"'2' \(MaxPool2d: stride must equal the kernel size 3, not 1\)"),
    ([nn.Conv2d(1, 2, 3), _leaky(), nn.MaxPool2d(2)],
     r"'3' \(MaxPool2d: max-pooling spikes after a spiking layer is not supported"),
])
def test_bad_conv_and_pool_are_refused_naming_the_node(mods, message):
    first = mods[0]
    c = first.in_channels
    model = nn.Sequential(nn.Unflatten(1, (c, 8, 8)), *mods)
    with pytest.raises(ModelError, match=rf"^the hardware cannot run: (.*, )?{message}"):
        load_network(model)


# --- NIR ---------------------------------------------------------------------------------------

def _nir_graph(conv_kwargs: dict, pool=None, shape=(1, 8, 8)):
    import nir

    c_out = 2
    weight = np.ones((c_out, shape[0], 3, 3))
    conv = dict(input_shape=None, weight=weight, stride=1, padding=0, dilation=1, groups=1,
                bias=np.zeros(c_out))
    conv.update(conv_kwargs)
    nodes = {"input": nir.Input(input_type=np.array(shape)), "conv": nir.Conv2d(**conv)}
    edges = [("input", "conv")]
    last = "conv"
    if pool is not None:
        nodes["pool"] = pool
        edges.append(("conv", "pool"))
        last = "pool"
    nodes["if"] = nir.IF(r=np.array(1.0), v_threshold=np.array(2.0))
    nodes["output"] = nir.Output(output_type=None)
    edges += [(last, "if"), ("if", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


@pytest.mark.parametrize("conv_kwargs, pool, message", [
    ({"groups": 2, "weight": np.ones((2, 1, 3, 3))}, None, r"'conv' \(Conv2d: groups must be 1"),
    ({"dilation": 2}, None, r"'conv' \(Conv2d: dilation must be 1, not \(2, 2\)\)"),
    ({"stride": (1, 2)}, None,
     r"'conv' \(Conv2d: stride must be one integer for both axes, not \(1, 2\)\)"),
    ({"padding": "same"}, None, r"'conv' \(Conv2d: padding must be an integer or 'valid'"),
    ({"weight": np.ones((2, 1, 3, 2))}, None, r"'conv' \(Conv2d: kernel must be square, not 3x2\)"),
    ({}, "sum4", r"'pool' \(SumPool2d: a 4x4 pool must tile the 6x6 map\)"),
    ({}, "avg-stride", r"'pool' \(AvgPool2d: stride must equal the kernel size 2, not"),
])
def test_nir_conv_refusals_name_the_node(conv_kwargs, pool, message):
    import nir

    pools = {None: None,
             "sum4": nir.SumPool2d(kernel_size=np.array([4, 4]), stride=np.array([4, 4]),
                                   padding=np.array([0, 0])),
             "avg-stride": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]),
                                         padding=np.array([0, 0]))}
    graph = _nir_graph(conv_kwargs, pools[pool])
    with pytest.raises(ModelError, match=rf"^the hardware cannot run: (.*, )?{message}"):
        load_network(graph, exporter="sinabs")


def test_nir_sum_pool_of_currents_adds_its_biases():
    """SumPool2d between Conv2d and IF pools the currents: p^2 biases per neuron."""
    import nir

    graph = _nir_graph({"bias": np.array([0.25, -0.5])},
                       nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                                     padding=np.array([0, 0])))
    network = load_network(graph, exporter="sinabs")
    layer = network.layers[0]
    assert (layer.conv.pool, layer.conv.pool_size, layer.conv.out_shape) == ("sum", 2, (2, 3, 3))
    np.testing.assert_array_equal(layer.bias, np.repeat([1.0, -2.0], 9))
    x = (np.random.default_rng(3).random((2, 4, 64)) < 0.5).astype(np.uint8)
    # one step from rest: v = A + b with A the sum over each 2x2 tile of the 3x3 box sums
    ref = torch.nn.functional.conv2d(torch.tensor(x[:, 0].reshape(2, 1, 8, 8), dtype=torch.float64),
                                     torch.ones(2, 1, 3, 3, dtype=torch.float64))
    ref = torch.nn.functional.avg_pool2d(ref, 2) * 4 + torch.tensor([1.0, -2.0]).view(1, 2, 1, 1)
    from spikeforge.compiler.float_ref import simulate_float

    got = simulate_float(network, x, record=True).membranes[0][:, 0]
    np.testing.assert_allclose(got, ref.reshape(2, -1).numpy())

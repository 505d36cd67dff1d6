"""Convolutional layers in the golden model against a direct reference convolution (torch's
conv2d in float64 on the integer values, pooled by torch's own max and average pools)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.image import CoreConfig, HwConfig, Image, ImageError, image_from_bytes
from spikeforge.sim import golden

from .strategies import conv_layer, conv_specs


def _image(layers, n_inputs) -> Image:
    cores = tuple(CoreConfig(i, 0, layer.n_out, 1) for i, layer in enumerate(layers))
    return Image(n_inputs, list(layers), HwConfig("iCE40UP5K", cores))


def reference_currents(spikes: np.ndarray, spec, kernel: np.ndarray) -> np.ndarray:
    """[batch, n_out] currents of one step, written independently of the golden model."""
    x = torch.tensor(spikes.reshape(-1, *spec.in_shape), dtype=torch.float64)
    w = torch.tensor(kernel.reshape(spec.out_channels, spec.in_channels, spec.kernel,
                                    spec.kernel), dtype=torch.float64)
    out = F.conv2d(x, w, stride=spec.stride, padding=spec.padding)
    p = spec.pool_size
    if spec.pool == "max":
        out = F.max_pool2d(out, p)
    elif spec.pool == "sum":
        out = F.avg_pool2d(out, p) * (p * p)
    return out.reshape(out.shape[0], -1).numpy()


def reference_fan_out(spec) -> np.ndarray:
    """Synaptic operations of one event per input: the conv transpose of ones, by loops."""
    conv_h, conv_w = spec.conv_shape
    touched = np.zeros((spec.height, spec.width), np.int64)
    for y in range(conv_h):
        for x in range(conv_w):
            for i in range(spec.kernel):
                for j in range(spec.kernel):
                    yy, xx = y * spec.stride + i - spec.padding, x * spec.stride + j - spec.padding
                    if 0 <= yy < spec.height and 0 <= xx < spec.width:
                        touched[yy, xx] += 1
    return np.tile(touched.reshape(-1) * spec.out_channels, spec.in_channels)


@settings(max_examples=60, deadline=None)
@given(conv_specs(), st.integers(0, 2**31), st.floats(0.05, 0.6))
def test_golden_conv_equals_reference(spec, seed, density):
    """With no leak, no bias and a threshold never reached, v[t] - v[t-1] is A[t] itself."""
    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, "c", spec, decay_mode="none", v_bits=24,
                       threshold=np.full(spec.n_out, (1 << 23) - 1))
    from dataclasses import replace
    layer = replace(layer, bias=np.zeros(spec.n_out, np.int32))
    steps = 3
    x = (rng.random((2, steps, spec.n_in)) < density).astype(np.uint8)
    result = golden.run(_image([layer], spec.n_in), x, record=True)
    v = result.membranes[0].astype(np.int64)
    currents = np.diff(v, axis=1, prepend=0)
    for t in range(steps):
        np.testing.assert_array_equal(currents[:, t], reference_currents(x[:, t], spec,
                                                                         layer.weights))
    fan_out = reference_fan_out(spec)
    np.testing.assert_array_equal(result.sops[:, 0], x.sum(axis=1).astype(np.int64) @ fan_out)


@settings(max_examples=30, deadline=None)
@given(conv_specs(max_channels=4, max_map=10), conv_specs(max_channels=4, max_map=10),
       st.integers(0, 2**31))
def test_golden_conv_network_steps_like_the_equations(first, second, seed):
    """Two conv layers then a dense readout, full LIF dynamics: each layer's membrane follows
    v[t] = decay(v[t-1]) + A[t] + b - theta * s[t-1] with A from the reference convolution."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    second = replace(second, in_channels=first.out_shape[0], height=first.out_shape[1],
                     width=first.out_shape[2], pool="none", pool_size=1,
                     kernel=min(second.kernel, *first.out_shape[1:]), padding=0)
    layers = [conv_layer(rng, "c0", first), conv_layer(rng, "c1", second)]
    x = (rng.random((2, 5, first.n_in)) < 0.4).astype(np.uint8)
    result = golden.run(_image(layers, first.n_in), x, record=True)
    source = x
    for index, layer in enumerate(layers):
        v_prev = np.zeros((2, layer.n_out), np.int64)
        s_prev = np.zeros((2, layer.n_out), np.int64)
        for t in range(x.shape[1]):
            a = reference_currents(source[:, t], layer.conv, layer.weights).astype(np.int64)
            k = layer.decay_shift.astype(np.int64)
            u = v_prev - (v_prev >> k) + a + layer.bias - layer.threshold * s_prev
            lo, hi = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1
            v = np.clip(u, lo, hi)
            np.testing.assert_array_equal(result.membranes[index][:, t], v)
            s_prev = (v > layer.threshold).astype(np.int64)
            np.testing.assert_array_equal(result.layer_spikes[index][:, t], s_prev)
            v_prev = v
        source = result.layer_spikes[index]


@settings(max_examples=30, deadline=None)
@given(conv_specs(), st.integers(0, 2**31))
def test_conv_image_round_trip(spec, seed):
    layer = conv_layer(np.random.default_rng(seed), "c", spec)
    image = _image([layer], spec.n_in)
    back = image_from_bytes(image.to_bytes())
    assert back.layers[0].conv == spec
    np.testing.assert_array_equal(back.layers[0].weights, layer.weights)
    np.testing.assert_array_equal(back.layers[0].threshold, layer.threshold)


def test_conv_image_refuses_a_bad_geometry_in_the_file():
    from spikeforge.image import ConvSpec

    spec = ConvSpec(1, 6, 6, 2, 3)
    layer = conv_layer(np.random.default_rng(0), "c", spec)
    data = _image([layer], spec.n_in).to_bytes()
    import json
    import struct
    import zlib

    from spikeforge.image import _PREAMBLE, _TRAILER
    magic, version, reserved, head_len, payload_len = _PREAMBLE.unpack_from(data)
    header = json.loads(data[_PREAMBLE.size:_PREAMBLE.size + head_len])
    header["layers"][0]["conv"]["stride"] = 0
    head = json.dumps(header, sort_keys=True).encode()
    body = (_PREAMBLE.pack(magic, version, reserved, len(head), payload_len) + head
            + data[_PREAMBLE.size + head_len:-_TRAILER.size])
    bad = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(ImageError, match=r"^image: layer 0: conv: stride must be an integer "
                                         r"1\.\.32, not 0$"):
        image_from_bytes(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"kernel": 3, "padding": 3}, r"padding must be smaller than the kernel 3, not 3"),
    ({"kernel": 7}, r"a 7x7 kernel with padding 0 does not fit a 6x6 map"),
    ({"kernel": 3, "pool": "max", "pool_size": 3}, r"a 3x3 pool must tile the 4x4 map"),
    ({"kernel": 33}, r"kernel must be an integer 1\.\.32, not 33"),
    ({"kernel": 1, "stride": 0}, r"stride must be an integer 1\.\.32, not 0"),
    ({"kernel": 3, "pool": "avg", "pool_size": 2},
     r"pool must be one of 'none', 'max', 'sum', not 'avg'"),
])
def test_conv_spec_refusals(kwargs, message):
    from spikeforge.image import ConvSpec

    with pytest.raises(ImageError, match=rf"^convolution: {message}$"):
        ConvSpec(1, 6, 6, 2, **kwargs)


def test_conv_li_readout_is_refused_by_the_gateware_by_name():
    """The gateware's convolution core runs the LIF core's neuron models but not an LI readout:
    a plain convolution passes, an LI readout is refused naming the layer and the feature."""
    from dataclasses import replace

    from spikeforge.image import ConvSpec

    spec = ConvSpec(1, 6, 6, 2, 3, pool="max", pool_size=2)
    plain = conv_layer(np.random.default_rng(0), "c", spec)
    _image([plain], spec.n_in).check_gateware()
    _image([replace(plain, compare=">=")], spec.n_in).check_gateware()
    image = _image([replace(plain, spiking=False)], spec.n_in)
    with pytest.raises(ImageError, match=r"^the gateware's convolution core streams spikes, "
                                         r"not membranes, but layer 0 \('c'\) is a "
                                         r"convolution with LI readout \(no spikes\)"):
        image.check_gateware()


def test_a_conv_layer_runs_alike_in_a_learning_image():
    """A learning image runs its samples in sequence (sim/learning.py): a convolution before
    the learning layer integrates exactly as in the plain golden run when nothing is learnt."""
    from spikeforge.image import ConvSpec

    from .strategies import random_layer

    rng = np.random.default_rng(5)
    spec = ConvSpec(2, 6, 6, 3, 3, padding=1, pool="max", pool_size=2)
    layers = [conv_layer(rng, "c", spec), random_layer(rng, "fc", spec.n_out, 4)]
    image = _image(layers, spec.n_in)
    x = (rng.random((3, 6, spec.n_in)) < 0.4).astype(np.uint8)
    plain = golden.run(image, x)
    learning = golden.run(image.with_learning(1, "three_factor"), x,
                          modulators=np.zeros((3, 6, 4), np.int8))
    np.testing.assert_array_equal(learning.spikes, plain.spikes)
    with pytest.raises(ImageError, match=r"a convolution cannot learn"):
        image.with_learning(0, "stdp")

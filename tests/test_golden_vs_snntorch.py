"""The golden model against snnTorch's own forward pass.

Where the fixed-point arithmetic is exact (integer weights and thresholds, beta = 0 or 1, no
overflow) every spike and every membrane value must be equal. For other beta the membrane
difference must stay inside the rounding bound of docs/neuron.md while the spikes agree.
"""

from __future__ import annotations

import numpy as np
import snntorch as snn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.digits import reset_state
from spikeforge.sim import golden


def build(sizes, *, seed, betas, reset, recurrent_layer=None, bias=True, wmax=3):
    """An snnTorch chain with small integer weights and integer thresholds."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mods = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(a, b, bias=bias)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(rng.integers(-wmax, wmax + 1, (b, a))))
            if bias:
                linear.bias.copy_(torch.as_tensor(rng.integers(-1, 2, b)))
        threshold = torch.as_tensor(rng.integers(1, 2 * wmax + 1, b), dtype=torch.float32)
        beta = betas[index % len(betas)]
        if index == recurrent_layer:
            # RLeaky's zero reset also zeroes the step's input; the hardware runs subtract only
            lif = snn.RLeaky(beta=beta, threshold=threshold, linear_features=b,
                             reset_mechanism="subtract", init_hidden=True)
            with torch.no_grad():
                lif.recurrent.weight.copy_(torch.as_tensor(rng.integers(-wmax, wmax + 1,
                                                                        (b, b))))
                lif.recurrent.bias.copy_(torch.as_tensor(rng.integers(-1, 2, b)))
        else:
            lif = snn.Leaky(beta=beta, threshold=threshold, reset_mechanism=reset,
                            init_hidden=True)
        mods += [linear, lif]
    return torch.nn.Sequential(*mods)


def snntorch_trace(model, spikes):
    """snnTorch forward, step by step: per layer spikes and membranes [B, T, n]."""
    lifs = [m for m in model if isinstance(m, (snn.Leaky, snn.RLeaky))]
    x = torch.as_tensor(spikes, dtype=torch.float32)
    spk = [[] for _ in lifs]
    mem = [[] for _ in lifs]
    with torch.no_grad():
        reset_state(model)
        for t in range(x.shape[1]):
            h = x[:, t]
            for m in model:
                h = m(h)
                if isinstance(m, (snn.Leaky, snn.RLeaky)):
                    i = lifs.index(m)
                    spk[i].append(h.clone())
                    mem[i].append(m.mem.clone().expand_as(h))
    return ([torch.stack(s, 1).numpy() for s in spk], [torch.stack(v, 1).numpy() for v in mem])


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=4),
       betas=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=3),
       reset=st.sampled_from(["subtract", "zero"]), recurrent=st.booleans(),
       bias=st.booleans(), seed=st.integers(0, 2**31), steps=st.integers(1, 25))
def test_exact_where_arithmetic_is_exact(sizes, betas, reset, recurrent, bias, seed, steps):
    n_layers = len(sizes) - 1
    rec = seed % n_layers if recurrent else None
    model = build(sizes, seed=seed, betas=betas, reset=reset, recurrent_layer=rec, bias=bias)
    image = spikeforge.compile(model, weight_bits=8, device="LFE5U-85F")
    assert all(layer.scale == 1.0 for layer in image.layers)
    rng = np.random.default_rng(seed + 1)
    spikes = (rng.random((4, steps, sizes[0])) < 0.5).astype(np.uint8)
    result = golden.run(image, spikes, record=True)
    ref_spk, ref_mem = snntorch_trace(model, spikes)
    assert result.saturations.sum() == 0
    for index in range(n_layers):
        np.testing.assert_array_equal(result.layer_spikes[index], ref_spk[index])
        np.testing.assert_array_equal(result.membranes[index], ref_mem[index])


def _bounded(model, image, spikes, bound):
    """Membranes agree within `bound(d)` up to the first step where a spike differs."""
    result = golden.run(image, spikes, record=True)
    ref_spk, ref_mem = snntorch_trace(model, spikes)
    v_gold, v_ref = result.membranes[0].astype(np.float64), ref_mem[0].astype(np.float64)
    differ = (result.layer_spikes[0] != ref_spk[0]).any(axis=2)  # [B, T]
    checked = 0
    for b in range(spikes.shape[0]):
        first = np.argmax(differ[b]) if differ[b].any() else spikes.shape[1]
        d = v_gold[b, :first] - v_ref[b, :first]
        assert bound(d, v_ref[b, :first]), (b, first, d)
        checked += first
        if first < spikes.shape[1]:
            # a spike may only differ where snnTorch's membrane was within the bound of theta
            theta = image.layers[0].threshold
            near = np.abs(v_ref[b, first] - theta) <= 2 ** 8
            assert near[result.layer_spikes[0][b, first] != ref_spk[0][b, first]].all()
    return checked


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 5), reset=st.sampled_from(["subtract", "zero"]),
       seed=st.integers(0, 2**31))
def test_shift_decay_within_rounding_bound(k, reset, seed):
    """beta = 1 - 2^-k: 0 <= v_golden - v_snntorch <= 2^k - 1 (docs/neuron.md)."""
    model = build((8, 6), seed=seed, betas=[1 - 2.0**-k], reset=reset, wmax=20)
    image = spikeforge.compile(model, weight_bits=8, device="LFE5U-85F")
    assert image.layers[0].decay_mode == "shift" and image.layers[0].scale == 1.0
    spikes = (np.random.default_rng(seed).random((6, 30, 8)) < 0.4).astype(np.uint8)
    checked = _bounded(model, image, spikes,
                       lambda d, v: bool((d >= -1e-3).all() and (d <= 2**k - 1 + 1e-3).all()))
    assert checked > 0


@settings(max_examples=20, deadline=None)
@given(beta=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_multiplier_decay_within_rounding_bound(beta, seed):
    """beta_q = round(beta 2^f)/2^f: |d| <= (1 + |beta_q - beta| max|v|) / (1 - beta_q)."""
    model = build((8, 6), seed=seed, betas=[beta], reset="subtract", wmax=20)
    image = spikeforge.compile(model, weight_bits=8, device="LFE5U-85F", decay="mul")
    layer = image.layers[0]
    beta_q = layer.decay_mul[0] / 2**layer.decay_frac

    def bound(d, v):
        peak = np.abs(v).max(initial=0)
        return bool((np.abs(d) <= (1 + abs(beta_q - beta) * peak) / (1 - beta_q) + 1e-3).all())

    spikes = (np.random.default_rng(seed).random((6, 30, 8)) < 0.4).astype(np.uint8)
    assert _bounded(model, image, spikes, bound) > 0

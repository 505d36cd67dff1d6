"""The neuron models beyond the single-spike LIF (docs/neuron.md) against independent oracles.

- snnTorch's own `Synaptic`/`RSynaptic` forward pass: equal spike for spike, membrane for
  membrane and current for current where the arithmetic is exact (integer weights and
  thresholds, alpha and beta 0 or 1); inside docs/neuron.md's rounding bounds elsewhere.
- snnTorch's `Leaky` without reset as the LI readout's oracle (its membrane is the readout).
- A closed form for multi-spike neurons: an IF neuron with constant drive I emits
  ceil(T I / theta) - 1 spikes in T steps (compare ">"; floor(T I / theta) with ">="), and
  each of them is one event downstream.
- The float reference (compiler/float_ref.py, the IR's equations in float64, counting spike
  levels by comparison rather than by division) for every reset timing, compare and current
  order where the integer arithmetic is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.compiler.float_ref import simulate_float
from spikeforge.compiler.frontend import load_network
from spikeforge.compiler.ir import LifLayer, ModelError, Network
from spikeforge.compiler.quantize import plain_image, quantize
from spikeforge.digits import reset_state
from spikeforge.image import ImageError, LayerParams
from spikeforge.sim import golden

from .strategies import neuron_networks, random_ir

NEURONS = (snn.Leaky, snn.RLeaky, snn.Synaptic, snn.RSynaptic)


def synaptic_chain(sizes, *, seed, alphas, betas, recurrent_layer=None, bias=True, wmax=3,
                   reset="subtract", reset_delay=True, weight_scale=1.0):
    """An snnTorch chain of Linear -> Synaptic (RSynaptic for `recurrent_layer`) with integer
    weights (times `weight_scale`) and integer thresholds; alpha/beta per layer, cycled."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mods = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(a, b, bias=bias)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(rng.integers(-wmax, wmax + 1, (b, a)))
                                * weight_scale)
            if bias:
                linear.bias.copy_(torch.as_tensor(rng.integers(-1, 2, b)) * weight_scale)
        threshold = torch.as_tensor(rng.integers(1, 2 * wmax + 1, b) * weight_scale,
                                    dtype=torch.float32)
        alpha = torch.as_tensor(alphas[index % len(alphas)], dtype=torch.float32)
        beta = torch.as_tensor(betas[index % len(betas)], dtype=torch.float32)
        if index == recurrent_layer:
            lif = snn.RSynaptic(alpha=alpha, beta=beta, threshold=threshold, linear_features=b,
                                init_hidden=True)
            with torch.no_grad():
                lif.recurrent.weight.copy_(torch.as_tensor(
                    rng.integers(-wmax, wmax + 1, (b, b))) * weight_scale)
                lif.recurrent.bias.copy_(torch.as_tensor(rng.integers(-1, 2, b)) * weight_scale)
        else:
            lif = snn.Synaptic(alpha=alpha, beta=beta, threshold=threshold, init_hidden=True,
                               reset_mechanism=reset, reset_delay=reset_delay)
        mods += [linear, lif]
    return torch.nn.Sequential(*mods)


def snntorch_trace(model, spikes):
    """snnTorch's forward, step by step: per neuron layer (spikes, mem, syn or None) [B, T, n]."""
    neurons = [m for m in model if isinstance(m, NEURONS)]
    x = torch.as_tensor(spikes, dtype=torch.float32)
    spk, mem, syn = ([[] for _ in neurons] for _ in range(3))
    with torch.no_grad():
        reset_state(model)
        for m in neurons:
            if isinstance(m, snn.RSynaptic):
                m.spk = torch.zeros(0)
            if hasattr(m, "syn"):
                m.syn = torch.zeros(0)
        for t in range(x.shape[1]):
            h = x[:, t]
            for m in model:
                h = m(h)
                if isinstance(m, NEURONS):
                    i = neurons.index(m)
                    spk[i].append(h.clone())
                    mem[i].append(m.mem.clone().expand_as(h))
                    syn[i].append(m.syn.clone().expand_as(h) if hasattr(m, "syn") else h)
    stack = [torch.stack(s, 1).numpy() for s in spk]
    return (stack, [torch.stack(v, 1).numpy() for v in mem],
            [torch.stack(v, 1).numpy() for v in syn])


def compiled(model, **options):
    """Compile without a hardware target: the golden model runs every neuron model."""
    return spikeforge.compile(model, weight_bits=8, **options)


# -- Synaptic / CubaLIF: exact -------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=4),
       alphas=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=3),
       betas=st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=3),
       recurrent=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**31),
       steps=st.integers(1, 25))
def test_synaptic_exact_against_snntorch(sizes, alphas, betas, recurrent, bias, seed, steps):
    n_layers = len(sizes) - 1
    rec = seed % n_layers if recurrent else None
    model = synaptic_chain(sizes, seed=seed, alphas=alphas, betas=betas, recurrent_layer=rec,
                           bias=bias)
    image = compiled(model)
    assert all(layer.scale == 1.0 and layer.current_based for layer in image.layers)
    spikes = (np.random.default_rng(seed + 1).random((3, steps, sizes[0])) < 0.5).astype(np.uint8)
    result = golden.run(image, spikes, record=True)
    ref_spk, ref_mem, ref_syn = snntorch_trace(model, spikes)
    assert result.saturations.sum() == 0
    for index in range(n_layers):
        np.testing.assert_array_equal(result.layer_spikes[index], ref_spk[index])
        np.testing.assert_array_equal(result.membranes[index], ref_mem[index])
        np.testing.assert_array_equal(result.currents[index], ref_syn[index])


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=3),
       alpha=st.sampled_from([0.0, 1.0]), beta=st.sampled_from([0.0, 1.0]),
       seed=st.integers(0, 2**31))
def test_synaptic_zero_reset_at_the_spike_against_snntorch(sizes, alpha, beta, seed):
    """reset_delay=False zeroes the membrane at the spike: snnTorch reports the membrane after
    it, the golden model the one compared with theta (0 where it spiked, else equal)."""
    model = synaptic_chain(sizes, seed=seed, alphas=[alpha], betas=[beta], reset="zero",
                           reset_delay=False)
    image = compiled(model)
    spikes = (np.random.default_rng(seed).random((3, 20, sizes[0])) < 0.5).astype(np.uint8)
    result = golden.run(image, spikes, record=True)
    ref_spk, ref_mem, _ = snntorch_trace(model, spikes)
    for index in range(len(sizes) - 1):
        np.testing.assert_array_equal(result.layer_spikes[index], ref_spk[index])
        after = np.where(result.layer_spikes[index] > 0, 0, result.membranes[index])
        np.testing.assert_array_equal(after, ref_mem[index])


def test_synaptic_delayed_zero_reset_refused_with_its_reason():
    model = synaptic_chain((3, 2), seed=0, alphas=[0.5], betas=[0.5], reset="zero")
    with pytest.raises(ModelError, match=r"Synaptic's reset_mechanism='zero' also discards the "
                                         r"input of the step after a spike"):
        load_network(model)


# -- Synaptic / CubaLIF: rounding bounds ---------------------------------------------------------

def first_difference(gold_spikes, ref_spikes):
    """Per sample, the first step at which any spike differs (T if none)."""
    differ = (gold_spikes != ref_spikes).any(axis=2)
    steps = gold_spikes.shape[1]
    return [int(np.argmax(row)) if row.any() else steps for row in differ]


@settings(max_examples=20, deadline=None)
@given(ka=st.integers(0, 4), kb=st.integers(0, 4), seed=st.integers(0, 2**31))
def test_synaptic_shift_decay_within_rounding_bound(ka, kb, seed):
    """alpha = 1 - 2^-ka, beta = 1 - 2^-kb (k = 0: 0): 0 <= syn_gold - syn_snntorch <= 2^ka - 1
    and 0 <= v_gold - v_snntorch <= 2^(ka + kb) - 1 (docs/neuron.md), while the spikes agree."""
    alpha = 1 - 2.0 ** -ka if ka else 0.0
    beta = 1 - 2.0 ** -kb if kb else 0.0
    model = synaptic_chain((8, 6), seed=seed, alphas=[alpha], betas=[beta], wmax=20)
    image = compiled(model)
    layer = image.layers[0]
    assert layer.decay_mode in ("shift", "none") and layer.syn_decay_mode in ("shift", "none")
    spikes = (np.random.default_rng(seed).random((6, 30, 8)) < 0.4).astype(np.uint8)
    result = golden.run(image, spikes, record=True)
    ref_spk, ref_mem, ref_syn = snntorch_trace(model, spikes)
    checked = 0
    for b, first in enumerate(first_difference(result.layer_spikes[0], ref_spk[0])):
        d_syn = result.currents[0][b, :first + 1] - ref_syn[0][b, :first + 1]
        d_v = result.membranes[0][b, :first + 1] - ref_mem[0][b, :first + 1]
        assert (d_syn >= 0).all() and (d_syn <= 2**ka - 1).all(), d_syn
        assert (d_v >= 0).all() and (d_v <= 2 ** (ka + kb) - 1).all(), d_v
        checked += first
    assert checked > 0


@settings(max_examples=20, deadline=None)
@given(alpha=st.floats(0.05, 0.95), beta=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_synaptic_multiplier_decay_within_rounding_bound(alpha, beta, seed):
    """alpha_q' = alpha_q / 2^f, beta_q' likewise:
    |d_syn| <= D = (1 + |alpha_q' - alpha| max|syn|) / (1 - alpha_q') and
    |d_v| <= (1 + |beta_q' - beta| max|v| + D) / (1 - beta_q'), while the spikes agree."""
    model = synaptic_chain((8, 6), seed=seed, alphas=[alpha], betas=[beta], wmax=20)
    image = compiled(model, decay="mul")
    layer = image.layers[0]
    a_q = layer.syn_decay_mul[0] / 2**layer.syn_decay_frac
    b_q = layer.decay_mul[0] / 2**layer.decay_frac
    spikes = (np.random.default_rng(seed).random((6, 30, 8)) < 0.4).astype(np.uint8)
    result = golden.run(image, spikes, record=True)
    ref_spk, ref_mem, ref_syn = snntorch_trace(model, spikes)
    checked = 0
    for b, first in enumerate(first_difference(result.layer_spikes[0], ref_spk[0])):
        syn_f, v_f = ref_syn[0][b, :first + 1], ref_mem[0][b, :first + 1]
        bound_syn = (1 + abs(a_q - alpha) * np.abs(syn_f).max(initial=0)) / (1 - a_q)
        bound_v = (1 + abs(b_q - beta) * np.abs(v_f).max(initial=0) + bound_syn) / (1 - b_q)
        assert (np.abs(result.currents[0][b, :first + 1] - syn_f) <= bound_syn + 1e-6).all()
        assert (np.abs(result.membranes[0][b, :first + 1] - v_f) <= bound_v + 1e-6).all()
        checked += first
    assert checked > 0


# -- LI readout ----------------------------------------------------------------------------------

def li_readout_model(sizes, *, seed, beta, alpha=None, weight_scale=1.0):
    """Leaky hidden layers, then a readout: snnTorch Leaky (or Synaptic, with alpha) without a
    reset, whose membrane is the output."""
    rng = np.random.default_rng(seed)
    mods = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(a, b)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(rng.integers(-3, 4, (b, a))) * weight_scale)
            linear.bias.copy_(torch.as_tensor(rng.integers(-1, 2, b)) * weight_scale)
        last = index == len(sizes) - 2
        threshold = torch.as_tensor(rng.integers(1, 5, b) * weight_scale, dtype=torch.float32)
        if last and alpha is not None:
            lif = snn.Synaptic(alpha=alpha, beta=beta, threshold=threshold,
                               reset_mechanism="none", init_hidden=True)
        else:
            lif = snn.Leaky(beta=beta if last else 1.0, threshold=threshold, init_hidden=True,
                            reset_mechanism="none" if last else "subtract")
        mods += [linear, lif]
    return torch.nn.Sequential(*mods)


def li_network(model) -> Network:
    """The IR of `li_readout_model`: its hidden layers through the torch front end, its last
    layer as an LI readout."""
    hidden = load_network(torch.nn.Sequential(*list(model)[:-2])) if len(model) > 2 else None
    linear, neuron = model[-2], model[-1]
    readout = LifLayer(name="readout", weight=linear.weight.detach().numpy(),
                       bias=linear.bias.detach().numpy(), beta=float(neuron.beta),
                       threshold=0.0, spiking=False,
                       alpha=float(neuron.alpha) if hasattr(neuron, "alpha") else None)
    layers = ([] if hidden is None else hidden.layers) + [readout]
    return Network(n_inputs=layers[0].n_in, layers=layers)


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=3),
       beta=st.sampled_from([0.0, 1.0]), alpha=st.sampled_from([None, 0.0, 1.0]),
       seed=st.integers(0, 2**31))
def test_li_readout_exact_against_snntorch(sizes, beta, alpha, seed):
    model = li_readout_model(sizes, seed=seed, beta=beta, alpha=alpha)
    network = li_network(model)
    layers, _ = quantize(network)
    spikes = (np.random.default_rng(seed).random((3, 20, sizes[0])) < 0.5).astype(np.uint8)
    result = golden.run(plain_image(layers, sizes[0]), spikes)
    _, ref_mem, _ = snntorch_trace(model, spikes)
    assert result.values.dtype == np.int32 and result.values.shape == ref_mem[-1].shape
    assert result.scale == 1.0 and not result.spikes.any()
    np.testing.assert_array_equal(result.values, ref_mem[-1])


def test_li_readout_values_times_scale_are_the_float_membrane():
    """Weights k / 8 with max |k| = 127 quantize to k exactly at scale 1/8."""
    model = li_readout_model((5, 4), seed=3, beta=1.0, weight_scale=0.125)
    with torch.no_grad():
        model[0].weight[0, 0] = 127 * 0.125
    layers, _ = quantize(li_network(model), weight_bits=8)
    spikes = (np.random.default_rng(3).random((2, 15, 5)) < 0.5).astype(np.uint8)
    result = golden.run(plain_image(layers, 5), spikes)
    _, ref_mem, _ = snntorch_trace(model, spikes)
    assert result.scale == 0.125
    np.testing.assert_array_equal(result.values * result.scale, ref_mem[-1])


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_li_readout_shift_decay_within_rounding_bound_at_every_step(k, seed):
    """No spikes, so 0 <= v_gold - v_snntorch <= 2^k - 1 holds for the whole run."""
    model = li_readout_model((6, 4), seed=seed, beta=1 - 2.0**-k)
    layers, _ = quantize(li_network(model))
    spikes = (np.random.default_rng(seed).random((4, 40, 6)) < 0.5).astype(np.uint8)
    result = golden.run(plain_image(layers, 6), spikes)
    _, ref_mem, _ = snntorch_trace(model, spikes)
    d = result.values - ref_mem[-1]
    assert (d >= 0).all() and (d <= 2**k - 1).all()


def test_li_readout_must_be_last_and_cannot_be_recurrent():
    li = LifLayer("li", np.ones((2, 2)), None, 0.5, 0.0, spiking=False)
    lif = LifLayer("lif", np.ones((2, 2)), None, 0.5, 1.0)
    with pytest.raises(ModelError, match=r"^layer 'li': an LI readout emits no spikes, so it "
                                         r"must be the last layer$"):
        Network(2, [li, lif])
    with pytest.raises(ModelError, match=r"so it cannot be recurrent$"):
        LifLayer("li", np.ones((2, 2)), None, 0.5, 0.0, spiking=False,
                 rec_weight=np.ones((2, 2)))


# -- multi-spike ---------------------------------------------------------------------------------

def if_layer(name, n_in, drive, theta, k, *, compare=">", reset_delay=True, k_in=1,
             weights=None):
    n = len(drive)
    w = np.zeros((n, n_in), np.int32) if weights is None else weights
    return LayerParams(name, w, bias=drive, threshold=theta, weight_bits=8, v_bits=24,
                       acc_bits=24, decay_mode="none", max_spikes=k, in_max_spikes=k_in,
                       compare=compare, reset_delay=reset_delay)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 6), k=st.integers(1, 9), steps=st.integers(1, 40),
       compare=st.sampled_from([">", ">="]), reset_delay=st.booleans())
def test_multi_spike_if_neuron_closed_form(data, n, k, steps, compare, reset_delay):
    """IF (beta = 1), subtract reset, constant drive I > 0 from the bias: after T steps
    S = ceil(T I / theta) - 1 spikes (">"), floor(T I / theta) (">="), or K T when I > K theta.
    Each spike is one event downstream: an LI readout with weight w sums w S exactly."""
    theta = np.array(data.draw(st.lists(st.integers(1, 50), min_size=n, max_size=n)))
    drive = np.array([data.draw(st.integers(1, (k + 2) * int(t))) for t in theta])
    weights = np.array(data.draw(st.lists(st.integers(-20, 20), min_size=n, max_size=n)))
    hidden = if_layer("if", 1, drive, theta, k, compare=compare, reset_delay=reset_delay)
    readout = LayerParams("sum", weights[None, :], bias=0, threshold=0, weight_bits=8,
                          v_bits=24, acc_bits=24, decay_mode="none", in_max_spikes=k,
                          spiking=False)
    from dataclasses import replace
    readout = replace(readout, acc_bits=readout.acc_bits_needed())
    result = golden.run(plain_image([hidden, readout], 1), np.zeros((1, steps, 1), np.uint8),
                        record=True)
    total = steps * drive
    if compare == ">":
        want = -(-total // theta) - 1
    else:
        want = total // theta
    want = np.where(drive > k * theta, k * steps, want)
    counts = result.layer_spikes[0][0]
    assert counts.dtype == np.uint8 and counts.max(initial=0) <= k
    np.testing.assert_array_equal(counts.sum(axis=0), want)
    assert result.events_in[0, 1] == want.sum() and result.spike_counts[0, 0] == want.sum()
    assert result.values[0, -1, 0] == int(weights @ want)


@settings(max_examples=80, deadline=None)
@given(network=neuron_networks(), seed=st.integers(0, 2**31))
def test_golden_equals_float_ir_where_exact(network, seed):
    """Every variant of docs/neuron.md: multi-spike counts, both compares, both reset timings,
    both current orders, recurrence and an LI readout, equal to the float IR."""
    layers, _ = quantize(network)
    assert all(layer.scale == 1.0 for layer in layers)
    rng = np.random.default_rng(seed)
    spikes = (rng.random((3, 20, network.n_inputs)) < 0.5).astype(np.uint8)
    result = golden.run(plain_image(layers, network.n_inputs), spikes, record=True)
    ref = simulate_float(network, spikes, record=True)
    assert result.saturations.sum() == 0
    for index in range(len(layers)):
        np.testing.assert_array_equal(result.layer_spikes[index], ref.layer_spikes[index])
        np.testing.assert_array_equal(result.membranes[index], ref.membranes[index])
    if not network.layers[-1].spiking:
        np.testing.assert_array_equal(result.values, ref.values)


# -- refusals and bad values ----------------------------------------------------------------------

def test_the_new_models_compile_for_a_board():
    """The gateware runs the synaptic current: a board target maps it (lanes, resource
    check) instead of refusing it; the image is the one compiled without a target."""
    model = synaptic_chain((4, 3), seed=1, alphas=[0.5], betas=[0.5])
    free = compiled(model)
    image = compiled(model, board="icebreaker")
    image.check_gateware()
    assert image.config.device == "iCE40UP5K" and image.config.board == "icebreaker"
    assert image.layers[0].current_based and "resources" in image.meta
    spikes = np.ones((1, 3, 4), np.uint8)
    np.testing.assert_array_equal(golden.run(image, spikes).final_membranes[0],
                                  golden.run(free, spikes).final_membranes[0])


@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_spikes", 0, r"max_spikes must be an integer 1\.\.255, not 0"),
    ("max_spikes", 256, r"max_spikes must be an integer 1\.\.255, not 256"),
    ("compare", "<", r"compare must be one of \('>', '>='\), not '<'"),
    ("syn_delay", 2, r"syn_delay must be 0 or 1, not 2"),
    ("alpha", 1.5, r"alpha must lie in \[0, 1\]"),
])
def test_ir_refuses_out_of_range_values_in_one_line(field, value, message):
    with pytest.raises(ModelError, match=rf"^layer 'x': {message}$"):
        LifLayer("x", np.ones((2, 2)), None, 0.5, 1.0, **{field: value,
                 **({"alpha": 0.5} if field == "syn_delay" else {})})


@pytest.mark.parametrize(("fields", "message"), [
    ({"max_spikes": 0}, r"max_spikes must be an integer 1\.\.255, not 0"),
    ({"in_max_spikes": 300}, r"in_max_spikes must be an integer 1\.\.255, not 300"),
    ({"compare": "=="}, r"compare must be one of '>', '>=', not '=='"),
    ({"syn_decay_mode": "shift", "syn_bits": 12},
     r"syn_decay_shift must have one value per neuron \(2\), not none"),
    ({"syn_decay_mode": "mul", "syn_bits": 12, "syn_decay_frac": 8, "syn_decay_mul": 300},
     r"syn_decay_mul must lie in \[0, 256\], not 300"),
    ({"syn_decay_mode": "none", "syn_bits": 40}, r"syn_bits must be an integer 4\.\.32, "
                                                 r"not 40"),
    ({"syn_bits": 12}, r"syn_bits must be an integer 0, not 12"),
    ({"spiking": "no"}, r"spiking must be true or false, not 'no'"),
])
def test_layer_params_refuse_out_of_range_values_in_one_line(fields, message):
    with pytest.raises(ImageError, match=rf"^layer 'x': {message}$"):
        LayerParams("x", np.ones((2, 2)), bias=0, threshold=1, weight_bits=4, v_bits=8,
                    acc_bits=8, decay_mode="none", **fields)


def test_new_fields_survive_the_file(tmp_path):
    rng = np.random.default_rng(5)
    network = random_ir(rng, (4, 5, 3), alpha_choices=[0.25, 0.5], compare=">=",
                        reset="subtract", reset_delay=False, syn_delay=1, recurrent=0,
                        readout=True)
    layers, _ = quantize(network, decay="mul")
    image = plain_image(layers, 4)
    path = tmp_path / "net.sfi"
    image.save(path)
    back = spikeforge.load_image(path)
    for a, b in zip(image.layers, back.layers):
        for name in LayerParams.SCALARS:
            assert getattr(a, name) == getattr(b, name), name
        for name in LayerParams.ARRAYS:
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y), name
    spikes = (rng.random((2, 12, 4)) < 0.5).astype(np.uint8)
    np.testing.assert_array_equal(golden.run(image, spikes).values,
                                  golden.run(back, spikes).values)


def test_learning_needs_a_single_spike_lif_layer():
    layer = if_layer("multi", 3, np.ones(2, np.int32), np.ones(2, np.int32), 3)
    with pytest.raises(ImageError, match=r"^learning on layer 0 \('multi'\): learning needs a "
                                         r"single-spike LIF layer, not one with multi-spike "
                                         r"\(up to 3 per step\)$"):
        plain_image([layer], 3).with_learning(0, "stdp")

"""Mixed precision: per-neuron scales, the Hessian trace, the allocation, the API and CLI.

Oracles: closed forms (a quadratic loss's Hessian, integer networks whose neurons were scaled),
brute force over every allocation, the numpy float reference and snnTorch's own gradients.
"""

from __future__ import annotations

import itertools
import json

import nir
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.compiler.allocate import BITS, allocate, budget_bits, costs_from, frontier
from spikeforge.compiler.float_ref import run_float, simulate_float
from spikeforge.compiler.frontend import load_network
from spikeforge.compiler.ir import LifLayer, Network
from spikeforge.compiler.mixed import plan_weight_bits, select
from spikeforge.compiler.quantize import accuracy_report, plain_image, quantize
from spikeforge.compiler.scales import neuron_scales, quantization_error, weight_scales
from spikeforge.compiler.sensitivity import (
    ggn_trace,
    hutchinson_trace,
    layer_traces,
    rate_loss,
    torch_network,
)
from spikeforge.sim import golden

from .test_cli import assert_one_line_error, lif_nir
from .test_cli import spikeforge as run_cli

SETTINGS = settings(deadline=None, max_examples=20,
                    suppress_health_check=[HealthCheck.too_slow])


def random_network(rng, sizes, *, beta=0.875, reset="subtract", recurrent=False):
    return Network(sizes[0], [
        LifLayer(f"fc{i}", rng.normal(0, 0.6, (b, a)), rng.normal(0, 0.1, b), beta,
                 rng.uniform(0.5, 1.5, b), reset=reset,
                 rec_weight=rng.normal(0, 0.3, (b, b)) if recurrent else None)
        for i, (a, b) in enumerate(zip(sizes, sizes[1:]))])


def spikes(rng, batch, steps, n, p=0.3):
    return (rng.random((batch, steps, n)) < p).astype(np.uint8)


# -- per-neuron scales ---------------------------------------------------------------------------
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(2, 8),
       reset=st.sampled_from(["subtract", "zero"]), beta=st.sampled_from([0.0, 0.5, 0.875, 1.0]),
       recurrent=st.booleans(), clip=st.sampled_from(["mse", "max"]),
       alpha=st.sampled_from([None, 0.0, 0.5, 0.875]), syn_delay=st.integers(0, 1),
       max_spikes=st.sampled_from([1, 3]))
def test_per_neuron_scale_folding_is_exact(seed, bits, reset, beta, recurrent, clip, alpha,
                                           syn_delay, max_spikes):
    """An integer network (each neuron's largest weight at +-qmax) whose neurons were each
    multiplied by their own positive factor c_i quantizes back to the integer network, threshold
    and bias included, so the golden model's spikes are identical to the unscaled network's;
    with a synaptic current (the bias enters it) and several spikes per step too."""
    rng = np.random.default_rng(seed)
    qmax = 2 ** (bits - 1) - 1
    sizes = [9, 7, 4]
    ints, scaled, factors = [], [], []
    for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        w = rng.integers(-qmax, qmax + 1, (n_out, n_in + (n_out if recurrent else 0)))
        w[np.arange(n_out), rng.integers(0, w.shape[1], n_out)] = \
            qmax * rng.choice([-1, 1], n_out)
        bias = rng.integers(-3, 4, n_out)
        theta = rng.integers(1, 3 * qmax + 2, n_out)
        c = rng.uniform(0.01, 100.0, n_out)
        factors.append(c)
        for target, factor in ((ints, np.ones(n_out)), (scaled, c)):
            target.append(LifLayer(
                f"l{index}", w[:, :n_in] * factor[:, None], bias * factor, beta,
                theta * factor, reset=reset,
                rec_weight=w[:, n_in:] * factor[:, None] if recurrent else None,
                alpha=alpha, syn_delay=syn_delay if alpha is not None else 0,
                max_spikes=max_spikes))
    x = spikes(rng, 4, 30, sizes[0], p=0.4)
    exact, _ = quantize(Network(sizes[0], ints), weight_bits=bits, calibration=x)
    folded, report = quantize(Network(sizes[0], scaled), weight_bits=bits, calibration=x,
                              scales="neuron", clip=clip)
    for a, b, c, q in zip(exact, folded, factors, report.layers, strict=True):
        assert np.array_equal(a.all_weights(), b.all_weights())
        assert np.array_equal(a.threshold, b.threshold) and np.array_equal(a.bias, b.bias)
        assert a.v_bits == b.v_bits
        np.testing.assert_allclose(q.neuron_scales, c, rtol=1e-9)
    want = golden.run(plain_image(exact, sizes[0]), x, record=True)
    got = golden.run(plain_image(folded, sizes[0]), x, record=True)
    assert got.spikes.any() or want.spikes.sum() == 0
    for g, w in zip(got.layer_spikes, want.layer_spikes, strict=True):
        assert np.array_equal(g, w)
    if alpha is not None:
        for g, w in zip(got.currents, want.currents, strict=True):
            assert np.array_equal(g, w)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), reset=st.sampled_from(["subtract", "zero"]),
       recurrent=st.booleans(), alpha=st.sampled_from([None, 0.5, 0.875]),
       syn_delay=st.integers(0, 1), max_spikes=st.sampled_from([1, 3]),
       compare=st.sampled_from([">", ">="]), reset_delay=st.booleans())
def test_float_reference_is_invariant_to_neuron_scales(seed, reset, recurrent, alpha, syn_delay,
                                                       max_spikes, compare, reset_delay):
    """The folding argument on the float side: multiplying a neuron's weights, bias and threshold
    by 2^k (exact in floating point) changes no spike (count) of any layer and multiplies its
    membrane by 2^k, through the synaptic current too (the current is the neuron's own)."""
    rng = np.random.default_rng(seed)
    net = random_network(rng, [8, 6, 5], reset=reset, recurrent=recurrent)
    options = dict(alpha=alpha, syn_delay=syn_delay if alpha is not None else 0,
                   max_spikes=max_spikes, compare=compare, reset_delay=reset_delay)
    plain, layers, factors = [], [], []
    for layer in net.layers:
        c = 2.0 ** rng.integers(-6, 7, layer.n_out)
        factors.append(c)
        for target, k in ((plain, np.ones(layer.n_out)), (layers, c)):
            target.append(LifLayer(layer.name, layer.weight * k[:, None], layer.bias * k,
                                   layer.beta, layer.threshold * k, reset=layer.reset,
                                   rec_weight=None if layer.rec_weight is None
                                   else layer.rec_weight * k[:, None], **options))
    x = spikes(rng, 4, 40, 8, p=0.5)
    want = simulate_float(Network(8, plain), x, record=True)
    got = simulate_float(Network(8, layers), x, record=True)
    for a, b in zip(want.layer_spikes, got.layer_spikes, strict=True):
        assert np.array_equal(a, b)
    for a, b, c in zip(want.membranes, got.membranes, factors, strict=True):
        np.testing.assert_allclose(b, a * c, rtol=1e-12, atol=1e-12)


def test_li_readout_shares_one_scale():
    """An LI readout's membranes are its output, read side by side with the one LayerParams.scale:
    per-neuron scales would rescale each class's value (the float membranes scale with c_i, as
    the test above shows), so its neurons share one scale while the spiking layers keep theirs.
    Its values times that scale follow the float readout."""
    rng = np.random.default_rng(11)
    net = random_network(rng, [16, 12, 5])
    last = net.layers[-1]
    last.weight[np.arange(5), np.arange(5)] = [-1.0, -4.0, 0.25, -2.0, -8.0]  # unequal row peaks
    readout = LifLayer("readout", last.weight, last.bias, 0.875, 0.0, spiking=False)
    net = Network(16, [net.layers[0], readout])
    x = spikes(rng, 16, 40, 16, p=0.4)
    layers, report = quantize(net, weight_bits=8, calibration=x)
    hidden, li = report.layers
    assert len(set(hidden.neuron_scales)) > 1
    assert len(set(li.neuron_scales)) == 1 and li.neuron_scales[0] == layers[1].scale
    _, by_layer = quantize(net, weight_bits=8, calibration=x, scales="layer")
    assert by_layer.layers[1].neuron_scales == li.neuron_scales
    got = golden.run(plain_image(layers, 16), x).values * layers[1].scale
    ref = simulate_float(net, x).values
    assert np.sqrt(np.mean((got - ref) ** 2)) / ref.std() < 0.05
    # the readout's classes are its summed membranes' argmax, on both sides
    y = ref.sum(axis=1).argmax(axis=1)
    assert len(set(y)) > 1
    acc = accuracy_report(net, layers, x, y)
    assert acc["float_accuracy"] == 1.0 and acc["agreement"] >= 0.9


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_mse_clip_is_the_grid_minimum(bits):
    """The chosen clip's squared error is no larger than at the largest weight (clip='max'), and
    it equals the brute-force error of that scale."""
    rng = np.random.default_rng(bits)
    w = rng.standard_t(3, (12, 40))
    qmax = 2 ** (bits - 1) - 1
    s_mse, ratio = weight_scales(w, bits, clip="mse")
    s_max, _ = weight_scales(w, bits, clip="max")
    np.testing.assert_allclose(s_max, np.abs(w).max(axis=1) / qmax)
    for s_row in (s_mse, s_max):
        q = np.clip(np.rint(w / s_row[:, None]), -qmax, qmax)
        assert np.all(np.abs(q) <= qmax)
    err = lambda s: ((np.clip(np.rint(w / s[:, None]), -qmax, qmax) * s[:, None] - w) ** 2)  # noqa: E731
    assert np.all(err(s_mse).sum(axis=1) <= err(s_max).sum(axis=1) + 1e-12)
    assert quantization_error(w, bits) == pytest.approx(err(s_mse).sum())
    if bits <= 3:
        assert ratio.mean() < 0.9  # heavy tails: low widths clip


# -- the Hessian trace ---------------------------------------------------------------------------
def test_hutchinson_diagonal_hessian_is_exact():
    """z^T D z = tr(D) for every Rademacher z: the estimate is exact with zero spread."""
    a = torch.tensor([0.5, 2.0, -1.0, 3.0], dtype=torch.float64)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    loss = 0.5 * (a * w ** 2).sum() + (u ** 2).sum()
    mean, err = hutchinson_trace(loss, [w, u], samples=5)
    assert mean[0] == pytest.approx(4.5)
    assert mean[1] == pytest.approx(12.0)
    assert err[0] == pytest.approx(0.0, abs=1e-12)


def test_hutchinson_dense_hessian_within_its_error():
    """loss = 1/2 w^T A w + w^T B v with a dense symmetric A: tr(H_ww) = tr(A), tr(H_vv) = 0.
    Each draw of z_w^T (H z)_w is z_w^T A z_w + z_w^T B z_v, of variance
    2 sum_{i != j} A_ij^2 + sum B_ij^2 (closed form); the cross block B averages out."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(30, 30))
    a_np = m + m.T
    a = torch.tensor(a_np)
    b = torch.tensor(rng.normal(size=(30, 8)))
    w = torch.tensor(rng.normal(size=30), requires_grad=True)
    v = torch.tensor(rng.normal(size=8), requires_grad=True)
    loss = 0.5 * w @ a @ w + w @ b @ v
    samples = 400
    mean, err = hutchinson_trace(loss, [w, v], samples=samples, seed=1)
    off = (a_np ** 2).sum() - (np.diag(a_np) ** 2).sum()
    cross = (b.numpy() ** 2).sum()
    expected_err = np.sqrt((2 * off + cross) / samples)
    assert abs(mean[0] - np.trace(a_np)) < 4 * expected_err
    assert err[0] == pytest.approx(expected_err, rel=0.2)
    assert abs(mean[1]) < 4 * np.sqrt(cross / samples)
    assert err[1] == pytest.approx(np.sqrt(cross / samples), rel=0.2)


def test_ggn_trace_of_a_linear_readout_is_the_closed_form():
    """outputs[b,t] = W x[b,t]: G = J^T H_o J has trace sum_bt |x_bt|^2 (1 - |p_bt|^2) / (B T)
    for the rate loss (H_o per step is (diag(p) - p p^T) / (B T), p the softmax); each draw is
    >= 0 and the estimate lies within 4 standard errors."""
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.normal(size=(6, 5, 9)))
    w = torch.tensor(rng.normal(size=(4, 9)), requires_grad=True)
    out = torch.einsum("btj,cj->btc", x, w)
    y = torch.as_tensor(rng.integers(0, 4, 6))
    p = torch.softmax(out.detach(), dim=-1)
    want = float(((x ** 2).sum(-1) * (1 - (p ** 2).sum(-1))).sum()) / (6 * 5)
    mean, err = ggn_trace(out, y, [[w]], samples=200, seed=0)
    assert 0 < err[0] < 0.2 * want
    assert abs(mean[0] - want) < 4 * err[0]


def test_layer_traces_choices():
    rng = np.random.default_rng(4)
    net = random_network(rng, [10, 12, 3])
    x = spikes(rng, 32, 20, 10, p=0.4)
    ggn, _ = layer_traces(net, x, samples=4, curvature="ggn")
    assert np.all(ggn >= 0)
    with pytest.raises(ValueError, match=r"^curvature must be one of \('ggn', 'hessian'\), "
                                         r"not 'fisher'$"):
        layer_traces(net, x, curvature="fisher")


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), reset=st.sampled_from(["subtract", "zero"]),
       recurrent=st.booleans(), alpha=st.sampled_from([None, 0.5, 0.875]),
       syn_delay=st.integers(0, 1), max_spikes=st.sampled_from([1, 3]),
       compare=st.sampled_from([">", ">="]), reset_delay=st.booleans(), readout=st.booleans())
def test_torch_network_forward_is_the_float_reference(seed, reset, recurrent, alpha, syn_delay,
                                                      max_spikes, compare, reset_delay, readout):
    """Every neuron model of the IR: the same spike counts per layer, and an LI readout's
    membrane, as compiler/float_ref.py."""
    rng = np.random.default_rng(seed)
    base = random_network(rng, [7, 6, 3], reset=reset, recurrent=recurrent)
    options = dict(alpha=alpha, syn_delay=syn_delay if alpha is not None else 0,
                   max_spikes=max_spikes, compare=compare, reset_delay=reset_delay)
    layers = [LifLayer(layer.name, layer.weight, layer.bias, layer.beta, layer.threshold,
                       reset=layer.reset, rec_weight=layer.rec_weight, **options)
              for layer in base.layers]
    if readout:
        last = layers[-1]
        layers[-1] = LifLayer(last.name, last.weight, last.bias, last.beta, 0.0, spiking=False,
                              alpha=alpha, syn_delay=options["syn_delay"])
    net = Network(7, layers)
    x = spikes(rng, 5, 25, 7, p=0.5)
    module = torch_network(net)
    with torch.no_grad():
        got = module(torch.as_tensor(x, dtype=torch.float64), all_layers=True)
    want = simulate_float(net, x)
    for g, w in zip(got[:-1] if readout else got, want.layer_spikes, strict=False):
        assert np.array_equal(g.numpy().astype(np.uint8), w)
    if readout:
        np.testing.assert_allclose(got[-1].numpy(), want.values, rtol=1e-12, atol=1e-12)


def test_surrogate_gradient_is_snntorchs():
    """The loss gradient of the torch float reference equals snnTorch's own (atan surrogate,
    detached reset) on the same network and batch."""
    import snntorch as snn
    from torch import nn

    from spikeforge import digits as D

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), snn.Leaky(beta=0.875, init_hidden=True),
                          nn.Linear(16, 4), snn.Leaky(beta=0.875, init_hidden=True,
                                                      output=True))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    rng = np.random.default_rng(0)
    x = spikes(rng, 16, 15, 12, p=0.5)
    y = torch.as_tensor(rng.integers(0, 4, 16))
    D.reset_state(model)
    xt = torch.as_tensor(x, dtype=torch.float32)
    out = torch.stack([model(xt[:, t])[0] for t in range(x.shape[1])], dim=1)
    rate_loss(out, y).backward()
    want = [m.weight.grad.double().numpy() for m in model if isinstance(m, nn.Linear)]
    module = torch_network(load_network(model))
    rate_loss(module(torch.as_tensor(x, dtype=torch.float64)), y).backward()
    assert any(np.abs(g).max() > 1e-3 for g in want)
    for got, ref in zip(module.weights, want, strict=True):
        np.testing.assert_allclose(got.grad.numpy(), ref, rtol=2e-3, atol=1e-5)


def test_layer_traces_are_reproducible():
    rng = np.random.default_rng(4)
    net = random_network(rng, [10, 12, 3])
    x = spikes(rng, 32, 20, 10, p=0.4)
    y = rng.integers(0, 3, 32)
    t1, e1 = layer_traces(net, x, y, samples=8, seed=3, curvature="hessian")
    t2, _ = layer_traces(net, x, y, samples=8, seed=3, curvature="hessian")
    assert t1.shape == (2,) and np.array_equal(t1, t2) and np.all(e1 >= 0)


# -- the allocation ------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), layers=st.integers(1, 4))
def test_allocation_matches_brute_force(data, layers):
    sizes = data.draw(st.lists(st.integers(1, 300), min_size=layers, max_size=layers))
    costs = [{b: data.draw(st.floats(0, 100)) for b in BITS} for _ in range(layers)]
    budget = data.draw(st.integers(2 * sum(sizes), 8 * sum(sizes)))
    best = min((sum(c[b] for c, b in zip(costs, bits, strict=True)), bits)
               for bits in itertools.product(BITS, repeat=layers)
               if sum(b * n for b, n in zip(bits, sizes, strict=True)) <= budget)
    got = allocate(costs, sizes, budget)
    assert got.cost == pytest.approx(best[0], abs=1e-9)
    assert got.size_bits <= budget
    assert sum(costs[i][b] for i, b in enumerate(got.bits)) == pytest.approx(got.cost)
    # the front is Pareto: sizes rise, costs fall
    front = frontier(costs, sizes)
    assert all(a.size_bits < b.size_bits and a.cost > b.cost for a, b in zip(front, front[1:]))


def test_select_keeps_uniform_unless_a_paired_sign_test_says_otherwise():
    """Closed form of the rule: wins - losses > 1.645 * sqrt(wins + losses), else the last."""
    def case(wins: int, losses: int, both: int = 50) -> np.ndarray:
        # per sample [candidate, uniform] right or wrong
        rows = [(1, 0)] * wins + [(0, 1)] * losses + [(1, 1)] * both
        return np.array(rows, dtype=bool).T

    cand, uni = case(4, 0)  # 4 > 1.645 * 2 = 3.29: significant
    assert select([cand, uni]) == 0
    cand, uni = case(3, 0)  # 3 > 1.645 * sqrt(3) = 2.85: significant
    assert select([cand, uni]) == 0
    cand, uni = case(2, 0)  # 2 < 1.645 * sqrt(2) = 2.33: chance
    assert select([cand, uni]) == 1
    cand, uni = case(12, 4)  # 8 > 1.645 * 4 = 6.58
    assert select([cand, uni]) == 0
    cand, uni = case(10, 4)  # 6 < 1.645 * sqrt(14) = 6.16
    assert select([cand, uni]) == 1
    # of two that pass, the more accurate; at equal accuracy the earlier (cheaper curvature)
    a, base = case(12, 4)
    b = a.copy()
    b[np.flatnonzero(~a)[0]] = True
    assert select([a, b, base]) == 1
    assert select([a, a.copy(), base]) == 0


def test_costs_weight_error_by_trace_per_weight():
    errors = [{b: 2.0 ** -b for b in BITS}, {b: 4.0 ** -b for b in BITS}]
    costs = costs_from([10.0, -3.0], errors, [5, 7])
    assert costs[0][4] == pytest.approx(10 / 5 * 2.0 ** -4, rel=1e-6)
    assert costs[1][2] < 1e-9 and costs[1][2] > costs[1][3]  # negative trace: tie-break only


def test_budget_forms_and_refusals():
    assert budget_bits(0.5, [10, 6]) == 64
    assert budget_bits(100, [10, 6]) == 100
    with pytest.raises(ValueError, match=r"^budget must be a fraction in \(0, 1\] of the 8-bit "
                                         r"size, not 1.5$"):
        budget_bits(1.5, [10])
    with pytest.raises(TypeError, match=r"^budget must be a fraction .* not '42%'$"):
        budget_bits("42%", [10])
    with pytest.raises(ValueError, match=r"^budget must allow at least 32 weight bits \(25.0 % "
                                         r"of the 8-bit size, 2 bits per weight\), not 20"):
        allocate([{b: 1.0 / b for b in BITS}], [16], 20)


# -- the API -------------------------------------------------------------------------------------
def test_compile_auto_reports_every_layer():
    rng = np.random.default_rng(5)
    net = random_network(rng, [20, 24, 4])
    graph = _as_nir(net)
    x = spikes(rng, 64, 20, 20, p=0.3)
    float_net = load_network(graph, dt=1e-3, exporter="snntorch")
    y = run_float(float_net, x).sum(axis=1).argmax(axis=1)
    image = spikeforge.compile(graph, weight_bits="auto", calibration=x, labels=y, budget=0.42,
                               dt=1e-3, exporter="snntorch")
    plan = image.meta["mixed_precision"]
    n = [20 * 24, 24 * 4]
    assert [layer.weight_bits for layer in image.layers] == [r["bits"] for r in plan["layers"]]
    assert plan["size_bits"] == sum(b * k for b, k in zip(
        [r["bits"] for r in plan["layers"]], n, strict=True)) <= int(0.42 * 8 * sum(n))
    for index, (row, layer) in enumerate(zip(plan["layers"], image.layers, strict=True)):
        assert set(row) >= {"name", "trace", "bits", "scale", "clip", "size_bits"}
        assert row["scale"] == layer.scale
        np.testing.assert_allclose(neuron_scales(image, index).max(), layer.scale)
    acc = plan["accuracy"]
    assert acc["float_accuracy"] == 1.0 and acc["samples"] == 64  # labels are its predictions
    # the curvature's best candidates and the widest uniform width that fits (last), run on
    # the labels; the uniform width stays unless another is better by more than chance
    assert plan["selected_by"] == "calibration accuracy"
    tried = plan["candidates"]
    assert len(set(tried[-1]["bits"])) == 1
    assert all(c["size_bits"] <= plan["budget_bits"] for c in tried)
    (chosen,) = [c for c in tried if c["selected"]]
    assert [r["bits"] for r in plan["layers"]] == chosen["bits"]
    assert acc["quant_accuracy"] == chosen["calibration_accuracy"]
    assert chosen is tried[-1] or chosen["calibration_accuracy"] > tried[-1][
        "calibration_accuracy"]
    back = json.loads(json.dumps(plan))
    assert back["layers"][0]["name"] == image.layers[0].name


def _as_nir(net: Network) -> nir.NIRGraph:
    """A NIR graph carrying `net` exactly (Affine + LIF with r = tau/dt, dt = 1e-3)."""
    dt = 1e-3
    nodes = {"input": nir.Input(input_type=np.array([net.n_inputs]))}
    edges, prev = [], "input"
    for i, layer in enumerate(net.layers):
        tau = dt / (1 - layer.beta)
        nodes[f"fc{i}"] = nir.Affine(weight=layer.weight, bias=layer.bias)
        nodes[f"lif{i}"] = nir.LIF(tau=tau, r=tau / dt, v_leak=np.zeros(layer.n_out),
                                   v_threshold=layer.threshold, v_reset=np.zeros(layer.n_out))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type=np.array([net.n_outputs]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def test_auto_without_budget_fits_the_device():
    """Without a budget, the largest allocation the device holds: this network does not fit an
    iCE40HX8K at 8 bits."""
    from spikeforge.compiler.mapper import FitError

    rng = np.random.default_rng(6)
    net = random_network(rng, [64, 200, 10])
    graph = _as_nir(net)
    x = spikes(rng, 32, 10, 64)
    with pytest.raises(FitError):
        spikeforge.compile(graph, weight_bits=8, device="iCE40HX8K", calibration=x, dt=1e-3,
                           exporter="snntorch")
    image = spikeforge.compile(graph, weight_bits="auto", device="iCE40HX8K", calibration=x,
                               dt=1e-3, exporter="snntorch")
    plan = image.meta["mixed_precision"]
    assert plan["budget_source"] == "device" and plan["size_fraction"] < 1.0
    assert image.config.device == "iCE40HX8K"


@pytest.mark.parametrize("kwargs, kind, message", [
    (dict(weight_bits="auto"), ValueError,
     r"^weight_bits='auto' must have calibration spikes .* not calibration=None$"),
    (dict(weight_bits="auto", calib=True, labels=np.zeros(5, np.int64)), ValueError,
     r"^labels must be one per calibration sample \(8\), not shape \(5,\)$"),
    (dict(weight_bits="auto", calib=True, labels=np.zeros(8)), TypeError,
     r"^labels must be an integer array, not float64 array$"),
    (dict(weight_bits="auto", calib=True, labels=np.full(8, 3)), ValueError,
     r"^labels must be classes 0..2, not 3$"),
    (dict(weight_bits="auto", calib=True, budget=0.2), ValueError,
     r"^budget must allow at least 90 weight bits \(25.0 % of the 8-bit size, 2 bits per "
     r"weight\), not 72 \(20.0 %\)$"),
    (dict(weight_bits=4, calib=True, budget=0.5), ValueError,
     r"^budget is for weight_bits='auto', not 4$"),
    (dict(weight_bits="four"), ValueError, r"^weight_bits must be 2..16, a dict per layer or "
                                           r"'auto', not 'four'$"),
    (dict(weight_bits=8, labels=np.zeros(8, np.int64)), ValueError,
     r"^labels must come with calibration spikes, not alone$"),
])
def test_bad_input_is_refused_in_one_line(kwargs, kind, message):
    rng = np.random.default_rng(8)
    net = random_network(rng, [6, 5, 3])
    x = spikes(rng, 8, 10, 6)
    calib = x if kwargs.pop("calib", False) else None
    with pytest.raises(kind, match=message):
        plan_weight_bits(net, kwargs.pop("weight_bits"), calib, kwargs.pop("labels", None),
                         kwargs.pop("budget", None))


# -- the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def cli_files(tmp_path):
    graph = lif_nir([12, 10, 4], seed=3)
    nir.write(tmp_path / "net.nir", graph)
    rng = np.random.default_rng(2)
    x = spikes(rng, 24, 15, 12, p=0.5)
    np.savez(tmp_path / "calib.npz", spikes=x)
    np.save(tmp_path / "y.npy", rng.integers(0, 4, 24))
    return tmp_path


def test_cli_compile_auto_json(cli_files):
    proc = run_cli("compile", cli_files / "net.nir", "-o", cli_files / "m.sfi", "--dt", "1e-3",
                   "--exporter", "snntorch",
                   "--weight-bits", "auto", "--calibration", cli_files / "calib.npz",
                   "--labels", cli_files / "y.npy", "--budget", "42%", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    plan = out["mixed_precision"]
    assert plan["budget_bits"] == int(0.42 * 8 * (12 * 10 + 10 * 4))
    assert [row["bits"] for row in plan["layers"]] == [layer["weight_bits"]
                                                       for layer in out["layers"]]
    assert 0.0 <= plan["accuracy"]["quant_accuracy"] <= 1.0
    proc = run_cli("inspect", cli_files / "m.sfi")
    assert proc.returncode == 0 and "mixed precision" in proc.stdout and "trace" in proc.stdout


@pytest.mark.parametrize("extra, needles", [
    (["--weight-bits", "auto"], ["calibration"]),
    (["--weight-bits", "auto", "--calibration", "calib.npz", "--budget", "10%"],
     ["budget must allow at least", "25.0 %"]),
    (["--weight-bits", "auto", "--calibration", "calib.npz", "--budget", "lots"],
     ["--budget must be a percentage"]),
    (["--weight-bits", "auto", "--calibration", "calib.npz", "--labels", "short.npy"],
     ["labels must be one per calibration sample (24)"]),
    (["--weight-bits", "auto", "--calibration", "calib.npz", "--labels", "float.npy"],
     ["labels must be an integer array"]),
])
def test_cli_bad_input_one_line(cli_files, extra, needles):
    np.save(cli_files / "short.npy", np.zeros(3, np.int64))
    np.save(cli_files / "float.npy", np.zeros(24))
    args = [a if not a.endswith((".npz", ".npy")) else cli_files / a for a in extra]
    proc = run_cli("compile", cli_files / "net.nir", "-o", cli_files / "bad.sfi", "--dt",
                   "1e-3", "--exporter", "snntorch", *args)
    assert_one_line_error(proc, *needles)
    assert not (cli_files / "bad.sfi").exists()

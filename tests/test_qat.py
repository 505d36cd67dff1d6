"""spikeforge.qat: quantisation-aware fine-tuning (spikeforge/finetune.py).

Oracles: snnTorch's own forward pass against the golden model on a network the image holds
exactly, the straight-through estimator's closed-form gradient, the quantizer's integers (the
compiled image must hold the trained grid), `spikeforge.compile(weight_bits="auto")`'s own
allocation, and held-out accuracy before and after.
"""

from __future__ import annotations

import numpy as np
import pytest
import snntorch as snn
import torch
from torch import nn

import spikeforge
from spikeforge import digits as D
from spikeforge.compiler.scales import neuron_scales, weight_scales
from spikeforge.finetune import fake_quantize
from spikeforge.sim import golden


def _net(sizes, *, beta=1.0, threshold=0.9, seed=0, alpha=None):
    torch.manual_seed(seed)

    def neuron(**kw):
        if alpha is None:
            return snn.Leaky(beta=beta, threshold=threshold, init_hidden=True, **kw)
        return snn.Synaptic(alpha=alpha, beta=beta, threshold=threshold, init_hidden=True, **kw)

    mods = []
    for a, b in zip(sizes, sizes[1:]):
        mods += [nn.Linear(a, b), neuron()]
    mods[-1] = neuron(output=True)
    return nn.Sequential(*mods)


def _spikes(rng, batch, steps, n, p=0.4):
    return (rng.random((batch, steps, n)) < p).astype(np.uint8)


def _linears(model):
    return [m for m in model if isinstance(m, nn.Linear)]


def _neurons(model):
    return [m for m in model if isinstance(m, (snn.Leaky, snn.Synaptic))]


def test_golden_runs_the_fake_quantised_network_exactly():
    """Weights on a 3-bit grid of step 1/8 whose largest level is used in every row, beta = 1
    (no leak), so every membrane is a multiple of 1/8 and float32 holds it exactly: the
    fake-quantised model qat returns (biases and thresholds snapped to the neuron's grid) spikes
    in snnTorch exactly as the golden model runs its compiled image."""
    rng = np.random.default_rng(3)
    model = _net([12, 10, 4], threshold=0.9)
    with torch.no_grad():
        for lin in _linears(model):
            q = rng.integers(-3, 4, lin.weight.shape)
            q[:, 0] = rng.choice([-3, 3], q.shape[0])
            lin.weight.copy_(torch.as_tensor(q / 8.0))
            lin.bias.copy_(torch.as_tensor(rng.normal(0, 0.1, lin.bias.shape)))
    x = _spikes(rng, 16, 12, 12)
    y = rng.integers(0, 4, 16)
    tuned = spikeforge.qat(model, x, y, weight_bits=3, epochs=0)
    for lin in _linears(tuned):  # the grid is kept; biases move onto it
        np.testing.assert_array_equal(lin.weight.detach().numpy() * 8,
                                      np.rint(lin.weight.detach().numpy() * 8))
        np.testing.assert_array_equal(lin.bias.detach().numpy() * 8,
                                      np.rint(lin.bias.detach().numpy() * 8))
    for neuron in _neurons(tuned):
        np.testing.assert_array_equal(neuron.threshold.numpy(), np.full(neuron.threshold.shape,
                                                                        7 / 8, np.float32))
    image = spikeforge.compile(tuned, weight_bits=tuned.spikeforge_qat["weight_bits"])
    for index in range(len(image.layers)):
        np.testing.assert_array_equal(neuron_scales(image, index), 1 / 8)
    np.testing.assert_array_equal(golden.run(image, x).spikes, D.forward(tuned, x))


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_compiled_image_holds_the_trained_grid(alpha):
    """After fine-tuning (Leaky, or Synaptic with `alpha`), compiling at the same widths gives
    integers whose values in the model's units are the tuned weights, biases and thresholds
    (float32 precision)."""
    rng = np.random.default_rng(4)
    model = _net([16, 12, 4], beta=0.875, alpha=alpha)
    x = _spikes(rng, 48, 10, 16)
    y = rng.integers(0, 4, 48)
    tuned = spikeforge.qat(model, x, y, weight_bits={0: 2, 1: 3}, epochs=2, batch=16)
    assert tuned.spikeforge_qat["weight_bits"] == {0: 2, 1: 3}
    assert len(tuned.spikeforge_qat["loss"]) == 2
    assert not torch.equal(_linears(tuned)[0].weight, _linears(model)[0].weight)
    image = spikeforge.compile(tuned, weight_bits=tuned.spikeforge_qat["weight_bits"])
    for index, (layer, lin, neuron) in enumerate(zip(image.layers, _linears(tuned),
                                                     _neurons(tuned), strict=True)):
        s = neuron_scales(image, index)
        qmax = (1 << (layer.weight_bits - 1)) - 1
        assert np.abs(layer.weights).max(axis=1).tolist() == [qmax] * layer.n_out
        for ints, value in ((layer.weights, lin.weight), (layer.bias, lin.bias),
                            (layer.threshold, neuron.threshold)):
            got = ints * (s[:, None] if ints.ndim == 2 else s)
            np.testing.assert_allclose(got, value.detach().double().numpy(), rtol=1e-6,
                                       atol=1e-7)


def test_straight_through_gradient_is_the_closed_form():
    """value: s * clip(round(W / s), -qmax, qmax); d/dW of sum(C * W_fq) = C inside the
    clipping range [-qmax s, qmax s] and 0 outside; with the compiler's MSE scales."""
    rng = np.random.default_rng(5)
    w_np = rng.normal(0, 1, (6, 40))
    scale, _ = weight_scales(w_np, 3, scales="neuron", clip="mse")
    w = torch.tensor(w_np, requires_grad=True)
    c = torch.tensor(rng.normal(0, 1, w_np.shape))
    out = fake_quantize(w, torch.tensor(scale), -3, 3)
    expect = scale[:, None] * np.clip(np.rint(w_np / scale[:, None]), -3, 3)
    np.testing.assert_allclose(out.detach().numpy(), expect, rtol=0, atol=1e-12)
    (c * out).sum().backward()
    inside = np.abs(w_np) <= 3 * scale[:, None]
    assert 0 < inside.mean() < 1  # the MSE clip cuts some weights off
    np.testing.assert_array_equal(w.grad.numpy(), np.where(inside, c.numpy(), 0.0))


def test_auto_is_the_allocation_compile_chooses():
    rng = np.random.default_rng(6)
    model = _net([16, 20, 4], beta=0.875)
    x = _spikes(rng, 40, 8, 16)
    y = rng.integers(0, 4, 40)
    image = spikeforge.compile(model, weight_bits="auto", calibration=x, labels=y, budget=0.5)
    chosen = {i: row["bits"] for i, row in enumerate(image.meta["mixed_precision"]["layers"])}
    tuned = spikeforge.qat(model, x, y, weight_bits="auto", budget=0.5, epochs=1, batch=20)
    assert tuned.spikeforge_qat["weight_bits"] == chosen


@pytest.mark.parametrize("kwargs, kind, message", [
    (dict(model="net.pt"), TypeError,
     r"^model must be a torch.nn.Module \(snnTorch\), not str$"),
    (dict(labels=np.zeros(3, np.int64)), ValueError,
     r"^labels must be one per calibration sample \(8\), not shape \(3,\)$"),
    (dict(lr=0.0), ValueError, r"^lr must be a positive number, not 0.0$"),
    (dict(epochs=-1), ValueError, r"^epochs must be an integer >= 0, not -1$"),
    (dict(weight_bits="4"), ValueError,
     r"^weight_bits must be 2..16, a dict per layer or 'auto', not '4'$"),
    (dict(budget=0.5), ValueError, r"^budget is for weight_bits='auto', not 4$"),
    (dict(scales="row"), ValueError,
     r"^scales must be one of \('neuron', 'layer'\), not 'row'$"),
])
def test_bad_input_is_refused_in_one_line(kwargs, kind, message):
    rng = np.random.default_rng(7)
    args = dict(model=_net([6, 5, 3]), spikes=_spikes(rng, 8, 4, 6),
                labels=rng.integers(0, 3, 8), weight_bits=4)
    args.update(kwargs)
    with pytest.raises(kind, match=message):
        spikeforge.qat(args.pop("model"), args.pop("spikes"), args.pop("labels"), **args)


def test_recurrent_layers_are_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), snn.RLeaky(beta=0.9, linear_features=5,
                                                        init_hidden=True, output=True))
    rng = np.random.default_rng(8)
    with pytest.raises(ValueError, match=r"^qat must have feed-forward nn.Linear layers with "
                                         r"spiking neurons, not '0' \(recurrent"):
        spikeforge.qat(model, _spikes(rng, 4, 3, 6), rng.integers(0, 5, 4), weight_bits=4)


@pytest.mark.slow
@pytest.mark.parametrize("bits", [2, 3])
def test_qat_does_not_lose_held_out_accuracy_at_low_widths(bits):
    """Digits, 64-64-10 trained 8 epochs (seed 0): the golden model's held-out accuracy after
    3 epochs of QAT at `bits` is at least that of compiling the float model at `bits`."""
    torch.set_num_threads(1)
    data = D.load_digits()
    model = D.build_model(hidden=64)
    D.train(model, data, epochs=8)
    calib = data.train_spikes[:256]

    def held_out(image) -> float:
        return float((D.predict(golden.run(image, data.test_spikes).spikes)
                      == data.test_labels).mean())

    before = held_out(spikeforge.compile(model, weight_bits=bits, calibration=calib))
    tuned = spikeforge.qat(model, data.train_spikes, data.train_labels, weight_bits=bits,
                           epochs=3)
    after = held_out(spikeforge.compile(tuned, weight_bits=bits, calibration=calib))
    assert after >= before

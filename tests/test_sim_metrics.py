"""NeuroBench's metrics (sim/metrics.py, spikeforge.metrics) against closed forms: a network
worked out by hand, brute-force loops over random images and spike trains, and the widths of
the gateware's own parameter word."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge import protocol
from spikeforge.image import CoreConfig, HwConfig, Image, LayerParams
from spikeforge.measure import MetricsError, link_bytes
from spikeforge.sim import golden
from spikeforge.sim import metrics as M

from .strategies import conv_layer, conv_specs, images


def hand_image() -> Image:
    """2 inputs -> 3 neurons, no decay, subtract reset, thresholds 1:
    I0 = x0, I1 = 2 x0 - x1 + 1, I2 = -2."""
    layer = LayerParams("fc", np.array([[1, 0], [2, -1], [0, 0]]), bias=np.array([0, 1, -2]),
                        threshold=np.array([1, 1, 1]), weight_bits=3, v_bits=6, acc_bits=4,
                        decay_mode="none")
    return Image(2, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, 3, 1),)))


HAND_SPIKES = np.array([[[1, 1], [0, 1]]], dtype=np.uint8)  # one sample, two steps


def test_hand_worked_network():
    """By hand: neuron 0 sits at v = 1 (not above 1); neuron 1 reaches 2 and spikes at step 0,
    then 2 + 0 - 1 + 1 - 1 = 1; neuron 2 goes -2, -4."""
    image = hand_image()
    got = spikeforge.metrics(image, HAND_SPIKES, labels=np.array([1]))
    # 3 x 2 weights of 3 bits; per neuron threshold 5 bits + bias 2 bits (0, 1, -2)
    assert got["footprint"] == math.ceil((6 * 3 + 3 * (5 + 2)) / 8) == 5
    assert got["parameter_count"] == 6 + 3
    assert got["connection_sparsity"] == 3 / 6
    # step 0: x0 meets 2 non-zero weights, x1 one; step 1: x1 one
    assert got["synaptic_operations"] == {"Effective_MACs": 0.0, "Effective_ACs": 4.0,
                                          "Dense": 12.0}
    assert got["activation_sparsity"] == 1 - 1 / 6
    assert got["membrane_updates"] == 3 + 2  # all at step 0; neurons 1 and 2 change at step 1
    assert got["classification_accuracy"] == 1.0  # neuron 1 spiked most
    hw = got["hardware"]
    assert hw["sops_per_sample"] == (2 + 1) * 3  # the cores: every neuron per input event
    # CLEAR 7+8; STEP_BITMAP 7+1 (AER: 7+2*2) / 8+2*1; STEP_BITMAP 7+1 (AER: 7+2) / 8;
    # STATUS once, after the last step: 7 / 8+payload
    status = 7 + 8 + protocol.status_length(1)
    assert hw["host_link_bytes_per_sample"] == 15 + (8 + 10) + (8 + 8) + status
    assert hw["cycles_per_sample"] is None and hw["latency_s"] is None
    assert got["detail"]["footprint_bits"] == {"weights": 18, "parameters": 21}


def test_link_bytes_split_long_steps_into_push_frames():
    """A payload of 8 bytes holds 4 addresses: 10 events go as PUSH 4, PUSH 4, STEP 2."""
    x = np.zeros((1, 1, 10), dtype=np.uint8)
    x[0, 0] = 1
    out = np.array([[[1, 1, 0]]], dtype=np.uint8)
    status = 7 + 8 + protocol.status_length(2)
    expect = 15 + 2 * (7 + 8 + 8) + (7 + 4 + 8 + 4) + status
    assert link_bytes(x, out, 2, max_payload=8).tolist() == [expect]
    # exactly one frame's worth stays in the STEP
    x[0, 0, 8:] = 0
    assert link_bytes(x, out, 2, max_payload=16).tolist() == [15 + 7 + 16 + 8 + 4 + status]
    # a second, silent step: STEP 7 / 8, STATUS
    x2 = np.concatenate([x, np.zeros_like(x)], axis=1)
    out2 = np.concatenate([out, np.zeros_like(out)], axis=1)
    assert link_bytes(x2, out2, 2, max_payload=16).tolist() == [
        15 + 7 + 16 + 8 + 4 + status + 15 + status]


def spike_trains(n_inputs: int):
    @st.composite
    def draw(draw):
        batch, steps = draw(st.integers(1, 3)), draw(st.integers(1, 6))
        density = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        return (rng.random((batch, steps, n_inputs)) < density).astype(np.uint8)
    return draw()


def brute_force(image: Image, x: np.ndarray, run) -> dict:
    """NeuroBench's definitions as loops over samples, steps, neurons and synapses."""
    batch, steps, _ = x.shape
    acs = 0
    for b in range(batch):
        source = x[b]
        for k, layer in enumerate(image.layers):
            s = run.layer_spikes[k][b]
            for t in range(steps):
                for i in range(layer.n_out):
                    for j in range(layer.n_in):
                        acs += int(source[t, j] and layer.weights[i, j] != 0)
                    if layer.recurrent and t > 0:
                        for j in range(layer.n_out):
                            acs += int(s[t - 1, j] and layer.rec_weights[i, j] != 0)
            source = s
    updates = 0
    for v in run.membranes:
        for b in range(batch):
            for t in range(steps):
                for i in range(v.shape[2]):
                    updates += 1 if t == 0 else int(v[b, t, i] != v[b, t - 1, i])
    spikes = sum(int(s.sum()) for s in run.layer_spikes)
    cells = batch * steps * sum(layer.n_out for layer in image.layers)
    weights = [w for layer in image.layers for w in layer.all_weights().ravel()]
    return {"Effective_ACs": acs / batch, "membrane_updates": updates / batch,
            "activation_sparsity": (cells - spikes) / cells,
            "Dense": float(steps * len(weights)),
            "connection_sparsity": sum(w == 0 for w in weights) / len(weights),
            "parameter_count": len(weights) + sum(layer.n_out for layer in image.layers)}


@settings(max_examples=40, deadline=None)
@given(image=images(max_layers=3, max_width=8), data=st.data())
def test_metrics_equal_brute_force(image, data):
    x = data.draw(spike_trains(image.n_inputs))
    run = golden.run(image, x, record=True)
    want = brute_force(image, x, run)
    got = spikeforge.metrics(image, x)
    assert got["synaptic_operations"]["Effective_ACs"] == want["Effective_ACs"]
    assert got["synaptic_operations"]["Dense"] == want["Dense"]
    assert got["synaptic_operations"]["Effective_MACs"] == 0.0
    assert got["membrane_updates"] == want["membrane_updates"]
    assert got["activation_sparsity"] == pytest.approx(want["activation_sparsity"], abs=1e-12)
    assert got["connection_sparsity"] == pytest.approx(want["connection_sparsity"], abs=1e-12)
    assert got["parameter_count"] == want["parameter_count"]
    json.dumps(got, allow_nan=False)  # one valid JSON object


@settings(max_examples=40, deadline=None)
@given(image=images(max_layers=3, max_width=8))
def test_parameter_widths_are_the_gateware_parameter_word(image):
    """The footprint counts each per-neuron parameter at the width of the core's parameter
    word (hdl.core.param_layout), and each weight at its width."""
    from spikeforge.hdl.core import param_layout

    params = 0
    for layer in image.layers:
        layout = param_layout(layer)
        widths = {name: member.width for name, member in layout}
        assert M.param_bits(layer) == widths
        params += layer.n_out * layout.size
    weights = sum(layer.weight_bits * layer.all_weights().size for layer in image.layers)
    assert M.footprint(image) == -(-(weights + params) // 8)


def test_accuracy_against_labels():
    spikes = np.zeros((4, 3, 3), dtype=np.uint8)
    spikes[0, :, 2] = 1  # class 2
    spikes[1, 0, 1] = 1  # class 1
    spikes[2, :2, 0] = spikes[2, :2, 1] = 1  # a tie goes to the lower class: 0
    # sample 3 is silent: class 0
    assert M.classification_accuracy(spikes, np.array([2, 1, 0, 0])) == 1.0
    assert M.classification_accuracy(spikes, np.array([2, 1, 1, 1])) == 0.5


# -- bad input -----------------------------------------------------------------------------------

def test_labels_that_do_not_match_the_input_are_refused():
    with pytest.raises(MetricsError, match=r"^labels must be one per sample, shape \(1,\), "
                                           r"not \(2,\)$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, labels=np.array([0, 1]))
    with pytest.raises(MetricsError, match=r"^labels must be classes 0\.\.2, not 7$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, labels=np.array([7]))
    with pytest.raises(MetricsError, match=r"^labels must be integers, not dtype float64$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, labels=np.array([0.5]))


def test_unavailable_engines_are_refused():
    with pytest.raises(MetricsError, match=r"^engine must be one of golden, rtl, board, "
                                           r"not 'loihi'$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, engine="loihi")
    with pytest.raises(MetricsError, match=r"^engine 'board' needs a port"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, engine="board")
    with pytest.raises(MetricsError, match=r"^a port is for engine 'board', not 'golden'$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, port="sim")


def test_build_reports_give_the_latency_clock(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"fmax_mhz": 50.0}))
    got = spikeforge.metrics(hand_image(), HAND_SPIKES, build=tmp_path)
    assert got["hardware"]["clock_hz"] == 50e6
    with pytest.raises(MetricsError, match=r"no such build report$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, build=tmp_path / "nothing")
    (tmp_path / "report.json").write_text(json.dumps({"fmax_mhz": None}))
    with pytest.raises(MetricsError, match=r"the build has no Fmax \(None\)$"):
        spikeforge.metrics(hand_image(), HAND_SPIKES, build=tmp_path)


@settings(max_examples=15, deadline=None)
@given(spec=conv_specs(max_channels=3, max_map=7), seed=st.integers(0, 2**31))
def test_conv_metrics_equal_brute_force(spec, seed):
    """A convolution's event meets each non-zero kernel tap at each position it reaches; the
    dense count is every input at every position it reaches; its weights are its kernel."""
    rng = np.random.default_rng(seed)
    layer = conv_layer(rng, "c", spec)
    image = Image(spec.n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, spec.n_out, 1),)))
    x = (rng.random((2, 3, spec.n_in)) < 0.4).astype(np.uint8)
    k, s, pad = spec.kernel, spec.stride, spec.padding
    conv_h, conv_w = spec.conv_shape
    acs = dense = 0
    for c in range(spec.in_channels):
        for y in range(spec.height):
            for x_ in range(spec.width):
                events = int(x[:, :, (c * spec.height + y) * spec.width + x_].sum())
                for oy in range(conv_h):
                    for ox in range(conv_w):
                        i, j = y - oy * s + pad, x_ - ox * s + pad
                        if 0 <= i < k and 0 <= j < k:
                            dense += 3 * spec.out_channels
                            tap = (c * k + i) * k + j
                            acs += events * int(np.count_nonzero(layer.weights[:, tap]))
    got = spikeforge.metrics(image, x)
    assert got["synaptic_operations"]["Effective_ACs"] == acs / 2
    assert got["synaptic_operations"]["Dense"] == dense
    assert got["parameter_count"] == layer.weights.size + spec.n_out
    assert got["connection_sparsity"] == pytest.approx(
        np.count_nonzero(layer.weights == 0) / layer.weights.size, abs=1e-12)

"""The golden model against closed forms and a scalar re-statement of docs/neuron.md."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.image import CoreConfig, HwConfig, Image, LayerParams
from spikeforge.sim import encode, golden

from .strategies import images


def scalar_reference(image, spikes):
    """docs/neuron.md, one neuron and one step at a time, in Python integers."""
    out = []
    for sample in spikes:
        v = [[0] * layer.n_out for layer in image.layers]
        s = [[0] * layer.n_out for layer in image.layers]
        trace = []
        for x in sample:
            x = [int(e) for e in x]
            for li, layer in enumerate(image.layers):
                prev = s[li]
                new_s, new_v = [], []
                lo, hi = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1
                for i in range(layer.n_out):
                    acc = sum(int(layer.weights[i, j]) for j in range(layer.n_in) if x[j])
                    if layer.recurrent:
                        acc += sum(int(layer.rec_weights[i, j]) for j in range(layer.n_out)
                                   if prev[j])
                    current = acc + int(layer.bias[i])
                    theta = int(layer.threshold[i])
                    vv = v[li][i] if layer.reset == "subtract" else v[li][i] * (1 - prev[i])
                    if layer.decay_mode == "shift":
                        vv = vv - (vv >> int(layer.decay_shift[i]))
                    elif layer.decay_mode == "mul":
                        vv = (vv * int(layer.decay_mul[i])) >> layer.decay_frac
                    u = vv + current - (theta * prev[i] if layer.reset == "subtract" else 0)
                    u = min(max(u, lo), hi)
                    new_v.append(u)
                    new_s.append(int(u > theta))
                v[li], s[li] = new_v, new_s
                x = new_s
            trace.append(s[-1])
        out.append(trace)
    return np.array(out, dtype=np.uint8)


@settings(max_examples=40, deadline=None)
@given(images(max_width=7), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**31))
def test_matches_scalar_statement(image, steps, batch, seed):
    rng = np.random.default_rng(seed)
    spikes = (rng.random((batch, steps, image.n_inputs)) < 0.5).astype(np.uint8)
    result = golden.run(image, spikes, record=True)
    np.testing.assert_array_equal(result.spikes, scalar_reference(image, spikes))
    for li, layer in enumerate(image.layers):
        assert result.membranes[li].shape == (batch, steps, layer.n_out)
        np.testing.assert_array_equal(result.final_membranes[li], result.membranes[li][:, -1])
        np.testing.assert_array_equal(result.spike_counts[:, li],
                                      result.layer_spikes[li].sum(axis=(1, 2)))


def _one_neuron(weight, theta, *, k=None, v_bits=16, reset="subtract"):
    mode = "none" if k is None else "shift"
    layer = LayerParams("n", [[weight]], bias=[0], threshold=[theta], weight_bits=8,
                        v_bits=v_bits, acc_bits=9, reset=reset, decay_mode=mode,
                        decay_shift=None if k is None else [k])
    return Image(1, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, 1, 1),)))


def test_integrate_and_fire_closed_form():
    """beta = 1, subtract reset, constant drive w: the spike count after T steps is
    floor((T*w - 1) / theta) for w <= theta (v never exceeds 2*theta)."""
    for w, theta, steps in [(3, 10, 50), (7, 7, 20), (1, 5, 33), (5, 12, 100)]:
        r = golden.run(_one_neuron(w, theta), np.ones((1, steps, 1)))
        assert r.spike_counts[0, 0] == (steps * w - 1) // theta


def test_shift_decay_closed_form():
    """v[t] = v - (v >> k) + w with no spikes converges to the fixed point of the floor map."""
    r = golden.run(_one_neuron(64, 10_000, k=2), np.ones((1, 40, 1)), record=True)
    v = 0
    for t in range(40):
        v = v - (v >> 2) + 64
        assert r.membranes[0][0, t, 0] == v
    assert r.spike_counts.sum() == 0


def test_saturation_is_counted():
    r = golden.run(_one_neuron(100, 126, v_bits=8), np.ones((1, 10, 1)), record=True)
    assert r.membranes[0].max() <= 127
    assert r.saturations.sum() > 0


def test_counters_count_events_times_fanout(small_image):
    spikes = encode.rate(np.full((3, small_image.n_inputs), 0.4), 12, seed=3)
    r = golden.run(small_image, spikes, record=True)
    layer0 = small_image.layers[0]
    rec_events = np.concatenate([np.zeros((3, 1, layer0.n_out), np.uint8),
                                 r.layer_spikes[0][:, :-1]], axis=1).sum(axis=(1, 2))
    np.testing.assert_array_equal(r.events_in[:, 0], spikes.sum(axis=(1, 2)) + rec_events)
    np.testing.assert_array_equal(r.sops[:, 0], r.events_in[:, 0] * layer0.n_out)
    np.testing.assert_array_equal(r.events_in[:, 1], r.layer_spikes[0].sum(axis=(1, 2)))


def test_encoders():
    x = np.array([[0.0, 1.0, 0.5]])
    spikes = encode.rate(x, 4000, seed=1)
    assert spikes[0, :, 0].sum() == 0 and spikes[0, :, 1].sum() == 4000
    assert abs(spikes[0, :, 2].mean() - 0.5) < 0.03
    np.testing.assert_array_equal(spikes, encode.rate(x, 4000, seed=1))
    lat = encode.latency(x, 11)
    assert lat[0, :, 0].sum() == 0 and lat[0, 0, 1] == 1 and lat[0, 5, 2] == 1
    assert lat.sum() == 2

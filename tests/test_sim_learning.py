"""The learning golden model against a scalar, stateful re-statement of docs/learning.md.

The reference steps a literal 16-bit Galois LFSR per core (no tables), walks each core's
learning phase in the documented order, and updates one synapse at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.image import ImageError
from spikeforge.lfsr import LFSR_TAPS, lfsr_initial_state
from spikeforge.sim import golden

from .strategies import random_image


class Lfsr:
    def __init__(self, state: int):
        self.state = state

    def step(self) -> int:
        value = self.state
        lsb = self.state & 1
        self.state >>= 1
        if lsb:
            self.state ^= LFSR_TAPS
        return value


def reference(image, spikes, modulators):
    e = image.learning[0]
    li = e.layer
    layer = image.layers[li]
    w = [[int(v) for v in row] for row in image.layers[li].weights]
    wmin, wmax = -(1 << (layer.weight_bits - 1)), (1 << (layer.weight_bits - 1)) - 1
    tmax = (1 << e.trace_bits) - 1
    cores = [(c, core) for c, core in enumerate(image.config.cores) if core.layer == li]
    lfsrs = {c: Lfsr(lfsr_initial_state(e.seed, c)) for c, _ in cores}

    def rnd(value, shift, c):  # one weight update of core c: its LFSR steps
        r = lfsrs[c].step()
        if e.stochastic and shift:
            value += r & ((1 << shift) - 1)
        return value >> shift

    def clip(v):
        return min(max(v, wmin), wmax)

    out = []
    for b, sample in enumerate(spikes):
        v = [[0] * lay.n_out for lay in image.layers]
        s = [[0] * lay.n_out for lay in image.layers]
        x_tr, y_tr = [0] * layer.n_in, [0] * layer.n_out
        trace = []
        for t, x in enumerate(sample):
            x = [int(q) for q in x]
            for lj, lay in enumerate(image.layers):
                weights = w if lj == li else lay.weights.tolist()
                acc = [sum(weights[i][j] for j in range(lay.n_in) if x[j])
                       for i in range(lay.n_out)]
                new_v, new_s = [], []
                for i in range(lay.n_out):
                    vv = v[lj][i]
                    prev = s[lj][i]
                    if lay.reset == "zero":
                        vv *= 1 - prev
                    if lay.decay_mode == "shift":
                        vv -= vv >> int(lay.decay_shift[i])
                    elif lay.decay_mode == "mul":
                        vv = (vv * int(lay.decay_mul[i])) >> lay.decay_frac
                    u = vv + acc[i] + int(lay.bias[i])
                    if lay.reset == "subtract":
                        u -= int(lay.threshold[i]) * prev
                    u = min(max(u, -(1 << (lay.v_bits - 1))), (1 << (lay.v_bits - 1)) - 1)
                    new_v.append(u)
                    new_s.append(int(u > int(lay.threshold[i])))
                v[lj], s[lj] = new_v, new_s
                if lj == li:
                    for c, core in cores:
                        x_new = list(x_tr)
                        for j in range(lay.n_in):  # a.
                            x_new[j] = min(x_tr[j] - (x_tr[j] >> e.trace_shift)
                                           + e.trace_inc * x[j], tmax)
                            if e.rule == "stdp" and x[j]:
                                for i in range(core.lo, core.hi):
                                    w[i][j] = clip(w[i][j] - rnd(y_tr[i], e.ltd_shift, c))
                        for i in range(core.lo, core.hi):  # b.
                            if e.rule == "stdp":
                                y_tr[i] = min(y_tr[i] - (y_tr[i] >> e.trace_shift)
                                              + e.trace_inc * new_s[i], tmax)
                                if new_s[i]:
                                    for j in range(lay.n_in):
                                        w[i][j] = clip(w[i][j]
                                                       + rnd(x_new[j], e.ltp_shift, c))
                            elif modulators[b][t][i]:
                                m = int(modulators[b][t][i])
                                for j in range(lay.n_in):
                                    w[i][j] = clip(w[i][j] + rnd(m * x_new[j], e.mod_shift, c))
                    x_tr = x_new
                x = new_s
            trace.append(s[-1])
        out.append(trace)
    return np.array(out, dtype=np.uint8), np.array(w)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), rule=st.sampled_from(["stdp", "three_factor"]),
       stochastic=st.booleans(), split=st.booleans(), layer=st.sampled_from([0, -1]),
       steps=st.integers(1, 8), batch=st.integers(1, 3),
       shifts=st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 9)))
def test_learning_matches_scalar_statement(seed, rule, stochastic, split, layer, steps, batch,
                                           shifts):
    image = random_image(seed, (5, 7, 4), lanes=(3, 2), split=split, weight_bits=4)
    image = image.with_learning(layer=layer, rule=rule, stochastic=stochastic,
                                seed=seed % 65535 + 1,
                                ltp_shift=shifts[0], ltd_shift=shifts[1], mod_shift=shifts[2],
                                trace_inc=40, trace_bits=7)
    rng = np.random.default_rng(seed)
    spikes = (rng.random((batch, steps, 5)) < 0.5).astype(np.uint8)
    n_out = image.layers[layer].n_out
    mods = rng.integers(-128, 128, (batch, steps, n_out)).astype(np.int8) \
        if rule == "three_factor" else None
    result = golden.run(image, spikes, modulators=mods)
    ref_spikes, ref_w = reference(image, spikes, mods)
    np.testing.assert_array_equal(result.spikes, ref_spikes)
    np.testing.assert_array_equal(result.weights[layer], ref_w)
    np.testing.assert_array_equal(result.image.layers[layer].weights, ref_w)


def test_learned_image_round_trips(tmp_path):
    image = random_image(5, (5, 7, 4)).with_learning(layer=1, rule="stdp", stochastic=True)
    rng = np.random.default_rng(0)
    result = spikeforge.simulate(image, (rng.random((3, 10, 5)) < 0.5).astype(np.uint8))
    result.image.save(tmp_path / "learned.sfi")
    back = spikeforge.load_image(tmp_path / "learned.sfi")
    assert back.learning == image.learning
    np.testing.assert_array_equal(back.layers[1].weights, result.weights[1])


def test_bad_learning_input():
    image = random_image(7, (5, 7, 4), recurrent=0)
    with pytest.raises(ImageError, match="recurrent layer cannot learn"):
        image.with_learning(layer=0, rule="stdp")
    with pytest.raises(ImageError, match="rule must be one of"):
        image.with_learning(layer=1, rule="hebb")
    with pytest.raises(ImageError, match="unknown learning parameter"):
        image.with_learning(layer=1, rule="stdp", learning_rate=0.1)
    with pytest.raises(ImageError, match="image has 2 layers"):
        image.with_learning(layer=5, rule="stdp")
    learner = image.with_learning(layer=1, rule="three_factor")
    spikes = np.zeros((2, 4, 5), np.uint8)
    with pytest.raises(ValueError, match="give modulators"):
        spikeforge.simulate(learner, spikes)
    with pytest.raises(ValueError, match=r"\[2, 4, 4\]"):
        spikeforge.simulate(learner, spikes, modulators=np.zeros((2, 4, 3), np.int8))
    with pytest.raises(ValueError, match="integers"):
        spikeforge.simulate(learner, spikes, modulators=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="int8 range"):
        spikeforge.simulate(learner, spikes, modulators=np.full((2, 4, 4), 300))
    with pytest.raises(ValueError, match="no layer learns"):
        spikeforge.simulate(image, spikes, modulators=np.zeros((2, 4, 4), np.int8))

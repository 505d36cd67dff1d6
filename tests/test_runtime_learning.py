"""On-chip learning through the host runtime on the virtual board (the RTL of the whole SoC in
Verilator behind a pseudo-terminal): modulators written over the link before each step, the
learned weights read back, learn_cycles from STATUS, all against the golden model; the learned
image saved by `spikeforge run --save-image` and restored by `Board.load`; bad modulators, one
line each (API and CLI).

Two fixed images (one Verilator build each, cached) cover both rules with and without
stochastic rounding: each has two learning layers. Random images under `-m slow`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeforge
from spikeforge.boards.runtime import Board
from spikeforge.cli import main
from spikeforge.hdl.rtl import available_simulators

from .strategies import plastic_image, random_image
from .test_hdl_hostlink import make_board

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="the virtual board needs Verilator")

RATES = dict(trace_inc=110, mod_shift=10, ltp_shift=5, ltd_shift=5)
IMAGES = {
    # layer 0 STDP with stochastic rounding, layer 1 (output, split over two cores)
    # three-factor with floor rounding
    "stdp_stochastic+three_factor_floor": dict(
        seed=3, sizes=(6, 7, 5), rules=[("stdp", True), ("three_factor", False)]),
    # layer 0 three-factor with stochastic rounding (its modulators go to a hidden layer),
    # layer 1 STDP with floor rounding
    "three_factor_stochastic+stdp_floor": dict(
        seed=8, sizes=(5, 6, 4), rules=[("three_factor", True), ("stdp", False)]),
}


def make_image(name):
    spec = IMAGES[name]
    return plastic_image(spec["seed"], spec["sizes"], spec["rules"], **RATES)


def draw(image, rng, batch, steps, rate=0.5):
    """Random input spikes and, for a three-factor layer, random int8 modulators."""
    x = (rng.random((batch, steps, image.n_inputs)) < rate).astype(np.uint8)
    layers = [e.layer for e in image.learning if e.rule == "three_factor"]
    mods = None if not layers else rng.integers(
        -128, 128, (batch, steps, image.layers[layers[0]].n_out)).astype(np.int8)
    return x, mods


def cat(a, b):
    return None if a is None else np.concatenate([a, b])


def golden_cycles(image, x, mods, n):
    """Learning cycles per layer of the golden model over the first `n` samples."""
    if n == 0:
        return [0] * len(image.layers)
    part = spikeforge.simulate(image, x[:n], engine="golden",
                               modulators=None if mods is None else mods[:n])
    return [part.learning[k]["update_cycles"] if k in part.learning else 0
            for k in range(len(image.layers))]


def assert_learns_as_golden(result, image, x, mods, *, before=None):
    """`result` of a run on a board that first ran the samples `before` = (x, mods) (its
    weights and LFSRs carry over): the golden model of all samples in sequence, restricted to
    this run's."""
    if before is not None:
        x_all, mods_all, skip = cat(before[0], x), cat(before[1], mods), len(before[0])
    else:
        x_all, mods_all, skip = x, mods, 0
    want = spikeforge.simulate(image, x_all, engine="golden", modulators=mods_all)
    assert np.array_equal(result.spikes, want.spikes[skip:]), "output spikes differ"
    assert np.array_equal(result.spike_counts, want.spike_counts[skip:])
    for index, (got, ref) in enumerate(zip(result.weights, want.weights, strict=True)):
        if not np.array_equal(got, ref):
            i, j = np.argwhere(got != ref)[0]
            raise AssertionError(f"layer {index}: weight [{i}, {j}] is {got[i, j]}, the golden "
                                 f"model says {ref[i, j]}")
    for layer, ref in zip(result.image.layers, want.weights, strict=True):
        assert np.array_equal(layer.weights, ref)
    assert result.image.learning == image.learning
    # learn_cycles per sample: differences of the golden model's counts over prefixes
    cumulative = np.array([golden_cycles(image, x_all, mods_all, n)
                           for n in range(skip, len(x_all) + 1)])
    per_sample = np.diff(cumulative, axis=0)
    assert result.learn_cycles.tolist() == per_sample.tolist()
    for entry in image.learning:
        assert result.learning[entry.layer]["update_cycles"] == \
            int(per_sample[:, entry.layer].sum())
    assert not result.overflow.any() and result.retries == 0
    return want


def learning_layers(image):
    return [entry.layer for entry in image.learning]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_board_learns_as_golden(name):
    image = make_image(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    x1, m1 = draw(image, rng, 3, 8)
    x2, m2 = draw(image, rng, 2, 8, rate=0.7)
    # Stochastic rounding matters here (else its LFSRs would go untested).
    floor = image
    for entry in image.learning:
        floor = floor.with_learning(**{**entry.to_dict(), "stochastic": False})
    assert any(not np.array_equal(a, b) for a, b in zip(
        spikeforge.simulate(image, x1, engine="golden", modulators=m1).weights,
        spikeforge.simulate(floor, x1, engine="golden", modulators=m1).weights, strict=True))

    with Board.virtual(image) as board:
        first = board.run(x1, modulators=m1)
        want = assert_learns_as_golden(first, image, x1, m1)
        for k in learning_layers(image):
            assert not np.array_equal(want.weights[k], image.layers[k].weights)
        assert board.image is first.image  # the board holds the learned image now
        # A second run carries on from the learned weights and the LFSRs' states.
        second = board.run(x2, modulators=m2)
        assert_learns_as_golden(second, image, x2, m2, before=(x1, m1))
        back = board.read_weights()
        assert all(np.array_equal(a, b) for a, b in zip(back, second.weights, strict=True))
        assert board.status().device.learn_cycles == second.learn_cycles[-1].tolist()


def test_cli_saves_the_learned_image_and_load_restores_it(tmp_path, capsys):
    image = make_image("stdp_stochastic+three_factor_floor")
    rng = np.random.default_rng(11)
    x, mods = draw(image, rng, 3, 6)
    net, inp, mfile, out, learned = (tmp_path / name for name in (
        "net.sfi", "in.npz", "mods.npy", "out.npz", "learned.sfi"))
    image.save(net)
    np.savez(inp, spikes=x)
    np.save(mfile, mods)
    code = main(["run", str(net), "--port", "sim", "--input", str(inp), "--modulators",
                 str(mfile), "-o", str(out), "--save-image", str(learned), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    want = spikeforge.simulate(image, x, engine="golden", modulators=mods)
    assert summary["learning"] == {str(k): {"update_cycles": v["update_cycles"]}
                                   for k, v in want.learning.items()}
    with np.load(out) as got:
        assert np.array_equal(got["spikes"], want.spikes)
        assert got["learn_cycles"].sum(axis=0).tolist() == golden_cycles(image, x, mods, 3)
    saved = spikeforge.load_image(learned)
    assert saved.learning == image.learning
    assert all(np.array_equal(layer.weights, w)
               for layer, w in zip(saved.layers, want.weights, strict=True))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    # A fresh board of the original image holds the original weights; Board.load writes the
    # checkpoint over the link; the weights read back are the learned ones, and learning goes
    # on from them as the golden model of the learned image (a fresh board's LFSRs start from
    # the seed, as the golden model's do).
    with Board.virtual(net) as board:
        assert all(np.array_equal(w, layer.all_weights())
                   for w, layer in zip(board.read_weights(), image.layers, strict=True))
        board.load(learned)
        assert all(np.array_equal(w, layer.all_weights())
                   for w, layer in zip(board.read_weights(), saved.layers, strict=True))
        x2, m2 = draw(image, rng, 2, 6)
        assert_learns_as_golden(board.run(x2, modulators=m2), saved, x2, m2)


# -- bad modulators ---------------------------------------------------------------------------
def bad_modulators(image, x):
    """(modulators, what the one-line error says) for the image's three-factor layer."""
    n = image.layers[[e.layer for e in image.learning if e.rule == "three_factor"][0]].n_out
    batch, steps = x.shape[:2]
    good = np.zeros((batch, steps, n), np.int8)
    return [
        (np.zeros((batch, steps, n + 1), np.int8),
         rf"modulators must be int8 \[batch, time, neurons\] = \[{batch}, {steps}, {n}\], "
         rf"not \[{batch}, {steps}, {n + 1}\]"),
        (np.zeros((batch + 1, steps, n), np.int8), r"not \[" + str(batch + 1)),
        (good.astype(np.float32), "modulators must be integers \\(int8\\), not dtype float32"),
        (np.full_like(good, 200, dtype=np.int16), "int8 range -128..127"),
        (np.full_like(good, -129, dtype=np.int64), "int8 range -128..127"),
        (None, r"learns by the three-factor rule: give modulators, int8 \[batch, time, "
               rf"{n}\]"),
    ]


def test_bad_modulators_are_refused_before_anything_is_sent():
    image = make_image("three_factor_stochastic+stdp_floor")
    rng = np.random.default_rng(5)
    x, mods = draw(image, rng, 2, 5)
    with Board.virtual(image) as board:
        for bad, message in bad_modulators(image, x):
            with pytest.raises(ValueError, match=message) as info:
                board.run(x, modulators=bad)
            assert len(str(info.value).splitlines()) == 1
        # Nothing reached the board: it learns from where it started.
        assert_learns_as_golden(board.run(x, modulators=mods), image, x, mods)

    # Modulators for an image that does not learn by the three-factor rule (the host link
    # and array in the Amaranth simulator: the same runtime, no Verilator build).
    for other in (random_image(1, (4, 5, 3)),
                  plastic_image(1, (4, 5, 3), [None, ("stdp", False)])):
        _, line, _ = make_board(other)
        board = Board("stream", baud=10 / line.byte_time, timeout=3000 / line.clk_freq,
                      image=other, transport=line)
        y = np.zeros((1, 2, 4), np.uint8)
        with pytest.raises(ValueError, match="modulators given, but no layer learns by the "
                                             "three-factor rule"):
            board.run(y, modulators=np.zeros((1, 2, 3), np.int8))
        assert board.run(y).spikes.shape == (1, 2, 3)


def test_cli_bad_modulators_are_one_line(tmp_path, capsys):
    image = make_image("three_factor_stochastic+stdp_floor")
    x, _ = draw(image, np.random.default_rng(6), 2, 5)
    net, plain, inp, out, saved = (tmp_path / name for name in (
        "net.sfi", "plain.sfi", "in.npz", "out.npz", "saved.sfi"))
    image.save(net)
    random_image(1, (image.n_inputs, 4)).save(plain)
    np.savez(inp, spikes=x)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an array")
    cases = [(net, f, m) for f, m in bad_modulators(image, x)] + [
        (net, tmp_path / "missing.npy", "missing.npy: no such modulator file"),
        (net, junk, "junk.npy: not a readable .npy/.npz modulator file"),
        (plain, np.zeros((2, 5, 4), np.int8),
         "modulators given, but no layer learns by the three-factor rule"),
    ]
    for k, (net_file, mods, message) in enumerate(cases):
        args = ["run", str(net_file), "--port", "sim", "--input", str(inp), "-o", str(out),
                "--save-image", str(saved)]
        if isinstance(mods, np.ndarray):
            path = tmp_path / f"mods{k}.npy"
            np.save(path, mods)
            args += ["--modulators", str(path)]
        elif mods is not None:
            args += ["--modulators", str(mods)]
        assert main(args) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spikeforge: error: "), err
        assert re.search(message, err[0]), (message, err[0])
        if mods is None:
            assert "--modulators" in err[0]
        assert not out.exists() and not saved.exists()


@pytest.mark.slow
def test_board_learns_as_golden_on_random_images():
    """Random learning images (a Verilator build each): rules, rounding, sizes and lanes."""
    rule = st.one_of(st.none(), st.tuples(st.sampled_from(["stdp", "three_factor"]),
                                          st.booleans()))

    @settings(max_examples=4, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(seed=st.integers(0, 2**31), sizes=st.lists(st.integers(1, 8), min_size=3,
                                                      max_size=3),
           rules=st.lists(rule, min_size=2, max_size=2), lanes=st.integers(1, 4),
           split=st.booleans(), stochastic_seed=st.integers(1, 0xFFFF), data=st.data())
    def check(seed, sizes, rules, lanes, split, stochastic_seed, data):
        rules = list(rules)
        if not any(rules):
            rules[1] = ("stdp", True)
        if sum(1 for r in rules if r and r[0] == "three_factor") > 1:
            rules[0] = ("stdp", rules[0][1])
        image = plastic_image(seed, sizes, rules, lanes=(lanes,), split=split,
                              seed=stochastic_seed, **RATES)
        rng = np.random.default_rng(seed)
        x, mods = draw(image, rng, data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6)))
        with Board.virtual(image) as board:
            assert_learns_as_golden(board.run(x, modulators=mods), image, x, mods)

    check()

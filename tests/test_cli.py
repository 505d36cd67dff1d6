"""The command line: every verb on good input, and every kind of bad input.

Bad input must give one line on stderr naming the problem, a non-zero exit, no traceback,
and no file left behind.
"""

from __future__ import annotations

import json
import subprocess
import sys

import nir
import numpy as np
import pytest
import torch

from spikeforge.image import load_image
from spikeforge.sim import golden

from .strategies import random_image


def spikeforge(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "spikeforge.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("spikeforge: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def lif_nir(sizes, *, seed=0):
    """A NIR chain Input -> (Affine -> LIF)* -> Output in snnTorch's convention (r = tau/dt)."""
    rng = np.random.default_rng(seed)
    dt, tau = 1e-3, 8e-3
    nodes = {"input": nir.Input(input_type=np.array([sizes[0]]))}
    edges, prev = [], "input"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        nodes[f"fc{i}"] = nir.Affine(weight=rng.normal(0, 0.5, (b, a)).astype(np.float32),
                                     bias=np.zeros(b, np.float32))
        nodes[f"lif{i}"] = nir.LIF(tau=np.full(b, tau), r=np.full(b, tau / dt),
                                   v_leak=np.zeros(b), v_threshold=np.ones(b),
                                   v_reset=np.zeros(b))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
    nodes["output"] = nir.Output(output_type=np.array([sizes[-1]]))
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


@pytest.fixture
def nir_file(tmp_path):
    path = tmp_path / "net.nir"
    nir.write(path, lif_nir((6, 10, 4)))
    return path


def test_compile_inspect_simulate(tmp_path, nir_file):
    out = tmp_path / "net.sfi"
    proc = spikeforge("compile", nir_file, "-o", out, "--weight-bits", "6", "--json",
                      "--exporter", "snntorch")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["n_inputs"] == 6 and summary["n_outputs"] == 4
    assert [layer["weight_bits"] for layer in summary["layers"]] == [6, 6]
    image = load_image(out)
    proc = spikeforge("inspect", out, "--json")
    assert json.loads(proc.stdout)["layers"] == summary["layers"]
    assert spikeforge("inspect", out).returncode == 0
    rng = np.random.default_rng(0)
    spikes = (rng.random((3, 15, 6)) < 0.4).astype(np.uint8)
    np.savez(tmp_path / "in.npz", spikes=spikes)
    proc = spikeforge("simulate", out, "--input", tmp_path / "in.npz", "-o", tmp_path / "o.npz")
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "o.npz") as result:
        np.testing.assert_array_equal(result["spikes"], golden.run(image, spikes).spikes)
    # a single sample given as [time, neurons]
    np.savez(tmp_path / "one.npz", spikes=spikes[1])
    proc = spikeforge("simulate", out, "--input", tmp_path / "one.npz", "-o", tmp_path / "1.npz")
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "1.npz") as result:
        np.testing.assert_array_equal(result["spikes"], golden.run(image, spikes[1:2]).spikes)


def test_boards_and_help():
    proc = spikeforge("boards", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert any(row["device"] == "iCE40UP5K" for row in rows)
    for row in rows:
        assert row["synapses_4bit"] >= 2 * row["synapses_8bit"]
        assert row["synapses_8bit"] >= row["neurons"] > 0 or row["device"] == "iCE40HX1K"
    for verb in ("compile", "inspect", "simulate", "boards", "demo"):
        proc = spikeforge(verb, "--help")
        assert proc.returncode == 0 and "usage" in proc.stdout


def _bad_images(tmp_path):
    image = random_image(2)
    data = image.to_bytes()
    (tmp_path / "trunc.sfi").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 1
    (tmp_path / "flip.sfi").write_bytes(bytes(flipped))
    (tmp_path / "junk.sfi").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    return image


@pytest.mark.parametrize("name, needle", [("trunc.sfi", "truncated"),
                                          ("flip.sfi", "checksum mismatch"),
                                          ("junk.sfi", "not a spikeforge image"),
                                          ("absent.sfi", "no such image file")])
def test_bad_image_files(tmp_path, name, needle):
    image = _bad_images(tmp_path)
    np.savez(tmp_path / "in.npz", spikes=np.zeros((2, image.n_inputs), np.uint8))
    assert_one_line_error(spikeforge("inspect", tmp_path / name), needle)
    proc = spikeforge("simulate", tmp_path / name, "--input", tmp_path / "in.npz",
                      "-o", tmp_path / "out.npz")
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "out.npz").exists()


def test_bad_spike_files(tmp_path):
    image = random_image(3)
    image.save(tmp_path / "net.sfi")
    cases = {
        "wrong-width.npz": (np.zeros((4, image.n_inputs + 1), np.uint8), "input neurons"),
        "not-binary.npz": (np.full((4, image.n_inputs), 2, np.uint8), "0 or 1"),
        "four-d.npz": (np.zeros((1, 1, 4, image.n_inputs), np.uint8), "shape"),
    }
    for name, (arr, needle) in cases.items():
        np.savez(tmp_path / name, spikes=arr)
        proc = spikeforge("simulate", tmp_path / "net.sfi", "--input", tmp_path / name,
                          "-o", tmp_path / "out.npz")
        assert_one_line_error(proc, needle)
    np.savez(tmp_path / "noname.npz", x=np.zeros(3))
    assert_one_line_error(spikeforge("simulate", tmp_path / "net.sfi", "--input",
                                     tmp_path / "noname.npz", "-o", tmp_path / "out.npz"),
                          "no array named 'spikes'")
    assert not (tmp_path / "out.npz").exists()


def _compile_fails(tmp_path, model, *args, needles=()):
    out = tmp_path / "out.sfi"
    before = set(tmp_path.iterdir())
    proc = spikeforge("compile", model, "-o", out, *args)
    assert_one_line_error(proc, *needles)
    assert set(tmp_path.iterdir()) == before, "a failed compile left a file behind"


def test_bad_models(tmp_path):
    _compile_fails(tmp_path, tmp_path / "missing.nir", needles=["missing.nir"])
    (tmp_path / "junk.nir").write_bytes(b"this is not HDF5 at all" * 10)
    _compile_fails(tmp_path, tmp_path / "junk.nir", needles=["junk.nir"])
    graph = nir.NIRGraph(nodes={
        "input": nir.Input(input_type=np.array([1, 8, 8])),
        "conv1": nir.Conv2d(input_shape=(8, 8), weight=np.zeros((2, 1, 3, 3)), stride=1,
                            padding=1, dilation=1, groups=1, bias=np.zeros(2)),
        "flat": nir.Flatten(input_type={"input": np.array([2, 8, 8])}, start_dim=0),
        "fc": nir.Affine(weight=np.zeros((5, 128)), bias=np.zeros(5)),
        "lif": nir.LIF(tau=np.full(5, 8e-3), r=np.full(5, 8.0), v_leak=np.zeros(5),
                       v_threshold=np.ones(5), v_reset=np.zeros(5)),
        "output": nir.Output(output_type=np.array([5]))},
        edges=[("input", "conv1"), ("conv1", "flat"), ("flat", "fc"), ("fc", "lif"),
               ("lif", "output")])
    nir.write(tmp_path / "conv.nir", graph)
    _compile_fails(tmp_path, tmp_path / "conv.nir", needles=["conv1", "Conv2d"])


def test_pickled_module_needs_flag(tmp_path):
    import snntorch as snn

    # snnTorch's default surrogate is a closure that pickle refuses
    lif = snn.Leaky(beta=0.5, init_hidden=True, surrogate_disable=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), lif, torch.nn.Conv2d(1, 1, 3))
    torch.save(model, tmp_path / "model.pt")
    _compile_fails(tmp_path, tmp_path / "model.pt", needles=["--allow-pickle"])
    _compile_fails(tmp_path, tmp_path / "model.pt", "--allow-pickle", needles=["Conv2d"])


def test_network_too_big_for_the_device(tmp_path):
    nir.write(tmp_path / "big.nir", lif_nir((784, 512, 512, 10)))
    _compile_fails(tmp_path, tmp_path / "big.nir", "--device", "iCE40HX1K",
                   "--exporter", "snntorch", needles=["need", "have"])
    _compile_fails(tmp_path, tmp_path / "big.nir", "--board", "icebraeker",
                   "--exporter", "snntorch", needles=["icebreaker"])


def test_debug_shows_traceback(tmp_path):
    proc = spikeforge("--debug", "inspect", tmp_path / "absent.sfi")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_learn_then_simulate_with_modulators(tmp_path):
    """`learn` configures the rule; `simulate --modulators --save-image` learns as the API's
    golden model does and writes the learned image; bad modulators are one-line errors."""
    image = random_image(11, (6, 7, 4))
    image.save(tmp_path / "net.sfi")
    proc = spikeforge("learn", tmp_path / "net.sfi", "-o", tmp_path / "learn.sfi", "--rule",
                      "three_factor", "--mod-shift", "6", "--stochastic", "--seed", "9",
                      "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["layer"], summary["rule"], summary["mod_shift"], summary["stochastic"],
            summary["seed"]) == (1, "three_factor", 6, True, 9)
    learn = load_image(tmp_path / "learn.sfi")
    rng = np.random.default_rng(1)
    x = (rng.random((2, 5, 6)) < 0.5).astype(np.uint8)
    mods = rng.integers(-128, 128, (2, 5, 4)).astype(np.int8)
    np.savez(tmp_path / "in.npz", spikes=x)
    np.save(tmp_path / "mods.npy", mods)
    proc = spikeforge("simulate", tmp_path / "learn.sfi", "--input", tmp_path / "in.npz",
                      "--modulators", tmp_path / "mods.npy", "-o", tmp_path / "out.npz",
                      "--save-image", tmp_path / "learned.sfi", "--json")
    assert proc.returncode == 0, proc.stderr
    want = golden.run(learn, x, modulators=mods)
    assert json.loads(proc.stdout)["learning"]["1"]["updates"] == want.learning[1]["updates"]
    with np.load(tmp_path / "out.npz") as out:
        np.testing.assert_array_equal(out["weights1"], want.weights[1])
    learned = load_image(tmp_path / "learned.sfi")
    np.testing.assert_array_equal(learned.layers[1].weights, want.weights[1])
    assert learned.learning == learn.learning
    assert not np.array_equal(learned.layers[1].weights, image.layers[1].weights)

    def simulate(mod_file, image_file="learn.sfi"):
        return spikeforge("simulate", tmp_path / image_file, "--input", tmp_path / "in.npz",
                          "--modulators", mod_file, "-o", tmp_path / "bad.npz",
                          "--save-image", tmp_path / "bad.sfi")

    np.save(tmp_path / "shape.npy", mods[:, :, :3])
    np.save(tmp_path / "float.npy", mods.astype(np.float32))
    np.save(tmp_path / "range.npy", mods.astype(np.int16) * 2)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    for name, needle in (("shape.npy", "modulators must be int8 [batch, time, neurons]"),
                         ("float.npy", "must be integers"), ("range.npy", "int8 range"),
                         ("junk.npy", "not a readable"), ("missing.npy", "no such")):
        assert_one_line_error(simulate(tmp_path / name), needle)
    assert_one_line_error(simulate(tmp_path / "mods.npy", "net.sfi"), "needs an image that learns")
    proc = spikeforge("simulate", tmp_path / "learn.sfi", "--input", tmp_path / "in.npz", "-o",
                      tmp_path / "bad.npz")
    assert_one_line_error(proc, "give modulators")
    assert not (tmp_path / "bad.npz").exists() and not (tmp_path / "bad.sfi").exists()

    recurrent = random_image(7, (5, 7, 4), recurrent=0)
    recurrent.save(tmp_path / "rec.sfi")
    proc = spikeforge("learn", tmp_path / "rec.sfi", "-o", tmp_path / "bad.sfi", "--layer", "0",
                      "--rule", "stdp")
    assert_one_line_error(proc, "recurrent layer cannot learn")
    proc = spikeforge("learn", tmp_path / "net.sfi", "-o", tmp_path / "bad.sfi", "--rule",
                      "stdp", "--trace-bits", "40")
    assert_one_line_error(proc, "trace_bits")
    assert not (tmp_path / "bad.sfi").exists()


def test_nir_options_refuse_bad_values_in_one_line(tmp_path, nir_file):
    for args, needle in [
        (("--exporter", "brian2"), "exporter must be one of snntorch, norse, sinabs"),
        (("--dt", "-1"), "dt must be a positive number of seconds, not -1.0"),
        (("--dt", "soon"), "--dt must be a positive number of seconds, not 'soon'"),
        (("--reset", "none"), "reset must be one of subtract, zero, not 'none'"),
        (("--max-spikes", "0"), "max_spikes must be an integer 1..255, not 0"),
        (("--max-spikes", "300"), "max_spikes must be an integer 1..255, not 300"),
        (("--max-spikes", "two"), "--max-spikes must be an integer 1..255, not 'two'"),
    ]:
        _compile_fails(tmp_path, nir_file, *args, needles=[needle])
    # without an exporter the open choices are named, in one line
    _compile_fails(tmp_path, nir_file, needles=["--reset {zero,subtract}", "--max-spikes K"])


def test_compile_shows_provenance(tmp_path, nir_file):
    out = tmp_path / "net.sfi"
    proc = spikeforge("compile", nir_file, "-o", out, "--reset", "subtract", "--max-spikes", "1",
                      "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["provenance"]
    assert [row["node"] for row in rows] == ["lif0", "lif1"]
    assert rows[0]["dt"] == {"value": pytest.approx(1e-3),
                             "source": "inferred from r = tau/dt, one value over every node"}
    assert rows[0]["beta"]["values"] == pytest.approx([0.875, 0.875])
    assert rows[0]["reset"]["source"] == "given (--reset)"
    proc = spikeforge("compile", nir_file, "-o", out, "--exporter", "snntorch")
    assert proc.returncode == 0 and "where the numbers came from" in proc.stdout


def test_per_layer_weight_bits_and_decay(tmp_path, nir_file):
    out = tmp_path / "net.sfi"
    proc = spikeforge("compile", nir_file, "-o", out, "--weight-bits", "6,fc1=4", "--decay",
                      "mul", "--json", "--exporter", "snntorch")
    assert proc.returncode == 0, proc.stderr
    layers = json.loads(proc.stdout)["layers"]
    assert [layer["weight_bits"] for layer in layers] == [6, 4]
    assert [layer["decay_mode"] for layer in layers] == ["mul", "mul"]
    proc = spikeforge("compile", nir_file, "-o", out, "--weight-bits", "1=3", "--json",
                      "--exporter", "snntorch")
    assert [layer["weight_bits"] for layer in json.loads(proc.stdout)["layers"]] == [8, 3]


@pytest.mark.parametrize(("args", "needle"), [
    (("--weight-bits", "17"), "weight_bits must be an integer 2..16, not 'fc0': 17"),
    (("--weight-bits", "8,fc1=1"), "weight_bits must be an integer 2..16, not 'fc1': 1"),
    (("--weight-bits", "8,lif9=4"), "weight_bits names no layer of the network: 'lif9'"),
    (("--decay", "linear"), "compile: argument --decay: invalid choice: 'linear'"),
])
def test_new_compile_options_refuse_bad_values_in_one_line(tmp_path, nir_file, args, needle):
    out = tmp_path / "net.sfi"
    assert_one_line_error(spikeforge("compile", nir_file, "-o", out, "--exporter", "snntorch",
                                     *args), needle)
    assert not out.exists()


@pytest.mark.parametrize("slow", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_simulate_writes_an_li_readout_as_values_and_scale(tmp_path, slow):
    """The golden engine; with `slow` also the rtl engine (Icarus), which equals it."""
    from spikeforge.compiler.ir import LifLayer, Network
    from spikeforge.compiler.quantize import plain_image, quantize
    from spikeforge.hdl import rtl

    rng = np.random.default_rng(2)
    network = Network(5, [
        LifLayer("hidden", rng.normal(0, 1, (6, 5)), None, 0.75, 0.5, max_spikes=3),
        LifLayer("readout", rng.normal(0, 1, (2, 6)), None, 0.5, 0.0, alpha=0.5,
                 spiking=False)])
    layers, _ = quantize(network)
    image = plain_image(layers, 5)
    image.save(tmp_path / "li.sfi")
    spikes = (rng.random((2, 12, 5)) < 0.5).astype(np.uint8)
    np.savez(tmp_path / "in.npz", spikes=spikes)
    proc = spikeforge("simulate", tmp_path / "li.sfi", "--input", tmp_path / "in.npz",
                      "-o", tmp_path / "o.npz")
    assert proc.returncode == 0, proc.stderr
    want = golden.run(image, spikes)
    with np.load(tmp_path / "o.npz") as result:
        np.testing.assert_array_equal(result["values"], want.values)
        assert float(result["scale"]) == layers[-1].scale != 1.0
    if "icarus" in rtl.available_simulators() and slow:
        # the gateware runs both models: the readout's membranes read back after every step
        proc = spikeforge("simulate", tmp_path / "li.sfi", "--input", tmp_path / "in.npz",
                          "-o", tmp_path / "r.npz", "--engine", "rtl", "--simulator", "icarus")
        assert proc.returncode == 0, proc.stderr
        with np.load(tmp_path / "r.npz") as result:
            np.testing.assert_array_equal(result["values"], want.values)
            np.testing.assert_array_equal(result["spikes"], want.spikes)

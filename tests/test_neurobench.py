"""spikeforge's metrics against the `neurobench` package's own: its Benchmark runs a compiled
image (spikeforge.neurobench.ImageModel) and its hooks measure the torch mirror of the quantised
network; SynapticOperations, ActivationSparsity, MembraneUpdates, ParameterCount,
ConnectionSparsity and ClassificationAccuracy must equal spikeforge.metrics. The mirror itself
is checked against the golden model, spike by spike and membrane by membrane."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("neurobench")

import torch  # noqa: E402
from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount  # noqa: E402
from neurobench.metrics.workload import (  # noqa: E402
    ActivationSparsity,
    ClassificationAccuracy,
    MembraneUpdates,
    SynapticOperations,
)
from neurobench.processors.postprocessors import ChooseMaxCount  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import spikeforge  # noqa: E402
from spikeforge.neurobench import ImageMirror, ImageModel  # noqa: E402
from spikeforge.sim import golden  # noqa: E402

from .strategies import images, random_image  # noqa: E402

STATIC = [Footprint, ParameterCount, ConnectionSparsity]
WORKLOAD = [ClassificationAccuracy, ActivationSparsity, SynapticOperations, MembraneUpdates]


def run_benchmark(model, x, labels, batch_size):
    data = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(labels))
    bench = Benchmark(model, DataLoader(data, batch_size=batch_size), [], [ChooseMaxCount()],
                      [STATIC, WORKLOAD])
    return bench.run(quiet=True)


def assert_neurobench_agrees(image, x, labels, batch_size):
    ours = spikeforge.metrics(image, x, labels)
    theirs = run_benchmark(ImageModel(image), x, labels, batch_size)
    synops = theirs["SynapticOperations"]
    assert synops["Effective_ACs"] == ours["synaptic_operations"]["Effective_ACs"]
    assert synops["Effective_MACs"] == ours["synaptic_operations"]["Effective_MACs"] == 0
    assert synops["Dense"] == ours["synaptic_operations"]["Dense"]
    assert theirs["ActivationSparsity"] == pytest.approx(ours["activation_sparsity"],
                                                         rel=1e-12, abs=1e-12)
    assert theirs["MembraneUpdates"] == pytest.approx(ours["membrane_updates"], rel=1e-12)
    assert theirs["ParameterCount"] == ours["parameter_count"]
    assert theirs["ConnectionSparsity"] == round(ours["connection_sparsity"], 4)
    # NeuroBench averages a float32 mean per batch
    assert theirs["ClassificationAccuracy"] == pytest.approx(ours["classification_accuracy"],
                                                             abs=1e-6)
    # NeuroBench's footprint counts the mirror's float64 tensors; ours the integer widths
    assert theirs["Footprint"] > ours["footprint"]
    return ours, theirs


def test_neurobench_agrees_on_a_recurrent_network():
    image = random_image(3, (7, 9, 5, 4), recurrent=1, v_bits=8, weight_bits=6)
    rng = np.random.default_rng(0)
    x = (rng.random((7, 6, 7)) < 0.5).astype(np.uint8)
    labels = rng.integers(0, image.n_outputs, 7)
    ours, _ = assert_neurobench_agrees(image, x, labels, batch_size=3)
    assert ours["synaptic_operations"]["Effective_ACs"] > 0
    assert 0 < ours["activation_sparsity"] < 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(image=images(max_layers=3, max_width=8), data=st.data())
def test_neurobench_agrees_on_random_images(image, data):
    batch = data.draw(st.integers(1, 5))
    steps = data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = (rng.random((batch, steps, image.n_inputs)) < 0.4).astype(np.uint8)
    labels = rng.integers(0, image.n_outputs, batch)
    assert_neurobench_agrees(image, x, labels, batch_size=data.draw(st.integers(1, 3)))


@settings(max_examples=40, deadline=None)
@given(image=images(max_layers=3, max_width=10), data=st.data())
def test_mirror_is_the_golden_model(image, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = (rng.random((2, 7, image.n_inputs)) < 0.5).astype(np.uint8)
    want = golden.run(image, x, record=True)
    out, spikes, membranes = ImageMirror(image).run(x)
    np.testing.assert_array_equal(out, want.spikes)
    for k in range(len(image.layers)):
        np.testing.assert_array_equal(spikes[k], want.layer_spikes[k])
        np.testing.assert_array_equal(membranes[k], want.membranes[k])


def test_image_model_refuses_an_unknown_engine():
    with pytest.raises(ValueError, match=r"^engine must be one of golden, rtl, board, "
                                         r"not 'gpu'$"):
        ImageModel(random_image(1), engine="gpu")

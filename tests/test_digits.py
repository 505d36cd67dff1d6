"""The demo network end to end in Python: snnTorch float vs the golden model on digits."""

from __future__ import annotations

import pytest

import spikeforge
from spikeforge import digits as D
from spikeforge.demo import evaluate, train_digits


@pytest.fixture(scope="module")
def trained():
    return train_digits(epochs=40, progress=False)


@pytest.mark.parametrize("bits, max_drop", [(8, 0.01), (4, 0.03)])
def test_golden_follows_snntorch(trained, bits, max_drop):
    data, model = trained
    image = spikeforge.compile(model, weight_bits=bits, board="icebreaker",
                               calibration=data.train_spikes)
    figures = evaluate(image, model, data)
    assert figures["float_accuracy"] > 0.9, figures
    assert abs(figures["golden_accuracy"] - figures["float_accuracy"]) <= max_drop, figures
    if bits == 8:
        assert figures["agreement"] >= 0.97, figures
    assert figures["saturations"] == 0


def test_spike_count_argmax_breaks_ties_low():
    import numpy as np

    spikes = np.zeros((1, 3, 4), np.uint8)
    spikes[0, :, 1] = spikes[0, :, 3] = 1
    assert D.predict(spikes)[0] == 1


def test_gateware_runs_the_trained_network_bit_exact(trained):
    """The generated RTL (Verilator) on the trained digits network equals the golden model."""
    import numpy as np

    from spikeforge.sim import golden

    data, model = trained
    image = spikeforge.compile(model, weight_bits=8, board="icebreaker",
                               calibration=data.train_spikes)
    spikes = data.test_spikes[:3]
    rtl = spikeforge.simulate(image, spikes, engine="rtl")
    gold = golden.run(image, spikes)
    np.testing.assert_array_equal(rtl.spikes, gold.spikes)
    for got, want in zip(rtl.final_membranes, gold.final_membranes, strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(rtl.sops, gold.sops)
    np.testing.assert_array_equal(rtl.spike_counts, gold.spike_counts)

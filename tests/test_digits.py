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

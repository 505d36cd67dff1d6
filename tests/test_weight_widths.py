"""Weight widths 9..16: `--weight-bits` accepts 2..16 (docs/cli.md) because the image, the golden
model and the gateware all take them. The core array in the Amaranth simulator against the golden
model at wide weights, and a compiled network keeping the width it was given."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spikeforge.compiler.ir import LifLayer, Network
from spikeforge.compiler.quantize import quantize

from .strategies import random_image
from .test_hdl_array import check_against_golden, run_batch


@pytest.mark.parametrize("bits", [9, 12, 16])
def test_array_matches_golden_with_wide_weights(bits):
    image = random_image(bits, (6, 9, 4), lanes=(2, 3), recurrent=0, weight_bits=bits,
                         v_bits=24)
    assert all(layer.weight_bits == bits for layer in image.layers)
    x = (np.random.default_rng(bits).random((2, 5, 6)) < 0.5).astype(np.uint8)
    results = run_batch(image, x, itertools.cycle([False]), itertools.cycle([True]))
    check_against_golden(image, x, results)


@pytest.mark.parametrize("bits", [2, 9, 16])
def test_quantizer_takes_every_width_the_cli_documents(bits):
    rng = np.random.default_rng(bits)
    network = Network(5, [LifLayer("fc", rng.normal(0, 1, (4, 5)), None, 0.5, 1.0)])
    [layer], report = quantize(network, weight_bits=bits)
    qmax = (1 << (bits - 1)) - 1
    assert layer.weight_bits == bits and np.abs(layer.weights).max() == qmax
    assert report.layers[0].weight_max_rel_error <= 0.5 / qmax + 1e-12
    with pytest.raises(ValueError, match=r"^weight_bits must be an integer 2\.\.16, not 'fc': 17$"):
        quantize(network, weight_bits=17)

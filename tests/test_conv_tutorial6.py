"""snnTorch's tutorial-6 network (12C5-MP2-64C5-MP2-FC10 on 28 x 28), trained briefly on the
digits upsampled to 28 x 28: the float IR is snnTorch's forward pass, and the golden model at
8 bits predicts snnTorch's class on >= 97 % of the test samples with accuracy within 1 point."""

from __future__ import annotations

import numpy as np
import pytest

from spikeforge import api, digits
from spikeforge.compiler.float_ref import run_float
from spikeforge.compiler.frontend import load_network
from spikeforge.image import image_from_bytes
from spikeforge.sim import golden

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures below are for this exact, seeded training run
    try:
        data = digits.load_digits_28()
        model = digits.build_conv_model()
        digits.train(model, data, epochs=3, batch=32, lr=1e-2)
        return model, data, digits.forward(model, data.test_spikes)
    finally:
        torch.set_num_threads(threads)


def test_float_ir_is_snntorch(trained):
    model, data, snn_out = trained
    network = load_network(model)
    assert [(layer.conv.kernel, layer.conv.pool, layer.conv.out_shape)
            for layer in network.layers[:2]] == [(5, "max", (12, 12, 12)), (5, "max", (64, 4, 4))]
    assert network.layers[2].conv is None and network.layers[2].n_in == 1024
    np.testing.assert_array_equal(run_float(network, data.test_spikes), snn_out)


@pytest.mark.parametrize("bits", [8, 4])
def test_tutorial6_compiles_and_runs_as_snntorch(trained, bits):
    model, data, snn_out = trained
    image = api.compile(model, weight_bits=bits, calibration=data.train_spikes[:100])
    assert [layer.conv is not None for layer in image.layers] == [True, True, False]
    assert image_from_bytes(image.to_bytes()).layers[1].conv == image.layers[1].conv
    result = golden.run(image, data.test_spikes)
    ours, theirs = digits.predict(result.spikes), digits.predict(snn_out)
    assert int(result.saturations.sum()) == 0
    if bits == 8:
        assert np.mean(ours == theirs) >= 0.97
        assert abs(np.mean(ours == data.test_labels) - np.mean(theirs == data.test_labels)) <= 0.01
    else:  # four bits keep most of the behaviour
        assert np.mean(ours == theirs) >= 0.8


@pytest.mark.parametrize("bits", [8, 4])
def test_tutorial6_compiles_for_the_icebreaker(trained, bits):
    """The iCEBreaker's UP5K holds it: convolution cores of whole channels, conv1's and conv2's
    accumulators and conv2's kernel in SPRAM, every resource of the estimate within the device,
    and the image runs in the golden model as the untargeted one does."""
    from spikeforge.compiler.mapper import estimate_resources, memory_placement

    model, data, _ = trained
    image = api.compile(model, weight_bits=bits, board="icebreaker",
                        calibration=data.train_spikes[:100])
    assert (image.config.device, image.config.board) == ("iCE40UP5K", "icebreaker")
    assert [c.layer for c in image.config.cores] == [0, 1, 2]
    placement = memory_placement(image.layers, image.config)
    assert placement[0].acc_spram and placement[1].acc_spram and placement[1].weights_spram
    estimate = estimate_resources(image.layers, image.config)
    assert all(need <= cap for need, cap in estimate.values())
    assert image.meta["resources"] == {r: list(nc) for r, nc in estimate.items()}
    plain = api.compile(model, weight_bits=bits, calibration=data.train_spikes[:100])
    x = data.test_spikes[:20]
    np.testing.assert_array_equal(golden.run(image, x).spikes, golden.run(plain, x).spikes)


@pytest.fixture(scope="module")
def board_images(trained):
    """Tutorial 6 compiled for the iCEBreaker at 8 and 4 bits."""
    model, data, _ = trained
    return {bits: api.compile(model, weight_bits=bits, calibration=data.train_spikes[:100],
                              board="icebreaker") for bits in (8, 4)}


@pytest.mark.parametrize("bits", [8, 4])
def test_tutorial6_rtl_matches_golden(trained, board_images, bits):
    from spikeforge.hdl import rtl

    from .test_sim_rtl import assert_matches_golden

    _, data, _ = trained
    image = board_images[bits]
    spikes = data.test_spikes[:2]
    assert_matches_golden(image, spikes, rtl.run_rtl(image, spikes))


def test_tutorial6_virtual_board_matches_golden(trained, board_images):
    """The 8-bit image on the virtual board, its SPRAM memories written over the host link
    (`Board.load`; the flash loader does not fit beside this network on the UP5K): output
    spikes equal the golden model's, and the kernels read back as the image holds them."""
    from spikeforge.boards.runtime import Board

    _, data, _ = trained
    image = board_images[8]
    spikes = data.test_spikes[:2]
    with Board.virtual(image) as board:
        got = board.run(spikes)
        kernels = board.read_weights()
    np.testing.assert_array_equal(got.spikes, golden.run(image, spikes).spikes)
    for layer, kernel in zip(image.layers, kernels, strict=True):
        np.testing.assert_array_equal(kernel, layer.weights)

"""Synthesis statistics of the core array: weight memories land in block RAM, logic stays small.

Oracle: the weight memory of the image holds `fan_in * groups * lanes * weight_bits` bits; held
in flip-flops or LUT RAM it would need about that many flip-flops or a quarter of it in LUTs,
so a small flip-flop and LUT count plus at least the block RAMs the bits need proves the
memory went to EBR (iCE40) / DP16KD (ECP5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spikeforge.compiler.devices import find_device
from spikeforge.hdl.synth import synth_stats
from spikeforge.image import CoreConfig, HwConfig, Image

from .strategies import random_layer


def small_image(device: str, neurons: int = 32) -> Image:
    layer = random_layer(np.random.default_rng(7), "fc", 64, neurons, weight_bits=4, v_bits=12)
    return Image(64, [layer], HwConfig(device, (CoreConfig(0, 0, neurons, 4),)))


@pytest.mark.parametrize("device", ["iCE40UP5K", "LFE5U-85F"])
def test_weight_memory_maps_to_block_ram(device):
    image = small_image(device)
    core = image.config.cores[0]
    weight_bits = image.layers[0].fan_in * core.groups * core.lanes * image.layers[0].weight_bits
    stats = synth_stats(image, device)
    dev = find_device(device)
    assert stats["device"] == dev.name
    assert stats["bram"] >= math.ceil(weight_bits / dev.bram_bits), stats
    assert stats["ffs"] < weight_bits // 8, stats
    assert 0 < stats["luts"] < 1500, stats
    assert stats["luts_pct"] == pytest.approx(100 * stats["luts"] / dev.luts, abs=0.05)


@pytest.mark.parametrize("rule, neurons", [
    ("stdp", 32), ("three_factor", 32),
    # the modulators beside the traces: one block RAM for 64 + 10 words
    pytest.param("three_factor", 10, marks=pytest.mark.slow),
])
def test_learning_block_ram_is_what_yosys_maps(rule, neurons):
    """The mapper's count of a learning unit's block RAMs (what `build`'s fit check adds) is
    the difference yosys makes between the same array with and without the rule."""
    from spikeforge.compiler.mapper import learning_block_ram

    image = small_image("iCE40UP5K", neurons)
    learning = image.with_learning(0, rule)
    extra = learning_block_ram(learning.layers, learning.config, learning.learning)
    assert extra >= 1
    assert (synth_stats(learning, "iCE40UP5K")["bram"]
            - synth_stats(image, "iCE40UP5K")["bram"]) == extra


def neuron_memory_image(device: str, neurons: int, v_bits: int, *, bias: bool = True,
                        decay_mode: str = "shift") -> Image:
    """One core of `neurons` whose thresholds (and biases, shift decays) differ per neuron, so
    they are stored, with a small weight memory (4 inputs, 1 lane)."""
    layer = random_layer(np.random.default_rng(3), "fc", 4, neurons, weight_bits=8,
                         v_bits=v_bits, bias=bias, decay_mode=decay_mode)
    return Image(4, [layer], HwConfig(device, (CoreConfig(0, 0, neurons, 1),)))


@pytest.mark.parametrize("device, neurons, v_bits, bias, decay_mode", [
    ("iCE40UP5K", 128, 16, True, "shift"),  # 17 + 28 bits: 3 EBRs, not 2 + 2
    pytest.param("iCE40UP5K", 10, 17, True, "shift", marks=pytest.mark.slow),  # 18 + 29
    pytest.param("iCE40UP5K", 200, 16, False, "shift", marks=pytest.mark.slow),  # 17 + 20
    # 17 bits (18 with the byte's pad) + 15: one 512 x 36 block, not two
    pytest.param("LFE5U-85F", 128, 16, False, "none", marks=pytest.mark.slow),
])
def test_shared_state_and_params_block_ram_is_what_yosys_maps(device, neurons, v_bits, bias,
                                                              decay_mode):
    """A core whose state and parameters share one word (fewer block RAMs than two memories,
    by the mapper's count: `shared_params_offset`) takes the block RAMs the mapper counts for
    the image, as yosys maps them."""
    from spikeforge.compiler.mapper import (
        BRAM_STATUS,
        estimate_resources,
        link_block_ram,
        shared_params_offset,
        status_in_bram,
    )

    image = neuron_memory_image(device, neurons, v_bits, bias=bias, decay_mode=decay_mode)
    core = image.config.cores[0]
    assert shared_params_offset(image.layers[0], core, device) is not None
    need = (estimate_resources(image.layers, image.config)["bram"][0]
            - link_block_ram(image.layers, device)
            - BRAM_STATUS * status_in_bram(image.layers, image.config))  # the link's
    assert synth_stats(image, device)["bram"] == need

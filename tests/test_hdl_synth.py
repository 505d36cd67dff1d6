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


def small_image(device: str) -> Image:
    layer = random_layer(np.random.default_rng(7), "fc", 64, 32, weight_bits=4, v_bits=12)
    return Image(64, [layer], HwConfig(device, (CoreConfig(0, 0, 32, 4),)))


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


@pytest.mark.parametrize("rule", ["stdp", "three_factor"])
def test_learning_block_ram_is_what_yosys_maps(rule):
    """The mapper's count of a learning unit's block RAMs (what `build`'s fit check adds) is
    the difference yosys makes between the same array with and without the rule."""
    from spikeforge.compiler.mapper import learning_block_ram

    image = small_image("iCE40UP5K")
    learning = image.with_learning(0, rule)
    extra = learning_block_ram(learning.layers, learning.config, learning.learning)
    assert extra >= 1
    assert (synth_stats(learning, "iCE40UP5K")["bram"]
            - synth_stats(image, "iCE40UP5K")["bram"]) == extra

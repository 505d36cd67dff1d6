"""Convolutional layers in the mapper: channel-aligned cores, lanes over output channels, the
memory model's closed forms, SPRAM placement of kernels and accumulators on the UP5K for networks
shaped as snnTorch's tutorial 6 (12C5-MP2-64C5-MP2-FC10 on 28 x 28, widths as it compiles to at
8 and 4 bits), refusals by name, and a conv core's weight memory against a direct packing."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from spikeforge.boards.catalog import board_target
from spikeforge.compiler.mapper import (
    BRAM_SHAPES,
    ICE40_EXTRA_CELLS_PER_CONV_CORE,
    SPRAM_DEPTH,
    CorePlacement,
    FitError,
    blocks_for,
    core_luts,
    estimate_resources,
    map_network,
    memory_placement,
    spram_cores,
    spram_primitives,
)
from spikeforge.image import (
    ConvSpec,
    CoreConfig,
    HwConfig,
    Image,
    ImageError,
    LayerParams,
    assemble_kernel,
    core_channels,
    core_groups,
    weight_depth,
)
from spikeforge.protocol import DEFAULT_MAX_PAYLOAD

from .strategies import conv_layer

CONV1 = ConvSpec(1, 28, 28, 12, 5, pool="max", pool_size=2)
CONV2 = ConvSpec(12, 12, 12, 64, 5, pool="max", pool_size=2)
# acc_bits and v_bits per layer as tutorial 6 compiles (tests/test_conv_tutorial6.py)
WIDTHS = {8: ((11, 14, 15), (13, 15, 16)), 4: ((7, 11, 11), (9, 11, 12))}


def shaped_layer(name: str, n_out: int, weight_bits: int, acc_bits: int, v_bits: int, *,
                 conv: ConvSpec | None = None, n_in: int = 0) -> LayerParams:
    """A layer of the given shape and widths: kernel (or weights) small enough for acc_bits,
    bias differing per channel, threshold and decay uniform."""
    rows = conv.out_channels if conv else n_out
    weights = np.zeros((rows, conv.taps if conv else n_in), np.int32)
    weights[:, 0] = 1
    return LayerParams(name, weights, bias=np.repeat(np.arange(rows) % 3 - 1, n_out // rows),
                       threshold=np.full(n_out, 50), weight_bits=weight_bits, v_bits=v_bits,
                       acc_bits=acc_bits, decay_mode="shift", decay_shift=np.full(n_out, 3),
                       conv=conv)


def tutorial6(bits: int) -> list[LayerParams]:
    accs, vs = WIDTHS[bits]
    return [shaped_layer("conv1", CONV1.n_out, bits, accs[0], vs[0], conv=CONV1),
            shaped_layer("conv2", CONV2.n_out, bits, accs[1], vs[1], conv=CONV2),
            shaped_layer("fc", 10, bits, accs[2], vs[2], n_in=CONV2.n_out)]


def mapping(layers: list[LayerParams], n_inputs: int, **options) -> HwConfig:
    """The UP5K mapping of `layers`, fitting or not (a FitError carries the one tried)."""
    try:
        return map_network(layers, n_inputs, device="iCE40UP5K", **options)
    except FitError as exc:
        return exc.config


# -- cores ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "cores"), [
    (CONV1, 1),  # 12 x 24 x 24 = 6,912 accumulators
    (CONV2, 1),  # 64 x 8 x 8 = 4,096
    (ConvSpec(1, 64, 64, 7, 3, padding=1), 2),  # 7 x 64 x 64 = 28,672: 4 + 3 channels
    (ConvSpec(1, 200, 200, 3, 3, padding=1, pool="max", pool_size=2), 3),  # 40,000 a channel
])
def test_split_is_the_fewest_channel_aligned_cores_within_one_spram(spec, cores):
    layer = conv_layer(np.random.default_rng(0), "c", spec, weight_bits=8)
    config = mapping([layer], spec.n_in, max_neurons_per_core=1)  # a dense-only limit
    conv_h, conv_w = spec.conv_shape
    channels = [core_channels(layer, c) for c in config.cores]
    assert len(config.cores) == cores
    assert channels[0][0] == 0 and channels[-1][1] == spec.out_channels
    assert all(a[1] == b[0] for a, b in zip(channels, channels[1:], strict=False))
    sizes = [c1 - c0 for c0, c1 in channels]
    assert max(sizes) - min(sizes) <= 1
    per_core = max(1, SPRAM_DEPTH // (conv_h * conv_w))
    assert max(sizes) <= per_core and len(sizes) == math.ceil(spec.out_channels / per_core)
    positions = spec.out_shape[1] * spec.out_shape[2]
    assert all(c.lo % positions == 0 and c.hi % positions == 0 for c in config.cores)


@pytest.mark.parametrize(("channels", "bits", "lanes"), [(12, 8, 6), (64, 8, 8), (12, 4, 12),
                                                          (10, 8, 5), (3, 8, 3)])
def test_lanes_span_output_channels_within_the_read_width(channels, bits, lanes):
    """The widest word of the 64-bit iCE40 budget, trimmed to keep the lane groups: 12
    channels of 8 bits take 6 lanes (2 groups), not 8."""
    spec = ConvSpec(1, 4, 4, channels, 3)
    layer = conv_layer(np.random.default_rng(1), "c", spec, weight_bits=bits)
    (core,) = map_network([layer], spec.n_in, device="iCE40HX8K").cores
    assert core.lanes == lanes and core.lanes * bits <= 64
    assert core_groups(layer, core) == math.ceil(channels / lanes)
    assert weight_depth(layer, core) == spec.taps * math.ceil(channels / lanes)
    explicit = map_network([layer], spec.n_in, device="iCE40HX8K", lanes=4)
    assert explicit.cores[0].lanes == min(4, channels)


# -- memory model and placement -------------------------------------------------------------------

def test_memory_model_of_a_conv_core_in_closed_form():
    """One conv core on the HX8K (no SPRAM): kernel lanes*w x C_in*K^2*groups, accumulators
    lanes*acc x conv_h*conv_w*groups, state (v+1) x neurons, bias per channel (a table of
    channels: 12 entries, one block), threshold and decay uniform (constants); the host link's
    buffer: its payload and, two bytes each, the layer's output events."""
    layers = tutorial6(8)[:1]
    core = CoreConfig(0, 0, CONV1.n_out, 4)
    config = HwConfig("iCE40HX8K", (core,))
    shapes = BRAM_SHAPES["ice40"]
    groups = 3
    expected = (blocks_for(8, DEFAULT_MAX_PAYLOAD + 2 * CONV1.n_out, shapes)
                + blocks_for(4 * 8, 25 * groups, shapes)
                + blocks_for(4 * 11, 24 * 24 * groups, shapes)
                + blocks_for(13 + 1, CONV1.n_out, shapes) + blocks_for(2, 12, shapes))
    assert estimate_resources(layers, config)["bram"][0] == expected
    uniform = [replace(layers[0], bias=np.zeros(CONV1.n_out, np.int32))]
    assert estimate_resources(uniform, config)["bram"][0] == expected - 1
    rng = np.random.default_rng(2)
    per_neuron = [replace(layers[0], bias=rng.integers(-3, 4, CONV1.n_out))]
    assert estimate_resources(per_neuron, config)["bram"][0] == \
        expected - 1 + blocks_for(3, CONV1.n_out, shapes)


@pytest.mark.parametrize(("bits", "lanes", "placed", "spram"), [
    # (core -> (weights in SPRAM, accumulators in SPRAM)) as the plan of issue 12 has it: conv1's
    # accumulators, conv2's kernel and accumulators, fc's weights, one primitive each
    (8, (6, 2, 2), ((False, True), (True, True), (True, False)), 4),
    # at 4 bits fc's 13-bit state and 2-bit biases share one block RAM word (not two blocks),
    # which leaves block RAM enough for conv2's accumulators
    (4, (12, 4, 4), ((False, True), (True, False), (True, False)), 3),
])
def test_tutorial6_memories_on_the_up5k(bits, lanes, placed, spram):
    layers = tutorial6(bits)
    config = HwConfig("iCE40UP5K", tuple(CoreConfig(i, 0, layer.n_out, n) for i, (layer, n)
                                         in enumerate(zip(layers, lanes, strict=True))))
    placement = memory_placement(layers, config)
    assert tuple((p.weights_spram, p.acc_spram) for p in placement) == placed
    assert spram_cores(layers, config) == frozenset({1, 2})
    # one primitive each: conv1's 11 x 6,912 accumulators, conv2's kernel of 16-bit words,
    # conv2's 14 x 4,096 accumulators, fc's 16-bit weight words
    assert spram_primitives(WIDTHS[bits][0][0], 12 * 24 * 24) == 1
    assert spram_primitives(lanes[1] * bits, 25 * 12 * 64 // lanes[1]) == 1
    estimate = estimate_resources(layers, config)
    assert estimate["spram"] == (spram, 4)
    assert estimate["bram"][0] <= 30


@pytest.mark.parametrize("bits", [8, 4])
def test_tutorial6_maps_onto_the_icebreaker_with_spram(bits):
    """Block RAM alone cannot hold conv1's accumulators, conv2's kernel and accumulators and
    fc's weights; the mapper finds lane widths whose memories fit with the four SPRAMs (conv1's
    and conv2's accumulators and conv2's kernel among them) and whose LUTs fit."""
    layers = tutorial6(bits)
    shapes = BRAM_SHAPES["ice40"]
    alone = (blocks_for(bits, 25 * 12 * 64, shapes) + blocks_for(WIDTHS[bits][0][1], 4096, shapes)
             + blocks_for(WIDTHS[bits][0][0], 6912, shapes) + blocks_for(bits, 10 * 1024, shapes))
    assert alone > 30
    board, device, clock_hz = board_target("icebreaker")
    config = map_network(layers, CONV1.n_in, board=board, device=device, clock_hz=clock_hz)
    assert config.device == "iCE40UP5K" and config.board == "icebreaker"
    assert [c.layer for c in config.cores] == [0, 1, 2]
    placement = memory_placement(layers, config)
    assert placement[0].acc_spram and placement[1].acc_spram and placement[1].weights_spram
    estimate = estimate_resources(layers, config)
    assert all(need <= cap for need, cap in estimate.values())
    assert estimate["spram"][0] <= 4
    assert all(c.lanes * bits <= 64 for c in config.cores)


def test_a_conv_network_too_large_is_refused_naming_the_resources():
    big = ConvSpec(8, 64, 64, 64, 5, padding=2, pool="max", pool_size=2)
    layer = conv_layer(np.random.default_rng(3), "big", big, weight_bits=8, v_bits=16)
    with pytest.raises(FitError, match=r"^the network does not fit iCE40UP5K: luts need \d+, "
                                       r"have 5280; bram need \d+, have 30 \(SPRAM: 4 of 4 in "
                                       r"use; core \d+'s .* would take \d+ more\)$") as exc:
        map_network([layer], big.n_in, device="iCE40UP5K")
    assert {"luts", "bram"} <= {r for r, (need, cap) in exc.value.resources.items()
                                if need > cap}


# yosys synth_ice40 of hdl/conv.py ConvCore alone (SB_SPRAM256KA for SPRAM), tutorial-6 shapes:
# (layer, bits, lanes, kernel in SPRAM, accumulators in SPRAM) -> LUT4s; bench/conv_resources.py
YOSYS_CONV_LUTS = {(0, 8, 1, False, True): 736, (0, 8, 6, False, True): 839,
                   (0, 4, 1, False, True): 681, (1, 8, 2, True, True): 734,
                   (1, 8, 6, True, True): 799, (1, 4, 1, True, True): 673,
                   (0, 8, 6, False, False): 1201, (1, 8, 6, True, False): 1202}


@pytest.mark.parametrize(("key", "luts"), YOSYS_CONV_LUTS.items())
def test_conv_core_luts_bound_yosys_from_above(key, luts):
    """The model is at or above what yosys gives the core, by at most 70 LUT4s (8 %)."""
    index, bits, lanes, spram_kernel, spram_acc = key
    layer = tutorial6(bits)[index]
    core = CoreConfig(index, 0, layer.n_out, lanes)
    model = core_luts(layer, core, CorePlacement(spram_kernel, spram_acc))
    assert luts <= model <= luts + 70


def test_conv_luts_count_each_core():
    layers = tutorial6(8)[:1]
    one = HwConfig("iCE40HX8K", (CoreConfig(0, 0, CONV1.n_out, 1),))
    two = HwConfig("iCE40HX8K", (CoreConfig(0, 0, 864, 1), CoreConfig(0, 864, CONV1.n_out, 1)))
    luts = [estimate_resources(layers, c)["luts"][0] for c in (one, two)]
    # one more core: its LUTs and the cells nextpnr cannot pack with them
    assert luts[1] - luts[0] == core_luts(layers[0], two.cores[1], CorePlacement()) + \
        ICE40_EXTRA_CELLS_PER_CONV_CORE


# -- contracts ------------------------------------------------------------------------------------

def test_conv_cores_must_hold_whole_channels():
    layers = tutorial6(8)[:1]  # 12 channels of 12 x 12 = 144 neurons
    for lo_hi in ((0, 100), (100, CONV1.n_out)):
        split = (CoreConfig(0, 0, lo_hi[0] or lo_hi[1], 1),
                 CoreConfig(0, lo_hi[0] or lo_hi[1], CONV1.n_out, 1))
        image = Image(CONV1.n_in, layers, HwConfig("iCE40UP5K", split))
        with pytest.raises(ImageError, match=r"^core [01]: layer 0 is a convolution of 12 "
                                             r"channels of 12x12 neurons, so its cores must hold "
                                             r"whole channels \(lo and hi multiples of 144\), "
                                             r"not neurons \[\d+, \d+\)$"):
            image.check()
    image = Image(CONV1.n_in, layers, HwConfig("iCE40UP5K", (CoreConfig(0, 0, 288, 3),
                                                             CoreConfig(0, 288, 1728, 1))))
    with pytest.raises(ImageError, match=r"^core 0: lanes must be 1\.\.2 \(the convolution "
                                         r"channels it holds\), not 3$"):
        image.check()


def test_conv_weight_memory_is_the_packed_kernel_slice():
    """Checked against a packing written here: word row * groups + g holds channels
    c0 + g * lanes + p in bits [p * w, (p + 1) * w), two's complement, little-endian."""
    rng = np.random.default_rng(4)
    spec = ConvSpec(2, 6, 6, 5, 3, padding=1, pool="max", pool_size=2)
    layer = conv_layer(rng, "c", spec, weight_bits=4)
    per = 9
    image = Image(spec.n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, 2 * per, 2),
                                                             CoreConfig(0, 2 * per, 5 * per, 2))))
    image.check()
    for index, (c0, c1) in enumerate(((0, 2), (2, 5))):
        memory = image.weight_memory(index)
        lanes, groups = 2, math.ceil((c1 - c0) / 2)
        assert memory.shape == (spec.taps * groups, 1)
        for row in range(spec.taps):
            for g in range(groups):
                word = int.from_bytes(memory[row * groups + g].tobytes(), "little")
                for p in range(lanes):
                    c = c0 + g * lanes + p
                    want = int(layer.weights[c, row]) & 0xF if c < c1 else 0
                    assert (word >> (4 * p)) & 0xF == want
    # and back, as a board's read-back decodes them
    np.testing.assert_array_equal(
        assemble_kernel(layer, image.config.cores, 0, image.weight_memory), layer.weights)


def test_check_gateware_admits_a_conv_and_names_what_it_cannot_run():
    """The convolution core (hdl/conv.py ConvCore) runs the LIF core's neuron models (either
    reset timing and compare, multi-spike inputs and outputs, a synaptic current); an LI
    readout is refused by layer and feature, learning by the layer's name."""
    spec = ConvSpec(1, 6, 6, 2, 3)
    plain = conv_layer(np.random.default_rng(5), "c", spec)
    image = Image(spec.n_in, [plain], HwConfig("iCE40UP5K", (CoreConfig(0, 0, spec.n_out, 1),)))
    current = {"syn_decay_mode": "shift", "syn_decay_shift": np.full(spec.n_out, 2),
               "syn_bits": 16}
    for changes in ({}, {"compare": ">="}, {"reset_delay": False},
                    {"in_max_spikes": 2, "acc_bits": 40}, {"max_spikes": 3}, current):
        replace(image, layers=[replace(plain, **changes)]).check_gateware()
    bad = replace(image, layers=[replace(plain, spiking=False)])
    with pytest.raises(ImageError, match=r"^the gateware's convolution core streams spikes, "
                                         r"not membranes, but layer 0 \('c'\) is a "
                                         r"convolution with LI readout \(no spikes\): run it "
                                         r"in the golden model"):
        bad.check_gateware()
    with pytest.raises(ImageError, match=r"a convolution cannot learn"):
        image.with_learning(0, "stdp")


def test_a_target_refuses_a_conv_it_cannot_run_and_maps_a_plain_one():
    spec = ConvSpec(1, 6, 6, 2, 3)
    plain = conv_layer(np.random.default_rng(6), "c", spec)
    config = map_network([plain], spec.n_in, device="iCE40UP5K")
    assert [(c.lo, c.hi) for c in config.cores] == [(0, spec.n_out)]
    with pytest.raises(ImageError, match=r"layer 0 \('c'\) is a convolution with LI readout"):
        map_network([replace(plain, spiking=False)], spec.n_in, device="iCE40UP5K")
    golden_only = map_network([replace(plain, spiking=False)], spec.n_in)
    assert golden_only.cores == (CoreConfig(0, 0, spec.n_out, 1),)

"""Mapper: tiling, lanes, device/board names and the resource estimate, against closed forms."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.boards.catalog import BOARD_DEVICES, board_target
from spikeforge.compiler.devices import DEVICES
from spikeforge.compiler.mapper import (
    BALANCE_SLACK,
    BRAM_SHAPES,
    READ_BITS,
    FitError,
    _memory_blocks,
    _param_bits,
    blocks_for,
    estimate_resources,
    map_network,
    status_in_bram,
    step_weight_reads,
)
from spikeforge.hdl.core import param_layout
from spikeforge.image import MAX_CORES, CoreConfig, Image, ImageError, LayerParams, image_from_bytes
from spikeforge.sim import golden

SETTINGS = settings(deadline=None, max_examples=40,
                    suppress_health_check=[HealthCheck.too_slow])


def make_layers(sizes, *, bits=8, v_bits=16, decay_mode="shift", seed=0):
    """Integer layers of the given shape with random weights that fill `bits`."""
    rng = np.random.default_rng(seed)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        weights = rng.integers(lo, hi + 1, (n_out, n_in))
        decay = {"shift": {"decay_shift": 3}, "none": {},
                 "mul": {"decay_mul": 230, "decay_frac": 8}}[decay_mode]
        probe = LayerParams(f"l{index}", weights, bias=0, threshold=50, weight_bits=bits,
                            v_bits=v_bits, acc_bits=40, decay_mode=decay_mode, **decay)
        layers.append(LayerParams(f"l{index}", weights, bias=0, threshold=50, weight_bits=bits,
                                  v_bits=v_bits, acc_bits=probe.acc_bits_needed(),
                                  decay_mode=decay_mode, **decay))
    return layers


# -- tiling and lanes ----------------------------------------------------------------------------
@SETTINGS
@given(sizes=st.lists(st.integers(1, 700), min_size=2, max_size=4),
       max_neurons=st.integers(1, 300), bits=st.integers(2, 8),
       device=st.sampled_from(["LFE5U-85F", "iCE40UP5K"]))
def test_cores_tile_every_layer(sizes, max_neurons, bits, device):
    sizes[0] = min(sizes[0], 40)  # keep the weight memories small enough to fit
    layers = make_layers(sizes, bits=bits)
    try:
        config = map_network(layers, sizes[0], device=device, max_neurons_per_core=max_neurons)
    except FitError as exc:
        # Refused only for a genuine overflow; the mapping it tried must still tile.
        over = [r for r, (need, cap) in exc.resources.items() if need > cap]
        assert over and all(f"{r} need" in str(exc) for r in over)
        config = exc.config
    budget = READ_BITS[DEVICES[config.device].family]
    for index, layer in enumerate(layers):
        cores = sorted(config.cores_of(index), key=lambda c: c.lo)
        assert len(cores) == math.ceil(layer.n_out / max_neurons)
        assert [c.lo for c in cores[1:]] == [c.hi for c in cores[:-1]]
        assert cores[0].lo == 0 and cores[-1].hi == layer.n_out
        sizes_of = [c.neurons for c in cores]
        assert max(sizes_of) <= max_neurons and max(sizes_of) - min(sizes_of) <= 1
        for core in cores:
            assert 1 <= core.lanes <= core.neurons
            assert core.lanes * bits <= budget or core.lanes == 1
    if len(config.cores) > MAX_CORES:  # the host protocol and the array address a core by a byte
        with pytest.raises(ImageError, match=rf"^an image must have 1\.\.{MAX_CORES} cores"):
            Image(sizes[0], layers, config).check()
    else:
        Image(sizes[0], layers, config).check()


@pytest.mark.parametrize(("neurons", "bits", "device", "lanes"), [
    (128, 8, "iCE40UP5K", 8),   # 64-bit word / 8 bits
    (10, 8, "iCE40UP5K", 5),    # 2 groups either way: 5 lanes suffice
    (7, 8, "iCE40UP5K", 7),
    (128, 4, "iCE40HX8K", 16),
    (128, 8, "LFE5U-25F", 9),   # 72-bit word: 15 groups of 9 lanes ...
    (100, 3, "LFE5U-25F", 20),  # 24 lanes -> 5 groups -> 20 lanes
])
def test_lane_choice_closed_form(neurons, bits, device, lanes):
    layers = make_layers([16, neurons], bits=bits)
    config = map_network(layers, 16, device=device)
    [core] = config.cores
    assert core.lanes == lanes
    widest = READ_BITS[DEVICES[device].family] // bits
    assert core.groups == math.ceil(neurons / min(widest, neurons))


def test_given_lanes():
    layers = make_layers([16, 40, 3], bits=8)
    config = map_network(layers, 16, lanes=4)
    assert [c.lanes for c in config.cores] == [4, 3]
    with pytest.raises(ValueError, match="72 bits"):
        map_network(layers, 16, lanes=9, device="iCE40UP5K")
    with pytest.raises(ValueError, match="lanes must be at least 1, not 0"):
        map_network(layers, 16, lanes=0)


def test_layer_chain_is_checked():
    layers = make_layers([16, 40, 3])
    with pytest.raises(ValueError, match="expects 16 inputs but its source gives 17"):
        map_network(layers, 17)
    with pytest.raises(ValueError, match="max_neurons_per_core must be at least 1, not 0"):
        map_network(layers, 16, max_neurons_per_core=0)


# -- fitting -------------------------------------------------------------------------------------
def test_big_network_does_not_fit_hx1k():
    layers = make_layers([784, 512, 512, 10], bits=8)
    with pytest.raises(FitError) as info:
        map_network(layers, 784, device="iCE40HX1K")
    message = str(info.value)
    assert "\n" not in message and "iCE40HX1K" in message
    need, cap = info.value.resources["bram"]
    assert cap == 16 and f"bram need {need}, have 16" in message
    weight_bits = 8 * (784 * 512 + 512 * 512 + 512 * 10)
    assert need >= math.ceil(weight_bits / 4096)  # no estimate may beat the raw bit count
    luts_need, luts_cap = info.value.resources["luts"]
    assert (f"luts need {luts_need}, have 1280" in message) == (luts_need > luts_cap)


def test_digits_network_fits_up5k():
    layers = make_layers([64, 128, 10], bits=8)
    board, device, clock_hz = board_target("icebreaker")
    config = map_network(layers, 64, board=board, device=device, clock_hz=clock_hz)
    assert config.device == "iCE40UP5K" and config.board == "icebreaker"
    assert config.clock_hz == 12e6
    for resource, (need, cap) in estimate_resources(layers, config).items():
        assert need <= cap, resource
    # 64 x 128 x 8 bits of weights take 16 of the 30 EBRs alone: the widest words (8 lanes)
    # leave too little room for the accumulators, so the mapper narrows the lanes.
    assert config.cores[0].lanes < 8
    assert estimate_resources(layers, config)["spram"][0] == 0


def test_step_weight_reads_is_the_slowest_dense_layers():
    """Layers overlap: a step's weight reads at full activity are its slowest core's,
    fan_in * groups (64 x ceil(128 / 2) against 128 x ceil(10 / 1))."""
    layers = make_layers([64, 128, 10], bits=8)
    config = map_network(layers, 64, device="iCE40UP5K", lanes=2)
    assert step_weight_reads(layers, config) == max(64 * 64, 128 * 5)
    narrow = replace(config, cores=(config.cores[0], replace(config.cores[1], lanes=1)))
    assert step_weight_reads(layers, narrow) == max(64 * 64, 128 * 10)


def test_balance_takes_the_fewest_cells_within_the_slack():
    """Each dense core ends on the lanes with the fewest estimated cells among those whose
    slowest-layer reads stay within BALANCE_SLACK of the search's: on the UP5K a 64-128-10
    network's output core takes one lane (its layer is not the slow one), with the STATUS
    counters still in block RAM; no narrower choice for any core is cheaper and allowed."""
    layers = make_layers([64, 128, 10], bits=8)
    config = map_network(layers, 64, device="iCE40UP5K")
    assert config.cores[1].lanes == 1 < config.cores[0].lanes
    assert status_in_bram(layers, config)
    bound = step_weight_reads(layers, config) * (1 + BALANCE_SLACK)
    cells = estimate_resources(layers, config)["luts"][0]
    for index, core in enumerate(config.cores):
        for lanes in range(1, core.lanes):
            cores = list(config.cores)
            cores[index] = replace(core, lanes=lanes)
            trial = replace(config, cores=tuple(cores))
            estimate = estimate_resources(layers, trial)
            assert (step_weight_reads(layers, trial) > bound
                    or estimate["luts"][0] >= cells
                    or estimate["bram"][0] > estimate["bram"][1])


def test_mapped_image_round_trips_and_runs():
    layers = make_layers([64, 300, 10], bits=6, seed=4)
    config = map_network(layers, 64, device="LFE5U-25F", max_neurons_per_core=128)
    assert len(config.cores_of(0)) == 3
    image = Image(64, layers, config)
    back = image_from_bytes(image.to_bytes())
    rng = np.random.default_rng(0)
    x = (rng.random((3, 10, 64)) < 0.2).astype(np.uint8)
    assert np.array_equal(golden.run(back, x).spikes, golden.run(image, x).spikes)
    for got, want in zip(back.layers, layers, strict=True):
        assert np.array_equal(got.weights, want.weights)


def test_dsp_use_follows_the_device():
    layers = make_layers([32, 64, 10], decay_mode="mul")
    up5k = estimate_resources(layers, map_network(layers, 32, device="iCE40UP5K"))
    hx8k = estimate_resources(layers, map_network(layers, 32, device="iCE40HX8K"))
    # one DSP per "mul" core plus the host link's, where the device has DSPs
    assert up5k["dsp"] == (3, 8) and hx8k["dsp"] == (0, 0)
    assert hx8k["luts"][0] > up5k["luts"][0]  # the multipliers move into the fabric
    shift = make_layers([32, 64, 10], decay_mode="shift")
    assert estimate_resources(shift, map_network(shift, 32))["dsp"] == (1, 8)


@SETTINGS
@given(width=st.integers(1, 200), depth=st.integers(1, 40000),
       family=st.sampled_from(sorted(BRAM_SHAPES)))
def test_block_count_closed_form(width, depth, family):
    shapes = BRAM_SHAPES[family]
    block_bits = {"ice40": 4096, "ecp5": 18432}[family]
    blocks = blocks_for(width, depth, shapes)
    assert blocks >= 1
    assert blocks >= math.ceil(width * depth / block_bits)
    assert blocks == min(math.ceil(width / w) * math.ceil(depth / d) for w, d in shapes)
    for w, d in shapes:
        usable = w * d
        assert usable <= block_bits  # the port shapes are those of one block


def test_block_count_examples():
    ice40, ecp5 = BRAM_SHAPES["ice40"], BRAM_SHAPES["ecp5"]
    assert blocks_for(64, 1024, ice40) == 16
    assert blocks_for(40, 256, ice40) == 3
    assert blocks_for(72, 512, ecp5) == 2
    assert blocks_for(9, 2048, ecp5) == 1
    assert blocks_for(1, 1, ice40) == 1


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("board", "device", "clock"), [
    ("icebreaker", "iCE40UP5K", 12e6), ("iCEBreaker", "iCE40UP5K", 12e6),
    ("ice40-hx8k-b-evn", "iCE40HX8K", 12e6), ("ulx3s-85f", "LFE5U-85F", 25e6),
    ("ulx3s-45f", "LFE5U-45F", 25e6), ("orangecrab", "LFE5U-25F", 48e6),
    ("versa-ecp5", "LFE5U-45F", 100e6), ("colorlight-i5", "LFE5U-25F", 25e6),
])
def test_board_devices(board, device, clock):
    layers = make_layers([8, 4])
    name, found, clock_hz = board_target(board)
    config = map_network(layers, 8, board=name, device=found, clock_hz=clock_hz)
    assert (config.device, config.clock_hz) == (device, clock)
    assert map_network(layers, 8, board=name, device=found, clock_hz=30e6).clock_hz == 30e6
    assert BOARD_DEVICES[board.lower()][0] == device


def test_unknown_names_suggest_the_closest():
    layers = make_layers([8, 4])
    with pytest.raises(ValueError, match="unknown board 'icebraker'; did you mean icebreaker"):
        board_target("icebraker")
    with pytest.raises(ValueError, match="unknown device 'iCE40UP6K'; did you mean iCE40UP5K"):
        map_network(layers, 8, device="iCE40UP6K")
    with pytest.raises(ValueError, match="carries a iCE40UP5K"):
        board_target("icebreaker", "LFE5U-25F")
    assert map_network(layers, 8, device="up5k").device == "iCE40UP5K"
    assert map_network(layers, 8).device == "iCE40UP5K"


def test_parameter_memory_width_is_the_gateware_word():
    """Threshold 8 bits (v_bits 9), biases in [-4, 3] (3 bits), a varying shift (5 bits): a
    16-bit word, so 256 neurons fit one 256 x 16 EBR."""
    n = 256
    layer = LayerParams("p", np.ones((n, 4), np.int32), bias=np.arange(n) % 8 - 4,
                        threshold=np.arange(n) % 200 + 1, weight_bits=2, v_bits=9, acc_bits=4,
                        decay_mode="shift", decay_shift=np.arange(n) % 4)
    core = CoreConfig(0, 0, n, 1)
    assert _param_bits(layer, core) == 16 == param_layout(layer).size
    assert _memory_blocks(_param_bits(layer, core), n, BRAM_SHAPES["ice40"]) == 1
    uniform_bias = LayerParams("q", layer.weights, bias=3, threshold=layer.threshold,
                               weight_bits=2, v_bits=9, acc_bits=4, decay_mode="shift",
                               decay_shift=layer.decay_shift)
    assert _param_bits(uniform_bias, core) == 13  # a uniform field is a constant


@pytest.mark.parametrize(("fields", "state_bits"), [
    ({}, 10),
    ({"max_spikes": 2}, 11),
    ({"max_spikes": 7}, 12),
    ({"syn_decay_mode": "shift", "syn_decay_shift": 2, "syn_bits": 12}, 22),
    ({"spiking": False, "threshold": 0}, 10),
])
def test_state_memory_width_is_the_gateware_word(fields, state_bits):
    """The mapper's state word is hdl.core.state_layout's: v, the count's bits, syn."""
    from dataclasses import replace

    from spikeforge.compiler.mapper import _state_bits
    from spikeforge.hdl.core import state_layout

    layer = LayerParams("s", np.ones((3, 4), np.int32), bias=0, threshold=2, weight_bits=2,
                        v_bits=9, acc_bits=8, decay_mode="none")
    layer = replace(layer, **fields)
    assert _state_bits(layer) == state_bits == state_layout(layer).size


def test_new_models_cost_more_luts_than_the_plain_lif():
    """The resource estimate of a current-based or multi-spike core exceeds the plain core's
    (they have more hardware), an LI readout's does not."""
    from dataclasses import replace

    layer = LayerParams("m", np.ones((10, 64), np.int32), bias=0, threshold=20, weight_bits=4,
                        v_bits=16, acc_bits=12, decay_mode="shift", decay_shift=3)
    config = map_network([layer], 64)
    plain = estimate_resources([layer], config)["luts"][0]
    cuba = replace(layer, syn_decay_mode="shift", syn_decay_shift=2, syn_bits=16)
    multi = replace(layer, max_spikes=4, acc_bits=12)
    li = replace(layer, spiking=False, threshold=0)
    assert estimate_resources([cuba], config)["luts"][0] > plain
    assert estimate_resources([multi], config)["luts"][0] > plain
    assert estimate_resources([li], config)["luts"][0] == plain
    assert map_network([cuba], 64, device="iCE40UP5K").device == "iCE40UP5K"

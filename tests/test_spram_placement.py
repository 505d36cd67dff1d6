"""Weights in the UP5K's SPRAM: the mapper's placement against closed forms, a core whose weights
live in the SPRAM model against the golden model (Amaranth simulator), and MNIST-size networks
in RTL (slow)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spikeforge.compiler.mapper import (
    BRAM_SHAPES,
    BRAM_STATUS,
    FitError,
    blocks_for,
    device_capacity,
    estimate_resources,
    map_network,
    spram_cores,
    spram_primitives,
    status_in_bram,
)
from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.core import LifCore, MemSpace
from spikeforge.image import CoreConfig, HwConfig, Image, LayerParams
from spikeforge.sim import golden

from .test_compiler_mapper import make_layers
from .test_hdl_core import core_access, run_core, simulate, single_layers

SETTINGS = settings(deadline=None, max_examples=25,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def weight_shape(layer: LayerParams, core: CoreConfig) -> tuple[int, int]:
    return core.lanes * layer.weight_bits, layer.fan_in * core.groups


# -- placement --------------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [128, 256])
def test_mnist_sizes_fit_the_up5k_with_their_weights_in_spram(hidden):
    layers = make_layers([784, hidden, 10], bits=4)
    config = map_network(layers, 784, board="icebreaker", device="iCE40UP5K")
    estimate = estimate_resources(layers, config)
    assert all(need <= cap for need, cap in estimate.values()), estimate
    placed = spram_cores(layers, config)
    hidden_cores = [i for i, c in enumerate(config.cores) if c.layer == 0]
    assert set(hidden_cores) <= placed
    # 784 x hidden x 4 bits is 98 or 196 EBRs of weights alone: only SPRAM holds it
    assert math.ceil(784 * hidden * 4 / 4096) > 30
    spram = sum(spram_primitives(*weight_shape(layers[config.cores[i].layer], config.cores[i]))
                for i in placed)
    assert estimate["spram"] == (spram, 4)
    # the port: one word of at most 64 bits (4 SPRAMs of 16) per cycle
    for i in placed:
        width, depth = weight_shape(layers[config.cores[i].layer], config.cores[i])
        assert width <= 64 and spram_primitives(width, depth) == \
            math.ceil(width / 16) * math.ceil(depth / 16384)
    # the same networks do not fit an HX8K (no SPRAM): the error names the block RAM
    with pytest.raises(FitError, match=r"bram need \d+, have 32"):
        map_network(layers, 784, device="iCE40HX8K")


def test_block_ram_first_spram_only_when_it_runs_out():
    layers = make_layers([64, 128, 10], bits=8)
    config = map_network(layers, 64, device="iCE40UP5K")
    assert spram_cores(layers, config) == frozenset()
    assert estimate_resources(layers, config)["spram"] == (0, 4)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 900), min_size=2, max_size=3),
       bits=st.integers(2, 8), max_neurons=st.integers(16, 300))
def test_placement_rule(sizes, bits, max_neurons):
    """The placement never takes more SPRAMs than the UP5K has, moves weights only while block
    RAM is over, and keeps every other memory in block RAM: the estimate's block RAM is the one
    without SPRAM less exactly the moved weight memories."""
    layers = make_layers(sizes, bits=bits)
    shapes = BRAM_SHAPES["ice40"]
    try:
        config = map_network(layers, sizes[0], device="iCE40UP5K",
                             max_neurons_per_core=max_neurons)
    except FitError as exc:
        config = exc.config
    placed = spram_cores(layers, config)
    estimate = estimate_resources(layers, config)
    hx8k = estimate_resources(layers, dataclasses.replace(config, device="iCE40HX8K"))
    weights = [blocks_for(*weight_shape(layers[c.layer], c), shapes) for c in config.cores]
    # (the STATUS counters take a block RAM only where one is left: `status_in_bram`)
    status = [BRAM_STATUS * status_in_bram(layers, c) for c in (
        config, dataclasses.replace(config, device="iCE40HX8K"))]
    assert estimate["bram"][0] - status[0] == (hx8k["bram"][0] - status[1]
                                               - sum(weights[i] for i in placed))
    assert estimate["spram"][0] == sum(
        spram_primitives(*weight_shape(layers[config.cores[i].layer], config.cores[i]))
        for i in placed) <= 4
    if not placed:
        return
    # the last memory moved was needed: without it block RAM would be over
    last = min(placed, key=lambda i: (weights[i] / spram_primitives(
        *weight_shape(layers[config.cores[i].layer], config.cores[i])), -i))
    assert estimate["bram"][0] + weights[last] > 30


def test_fit_error_names_spram_when_it_is_full():
    layers = make_layers([784, 1000, 10], bits=8)
    with pytest.raises(FitError) as info:
        map_network(layers, 784, device="iCE40UP5K")
    message = str(info.value)
    assert "\n" not in message and "bram need" in message and "have 30" in message
    assert "SPRAM" in message and "of 4" in message


@pytest.mark.slow  # about 20 s: a binary search of mappings
def test_device_capacity_counts_spram():
    up5k = device_capacity("iCE40UP5K")
    # the UP5K's 1 Mbit of SPRAM: at least the 784-256-10 hidden layer at 4 bits, far more
    # than its 120 kbit of block RAM could hold, never more than SPRAM and block RAM together
    assert up5k["synapses_4bit"] >= 784 * 256
    for bits in (4, 8):
        assert 30 * 4096 < up5k[f"synapses_{bits}bit"] * bits <= 30 * 4096 + 4 * 262144
    assert up5k["spram"] == 4


# -- gateware ---------------------------------------------------------------------------------

def _image(layer: LayerParams, lanes: int) -> Image:
    return Image(layer.n_in, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, layer.n_out,
                                                                         lanes),)))


@settings(deadline=None, max_examples=6,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(layer=single_layers(), lanes=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_core_with_spram_weights_loads_over_the_port_and_matches_golden(layer, lanes, seed):
    """SPRAM starts zeroed: the weights read back as zero, are written through the memory port
    (as WRITE_MEM and the flash loader write them), read back, and the core then runs
    bit-exact with the golden model."""
    rng = np.random.default_rng(seed)
    image = _image(layer, lanes)
    x = (rng.random((5, layer.n_in)) < 0.6).astype(np.uint8)
    ref = golden.run(image, x)
    dut = LifCore.from_image(image, 0, spram_weights=True)
    words = [int.from_bytes(row.tobytes(), "little") for row in image.weight_memory(0)]

    async def bench(ctx):
        await ctx.tick().until(dut.idle)
        for addr in range(len(words)):
            assert await core_access(ctx, dut, MemSpace.WEIGHTS, addr) == 0
        for addr, word in enumerate(words):
            await core_access(ctx, dut, MemSpace.WEIGHTS, addr, word)
        for addr, word in enumerate(words):
            assert await core_access(ctx, dut, MemSpace.WEIGHTS, addr) == word
        out, _ = await run_core(ctx, dut, [list(np.flatnonzero(row)) for row in x])
        assert out == [np.flatnonzero(row).tolist() for row in ref.spikes[0]]

    simulate(dut, bench)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_array_builds_the_mappers_placement():
    layers = make_layers([784, 128, 10], bits=4)
    image = Image(784, layers, map_network(layers, 784, device="iCE40UP5K"))
    array = CoreArray(image)
    assert array.spram_cores == spram_cores(layers, image.config) != frozenset()
    small = make_layers([64, 128, 10], bits=8)
    assert CoreArray(Image(64, small, map_network(small, 64))).spram_cores == frozenset()


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_learning_layer_in_spram_is_refused_by_name():
    layers = make_layers([784, 128, 10], bits=4)
    image = Image(784, layers, map_network(layers, 784, device="iCE40UP5K"))
    learning = image.with_learning(0, "stdp")
    with pytest.raises(ValueError, match=r"layer 'l0' learns.*SPRAM"):
        CoreArray(learning)


# -- RTL (Verilator): MNIST-size networks -------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("hidden", [128, 256])
def test_mnist_size_rtl_matches_golden(hidden):
    """784-hidden-10 at 4 bits, mapped for the iCEBreaker with the hidden layer's weights in
    SPRAM (loaded through the memory port by the testbench), on a fixed 10 % input."""
    from spikeforge.hdl.rtl import available_simulators, run_rtl

    if "verilator" not in available_simulators():
        pytest.skip("needs Verilator")
    layers = make_layers([784, hidden, 10], bits=4, seed=hidden)
    layers = [dataclasses.replace(layer, threshold=np.full(layer.n_out, t))
              for layer, t in zip(layers, (20, 6))]
    image = Image(784, layers, map_network(layers, 784, board="icebreaker",
                                           device="iCE40UP5K"))
    assert spram_cores(layers, image.config)
    x = (np.random.default_rng(7).random((1, 4, 784)) < 0.1).astype(np.uint8)
    got = run_rtl(image, x, simulator="verilator")
    want = golden.run(image, x)
    assert want.spike_counts.sum() > 0
    assert np.array_equal(got.spikes, want.spikes)
    for a, b in zip(got.final_membranes, want.final_membranes, strict=True):
        assert np.array_equal(a, b)


def _spram_image(seed: int = 9) -> Image:
    """256-128-10 at 4 bits: 32 EBRs of hidden weights, so the mapper puts them in SPRAM."""
    layers = make_layers([256, 128, 10], bits=4, seed=seed)
    layers = [dataclasses.replace(layer, threshold=np.full(layer.n_out, t))
              for layer, t in zip(layers, (12, 6))]
    image = Image(256, layers, map_network(layers, 256, device="iCE40UP5K"))
    assert spram_cores(layers, image.config)
    return image


@pytest.mark.slow
@pytest.mark.parametrize("flash", [False, True], ids=["host-link", "flash"])
def test_virtual_board_with_spram_weights_matches_golden(flash):
    """The whole SoC in Verilator: the SPRAM-placed weights come over the host link (Board
    loads and verifies them: WRITE_MEM reaches SPRAM) or from the simulated flash at reset."""
    from spikeforge.boards.runtime import Board
    from spikeforge.hdl.rtl import available_simulators

    if "verilator" not in available_simulators():
        pytest.skip("needs Verilator")
    image = _spram_image()
    x = (np.random.default_rng(9).random((1, 4, 256)) < 0.1).astype(np.uint8)
    with Board.virtual(image, flash=flash) as board:
        if flash:  # the blob is 16 KB: the simulated SPI reads take a while
            deadline = time.monotonic() + 600
            while board.status().device.not_loaded and board.status().device.load_error == 0:
                assert time.monotonic() < deadline, "the flash loader never finished"
                time.sleep(0.5)
            assert board.status().device.load_error == 0
        result = board.run(x)
    want = golden.run(image, x)
    assert want.spike_counts.sum() > 0
    assert np.array_equal(result.spikes, want.spikes)
    assert np.array_equal(result.sops, want.sops)

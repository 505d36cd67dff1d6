"""Mapper: quantized layers -> cores on a device (HwConfig), with a resource check.

Tiling. A layer with more than `max_neurons_per_core` neurons splits over the fewest cores that
respect the limit, as evenly as possible (sizes differ by at most one); core c of a layer holds
neurons [lo, hi). A convolution (hdl/conv.py ConvCore) splits by whole output channels instead:
[lo, hi) are channels c0..c1 of the pooled map in C order (multiples of out_h * out_w), over the
fewest cores that each hold at most CONV_CORE_ACCUMULATORS (16,384, one SPRAM's depth) pre-pool
accumulators, channels * conv_h * conv_w, channels spread as evenly as possible (one channel a
core when a channel alone holds more); `max_neurons_per_core` does not apply.

Lanes. A core integrates `lanes` neurons per cycle, reading one weight word of
lanes * weight_bits bits. The word must fit the memory read width the family can give a core:
64 bits on iCE40 (four 16-bit EBRs side by side, or the UP5K's four 16-bit SPRAMs), 72 bits on
ECP5 (two 36-bit DP16KD). Unless `lanes` is given, a core takes the widest word the budget
allows, then trims lanes to the fewest that keep the same number of lane groups (cycles per
event): 10 neurons under an 8-lane budget get 5 lanes, not 8. A convolution core's lanes are
over its output channels (1..its channels; groups = ceil(channels / lanes), `image.core_groups`).
When that does not fit the device, the budget of one layer at a time is halved: the layer whose
halving brings the estimate closest to fitting (ties: the layer with the most lanes), until it
fits or no layer can narrow. The search runs first with a block RAM left for the STATUS counters
(`status_in_bram`: in registers they cost more cells than the lanes that block RAM would buy),
then without; on a device with SPRAM with block RAM alone first, and only when no lane widths
fit that way again with memories allowed into SPRAM (placement below). When halving finds no fit
and the budgets' combinations number at most MAX_BUDGET_COMBINATIONS, every combination is
tried: of those that fit, the fewest halvings (ties: the most lanes); when none fits, the
closest (least total overrun) is the one a FitError reports. Halving alone can stall there: an
SPRAM primitive frees up only once a memory narrows to 16 bits, and meanwhile narrowing another
layer saves a little block RAM (tutorial 6 at 8 bits needs conv2's kernel and fc's weights both
at 2 lanes). Last, each dense core narrows to the lanes that cost the fewest logic cells by the
model below while the slowest layer's integration cycles at uniform activity
(`step_weight_reads`: layers overlap) grow by at most BALANCE_SLACK (5 %), the mapping still
fits, its SPRAM is no more and its STATUS counters stay in block RAM: a layer that integrates
little needs few lanes, and every lane costs cells (the digits network's output core 5 -> 1
lane, its accumulators then in a block RAM; 784-128-10 at 4 bits: 10 -> 1).

Resource model, calibrated against yosys `synth_ice40` of the generated SoC (hdl/soc.py: host
link + array) on the digits network at 8 and 4 bits and 2..16 lanes (within one block RAM and
about 3% of LUTs there). Per core:

    weight memory  depth fan_in * groups, width lanes * weight_bits
    accumulators   depth groups,          width lanes * acc_bits      (flip-flops if depth <= 2)
    state          depth neurons,         width v_bits + count bits + syn_bits
                                          (membrane, previous count: 1 bit for a single-spike
                                          layer, bits of max_spikes otherwise; the synaptic
                                          current of a current-based layer)
    parameters     depth neurons,         width of the fields that differ between the core's
                                          neurons (threshold v_bits - 1, bias, decay 5 or f + 1);
                                          uniform fields are constants and take no memory
    state + params one memory of depth neurons, width S' + P (S' the state's width rounded up
                   to the family's write-enable byte, WRITE_BYTE), where that takes fewer
                   block RAMs than the two apart (`shared_params_offset`; hdl.core.LifCore
                   builds the same)
    recurrent FIFO depth max_spikes * n_out + 2, width 17             (recurrent layers)

A convolution core (hdl/conv.py ConvCore) holding `channels` output channels, groups =
ceil(channels / lanes), conv map conv_h x conv_w before pooling, `neurons` pooled neurons:

    kernel         depth C_in * K * K * groups, width lanes * weight_bits
    accumulators   block RAM: depth conv_h * conv_w * groups, width lanes * acc_bits;
                   SPRAM (lane-serial, one value a word): depth channels * conv_h * conv_w,
                   width acc_bits
    state          depth neurons,         width v_bits + 1 (membrane, last spike)
    parameters     a field uniform over the core's neurons: a constant (no memory); constant
                   within each channel: a table of depth channels (block RAM unless at most
                   FF_MEMORY_DEPTH deep: a ROM yosys may map either way, counted as block RAM
                   here to be safe); otherwise per neuron, depth neurons

Each memory takes block RAMs in the data-port shape that needs fewest blocks
(iCE40 EBR 256x16, 512x8, 1024x4, 2048x2; ECP5 DP16KD 512x36, 1024x18, 2048x9, 4096x4,
8192x2, 16384x1), at least one block.

Memory placement (`memory_placement`, one CorePlacement per core; `spram_cores` lists the
cores whose weights moved). A device with SPRAM (the UP5K: four SB_SPRAM256KA of 16K x 16) may
hold there every core's weight memory (a convolution core's kernel) and a convolution core's
accumulators. A memory of width W and depth D takes ceil(W / 16) SPRAMs side by side (the port
bandwidth: one word of up to 64 bits, 16 synapses at 4 bits, per cycle) times ceil(D / 16384)
banks. The bitstream cannot initialise SPRAM, so a memory goes there only when block RAM runs
out: while the block RAM estimate exceeds the device, the candidate that frees the most block
RAMs per SPRAM primitive it takes (ties: the lower core index, weights before accumulators)
moves to SPRAM, as long as primitives are left for it. SPRAM is single-port: a dense core's
state, accumulator and parameter memories read and write in the same cycle and stay in block
RAM; a convolution core's accumulators may move because the core then updates them
lane-serially (a read, then the write of the sum, per value: hdl/conv.py `conv_cycles`), and
they need no loading (the core's clear sweep zeroes them). A learning layer's weights cannot
live in SPRAM (its read-modify-write needs both ports), which `hdl.array.CoreArray` refuses by
name; a convolution cannot learn (`LearningConfig.check`). An image with SPRAM-placed weights
loads them from flash at power-up or over the host link (docs/flash.md).

    LUTs = LUT_SOC + LUT_SOC_PER_LAYER per layer (host link, router, the array's links and
           per-layer counters)
           + per dense core (LUT_CORE + LUT_PER_V_BIT * v_bits + LUT_PER_NEURON_BIT *
           ceil(log2(neurons)) + lanes * (LUT_PER_LANE + LUT_PER_LANE_ACC_BIT * acc_bits),
           + LUT_INPUT_STAGE_PER_V_BIT * v_bits on iCE40 for a core whose update registers
           its inputs first: a per-neuron decay shift, "mul", the reset before the decay;
           hdl.neuron.NeuronUpdate.input_stage)
           + 230 + 2 * weight_bits * lanes for a core's learning unit
           + v_bits * (decay_frac + 1) for a "mul" core that finds no DSP left
           + 7 * syn_bits for a synaptic current, + 9 * v_bits for multi-spike counts
           (the digits-like 64-128-10 array on the UP5K, bench/core_resources.py --model:
           1,570 LUTs plain, 1,691 with a 16-bit current (2 lanes on the hidden core, not 4),
           1,853 with up to 4 spikes)
           + LUT_FLASH_LOADER (450) for the flash loader (`flash=True`: hdl/flashload.py,
           its CRC-32 and counters; measured as the logic cells it adds to a UP5K build)
           (LUT4s: least squares over the cores and SoCs of bench/resource_model.py --fit, the
           digits network at 8 and 4 bits, 64-40-24-10, 784-128-10 and 784-256-10 on the
           UP5K, each core within about 150 LUT4s of yosys, the rest within 20)
           + per convolution core
           (635 + 6 * v_bits + 3 * lanes * weight_bits + 58 * lanes with block-RAM
            accumulators)
           (yosys synth_ice40 of hdl/conv.py ConvCore alone on the UP5K, tutorial-6 shapes,
           SPRAM accumulators: conv1 8 bit lanes 1 / 6: 736 / 839 LUT4s, 4 bit lanes 1: 681;
           conv2 8 bit lanes 2 / 6: 734 / 799, 4 bit lanes 1: 673 (kernel in SPRAM); block-RAM
           accumulators, lanes 6: conv1 1201, conv2 1202. The model is at or above each, by at
           most 70; bench/conv_resources.py reproduces them), plus ICE40_EXTRA_CELLS on iCE40 (and
           ICE40_EXTRA_CELLS_PER_CONV_CORE per convolution core):
           nextpnr's logic cells, the figure the device's capacity counts, add a cell for each
           flip-flop or carry it cannot pack with a LUT, a near-constant count (the host link's
           and the pipeline's registers) rather than a share of the LUTs: see the constant
    On ECP5 the dense core's terms have their own constants (ECP5_LUT_*: the cores register
    the block-RAM reads and bank deep weight memories, + ECP5_LUT_PER_BANK_BIT per bit of a
    banked weight word past its first bank), and the SoC's rest and the cells TRELLIS_COMB
    counts beyond the LUT4s are one figure (ECP5_CELLS_SOC + ECP5_CELLS_SOC_PER_LAYER per
    layer); the convolution and learning terms are the iCE40's
    block RAM = the memories above (less those placed in SPRAM)
                + 2 (host link receive and response buffers)
    SPRAM = the primitives of the memories placed there
    DSPs = one for the host link and one per multiplier of a core ("mul" decay of the
           membrane or the current; theta * c of a multi-spike subtract reset), while the
           device has them
"""

from __future__ import annotations

import difflib
import itertools
import math
import operator
from dataclasses import dataclass, replace

import numpy as np

from ..image import (
    CoreConfig,
    HwConfig,
    Image,
    LayerParams,
    core_channels,
    core_groups,
    param_fields,
    param_values,
    weight_depth,
)
from ..protocol import DEFAULT_MAX_PAYLOAD
from .devices import DEVICES, Device, find_device

FAMILY_CLOCK_HZ = {"ice40": 12e6, "ecp5": 25e6}
READ_BITS = {"ice40": 64, "ecp5": 72}
BRAM_SHAPES = {
    "ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),
    "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
}
LUT_SOC, LUT_SOC_PER_LAYER = 1120, 77
# (a dense core whose update carries no tag and skips its input stage on iCE40, its accumulator
# joining the offset at stage B, with a ring of register accumulators (one adder) at groups <=
# FF_MEMORY_DEPTH and, from two groups on, a one-entry input register.) Session 10 fitted these
# to the packed cells of whole SoCs, not to yosys's per-core LUT4s: the cell names put parts of
# the host link's request path in the cores (the executor's word register is named for core 0's
# write data), which left the per-core fit +-200 LUT4s off. Least squares over the packed cells
# of bench/resource_model.py's digits 8 and 4 bit, 64-40-24-10, 784-128-10 and the 8-6-3 image
# tests/test_boards_build.py builds, with the per-v-bit (12), per-neuron-bit (34), per-lane (14),
# per-lane-bit (2) and per-layer (77) terms held at the earlier fit's: LUT_CORE, LUT_SOC +
# ICE40_EXTRA_CELLS and LUT_INPUT_STAGE_PER_V_BIT come out 9, 1561 and 19; each network within
# 2.8 % of its packed cells. ICE40_EXTRA_CELLS is the four bench networks' mean (below).
LUT_CORE, LUT_PER_V_BIT, LUT_PER_NEURON_BIT, LUT_PER_LANE, LUT_PER_LANE_ACC_BIT = \
    9, 12, 34, 14, 2
# An iCE40 core whose update registers its inputs first (stage A: per-neuron decay shifts, "mul",
# the reset before the decay): A's registers (v, acc, c, the stored parameters; their D inputs are
# the block RAMs' read data, so each takes a logic cell of its own) and a per-neuron shifter, per
# membrane bit. Fitted on the 8-6-3 image's two cores (per-neuron decay shifts) alone.
LUT_INPUT_STAGE_PER_V_BIT = 19
# a learning unit (hdl/learning.py): fixed, per weight bit of a lane (bench/core_resources.py
# --learning: 295-308 LUT4s on the digits output core, 5 lanes of 8 bits)
LUT_LEARNING_UNIT, LUT_LEARNING_PER_WEIGHT_BIT = 230, 2
LUT_PER_SYN_BIT, LUT_PER_V_BIT_MULTI = 7, 9  # the synaptic current; the count stage
# a convolution core (module docstring): fixed logic, per membrane bit, per kernel bit of a lane
# (the lane-serial select), per lane with block-RAM accumulators (its adder and pass select)
LUT_CONV_CORE, LUT_CONV_PER_V_BIT, LUT_CONV_PER_LANE_WEIGHT_BIT = 635, 6, 3
LUT_CONV_PER_BRAM_LANE = 58
# nextpnr cells a convolution core adds beyond its LUT4s: its ~400 flip-flops (counters, the
# event decode, the update pipeline) mostly cannot share a cell with a LUT. Tutorial 6 at 8 bits
# on the iCEBreaker (docs/boards.md): 5182 cells, 3917 LUT4s; the model's LUT4s + 1000 + 2 x 180.
ICE40_EXTRA_CELLS_PER_CONV_CORE = 180
# The power-up flash loader (hdl/flashload.py) with its MemLock, in iCE40 logic cells: the
# difference of the packed cells of two UP5K SoCs of the same image (bench/resource_model.py,
# nextpnr --pack-only): 784-128-10 at 4 bits, 16 lanes, 4141 cells with it (--flash), 3697
# without (444); 784-256-10 4192 with it. About 150 of them are the write data path (the word
# being assembled and the lock's multiplexer, 64 bits wide here); a narrower image pays less.
# docs/flash.md.
LUT_FLASH_LOADER = 450
# iCE40 logic cells over the LUT4s: nextpnr also spends a cell on each flip-flop or carry it
# cannot pack with a LUT. nextpnr's packed cells - yosys's LUT4s (bench/resource_model.py,
# UP5K, with the STATUS counters in a block RAM, session 10): digits 8 bit 443, digits 4 bit
# 419, 64-40-24-10 482, 784-128-10 421 (mean 441; the 8-6-3 image 717, its input stages'
# registers: LUT_INPUT_STAGE_PER_V_BIT). With the LUT4 model above, the estimate is a
# least-squares fit, not a bound: within about 5 % of the packed cells either way (docs/boards.md,
# "Catalog clocks per design"); near the edge nextpnr decides, and `build` names what it ran out
# of in one line.
ICE40_EXTRA_CELLS = 441
# ECP5, in the LUT4s TRELLIS_COMB counts (a CCU2C or a TRELLIS_DPR16X4 takes two): the same
# core model with its own constants, plus LUT_PER_BANK_BIT for each bit of a banked weight word
# past the first bank (the registered bank select, hdl.memport.BankedMemory), and the SoC's
# rest and the cells over LUT4s together (packed cells). Least squares over the cores and
# SoCs of bench/resource_model.py --board ulx3s-85f --clock 100 --fit (digits 8 and 4 bit,
# 64-40-24-10, 784-128-10; after the tagless neuron pass and the leaner link): each core within
# 80 LUT4s of yosys, each network within 40 cells of nextpnr's packing (one 3-layer network:
# the per-layer figure rests on it). A fit, not a split into parts: the fixed and per-lane terms
# come out negative and the per-neuron-bit one large (a 128-neuron core's small memories go to
# LUT RAM); held to the iCE40's per-neuron figure, the worst core is 260 LUT4s off.
ECP5_LUT_CORE, ECP5_LUT_PER_NEURON_BIT, ECP5_LUT_PER_LANE, ECP5_LUT_PER_LANE_ACC_BIT = \
    -456, 133, -25, 4
ECP5_LUT_PER_BANK_BIT = 1.2
# Session 10's leaner core and link (the ring accumulators, the array's memory access, the
# link's counters and HELLO) took 430-720 cells off these SoCs, more off the larger cores:
# ECP5_CELLS_SOC (was 1084) and ECP5_LUT_PER_NEURON_BIT (was 185) refitted, the rest held, to
# nextpnr-ecp5's TRELLIS_COMB at 100 MHz (bench/fmax.py --board ulx3s-85f --clock 100):
# digits 8 bit 3726, 64-40-24-10 4782, 784-128-10 4430, and the 8-6-3 image as
# tests/test_boards_build.py builds it (lanes 6-3) 2481: the estimate +0.9, -2.9, +4.5, -3.8 %.
ECP5_CELLS_SOC, ECP5_CELLS_SOC_PER_LAYER = 1140, 597
# The STATUS counters (hdl/counters.py) take a block RAM where the mapping leaves one free
# (`status_in_bram`); else they are registers, which cost the SoC this many more logic cells
# (fixed, per layer; bench/resource_model.py, the same networks either way).
BRAM_STATUS = 1
LUT_STATUS_REGISTERS, LUT_STATUS_REGISTERS_PER_LAYER = 0, 85
SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384  # SB_SPRAM256KA (hdl/spram.py)
FF_MEMORY_DEPTH = 2  # yosys keeps memories this shallow in flip-flops
# Data bits one write enable of a block RAM covers (yosys's brams.txt: the iCE40 EBR masks
# each bit; the ECP5 DP16KD enables bytes of 9 bits).
WRITE_BYTE = {"ice40": 1, "ecp5": 9}
CONV_CORE_ACCUMULATORS = SPRAM_DEPTH  # a convolution core's pre-pool accumulators, at most
MAX_ADDRESS = 1 << 16  # AER addresses are 16 bits
RESOURCES = ("luts", "bram", "spram", "dsp")
MAX_BUDGET_COMBINATIONS = 1024  # lane budgets the mapper tries one by one when halving fails
# Narrowing a core may cost the network this share of integration cycles (_balanced_lanes)
BALANCE_SLACK = 0.05


class FitError(ValueError):
    """The network does not fit the device.

    `resources` holds the estimate that failed and `config` the mapping it was made for (of the
    lane widths tried, the one that came closest).
    """

    def __init__(self, message: str, resources: dict[str, tuple[int, int]],
                 config: HwConfig | None = None):
        super().__init__(message)
        self.resources = resources
        self.config = config


# -- names ---------------------------------------------------------------------------------------
def resolve_device(name: str) -> Device:
    """A device by (forgiving) name; unknown names get the closest known ones suggested."""
    try:
        return find_device(name)
    except ValueError:
        pass
    close = difflib.get_close_matches(name.lower(), [d.lower() for d in DEVICES], n=3,
                                      cutoff=0.4)
    lower = {d.lower(): d for d in DEVICES}
    hint = f"did you mean {', '.join(lower[c] for c in close)}? " if close else ""
    raise ValueError(f"unknown device {name!r}; {hint}known devices: {', '.join(DEVICES)}")


# -- mapping -------------------------------------------------------------------------------------
def map_network(layers: list[LayerParams], n_inputs: int, *, device: str | None = None,
                board: str | None = None, lanes: int | None = None,
                max_neurons_per_core: int = 256, clock_hz: float | None = None) -> HwConfig:
    """Place every layer on cores of `device` (default iCE40UP5K) running at `clock_hz` (default:
    the family's usual oscillator).

    `board` is only recorded in the configuration: ``boards.catalog.board_target`` resolves a
    board name to its device and oscillator. Raises FitError, naming every exceeded resource,
    when the estimate does not fit; without a target, a network that uses the neuron models
    beyond the plain LIF (docs/neuron.md) and does not fit the default device gets one core
    per layer instead, for the golden model (as before the gateware ran them).
    """
    _check_chain(layers, n_inputs)
    if device is not None or board is not None:
        # a hardware target: the gateware must run every layer
        Image(n_inputs, list(layers), HwConfig(device="", cores=tuple(
            CoreConfig(index, 0, layer.n_out, 1) for index, layer in enumerate(layers))))\
            .check_gateware()
    golden_only = HwConfig(device=resolve_device("iCE40UP5K").name, cores=tuple(
        CoreConfig(index, 0, layer.n_out, 1) for index, layer in enumerate(layers)))
    if any(layer.gateware_features() for layer in layers):
        # Without a target (a target was refused above): a convolution the gateware cannot
        # run, so there is no fit to check; one core per layer, which only the golden model
        # runs.
        return golden_only
    if device is None and board is None and any(layer.features() for layer in layers):
        try:
            return _map(layers, n_inputs, None, None, lanes, max_neurons_per_core, clock_hz)
        except FitError:
            return golden_only
    return _map(layers, n_inputs, device, board, lanes, max_neurons_per_core, clock_hz)


def _map(layers: list[LayerParams], n_inputs: int, device: str | None, board: str | None,
         lanes: int | None, max_neurons_per_core: int, clock_hz: float | None) -> HwConfig:
    config = _search(layers, n_inputs, device, board, lanes, max_neurons_per_core, clock_hz)
    return config if lanes is not None else _balanced_lanes(layers,
                                                            _serial_lanes(layers, config))


def step_weight_reads(layers: list[LayerParams], config: HwConfig) -> int:
    """Weight-word reads of one step in which every input of every dense layer spikes, in the
    slowest dense layer: the most ``fan_in * groups`` of any dense core. Layers overlap (a
    layer integrates step t while the next integrates step t - 1: docs/architecture.md,
    "Cycle costs", and RUN_ENCODED streams steps so), so at a uniform activity a step's
    integration takes this times the activity, in cycles."""
    return max((layers[core.layer].fan_in * core.groups for core in config.cores
                if layers[core.layer].conv is None), default=0)


def _balanced_lanes(layers: list[LayerParams], config: HwConfig) -> HwConfig:
    """`config` with each dense core narrowed to the lanes that cost the fewest logic cells
    (``estimate_resources``) while :func:`step_weight_reads` stays within BALANCE_SLACK of
    `config`'s, the mapping within the device, its SPRAM no more, and its STATUS counters in
    block RAM if they were. The widest word gives a layer that integrates little (an output
    layer of ten neurons behind a 784-input one) lanes that buy no cycles but cost cells
    (``core_luts``); the digits network's output core goes from 5 lanes to 1, with its
    accumulators in a block RAM. Cores with the most lanes are tried first."""
    bound = step_weight_reads(layers, config) * (1 + BALANCE_SLACK)
    # (counters kept in block RAM: a trial that leaves them no room does not fit)
    status = "bram" if status_in_bram(layers, config) else True
    best = _estimate(layers, config, spram=True, status=status)
    order = sorted(range(len(config.cores)), key=lambda i: (-config.cores[i].lanes, i))
    for index in order:
        core = config.cores[index]
        if layers[core.layer].conv is not None or core.lanes == 1:
            continue
        for lanes in range(1, core.lanes):
            cores = list(config.cores)
            cores[index] = CoreConfig(core.layer, core.lo, core.hi, lanes)
            trial = replace(config, cores=tuple(cores))
            if step_weight_reads(layers, trial) > bound:
                continue
            estimate = _estimate(layers, trial, spram=True, status=status)
            if (_badness(estimate) == 0 and estimate["spram"][0] <= best["spram"][0]
                    and estimate["luts"][0] < best["luts"][0]):
                config, best = trial, estimate
    return config


def _serial_lanes(layers: list[LayerParams], config: HwConfig) -> HwConfig:
    """`config` with each convolution core whose accumulators sit in SPRAM narrowed to the
    fewest lanes that keep the mapping within the device and its memories in no more SPRAM
    primitives and block RAMs. Such a core updates its accumulators one value at a time
    (two cycles each, whatever its lanes), so its lanes only widen the kernel word: fewer cost
    no cycles and save the lane logic (``core_luts``)."""
    def memories(estimate: dict[str, tuple[int, int]]) -> tuple[int, int]:
        return estimate["spram"][0], estimate["bram"][0]

    for index in range(len(config.cores)):
        core = config.cores[index]
        if layers[core.layer].conv is None or core.lanes == 1 or \
                not memory_placement(layers, config)[index].acc_spram:
            continue
        before = memories(estimate_resources(layers, config))
        for lanes in range(1, core.lanes):
            cores = list(config.cores)
            cores[index] = CoreConfig(core.layer, core.lo, core.hi, lanes)
            trial = replace(config, cores=tuple(cores))
            estimate = estimate_resources(layers, trial)
            if (_badness(estimate) == 0 and memory_placement(layers, trial)[index].acc_spram
                    and all(a <= b for a, b in zip(memories(estimate), before, strict=True))):
                config = trial
                break
    return config


def _search(layers: list[LayerParams], n_inputs: int, device: str | None, board: str | None,
            lanes: int | None, max_neurons_per_core: int, clock_hz: float | None) -> HwConfig:
    max_neurons_per_core = int(max_neurons_per_core)
    if max_neurons_per_core < 1:
        raise ValueError(f"max_neurons_per_core must be at least 1, not {max_neurons_per_core}")
    dev = resolve_device(device or "iCE40UP5K")
    if clock_hz is None:
        clock_hz = FAMILY_CLOCK_HZ[dev.family]
    if not clock_hz > 0:
        raise ValueError(f"clock_hz must be positive, not {clock_hz!r}")
    budget = READ_BITS[dev.family]
    if lanes is not None:
        lanes = int(lanes)
        if lanes < 1:
            raise ValueError(f"lanes must be at least 1, not {lanes}")
        too_wide = [f"{layer.name!r} ({lanes} x {layer.weight_bits} = "
                    f"{lanes * layer.weight_bits} bits)" for layer in layers
                    if min(lanes, layer.n_out // layer.positions) * layer.weight_bits > budget]
        if too_wide:
            raise ValueError(f"{lanes} lanes make weight words wider than the {budget} bits a "
                             f"{dev.name} core can read per cycle in layer "
                             f"{', '.join(too_wide)}")
        config = HwConfig(device=dev.name, board=board, clock_hz=float(clock_hz),
                          cores=_tile(layers, max_neurons_per_core, lanes, None))
        return _checked(layers, config)

    # Per layer, the widest word first; while the network does not fit, halve the budget of
    # the one layer whose halving helps most (ties: the layer with the most lanes in all).
    budgets = [budget] * len(layers)

    def mapping(bits):
        return HwConfig(device=dev.name, board=board, clock_hz=float(clock_hz),
                        cores=_tile(layers, max_neurons_per_core, None, bits))

    # Block RAM alone first (the bitstream initialises it, so the board runs without a
    # loader), with a block RAM left for the STATUS counters (in registers they cost about
    # LUT_STATUS_REGISTERS_PER_LAYER cells a layer: more than the lanes that block RAM would
    # buy); then without it; SPRAM only for a network that fits no other way.
    first = budgets
    cache: dict = {}
    passes = ((False, "bram"), (False, True), (True, True)) if dev.spram else \
        ((True, "bram"), (True, True))
    for spram, status in passes:
        budgets = first
        config = mapping(budgets)
        while True:
            estimate = _estimate(layers, config, spram=spram, cache=cache, status=status)
            if _badness(estimate) == 0:
                return config
            options = []
            for index, layer in enumerate(layers):
                if budgets[index] // 2 < layer.weight_bits:
                    continue
                trial = list(budgets)
                trial[index] //= 2
                narrower = mapping(trial)
                lanes_now = sum(c.lanes for c in config.cores_of(index))
                options.append((_badness(_estimate(layers, narrower, spram=spram,
                                                   cache=cache, status=status)),
                                -lanes_now, index, trial, narrower))
            if not options:
                break
            _, _, _, budgets, config = min(options, key=lambda o: o[:3])
    # Halving one layer at a time follows the estimate downhill and can stop on a plateau: an
    # SPRAM primitive frees up only once a memory narrows to one primitive's width, and
    # meanwhile narrowing another layer looks better. On a small search space, try every
    # combination of budgets: of those that fit, the fewest halvings (ties: the most lanes);
    # when none fits, the one that comes closest is the one reported.
    levels = [[budget >> h for h in range(budget.bit_length())
               if budget >> h >= layer.weight_bits] for layer in layers]
    if math.prod(len(options) for options in levels) <= MAX_BUDGET_COMBINATIONS:
        tried = []
        for trial in itertools.product(*levels):
            narrower = mapping(list(trial))
            tried.append((_badness(_estimate(layers, narrower, spram=True, cache=cache)),
                          sum((budget // b).bit_length() - 1 for b in trial),
                          -sum(c.lanes for c in narrower.cores), trial, narrower))
        config = min(tried, key=lambda t: t[:4])[4]
    return _checked(layers, config)


def _badness(estimate: dict[str, tuple[int, int]]) -> float:
    return sum(need / max(cap, 1) for need, cap in estimate.values() if need > cap)


def _checked(layers: list[LayerParams], config: HwConfig) -> HwConfig:
    """`config`, or FitError naming every resource it exceeds."""
    estimate = estimate_resources(layers, config)
    over = {r: nc for r, nc in estimate.items() if nc[0] > nc[1]}
    if not over:
        return config
    detail = "; ".join(f"{r} need {need}, have {cap}" for r, (need, cap) in over.items())
    detail += _spram_note(layers, config, estimate)
    raise FitError(f"the network does not fit {config.device}: {detail}", estimate, config)


def _spram_note(layers: list[LayerParams], config: HwConfig,
                estimate: dict[str, tuple[int, int]]) -> str:
    """On a device with SPRAM and block RAM over: what the SPRAM holds and the largest memory
    that could move there but is left in block RAM, with what it would take there."""
    used, cap = estimate["spram"]
    if not cap or estimate["bram"][0] <= estimate["bram"][1]:
        return ""
    weights, accs, _ = _block_ram(layers, config)
    placement = memory_placement(layers, config)
    left = [(cost, -index, kind) for index, kind, blocks, cost
            in _candidates(layers, config, weights, accs)
            if blocks and not (placement[index].acc_spram if kind
                               else placement[index].weights_spram)]
    if not left:
        return f" (SPRAM: {used} of {cap} in use)"
    need, index, kind = max(left)
    core = config.cores[-index]
    layer = layers[core.layer]
    width, depth = _acc_shape(layer, core, True) if kind else _weight_shape(layer, core)
    what = "accumulators" if kind else "weight memory"
    return (f" (SPRAM: {used} of {cap} in use; core {-index}'s {width} x {depth} {what} "
            f"would take {need} more)")


def _check_chain(layers: list[LayerParams], n_inputs: int) -> None:
    if not layers:
        raise ValueError("no layers to map")
    width = int(n_inputs)
    if not 1 <= width <= MAX_ADDRESS:
        raise ValueError(f"the network needs 1..{MAX_ADDRESS} inputs, not {width}")
    for index, layer in enumerate(layers):
        if layer.n_in != width:
            raise ValueError(f"layer {index} ({layer.name!r}) expects {layer.n_in} inputs but "
                             f"its source gives {width}")
        if layer.n_out > MAX_ADDRESS:
            raise ValueError(f"layer {layer.name!r} has {layer.n_out} neurons; AER addresses "
                             f"reach {MAX_ADDRESS}")
        width = layer.n_out


def _tile(layers: list[LayerParams], max_neurons: int, lanes: int | None,
          budget_bits: list[int] | None) -> tuple[CoreConfig, ...]:
    cores = []
    for index, layer in enumerate(layers):
        budget = None if budget_bits is None else budget_bits[index]
        if layer.conv is None:
            parts = -(-layer.n_out // max_neurons)
            base, extra = divmod(layer.n_out, parts)
            lo = 0
            for part in range(parts):
                hi = lo + base + (1 if part < extra else 0)
                cores.append(CoreConfig(index, lo, hi,
                                        _lanes(hi - lo, layer.weight_bits, lanes, budget)))
                lo = hi
            continue
        # a convolution: whole output channels, at most one SPRAM's depth of accumulators each
        channels = layer.conv.out_channels
        conv_h, conv_w = layer.conv.conv_shape
        parts = -(-channels // max(1, CONV_CORE_ACCUMULATORS // (conv_h * conv_w)))
        base, extra = divmod(channels, parts)
        c0 = 0
        for part in range(parts):
            c1 = c0 + base + (1 if part < extra else 0)
            cores.append(CoreConfig(index, c0 * layer.positions, c1 * layer.positions,
                                    _lanes(c1 - c0, layer.weight_bits, lanes, budget)))
            c0 = c1
    return tuple(cores)


def _lanes(units: int, weight_bits: int, lanes: int | None, budget_bits: int | None) -> int:
    """Lanes of a core of `units` neurons (a convolution's core: output channels)."""
    if lanes is not None:
        return min(lanes, units)
    widest = max(1, min(units, budget_bits // weight_bits))
    groups = -(-units // widest)
    return -(-units // groups)


# -- resources -----------------------------------------------------------------------------------
def blocks_for(width: int, depth: int, shapes) -> int:
    """Block RAMs for a width x depth memory in its cheapest data-port shape (>= 1)."""
    if width <= 0 or depth <= 0:
        return 0
    return max(1, min(math.ceil(width / w) * math.ceil(depth / d) for w, d in shapes))


def _leak_bits(layer: LayerParams) -> int:
    return {"none": 0, "shift": 5, "mul": layer.decay_frac + 1}[layer.decay_mode]


def _param_widths(layer: LayerParams, core: CoreConfig) -> tuple[int, int]:
    """Widths of a core's parameter tables (image.param_fields): (per output channel, per
    neuron). A field uniform over the core's neurons is a constant; a convolution's field
    constant within each of the core's channels is a per-channel entry; any other field is a
    per-neuron entry (a dense core has no channels: its fields are per neuron or constant)."""
    values = param_values(layer)
    per_channel = per_neuron = 0
    for f in param_fields(layer):
        own = values[f.name][core.lo:core.hi]
        if not _varies(own):
            continue
        by_channel = own.reshape(-1, layer.positions)
        if layer.conv is not None and not (by_channel != by_channel[:, :1]).any():
            per_channel += f.width
        else:
            per_neuron += f.width
    return per_channel, per_neuron


def _param_bits(layer: LayerParams, core: CoreConfig) -> int:
    """Width of the per-neuron parameter words a core stores (fields uniform over the core's
    neurons are constants; a convolution's fields constant per channel are in a table of
    channels)."""
    return _param_widths(layer, core)[1]


def _state_bits(layer: LayerParams) -> int:
    """Width of a neuron's state word (hdl.core.state_layout): v, the last count, syn."""
    return layer.v_bits + max(1, layer.max_spikes.bit_length()) + \
        (layer.syn_bits if layer.current_based else 0)


def _neuron_blocks(layer: LayerParams, neurons: int, param_bits: int,
                   family: str) -> tuple[int, int | None]:
    """(block RAMs of a core's state and per-neuron parameters, the bit at which the
    parameters start in a word they share with the state, or None for two memories).

    A dense core's state (``_state_bits``) and its ``param_bits`` of stored parameters share
    one memory when that takes fewer block RAMs than two: the state at bits [0, S), the
    parameters from S rounded up to the family's write-enable byte (``WRITE_BYTE``), so that a
    state write leaves them unchanged. A convolution core keeps them apart."""
    shapes = BRAM_SHAPES[family]
    state = _state_bits(layer)
    apart = _memory_blocks(state, neurons, shapes) + _memory_blocks(param_bits, neurons, shapes)
    if layer.conv is not None or not param_bits:
        return apart, None
    byte = WRITE_BYTE[family]
    offset = -(-state // byte) * byte
    shared = _memory_blocks(offset + param_bits, neurons, shapes)
    return (shared, offset) if shared < apart else (apart, None)


def shared_params_offset(layer: LayerParams, core: CoreConfig, device: str) -> int | None:
    """Where a dense core's stored parameters start in the word they share with its state on
    `device` (``hdl.core.LifCore``'s ``params_offset``), or None when state and parameters
    are two memories (``_neuron_blocks``)."""
    family = resolve_device(device).family
    return _neuron_blocks(layer, core.neurons, _param_bits(layer, core), family)[1]


def _varies(values: np.ndarray) -> bool:
    return bool(values.size) and bool((values != values[0]).any())


def _memory_blocks(width: int, depth: int, shapes) -> int:
    if width == 0 or depth <= FF_MEMORY_DEPTH:
        return 0
    return blocks_for(width, depth, shapes)


def spram_primitives(width: int, depth: int) -> int:
    """SB_SPRAM256KA primitives a width x depth single-port memory takes (hdl.spram.SpramMemory:
    ceil(width / 16) side by side, ceil(depth / 16384) banks)."""
    return -(-width // SPRAM_WIDTH) * -(-depth // SPRAM_DEPTH)


def _weight_shape(layer: LayerParams, core: CoreConfig) -> tuple[int, int]:
    """Width and depth of a core's weight memory (a convolution's core: its kernel slice)."""
    return core.lanes * layer.weight_bits, weight_depth(layer, core)


def _acc_shape(layer: LayerParams, core: CoreConfig, spram: bool) -> tuple[int, int]:
    """Width and depth of a core's accumulators: a word of `lanes` per lane group; a
    convolution's per conv-map position and lane group, or in SPRAM one value per word for
    each channel and position (lane-serial)."""
    if layer.conv is None:
        return core.lanes * layer.acc_bits, core.groups
    conv_h, conv_w = layer.conv.conv_shape
    c0, c1 = core_channels(layer, core)
    if spram:
        return layer.acc_bits, (c1 - c0) * conv_h * conv_w
    return core.lanes * layer.acc_bits, conv_h * conv_w * core_groups(layer, core)


@dataclass(frozen=True)
class CorePlacement:
    """Where a core's two large memories live (placement rule: module docstring)."""

    weights_spram: bool = False  # the weight memory (a convolution's core: its kernel) in SPRAM
    acc_spram: bool = False  # convolution cores only: accumulators in SPRAM (lane-serial)


def _block_ram(layers: list[LayerParams], config: HwConfig,
               cache: dict | None = None) -> tuple[list[int], list[int], int]:
    """Block RAMs of each core's weight memory, of each convolution core's accumulators (0 for
    a dense core, whose accumulators count with the rest), and of everything else (`cache`
    keeps the parameter widths of a core's neurons between calls of one mapping search)."""
    cache = {} if cache is None else cache
    family = resolve_device(config.device).family
    shapes = BRAM_SHAPES[family]
    weights, accs = [], []
    other = link_block_ram(layers, config.device) if config.cores else 0
    for core in config.cores:
        layer = layers[core.layer]
        weights.append(blocks_for(*_weight_shape(layer, core), shapes))
        if layer.conv is None:
            accs.append(0)
            other += _memory_blocks(*_acc_shape(layer, core, False), shapes)
        else:
            accs.append(_memory_blocks(*_acc_shape(layer, core, False), shapes))
        key = (core.layer, core.lo, core.hi)
        if key not in cache:
            cache[key] = _param_widths(layer, core)
        per_channel, per_neuron = cache[key]
        c0, c1 = core_channels(layer, core)
        other += _memory_blocks(per_channel, c1 - c0, shapes)
        other += _neuron_blocks(layer, core.neurons, per_neuron, family)[0]
    for index, layer in enumerate(layers):
        if layer.recurrent and config.cores_of(index):
            other += _memory_blocks(17, layer.max_spikes * layer.n_out + 2, shapes)
    return weights, accs, other


def link_block_ram(layers: list[LayerParams], device: str) -> int:
    """Block RAMs of the host link's buffer for a network ending in ``layers[-1]`` (without
    the rate encoder, whose RUN_ENCODED answers take a larger one)."""
    events = layers[-1].n_out * layers[-1].max_spikes
    shapes = BRAM_SHAPES[resolve_device(device).family]
    return blocks_for(8, link_buffer_bytes(DEFAULT_MAX_PAYLOAD, events), shapes)


def link_buffer_bytes(max_payload: int, entries: int) -> int:
    """Bytes of the host link's buffer (hdl.hostlink.FrameReceiver's): a request's payload,
    then the ``entries`` of its answer's output buffer (u16 events), two bytes each."""
    return max_payload + 2 * entries


def memory_placement(layers: list[LayerParams],
                     config: HwConfig) -> tuple[CorePlacement, ...]:
    """One CorePlacement per core of ``config.cores`` (placement rule: module docstring):
    which weight memories and convolution accumulators go to SPRAM. All in block RAM on
    devices without SPRAM and whenever block RAM suffices; ``hdl.array.CoreArray`` builds
    exactly this placement."""
    return _place(layers, config, *_block_ram(layers, config))


def spram_cores(layers: list[LayerParams], config: HwConfig) -> frozenset[int]:
    """Indices (into ``config.cores``) of the cores whose weight memory (a convolution's
    core: its kernel) goes to SPRAM (`memory_placement`)."""
    return frozenset(index for index, place in enumerate(memory_placement(layers, config))
                     if place.weights_spram)


def _candidates(layers: list[LayerParams], config: HwConfig, weights: list[int],
                accs: list[int]) -> list[tuple[int, int, int, int]]:
    """The memories that may move to SPRAM, as (core index, 0 weights / 1 accumulators,
    block RAMs it frees, SPRAM primitives it takes)."""
    found = []
    for index, core in enumerate(config.cores):
        layer = layers[core.layer]
        found.append((index, 0, weights[index], spram_primitives(*_weight_shape(layer, core))))
        if layer.conv is not None:
            found.append((index, 1, accs[index],
                          spram_primitives(*_acc_shape(layer, core, True))))
    return found


def _place(layers: list[LayerParams], config: HwConfig, weights: list[int], accs: list[int],
           other: int) -> tuple[CorePlacement, ...]:
    dev = resolve_device(config.device)
    placed: set[tuple[int, int]] = set()
    if dev.spram and config.cores:
        need = sum(weights) + sum(accs) + other
        left = dev.spram
        for index, kind, blocks, cost in sorted(
                _candidates(layers, config, weights, accs),
                key=lambda c: (-c[2] / c[3], c[0], c[1])):
            if need <= dev.bram:
                break
            if blocks and cost <= left:
                placed.add((index, kind))
                left -= cost
                need -= blocks
    return tuple(CorePlacement((index, 0) in placed, (index, 1) in placed)
                 for index in range(len(config.cores)))


def bank_depth(width: int, depth: int, shapes) -> int:
    """The bank depth for a ``width`` x ``depth`` memory over block RAMs of data-port
    ``shapes`` ((width, depth) pairs, as ``BRAM_SHAPES``): the depth of the shape that takes
    the fewest blocks (ties: the shallower), so that each bank is one row of blocks side by
    side, with no output multiplexer of a depth cascade inside it, and the banks together take
    as few blocks as the memory would unbanked. A power of 2 (a shape's depth); at least
    ``depth`` when that shape holds the whole memory (one bank: no banking)."""
    width, depth = operator.index(width), operator.index(depth)
    return min(((-(-width // w)) * (-(-depth // d)), d) for w, d in shapes)[1]


def weight_banks(layer: LayerParams, core: CoreConfig, place: CorePlacement, family: str,
                 learns: bool) -> tuple[int, int]:
    """(bank depth, banks) of a dense core's weight memory. On ECP5, whose cores register the
    block-RAM reads, a core that does not learn and keeps its weights in block RAM has them in
    banks of one row of DP16KDs each (``bank_depth``; hdl.memport.BankedMemory, the array's
    `weight_bank_depth`); (0, 1) otherwise: one memory."""
    if family != "ecp5" or learns or place.weights_spram or layer.conv is not None:
        return 0, 1
    depth = layer.fan_in * core.groups
    bank = bank_depth(core.lanes * layer.weight_bits, depth, BRAM_SHAPES[family])
    return bank, -(-depth // bank)


def update_input_stage(layer: LayerParams, stored) -> bool:
    """Whether a layer's neuron update needs its input stage (``hdl.neuron.NeuronUpdate``'s
    stage A) on a part whose block RAMs' read data is a register, given the names of the
    parameter fields its core stores (the others are constants): when its stage B does more
    than adds on the inputs (a multiplier, a per-neuron shift, the reset before the decay,
    theta * c)."""
    multi = layer.spiking and layer.max_spikes > 1
    deep = (layer.decay_mode == "mul" or (layer.decay_mode != "none" and "decay" in stored)
            or (layer.spiking and layer.reset == "subtract"
                and (not layer.reset_delay or multi)))
    if layer.current_based:
        deep = deep or layer.syn_decay_mode == "mul" or (
            layer.syn_decay_mode != "none" and "syn_decay" in stored)
    return deep


def _input_stage(layer: LayerParams, core: CoreConfig) -> bool:
    """``update_input_stage`` of a dense core: its stored fields are those that vary over its
    neurons (``hdl.core.LifCore``)."""
    stored = {name for name, values in param_values(layer).items()
              if _varies(values[core.lo:core.hi])}
    return update_input_stage(layer, stored)


def core_luts(layer: LayerParams, core: CoreConfig, place: CorePlacement, *,
              family: str = "ice40", learns: bool = False) -> int:
    """LUT4s of one core placed as `place` on a device of `family` (model: module docstring;
    ECP5: its own constants), multipliers in DSPs."""
    if layer.conv is None:
        fixed, per_neuron_bit, per_lane, per_lane_acc_bit = (
            (ECP5_LUT_CORE, ECP5_LUT_PER_NEURON_BIT, ECP5_LUT_PER_LANE, ECP5_LUT_PER_LANE_ACC_BIT)
            if family == "ecp5" else
            (LUT_CORE, LUT_PER_NEURON_BIT, LUT_PER_LANE, LUT_PER_LANE_ACC_BIT))
        luts = (fixed + LUT_PER_V_BIT * layer.v_bits
                + per_neuron_bit * max(1, (core.neurons - 1).bit_length())
                + core.lanes * (per_lane + per_lane_acc_bit * layer.acc_bits))
        banks = weight_banks(layer, core, place, family, learns)[1]  # (1 but on ECP5)
        luts += round(ECP5_LUT_PER_BANK_BIT * core.lanes * layer.weight_bits * (banks - 1))
        if family == "ice40" and _input_stage(layer, core):
            luts += LUT_INPUT_STAGE_PER_V_BIT * layer.v_bits
    else:
        luts = (LUT_CONV_CORE + LUT_CONV_PER_V_BIT * layer.v_bits
                + LUT_CONV_PER_LANE_WEIGHT_BIT * core.lanes * layer.weight_bits)
        if not place.acc_spram:  # the lanes' adders, and the pass's lane select
            luts += LUT_CONV_PER_BRAM_LANE * core.lanes
    if layer.current_based:
        luts += LUT_PER_SYN_BIT * layer.syn_bits
    if layer.spiking and layer.max_spikes > 1:
        luts += LUT_PER_V_BIT_MULTI * layer.v_bits
    return luts


def estimate_resources(layers: list[LayerParams], config: HwConfig, *,
                       flash: bool = False,
                       learning: tuple = ()) -> dict[str, tuple[int, int]]:
    """resource -> (need, capacity) for luts, bram, spram and dsp (model: module docstring);
    `flash`: with the SoC's flash loader; `learning`: the image's rules (``Image.learning``),
    whose learning units add their logic and their memories' block RAM."""
    learners = {rule.layer for rule in learning}
    estimate = _estimate(layers, config, spram=True, flash=flash, learners=learners,
                         learning_bram=learning_block_ram(layers, config, learning))
    units = sum(LUT_LEARNING_UNIT + LUT_LEARNING_PER_WEIGHT_BIT * layers[core.layer].weight_bits
                * core.lanes for core in config.cores if core.layer in learners)
    need, have = estimate["luts"]
    estimate["luts"] = (need + units, have)
    return estimate


def status_in_bram(layers: list[LayerParams], config: HwConfig, learning: tuple = ()) -> bool:
    """Whether the SoC keeps its STATUS counters in a block RAM (hdl.counters.StatusCounters):
    when the mapping, with its learning units (``Image.learning``), leaves one free."""
    estimate = _estimate(layers, config, spram=True, status=False,
                         learning_bram=learning_block_ram(layers, config, learning))
    return bool(config.cores) and _room_for_status(*estimate["bram"])


def _room_for_status(need: int, have: int) -> bool:
    """Whether `need` block RAMs of `have` leave room for the STATUS counters'."""
    return need + BRAM_STATUS <= have


def learning_block_ram(layers: list[LayerParams], config: HwConfig, learning: tuple) -> int:
    """Block RAMs of the learning units of the cores whose layer learns (hdl/learning.py): the
    learning memory: x_j and flag, then a three-factor rule's modulators m_i (from n_in) or
    STDP's y_i (from the power of two at or above ``max(n_in, neurons)``), words of
    ``max(trace_bits, 8) + 1`` bits."""
    shapes = BRAM_SHAPES[resolve_device(config.device).family]
    rules = {rule.layer: rule for rule in learning}
    blocks = 0
    for core in config.cores:
        rule = rules.get(core.layer)
        if rule is None:
            continue
        layer = layers[core.layer]
        words = layer.n_in + core.neurons  # x_j, then m_i (three-factor)
        if rule.rule == "stdp":  # x_j, then y_i from a power of two
            words = (1 << max(1, (max(layer.n_in, core.neurons) - 1).bit_length())) + core.neurons
        blocks += _memory_blocks(max(rule.trace_bits, 8) + 1, words, shapes)
    return blocks


def _estimate(layers: list[LayerParams], config: HwConfig, *, spram: bool,
              cache: dict | None = None, flash: bool = False,
              learners: frozenset | set = frozenset(), learning_bram: int = 0,
              status: bool | str = True) -> dict[str, tuple[int, int]]:
    """The resources of a mapping; ``status``: True counts the STATUS counters where
    `status_in_bram` puts them, "bram" in a block RAM whether or not one is left, False not
    at all."""
    dev = resolve_device(config.device)
    weights, accs, bram = _block_ram(layers, config, cache)
    placement = (_place(layers, config, weights, accs, bram) if spram
                 else (CorePlacement(),) * len(config.cores))
    spram = 0
    for index, (core, place) in enumerate(zip(config.cores, placement, strict=True)):
        layer = layers[core.layer]
        if place.weights_spram:
            spram += spram_primitives(*_weight_shape(layer, core))
        else:
            bram += weights[index]
        if place.acc_spram:
            spram += spram_primitives(*_acc_shape(layer, core, True))
        else:
            bram += accs[index]
    if not config.cores:
        luts = 0
    elif dev.family == "ecp5":
        luts = ECP5_CELLS_SOC + ECP5_CELLS_SOC_PER_LAYER * len(layers)
    else:
        luts = LUT_SOC + LUT_SOC_PER_LAYER * len(layers)
    dsp = 1 if config.cores and dev.dsp else 0
    for core, place in zip(config.cores, placement, strict=True):
        layer = layers[core.layer]
        luts += core_luts(layer, core, place, family=dev.family, learns=core.layer in learners)
        # multipliers: the "mul" decays (membrane, current) and a multi-spike subtract
        # reset's theta * c; yosys puts each in a DSP while the device has one left
        products = [layer.v_bits * (layer.decay_frac + 1)] if layer.decay_mode == "mul" else []
        if layer.syn_decay_mode == "mul":
            products.append(layer.syn_bits * (layer.syn_decay_frac + 1))
        if layer.spiking and layer.max_spikes > 1 and layer.reset == "subtract":
            products.append((layer.v_bits - 1) * layer.max_spikes.bit_length())
        for product in products:
            if dsp < dev.dsp:
                dsp += 1
            else:
                luts += product
    if flash:
        luts += LUT_FLASH_LOADER
    bram += learning_bram
    if status and config.cores:  # the STATUS counters (`status_in_bram`)
        if status == "bram" or _room_for_status(bram, dev.bram):
            bram += BRAM_STATUS
        else:
            luts += LUT_STATUS_REGISTERS + LUT_STATUS_REGISTERS_PER_LAYER * len(layers)
    if dev.family == "ice40":
        luts += ICE40_EXTRA_CELLS + ICE40_EXTRA_CELLS_PER_CONV_CORE * sum(
            layers[core.layer].conv is not None for core in config.cores)
    return {"luts": (luts, dev.luts), "bram": (bram, dev.bram), "spram": (spram, dev.spram),
            "dsp": (dsp, dev.dsp)}


# -- capacity ------------------------------------------------------------------------------------
# The probe: one plain LIF layer (16-bit membrane, shift decay, parameters uniform over the
# neurons, so they take no memory) whose accumulator is as wide as full-scale weights need,
# (fan_in << (weight_bits - 1)).bit_length() + 1 bits: what LayerParams.acc_bits_needed gives
# when every weight is the most negative. A real network of the same shape needs the same or less.
CAPACITY_V_BITS = 16
CAPACITY_LAYER_NEURONS = 256  # the default neurons per core


def _capacity_probe(neurons: int, fan_in: int, weight_bits: int) -> LayerParams:
    acc_bits = max(2, (fan_in << (weight_bits - 1)).bit_length() + 1)
    return LayerParams("probe", np.zeros((neurons, fan_in), np.int32), bias=np.zeros(neurons),
                       threshold=np.ones(neurons), weight_bits=weight_bits,
                       v_bits=CAPACITY_V_BITS, acc_bits=acc_bits, decay_mode="shift",
                       decay_shift=np.full(neurons, 3))


def _probe_maps(neurons: int, fan_in: int, weight_bits: int,
           device: str) -> tuple[bool, dict[str, tuple[int, int]]]:
    """(whether the probe maps on `device`, the estimate: resource -> (need, capacity); when it
    does not fit, the estimate of the mapping that came closest)."""
    layer = _capacity_probe(neurons, fan_in, weight_bits)
    try:
        config = map_network([layer], fan_in, device=device)
    except FitError as exc:
        return False, dict(exc.resources)
    return True, estimate_resources([layer], config)


def _exceeded(estimate: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    return {r: [need, cap] for r, (need, cap) in estimate.items() if need > cap}


def _largest_mapping(place, high: int) -> tuple[int, dict, dict]:
    """(the largest n in 0..high that maps, the estimate at n, what n + 1 exceeds:
    resource -> [need, capacity], empty when high maps)."""
    lo, hi = 0, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if place(mid)[0]:
            lo = mid
        else:
            hi = mid - 1
    return lo, (place(lo)[1] if lo else {}), (_exceeded(place(lo + 1)[1]) if lo < high else {})


def device_capacity(device: str) -> dict:
    """What this mapper places on `device`, SPRAM included (``boards.catalog.board_capacities``,
    ``spikeforge boards`` and docs/boards.md's table list it), for the probe above:

    neurons        one layer of fan-in 1, 8-bit
    synapses_Nbit  one layer of min(neurons, 256) neurons with the widest fan-in that maps, at
                   N = 8 and 4 weight bits (the weight memory limits it; on the UP5K its weights
                   go to SPRAM once block RAM runs out)
    limits         per figure, what one more neuron or input would exceed:
                   resource -> [need, capacity]
    estimate       the estimate (resource -> [need, capacity]) of the 8-bit synapse figure's
                   layer
    smallest       when nothing maps: what the probe of 1 neuron and 1 input exceeds
    """
    dev = resolve_device(device)
    neurons, _, neuron_limit = _largest_mapping(lambda n: _probe_maps(n, 1, 8, dev.name),
                                                MAX_ADDRESS)
    width = min(neurons, CAPACITY_LAYER_NEURONS)
    synapses = {8: 0, 4: 0}
    limits = {"neurons": neuron_limit}
    estimate = {}
    for bits in (8, 4) if width else ():
        fan_in, at, limit = _largest_mapping(lambda f, b=bits: _probe_maps(width, f, b, dev.name),
                                     MAX_ADDRESS - 1)
        synapses[bits] = width * fan_in
        limits[f"synapses_{bits}bit"] = limit
        if bits == 8:
            estimate = {r: list(nc) for r, nc in at.items()}
    return {"device": dev.name, "luts": dev.luts, "bram": dev.bram, "spram": dev.spram,
            "dsp": dev.dsp, "neurons": neurons, "synapses_8bit": synapses[8],
            "synapses_4bit": synapses[4], "limits": limits, "estimate": estimate,
            "smallest": None if neurons else _exceeded(_probe_maps(1, 1, 8, dev.name)[1])}

"""Mapper: quantized layers -> cores on a device (HwConfig), with a resource check.

Tiling. A layer with more than `max_neurons_per_core` neurons splits over the fewest cores that
respect the limit, as evenly as possible (sizes differ by at most one); core c of a layer holds
neurons [lo, hi).

Lanes. A core integrates `lanes` neurons per cycle, reading one weight word of
lanes * weight_bits bits. The word must fit the memory read width the family can give a core:
64 bits on iCE40 (four 16-bit EBRs side by side, or the UP5K's four 16-bit SPRAMs), 72 bits on
ECP5 (two 36-bit DP16KD). Unless `lanes` is given, a core takes the widest word the budget
allows, then trims lanes to the fewest that keep the same number of lane groups (cycles per
event): 10 neurons under an 8-lane budget get 5 lanes, not 8. When that does not fit the device,
the budget of one layer at a time is halved: the layer whose halving brings the estimate
closest to fitting (ties: the layer with the most lanes), until it fits or no layer can narrow.
On a device with SPRAM that search runs first with block RAM alone, and only when no lane
widths fit that way again with the weights allowed into SPRAM (placement below).

Resource model, calibrated against yosys `synth_ice40` of the generated SoC (hdl/soc.py: host
link + array) on the digits network at 8 and 4 bits and 2..16 lanes (within one block RAM and
about 3% of LUTs there). Per core:

    weight memory  depth fan_in * groups, width lanes * weight_bits
    accumulators   depth groups,          width lanes * acc_bits      (flip-flops if depth <= 2)
    state          depth neurons,         width v_bits + 1            (membrane, previous spike)
    parameters     depth neurons,         width of the fields that differ between the core's
                                          neurons (threshold v_bits - 1, bias, decay 5 or f + 1);
                                          uniform fields are constants and take no memory
    recurrent FIFO depth n_out + 2,       width 17                    (recurrent layers)

Each memory takes block RAMs in the data-port shape that needs fewest blocks
(iCE40 EBR 256x16, 512x8, 1024x4, 2048x2; ECP5 DP16KD 512x36, 1024x18, 2048x9, 4096x4,
8192x2, 16384x1), at least one block.

Memory placement (`spram_cores`). A device with SPRAM (the UP5K: four SB_SPRAM256KA of
16K x 16) may hold cores' weight memories there instead. A weight memory of width W and depth D
takes ceil(W / 16) SPRAMs side by side (the port bandwidth: one word of up to 64 bits, 16
synapses at 4 bits, per cycle) times ceil(D / 16384) banks. The bitstream cannot initialise
SPRAM, so a memory goes there only when block RAM runs out: while the block RAM estimate
exceeds the device, the weight memory that frees the most block RAMs per SPRAM it takes (ties:
the lower core index) moves to SPRAM, as long as SPRAMs are left. SPRAM is single-port, so only
weights move (the state, accumulator and parameter memories read and write in the same cycle);
a learning layer's weights cannot live there (its read-modify-write needs both ports), which
`hdl.array.CoreArray` refuses by name. An image with SPRAM-placed weights loads them from flash
at power-up or over the host link (docs/flash.md).

    LUTs = 1620 (host link, router) + per core
           (261 + 26 * v_bits + lanes * (16 + 3 * acc_bits))
           + v_bits * (decay_frac + 1) for a "mul" core that finds no DSP left
           (LUT4s, within 3 % of yosys on the pipelined core), times 1.27 on iCE40: nextpnr's
           logic cells, the figure the device's capacity counts, were 1.27 LUT4s in the
           UP5K builds of the digits SoC (bench/fmax.py, lanes 2-2 and 2-5)
    block RAM = the memories above (less the weights placed in SPRAM)
                + 2 (host link receive and response buffers)
    SPRAM = the primitives of the weights placed there
    DSPs = one for the host link and one per "mul" core, while the device has them
"""

from __future__ import annotations

import difflib
import math

import numpy as np

from ..image import CoreConfig, HwConfig, Image, LayerParams, param_fields, param_values
from .devices import DEVICES, Device, find_device

FAMILY_CLOCK_HZ = {"ice40": 12e6, "ecp5": 25e6}
READ_BITS = {"ice40": 64, "ecp5": 72}
BRAM_SHAPES = {
    "ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),
    "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),
}
LUT_SOC, LUT_CORE, LUT_PER_V_BIT, LUT_PER_LANE, LUT_PER_LANE_ACC_BIT = 1620, 261, 26, 16, 3
# iCE40 logic cells per LUT4: nextpnr also spends a cell on a flip-flop or carry it cannot pack
# with a LUT (the pipeline's registers): 4205 / 3307 and 4300 / 3391 on the UP5K digits builds
ICE40_CELLS_PER_LUT = 1.27
BRAM_SOC = 2  # the host link's receive and response buffers
SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384  # SB_SPRAM256KA (hdl/spram.py)
FF_MEMORY_DEPTH = 2  # yosys keeps memories this shallow in flip-flops
MAX_ADDRESS = 1 << 16  # AER addresses are 16 bits
RESOURCES = ("luts", "bram", "spram", "dsp")


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
    when the estimate does not fit.
    """
    _check_chain(layers, n_inputs)
    if device is not None or board is not None:
        # a hardware target: the gateware must run every layer
        Image(n_inputs, list(layers), HwConfig(device="", cores=tuple(
            CoreConfig(index, 0, layer.n_out, 1) for index, layer in enumerate(layers))))\
            .check_gateware()
    if any(layer.features() for layer in layers):
        # Without a target (a target was refused above): the gateware runs none of these
        # layers yet (convolution, synaptic current, multi-spike, LI readout...), so there is no
        # fit to check; one core per layer, which only the golden model runs.
        return HwConfig(device=resolve_device("iCE40UP5K").name, cores=tuple(
            CoreConfig(index, 0, layer.n_out, 1) for index, layer in enumerate(layers)))
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
                    if min(lanes, layer.n_out) * layer.weight_bits > budget]
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
    # loader); SPRAM only for a network that fits no other way.
    first = budgets
    cache: dict = {}
    for spram in (False, True) if dev.spram else (True,):
        budgets = first
        config = mapping(budgets)
        while True:
            estimate = _estimate(layers, config, spram=spram, cache=cache)
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
                                                   cache=cache)),
                                -lanes_now, index, trial, narrower))
            if not options:
                break
            _, _, _, budgets, config = min(options, key=lambda o: o[:3])
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
    """On a device with SPRAM and block RAM over: what the SPRAM holds and the largest weight
    memory left in block RAM, with what it would take there."""
    used, cap = estimate["spram"]
    if not cap or estimate["bram"][0] <= estimate["bram"][1]:
        return ""
    placed = spram_cores(layers, config)
    left = [(spram_primitives(*_weight_shape(layers[c.layer], c)), index, c)
            for index, c in enumerate(config.cores) if index not in placed]
    if not left:
        return f" (SPRAM: {used} of {cap} in use)"
    need, index, core = max(left, key=lambda item: (item[0], -item[1]))
    width, depth = _weight_shape(layers[core.layer], core)
    return (f" (SPRAM: {used} of {cap} in use; core {index}'s {width} x {depth} weight memory "
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
        parts = -(-layer.n_out // max_neurons)
        base, extra = divmod(layer.n_out, parts)
        lo = 0
        for part in range(parts):
            hi = lo + base + (1 if part < extra else 0)
            cores.append(CoreConfig(index, lo, hi,
                                    _lanes(hi - lo, layer.weight_bits, lanes,
                                           None if budget_bits is None
                                           else budget_bits[index])))
            lo = hi
    return tuple(cores)


def _lanes(neurons: int, weight_bits: int, lanes: int | None, budget_bits: int | None) -> int:
    if lanes is not None:
        return min(lanes, neurons)
    widest = max(1, min(neurons, budget_bits // weight_bits))
    groups = -(-neurons // widest)
    return -(-neurons // groups)


# -- resources -----------------------------------------------------------------------------------
def blocks_for(width: int, depth: int, shapes) -> int:
    """Block RAMs for a width x depth memory in its cheapest data-port shape (>= 1)."""
    if width <= 0 or depth <= 0:
        return 0
    return max(1, min(math.ceil(width / w) * math.ceil(depth / d) for w, d in shapes))


def _leak_bits(layer: LayerParams) -> int:
    return {"none": 0, "shift": 5, "mul": layer.decay_frac + 1}[layer.decay_mode]


def _param_bits(layer: LayerParams, core: CoreConfig) -> int:
    """Width of the per-neuron parameter words a core stores (image.param_fields; fields uniform
    over the core's neurons are constants)."""
    values = param_values(layer)
    return sum(f.width for f in param_fields(layer)
               if _varies(values[f.name][core.lo:core.hi]))


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
    return core.lanes * layer.weight_bits, layer.fan_in * core.groups


def _block_ram(layers: list[LayerParams], config: HwConfig,
               cache: dict | None = None) -> tuple[list[int], int]:
    """Block RAMs of each core's weight memory, and of everything else (`cache` keeps the
    parameter widths of a core's neurons between calls of one mapping search)."""
    cache = {} if cache is None else cache
    shapes = BRAM_SHAPES[resolve_device(config.device).family]
    weights = []
    other = BRAM_SOC if config.cores else 0
    for core in config.cores:
        layer = layers[core.layer]
        weights.append(blocks_for(*_weight_shape(layer, core), shapes))
        other += _memory_blocks(core.lanes * layer.acc_bits, core.groups, shapes)
        other += _memory_blocks(layer.v_bits + 1, core.neurons, shapes)
        key = (core.layer, core.lo, core.hi)
        if key not in cache:
            cache[key] = _param_bits(layer, core)
        other += _memory_blocks(cache[key], core.neurons, shapes)
    for index, layer in enumerate(layers):
        if layer.recurrent and config.cores_of(index):
            other += _memory_blocks(17, layer.n_out + 2, shapes)
    return weights, other


def spram_cores(layers: list[LayerParams], config: HwConfig) -> frozenset[int]:
    """Indices (into ``config.cores``) of the cores whose weight memory goes to SPRAM
    (placement rule: module docstring). Empty on devices without SPRAM and whenever block RAM
    suffices; ``hdl.array.CoreArray`` builds exactly this placement."""
    return _place(layers, config, *_block_ram(layers, config))


def _place(layers: list[LayerParams], config: HwConfig, weights: list[int],
           other: int) -> frozenset[int]:
    dev = resolve_device(config.device)
    if not dev.spram or not config.cores:
        return frozenset()
    need = sum(weights) + other
    left = dev.spram
    placed = set()
    cost = [spram_primitives(*_weight_shape(layers[core.layer], core))
            for core in config.cores]
    for index in sorted(range(len(config.cores)), key=lambda i: (-weights[i] / cost[i], i)):
        if need <= dev.bram:
            break
        if cost[index] <= left:
            placed.add(index)
            left -= cost[index]
            need -= weights[index]
    return frozenset(placed)


def estimate_resources(layers: list[LayerParams], config: HwConfig) -> dict[str, tuple[int, int]]:
    """resource -> (need, capacity) for luts, bram, spram and dsp (model: module docstring)."""
    return _estimate(layers, config, spram=True)


def _estimate(layers: list[LayerParams], config: HwConfig, *, spram: bool,
              cache: dict | None = None) -> dict[str, tuple[int, int]]:
    dev = resolve_device(config.device)
    weights, bram = _block_ram(layers, config, cache)
    placed = _place(layers, config, weights, bram) if spram else frozenset()
    spram = 0
    for index, core in enumerate(config.cores):
        if index in placed:
            spram += spram_primitives(*_weight_shape(layers[core.layer], core))
        else:
            bram += weights[index]
    luts = LUT_SOC if config.cores else 0
    dsp = 1 if config.cores and dev.dsp else 0
    for core in config.cores:
        layer = layers[core.layer]
        luts += (LUT_CORE + LUT_PER_V_BIT * layer.v_bits
                 + core.lanes * (LUT_PER_LANE + LUT_PER_LANE_ACC_BIT * layer.acc_bits))
        if layer.decay_mode == "mul":
            if dsp < dev.dsp:
                dsp += 1
            else:
                luts += layer.v_bits * (layer.decay_frac + 1)
    if dev.family == "ice40":
        luts = math.ceil(luts * ICE40_CELLS_PER_LUT)
    return {"luts": (luts, dev.luts), "bram": (bram, dev.bram), "spram": (spram, dev.spram),
            "dsp": (dsp, dev.dsp)}


# -- capacity ------------------------------------------------------------------------------------
def _fits(neurons: int, fan_in: int, weight_bits: int, device: str) -> bool:
    layer = LayerParams("probe", np.zeros((neurons, fan_in), np.int32), bias=np.zeros(neurons),
                        threshold=np.ones(neurons), weight_bits=weight_bits, v_bits=16,
                        acc_bits=2, decay_mode="shift", decay_shift=np.full(neurons, 3))
    try:
        map_network([layer], fan_in, device=device)
    except FitError:
        return False
    return True


def _largest(fits, high: int) -> int:
    lo, hi = 0, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def device_capacity(device: str) -> dict:
    """What this mapper places on `device`, SPRAM included (``boards.catalog.board_capacities``
    and ``spikeforge boards`` list it): neurons (one layer, fan-in 1, 8-bit) and synapses at 8
    and 4 bits (one layer of up to 256 neurons with the largest fan-in that maps, so the weight
    memory is what limits; on the UP5K its weights go to SPRAM once block RAM runs out)."""
    dev = resolve_device(device)
    neurons = _largest(lambda n: _fits(n, 1, 8, dev.name), 1 << 16)
    width = min(neurons, 256)
    synapses = {8: 0, 4: 0}
    for bits in (8, 4) if width else ():
        fan_in = _largest(lambda f, b=bits: _fits(width, f, b, dev.name), (1 << 16) - 1)
        synapses[bits] = width * fan_in
    return {"device": dev.name, "luts": dev.luts, "bram": dev.bram, "spram": dev.spram,
            "dsp": dev.dsp, "neurons": neurons, "synapses_8bit": synapses[8],
            "synapses_4bit": synapses[4]}

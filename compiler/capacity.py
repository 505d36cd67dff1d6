"""What fits on each device: neurons and synapses by the mapper itself (``map_network`` and its
resource model), so the figures move when the mapper does. ``boards.catalog.board_capacities``
lists them per board; docs/boards.md's table is generated from them.

The probe is one plain LIF layer (16-bit membrane, shift decay, parameters uniform over the
neurons, so they take no memory) whose accumulator is as wide as full-scale weights need:
``(fan_in << (weight_bits - 1)).bit_length() + 1`` bits, what ``LayerParams.acc_bits_needed``
gives when every weight is the most negative. A real network of the same shape needs the same
or less.
"""

from __future__ import annotations

import numpy as np

from ..image import LayerParams
from .devices import find_device
from .mapper import FitError, estimate_resources, map_network

PROBE_V_BITS = 16
MAX_NEURONS = 1 << 16  # AER addresses are 16 bits
SYNAPSE_LAYER_NEURONS = 256  # the mapper's default neurons per core


def _probe(neurons: int, fan_in: int, weight_bits: int) -> LayerParams:
    acc_bits = max(2, (fan_in << (weight_bits - 1)).bit_length() + 1)
    return LayerParams("probe", np.zeros((neurons, fan_in), np.int32), bias=np.zeros(neurons),
                       threshold=np.ones(neurons), weight_bits=weight_bits,
                       v_bits=PROBE_V_BITS, acc_bits=acc_bits, decay_mode="shift",
                       decay_shift=np.full(neurons, 3))


def _place(neurons: int, fan_in: int, weight_bits: int,
           device: str) -> tuple[bool, dict[str, tuple[int, int]]]:
    """(whether the mapper places the probe on `device`, its estimate: resource -> (need,
    capacity); when it does not fit, the estimate of the mapping that came closest)."""
    layer = _probe(neurons, fan_in, weight_bits)
    try:
        config = map_network([layer], fan_in, device=device)
    except FitError as exc:
        return False, dict(exc.resources)
    return True, estimate_resources([layer], config)


def _over(estimate: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
    return {r: [need, cap] for r, (need, cap) in estimate.items() if need > cap}


def _largest(place, high: int) -> tuple[int, dict, dict]:
    """(the largest n in 0..high that fits, the estimate at n, what n + 1 exceeds:
    resource -> [need, capacity], empty when high fits)."""
    lo, hi = 0, high
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if place(mid)[0]:
            lo = mid
        else:
            hi = mid - 1
    return lo, (place(lo)[1] if lo else {}), (_over(place(lo + 1)[1]) if lo < high else {})


def device_capacity(device: str) -> dict:
    """What the mapper places on `device`:

    neurons        one layer of fan-in 1 (the membrane and accumulator memories limit it)
    synapses_Nbit  one layer of min(neurons, 256) neurons with the widest fan-in that fits, at
                   N = 8 and 4 weight bits (the weight memory limits it)
    limits         per figure, what one more neuron or input would exceed:
                   resource -> [need, capacity]
    estimate       the mapper's estimate (resource -> [need, capacity]) of the 8-bit synapse
                   figure's layer
    smallest       when nothing fits: what the probe of 1 neuron and 1 input exceeds
    """
    dev = find_device(device)
    neurons, _, neuron_limit = _largest(lambda n: _place(n, 1, 8, dev.name), MAX_NEURONS)
    width = min(neurons, SYNAPSE_LAYER_NEURONS)
    synapses = {8: 0, 4: 0}
    limits = {"neurons": neuron_limit}
    estimate = {}
    for bits in (8, 4) if width else ():
        fan_in, at, limit = _largest(lambda f, b=bits: _place(width, f, b, dev.name),
                                     MAX_NEURONS - 1)
        synapses[bits] = width * fan_in
        limits[f"synapses_{bits}bit"] = limit
        if bits == 8:
            estimate = {r: list(nc) for r, nc in at.items()}
    return {"device": dev.name, "luts": dev.luts, "bram": dev.bram, "spram": dev.spram,
            "dsp": dev.dsp, "neurons": neurons, "synapses_8bit": synapses[8],
            "synapses_4bit": synapses[4], "limits": limits, "estimate": estimate,
            "smallest": None if neurons else _over(_place(1, 1, 8, dev.name)[1])}

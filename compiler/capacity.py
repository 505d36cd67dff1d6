"""What fits on each device: neurons and synapses by the mapper's own resource model
(``boards.catalog.board_capacities`` lists it per board)."""

from __future__ import annotations

import numpy as np

from ..image import LayerParams
from .devices import find_device
from .mapper import FitError, map_network


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
    """Neurons (one layer, fan-in 1, 8-bit) and synapses (one layer of up to 256 neurons
    with the largest fan-in that fits, so the weight memory is what limits) that the mapper
    places on `device`."""
    dev = find_device(device)
    neurons = _largest(lambda n: _fits(n, 1, 8, dev.name), 1 << 16)
    width = min(neurons, 256)
    synapses = {8: 0, 4: 0}
    for bits in (8, 4) if width else ():
        fan_in = _largest(lambda f, b=bits: _fits(width, f, b, dev.name), (1 << 16) - 1)
        synapses[bits] = width * fan_in
    return {"device": dev.name, "luts": dev.luts, "bram": dev.bram, "spram": dev.spram,
            "dsp": dev.dsp, "neurons": neurons, "synapses_8bit": synapses[8],
            "synapses_4bit": synapses[4]}

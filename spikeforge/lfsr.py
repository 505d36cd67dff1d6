"""The learning rule's random source: one 16-bit Galois LFSR per core (docs/learning.md).

A contract shared by the golden model (sim/learning.py) and the gateware (hdl/learning.py,
hdl/core.py): the taps, the sequence and where each core's LFSR starts. Imports nothing of the
project.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["CORE_STRIDE", "LFSR_PERIOD", "LFSR_TAPS", "lfsr_initial_state", "lfsr_positions",
           "lfsr_sequence", "lfsr_start"]

LFSR_TAPS = 0xB400
LFSR_PERIOD = 0xFFFF
CORE_STRIDE = 251 * 256


@lru_cache(maxsize=1)
def lfsr_sequence() -> np.ndarray:
    """The 65535 states of the 16-bit Galois LFSR, starting from state 1."""
    out = np.empty(LFSR_PERIOD, dtype=np.int64)
    state = 1
    for index in range(LFSR_PERIOD):
        out[index] = state
        lsb = state & 1
        state >>= 1
        if lsb:
            state ^= LFSR_TAPS
    return out


@lru_cache(maxsize=1)
def lfsr_positions() -> np.ndarray:
    """Index of every state (1..65535) in lfsr_sequence()."""
    pos = np.empty(LFSR_PERIOD + 1, dtype=np.int64)
    pos[lfsr_sequence()] = np.arange(LFSR_PERIOD)
    return pos


def lfsr_start(seed: int, core: int) -> int:
    """Index into lfsr_sequence() of the first state of core `core`'s LFSR."""
    return int((lfsr_positions()[seed] + CORE_STRIDE * core) % LFSR_PERIOD)


def lfsr_initial_state(seed: int, core: int) -> int:
    """The value the gateware loads into core `core`'s LFSR at reset."""
    return int(lfsr_sequence()[lfsr_start(seed, core)])

"""Address-event representation (AER) of spikes, as every stream in the gateware carries them."""

from amaranth.hdl import unsigned
from amaranth.lib import data

__all__ = ["ADDR_BITS", "SpikeEvent"]

#: Width of an AER address: a layer holds at most 2**16 neurons (and inputs).
ADDR_BITS = 16


class SpikeEvent(data.Struct):
    """One spike, or the end of a timestep.

    A stream of a timestep is the events of that step (``eos`` = 0, ``addr`` = the index of the
    neuron that fired, ascending where the producer is a core or a merger) followed by exactly
    one event with ``eos`` = 1, whose ``addr`` is ignored. An empty timestep is a lone ``eos``.
    """

    addr: unsigned(ADDR_BITS)
    eos: unsigned(1)

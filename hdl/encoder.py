"""The on-chip rate encoder: intensities in, one timestep of AER input events out per request.

The host sends a sample's 8-bit intensities once; the encoder draws every step's spikes from an
LFSR seeded from the image, bit for bit as `sim.encode.rate_lfsr` (the specification).
"""

import functools
import operator

from amaranth import C, Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..lfsr import LFSR_TAPS
from ..sim.encode import RATE_LFSR_STRIDE
from .event import SpikeEvent

__all__ = ["RateEncoder", "lfsr_advance", "lfsr_advance_masks"]


def lfsr_advance_masks(steps: int) -> list[int]:
    """For each bit of the state `steps` steps on, the mask of today's bits it is the XOR of.

    The Galois step ``s -> (s >> 1) ^ (s[0] ? taps : 0)`` is linear over GF(2), so any number of
    steps is one 16x16 bit matrix; its rows are worked out here, in Python, once.
    """
    masks = [1 << i for i in range(16)]  # bit i of the state, as a function of today's bits
    for _ in range(steps):
        low = masks[0]
        masks = [masks[i + 1] if i < 15 else 0 for i in range(16)]
        masks = [m ^ low if (LFSR_TAPS >> i) & 1 else m for i, m in enumerate(masks)]
    return masks


def lfsr_advance(state, steps: int):
    """`state` advanced `steps` steps of the 16-bit Galois LFSR, as one level of XORs.

    Unrolling the steps as expressions would nest them `steps` deep and share subterms, which
    Amaranth walks as a tree: exponential in `steps`. The bit matrix keeps each output bit a
    flat XOR of at most 16 input bits.
    """
    bits = []
    for mask in lfsr_advance_masks(steps):
        terms = [state[j] for j in range(16) if (mask >> j) & 1]
        bits.append(functools.reduce(operator.xor, terms) if terms else C(0, 1))
    return Cat(*bits)


class RateEncoder(wiring.Component):
    """Spikes of one timestep from stored intensities::

        each draw:  r <- advance(r, 8)
        input j of step t (draw t * n + j + 1) spikes when (r & 0xFF) < intensity[j]

    ``restart`` sets ``r`` to ``seed`` (the start of a sample; ignored while ``busy``).
    ``start`` begins a step: the inputs are visited in order, one per cycle while ``o`` is not
    stalled, and each spiking input leaves as an event on ``o``; the step ends with one
    ``eos``. A step costs ``n`` cycles plus 2, more under backpressure.

    Parameters
    ----------
    n_inputs : int
        Inputs, 1..65536.
    seed : int
        The LFSR's state at ``restart``, 1..65535.

    Members
    -------
    w_addr : In(range(n_inputs))
    w_data : In(8)
    w_en : In(1)
        Intensity write port (host link, flash loader); not while ``busy``.
    restart : In(1)
        Strobe: the next step is the first of a sample.
    start : In(1)
        Strobe: encode one step (ignored while ``busy``).
    busy : Out(1)
        High from ``start`` until the step's ``eos`` has left.
    o : Out(stream.Signature(SpikeEvent))
    """

    def __init__(self, *, n_inputs: int, seed: int):
        n_inputs, seed = operator.index(n_inputs), operator.index(seed)
        if not 1 <= n_inputs <= 1 << 16:
            raise ValueError(f"Input count must be 1..65536, not {n_inputs!r}")
        if not 1 <= seed <= 0xFFFF:
            raise ValueError(f"LFSR seed must be 1..65535, not {seed!r}")
        self._n, self._seed = n_inputs, seed
        super().__init__({
            "w_addr": In(range(n_inputs)), "w_data": In(8), "w_en": In(1),
            "restart": In(1), "start": In(1), "busy": Out(1),
            "o": Out(stream.Signature(SpikeEvent)),
        })

    @property
    def n_inputs(self) -> int:
        return self._n

    @property
    def seed(self) -> int:
        return self._seed

    def elaborate(self, platform):
        m = Module()
        n = self._n
        m.submodules.mem = mem = Memory(shape=unsigned(8), depth=n, init=[])
        write = mem.write_port()
        read = mem.read_port(transparent_for=())
        m.d.comb += [write.addr.eq(self.w_addr), write.data.eq(self.w_data),
                     write.en.eq(self.w_en & ~self.busy)]

        state = Signal(16, init=self._seed)
        j = Signal(range(n + 1))  # next input to read
        pending = Signal()  # stage 1 holds input j - 1's intensity and its draw
        pending_j = Signal(range(n))
        draw = Signal(8)
        stall = self.o.valid & ~self.o.ready
        advance = ~stall

        with m.If(self.restart & ~self.busy):
            m.d.sync += state.eq(self._seed)

        # Stage 0: read intensity[j] and draw its random byte.
        reading = self.busy & (j < n) & advance
        m.d.comb += [read.addr.eq(j), read.en.eq(advance)]
        next_state = lfsr_advance(state, RATE_LFSR_STRIDE)
        with m.If(reading):
            m.d.sync += [state.eq(next_state), draw.eq(next_state[:8]), pending_j.eq(j),
                         j.eq(j + 1)]
        with m.If(advance):
            m.d.sync += pending.eq(reading)

        # Stage 1: compare; an event for a spike, the eos once every input has been seen.
        with m.If(advance):
            m.d.sync += self.o.valid.eq(0)
            with m.If(pending & (draw < read.data)):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.addr.eq(pending_j),
                             self.o.payload.eos.eq(0)]
            with m.Elif(self.busy & ~pending & ~reading & (j == n) & ~self.o.payload.eos):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eos.eq(1)]
        with m.If(self.o.valid & self.o.ready & self.o.payload.eos):
            m.d.sync += [self.busy.eq(0), self.o.valid.eq(0), self.o.payload.eos.eq(0)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), j.eq(0), pending.eq(0), self.o.payload.eos.eq(0)]
        return m

"""The on-chip rate encoder: intensities in, one timestep of AER input events out per request.

The host sends a sample's 8-bit intensities once; the encoder draws every step's spikes from an
LFSR seeded from the image, bit for bit as `sim.encode.rate_lfsr` (the specification).
"""

import functools
import operator

from amaranth import C, Cat, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
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
    ``start`` begins a step's scan: the inputs are visited in order, one per cycle unless the
    queue is full, each spiking input's event enters a queue of ``queue`` entries, and the
    scan ends by queueing one ``eos``; ``o`` is the queue's output. A scan costs ``n`` cycles
    plus 2; it stalls only on a full queue, so it runs while the consumer of ``o`` works on the
    events already queued (the array integrating them), and the next step's scan may start
    as soon as this one's ``eos`` is queued.

    Parameters
    ----------
    n_inputs : int
        Inputs, 1..65536.
    seed : int
        The LFSR's state at ``restart``, 1..65535.
    queue : int
        Entries of the output queue, at least 2.

    Members
    -------
    w_addr : In(range(n_inputs))
    w_data : In(8)
    w_en : In(1)
        Intensity write port (host link, flash loader); not while ``busy``.
    restart : In(1)
        Strobe: the next step is the first of a sample.
    start : In(1)
        Strobe: scan one step (ignored while ``busy``).
    busy : Out(1)
        High from ``start`` until the step's ``eos`` is queued (not yet taken at ``o``).
    o : Out(stream.Signature(SpikeEvent))
    """

    def __init__(self, *, n_inputs: int, seed: int, queue: int = 32):
        n_inputs, seed = operator.index(n_inputs), operator.index(seed)
        queue = operator.index(queue)
        if not 1 <= n_inputs <= 1 << 16:
            raise ValueError(f"Input count must be 1..65536, not {n_inputs!r}")
        if not 1 <= seed <= 0xFFFF:
            raise ValueError(f"LFSR seed must be 1..65535, not {seed!r}")
        if queue < 2:
            raise ValueError(f"Queue depth must be at least 2, not {queue!r}")
        self._n, self._seed, self._queue = n_inputs, seed, queue
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

    @property
    def queue(self) -> int:
        return self._queue

    def elaborate(self, platform):
        m = Module()
        n = self._n
        m.submodules.mem = mem = Memory(shape=unsigned(8), depth=n, init=[])
        write = mem.write_port()
        read = mem.read_port(transparent_for=())
        m.d.comb += [write.addr.eq(self.w_addr), write.data.eq(self.w_data),
                     write.en.eq(self.w_en & ~self.busy)]
        # The queue holds an input's index and whether it is the eos: narrower than an event.
        addr_bits = max(1, (n - 1).bit_length())
        m.submodules.queue = queue = SyncFIFOBuffered(width=addr_bits + 1, depth=self._queue)
        m.d.comb += [
            self.o.valid.eq(queue.r_rdy),
            self.o.payload.addr.eq(queue.r_data[:addr_bits]),
            self.o.payload.eos.eq(queue.r_data[addr_bits]),
            queue.r_en.eq(self.o.ready),
        ]

        state = Signal(16, init=self._seed)
        j = Signal(range(n + 1))  # next input to read
        scanned = Signal()  # j == n, registered: no comparator before the read enable
        pending = Signal()  # stage 1 holds input j - 1's intensity and its draw
        pending_j = Signal(range(n))
        draw = Signal(8)
        # stage 2: an entry for the queue
        put, put_addr, put_eos = Signal(), Signal(addr_bits), Signal()
        m.d.comb += [queue.w_en.eq(put), queue.w_data.eq(Cat(put_addr, put_eos))]
        advance = ~put | queue.w_rdy

        with m.If(self.restart & ~self.busy):
            m.d.sync += state.eq(self._seed)

        # Stage 0: read intensity[j] and draw its random byte.
        reading = self.busy & ~scanned & advance
        m.d.comb += [read.addr.eq(j), read.en.eq(advance)]
        next_state = lfsr_advance(state, RATE_LFSR_STRIDE)
        with m.If(reading):
            m.d.sync += [state.eq(next_state), draw.eq(next_state[:8]), pending_j.eq(j),
                         j.eq(j + 1), scanned.eq(j == n - 1)]
        with m.If(advance):
            m.d.sync += pending.eq(reading)

        # Stage 1: compare; an entry for a spike, the eos once every input has been seen.
        with m.If(advance):
            m.d.sync += put.eq(0)
            with m.If(pending & (draw < read.data)):
                m.d.sync += [put.eq(1), put_addr.eq(pending_j), put_eos.eq(0)]
            with m.Elif(self.busy & ~pending & ~reading & scanned):
                m.d.sync += [put.eq(1), put_eos.eq(1), self.busy.eq(0)]
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), j.eq(0), scanned.eq(0), pending.eq(0)]
        return m

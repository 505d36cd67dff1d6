"""AER routing blocks: broadcast (fork), in-order merge and a block-RAM event FIFO."""

import operator

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .event import SpikeEvent

__all__ = ["EventFork", "EventMerge", "EventFifo"]


class EventFork(wiring.Component):
    """Broadcast every event of ``i`` to all ``n`` outputs ``o[k]``.

    An event leaves ``i`` once every output has taken it; an output that took it early sees
    ``valid`` low until then. ``valid`` never depends on ``ready``.
    """

    def __init__(self, n: int):
        self._n = operator.index(n)
        if self._n < 1:
            raise ValueError(f"A fork needs at least one output, not {n!r}")
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)),
            "o": Out(stream.Signature(SpikeEvent)).array(self._n),
        })

    @property
    def n(self) -> int:
        return self._n

    def elaborate(self, platform):
        m = Module()
        taken = Signal(self._n)
        done = Signal(self._n)
        for k, port in enumerate(self.o):
            m.d.comb += [
                port.payload.eq(self.i.payload),
                port.valid.eq(self.i.valid & ~taken[k]),
                done[k].eq(taken[k] | port.ready),
            ]
        m.d.comb += self.i.ready.eq(done.all())
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += taken.eq(0)
        with m.Elif(self.i.valid):
            m.d.sync += taken.eq(done)
        return m


class EventMerge(wiring.Component):
    """Concatenate the steps of ``n`` inputs in input order: the events of ``i[0]``, then of
    ``i[1]``, ..., then a single ``eos``. The ``eos`` of every input but the last is absorbed.

    With inputs that each emit ascending addresses from ascending, disjoint ranges (the cores
    of a layer, sorted by ``lo``), the merged step is ascending.
    """

    def __init__(self, n: int):
        self._n = operator.index(n)
        if self._n < 1:
            raise ValueError(f"A merge needs at least one input, not {n!r}")
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)).array(self._n),
            "o": Out(stream.Signature(SpikeEvent)),
        })

    @property
    def n(self) -> int:
        return self._n

    def elaborate(self, platform):
        m = Module()
        last = self._n - 1
        k = Signal(range(self._n))
        for j, port in enumerate(self.i):
            with m.If(k == j):
                absorb = port.payload.eos if j != last else Const(0)
                m.d.comb += [
                    self.o.payload.eq(port.payload),
                    self.o.valid.eq(port.valid & ~absorb),
                    port.ready.eq(self.o.ready | absorb),
                ]
                with m.If(port.valid & port.ready & port.payload.eos):
                    m.d.sync += k.eq(0 if j == last else j + 1)
        return m


class EventFifo(wiring.Component):
    """A first-in first-out queue of events, with a synchronous read so it maps to block RAM.

    ``level`` counts the events held. Latency is two cycles from ``i`` to ``o``.
    """

    def __init__(self, depth: int):
        self._depth = operator.index(depth)
        if self._depth < 1:
            raise ValueError(f"FIFO depth must be at least 1, not {depth!r}")
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)),
            "o": Out(stream.Signature(SpikeEvent)),
            "level": Out(range(self._depth + 1)),
        })

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=SpikeEvent.as_shape().size,
                                                    depth=self._depth)
        m.d.comb += [
            fifo.w_data.eq(self.i.payload),
            fifo.w_en.eq(self.i.valid),
            self.i.ready.eq(fifo.w_rdy),
            self.o.payload.eq(fifo.r_data),
            self.o.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o.ready),
            self.level.eq(fifo.level),
        ]
        return m

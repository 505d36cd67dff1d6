"""Stream register stages whose ``ready`` is a flip-flop: a two-entry skid buffer at full rate,
a one-entry register at half rate."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .event import SpikeEvent

__all__ = ["SkidBuffer", "StreamRegister", "input_register"]


class SkidBuffer(wiring.Component):
    """Passes a stream through two registers so that no combinational path runs from ``o.ready``
    to ``i.ready`` or from ``i.valid`` to ``o.valid``: both outputs are flip-flops.

    Members
    -------
    i : In(stream.Signature(shape))
        ``i.ready`` is high unless both entries are full (a register).
    o : Out(stream.Signature(shape))
        ``o.valid`` and ``o.payload`` are registers. Order is kept and nothing is lost.
    empty : Out(1)
        No entry is held.

    Latency: an item taken at ``i`` is offered at ``o`` the next cycle. Throughput: one item per
    cycle while ``o.ready`` stays high.
    """

    def __init__(self, shape=SpikeEvent):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        main_valid = Signal()
        skid_valid = Signal()
        skid = Signal(self._shape)
        m.d.comb += [
            self.o.valid.eq(main_valid),
            self.i.ready.eq(~skid_valid),
            self.empty.eq(~main_valid),  # the skid entry is only ever full behind main
        ]
        taken = self.i.valid & ~skid_valid
        with m.If(~main_valid | self.o.ready):  # main is free at the edge
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), main_valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += main_valid.eq(taken)
                with m.If(taken):
                    m.d.sync += self.o.payload.eq(self.i.payload)
        with m.Elif(taken):  # main holds on: the item waits in the skid entry
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class StreamRegister(wiring.Component):
    """A one-entry stream register: like :class:`SkidBuffer`, no combinational path runs from
    ``o.ready`` to ``i.ready`` or from ``i.valid`` to ``o.valid``, at half its throughput and
    with half its registers and none of its multiplexers: for streams slower than the clock
    (a UART's bytes).

    Members
    -------
    i : In(stream.Signature(shape))
        ``i.ready`` is high while the entry is empty (a register).
    o : Out(stream.Signature(shape))
        ``o.valid`` and ``o.payload`` are registers.

    Latency: an item taken at ``i`` is offered at ``o`` the next cycle. Throughput: one item
    every two cycles while ``o.ready`` stays high (the entry is free again the cycle after its
    item is taken).
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.valid):
            with m.If(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
        with m.Elif(self.i.valid):
            m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(1)]
        return m


def input_register(shape, cycles_per_item: int):
    """The register stage in front of a consumer that takes an item in ``cycles_per_item``
    cycles at the least: a :class:`SkidBuffer` at one, from two on a :class:`StreamRegister`
    (an item every other cycle keeps up, without the skid entry and its multiplexer). Either
    is empty when ``o.valid`` is low."""
    return SkidBuffer(shape) if cycles_per_item <= 1 else StreamRegister(shape)

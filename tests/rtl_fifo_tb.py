"""A tiny stream FIFO of spike events and its cocotb test: proves the RTL runner and drivers.

The words that leave a FIFO are the words that entered it, in order; the test checks that
under random input idling and output backpressure.
"""


import json
import os
import random
from pathlib import Path

from amaranth import Module, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out


class Event(data.Struct):
    addr: unsigned(16)
    eos: unsigned(1)


class EventFifo(wiring.Component):
    """A buffered synchronous FIFO between two event streams, counting what passes."""

    i: In(stream.Signature(Event))
    o: Out(stream.Signature(Event))
    count: Out(unsigned(16))

    def __init__(self, *, depth: int = 4):
        self._depth = depth
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=Event.as_shape().size,
                                                           depth=self._depth)
        m.d.comb += [
            queue.w_data.eq(self.i.payload), queue.w_en.eq(self.i.valid),
            self.i.ready.eq(queue.w_rdy),
            self.o.payload.eq(queue.r_data), self.o.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.o.ready),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.count.eq(self.count + 1)
        return m


try:
    import cocotb
except ImportError:  # imported outside a simulator only for EventFifo
    cocotb = None

if cocotb is not None and cocotb.is_simulation:
    from spikeforge.hdl.cocotb_tb import Clocked, StreamSink, StreamSource, event_word

    @cocotb.test()
    async def fifo_passes_events_in_order(dut):
        spec = json.loads(os.environ["FIFO_JOB"])
        rng = random.Random(spec["seed"])
        clock = Clocked(dut)
        source = StreamSource(dut, "i", rng, idle=spec["idle"])
        sink = StreamSink(dut, "o", rng, stall=spec["stall"])
        await clock.start()
        words = [event_word(rng.randrange(1 << 16), rng.random() < 0.1)
                 for _ in range(spec["count"])]
        source.send(words)
        while len(sink.words) < len(words):
            source.drive()
            sink.drive()
            await clock.settle()
            source.sample()
            sink.sample()
            await clock.edge()
            assert clock.cycle < 20 * len(words) + 100, "the FIFO stopped moving"
        assert sink.words == words
        await clock.tick()
        assert int(dut.count.value) == len(words)
        Path(spec["out"]).write_text(json.dumps({"cycles": clock.cycle}))

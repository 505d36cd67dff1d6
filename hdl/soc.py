"""The board-agnostic system on chip: UART host link in front of the core array."""

import operator

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..image import Image
from .array import CoreArray
from .hostlink import HostLink, connect_array
from .uart import UartRx, UartTx, uart_divisor

__all__ = ["SpikeSoC"]


class SpikeSoC(wiring.Component):
    """UART receiver and transmitter, :class:`HostLink` and :class:`CoreArray` of ``image``.

    Runs in the ``sync`` domain that the board wrapper provides (clock of ``clk_freq`` Hz, from
    a PLL where the board needs one, and its reset). The host speaks the protocol of
    docs/host-protocol.md at ``baud`` (8N1).

    Ports
    -----
    uart_rx : In(1)
        Serial data from the host, idle high. May come straight from a pin: the UART receiver
        passes it through a two-flop synchroniser first.
    uart_tx : Out(1)
        Serial data to the host, idle high.
    leds : Out(4)
        0: heartbeat (toggles about once a second); 1: host activity (lit ~50 ms after every
        frame received, good or bad); 2: busy (lit ~50 ms after the array or the link worked);
        3: sticky error (the array lost an event, or the link saw a bad frame, a framing error,
        a timeout or an overrun; cleared by reset).
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(4)

    def __init__(self, image: Image, *, clk_freq: float, baud: float = 115200,
                 timeout_bytes: int = 128, max_payload: int = 256, fifo_depth: int = 0):
        image.check()
        self._image = image
        self._clk_freq = float(clk_freq)
        self._baud = float(baud)
        self._divisor = uart_divisor(self._clk_freq, self._baud)
        self._timeout_bytes = operator.index(timeout_bytes)
        self._max_payload = operator.index(max_payload)
        self._fifo_depth = operator.index(fifo_depth)
        # Build (and so check) the parts' parameters now, not at elaboration.
        self._array = CoreArray(image, fifo_depth=self._fifo_depth)
        self._link = HostLink.for_array(self._array, byte_cycles=10 * self._divisor,
                                        timeout_bytes=self._timeout_bytes,
                                        max_payload=self._max_payload)
        super().__init__()

    @property
    def image(self) -> Image:
        return self._image

    @property
    def clk_freq(self) -> float:
        return self._clk_freq

    @property
    def baud(self) -> float:
        return self._baud

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def array(self) -> CoreArray:
        return self._array

    @property
    def link(self) -> HostLink:
        return self._link

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self._array
        m.submodules.link = link = self._link
        m.submodules.uart_rx = rx = UartRx(self._divisor)
        m.submodules.uart_tx = tx = UartTx(self._divisor)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]
        wiring.connect(m, rx.o, link.rx)
        wiring.connect(m, link.tx, tx.i)
        m.d.comb += [link.framing_error.eq(rx.framing_error), link.overrun.eq(rx.overrun)]
        connect_array(m, link, array)

        heartbeat = Signal(max(1, int(self._clk_freq).bit_length() - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += self.leds[0].eq(heartbeat[-1])

        # The LEDs' ~50 ms stretch counts prescaler ticks (2^12 cycles each), so its counters
        # stay a few bits wide: a 21-bit decrement and compare limited the whole SoC's clock.
        tick_bits = 12
        tick = Signal()
        m.d.sync += tick.eq(heartbeat[:tick_bits].all())

        def stretch(index, strobe):
            ticks = max(1, int(self._clk_freq / 20) >> tick_bits)
            left = Signal(range(ticks + 1), name=f"led{index}_left")
            lit = Signal(name=f"led{index}_lit")
            with m.If(strobe):
                m.d.sync += left.eq(ticks)
            with m.Elif(tick & (left != 0)):
                m.d.sync += left.eq(left - 1)
            m.d.sync += lit.eq(strobe | (left != 0))
            m.d.comb += self.leds[index].eq(lit)

        stretch(1, link.activity)
        stretch(2, link.busy | ~array.idle)
        m.d.comb += self.leds[3].eq(array.overflow | link.error)
        return m

"""8N1 UART receiver and transmitter with byte streams."""

import operator

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "uart_divisor"]


def uart_divisor(clk_freq: float, baud: float) -> int:
    """Clock cycles per bit, rounded to the nearest integer; at least 4 (mid-bit sampling
    needs a half bit of two cycles) and within 2 % of the requested rate (a frame of 10 bits
    then drifts by at most a fifth of a bit)."""
    if clk_freq <= 0 or baud <= 0:
        raise ValueError(f"clock and baud rate must be positive, not {clk_freq!r} and {baud!r}")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(f"a {clk_freq} Hz clock is too slow for {baud} baud (needs at least "
                         f"4 cycles per bit, has {clk_freq / baud:.2f})")
    error = abs(clk_freq / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"{baud} baud from a {clk_freq} Hz clock is off by {error:.1%} "
                         f"(divisor {divisor}); choose another rate")
    return divisor


class UartRx(wiring.Component):
    """Receive 8N1 frames from the ``rx`` line (idle high, LSB first).

    ``rx`` passes a two-flop synchroniser first, so it may come straight from a pin. A start
    bit is a low level held for half a bit (shorter glitches are ignored); every data bit and
    the stop bit are sampled in the middle of the bit. A byte with a good (high) stop bit is
    offered at ``o`` and held until taken; a byte that completes while the previous one is still
    held replaces it and pulses ``overrun``. A low stop bit pulses ``framing_error``, drops the
    byte, and the receiver waits for the line to go high (a break) before it looks for the
    next start bit.

    Sampling point: the synchroniser and the start-bit check delay the edge by 3 cycles, so a
    bit is sampled ``divisor // 2`` to ``divisor // 2 + 1`` cycles after its start (the edge's
    phase against the clock decides which). With 4 or 5 cycles per bit, back-to-back frames
    from a sender whose rate is off by up to 2 % still sample every bit, stop bit included,
    inside it (tests/test_hdl_uart.py models the line in continuous time).
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        self._divisor = operator.index(divisor)
        if self._divisor < 4:
            raise ValueError(f"UART divisor must be at least 4 cycles per bit, not {divisor!r}")
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(div))
        bit = Signal(range(8))
        shreg = Signal(8)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("Idle"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "Start"
            with m.State("Start"):
                with m.If(line):
                    m.next = "Idle"  # a glitch, not a start bit
                with m.Elif(timer == 0):
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "Data"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("Data"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(div - 1), shreg.eq(Cat(shreg[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "Stop"
            with m.State("Stop"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                        m.d.comb += self.overrun.eq(self.o.valid & ~self.o.ready)
                        m.next = "Idle"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "Break"
            with m.State("Break"):
                with m.If(line):
                    m.next = "Idle"
        return m


class UartTx(wiring.Component):
    """Send each byte taken at ``i`` as an 8N1 frame on ``tx`` (idle high, LSB first).

    ``i.ready`` is high while the line is idle and in the last cycle of a stop bit, so a byte
    is taken only when its frame can start at once, and a stream of bytes goes out back to
    back.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self._divisor = operator.index(divisor)
        if self._divisor < 1:
            raise ValueError(f"UART divisor must be at least 1 cycle per bit, not {divisor!r}")
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(range(11))  # bits of the frame still to send
        shreg = Signal(10, init=1)
        # The next byte may be taken in the last cycle of a stop bit, so frames go back to back.
        last = (bits == 1) & (timer == 0)
        m.d.comb += [self.tx.eq(shreg[0]), self.i.ready.eq((bits == 0) | last)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shreg.eq(Cat(0, self.i.payload, 1)), bits.eq(10), timer.eq(div - 1)]
        with m.Elif(bits == 0):
            pass
        with m.Elif(timer == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], 1)), bits.eq(bits - 1), timer.eq(div - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m

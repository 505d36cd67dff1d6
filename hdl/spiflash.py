"""A behavioural SPI NOR flash for simulation: the commands the flash loader uses, on a window
of bytes (docs/flash.md)."""

import operator

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SpiFlashModel"]


class SpiFlashModel(wiring.Component):
    """An SPI NOR flash (mode 0, MSB first) holding ``contents`` at byte address ``base``;
    every other address reads as erased (0xFF).

    Commands: 0xAB releases deep power-down; 0x03 READ takes a 24-bit address and then shifts
    out bytes from it on every falling SCK edge, the address incrementing (wrapping at 2**24)
    until CS rises. While powered down (``powered_down=True``, as an iCE40 board leaves its
    flash after configuration) READ is ignored and ``cipo`` stays high, as a released bus
    reads. Other commands are ignored until CS rises. SCK and CS are sampled in the ``sync``
    domain, so SCK must stay at least one cycle in each phase.

    Members
    -------
    cs_n, sck, copi : In(1)
    cipo : Out(1)
    """

    cs_n: In(1, init=1)
    sck: In(1)
    copi: In(1)
    cipo: Out(1, init=1)

    def __init__(self, contents: bytes, *, base: int = 0, powered_down: bool = True):
        self._contents = bytes(contents)
        self._base = operator.index(base)
        if not self._contents:
            raise ValueError("Flash contents must not be empty")
        if not 0 <= self._base <= (1 << 24) - len(self._contents):
            raise ValueError(f"Flash window must lie within 16 MiB, not base {base!r}")
        self._powered_down = bool(powered_down)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=8, depth=len(self._contents),
                                        init=list(self._contents))
        rd = mem.read_port(domain="comb")
        prev_sck = Signal()
        awake = Signal(init=not self._powered_down)
        shift = Signal(32)
        bits = Signal(6)
        reading = Signal()
        ignoring = Signal()
        addr = Signal(24)
        out = Signal(8)
        obit = Signal(3)
        m.d.sync += prev_sck.eq(self.sck)
        rise = self.sck & ~prev_sck
        fall = ~self.sck & prev_sck
        offset = Signal(25)
        m.d.comb += offset.eq(addr - self._base)
        in_window = (addr >= self._base) & (offset < len(self._contents))
        byte = Signal(8)
        m.d.comb += [rd.addr.eq(offset), byte.eq(0xFF)]
        with m.If(in_window):
            m.d.comb += byte.eq(rd.data)
        with m.If(self.cs_n):
            m.d.sync += [bits.eq(0), reading.eq(0), ignoring.eq(0), obit.eq(0),
                         self.cipo.eq(1)]
        with m.Elif(rise & ~reading & ~ignoring):
            word = Cat(self.copi, shift[:31])
            m.d.sync += [shift.eq(word), bits.eq(bits + 1)]
            with m.If(bits == 7):
                with m.If(word[:8] == 0xAB):
                    m.d.sync += [awake.eq(1), ignoring.eq(1)]
                with m.Elif((word[:8] != 0x03) | ~awake):
                    m.d.sync += ignoring.eq(1)
            with m.If(bits == 31):
                m.d.sync += [addr.eq(word[:24]), reading.eq(1)]
        with m.Elif(fall & reading):
            with m.If(obit == 0):
                m.d.sync += [self.cipo.eq(byte[7]), out.eq(byte << 1), addr.eq(addr + 1)]
            with m.Else():
                m.d.sync += [self.cipo.eq(out[7]), out.eq(out << 1)]
            m.d.sync += obit.eq(obit + 1)
        return m

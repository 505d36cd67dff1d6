"""CRC-16/CCITT-FALSE, one byte per cycle.

Polynomial x^16 + x^12 + x^5 + 1 (0x1021), initial value 0xFFFF, no reflection, no final XOR;
the check value (CRC of the ASCII bytes ``123456789``) is 0x29B1. With no final XOR, running the
CRC over a message followed by its CRC sent most significant byte first leaves 0: a receiver
checks a frame by that residue instead of comparing fields.
"""

from amaranth.hdl import Cat, Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["CRC_INIT", "CRC_POLY", "Crc16", "crc16_next"]

CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


def _taps() -> list[tuple[list[int], list[int]]]:
    """For each bit of the next CRC, the bits of the current CRC and of the byte that XOR into
    it: the bitwise algorithm run on sets of symbols (the CRC is linear over GF(2))."""
    bits = [frozenset({("c", k)}) for k in range(16)]
    for k in range(8):
        bits[8 + k] = bits[8 + k] ^ {("d", k)}
    for _ in range(8):
        top = bits[15]
        bits = [frozenset()] + bits[:15]
        bits = [b ^ top if CRC_POLY >> k & 1 else b for k, b in enumerate(bits)]
    return [(sorted(k for kind, k in b if kind == "c"), sorted(k for kind, k in b if kind == "d"))
            for b in bits]


_TAPS = _taps()


def crc16_next(crc: Value, byte: Value) -> Value:
    """The CRC after one more byte, as a combinational expression: one XOR of a few bits of
    ``crc`` and ``byte`` per output bit."""
    out = []
    for crc_bits, data_bits in _TAPS:
        out.append(Cat(*(crc[k] for k in crc_bits), *(byte[k] for k in data_bits)).xor())
    return Cat(*out)


class Crc16(wiring.Component):
    """A CRC-16/CCITT-FALSE register.

    ``init`` sets ``crc`` to 0xFFFF; otherwise ``en`` folds ``data`` into it. Both act at the
    next clock edge; ``init`` wins.
    """

    data: In(8)
    en: In(1)
    init: In(1)
    crc: Out(16, init=CRC_INIT)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.init):
            m.d.sync += self.crc.eq(CRC_INIT)
        with m.Elif(self.en):
            m.d.sync += self.crc.eq(crc16_next(self.crc, self.data))
        return m

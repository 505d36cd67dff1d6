"""A cycle model of SB_SPRAM256KA memories, written from the primitive's documented timing.

Lattice TN1314 and Yosys's `cells_sim.v`: on a rising edge with CHIPSELECT, a read (WREN low)
puts mem[ADDRESS] on DATAOUT; a write (WREN high) stores the nibbles MASKWREN enables and leaves
DATAOUT undefined; without CHIPSELECT everything holds. Shared by the Amaranth-simulator and the
cocotb tests of `hdl/spram.py`.
"""

from __future__ import annotations

import random


class SpramMemoryModel:
    """`SpramMemory(width, depth)` one cycle at a time.

    Contents are undefined after configuration, so the model tracks which bits are defined:
    `r_data` is (value, defined-bit mask), or None while the output is undefined after a write.
    """

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        self.mem: dict[int, tuple[int, int]] = {}
        self.r_data: tuple[int, int] | None = None

    def cycle(self, addr: int, r_en: int, w_en: int, w_data: int) -> None:
        if w_en:
            value, defined = self.mem.get(addr, (0, 0))
            mask = 0
            for k in range(-(-self.width // 4)):
                if w_en >> k & 1:
                    mask |= 0xF << (4 * k)
            mask &= (1 << self.width) - 1
            self.mem[addr] = ((value & ~mask) | (w_data & mask), defined | mask)
            self.r_data = None
        elif r_en:
            self.r_data = self.mem.get(addr, (0, 0))

    def agrees(self, bits: str) -> bool:
        """Whether an output, as a simulator's binary string (MSB first, X/Z allowed), shows
        every defined bit of `r_data`."""
        if self.r_data is None:
            return True
        value, defined = self.r_data
        for i, char in enumerate(reversed(bits)):
            if defined >> i & 1 and char != str(value >> i & 1):
                return False
        return True


def random_ops(rng: random.Random, width: int, depth: int, count: int) -> list[tuple]:
    """(addr, r_en, w_en, w_data) per cycle over a few addresses spread across every bank."""
    addrs = sorted({rng.randrange(depth) for _ in range(6)} | {0, depth - 1})
    ops = []
    for _ in range(count):
        kind = rng.random()
        addr = rng.choice(addrs)
        if kind < 0.4:
            ops.append((addr, 1, 0, 0))
        elif kind < 0.75:
            w_en = rng.randrange(1, 1 << -(-width // 4))
            ops.append((addr, rng.randrange(2), w_en, rng.randrange(1 << width)))
        else:
            ops.append((addr, 0, 0, rng.randrange(1 << width)))  # idle: everything holds
    return ops

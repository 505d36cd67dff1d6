"""Block-RAM read ports without yosys's read-during-write emulation, and a memory banked by
depth whose banks' read data is registered before the bank select."""

import operator
from types import SimpleNamespace

from amaranth.hdl import Array, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler.mapper import bank_depth

__all__ = ["NO_COLLISIONS", "BankedMemory", "bank_depth", "read_port"]

# Memory attributes for a memory whose users never need the data of a read that hits the
# address written in the same cycle (that data is undefined on the iCE40 and ECP5 block RAMs).
# yosys then maps a `read_port` below onto the RAM's own output register; for a synchronous
# Amaranth port it adds a register per data and address bit and a compare to emulate it.
NO_COLLISIONS = {"no_rw_check": 1}


def read_port(m: Module, memory: Memory) -> SimpleNamespace:
    """A read port of ``memory`` (made with ``attrs=NO_COLLISIONS``) with the members of a
    synchronous ``Memory`` read port the users drive and read: ``addr``, ``en`` (high unless
    driven) and ``data``, a cycle after its address in a cycle with ``en`` high, held while
    ``en`` is low. It is a combinational port and a register, the form in which yosys
    (``memory_dff``) honours ``no_rw_check``. The register has no reset: a ``ResetInserter``
    around the user leaves it alone, as it does a RAM's output."""
    port = memory.read_port(domain="comb")
    en = Signal(init=1)
    data = Signal(memory.shape, reset_less=True)
    with m.If(en):
        m.d.sync += data.eq(port.data)
    return SimpleNamespace(addr=port.addr, en=en, data=data)


class BankedMemory(wiring.Component):
    """``depth`` words of ``width`` bits in banks of ``bank_depth`` words (the last may be
    shallower), word ``a`` in bank ``a // bank_depth``, each bank its own ``Memory`` (made with
    ``NO_COLLISIONS``) so that yosys maps it alone. A bank's read data is registered before the
    multiplexer that selects the addressed bank: no path runs from a block RAM's output through
    that multiplexer.

    Parameters
    ----------
    width, depth : int
        Word width and count.
    bank_depth : int
        Words per bank, a power of 2.
    init : list of int
        Initial words (zero-extended to ``depth``).

    Members
    -------
    w_addr : In(range(depth))
    w_data : In(width)
    w_en : In(1)
        In a cycle with ``w_en`` high, word ``w_addr`` takes ``w_data``.
    r_addr : In(range(depth))
    r_data : Out(width)
        Word ``r_addr`` two cycles after the address (a read every cycle). A read of the word
        written in the same cycle returns undefined data (block RAM without read-during-write
        emulation); the writes of earlier cycles are seen.

    Raises
    ------
    ValueError
        If ``bank_depth`` is not a power of 2 or ``depth`` not positive.
    """

    def __init__(self, *, width: int, depth: int, bank_depth: int, init=()):
        self._width = operator.index(width)
        self._depth = operator.index(depth)
        self._bank_depth = operator.index(bank_depth)
        if self._depth < 1:
            raise ValueError(f"Depth must be a positive integer, not {depth!r}")
        if self._bank_depth < 1 or self._bank_depth & (self._bank_depth - 1):
            raise ValueError(f"Bank depth must be a power of 2, not {bank_depth!r}")
        self._init = list(init)
        super().__init__({
            "w_addr": In(range(self._depth)),
            "w_data": In(self._width),
            "w_en": In(1),
            "r_addr": In(range(self._depth)),
            "r_data": Out(self._width),
        })

    @property
    def banks(self) -> int:
        return -(-self._depth // self._bank_depth)

    @property
    def read_latency(self) -> int:
        """Cycles from ``r_addr`` to its word at ``r_data``."""
        return 2

    def elaborate(self, platform):
        m = Module()
        shift = self._bank_depth.bit_length() - 1
        w_bank, r_bank = self.w_addr >> shift, self.r_addr >> shift
        held = []
        for index in range(self.banks):
            lo = index * self._bank_depth
            depth = min(self._bank_depth, self._depth - lo)
            bank = Memory(shape=unsigned(self._width), depth=depth,
                          init=self._init[lo:lo + depth], attrs=NO_COLLISIONS)
            m.submodules[f"bank{index}"] = bank
            wr = bank.write_port()
            rd = read_port(m, bank)
            m.d.comb += [
                wr.addr.eq(self.w_addr), wr.data.eq(self.w_data),
                wr.en.eq(self.w_en & (w_bank == index)),
                rd.addr.eq(self.r_addr),
            ]
            data = Signal(self._width, name=f"bank{index}_data", reset_less=True)
            m.d.sync += data.eq(rd.data)
            held.append(data)
        if len(held) == 1:
            m.d.comb += self.r_data.eq(held[0])
            return m
        sel = [Signal(range(self.banks), name=f"sel{k}", reset_less=True) for k in (1, 2)]
        m.d.sync += [sel[0].eq(r_bank), sel[1].eq(sel[0])]
        m.d.comb += self.r_data.eq(Array(held)[sel[1]])
        return m

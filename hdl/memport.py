"""Block-RAM read ports without yosys's read-during-write emulation."""

from types import SimpleNamespace

from amaranth.hdl import Module, Signal
from amaranth.lib.memory import Memory

__all__ = ["NO_COLLISIONS", "read_port"]

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

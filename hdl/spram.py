"""The iCE40 UltraPlus single-port RAM (SB_SPRAM256KA) and wide or deep memories built of it.

On an iCE40 UP part the primitive itself is instantiated; everywhere else (the Amaranth
simulator, Verilator, Icarus, an ECP5 build) a behavioural model with the primitive's documented
timing stands in, so a design that is bit-exact in simulation is bit-exact on the part.
"""


import operator

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SPRAM_DEPTH", "SPRAM_POISON", "SPRAM_WIDTH", "Spram", "SpramMemory", "is_ice40_up"]

SPRAM_WIDTH = 16
SPRAM_DEPTH = 16384
# What the model's DATAOUT shows after a write, where the primitive's output is undefined
# (Yosys cells_sim.v drives 'x). A design that uses it fails its bit-exact tests.
SPRAM_POISON = 0xDEAD


def is_ice40_up(platform) -> bool:
    """True when `platform` targets an iCE40 UltraPlus, the only family with SB_SPRAM256KA."""
    return str(getattr(platform, "device", "")).startswith("iCE40UP")


class Spram(wiring.Component):
    """One SB_SPRAM256KA: 16,384 words of 16 bits behind one port, read registered.

    On a rising clock edge with ``cs`` set:

    - without ``wren``, ``data_out`` takes ``mem[addr]`` (read latency 1 cycle);
    - with ``wren``, each nibble ``k`` whose ``mask_wren[k]`` is set takes
      ``data_in[4k:4k+4]``; ``data_out`` is undefined until the next read (the model shows
      :data:`SPRAM_POISON`).

    Without ``cs``, memory and ``data_out`` hold. Contents after configuration are undefined (the
    bitstream cannot initialise SPRAM); the model starts at zero.

    Members
    -------
    addr : In(14)
    data_in : In(16)
    mask_wren : In(4)
    wren : In(1)
    cs : In(1)
    data_out : Out(16)
    """

    addr: In(14)
    data_in: In(SPRAM_WIDTH)
    mask_wren: In(4)
    wren: In(1)
    cs: In(1)
    data_out: Out(SPRAM_WIDTH)

    def elaborate(self, platform):
        m = Module()
        if is_ice40_up(platform):
            m.submodules.spram = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=self.addr, i_DATAIN=self.data_in, i_MASKWREN=self.mask_wren,
                i_WREN=self.wren, i_CHIPSELECT=self.cs, i_CLOCK=ClockSignal("sync"),
                i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1, o_DATAOUT=self.data_out)
            return m
        m.submodules.mem = mem = Memory(shape=unsigned(SPRAM_WIDTH), depth=SPRAM_DEPTH, init=[])
        write = mem.write_port(granularity=4)
        read = mem.read_port(transparent_for=())
        written = Signal()
        m.d.comb += [
            write.addr.eq(self.addr), write.data.eq(self.data_in),
            write.en.eq(Mux(self.cs & self.wren, self.mask_wren, 0)),
            read.addr.eq(self.addr), read.en.eq(self.cs & ~self.wren),
            self.data_out.eq(Mux(written, SPRAM_POISON, read.data)),
        ]
        with m.If(self.cs):
            m.d.sync += written.eq(self.wren)
        return m


class SpramMemory(wiring.Component):
    """A single-port memory of ``depth`` words of ``width`` bits tiled from SB_SPRAM256KA.

    ``ceil(width / 16)`` primitives side by side make a word; ``ceil(depth / 16384)`` banks of
    them make the depth (the top address bits pick the bank). On the UP5K's four primitives that
    is up to 64 bits x 16K or 16 bits x 64K.

    One access per cycle: with ``w_en`` non-zero the enabled nibbles of ``data`` are written to
    ``addr``; otherwise, with ``r_en``, ``r_data`` shows ``mem[addr]`` one cycle later and holds
    until the next read. A cycle that writes leaves ``r_data`` undefined until the next read.

    Parameters
    ----------
    width : int
        Word width in bits, 1..64.
    depth : int
        Words, 1..65536.

    Members
    -------
    addr : In(range(depth))
    r_en : In(1)
    r_data : Out(width)
    w_en : In(ceil(width / 4))
        One enable per nibble of the word (the primitive's write mask).
    w_data : In(width)

    Raises
    ------
    ValueError
        If ``width`` or ``depth`` is out of range.
    """

    def __init__(self, *, width: int, depth: int):
        width, depth = operator.index(width), operator.index(depth)
        if not 1 <= width <= 4 * SPRAM_WIDTH:
            raise ValueError(f"SPRAM word width must be 1..64 bits, not {width!r}")
        if not 1 <= depth <= 4 * SPRAM_DEPTH:
            raise ValueError(f"SPRAM depth must be 1..65536 words, not {depth!r}")
        self._width, self._depth = width, depth
        super().__init__({
            "addr": In(range(depth)), "r_en": In(1), "r_data": Out(width),
            "w_en": In(-(-width // 4)), "w_data": In(width),
        })

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def columns(self) -> int:
        """Primitives side by side in one word."""
        return -(-self._width // SPRAM_WIDTH)

    @property
    def banks(self) -> int:
        """Rows of primitives along the depth."""
        return -(-self._depth // SPRAM_DEPTH)

    @property
    def primitives(self) -> int:
        return self.columns * self.banks

    def elaborate(self, platform):
        m = Module()
        cols, banks = self.columns, self.banks
        padded = cols * SPRAM_WIDTH
        w_data = Cat(self.w_data, Const(0, padded - self._width))
        w_mask = Cat(self.w_en, Const(0, padded // 4 - len(self.w_en)))
        row = Signal(range(SPRAM_DEPTH))
        bank = Signal(range(max(banks, 2)))
        m.d.comb += [row.eq(self.addr[:14]), bank.eq(self.addr[14:] if banks > 1 else 0)]
        writing = self.w_en.any()
        read_bank = Signal.like(bank)  # the bank whose data_out answers the last read
        with m.If(self.r_en & ~writing):
            m.d.sync += read_bank.eq(bank)
        outputs = []
        for b in range(banks):
            words = []
            for c in range(cols):
                tile = Spram()
                m.submodules[f"spram_{b}_{c}"] = tile
                m.d.comb += [
                    tile.addr.eq(row), tile.cs.eq((bank == b) & (self.r_en | writing)),
                    tile.wren.eq(writing),
                    tile.data_in.eq(w_data[c * SPRAM_WIDTH:(c + 1) * SPRAM_WIDTH]),
                    tile.mask_wren.eq(w_mask[c * 4:(c + 1) * 4]),
                ]
                words.append(tile.data_out)
            outputs.append(Cat(*words)[:self._width])
        if banks == 1:
            m.d.comb += self.r_data.eq(outputs[0])
        else:
            with m.Switch(read_bank):
                for b, word in enumerate(outputs):
                    with m.Case(b):
                        m.d.comb += self.r_data.eq(word)
        return m

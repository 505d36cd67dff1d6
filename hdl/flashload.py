"""Load an image's memories from the board's SPI flash at power-up (docs/flash.md).

Three components: :class:`SpiShifter` moves one byte each way in SPI mode 0;
:class:`FlashReader` wakes the flash (release from power-down, 0xAB) and streams bytes from an
address with READ (0x03); :class:`FlashLoader` checks a ``spikeforge.flashimage`` blob and writes
its records through a memory-access port.
"""

import enum as py_enum
import json
import operator
import zlib

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from .. import flashimage
from ..image import Image, param_fields, param_words
from .core import MemAccessSignature
from .enums import wire_enum

__all__ = ["image_id", "image_records", "image_blob", "SpiShifter", "FlashReader", "FlashLoader",
           "LoadState", "LoadError", "MemLock", "CMD_READ", "CMD_WAKE"]

CMD_READ = 0x03
CMD_WAKE = 0xAB  # release from deep power-down (iCE40 boards leave the flash powered down)


def image_id(image: Image) -> int:
    """CRC-32 of the structure the gateware is built for: inputs, cores, and per layer its
    shape, widths, neuron model and parameter word layout (not weights or parameter values)."""
    layers = [{"n_in": layer.n_in, "n_out": layer.n_out, "recurrent": layer.recurrent,
               "weight_bits": layer.weight_bits, "v_bits": layer.v_bits,
               "acc_bits": layer.acc_bits, "reset": layer.reset,
               "decay_mode": layer.decay_mode, "decay_frac": layer.decay_frac,
               "params": [[f.name, f.width, f.signed] for f in param_fields(layer)]}
              for layer in image.layers]
    cores = [[c.layer, c.lo, c.hi, c.lanes] for c in image.config.cores]
    text = json.dumps({"n_inputs": image.n_inputs, "cores": cores, "layers": layers},
                      sort_keys=True)
    return zlib.crc32(text.encode())


def image_records(image: Image) -> list[flashimage.Record]:
    """Every core's PARAMS and WEIGHTS memory, as ``boards.runtime.Board.load`` writes them."""
    records = []
    for index, core in enumerate(image.config.cores):
        layer = image.layers[core.layer]
        params = param_words(layer, core.lo, core.hi)
        width = sum(f.width for f in param_fields(layer))
        records.append(flashimage.Record(index, flashimage.MemSpace.PARAMS, 0,
                                         max(1, -(-width // 8)), tuple(params)))
        rows = image.weight_memory(index)
        words = tuple(int.from_bytes(row.tobytes(), "little") for row in rows)
        records.append(flashimage.Record(index, flashimage.MemSpace.WEIGHTS, 0, rows.shape[1],
                                         words))
    return records


def image_blob(image: Image) -> bytes:
    """The flash blob of ``image``: every core's parameters and weights, for its gateware."""
    image.check()
    return flashimage.encode(image_records(image), image_id=image_id(image))


class PyLoadState(py_enum.IntEnum):
    LOADING = 0
    READY = 1
    ERROR = 2


class PyLoadError(py_enum.IntEnum):
    """Why a load failed (``reason`` while ``state`` is ERROR)."""

    NONE = 0
    BLANK = 1  # the magic reads all ones: nothing written at the offset
    MAGIC = 2
    VERSION = 3
    IMAGE_ID = 4  # a blob for another network structure
    LENGTH = 5  # length below a header and trailer, or above max_length
    CRC = 6  # corrupt or truncated (erased bytes read as 0xFF)
    RECORD = 7  # a record names a core, space, word size or address the array lacks


LoadState = wire_enum(PyLoadState, unsigned(2), name="LoadState")
LoadError = wire_enum(PyLoadError, unsigned(3), name="LoadError")


class SpiShifter(wiring.Component):
    """One byte out on ``copi`` and in from ``cipo``, SPI mode 0, MSB first.

    ``start`` (while ``busy`` is low) latches ``tx``; SCK then runs ``divisor`` cycles low and
    ``divisor`` cycles high per bit. ``cipo`` is sampled in the last cycle of each high phase
    (the flash drives it from the falling edge before). ``done`` pulses with ``rx`` valid in the
    cycle after the eighth bit; SCK rests low.

    Members
    -------
    sck, copi : Out(1)
    cipo : In(1)
    tx : In(8)
    start : In(1)
    busy : Out(1)
    done : Out(1)
    rx : Out(8)
    """

    sck: Out(1)
    copi: Out(1)
    cipo: In(1)
    tx: In(8)
    start: In(1)
    busy: Out(1)
    done: Out(1)
    rx: Out(8)

    def __init__(self, *, divisor: int = 1):
        self._divisor = operator.index(divisor)
        if self._divisor < 1:
            raise ValueError(f"SCK divisor must be at least 1, not {divisor!r}")
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        out = Signal(8)
        bit = Signal(3)
        timer = Signal(range(self._divisor))
        m.d.comb += self.copi.eq(out[7])
        m.d.sync += self.done.eq(0)
        with m.If(~self.busy):
            with m.If(self.start):
                m.d.sync += [out.eq(self.tx), bit.eq(0), timer.eq(self._divisor - 1),
                             self.busy.eq(1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += timer.eq(self._divisor - 1)
            with m.If(~self.sck):
                m.d.sync += self.sck.eq(1)
            with m.Else():
                m.d.sync += [self.sck.eq(0), self.rx.eq(Cat(self.cipo, self.rx[:7])),
                             out.eq(out << 1), bit.eq(bit + 1)]
                with m.If(bit == 7):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m


class FlashReader(wiring.Component):
    """Bytes from an SPI flash, from any address on.

    After reset it sends 0xAB (release from deep power-down) and waits ``wake_cycles`` (tRES1,
    3 us on the usual parts) with CS high; ``awake`` then rises. ``start`` (while ``awake`` and
    idle) sends READ 0x03 and the 24-bit ``addr``, after which ``o`` streams the bytes from that
    address on; SCK pauses while ``o.ready`` is low. ``stop`` ends the read (CS high) and
    returns to idle; a byte not yet taken is dropped.

    Members
    -------
    cs_n, sck, copi : Out(1)
    cipo : In(1)
    addr : In(24)
    start, stop : In(1)
    awake, idle : Out(1)
    o : Out(stream.Signature(8))
    """

    cs_n: Out(1, init=1)
    sck: Out(1)
    copi: Out(1)
    cipo: In(1)
    addr: In(24)
    start: In(1)
    stop: In(1)
    awake: Out(1)
    idle: Out(1)
    o: Out(stream.Signature(8))

    def __init__(self, *, divisor: int = 1, wake_cycles: int = 40):
        self._divisor = operator.index(divisor)
        self._wake_cycles = operator.index(wake_cycles)
        if self._wake_cycles < 1:
            raise ValueError(f"Wake-up cycles must be at least 1, not {wake_cycles!r}")
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.shifter = shifter = SpiShifter(divisor=self._divisor)
        m.d.comb += [self.sck.eq(shifter.sck), self.copi.eq(shifter.copi),
                     shifter.cipo.eq(self.cipo)]
        command = Signal(32)
        sent = Signal(range(5))
        wait = Signal(range(self._wake_cycles + 1))
        with m.FSM():
            with m.State("Wake"):
                m.d.comb += [shifter.tx.eq(CMD_WAKE), shifter.start.eq(1)]
                m.d.sync += self.cs_n.eq(0)
                with m.If(~self.cs_n):
                    m.next = "WakeShift"
            with m.State("WakeShift"):
                with m.If(shifter.done):
                    m.d.sync += [self.cs_n.eq(1), wait.eq(self._wake_cycles)]
                    m.next = "WakeWait"
            with m.State("WakeWait"):
                m.d.sync += wait.eq(wait - 1)
                with m.If(wait == 1):
                    m.d.sync += self.awake.eq(1)
                    m.next = "Idle"
            with m.State("Idle"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.start):
                    m.d.sync += [command.eq(Cat(self.addr, Const(CMD_READ, 8))), sent.eq(0),
                                 self.cs_n.eq(0)]
                    m.next = "Command"
            with m.State("Command"):
                with m.If(~shifter.busy & ~shifter.done):
                    m.d.comb += [shifter.tx.eq(command[24:]), shifter.start.eq(1)]
                    m.d.sync += [command.eq(command << 8), sent.eq(sent + 1)]
                with m.If(shifter.done & (sent == 4)):
                    m.next = "Read"
                with m.Elif(self.stop):
                    m.next = "Stop"
            with m.State("Read"):
                with m.If(self.stop):
                    m.next = "Stop"
                with m.Elif(~shifter.busy):
                    m.d.comb += shifter.start.eq(1)
                    m.next = "Data"
            with m.State("Data"):
                with m.If(shifter.done):
                    m.next = "Hold"
                with m.If(self.stop):
                    m.next = "Stop"
            with m.State("Hold"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(shifter.rx)]
                with m.If(self.stop):
                    m.next = "Stop"
                with m.Elif(self.o.ready):
                    m.next = "Read"
            with m.State("Stop"):
                # let a byte in flight finish so SCK rests low before CS rises
                with m.If(~shifter.busy):
                    m.d.sync += self.cs_n.eq(1)
                    m.next = "Idle"
        return m


class FlashLoader(wiring.Component):
    """Check a flash image at ``offset`` and write its records through ``mem``.

    Pass one reads the header (magic, format version, ``image_id``, length within
    ``max_length``) and the whole blob through a CRC-32, writing nothing. Only when the CRC
    checks does pass two read the records again and write each word through ``mem`` (a request
    held until ``ready``). ``state`` is LOADING until then, READY after the last write, ERROR
    with ``reason`` on the first fault; a record fault in pass two (a core, space, word size or
    address the array lacks, or records that do not end at the trailer) also ends in ERROR, so
    whatever drives the array must keep it stopped until READY.

    Members
    -------
    cs_n, sck, copi : Out(1)
    cipo : In(1)
    mem : Out(MemAccessSignature(data_width, addr_width, core_width=8))
    state : Out(LoadState)
    reason : Out(LoadError)
    """

    def __init__(self, *, image_id: int, offset: int, n_cores: int, data_width: int,
                 addr_width: int, max_length: int = 1 << 20, divisor: int = 1,
                 wake_cycles: int = 40):
        self._image_id = operator.index(image_id)
        self._offset = operator.index(offset)
        self._n_cores = operator.index(n_cores)
        self._data_width = operator.index(data_width)
        self._addr_width = operator.index(addr_width)
        self._max_length = operator.index(max_length)
        if not 0 <= self._image_id < 1 << 32:
            raise ValueError(f"Image id must be a 32-bit unsigned integer, not {image_id!r}")
        if not 0 <= self._offset < 1 << 24:
            raise ValueError(f"Flash offset must be a 24-bit address, not {offset!r}")
        if not 1 <= self._n_cores <= 256:
            raise ValueError(f"Core count must be 1..256, not {n_cores!r}")
        minimum = flashimage.HEADER.size + flashimage.TRAILER_BYTES
        if not minimum <= self._max_length <= (1 << 24) - self._offset:
            raise ValueError(f"Maximum length must be {minimum}..{(1 << 24) - self._offset} "
                             f"(the flash past the offset), not {max_length!r}")
        self._reader = FlashReader(divisor=divisor, wake_cycles=wake_cycles)
        super().__init__({
            "cs_n": Out(1, init=1), "sck": Out(1), "copi": Out(1), "cipo": In(1),
            "mem": Out(MemAccessSignature(data_width=self._data_width,
                                          addr_width=self._addr_width, core_width=8)),
            "state": Out(LoadState), "reason": Out(LoadError),
        })

    @property
    def image_id(self) -> int:
        return self._image_id

    @property
    def offset(self) -> int:
        return self._offset

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self._reader
        m.submodules.crc = crc = catalog.CRC32_ISO_HDLC(data_width=8).create()
        m.d.comb += [self.cs_n.eq(reader.cs_n), self.sck.eq(reader.sck),
                     self.copi.eq(reader.copi), reader.cipo.eq(self.cipo)]

        byte = reader.o.payload
        take = Signal()  # a byte is consumed this cycle
        m.d.comb += take.eq(reader.o.valid & reader.o.ready)
        pos = Signal(24)  # offset in the blob of the byte being taken
        header = Signal(8 * flashimage.HEADER.size)
        trailer = Signal(32)
        magic = header[0:32]
        version = header[32:48]
        n_records = header[48:64]
        blob_id = header[64:96]
        length = header[96:128]
        end = Signal(24)  # blob offset of the trailer
        record = Signal(8 * flashimage.RECORD.size)
        rec_left = Signal(16)
        r_core, r_space, r_bytes = record[0:8], record[8:16], record[16:24]
        r_addr, r_count = record[32:64], record[64:96]
        data_bytes = (self._data_width + 7) // 8
        word_byte = Signal(8)
        addr = Signal(32)
        count = Signal(32)
        head_byte = Signal(range(flashimage.RECORD.size + 1))
        select_bits = max(1, (data_bytes - 1).bit_length())
        word = Signal(8 * (1 << select_bits))  # room for every byte index word_byte can take

        magic_value = int.from_bytes(flashimage.MAGIC, "little")
        writable = [int(s) for s in flashimage.WRITABLE]

        def fail(reason):
            m.d.sync += [self.reason.eq(reason), reader.stop.eq(1)]
            m.next = "Error"

        m.d.sync += reader.stop.eq(0)
        m.d.comb += [reader.addr.eq(self._offset), crc.data.eq(byte)]
        with m.FSM():
            with m.State("Wake"):
                with m.If(reader.awake & reader.idle):
                    m.d.comb += [reader.start.eq(1), crc.start.eq(1)]
                    m.d.sync += pos.eq(0)
                    m.next = "Header"
            with m.State("Header"):
                m.d.comb += [reader.o.ready.eq(1), crc.valid.eq(take)]
                with m.If(take):
                    m.d.sync += [header.eq(Cat(header[8:], byte)), pos.eq(pos + 1)]
                    with m.If(pos == flashimage.HEADER.size - 1):
                        m.next = "CheckHeader"
            with m.State("CheckHeader"):
                m.d.sync += end.eq(length - flashimage.TRAILER_BYTES)
                with m.If(magic == 0xFFFF_FFFF):
                    fail(LoadError.BLANK)
                with m.Elif(magic != magic_value):
                    fail(LoadError.MAGIC)
                with m.Elif(version != flashimage.FORMAT_VERSION):
                    fail(LoadError.VERSION)
                with m.Elif(blob_id != self._image_id):
                    fail(LoadError.IMAGE_ID)
                with m.Elif((length < flashimage.HEADER.size + flashimage.TRAILER_BYTES)
                            | (length > self._max_length)):
                    fail(LoadError.LENGTH)
                with m.Else():
                    m.next = "Body"
            with m.State("Body"):
                m.d.comb += [reader.o.ready.eq(1), crc.valid.eq(take & (pos < end))]
                with m.If(take):
                    m.d.sync += [pos.eq(pos + 1), trailer.eq(Cat(trailer[8:], byte))]
                    with m.If(pos == length - 1):
                        m.d.sync += reader.stop.eq(1)
                        m.next = "CheckCrc"
            with m.State("CheckCrc"):
                with m.If(crc.crc != trailer):
                    fail(LoadError.CRC)
                with m.Elif(reader.idle & ~reader.stop):
                    m.d.comb += [reader.start.eq(1),
                                 reader.addr.eq(self._offset + flashimage.HEADER.size)]
                    m.d.sync += [pos.eq(flashimage.HEADER.size), rec_left.eq(n_records)]
                    m.next = "NextRecord"
            with m.State("NextRecord"):
                with m.If(rec_left == 0):
                    with m.If(pos == end):
                        m.d.sync += reader.stop.eq(1)
                        m.next = "Ready"
                    with m.Else():
                        fail(LoadError.RECORD)
                with m.Else():
                    m.d.sync += [rec_left.eq(rec_left - 1), head_byte.eq(0)]
                    m.next = "RecordHeader"
            with m.State("RecordHeader"):
                m.d.comb += reader.o.ready.eq(1)
                with m.If(take):
                    m.d.sync += [record.eq(Cat(record[8:], byte)), pos.eq(pos + 1),
                                 head_byte.eq(head_byte + 1)]
                    with m.If(head_byte == flashimage.RECORD.size - 1):
                        m.next = "CheckRecord"
                with m.If(pos >= end):
                    fail(LoadError.RECORD)
            with m.State("CheckRecord"):
                space_ok = Cat(*(r_space == s for s in writable)).any()
                with m.If((r_core >= self._n_cores) | ~space_ok | (r_bytes == 0)
                          | (r_bytes > data_bytes)
                          | (r_addr + r_count > (1 << self._addr_width))):
                    fail(LoadError.RECORD)
                with m.Else():
                    m.d.sync += [addr.eq(r_addr), count.eq(r_count), word.eq(0),
                                 word_byte.eq(0)]
                    m.next = "Word"
            with m.State("Word"):
                with m.If(count == 0):
                    m.next = "NextRecord"
                with m.Elif(pos >= end):
                    fail(LoadError.RECORD)
                with m.Else():
                    m.d.comb += reader.o.ready.eq(1)
                    with m.If(take):
                        m.d.sync += [word.word_select(word_byte[:select_bits], 8).eq(byte),
                                     word_byte.eq(word_byte + 1), pos.eq(pos + 1)]
                        with m.If(word_byte + 1 == r_bytes):
                            m.next = "Write"
            with m.State("Write"):
                m.d.comb += [self.mem.core.eq(r_core), self.mem.space.as_value().eq(r_space),
                             self.mem.addr.eq(addr), self.mem.wdata.eq(word),
                             self.mem.we.eq(1)]
                with m.If(self.mem.ready):
                    m.d.sync += [addr.eq(addr + 1), count.eq(count - 1), word.eq(0),
                                 word_byte.eq(0)]
                    m.next = "Word"
            with m.State("Ready"):
                m.d.comb += self.state.eq(LoadState.READY)
            with m.State("Error"):
                m.d.comb += self.state.eq(LoadState.ERROR)
        return m


class MemLock(wiring.Component):
    """The array's memory port, shared by the flash loader and the host link.

    While ``locked`` is high the loader's requests reach ``o`` and the host's are held
    (``host.ready`` low), so the host link waits until the load ends; once it drops, the host's
    pass and the loader's are held. Read answers (``rvalid``, ``rdata``) go to both sides; only
    the side that asked waits for one.

    Members
    -------
    loader, host : In(MemAccessSignature(data_width, addr_width, core_width=8))
    o : Out(MemAccessSignature(data_width, addr_width, core_width=8))
    locked : In(1)
    """

    def __init__(self, *, data_width: int, addr_width: int):
        sig = MemAccessSignature(data_width=data_width, addr_width=addr_width, core_width=8)
        super().__init__({"loader": In(sig), "host": In(sig), "o": Out(sig), "locked": In(1)})

    def elaborate(self, platform):
        m = Module()
        for side in (self.loader, self.host):
            m.d.comb += [side.rdata.eq(self.o.rdata), side.rvalid.eq(self.o.rvalid)]
        for name in ("core", "space", "addr", "wdata", "we", "re"):
            m.d.comb += getattr(self.o, name).eq(
                Mux(self.locked, getattr(self.loader, name), getattr(self.host, name)))
        m.d.comb += [self.loader.ready.eq(self.locked & self.o.ready),
                     self.host.ready.eq(~self.locked & self.o.ready)]
        return m

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

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .. import flashimage
from ..image import Image, param_fields, param_words
from .core import MemAccessSignature
from .enums import wire_enum
from .fsm import one_hot

__all__ = ["image_id", "image_records", "image_length", "image_blob", "SpiShifter", "FlashReader",
           "FlashLoader", "LoadState", "LoadError", "MemLock", "CMD_READ", "CMD_WAKE"]

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


def image_length(image: Image) -> int:
    """The length in bytes of ``image``'s flash blob, trailer included (fixed by the structure
    :func:`image_id` names)."""
    return (flashimage.HEADER.size + flashimage.TRAILER_BYTES
            + sum(flashimage.RECORD.size + len(rec.words) * rec.word_bytes
                  for rec in image_records(image)))


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
    LENGTH = 5  # not the length of the gateware's image
    CRC = 6  # corrupt or truncated (erased bytes read as 0xFF)
    RECORD = 7  # a record names a core, space, word size or address the array lacks


LoadState = wire_enum(PyLoadState, unsigned(2), name="LoadState")
LoadError = wire_enum(PyLoadError, unsigned(3), name="LoadError")


class SpiShifter(wiring.Component):
    """One byte out on ``copi`` and in from ``cipo``, SPI mode 0, MSB first.

    ``start`` (while ``busy`` is low) starts a byte: ``tx`` must hold while ``busy`` is high
    (``copi`` shows its bits in turn, no copy is kept). SCK then runs ``divisor`` cycles low
    and ``divisor`` cycles high per bit. ``cipo`` is sampled in the last cycle of each high
    phase (the flash drives it from the falling edge before); ``sample`` is high in that cycle.
    ``done`` pulses with ``rx`` valid in the cycle after the eighth bit; SCK rests low.

    Members
    -------
    sck, copi : Out(1)
    cipo : In(1)
    tx : In(8)
    start : In(1)
    busy : Out(1)
    done : Out(1)
    sample : Out(1)
    rx : Out(8)
    """

    sck: Out(1)
    copi: Out(1)
    cipo: In(1)
    tx: In(8)
    start: In(1)
    busy: Out(1)
    done: Out(1)
    sample: Out(1)
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
        bit = Signal(3)  # bits done in this byte (wraps to 0 after the eighth)
        timer = Signal(range(self._divisor))
        m.d.comb += [self.copi.eq(Cat(*reversed(list(self.tx))).bit_select(bit, 1)),
                     self.sample.eq(self.busy & self.sck & (timer == 0))]
        m.d.sync += self.done.eq(0)
        with m.If(~self.busy):
            with m.If(self.start):
                m.d.sync += [timer.eq(self._divisor - 1), self.busy.eq(1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += timer.eq(self._divisor - 1)
            with m.If(~self.sck):
                m.d.sync += self.sck.eq(1)
            with m.Else():
                m.d.sync += [self.sck.eq(0), self.rx.eq(Cat(self.cipo, self.rx[:7])),
                             bit.eq(bit + 1)]
                with m.If(bit == 7):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m


class FlashReader(wiring.Component):
    """Bytes from an SPI flash, from any address on.

    After reset it sends 0xAB (release from deep power-down) and then, with CS high, clocks
    dummy bytes for at least ``wake_cycles`` (tRES1, 3 us on the usual parts; a deselected
    flash ignores SCK): no counter of its own. ``awake`` then rises. ``start`` (while ``awake``
    and idle) sends READ 0x03 and the 24-bit ``addr`` (hold it until the first byte), after
    which ``o`` streams the bytes from that address on; SCK pauses while ``o.ready`` is low, and
    the next byte is not clocked in before the last one is taken. ``bit_valid`` is high in the
    cycle each bit of a data byte is sampled, ``bit`` its value (for a bit-serial CRC).
    ``stop`` ends the read (CS high) and returns to idle; a byte not yet taken is dropped.

    Members
    -------
    cs_n, sck, copi : Out(1)
    cipo : In(1)
    addr : In(24)
    start, stop : In(1)
    awake, idle : Out(1)
    o : Out(stream.Signature(8))
    bit_valid, bit : Out(1)
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
    bit_valid: Out(1)
    bit: Out(1)

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
                     shifter.cipo.eq(self.cipo), self.bit.eq(self.cipo)]
        # the command byte by byte: no shift register of its own (with a constant address, as
        # the flash loader's, this is a small table)
        command = Array([Const(CMD_READ, 8), self.addr[16:24], self.addr[8:16], self.addr[0:8]])
        byte_cycles = 16 * self._divisor  # at least, per byte
        dummies = -(-self._wake_cycles // byte_cycles)
        sent = Signal(max(2, (dummies - 1).bit_length()))
        with m.FSM():
            with m.State("Wake"):
                m.d.comb += [shifter.tx.eq(CMD_WAKE), shifter.start.eq(~self.cs_n)]
                m.d.sync += self.cs_n.eq(0)
                with m.If(shifter.done):
                    m.d.sync += [self.cs_n.eq(1), sent.eq(0)]
                    m.next = "WakeWait"
            with m.State("WakeWait"):
                with m.If(~shifter.busy & ~shifter.done):
                    m.d.comb += shifter.start.eq(1)
                with m.If(shifter.done):
                    m.d.sync += sent.eq(sent + 1)
                    with m.If(sent == dummies - 1):
                        m.d.sync += self.awake.eq(1)
                        m.next = "Idle"
            with m.State("Idle"):
                m.d.comb += self.idle.eq(1)
                with m.If(self.start):
                    m.d.sync += [sent.eq(0), self.cs_n.eq(0)]
                    m.next = "Command"
            with m.State("Command"):
                m.d.comb += shifter.tx.eq(command[sent[:2]])
                with m.If(~shifter.busy & ~shifter.done):
                    m.d.comb += shifter.start.eq(1)
                with m.If(shifter.done):
                    m.d.sync += sent.eq(sent + 1)
                with m.If(self.stop):
                    m.next = "Stop"
                with m.Elif(shifter.done & (sent == 3)):
                    m.next = "Read"
            with m.State("Read"):
                with m.If(self.stop):
                    m.next = "Stop"
                with m.Elif(~shifter.busy):
                    m.d.comb += shifter.start.eq(1)
                    m.next = "Data"
            with m.State("Data"):
                m.d.comb += self.bit_valid.eq(shifter.sample)
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

    Pass one reads the blob from its start: the header byte by byte against the magic, format
    version, ``image_id`` and ``length`` this gateware expects (the first differing byte names
    the fault), then every byte up to ``length``, trailer included, bit by bit through a CRC-32
    register as the bits arrive, writing nothing. Only when the register ends at
    :data:`spikeforge.flashimage.CRC_RESIDUE` does pass two read the blob again from its start
    and write each record's words through ``mem`` (a request held until ``ready``). ``state`` is
    LOADING until then, READY after the last write, ERROR with ``reason`` on the first fault; a
    record fault in pass two (a core, space, word size or address the array lacks, or a record
    that runs into the trailer) also ends in ERROR, so whatever drives the array must keep it
    stopped until READY.

    ``length`` is the whole blob's, trailer included: for an image, :func:`image_length` (fixed
    by the structure ``image_id`` names).

    Small by design (docs/flash.md): one down-counter of the bytes left in the blob, no header,
    trailer or record registers beyond the fields a write needs, a shift register for the word
    being assembled (big-endian, so a short word is right-aligned), and address and end
    registers ``addr_width`` + 1 bits wide (wider fields are record faults).

    Members
    -------
    cs_n, sck, copi : Out(1)
    cipo : In(1)
    mem : Out(MemAccessSignature(data_width, addr_width, core_width=8))
    state : Out(LoadState)
    reason : Out(LoadError)
    """

    def __init__(self, *, image_id: int, offset: int, n_cores: int, data_width: int,
                 addr_width: int, length: int, divisor: int = 1, wake_cycles: int = 40):
        self._image_id = operator.index(image_id)
        self._offset = operator.index(offset)
        self._n_cores = operator.index(n_cores)
        self._data_width = operator.index(data_width)
        self._addr_width = operator.index(addr_width)
        self._length = operator.index(length)
        if not 0 <= self._image_id < 1 << 32:
            raise ValueError(f"Image id must be a 32-bit unsigned integer, not {image_id!r}")
        if not 0 <= self._offset < 1 << 24:
            raise ValueError(f"Flash offset must be a 24-bit address, not {offset!r}")
        if not 1 <= self._n_cores <= 256:
            raise ValueError(f"Core count must be 1..256, not {n_cores!r}")
        minimum = flashimage.HEADER.size + flashimage.TRAILER_BYTES
        if not minimum <= self._length <= (1 << 24) - self._offset:
            raise ValueError(f"Blob length must be {minimum}..{(1 << 24) - self._offset} "
                             f"(the flash past the offset), not {length!r}")
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

    @property
    def length(self) -> int:
        return self._length

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = self._reader
        m.d.comb += [self.cs_n.eq(reader.cs_n), self.sck.eq(reader.sck),
                     self.copi.eq(reader.copi), reader.cipo.eq(self.cipo),
                     reader.addr.eq(self._offset)]
        header_bytes = flashimage.HEADER.size
        trailer = flashimage.TRAILER_BYTES

        byte = reader.o.payload
        take = Signal()  # a byte is consumed this cycle
        m.d.comb += take.eq(reader.o.valid & reader.o.ready)
        second = Signal()  # pass two: writing

        def fail(reason):
            m.d.sync += [self.reason.eq(reason), reader.stop.eq(1)]
            m.next = "Error"

        # Pass one: CRC-32/BZIP2, one bit per SPI clock, over every byte up to `length`.
        crc = Signal(32, init=0xFFFF_FFFF)
        with m.If(reader.bit_valid & ~second):
            feedback = crc[31] ^ reader.bit
            m.d.sync += crc.eq(Cat(0, crc[:31]) ^ Mux(feedback, flashimage.CRC_POLY, 0))

        # The header, byte by byte against what this gateware expects (all but the record
        # count, which the gateware does not need: it walks the records up to the trailer).
        expected = flashimage.HEADER.pack(flashimage.MAGIC, flashimage.FORMAT_VERSION, 0,
                                          self._image_id, self._length)
        region = ([LoadError.MAGIC] * 4 + [LoadError.VERSION] * 2 + [LoadError.NONE] * 2
                  + [LoadError.IMAGE_ID] * 4 + [LoadError.LENGTH] * 4)
        hpos = Signal(4)  # header byte being taken
        fault = Signal(LoadError)  # the header's first fault
        blank = Signal(init=1)  # every magic byte so far reads 0xFF
        differs = Signal()
        m.d.comb += differs.eq(byte != Array(Const(b, 8) for b in expected)[hpos])
        here = Signal(LoadError)
        m.d.comb += here.eq(Array(region)[hpos])
        header_take = Signal()
        with m.If(header_take):
            m.d.sync += hpos.eq(hpos + 1)
            with m.If(differs & (fault == LoadError.NONE)):
                m.d.sync += fault.eq(here)
            with m.If(~hpos[2] & ~hpos[3] & (byte != 0xFF)):
                m.d.sync += blank.eq(0)

        # bytes of the blob past its header still to come, trailer included
        body = self._length - header_bytes
        left = Signal(range(body + 1), init=body)
        count_byte = Signal()  # a byte past the header is taken
        reload = Signal()
        with m.If(reload):
            m.d.sync += left.eq(body)
        with m.Elif(count_byte):
            m.d.sync += left.eq(left - 1)
        # Compares registered (off the critical path): a byte is never taken in two cycles in a
        # row (the reader clocks the next one in after the take), so at a take they are exact;
        # in the cycle after one they may lag, and no state then acts on them but to wait.
        at_trailer = Signal()
        at_last = Signal()  # the blob's last byte is next
        m.d.sync += [at_trailer.eq(left == trailer), at_last.eq(left == 1)]

        # the record being written
        data_bytes = (self._data_width + 7) // 8
        core_bits = max(1, (self._n_cores - 1).bit_length())
        aw = self._addr_width
        rpos = Signal(range(flashimage.RECORD.size))
        bad = Signal()  # a record field this array cannot take
        r_core = Signal(core_bits)
        r_space = Signal(2)
        r_last = Signal(range(data_bytes))  # word bytes - 1
        w_byte = Signal(range(data_bytes))  # byte of the word being taken
        addr = Signal(aw + 1)  # bit aw set: past the memories
        end = Signal(aw + 1)  # the address past the record's last word
        word = Signal(self._data_width)
        at_end = Signal()  # addr == end, registered (see at_trailer; Write waits a cycle)
        m.d.sync += at_end.eq(addr == end)
        m.d.comb += [self.mem.core.eq(r_core), self.mem.space.as_value().eq(r_space),
                     self.mem.addr.eq(addr[:aw]), self.mem.wdata.eq(word)]

        record_take = Signal()
        with m.If(record_take):
            m.d.sync += rpos.eq(rpos + 1)
            with m.Switch(rpos):
                with m.Case(0):
                    m.d.sync += r_core.eq(byte)
                with m.Case(1):
                    m.d.sync += r_space.eq(byte)
                with m.Case(2):
                    m.d.sync += r_last.eq(byte - 1)
        # The first three fields' checks a cycle after their take, on registered copies: the
        # compares sit behind registers, not behind the reader's handshake. (CheckRecord reads
        # `bad` after the record's last byte, many cycles after the third.)
        f_take, f_pos, f_byte = Signal(), Signal(2), Signal(8)
        m.d.sync += f_take.eq(record_take & (rpos < 3))
        with m.If(record_take):
            m.d.sync += [f_pos.eq(rpos), f_byte.eq(byte)]
        with m.If(f_take):
            with m.Switch(f_pos):
                with m.Case(0):
                    with m.If(f_byte >= self._n_cores):
                        m.d.sync += bad.eq(1)
                with m.Case(1):
                    with m.If(f_byte > max(flashimage.WRITABLE)):
                        m.d.sync += bad.eq(1)
                with m.Case(2):
                    with m.If((f_byte == 0) | (f_byte > data_bytes)):
                        m.d.sync += bad.eq(1)
        # address and end shift in from the right (big-endian); bits pushed out of the top are
        # a record fault
        new_addr = Signal()  # a record starts: address and end shift in from zero
        addr_take = Signal()
        end_take = Signal()
        written = Signal()
        m.d.comb += [addr_take.eq(record_take & (rpos[2:] == 1)),
                     end_take.eq(record_take & (rpos[2:] == 2))]
        for reg, shift in ((addr, addr_take), (end, end_take)):
            with m.If(shift & Cat(byte, reg)[len(reg):].any()):
                m.d.sync += bad.eq(1)
        with m.If(new_addr):
            m.d.sync += addr.eq(0)
        with m.Elif(addr_take):
            m.d.sync += addr.eq(Cat(byte, addr))
        with m.Elif(written):
            m.d.sync += addr.eq(addr + 1)
        with m.If(new_addr):
            m.d.sync += end.eq(0)
        with m.Elif(end_take):
            m.d.sync += end.eq(Cat(byte, end))
        word_take = Signal()
        with m.If(written):
            m.d.sync += [word.eq(0), w_byte.eq(0)]
        with m.Elif(word_take):
            m.d.sync += [word.eq(Cat(byte, word)), w_byte.eq(w_byte + 1)]

        m.d.sync += reader.stop.eq(0)
        with m.FSM() as fsm:
            with m.State("Wake"):
                with m.If(reader.awake & reader.idle):
                    m.d.comb += reader.start.eq(1)
                    m.next = "Header"
            with m.State("Header"):
                m.d.comb += [reader.o.ready.eq(1), header_take.eq(take)]
                with m.If(take & (hpos == header_bytes - 1)):
                    m.next = "CheckHeader"
            with m.State("CheckHeader"):
                with m.If((fault == LoadError.MAGIC) & blank):
                    fail(LoadError.BLANK)
                with m.Elif(fault != LoadError.NONE):
                    fail(fault)
                with m.Elif(second):
                    m.next = "NextRecord"
                with m.Else():
                    m.next = "Body"
            with m.State("Body"):
                m.d.comb += [reader.o.ready.eq(1), count_byte.eq(take)]
                with m.If(take & at_last):
                    m.d.sync += reader.stop.eq(1)
                    m.next = "CheckCrc"
            with m.State("CheckCrc"):
                with m.If(crc != flashimage.CRC_RESIDUE):
                    fail(LoadError.CRC)
                with m.Elif(reader.idle & ~reader.stop):
                    m.d.comb += [reader.start.eq(1), reload.eq(1)]
                    m.d.sync += second.eq(1)
                    m.next = "Header"
            with m.State("NextRecord"):
                m.d.comb += new_addr.eq(1)
                m.d.sync += [rpos.eq(0), bad.eq(0)]
                with m.If(at_trailer):
                    m.d.sync += reader.stop.eq(1)
                    m.next = "Ready"
                with m.Else():
                    m.next = "RecordHeader"
            with m.State("RecordHeader"):
                with m.If(at_trailer):
                    fail(LoadError.RECORD)
                with m.Else():
                    m.d.comb += [reader.o.ready.eq(1), record_take.eq(take),
                                 count_byte.eq(take)]
                    with m.If(take & (rpos == flashimage.RECORD.size - 1)):
                        m.next = "CheckRecord"
            with m.State("CheckRecord"):
                with m.If(bad):
                    fail(LoadError.RECORD)
                with m.Else():
                    m.next = "Word"
            with m.State("Word"):
                with m.If(at_end):
                    m.next = "NextRecord"
                with m.Elif(at_trailer | addr[aw]):
                    fail(LoadError.RECORD)
                with m.Else():
                    m.d.comb += [reader.o.ready.eq(1), word_take.eq(take), count_byte.eq(take)]
                    with m.If(take & (w_byte == r_last)):
                        m.next = "Write"
            with m.State("Write"):
                m.d.comb += [self.mem.we.eq(1), written.eq(self.mem.ready)]
                with m.If(self.mem.ready):
                    m.next = "Advance"
            with m.State("Advance"):  # at_end catches up with the new address
                m.next = "Word"
            with m.State("Ready"):
                m.d.comb += self.state.eq(LoadState.READY)
            with m.State("Error"):
                m.d.comb += self.state.eq(LoadState.ERROR)
        one_hot(fsm)
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

"""The host link: framed, CRC-checked requests over UART byte streams, driving a core array.

The wire protocol (frames, commands, status codes, counters, timing) is docs/host-protocol.md;
``spikeforge.protocol`` is its host side and holds every constant of it. :class:`HostLink` is a
composition of small components, each with its own test (tests/test_hdl_hostlink.py):

- :class:`FrameReceiver`: request bytes -> checked request heads, payload kept in a buffer
  (which then keeps the answer's output events too);
- :class:`RequestChecker`: the status a request gets (length, arguments, memory ranges, busy);
- :class:`RequestExecutor`: executes a request on the array and produces the answer;
- :class:`~.counters.StatusCounters`: the STATUS payload, its counters in a block RAM;
- :class:`ResponseSender`: answer head and payload bytes -> a response frame with its CRC;
- :class:`LinkCrc`: the CRC-16/CCITT-FALSE the receiver and the sender share (``CRC_PORT``).
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import crc, data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler import mapper
from ..compiler.mapper import memory_placement, status_in_bram
from ..image import Image, core_channels, weight_depth
from ..protocol import (
    ARGS_BYTES,
    DEFAULT_MAX_PAYLOAD,
    FEATURE_BITMAP,
    FEATURE_RATE_ENCODER,
    LINK_COUNTERS,
    SOF_REQUEST,
    SOF_RESPONSE,
    STEP_END,
    Command,
    MemSpace,
    Status,
    bitmap_bytes,
    hello_payload,
    image_id,
    status_length,
)
from ..sim.encode import encoder_seed
from .array import CoreArray
from .compare import at_least, below
from .conv import conv_acc_address
from .core import MemAccessSignature, acc_address
from .counters import StatusCounters, array_step_layout, hello_base, status_counter_specs
from .encoder import RateEncoder
from .event import ADDR_BITS, SpikeEvent
from .fsm import one_hot
from .memport import NO_COLLISIONS, read_port
from .skid import StreamRegister

__all__ = [
    "CRC_PORT", "FrameReceiver", "HostLink", "LinkCrc", "PayloadByte", "ReplyHead",
    "RequestChecker", "RequestExecutor", "RequestHead", "ResponseSender", "connect_array",
    "memory_depths", "output_buffer",
]


class RequestHead(data.Struct):
    """A received request: its header, the first ``ARGS_BYTES`` of its payload read as the
    arguments of READ_MEM / WRITE_MEM (undefined when the payload is shorter), and whether its
    CRC checked."""

    seq: 8
    cmd: 8
    length: 16
    core: 8
    space: 8
    addr: 32
    count: 8
    crc_ok: 1


class ReplyHead(data.Struct):
    """The head of an answer: ``length`` payload bytes follow it."""

    seq: 8
    cmd: 8
    status: 8
    length: 16


class PayloadByte(data.Struct):
    """A byte of an answer's payload; ``last`` marks the answer's last byte."""

    data: 8
    last: 1


# The bits that tell the commands apart. A request with any other command is refused
# (UNKNOWN_CMD, :class:`RequestChecker`) before anything acts on it, so the executor decodes
# and remembers a command on these bits alone.
CMD_BITS = max(Command).bit_length()


# A CRC user's side of a CRC-16 engine (:class:`LinkCrc`): ``start`` restarts it, ``valid``
# feeds it ``data``; ``crc`` is the CRC of the bytes fed since, ``match`` whether their residue
# is 0 (the bytes end with their own CRC).
CRC_PORT = wiring.Signature({"start": Out(1), "valid": Out(1), "data": Out(8),
                             "crc": In(16), "match": In(1)})


class LinkCrc(wiring.Component):
    """CRC-16/CCITT-FALSE (``amaranth.lib.crc``), a byte per cycle, for a ``CRC_PORT``.

    The receiver and the sender of a :class:`HostLink` share one: requests are stop-and-wait,
    so a request is held (its CRC verdict latched) for as long as its answer is sent.

    Members
    -------
    port : In(CRC_PORT)
    """

    port: In(CRC_PORT)

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = engine = crc.catalog.CRC16_CCITT_FALSE(8).create()
        m.d.comb += [
            engine.start.eq(self.port.start),
            engine.valid.eq(self.port.valid),
            engine.data.eq(self.port.data),
            self.port.crc.eq(engine.crc),
            self.port.match.eq(engine.match_detected),
        ]
        return m


def times(value, factor: int):
    """``value * factor`` for a constant ``factor`` as a sum of shifted copies: synthesis maps a
    product to a DSP block, whose combinational path is long (and scarce on small parts)."""
    terms = [Cat(Const(0, k), value) for k in range(factor.bit_length()) if factor >> k & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0, 1)


# Entries of the output buffer of a link with the rate encoder (at least a step's): the events
# and STEP_ENDs of as many RUN_ENCODED steps as fit: 23 steps of 10 outputs. Two bytes each,
# above the payload's 256 (`link_buffer_bytes`): two iCE40 EBRs, where a STEP's 10 events
# share the payload's one.
RUN_BUFFER_ENTRIES = 256
# The rate encoder's queue (hdl/encoder.py), in a block RAM, where its scan of the inputs is long
# enough to be worth overlapping with the array; else 2 entries, in flip-flops (a digits-size
# network's scan is a few dozen cycles, and its iCE40 build has no block RAM to spare).
ENCODER_QUEUE, ENCODER_QUEUE_INPUTS = 32, 256


def output_buffer(image: Image, encoder: bool) -> tuple[int, int]:
    """``(entries, run_steps)`` of a link's output buffer: a STEP's events (``n_outputs x
    max_spikes``), or, with the rate encoder, at least ``RUN_BUFFER_ENTRIES`` and the most
    RUN_ENCODED steps whose events and STEP_ENDs surely fit (0 without the encoder)."""
    per_step = image.n_outputs * image.layers[-1].max_spikes
    if not encoder:
        return per_step, 0
    entries = max(per_step + 1, RUN_BUFFER_ENTRIES)
    return entries, min(0xFFFF, entries // (per_step + 1))


def link_buffer_bytes(image: Image, max_payload: int, encoder: bool) -> int:
    """Bytes of a link's buffer (:class:`FrameReceiver`): a request's payload, then from
    ``max_payload`` on its answer's output events (:func:`output_buffer`), two bytes each
    (``compiler.mapper.link_buffer_bytes``, which the mapper counts block RAM by)."""
    return mapper.link_buffer_bytes(max_payload, output_buffer(image, encoder)[0])


def memory_depths(image: Image) -> list[tuple[int, ...]]:
    """Per core, the words of each memory space (indexed by ``MemSpace``) that READ_MEM and
    WRITE_MEM may address: WEIGHTS ``image.weight_depth`` (a convolution's kernel slice), STATE
    and PARAMS one per neuron, ACC the range of `hdl.core.acc_address` (a convolution: of
    ``hdl.conv.conv_acc_address``), MOD one per neuron on the cores of a three-factor layer
    (none elsewhere)."""
    placement = memory_placement(image.layers, image.config)
    depths = []
    for index, core in enumerate(image.config.cores):
        layer = image.layers[core.layer]
        learning = image.learning_of(core.layer)
        mod = core.neurons if learning is not None and learning.rule == "three_factor" else 0
        acc = acc_address(core, core.neurons - 1) + 1
        if layer.conv is not None:
            c0, c1 = core_channels(layer, core)
            conv_h, conv_w = layer.conv.conv_shape
            acc = conv_acc_address(layer, core, c1 - c0 - 1, conv_h - 1, conv_w - 1,
                                   spram_acc=placement[index].acc_spram) + 1
        by_space = {MemSpace.WEIGHTS: weight_depth(layer, core), MemSpace.STATE: core.neurons,
                    MemSpace.PARAMS: core.neurons, MemSpace.ACC: acc, MemSpace.MOD: mod}
        depths.append(tuple(by_space[space] for space in MemSpace))
    return depths


class FrameReceiver(wiring.Component):
    """Take request frames from a byte stream; hold each one, CRC checked, until it is done.

    Hunts for the start byte, then takes the header and the payload (into the first
    ``max_payload`` bytes of a block-RAM buffer of ``buffer_bytes``; its first ``ARGS_BYTES``
    also into ``o.payload``) while a
    CRC-16/CCITT-FALSE runs over them (at ``crc``, a :class:`LinkCrc`'s, unused while ``o`` is
    offered), then offers the head at ``o`` with ``crc_ok`` (the CRC over the frame and its
    own CRC leaves the residue 0) until ``o``
    is taken: the taker says so when it has answered. A frame whose length exceeds
    ``max_payload``, or that holds a byte with a framing error, is dropped and every byte is
    skipped until ``timeout_cycles`` of silence (a byte with a framing error is no silence);
    a partial frame followed by that much silence is dropped (``timeout``). Bytes that arrive
    while a request is held are dropped (``overrun``).

    The head's ``addr`` is exact below ``2 ** addr_bits``; a larger one keeps its low
    ``addr_bits`` bits and has every bit above them set, so it stays at least
    ``2 ** addr_bits``: for a link whose memories are all shallower than that, a range check
    answers as it would for the address sent, and ``addr_bits`` flip-flops hold the address
    instead of 32.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the UART receiver (always taken).
    framing_error : In(1)
        Strobe from the UART receiver: a byte was lost.
    o : Out(stream.Signature(RequestHead))
        The received request, held until taken.
    buf_addr : In(range(buffer_bytes))
    buf_data : Out(8)
        The buffer: ``buf_data`` is the byte at ``buf_addr`` of the cycle before.
    buf_waddr : In(range(buffer_bytes))
    buf_wdata : In(8)
    buf_we : In(1)
        The taker's write port into the buffer, used while ``o`` is offered (the receiver
        writes only before): the request's answer can be kept beside its payload
        (:class:`RequestExecutor`), in the same block RAM.
    crc_error, timeout, dropped, overrun : Out(1)
        Strobes for the link counters (``dropped``: a frame dropped without an answer).
    activity : Out(1)
        Strobe: a frame ended (complete, timed out, or skipped).
    crc : Out(CRC_PORT)
    """

    def __init__(self, *, max_payload: int, timeout_cycles: int, addr_bits: int = 32,
                 buffer_bytes: int | None = None):
        self._max_payload = operator.index(max_payload)
        self._timeout_cycles = operator.index(timeout_cycles)
        self._addr_bits = operator.index(addr_bits)
        self._buffer_bytes = (self._max_payload if buffer_bytes is None
                              else operator.index(buffer_bytes))
        if self._buffer_bytes < self._max_payload:
            raise ValueError(f"Buffer must hold the {self._max_payload} payload bytes, not "
                             f"{buffer_bytes!r}")
        if not 1 <= self._addr_bits <= 32:
            raise ValueError(f"Address bits must be 1..32, not {addr_bits!r}")
        if not ARGS_BYTES <= self._max_payload <= 0xFFFF:
            raise ValueError(f"Maximum payload must be {ARGS_BYTES}..65535 bytes, not "
                             f"{max_payload!r}")
        if self._timeout_cycles < 1:
            raise ValueError(f"Receive timeout must be at least 1 cycle, not "
                             f"{timeout_cycles!r}")
        super().__init__({
            "rx": In(stream.Signature(8)),
            "framing_error": In(1),
            "o": Out(stream.Signature(RequestHead)),
            "buf_addr": In(range(self._buffer_bytes)),
            "buf_data": Out(8),
            "buf_waddr": In(range(self._buffer_bytes)),
            "buf_wdata": In(8),
            "buf_we": In(1),
            "crc_error": Out(1),
            "timeout": Out(1),
            "dropped": Out(1),
            "overrun": Out(1),
            "activity": Out(1),
            "crc": Out(CRC_PORT),
        })

    def elaborate(self, platform):
        m = Module()
        check = self.crc
        crc_ok = Signal()  # latched: the CRC engine is free while the request is held
        # the buffer is read only while a request is held; written by the receiver before, by
        # the request's taker then
        m.submodules.buffer = buffer = Memory(shape=8, depth=self._buffer_bytes, init=[],
                                              attrs=NO_COLLISIONS)
        wr = buffer.write_port()
        rd = read_port(m, buffer)
        rd_data = rd.data
        seq, cmd = Signal(8), Signal(8)
        # a length above max_payload drops the frame: the bits above max_payload's are 0
        head_length = Signal(max(8, self._max_payload.bit_length()))
        idx = Signal(range(self._max_payload + 1))  # byte of the header / payload / trailer
        last_idx = Signal.like(idx)  # the payload's last byte: a register, not a subtraction
        # the arguments: core, space, the address's low bits, whether any bit above them is
        # set, count
        core, space, count = Signal(8), Signal(8), Signal(8)
        addr, high = Signal(self._addr_bits), Signal()
        timer = Signal(range(self._timeout_cycles))
        byte, got = self.rx.payload, self.rx.valid
        out = self.o.payload
        m.d.comb += [
            self.rx.ready.eq(1),
            out.seq.eq(seq),
            out.cmd.eq(cmd),
            out.length.eq(head_length),
            out.core.eq(core),
            out.space.eq(space),
            out.addr.eq(Cat(addr, high.replicate(32 - self._addr_bits))),
            out.count.eq(count),
            out.crc_ok.eq(crc_ok),
            check.data.eq(byte),
            wr.addr.eq(Mux(self.o.valid, self.buf_waddr, idx)),
            wr.data.eq(Mux(self.o.valid, self.buf_wdata, byte)),
            wr.en.eq(self.o.valid & self.buf_we),  # (Payload writes its bytes below)
            rd.addr.eq(self.buf_addr),
            self.buf_data.eq(rd_data),
        ]

        # Cycles of silence, in every state: a byte (or a lost one) restarts the count, and so
        # does its end. (One counter with a clear, outside the FSM: the states only read it.)
        silent = Signal()  # `timeout_cycles` of silence end in this cycle
        m.d.comb += silent.eq(timer == self._timeout_cycles - 1)
        with m.If(got | self.framing_error | silent):
            m.d.sync += timer.eq(0)
        with m.Else():
            m.d.sync += timer.eq(timer + 1)

        def watch_silence():
            """Inside a frame: a lost byte drops it (skip to silence); silence times it out."""
            with m.If(self.framing_error):
                m.d.comb += self.dropped.eq(1)
                m.next = "Discard"
            with m.Elif(~got & silent):
                m.d.comb += [self.timeout.eq(1), self.dropped.eq(1), self.activity.eq(1)]
                m.next = "Hunt"

        with m.FSM() as fsm:
            with m.State("Hunt"):
                m.d.comb += check.start.eq(1)
                with m.If(got & (byte == SOF_REQUEST)):
                    m.d.sync += idx.eq(0)
                    m.next = "Header"
            with m.State("Header"):
                m.d.comb += check.valid.eq(got)
                length = Cat(head_length[:8], byte)
                with m.If(got):
                    m.d.sync += idx.eq(idx + 1)
                    with m.Switch(idx[:2]):  # the header's 4 bytes: idx is 0..3 here
                        with m.Case(0):
                            m.d.sync += seq.eq(byte)
                        with m.Case(1):
                            m.d.sync += cmd.eq(byte)
                        with m.Case(2):
                            m.d.sync += head_length[:8].eq(byte)
                        with m.Case(3):
                            m.d.sync += [head_length[8:].eq(byte), idx.eq(0),
                                         last_idx.eq(length - 1)]
                            with m.If(at_least(length, self._max_payload + 1)):
                                # The length cannot be trusted, so neither can the frame's end.
                                m.d.comb += self.dropped.eq(1)
                                m.next = "Discard"
                            with m.Elif(length == 0):
                                m.next = "Trailer"
                            with m.Else():
                                m.next = "Payload"
                watch_silence()
            with m.State("Payload"):
                m.d.comb += [check.valid.eq(got), wr.en.eq(got)]
                with m.If(got):
                    m.d.sync += idx.eq(idx + 1)
                    # the arguments are bytes 0..6: a decode of idx's low bits, once its high ones
                    # are 0
                    with m.If(idx[3:] == 0), m.Switch(idx[:3]):
                        with m.Case(0):
                            m.d.sync += core.eq(byte)
                        with m.Case(1):
                            m.d.sync += space.eq(byte)
                        for k in range(4):  # the address, little-endian
                            kept = min(8, max(0, self._addr_bits - 8 * k))  # bits of this byte
                            above = byte[kept:].any() if kept < 8 else Const(0)
                            with m.Case(2 + k):
                                if kept:
                                    m.d.sync += addr[8 * k:8 * k + kept].eq(byte)
                                m.d.sync += high.eq(above if k == 0 else high | above)
                        with m.Case(6):
                            m.d.sync += count.eq(byte)
                    with m.If(idx == last_idx):
                        m.d.sync += idx.eq(0)
                        m.next = "Trailer"
                watch_silence()
            with m.State("Trailer"):
                m.d.comb += check.valid.eq(got)
                with m.If(got):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.next = "Check"
                watch_silence()
            with m.State("Discard"):
                with m.If(~got & silent):
                    m.d.comb += self.activity.eq(1)
                    m.next = "Hunt"
            with m.State("Check"):
                # The CRC register took the last trailer byte: its residue is final now.
                m.d.comb += [self.activity.eq(1), self.crc_error.eq(~check.match)]
                m.d.sync += crc_ok.eq(check.match)
                m.d.comb += self.overrun.eq(got)
                m.next = "Hold"
            with m.State("Hold"):
                m.d.comb += [self.o.valid.eq(1), self.overrun.eq(got)]
                with m.If(self.o.ready):
                    m.next = "Hunt"
        one_hot(fsm)
        return m


class RequestChecker(wiring.Component):
    """The status a request gets, in three register stages: the head's decode, lengths and
    the memory space's depth; the range compare and a memory request's length; ``idle``,
    ``loaded`` and the priority (three cycles after ``head``), so that neither the depth
    table, the compares nor the status priority sit in a long path.

    In order: CRC when its CRC did not check; UNKNOWN_CMD; NO_ENCODER for INTENSITY and
    STEP_ENCODED without an ``encoder``; LENGTH when its payload length does not fit the command
    (HELLO, CLEAR, STATUS, STEP_ENCODED: 0; READ_MEM: ``ARGS_BYTES``; WRITE_MEM:
    ``ARGS_BYTES + count * word_bytes``; PUSH, STEP: even; PUSH_BITMAP, STEP_BITMAP:
    ``bitmap_bytes(n_inputs)``; INTENSITY: at least 3); for READ_MEM and WRITE_MEM, ARG
    when ``core`` is not a core, ``space`` not a memory space, or ``addr + count`` beyond the
    space's depth (:func:`memory_depths`), and BUSY when the array is not ``idle``; for
    INTENSITY, ARG when its intensities run past ``n_inputs``; for RUN_ENCODED (payload: u16
    steps), LENGTH unless 2 bytes, ARG for 0 steps or more than ``run_steps``; for the commands
    that start events (PUSH, STEP and their bitmap and encoded forms, RUN_ENCODED), NOT_LOADED
    while the flash loader has not made the array ready; else OK.

    Members
    -------
    head : In(RequestHead)
        Held for three cycles before ``status`` is read.
    idle : In(1)
    loaded : In(1)
        The flash loader's verdict (docs/flash.md); 1 without a loader. Both are read one cycle
        before ``status``.
    status : Out(8)
        A ``protocol.Status`` value.
    """

    head: In(RequestHead)
    idle: In(1)
    loaded: In(1, init=1)
    status: Out(8)

    def __init__(self, image: Image, *, word_bytes: int, encoder: bool = False,
                 run_steps: int = 0):
        self._depths = memory_depths(image)
        self._word_bytes = operator.index(word_bytes)
        self._n_inputs = image.n_inputs
        self._encoder = bool(encoder)
        self._run_steps = operator.index(run_steps)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        head = self.head
        # -- stage 1: from the head alone ----------------------------------------------------
        # `pre` is the status the head gets on an idle, loaded array; `memory` and `events`
        # say whether idle and loaded still matter. The range compare keeps its operands in
        # registers: the space's depth and addr + count.
        depth = Signal(range(max(max(d) for d in self._depths) + 1))
        with m.Switch(Cat(head.space, head.core)):
            for core, depths in enumerate(self._depths):
                for space, words in zip(MemSpace, depths, strict=True):
                    with m.Case(space | core << 8):
                        m.d.sync += depth.eq(words)
            with m.Default():
                m.d.sync += depth.eq(0)
        width = len(depth)
        end = Signal(max(width, 8) + 1)  # addr + count, on the few bits a depth has
        # `depth` is 0 for a core or space that does not exist: only addr = count = 0 passes
        # that, so refuse those explicitly; an address above the depth's bits is out.
        known = Signal()
        m.d.sync += [
            end.eq(head.addr[:width] + head.count),
            known.eq(below(head.core, len(self._depths)) & below(head.space, len(MemSpace)) &
                     (head.addr[width:] == 0)),
        ]
        is_memory = Signal()
        is_events = Signal()
        m.d.sync += [
            is_memory.eq((head.cmd == Command.READ_MEM) | (head.cmd == Command.WRITE_MEM)),
            is_events.eq((head.cmd == Command.PUSH) | (head.cmd == Command.STEP) |
                         (head.cmd == Command.PUSH_BITMAP) | (head.cmd == Command.STEP_BITMAP) |
                         (head.cmd == Command.STEP_ENCODED) |
                         (head.cmd == Command.RUN_ENCODED)),
        ]
        # RUN_ENCODED's step count (the payload's first two bytes: the head's core and space)
        # out of range: a register of its own, read in stage 2
        is_run, run_bad = Signal(), Signal()
        run_steps = Cat(head.core, head.space)
        m.d.sync += [is_run.eq(head.cmd == Command.RUN_ENCODED),
                     run_bad.eq((run_steps == 0) | at_least(run_steps, self._run_steps + 1))]
        # READ_MEM's and WRITE_MEM's payload length, a register: compared in stage 2
        mem_length = Signal.like(head.length)
        m.d.sync += mem_length.eq(Mux(head.cmd == Command.READ_MEM, ARGS_BYTES,
                                      ARGS_BYTES + times(head.count, self._word_bytes)))
        pre = Signal(8)
        with m.If(~head.crc_ok):
            m.d.sync += pre.eq(Status.CRC)
        with m.Else():
            with m.Switch(head.cmd):
                with m.Case(Command.READ_MEM, Command.WRITE_MEM):
                    # LENGTH decided in stage 2, ARG (out of range) in stage 3
                    m.d.sync += pre.eq(Status.OK)
                with m.Case(Command.HELLO, Command.CLEAR, Command.STATUS):
                    m.d.sync += pre.eq(Mux(head.length == 0, Status.OK, Status.LENGTH))
                with m.Case(Command.PUSH, Command.STEP):
                    m.d.sync += pre.eq(Mux(head.length[0], Status.LENGTH, Status.OK))
                with m.Case(Command.PUSH_BITMAP, Command.STEP_BITMAP):
                    m.d.sync += pre.eq(Mux(head.length != bitmap_bytes(self._n_inputs),
                                           Status.LENGTH, Status.OK))
                with m.Case(Command.INTENSITY):
                    # the offset is the payload's first two bytes: the head's core and space
                    offset = Cat(head.core, head.space)
                    if not self._encoder:
                        m.d.sync += pre.eq(Status.NO_ENCODER)
                    else:
                        with m.If(below(head.length, 3)):
                            m.d.sync += pre.eq(Status.LENGTH)
                        with m.Elif(offset + head.length - 2 > self._n_inputs):
                            m.d.sync += pre.eq(Status.ARG)
                        with m.Else():
                            m.d.sync += pre.eq(Status.OK)
                with m.Case(Command.STEP_ENCODED):
                    if not self._encoder:
                        m.d.sync += pre.eq(Status.NO_ENCODER)
                    else:
                        m.d.sync += pre.eq(Mux(head.length != 0, Status.LENGTH, Status.OK))
                with m.Case(Command.RUN_ENCODED):
                    if not self._encoder:
                        m.d.sync += pre.eq(Status.NO_ENCODER)
                    else:  # ARG for the step count: stage 2
                        m.d.sync += pre.eq(Mux(head.length != 2, Status.LENGTH, Status.OK))
                with m.Default():
                    m.d.sync += pre.eq(Status.UNKNOWN_CMD)
        # -- stage 2: the range -----------------------------------------------------------------
        # (the compare's carry chain ends at a register of its own)
        pre2, memory2, events2, fits = Signal(8), Signal(), Signal(), Signal()
        known2, run_bad2 = Signal(), Signal()
        m.d.sync += [pre2.eq(Mux((pre == Status.OK) & is_memory & (head.length != mem_length),
                                 Status.LENGTH, pre)),
                     memory2.eq(is_memory), events2.eq(is_events),
                     fits.eq(end <= depth), known2.eq(known), run_bad2.eq(is_run & run_bad)]
        # -- stage 3: idle and loaded ------------------------------------------------------------
        with m.If(pre2 != Status.OK):
            m.d.sync += self.status.eq(pre2)
        with m.Elif((memory2 & ~(known2 & fits)) | run_bad2):
            m.d.sync += self.status.eq(Status.ARG)
        with m.Elif(memory2 & ~self.idle):
            m.d.sync += self.status.eq(Status.BUSY)
        with m.Elif(events2 & ~self.loaded):
            m.d.sync += self.status.eq(Status.NOT_LOADED)
        with m.Else():
            m.d.sync += self.status.eq(Status.OK)
        return m


class ResponseSender(wiring.Component):
    """Send answer frames: start byte, head, payload bytes, CRC high byte first.

    The CRC-16/CCITT-FALSE (at ``crc``, a :class:`LinkCrc`'s, used from the start byte of an
    answer to its last CRC byte) runs over every byte after the start byte.
    Payload bytes pass from ``payload`` to ``tx`` combinationally, up to the one marked
    ``last``; an answer whose head says ``length`` 0 takes none. (The sender does not count
    them: the source's ``last`` must agree with ``length``.)

    Members
    -------
    i : In(stream.Signature(ReplyHead))
        The answer to send; taken in the cycle after its last CRC byte is taken by ``tx``
        (so a transfer at ``i`` means: the answer is out; ``ready`` is a state decode).
    payload : In(stream.Signature(PayloadByte))
        Its payload bytes, taken after the head.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    crc : Out(CRC_PORT)
    """

    i: In(stream.Signature(ReplyHead))
    payload: In(stream.Signature(PayloadByte))
    tx: Out(stream.Signature(8))
    crc: Out(CRC_PORT)

    def elaborate(self, platform):
        m = Module()
        gen = self.crc
        head = self.i.payload
        idx = Signal(range(5))  # byte of the head; of the CRC
        m.d.comb += [gen.data.eq(self.tx.payload), gen.valid.eq(0)]
        with m.FSM():
            with m.State("Start"):
                m.d.comb += [self.tx.payload.eq(SOF_RESPONSE), self.tx.valid.eq(self.i.valid),
                             gen.start.eq(1)]
                with m.If(self.i.valid & self.tx.ready):
                    m.d.sync += idx.eq(0)
                    m.next = "Head"
            with m.State("Head"):
                m.d.comb += [self.tx.payload.eq(Cat(head.seq, head.cmd, head.status,
                                                    head.length).word_select(idx[:3], 8)),
                             self.tx.valid.eq(1), gen.valid.eq(self.tx.ready)]
                with m.If(self.tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 4):
                        m.d.sync += idx.eq(0)
                        with m.If(head.length == 0):
                            m.next = "Crc"
                        with m.Else():
                            m.next = "Payload"
            with m.State("Payload"):
                m.d.comb += [self.tx.payload.eq(self.payload.payload.data),
                             self.tx.valid.eq(self.payload.valid),
                             self.payload.ready.eq(self.tx.ready),
                             gen.valid.eq(self.payload.valid & self.tx.ready)]
                with m.If(self.payload.valid & self.tx.ready & self.payload.payload.last):
                    m.next = "Crc"
            with m.State("Crc"):
                m.d.comb += [self.tx.payload.eq(gen.crc.word_select(~idx[0], 8)),
                             self.tx.valid.eq(1)]
                with m.If(self.tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.next = "Done"
            with m.State("Done"):
                # The answer is out: take the head. Its ready comes from this state alone, so
                # the byte count and the UART's ready stay out of the executor's next state.
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.next = "Start"
        return m


class RequestExecutor(wiring.Component):
    """Execute checked requests on a core array and produce their answers.

    Takes a request at ``i`` (the receiver's, held until the answer is out), waits while
    READ_MEM, WRITE_MEM or STATUS find the array at work (a learning core's sweeps, deeper
    layers after the output layer's ``eos``) unless a PUSH holds a step open, gets its status
    from a :class:`RequestChecker`, executes it, and answers (``reply`` and ``payload``, to a
    :class:`ResponseSender`). A refused request is not executed. The last executed request's
    ``seq`` and command are kept: a CRC-clean repeat of both with an OK status is answered
    again, without executing it again, from state nothing changed since (a STEP's output events
    stay in a buffer until the next STEP). HELLO starts a session: it forgets the last request
    and, when a PUSH left a step open, ends that step with a ``clear`` of the array.

    Input events come from a PUSH/STEP payload (u16 each, one per 2 buffer reads), from a
    PUSH_BITMAP/STEP_BITMAP bitmap (3 cycles per byte plus one per event: the lowest set bit
    of the byte goes first), or, with ``encoder_seed``, from a :class:`RateEncoder` (built
    here): INTENSITY writes its memory (2 cycles a byte), STEP_ENCODED forwards one step of its
    events and its ``eos`` (``n_inputs + 2`` cycles, more under backpressure), and CLEAR
    restarts its LFSR at the seed. RUN_ENCODED runs that many encoded steps in one request:
    the encoder scans step ``t + 1`` as soon as step ``t``'s ``eos`` is queued (its queue
    lets it scan while the array integrates, and layers pipeline), and the output events of
    every step, each step's followed by a ``STEP_END``, fill the output buffer
    (:func:`output_buffer`) for the answer.

    The output events are kept in the receiver's buffer, from ``max_payload`` on, above the
    request's payload (:func:`link_buffer_bytes`): the receiver writes it only before it offers
    a request, and the executor reads the payload only before it collects outputs. An event is
    written a byte a cycle, low byte first, so it is taken every other cycle at most (a STEP's
    answer holds ``n_outputs x max_spikes`` of them).

    Members
    -------
    i : In(stream.Signature(RequestHead))
        Taken when the answer is out.
    buf_addr : Out(range(buffer_bytes))
    buf_data : In(8)
        The receiver's buffer (one cycle of read latency): the request's payload below
        ``max_payload``, the output events from there on.
    buf_waddr : Out(range(buffer_bytes))
    buf_wdata : Out(8)
    buf_we : Out(1)
        Its write port (the output events).
    reply : Out(stream.Signature(ReplyHead))
    payload : Out(stream.Signature(PayloadByte))
        The answer (see :class:`ResponseSender`).
    status_index : Out(range(hello_base(n_layers) + HELLO_BYTES))
    status_read : Out(1)
    status_byte : In(8)
        The STATUS payload (:class:`~.counters.StatusCounters`): byte ``status_index`` the
        cycle after ``status_read``, held; HELLO's from ``hello_base`` on.
    status_flush : Out(1)
    status_flushed : In(1)
        STATUS waits in Settle, ``status_flush`` high, for ``status_flushed``: every count
        before it is in the payload.
    events : Out(stream.Signature(SpikeEvent))
    outputs : In(stream.Signature(SpikeEvent))
    clear : Out(1)
    mem : Out(MemAccessSignature(...))
    idle : In(1)
        To and from the array (see :class:`HostLink`).
    loaded : In(1)
        The flash loader's verdict (:class:`RequestChecker`).
    refused, duplicate, lost : Out(1)
        Strobes for the link counters: an answer with an error status; a repeat answered
        again; an output event beyond ``n_outputs`` dropped.
    """

    def __init__(self, image: Image, *, mem_data_width: int, mem_addr_width: int,
                 max_payload: int, hello: bytes, encoder_seed: int | None = None):
        self._image = image
        self._seed = encoder_seed
        self._mem_data_width = operator.index(mem_data_width)
        self._mem_addr_width = operator.index(mem_addr_width)
        self._max_payload = operator.index(max_payload)
        self._word_bytes = -(-self._mem_data_width // 8)
        self._hello = bytes(hello)
        self._buffer_bytes = link_buffer_bytes(image, self._max_payload, encoder_seed is not None)
        super().__init__({
            "i": In(stream.Signature(RequestHead)),
            "buf_addr": Out(range(self._buffer_bytes)),
            "buf_data": In(8),
            "buf_waddr": Out(range(self._buffer_bytes)),
            "buf_wdata": Out(8),
            "buf_we": Out(1),
            "reply": Out(stream.Signature(ReplyHead)),
            "payload": Out(stream.Signature(PayloadByte)),
            "status_index": Out(range(hello_base(len(image.layers)) + len(self._hello))),
            "status_read": Out(1),
            "status_byte": In(8),
            "status_flush": Out(1),
            "status_flushed": In(1),
            "events": Out(stream.Signature(SpikeEvent)),
            "outputs": In(stream.Signature(SpikeEvent)),
            "clear": Out(1),
            "mem": Out(MemAccessSignature(data_width=self._mem_data_width,
                                          addr_width=self._mem_addr_width, core_width=8)),
            "idle": In(1),
            "loaded": In(1, init=1),
            "refused": Out(1),
            "duplicate": Out(1),
            "lost": Out(1),
        })

    @property
    def buffer_bytes(self) -> int:
        """Bytes of the receiver's buffer this executor uses (:func:`link_buffer_bytes`)."""
        return self._buffer_bytes

    def elaborate(self, platform):
        m = Module()
        wb = self._word_bytes
        # a multi-spike output layer answers up to max_spikes events per neuron
        n_out = self._image.n_outputs * self._image.layers[-1].max_spikes
        n_status = status_length(len(self._image.layers))
        n_hello = hello_base(len(self._image.layers))  # (where HELLO's bytes start)
        out_depth, run_steps = output_buffer(self._image, self._seed is not None)
        m.submodules.checker = checker = RequestChecker(self._image, word_bytes=wb,
                                                        encoder=self._seed is not None,
                                                        run_steps=run_steps)
        n_in = self._image.n_inputs
        n_bitmap = bitmap_bytes(n_in)
        enc = None
        if self._seed is not None:
            m.submodules.encoder = enc = RateEncoder(
                n_inputs=n_in, seed=self._seed,
                queue=ENCODER_QUEUE if n_in >= ENCODER_QUEUE_INPUTS else 2)
        # the output events: written while a step collects them, read after, a byte a cycle,
        # from `base` on, above the payload
        base = self._max_payload

        req = self.i.payload
        cmd = req.cmd
        status = Signal(range(max(Status) + 1))  # the answer's status code
        longest = max(255 * wb, 2 * out_depth, n_status, len(self._hello))  # answer payload
        resp_len = Signal(range(longest + 1))
        resp_last = Signal(range(longest + 1))  # resp_len - 1, a cycle late: read 2+ later
        m.d.sync += resp_last.eq(resp_len - 1)
        # payload byte to fetch; in Reply, the answer byte's address in the buffer
        idx = Signal(range(max(self._max_payload + 1, self._buffer_bytes)))
        pidx = Signal(range(longest + 1))  # answer payload byte
        bidx = Signal(range(max(wb, 2)))  # byte inside the current word
        mem_addr = Signal(self._mem_addr_width)
        # Words move a byte at a time through a shift register (cheaper than byte multiplexers):
        # bytes enter at the top and leave at the bottom, little-endian first.
        word = Signal(8 * max(wb, 2))
        out_count = Signal(range(out_depth + 1))
        high = Signal()  # the output event's low byte is written, its high byte is next
        entry = Signal(ADDR_BITS)  # the output event's buffer entry
        m.d.comb += entry.eq(Mux(self.outputs.payload.eos, STEP_END, self.outputs.payload.addr)
                             if enc is not None else self.outputs.payload.addr)

        def store(full):
            """Write the output event's entry, low byte then high byte, and take it with the
            second (an event when the buffer is `full` is taken and counted as lost)."""
            with m.If(full):
                m.d.comb += [self.outputs.ready.eq(1), self.lost.eq(1)]
            with m.Else():
                m.d.comb += [self.buf_we.eq(1), self.outputs.ready.eq(high)]
                m.d.sync += high.eq(~high)
                with m.If(high):
                    m.d.sync += out_count.eq(out_count + 1)
        # RUN_ENCODED: steps whose scan is still to start; steps whose outputs are still to come
        # (at most run_steps: the checker refuses more)
        feed_left, take_left = Signal(range(run_steps + 1)), Signal(range(run_steps + 1))
        feed_more = Signal()  # feed_left != 0, registered
        # The last executed request; command 0 (none) after reset and HELLO. A command is kept
        # on the bits a command has: a request with any other is refused (UNKNOWN_CMD) before
        # it could be taken for a repeat.
        last_seq = Signal(8)
        last_cmd = Signal(CMD_BITS)
        open_step = Signal()  # a PUSH was executed, its STEP not yet
        replying = Signal()

        def kind(*commands):
            """Whether the request is one of ``commands``, registered: the request is held from
            the cycle before Settle on, and every state that reads these comes after Idle."""
            flag = Signal()
            m.d.sync += flag.eq(Cat(cmd[:CMD_BITS] == command for command in commands).any())
            return flag

        is_read, is_write = kind(Command.READ_MEM), kind(Command.WRITE_MEM)
        is_hello, is_status = kind(Command.HELLO), kind(Command.STATUS)
        is_table = kind(Command.HELLO, Command.STATUS)
        is_push, is_push_bitmap = kind(Command.PUSH), kind(Command.PUSH_BITMAP)
        is_step, is_step_bitmap = kind(Command.STEP), kind(Command.STEP_BITMAP)
        # Without the encoder the checker refuses the encoder's commands (NO_ENCODER): neither
        # their flags nor their states are built.
        encoded = (Command.STEP_ENCODED, Command.RUN_ENCODED) if enc is not None else ()
        stepping = kind(Command.STEP, Command.STEP_BITMAP, *encoded)
        between = kind(Command.READ_MEM, Command.WRITE_MEM, Command.STATUS)
        is_clear = kind(Command.CLEAR)
        is_bitmap = kind(Command.PUSH_BITMAP, Command.STEP_BITMAP)
        # `clear` resets every core and the array's streams and counters: it comes from a
        # flip-flop (high in the ClearGo cycle, set on the way in), not from the state decode
        clear = Signal()
        m.d.sync += clear.eq(0)
        m.d.comb += self.clear.eq(clear)
        if enc is not None:
            is_intensity = kind(Command.INTENSITY)
            is_step_encoded, is_run_encoded = kind(*encoded[:1]), kind(*encoded[1:])
        # the request's lengths, registered as the flags are (Dispatch reads no head field's
        # compare: its next state comes from registers and the checker's status alone)
        no_count, no_payload = Signal(), Signal()
        m.d.sync += [no_count.eq(req.count == 0), no_payload.eq(req.length == 0)]
        # the Reply state's table byte (HELLO, STATUS or a step's output events) of `pidx`,
        # two registers behind it
        table_byte = Signal(8)
        settled = Signal(2)  # `pidx` has held for one, two cycles in Bytes or Reply
        m.d.sync += settled.eq(0)  # (outside them)
        # Reply's verdicts as registers, a cycle behind what they read (Reply reads them once
        # `pidx` has settled, and status, flags and length were set before it): the answer is a
        # table, and its bytes are all out
        table, at_len, at_last = Signal(), Signal(), Signal()
        m.d.sync += [table.eq((status == Status.OK) & (is_table | stepping)),
                     at_len.eq(pidx == resp_len), at_last.eq(pidx == resp_last)]
        # (HELLO's bytes are a constant table beside the STATUS payload's: StatusCounters)
        m.d.sync += table_byte.eq(Mux(is_table, self.status_byte, self.buf_data))
        # A bitmap byte's inputs still to send; the lowest set bit goes first.
        bits = Signal(8)
        low = Signal(3)
        for k in reversed(range(8)):
            with m.If(bits[k]):
                m.d.comb += low.eq(k)
        last_mask = (1 << (n_in % 8 or 8)) - 1  # the last byte's bits below n_inputs
        int_addr = Signal(17)  # the next intensity to write

        m.d.comb += [
            checker.head.eq(req),
            checker.idle.eq(self.idle),
            checker.loaded.eq(self.loaded),
            self.buf_addr.eq(idx),
            self.mem.core.eq(req.core),
            self.mem.space.eq(req.space[:3]),
            self.mem.addr.eq(mem_addr),
            self.mem.wdata.eq(word[len(word) - 8 * wb:][:self._mem_data_width]),
            self.events.payload.addr.eq(word[len(word) - ADDR_BITS:]),
            # two bytes an event, little-endian, from `base` on (an eos is written only by
            # RUN_ENCODED: a STEP's answers on it)
            self.buf_waddr.eq(base + Cat(high, out_count)),
            self.buf_wdata.eq(entry.word_select(high, 8)),
            self.reply.valid.eq(replying),
            self.reply.payload.seq.eq(req.seq),
            self.reply.payload.cmd.eq(cmd),
            self.reply.payload.status.eq(status),
            self.reply.payload.length.eq(resp_len),
            self.status_index.eq(Cat(pidx[:(n_hello - 1).bit_length()], is_hello)),
            self.payload.payload.last.eq(at_last),
        ]

        # An executed request's answer length follows from its command alone (one multiplexer
        # for every state that answers): READ_MEM its words, a step its output events, STATUS
        # and HELLO their tables, the others nothing.
        read_len = times(req.count, wb)
        out_len = times(out_count, 2)
        ok_len = Mux(is_read, read_len, Mux(stepping, out_len, Mux(
            is_status, n_status, Mux(is_hello, len(self._hello), 0))))

        def answer():
            """Answer an executed request (status OK), from the Answer state: the conditions
            that end a request (a compare, a handshake) reach the FSM's next state alone, not
            the answer's status, length and the byte counters' enables."""
            m.next = "Answer"

        def remember():
            m.d.sync += [last_seq.eq(req.seq), last_cmd.eq(cmd)]

        # A repeat of the last request, registered: Settle always comes before Dispatch, and the
        # last request changes only in Dispatch.
        duplicate = Signal()
        m.d.sync += duplicate.eq((req.seq == last_seq) & (cmd[:len(last_cmd)] == last_cmd))

        with m.FSM() as fsm:
            with m.State("Idle"):
                with m.If(self.i.valid):
                    m.next = "Settle"
            with m.State("Settle"):
                # Memory and counters are read and written between steps only: wait for the
                # array. While a PUSH holds a step open the array never gets idle: go on, and
                # the checker refuses memory requests with BUSY.
                m.d.sync += pidx.eq(0)
                m.d.comb += self.status_flush.eq(is_status)
                with m.If((self.idle | open_step | ~between) &
                          (self.status_flushed | ~is_status)):
                    m.next = "Check"
            with m.State("Check"):  # the checker's third stage (RequestChecker)
                m.next = "Dispatch"
            with m.State("Dispatch"):
                m.d.sync += [mem_addr.eq(req.addr), bidx.eq(0)]
                with m.If(checker.status != Status.OK):
                    m.d.comb += self.refused.eq(1)
                    m.d.sync += [status.eq(checker.status), resp_len.eq(0), replying.eq(1)]
                    m.next = "Reply"
                with m.Elif(duplicate):
                    m.d.comb += self.duplicate.eq(1)
                    answer()  # READ_MEM and STATUS read again, a step's events are kept
                with m.Else():
                    # one registered flag a command (`kind`), in the checker's order: it
                    # refused any other command
                    with m.If(is_hello):
                        # A new session: the next request is never a repeat, and a step a
                        # dead host left open (PUSH without STEP) ends.
                        m.d.sync += [last_cmd.eq(0), open_step.eq(0)]
                        with m.If(open_step):
                            m.d.sync += clear.eq(1)
                            m.next = "ClearGo"
                        with m.Else():
                            answer()
                    with m.Elif(is_status | is_read):
                        remember()
                        answer()
                    with m.Elif(is_clear):
                        remember()
                        m.d.sync += [open_step.eq(0), clear.eq(1)]
                        m.next = "ClearGo"
                    with m.Elif(is_write):
                        remember()
                        m.d.sync += idx.eq(ARGS_BYTES)
                        with m.If(no_count):
                            answer()
                        with m.Else():
                            m.next = "Fetch"
                    with m.Elif(is_bitmap):
                        remember()
                        m.d.sync += [idx.eq(0), open_step.eq(is_push_bitmap)]
                        m.next = "BmpFetch"
                    if enc is not None:
                        with m.Elif(is_intensity):
                            remember()
                            m.d.sync += [idx.eq(2), int_addr.eq(Cat(req.core, req.space))]
                            m.next = "IntFetch"
                        with m.Elif(is_step_encoded):
                            remember()
                            m.d.sync += open_step.eq(0)
                            m.next = "EncStart"
                        with m.Elif(is_run_encoded):
                            remember()
                            # the payload's u16, on the bits run_steps has
                            steps = Cat(req.core, req.space)[:len(feed_left)]
                            m.d.sync += [open_step.eq(0), feed_left.eq(steps),
                                         take_left.eq(steps), out_count.eq(0)]
                            m.next = "RunCollect"
                    with m.Else():  # PUSH, STEP
                        remember()
                        m.d.sync += [idx.eq(0), open_step.eq(is_push)]
                        with m.If(~no_payload):
                            m.next = "Fetch"
                        with m.Elif(is_step):
                            m.next = "Eos"
                        with m.Else():
                            answer()

            # -- execute: words / events from the payload buffer -----------------------------
            with m.State("Fetch"):
                m.d.sync += idx.eq(idx + 1)
                m.next = "Shift"
            with m.State("Shift"):
                m.d.sync += [word.eq(Cat(word[8:], self.buf_data)), bidx.eq(bidx + 1)]
                with m.If(Mux(is_write, bidx == wb - 1, bidx == 1)):
                    m.d.sync += bidx.eq(0)
                    m.next = "Issue"
                with m.Else():
                    m.next = "Fetch"
            with m.State("Issue"):
                writing = is_write
                m.d.comb += [self.mem.we.eq(writing), self.events.valid.eq(~writing)]
                with m.If(Mux(writing, self.mem.ready, self.events.ready)):
                    m.d.sync += mem_addr.eq(mem_addr + 1)
                    # the checker made the length whole words (events): the last one ends it
                    with m.If(idx != req.length[:len(idx)]):
                        m.next = "Fetch"
                    with m.Elif(is_step):
                        m.next = "Eos"
                    with m.Else():
                        answer()
            # -- execute: a bitmap of input events ------------------------------------------
            # idx is the byte's number until its inputs are sent
            with m.State("BmpFetch"):
                m.next = "BmpLatch"
            with m.State("BmpLatch"):
                m.d.sync += bits.eq(Mux(idx == n_bitmap - 1, self.buf_data & last_mask,
                                        self.buf_data))
                m.next = "BmpScan"
            with m.State("BmpScan"):
                m.d.comb += [self.events.valid.eq(bits.any()),
                             self.events.payload.addr.eq(Cat(low, idx))]
                with m.If(bits.any()):
                    with m.If(self.events.ready):
                        m.d.sync += bits.eq(bits & (bits - 1))
                with m.Elif(idx != n_bitmap - 1):
                    m.d.sync += idx.eq(idx + 1)
                    m.next = "BmpFetch"
                with m.Elif(is_step_bitmap):
                    m.next = "Eos"
                with m.Else():
                    answer()

            # -- execute: the rate encoder ----------------------------------------------------
            if enc is not None:
                m.d.comb += [enc.w_addr.eq(int_addr), enc.w_data.eq(self.buf_data)]
                with m.State("IntFetch"):
                    m.d.sync += idx.eq(idx + 1)
                    m.next = "IntWrite"
                with m.State("IntWrite"):
                    m.d.comb += enc.w_en.eq(1)
                    m.d.sync += int_addr.eq(int_addr + 1)
                    with m.If(idx == req.length):
                        answer()
                    with m.Else():
                        m.next = "IntFetch"
                with m.State("EncStart"):
                    m.d.comb += enc.start.eq(1)
                    m.next = "EncRun"
                with m.State("EncRun"):
                    m.d.comb += [self.events.valid.eq(enc.o.valid),
                                 self.events.payload.eq(enc.o.payload),
                                 enc.o.ready.eq(self.events.ready)]
                    with m.If(enc.o.valid & self.events.ready & enc.o.payload.eos):
                        m.d.sync += out_count.eq(0)
                        m.next = "Collect"

                # RUN_ENCODED: the encoder's events go to the array as they come, its next scan
                # starts once the last one's eos is queued, and the outputs fill the buffer.
                # feed_more lags feed_left by a cycle: the encoder is busy for at least 3
                # cycles after a start, so it never starts a step too many.
                m.d.sync += feed_more.eq(feed_left != 0)
                with m.State("RunCollect"):
                    m.d.comb += [self.events.valid.eq(enc.o.valid),
                                 self.events.payload.eq(enc.o.payload),
                                 enc.o.ready.eq(self.events.ready)]
                    with m.If(feed_more & ~enc.busy):
                        m.d.comb += enc.start.eq(1)
                        m.d.sync += feed_left.eq(feed_left - 1)
                    with m.If(self.outputs.valid):
                        store(out_count == out_depth)  # (never full: the checker bounds steps)
                        with m.If(self.outputs.payload.eos & self.outputs.ready):
                            m.d.sync += take_left.eq(take_left - 1)
                    # the cycle after the last step's STEP_END went in: nothing more comes
                    with m.If(take_left == 0):
                        m.next = "RunDone"
                with m.State("RunDone"):
                    answer()

            with m.State("Eos"):
                m.d.comb += [self.events.valid.eq(1), self.events.payload.eos.eq(1)]
                with m.If(self.events.ready):
                    m.d.sync += out_count.eq(0)
                    m.next = "Collect"
            with m.State("Collect"):
                with m.If(self.outputs.valid):
                    with m.If(self.outputs.payload.eos):
                        m.d.comb += self.outputs.ready.eq(1)
                        answer()
                    with m.Else():
                        # More spikes than neurons (full): cannot happen with a correct array;
                        # counted rather than silently lost.
                        store(out_count == n_out)
            with m.State("Answer"):
                # pidx and bidx are 0 here (zeroed in Settle and Dispatch, or counted down)
                m.d.sync += [status.eq(Status.OK), resp_len.eq(ok_len), replying.eq(1),
                             idx.eq(base)]
                with m.If(is_read & ~no_count):
                    m.next = "RdReq"
                with m.Else():
                    m.next = "Reply"
            with m.State("ClearGo"):  # (`clear` is high)
                if enc is not None:
                    m.d.comb += enc.restart.eq(1)  # a new sample: the LFSR starts again
                m.next = "ClearWait"
            with m.State("ClearWait"):
                with m.If(self.idle):
                    answer()

            # -- answer: payload bytes ---------------------------------------------------------
            with m.State("RdReq"):
                m.d.comb += self.mem.re.eq(1)
                with m.If(self.mem.ready):
                    m.next = "RdWait"
            with m.State("RdWait"):
                with m.If(self.mem.rvalid):
                    m.d.sync += [word.eq(self.mem.rdata), mem_addr.eq(mem_addr + 1)]
                    m.next = "Bytes"
            with m.State("Bytes"):
                # a byte is offered once `pidx` has held for a cycle (`at_last` is a register
                # behind it; the StreamRegister takes a byte every other cycle anyway)
                m.d.comb += [self.payload.payload.data.eq(word[:8]),
                             self.payload.valid.eq(settled[0])]
                with m.If(~(self.payload.valid & self.payload.ready)):
                    m.d.sync += settled.eq(Cat(1, settled[0]))
                with m.Else():
                    m.d.sync += [pidx.eq(pidx + 1), bidx.eq(bidx + 1), word.eq(word[8:])]
                    with m.If(self.payload.payload.last):
                        m.next = "Reply"
                    with m.Elif(bidx == wb - 1):
                        m.d.sync += bidx.eq(0)
                        m.next = "RdReq"
            with m.State("Reply"):
                # HELLO, STATUS and a step's answers are tables read a byte at a time; the
                # others are empty, or sent by now. The table byte of `pidx` is a register two
                # cycles behind it (STATUS's multiplexer and the buffer's read port, at `idx`,
                # which counts with `pidx`, end at a register too): a byte is offered once
                # `pidx` has held for two cycles.
                m.d.comb += [
                    self.payload.payload.data.eq(table_byte),
                    self.payload.valid.eq(table & ~at_len & settled[1]),
                    self.status_read.eq(is_table & ~settled[0]),
                ]
                with m.If(self.payload.valid & self.payload.ready):
                    m.d.sync += [pidx.eq(pidx + 1), idx.eq(idx + 1), settled.eq(0)]
                with m.Else():
                    m.d.sync += settled.eq(Cat(1, settled[0]))
                with m.If(self.reply.ready):
                    m.d.comb += self.i.ready.eq(1)
                    m.d.sync += replying.eq(0)
                    m.next = "Idle"
        one_hot(fsm)  # 20 states: decodes and the state enable off the critical path
        return m


class HostLink(wiring.Component):
    """Parse request frames from ``rx``, execute them on a core array, answer on ``tx``.

    A composition: :class:`FrameReceiver` -> :class:`RequestExecutor` (with its
    :class:`RequestChecker`, reading :class:`~.counters.StatusCounters`, which counts the
    array's work and what goes wrong on the link) -> :class:`ResponseSender`. Nothing in a
    frame is acted on before its CRC has checked. A partial frame followed by
    ``timeout_bytes`` byte times of silence is dropped.
    Requests are stop-and-wait: bytes that arrive while the link executes or answers are
    dropped and counted (``overruns``). Memory requests out of a memory's range are refused
    (ARG), as are memory requests while a PUSH holds a step open (BUSY). Steps' input events
    come as AER, as bitmaps, or (an image with ``meta.encoder``) from the on-chip rate encoder;
    HELLO reports which (its feature byte) and ``clock_hz``, the fabric clock.

    Ports
    -----
    rx : In(stream.Signature(8))
        Bytes from the UART receiver (always taken).
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter.
    framing_error, overrun : In(1)
        Strobes from the UART receiver, counted.
    events : Out(stream.Signature(SpikeEvent))
        Input events to the array's ``i``.
    outputs : In(stream.Signature(SpikeEvent))
        Output events from the array's ``o`` (taken only while a STEP collects them).
    clear : Out(1)
        Strobe to the array's ``clear``.
    mem : Out(MemAccessSignature(...))
        To the array's memory-access port.
    idle, overflow : In(1)
        The array's status, reported by STATUS.
    steps : In(StructLayout)
        The array's counter increments (``CoreArray.steps``), counted for STATUS in
        :class:`~.counters.StatusCounters`.
    activity : Out(1)
        Strobe: a frame ended (complete, timed out or skipped).
    busy : Out(1)
        The link holds a request: it executes it or sends its answer.
    error : Out(1)
        Sticky: a bad frame, a framing error, a timeout or an overrun was seen.
    """

    def __init__(self, image: Image, *, mem_data_width: int, mem_addr_width: int,
                 byte_cycles: int, timeout_bytes: int = 128,
                 max_payload: int = DEFAULT_MAX_PAYLOAD,
                 clock_hz: float = 0):
        image.check()
        self._image = image
        self._encoder_seed = encoder_seed(image)
        self._mem_data_width = operator.index(mem_data_width)
        self._mem_addr_width = operator.index(mem_addr_width)
        self._byte_cycles = operator.index(byte_cycles)
        self._timeout_bytes = operator.index(timeout_bytes)
        self._max_payload = operator.index(max_payload)
        if not 1 <= self._mem_addr_width <= 32:
            raise ValueError(f"Memory address width must be 1..32 bits (the protocol sends 4 "
                             f"bytes), not {mem_addr_width!r}")
        if self._mem_data_width < 1:
            raise ValueError(f"Memory data width must be at least 1, not {mem_data_width!r}")
        if self._byte_cycles < 1:
            raise ValueError(f"Byte time must be at least one cycle, not {byte_cycles!r}")
        if not 1 <= self._timeout_bytes <= 0xFFFF:
            raise ValueError(f"Receive timeout must be 1..65535 byte times, not "
                             f"{timeout_bytes!r}")
        self._word_bytes = -(-self._mem_data_width // 8)
        if not ARGS_BYTES + self._word_bytes <= self._max_payload <= 0xFFFF:
            raise ValueError(f"Maximum payload must be {ARGS_BYTES + self._word_bytes}..65535 "
                             f"bytes (a WRITE_MEM of one word), not {max_payload!r}")
        if len(image.config.cores) > 255 or len(image.layers) > 255:
            raise ValueError(f"Core and layer counts must be at most 255, not "
                             f"{len(image.config.cores)} cores in {len(image.layers)} layers")
        if image.n_outputs * image.layers[-1].max_spikes > 0x7FFF:
            raise ValueError(f"Output events per step must be at most 32767 (a STEP answer), "
                             f"not {image.n_outputs} x {image.layers[-1].max_spikes}")
        if 255 * self._word_bytes > 0xFFFF:
            raise ValueError(f"Memory data width must be at most {8 * (0xFFFF // 255)} bits, "
                             f"not {mem_data_width!r}")
        self._hello = hello_payload(
            n_cores=len(image.config.cores), n_layers=len(image.layers),
            word_bytes=self._word_bytes, mem_data_bits=self._mem_data_width,
            mem_addr_bits=self._mem_addr_width, max_payload=self._max_payload,
            timeout_bytes=self._timeout_bytes, n_inputs=image.n_inputs,
            n_outputs=image.n_outputs, image_id=image_id(image.to_bytes()),
            features=((FEATURE_BITMAP if bitmap_bytes(image.n_inputs) <= self._max_payload
                       else 0) |
                      (FEATURE_RATE_ENCODER if self._encoder_seed is not None else 0)),
            clock_hz=min(0xFFFFFFFF, round(clock_hz)),
            run_steps=output_buffer(image, self._encoder_seed is not None)[1])
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "framing_error": In(1),
            "overrun": In(1),
            "events": Out(stream.Signature(SpikeEvent)),
            "outputs": In(stream.Signature(SpikeEvent)),
            "clear": Out(1),
            "mem": Out(MemAccessSignature(data_width=self._mem_data_width,
                                          addr_width=self._mem_addr_width, core_width=8)),
            "idle": In(1),
            "overflow": In(1),
            "steps": In(array_step_layout(image)),
            "activity": Out(1),
            "busy": Out(1),
            "error": Out(1),
            # the flash loader's verdict (docs/flash.md); a link without one is always loaded
            "loaded": In(1, init=1),
            "load_error": In(3),
        })

    @classmethod
    def for_array(cls, array: CoreArray, **kwargs) -> "HostLink":
        """A link whose memory port fits ``array``'s."""
        return cls(array.image, mem_data_width=array.mem_data_width,
                   mem_addr_width=array.mem_addr_width, **kwargs)

    @property
    def image(self) -> Image:
        return self._image

    @property
    def word_bytes(self) -> int:
        """Bytes per memory word on the wire."""
        return self._word_bytes

    @property
    def max_payload(self) -> int:
        return self._max_payload

    @property
    def timeout_bytes(self) -> int:
        return self._timeout_bytes

    @property
    def timeout_cycles(self) -> int:
        return self._byte_cycles * self._timeout_bytes

    @property
    def addr_bits(self) -> int:
        """Address bits the receiver keeps: every memory is shallower than ``2 **
        addr_bits`` words (:func:`memory_depths`), so larger addresses need not be exact."""
        return max(1, max(max(d) for d in memory_depths(self._image)).bit_length())

    @property
    def hello(self) -> bytes:
        """The HELLO response payload."""
        return self._hello

    def elaborate(self, platform):
        m = Module()
        m.submodules.executor = executor = RequestExecutor(
            self._image, mem_data_width=self._mem_data_width,
            mem_addr_width=self._mem_addr_width, max_payload=self._max_payload,
            hello=self._hello, encoder_seed=self._encoder_seed)
        # One buffer: the request's payload (the receiver's), then its answer's output events
        # (the executor's, once the receiver holds the request).
        m.submodules.receiver = receiver = FrameReceiver(
            max_payload=self._max_payload, timeout_cycles=self.timeout_cycles,
            addr_bits=self.addr_bits, buffer_bytes=executor.buffer_bytes)
        m.submodules.sender = sender = ResponseSender()
        image = self._image
        m.submodules.status = status = StatusCounters(
            status_counter_specs(image, byte_cycles=self._byte_cycles), len(image.layers),
            in_bram=status_in_bram(image.layers, image.config, image.learning),
            hello=self._hello)
        # One CRC engine: the receiver's until it holds a request, then the sender's, whose
        # answer is out before the receiver takes the next request.
        m.submodules.crc = shared = LinkCrc()
        user = Mux(receiver.o.valid, Cat(sender.crc.start, sender.crc.valid, sender.crc.data),
                   Cat(receiver.crc.start, receiver.crc.valid, receiver.crc.data))
        m.d.comb += [
            Cat(shared.port.start, shared.port.valid, shared.port.data).eq(user),
            receiver.crc.match.eq(shared.port.match),
            sender.crc.crc.eq(shared.port.crc),
        ]

        wiring.connect(m, wiring.flipped(self.rx), receiver.rx)
        wiring.connect(m, receiver.o, executor.i)
        wiring.connect(m, executor.reply, sender.i)
        # The answer's bytes pass two stream registers: the executor's byte multiplexers
        # (STATUS, HELLO, read words) end at a register, and so do the sender's (head, CRC) in
        # front of the UART. Bytes leave at the UART's pace, so the two cycles (and a byte every
        # other cycle at most) cost nothing.
        m.submodules.payload = payload = StreamRegister(PayloadByte)
        wiring.connect(m, executor.payload, payload.i)
        wiring.connect(m, payload.o, sender.payload)
        m.submodules.tx = tx = StreamRegister(unsigned(8))
        wiring.connect(m, sender.tx, tx.i)
        wiring.connect(m, tx.o, wiring.flipped(self.tx))
        # Input events leave through a stream register: the array's ready (which depends on the
        # event's address) and the executor's FSM stay a register apart. (At most an event every
        # other cycle: the array takes one in many more.) CLEAR empties it with the array; the
        # executor sees the array idle only when it is empty.
        events = StreamRegister(SpikeEvent)
        m.submodules.events = ResetInserter(executor.clear)(events)
        wiring.connect(m, executor.events, events.i)
        wiring.connect(m, events.o, wiring.flipped(self.events))
        wiring.connect(m, wiring.flipped(self.outputs), executor.outputs)
        wiring.connect(m, executor.mem, wiring.flipped(self.mem))
        m.d.comb += [
            receiver.framing_error.eq(self.framing_error),
            receiver.buf_addr.eq(executor.buf_addr),
            receiver.buf_waddr.eq(executor.buf_waddr),
            receiver.buf_wdata.eq(executor.buf_wdata),
            receiver.buf_we.eq(executor.buf_we),
            executor.buf_data.eq(receiver.buf_data),
            executor.idle.eq(self.idle & ~events.o.valid),
            executor.loaded.eq(self.loaded),
            executor.status_byte.eq(status.byte),
            status.index.eq(executor.status_index),
            status.read.eq(executor.status_read),
            status.flush.eq(executor.status_flush),
            executor.status_flushed.eq(status.flushed),
            self.clear.eq(executor.clear),
            status.clear.eq(executor.clear),
            status.overflow.eq(self.overflow),
            status.idle.eq(self.idle),
            status.not_loaded.eq(~self.loaded),
            status.load_error.eq(self.load_error),
            self.activity.eq(receiver.activity),
            self.busy.eq(receiver.o.valid),
            self.error.eq(status.error),
        ]
        # The link's strobes are registered first (no decode in front of a pre-counter's
        # carry chain), as the array registers its increments.
        strobes = {
            "crc_errors": receiver.crc_error,
            "framing_errors": self.framing_error,
            "timeouts": receiver.timeout,
            "dropped_frames": receiver.dropped | executor.refused,
            "duplicates": executor.duplicate,
            "overruns": receiver.overrun | self.overrun | executor.lost,
        }
        for name in LINK_COUNTERS:
            held = Signal(name=f"inc_{name}")
            m.d.sync += held.eq(strobes[name])
            m.d.comb += status.inc[name].eq(held)
        for name, _ in self.steps.shape():
            m.d.comb += status.inc[name].eq(self.steps[name])
        return m


def connect_array(m: Module, link: HostLink, array: CoreArray) -> None:
    """Wire a link to its array: streams, memory port, clear, idle and every counter."""
    wiring.connect(m, link.events, array.i)
    wiring.connect(m, array.o, link.outputs)
    wiring.connect(m, link.mem, array.mem)
    m.d.comb += [
        array.clear.eq(link.clear),
        link.idle.eq(array.idle),
        link.overflow.eq(array.overflow),
        link.steps.eq(array.steps),
    ]

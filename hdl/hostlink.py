"""The host link: framed, CRC-checked requests over UART byte streams, driving a core array.

The wire protocol (frames, commands, status codes, counters, timing) is docs/host-protocol.md;
``spikeforge.protocol`` is its host side.
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..image import Image
from ..protocol import (
    ARGS_BYTES,
    LAYER_COUNTERS,
    LINK_COUNTERS,
    PROTOCOL_VERSION,
    SOF_REQUEST,
    SOF_RESPONSE,
    Command,
    hello_payload,
    image_id,
    status_length,
)
from .array import COUNTER_BITS, CoreArray
from .core import MemAccessSignature, MemSpace
from .crc import Crc16
from .enums import wire_enum
from .event import ADDR_BITS, SpikeEvent

__all__ = [
    "ARGS_BYTES", "Cmd", "HostLink", "LAYER_COUNTERS", "LINK_COUNTERS", "PROTOCOL_VERSION",
    "SOF_REQUEST",
    "SOF_RESPONSE", "Status", "connect_array", "hello_payload", "image_id", "status_length",
]

_LINK_COUNTER_BITS = 16

# The protocol's enums (spikeforge.protocol) with the shape they have on the wire.
Cmd = wire_enum(Command, unsigned(8), name="Cmd")
Status = wire_enum(protocol.Status, unsigned(8))


class HostLink(wiring.Component):
    """Parse request frames from ``rx``, execute them on a core array, answer on ``tx``.

    One FSM does everything, a byte at a time: hunt for the start byte, take the header and the
    payload (into a block-RAM buffer of ``max_payload`` bytes) while a CRC runs over them, check
    the CRC residue, then execute and answer. Nothing in a frame is acted on before its CRC has
    checked. A partial frame followed by ``timeout_bytes`` byte times of silence is dropped.
    READ_MEM, WRITE_MEM and STATUS wait until the array is idle (a learning core runs its update
    sweeps after its step's ``eos``, so after a STEP's answer), except while a step is open
    (PUSH without STEP): memory requests are then refused with BUSY, STATUS answers at once.
    The last executed request's ``seq`` and command are kept: a repeat of both is answered again
    (from state that nothing changed since: a STEP's output events stay in a buffer until the
    next STEP) without being executed again. Requests are stop-and-wait: bytes that arrive
    while the link executes or answers are dropped and counted (``overruns``).

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
    idle, overflow, sops, spikes, saturations, learn_cycles, events_in, events_out,
    busy_cycles, integrate_cycles : In
        The array's status, reported by STATUS.
    activity : Out(1)
        Strobe: a frame ended (executed, rejected or timed out).
    busy : Out(1)
        The link executes a request or sends an answer.
    error : Out(1)
        Sticky: a bad frame, a framing error, a timeout or an overrun was seen.
    """

    def __init__(self, image: Image, *, mem_data_width: int, mem_addr_width: int,
                 byte_cycles: int, timeout_bytes: int = 128, max_payload: int = 256):
        image.check()
        self._image = image
        self._mem_data_width = operator.index(mem_data_width)
        self._mem_addr_width = operator.index(mem_addr_width)
        self._byte_cycles = operator.index(byte_cycles)
        self._timeout_bytes = operator.index(timeout_bytes)
        self._max_payload = operator.index(max_payload)
        if not 1 <= self._mem_addr_width <= 32:
            raise ValueError(f"memory addresses must be 1..32 bits (the protocol sends 4 "
                             f"bytes), not {mem_addr_width!r}")
        if self._mem_data_width < 1:
            raise ValueError(f"memory data width must be at least 1, not {mem_data_width!r}")
        if self._byte_cycles < 1:
            raise ValueError(f"a byte must last at least one cycle, not {byte_cycles!r}")
        if not 1 <= self._timeout_bytes <= 0xFFFF:
            raise ValueError(f"receive timeout must be 1..65535 byte times, not "
                             f"{timeout_bytes!r}")
        if not ARGS_BYTES <= self._max_payload <= 0xFFFF:
            raise ValueError(f"maximum payload must be {ARGS_BYTES}..65535 bytes, not "
                             f"{max_payload!r}")
        if len(image.config.cores) > 255 or len(image.layers) > 255:
            raise ValueError(f"the protocol counts at most 255 cores and layers, not "
                             f"{len(image.config.cores)} cores in {len(image.layers)} layers")
        if image.n_outputs > 0x7FFF:
            raise ValueError(f"a STEP answer holds at most 32767 output events, not "
                             f"{image.n_outputs}")
        self._word_bytes = -(-self._mem_data_width // 8)
        if 255 * self._word_bytes > 0xFFFF:
            raise ValueError(f"memory words of {self._mem_data_width} bits are too wide")
        self._hello = hello_payload(
            n_cores=len(image.config.cores), n_layers=len(image.layers),
            word_bytes=self._word_bytes, mem_data_bits=self._mem_data_width,
            mem_addr_bits=self._mem_addr_width, max_payload=self._max_payload,
            timeout_bytes=self._timeout_bytes, n_inputs=image.n_inputs,
            n_outputs=image.n_outputs, image_id=image_id(image.to_bytes()))
        per_layer = data.ArrayLayout(unsigned(COUNTER_BITS), len(image.layers))
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
            "sops": In(per_layer),
            "spikes": In(per_layer),
            "saturations": In(per_layer),
            "learn_cycles": In(per_layer),
            "events_in": In(unsigned(COUNTER_BITS)),
            "events_out": In(unsigned(COUNTER_BITS)),
            "busy_cycles": In(unsigned(COUNTER_BITS)),
            "integrate_cycles": In(unsigned(COUNTER_BITS)),
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
    def hello(self) -> bytes:
        """The HELLO response payload."""
        return self._hello

    def elaborate(self, platform):
        m = Module()
        image = self._image
        wb = self._word_bytes
        n_layers = len(image.layers)
        n_out = image.n_outputs
        timeout = self.timeout_cycles

        m.submodules.crc = crc = Crc16()
        m.submodules.rxbuf = rxbuf = Memory(shape=8, depth=self._max_payload, init=[])
        buf_wr = rxbuf.write_port()
        buf_rd = rxbuf.read_port()
        m.submodules.outbuf = outbuf = Memory(shape=ADDR_BITS, depth=n_out, init=[])
        out_wr = outbuf.write_port()
        out_rd = outbuf.read_port()

        # -- registers -------------------------------------------------------------------------
        seq = Signal(8)
        cmd = Signal(8)
        status = Signal(Status)
        length = Signal(16)  # request payload bytes
        resp_len = Signal(16)  # response payload bytes
        idx = Signal(16)  # byte index inside the current header / payload / trailer
        bidx = Signal(range(max(wb, 2)))  # byte inside the current word
        args = Signal(8 * ARGS_BYTES)
        a_core, a_space = args[0:8], args[8:16]
        a_addr, a_count = args[16:48], args[48:56]
        mem_addr = Signal(self._mem_addr_width)
        # Words move a byte at a time through a shift register (cheaper than byte multiplexers):
        # bytes enter at the top and leave at the bottom, little-endian first.
        word = Signal(8 * max(wb, 2))
        shifted = Cat(word[8:], buf_rd.data)
        left = Signal(16)  # words or events still to move
        out_count = Signal(range(n_out + 1))
        last_seq = Signal(8)
        last_cmd = Signal(8)
        have_last = Signal()
        open_step = Signal()  # a PUSH was executed, its STEP not yet
        timer = Signal(range(timeout + 1))
        error = Signal()
        counters = {name: Signal(_LINK_COUNTER_BITS, name=name) for name in LINK_COUNTERS}

        def bump(name):
            m.d.sync += counters[name].eq(counters[name] + 1)

        m.d.comb += self.error.eq(error)

        # -- fixed wiring ----------------------------------------------------------------------
        byte, got = self.rx.payload, self.rx.valid
        m.d.comb += self.rx.ready.eq(1)
        m.d.comb += [
            self.mem.core.eq(a_core),
            self.mem.space.eq(a_space[:MemSpace.as_shape().width]),
            self.mem.addr.eq(mem_addr),
            self.mem.wdata.eq(word[len(word) - 8 * wb:][:self._mem_data_width]),
            self.events.payload.addr.eq(word[len(word) - ADDR_BITS:]),
            buf_wr.data.eq(byte),
            buf_wr.addr.eq(idx),
            out_wr.addr.eq(out_count),
            out_wr.data.eq(self.outputs.payload.addr),
        ]
        with m.If(self.framing_error):
            bump("framing_errors")
            m.d.sync += error.eq(1)

        # The STATUS payload is read live, a byte at a time.
        status_vec = Cat(
            Const(PROTOCOL_VERSION, 8), self.overflow, self.idle, error, ~self.loaded,
            Const(0, 1), self.load_error,
            Const(n_layers, 8), Const(0, 8),
            *(counters[name] for name in LINK_COUNTERS),
            self.events_in, self.events_out, self.busy_cycles, self.integrate_cycles,
            *(getattr(self, name)[k] for name in LAYER_COUNTERS for k in range(n_layers)))
        assert len(status_vec) == 8 * status_length(n_layers)
        hello_vec = Const(int.from_bytes(self._hello, "little"), 8 * len(self._hello))
        pidx = idx  # payload byte index while answering

        def words_of(c):
            """Commands whose answer payload is memory words (not a byte vector)."""
            return (c == Cmd.READ_MEM) | (c == Cmd.STEP)

        def count_timeout():
            with m.If(self.framing_error):
                # A byte of the frame was lost: drop the frame and skip to the next silence.
                bump("dropped_frames")
                m.d.sync += timer.eq(0)
                m.next = "Discard"
            with m.Elif(got):
                m.d.sync += timer.eq(0)
            with m.Elif(timer == timeout - 1):
                bump("timeouts")
                bump("dropped_frames")
                m.d.sync += [error.eq(1), timer.eq(0)]
                m.d.comb += self.activity.eq(1)
                m.next = "Hunt"
            with m.Else():
                m.d.sync += timer.eq(timer + 1)

        def drop_bytes():
            with m.If(got | self.overrun):
                bump("overruns")
                m.d.sync += error.eq(1)

        def answer(resp_status, resp_bytes):
            m.d.sync += [status.eq(resp_status), resp_len.eq(resp_bytes), idx.eq(0)]
            if resp_status != Status.OK:  # a rejected frame: nothing was done
                bump("dropped_frames")
                m.d.sync += error.eq(1)
            m.next = "TxHeader"

        with m.FSM() as fsm:
            # -- receive ---------------------------------------------------------------------
            with m.State("Hunt"):
                m.d.comb += crc.init.eq(1)
                with m.If(got & (byte == SOF_REQUEST)):
                    m.d.sync += [idx.eq(0), timer.eq(0)]
                    m.next = "Header"
                with m.If(self.overrun):
                    bump("overruns")
                    m.d.sync += error.eq(1)
            with m.State("Header"):
                m.d.comb += [crc.data.eq(byte), crc.en.eq(got)]
                full_len = Cat(length[:8], byte)
                with m.If(got):
                    m.d.sync += idx.eq(idx + 1)
                    with m.Switch(idx):
                        with m.Case(0):
                            m.d.sync += seq.eq(byte)
                        with m.Case(1):
                            m.d.sync += cmd.eq(byte)
                        with m.Case(2):
                            m.d.sync += length[:8].eq(byte)
                        with m.Case(3):
                            m.d.sync += [length[8:].eq(byte), idx.eq(0)]
                            with m.If(full_len > self._max_payload):
                                # The length cannot be trusted, so neither can the frame's end:
                                # drop everything up to the next silence.
                                bump("dropped_frames")
                                m.d.sync += [error.eq(1), timer.eq(0)]
                                m.next = "Discard"
                            with m.Elif(full_len == 0):
                                m.next = "Trailer"
                            with m.Else():
                                m.next = "Payload"
                count_timeout()
            with m.State("Payload"):
                m.d.comb += [crc.data.eq(byte), crc.en.eq(got), buf_wr.en.eq(got)]
                with m.If(got):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx < ARGS_BYTES):
                        m.d.sync += args.word_select(idx[:3], 8).eq(byte)
                    with m.If(idx == length - 1):
                        m.d.sync += idx.eq(0)
                        m.next = "Trailer"
                count_timeout()
            with m.State("Trailer"):
                m.d.comb += [crc.data.eq(byte), crc.en.eq(got)]
                with m.If(got):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.next = "Check"
                count_timeout()
            with m.State("Discard"):
                with m.If(got):
                    m.d.sync += timer.eq(0)
                with m.Elif(timer == timeout - 1):
                    m.d.comb += self.activity.eq(1)
                    m.next = "Hunt"
                with m.Else():
                    m.d.sync += timer.eq(timer + 1)
            with m.State("Check"):
                # The CRC over the frame and its own CRC (sent high byte first) leaves 0.
                m.d.comb += self.activity.eq(1)
                drop_bytes()
                with m.If(crc.crc == 0):
                    m.next = "Settle"
                with m.Else():
                    bump("crc_errors")
                    answer(Status.CRC, 0)

            # -- decide ----------------------------------------------------------------------
            with m.State("Settle"):
                # Memory and counters are read and written between steps only: wait for the
                # array (a learning core's update sweeps, or deeper layers, still at work after
                # the output layer's eos). While a PUSH holds a step open the array never gets
                # idle: go on, and Dispatch refuses memory requests with BUSY.
                drop_bytes()
                between = (cmd == Cmd.READ_MEM) | (cmd == Cmd.WRITE_MEM) | (cmd == Cmd.STATUS)
                with m.If(self.idle | open_step | ~between):
                    m.next = "Dispatch"
            with m.State("Dispatch"):
                drop_bytes()
                duplicate = have_last & (seq == last_seq) & (cmd == last_cmd)
                bad_arg = (a_core >= len(image.config.cores)) | (a_space >= len(MemSpace))
                m.d.sync += [mem_addr.eq(a_addr), bidx.eq(0)]
                read_len = a_count * wb
                step_len = out_count * 2
                with m.If(duplicate):
                    bump("duplicates")
                    with m.Switch(cmd):
                        with m.Case(Cmd.READ_MEM):
                            answer(Status.OK, read_len)
                        with m.Case(Cmd.STEP):
                            answer(Status.OK, step_len)
                        with m.Case(Cmd.STATUS):
                            answer(Status.OK, status_length(n_layers))
                        with m.Default():
                            answer(Status.OK, 0)
                with m.Else():
                    def execute():
                        m.d.sync += [last_seq.eq(seq), last_cmd.eq(cmd), have_last.eq(1),
                                     status.eq(Status.OK), idx.eq(0)]

                    with m.Switch(cmd):
                        with m.Case(Cmd.HELLO):
                            with m.If(length != 0):
                                answer(Status.LENGTH, 0)
                            with m.Else():
                                # HELLO starts a session: the next request is never a repeat.
                                m.d.sync += have_last.eq(0)
                                answer(Status.OK, len(self._hello))
                        with m.Case(Cmd.STATUS):
                            with m.If(length != 0):
                                answer(Status.LENGTH, 0)
                            with m.Else():
                                execute()
                                answer(Status.OK, status_length(n_layers))
                        with m.Case(Cmd.CLEAR):
                            with m.If(length != 0):
                                answer(Status.LENGTH, 0)
                            with m.Else():
                                execute()
                                m.d.sync += open_step.eq(0)
                                m.next = "ClearGo"
                        with m.Case(Cmd.READ_MEM):
                            with m.If(length != ARGS_BYTES):
                                answer(Status.LENGTH, 0)
                            with m.Elif(bad_arg):
                                answer(Status.ARG, 0)
                            with m.Elif(~self.idle):
                                answer(Status.BUSY, 0)
                            with m.Else():
                                execute()
                                answer(Status.OK, read_len)
                        with m.Case(Cmd.WRITE_MEM):
                            with m.If(length != ARGS_BYTES + read_len):
                                answer(Status.LENGTH, 0)
                            with m.Elif(bad_arg):
                                answer(Status.ARG, 0)
                            with m.Elif(~self.idle):
                                answer(Status.BUSY, 0)
                            with m.Else():
                                execute()
                                m.d.sync += [left.eq(a_count), idx.eq(ARGS_BYTES)]
                                with m.If(a_count == 0):
                                    answer(Status.OK, 0)
                                with m.Else():
                                    m.next = "Fetch"
                        with m.Case(Cmd.PUSH, Cmd.STEP):
                            with m.If(length[0]):
                                answer(Status.LENGTH, 0)
                            with m.Elif(~self.loaded):
                                answer(Status.NOT_LOADED, 0)
                            with m.Else():
                                execute()
                                m.d.sync += [left.eq(length[1:]),
                                             open_step.eq(cmd == Cmd.PUSH)]
                                with m.If(length != 0):
                                    m.next = "Fetch"
                                with m.Elif(cmd == Cmd.STEP):
                                    m.next = "Eos"
                                with m.Else():
                                    answer(Status.OK, 0)
                        with m.Default():
                            answer(Status.UNKNOWN_CMD, 0)

            # -- execute: words / events from the payload buffer -----------------------------
            with m.State("Fetch"):
                drop_bytes()
                m.d.comb += buf_rd.addr.eq(idx)
                m.d.sync += idx.eq(idx + 1)
                m.next = "Shift"
            with m.State("Shift"):
                drop_bytes()
                last_byte = bidx == (wb - 1 if wb > 1 else 0)
                m.d.sync += [word.eq(shifted), bidx.eq(bidx + 1)]
                with m.If(cmd == Cmd.WRITE_MEM):
                    with m.If(last_byte):
                        m.d.sync += bidx.eq(0)
                        m.next = "Issue"
                    with m.Else():
                        m.next = "Fetch"
                with m.Elif(bidx == 1):
                    m.d.sync += bidx.eq(0)
                    m.next = "Issue"
                with m.Else():
                    m.next = "Fetch"
            with m.State("Issue"):
                drop_bytes()
                writing = cmd == Cmd.WRITE_MEM
                m.d.comb += [self.mem.we.eq(writing), self.events.valid.eq(~writing)]
                done = Mux(writing, self.mem.ready, self.events.ready)
                with m.If(done):
                    m.d.sync += [left.eq(left - 1), mem_addr.eq(mem_addr + 1)]
                    with m.If(left != 1):
                        m.next = "Fetch"
                    with m.Elif(cmd == Cmd.STEP):
                        m.next = "Eos"
                    with m.Else():
                        answer(Status.OK, 0)
            with m.State("Eos"):
                drop_bytes()
                m.d.comb += [self.events.valid.eq(1), self.events.payload.eos.eq(1)]
                with m.If(self.events.ready):
                    m.d.sync += out_count.eq(0)
                    m.next = "Collect"
            with m.State("Collect"):
                drop_bytes()
                m.d.comb += self.outputs.ready.eq(1)
                with m.If(self.outputs.valid):
                    with m.If(self.outputs.payload.eos):
                        answer(Status.OK, out_count * 2)
                    with m.Elif(out_count == n_out):
                        # More spikes than neurons: cannot happen with a correct array; counted
                        # rather than silently lost.
                        bump("overruns")
                        m.d.sync += error.eq(1)
                    with m.Else():
                        m.d.comb += out_wr.en.eq(1)
                        m.d.sync += out_count.eq(out_count + 1)
            with m.State("ClearGo"):
                drop_bytes()
                m.d.comb += self.clear.eq(1)
                m.next = "ClearWait"
            with m.State("ClearWait"):
                drop_bytes()
                with m.If(self.idle):
                    answer(Status.OK, 0)

            # -- answer ----------------------------------------------------------------------
            with m.State("TxHeader"):
                drop_bytes()
                header = Signal(8)
                with m.Switch(idx):
                    with m.Case(0):
                        m.d.comb += header.eq(SOF_RESPONSE)
                    with m.Case(1):
                        m.d.comb += header.eq(seq)
                    with m.Case(2):
                        m.d.comb += header.eq(cmd)
                    with m.Case(3):
                        m.d.comb += header.eq(status)
                    with m.Case(4):
                        m.d.comb += header.eq(resp_len[:8])
                    with m.Default():
                        m.d.comb += header.eq(resp_len[8:])
                m.d.comb += [
                    self.tx.payload.eq(header), self.tx.valid.eq(1),
                    crc.data.eq(header), crc.init.eq(idx == 0),
                    crc.en.eq(self.tx.ready & (idx != 0)),
                ]
                with m.If(self.tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 5):
                        m.d.sync += [idx.eq(0), bidx.eq(0)]
                        with m.If(resp_len == 0):
                            m.next = "TxCrc"
                        with m.Elif(cmd == Cmd.READ_MEM):
                            m.next = "RdReq"
                        with m.Elif(cmd == Cmd.STEP):
                            m.d.sync += left.eq(0)
                            m.next = "OutReq"
                        with m.Else():
                            m.next = "TxPayload"
            with m.State("RdReq"):
                drop_bytes()
                m.d.comb += self.mem.re.eq(1)
                with m.If(self.mem.ready):
                    m.next = "RdWait"
            with m.State("RdWait"):
                drop_bytes()
                with m.If(self.mem.rvalid):
                    m.d.sync += [word.eq(self.mem.rdata), mem_addr.eq(mem_addr + 1)]
                    m.next = "TxPayload"
            with m.State("OutReq"):
                drop_bytes()
                m.d.comb += out_rd.addr.eq(left)  # here: index of the next output event
                m.d.sync += left.eq(left + 1)
                m.next = "OutLatch"
            with m.State("OutLatch"):
                drop_bytes()
                m.d.sync += word.eq(out_rd.data)
                m.next = "TxPayload"
            with m.State("TxPayload"):
                drop_bytes()
                value = Signal(8)
                with m.Switch(cmd):
                    with m.Case(Cmd.HELLO):
                        m.d.comb += value.eq(hello_vec.word_select(pidx, 8))
                    with m.Case(Cmd.STATUS):
                        m.d.comb += value.eq(status_vec.word_select(pidx, 8))
                    with m.Default():
                        m.d.comb += value.eq(word[:8])
                m.d.comb += [self.tx.payload.eq(value), self.tx.valid.eq(1),
                             crc.data.eq(value), crc.en.eq(self.tx.ready)]
                word_end = Mux(cmd == Cmd.STEP, bidx == 1, bidx == wb - 1)
                with m.If(self.tx.ready):
                    m.d.sync += [idx.eq(idx + 1), bidx.eq(bidx + 1), word.eq(shifted)]
                    with m.If(idx == resp_len - 1):
                        m.d.sync += idx.eq(0)
                        m.next = "TxCrc"
                    with m.Elif(words_of(cmd) & word_end):
                        m.d.sync += bidx.eq(0)
                        with m.If(cmd == Cmd.READ_MEM):
                            m.next = "RdReq"
                        with m.Else():
                            m.next = "OutReq"
            with m.State("TxCrc"):
                drop_bytes()
                m.d.comb += [self.tx.payload.eq(crc.crc.word_select(~idx[0], 8)),
                             self.tx.valid.eq(1)]
                with m.If(self.tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "Hunt"
        receiving = Cat(*(fsm.ongoing(state)
                          for state in ("Hunt", "Header", "Payload", "Trailer", "Discard")))
        m.d.comb += self.busy.eq(~receiving.any())
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
        link.sops.eq(array.sops),
        link.spikes.eq(array.spikes),
        link.saturations.eq(array.saturations),
        link.learn_cycles.eq(array.learn_cycles),
        link.events_in.eq(array.events_in),
        link.events_out.eq(array.events_out),
        link.busy_cycles.eq(array.busy_cycles),
        link.integrate_cycles.eq(array.integrate_cycles),
    ]

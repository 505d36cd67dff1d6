"""STATUS's counters in one block RAM: small pre-counters, swept into it a byte at a time.

The STATUS payload (docs/host-protocol.md) holds six 16-bit link counters and 4 + 4 * n_layers
24-bit array counters. As flip-flop counters they took a logic cell a bit, and the payload's
byte multiplexer over them about 0.65 LUT4 a bit more (issue 10). Here each counter is a byte
range of one 8-bit-wide memory laid out as the payload itself, and a narrow *pre-counter* of
its own:

- every cycle a counter's increment (``inc``, registered upstream) adds to its pre-counter;
- a sweep walks the payload's counter bytes, one a cycle: a counter ahead of a counter's first
  byte it takes the pre-counter (plus that cycle's increment) as the addend and zeroes it; at
  the first byte it adds the addend to the byte read from the memory, writes the byte back and
  carries into the next byte, and so on to the counter's last byte, whose carry is dropped:
  the counter wraps as the flip-flop one did;
- a pre-counter is as wide as the most its increments add up to between two visits
  (``CounterSpec.bound`` over ``window`` cycles), so none overflows.

A counter's value is its bytes plus its addend in flight plus its pre-counter. STATUS is
exact: the executor asks for a flush (``flush``) and reads once ``flushed`` says two whole
sweeps began after the request (the first counter's addend may have been taken before it), so
every increment before it is in the memory. ``clear`` (CLEAR) zeroes the counters marked
``cleared`` (the array's): their pre-counters at once, their bytes in the first whole sweep
of their range after it (until then their bytes are neither written nor flushed).

The payload is read a byte at a time (``read`` with ``index``): ``byte`` holds it from the
next cycle on. A read takes the memory's port for that cycle; the sweep waits a cycle. HELLO's
payload, a constant, is read the same way from index ``hello_base`` on: in the memory, its
initial contents past the counters' bytes (the executor's table of its own cost about 30
logic cells).

Where the mapping leaves no block RAM for it (``compiler.mapper.status_in_bram``: the digits
network with a three-factor readout on the UP5K takes all 30), the same component keeps each
counter in a register of its full width and reads the payload through a byte multiplexer, as
the link did before: the same contract, about 200 logic cells more.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..protocol import (
    ARRAY_COUNTERS,
    COUNTER_BYTES,
    LAYER_COUNTERS,
    LINK_COUNTER_BITS,
    LINK_COUNTERS,
    PROTOCOL_VERSION,
    status_length,
)
from .compare import at_least, below

__all__ = ["CounterSpec", "StatusCounters", "array_step_layout", "hello_base",
           "status_counter_specs", "HEADER_BYTES"]

HEADER_BYTES = 4  # version, flags, n_layers, reserved


@dataclass(frozen=True)
class CounterSpec:
    """One STATUS counter: its name (the field of ``inc``), its bytes in the payload, and how
    fast it can move: ``terms`` of (most added at once, fewest cycles between two such adds);
    ``cleared`` by CLEAR (the array's) or only by reset (the link's); ``error``: it sets the
    sticky link-error flag."""

    name: str
    nbytes: int
    terms: tuple[tuple[int, int], ...] = ((1, 1),)
    cleared: bool = True
    error: bool = False

    @property
    def step_max(self) -> int:
        """The most it adds in one cycle."""
        return sum(most for most, _ in self.terms)

    @property
    def step_bits(self) -> int:
        """Width of its increment (``inc``, ``CoreArray.steps``)."""
        return self.step_max.bit_length()

    def bound(self, window: int) -> int:
        """The most it adds in any ``window`` consecutive cycles."""
        return sum((window // gap + 1) * most for most, gap in self.terms)


# How often the link's counters move (hdl.hostlink.HostLink's strobes), in UART byte times:
# each source at most once per frame or per received byte, and a byte takes at least 9.5 bit
# times from one stop bit to the next (hdl.uart.UartRx), so at most once per half a byte
# time. `dropped_frames` has two sources (the receiver's drops and the executor's refusals);
# `overruns` counts the executor's lost output events too, which may come every cycle.
LINK_SOURCES = {"crc_errors": 1, "framing_errors": 1, "timeouts": 1, "dropped_frames": 2,
                "duplicates": 1}


def hello_base(n_layers: int) -> int:
    """Where HELLO's payload starts in a :class:`StatusCounters` table: the power of two at
    or above the STATUS payload's length."""
    return _after(status_length(n_layers))


def _after(length: int) -> int:
    """The power of two at or above ``length`` bytes (``hello_base``)."""
    return 1 << (length - 1).bit_length()


def status_counter_specs(image, *, byte_cycles: int = 2) -> list[CounterSpec]:
    """The counters of `image`'s STATUS payload, in payload order (docs/host-protocol.md): the
    link's, the array's, then per layer. The link's move at most once per half a UART byte
    of ``byte_cycles`` cycles a source (``LINK_SOURCES``; 2, the default: any cycle),
    `overruns` any cycle. A dense core adds its neurons' operations once per input event (an
    event takes ``groups`` cycles), a convolution core up to its lanes a cycle; saturations
    count a flag a core (two with a current); learning a cycle a core."""
    gap = max(1, operator.index(byte_cycles) // 2)
    specs = [CounterSpec(name, LINK_COUNTER_BITS // 8,
                         ((1, gap),) * LINK_SOURCES[name] if name in LINK_SOURCES else ((1, 1),),
                         cleared=False, error=name != "duplicates") for name in LINK_COUNTERS]
    specs += [CounterSpec(name, COUNTER_BYTES) for name in ARRAY_COUNTERS]
    cores = image.config.cores
    for name in LAYER_COUNTERS:
        for index, layer in enumerate(image.layers):
            mine = [core for core in cores if core.layer == index]
            if name == "sops":
                terms = tuple((core.lanes, 1) if layer.conv is not None
                              else (core.neurons, core.groups) for core in mine)
            elif name == "spikes":
                terms = ((1, 1),)
            elif name == "saturations":
                terms = (((3 if layer.current_based else 1) * len(mine), 1),)
            else:  # learn_cycles
                terms = ((len(mine), 1),) if image.learning_of(index) is not None else ()
            specs.append(CounterSpec(f"{name}_{index}", COUNTER_BYTES, terms))
    assert HEADER_BYTES + sum(s.nbytes for s in specs) == status_length(len(image.layers))
    return specs


def array_step_layout(image) -> data.StructLayout:
    """The array's counter increments, one field a counter of `image` (``CoreArray.steps``),
    each as wide as the most it adds in a cycle."""
    return data.StructLayout({spec.name: spec.step_bits
                              for spec in status_counter_specs(image) if spec.cleared})


class StatusCounters(wiring.Component):
    """The STATUS payload (docs/host-protocol.md): its counters in a block RAM (module
    docstring), its header live.

    Members
    -------
    inc : In(StructLayout)
        Each counter's increment this cycle (``specs``' names).
    clear : In(1)
        Zero the ``cleared`` counters (a cycle or more).
    flush : In(1)
        Held high: every increment before it goes to the memory; ``flushed`` says when.
    flushed : Out(1)
    read : In(1)
        Read byte ``index`` of the payload: ``byte`` from the next cycle on, held.
    index : In(range(status_length))
    byte : Out(8)
    overflow, idle, not_loaded : In(1)
    load_error : In(3)
    error : Out(1)
        Sticky: a counter marked ``error`` moved.
    """

    def __init__(self, specs: list[CounterSpec], n_layers: int, *, in_bram: bool = True,
                 hello: bytes = b""):
        self._specs = list(specs)
        self._n_layers = operator.index(n_layers)
        self._in_bram = bool(in_bram)
        self._length = HEADER_BYTES + sum(s.nbytes for s in self._specs)
        self._hello = bytes(hello)
        self._hello_base = _after(self._length)
        # the table's bytes: the payload, then (with `hello`) HELLO's from hello_base on
        self._table_length = self._hello_base + len(self._hello) if hello else self._length
        # A counter is visited once a sweep; the sweep loses a cycle to each read (at most one
        # in three cycles), and a CLEAR can hold a cleared counter's bytes for one more sweep:
        # between two visits at most 2 * 1.5 sweeps pass.
        self._window = 3 * (self._length - HEADER_BYTES) + 4
        super().__init__({
            "inc": In(data.StructLayout({s.name: s.step_bits for s in specs})),
            "clear": In(1),
            "flush": In(1),
            "flushed": Out(1),
            "read": In(1),
            "index": In(range(self._table_length)),
            "byte": Out(8),
            "overflow": In(1),
            "idle": In(1),
            "not_loaded": In(1),
            "load_error": In(3),
            "error": Out(1),
        })

    @property
    def in_bram(self) -> bool:
        """The counters in a block RAM (module docstring), or (False) each a register of its
        full width, the payload's bytes through a multiplexer: where the mapping leaves no
        block RAM for them (``compiler.mapper.status_in_bram``)."""
        return self._in_bram

    @property
    def length(self) -> int:
        return self._length

    @property
    def hello_base(self) -> int:
        """The index of HELLO's first byte (``hello_base(n_layers)``)."""
        return self._hello_base

    @property
    def window(self) -> int:
        """Cycles between two visits of a counter, at most."""
        return self._window

    def pre_bits(self, spec: CounterSpec) -> int:
        """Width of `spec`'s pre-counter."""
        return spec.bound(self._window).bit_length() if spec.terms else 0

    def _header(self) -> Value:
        return Cat(Const(PROTOCOL_VERSION, 8), self.overflow, self.idle, self.error,
                   self.not_loaded, Const(0, 1), self.load_error,
                   Const(self._n_layers, 8), Const(0, 8))

    def _registers(self, m: Module) -> None:
        """Each counter a register, the payload a byte multiplexer (``in_bram`` False)."""
        values = []
        for spec in self._specs:
            value = Signal(8 * spec.nbytes, name=f"count_{spec.name}")
            inc = self.inc[spec.name]
            m.d.sync += value.eq(Mux(self.clear, 0, value + inc) if spec.cleared
                                 else value + inc)
            values.append(value)
        table = [self._header(), *values]
        if self._hello:
            table += [Const(0, 8 * (self._hello_base - self._length)),
                      Const(int.from_bytes(self._hello, "little"), 8 * len(self._hello))]
        with m.If(self.read):
            m.d.sync += self.byte.eq(Cat(*table).word_select(self.index, 8))
        m.d.comb += self.flushed.eq(self.flush)  # (nothing waits)

    def elaborate(self, platform):
        m = Module()
        for spec in self._specs:
            if spec.error:
                with m.If(self.inc[spec.name] != 0):
                    m.d.sync += self.error.eq(1)
        if not self._in_bram:
            self._registers(m)
            return m
        specs, first_byte = self._specs, HEADER_BYTES
        n = len(specs)

        # -- pre-counters -----------------------------------------------------------------
        pres, incs, flush_k = [], [], []
        for spec in specs:
            pre = Signal(self.pre_bits(spec), name=f"pre_{spec.name}")
            inc = self.inc[spec.name]
            take = Signal(name=f"take_{spec.name}")
            zero = take | self.clear if spec.cleared else take
            m.d.sync += pre.eq(Mux(zero, 0, pre + inc))
            pres.append(pre)
            incs.append(inc)
            flush_k.append(take)

        # -- the sweep: issue (read) a byte, then add and write it back ---------------------
        mem = Memory(shape=8, depth=self._table_length,
                     init=[0] * self._hello_base + list(self._hello) if self._hello else [])
        m.submodules.mem = mem
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))
        addr = Signal(range(self._length), init=first_byte)
        k = Signal(range(max(n, 2)))  # the counter of `addr`
        k_next = Signal(range(max(n, 2)), init=1 % n)  # the one after it
        j = Signal(2)  # its byte
        widths = Array(Const(s.nbytes - 1, 2) for s in specs)
        last = j == widths[k]
        # The link's counters come first, the cleared ones after them: counter k is cleared
        # when k >= kept.
        kept = sum(not s.cleared for s in specs)  # the first cleared counter's index
        first_cleared = first_byte + sum(s.nbytes for s in specs if not s.cleared)
        assert all(not s.cleared for s in specs[:kept]) and all(s.cleared for s in specs[kept:])
        k_cleared = at_least(k, kept)
        pending = Signal()  # a CLEAR waits for the cleared range's next sweep
        zeroing = Signal()  # this sweep of the cleared range writes from zero
        with m.If(self.clear):
            m.d.sync += pending.eq(1)
        go = ~self.read
        # Registers kept beside `addr` and `k_next`: whether `addr` is the first byte, or the
        # cleared range's first, and whether `k_next` is a cleared counter after the first one.
        # The pre-counters' takes read them, not compares of `addr` (that path, into every
        # pre-counter, limited the UP5K builds: 64-40-24-10 40.7 -> 43.1 MHz).
        at_start = Signal(init=1)
        at_cleared = Signal(init=first_byte == first_cleared)
        next_cleared = Signal(init=(1 % n) > kept)
        zero_now = zeroing | (pending & at_cleared)
        skip_now = k_cleared & pending & ~at_cleared
        addend_bits = max([self.pre_bits(s) for s in specs] + [1]) + 1
        # The addend is taken ahead: at the issue of a counter's first byte, the next
        # counter's pre-counter and increment are selected (`sel`, `sel_inc`: the multiplexer
        # over every counter ends at registers) and it restarts from zero; their sum (`addend`)
        # is ready when that counter's first byte is added, a counter (two bytes or more)
        # later. A CLEAR in between makes the counter skipped: the addend is dropped with it.
        pending_after = self.clear | (pending & ~at_cleared)  # as it will be at the next issue
        skip_next = next_cleared & pending_after
        sel = Signal(addend_bits - 1)
        sel_inc = Signal(max([s.step_bits for s in specs] + [1]))
        addend = Signal(addend_bits)
        m.d.sync += addend.eq(sel + sel_inc)
        # (an addend taken in or before a CLEAR's cycle is stale: a cleared counter drops it)
        stale = Signal()
        # stage 1: the byte read, and what to add to it
        v1, last1, first1, skip1, zero1, drop1 = (Signal(name=f"{x}1") for x in
                                                  ("v", "last", "first", "skip", "zero", "drop"))
        a1 = Signal.like(addr)
        m.d.sync += v1.eq(go)
        m.d.comb += [rd.addr.eq(Mux(go, addr, self.index)), rd.en.eq(1)]
        with m.If(self.clear):
            m.d.sync += stale.eq(1)
        with m.If(go):
            m.d.sync += [a1.eq(addr), last1.eq(last), first1.eq(j == 0), skip1.eq(skip_now),
                         zero1.eq(zero_now & k_cleared), drop1.eq(stale & k_cleared)]
            with m.If(j == 0):
                m.d.sync += [sel.eq(Array(pres)[k_next]), sel_inc.eq(Array(incs)[k_next])]
                with m.If(~skip_next):
                    m.d.sync += stale.eq(self.clear)
                for kk, take in enumerate(flush_k):
                    m.d.comb += take.eq((k_next == kk) & ~skip_next)
            wrap = addr == self._length - 1
            with m.If(last):
                m.d.sync += [j.eq(0), k.eq(k_next), k_next.eq(Mux(k_next == n - 1, 0, k_next + 1)),
                             next_cleared.eq(at_least(k_next, kept) & (k_next != n - 1)),
                             addr.eq(Mux(wrap, first_byte, addr + 1)),
                             at_start.eq(wrap),
                             at_cleared.eq(Mux(wrap, first_byte == first_cleared,
                                               addr == first_cleared - 1))]
            with m.Else():
                m.d.sync += [j.eq(j + 1), addr.eq(addr + 1), at_start.eq(0),
                             at_cleared.eq(addr == first_cleared - 1)]
            with m.If(pending & at_cleared & ~self.clear):
                m.d.sync += [pending.eq(0), zeroing.eq(1)]
            with m.If(at_start):
                m.d.sync += zeroing.eq(0)
        # stage 2: add and write back; the carry waits for the counter's next byte
        carry = Signal(addend_bits - 7)
        total = Signal(addend_bits + 1)
        m.d.comb += [
            total.eq(Mux(zero1, 0, rd.data) + Mux(first1, Mux(drop1, 0, addend), carry)),
            wr.addr.eq(a1),
            wr.data.eq(total[:8]),
            wr.en.eq(v1 & ~skip1),
        ]
        with m.If(v1):
            m.d.sync += carry.eq(Mux(last1, 0, total[8:]))

        # -- flush: two whole sweeps that began after the request (the first counter's addend
        # may have been taken before it) ------------------------------------------------------
        phase = Signal(2)
        with m.If(~self.flush):
            m.d.sync += phase.eq(0)
        with m.Elif(go & at_start & (phase != 3)):
            m.d.sync += phase.eq(phase + 1)
        m.d.comb += self.flushed.eq((phase == 3) & ~pending)

        # -- the reader ---------------------------------------------------------------------
        header = self._header()
        rd1, head1 = Signal(), Signal()
        head_byte, held = Signal(8), Signal(8)
        m.d.sync += [rd1.eq(self.read), head1.eq(below(self.index, HEADER_BYTES)),
                     head_byte.eq(header.word_select(self.index[:2], 8))]
        m.d.comb += self.byte.eq(Mux(rd1, Mux(head1, head_byte, rd.data), held))
        m.d.sync += held.eq(self.byte)
        return m

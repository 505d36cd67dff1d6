"""The host link's components alone, in the Amaranth simulator: the frame receiver and the
response sender against the host side's frames (CRC by ``binascii.crc_hqx``), the request
checker against the status rules of docs/host-protocol.md written out here, the stream register
of its answer bytes and input events against its stream. The STATUS payload and its counters
are tests/test_hdl_counters.py; the composition (HostLink with a CoreArray) is
tests/test_hdl_hostlink.py."""

import binascii
import itertools

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import protocol
from spikeforge.hdl.hostlink import (
    FrameReceiver,
    LinkCrc,
    RequestChecker,
    ResponseSender,
    memory_depths,
)
from spikeforge.hdl.skid import StreamRegister
from spikeforge.protocol import ARGS_BYTES, Command, MemSpace, Status

from .strategies import plastic_image, random_image
from .test_hdl_neuron import pass_through


def run(dut, bench, *, clock=True):
    top = dut
    if hasattr(dut, "crc"):  # the receiver and the sender use a CRC engine of their own here
        top = Module()
        top.submodules.dut = dut
        top.submodules.crc = engine = LinkCrc()
        wiring.connect(top, dut.crc, engine.port)
    sim = Simulator(top)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


# -- ResponseSender ------------------------------------------------------------------------------

@settings(deadline=None, max_examples=30)
@given(answers=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255),
                                  st.integers(0, 255), st.binary(max_size=24)),
                        min_size=1, max_size=3),
       tx_ready=st.lists(st.booleans(), min_size=1, max_size=5),
       offer=st.lists(st.booleans(), min_size=1, max_size=5))
def test_sender_frames_are_the_protocols(answers, tx_ready, offer):
    """Each answer goes out as protocol.encode_response frames it (CRC-16/CCITT-FALSE as
    binascii computes it), under backpressure and gaps in the payload; the head is taken in
    the cycle after the last CRC byte."""
    dut = ResponseSender()
    sent = []

    async def bench(ctx):
        valid = itertools.cycle(offer + [True])
        for seq, cmd, status, payload in answers:
            # the UART's backpressure pattern from each answer's start, then ready: two
            # periodic patterns could stay in anti-phase forever (no transfer ever)
            ready = itertools.chain(tx_ready * 3, itertools.repeat(True))
            ctx.set(dut.i.payload, {"seq": seq, "cmd": cmd, "status": status,
                                    "length": len(payload)})
            ctx.set(dut.i.valid, 1)
            frame, k = bytearray(), 0
            for _ in range(20 * (len(payload) + 10)):
                ctx.set(dut.tx.ready, next(ready))
                ctx.set(dut.payload.valid, k < len(payload) and next(valid))
                ctx.set(dut.payload.payload, {"data": payload[k] if k < len(payload) else 0,
                                              "last": k == len(payload) - 1})
                if ctx.get(dut.tx.valid) and ctx.get(dut.tx.ready):
                    frame.append(ctx.get(dut.tx.payload))
                if ctx.get(dut.payload.valid) and ctx.get(dut.payload.ready):
                    k += 1
                done = ctx.get(dut.i.ready)
                # the head goes once the frame is out: nothing more is offered then
                assert not (done and ctx.get(dut.tx.valid))
                await ctx.tick()
                if done:
                    break
            else:
                raise AssertionError("the answer never went out")
            ctx.set(dut.i.valid, 0)
            sent.append(bytes(frame))
            await ctx.tick()

    run(dut, bench)
    for frame, (seq, cmd, status, payload) in zip(sent, answers, strict=True):
        assert frame == protocol.encode_response(seq, cmd, status, payload)
        assert binascii.crc_hqx(frame[1:-2], 0xFFFF) == int.from_bytes(frame[-2:], "big")


# -- FrameReceiver -------------------------------------------------------------------------------

TIMEOUT = 12  # cycles of silence that end a partial frame


class Line:
    """Drives a FrameReceiver's ``rx`` a byte per ``gap`` cycles and records what it says."""

    def __init__(self, dut):
        self.dut = dut
        self.strobes = {name: 0 for name in ("crc_error", "timeout", "dropped", "overrun",
                                             "activity")}

    async def tick(self, ctx, n=1):
        for _ in range(n):
            for name in self.strobes:
                self.strobes[name] += ctx.get(getattr(self.dut, name))
            await ctx.tick()

    async def send(self, ctx, data, *, gap=2, framing_error_at=None):
        for k, byte in enumerate(data):
            if k == framing_error_at:
                ctx.set(self.dut.framing_error, 1)
            else:
                ctx.set(self.dut.rx.payload, byte)
                ctx.set(self.dut.rx.valid, 1)
            await self.tick(ctx)
            ctx.set(self.dut.rx.valid, 0)
            ctx.set(self.dut.framing_error, 0)
            await self.tick(ctx, gap - 1)

    async def take(self, ctx, *, within=20):
        """The held request (head fields and payload read from the buffer); takes it."""
        for _ in range(within):
            if ctx.get(self.dut.o.valid):
                break
            await self.tick(ctx)
        else:
            return None
        head = {name: ctx.get(getattr(self.dut.o.payload, name))
                for name in ("seq", "cmd", "length", "core", "space", "addr", "count", "crc_ok")}
        payload = bytearray()
        for k in range(head["length"]):
            ctx.set(self.dut.buf_addr, k)
            await self.tick(ctx)
            payload.append(ctx.get(self.dut.buf_data))
        ctx.set(self.dut.o.ready, 1)
        await self.tick(ctx)
        ctx.set(self.dut.o.ready, 0)
        head["payload"] = bytes(payload)
        return head


@settings(deadline=None, max_examples=25)
@given(requests=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255),
                                   st.binary(max_size=20)), min_size=1, max_size=3),
       gap=st.integers(1, 3), addr_bits=st.sampled_from([32, 12, 5]))
def test_receiver_takes_the_protocols_frames(requests, gap, addr_bits):
    dut = FrameReceiver(max_payload=20, timeout_cycles=TIMEOUT, addr_bits=addr_bits)
    got = []

    async def bench(ctx):
        line = Line(dut)
        for seq, cmd, payload in requests:
            await line.send(ctx, b"\x00\x13" + protocol.encode_request(seq, cmd, payload),
                            gap=gap)  # garbage before the start byte is skipped
            got.append(await line.take(ctx))
        assert line.strobes == {"crc_error": 0, "timeout": 0, "dropped": 0, "overrun": 0,
                                "activity": len(requests)}

    run(dut, bench)
    for head, (seq, cmd, payload) in zip(got, requests, strict=True):
        args = payload[:ARGS_BYTES].ljust(ARGS_BYTES, b"\x00")
        assert head is not None
        assert (head["seq"], head["cmd"], head["length"], head["payload"], head["crc_ok"]) == (
            seq, cmd, len(payload), payload, 1)
        if len(payload) >= ARGS_BYTES:
            # an address of 2 ** addr_bits or more: its low bits, every bit above them set
            addr = int.from_bytes(args[2:6], "little")
            if addr >> addr_bits:
                addr |= 0xFFFFFFFF & ~((1 << addr_bits) - 1)
            assert (head["core"], head["space"], head["addr"], head["count"]) == (
                args[0], args[1], addr, args[6])


def test_receiver_faults():
    dut = FrameReceiver(max_payload=20, timeout_cycles=TIMEOUT)
    good = protocol.encode_request(7, Command.PUSH, b"\x01\x00\x02\x00")

    async def bench(ctx):
        line = Line(dut)

        def moved(before):
            return {k: v - before[k] for k, v in line.strobes.items() if v != before[k]}

        # A damaged frame is held with crc_ok low (the executor answers CRC).
        before = dict(line.strobes)
        bad = bytearray(good)
        bad[6] ^= 0x40
        await line.send(ctx, bad)
        head = await line.take(ctx)
        assert head["crc_ok"] == 0 and head["seq"] == 7
        assert moved(before) == {"crc_error": 1, "activity": 1}

        # A truncated frame times out after TIMEOUT cycles of silence; the next frame is taken.
        before = dict(line.strobes)
        await line.send(ctx, good[:-3])
        assert await line.take(ctx, within=TIMEOUT - 2) is None
        await line.tick(ctx, 4)
        await line.send(ctx, good)
        assert (await line.take(ctx))["crc_ok"] == 1
        assert moved(before) == {"timeout": 1, "dropped": 1, "activity": 2}

        # A length beyond max_payload: dropped, every byte skipped until silence (the start
        # bytes inside are not frames).
        before = dict(line.strobes)
        await line.send(ctx, bytes([protocol.SOF_REQUEST, 1, 2, 21, 0]) + good[:-1])
        assert await line.take(ctx, within=TIMEOUT - 2) is None
        await line.tick(ctx, TIMEOUT)
        assert moved(before) == {"dropped": 1, "activity": 1}

        # A framing error inside a frame drops it likewise.
        before = dict(line.strobes)
        await line.send(ctx, good, framing_error_at=4)
        await line.tick(ctx, TIMEOUT + 2)
        await line.send(ctx, good)
        assert (await line.take(ctx))["crc_ok"] == 1
        assert moved(before) == {"dropped": 1, "activity": 2}

        # Bytes that arrive while a request is held are dropped, each counted.
        before = dict(line.strobes)
        await line.send(ctx, good + b"\xa5\x01\x02")
        await line.tick(ctx, TIMEOUT + 2)  # silence: the held request does not time out
        assert (await line.take(ctx))["crc_ok"] == 1
        await line.send(ctx, good)
        assert (await line.take(ctx))["crc_ok"] == 1
        assert moved(before) == {"overrun": 3, "activity": 2}

    run(dut, bench)


def test_receiver_buffer_keeps_the_takers_bytes_above_the_payload():
    """While the receiver holds a request its buffer's write port is the taker's (the executor
    keeps a step's output events above the payload there, hdl.hostlink.link_buffer_bytes):
    those bytes read back, the next request's payload leaves them alone, and the port writes
    nothing while no request is held."""
    dut = FrameReceiver(max_payload=20, timeout_cycles=TIMEOUT, buffer_bytes=28)
    first, second = bytes(range(1, 21)), bytes([0xEE] * 20)
    seen = {}

    async def read(ctx, line, addresses):
        out = []
        for a in addresses:
            ctx.set(dut.buf_addr, a)
            await line.tick(ctx)
            out.append(ctx.get(dut.buf_data))
        return out

    async def held(ctx, line):
        for _ in range(20):
            if ctx.get(dut.o.valid):
                return
            await line.tick(ctx)
        raise AssertionError("no request held")

    async def bench(ctx):
        line = Line(dut)
        ctx.set(dut.buf_waddr, 20)  # no request held: ignored
        ctx.set(dut.buf_wdata, 0x55)
        ctx.set(dut.buf_we, 1)
        await line.tick(ctx, 2)
        ctx.set(dut.buf_we, 0)
        await line.send(ctx, protocol.encode_request(1, Command.PUSH, first))
        await held(ctx, line)
        seen["before"] = await read(ctx, line, [20])
        for k in range(8):
            ctx.set(dut.buf_waddr, 20 + k)
            ctx.set(dut.buf_wdata, 0xA0 + k)
            ctx.set(dut.buf_we, 1)
            await line.tick(ctx)
        ctx.set(dut.buf_we, 0)
        seen["first"] = await read(ctx, line, range(28))
        ctx.set(dut.o.ready, 1)
        await line.tick(ctx)
        ctx.set(dut.o.ready, 0)
        await line.send(ctx, protocol.encode_request(2, Command.PUSH, second))
        await held(ctx, line)
        seen["second"] = await read(ctx, line, range(28))

    run(dut, bench)
    answer = [0xA0 + k for k in range(8)]
    assert seen["before"] == [0]
    assert seen["first"] == [*first, *answer]
    assert seen["second"] == [*second, *answer]


# -- RequestChecker ------------------------------------------------------------------------------

def depths_of(image):
    """Words per (core, space), from the image's own packing: the oracle for memory_depths."""
    out = []
    for index, core in enumerate(image.config.cores):
        learning = image.learning_of(core.layer)
        out.append({MemSpace.WEIGHTS: len(image.weight_memory(index)),
                    MemSpace.STATE: core.hi - core.lo, MemSpace.PARAMS: core.hi - core.lo,
                    # one accumulator a word: group g's lane p at (g << ceil_log2(lanes)) | p
                    MemSpace.ACC: ((core.hi - core.lo - 1) // core.lanes
                                   << (core.lanes - 1).bit_length())
                    + (core.hi - core.lo - 1) % core.lanes + 1,
                    MemSpace.MOD: core.hi - core.lo if learning is not None
                    and learning.rule == "three_factor" else 0})
    return out


def expected_status(head, idle, depths, word_bytes, n_inputs=5, encoder=False, run_steps=0):
    """docs/host-protocol.md's status rules, in its order."""
    cmd, length = head["cmd"], head["length"]
    if not head["crc_ok"]:
        return Status.CRC
    if cmd == Command.RUN_ENCODED:
        steps = head["core"] | head["space"] << 8  # the payload's first two bytes
        if not encoder:
            return Status.NO_ENCODER
        if length != 2:
            return Status.LENGTH
        return Status.OK if 1 <= steps <= run_steps else Status.ARG
    if cmd in (Command.INTENSITY, Command.STEP_ENCODED):
        if not encoder:
            return Status.NO_ENCODER
        if cmd == Command.STEP_ENCODED:
            return Status.OK if length == 0 else Status.LENGTH
        if length < 3:
            return Status.LENGTH
        offset = head["core"] | head["space"] << 8  # the payload's first two bytes
        return Status.ARG if offset + length - 2 > n_inputs else Status.OK
    if cmd in (Command.PUSH_BITMAP, Command.STEP_BITMAP):
        return Status.OK if length == -(-n_inputs // 8) else Status.LENGTH
    if cmd in (Command.HELLO, Command.CLEAR, Command.STATUS):
        return Status.OK if length == 0 else Status.LENGTH
    if cmd in (Command.PUSH, Command.STEP):
        return Status.LENGTH if length % 2 else Status.OK
    if cmd in (Command.READ_MEM, Command.WRITE_MEM):
        want = ARGS_BYTES + (head["count"] * word_bytes if cmd == Command.WRITE_MEM else 0)
        if length != want:
            return Status.LENGTH
        core, space = head["core"], head["space"]
        if core >= len(depths) or space >= len(MemSpace) or \
                head["addr"] + head["count"] > depths[core][MemSpace(space)]:
            return Status.ARG
        return Status.OK if idle else Status.BUSY
    return Status.UNKNOWN_CMD


IMAGE = plastic_image(4, (5, 9, 4), [None, ("three_factor", True)], lanes=(2, 3), split=True)


def test_memory_depths_are_the_images():
    for image in (IMAGE, random_image(1, (6, 10, 3), split=True, recurrent=0)):
        assert [dict(zip(MemSpace, d, strict=True)) for d in memory_depths(image)] == \
            depths_of(image)


@st.composite
def heads(draw):
    depths = depths_of(IMAGE)
    cmd = draw(st.sampled_from([*Command, 0, 0x0D, 0xFF]))
    core = draw(st.integers(0, len(depths)))
    space = draw(st.integers(0, 6))
    depth = depths[core][MemSpace(space)] if core < len(depths) and space < 5 else 4
    count = draw(st.integers(0, 6) | st.integers(0, 255))
    addr = draw(st.sampled_from([0, depth - count, depth - count + 1, depth, 1 << 31])
                | st.integers(0, 2**32 - 1))
    addr = min(max(addr, 0), 2**32 - 1)
    right = ARGS_BYTES + (count * 2 if cmd == Command.WRITE_MEM else 0)
    length = draw(st.sampled_from([0, 1, 2, 3, 4, right, right + 1, right - 2]))
    return {"seq": draw(st.integers(0, 255)), "cmd": int(cmd), "length": max(length, 0),
            "core": core, "space": space, "addr": addr, "count": count,
            "crc_ok": draw(st.booleans())}


@settings(deadline=None, max_examples=40)
@given(cases=st.lists(st.tuples(heads(), st.booleans()), min_size=1, max_size=12))
def test_checker_follows_the_documented_rules(cases):
    depths = depths_of(IMAGE)
    for encoder in (False, True):
        # RUN_ENCODED's steps are the head's core and space: 0..3 meet the limit's both sides
        dut = RequestChecker(IMAGE, word_bytes=2, encoder=encoder, run_steps=2 if encoder else 0)

        async def bench(ctx, dut=dut, encoder=encoder):
            for head, idle in cases:
                # the head three cycles before the status, idle one cycle (the other value
                # before)
                ctx.set(dut.head, head)
                ctx.set(dut.idle, not idle)
                await ctx.tick().repeat(2)
                ctx.set(dut.idle, idle)
                await ctx.tick()
                assert ctx.get(dut.status) == expected_status(
                    head, idle, depths, 2, IMAGE.n_inputs, encoder, 2 if encoder else 0), \
                    (head, idle, encoder)

        run(dut, bench)


def test_component_parameters_are_checked():
    with pytest.raises(ValueError, match=r"^Maximum payload must be 7\.\.65535 bytes, not 3$"):
        FrameReceiver(max_payload=3, timeout_cycles=10)
    with pytest.raises(ValueError, match=r"^Receive timeout must be at least 1 cycle, not 0$"):
        FrameReceiver(max_payload=16, timeout_cycles=0)
    with pytest.raises(ValueError, match=r"^Address bits must be 1\.\.32, not 0$"):
        FrameReceiver(max_payload=16, timeout_cycles=10, addr_bits=0)


# -- StreamRegister -------------------------------------------------------------------------------

@settings(deadline=None, max_examples=30)
@given(items=st.lists(st.integers(0, 255), max_size=30),
       valid=st.lists(st.booleans(), min_size=1, max_size=5),
       ready=st.lists(st.booleans(), min_size=1, max_size=5))
def test_stream_register_keeps_order_and_registers_its_outputs(items, valid, ready):
    """Everything offered comes out once, in order, under random valid/ready patterns; i.ready
    and o.valid only change at clock edges (within a cycle, changing o.ready or i.valid does
    not change them); with both sides always willing, item k is offered in cycle 2k + 1."""
    dut = StreamRegister(8)

    async def bench(ctx):
        assert await pass_through(ctx, dut, items, valid, ready) == items
        ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(2)
        assert not ctx.get(dut.o.valid)
        # the full rate: both sides always willing
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        taken, offered = [], []
        for cycle in range(2 * len(items)):
            ctx.set(dut.i.payload, items[len(taken)] if len(taken) < len(items) else 0)
            _, _, i_ready, o_valid, payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.payload)
            if i_ready and len(taken) < len(items):
                taken.append(cycle)
            if o_valid:
                offered.append((cycle, payload))
        assert taken == [2 * k for k in range(len(items))]
        assert offered == [(2 * k + 1, item) for k, item in enumerate(items)]

    run(dut, bench)

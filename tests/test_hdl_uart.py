"""UART receiver and transmitter against an 8N1 bit model; the host's CRC-16 against the published
check value. (The gateware's CRC is ``amaranth.lib.crc``: its frames are checked against
``binascii.crc_hqx`` in tests/test_hdl_hostlink.py.)"""

import binascii

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl.uart import UartRx, UartTx, uart_divisor
from spikeforge.protocol import crc16

CHECK = 0x29B1  # CRC-16/CCITT-FALSE of b"123456789" (the catalogue's check value)


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """Line levels of one 8N1 frame: start bit, data LSB first, stop bit."""
    return [0, *((byte >> k) & 1 for k in range(8)), stop]


async def send_bytes(ctx, port, data):
    """Offer `data` at the stream `port` a byte at a time, each held until taken."""
    for byte in data:
        ctx.set(port.payload, byte)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)

def test_crc_closed_form_check_value():
    assert crc16(b"123456789") == CHECK
    assert binascii.crc_hqx(b"123456789", 0xFFFF) == CHECK


def test_divisor():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(460800, 115200) == 4
    with pytest.raises(ValueError, match="too slow"):
        uart_divisor(300e3, 115200)
    with pytest.raises(ValueError, match="off by"):
        uart_divisor(630e3, 115200)  # 5.47 cycles per bit: 5 is 9 % fast
    assert uart_divisor(700e3, 115200) == 6  # 6.08 cycles per bit: 1.3 % slow




@pytest.mark.parametrize("divisor", [4, 7])
@settings(deadline=None, max_examples=8)
@given(data=st.binary(min_size=1, max_size=12))
def test_uart_loopback(divisor, data):
    """Bytes into the transmitter come out of the receiver; the line carries exact 8N1
    frames of ``divisor`` cycles per bit."""
    tx, rx = UartTx(divisor), UartRx(divisor)
    m = Module()
    m.submodules.tx, m.submodules.rx = tx, rx
    m.d.comb += rx.rx.eq(tx.tx)
    received, line = [], []

    async def send(ctx):
        await send_bytes(ctx, tx.i, data)

    async def take(ctx):
        ctx.set(rx.o.ready, 1)
        while len(received) < len(data):
            _, _, valid, payload, ferr = await ctx.tick().sample(
                rx.o.valid, rx.o.payload, rx.framing_error)
            assert not ferr
            if valid:
                received.append(payload)

    async def watch(ctx):
        async for _, _, level in ctx.tick().sample(tx.tx):
            line.append(level)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(take)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert bytes(received) == data
    # The line: idle high, then back-to-back frames, each bit held for `divisor` cycles.
    start = line.index(0)
    expect = [level for byte in data for level in frame_bits(byte) for _ in range(divisor)]
    assert line[start:start + len(expect)] == expect
    assert all(line[:start])


async def drive_bits(ctx, pin, levels, divisor):
    for level in levels:
        ctx.set(pin, level)
        await ctx.tick().repeat(divisor)


@pytest.mark.parametrize("divisor", [4, 5, 32])
def test_uart_rx_framing_error_and_glitch(divisor):
    """A low stop bit is a framing error (the byte is dropped), a start bit shorter than half a
    bit is ignored, and the receiver goes on to receive the next good frame; a sender 3 % slow
    is understood. An unread byte overwritten by the next is an
    overrun."""
    dut = UartRx(divisor)
    got, errors, overruns = [], [], []

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * divisor)
        await drive_bits(ctx, dut.rx, frame_bits(0x3C, stop=0), divisor)
        await drive_bits(ctx, dut.rx, [1, 1], divisor)
        # A glitch of less than half a bit.
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(max(1, divisor // 2 - 2))
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await drive_bits(ctx, dut.rx, frame_bits(0xA5), divisor)
        # A slow sender (3 % at divisor 32) still arrives.
        slow = divisor + divisor // 32
        await drive_bits(ctx, dut.rx, frame_bits(0x96), slow)
        await drive_bits(ctx, dut.rx, [1], divisor)
        # Nobody reads: the second byte overruns the first.
        ctx.set(dut.o.ready, 0)
        await drive_bits(ctx, dut.rx, frame_bits(0x11) + frame_bits(0x22) + [1], divisor)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, ready, payload, ferr, over in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.framing_error, dut.overrun):
            if valid and ready:
                got.append(payload)
            if ferr:
                errors.append(1)
            if over:
                overruns.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert got == [0xA5, 0x96, 0x22]
    assert len(errors) == 1
    assert len(overruns) == 1


# -- the far end's rate off by up to 2 %, at the fewest cycles per bit ---------------------------
# The line is modelled in continuous time, not in clock cycles: a far-end transmitter whose bit
# lasts `divisor / (1 + error)` clock periods, starting at a fraction of a period off the
# clock; a far-end receiver that finds each start edge and samples every bit in its middle at
# its own rate. Frames go back to back (no idle between them), the hardest case for both ends.

PERIOD = 1e-8
FAR_BYTES = bytes([0x00, 0xFF, 0x55, 0xAA, 0x0F, 0xF0, 0x01, 0x80, 0xA5, 0x5A, 0x7E, 0x81])


@pytest.mark.parametrize("divisor", [4, 5])
@pytest.mark.parametrize("error", [-0.02, 0.0, 0.02])
@pytest.mark.parametrize("phase", [0.05, 0.5, 0.95])
def test_uart_rx_far_end_rate(divisor, error, phase):
    """Back-to-back frames from a transmitter 2 % fast or slow arrive, whatever the phase of
    their first edge against the clock."""
    dut = UartRx(divisor)
    bit = divisor * PERIOD / (1 + error)
    levels = [level for byte in FAR_BYTES for level in frame_bits(byte)]
    got, errors = [], []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.delay((3 * divisor + phase) * PERIOD)
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.delay(bit)
        ctx.set(dut.rx, 1)
        await ctx.delay(4 * divisor * PERIOD)

    async def watch(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload, ferr in ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.framing_error):
            if valid:
                got.append(payload)
            if ferr:
                errors.append(1)

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(line)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert bytes(got) == FAR_BYTES and not errors


def far_end_receive(samples: list[int], bit: float) -> list[int]:
    """Bytes a far-end 8N1 receiver decodes from a line given as one level per clock period:
    at each falling edge (found at period resolution) it samples the middle of every bit at
    its own bit time `bit` (in periods); a low stop bit is an error."""
    out, k = [], 1
    while k < len(samples):
        if not (samples[k - 1] and not samples[k]):
            k += 1
            continue
        levels = [samples[int(k + (i + 0.5) * bit)] for i in range(10)]
        assert levels[0] == 0 and levels[9] == 1, f"bad frame at period {k}: {levels}"
        out.append(sum(level << i for i, level in enumerate(levels[1:9])))
        k = int(k + 9.5 * bit)  # the middle of the stop bit: hunt for the next start from here
    return out


@pytest.mark.parametrize("divisor", [4, 5])
@pytest.mark.parametrize("error", [-0.02, 0.02])
def test_uart_tx_far_end_rate(divisor, error):
    """Back-to-back frames reach a receiver 2 % fast or slow."""
    dut = UartTx(divisor)
    samples = []

    async def send(ctx):
        await send_bytes(ctx, dut.i, FAR_BYTES)
        await ctx.tick().repeat(12 * divisor)

    async def watch(ctx):
        async for _, _, level in ctx.tick().sample(dut.tx):
            samples.append(level)

    sim = Simulator(dut)
    sim.add_clock(PERIOD)
    sim.add_testbench(send)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert bytes(far_end_receive(samples, divisor / (1 + error))) == FAR_BYTES

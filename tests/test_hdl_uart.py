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
        for byte in data:
            ctx.set(tx.i.payload, byte)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

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

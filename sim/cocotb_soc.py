"""cocotb module of the virtual board: a pseudo-terminal bridged to the UART pins of SpikeSoC.

Loaded by the simulator that ``spikeforge.boards.virtual.VirtualBoard`` starts, never imported by
the package itself. The toplevel is ``boards.virtual.BridgeTop``; its folder (``$SPIKEFORGE_
VBOARD_DIR``) holds ``config.json`` (divisor, ring size, the SoC's receive timeout, the owner's
pid). The test opens a pseudo-terminal in raw mode, writes ``ready.json`` (terminal name, this
process's pid) and then, until the host hangs up:

- bytes read from the terminal go into the bridge's host ring, which bit-bangs them into the
  SoC's ``uart_rx``;
- bytes the bridge decoded from ``uart_tx`` go out to the terminal.

Simulated time runs while bytes move, while the SoC is busy (its activity and busy LEDs), and
for a receive timeout's worth of silence after that (so the SoC drops a truncated frame exactly
as on a real line); then the simulation waits for the host without advancing.
"""

from __future__ import annotations

import errno
import json
import os
import select
import time
import tty
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

CLOCK_NS = 10
POLL_BYTES = 2  # while waiting for the SoC, look at the line every two byte times
IDLE_WAIT = 0.05  # seconds per wait for the host while the simulation stands still
OWNER_CHECK = 0.5  # seconds between checks that the process that started us lives


class Hangup(Exception):
    """The host closed the terminal, the owner died, or we were told to stop."""


def _alive(pid: int, stamp: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return not stamp  # no /proc: trust kill(pid, 0)
    # a zombie has died (its parent has not reaped it yet); another start time is a reused pid
    return fields[0] != "Z" and (not stamp or fields[19] == stamp)


class Bridge:
    """Moves bytes between the terminal and the bridge's rings; decides how far to simulate."""

    def __init__(self, dut, folder: Path):
        self.dut = dut
        self.folder = folder
        config = json.loads((folder / "config.json").read_text())
        self.ring = int(config["ring"])
        self.byte_cycles = 10 * int(config["divisor"])
        # Silence after which the SoC has certainly dropped a partial frame.
        self.quiet_needed = (int(config["timeout_bytes"]) + 4) * self.byte_cycles
        self.idle_limit = float(config["idle_limit"])
        self.owner = int(config["owner"])
        self.owner_stamp = str(config["owner_stamp"])
        self.host_ring = bytearray(self.ring)
        self.host_head = 0  # bytes put into the host ring, modulo 2^16
        self.dev_read = 0  # device bytes taken from the device ring, modulo 2^16
        self.pending = bytearray()  # from the terminal, not yet in the ring
        self.connected = False  # the host has sent a byte (so it holds the terminal open)
        self.last_host = time.monotonic()
        self.last_owner_check = 0.0
        self.cycles = 0
        self.bytes_in = 0
        self.bytes_out = 0
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, before anybody writes
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        self.poller = select.poll()
        self.poller.register(master, select.POLLIN)

    def announce(self) -> None:
        ready = self.folder / "ready.json"
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": os.ttyname(self.slave), "pid": os.getpid()}))
        os.replace(tmp, ready)

    # -- terminal ------------------------------------------------------------------------------
    def _check_stop(self) -> None:
        now = time.monotonic()
        if now - self.last_owner_check >= OWNER_CHECK:
            self.last_owner_check = now
            if not _alive(self.owner, self.owner_stamp):
                raise Hangup("the process that started the virtual board is gone")
            if (self.folder / "stop").exists():
                raise Hangup("asked to stop")
            if now - self.last_host > self.idle_limit:
                raise Hangup(f"no byte from the host for {self.idle_limit:g} s")

    def take_from_host(self, wait: float) -> None:
        """Read what the terminal holds, waiting up to ``wait`` seconds for a first byte."""
        events = self.poller.poll(int(wait * 1000))
        for _, event in events:
            if event & select.POLLIN:
                self._read_all()
            elif event & (select.POLLHUP | select.POLLERR) and self.connected:
                raise Hangup("the host closed the terminal")

    def _read_all(self) -> None:
        for _ in range(64):  # bounded: at most 256 KiB per call
            try:
                chunk = os.read(self.master, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EIO and self.connected:
                    raise Hangup("the host closed the terminal") from None
                return
            if not chunk:
                return
            self.pending += chunk
            self.bytes_in += len(chunk)
            self.last_host = time.monotonic()
            if not self.connected:
                # From now on the host holds the terminal open; once it closes it, reads on
                # the master fail, which is how we learn that it went away.
                self.connected = True
                os.close(self.slave)
                self.slave = -1

    def give_to_host(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 10.0
        while view:
            try:
                written = os.write(self.master, view)
            except BlockingIOError:
                written = 0
            view = view[written:]
            if view:
                if time.monotonic() > deadline:
                    raise Hangup("the host stopped reading the terminal")
                select.select([], [self.master], [], 0.05)

    # -- rings ---------------------------------------------------------------------------------
    def fill_host_ring(self) -> int:
        """Move pending bytes into the host ring; returns the bytes not yet sent."""
        tail = int(self.dut.host_tail.value)
        unsent = (self.host_head - tail) & 0xFFFF
        free = self.ring - unsent
        if self.pending and free:
            take = self.pending[:free]
            del self.pending[:free]
            for byte in take:
                self.host_ring[self.host_head % self.ring] = byte
                self.host_head = (self.host_head + 1) & 0xFFFF
            self.dut.host_ring.value = int.from_bytes(self.host_ring, "little")
            self.dut.host_head.value = self.host_head
            unsent += len(take)
        return unsent

    def drain_dev_ring(self) -> int:
        head = int(self.dut.dev_head.value)
        count = (head - self.dev_read) & 0xFFFF
        if not count:
            return 0
        if count > self.ring:
            raise AssertionError(f"the bridge lost {count - self.ring} bytes from the device "
                                 f"(read too late)")
        ring = int(self.dut.dev_ring.value).to_bytes(self.ring, "little")
        out = bytes(ring[(self.dev_read + k) % self.ring] for k in range(count))
        self.dev_read = head
        self.bytes_out += count
        self.give_to_host(out)
        return count

    # -- main loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        quiet = 0
        while True:
            self._check_stop()
            self.take_from_host(0)
            unsent = self.fill_host_ring()
            got = self.drain_dev_ring()
            assert int(self.dut.dev_framing.value) == 0, "the SoC sent a byte with a low stop bit"
            leds = int(self.dut.leds.value)
            busy = bool(unsent or self.pending or got or int(self.dut.host_busy.value)
                        or leds & 0b0110)
            quiet = 0 if busy else quiet
            if not busy and quiet >= self.quiet_needed:
                # Nothing moves and the SoC is idle: wait for the host, time standing still.
                quiet = 0
                while not self.pending:
                    self._check_stop()
                    self.take_from_host(IDLE_WAIT)
                continue
            if unsent:
                # Let the ring run down to half (or empty), but look at the device often
                # enough that its ring cannot overflow.
                step = max(1, min(unsent, self.ring // 2)) * self.byte_cycles
            elif got:
                step = self.ring // 4 * self.byte_cycles
            else:
                step = POLL_BYTES * self.byte_cycles
            await Timer(step * CLOCK_NS, unit="ns")
            self.cycles += step
            if not busy:
                quiet += step


@cocotb.test()
async def serve(dut):
    """Bridge the terminal to the SoC's pins until the host hangs up."""
    folder = Path(os.environ["SPIKEFORGE_VBOARD_DIR"])
    Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
    dut.host_head.value = 0
    dut.host_ring.value = 0
    dut.rst.value = 1
    await Timer(3 * CLOCK_NS, unit="ns")
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    # From here every wait is a whole number of periods: we wake at falling edges, where no
    # register changes, and what we write is taken at the next rising edge.
    bridge = Bridge(dut, folder)
    bridge.announce()
    started = time.monotonic()
    try:
        await bridge.run()
    except Hangup as why:
        dut._log.info("virtual board stops: %s", why)
    finally:
        spent = time.monotonic() - started
        dut._log.info("bytes in %d, out %d, %d cycles simulated in %.1f s", bridge.bytes_in,
                      bridge.bytes_out, bridge.cycles, spent)
        os.close(bridge.master)
        if bridge.slave >= 0:
            os.close(bridge.slave)

"""The virtual board: the RTL of the whole SpikeSoC, UART pins included, in a Verilog simulator,
behind a pseudo-terminal.

``VirtualBoard(image)`` converts :class:`BridgeTop` (``SpikeSoC(image)`` plus the host's end of
its serial line) to Verilog, compiles it once per (image, gateware, bridge) hash with cocotb's
Python runner (the cache and build helpers of ``spikeforge.hdl.rtl``) and starts the simulator
on the cocotb module ``spikeforge.sim.cocotb_soc``. That module opens a pseudo-terminal and
writes its name to a file this class waits for; bytes written to the terminal are bit-banged
into the SoC's ``uart_rx`` pin, bits decoded from its ``uart_tx`` pin come back out of it. The
host runtime (``spikeforge.Board``) then opens the terminal with pyserial: the very same code
path as a real board on a USB serial port.

Simulation speed: the bridge moves bytes through ring buffers in the gateware, so the Python
side of cocotb wakes a few times per request rather than every bit; simulated time stands still
while the line is silent and the SoC has been idle for longer than its receive timeout (its
"activity" and "busy" LEDs are dark).

The simulator stops when the host closes the terminal (after it sent its first byte), when the
process that started it dies, or after ``idle_limit`` seconds without a byte from the host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..flashimage import FLASH_OFFSETS
from ..hdl.flashload import image_blob
from ..hdl.soc import SpikeSoC
from ..hdl.spiflash import SpiFlashModel
from ..hdl.uart import uart_divisor
from ..image import Image

__all__ = ["BridgeTop", "VirtualBoard", "VirtualBoardError"]

TEST_MODULE = "spikeforge.sim.cocotb_soc"
DIR_ENV = "SPIKEFORGE_VBOARD_DIR"
RING_BYTES = 64
DIVISOR = 4  # clock cycles per UART bit: the fewest the SoC's receiver samples
BAUD = 9600  # nominal; with DIVISOR it sets clk_freq, hence the LED stretch (clk_freq / 20)
TIMEOUT_BYTES = 32  # the SoC's receive timeout on the virtual board, in byte times
# Host timing on the virtual board (wall clock): one simulated byte costs far less than this,
# so a timeout means a lost frame, not a slow simulator.
BYTE_TIME = 2e-3
EXEC_TIME = 2.0
_BRIDGE_RECIPE = 1  # bumped when the bridge gateware changes


class VirtualBoardError(RuntimeError):
    """The virtual board could not be built or started, or it stopped; the message says why."""


class BridgeTop(wiring.Component):
    """``SpikeSoC(image)`` and the host's end of its serial line (8N1, ``divisor`` cycles/bit).

    Host to device: the simulator writes bytes into ``host_ring`` (``ring`` bytes, byte ``k`` at
    bits ``[8k, 8k + 8)``) and advances ``host_head`` (bytes written, modulo 2^16); the bridge
    sends byte ``host_tail mod ring`` on ``uart_rx`` whenever ``host_tail != host_head`` and
    counts ``host_tail`` up as it takes each byte. ``host_busy`` is high while a byte is on the
    line or waiting.

    Device to host: bytes decoded from ``uart_tx`` (sampled mid-bit) land in ``dev_ring`` at
    ``dev_head mod ring``, then ``dev_head`` counts up; the simulator reads them from its own
    count up to ``dev_head`` (it must read before ``ring`` more bytes arrive). A byte whose stop
    bit is low counts ``dev_framing``. ``leds`` are the SoC's.

    With ``flash`` (the bytes of an SPI flash window at the iCE40 offset, docs/flash.md) the
    SoC loads its memories from a :class:`SpiFlashModel` holding them at reset.
    """

    def __init__(self, image: Image, *, divisor: int = DIVISOR, baud: float = BAUD,
                 timeout_bytes: int = TIMEOUT_BYTES, ring: int = RING_BYTES,
                 flash: bytes | None = None, clock_hz: float | None = None):
        if ring < 2 or ring & (ring - 1):
            raise ValueError(f"ring size must be a power of two >= 2, not {ring!r}")
        self._ring = ring
        self._flash = None if flash is None else bytes(flash)
        offset = FLASH_OFFSETS["ice40"] if flash is not None else None
        clock = divisor * baud if clock_hz is None else clock_hz
        self._soc = SpikeSoC(image, clk_freq=clock, baud=baud,
                             timeout_bytes=timeout_bytes, flash_offset=offset,
                             flash_wake_cycles=8)
        super().__init__({
            "host_ring": In(8 * ring), "host_head": In(16), "host_tail": Out(16),
            "host_busy": Out(1),
            "dev_ring": Out(8 * ring), "dev_head": Out(16), "dev_framing": Out(16),
            "leds": Out(4),
        })

    @property
    def soc(self) -> SpikeSoC:
        return self._soc

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self._soc
        div = soc.divisor
        index_bits = self._ring.bit_length() - 1
        m.d.comb += self.leds.eq(soc.leds)
        if self._flash is not None:
            m.submodules.flash = flash = SpiFlashModel(self._flash,
                                                       base=FLASH_OFFSETS["ice40"])
            m.d.comb += [flash.cs_n.eq(soc.flash_cs_n), flash.sck.eq(soc.flash_sck),
                         flash.copi.eq(soc.flash_copi), soc.flash_cipo.eq(flash.cipo)]

        # host -> device: a 10-bit shift register, start bit first, idle high
        shift = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        count = Signal(range(div))
        m.d.comb += [soc.uart_rx.eq(shift[0]),
                     self.host_busy.eq((bits != 0) | (self.host_tail != self.host_head))]
        with m.If(bits == 0):
            with m.If(self.host_tail != self.host_head):
                byte = self.host_ring.word_select(self.host_tail[:index_bits], 8)
                m.d.sync += [shift.eq(Cat(0, byte, 1)), bits.eq(10), count.eq(div - 1),
                             self.host_tail.eq(self.host_tail + 1)]
        with m.Elif(count == 0):
            m.d.sync += [shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1), count.eq(div - 1)]
        with m.Else():
            m.d.sync += count.eq(count - 1)

        # device -> host: wait for a start bit, sample its middle, then 8 data bits and the stop
        line = soc.uart_tx
        wait = Signal(range(2 * div))
        got = Signal(range(10))  # samples taken: start, 8 data, stop
        data = Signal(9)
        active = Signal()
        with m.If(~active):
            with m.If(~line):
                m.d.sync += [active.eq(1), wait.eq(div // 2 - 1), got.eq(0)]
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        with m.Elif(got == 0):  # middle of the start bit
            with m.If(line):
                m.d.sync += active.eq(0)  # a glitch, not a start bit
            with m.Else():
                m.d.sync += [got.eq(1), wait.eq(div - 1)]
        with m.Else():
            m.d.sync += [data.eq(Cat(data[1:], line)), got.eq(got + 1), wait.eq(div - 1)]
            with m.If(got == 9):  # this sample is the stop bit
                m.d.sync += [
                    active.eq(0),
                    self.dev_ring.word_select(self.dev_head[:index_bits], 8).eq(data[1:]),
                    self.dev_head.eq(self.dev_head + 1),
                ]
                with m.If(~line):
                    m.d.sync += self.dev_framing.eq(self.dev_framing + 1)
        return m


def _bridge_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _owner_stamp(pid: int) -> str:
    """The start time of a process (field 22 of /proc/PID/stat), so a reused pid is not taken
    for its owner; empty where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


class VirtualBoard:
    """The RTL simulation of ``SpikeSoC(image)`` behind a pseudo-terminal; ``port`` names it.

    Starting builds the simulator (cached; the first build of an image takes a minute or two)
    and waits until the simulation has opened its terminal. ``close()`` stops it.

    ``baud`` is the rate of the SoC's UART and ``clock_hz`` its clock (default ``4 * baud``,
    the fewest cycles per bit; both set the divider, which must make the rate within 2 %, and
    the LEDs' stretch, hence how long the simulation runs after each frame). The host's timing
    on the virtual board is wall-clock time (``byte_time``), whatever the simulated rate.

    ``flash=True``: the gateware holds ``image`` with its weights zeroed (as SPRAM starts) and
    loads the image's memories from a simulated SPI flash at reset (docs/flash.md);
    ``flash=BYTES`` puts those bytes in the flash instead (e.g. a faulty blob).
    """

    def __init__(self, image: Image, *, simulator: str | None = None,
                 cache_root: str | os.PathLike | None = None,
                 timeout_bytes: int = TIMEOUT_BYTES, idle_limit: float = 3600.0,
                 start_timeout: float = 120.0, flash: bool | bytes = False,
                 baud: float = BAUD, clock_hz: float | None = None):
        from ..hdl.rtl import build_simulator, default_cache_root, gateware_digest, generate_verilog

        image.check()
        if not 1 <= int(timeout_bytes) <= 0xFFFF:
            raise ValueError(f"receive timeout must be 1..65535 byte times, not "
                             f"{timeout_bytes!r}")
        self.image = image
        self.timeout_bytes = int(timeout_bytes)
        self.byte_time = BYTE_TIME
        self.exec_time = EXEC_TIME
        self.baud = baud
        clock = DIVISOR * baud if clock_hz is None else float(clock_hz)
        try:
            divisor = uart_divisor(clock, baud)
        except ValueError as exc:
            raise VirtualBoardError(f"the virtual board cannot talk at {baud!r} baud: "
                                    f"{exc}") from None
        root = Path(cache_root) if cache_root is not None else default_cache_root()
        blob = None
        gateware_image = image
        if flash is not False:
            blob = image_blob(image) if flash is True else bytes(flash)
            gateware_image = image.with_weights(
                [np.zeros_like(layer.weights) for layer in image.layers],
                [None if layer.rec_weights is None else np.zeros_like(layer.rec_weights)
                 for layer in image.layers])
        key = hashlib.sha256(b"".join([
            gateware_image.to_bytes(), b"flash:" + (blob if blob is not None else b"-"),
            gateware_digest(__name__).encode(), _bridge_digest().encode(),
            json.dumps([self.timeout_bytes, clock, baud, RING_BYTES, _BRIDGE_RECIPE]).encode(),
        ])).hexdigest()
        try:
            def verilog() -> str:  # only on a cache miss
                top = BridgeTop(gateware_image, timeout_bytes=self.timeout_bytes, flash=blob,
                                baud=baud, clock_hz=clock)
                return generate_verilog(top, simulator=simulator or "verilator")

            self._build = build_simulator(verilog, key=key, simulator=simulator,
                                          cache_root=root)
        except Exception as exc:
            raise VirtualBoardError(f"could not build the virtual board: {exc}") from exc
        runs = root / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="vboard-", dir=runs))
        (self.folder / "config.json").write_text(json.dumps({
            "divisor": divisor, "ring": RING_BYTES,
            "timeout_bytes": self.timeout_bytes, "idle_limit": float(idle_limit),
            "owner": os.getpid(), "owner_stamp": _owner_stamp(os.getpid()),
        }))
        self.port: str | None = None
        self.pid: int | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._simulate, name="spikeforge-vboard",
                                        daemon=True)
        self._thread.start()
        try:
            self._wait_ready(float(start_timeout))
        except BaseException:
            self.close()
            raise

    def _simulate(self) -> None:
        from ..hdl.rtl import run_cocotb

        try:
            run_cocotb(self._build, TEST_MODULE, test_dir=self.folder,
                       extra_env={DIR_ENV: str(self.folder)})
        except BaseException as exc:  # reported by `check` and `close`
            self.error = exc

    def _wait_ready(self, timeout: float) -> None:
        ready = self.folder / "ready.json"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if not self._thread.is_alive():
                raise VirtualBoardError(f"the virtual board's simulator stopped before it "
                                        f"opened its terminal: {self._why()}")
            if time.monotonic() > deadline:
                raise VirtualBoardError(f"the virtual board's simulator did not open its "
                                        f"terminal within {timeout:g} s (log: "
                                        f"{self.folder / 'sim.log'})")
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        self.port, self.pid = info["port"], int(info["pid"])

    def _why(self) -> str:
        if self.error is not None:
            return str(self.error).strip().splitlines()[0]
        return f"see {self.folder / 'sim.log'}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def check(self) -> None:
        """Raise VirtualBoardError when the simulation has stopped."""
        if not self._thread.is_alive():
            raise VirtualBoardError(f"the virtual board's simulator has stopped: {self._why()}")

    def log(self) -> str:
        try:
            return (self.folder / "sim.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self, grace: float = 5.0) -> None:
        """Stop the simulator (it stops by itself once the host has closed the terminal) and
        remove its run folder."""
        if self._thread.is_alive():
            (self.folder / "stop").touch()
            self._thread.join(grace)
        if self._thread.is_alive() and self.pid is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(self.pid, sig)
                except ProcessLookupError:
                    break
                self._thread.join(grace)
                if not self._thread.is_alive():
                    break
        if not self._thread.is_alive():
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> VirtualBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

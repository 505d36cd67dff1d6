"""The board-agnostic system on chip: UART host link in front of the core array."""

import operator

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..image import Image
from ..protocol import DEFAULT_MAX_PAYLOAD
from .array import CoreArray
from .flashload import FlashLoader, LoadState, MemLock, image_id, image_length
from .hostlink import HostLink, connect_array
from .uart import UartRx, UartTx, uart_divisor

__all__ = ["SpikeSoC"]


class SpikeSoC(wiring.Component):
    """UART receiver and transmitter, :class:`HostLink` and :class:`CoreArray` of ``image``.

    Runs in the ``sync`` domain that the board wrapper provides (clock of ``clk_freq`` Hz, from
    a PLL where the board needs one, and its reset). The host speaks the protocol of
    docs/host-protocol.md at ``baud`` (8N1).

    Ports
    -----
    uart_rx : In(1)
        Serial data from the host, idle high. May come straight from a pin: the UART receiver
        passes it through a two-flop synchroniser first.
    uart_tx : Out(1)
        Serial data to the host, idle high.
    leds : Out(4)
        0: heartbeat (toggles about once a second); 1: host activity (lit ~50 ms after every
        frame received, good or bad); 2: busy (lit ~50 ms after the array or the link worked);
        3: sticky error (the array lost an event, or the link saw a bad frame, a framing error,
        a timeout or an overrun; cleared by reset).
        With ``flash_offset``, until the load is done: leds 1-3 all lit while loading; on a
        failed load leds 1-3 show the reason code (docs/flash.md) blinking with the heartbeat.
    flash_cs_n, flash_sck, flash_copi : Out(1); flash_cipo : In(1)
        Only with ``flash_offset``: the SPI flash the memories are loaded from at reset
        (:class:`hdl.flashload.FlashLoader`; the host link answers PUSH/STEP with NOT_LOADED
        and its memory requests wait until the load ends).
    """

    def __init__(self, image: Image, *, clk_freq: float, baud: float = 115200,
                 timeout_bytes: int = 128, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 fifo_depth: int = 0,
                 flash_offset: int | None = None, flash_divisor: int = 1,
                 flash_wake_cycles: int | None = None):
        image.check()
        self._image = image
        self._clk_freq = float(clk_freq)
        self._baud = float(baud)
        self._divisor = uart_divisor(self._clk_freq, self._baud)
        self._timeout_bytes = operator.index(timeout_bytes)
        self._max_payload = operator.index(max_payload)
        self._fifo_depth = operator.index(fifo_depth)
        # Build (and so check) the parts' parameters now, not at elaboration.
        self._array = CoreArray(image, fifo_depth=self._fifo_depth)
        self._link = HostLink.for_array(self._array, byte_cycles=10 * self._divisor,
                                        timeout_bytes=self._timeout_bytes,
                                        max_payload=self._max_payload,
                                        clock_hz=self._clk_freq)
        members = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "leds": Out(4)}
        self._loader = None
        if flash_offset is not None:
            wake = (int(self._clk_freq * 3e-6) + 1 if flash_wake_cycles is None
                    else flash_wake_cycles)
            self._loader = FlashLoader(
                image_id=image_id(image), offset=flash_offset, n_cores=len(image.config.cores),
                data_width=self._array.mem_data_width, addr_width=self._array.mem_addr_width,
                divisor=flash_divisor, wake_cycles=wake,
                length=image_length(image))
            members.update({"flash_cs_n": Out(1, init=1), "flash_sck": Out(1),
                            "flash_copi": Out(1), "flash_cipo": In(1)})
        super().__init__(members)

    @property
    def image(self) -> Image:
        return self._image

    @property
    def clk_freq(self) -> float:
        return self._clk_freq

    @property
    def baud(self) -> float:
        return self._baud

    @property
    def divisor(self) -> int:
        """Clock cycles per UART bit."""
        return self._divisor

    @property
    def array(self) -> CoreArray:
        return self._array

    @property
    def link(self) -> HostLink:
        return self._link

    @property
    def loader(self) -> FlashLoader | None:
        return self._loader

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self._array
        m.submodules.link = link = self._link
        m.submodules.uart_rx = rx = UartRx(self._divisor)
        m.submodules.uart_tx = tx = UartTx(self._divisor)
        m.d.comb += [rx.rx.eq(self.uart_rx), self.uart_tx.eq(tx.tx)]
        wiring.connect(m, rx.o, link.rx)
        wiring.connect(m, link.tx, tx.i)
        m.d.comb += [link.framing_error.eq(rx.framing_error), link.overrun.eq(rx.overrun)]
        connect_array(m, link, array)
        loader = self._loader
        if loader is not None:
            # re-route the memory port through the lock (the later comb assignments win)
            m.submodules.loader = loader
            m.submodules.mem_lock = lock = MemLock(data_width=array.mem_data_width,
                                                   addr_width=array.mem_addr_width)
            wiring.connect(m, link.mem, lock.host)
            wiring.connect(m, loader.mem, lock.loader)
            wiring.connect(m, lock.o, array.mem)
            # The verdict and the lock's select reach the link through registers, so the
            # loader's FSM decode stays out of the request checker's and the executor's paths.
            # Both change a cycle after the loader's state: the lock stays shut (locked from
            # reset, init) a cycle past the loader's last write or its error, when the loader
            # no longer drives the port, and the link answers NOT_LOADED meanwhile.
            loaded = Signal()
            locked = Signal(init=1)
            load_error = Signal.like(loader.reason)
            m.d.sync += [loaded.eq(loader.state == LoadState.READY), load_error.eq(loader.reason),
                         locked.eq(loader.state == LoadState.LOADING)]
            m.d.comb += [
                lock.locked.eq(locked),
                link.loaded.eq(loaded),
                link.load_error.eq(load_error),
                self.flash_cs_n.eq(loader.cs_n), self.flash_sck.eq(loader.sck),
                self.flash_copi.eq(loader.copi), loader.cipo.eq(self.flash_cipo),
            ]

        heartbeat = Signal(max(1, int(self._clk_freq).bit_length() - 1))
        m.d.sync += heartbeat.eq(heartbeat + 1)
        m.d.comb += self.leds[0].eq(heartbeat[-1])

        # The LEDs' ~50 ms stretch counts prescaler ticks (2^12 cycles each), so its counters
        # stay a few bits wide: a 21-bit decrement and compare limited the whole SoC's clock.
        tick_bits = 12
        tick = Signal()
        m.d.sync += tick.eq(heartbeat[:tick_bits].all())

        def stretch(index, strobe_in):
            strobe = Signal(name=f"led{index}_strobe")  # registered: the link's logic stops here
            m.d.sync += strobe.eq(strobe_in)
            ticks = max(1, int(self._clk_freq / 20) >> tick_bits)
            left = Signal(range(ticks + 1), name=f"led{index}_left")
            lit = Signal(name=f"led{index}_lit")
            with m.If(strobe):
                m.d.sync += left.eq(ticks)
            with m.Elif(tick & (left != 0)):
                m.d.sync += left.eq(left - 1)
            m.d.sync += lit.eq(strobe | (left != 0))
            m.d.comb += self.leds[index].eq(lit)

        stretch(1, link.activity)
        stretch(2, link.busy | ~array.idle)
        m.d.comb += self.leds[3].eq(array.overflow | link.error)
        if loader is not None:
            with m.If(loader.state == LoadState.LOADING):
                m.d.comb += self.leds[1:4].eq(0b111)
            with m.Elif(loader.state == LoadState.ERROR):
                m.d.comb += self.leds[1:4].eq(loader.reason.as_value() & heartbeat[-1].replicate(3))
        return m

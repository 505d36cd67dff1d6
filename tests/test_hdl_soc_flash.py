"""The whole SoC loading its memories from a behavioural SPI flash at reset, through its UART
pins in the Amaranth simulator: the golden model of the flashed image once loaded; a faulty
blob leaves STEP refused with NOT_LOADED, the reason in STATUS and on the LEDs."""


import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeforge.hdl.flashload import PyLoadError, image_blob
from spikeforge.hdl.soc import SpikeSoC
from spikeforge.hdl.spiflash import SpiFlashModel
from spikeforge.protocol import LinkClient, ProtocolError

from .strategies import random_image
from .test_hdl_flashload import _unloaded
from .test_hdl_hostlink import BAUD, CLK, TIMEOUT_BYTES, PinBoard, golden_steps, run_steps

OFFSET = 0x100000


class FlashedSoC(wiring.Component):
    """SpikeSoC with a flash model on its SPI pins; UART pins and LEDs outside."""

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(4)

    def __init__(self, image, blob):
        # the bitstream holds the image without its weights: only the flash brings them
        self.soc = SpikeSoC(_unloaded(image), clk_freq=CLK, baud=BAUD,
                            timeout_bytes=TIMEOUT_BYTES, flash_offset=OFFSET,
                            flash_wake_cycles=4)
        self.flash = SpiFlashModel(blob, base=OFFSET)
        self.clk_freq, self.baud, self.divisor = CLK, BAUD, self.soc.divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc, m.submodules.flash = soc, flash = self.soc, self.flash
        m.d.comb += [soc.uart_rx.eq(self.uart_rx), self.uart_tx.eq(soc.uart_tx),
                     self.leds.eq(soc.leds), flash.cs_n.eq(soc.flash_cs_n),
                     flash.sck.eq(soc.flash_sck), flash.copi.eq(soc.flash_copi),
                     soc.flash_cipo.eq(flash.cipo)]
        return m


def _client(board):
    return LinkClient(board, byte_time=board.byte_time, timeout_bytes=TIMEOUT_BYTES,
                      exec_time=3000 / board.clk_freq)


def test_soc_runs_the_flashed_image():
    image = random_image(12, (4, 6, 3), split=True)
    dut = FlashedSoC(image, image_blob(image))
    board = PinBoard(dut)
    client = _client(board)
    client.hello()
    for _ in range(50):  # loading takes a few thousand cycles
        if not client.status().not_loaded:
            break
    rng = np.random.default_rng(12)
    x = (rng.random((4, image.n_inputs)) < 0.6).astype(np.uint8)
    result, expect = golden_steps(image, x)
    assert run_steps(client, x) == expect
    st = client.status()
    assert not st.not_loaded and st.load_error == 0


def test_soc_refuses_to_step_on_a_corrupt_flash():
    image = random_image(12, (4, 6, 3), split=True)
    blob = bytearray(image_blob(image))
    blob[len(blob) // 2] ^= 0x01
    dut = FlashedSoC(image, bytes(blob))
    board = PinBoard(dut)
    client = _client(board)
    client.hello()
    for _ in range(50):
        st = client.status()
        if st.load_error:
            break
    assert st.not_loaded and st.load_error == PyLoadError.CRC
    with pytest.raises(ProtocolError, match="NOT_LOADED"):
        client.step([0, 1])

"""The flash loader in the Amaranth simulator, against a behavioural SPI flash serving a blob
with the real command protocol (tests the oracle: the image's own memories, read back through
the array's memory port, and the reason each fault must give)."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.crc import catalog
from amaranth.sim import Simulator
from hypothesis import given, settings

from spikeforge import flashimage
from spikeforge.boards.runtime import _param_words, _weight_words
from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.flashload import (
    FlashLoader,
    FlashReader,
    LoadError,
    LoadState,
    MemLock,
    PyLoadError,
    image_blob,
    image_id,
    image_length,
    image_records,
)
from spikeforge.hdl.spiflash import SpiFlashModel
from spikeforge.protocol import MemSpace

from .strategies import images, random_image
from .test_hdl_array import mem_access

OFFSET = 0x100000


def _connect_spi(m, master, flash):
    m.d.comb += [flash.cs_n.eq(master.cs_n), flash.sck.eq(master.sck),
                 flash.copi.eq(master.copi), master.cipo.eq(flash.cipo)]


def test_reader_wakes_the_flash_and_reads_from_an_address():
    data = bytes(range(7, 200))
    m = Module()
    m.submodules.reader = reader = FlashReader(divisor=2, wake_cycles=5)
    m.submodules.flash = flash = SpiFlashModel(data, base=0x1234)
    _connect_spi(m, reader, flash)
    sim = Simulator(m)
    sim.add_clock(1e-8)
    got = []

    async def bench(ctx):
        await ctx.tick().until(reader.awake & reader.idle)
        for start in (0x1234 + 5, 0x1234 + len(data) - 2):
            ctx.set(reader.addr, start)
            ctx.set(reader.start, 1)
            await ctx.tick()
            ctx.set(reader.start, 0)
            ctx.set(reader.o.ready, 1)
            for _ in range(4):
                # sampled at the edge that takes the byte
                payload, = await ctx.tick().sample(reader.o.payload).until(reader.o.valid)
                got.append(payload)
            ctx.set(reader.o.ready, 0)
            ctx.set(reader.stop, 1)
            await ctx.tick()
            ctx.set(reader.stop, 0)
            await ctx.tick().until(reader.idle)

    sim.add_testbench(bench)
    sim.run()
    # past the end of the window the flash reads erased
    assert got == [*data[5:9], data[-2], data[-1], 0xFF, 0xFF]


def test_powered_down_flash_answers_nothing_without_the_wake_up():
    flash = SpiFlashModel(b"\x12\x34", base=0)
    m = Module()
    m.submodules.flash = flash
    sim = Simulator(m)
    sim.add_clock(1e-8)
    seen = []

    async def bench(ctx):
        ctx.set(flash.cs_n, 0)
        await ctx.tick()
        for bit in [int(b) for b in f"{0x03:08b}{0:024b}"] + [0] * 8:
            ctx.set(flash.copi, bit)
            await ctx.tick()
            ctx.set(flash.sck, 1)
            await ctx.tick()
            seen.append(ctx.get(flash.cipo))
            ctx.set(flash.sck, 0)
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert seen == [1] * 40


class Rig:
    """Flash model -> loader -> lock -> array; the test bench reads through the host side."""

    def __init__(self, image, blob, *, blob_id=None, divisor=1):
        self.image = image
        # the bitstream's own memory contents: this image without its weights
        self.array = CoreArray(_unloaded(image))
        self.loader = FlashLoader(
            image_id=image_id(image) if blob_id is None else blob_id,
            offset=OFFSET, n_cores=len(image.config.cores),
            data_width=self.array.mem_data_width, addr_width=self.array.mem_addr_width,
            length=image_length(image), divisor=divisor, wake_cycles=3)
        self.lock = MemLock(data_width=self.array.mem_data_width,
                            addr_width=self.array.mem_addr_width)
        m = Module()
        m.submodules.array = self.array
        m.submodules.loader = self.loader
        m.submodules.lock = self.lock
        m.submodules.flash = flash = SpiFlashModel(blob + b"\xff" * 8, base=OFFSET)
        _connect_spi(m, self.loader, flash)
        wiring.connect(m, self.loader.mem, self.lock.loader)
        wiring.connect(m, self.lock.o, self.array.mem)
        m.d.comb += self.lock.locked.eq(self.loader.state == LoadState.LOADING)
        self.top = m

    def run(self, *, read=True, max_cycles=400_000):
        sim = Simulator(self.top)
        sim.add_clock(1e-8)
        out = {}
        loader = self.loader
        host = self.lock.host

        async def bench(ctx):
            for _ in range(max_cycles):
                if ctx.get(loader.state) != LoadState.LOADING:
                    break
                await ctx.tick()
            out["state"] = ctx.get(loader.state)
            out["reason"] = ctx.get(loader.reason)
            if read:
                out["mem"] = {}
                for index in range(len(self.image.config.cores)):
                    for space, words in ((MemSpace.PARAMS, _param_words),
                                         (MemSpace.WEIGHTS, _weight_words)):
                        n = len(words(self.image, index))
                        out["mem"][index, space] = [
                            await mem_access(ctx, _Port(host), index, space, a)
                            for a in range(n)]

        sim.add_testbench(bench)
        sim.run()
        return out


class _Port:
    """The lock's host side under the name ``mem`` that test_hdl_array's mem_access drives."""

    def __init__(self, host):
        self.mem = host


def _unloaded(image):
    return image.with_weights([np.zeros_like(layer.weights) for layer in image.layers],
                              [None if layer.rec_weights is None
                               else np.zeros_like(layer.rec_weights) for layer in image.layers])


def _expected(image):
    return {(index, space): words(image, index)
            for index in range(len(image.config.cores))
            for space, words in ((MemSpace.PARAMS, _param_words),
                                 (MemSpace.WEIGHTS, _weight_words))}


def test_good_blob_loads_the_images_memories():
    image = random_image(3, (5, 6, 3), split=True)
    out = Rig(image, image_blob(image)).run()
    assert _expected(image) != _expected(_unloaded(image))
    assert out["state"] == LoadState.READY and out["reason"] == LoadError.NONE
    assert out["mem"] == _expected(image)


def _faulty(image, fault):
    blob = bytearray(image_blob(image))
    if fault == "truncated":
        return bytes(blob[:len(blob) * 2 // 3])
    if fault == "corrupt":
        blob[len(blob) // 2] ^= 0x10
        return bytes(blob)
    if fault == "blank":
        return b"\xff" * len(blob)
    if fault == "magic":
        return b"SFFX" + bytes(blob[4:])
    if fault in ("version", "length"):
        field = {"version": (4, 2, flashimage.FORMAT_VERSION + 1), "length": (12, 4, 1 << 17)}
        at, size, value = field[fault]
        blob[at:at + size] = value.to_bytes(size, "big")
        # a consistent CRC, so only the named field is wrong
        blob[-4:] = catalog.CRC32_BZIP2().compute(bytes(blob[:-4])).to_bytes(4, "big")
        return bytes(blob)
    if fault == "record":
        # a record naming a core the array lacks, with a good CRC
        records = image_records(image)
        records[-1] = flashimage.Record(len(image.config.cores), records[-1].space,
                                        records[-1].addr, records[-1].word_bytes,
                                        records[-1].words)
        return flashimage.encode(records, image_id=image_id(image))
    if fault == "address":
        # a record whose words run past the array's address space, with a good CRC
        records = image_records(image)
        with warnings.catch_warnings():  # built only for its port width
            warnings.simplefilter("ignore", UnusedElaboratable)
            addr_bits = CoreArray(image).mem_addr_width
            gc.collect()
        records[0] = flashimage.Record(records[0].core, records[0].space,
                                       (1 << addr_bits) - 1, records[0].word_bytes,
                                       records[0].words)
        return flashimage.encode(records, image_id=image_id(image))
    if fault in ("space", "word_bytes"):
        # the last record's space (one no memory has) or word width (0), with a good CRC
        at = len(blob) - 4 - sum(len(r.words) * r.word_bytes + flashimage.RECORD.size
                                 for r in image_records(image)[-1:])
        if fault == "space":
            blob[at + 1] = max(flashimage.WRITABLE) + 1
        else:
            blob[at + 2] = 0
        blob[-4:] = catalog.CRC32_BZIP2().compute(bytes(blob[:-4])).to_bytes(4, "big")
        return bytes(blob)
    if fault == "overrun":
        # the last record claims one word more than the blob holds, with a good CRC
        at = len(blob) - 4 - sum(len(r.words) * r.word_bytes + flashimage.RECORD.size
                                 for r in image_records(image)[-1:]) + 8
        end = int.from_bytes(blob[at:at + 4], "big")
        blob[at:at + 4] = (end + 1).to_bytes(4, "big")
        blob[-4:] = catalog.CRC32_BZIP2().compute(bytes(blob[:-4])).to_bytes(4, "big")
        return bytes(blob)
    raise AssertionError(fault)


@pytest.mark.parametrize(("fault", "reason"), [
    ("truncated", PyLoadError.CRC),
    ("corrupt", PyLoadError.CRC),
    ("blank", PyLoadError.BLANK),
    ("magic", PyLoadError.MAGIC),
    ("version", PyLoadError.VERSION),
    ("length", PyLoadError.LENGTH),
    ("record", PyLoadError.RECORD),
    ("address", PyLoadError.RECORD),
    ("space", PyLoadError.RECORD),
    ("word_bytes", PyLoadError.RECORD),
    ("overrun", PyLoadError.RECORD),
])
def test_a_faulty_blob_ends_in_error_with_its_reason(fault, reason):
    image = random_image(4, (4, 5, 2))
    blob = _faulty(image, fault)
    if fault not in ("record", "address"):  # only the gateware knows its cores and depth
        with pytest.raises(flashimage.FlashImageError):
            flashimage.decode(blob + b"\xff" * 8, image_id=image_id(image))
    rig = Rig(image, blob)
    out = rig.run(read=fault in ("corrupt", "truncated", "version"))
    assert out["state"] == LoadState.ERROR
    assert out["reason"] == LoadError[reason.name]
    if "mem" in out:
        # the CRC is checked before any write: nothing of the blob reached the array
        assert out["mem"] == _expected(_unloaded(image))


def test_wrong_image_id_is_refused():
    image = random_image(4, (4, 5, 2))
    other = random_image(4, (4, 6, 2))
    assert image_id(other) != image_id(image)
    out = Rig(image, image_blob(other), blob_id=image_id(image)).run(
        read=False)
    assert (out["state"], out["reason"]) == (LoadState.ERROR, LoadError.IMAGE_ID)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"offset": 1 << 24}, r"^Flash offset must be a 24-bit address, not 16777216$"),
    ({"n_cores": 0}, r"^Core count must be 1\.\.256, not 0$"),
    ({"image_id": 1 << 32}, r"^Image id must be a 32-bit unsigned integer, not 4294967296$"),
    ({"length": 19}, r"^Blob length must be 20\.\.16777216 \(the flash past the offset\), "
                     r"not 19$"),
])
def test_loader_parameters_are_checked(kwargs, message):
    args = {"image_id": 0, "offset": 0, "n_cores": 1, "data_width": 8, "addr_width": 4,
            "length": 20, **kwargs}
    with warnings.catch_warnings():  # the half-built component is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=message):
            FlashLoader(**args)
        gc.collect()


@settings(max_examples=6, deadline=None)
@given(images(max_layers=2, max_width=6))
def test_any_image_loads_from_flash(image):
    out = Rig(image, image_blob(image), divisor=2).run()
    assert (out["state"], out["reason"]) == (LoadState.READY, LoadError.NONE)
    assert out["mem"] == _expected(image)

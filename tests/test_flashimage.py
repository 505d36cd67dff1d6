"""The flash blob contract: layout read back field by field with struct, the CRC against
amaranth's CRC catalogue (CRC-32/BZIP2), every refusal."""

from __future__ import annotations

import struct

import pytest
from amaranth.lib.crc import catalog

from spikeforge import flashimage, protocol
from spikeforge.flashimage import FlashImageError, Record, decode, encode
from spikeforge.hdl.flashload import image_blob, image_id, image_records

from .strategies import random_image


def test_spaces_are_the_protocols():
    for space in flashimage.MemSpace:
        assert protocol.MemSpace[space.name] == space


def test_layout_field_by_field():
    rec = Record(3, flashimage.MemSpace.PARAMS, 5, 2, (0x1234, 0xBEEF))
    blob = encode([rec], image_id=0xCAFE0001)
    assert blob[:4] == b"SFFL"
    assert struct.unpack_from(">HHII", blob, 4) == (2, 1, 0xCAFE0001, len(blob))
    assert struct.unpack_from(">BBBBII", blob, 16) == (3, 2, 2, 0, 5, 7)
    assert blob[28:32] == bytes([0x12, 0x34, 0xBE, 0xEF])
    assert int.from_bytes(blob[-4:], "big") == catalog.CRC32_BZIP2().compute(blob[:-4])
    assert decode(blob + b"\xff" * 9).records == (rec,)


def test_crc_is_bzip2_and_leaves_the_serial_register_at_the_residue():
    data = bytes(range(256)) * 3 + b"spikeforge"
    assert flashimage.crc32(data) == catalog.CRC32_BZIP2().compute(data)
    # the loader's register, one bit at a time MSB first, over the data and its trailer
    reg = 0xFFFF_FFFF
    for byte in data + flashimage.crc32(data).to_bytes(4, "big"):
        for i in range(7, -1, -1):
            feedback = (reg >> 31 ^ byte >> i) & 1
            reg = (reg << 1) & 0xFFFF_FFFF ^ (flashimage.CRC_POLY if feedback else 0)
    assert reg == flashimage.CRC_RESIDUE


def test_image_round_trip():
    image = random_image(2, (6, 10, 3), split=True, recurrent=0)
    got = decode(image_blob(image), image_id=image_id(image))
    assert got.image_id == image_id(image)
    assert list(got.records) == image_records(image)
    # weights may change without a new bitstream; structure may not
    assert image_id(image.with_weights([layer.weights * 0 for layer in image.layers])) == \
        image_id(image)
    assert image_id(random_image(2, (6, 11, 3))) != image_id(image)


def _resealed(blob):
    """``blob`` with its length and CRC made consistent, so only the named field is wrong."""
    blob = bytearray(blob)
    blob[12:16] = len(blob).to_bytes(4, "big")
    blob[-4:] = catalog.CRC32_BZIP2().compute(bytes(blob[:-4])).to_bytes(4, "big")
    return bytes(blob)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b[:10], r"^flash image must be at least 16 bytes, not 10$"),
    (lambda b: b"\xff" * len(b), r"^flash is blank \(erased\) where the image should be$"),
    (lambda b: b"XXXX" + b[4:], r"^flash image magic must be b'SFFL', not b'XXXX'$"),
    (lambda b: b[:4] + b"\x00\x07" + b[6:], r"^flash image version must be 2, not 7$"),
    (lambda b: b[:8] + b"\x00\x00\x00\x01" + b[12:],
     r"^flash image id must be 0x00000000 \(the gateware's\), not 0x00000001$"),
    (lambda b: b[:12] + b"\x00\x00\x00\x08" + b[16:],
     r"^flash image length must be at least 20, not 8$"),
    (lambda b: b[:-3], r"^flash image is truncated: \d+ of \d+ bytes$"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], r"^flash image CRC must be 0x"),
    (lambda b: _resealed(b[:6] + b"\x00\x02" + b[8:]),
     r"^flash image record count must be 1 \(the records before its trailer\), not 2$"),
    (lambda b: _resealed(b[:-4 - 3] + b[-4:]),
     r"^flash image record at byte 16 overruns its length$"),
])
def test_refusals(mutate, message):
    blob = encode([Record(0, flashimage.MemSpace.WEIGHTS, 0, 1, (1, 2, 3))], image_id=0)
    with pytest.raises(FlashImageError, match=message):
        decode(mutate(blob), image_id=0)


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(FlashImageError, match=r"^word of core 0 weights must fit 1 bytes, "
                                              r"not 256$"):
        encode([Record(0, flashimage.MemSpace.WEIGHTS, 0, 1, (256,))], image_id=0)
    with pytest.raises(FlashImageError, match=r"^image id must be a 32-bit unsigned integer"):
        encode([], image_id=-1)

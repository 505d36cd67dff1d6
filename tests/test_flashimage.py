"""The flash blob contract: layout read back field by field with struct/zlib, every refusal."""

from __future__ import annotations

import struct
import zlib

import pytest

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
    assert struct.unpack_from("<HHII", blob, 4) == (1, 1, 0xCAFE0001, len(blob))
    assert struct.unpack_from("<BBBBII", blob, 16) == (3, 2, 2, 0, 5, 2)
    assert blob[28:32] == bytes([0x34, 0x12, 0xEF, 0xBE])
    assert int.from_bytes(blob[-4:], "little") == zlib.crc32(blob[:-4])
    assert decode(blob + b"\xff" * 9).records == (rec,)


def test_image_round_trip():
    image = random_image(2, (6, 10, 3), split=True, recurrent=0)
    got = decode(image_blob(image), image_id=image_id(image))
    assert got.image_id == image_id(image)
    assert list(got.records) == image_records(image)
    # weights may change without a new bitstream; structure may not
    assert image_id(image.with_weights([layer.weights * 0 for layer in image.layers])) == \
        image_id(image)
    assert image_id(random_image(2, (6, 11, 3))) != image_id(image)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b[:10], r"^flash image must be at least 16 bytes, not 10$"),
    (lambda b: b"\xff" * len(b), r"^flash is blank \(erased\) where the image should be$"),
    (lambda b: b"XXXX" + b[4:], r"^flash image magic must be b'SFFL', not b'XXXX'$"),
    (lambda b: b[:4] + b"\x07\x00" + b[6:], r"^flash image version must be 1, not 7$"),
    (lambda b: b[:8] + b"\x01\x00\x00\x00" + b[12:],
     r"^flash image id must be 0x00000000 \(the gateware's\), not 0x00000001$"),
    (lambda b: b[:12] + b"\x08\x00\x00\x00" + b[16:],
     r"^flash image length must be at least 20, not 8$"),
    (lambda b: b[:-3], r"^flash image is truncated: \d+ of \d+ bytes$"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], r"^flash image CRC must be 0x"),
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

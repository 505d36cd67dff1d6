"""The flash image: an image's memory contents as the gateware's flash loader reads them.

A board that runs standalone holds its network's memories (weights and per-neuron parameter
words of every core) in its SPI flash, past the bitstream; the flash loader (``hdl.flashload``)
copies them into the cores at power-up. This module is the blob's contract (docs/flash.md);
it imports nothing of the project (``hdl.flashload.image_blob`` builds the blob of an Image).

Layout, every field and word big-endian (most significant byte first)::

    header   16 bytes  magic b"SFFL" | version u16 | record count u16 | image id u32 | length u32
    record   12 bytes  core u8 | space u8 | word bytes u8 | 0 u8 | address u32 | end u32
             then end - address words of `word bytes` bytes each, for addresses address..end-1
    ...      (record count records, up to the trailer)
    trailer   4 bytes  CRC-32/BZIP2 (:func:`crc32`) of every byte before it

``length`` counts the whole blob, trailer included. ``image id`` names the network structure
the gateware was built for (:func:`image_id`): weights and parameter values may change without
a new bitstream, shapes and widths may not.

Format 2 is chosen for a small bit-serial loader: the SPI flash sends each byte most significant
bit first, so the CRC is the unreflected CRC-32 (one shift per bit as it arrives) and its
trailer, sent most significant byte first, leaves the register at :data:`CRC_RESIDUE`; fields and
words shift in from the right, so a word shorter than the bus needs no alignment.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FLASH_OFFSETS", "MAGIC", "FORMAT_VERSION", "HEADER", "RECORD", "TRAILER_BYTES",
           "CRC_POLY", "CRC_RESIDUE", "FlashImageError",
           "MemSpace", "Record", "FlashImage", "crc32", "encode", "decode"]

MAGIC = b"SFFL"
FORMAT_VERSION = 2
HEADER = struct.Struct(">4sHHII")  # magic, version, record count, image id, length
RECORD = struct.Struct(">BBBxII")  # core, space, word bytes, pad, address, end
TRAILER_BYTES = 4
CRC_POLY = 0x04C1_1DB7
# The CRC register (before the final inversion) after a blob and its own trailer, MSB first
CRC_RESIDUE = 0xC704_DD7B
_REVERSE = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))
# Where the blob sits in a board's SPI flash, per FPGA family: past the largest bitstream of
# the family (iCE40 UP5K: 104,090 bytes; the HX8K, the largest iCE40, 135,100 bytes; ECP5
# LFE5U-85F: about 2.3 MB uncompressed), on a 64 KiB erase-block boundary.
FLASH_OFFSETS = {"ice40": 0x10_0000, "ecp5": 0x30_0000}


class MemSpace(enum.IntEnum):
    """A record's memory space: the values of ``spikeforge.protocol.MemSpace`` it may write
    (ACC is read-only, MOD a per-step input); a test keeps them equal."""

    WEIGHTS = 0
    STATE = 1
    PARAMS = 2


WRITABLE = tuple(MemSpace)


def crc32(data: bytes) -> int:
    """CRC-32/BZIP2 of ``data``: polynomial 0x04C11DB7, register initially all ones, bits taken
    most significant first, no reflection, result inverted (zlib's CRC-32 of the bit-reversed
    bytes, bit-reversed)."""
    reflected = zlib.crc32(bytes(data).translate(_REVERSE))
    return int(f"{reflected:032b}"[::-1], 2)


class FlashImageError(ValueError):
    """A blob that is not a valid flash image; the message names the fault."""


@dataclass(frozen=True)
class Record:
    core: int
    space: MemSpace
    addr: int
    word_bytes: int
    words: tuple[int, ...]


@dataclass(frozen=True)
class FlashImage:
    image_id: int
    records: tuple[Record, ...]


def encode(records: Sequence[Record], *, image_id: int) -> bytes:
    """The blob of ``records`` for the gateware of ``image_id``."""
    if not 0 <= image_id < 1 << 32:
        raise FlashImageError(f"image id must be a 32-bit unsigned integer, not {image_id!r}")
    if len(records) >= 1 << 16:
        raise FlashImageError(f"record count must be below 65536, not {len(records)!r}")
    body = []
    for rec in records:
        if rec.space not in WRITABLE:
            raise FlashImageError(f"record space must be one of "
                                  f"{', '.join(s.name for s in WRITABLE)}, not {rec.space!r}")
        if not 1 <= rec.word_bytes <= 255 or not 0 <= rec.core < 256:
            raise FlashImageError(f"record of core {rec.core!r} with {rec.word_bytes!r}-byte "
                                  f"words does not fit the record header")
        if not 0 <= rec.addr <= rec.addr + len(rec.words) < 1 << 32:
            raise FlashImageError(f"record of core {rec.core} at address {rec.addr!r} with "
                                  f"{len(rec.words)} words does not fit 32-bit addresses")
        body.append(RECORD.pack(rec.core, int(rec.space), rec.word_bytes, rec.addr,
                                rec.addr + len(rec.words)))
        limit = 1 << (8 * rec.word_bytes)
        for word in rec.words:
            if not 0 <= word < limit:
                raise FlashImageError(f"word of core {rec.core} {rec.space.name.lower()} must "
                                      f"fit {rec.word_bytes} bytes, not {word!r}")
            body.append(word.to_bytes(rec.word_bytes, "big"))
    payload = b"".join(body)
    length = HEADER.size + len(payload) + TRAILER_BYTES
    blob = HEADER.pack(MAGIC, FORMAT_VERSION, len(records), image_id, length) + payload
    return blob + crc32(blob).to_bytes(TRAILER_BYTES, "big")


def decode(data: bytes, *, image_id: int | None = None) -> FlashImage:
    """Validate and parse a blob (trailing bytes past ``length``, e.g. erased flash, are
    ignored); the checks and their order are the gateware's. The gateware walks records up to
    the trailer; this also checks their number against the header's record count."""
    data = bytes(data)
    if len(data) < HEADER.size:
        raise FlashImageError(f"flash image must be at least {HEADER.size} bytes, "
                              f"not {len(data)}")
    magic, version, count, blob_id, length = HEADER.unpack_from(data)
    if magic == b"\xff" * 4:
        raise FlashImageError("flash is blank (erased) where the image should be")
    if magic != MAGIC:
        raise FlashImageError(f"flash image magic must be {MAGIC!r}, not {magic!r}")
    if version != FORMAT_VERSION:
        raise FlashImageError(f"flash image version must be {FORMAT_VERSION}, not {version!r}")
    if image_id is not None and blob_id != image_id:
        raise FlashImageError(f"flash image id must be 0x{image_id:08x} (the gateware's), "
                              f"not 0x{blob_id:08x}")
    if length < HEADER.size + TRAILER_BYTES:
        raise FlashImageError(f"flash image length must be at least "
                              f"{HEADER.size + TRAILER_BYTES}, not {length!r}")
    if length > len(data):
        raise FlashImageError(f"flash image is truncated: {len(data)} of {length} bytes")
    body = data[:length - TRAILER_BYTES]
    crc = int.from_bytes(data[length - TRAILER_BYTES:length], "big")
    if crc32(body) != crc:
        raise FlashImageError(f"flash image CRC must be 0x{crc32(body):08x}, not 0x{crc:08x}")
    records, pos = [], HEADER.size
    while pos < len(body):
        if pos + RECORD.size > len(body):
            raise FlashImageError(f"flash image record at byte {pos} overruns its length")
        core, space, word_bytes, addr, stop = RECORD.unpack_from(body, pos)
        pos += RECORD.size
        if space not in {int(s) for s in WRITABLE} or word_bytes == 0 or stop < addr:
            raise FlashImageError(f"flash image record at byte {pos - RECORD.size} has "
                                  f"space {space}, {word_bytes}-byte words and addresses "
                                  f"{addr}..{stop}")
        n = stop - addr
        end = pos + n * word_bytes
        if end > len(body):
            raise FlashImageError(f"flash image record at byte {pos - RECORD.size} overruns "
                                  f"its length")
        words = tuple(int.from_bytes(body[p:p + word_bytes], "big")
                      for p in range(pos, end, word_bytes))
        records.append(Record(core, MemSpace(space), addr, word_bytes, words))
        pos = end
    if len(records) != count:
        raise FlashImageError(f"flash image record count must be {len(records)} (the records "
                              f"before its trailer), not {count}")
    return FlashImage(blob_id, tuple(records))

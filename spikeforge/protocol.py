"""The host side of the spikeforge host protocol (docs/host-protocol.md), without any I/O.

Frames, CRC, command payloads and response parsers are plain functions; :class:`HostLink`
drives them over anything that implements :class:`Transport` (a serial port, or the RTL
simulation of a board), with sequence numbers and retries.

Request:  A5 | seq | cmd | len (u16 LE) | payload[len] | crc (u16 BE)
Response: 5A | seq | cmd | status | len (u16 LE) | payload[len] | crc (u16 BE)

The CRC is CRC-16/CCITT-FALSE over every byte after the start byte, up to the CRC itself.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ARGS_BYTES", "ARRAY_COUNTERS", "COUNTER_BITS", "COUNTER_BYTES", "DEFAULT_MAX_PAYLOAD",
    "HELLO_BYTES",
    "LAYER_COUNTERS", "LINK_COUNTERS", "LINK_COUNTER_BITS", "PROTOCOL_VERSION", "SOF_REQUEST",
    "SOF_RESPONSE", "STEP_END", "Command", "CrcError", "DeviceError", "DeviceInfo", "DeviceStatus",
    "FEATURE_BITMAP", "FEATURE_RATE_ENCODER", "FrameError", "LinkClient", "MemSpace",
    "ProtocolError", "ProtocolViolation", "Response", "ResponseTimeout", "Status", "Transport",
    "bitmap_bytes", "bitmap_payload", "check_hello", "counter_delta", "crc16",
    "decode_response", "encode_request", "encode_response", "frame_bytes", "hello_payload",
    "image_id", "intensity_payload", "parse_bitmap", "parse_events", "parse_hello",
    "parse_intensity", "parse_run", "parse_status", "parse_step", "parse_words", "push_payload",
    "read_mem_payload", "read_response", "run_payload", "status_length", "status_payload",
    "step_requests", "write_mem_payload",
]

# 2: STATUS carries learn_cycles per layer. 3: array counters of COUNTER_BITS (24, wrapping),
# memory requests range-checked (ARG), HELLO ends a step a PUSH left open. 4: bitmap PUSH/STEP,
# the on-chip rate encoder (INTENSITY, STEP_ENCODED, status NO_ENCODER), HELLO's feature byte
# and fabric clock. 5: RUN_ENCODED (a sample's steps in one request, its answer every step's
# output events with a STEP_END after each), HELLO's run_steps.
PROTOCOL_VERSION = 5
SOF_REQUEST = 0xA5
SOF_RESPONSE = 0x5A
ARGS_BYTES = 7  # core, space, address (4), count: the head of READ_MEM and WRITE_MEM
# A device's request payload buffer unless it is built otherwise (hdl.soc.SpikeSoC's; HELLO
# reports the one it has)
DEFAULT_MAX_PAYLOAD = 256
# The array's counters wrap at 2^COUNTER_BITS; the host unrolls the wrap-around from STATUS
# reads frequent enough that none moves by 2^COUNTER_BITS in between (docs/host-protocol.md).
COUNTER_BITS = 24
COUNTER_BYTES = COUNTER_BITS // 8  # array counters in STATUS
LINK_COUNTER_BITS = 16  # the link's own counters
LINK_COUNTERS = ("crc_errors", "framing_errors", "timeouts", "dropped_frames", "duplicates",
                 "overruns")
ARRAY_COUNTERS = ("events_in", "events_out", "busy_cycles", "integrate_cycles")
LAYER_COUNTERS = ("sops", "spikes", "saturations", "learn_cycles")  # each per layer, in order
_REQUEST_HEAD = 5  # SOF, seq, cmd, len
_RESPONSE_HEAD = 6  # SOF, seq, cmd, status, len
HELLO_BYTES = 32
# In a RUN_ENCODED answer, the u16 after each step's output events (never an address: a
# network has at most 0x7FFF outputs).
STEP_END = 0xFFFF
# HELLO's feature bits: what this device's gateware does beyond the commands every one has.
FEATURE_BITMAP = 0x01  # PUSH_BITMAP and STEP_BITMAP
FEATURE_RATE_ENCODER = 0x02  # INTENSITY and STEP_ENCODED: the image encodes on chip
_KNOWN_FEATURES = FEATURE_BITMAP | FEATURE_RATE_ENCODER
_HELLO_MAGIC = b"SF"


class Command(enum.IntEnum):
    HELLO = 0x01
    WRITE_MEM = 0x02
    READ_MEM = 0x03
    CLEAR = 0x04
    PUSH = 0x05
    STEP = 0x06
    STATUS = 0x07
    PUSH_BITMAP = 0x08  # a step's input events as a bitmap of n_inputs bits
    STEP_BITMAP = 0x09
    INTENSITY = 0x0A  # 8-bit intensities of the on-chip rate encoder, from an offset
    STEP_ENCODED = 0x0B  # a step whose input events the rate encoder draws
    RUN_ENCODED = 0x0C  # u16 steps: that many encoded steps; every step's events, STEP_END each


class Status(enum.IntEnum):
    OK = 0x00
    CRC = 0x01  # the frame's CRC did not check; nothing was done
    UNKNOWN_CMD = 0x02
    LENGTH = 0x03  # the payload length does not fit the command
    ARG = 0x04  # core index or memory space out of range
    BUSY = 0x05  # memory access while a step is open (PUSH without STEP)
    NOT_LOADED = 0x06  # PUSH/STEP before the flash loader made the array ready (docs/flash.md)
    NO_ENCODER = 0x07  # INTENSITY/STEP_ENCODED on gateware of an image that does not encode


class MemSpace(enum.IntEnum):
    """Which memory of a core a READ_MEM/WRITE_MEM addresses (``hdl.core.MemSpace`` is built
    from this)."""

    WEIGHTS = 0  # word address = row * groups + group; `lanes` weights packed little-endian
    STATE = 1  # address = local neuron; bits [0, v_bits) = v, bit v_bits = previous spike
    PARAMS = 2  # address = local neuron; the layer's parameter word (image.param_fields)
    ACC = 3  # address = group; `lanes` accumulators of acc_bits, read-only (debug)
    MOD = 4  # address = local neuron; signed 8-bit three-factor modulator, write-only


# -- errors ------------------------------------------------------------------------------------

class ProtocolError(Exception):
    """The device's answer could not be used."""


class FrameError(ProtocolError):
    """A response frame is malformed (bad start byte, length, or an unexpected seq/command)."""


class CrcError(ProtocolError):
    """A response frame's CRC does not check."""


class ResponseTimeout(ProtocolError, TimeoutError):
    """The device did not answer (completely) in time."""


class ProtocolViolation(ProtocolError):
    """The device answered with a clean frame that the protocol does not allow (a value out of
    range, a payload of the wrong size): not retried, since a repeat would answer the same."""


class DeviceError(ProtocolError):
    """The device answered with an error status."""

    def __init__(self, command: int, status: int):
        self.command = command
        self.status = status
        try:
            name = Status(status).name
        except ValueError:
            name = f"unknown status 0x{status:02x}"
        try:
            cmd = Command(command).name
        except ValueError:
            cmd = f"command 0x{command:02x}"
        super().__init__(f"device refused {cmd}: {name}")


# -- CRC and frames ----------------------------------------------------------------------------

def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)."""
    return binascii.crc_hqx(data, crc)


def _frame(sof: int, head: bytes, payload: bytes) -> bytes:
    if len(payload) > 0xFFFF:
        raise ValueError(f"a payload holds at most 65535 bytes, not {len(payload)}")
    body = head + len(payload).to_bytes(2, "little") + payload
    return bytes([sof]) + body + crc16(body).to_bytes(2, "big")


def encode_request(seq: int, command: int, payload: bytes = b"") -> bytes:
    """A request frame."""
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"seq must be a byte, not {seq!r}")
    return _frame(SOF_REQUEST, bytes([seq, int(command)]), bytes(payload))


def encode_response(seq: int, command: int, status: int, payload: bytes = b"") -> bytes:
    """A response frame (what the device sends; for tests and device models)."""
    return _frame(SOF_RESPONSE, bytes([seq, int(command), int(status)]), bytes(payload))


@dataclass(frozen=True)
class Response:
    seq: int
    command: int
    status: int
    payload: bytes


def decode_response(frame: bytes) -> Response:
    """Check and split one complete response frame."""
    if len(frame) < _RESPONSE_HEAD + 2 or frame[0] != SOF_RESPONSE:
        raise FrameError(f"not a response frame: {bytes(frame[:8]).hex()}")
    length = int.from_bytes(frame[4:6], "little")
    if len(frame) != _RESPONSE_HEAD + length + 2:
        raise FrameError(f"response frame of {len(frame)} bytes announces {length} payload "
                         f"bytes")
    if crc16(frame[1:]) != 0:
        raise CrcError(f"response CRC does not check (frame {bytes(frame[:8]).hex()}...)")
    return Response(frame[1], frame[2], frame[3], bytes(frame[_RESPONSE_HEAD:-2]))


class Transport(Protocol):
    """A byte pipe to a device."""

    def write(self, data: bytes) -> None:
        """Send all of ``data``."""

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes; fewer if ``timeout`` seconds pass first."""


def read_response(transport: Transport, timeout: float, *, max_skip: int = 4096) -> Response:
    """Read one response frame: skip bytes up to a start byte, then read the frame it announces.

    Each read waits at most ``timeout`` seconds (of the transport's clock): a short read raises
    ResponseTimeout. Bytes before the start byte are skipped for at most ``max_skip`` bytes and
    ``timeout`` seconds of wall time after the first of them (a device that trickles garbage
    is refused as fast as one that floods it), else FrameError. So one call takes at most about
    four times ``timeout``."""

    def take(n: int) -> bytes:
        got = transport.read(n, timeout)
        if len(got) < n:
            raise ResponseTimeout(f"no complete response within {timeout:.3g} s "
                                  f"({len(got)} of {n} bytes)")
        return got

    garbage_until = None
    for skipped in range(max_skip + 1):
        if take(1)[0] == SOF_RESPONSE:
            break
        if garbage_until is None:
            garbage_until = time.monotonic() + timeout
        elif time.monotonic() > garbage_until:
            raise FrameError(f"no response start byte in {skipped + 1} bytes over "
                             f"{timeout:.3g} s")
    else:
        raise FrameError(f"no response start byte in {max_skip} bytes")
    head = take(_RESPONSE_HEAD - 1)
    length = int.from_bytes(head[3:5], "little")
    rest = take(length + 2)
    return decode_response(bytes([SOF_RESPONSE]) + head + rest)


# -- payloads ----------------------------------------------------------------------------------

def _args(core: int, space: int, addr: int, count: int) -> bytes:
    if not 0 <= core <= 0xFF:
        raise ValueError(f"core index must be a byte, not {core!r}")
    if not 0 <= int(space) < len(MemSpace):
        raise ValueError(f"memory space must be 0..{len(MemSpace) - 1}, not {space!r}")
    if not 0 <= addr <= 0xFFFFFFFF:
        raise ValueError(f"address must fit 32 bits, not {addr!r}")
    if not 0 <= count <= 0xFF:
        raise ValueError(f"a memory request moves 0..255 words, not {count!r}")
    return bytes([core, int(space)]) + addr.to_bytes(4, "little") + bytes([count])


def read_mem_payload(core: int, space: int, addr: int, count: int) -> bytes:
    return _args(core, space, addr, count)


def write_mem_payload(core: int, space: int, addr: int, words: Sequence[int],
                      word_bytes: int) -> bytes:
    head = _args(core, space, addr, len(words))
    body = bytearray()
    for word in words:
        if not 0 <= word < 1 << (8 * word_bytes):
            raise ValueError(f"word {word!r} does not fit {word_bytes} bytes")
        body += int(word).to_bytes(word_bytes, "little")
    return head + bytes(body)


def push_payload(addresses: Iterable[int]) -> bytes:
    out = bytearray()
    for addr in addresses:
        if not 0 <= addr <= 0xFFFF:
            raise ValueError(f"event address must fit 16 bits, not {addr!r}")
        out += int(addr).to_bytes(2, "little")
    return bytes(out)


def bitmap_bytes(n_inputs: int) -> int:
    """Bytes of a step's input bitmap: one bit per input."""
    return -(-int(n_inputs) // 8)


def bitmap_payload(addresses: Iterable[int], n_inputs: int) -> bytes:
    """A step's input events as a bitmap (PUSH_BITMAP, STEP_BITMAP): bit ``a % 8`` of byte
    ``a // 8`` is set for every address ``a``; the bits past ``n_inputs`` are 0. An address given
    twice is one event, and the events enter the array in ascending order."""
    if not 1 <= n_inputs <= 0x10000:
        raise ValueError(f"input count must be 1..65536, not {n_inputs!r}")
    out = bytearray(bitmap_bytes(n_inputs))
    for addr in addresses:
        if not 0 <= addr < n_inputs:
            raise ValueError(f"event address must be below n_inputs ({n_inputs}), not {addr!r}")
        out[addr >> 3] |= 1 << (addr & 7)
    return bytes(out)


def parse_bitmap(payload: bytes, n_inputs: int) -> list[int]:
    """The ascending addresses of a bitmap payload (what the device does with one)."""
    if len(payload) != bitmap_bytes(n_inputs):
        raise ValueError(f"a bitmap of {n_inputs} inputs must hold {bitmap_bytes(n_inputs)} "
                         f"bytes, not {len(payload)}")
    return [a for a in range(n_inputs) if payload[a >> 3] >> (a & 7) & 1]


def intensity_payload(offset: int, values: Sequence[int]) -> bytes:
    """INTENSITY: ``offset`` (u16) then one byte per input from ``offset`` up."""
    if not 0 <= offset <= 0xFFFF:
        raise ValueError(f"intensity offset must fit 16 bits, not {offset!r}")
    if not values:
        raise ValueError("an INTENSITY request must carry at least one intensity")
    if any(not 0 <= int(v) <= 0xFF for v in values):
        raise ValueError("intensities must lie in 0..255")
    return offset.to_bytes(2, "little") + bytes(int(v) for v in values)


def parse_intensity(payload: bytes) -> tuple[int, list[int]]:
    """``(offset, intensities)`` of an INTENSITY payload."""
    if len(payload) < 3:
        raise ValueError(f"an INTENSITY payload must hold an offset and at least one "
                         f"intensity, not {len(payload)} bytes")
    return int.from_bytes(payload[:2], "little"), list(payload[2:])


def frame_bytes(payload_bytes: int, answer_bytes: int = 0) -> int:
    """Bytes on the wire for one request and its OK answer."""
    return _REQUEST_HEAD + payload_bytes + 2 + _RESPONSE_HEAD + answer_bytes + 2


def step_requests(addresses: Sequence[int], n_inputs: int, max_payload: int,
                  *, bitmap: bool = True) -> list[tuple[Command, bytes]]:
    """The requests of one timestep, in the encoding with fewer bytes on the wire: AER (PUSH
    frames of ``max_payload / 2`` events, then a STEP) or, with ``bitmap``, one STEP_BITMAP
    (when the bitmap fits a payload)."""
    addresses = list(addresses)
    per = max_payload // 2
    cut = max(0, (len(addresses) - 1) // per * per)
    aer = [(Command.PUSH, push_payload(addresses[k:k + per])) for k in range(0, cut, per)]
    aer.append((Command.STEP, push_payload(addresses[cut:])))
    if not bitmap or bitmap_bytes(n_inputs) > max_payload:
        return aer
    bits = [(Command.STEP_BITMAP, bitmap_payload(addresses, n_inputs))]
    cost = lambda requests: sum(frame_bytes(len(p)) for _, p in requests)  # noqa: E731
    return bits if cost(bits) < cost(aer) else aer


def parse_words(payload: bytes, word_bytes: int, count: int | None = None) -> list[int]:
    """Little-endian words of ``word_bytes``; exactly ``count`` of them when given
    (:class:`ProtocolViolation` otherwise)."""
    if word_bytes < 1 or len(payload) % word_bytes or (
            count is not None and len(payload) != count * word_bytes):
        want = f"{count} words" if count is not None else "whole words"
        raise ProtocolViolation(f"answer must hold {want} of {word_bytes} bytes, not "
                                f"{len(payload)} bytes")
    return [int.from_bytes(payload[k:k + word_bytes], "little")
            for k in range(0, len(payload), word_bytes)]


def parse_events(payload: bytes) -> list[int]:
    return parse_words(payload, 2)


def parse_step(payload: bytes, n_outputs: int, max_spikes: int = 1) -> list[int]:
    """A STEP answer: output neuron indices, ascending, below ``n_outputs``; strictly
    ascending unless the output layer is multi-spike (``max_spikes`` > 1), whose neurons'
    counts come as up to ``max_spikes`` repeats of their index."""
    if len(payload) % 2:
        raise ProtocolViolation(f"STEP answer must hold whole u16 events, not {len(payload)} "
                                f"bytes")
    events = parse_events(payload)
    most = n_outputs * max_spikes
    if len(events) > most:
        what = "n_outputs" if max_spikes == 1 else "n_outputs x max_spikes"
        raise ProtocolViolation(f"STEP answer must hold at most {what} ({most}) "
                                f"events, not {len(events)}")
    repeats = max_spikes > 1 and len(events) > max_spikes and any(
        a == b for a, b in zip(events, events[max_spikes:], strict=False))
    if any(a > b or (a == b and max_spikes == 1)
           for a, b in zip(events, events[1:], strict=False)) or repeats or (
            events and events[-1] >= n_outputs):
        shown = events if len(events) <= 12 else [*events[:12], "..."]
        raise ProtocolViolation(f"STEP answer's events must ascend below n_outputs "
                                f"({n_outputs}), not {shown}")
    return events


def run_payload(steps: int) -> bytes:
    """RUN_ENCODED: the steps to run (u16, 1..HELLO's ``run_steps``)."""
    if not 1 <= steps <= 0xFFFF:
        raise ValueError(f"a RUN_ENCODED request runs 1..65535 steps, not {steps!r}")
    return steps.to_bytes(2, "little")


def parse_run(payload: bytes, steps: int, n_outputs: int,
              max_spikes: int = 1) -> list[list[int]]:
    """A RUN_ENCODED answer: per step its output events (each step as :func:`parse_step`
    checks them), each step's ended by a ``STEP_END``; exactly ``steps`` of them."""
    if len(payload) % 2:
        raise ProtocolViolation(f"RUN_ENCODED answer must hold whole u16 words, not "
                                f"{len(payload)} bytes")
    words = parse_events(payload)
    ends = [k for k, word in enumerate(words) if word == STEP_END]
    if len(ends) != steps or (words and words[-1] != STEP_END) or not words:
        raise ProtocolViolation(f"RUN_ENCODED answer must end {steps} steps with STEP_END, "
                                f"not {len(ends)} in {len(words)} words")
    out, start = [], 0
    for end in ends:
        chunk = b"".join(w.to_bytes(2, "little") for w in words[start:end])
        try:
            out.append(parse_step(chunk, n_outputs, max_spikes))
        except ProtocolViolation as exc:
            raise ProtocolViolation(f"RUN_ENCODED step {len(out)}: {exc}") from None
        start = end + 1
    return out


@dataclass(frozen=True)
class DeviceInfo:
    version: int
    n_cores: int
    n_layers: int
    counter_bytes: int
    word_bytes: int
    mem_data_bits: int
    mem_addr_bits: int
    max_payload: int
    timeout_bytes: int
    n_inputs: int
    n_outputs: int
    image_id: int
    features: int = 0  # FEATURE_* bits
    clock_hz: int = 0  # the fabric clock the gateware was built for (0: not known)
    run_steps: int = 0  # most steps of one RUN_ENCODED (0: the device has no rate encoder)

    @property
    def bitmap(self) -> bool:
        return bool(self.features & FEATURE_BITMAP)

    @property
    def rate_encoder(self) -> bool:
        return bool(self.features & FEATURE_RATE_ENCODER)


def hello_payload(*, n_cores: int, n_layers: int, word_bytes: int, mem_data_bits: int,
                  mem_addr_bits: int, max_payload: int, timeout_bytes: int, n_inputs: int,
                  n_outputs: int, image_id: int, features: int = FEATURE_BITMAP,
                  clock_hz: int = 0, run_steps: int = 0) -> bytes:
    """The payload of the HELLO response (what the device sends; :func:`parse_hello` reads it)."""
    return b"".join([
        _HELLO_MAGIC,
        bytes([PROTOCOL_VERSION, n_cores, n_layers, COUNTER_BYTES, word_bytes,
               mem_data_bits, mem_addr_bits, features]),
        max_payload.to_bytes(2, "little"),
        timeout_bytes.to_bytes(2, "little"),
        n_inputs.to_bytes(4, "little"),
        n_outputs.to_bytes(4, "little"),
        image_id.to_bytes(4, "little"),
        int(clock_hz).to_bytes(4, "little"),
        int(run_steps).to_bytes(2, "little"),
    ])


def parse_hello(payload: bytes) -> DeviceInfo:
    """The fields of a HELLO answer (:func:`check_hello` checks their values)."""
    if len(payload) != HELLO_BYTES or payload[:2] != _HELLO_MAGIC:
        raise ProtocolViolation(f"HELLO answer must be {HELLO_BYTES} bytes starting with "
                                f"{_HELLO_MAGIC!r}, not {len(payload)} bytes "
                                f"{payload[:8].hex()}")
    u16 = lambda k: int.from_bytes(payload[k:k + 2], "little")  # noqa: E731
    u32 = lambda k: int.from_bytes(payload[k:k + 4], "little")  # noqa: E731
    return DeviceInfo(version=payload[2], n_cores=payload[3], n_layers=payload[4],
                      counter_bytes=payload[5], word_bytes=payload[6],
                      mem_data_bits=payload[7], mem_addr_bits=payload[8],
                      max_payload=u16(10), timeout_bytes=u16(12), n_inputs=u32(14),
                      n_outputs=u32(18), image_id=u32(22), features=payload[9],
                      clock_hz=u32(26), run_steps=u16(30))


def check_hello(info: DeviceInfo) -> None:
    """Raise :class:`ProtocolViolation` naming the first HELLO field that this host cannot use
    (everything the client divides by, sizes its requests with or checks answers against)."""
    word_bytes = -(-info.mem_data_bits // 8)
    checks = [
        ("version", info.version, PROTOCOL_VERSION == info.version, f"{PROTOCOL_VERSION}"),
        ("counter_bytes", info.counter_bytes, info.counter_bytes == COUNTER_BYTES,
         f"{COUNTER_BYTES}"),
        ("n_cores", info.n_cores, info.n_cores >= 1, "at least 1"),
        ("n_layers", info.n_layers, info.n_layers >= 1, "at least 1"),
        ("mem_data_bits", info.mem_data_bits, info.mem_data_bits >= 1, "at least 1"),
        ("word_bytes", info.word_bytes, info.word_bytes == word_bytes,
         f"{word_bytes} (mem_data_bits {info.mem_data_bits} in whole bytes)"),
        ("mem_addr_bits", info.mem_addr_bits, 1 <= info.mem_addr_bits <= 32, "1..32"),
        ("max_payload", info.max_payload, info.max_payload >= ARGS_BYTES + info.word_bytes,
         f"at least {ARGS_BYTES + info.word_bytes} (a WRITE_MEM of one word)"),
        ("timeout_bytes", info.timeout_bytes, info.timeout_bytes >= 1, "at least 1"),
        ("n_inputs", info.n_inputs, 1 <= info.n_inputs <= 0x10000,
         "1..65536 (u16 event addresses)"),
        ("n_outputs", info.n_outputs, 1 <= info.n_outputs <= 0x7FFF,
         "1..32767 (a STEP answer's payload)"),
        ("features", info.features, not info.features & ~_KNOWN_FEATURES,
         f"a combination of 0x{_KNOWN_FEATURES:02x}"),
        ("run_steps", info.run_steps, (info.run_steps >= 1) == info.rate_encoder,
         "at least 1 with the rate encoder, else 0"),
    ]
    for name, value, ok, want in checks:
        if not ok:
            hint = " (gateware built by another spikeforge: build it again)" \
                if name == "version" else ""
            raise ProtocolViolation(f"HELLO's {name} must be {want}, not {value!r}{hint}")


@dataclass(frozen=True)
class DeviceStatus:
    version: int
    overflow: bool  # sticky: the array lost an event
    idle: bool
    link_error: bool  # sticky: the link saw a bad frame, framing error, timeout or overrun
    link: dict[str, int]  # LINK_COUNTERS, each modulo 2^LINK_COUNTER_BITS
    events_in: int  # the array's counters, each modulo 2^COUNTER_BITS
    events_out: int
    busy_cycles: int
    integrate_cycles: int
    sops: list[int]  # per layer
    spikes: list[int]
    saturations: list[int]
    learn_cycles: list[int]  # weight read-modify-write cycles of learning (0: layer learns not)
    not_loaded: bool = False  # the flash loader has not (yet) made the array ready
    load_error: int = 0  # the flash loader's reason code (docs/flash.md), 0: none


def status_length(n_layers: int) -> int:
    """Bytes of the STATUS response payload."""
    return 4 + 2 * len(LINK_COUNTERS) + COUNTER_BYTES * (
        len(ARRAY_COUNTERS) + len(LAYER_COUNTERS) * n_layers)


def status_payload(status: DeviceStatus) -> bytes:
    """The STATUS answer's payload (what the device sends; :func:`parse_status` reads it)."""
    n_layers = len(status.sops)
    flags = int(status.overflow) | int(status.idle) << 1 | int(status.link_error) << 2
    return b"".join([
        bytes([status.version, flags, n_layers, 0]),
        *(status.link[name].to_bytes(2, "little") for name in LINK_COUNTERS),
        *(getattr(status, name).to_bytes(COUNTER_BYTES, "little") for name in ARRAY_COUNTERS),
        *(value.to_bytes(COUNTER_BYTES, "little")
          for name in LAYER_COUNTERS for value in getattr(status, name)),
    ])


def parse_status(payload: bytes, n_layers: int | None = None) -> DeviceStatus:
    """A STATUS answer; with ``n_layers`` (HELLO's) its layer count must match."""
    if len(payload) < 4:
        raise ProtocolViolation(f"STATUS answer must hold at least 4 bytes, not "
                                f"{len(payload)}")
    if payload[0] != PROTOCOL_VERSION:
        raise ProtocolViolation(f"STATUS answer's version must be {PROTOCOL_VERSION}, not "
                                f"{payload[0]}")
    if n_layers is not None and payload[2] != n_layers:
        raise ProtocolViolation(f"STATUS answer's n_layers must be HELLO's {n_layers}, not "
                                f"{payload[2]}")
    n_layers = payload[2]
    if len(payload) != status_length(n_layers):
        raise ProtocolViolation(f"STATUS answer for {n_layers} layers must hold "
                                f"{status_length(n_layers)} bytes, not {len(payload)}")
    link = {name: int.from_bytes(payload[4 + 2 * k:6 + 2 * k], "little")
            for k, name in enumerate(LINK_COUNTERS)}
    base = 4 + 2 * len(LINK_COUNTERS)
    values = [int.from_bytes(payload[k:k + COUNTER_BYTES], "little")
              for k in range(base, len(payload), COUNTER_BYTES)]
    fixed = dict(zip(ARRAY_COUNTERS, values[:len(ARRAY_COUNTERS)], strict=True))
    layers = values[len(ARRAY_COUNTERS):]
    per_layer = {name: layers[k * n_layers:(k + 1) * n_layers]
                 for k, name in enumerate(LAYER_COUNTERS)}
    flags = payload[1]
    return DeviceStatus(
        version=payload[0], overflow=bool(flags & 1), idle=bool(flags & 2),
        link_error=bool(flags & 4), link=link, **fixed, **per_layer,
        not_loaded=bool(flags & 8), load_error=flags >> 5)


def counter_delta(before: int, after: int, bits: int = COUNTER_BITS) -> int:
    """How far a counter that wraps at ``2**bits`` moved from one read to the next: exact as
    long as it moved less than ``2**bits`` in between."""
    return (after - before) % (1 << bits)


def image_id(image_bytes: bytes) -> int:
    """The 32-bit image identity HELLO reports: SHA-256 of the image file, first 4 bytes LE."""
    return int.from_bytes(hashlib.sha256(image_bytes).digest()[:4], "little")


# -- the client --------------------------------------------------------------------------------

class LinkClient:
    """Requests with sequence numbers and retries over a :class:`Transport`.

    A request that gets no (complete, CRC-clean) answer, or that the device reports as
    corrupted (status CRC), is sent again with the same ``seq``; the device answers a repeat
    of its last executed request without executing it again. Before a retry the client stays
    silent for the device's receive timeout, so the device has dropped any partial frame.

    ``byte_time`` is the duration of one byte on the line (10 / baud); ``exec_time`` bounds
    the device's work for one request (a STEP of a large network).
    """

    def __init__(self, transport: Transport, *, byte_time: float, timeout_bytes: int = 128,
                 exec_time: float = 0.05, retries: int = 3, seq: int = 0):
        self.transport = transport
        self.byte_time = float(byte_time)
        self.timeout_bytes = int(timeout_bytes)
        self.exec_time = float(exec_time)
        self.retries = int(retries)
        self._seq = int(seq) & 0xFF
        self.info: DeviceInfo | None = None
        self.retried = 0  # requests sent again, over the client's life

    def _timeout(self, request_bytes: int, answer_bytes: int) -> float:
        line = request_bytes + answer_bytes + _RESPONSE_HEAD + 2
        return (line + self.timeout_bytes) * self.byte_time + self.exec_time

    def request(self, command: Command, payload: bytes = b"", *,
                answer_bytes: int = 0) -> Response:
        """Send one request and return its OK answer; retry on lost or damaged frames."""
        self._seq = (self._seq + 1) & 0xFF
        frame = encode_request(self._seq, command, payload)
        timeout = self._timeout(len(frame), answer_bytes)
        last: ProtocolError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                # Silence (and drain late bytes) until the device dropped any partial frame.
                self.transport.read(1 << 20, (self.timeout_bytes + 2) * self.byte_time)
            self.transport.write(frame)
            try:
                response = read_response(self.transport, timeout)
            except (ResponseTimeout, CrcError, FrameError) as exc:
                last = exc
                continue
            if response.seq != self._seq or response.command != command:
                last = FrameError(f"answer to seq {response.seq} command {response.command}, "
                                  f"expected seq {self._seq} command {int(command)}")
                continue
            if response.status == Status.CRC:
                last = DeviceError(command, response.status)
                continue
            if response.status != Status.OK:
                raise DeviceError(command, response.status)
            return response
        raise last

    # -- commands ------------------------------------------------------------------------------
    def hello(self) -> DeviceInfo:
        """HELLO: start a session; the device's answer is checked (:func:`check_hello`) before
        any of it is used."""
        response = self.request(Command.HELLO, answer_bytes=HELLO_BYTES)
        info = parse_hello(response.payload)
        check_hello(info)
        self.info = info
        self.timeout_bytes = info.timeout_bytes
        return info

    def _need_info(self) -> DeviceInfo:
        if self.info is None:
            self.hello()
        return self.info

    def _empty(self, command: Command, payload: bytes = b"") -> None:
        answer = self.request(command, payload).payload
        if answer:
            raise ProtocolViolation(f"{command.name} answer must be empty, not "
                                    f"{len(answer)} bytes")

    def write_mem(self, core: int, space: int, addr: int, words: Sequence[int]) -> None:
        info = self._need_info()
        per = min(255, (info.max_payload - ARGS_BYTES) // info.word_bytes)
        for k in range(0, len(words), per):
            self._empty(Command.WRITE_MEM, write_mem_payload(
                core, space, addr + k, words[k:k + per], info.word_bytes))

    def read_mem(self, core: int, space: int, addr: int, count: int) -> list[int]:
        info = self._need_info()
        out: list[int] = []
        while len(out) < count:
            n = min(255, count - len(out))
            response = self.request(Command.READ_MEM, read_mem_payload(
                core, space, addr + len(out), n), answer_bytes=n * info.word_bytes)
            try:
                out += parse_words(response.payload, info.word_bytes, n)
            except ProtocolViolation as exc:
                raise ProtocolViolation(f"READ_MEM {exc}") from None
        return out

    def clear(self) -> None:
        self._empty(Command.CLEAR)

    def push(self, addresses: Sequence[int]) -> None:
        info = self._need_info()
        per = info.max_payload // 2
        for k in range(0, len(addresses), per):
            self._empty(Command.PUSH, push_payload(addresses[k:k + per]))

    def step(self, addresses: Sequence[int] = (), max_spikes: int = 1) -> list[int]:
        """One timestep: its input events (as AER frames or a bitmap, whichever is shorter on
        the wire, :func:`step_requests`), then the output events of the step (checked:
        ascending, below ``n_outputs``; a neuron of a multi-spike output layer up to
        ``max_spikes`` times in a row)."""
        info = self._need_info()
        requests = step_requests(addresses, info.n_inputs, info.max_payload,
                                 bitmap=info.bitmap)
        for command, payload in requests[:-1]:
            self._empty(command, payload)
        command, payload = requests[-1]
        response = self.request(command, payload,
                                answer_bytes=2 * info.n_outputs * max_spikes)
        return parse_step(response.payload, info.n_outputs, max_spikes)

    def _need_encoder(self, what: str) -> DeviceInfo:
        info = self._need_info()
        if not info.rate_encoder:
            raise ProtocolViolation(f"{what} needs gateware with the on-chip rate encoder; "
                                    f"this device's image does not encode on chip")
        return info

    def intensity(self, values: Sequence[int]) -> None:
        """A sample's 8-bit intensities for the on-chip rate encoder, all ``n_inputs`` of them
        (in as many INTENSITY frames as needed)."""
        info = self._need_encoder("INTENSITY")
        if len(values) != info.n_inputs:
            raise ValueError(f"need {info.n_inputs} intensities, not {len(values)}")
        per = info.max_payload - 2
        for k in range(0, len(values), per):
            self._empty(Command.INTENSITY, intensity_payload(k, values[k:k + per]))

    def step_encoded(self, max_spikes: int = 1) -> list[int]:
        """One timestep whose input events the rate encoder draws; its output events (as
        :meth:`step`)."""
        info = self._need_encoder("STEP_ENCODED")
        response = self.request(Command.STEP_ENCODED,
                                answer_bytes=2 * info.n_outputs * max_spikes)
        return parse_step(response.payload, info.n_outputs, max_spikes)

    def run_encoded(self, steps: int, max_spikes: int = 1) -> list[list[int]]:
        """``steps`` timesteps whose input events the rate encoder draws, in one request (at
        most HELLO's ``run_steps``); per step its output events (as :meth:`step`)."""
        info = self._need_encoder("RUN_ENCODED")
        if not 1 <= steps <= info.run_steps:
            raise ValueError(f"a RUN_ENCODED request runs 1..{info.run_steps} steps on this "
                             f"device, not {steps!r}")
        response = self.request(Command.RUN_ENCODED, run_payload(steps),
                                answer_bytes=2 * steps * (info.n_outputs * max_spikes + 1))
        return parse_run(response.payload, steps, info.n_outputs, max_spikes)

    def status(self) -> DeviceStatus:
        info = self._need_info()
        response = self.request(Command.STATUS, answer_bytes=status_length(info.n_layers))
        return parse_status(response.payload, info.n_layers)

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ARGS_BYTES", "ARRAY_COUNTERS", "COUNTER_BYTES", "LAYER_COUNTERS", "LINK_COUNTERS",
    "PROTOCOL_VERSION", "SOF_REQUEST", "SOF_RESPONSE", "Command", "CrcError", "DeviceError",
    "DeviceInfo", "DeviceStatus", "FrameError", "LinkClient", "MemSpace", "ProtocolError",
    "Response", "ResponseTimeout", "Status", "Transport", "crc16", "decode_response",
    "encode_request", "encode_response", "hello_payload", "image_id", "parse_events",
    "parse_hello", "parse_status", "parse_words", "push_payload", "read_mem_payload",
    "read_response", "status_length", "write_mem_payload",
]

PROTOCOL_VERSION = 2  # 2: STATUS carries learn_cycles per layer
SOF_REQUEST = 0xA5
SOF_RESPONSE = 0x5A
ARGS_BYTES = 7  # core, space, address (4), count: the head of READ_MEM and WRITE_MEM
COUNTER_BYTES = 6  # array counters in STATUS (the link's own counters are 16 bits)
LINK_COUNTERS = ("crc_errors", "framing_errors", "timeouts", "dropped_frames", "duplicates",
                 "overruns")
ARRAY_COUNTERS = ("events_in", "events_out", "busy_cycles", "integrate_cycles")
LAYER_COUNTERS = ("sops", "spikes", "saturations", "learn_cycles")  # each per layer, in order
_REQUEST_HEAD = 5  # SOF, seq, cmd, len
_RESPONSE_HEAD = 6  # SOF, seq, cmd, status, len
_HELLO_BYTES = 26
_HELLO_MAGIC = b"SF"


class Command(enum.IntEnum):
    HELLO = 0x01
    WRITE_MEM = 0x02
    READ_MEM = 0x03
    CLEAR = 0x04
    PUSH = 0x05
    STEP = 0x06
    STATUS = 0x07


class Status(enum.IntEnum):
    OK = 0x00
    CRC = 0x01  # the frame's CRC did not check; nothing was done
    UNKNOWN_CMD = 0x02
    LENGTH = 0x03  # the payload length does not fit the command
    ARG = 0x04  # core index or memory space out of range
    BUSY = 0x05  # memory access while a step is open (PUSH without STEP)
    NOT_LOADED = 0x06  # PUSH/STEP before the flash loader made the array ready (docs/flash.md)


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
    """Read one response frame: skip bytes up to a start byte (at most ``max_skip``), then read
    the frame it announces. Each read waits at most ``timeout`` seconds (of the transport's
    clock); a short read raises ResponseTimeout."""

    def take(n: int) -> bytes:
        got = transport.read(n, timeout)
        if len(got) < n:
            raise ResponseTimeout(f"no complete response within {timeout:.3g} s "
                                  f"({len(got)} of {n} bytes)")
        return got

    for _ in range(max_skip + 1):
        if take(1)[0] == SOF_RESPONSE:
            break
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


def parse_words(payload: bytes, word_bytes: int) -> list[int]:
    if len(payload) % word_bytes:
        raise FrameError(f"{len(payload)} bytes are not whole {word_bytes}-byte words")
    return [int.from_bytes(payload[k:k + word_bytes], "little")
            for k in range(0, len(payload), word_bytes)]


def parse_events(payload: bytes) -> list[int]:
    return parse_words(payload, 2)


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


def hello_payload(*, n_cores: int, n_layers: int, word_bytes: int, mem_data_bits: int,
                  mem_addr_bits: int, max_payload: int, timeout_bytes: int, n_inputs: int,
                  n_outputs: int, image_id: int) -> bytes:
    """The payload of the HELLO response (what the device sends; :func:`parse_hello` reads it)."""
    return b"".join([
        _HELLO_MAGIC,
        bytes([PROTOCOL_VERSION, n_cores, n_layers, COUNTER_BYTES, word_bytes,
               mem_data_bits, mem_addr_bits, 0]),
        max_payload.to_bytes(2, "little"),
        timeout_bytes.to_bytes(2, "little"),
        n_inputs.to_bytes(4, "little"),
        n_outputs.to_bytes(4, "little"),
        image_id.to_bytes(4, "little"),
    ])


def parse_hello(payload: bytes) -> DeviceInfo:
    if len(payload) != _HELLO_BYTES or payload[:2] != _HELLO_MAGIC:
        raise FrameError(f"not a HELLO answer: {payload[:8].hex()}")
    u16 = lambda k: int.from_bytes(payload[k:k + 2], "little")  # noqa: E731
    u32 = lambda k: int.from_bytes(payload[k:k + 4], "little")  # noqa: E731
    return DeviceInfo(version=payload[2], n_cores=payload[3], n_layers=payload[4],
                      counter_bytes=payload[5], word_bytes=payload[6],
                      mem_data_bits=payload[7], mem_addr_bits=payload[8],
                      max_payload=u16(10), timeout_bytes=u16(12), n_inputs=u32(14),
                      n_outputs=u32(18), image_id=u32(22))


@dataclass(frozen=True)
class DeviceStatus:
    version: int
    overflow: bool  # sticky: the array lost an event
    idle: bool
    link_error: bool  # sticky: the link saw a bad frame, framing error, timeout or overrun
    link: dict[str, int]  # LINK_COUNTERS, each modulo 2^16
    events_in: int
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


def parse_status(payload: bytes) -> DeviceStatus:
    if len(payload) < 4:
        raise FrameError(f"STATUS answer too short: {len(payload)} bytes")
    n_layers = payload[2]
    if len(payload) != status_length(n_layers):
        raise FrameError(f"STATUS answer of {len(payload)} bytes, expected "
                         f"{status_length(n_layers)} for {n_layers} layers")
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
        info = parse_hello(self.request(Command.HELLO, answer_bytes=_HELLO_BYTES).payload)
        if info.version != PROTOCOL_VERSION:
            raise ProtocolError(f"device speaks protocol version {info.version}, this host "
                                f"speaks {PROTOCOL_VERSION}")
        self.info = info
        self.timeout_bytes = info.timeout_bytes
        return info

    def _need_info(self) -> DeviceInfo:
        if self.info is None:
            self.hello()
        return self.info

    def write_mem(self, core: int, space: int, addr: int, words: Sequence[int]) -> None:
        info = self._need_info()
        per = max(1, min(255, (info.max_payload - ARGS_BYTES) // info.word_bytes))
        for k in range(0, len(words), per):
            self.request(Command.WRITE_MEM, write_mem_payload(
                core, space, addr + k, words[k:k + per], info.word_bytes))

    def read_mem(self, core: int, space: int, addr: int, count: int) -> list[int]:
        info = self._need_info()
        out: list[int] = []
        while len(out) < count:
            n = min(255, count - len(out))
            response = self.request(Command.READ_MEM, read_mem_payload(
                core, space, addr + len(out), n), answer_bytes=n * info.word_bytes)
            out += parse_words(response.payload, info.word_bytes)
        return out

    def clear(self) -> None:
        self.request(Command.CLEAR)

    def push(self, addresses: Sequence[int]) -> None:
        info = self._need_info()
        per = info.max_payload // 2
        for k in range(0, len(addresses), per):
            self.request(Command.PUSH, push_payload(addresses[k:k + per]))

    def step(self, addresses: Sequence[int] = ()) -> list[int]:
        """One timestep: its input events (sent in as many frames as needed), then the
        output events of the step."""
        info = self._need_info()
        per = info.max_payload // 2
        addresses = list(addresses)
        cut = max(0, (len(addresses) - 1) // per * per)
        if cut:
            self.push(addresses[:cut])
        response = self.request(Command.STEP, push_payload(addresses[cut:]),
                                answer_bytes=2 * info.n_outputs)
        return parse_events(response.payload)

    def status(self) -> DeviceStatus:
        info = self._need_info()
        response = self.request(Command.STATUS, answer_bytes=status_length(info.n_layers))
        return parse_status(response.payload)

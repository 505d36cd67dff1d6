"""The host side of the protocol: CRC against the standard library's CRC-CCITT, frames round
trip, every damage is detected, payload builders match the byte layouts written in
docs/host-protocol.md, constants agree with the gateware's, and the client retries as
documented over a scripted transport."""

import binascii
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import protocol
from spikeforge.hdl import core, hostlink
from spikeforge.protocol import Command, LinkClient, Status

from .strategies import random_image


@settings(deadline=None, max_examples=60)
@given(st.binary(max_size=300))
def test_crc_matches_crc_ccitt(data):
    assert protocol.crc16(data) == binascii.crc_hqx(data, 0xFFFF)


def test_crc_check_value():
    assert protocol.crc16(b"123456789") == 0x29B1


@settings(deadline=None, max_examples=60)
@given(seq=st.integers(0, 255), command=st.integers(0, 255), status=st.integers(0, 255),
       payload=st.binary(max_size=300))
def test_response_round_trip_and_damage(seq, command, status, payload):
    frame = protocol.encode_response(seq, command, status, payload)
    assert frame[0] == protocol.SOF_RESPONSE
    assert int.from_bytes(frame[4:6], "little") == len(payload)
    assert protocol.decode_response(frame) == protocol.Response(seq, command, status, payload)
    # Any single flipped bit after the start byte is caught (CRC-16 finds all 1-bit errors;
    # a flipped length is caught as a length mismatch).
    for k in range(8, 8 * len(frame), max(1, len(frame) // 3)):
        bad = bytearray(frame)
        bad[k // 8] ^= 1 << (k % 8)
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_response(bytes(bad))
    with pytest.raises(protocol.FrameError):
        protocol.decode_response(frame[:-1])


def test_request_layout():
    frame = protocol.encode_request(0x12, Command.PUSH, protocol.push_payload([1, 0x203]))
    body = bytes([0x12, 0x05, 4, 0, 1, 0, 3, 2])
    assert frame == bytes([0xA5]) + body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")
    args = protocol.read_mem_payload(3, protocol.MemSpace.STATE, 0x01020304, 9)
    assert args == bytes([3, 1, 4, 3, 2, 1, 9])
    assert protocol.write_mem_payload(0, 2, 5, [0x0102, 0x0304], 3) == bytes(
        [0, 2, 5, 0, 0, 0, 2, 2, 1, 0, 4, 3, 0])
    assert protocol.parse_words(bytes([1, 2, 3, 4, 5, 6]), 3) == [0x030201, 0x060504]
    for bad in (lambda: protocol.encode_request(256, 1), lambda: protocol.push_payload([70000]),
                lambda: protocol.read_mem_payload(0, len(protocol.MemSpace), 0, 1),
                lambda: protocol.read_mem_payload(0, 0, 0, 256),
                lambda: protocol.write_mem_payload(0, 0, 0, [256], 1)):
        with pytest.raises(ValueError):
            bad()


def test_the_gateware_uses_the_contract():
    """One definition: the gateware's memory spaces are the protocol's, and its HELLO is the
    protocol's HELLO for the image."""
    assert {m.name: m.value for m in protocol.MemSpace} == {m.name: m.value
                                                            for m in core.MemSpace}
    from amaranth.hdl import Fragment

    from spikeforge.hdl.array import CoreArray

    image = random_image(2)
    array = CoreArray(image)
    link = hostlink.HostLink.for_array(array, byte_cycles=10)
    Fragment.get(array, None), Fragment.get(link, None)  # they elaborate
    info = protocol.parse_hello(link.hello)
    protocol.check_hello(info)
    assert info.image_id == protocol.image_id(image.to_bytes())
    assert info.counter_bytes * 8 == protocol.COUNTER_BITS == 24
    assert [protocol.status_length(n) for n in range(3)] == [4 + 12 + 12, 40, 52]


def test_parse_hello_and_status():
    hello = protocol.hello_payload(n_cores=3, n_layers=2, word_bytes=4, mem_data_bits=32,
                                   mem_addr_bits=16, max_payload=256, timeout_bytes=128,
                                   n_inputs=64, n_outputs=10, image_id=0xDEADBEEF,
                                   features=3, clock_hz=18_000_000, run_steps=0x1234)
    info = protocol.parse_hello(hello)
    assert info == protocol.DeviceInfo(
        version=protocol.PROTOCOL_VERSION, n_cores=3, n_layers=2, counter_bytes=3,
        word_bytes=4, mem_data_bits=32, mem_addr_bits=16, max_payload=256, timeout_bytes=128,
        n_inputs=64, n_outputs=10, image_id=0xDEADBEEF, features=3, clock_hz=18_000_000,
        run_steps=0x1234)
    assert hello[30:] == b"\x34\x12"  # the document's table: u16 at offset 30
    assert info.bitmap and info.rate_encoder
    protocol.check_hello(info)
    # STATUS: written out from the document's table, field by field.
    link = [1, 2, 3, 4, 5, 0xFFFF]
    counters = [10, 11, 2**24 - 1, 13, 100, 200, 7, 8, 0, 1, 0, 2**23 + 3]
    payload = bytes([protocol.PROTOCOL_VERSION, 0b101, 2, 0]) + b"".join(
        v.to_bytes(2, "little") for v in link) + \
        b"".join(v.to_bytes(3, "little") for v in counters)
    status = protocol.parse_status(payload)
    assert (status.overflow, status.idle, status.link_error) == (True, False, True)
    assert list(status.link.values()) == link
    assert (status.events_in, status.events_out, status.busy_cycles,
            status.integrate_cycles) == (10, 11, 2**24 - 1, 13)
    assert (status.sops, status.spikes, status.saturations) == ([100, 200], [7, 8], [0, 1])
    assert status.learn_cycles == [0, 2**23 + 3]
    assert status.version == protocol.PROTOCOL_VERSION
    assert protocol.status_payload(status) == payload
    assert protocol.parse_status(payload, 2) == status
    for bad, match in ((payload[:-1], r"^STATUS answer for 2 layers must hold 52 bytes, not 51$"),
                       (bytes([2]) + payload[1:],
                        rf"^STATUS answer's version must be {protocol.PROTOCOL_VERSION}, not 2$"),
                       (payload[:2], r"^STATUS answer must hold at least 4 bytes, not 2$")):
        with pytest.raises(protocol.ProtocolViolation, match=match):
            protocol.parse_status(bad)
    with pytest.raises(protocol.ProtocolViolation,
                       match=r"^STATUS answer's n_layers must be HELLO's 3, not 2$"):
        protocol.parse_status(payload, 3)


def test_counter_delta_unrolls_one_wrap():
    top = 1 << protocol.COUNTER_BITS
    assert protocol.counter_delta(top - 3, 4) == 7
    assert protocol.counter_delta(5, 5) == 0
    assert protocol.counter_delta(0, top - 1) == top - 1
    assert protocol.counter_delta(0xFFFF, 1, protocol.LINK_COUNTER_BITS) == 2


def test_parse_step_and_words_refuse_what_the_protocol_does_not_allow():
    assert protocol.parse_step(protocol.push_payload([0, 2, 9]), 10) == [0, 2, 9]
    for payload, match in ((protocol.push_payload(range(11)), r"at most n_outputs \(10\) "
                                                              r"events, not 11$"),
                           (protocol.push_payload([3, 3]), r"ascend below n_outputs \(10\), "
                                                           r"not \[3, 3\]$"),
                           (protocol.push_payload([10]), r"not \[10\]$"),
                           (b"\x01", r"whole u16 events, not 1 bytes$")):
        with pytest.raises(protocol.ProtocolViolation, match=match):
            protocol.parse_step(payload, 10)
    with pytest.raises(protocol.ProtocolViolation,
                       match=r"^answer must hold 2 words of 3 bytes, not 3 bytes$"):
        protocol.parse_words(bytes(3), 3, 2)


class ScriptedDevice:
    """A transport whose answers are scripted per request: an ``answers`` entry is a function of
    the request frame returning the bytes the device sends back."""

    def __init__(self, answers):
        self.answers = deque(answers)
        self.requests = []
        self.pending = bytearray()

    def write(self, data):
        self.requests.append(bytes(data))
        self.pending += self.answers.popleft()(bytes(data))

    def read(self, n, timeout):
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out


def ok(payload=b""):
    def answer(frame):
        return protocol.encode_response(frame[1], frame[2], Status.OK, payload)
    return answer


def test_client_retries_with_the_same_seq():
    nothing = lambda frame: b""  # noqa: E731  (a lost answer)
    damaged = lambda frame: ok(b"\x03\x00")(frame)[:-1] + b"\x00"  # noqa: E731
    refused = lambda frame: protocol.encode_response(  # noqa: E731
        frame[1], frame[2], Status.CRC)
    device = ScriptedDevice([nothing, damaged, refused, ok(b"\x03\x00")])
    client = LinkClient(device, byte_time=1e-6, retries=3)
    client.info = protocol.parse_hello(protocol.hello_payload(
        n_cores=1, n_layers=1, word_bytes=1, mem_data_bits=8, mem_addr_bits=16,
        max_payload=16, timeout_bytes=4, n_inputs=4, n_outputs=4, image_id=0))
    assert client.step([1]) == [3]
    assert client.retried == 3
    assert len({frame for frame in device.requests}) == 1  # the same frame, same seq


def test_client_gives_up_and_reports_errors():
    client = LinkClient(ScriptedDevice([lambda f: b""] * 2), byte_time=1e-6, retries=1)
    with pytest.raises(protocol.ResponseTimeout):
        client.clear()
    refuse = lambda f: protocol.encode_response(f[1], f[2], Status.BUSY)  # noqa: E731
    client = LinkClient(ScriptedDevice([refuse]), byte_time=1e-6)
    with pytest.raises(protocol.DeviceError, match="BUSY"):
        client.clear()
    stale = lambda f: protocol.encode_response(f[1] ^ 1, f[2], Status.OK)  # noqa: E731
    client = LinkClient(ScriptedDevice([stale, ok()]), byte_time=1e-6)
    client.clear()
    assert client.retried == 1


def test_client_splits_long_requests():
    client = LinkClient(ScriptedDevice([ok()] * 3 + [ok(b"\x01\x00")]), byte_time=1e-6)
    client.info = protocol.parse_hello(protocol.hello_payload(
        n_cores=1, n_layers=1, word_bytes=1, mem_data_bits=8, mem_addr_bits=16,
        max_payload=8, timeout_bytes=4, n_inputs=40, n_outputs=4, image_id=0, features=0))
    assert client.step(list(range(13))) == [1]  # 4 events per frame: PUSH x3 then STEP
    frames = [protocol.encode_request(k + 1, cmd, protocol.push_payload(events))
              for k, (cmd, events) in enumerate([
                  (Command.PUSH, [0, 1, 2, 3]), (Command.PUSH, [4, 5, 6, 7]),
                  (Command.PUSH, [8, 9, 10, 11]), (Command.STEP, [12])])]
    assert client.transport.requests == frames

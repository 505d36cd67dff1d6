"""Protocol v4-5's input encodings, host side (pure Python): bitmap frames round-trip and are
chosen only when shorter, INTENSITY payloads round-trip, and faults are refused in one line."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import protocol
from spikeforge.protocol import Command, LinkClient
from spikeforge.sim.encode import encoded_inputs, rate_lfsr, with_rate_encoder

from .strategies import random_image


@st.composite
def step_events(draw):
    n = draw(st.integers(1, 600))
    events = sorted(draw(st.sets(st.integers(0, n - 1), max_size=min(n, 300))))
    return n, events


@settings(max_examples=200, deadline=None)
@given(step_events())
def test_bitmap_round_trip(case):
    n, events = case
    payload = protocol.bitmap_payload(events, n)
    assert len(payload) == protocol.bitmap_bytes(n) == -(-n // 8)
    assert protocol.parse_bitmap(payload, n) == events
    if n % 8:  # the bits past n_inputs are 0
        assert payload[-1] >> (n % 8) == 0
    # as a whole request frame, CRC and all
    frame = protocol.encode_request(7, Command.STEP_BITMAP, payload)
    assert protocol.crc16(frame[1:]) == 0
    assert protocol.parse_bitmap(frame[5:-2], n) == events


@settings(max_examples=200, deadline=None)
@given(step_events(), st.integers(16, 300))
def test_step_requests_carry_the_events_in_the_fewest_bytes(case, max_payload):
    n, events = case
    requests = protocol.step_requests(events, n, max_payload)
    decoded = []
    for command, payload in requests:
        if command in (Command.PUSH_BITMAP, Command.STEP_BITMAP):
            decoded += protocol.parse_bitmap(payload, n)
        else:
            decoded += protocol.parse_events(payload)
        assert len(payload) <= max_payload
    assert decoded == events
    assert requests[-1][0] in (Command.STEP, Command.STEP_BITMAP)
    assert all(c == Command.PUSH for c, _ in requests[:-1])
    cost = lambda rs: sum(protocol.frame_bytes(len(p)) for _, p in rs)  # noqa: E731
    aer = protocol.step_requests(events, n, max_payload, bitmap=False)
    assert all(c in (Command.PUSH, Command.STEP) for c, _ in aer)
    bitmap_cost = protocol.frame_bytes(protocol.bitmap_bytes(n))
    assert cost(requests) == min(cost(aer), bitmap_cost if protocol.bitmap_bytes(n) <=
                                 max_payload else cost(aer))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 255), min_size=1, max_size=300))
def test_intensity_round_trip(offset, values):
    assert protocol.parse_intensity(protocol.intensity_payload(offset, values)) == (offset,
                                                                                   values)


def test_input_faults_are_one_line_errors():
    with pytest.raises(ValueError, match=r"^a bitmap of 13 inputs must hold 2 bytes, not 3$"):
        protocol.parse_bitmap(b"\x00\x00\x00", 13)
    with pytest.raises(ValueError, match=r"^event address must be below n_inputs \(13\), "
                                         r"not 13$"):
        protocol.bitmap_payload([13], 13)
    with pytest.raises(ValueError, match=r"^intensities must lie in 0\.\.255$"):
        protocol.intensity_payload(0, [256])
    # intensities for an image that does not encode on chip: refused before any I/O
    plain = random_image(1, (5, 3))
    with pytest.raises(ValueError, match=r"^intensities need an image that encodes on chip "
                                         r"\(compile with --encoder rate\), and this image "
                                         r"does not$"):
        encoded_inputs(plain, intensities=np.zeros(5, dtype=np.uint8), steps=3)
    coded = with_rate_encoder(plain, seed=5)
    with pytest.raises(ValueError, match=r"^intensities must be \[batch, 5\] or \[5\], "
                                         r"not shape \(4,\)$"):
        encoded_inputs(coded, intensities=np.zeros(4, dtype=np.uint8), steps=3)
    spikes, values = encoded_inputs(coded, intensities=np.full(5, 200, np.uint8), steps=3)
    assert np.array_equal(spikes, rate_lfsr(np.full((1, 5), 200), 3, seed=5))
    # a device whose HELLO reports no encoder: the client refuses before sending
    client = LinkClient(None, byte_time=1e-6)
    client.info = protocol.parse_hello(protocol.hello_payload(
        n_cores=1, n_layers=1, word_bytes=1, mem_data_bits=8, mem_addr_bits=16,
        max_payload=16, timeout_bytes=4, n_inputs=5, n_outputs=3, image_id=0))
    with pytest.raises(protocol.ProtocolViolation, match=r"^INTENSITY needs gateware with the "
                                                         r"on-chip rate encoder; this device's "
                                                         r"image does not encode on chip$"):
        client.intensity([1, 2, 3, 4, 5])


def test_image_encoder_flag_is_checked():
    from spikeforge.image import ImageError, image_from_bytes

    coded = with_rate_encoder(random_image(1, (5, 3)), seed=77)
    assert image_from_bytes(coded.to_bytes()).meta["encoder"] == {"kind": "rate_lfsr",
                                                                   "seed": 77}
    with pytest.raises(ImageError, match=r"^meta\.encoder must be "):
        with_rate_encoder(random_image(1, (5, 3)), seed=0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sets(st.integers(0, 0x7FFE), max_size=6), min_size=1, max_size=8))
def test_run_answer_round_trip(steps):
    """A RUN_ENCODED answer written out from docs/host-protocol.md: every step's events
    (u16 LE), then STEP_END (0xFFFF)."""
    events = [sorted(step) for step in steps]
    payload = b"".join(b"".join(a.to_bytes(2, "little") for a in step) + b"\xff\xff"
                       for step in events)
    assert protocol.parse_run(payload, len(events), 0x7FFF) == events


@pytest.mark.parametrize(("payload", "steps", "message"), [
    (b"\x01\x00\xff\xff", 2, r"^RUN_ENCODED answer must end 2 steps with STEP_END, not 1 in "
                             r"2 words$"),
    (b"\xff\xff\x01\x00", 1, r"^RUN_ENCODED answer must end 1 steps with STEP_END, not 1 in "
                             r"2 words$"),
    (b"\xff\xff\xff", 1, r"^RUN_ENCODED answer must hold whole u16 words, not 3 bytes$"),
    (b"\xff\xff\x02\x00\x01\x00\xff\xff", 2, r"^RUN_ENCODED step 1: STEP answer's events must "
                                             r"ascend below n_outputs \(4\), not \[2, 1\]$"),
    (b"\x04\x00\xff\xff", 1, r"^RUN_ENCODED step 0: STEP answer's events must ascend below "
                             r"n_outputs \(4\), not \[4\]$"),
])
def test_run_answer_faults_are_violations(payload, steps, message):
    with pytest.raises(protocol.ProtocolViolation, match=message):
        protocol.parse_run(payload, steps, 4)


def test_run_steps_in_hello_are_checked():
    def hello(features, run_steps):
        return protocol.parse_hello(protocol.hello_payload(
            n_cores=1, n_layers=1, word_bytes=1, mem_data_bits=8, mem_addr_bits=16,
            max_payload=16, timeout_bytes=4, n_inputs=5, n_outputs=3, image_id=0,
            features=features, run_steps=run_steps))

    protocol.check_hello(hello(protocol.FEATURE_RATE_ENCODER, 40))
    for features, run_steps in ((protocol.FEATURE_RATE_ENCODER, 0), (0, 3)):
        with pytest.raises(protocol.ProtocolViolation, match=r"^HELLO's run_steps must be at "
                                                             r"least 1 with the rate encoder, "
                                                             rf"else 0, not {run_steps}$"):
            protocol.check_hello(hello(features, run_steps))
    client = LinkClient(None, byte_time=1e-6)
    client.info = hello(protocol.FEATURE_RATE_ENCODER, 4)
    with pytest.raises(ValueError, match=r"^a RUN_ENCODED request runs 1\.\.4 steps on this "
                                         r"device, not 5$"):
        client.run_encoded(5)

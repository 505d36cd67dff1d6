"""Protocol v4's input encodings, host side (pure Python): bitmap frames round-trip and are
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

"""The host link's input encodings in the Amaranth simulator (HostLink + CoreArray, byte
streams): bitmap PUSH/STEP and the on-chip rate encoder's INTENSITY/STEP_ENCODED against the
golden model (fed `sim.encode.rate_lfsr`'s spikes), and the faults each is refused with."""

import numpy as np
import pytest

from spikeforge import protocol
from spikeforge.protocol import Command, LinkClient, Status
from spikeforge.sim import golden
from spikeforge.sim.encode import rate_lfsr, with_rate_encoder

from .strategies import random_image
from .test_hdl_hostlink import TIMEOUT_BYTES, StreamBoard, golden_steps, raw, spike_steps


def stream_client(image, **link):
    board = StreamBoard(image, **link)
    client = LinkClient(board, byte_time=board.byte_time, timeout_bytes=TIMEOUT_BYTES,
                        exec_time=3000 / board.clk_freq)
    return board, client


def test_bitmap_steps_match_golden():
    # 13 inputs: the bitmap's last byte has bits past n_inputs. Dense steps go as a bitmap
    # (shorter), sparse ones as AER; PUSH_BITMAP events and AER events mix within a step.
    image = random_image(3, (13, 9, 4), split=True)
    board, client = stream_client(image)
    rng = np.random.default_rng(3)
    x = (rng.random((6, 13)) < np.array([0.9, 0.1, 0.6, 0.0, 1.0, 0.3])[:, None]).astype(
        np.uint8)
    info = client.hello()
    assert info.features == protocol.FEATURE_BITMAP  # no encoder in this image
    kinds = [protocol.step_requests(ev, 13, info.max_payload)[-1][0] for ev in spike_steps(x)]
    assert Command.STEP_BITMAP in kinds and Command.STEP in kinds
    result, expect = golden_steps(image, x)
    got = []
    for t, events in enumerate(spike_steps(x)):
        if t == 2:  # half the events in a PUSH_BITMAP, the rest in a STEP
            client._empty(Command.PUSH_BITMAP, protocol.bitmap_payload(events[::2], 13))
            got.append(client.step(events[1::2]))
        else:
            got.append(client.step(events))
    assert got == expect
    st = client.status()
    assert st.events_in == int(x.sum()) and st.sops == result.sops[0].tolist()
    assert not st.overflow and not any(st.link.values())


@pytest.mark.parametrize("seed", [1, 0xACE1])
def test_rate_encoder_matches_golden(seed):
    # 20 inputs through a 12-byte payload: INTENSITY goes in chunks of 10 from offsets 0, 10.
    image = with_rate_encoder(random_image(5, (20, 8, 3)), seed=seed)
    board, client = stream_client(image, max_payload=12)
    info = client.hello()
    assert info.rate_encoder and info.max_payload == 12
    assert info.bitmap  # 3 bytes of bitmap fit the payload
    rng = np.random.default_rng(seed)
    intensity = rng.integers(0, 256, (2, 20), dtype=np.uint8)
    steps = 5
    spikes = rate_lfsr(intensity, steps, seed=seed)
    result = golden.run(image, spikes, record=True)
    for b in range(2):  # CLEAR starts each sample's LFSR at the seed again
        client.clear()
        client.intensity(intensity[b].tolist())
        got = [client.step_encoded() for _ in range(steps)]
        assert got == spike_steps(result.spikes[b])
        st = client.status()
        assert st.events_in == int(spikes[b].sum())
        assert st.sops == result.sops[b].tolist()
    assert st.link["duplicates"] == 0 and not st.link_error


def test_input_faults_are_refused():
    plain = random_image(2, (13, 5, 2))
    board, client = stream_client(plain)
    client.hello()
    for seq, (command, payload, status) in enumerate([
        (Command.STEP_BITMAP, b"\x01", Status.LENGTH),  # 13 inputs: 2 bytes
        (Command.PUSH_BITMAP, b"\x01\x00\x00", Status.LENGTH),
        (Command.INTENSITY, b"\x00\x00\x05", Status.NO_ENCODER),
        (Command.STEP_ENCODED, b"", Status.NO_ENCODER),
    ], start=10):
        assert raw(board, seq, command, payload).status == status
    coded = with_rate_encoder(random_image(2, (13, 5, 2)), seed=9)
    board, client = stream_client(coded)
    client.hello()
    for seq, (command, payload, status) in enumerate([
        (Command.INTENSITY, b"\x00\x00", Status.LENGTH),  # no intensity
        (Command.INTENSITY, b"\x0c\x00\x01\x02", Status.ARG),  # inputs 12, 13: past 13
        (Command.INTENSITY, b"\x0b\x00\x01\x02", Status.OK),  # inputs 11, 12
        (Command.STEP_ENCODED, b"\x00\x00", Status.LENGTH),
    ], start=20):
        assert raw(board, seq, command, payload).status == status


def test_run_encoded_matches_golden():
    # One request runs a sample's steps: the encoder scans step t + 1 while the array is on
    # step t; the answer holds every step's events, each step's ended by a STEP_END. Steps
    # continue the LFSR, in one request or several, as STEP_ENCODED does; a repeated request
    # is answered again from the buffer.
    image = with_rate_encoder(random_image(7, (20, 8, 3)), seed=0xBEEF)
    board, client = stream_client(image, max_payload=24)
    info = client.hello()
    per_step = image.n_outputs + 1
    assert info.run_steps == max(per_step, 256) // per_step
    rng = np.random.default_rng(7)
    intensity = rng.integers(0, 256, (2, 20), dtype=np.uint8)
    steps = 6
    spikes = rate_lfsr(intensity, steps, seed=0xBEEF)
    result = golden.run(image, spikes, record=True)
    for b, chunks in enumerate([(steps,), (1, 3, 2)]):
        client.clear()
        client.intensity(intensity[b].tolist())
        got = [events for n in chunks for events in client.run_encoded(n)]
        assert got == spike_steps(result.spikes[b])
        if b:  # a repeat of the last request (2 steps) is answered again, not run again
            again = raw(board, client._seq, Command.RUN_ENCODED, protocol.run_payload(2))
            assert again.status == Status.OK
            assert protocol.parse_run(again.payload, 2, image.n_outputs) == got[4:]
        st = client.status()
        assert st.events_in == int(spikes[b].sum())
        assert st.sops == result.sops[b].tolist()
    assert st.link["duplicates"] == 1
    # the steps held different numbers of output events (none, one, several)
    assert len({len(events) for events in spike_steps(result.spikes.reshape(-1, 3))}) > 1


def test_run_encoded_faults_are_refused():
    plain = random_image(2, (13, 5, 2))
    board, client = stream_client(plain)
    assert client.hello().run_steps == 0
    assert raw(board, 10, Command.RUN_ENCODED, b"\x01\x00").status == Status.NO_ENCODER
    coded = with_rate_encoder(random_image(2, (13, 5, 2)), seed=9)
    board, client = stream_client(coded)
    most = client.hello().run_steps
    for seq, (payload, status) in enumerate([
        (b"\x01", Status.LENGTH),
        (b"\x01\x00\x00", Status.LENGTH),
        (b"\x00\x00", Status.ARG),  # no steps
        ((most + 1).to_bytes(2, "little"), Status.ARG),  # more than the buffer holds
        (b"\x01\x00", Status.OK),
    ], start=20):
        assert raw(board, seq, Command.RUN_ENCODED, payload).status == status

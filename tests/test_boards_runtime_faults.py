"""The host runtime (spikeforge.Board) against a device that breaks the protocol.

The device here is a protocol-speaking peer written in the test, behind a pseudo-terminal that
the runtime opens as its serial port (pyserial, as a real board): a healthy version of it loads,
runs and reads back, and each fault (a HELLO with values the host cannot use, a READ_MEM with
too few or too many words, a STATUS of another layer count, a STEP with impossible events, a
stream of garbage, an answer cut short) is reported as one BoardError naming what the device
did, within a bounded time. The real gateware's side is tests/test_boards_runtime.py (virtual
board) and tests/test_hdl_hostlink.py."""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from spikeforge import protocol
from spikeforge.boards.runtime import Board, BoardError
from spikeforge.hdl.hostlink import memory_depths
from spikeforge.protocol import Command, Status

from .strategies import random_image

BAUD = 115200
TIMEOUT = 0.05  # seconds of device work the host allows per request
BOUND = 5.0  # seconds within which every fault must be reported


class FakeDevice:
    """A spikeforge device on the master side of a pseudo-terminal, answering every request
    frame as docs/host-protocol.md says, for ``image``'s shape: memories that keep what is
    written, STEP answers without output events, STATUS counting the events pushed (in
    ``COUNTER_BITS`` that wrap) and ``busy_cycles`` as ``cycles_per_step`` per STEP.

    ``answer(command, payload)`` returns ``(status, payload)`` or raw bytes to send; a test
    overrides it (or ``hello``) to break the protocol in one place."""

    def __init__(self, image, *, cycles_per_step: int = 1000):
        self.image = image
        self.word_bytes = 4  # 32-bit memory words hold every word of the small test images
        self.hello = protocol.hello_payload(
            n_cores=len(image.config.cores), n_layers=len(image.layers),
            word_bytes=self.word_bytes, mem_data_bits=32,
            mem_addr_bits=16, max_payload=64, timeout_bytes=16,
            n_inputs=image.n_inputs, n_outputs=image.n_outputs,
            image_id=protocol.image_id(image.to_bytes()), features=0)
        self.depths = memory_depths(image)
        self.memory: dict[tuple[int, int, int], int] = {}
        self.cycles_per_step = cycles_per_step
        self.events_in = 0  # since CLEAR, not wrapped
        self.busy_cycles = 0
        self.requests: list[int] = []
        self.trickle = False  # a byte of garbage every 10 ms while nothing comes in
        self.master, self._slave = os.openpty()
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self._slave)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the protocol --------------------------------------------------------------------
    def status(self) -> protocol.DeviceStatus:
        wrap = (1 << protocol.COUNTER_BITS) - 1
        n_layers = len(self.image.layers)
        return protocol.DeviceStatus(
            version=protocol.PROTOCOL_VERSION, overflow=False, idle=True, link_error=False,
            link=dict.fromkeys(protocol.LINK_COUNTERS, 0), events_in=self.events_in & wrap,
            events_out=0, busy_cycles=self.busy_cycles & wrap, integrate_cycles=0,
            sops=[0] * n_layers, spikes=[0] * n_layers, saturations=[0] * n_layers,
            learn_cycles=[0] * n_layers)

    def answer(self, command: int, payload: bytes):
        if command == Command.HELLO:
            return Status.OK, self.hello
        if command in (Command.READ_MEM, Command.WRITE_MEM):
            core, space, count = payload[0], payload[1], payload[6]
            addr = int.from_bytes(payload[2:6], "little")
            if addr + count > self.depths[core][space]:
                return Status.ARG, b""
            if command == Command.READ_MEM:
                return Status.OK, b"".join(
                    self.memory.get((core, space, addr + k), 0).to_bytes(self.word_bytes,
                                                                         "little")
                    for k in range(count))
            words = protocol.parse_words(payload[7:], self.word_bytes, count)
            for k, word in enumerate(words):
                self.memory[core, space, addr + k] = word
            return Status.OK, b""
        if command == Command.CLEAR:
            self.events_in = self.busy_cycles = 0
            return Status.OK, b""
        if command in (Command.PUSH, Command.STEP):
            self.events_in += len(payload) // 2
            if command == Command.STEP:
                self.busy_cycles += self.cycles_per_step
            return Status.OK, b""
        if command == Command.STATUS:
            return Status.OK, protocol.status_payload(self.status())
        return Status.UNKNOWN_CMD, b""

    def _serve(self):
        buffer = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.01)
            if not ready:
                if self.trickle:
                    os.write(self.master, b"\x00")
                continue
            try:
                buffer += os.read(self.master, 4096)
            except OSError:
                continue
            while True:
                start = buffer.find(protocol.SOF_REQUEST)
                if start < 0:
                    buffer.clear()
                    break
                del buffer[:start]
                if len(buffer) < 5:
                    break
                length = int.from_bytes(buffer[3:5], "little")
                if len(buffer) < 7 + length:
                    break
                frame, buffer = bytes(buffer[:7 + length]), buffer[7 + length:]
                seq, command = frame[1], frame[2]
                if protocol.crc16(frame[1:]) != 0:
                    reply = (Status.CRC, b"")
                else:
                    self.requests.append(command)
                    reply = self.answer(command, frame[5:-2])
                if isinstance(reply, tuple):
                    reply = protocol.encode_response(seq, command, reply[0], reply[1])
                os.write(self.master, reply)


def open_board(device, **kwargs):
    return Board(device.port, baud=BAUD, timeout=TIMEOUT, image=device.image, **kwargs)


@pytest.fixture
def image():
    return random_image(3, (6, 10, 3), split=True)


def reported(call, match):
    """``call()`` raises one line of BoardError matching ``match``, within BOUND seconds."""
    start = time.monotonic()
    with pytest.raises(BoardError, match=match) as info:
        call()
    assert time.monotonic() - start < BOUND
    assert len(str(info.value).splitlines()) == 1
    return info.value


def test_a_healthy_device_loads_runs_and_unrolls_wrapping_counters(image):
    """The control: with nothing broken the runtime loads, verifies, runs; counters that wrap
    between STATUS reads (a step of more than half the counter's range) add up."""
    cycles = (1 << protocol.COUNTER_BITS) * 3 // 4 + 5
    with FakeDevice(image, cycles_per_step=cycles) as device, open_board(device) as board:
        board.load(image)
        assert len(device.memory) == sum(
            depths[protocol.MemSpace.WEIGHTS] + depths[protocol.MemSpace.PARAMS]
            for depths in device.depths)
        x = np.zeros((2, 5, image.n_inputs), dtype=np.uint8)
        x[:, :, 1] = 1
        x[1, 2, 4] = 1
        # this device's steps break status_interval's bound: read STATUS after every step
        result = board.run(x, status_every=1)
        assert result.spikes.sum() == 0
        assert result.busy_cycles.tolist() == [5 * cycles, 5 * cycles]
        assert 5 * cycles > 3 << protocol.COUNTER_BITS  # wrapped three times
        assert result.input_events.tolist() == [5, 6]
        assert device.requests.count(Command.STATUS) == 1 + 2 * 5


@pytest.mark.parametrize("field, value, match", [
    ("word_bytes", 0, r"HELLO's word_bytes must be \d+ \(mem_data_bits \d+ in whole bytes\), "
                      r"not 0$"),
    ("max_payload", 0, r"HELLO's max_payload must be at least \d+ \(a WRITE_MEM of one word\), "
                       r"not 0$"),
    ("max_payload", 1, r"HELLO's max_payload must be at least \d+ .*, not 1$"),
    ("counter_bytes", 6, r"HELLO's counter_bytes must be 3, not 6$"),
    ("n_outputs", 0, r"HELLO's n_outputs must be 1\.\.32767 .*, not 0$"),
    ("timeout_bytes", 0, r"HELLO's timeout_bytes must be at least 1, not 0$"),
    ("version", 2, rf"HELLO's version must be {protocol.PROTOCOL_VERSION}, not 2 \(gateware "
                   r"built by another "
                   r"spikeforge: build it again\)$"),
])
def test_hello_values_the_host_cannot_use(image, field, value, match):
    offsets = {"version": (2, 1), "counter_bytes": (5, 1), "word_bytes": (6, 1),
               "max_payload": (10, 2), "timeout_bytes": (12, 2), "n_outputs": (18, 4)}
    with FakeDevice(image) as device:
        at, size = offsets[field]
        hello = bytearray(device.hello)
        hello[at:at + size] = value.to_bytes(size, "little")
        device.hello = bytes(hello)
        reported(lambda: open_board(device),
                 rf"^the board on {device.port} does not speak the spikeforge protocol: "
                 + match)


def test_hello_of_another_size(image):
    with FakeDevice(image) as device:
        device.hello = device.hello + b"\x00"
        reported(lambda: open_board(device), r"HELLO answer must be 32 bytes starting with "
                                              r"b'SF', not 33 bytes")


@pytest.mark.parametrize("delta", [-1, 1])
def test_read_mem_with_missing_or_extra_words(image, delta):
    with FakeDevice(image) as device, open_board(device) as board:
        answer = device.answer

        def wrong_count(command, payload):
            status, data = answer(command, payload)
            if command == Command.READ_MEM:
                data = data[:0] if delta < 0 else data + bytes(device.word_bytes)
            return status, data

        device.answer = wrong_count
        got = "0 bytes" if delta < 0 else r"\d+ bytes"
        reported(lambda: board.load(image),
                 rf"^writing core 0 params on {device.port}: the board broke the protocol: "
                 rf"READ_MEM answer must hold \d+ words of {device.word_bytes} bytes, not "
                 + got + "$")
        reported(board.read_weights, r"reading core 0 weights .*: READ_MEM answer must hold")


def test_status_of_another_layer_count(image):
    with FakeDevice(image) as device, open_board(device) as board:
        right = device.status

        def three_layers():
            st = right()
            return replace(st, **{name: [*getattr(st, name), 0]
                                  for name in protocol.LAYER_COUNTERS})

        device.status = three_layers
        x = np.zeros((1, 3, image.n_inputs), dtype=np.uint8)
        reported(lambda: board.run(x), r"^STATUS on .*: the board broke the protocol: STATUS "
                                       r"answer's n_layers must be HELLO's 2, not 3$")
        reported(board.status, "n_layers must be HELLO's 2, not 3")

        answer = device.answer
        device.status = right
        device.answer = lambda c, p: (Status.OK, answer(c, p)[1][:-1]) \
            if c == Command.STATUS else answer(c, p)
        reported(board.status, rf"STATUS answer for 2 layers must hold "
                               rf"{protocol.status_length(2)} bytes, not "
                               rf"{protocol.status_length(2) - 1}$")


@pytest.mark.parametrize("events, match", [
    ([0, 1, 2, 3], r"at most n_outputs \(3\) events, not 4"),
    ([2, 1], r"events must ascend below n_outputs \(3\), not \[2, 1\]"),
    ([0, 3], r"events must ascend below n_outputs \(3\), not \[0, 3\]"),
    (None, r"whole u16 events, not 3 bytes"),
])
def test_step_with_impossible_events(image, events, match):
    with FakeDevice(image) as device, open_board(device) as board:
        answer = device.answer
        payload = b"\x00\x00\x01" if events is None else protocol.push_payload(events)
        device.answer = lambda c, p: (Status.OK, payload) if c == Command.STEP \
            else answer(c, p)
        x = np.zeros((1, 2, image.n_inputs), dtype=np.uint8)
        reported(lambda: board.run(x), r"^STEP 0 of sample 0 on .*: the board broke the "
                                       r"protocol: STEP answer.*" + match)


def test_write_mem_answered_with_a_payload(image):
    with FakeDevice(image) as device, open_board(device) as board:
        answer = device.answer
        device.answer = lambda c, p: (Status.OK, b"\x01") if c == Command.WRITE_MEM \
            else answer(c, p)
        reported(lambda: board.load(image), r"WRITE_MEM answer must be empty, not 1 bytes$")


def test_garbage_and_cut_answers_are_retried_then_reported(image):
    garbage = bytes(b for b in range(256) if b != protocol.SOF_RESPONSE) * 20  # 5100 bytes
    with FakeDevice(image) as device, open_board(device) as board:
        answer = device.answer
        device.answer = lambda c, p: garbage if c == Command.CLEAR else answer(c, p)
        reported(lambda: board.run(np.zeros((1, 1, image.n_inputs), np.uint8)),
                 r"^CLEAR on .* failed after 4 attempts: no response start byte in \d+ bytes")
        device.answer = lambda c, p: (protocol.encode_response(0, c, Status.OK)[:4]
                                      if c == Command.STEP else answer(c, p))
        reported(lambda: board.run(np.zeros((1, 1, image.n_inputs), np.uint8)),
                 r"^STEP 0 of sample 0 on .* failed after 4 attempts: no complete response")

        # Garbage that trickles (a byte per 10 ms, never a start byte) is cut off by time,
        # not after 4096 bytes.
        device.answer = lambda c, p: b"" if c == Command.CLEAR else answer(c, p)
        device.trickle = True
        reported(lambda: board.run(np.zeros((1, 1, image.n_inputs), np.uint8)),
                 r"^CLEAR on .* failed after 4 attempts: no response start byte in \d+ bytes "
                 r"over")
        device.trickle = False


def test_answers_to_another_request_are_retried_then_reported(image):
    with FakeDevice(image) as device, open_board(device) as board:
        answer = device.answer

        def stale(command, payload):
            status, data = answer(command, payload)
            return protocol.encode_response(0x99, command, status, data)

        device.answer = stale
        reported(lambda: board.read_weights(),
                 r"failed after 4 attempts: answer to seq 153 command 3, expected seq")

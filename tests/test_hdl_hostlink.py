"""The SoC (UART, host link, core array) in the Amaranth simulator, driven over its UART pins by
the host side of the protocol (boards/protocol.py): memory round trips, timesteps and counters
against the golden model, and every fault the link must survive."""

from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from spikeforge import protocol
from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.hostlink import HostLink, connect_array
from spikeforge.hdl.soc import SpikeSoC
from spikeforge.protocol import Command, LinkClient, MemSpace, Status
from spikeforge.sim import golden

from .strategies import plastic_image, random_image

BAUD = 115200
CLK = 4 * BAUD  # four cycles per bit: the shortest UART bit the receiver samples
TIMEOUT_BYTES = 6


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    return [0, *((byte >> k) & 1 for k in range(8)), stop]


class SimTransport:
    """A :class:`protocol.Transport` over a design in the Amaranth simulator; time is simulated
    time, counted in cycles of ``clk_freq``."""

    def __init__(self, dut, clk_freq: float, byte_time: float):
        self.dut = dut
        self.clk_freq = clk_freq
        self.byte_time = byte_time
        self.queue = deque()
        self.received = bytearray()
        self.cycles = 0
        self.sim = Simulator(dut)
        self.sim.add_clock(1 / clk_freq)
        self.sim.add_testbench(self._drive, background=True)
        self.sim.add_testbench(self._listen, background=True)

    def write(self, data: bytes) -> None:
        self.queue.extend(data)

    def read(self, n: int, timeout: float) -> bytes:
        deadline = self.cycles + int(timeout * self.clk_freq) + 1
        while len(self.received) < n and self.cycles < deadline:
            self.sim.advance()
        out = bytes(self.received[:n])
        del self.received[:n]
        return out


class PinBoard(SimTransport):
    """The whole SpikeSoC: bytes are bit-banged into ``uart_rx`` and decoded from
    ``uart_tx``. ``write_bits`` sends raw line levels (one list of bits per bit time)."""

    def __init__(self, soc: SpikeSoC):
        super().__init__(soc, soc.clk_freq, 10 / soc.baud)

    def write_bits(self, levels) -> None:
        self.queue.append(list(levels))

    async def _drive(self, ctx):
        pin, div = self.dut.uart_rx, self.dut.divisor
        ctx.set(pin, 1)
        while True:
            if self.queue:
                item = self.queue.popleft()
                for level in item if isinstance(item, list) else frame_bits(item):
                    ctx.set(pin, level)
                    await ctx.tick().repeat(div)
                    self.cycles += div
            else:
                await ctx.tick()
                self.cycles += 1

    async def _listen(self, ctx):
        pin, div = self.dut.uart_tx, self.dut.divisor
        wait, bits = None, []  # cycles to the next bit's middle; bits of the frame so far
        async for _, _, level in ctx.tick().sample(pin):
            if wait is None:
                if level == 0:
                    wait, bits = div // 2, []
                continue
            wait -= 1
            if wait:
                continue
            bits.append(level)
            wait = div
            if len(bits) == 10:
                assert bits[0] == 0 and bits[9] == 1, f"device sent a bad frame {bits}"
                self.received.append(sum(b << k for k, b in enumerate(bits[1:9])))
                wait = None


class LinkBench(wiring.Component):
    """HostLink and CoreArray without the UART: the byte streams are the ports."""

    def __init__(self, image, **kwargs):
        self.array = CoreArray(image)
        self.link = HostLink.for_array(self.array, **kwargs)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)),
                          "framing_error": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.array, m.submodules.link = self.array, self.link
        connect_array(m, self.link, self.array)
        wiring.connect(m, wiring.flipped(self.rx), self.link.rx)
        wiring.connect(m, self.link.tx, wiring.flipped(self.tx))
        m.d.comb += self.link.framing_error.eq(self.framing_error)
        return m


class StreamBoard(SimTransport):
    """HostLink + CoreArray fed a byte every ``GAP`` cycles, as a UART of ``GAP`` cycles per
    byte would (forty times faster to simulate than the pins). ``None`` in the write queue is
    a framing error (a byte lost on the line)."""

    GAP = 3

    def __init__(self, image, **link):
        dut = LinkBench(image, byte_cycles=self.GAP, timeout_bytes=TIMEOUT_BYTES, **link)
        super().__init__(dut, 1e6, self.GAP / 1e6)

    def write_framing_error(self) -> None:
        self.queue.append(None)

    async def _drive(self, ctx):
        rx = self.dut.rx
        while True:
            if self.queue:
                item = self.queue.popleft()
                if item is None:
                    ctx.set(self.dut.framing_error, 1)
                else:
                    ctx.set(rx.payload, item)
                    ctx.set(rx.valid, 1)
                await ctx.tick()
                ctx.set(rx.valid, 0)
                ctx.set(self.dut.framing_error, 0)
                await ctx.tick().repeat(self.GAP - 1)
                self.cycles += self.GAP
            else:
                await ctx.tick()
                self.cycles += 1

    async def _listen(self, ctx):
        tx = self.dut.tx
        ctx.set(tx.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(tx.valid, tx.payload):
            if valid:
                self.received.append(payload)


def make_board(image, pins=False):
    if pins:
        soc = SpikeSoC(image, clk_freq=CLK, baud=BAUD, timeout_bytes=TIMEOUT_BYTES)
        board, array = PinBoard(soc), soc.array
    else:
        board = StreamBoard(image)
        array = board.dut.array
    client = LinkClient(board, byte_time=board.byte_time, timeout_bytes=TIMEOUT_BYTES,
                        exec_time=3000 / board.clk_freq)
    return array, board, client


def spike_steps(x):
    return [[int(a) for a in np.flatnonzero(row)] for row in x]


def signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def read_state(client, image):
    """(v, s) per layer from the STATE memories."""
    v = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    s = [np.zeros(layer.n_out, dtype=np.int64) for layer in image.layers]
    for index, core in enumerate(image.config.cores):
        bits = image.layers[core.layer].v_bits
        words = client.read_mem(index, MemSpace.STATE, 0, core.neurons)
        for n, word in enumerate(words):
            v[core.layer][core.lo + n] = signed(word, bits)
            s[core.layer][core.lo + n] = (word >> bits) & 1
    return v, s


def weight_words(image, core):
    return [int.from_bytes(row.tobytes(), "little") for row in image.weight_memory(core)]


def check_status(st, image, x, result, *, link=None):
    """Device counters against the golden model (one sample from rest)."""
    assert st.version == protocol.PROTOCOL_VERSION
    assert not st.overflow
    assert st.idle
    assert st.events_in == int(x.sum())
    assert st.events_out == int(result.spike_counts[0, -1])
    assert st.sops == result.sops[0].tolist()
    assert st.spikes == result.spike_counts[0].tolist()
    assert st.saturations == result.saturations[0].tolist()
    assert st.learn_cycles == [0] * len(image.layers)
    expect = dict.fromkeys(protocol.LINK_COUNTERS, 0) | (link or {})
    assert st.link == expect
    assert st.link_error == any(v for k, v in expect.items() if k != "duplicates")


def run_steps(client, x):
    return [client.step(events) for events in spike_steps(x)]


def golden_steps(image, x):
    result = golden.run(image, x[None], record=True)
    return result, spike_steps(result.spikes[0])


@pytest.mark.parametrize("seed", [1, 7])
def test_steps_memories_and_counters_match_golden(seed):
    image = random_image(seed, (6, 10, 3), split=True, recurrent=seed % 2)
    array, board, client = make_board(image)
    rng = np.random.default_rng(seed)
    x = (rng.random((8, image.n_inputs)) < 0.5).astype(np.uint8)

    info = client.hello()
    assert info.n_cores == len(image.config.cores)
    assert info.n_layers == len(image.layers)
    assert (info.n_inputs, info.n_outputs) == (image.n_inputs, image.n_outputs)
    assert info.image_id == protocol.image_id(image.to_bytes())
    assert info.word_bytes == -(-array.mem_data_width // 8)
    assert info.timeout_bytes == TIMEOUT_BYTES

    # The weights read back as the image packs them.
    for core in range(len(image.config.cores)):
        n = len(weight_words(image, core))
        assert client.read_mem(core, MemSpace.WEIGHTS, 0, n) == weight_words(image, core)

    result, expect = golden_steps(image, x)
    assert run_steps(client, x) == expect
    check_status(client.status(), image, x, result)
    v, s = read_state(client, image)
    for index in range(len(image.layers)):
        assert v[index].tolist() == result.final_membranes[index][0].tolist()
        assert s[index].tolist() == result.layer_spikes[index][0, -1].tolist()

    # New weights written over the link: the next sample follows the new image.
    # (Each row permuted: the accumulator width the image chose still suffices.)
    new = image.with_weights([rng.permuted(layer.weights, axis=1) for layer in image.layers])
    assert any((a.weights != b.weights).any() for a, b in zip(image.layers, new.layers))
    for core in range(len(image.config.cores)):
        words = weight_words(new, core)
        client.write_mem(core, MemSpace.WEIGHTS, 0, words)
        assert client.read_mem(core, MemSpace.WEIGHTS, 0, len(words)) == words
    client.clear()
    result, expect = golden_steps(new, x)
    assert run_steps(client, x) == expect
    check_status(client.status(), new, x, result)
    assert client.retried == 0


def raw(board, seq, command, payload=b"", timeout=None):
    """One request frame, its answer (or ResponseTimeout)."""
    board.write(protocol.encode_request(seq, command, payload))
    return protocol.read_response(board, timeout or 200 * board.byte_time)


def test_bad_frames_are_counted_and_never_acted_on():
    image = random_image(3, (5, 8, 4), split=True)
    array, board, client = make_board(image)
    rng = np.random.default_rng(3)
    x = (rng.random((6, image.n_inputs)) < 0.6).astype(np.uint8)
    steps = spike_steps(x)
    result, expect = golden_steps(image, x)
    client.hello()
    seq = 0x40
    link = dict.fromkeys(protocol.LINK_COUNTERS, 0)

    # A corrupted STEP: answered with status CRC, not executed.
    frame = bytearray(protocol.encode_request(seq, Command.STEP, protocol.push_payload(
        steps[0] or [0])))
    frame[6] ^= 0x10
    board.write(bytes(frame))
    answer = protocol.read_response(board, 200 * board.byte_time)
    assert (answer.status, answer.seq, answer.payload) == (Status.CRC, seq, b"")
    link["crc_errors"] += 1
    link["dropped_frames"] += 1

    # A truncated frame: no answer; dropped after the receive timeout.
    board.write(protocol.encode_request(seq, Command.STEP, protocol.push_payload([1, 2]))[:-3])
    with pytest.raises(protocol.ResponseTimeout):
        protocol.read_response(board, 3 * TIMEOUT_BYTES * board.byte_time)
    link["timeouts"] += 1
    link["dropped_frames"] += 1

    # A length beyond the buffer: silent, the rest of the frame is skipped until silence.
    board.write(bytes([protocol.SOF_REQUEST, seq, Command.PUSH, 0xFF, 0x7F]) + bytes(
        [protocol.SOF_REQUEST] * 20))
    with pytest.raises(protocol.ResponseTimeout):
        protocol.read_response(board, 40 * board.byte_time)
    link["dropped_frames"] += 1

    # Well-formed but refused: unknown command, bad lengths, bad core / space.
    for command, payload, status in [
            (0x7E, b"", Status.UNKNOWN_CMD),
            (Command.PUSH, b"\x01", Status.LENGTH),
            (Command.STATUS, b"\x00", Status.LENGTH),
            (Command.READ_MEM, protocol.read_mem_payload(0, 0, 0, 1)[:-1], Status.LENGTH),
            (Command.WRITE_MEM, protocol.read_mem_payload(0, 0, 0, 2), Status.LENGTH),
            (Command.READ_MEM, protocol.read_mem_payload(len(image.config.cores), 0, 0, 1),
             Status.ARG)]:
        answer = raw(board, seq, command, payload)
        assert (answer.status, answer.command, answer.payload) == (status, command, b"")
        link["dropped_frames"] += 1

    # A framing error (low stop bit) loses that byte: the frame it was in is dropped.
    good = protocol.encode_request(seq, Command.PUSH, protocol.push_payload([0]))
    board.write(good[:3])
    board.write_framing_error()
    board.write(good[4:])
    with pytest.raises(protocol.ResponseTimeout):
        protocol.read_response(board, 3 * TIMEOUT_BYTES * board.byte_time)
    board.read(1 << 10, 3 * TIMEOUT_BYTES * board.byte_time)
    link["framing_errors"] += 1
    link["dropped_frames"] += 1

    # Nothing was executed: the array saw no event, and runs the sample as the golden model.
    st = client.status()
    assert st.events_in == 0
    assert st.link == link
    assert run_steps(client, x) == expect
    check_status(client.status(), image, x, result, link=link)


def test_repeated_seq_is_answered_not_executed_twice():
    image = random_image(5, (6, 9, 5), split=True, recurrent=0)
    array, board, client = make_board(image)
    rng = np.random.default_rng(5)
    x = (rng.random((5, image.n_inputs)) < 0.6).astype(np.uint8)
    steps = spike_steps(x)
    result, expect = golden_steps(image, x)
    client.hello()

    outputs = []
    for t, events in enumerate(steps):
        seq = 0x10 + t
        first = raw(board, seq, Command.STEP, protocol.push_payload(events))
        again = raw(board, seq, Command.STEP, protocol.push_payload(events))
        assert first == again
        outputs.append(protocol.parse_events(first.payload))
    # A repeated PUSH is not pushed twice either: an extra copy of step 0's events would change
    # the next sample's first step.
    raw(board, 0x30, Command.CLEAR)
    raw(board, 0x30, Command.CLEAR)
    push = protocol.push_payload(steps[0])
    assert raw(board, 0x31, Command.PUSH, push).status == Status.OK
    assert raw(board, 0x31, Command.PUSH, push).status == Status.OK
    rest = protocol.parse_events(raw(board, 0x32, Command.STEP).payload)
    assert outputs == expect
    assert rest == expect[0]
    st = client.status()
    assert st.link["duplicates"] == len(steps) + 2
    assert st.events_in == len(steps[0])
    assert st.spikes[-1] == len(expect[0])

    # The client's own retry: the first answer is lost, the request is sent again with the
    # same seq and answered from the device's memory of it.
    class LoseFirstAnswer:
        def __init__(self, inner):
            self.inner, self.lose = inner, True

        def write(self, data):
            self.inner.write(data)

        def read(self, n, timeout):
            if self.lose:
                self.lose = False
                self.inner.read(1 << 10, timeout)
                return b""
            return self.inner.read(n, timeout)

    client.clear()
    client.transport = LoseFirstAnswer(board)
    assert client.step(steps[0]) == expect[0]
    client.transport = board
    assert client.retried == 1
    assert [client.step(events) for events in steps[1:]] == expect[1:]
    st = client.status()
    assert st.events_in == int(x.sum())
    assert st.spikes == result.spike_counts[0].tolist()
    assert st.link["duplicates"] == len(steps) + 3


@pytest.mark.parametrize("rule", ["three_factor", "stdp"])
def test_requests_after_a_step_wait_for_the_learning_sweeps(rule):
    """A learning core runs its update sweeps after its step's eos, while the STEP's answer is
    on the line. Here they outlast the answer and the next request (three-factor: 64 rows x 6
    groups = 384 cycles a step; STDP: 64 per group that fired; a request takes 3 cycles a
    byte), so the modulators' WRITE_MEM, STATUS and the weights' READ_MEM reach a busy array:
    they wait for it (rather than BUSY, or counters read mid-sweep). Through the host runtime:
    outputs, every learned weight and learn_cycles per sample as the golden model."""
    from spikeforge.boards.runtime import Board

    image = plastic_image(2, (4, 64, 6), [None, (rule, True)], lanes=(1,), split=False,
                          trace_inc=100, mod_shift=6, ltp_shift=3, ltd_shift=4)
    _, line, client = make_board(image)
    board = Board("stream", baud=10 / line.byte_time, timeout=3000 / line.clk_freq,
                  image=image, transport=line)
    rng = np.random.default_rng(2)
    x = (rng.random((2, 4, image.n_inputs)) < 0.6).astype(np.uint8)
    mods = rng.integers(-128, 128, (2, 4, 6)).astype(np.int8) if rule == "three_factor" \
        else None
    result = board.run(x, modulators=mods)
    want = golden.run(image, x, modulators=mods)
    assert (result.spikes == want.spikes).all()
    assert all((a == b).all() for a, b in zip(result.weights, want.weights, strict=True))
    assert not (want.weights[1] == image.layers[1].weights).all()
    first = golden.run(image, x[:1], modulators=None if mods is None else mods[:1])
    cycles = [first.learning[1]["update_cycles"], want.learning[1]["update_cycles"]]
    assert result.learn_cycles[:, 1].tolist() == [cycles[0], cycles[1] - cycles[0]]
    assert cycles[0] > 0 and result.learn_cycles[:, 0].tolist() == [0, 0]
    assert result.retries == 0 and result.link == {}

    # While a PUSH holds a step open the array cannot get idle: memory requests are refused
    # (BUSY), STATUS answers at once; the STEP closes the step.
    client.hello()
    client.clear()
    client.push([0, 1])
    with pytest.raises(protocol.DeviceError, match="BUSY"):
        client.read_mem(0, MemSpace.WEIGHTS, 0, 1)
    assert not client.status().idle
    client.step([2])
    assert client.read_mem(0, MemSpace.WEIGHTS, 0, 1) == weight_words(want.image, 0)[:1]
    assert client.status().idle


def test_soc_over_the_pins():
    """The whole SoC through its UART pins: HELLO, steps against the golden model, counters; a
    byte with a low stop bit drops its frame (counted), and the link carries on."""
    image = random_image(11, (4, 6, 3), split=True)
    array, board, client = make_board(image, pins=True)
    rng = np.random.default_rng(11)
    x = (rng.random((4, image.n_inputs)) < 0.6).astype(np.uint8)
    result, expect = golden_steps(image, x)
    info = client.hello()
    assert info.image_id == protocol.image_id(image.to_bytes())
    assert run_steps(client, x[:2]) == expect[:2]

    good = protocol.encode_request(0x77, Command.STEP, protocol.push_payload([0, 1]))
    board.write(good[:5])
    board.write_bits(frame_bits(good[5], stop=0))
    board.write(good[6:])
    with pytest.raises(protocol.ResponseTimeout):
        protocol.read_response(board, 3 * TIMEOUT_BYTES * board.byte_time)

    assert run_steps(client, x[2:]) == expect[2:]
    link = dict.fromkeys(protocol.LINK_COUNTERS, 0) | {"framing_errors": 1,
                                                       "dropped_frames": 1}
    check_status(client.status(), image, x, result, link=link)
    assert client.retried == 0


def test_memory_requests_out_of_range_are_refused():
    """Addresses past a memory's depth (or a wrapping 32-bit address, a core or space that does
    not exist, MOD of a core that does not learn) are refused with ARG and change nothing;
    the last word of each memory still answers."""
    from .test_hdl_hostlink_parts import depths_of

    image = random_image(6, (5, 8, 4), split=True)
    array, board, client = make_board(image)
    client.hello()
    depths = depths_of(image)
    seq = 0x60
    refused = 0
    for core, by_space in enumerate(depths):
        for space in (MemSpace.WEIGHTS, MemSpace.STATE, MemSpace.PARAMS, MemSpace.ACC):
            d = by_space[space]
            for addr, count in ((d - 1, 2), (d, 1), (0, d + 1), (0xFFFFFFFF, 1)):
                seq += 1
                answer = raw(board, seq, Command.READ_MEM,
                             protocol.read_mem_payload(core, space, addr, count))
                assert answer.status == Status.ARG, (core, space, addr, count)
                refused += 1
            if space != MemSpace.ACC:
                seq += 1
                answer = raw(board, seq, Command.WRITE_MEM, protocol.write_mem_payload(
                    core, space, d, [1], client.info.word_bytes))
                assert answer.status == Status.ARG
                refused += 1
            assert len(client.read_mem(core, space, d - 1, 1)) == 1
        seq += 1
        answer = raw(board, seq, Command.WRITE_MEM, protocol.write_mem_payload(
            core, MemSpace.MOD, 0, [1], client.info.word_bytes))
        assert answer.status == Status.ARG  # MOD: only the cores of a three-factor layer
        refused += 1
    for core, space in ((len(depths), MemSpace.WEIGHTS), (0, len(MemSpace))):
        seq += 1
        payload = bytes([core, space]) + bytes(4) + b"\x01"
        assert raw(board, seq, Command.READ_MEM, payload).status == Status.ARG
        refused += 1
    # Nothing was written: the weights are the image's, and a sample runs as the golden model.
    for core in range(len(depths)):
        words = weight_words(image, core)
        assert client.read_mem(core, MemSpace.WEIGHTS, 0, len(words)) == words
    client.clear()
    rng = np.random.default_rng(6)
    x = (rng.random((5, image.n_inputs)) < 0.6).astype(np.uint8)
    result, expect = golden_steps(image, x)
    assert run_steps(client, x) == expect
    check_status(client.status(), image, x, result, link={"dropped_frames": refused})


def test_repeats_are_checked_again():
    """A repeat (same seq and command as the last executed request) passes the same checks as
    a new request before it is answered from memory: a repeat with other, bad arguments is
    refused, and not counted as a repeat."""
    image = random_image(8, (5, 8, 4), split=True)
    array, board, client = make_board(image)
    client.hello()
    wb = client.info.word_bytes
    depth = len(weight_words(image, 0))
    good = protocol.read_mem_payload(0, MemSpace.WEIGHTS, depth - 2, 2)
    first = raw(board, 0x21, Command.READ_MEM, good)
    assert first.status == Status.OK
    assert protocol.parse_words(first.payload, wb) == weight_words(image, 0)[-2:]
    outside = protocol.read_mem_payload(0, MemSpace.WEIGHTS, depth - 1, 2)
    assert raw(board, 0x21, Command.READ_MEM, outside).status == Status.ARG
    assert raw(board, 0x21, Command.READ_MEM, good[:-1]).status == Status.LENGTH
    assert raw(board, 0x21, Command.READ_MEM, good) == first  # the real repeat

    write = protocol.write_mem_payload(0, MemSpace.WEIGHTS, 0, [0], wb)
    assert raw(board, 0x22, Command.WRITE_MEM, write).status == Status.OK
    beyond = protocol.write_mem_payload(0, MemSpace.WEIGHTS, depth, [0], wb)
    assert raw(board, 0x22, Command.WRITE_MEM, beyond).status == Status.ARG
    assert raw(board, 0x22, Command.STEP, b"\x00").status == Status.LENGTH  # another command
    assert raw(board, 0x23, Command.STEP, b"").status == Status.OK
    assert raw(board, 0x23, Command.STEP, b"\x00").status == Status.LENGTH
    assert client.read_mem(0, MemSpace.WEIGHTS, 0, depth) == [0] + weight_words(image, 0)[1:]
    st = client.status()
    assert st.link["duplicates"] == 1
    assert st.link["dropped_frames"] == 5


def test_hello_ends_a_step_a_dead_host_left_open():
    """A host that died after a PUSH leaves a step open (memory requests BUSY). The next host's
    HELLO ends it (the array is cleared): memory requests work, and a sample runs as the golden
    model from rest."""
    image = random_image(9, (5, 8, 4), split=True)
    array, board, client = make_board(image)
    client.hello()
    client.push([0, 1, 2])
    with pytest.raises(protocol.DeviceError, match="BUSY"):
        client.read_mem(0, MemSpace.WEIGHTS, 0, 1)
    assert not client.status().idle

    host = LinkClient(board, byte_time=board.byte_time, timeout_bytes=TIMEOUT_BYTES,
                      exec_time=3000 / board.clk_freq, seq=0x80)
    host.hello()
    assert host.status().idle
    words = weight_words(image, 1)
    assert host.read_mem(1, MemSpace.WEIGHTS, 0, len(words)) == words
    rng = np.random.default_rng(9)
    x = (rng.random((5, image.n_inputs)) < 0.6).astype(np.uint8)
    result, expect = golden_steps(image, x)
    assert run_steps(host, x) == expect
    check_status(host.status(), image, x, result, link={"dropped_frames": 1})

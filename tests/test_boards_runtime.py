"""The host runtime (spikeforge.Board) on the virtual board: the RTL of the whole SpikeSoC in
Verilator, reached over a pseudo-terminal with pyserial, exactly as a real board on a serial
port. Outputs and counters against the golden model; weights read back against the image;
protocol faults injected in flight, each counted by the device and recovered by the host
without acting twice; the errors a user meets without a board."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import spikeforge
from spikeforge import digits, protocol
from spikeforge.boards.runtime import Board, BoardError
from spikeforge.hdl.rtl import available_simulators
from spikeforge.image import param_values
from spikeforge.protocol import Command
from spikeforge.sim import golden

pytestmark = pytest.mark.skipif("verilator" not in available_simulators(),
                                reason="the virtual board needs Verilator")


@pytest.fixture(scope="module")
def data():
    return digits.load_digits()


@pytest.fixture(scope="module")
def image(data):
    """The digits network (64-128-10), briefly trained so that its outputs spike."""
    model = digits.build_model()
    digits.train(model, data, epochs=3)
    return spikeforge.compile(model, board="icebreaker", calibration=data.train_spikes[:64])


@pytest.fixture(scope="module")
def board(image):
    with Board.virtual(image) as board:
        yield board


def check_against_golden(result, image, x):
    expect = golden.run(image, x)
    assert result.spikes.shape == expect.spikes.shape
    assert (result.spikes == expect.spikes).all()
    assert (result.sops == expect.sops).all()
    assert (result.events_in == expect.events_in).all()
    assert (result.spike_counts == expect.spike_counts).all()
    assert (result.saturations == expect.saturations).all()
    assert (result.input_events == x.reshape(len(x), -1).sum(axis=1)).all()
    assert (result.events_out == expect.spike_counts[:, -1]).all()
    assert not result.overflow.any()
    return expect


def test_virtual_board_runs_the_golden_model(board, image, data):
    x = data.test_spikes[:3]
    assert board.info.image_id == protocol.image_id(image.to_bytes())
    assert (board.info.n_inputs, board.info.n_outputs) == (64, 10)
    result = board.run(x)
    expect = check_against_golden(result, image, x)
    assert expect.spikes.sum() > 0  # a test of something
    assert result.retries == 0 and result.link == {}
    status = board.status()
    assert status.device.idle and not status.overflow
    assert status.device.spikes == expect.spike_counts[-1].tolist()  # the last sample's


@pytest.mark.slow
def test_virtual_board_many_samples(board, image, data):
    x = data.test_spikes[:40]
    result = board.run(x)
    check_against_golden(result, image, x)
    assert result.retries == 0 and result.link == {}


def test_weights_read_back_written_and_restored(board, image, data):
    got = board.read_weights()
    assert [w.shape for w in got] == [(layer.n_out, layer.fan_in) for layer in image.layers]
    for w, layer in zip(got, image.layers, strict=True):
        assert (w == layer.all_weights()).all()

    # New weights (each neuron's row permuted: the gateware's accumulator still suffices).
    rng = np.random.default_rng(4)
    new_weights = [rng.permuted(w, axis=1) for w in got]
    new = board.write_weights(new_weights, verify=False)  # read_weights checks
    assert all((a == b.all_weights()).all() for a, b in zip(new_weights, new.layers,
                                                             strict=True))
    assert all((a == b).all() for a, b in zip(board.read_weights(), new_weights, strict=True))
    x = data.test_spikes[3:5]
    result = board.run(x)
    expect = check_against_golden(result, new, x)
    assert not (expect.spikes == golden.run(image, x).spikes).all()  # the change shows

    # Loading the image restores it, weights and all.
    board.load(image, verify=False)  # read_weights checks
    assert all((a == layer.all_weights()).all()
               for a, layer in zip(board.read_weights(), image.layers, strict=True))
    check_against_golden(board.run(x), image, x)


def test_load_refuses_what_the_gateware_cannot_hold(board, image):
    from dataclasses import replace

    from .strategies import random_image

    with pytest.raises(BoardError, match=r"built for another network: .*inputs 64 \(image 6\)"):
        board.load(random_image(1, (6, 10, 3)))
    # A parameter field uniform over a layer is a constant of the gateware (hdl/core.py), not
    # a stored field: an image that differs in it must not pass for loaded.
    index, name = next((i, f) for i, layer in enumerate(image.layers)
                       for f, values in param_values(layer).items()
                       if f != "bias" and np.all(values == values[0]))
    field = {"decay": "decay_shift" if image.layers[index].decay_mode == "shift"
             else "decay_mul"}.get(name, name)
    values = getattr(image.layers[index], field).copy()
    values[0] = values[0] - 1 if values[0] > 0 else values[0] + 1
    layers = list(image.layers)
    layers[index] = replace(layers[index], **{field: values})
    other = spikeforge.Image(image.n_inputs, layers, image.config, dict(image.meta))
    with pytest.raises(BoardError, match="params word 0 reads back .* build it for this image"):
        board.load(other)
    board.load(image)


class FaultyLine:
    """A Transport that damages frames in flight, once per request (never its retry).

    ``plan`` maps the index of a STEP or STEP_BITMAP request (counted from 0) to a fault:
    "corrupt" flips a CRC bit of the request; "truncate" sends only its first half;
    "lose" swallows the device's answer; "garble" flips a bit of the answer.
    """

    def __init__(self, inner, plan: dict[int, str]):
        self.inner, self.plan = inner, dict(plan)
        self.steps = -1
        self.seen: set[tuple[int, int]] = set()
        self.answer_fault: str | None = None
        self.buffer = bytearray()
        self.injected: dict[str, int] = {}

    def write(self, data: bytes) -> None:
        seq, command = data[1], data[2]
        fault = None
        # a step's STEP, or STEP_BITMAP where the runtime sent its events as a bitmap
        if command in (Command.STEP, Command.STEP_BITMAP) and (seq, command) not in self.seen:
            self.seen.add((seq, command))
            self.steps += 1
            fault = self.plan.get(self.steps)
        if fault:
            self.injected[fault] = self.injected.get(fault, 0) + 1
        if fault == "corrupt":
            data = bytearray(data)
            data[-1] ^= 0x04  # a bit of the CRC: the device must answer status CRC
            data = bytes(data)
        elif fault == "truncate":
            data = data[:len(data) // 2]
        self.answer_fault = fault if fault in ("lose", "garble") else None
        self.inner.write(data)

    def read(self, n: int, timeout: float) -> bytes:
        if self.answer_fault is not None:
            fault, self.answer_fault = self.answer_fault, None
            answer = protocol.read_response(self.inner, timeout)
            if fault == "lose":
                return b""
            frame = bytearray(protocol.encode_response(answer.seq, answer.command,
                                                       answer.status, answer.payload))
            frame[-1] ^= 0x20
            self.buffer += frame
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        if len(out) < n:
            out += self.inner.read(n - len(out), timeout)
        return out


def test_faults_in_flight_are_counted_recovered_and_never_acted_on_twice(board, image, data):
    x = data.test_spikes[5:7]
    steps = x.shape[1]
    plan = {1: "corrupt", 4: "lose", steps + 2: "truncate", steps + 7: "garble",
            steps + 9: "corrupt"}
    before = board.status()
    line = FaultyLine(board.transport, plan)
    board.transport = line
    try:
        result = board.run(x)
    finally:
        board.transport = line.inner
    assert line.injected == {"corrupt": 2, "lose": 1, "truncate": 1, "garble": 1}
    # Outputs and the array's counters are the golden model's: no STEP ran twice, none lost.
    check_against_golden(result, image, x)
    after = board.status()
    moved = {k: (after.link[k] - before.link[k]) & 0xFFFF for k in protocol.LINK_COUNTERS}
    assert moved == {"crc_errors": 2, "framing_errors": 0, "timeouts": 1,
                     "dropped_frames": 3, "duplicates": 2, "overruns": 0}
    assert result.link == {k: v for k, v in moved.items() if v}
    assert result.retries == after.retries - before.retries == 5
    assert after.device.link_error  # sticky
    # ... and the board carries on.
    check_against_golden(board.run(x[:1]), image, x[:1])


def test_persistent_fault_is_reported_with_counts(board, image, data):
    class DeadLine:  # every answer lost
        def __init__(self, inner):
            self.inner = inner

        def write(self, data):
            self.inner.write(data)

        def read(self, n, timeout):
            self.inner.read(1 << 16, 0.05)
            return b""

    line = board.transport
    board.transport = DeadLine(line)
    try:
        with pytest.raises(BoardError, match=r"failed after 4 attempts") as info:
            board.run(data.test_spikes[:1])
    finally:
        board.transport = line
    assert "the device does not answer STATUS either" in str(info.value)
    assert len(str(info.value).splitlines()) == 1
    check_against_golden(board.run(data.test_spikes[:1]), image, data.test_spikes[:1])


def test_no_such_port():
    with pytest.raises(BoardError, match=r"no serial port '/dev/spikeforge-missing'"):
        Board("/dev/spikeforge-missing")


def test_silent_board_is_reported_within_the_timeout():
    master, slave = os.openpty()  # a terminal with nothing behind it
    try:
        port = os.ttyname(slave)
        start = time.monotonic()
        with pytest.raises(BoardError, match=f"no answer from the board on {port}"):
            Board(port, timeout=0.05)
        assert time.monotonic() - start < 3
    finally:
        os.close(master)
        os.close(slave)


def test_virtual_board_needs_an_image():
    with pytest.raises(BoardError, match="needs the image"):
        Board("sim")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_virtual_board_stops_with_close_and_with_its_owner(image, tmp_path):
    path = tmp_path / "digits.sfi"
    image.save(path)
    board = Board.virtual(path)
    pid = board.simulation.pid
    assert not _gone(pid)
    board.close()
    assert wait_gone(pid, 10)

    code = ("import sys, time\nfrom spikeforge import Board\n"
            f"board = Board.virtual({str(path)!r})\n"
            "print(board.simulation.pid, flush=True)\ntime.sleep(300)\n")
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(owner.stdout.readline())
        assert not _gone(pid)
    finally:
        owner.kill()
        owner.wait()
    assert wait_gone(pid, 10), "the simulator outlived the process that started it"


def test_cli_run_on_the_virtual_board(image, data, tmp_path):
    from spikeforge.cli import main

    net, inp, out, saved = (tmp_path / name for name in ("net.sfi", "in.npz", "out.npz",
                                                          "saved.sfi"))
    image.save(net)
    x = data.test_spikes[7:9]
    np.savez(inp, spikes=x)
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "run", str(net), "--port",
                           "sim", "--input", str(inp), "-o", str(out), "--save-image",
                           str(saved), "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["batch"] == 2 and summary["retries"] == 0
    with np.load(out) as got:
        check_against_golden(type("R", (), {k: got[k] for k in got.files}), image, x)
    back = spikeforge.load_image(saved)
    assert all((a.all_weights() == b.all_weights()).all()
               for a, b in zip(back.layers, image.layers, strict=True))

    code = main(["run", str(net), "--port", "/dev/spikeforge-missing", "--input", str(inp),
                 "-o", str(tmp_path / "never.npz")])
    assert code == 1
    assert not (tmp_path / "never.npz").exists()


def test_cli_run_bad_port_is_one_line(tmp_path, image):
    net, inp = tmp_path / "net.sfi", tmp_path / "in.npz"
    image.save(net)
    np.savez(inp, spikes=np.zeros((1, 2, image.n_inputs), np.uint8))
    proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", "run", str(net), "--port",
                           "/dev/spikeforge-missing", "--input", str(inp), "-o",
                           str(tmp_path / "o.npz")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("spikeforge: error: no serial port '/dev/spikeforge-missing'")

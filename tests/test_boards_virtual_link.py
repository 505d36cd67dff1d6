"""The host link of protocols 4 and 5 end to end: the UART rate as an option (checked
dividers), and on the virtual board (whole SoC in Verilator, slow) runs with bitmap steps and
through the on-chip rate encoder (RUN_ENCODED, also at 8 Mbaud and 40 MHz) against the golden
model."""

from __future__ import annotations

import numpy as np
import pytest

import spikeforge
from spikeforge import protocol
from spikeforge.boards.catalog import find_board
from spikeforge.boards.runtime import Board, BoardError, default_baud
from spikeforge.boards.top import check_baud, plan_clock
from spikeforge.boards.virtual import VirtualBoard, VirtualBoardError
from spikeforge.hdl.rtl import available_simulators
from spikeforge.hdl.soc import SpikeSoC
from spikeforge.image import ConvSpec, HwConfig
from spikeforge.protocol import Command
from spikeforge.sim.encode import with_rate_encoder

from .strategies import conv_image, random_image


def test_baud_is_a_checked_option():
    board = find_board("icebreaker")
    assert board.baud == 8_000_000 and board.to_dict()["baud"] == 8_000_000
    assert check_baud(board) == 8_000_000
    assert SpikeSoC(random_image(0, (4, 3)), clk_freq=board.fabric_hz,
                    baud=board.baud).divisor == 5  # 40.5 MHz / 8 Mbaud, 1.25 % off
    with pytest.raises(ValueError, match=r"^board 'icebreaker': 6000000 baud from a 40500000\.0 "
                                         r"Hz clock is off by 3\.6% \(divisor 7\); choose "
                                         r"another rate$"):
        check_baud(board, 6_000_000)
    with pytest.raises(ValueError, match=r"^baud rate must be a positive number, not 0$"):
        check_baud(board, 0)
    with pytest.raises(VirtualBoardError, match=r"^the virtual board cannot talk at 1000000 "
                                                r"baud: a 3000000\.0 Hz clock is too slow "):
        VirtualBoard(random_image(0, (4, 3)), baud=1_000_000, clock_hz=3e6)
    image = random_image(0, (4, 3))
    assert default_baud(image) == 115200  # no board recorded
    on_board = spikeforge.Image(image.n_inputs, image.layers,
                                HwConfig("iCE40UP5K", image.config.cores, board="icebreaker"))
    assert default_baud(on_board) == 8_000_000
    # An image with a convolution runs at the board's lower convolution clock and rate:
    # 18 MHz / 3 Mbaud, divisor 6, exact
    conv = conv_image(1, ConvSpec(1, 6, 6, 2, 3, padding=1, pool="max", pool_size=2))
    conv = spikeforge.Image(conv.n_inputs, conv.layers,
                            HwConfig("iCE40UP5K", conv.config.cores, board="icebreaker"))
    assert (board.clock_for(conv), board.baud_for(conv)) == (18e6, 3_000_000)
    assert default_baud(conv) == 3_000_000 and check_baud(board, image=conv) == 3_000_000
    assert plan_clock(board, image=conv).f_out == 18e6
    assert plan_clock(board).f_out == board.fabric_hz == 40.5e6


needs_verilator = pytest.mark.skipif("verilator" not in available_simulators(),
                                     reason="the virtual board needs Verilator")


@pytest.mark.slow
@needs_verilator
def test_virtual_board_bitmap_and_encoder_match_golden():
    # 20 inputs: a 3-byte bitmap beats AER from 2 events a step, so dense steps go as bitmaps
    # the first small image whose outputs spike both on spikes and on encoded intensities (a
    # test of something), whatever the image strategy draws for a given seed
    for seed in range(31, 131):
        coded = with_rate_encoder(random_image(seed, (20, 12, 4), split=True), seed=0x1D)
        rng = np.random.default_rng(seed)
        x = (rng.random((2, 6, 20)) < 0.5).astype(np.uint8)
        pixels = rng.integers(0, 256, (2, 20), dtype=np.uint8)
        if spikeforge.simulate(coded, x).spikes.any() and spikeforge.simulate(
                coded, intensities=pixels, steps=6).spikes.any():
            break
    else:
        raise AssertionError("no image of seeds 31..130 spikes at its output")
    with Board.virtual(coded) as board:
        assert board.info.bitmap and board.info.rate_encoder
        assert board.info.run_steps >= 6
        spikes_run = board.run(x)
        coded_run = board.run(intensities=pixels, steps=6)
        # a STATUS every 4 steps: RUN_ENCODED of 4 steps, then of 2, the LFSR running on
        chunked_run = board.run(intensities=pixels, steps=6, status_every=4)
        status = board.status()
    encoded = spikeforge.simulate(coded, intensities=pixels, steps=6)
    for got, want in ((spikes_run, spikeforge.simulate(coded, x)), (coded_run, encoded),
                      (chunked_run, encoded)):
        assert want.spikes.sum() > 0  # a test of something
        assert np.array_equal(got.spikes, want.spikes)
        assert np.array_equal(got.sops, want.sops)
        assert (got.link_bytes > 0).all() and (got.compute_seconds > 0).all()
    # the encoded samples' bytes on the line, written out from the protocol: CLEAR, one
    # INTENSITY, RUN_ENCODED requests (u16 steps; every step's output events and a STEP_END),
    # each followed by a STATUS (status_interval >= 6)
    def exchange(command, payload=b"", answer=b""):
        return len(protocol.encode_request(0, command, payload)) + len(
            protocol.encode_response(0, command, 0, answer))

    def run_answer(rows):
        return b"".join(protocol.push_payload(np.flatnonzero(row).tolist()) + b"\xff\xff"
                        for row in rows)

    for result, chunks in ((coded_run, [(0, 6)]), (chunked_run, [(0, 4), (4, 6)])):
        for b in range(2):
            want = (exchange(Command.CLEAR)
                    + exchange(Command.INTENSITY,
                               protocol.intensity_payload(0, pixels[b].tolist()))
                    + sum(exchange(Command.RUN_ENCODED, (t1 - t0).to_bytes(2, "little"),
                                   run_answer(result.spikes[b, t0:t1]))
                          + exchange(Command.STATUS, answer=bytes(protocol.status_length(2)))
                          for t0, t1 in chunks))
            assert result.link_bytes[b] == want
    assert not status.device.link_error and status.retries == 0


@pytest.mark.slow
@needs_verilator
def test_virtual_board_at_8_mbaud_runs_784_inputs_as_golden():
    # The SoC at 40 MHz and 8 Mbaud (5 cycles per UART bit, the iCEBreaker's planned rate), 784
    # inputs (the encoder's queue in a block RAM), 12 steps in one RUN_ENCODED per sample
    for seed in range(40, 140):
        coded = with_rate_encoder(random_image(seed, (784, 12, 4)), seed=0x2B)
        pixels = np.random.default_rng(seed).integers(0, 80, (2, 784), dtype=np.uint8)
        want = spikeforge.simulate(coded, intensities=pixels, steps=12)
        if want.spikes.any() and not want.spikes.all():
            break
    else:
        raise AssertionError("no image of seeds 40..139 spikes at its output")
    with Board.virtual(coded, baud=8_000_000, clock_hz=40e6) as board:
        assert board.baud == 8_000_000 and board.info.clock_hz == 40_000_000
        assert board.info.run_steps >= 12
        got = board.run(intensities=pixels, steps=12)
        status = board.status()
    assert np.array_equal(got.spikes, want.spikes)
    assert np.array_equal(got.sops, want.sops)
    assert np.array_equal(got.input_events, want.events_in[:, 0])
    assert not status.device.link_error and status.retries == 0


@pytest.mark.slow
@needs_verilator
def test_virtual_board_without_encoder_refuses_intensities():
    plain = random_image(32, (20, 12, 4))
    with Board.virtual(plain) as board:
        assert board.info.bitmap and not board.info.rate_encoder
        with pytest.raises(ValueError, match=r"^intensities need an image that encodes on "):
            board.run(intensities=np.zeros((1, 20), np.uint8), steps=2)
        board.image = with_rate_encoder(plain, seed=3)  # the host believes it encodes
        with pytest.raises(BoardError, match=r"has no on-chip rate encoder"):
            board.run(intensities=np.zeros((1, 20), np.uint8), steps=2)


def test_cli_refuses_a_bad_baud_and_intensities_without_encoder(tmp_path, capsys):
    from spikeforge.cli import main

    image = random_image(0, (4, 3))
    image = spikeforge.Image(image.n_inputs, image.layers,
                             HwConfig("iCE40UP5K", image.config.cores, board="icebreaker"))
    image.save(tmp_path / "net.sfi")
    np.savez(tmp_path / "pix.npz", intensities=np.zeros((1, 4), np.uint8))
    for argv, needle in (
            (["build", tmp_path / "net.sfi", "--board", "icebreaker", "--baud", "6000000",
              "-o", tmp_path / "build"], "6000000 baud from a 40500000.0 Hz clock is off by"),
            (["simulate", tmp_path / "net.sfi", "--input", tmp_path / "pix.npz", "--steps", "3",
              "-o", tmp_path / "out.npz"], "intensities need an image that encodes on chip")):
        assert main([str(a) for a in argv]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "build" / "top.bin").exists()
    assert not (tmp_path / "out.npz").exists()

"""The on-chip rate encoder: `sim.encode.rate_lfsr` against a scalar restatement and its
closed-form rate; `hdl.encoder.RateEncoder` in the Amaranth simulator against `rate_lfsr`."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl.encoder import RateEncoder, lfsr_advance_masks
from spikeforge.lfsr import LFSR_PERIOD, lfsr_positions, lfsr_sequence
from spikeforge.sim.encode import rate_lfsr


def scalar_rate_lfsr(intensity: list[int], steps: int, seed: int) -> np.ndarray:
    """One LFSR step at a time, as the docstring of rate_lfsr says it."""
    state = seed
    out = np.zeros((steps, len(intensity)), dtype=np.uint8)
    for t in range(steps):
        for j, x in enumerate(intensity):
            for _ in range(8):
                state = (state >> 1) ^ (0xB400 if state & 1 else 0)
            out[t, j] = (state & 0xFF) < x
    return out


@settings(max_examples=30, deadline=None)
@given(intensity=st.lists(st.integers(0, 255), min_size=1, max_size=20),
       steps=st.integers(1, 6), seed=st.integers(1, 0xFFFF))
def test_rate_lfsr_is_the_scalar_definition(intensity, steps, seed):
    got = rate_lfsr(np.array([intensity, intensity[::-1]], dtype=np.uint8), steps, seed=seed)
    assert np.array_equal(got[0], scalar_rate_lfsr(intensity, steps, seed))
    assert np.array_equal(got[1], scalar_rate_lfsr(intensity[::-1], steps, seed))


def test_rate_lfsr_rate_is_intensity_over_256():
    # With 4 inputs, input j's draws are states 32 apart (8 steps x 4 inputs), and 32 is prime
    # to the period 65,535: over 65,535 steps each input meets every state once. The low bytes
    # of the states are uniform but for one missing zero, so input j spikes 256 x - 1 times.
    intensity = np.array([[1, 64, 128, 255], [0, 200, 3, 100]], dtype=np.uint8)
    spikes = rate_lfsr(intensity, 65535, seed=1)
    expected = np.where(intensity > 0, 256 * intensity.astype(np.int64) - 1, 0)
    assert np.array_equal(spikes.sum(axis=1, dtype=np.int64), expected)


@pytest.mark.parametrize(("args", "message"), [
    ((np.array([[1.5]]), 2), r"^intensities must be integers"),
    ((np.array([256]), 2), r"^intensities must lie in 0\.\.255$"),
    ((np.array([3]), 0), r"^steps must be at least 1, not 0$"),
])
def test_rate_lfsr_refuses(args, message):
    with pytest.raises(ValueError, match=message):
        rate_lfsr(*args, seed=1)
    with pytest.raises(ValueError, match=r"^an LFSR seed must be 1\.\.65535, not 0$"):
        rate_lfsr(np.array([3]), 2, seed=0)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 24), steps=st.integers(1, 4), seed=st.integers(1, 0xFFFF),
       samples=st.integers(1, 2), data=st.data())
def test_gateware_encodes_as_rate_lfsr(n, steps, seed, samples, data):
    intensity = np.array(data.draw(st.lists(st.lists(st.integers(0, 255), min_size=n,
                                                     max_size=n),
                                            min_size=samples, max_size=samples)),
                         dtype=np.uint8)
    # a repeating pattern of stalled cycles; it lets one transfer through at least once a round
    stall = data.draw(st.lists(st.booleans(), max_size=6)) + [False]
    dut = RateEncoder(n_inputs=n, seed=seed, queue=data.draw(st.sampled_from([2, 3, 32])))
    expected = rate_lfsr(intensity, steps, seed=seed)
    got = np.zeros_like(expected)

    async def bench(ctx):
        ready = itertools.cycle(stall)
        for b in range(samples):
            ctx.set(dut.w_en, 1)
            for j in range(n):
                ctx.set(dut.w_addr, j)
                ctx.set(dut.w_data, int(intensity[b, j]))
                await ctx.tick()
            ctx.set(dut.w_en, 0)
            ctx.set(dut.restart, 1)
            await ctx.tick()
            ctx.set(dut.restart, 0)
            for t in range(steps):
                ctx.set(dut.start, 1)
                await ctx.tick()
                ctx.set(dut.start, 0)
                last = -1
                for _ in range(20 * n + 20):
                    ctx.set(dut.o.ready, not next(ready))
                    valid, payload, accepted = ctx.get(dut.o.valid), ctx.get(dut.o.payload), \
                        ctx.get(dut.o.ready)
                    await ctx.tick()
                    if valid and accepted:
                        if payload.eos:
                            break
                        assert payload.addr > last  # ascending
                        last = payload.addr
                        got[b, t, payload.addr] = 1
                else:
                    raise AssertionError("the encoder never ended its step")
                assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert np.array_equal(got, expected)


def test_encoder_parameters_are_checked():
    with pytest.raises(ValueError, match=r"^LFSR seed must be 1\.\.65535, not 0$"):
        RateEncoder(n_inputs=4, seed=0)


@settings(max_examples=50, deadline=None)
@given(state=st.integers(1, 0xFFFF), steps=st.integers(0, 40))
def test_advance_matrix_is_the_lfsr_run_forward(state, steps):
    """Each row of the GF(2) matrix, applied to a state, lands where the LFSR sequence does."""
    got = 0
    for i, mask in enumerate(lfsr_advance_masks(steps)):
        got |= (bin(state & mask).count("1") & 1) << i
    expected = lfsr_sequence()[(lfsr_positions()[state] + steps) % LFSR_PERIOD]
    assert got == expected


def test_scan_runs_ahead_of_a_stalled_consumer():
    """The scan costs n_inputs + 2 cycles and stalls only on a full queue: with nobody taking
    events it still ends while its spikes and eos fit the queue, and it holds at a full one."""
    n = 40
    for spiking, queue, ends in ((3, 8, True), (12, 8, False)):
        dut = RateEncoder(n_inputs=n, seed=1, queue=queue)
        intensity = [255] * spiking + [0] * (n - spiking)  # 255: spikes on every draw but one

        async def bench(ctx, dut=dut, intensity=intensity, ends=ends, spiking=spiking):
            ctx.set(dut.w_en, 1)
            for j, x in enumerate(intensity):
                ctx.set(dut.w_addr, j)
                ctx.set(dut.w_data, x)
                await ctx.tick()
            ctx.set(dut.w_en, 0)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            await ctx.tick().repeat(n + 2)
            assert ctx.get(dut.busy) != ends
            ctx.set(dut.o.ready, 1)
            got = []
            while True:
                _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
                if valid:
                    if payload.eos:
                        break
                    got.append(payload.addr)
            assert got == [j for j in range(spiking)
                           if rate_lfsr(np.array(intensity, np.uint8), 1, seed=1)[0, 0, j]]

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()

"""The image file: round trip, device memory layout, and every way a file can be bad."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.image import (
    FORMAT_VERSION,
    ImageError,
    image_from_bytes,
    load_image,
    pack_weights,
    unpack_weights,
)

from .strategies import images


def _same(a, b) -> None:
    assert a.n_inputs == b.n_inputs and a.config == b.config
    for x, y in zip(a.layers, b.layers, strict=True):
        np.testing.assert_array_equal(x.weights, y.weights)
        np.testing.assert_array_equal(x.all_weights(), y.all_weights())
        for name in ("bias", "threshold", "decay_shift", "decay_mul"):
            xa, ya = getattr(x, name), getattr(y, name)
            assert (xa is None) == (ya is None)
            if xa is not None:
                np.testing.assert_array_equal(xa, ya)
        assert (x.weight_bits, x.v_bits, x.acc_bits, x.reset, x.decay_mode, x.decay_frac) == \
               (y.weight_bits, y.v_bits, y.acc_bits, y.reset, y.decay_mode, y.decay_frac)


@settings(max_examples=40, deadline=None)
@given(images())
def test_round_trip(image):
    _same(image, image_from_bytes(image.to_bytes()))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20), st.integers(1, 9), st.integers(2, 16), st.integers(1, 8),
       st.integers(0, 2**31))
def test_weight_words_hold_lanes_of_a_row(neurons, fan_in, bits, lanes, seed):
    """Closed form of the layout: word (row j, group g), lane p = weight of neuron g*lanes+p."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (neurons, fan_in))
    mem = pack_weights(w, bits, lanes)
    groups = -(-neurons // lanes)
    assert mem.shape == (fan_in * groups, -(-lanes * bits // 8))
    for j in range(fan_in):
        for g in range(groups):
            word = int.from_bytes(mem[j * groups + g].tobytes(), "little")
            for p in range(lanes):
                n = g * lanes + p
                field = (word >> (p * bits)) & ((1 << bits) - 1)
                expect = int(w[n, j]) & ((1 << bits) - 1) if n < neurons else 0
                assert field == expect
    np.testing.assert_array_equal(unpack_weights(mem, bits, lanes, neurons, fan_in), w)


def test_save_load(tmp_path, small_image):
    path = tmp_path / "net.sfi"
    small_image.save(path)
    _same(small_image, load_image(path))
    assert [p.name for p in tmp_path.iterdir()] == ["net.sfi"]


@pytest.mark.parametrize("cut", [0, 5, 17, -1, -4, -100])
def test_truncated(small_image, cut):
    data = small_image.to_bytes()
    with pytest.raises(ImageError, match="truncated|not a spikeforge image"):
        image_from_bytes(data[:cut])


def test_every_flipped_byte_is_caught(small_image):
    data = bytearray(small_image.to_bytes())
    for pos in range(0, len(data), max(1, len(data) // 97)):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        with pytest.raises(ImageError):
            image_from_bytes(bytes(bad))


def test_junk_and_unknown_version(small_image):
    with pytest.raises(ImageError, match="not a spikeforge image"):
        image_from_bytes(b"PK\x03\x04 this is a zip file, not an image" * 3)
    data = bytearray(small_image.to_bytes())
    struct.pack_into("<H", data, 8, FORMAT_VERSION + 6)
    body = bytes(data[:-4])
    with pytest.raises(ImageError, match=f"version {FORMAT_VERSION + 6} is not supported"):
        image_from_bytes(body + struct.pack("<I", zlib.crc32(body)))


def test_trailing_bytes_and_missing_file(small_image, tmp_path):
    with pytest.raises(ImageError, match="unexpected bytes"):
        image_from_bytes(small_image.to_bytes() + b"\0")
    with pytest.raises(ImageError, match="no such image file"):
        load_image(tmp_path / "absent.sfi")


def test_accumulator_too_narrow_is_refused(small_image):
    from dataclasses import replace

    layer = small_image.layers[0]
    with pytest.raises(ImageError, match="can overflow"):
        replace(layer, acc_bits=layer.acc_bits_needed() - 1)

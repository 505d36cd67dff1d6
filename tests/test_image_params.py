"""The image's device contracts: the per-neuron parameter word and the reassembly of a layer's
weights from its cores' memories, against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.hdl.core import param_layout
from spikeforge.image import (
    ParamField,
    assemble_weights,
    pack_params,
    param_fields,
    param_words,
    unpack_params,
)

from .strategies import images, signed


def _bias_width(bias) -> int:
    """The narrowest two's-complement width (at least 2) that holds every bias."""
    width = 2
    while not all(-(1 << (width - 1)) <= int(b) < 1 << (width - 1) for b in bias):
        width += 1
    return width


@settings(max_examples=60, deadline=None)
@given(images())
def test_parameter_words_have_the_documented_layout(image):
    """threshold in [0, v-1), bias (two's complement) above it, the decay field on top."""
    for layer in image.layers:
        tbits, bbits = layer.v_bits - 1, _bias_width(layer.bias)
        decay = {"none": None, "shift": (layer.decay_shift, 5),
                 "mul": (layer.decay_mul, layer.decay_frac + 1)}[layer.decay_mode]
        expect_fields = [("threshold", tbits, False, 0), ("bias", bbits, True, tbits)]
        if decay is not None:
            expect_fields.append(("decay", decay[1], False, tbits + bbits))
        assert param_fields(layer) == tuple(ParamField(*f) for f in expect_fields)
        words = param_words(layer, 0, layer.n_out)
        layout = param_layout(layer)  # the gateware's view of the same word
        for n, word in enumerate(words):
            expect = int(layer.threshold[n]) + (int(layer.bias[n]) % (1 << bbits) << tbits)
            if decay is not None:
                expect += int(decay[0][n]) << (tbits + bbits)
            assert word == expect
            values = unpack_params(param_fields(layer), word)
            assert values["threshold"] == layer.threshold[n]
            assert values["bias"] == layer.bias[n]
            assert values["bias"] == signed(word >> tbits, bbits)
            if decay is not None:
                assert values["decay"] == decay[0][n]
            const = layout.const({name: value for name, value in values.items()})
            assert const.as_value().value == word
        assert layout.size == sum(f.width for f in param_fields(layer))


@given(st.integers(1, 20), st.integers(-2**20, 2**20))
def test_pack_params_refuses_values_outside_a_field(width, value):
    fields = (ParamField("bias", width, True, 3),)
    if -(1 << (width - 1)) <= value < 1 << (width - 1):
        assert unpack_params(fields, pack_params(fields, {"bias": value})) == {"bias": value}
    else:
        with pytest.raises(ValueError, match=rf"^bias must fit a signed {width}-bit field, "
                                             rf"not {value}$"):
            pack_params(fields, {"bias": value})


@settings(max_examples=40, deadline=None)
@given(images())
def test_assemble_weights_inverts_the_weight_memories(image):
    for index, layer in enumerate(image.layers):
        full = assemble_weights(image.config.cores, index, layer.n_out, layer.fan_in,
                                layer.weight_bits, image.weight_memory)
        np.testing.assert_array_equal(full, layer.all_weights())

"""The image loader against headers that lie while their checksum is right.

Each test rewrites the JSON header of a valid image (recomputing the lengths and the CRC, as an
attacker or a buggy tool would) and checks that the loader refuses it with an ImageError naming
the field, without crashing, hanging or allocating by the lie. The fuzz tests at the end mutate
random header fields; a mutant is either refused with an ImageError or accepted, and then its
image saves back to the same header and payload.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import tracemalloc
import zlib
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spikeforge.image import (
    LAYER_FIELDS,
    MAX_CONV_POSITIONS,
    MAX_CORES,
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    MAX_KERNEL,
    MAX_NEURONS,
    MAX_PAYLOAD_BYTES,
    ConvSpec,
    CoreConfig,
    HwConfig,
    Image,
    ImageError,
    LayerParams,
    image_from_bytes,
    load_image,
)

from .strategies import conv_layer, plastic_image, random_image, random_layer

HEAD = struct.Struct("<8sHHII")


def split(data: bytes) -> tuple[dict, bytes]:
    """(header, payload) of image bytes."""
    _, _, _, head_len, payload_len = HEAD.unpack_from(data)
    return (json.loads(data[HEAD.size:HEAD.size + head_len]),
            data[HEAD.size + head_len:HEAD.size + head_len + payload_len])


def assemble(head: bytes, payload: bytes, *, reserved: int = 0) -> bytes:
    """An image file around a header text and a payload, with lengths and CRC made right."""
    body = HEAD.pack(b"SFIMAGE\x00", 1, reserved, len(head), len(payload)) + head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def rewrite(data: bytes, mutate=None, *, payload=None) -> bytes:
    header, old_payload = split(data)
    if mutate is not None:
        mutate(header)
    return assemble(json.dumps(header, sort_keys=True).encode(),
                    old_payload if payload is None else payload)


def refused(data: bytes, pattern: str) -> str:
    with pytest.raises(ImageError, match=pattern) as info:
        image_from_bytes(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def refused_within(data: bytes, pattern: str, limit: int = 1 << 20) -> None:
    """Refused as `refused` says, and with less than `limit` bytes traced at the peak."""
    tracemalloc.start()
    try:
        image_from_bytes(data)
    except ImageError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    refused(data, pattern)
    assert peak < limit, f"{peak} bytes traced"


def learning_image() -> Image:
    return plastic_image(3, (5, 6, 4), [None, ("three_factor", True)])


def mul_image() -> Image:
    image = random_image(5, (4, 7, 3), decay_mode="mul", split=True, lanes=(3, 2))
    meta = {"source": "test", "quantization": {"layers": [{"name": "l0", "scale": 0.5}],
                                               "notes": ["a note"], "calibrated": False},
            "resources": {"luts": [1000, 5280], "bram": [4, 30]}}
    return Image(image.n_inputs, image.layers, image.config, meta)


def conv_image() -> Image:
    """A convolution with padding and a max pool (two cores of whole channels), then a dense
    layer."""
    rng = np.random.default_rng(7)
    spec = ConvSpec(2, 6, 6, 3, 3, padding=1, pool="max", pool_size=2)
    layers = [conv_layer(rng, "c", spec), random_layer(rng, "fc", spec.n_out, 4)]
    cores = (CoreConfig(0, 0, 18, 2), CoreConfig(0, 18, spec.n_out, 1), CoreConfig(1, 0, 4, 2))
    return Image(spec.n_in, layers, HwConfig("iCE40UP5K", cores))


# -- the faults of issue 15, one by one -----------------------------------------------------------

def test_nested_json_is_refused_before_parsing(small_image):
    header, payload = split(small_image.to_bytes())
    header["meta"] = {"deep": "NEST"}
    text = json.dumps(header, sort_keys=True).replace('"NEST"', "[" * 100_000 + "]" * 100_000)
    refused(assemble(text.encode(), payload), rf"nested deeper than {MAX_JSON_DEPTH} levels")
    # a bracket inside a string is no nesting
    header["meta"] = {"text": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}
    image = image_from_bytes(rewrite(small_image.to_bytes(),
                                     lambda h: h.update(meta=header["meta"])))
    assert image.meta == header["meta"]


@pytest.mark.parametrize("lanes", [0, -1, 3_000_000])
def test_lanes_out_of_range(small_image, lanes):
    def mutate(h):
        h["config"]["cores"][0]["lanes"] = lanes
    refused(rewrite(small_image.to_bytes(), mutate), r"^image: core 0: lanes must be")


def test_lanes_wider_than_the_core(small_image):
    """The 2.5 KB image that took minutes and hundreds of MB: lanes far beyond the core's
    neurons over one-byte words. Refused before any weight is unpacked."""
    data = random_image(1, (6, 1), lanes=(1,)).to_bytes()

    def mutate(h):
        h["config"]["cores"][0]["lanes"] = MAX_NEURONS
    refused_within(rewrite(data, mutate),
                   r"^image: array 'core0\.weights': shape must be \[6, 32768\], not \[6, 1\]$")


@pytest.mark.parametrize("n_out", [0, MAX_NEURONS + 1, 10**12])
def test_huge_or_zero_layer_is_refused_before_allocation(small_image, n_out):
    def mutate(h):
        h["layers"][0]["n_out"] = n_out
    refused_within(rewrite(small_image.to_bytes(), mutate),
                   rf"^image: layer 0: n_out must be an integer 1\.\.{MAX_NEURONS}, not {n_out}$")


def test_float_dtype_over_int_thresholds(small_image):
    def mutate(h):
        h["arrays"][1]["dtype"] = "<f4"
    refused(rewrite(small_image.to_bytes(), mutate),
            r"^image: array 'layer0\.threshold': dtype must be '<i4', not '<f4'$")


@pytest.mark.parametrize("dtype", [">i4", "<i8", "<u4", "|u1", "O", "<U1", 7, None])
def test_only_the_dtype_save_writes(small_image, dtype):
    def mutate(h):
        h["arrays"][0]["dtype"] = dtype
    refused(rewrite(small_image.to_bytes(), mutate), r"array 'layer0\.bias': dtype must be")


def test_one_value_bias_is_not_broadcast(small_image):
    """A bias of one value (4 bytes) where ten belong: refused, not spread over the layer."""
    data = small_image.to_bytes()
    header, payload = split(data)
    bias = header["arrays"][0]
    assert bias["name"] == "layer0.bias"
    start = bias["offset"]
    payload = payload[:start + 4] + payload[start + bias["nbytes"]:]

    def mutate(h):
        h["arrays"][0].update(shape=[1], nbytes=4)
        for entry in h["arrays"][1:]:
            entry["offset"] -= bias["nbytes"] - 4
        h["payload_bytes"] = len(payload)
    refused(rewrite(data, mutate, payload=payload),
            r"^image: array 'layer0\.bias': shape must be \[10\], not \[1\]$")


@pytest.mark.parametrize("offset", [-20, -1, 1, 10**9, "0", 0.0])
def test_offsets_outside_or_inside_the_payload(small_image, offset):
    """Offsets that point into the header or the CRC (negative, or past the payload), that
    overlap the previous array, or that leave a gap."""
    def mutate(h):
        entry = h["arrays"][1]
        entry["offset"] = offset if not isinstance(offset, int) or offset in (-20, 10**9) \
            else entry["offset"] + offset
    refused(rewrite(small_image.to_bytes(), mutate),
            r"array 'layer0\.threshold': offset .*(outside|back to back)")


def test_unreferenced_payload_bytes(small_image):
    data = small_image.to_bytes()
    header, payload = split(data)

    def mutate(h):
        h["payload_bytes"] = len(payload) + 8
    refused(rewrite(data, mutate, payload=payload + bytes(8)),
            r"^image: the payload's last 8 bytes belong to no array$")


def test_word_of_one_byte_instead_of_five():
    """40-bit words (5 lanes of 8 bits) declared as 1-byte words."""
    image = random_image(2, (3, 5), lanes=(5,), weight_bits=8)
    data = image.to_bytes()
    header, payload = split(data)
    entry = header["arrays"][-1]
    assert entry["shape"] == [3, 5]

    def mutate(h):
        h["arrays"][-1].update(shape=[3, 1], nbytes=3)
        h["payload_bytes"] = len(payload) - 12
    refused(rewrite(data, mutate, payload=payload[:-12]),
            r"^image: array 'core0\.weights': shape must be \[3, 5\], not \[3, 1\]$")


def test_padding_bits_and_unused_lanes_must_be_zero():
    # 3 lanes of 3 bits: 9 bits in 2-byte words, 7 padding bits; 4 neurons: 2 unused lanes
    image = random_image(4, (2, 4), lanes=(3,), weight_bits=3)
    data = image.to_bytes()
    header, payload = split(data)
    entry = header["arrays"][-1]
    assert entry["shape"] == [2 * 2, 2]
    start = entry["offset"]
    bad = bytearray(payload)
    bad[start + 1] |= 0x80  # word 0, bit 15: padding
    refused(rewrite(data, payload=bytes(bad)),
            r"^image: core 0: weight memory word 0 has padding bits past its 3 lanes set")
    bad = bytearray(payload)
    bad[start + 2] |= 0x38  # word 1 (group 1), lane 1 = neuron 4, which does not exist
    refused(rewrite(data, payload=bytes(bad)),
            r"^image: core 0: weight memory has weights in the 2 unused lanes")


@pytest.mark.parametrize("value", ["no", "false", 0, 1, None, [], "true"])
def test_stochastic_must_be_a_real_bool(value):
    data = learning_image().to_bytes()

    def mutate(h):
        h["learning"][0]["stochastic"] = value
    refused(rewrite(data, mutate),
            r"^image: learning on layer 1 \('l1'\): stochastic must be true or false, not ")


def test_zero_layers(small_image):
    def mutate(h):
        h["layers"] = []
    refused(rewrite(small_image.to_bytes(), mutate), r"^image: layers must be a list of 1\.\.")
    with pytest.raises(ImageError, match=r"^an image must have 1\.\.256 layers, not 0$"):
        Image(6, [], small_image.config).to_bytes()


@pytest.mark.parametrize(("path", "value", "pattern"), [
    (("n_inputs",), 0, r"n_inputs must be an integer 1\.\.65536, not 0"),
    (("n_inputs",), True, r"n_inputs must be an integer 1\.\.65536, not True"),
    (("layers", 0, "weight_bits"), 8.0, r"layer 0: weight_bits must be an integer 2\.\.16"),
    (("layers", 0, "weight_bits"), 17, r"layer 0: weight_bits must be an integer 2\.\.16"),
    (("layers", 0, "v_bits"), 33, r"layer 0: v_bits must be an integer 4\.\.32"),
    (("layers", 0, "acc_bits"), 41, r"layer 0: acc_bits must be an integer 2\.\.40"),
    (("layers", 0, "reset"), "none", r"layer 0: reset must be one of 'subtract', 'zero'"),
    (("layers", 0, "decay_mode"), 1, r"layer 0: decay_mode must be one of"),
    (("layers", 0, "decay_frac"), 8, r"layer 0: decay_frac must be an integer 0, not 8"),
    (("layers", 0, "scale"), 0.0, r"layer 0: scale must be a finite number > 0"),
    (("layers", 0, "scale"), -1.0, r"layer 0: scale must be a finite number > 0"),
    (("layers", 0, "scale"), 1e400, r"the header holds Infinity, which is not a JSON number"),
    (("layers", 0, "name"), "", r"layer 0: name must be a string of 1\.\.256 characters"),
    (("layers", 0, "name"), 3, r"layer 0: name must be a string"),
    (("layers", 0, "recurrent"), 1, r"layer 0: recurrent must be true or false, not 1"),
    (("layers", 0, "n_in"), 7, r"layer 0 expects 7 inputs but its source gives 6"),
    (("config", "device"), None, r"config\.device must be a string"),
    (("config", "board"), 5, r"config\.board must be null or a string"),
    (("config", "clock_hz"), -1.0, r"config\.clock_hz must be a number in"),
    (("config", "cores", 0, "hi"), 4, r"layer 0: its cores do not tile its 10 neurons "
                                      r"\(neurons 4\.\.4 are on no core\)"),
    (("config", "cores", 0, "hi"), 6, r"neurons 5\.\.5 are covered twice"),
    (("config", "cores", 1, "layer"), 7, r"core 1 names layer 7; the image has 2 layers"),
    (("config", "cores"), [], r"config\.cores must be a list of 1\.\.256 entries"),
    (("payload_bytes",), 3, r"payload_bytes must be an integer \d+, not 3"),
    (("meta",), [], r"meta must be an object"),
    (("meta",), {"source": 5}, r"meta\.source must be a string, not 5"),
    (("meta",), {"resources": {"luts": ["a", 1]}}, r"meta\.resources must map each resource"),
    (("meta",), {"quantization": {"layers": [1]}}, r"meta\.quantization\.layers must be"),
    (("meta",), {"quantization": {"notes": "x"}}, r"meta\.quantization\.notes must be"),
    (("learning",), {}, r"learning must be a list of 0\.\.2 entries"),
    (("arrays",), [], r"arrays must be a list of 10 entries, not 0 entries"),
])
def test_each_header_field_is_typed_and_ranged(small_image, path, value, pattern):
    def mutate(h):
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    refused(rewrite(small_image.to_bytes(), mutate), pattern)


@pytest.mark.parametrize("where", [(), ("config",), ("layers", 0), ("arrays", 0),
                                   ("config", "cores", 0)])
def test_missing_and_extra_keys(small_image, where):
    def node_of(h):
        for key in where:
            h = h[key]
        return h

    def extra(h):
        node_of(h)["surprise"] = 1

    def missing(h):
        node = node_of(h)
        node.pop(sorted(node)[0])
    refused(rewrite(small_image.to_bytes(), extra), r"has unknown key\(s\) 'surprise'$")
    refused(rewrite(small_image.to_bytes(), missing), r" lacks '")


def test_duplicate_keys_nan_and_bad_text(small_image):
    header, payload = split(small_image.to_bytes())
    text = json.dumps(header, sort_keys=True)
    refused(assemble(("{" + '"n_inputs": 6, ' + text[1:]).encode(), payload),
            r"names key 'n_inputs' twice")
    header["layers"][0]["scale"] = "NAN"
    text = json.dumps(header, sort_keys=True).replace('"NAN"', "NaN")
    refused(assemble(text.encode(), payload), r"holds NaN, which is not a JSON number")
    refused(assemble(b"\xff\xfe{}", payload), r"not valid UTF-8 JSON")
    refused(assemble(b'{"n_inputs": ' + b"9" * 5000 + b"}", payload), r"corrupt image header")


def test_reserved_field_must_be_zero(small_image):
    header, payload = split(small_image.to_bytes())
    data = assemble(json.dumps(header, sort_keys=True).encode(), payload, reserved=1)
    refused(data, r"^image: the reserved preamble field must be 0, not 1$")


def test_declared_lengths_are_capped():
    refused(HEAD.pack(b"SFIMAGE\x00", 1, 0, MAX_HEADER_BYTES + 1, 0)
            + bytes(MAX_HEADER_BYTES + 5), r"the header is \d+ bytes; at most")


def test_learning_layer_needs_an_accumulator_for_any_learned_weight():
    """The golden model's sums are exact; the gateware's accumulator wraps at acc_bits. A
    learning layer whose weights may reach any value of their range needs the room."""
    image = learning_image()
    layer = image.layers[1]

    def mutate(h):
        h["layers"][1]["acc_bits"] = layer.acc_bits - 1
        h["layers"][1]["v_bits"] = layer.v_bits
    refused(rewrite(image.to_bytes(), mutate),
            r"^image: learning on layer 1 \('l1'\): a \d+-bit accumulator can overflow once "
            r"weights learn")


# -- files on disk --------------------------------------------------------------------------------

def test_a_huge_file_is_not_read(tmp_path, small_image):
    """An 8 GiB (sparse) file whose preamble declares a small image: refused from its size,
    with almost nothing read."""
    path = tmp_path / "huge.sfi"
    data = small_image.to_bytes()
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(8 << 30)
    tracemalloc.start()
    with pytest.raises(ImageError, match=r"unexpected bytes after the image$"):
        load_image(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20


def test_declared_payload_beyond_the_cap(tmp_path):
    path = tmp_path / "big.sfi"
    with open(path, "wb") as f:
        f.write(HEAD.pack(b"SFIMAGE\x00", 1, 0, 2, MAX_PAYLOAD_BYTES + 1) + b"{}")
        f.truncate(HEAD.size + 2 + MAX_PAYLOAD_BYTES + 1 + 4)
    with pytest.raises(ImageError, match=rf"the payload is {MAX_PAYLOAD_BYTES + 1} bytes; "
                                         rf"at most {MAX_PAYLOAD_BYTES}"):
        load_image(path)


def test_a_fifo_is_refused_without_waiting(tmp_path):
    path = tmp_path / "pipe.sfi"
    os.mkfifo(path)
    with pytest.raises(ImageError, match=r"not a regular file"):
        load_image(path)
    with pytest.raises(ImageError, match=r"is a directory"):
        load_image(tmp_path)


# -- the Python side: the same checks on objects --------------------------------------------------

def test_out_of_range_values_are_refused_on_objects(small_image):
    layer = small_image.layers[0]
    vmax = (1 << (layer.v_bits - 1)) - 1
    cases = [
        ({"bias": np.full(layer.n_out, vmax + 1)}, rf"bias must lie in \[{-vmax - 1}, {vmax}\]"),
        ({"bias": np.full(layer.n_out, -vmax - 2)}, r"bias must lie in"),
        ({"bias": np.full(layer.n_out, 2**31 - 1)}, r"bias must lie in"),
        ({"bias": np.full(layer.n_out, 2**40)}, r"bias must fit 32 bits"),
        ({"bias": np.full(layer.n_out, 0.5)}, r"bias must be integers, not fractions"),
        ({"bias": np.zeros(1)}, r"bias must have one value per neuron \(10\), not \[1\]"),
        ({"threshold": np.full(layer.n_out, vmax + 1)}, r"threshold must lie in \[0, "),
        ({"threshold": np.full(layer.n_out, -1)}, r"threshold must lie in \[0, "),
        ({"decay_shift": np.full(layer.n_out, 32)}, r"decay_shift must lie in \[0, 31\]"),
        ({"decay_mul": np.full(layer.n_out, 3)}, r"decay_mul has no use in this layer"),
        ({"decay_frac": 4}, r"decay_frac must be an integer 0, not 4"),
        ({"weight_bits": True}, r"weight_bits must be an integer 2\.\.16, not True"),
        ({"scale": float("nan")}, r"scale must be a finite number > 0"),
    ]
    for change, pattern in cases:
        with pytest.raises(ImageError, match=r"^layer 'l0': " + pattern):
            replace(layer, **change)
    mul = mul_image().layers[0]
    with pytest.raises(ImageError, match=r"decay_mul must lie in \[0, 256\]"):
        replace(mul, decay_mul=np.full(mul.n_out, 257))
    with pytest.raises(ImageError, match=r"n_in must be 1\.\.65536, not 65537"):
        LayerParams("wide", np.zeros((1, MAX_NEURONS + 1)), 0, 1, 2, 8, 2, decay_mode="none")


def test_more_cores_than_the_protocol_addresses(small_image):
    from spikeforge.image import CoreConfig, HwConfig

    layer = replace(small_image.layers[1], name="w")
    n = MAX_CORES + 1
    layer = LayerParams("w", np.zeros((n, 2)), 0, 1, 2, 8, 2, decay_mode="none")
    cores = tuple(CoreConfig(0, k, k + 1, 1) for k in range(n))
    with pytest.raises(ImageError, match=rf"^an image must have 1\.\.{MAX_CORES} cores, not {n}"):
        Image(2, [layer], HwConfig("iCE40UP5K", cores)).check()


# -- fuzzing: mutated header fields, CRC recomputed ------------------------------------------------

BASES = {"small": lambda: random_image(1, (6, 10, 3), split=True, recurrent=0),
         "learning": learning_image, "mul": mul_image, "conv": conv_image}
_BASE_BYTES: dict[str, bytes] = {}


def base_bytes(name: str) -> bytes:
    if name not in _BASE_BYTES:
        _BASE_BYTES[name] = BASES[name]().to_bytes()
    return _BASE_BYTES[name]


def node_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key in sorted(node):
            yield from node_paths(node[key], (*prefix, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from node_paths(item, (*prefix, index))


NEST = "__NEST__"
ODD_VALUES = [None, True, False, "", "no", "<f4", "<i4", "|u1", "<i8", ">i4", "O", [], {}, [1],
              [-1], [0, 0], 0, 1, -1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 40, 41, 255,
              256, 257, 65535, 65536, 65537, 2**31 - 1, 2**31, -2**31, 2**63, 10**30, 0.5, 1.0,
              -0.0, 1e308, "shift", "mul", "none", "zero", "subtract", "stdp", "three_factor",
              "layer0.bias", "core0.weights", float("nan"), float("inf"), NEST]


@st.composite
def mutants(draw):
    name = draw(st.sampled_from(sorted(BASES)))
    data = base_bytes(name)
    header, payload = split(data)
    paths = list(node_paths(header))
    path = draw(st.sampled_from(paths[1:]))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    ops = ["replace", "delete"]
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        ops.append("nudge")
    if isinstance(old, (dict, list)):
        ops.append("extra")
    if isinstance(parent, list):
        ops += ["duplicate", "swap"] if len(parent) > 1 else ["duplicate"]
    op = draw(st.sampled_from(ops))
    if op == "replace":
        parent[path[-1]] = draw(st.one_of(st.sampled_from(ODD_VALUES), st.integers(),
                                          st.floats(), st.text(max_size=4)))
    elif op == "nudge":
        parent[path[-1]] = old + draw(st.sampled_from([-8, -4, -2, -1, 1, 2, 4, 8, 0.5]))
    elif op == "delete":
        if isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    elif op == "extra":
        if isinstance(old, dict):
            old[draw(st.sampled_from(["x", "name", "lanes", "shape"]))] = \
                draw(st.sampled_from(ODD_VALUES))
        else:
            old.append(draw(st.sampled_from([*ODD_VALUES, *old] if old else ODD_VALUES)))
    elif op == "duplicate":
        parent.insert(path[-1], json.loads(json.dumps(old)))
    else:
        other = draw(st.integers(0, len(parent) - 1))
        parent[path[-1]], parent[other] = parent[other], parent[path[-1]]
    depth = draw(st.sampled_from([MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 5000]))
    text = json.dumps(header, sort_keys=True).replace(f'"{NEST}"', "[" * depth + "]" * depth)
    if draw(st.booleans()):  # also mutate the payload's length to follow a changed table
        total = header.get("payload_bytes") if isinstance(header, dict) else None
        if isinstance(total, int) and not isinstance(total, bool) and 0 <= total < 1 << 16:
            payload = (payload + bytes(total))[:total]
    return name, assemble(text.encode(), payload)


def json_equal(a, b) -> bool:
    """Equal as JSON values: numbers by value (1 == 1.0), but a bool is not a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def check_mutant(data: bytes, *, record=event) -> bool:
    """True when the mutant was refused cleanly; an accepted one must round-trip."""
    start = time.monotonic()
    try:
        image = image_from_bytes(data)
    except ImageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("image: ")
        record("refused: " + str(exc).split(":")[1].strip().split(" ")[0])
        return True
    finally:
        assert time.monotonic() - start < 30, "loading took more than 30 s"
    again = image.to_bytes()
    header, payload = split(data)
    header2, payload2 = split(again)
    for entry in (*header["layers"], *header2["layers"]):  # fields a file may leave out
        for name, spec in LAYER_FIELDS.items():
            if spec.default is not None:
                entry.setdefault(name, spec.default)
    assert payload2 == payload, "accepted, but the saved payload differs"
    assert json_equal(header, header2), "accepted, but the saved header differs"
    record("accepted")
    return False


FUZZ = {"deadline": timedelta(seconds=30), "database": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much]}


@settings(max_examples=150, **FUZZ)
@given(mutants())
def test_fuzz_header_fields(mutant):
    check_mutant(mutant[1])


@pytest.mark.slow
@settings(max_examples=20000, **FUZZ)
@given(mutants())
def test_fuzz_header_fields_long(mutant):
    check_mutant(mutant[1])


def test_unmutated_bases_round_trip():
    for name in BASES:
        data = base_bytes(name)
        assert image_from_bytes(data).to_bytes() == data
        assert not check_mutant(data, record=lambda text: None)
    assert math.isfinite(mul_image().layers[0].scale)


# -- convolutions ----------------------------------------------------------------------------------

def test_conv_image_stores_the_kernel_and_no_core_weights():
    """A convolution's core weight memories are its kernel's channel slices (derived, so the
    file stores the kernel once and no core weights for it)."""
    image = conv_image()
    header, _ = split(image.to_bytes())
    assert [a["name"] for a in header["arrays"]] == [
        "layer0.kernel", "layer0.bias", "layer0.threshold", "layer0.decay_shift",
        "layer1.bias", "layer1.threshold", "layer1.decay_shift", "core2.weights"]
    assert header["arrays"][0]["shape"] == [3, 2 * 3 * 3]
    back = image_from_bytes(image.to_bytes())
    assert back.layers[0].conv == image.layers[0].conv
    np.testing.assert_array_equal(back.layers[0].weights, image.layers[0].weights)
    np.testing.assert_array_equal(back.weight_memory(0), image.weight_memory(0))
    np.testing.assert_array_equal(back.weight_memory(1), image.weight_memory(1))


@pytest.mark.parametrize(("key", "value", "pattern"), [
    ("kernel", MAX_KERNEL + 1, rf"kernel must be an integer 1\.\.{MAX_KERNEL}, not "
                               rf"{MAX_KERNEL + 1}"),
    ("kernel", 10**12, rf"kernel must be an integer 1\.\.{MAX_KERNEL}, not {10**12}"),
    ("height", MAX_NEURONS + 1, rf"height must be an integer 1\.\.{MAX_NEURONS}, not "
                                 rf"{MAX_NEURONS + 1}"),
    ("in_channels", 2**63, rf"in_channels must be an integer 1\.\.{MAX_NEURONS}, not "
                            rf"{2**63}"),
    ("stride", 3.0, r"stride must be an integer 1\.\.32, not 3\.0"),
    ("pool", "avg", r"pool must be one of 'none', 'max', 'sum', not 'avg'"),
    ("pool_size", 1, r"pool size must be 1 exactly when pool is 'none', not 1 with pool 'max'"),
    ("padding", 3, r"padding must be smaller than the kernel 3, not 3"),
    ("out_channels", 4, r"its convolution maps 72 inputs to 36 neurons, not 72 to 27"),
])
def test_conv_geometry_is_checked_before_allocation(key, value, pattern):
    def mutate(h):
        h["layers"][0]["conv"][key] = value
    refused_within(rewrite(conv_image().to_bytes(), mutate),
                   rf"^image: layer 0: (conv: )?{pattern}$")


def test_conv_caps_bound_a_declared_geometry():
    """The largest maps the caps let through stay within the neuron and position caps."""
    with pytest.raises(ImageError, match=rf"^convolution: its {MAX_NEURONS * 2} inputs exceed "
                                         rf"{MAX_NEURONS}$"):
        ConvSpec(2, 256, 256, 1, 1)
    with pytest.raises(ImageError, match=rf"^convolution: its {65 * 128 * 128} positions before "
                                         rf"pooling exceed {MAX_CONV_POSITIONS}$"):
        ConvSpec(1, 128, 128, 65, 1, pool="max", pool_size=32)


@pytest.mark.parametrize("entry", [None, [], {"kernel": 3}, "3x3"])
def test_conv_entry_must_be_a_whole_object(entry):
    def mutate(h):
        h["layers"][0]["conv"] = entry
    refused(rewrite(conv_image().to_bytes(), mutate), r"^image: layer 0: conv (must be an object|"
                                                      r"lacks 'in_channels')")


def test_conv_kernel_and_core_arrays_follow_the_table():
    data = conv_image().to_bytes()

    def no_kernel(h):  # a dense layer's core weights where the kernel belongs
        h["layers"][0].pop("conv")
    refused(rewrite(data, no_kernel), r"^image: arrays must be a list of 9 entries, not 8 "
                                      r"entries$")

    def kernel_shape(h):
        h["arrays"][0]["shape"] = [3, 17]
    refused(rewrite(data, kernel_shape),
            r"^image: array 'layer0\.kernel': shape must be \[3, 18\], not \[3, 17\]$")

    def recurrent(h):
        h["layers"][0]["recurrent"] = True
    refused(rewrite(data, recurrent), r"^image: layer 0: a convolution cannot be recurrent$")

    header, payload = split(data)  # a weight memory listed for a convolution's core
    memory = np.zeros((18, 1), np.uint8).tobytes()
    header["arrays"].insert(-1, {"name": "core0.weights", "dtype": "|u1", "shape": [18, 1],
                                 "offset": header["arrays"][-1]["offset"], "nbytes": 18})
    header["arrays"][-1]["offset"] += 18
    header["payload_bytes"] += 18
    split_at = header["arrays"][-2]["offset"]
    bad = assemble(json.dumps(header, sort_keys=True).encode(),
                   payload[:split_at] + memory + payload[split_at:])
    refused(bad, r"^image: arrays must be a list of 8 entries, not 9 entries$")


def test_caps_match_the_gateware_and_the_protocol():
    """MAX_NEURONS is the AER address space; MAX_CORES what the host protocol addresses."""
    from spikeforge.hdl.event import ADDR_BITS
    from spikeforge.protocol import read_mem_payload

    assert MAX_NEURONS == 1 << ADDR_BITS
    read_mem_payload(MAX_CORES - 1, 0, 0, 1)
    with pytest.raises(ValueError, match="core index must be a byte"):
        read_mem_payload(MAX_CORES, 0, 0, 1)

"""Cost of loading an image: seconds and peak traced memory (numpy included) per image size.

For each case prints one JSON object: the file's bytes, the weights it holds, the seconds
`load_image` takes (best of 3) and the peak memory traced during one load, in bytes and per
weight. Cases are valid images with one recurrent-free layer tiled over 256-neuron cores, from
the digits size up to the payload cap (docs/image-format.md), plus the lying 2.5 KB-class image
of issue 15 (lanes far beyond a core's neurons), which must be refused at once.

Run: .venv/bin/python bench/image_load.py
"""

from __future__ import annotations

import json
import struct
import tempfile
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np

from spikeforge.image import CoreConfig, HwConfig, Image, ImageError, LayerParams, load_image


def network(n_in: int, n_out: int, weight_bits: int, lanes: int, seed: int = 0) -> Image:
    rng = np.random.default_rng(seed)
    w = rng.integers(-(1 << (weight_bits - 1)), 1 << (weight_bits - 1), (n_out, n_in))
    layer = LayerParams("fc", w, 0, 100, weight_bits, 24, 40, decay_mode="shift", decay_shift=3)
    layer = LayerParams("fc", w, 0, 100, weight_bits, 24, layer.acc_bits_needed(),
                        decay_mode="shift", decay_shift=3)
    cores = tuple(CoreConfig(0, lo, min(lo + 256, n_out), lanes) for lo in range(0, n_out, 256))
    return Image(n_in, [layer], HwConfig("LFE5U-85F", cores))


def measure(path: Path) -> tuple[float, int, str | None]:
    best, error = float("inf"), None
    for _ in range(3):
        start = time.perf_counter()
        try:
            load_image(path)
        except ImageError as exc:
            error = str(exc)
        best = min(best, time.perf_counter() - start)
    tracemalloc.start()
    try:
        load_image(path)
    except ImageError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak, error


def lying_image(folder: Path) -> Path:
    """A valid one-neuron image whose header then claims 3,000,000 lanes (CRC recomputed)."""
    data = network(6, 1, 8, 1).to_bytes()
    head_len, payload_len = struct.unpack_from("<II", data, 12)
    header = json.loads(data[20:20 + head_len])
    header["config"]["cores"][0]["lanes"] = 3_000_000
    head = json.dumps(header, sort_keys=True).encode()
    body = (struct.pack("<8sHHII", b"SFIMAGE\x00", 1, 0, len(head), payload_len) + head
            + data[20 + head_len:20 + head_len + payload_len])
    path = folder / "lying.sfi"
    path.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n_in, n_out, bits, lanes in ((64, 128, 8, 8), (784, 1024, 8, 8),
                                         (2048, 4096, 4, 16), (4096, 4096, 4, 16)):
            path = folder / f"net{n_in}x{n_out}.sfi"
            network(n_in, n_out, bits, lanes).save(path)
            seconds, peak, error = measure(path)
            weights = n_in * n_out
            print(json.dumps({"case": f"{n_in}x{n_out} w{bits} lanes{lanes}",
                              "file_bytes": path.stat().st_size, "weights": weights,
                              "seconds": round(seconds, 4), "peak_bytes": peak,
                              "peak_bytes_per_weight": round(peak / weights, 1),
                              "refused": error}))
        path = lying_image(folder)
        seconds, peak, error = measure(path)
        print(json.dumps({"case": "issue 15: 3,000,000 lanes over 1-byte words",
                          "file_bytes": path.stat().st_size, "seconds": round(seconds, 4),
                          "peak_bytes": peak, "refused": error}))


if __name__ == "__main__":
    main()

"""spikeforge plot: every kind is rendered to a PNG of the stated pixel size; the activity
figure's per-step numbers add up to the golden model's counters; bad input is refused in one
line and writes nothing."""

from __future__ import annotations

import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from spikeforge import plot as P  # noqa: E402
from spikeforge.cli import main  # noqa: E402
from spikeforge.sim import golden  # noqa: E402
from spikeforge.sim import metrics as M  # noqa: E402

from .strategies import random_image  # noqa: E402


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def files(tmp_path):
    image = random_image(3, (7, 9, 5, 4), recurrent=1, v_bits=8, weight_bits=6, split=True)
    image.save(tmp_path / "net.sfi")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", spikes=(rng.random((3, 12, 7)) < 0.4).astype(np.uint8))
    return tmp_path


@pytest.mark.parametrize("kind", P.KINDS)
def test_cli_writes_each_figure(files, kind):
    out = files / f"{kind}.png"
    assert main(["plot", kind, str(files / "net.sfi"), "--input", str(files / "x.npz"),
                 "-o", str(out)]) == 0
    assert out.stat().st_size > 5000  # axes, labels and marks, not an empty canvas
    assert png_size(out) == P.PIXELS == (800, 500)


def test_membrane_of_chosen_neurons(files):
    out = files / "m.png"
    assert main(["plot", "membrane", str(files / "net.sfi"), "--input", str(files / "x.npz"),
                 "--layer", "0", "--neurons", "1,8", "--sample", "2", "-o", str(out)]) == 0
    assert png_size(out) == P.PIXELS


def test_activity_adds_up_to_the_counters():
    image = random_image(4, (6, 8, 5), recurrent=1)
    x = (np.random.default_rng(2).random((3, 9, 6)) < 0.5).astype(np.uint8)
    run = golden.run(image, x, record=True)
    spikes, sops, acs = P.step_activity(image, x, run.layer_spikes)
    np.testing.assert_array_equal(spikes.sum(axis=1), run.spike_counts.sum(axis=0))
    np.testing.assert_array_equal(sops.sum(axis=1), run.sops.sum(axis=0))
    assert acs.sum() / len(x) == M.effective_acs(image, x, run.layer_spikes)


def test_resources_per_core_add_up_to_the_estimate():
    from spikeforge.compiler.mapper import estimate_resources

    image = random_image(3, (7, 9, 5, 4), recurrent=1, split=True)
    labels, rows, capacity = P.core_resources(image)
    total = estimate_resources(image.layers, image.config)
    assert len(labels) == len(image.config.cores) + 1
    assert rows[:, 0].sum() == total["luts"][0] and rows[:, 1].sum() == total["bram"][0]
    assert (rows[:-1] > 0).any(axis=1).all()  # every core costs something
    assert capacity == {"luts": total["luts"][1], "bram": total["bram"][1]}


@pytest.mark.parametrize("argv, message", [
    (["raster"], "a raster plot needs --input X.npz"),
    (["membrane", "--input", "x.npz", "--neurons", "0,9"],
     "neurons must be 0..3 of layer 'l2', not [9]"),
    (["membrane", "--input", "x.npz", "--neurons", "a"],
     "--neurons must be indices like 0,3,5, not 'a'"),
    (["raster", "--input", "x.npz", "--sample", "3"], "sample must be 0..2, not 3"),
])
def test_bad_input_is_refused_in_one_line(files, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    kind, *rest = argv
    assert main(["plot", kind, "net.sfi", *rest, "-o", "out.png"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"spikeforge: error: {message}"]
    assert not (files / "out.png").exists()

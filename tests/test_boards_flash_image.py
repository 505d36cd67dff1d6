"""Flashing a standalone board: the bitstream and the image's memory contents past it, each with
its programmer's documented command line (openFPGALoader -o OFFSET --file-type bin; iceprog -o
OFFSET), run by stand-in programmers; the blob written is the one the loader's contract reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spikeforge import flashimage
from spikeforge.boards.flash import flash
from spikeforge.hdl.flashload import image_id, image_records

from .strategies import random_image
from .test_boards_flash import _bitstream, programmers  # noqa: F401 (fixture)

MIB = 1 << 20


@pytest.mark.parametrize(("board", "suffix", "programmer", "bit_args", "image_args"), [
    ("icebreaker", ".bin", None, ["openFPGALoader", "-b", "icebreaker", "-f"],
     ["openFPGALoader", "-b", "icebreaker", "-f", "-o", str(MIB), "--file-type", "bin"]),
    ("icebreaker", ".bin", "iceprog", ["iceprog"], ["iceprog", "-o", str(MIB)]),
    ("ice40-hx8k-b-evn", ".bin", None, ["iceprog"], ["iceprog", "-o", str(MIB)]),
    ("ulx3s-85f", ".bit", None, ["openFPGALoader", "-b", "ulx3s", "-f"],
     ["openFPGALoader", "-b", "ulx3s", "-f", "-o", str(3 * MIB), "--file-type", "bin"]),
])
def test_bitstream_then_image(programmers, tmp_path, board,  # noqa: F811
                              suffix, programmer, bit_args, image_args):
    image = random_image(5, (4, 6, 2))
    sfi = tmp_path / "net.sfi"
    image.save(sfi)
    bit = _bitstream(tmp_path, suffix)
    result = flash(bit, board, programmer=programmer, image=sfi)
    blob = bit.with_suffix(".weights.bin")
    first, second = programmers()
    assert first[1:] == [*bit_args[1:], str(bit)]
    assert second[1:] == [*image_args[1:], str(blob)]
    assert Path(second[0]) == programmers.bin_dir / image_args[0]
    assert result.mode == "flash"
    assert result.image_offset == int(image_args[image_args.index("-o") + 1])
    # the offset lies past the family's largest bitstream: UP5K 104,090 B, HX8K 135,100 B
    assert result.image_offset > 135_100
    got = flashimage.decode(blob.read_bytes(), image_id=image_id(image))
    assert list(got.records) == image_records(image)


def test_image_needs_the_flash_and_an_offset_programmer(programmers, tmp_path):  # noqa: F811
    image = random_image(5, (4, 6, 2))
    bit = _bitstream(tmp_path, ".bin")
    with pytest.raises(ValueError, match=r"^an image goes to the configuration flash, so mode "
                                         r"must be 'flash', not 'sram'$"):
        flash(bit, "icebreaker", mode="sram", image=image)
    with pytest.raises(ValueError, match=r"^icesprog cannot write at a flash offset"):
        flash(bit, "icesugar", image=image)
    assert programmers() == []
    assert not bit.with_suffix(".weights.bin").exists()


def test_cli_dry_run_shows_both_writes(programmers, tmp_path):  # noqa: F811
    image = random_image(5, (4, 6, 2))
    sfi = tmp_path / "net.sfi"
    image.save(sfi)
    bit = _bitstream(tmp_path, ".bin")
    base = [sys.executable, "-m", "spikeforge.cli", "flash", str(bit), "--board", "icebreaker",
            "--image", str(sfi)]
    proc = subprocess.run([*base, "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("would run: ") for line in lines)
    assert lines[0].endswith(f"-b icebreaker -f {bit}")
    assert lines[1].endswith(f"-f -o {MIB} --file-type bin {bit.with_suffix('.weights.bin')}")
    assert programmers() == []
    proc = subprocess.run([*base, "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["image_offset"] == MIB and out["ran"]
    assert [argv[1:] for argv in programmers()] == [out["command"][1:],
                                                     out["image_command"][1:]]
    proc = subprocess.run([*base[:-1], str(tmp_path / "missing.sfi")], capture_output=True,
                          text=True)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1

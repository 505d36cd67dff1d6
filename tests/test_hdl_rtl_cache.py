"""The RTL simulator cache is keyed on every source file the gateware generation runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cocotb
import pytest
from amaranth.back import rtlil

from spikeforge.hdl import rtl
from spikeforge.hdl.array import CoreArray
from spikeforge.hdl.rtl import ARRAY_MODULE, available_simulators, gateware_sources

from .strategies import plastic_image, random_image

ROOT = Path(__file__).resolve().parent.parent  # the package folders of pyproject.toml


def _files_run_by(make) -> set[Path]:
    """Project source files with a Python frame while ``make()`` runs."""
    seen = set()

    def profile(frame, event, arg):
        if event == "call":
            seen.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    try:
        make()
    finally:
        sys.setprofile(None)
    folders = [ROOT / name for name in ("spikeforge", "hdl", "compiler", "sim", "boards")]
    return {Path(f).resolve() for f in seen
            if any(Path(f).resolve().is_relative_to(folder) for folder in folders)}


def test_cache_key_covers_the_array_generator():
    keyed = {path.resolve() for path in gateware_sources(ARRAY_MODULE).values()}
    for image in (random_image(1, (5, 7, 3), split=True, decay_mode="mul"),
                  plastic_image(2, (4, 6, 3), [None, ("three_factor", True)])):
        ran = _files_run_by(lambda image=image: rtlil.convert(CoreArray(image)))
        assert ran, "the profiler saw no project code"
        assert ran <= keyed, sorted(str(p.relative_to(ROOT)) for p in ran - keyed)
    names = set(gateware_sources(ARRAY_MODULE))
    assert {"spikeforge.lfsr", "spikeforge.image", "spikeforge.protocol",
            "spikeforge.hdl.core"} <= names
    assert not any(name.startswith(("spikeforge.sim", "spikeforge.boards")) for name in names)


def test_cache_key_covers_the_virtual_board_generator():
    from spikeforge.boards.virtual import BridgeTop

    keyed = {path.resolve() for path in gateware_sources("spikeforge.boards.virtual").values()}
    image = random_image(3, (4, 5, 2))
    ran = _files_run_by(lambda: rtlil.convert(BridgeTop(image, timeout_bytes=16)))
    assert ran <= keyed, sorted(str(p.relative_to(ROOT)) for p in ran - keyed)
    assert ROOT / "hdl" / "hostlink.py" in ran


class _Miss(Exception):
    pass


def _miss() -> str:
    raise _Miss


@pytest.mark.skipif("icarus" not in available_simulators(), reason="Icarus is not installed")
def test_cache_entries_are_kept_apart_per_toolchain(tmp_path, monkeypatch):
    """A compiled Verilator simulator links cocotb's VPI library by absolute path: an entry built
    from another virtual environment must be a miss, not a binary that cannot start (exit 127)."""
    libs = Path(cocotb.__file__).resolve().parent / "libs"
    assert str(libs) in rtl.toolchain_identity("verilator")
    first = rtl.build_simulator("module top; endmodule\n", key="k", simulator="icarus",
                                cache_root=tmp_path)
    again = rtl.build_simulator(_miss, key="k", simulator="icarus", cache_root=tmp_path)
    assert again.directory == first.directory
    monkeypatch.setattr(rtl, "toolchain_identity",
                        lambda simulator: ["2.0", "/gone/.venv/cocotb/libs", "/gone/iverilog"])
    with pytest.raises(_Miss):
        rtl.build_simulator(_miss, key="k", simulator="icarus", cache_root=tmp_path)


def _entry(root: Path, name: str, megabytes: float, used: float) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "top").write_bytes(b"\0" * int(megabytes * 2 ** 20))
    stamp = folder / "BUILT"
    stamp.write_text("key")
    os.utime(stamp, (used, used))
    return folder


def test_prune_deletes_the_least_recently_used_entries_down_to_the_limit(tmp_path):
    now = 1_000_000.0
    old = [_entry(tmp_path, f"verilator-{k}", 1, now - 10_000 + k) for k in range(5)]
    recent = _entry(tmp_path, "verilator-recent", 1, now - 5)  # in use: stays
    unfinished = tmp_path / "verilator-building"  # no stamp: another process's build
    unfinished.mkdir()
    (unfinished / "top.v").write_bytes(b"\0" * 2 ** 20)
    deleted = rtl.prune_cache(tmp_path, limit_mb=3.5, now=now)
    # 6 stamped entries of 1 MB over a 3.5 MB limit: the 3 oldest go, in order of last use
    assert deleted == old[:3]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        [old[3].name, old[4].name, recent.name, unfinished.name])
    assert rtl.prune_cache(tmp_path, limit_mb=0, now=now, keep=old[4]) == [old[3]]
    assert recent.exists() and old[4].exists()


def test_a_verilator_entry_keeps_no_precompiled_headers(tmp_path):
    if "verilator" not in available_simulators():
        pytest.skip("Verilator is not installed")
    build = rtl.build_simulator("module top(input a, output b); assign b = a; endmodule\n",
                                simulator="verilator", cache_root=tmp_path)
    assert (build.directory / "BUILT").exists()
    assert not list(build.directory.glob("*.gch"))
    assert list(build.directory.glob("*.o")), "the build left no objects: did it build?"

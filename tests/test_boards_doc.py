"""docs/boards.md's board table against the catalog and the mapper; the capacity figures against
the mapper's fit boundary; boards without a host link; `make bitstreams` (slow).

Oracles: the committed document (it must equal the generated table), `boards.top.plan_clock`
for the clocks, `map_network` on layers of full-scale weights whose accumulator
`LayerParams.acc_bits_needed` sizes, `Board.why_not_buildable` for what `build` refuses, and
nextpnr's own log for the bitstream figures.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spikeforge import bitstreams
from spikeforge.boards import doc
from spikeforge.boards.build import build
from spikeforge.boards.catalog import BOARDS, board_capacities
from spikeforge.boards.top import plan_clock
from spikeforge.compiler.mapper import FitError, device_capacity, map_network
from spikeforge.image import LayerParams

from .strategies import random_image

DOC = Path(__file__).resolve().parents[1] / "docs" / "boards.md"


@pytest.fixture(scope="module")
def rows():
    return board_capacities()


def _table(text: str) -> dict[str, list[str]]:
    """board -> its cells, from the Markdown between the markers."""
    body = text[text.index(doc.BEGIN):text.index(doc.END)].splitlines()[3:]
    return {cells[0]: cells for cells in
            ([c.strip() for c in line.strip("|").split("|")] for line in body)}


def test_committed_table_is_the_generated_one(rows):
    document = DOC.read_text()
    assert doc.render(document, doc.markdown_table(rows)) == document, (
        "docs/boards.md's board table is stale: run `make boards-doc`")
    table = _table(document)
    assert list(table) == list(BOARDS)
    for name, board in BOARDS.items():
        clock = plan_clock(board) if board.buildable else None
        expected = f"{board.clock_hz / 1e6:g}"
        if clock is not None and clock.primitive:
            expected += f" -> {clock.f_out / 1e6:g} ({clock.primitive})"
        if board.conv_target_hz is not None:  # an image with convolutions: its own clock
            expected += f"; with convolutions {board.conv_target_hz / 1e6:g}"
        assert table[name][2] == expected, name  # the catalog's default, through its PLL
        if board.buildable:  # the rate: the catalog's, and one the divider makes (top.py)
            rates = f"{board.baud:,} baud" + (
                f" ({board.conv_baud:,} with convolutions)" if board.conv_baud else "")
            assert table[name][3].endswith(rates), name


def test_doc_check_and_rewrite(rows, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(doc, "board_capacities", lambda: rows)
    path = tmp_path / "boards.md"
    stale = DOC.read_text().replace("| icebreaker | iCE40UP5K |", "| icebreaker | UP5K |")
    assert stale != DOC.read_text()
    path.write_text(stale)
    assert doc.main(["--check", str(path)]) == 1
    assert path.read_text() == stale
    assert "stale" in capsys.readouterr().err
    assert doc.main([str(path)]) == 0
    assert path.read_text() == DOC.read_text()
    assert doc.main(["--check", str(path)]) == 0
    path.write_text("# no markers\n")
    assert doc.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must hold the line '<!-- board table" in err
    assert path.read_text() == "# no markers\n"


def test_render_needs_both_markers():
    with pytest.raises(ValueError, match=r"^the line '<!-- board table: .*' must come before "
                                         r"'<!-- end of the generated board table -->', not "
                                         r"after it$"):
        doc.render(f"{doc.END}\n{doc.BEGIN}\n", "x\n")
    with pytest.raises(ValueError, match=r"^the document must hold the line '<!-- end of"):
        doc.render(f"{doc.BEGIN}\n", "x\n")
    assert doc.render(f"a\n{doc.BEGIN}\nold\n{doc.END}\nb\n", "new\n") == (
        f"a\n{doc.BEGIN}\nnew\n{doc.END}\nb\n")


# -- capacity ------------------------------------------------------------------------------------
def _full_scale(neurons: int, fan_in: int, bits: int) -> LayerParams:
    """Every weight the most negative: the widest accumulator a layer of this shape needs."""
    layer = LayerParams("full", np.full((neurons, fan_in), -(1 << (bits - 1)), np.int32),
                        bias=np.zeros(neurons), threshold=np.ones(neurons), weight_bits=bits,
                        v_bits=16, acc_bits=40, decay_mode="shift",
                        decay_shift=np.full(neurons, 3))
    return replace(layer, acc_bits=layer.acc_bits_needed())


def _fits(layer: LayerParams, device: str) -> bool:
    try:
        map_network([layer], layer.n_in, device=device)
    except FitError:
        return False
    return True


@pytest.mark.parametrize("device", ["iCE40UP5K", "LFE5U-25F"])
def test_capacity_is_the_mappers_boundary(device):
    cap = device_capacity(device)
    assert _fits(_full_scale(cap["neurons"], 1, 8), device)
    assert not _fits(_full_scale(cap["neurons"] + 1, 1, 8), device)
    for bits in (8, 4):
        synapses = cap[f"synapses_{bits}bit"]
        assert synapses % 256 == 0 and synapses  # 256 neurons wide on both devices
        fan_in = synapses // 256
        assert _fits(_full_scale(256, fan_in, bits), device)
        assert not _fits(_full_scale(256, fan_in + 1, bits), device)
        (resource, (need, have)), = cap["limits"][f"synapses_{bits}bit"].items()
        assert need > have
    assert cap["estimate"]["bram"][0] <= cap["estimate"]["bram"][1] == cap["bram"]


def test_nothing_fits_an_hx1k(rows):
    cap = device_capacity("iCE40HX1K")
    assert cap["neurons"] == cap["synapses_8bit"] == cap["synapses_4bit"] == 0
    (resource, (need, have)), = cap["smallest"].items()
    assert resource == "luts" and have == 1280 and need > have
    with pytest.raises(FitError, match=rf"luts need {need}, have 1280"):
        map_network([_full_scale(1, 1, 8)], 1, device="iCE40HX1K")
    for row in rows:
        if row["device"] == "iCE40HX1K":
            assert row["can"].startswith(f"nothing: one neuron (16-bit membrane) needs "
                                         f"{need:,} LUTs of 1,280")


# -- what a board can do -------------------------------------------------------------------------
def test_boards_without_a_host_link(rows, tmp_path):
    image = random_image(0, (4, 3))
    by_name = {row["board"]: row for row in rows}
    refused = [name for name, board in BOARDS.items() if not board.buildable]
    assert {"upduino-v3", "fomu-pvt", "orangecrab", "orangecrab-85f",
            "ice40-hx1k-blink-evn", "colorlight-i5"} == set(refused)
    for name in refused:
        board, row = BOARDS[name], by_name[name]
        assert row["uart"] is None and not row["buildable"]
        reason = board.why_not_buildable
        assert reason.startswith(f"board {name!r} is a compile target only: ")
        assert "no bitstream" in reason
        with pytest.raises(ValueError) as info:
            build(image, name, tmp_path / name)
        assert str(info.value) == reason
        assert not (tmp_path / name).exists()
        if row["neurons"]:
            assert row["can"].startswith("compile only; no bitstream")
            map_network(image.layers, image.n_inputs, device=board.device, board=name)
        else:
            assert row["can"].startswith("nothing: ")
    for name, row in by_name.items():
        if BOARDS[name].buildable and row["neurons"]:
            assert row["can"] == "compile, build, flash, run over the host link"


def test_hx1k_boards_refuse_before_synthesis(tmp_path):
    with pytest.raises(FitError, match=r"^the network does not fit iCE40HX1K on icestick: luts"):
        build(random_image(0, (4, 3)), "icestick", tmp_path / "icestick")
    assert not (tmp_path / "icestick").exists()


def test_bitstreams_plan(rows, tmp_path, monkeypatch):
    monkeypatch.setattr(bitstreams, "board_capacities", lambda: rows)
    plan = bitstreams.demo_boards()
    assert set(plan) == {name for name, b in BOARDS.items() if b.uart and b.platform}
    assert {name for name, skip in plan.items() if skip} == {"icestick", "nandland-go"}
    with pytest.raises(ValueError, match=r"^board 'orangecrab' is a compile target only"):
        bitstreams.build_demo_boards(tmp_path / "out", ["OrangeCrab"])
    assert not (tmp_path / "out").exists()
    assert bitstreams.main([str(tmp_path / "out"), "--board", "fomu-pvt"]) == 2


@pytest.mark.slow
def test_make_bitstreams_icebreaker(tmp_path):
    rows = bitstreams.build_demo_boards(tmp_path, ["icebreaker"], say=lambda line: None)
    saved = json.loads((tmp_path / "icebreaker.json").read_text())
    assert rows == [saved]
    log = Path(saved["log"]).read_text()
    achieved = float(re.findall(r"Max frequency for clock\s+'[^']+':\s+([\d.]+) MHz", log)[-1])
    assert saved["fmax_mhz"] == pytest.approx(achieved, abs=0.01)
    lcs = re.findall(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", log)[-1]
    assert saved["utilization"]["luts"] == {"used": int(lcs[0]), "available": int(lcs[1])}
    assert saved["timing_met"], saved.get("error")  # the catalog clock has margin
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary == [bitstreams.summary_line(saved)]

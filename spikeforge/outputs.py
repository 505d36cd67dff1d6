"""Output files of a command: all written, or none.

A verb that writes several files (`simulate -o out.npz --save-image learned.sfi`) stages each
one whole in a temporary file beside its target and renames them into place only when every one
is staged and the verb's work (including its report on standard output) is done; a failure
before that removes the temporaries and leaves every target as it was. The rules for a single
file (mode, symbolic links, FIFOs and devices) are `spikeforge.image.StagedFile`'s and are
written in docs/cli.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from .image import StagedFile, WriteError


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_distinct(inputs: dict[str, object], outputs: dict[str, object]) -> None:
    """Refuse an output that is one of the inputs, or another output (by file, not by name:
    links and relative paths are seen through). Keys name the options in the message."""
    inputs = {k: Path(v) for k, v in inputs.items() if v is not None}
    outputs = {k: Path(v) for k, v in outputs.items() if v is not None}
    for out_name, out in outputs.items():
        for in_name, path in inputs.items():
            if _same(out, path):
                raise WriteError(f"{out}: {out_name} is the {in_name} file; writing it would "
                                 f"destroy the input (choose another path)")
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same(outputs[a], outputs[b]):
                raise WriteError(f"{outputs[a]}: {a} and {b} name the same file")


class Outputs:
    """Stage files with `add`, then `commit()` them all; leaving the `with` block without a
    commit (an error, an interrupt) discards what was staged."""

    def __init__(self) -> None:
        self._staged: list[StagedFile] = []

    def add(self, path: str | os.PathLike, data: bytes) -> None:
        self._staged.append(StagedFile(path, data))

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        while staged:
            try:
                staged[0].commit()
            except BaseException:
                for item in staged[1:]:
                    item.discard()
                raise
            staged.pop(0)

    def discard(self) -> None:
        for item in self._staged:
            item.discard()
        self._staged = []

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

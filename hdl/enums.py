"""Amaranth enums built from the contracts' Python enums, so each value is written once."""

import enum as py_enum
import types

from amaranth.hdl import Shape
from amaranth.lib import enum

__all__ = ["wire_enum"]


def wire_enum(source: type[py_enum.IntEnum], shape: Shape, *, name: str | None = None,
              doc: str | None = None) -> type[enum.Enum]:
    """An ``amaranth.lib.enum.Enum`` of ``shape`` with the members (names and values) of
    ``source``, e.g. ``spikeforge.protocol.Command``."""
    if not (isinstance(source, type) and issubclass(source, py_enum.IntEnum)):
        raise TypeError(f"Source must be an IntEnum, not {source!r}")

    def body(namespace):
        namespace["__module__"] = source.__module__
        namespace["__doc__"] = doc if doc is not None else source.__doc__
        for member in source:
            namespace[member.name] = member.value

    return types.new_class(name or source.__name__, (enum.Enum,), {"shape": shape}, exec_body=body)

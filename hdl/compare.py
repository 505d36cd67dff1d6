"""Compares with a constant, written as logic rather than as a subtraction.

Yosys maps ``value < constant`` (and ``<=``, ``>``, ``>=``) wider than a LUT's four inputs to a
carry chain: on the iCE40 one logic cell a bit whose LUT is unused, since the carry logic
takes the cell. The same compare as a sum of products over the constant's bits is a LUT tree
of about a third as many cells, and ABC shares its equalities with the logic around it.
Equalities (``==``, ``!=``) are mapped to LUTs already and need nothing here.
"""

import operator

from amaranth.hdl import Cat, Const, Value

__all__ = ["at_least", "below"]


def below(value, bound: int):
    """``value < bound`` for an unsigned ``value`` and a constant ``bound``.

    ``value`` is below ``bound`` where, at the highest bit in which the two differ, ``bound``
    has a 1: one term per set bit ``i`` of ``bound``, ``value[i]`` clear and the bits above it
    equal to ``bound``'s.
    """
    bound = operator.index(bound)
    value = Value.cast(value)
    if value.shape().signed:
        raise TypeError(f"below() compares unsigned values, not {value.shape()!r}")
    width = len(value)
    if bound <= 0:
        return Const(0, 1)
    if bound >= 1 << width:
        return Const(1, 1)
    terms = []
    for i in range(width):
        if bound >> i & 1:
            above = bound >> (i + 1)
            terms.append(~value[i] & (value[i + 1:] == above) if i + 1 < width else ~value[i])
    return Cat(*terms).any()


def at_least(value, bound: int):
    """``value >= bound`` for an unsigned ``value`` and a constant ``bound``."""
    return ~below(value, bound)

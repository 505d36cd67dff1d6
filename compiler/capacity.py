"""What fits on each device: neurons and synapses by the mapper's own resource model, SPRAM
included (``boards.catalog.board_capacities`` lists it per board). The function lives in
``compiler.mapper`` (``device_capacity``); this module keeps its old import path."""

from __future__ import annotations

from .mapper import device_capacity

__all__ = ["device_capacity"]

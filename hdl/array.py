"""The core array: LIF cores of every layer joined by AER streams."""

import operator

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..compiler.image import Image
from .core import MemAccessSignature, param_layout
from .event import ADDR_BITS, SpikeEvent

__all__ = ["CoreArray", "COUNTER_BITS"]

COUNTER_BITS = 48


class CoreArray(wiring.Component):
    """All cores of an image, joined by AER streams.

    Dataflow (per layer ``l``, its cores sorted by ``lo``)::

        i ──> layer 0 cores ──merge──> layer 1 cores ──merge──> ... ──merge──> o
                   ^            │
                   └─rec FIFO<──┘   (recurrent layers only)

    A layer's input stream (the array's ``i`` for layer 0, else the previous layer's merged
    output) is broadcast to all of its cores: an event moves on once every core has taken it.
    The outputs of a layer's cores are merged in core order, so addresses ascend, with one
    ``eos`` per step. A recurrent layer's merged stream also enters a FIFO of ``n_out + 1``
    entries whose output is broadcast to the layer's cores as rows ``n_in + addr`` of the NEXT
    step; at step 0 the cores skip it (``s[-1] = 0``). A core takes, per step, the recurrent
    events up to their ``eos`` (only once the step's first feed-forward event or ``eos`` is
    waiting), then the feed-forward events up to their ``eos``, then runs its neuron pass.
    Layers pipeline: layer ``l`` may integrate step ``t + 1`` while layer ``l + 1`` is on ``t``.

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
        Input events of a step (``addr`` < ``n_inputs``), then one ``eos``.
    o : Out(stream.Signature(SpikeEvent))
        Output-layer spikes of a step, ascending ``addr`` (neuron index in the layer), then one
        ``eos``. Backpressure stalls the array; nothing is lost.
    clear : In(1)
        Strobe: zero all membranes, previous spikes, accumulators, FIFOs and counters (start
        of a new sample). Each core then sweeps its state memory (``neurons`` cycles).
    idle : Out(1)
        High when the clear sweep is over and nothing is in flight: every core waits for the
        first event of a step, no stream holds an event. (A recurrent layer's FIFO still holds
        its last step's spikes: they are state, not work, and are consumed by the next step.)
    mem : In(MemAccessSignature(data_width=mem_data_width, addr_width=mem_addr_width,
                                core_width=8))
        Memory access for the host link and read-back. Members: ``core`` (index into
        ``image.config.cores``), ``space`` (:class:`MemSpace`: WEIGHTS, STATE, PARAMS, ACC),
        ``addr``, ``wdata``, ``we``, ``re`` (host -> array); ``ready``, ``rdata``, ``rvalid``
        (array -> host). A request is held until ``ready``; ``ready`` is high only while the
        addressed core is between steps (use it when ``idle`` is high; a request to a core
        index that does not exist is accepted and reads 0). A read returns ``rdata`` with
        ``rvalid`` high for one cycle, exactly 2 cycles after the accepting cycle. Words:

        - WEIGHTS: address ``row * groups + group``, ``lanes`` two's-complement weights of
          ``weight_bits`` packed little-endian (as ``Image.weight_memory``).
        - STATE: address = neuron index local to the core; bits ``[0, v_bits)`` = membrane v
          (two's complement), bit ``v_bits`` = previous spike.
        - PARAMS: address = local neuron; ``hdl.core.param_layout(layer)``: threshold, bias,
          decay (shift ``k`` or ``beta_q``). Fields that are uniform over the core are
          constants: they read back, writes to them are ignored.
        - ACC: address = group; ``lanes`` accumulators of ``acc_bits``; read-only (debug).
    sops, spikes, saturations : Out(data.ArrayLayout(unsigned(48), n_layers))
        Per layer: synaptic operations (input events x neurons of the layer, feed-forward and
        recurrent), output spikes, membrane updates that saturated.
    events_in, events_out : Out(unsigned(48))
        Events (not ``eos``) accepted at ``i`` / delivered at ``o``.
    busy_cycles : Out(unsigned(48))
        Cycles in which ``idle`` was low.
    integrate_cycles : Out(unsigned(48))
        Cycles in which some core's integration loop issued a weight read.
    overflow : Out(1)
        Sticky: an event was lost. With backpressure everywhere this only fires for an input
        event whose ``addr`` >= ``n_inputs`` (dropped), or a push into a full recurrent FIFO
        (impossible by construction: it holds one step of at most ``n_out`` spikes + ``eos``).
    All counters and ``overflow`` are cleared by ``clear``.
    """

    def __init__(self, image: Image, *, fifo_depth: int = 0):
        image.check()
        self._image = image
        self._fifo_depth = operator.index(fifo_depth)
        if self._fifo_depth < 0:
            raise ValueError(f"FIFO depth must be >= 0, not {fifo_depth!r}")
        if image.n_inputs > 1 << ADDR_BITS or any(
                layer.n_out > 1 << ADDR_BITS for layer in image.layers):
            raise ValueError(f"layers are limited to {1 << ADDR_BITS} neurons by the "
                             f"{ADDR_BITS}-bit AER address")
        if len(image.config.cores) > 256:
            raise ValueError(f"the memory port addresses at most 256 cores, not "
                             f"{len(image.config.cores)}")
        width, depth = 1, 1
        for core in image.config.cores:
            layer = image.layers[core.layer]
            width = max(width, core.lanes * layer.weight_bits, layer.v_bits + 1,
                        param_layout(layer).size, core.lanes * layer.acc_bits)
            depth = max(depth, layer.fan_in * core.groups, core.neurons)
        self._mem_data_width = width
        self._mem_addr_width = max(ADDR_BITS, (depth - 1).bit_length())
        n_layers = len(image.layers)
        per_layer = data.ArrayLayout(unsigned(COUNTER_BITS), n_layers)
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)),
            "o": Out(stream.Signature(SpikeEvent)),
            "clear": In(1),
            "idle": Out(1),
            "mem": In(MemAccessSignature(data_width=width, addr_width=self._mem_addr_width,
                                         core_width=8)),
            "sops": Out(per_layer),
            "spikes": Out(per_layer),
            "saturations": Out(per_layer),
            "events_in": Out(unsigned(COUNTER_BITS)),
            "events_out": Out(unsigned(COUNTER_BITS)),
            "busy_cycles": Out(unsigned(COUNTER_BITS)),
            "integrate_cycles": Out(unsigned(COUNTER_BITS)),
            "overflow": Out(1),
        })

    @property
    def image(self) -> Image:
        return self._image

    @property
    def fifo_depth(self) -> int:
        return self._fifo_depth

    @property
    def mem_data_width(self) -> int:
        return self._mem_data_width

    @property
    def mem_addr_width(self) -> int:
        return self._mem_addr_width

    def elaborate(self, platform):
        m = Module()
        raise NotImplementedError("CoreArray.elaborate is being written")
        return m

"""The core array: LIF cores of every layer joined by AER streams."""

import functools
import operator

from amaranth.hdl import Cat, Module, ResetInserter, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..compiler.devices import find_device
from ..compiler.mapper import memory_placement, weight_banks
from ..image import Image
from ..protocol import COUNTER_BYTES
from .compare import at_least
from .conv import ConvCore, conv_mem_shape
from .core import (
    LifCore,
    MemAccessSignature,
    acc_address,
    param_layout,
    state_layout,
)
from .counters import array_step_layout
from .event import ADDR_BITS, SpikeEvent
from .learning import MOD_BITS
from .router import EventFifo, EventFork, EventMerge
from .skid import SkidBuffer, input_register

__all__ = ["CoreArray", "COUNTER_BITS"]

COUNTER_BITS = 8 * COUNTER_BYTES


class CoreArray(wiring.Component):
    """All cores of an image, joined by AER streams.

    Dataflow (per layer ``l``, its cores sorted by ``lo``)::

        i ──> layer 0 cores ──merge──> layer 1 cores ──merge──> ... ──merge──> o
                   ^            │
                   └─rec FIFO<──┘   (recurrent layers only)

    A layer's input stream (the array's ``i`` for layer 0, else the previous layer's merged
    output) is broadcast to all of its cores: an event moves on once every core has taken it.
    The outputs of a layer's cores are merged in core order, so addresses ascend, with one
    ``eos`` per step. A neuron that fires c times in a step (multi-spike, c <= ``max_spikes``)
    sends c events of its address in a row: every consumer adds its weight c times. A recurrent
    layer's merged stream also enters a FIFO of ``max_spikes * n_out + 2`` entries (a step's
    ``max_spikes * n_out + 1`` events, plus one because the FIFO's output register takes a
    cycle to fill, during which a full inner memory cannot take a push) whose output is
    broadcast to the layer's cores as rows ``n_in + addr`` of the NEXT step; at step 0 the
    cores skip it (``s[-1] = 0``). A core takes, per step, the recurrent
    events up to their ``eos`` (only once the step's first feed-forward event or ``eos`` is
    waiting), then the feed-forward events up to their ``eos``, then runs its neuron pass.
    Layers pipeline: layer ``l`` may integrate step ``t + 1`` while layer ``l + 1`` is on ``t``.
    A convolutional layer's cores are :class:`~.conv.ConvCore` (each a channel-aligned slice of
    the pooled map, its kernel and accumulators in block RAM or SPRAM as the mapper placed them:
    ``compiler.mapper.memory_placement``); they take the same broadcast and merge.

    Ports
    -----
    i : In(stream.Signature(SpikeEvent))
        Input events of a step (``addr`` < ``n_inputs``), then one ``eos``.
    o : Out(stream.Signature(SpikeEvent))
        Output-layer spikes of a step, ascending ``addr`` (neuron index in the layer; a
        multi-spike neuron's c events in a row), then one ``eos`` (only the ``eos`` for an LI
        readout, whose membranes are read from the STATE space). Backpressure stalls the
        array; nothing is lost.
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
        (array -> host). A request is held, unchanged, until a cycle with ``ready`` high: the
        addressed core performs it in that cycle, at the earliest the cycle after the request
        appeared and once the core is between steps (use it when ``idle`` is high; a request
        to a core index that does not exist is done the cycle after it appeared and reads 0).
        A read returns ``rdata`` with ``rvalid`` high for one cycle, the addressed core's
        ``read_latency`` (at least 2) cycles after the taking cycle. Words:

        - WEIGHTS: address ``row * groups + group``, ``lanes`` two's-complement weights of
          ``weight_bits`` packed little-endian (as ``Image.weight_memory``).
        - STATE: address = neuron index local to the core; bits ``[0, v_bits)`` = membrane v
          (two's complement), then the previous step's spike count ``c`` (bit ``v_bits`` for a
          single-spike layer), then a current-based layer's synaptic current
          (``hdl.core.state_layout``).
        - PARAMS: address = local neuron; ``hdl.core.param_layout(layer)``: threshold, bias,
          decay (shift ``k`` or ``beta_q``). Fields that are uniform over the core are
          constants: they read back, writes to them are ignored.
        - ACC: one accumulator of ``acc_bits`` a word, neuron ``g * lanes + p`` at
          ``(g << ceil_log2(lanes)) | p`` (:func:`~.core.acc_address`); read-only (debug).
        - MOD (cores of a three-factor layer): address = local neuron; the signed 8-bit
          modulator m_i of the next update (docs/learning.md); write-only, kept over ``clear``.
          Write step t's modulators after step t - 1's output ``eos`` came out and before
          step t's first input event goes in (the write waits for the core to finish step
          t - 1's learning phase).
    sops, spikes, saturations : Out(data.ArrayLayout(unsigned(COUNTER_BITS), n_layers))
        Per layer: synaptic operations (input events x neurons of the layer, feed-forward and
        recurrent; for a convolution the accumulator updates its events make, as
        ``sim.lif.count_work``), output spikes, membrane updates that saturated.
    learn_cycles : Out(data.ArrayLayout(unsigned(COUNTER_BITS), n_layers))
        Per layer, summed over its cores: weight update cycles of learning, one synapse each
        (each steps the core's LFSR once; sim.learning counts the same as ``update_cycles``).
    events_in, events_out : Out(unsigned(COUNTER_BITS))
        Events (not ``eos``) accepted at ``i`` / delivered at ``o``.
    busy_cycles : Out(unsigned(COUNTER_BITS))
        Cycles in which ``idle`` was low.
    integrate_cycles : Out(unsigned(COUNTER_BITS))
        Cycles in which some core's integration loop issued a weight read.
    overflow : Out(1)
        Sticky: an event was lost. With backpressure everywhere this only fires for an input
        event whose ``addr`` >= ``n_inputs`` (dropped), or a push into a full recurrent FIFO
        (impossible by construction: it is drained before the layer's next pass and sized for
        one step of ``n_out`` spikes + ``eos`` pushed back to back).
    All counters and ``overflow`` are cleared by ``clear``; the cores' learning LFSRs are not.
    Counters are ``COUNTER_BITS`` (``protocol.COUNTER_BITS``, 24) wide and wrap; the host unrolls
    the wrap-around from frequent reads.
    """

    def __init__(self, image: Image, *, fifo_depth: int = 0, counter_bits: int = COUNTER_BITS):
        image.check()
        image.check_gateware()
        self._counter_bits = operator.index(counter_bits)
        if self._counter_bits < 1:
            raise ValueError(f"Counter width must be at least 1, not {counter_bits!r}")
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
            if layer.conv is not None:
                core_width, core_depth = conv_mem_shape(layer, core)
                width, depth = max(width, core_width), max(depth, core_depth)
                continue
            # (ACC holds one accumulator a word: core.acc_address)
            width = max(width, core.lanes * layer.weight_bits, state_layout(layer).size,
                        param_layout(layer).size, layer.acc_bits)
            depth = max(depth, layer.fan_in * core.groups, core.neurons,
                        acc_address(core, core.neurons - 1) + 1)
            rule = image.learning_of(core.layer)
            if rule is not None:
                width = max(width, core.lanes * (rule.trace_bits + 1), MOD_BITS)
        # The mapper's placement: these cores' weights (a convolution's kernel) and these
        # convolutions' accumulators live in SPRAM (zeroed at power-up)
        self._placement = memory_placement(image.layers, image.config)
        self._spram_cores = frozenset(index for index, place in enumerate(self._placement)
                                      if place.weights_spram)
        for index in sorted(self._spram_cores):
            rule = image.learning_of(image.config.cores[index].layer)
            if rule is not None:
                layer = image.layers[rule.layer]
                raise ValueError(f"layer {layer.name!r} learns, but the mapper placed core "
                                 f"{index}'s weights in SPRAM (single-port): map it with "
                                 f"fewer lanes or neurons so its weights fit block RAM")
        self._mem_data_width = width
        self._mem_addr_width = max(ADDR_BITS, (depth - 1).bit_length())
        n_layers = len(image.layers)
        bits = self._counter_bits
        per_layer = data.ArrayLayout(unsigned(bits), n_layers)
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
            "learn_cycles": Out(per_layer),
            "events_in": Out(unsigned(bits)),
            "events_out": Out(unsigned(bits)),
            "busy_cycles": Out(unsigned(bits)),
            "integrate_cycles": Out(unsigned(bits)),
            "steps": Out(array_step_layout(image)),
            "overflow": Out(1),
        })

    @property
    def image(self) -> Image:
        return self._image

    @property
    def spram_cores(self) -> frozenset[int]:
        """Cores whose weights are in SPRAM (``compiler.mapper.spram_cores``): the bitstream
        does not hold them, the host link or the flash loader writes them."""
        return self._spram_cores

    @property
    def fifo_depth(self) -> int:
        return self._fifo_depth

    @property
    def counter_bits(self) -> int:
        """Width of every counter; they wrap around (the host unrolls them)."""
        return self._counter_bits

    @property
    def mem_data_width(self) -> int:
        return self._mem_data_width

    @property
    def mem_addr_width(self) -> int:
        return self._mem_addr_width

    def elaborate(self, platform):
        # The cores take `clear` themselves (a learning core keeps its LFSRs over it); the
        # array's own logic is reset by it.
        top = Module()
        m = Module()
        image = self._image
        n_layers = len(image.layers)
        cores = []
        # ECP5 block RAM's unregistered read data takes ~6 ns: register it in the integration
        family = find_device(image.config.device).family
        registered = family == "ecp5"
        for index, place in enumerate(self._placement):
            if image.layers[image.config.cores[index].layer].conv is not None:
                core = ConvCore.from_image(image, index, spram_kernel=place.weights_spram,
                                           spram_acc=place.acc_spram)
            else:
                # and a weight memory deeper than a row of DP16KDs in banks, each bank's read
                # data registered before the bank select (hdl.memport.BankedMemory)
                config = image.config.cores[index]
                banks = weight_banks(image.layers[config.layer], config, place, family,
                                     image.learning_of(config.layer) is not None)[0]
                core = LifCore.from_image(image, index, registered_reads=registered,
                                          spram_weights=place.weights_spram,
                                          weight_bank_depth=banks)
            top.submodules[f"core{index}"] = core
            m.d.comb += core.clear.eq(self.clear)
            cores.append(core)
        by_layer = [sorted((c for c in cores if c.config.layer == index),
                           key=lambda c: c.config.lo) for index in range(n_layers)]
        overflow = Signal()
        m.d.comb += self.overflow.eq(overflow)
        layer_fifos = []

        def count(name, amount, index=None):
            # The increment is registered first: no logic of the cores or streams sits in
            # front of the counter's carry chain. It is `steps` too (the SoC counts there, in
            # hdl.counters.StatusCounters, and these counters go unused).
            counter = getattr(self, name) if index is None else getattr(self, name)[index]
            field = self.steps[name if index is None else f"{name}_{index}"]
            amount = Value.cast(amount)
            assert len(field) <= len(amount)
            step = Signal(len(field), name=f"step_{name}" + ("" if index is None else
                                                              f"_{index}"))
            m.d.sync += [step.eq(amount), counter.eq(counter + step)]
            m.d.comb += field.eq(step)

        def fork(name, n):
            m.submodules[name] = block = EventFork(n)
            return block

        def transfer(port):
            return port.valid & port.ready & ~port.payload.eos

        # Layer 0's input: events with an address outside the input layer are dropped.
        skids = []

        def skid(name, port):
            """`port` through a skid buffer: its ready is a register of this stage."""
            m.submodules[name] = block = SkidBuffer(SpikeEvent)
            wiring.connect(m, port, block.i)
            skids.append(block)
            return block.o

        # The address check rides through the entry register as a flag beside the event, so
        # that neither the compare nor the drop sits on the handshake into the array. It is a
        # one-entry StreamRegister where every core of a dense first layer takes an event in
        # two cycles or more anyway (as each core's own input register is).
        checked = data.StructLayout({"event": SpikeEvent, "bad": 1})
        first = image.config.cores_of(0)
        m.submodules.l0_in = entry = input_register(
            checked, min(core.groups for core in first) if image.layers[0].conv is None else 1)
        m.d.comb += [
            entry.i.payload.event.eq(self.i.payload),
            entry.i.payload.bad.eq(~self.i.payload.eos &
                                   at_least(self.i.payload.addr, image.n_inputs)),
            entry.i.valid.eq(self.i.valid),
            self.i.ready.eq(entry.i.ready),
        ]
        bad = entry.o.payload.bad
        source = stream.Signature(SpikeEvent).create()
        m.d.comb += [
            source.payload.eq(entry.o.payload.event),
            source.valid.eq(entry.o.valid & ~bad),
            entry.o.ready.eq(source.ready | bad),
        ]
        with m.If(entry.o.valid & bad):
            m.d.sync += overflow.eq(1)
        count("events_in", transfer(source))

        for index, layer in enumerate(image.layers):
            group = by_layer[index]
            if self._fifo_depth:
                m.submodules[f"l{index}_fifo"] = fifo = EventFifo(self._fifo_depth)
                wiring.connect(m, source, fifo.i)
                layer_fifos.append(fifo)
                source = fifo.o
            # Broadcast the layer's input to its cores.
            ff = fork(f"l{index}_fork", len(group))
            wiring.connect(m, source, ff.i)
            for port, core in zip(ff.o, group):
                wiring.connect(m, port, core.i)
            # Merge the cores' outputs in address order.
            m.submodules[f"l{index}_merge"] = merge = EventMerge(len(group))
            for port, core in zip(merge.i, group):
                wiring.connect(m, core.o, port)
            count("spikes", transfer(merge.o), index)
            # Several cores' merge selects among their output buffers: its multiplexer ends at
            # a skid buffer. One core's merge is a wire from its output buffer (ready is a
            # register there): a second buffer would only add a cycle and ~50 logic cells.
            merged = skid(f"l{index}_skid", merge.o) if len(group) > 1 else merge.o
            count("saturations", sum(core.saturated for core in group), index)
            if image.learning_of(index) is not None:
                count("learn_cycles", sum(core.updating for core in group), index)
            if layer.recurrent:
                # The merged step also goes back to the layer as next step's rows n_in + addr.
                # The FIFO never pushes back: it is drained before the layer's next pass.
                out = fork(f"l{index}_out", 2)
                wiring.connect(m, merged, out.i)
                m.submodules[f"l{index}_rec_fifo"] = rec = EventFifo(
                    layer.max_spikes * layer.n_out + 2)
                m.d.comb += [
                    rec.i.payload.eq(out.o[1].payload),
                    rec.i.valid.eq(out.o[1].valid),
                    out.o[1].ready.eq(1),
                ]
                with m.If(rec.i.valid & ~rec.i.ready):
                    m.d.sync += overflow.eq(1)
                rf = fork(f"l{index}_rec_fork", len(group))
                wiring.connect(m, rec.o, rf.i)
                for port, core in zip(rf.o, group):
                    wiring.connect(m, port, core.r)
                source = out.o[0]
            else:
                source = merged
            # each core counts the accumulator updates of the events it takes (a convolution's
            # event reaches only the positions it touches)
            count("sops", sum(core.ops for core in group), index)
        m.d.comb += [
            self.o.payload.eq(source.payload),
            self.o.valid.eq(source.valid),
            source.ready.eq(self.o.ready),
        ]
        count("events_out", transfer(self.o))

        # Registered: a cycle late, as the counters (their increments are registered too).
        idle = Signal()
        m.d.sync += idle.eq(Cat(*(core.idle for core in cores), *(b.empty for b in skids),
                                ~entry.o.valid,
                                *(fifo.level == 0 for fifo in layer_fifos)).all())
        m.d.comb += self.idle.eq(idle)
        count("busy_cycles", ~idle)
        count("integrate_cycles", Cat(*(core.integrating for core in cores)).any())

        # Memory access. The requester holds a request until `ready` (its fields are
        # registers there: hdl.hostlink's executor, the flash loader's MemLock), so the cores
        # see its fields as they are. Only its strobes are registered, decoded per core: the
        # addressed core sees them a cycle later and performs the request in its next `ready`
        # cycle, which is the array's `ready`. A core index that does not exist is done a
        # cycle after it appears (a read answers 0).
        req = self.mem
        r_miss = Signal()  # a request to a core that does not exist, registered as the strobes
        r_re = Signal(len(cores))  # one-hot per core: the strobes the cores see, registers
        r_we = Signal(len(cores))
        done = Cat(*(core.mem.ready for core in cores)) & (r_re | r_we)
        m.d.comb += req.ready.eq(done.any() | r_miss)  # (from registers: no compare on it)
        hit = Cat(*(req.core == index for index in range(len(cores))))
        m.d.sync += [
            r_miss.eq((req.re | req.we) & at_least(req.core, len(cores)) & ~r_miss),
            r_re.eq(hit & req.re.replicate(len(cores)) & ~done),
            r_we.eq(hit & req.we.replicate(len(cores)) & ~done),
        ]
        for index, core in enumerate(cores):
            m.d.comb += [
                core.mem.space.eq(req.space),
                core.mem.addr.eq(req.addr),
                core.mem.wdata.eq(req.wdata),
                core.mem.re.eq(r_re[index]),
                core.mem.we.eq(r_we[index]),
            ]
        # Each core's answer is a register, zero unless it answers: their OR is the answer.
        answer = Signal()  # a read of a core that does not exist: 0, a cycle later
        m.d.sync += answer.eq(req.re & r_miss)
        m.d.comb += [
            req.rvalid.eq(answer | Cat(*(core.mem.rvalid for core in cores)).any()),
            req.rdata.eq(functools.reduce(operator.or_, (core.mem.rdata for core in cores))),
        ]
        top.submodules.links = ResetInserter(self.clear)(m)
        return top

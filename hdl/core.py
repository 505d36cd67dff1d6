"""The LIF core: weight, accumulator, state and parameter memories beside one neuron datapath."""



import operator
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .. import protocol
from ..compiler.mapper import FF_MEMORY_DEPTH, shared_params_offset
from ..image import CoreConfig, Image, LayerParams, LearningConfig, param_fields, param_values
from ..lfsr import lfsr_initial_state
from .compare import at_least, below
from .enums import wire_enum
from .event import SpikeEvent
from .fsm import one_hot
from .learning import MOD_BITS, LearningUnit, Lfsr
from .memport import NO_COLLISIONS, BankedMemory, read_port
from .neuron import NeuronUpdate, count_bits
from .skid import SkidBuffer, input_register
from .spram import SpramMemory

__all__ = ["LifCore", "MemSpace", "MemAccessSignature", "acc_address", "clear_sweep",
           "lane_bits", "param_layout", "state_layout"]


# Which memory of a core an access of the memory-access port addresses (spikeforge.protocol).
MemSpace = wire_enum(protocol.MemSpace, unsigned(3))


# Above this many lanes, a core with its accumulators in a block RAM hands the selected lane
# to its neuron update a stage later (``NeuronUpdate``'s ``late_acc``): the digits network at
# 4 bits, 16 lanes, missed 40.5 MHz on the UP5K with it joining at B (35.9 MHz).
LATE_ACC_LANES = 4


def lane_bits(lanes: int) -> int:
    """Address bits of a lane in an ACC address (``ceil(log2(lanes))``)."""
    return (lanes - 1).bit_length()


def acc_address(config: CoreConfig, neuron: int) -> int:
    """The ACC-space address of local neuron `neuron`'s accumulator: ``(g << ceil_log2(lanes))
    | lane`` for ``neuron = g * lanes + lane`` (one accumulator a word, as a convolution core's
    :func:`~.conv.conv_acc_address`). A lane a group lacks reads as zero."""
    if not 0 <= neuron < config.neurons:
        raise ValueError(f"Neuron must be in range {config.neurons}, not {neuron!r}")
    return (neuron // config.lanes) << lane_bits(config.lanes) | neuron % config.lanes


class MemAccessSignature(wiring.Signature):
    """Host access to a core's memories (seen from the host: it drives the request).

    A request (``re`` or ``we`` high, with ``space``, ``addr``, ``wdata`` and, at the array,
    ``core``) is held until a cycle in which ``ready`` is high; that cycle takes it. A core
    performs it in that cycle and answers a read with ``rvalid`` high for one cycle, later
    (a core's ``read_latency``: :class:`LifCore` two cycles later, its word registered
    behind its space multiplexer, three with a banked weight memory; ``hdl.conv.ConvCore``
    one). ``rdata`` is the answer while ``rvalid`` is high and zero otherwise, so that
    ``hdl.array.CoreArray`` answers with the OR of its cores' (and ``rvalid`` comes as
    late there as at the core).
    Data narrower than the bus is zero-extended on reads and truncated on writes.
    """

    def __init__(self, *, data_width: int, addr_width: int, core_width: int = 0):
        members = {}
        if core_width:
            members["core"] = Out(unsigned(core_width))
        members.update({
            "space": Out(MemSpace),
            "addr": Out(unsigned(addr_width)),
            "wdata": Out(unsigned(data_width)),
            "we": Out(1),
            "re": Out(1),
            "ready": In(1),
            "rdata": In(unsigned(data_width)),
            "rvalid": In(1),
        })
        super().__init__(members)


def clear_sweep(m: Module, state_wr, acc_wr, neurons: int, acc_depth: int):
    """Zero a core's state (``neurons`` words) and accumulator (``acc_depth`` words) memories
    through their write ports, one address of each per cycle, from the cycles this is driven in
    (a core's Clear state, entered after reset and ``clear``). Returns the condition that holds
    in the sweep's last cycle and after it."""
    span = max(neurons, acc_depth)
    sweep = Signal(range(span + 1))
    m.d.comb += [
        state_wr.addr.eq(sweep), state_wr.data.eq(0), state_wr.en.eq(below(sweep, neurons)),
        acc_wr.addr.eq(sweep), acc_wr.data.eq(0), acc_wr.en.eq(below(sweep, acc_depth)),
    ]
    with m.If(below(sweep, span)):
        m.d.sync += sweep.eq(sweep + 1)
    return at_least(sweep, span - 1)


def param_layout(layer: LayerParams) -> data.StructLayout:
    """Per-neuron parameter word of a layer (``spikeforge.image.param_fields``), as the PARAMS
    space of the memory port shows it."""
    return data.StructLayout({f.name: (signed if f.signed else unsigned)(f.width)
                              for f in param_fields(layer)})


def state_layout(layer: LayerParams) -> data.StructLayout:
    """A neuron's state word, as the STATE space of the memory port shows it: the membrane
    ``v`` (bits ``[0, V)``), the last step's spike count ``c`` (1 bit for a single-spike layer,
    else wide enough for ``max_spikes``) and, for a current-based layer, the synaptic current
    ``syn`` (``syn_bits``) above it."""
    fields = {"v": signed(layer.v_bits), "c": unsigned(count_bits(layer))}
    if layer.current_based:
        fields["syn"] = signed(layer.syn_bits)
    return data.StructLayout(fields)


def _uniform(values: np.ndarray) -> bool:
    return values.size == 0 or bool((values == values[0]).all())


class LifCore(wiring.Component):
    """``neurons`` leaky integrate-and-fire neurons [lo, hi) of one layer over ``lanes`` lanes.

    Per timestep t the core computes, for each of its neurons i (golden model, docs/neuron.md;
    c the spike counts, 0/1 for a single-spike layer)::

        A[t]  = sum_j W[i, j] * e_j[t]            j < n_in: feed-forward event j of step t
                                                  j = n_in + a: recurrent event a of step t-1
        current-based: syn[t] = clamp_S(decay_a(syn[t-1]) + A[t] + b[i]),
                       J[t] = syn[t - syn_delay]
        plain:         J[t] = A[t] + b[i]
        subtract reset:  u = decay(v[t-1]) + J[t] - theta[i] * c[t-1]     (reset_delay)
                         u = decay(v[t-1] - theta[i] * c[t-1]) + J[t]     (at the spike)
        zero reset:      u = decay(v[t-1] * (c[t-1] == 0)) + J[t]
        LI readout:      u = decay(v[t-1]) + J[t]
        v[t]  = clamp(u, -2^(V-1), 2^(V-1) - 1)   (``saturated`` counts the clamps, with syn's)
        c[t]  = min(K, #{j >= 1: v[t] > j * theta[i]})       (>= with compare ">="; LI: 0)
        decay(v) = v | v - (v >> k[i]) | (v * beta_q[i]) >> f      (none | shift | mul)

    Memories (all with synchronous read ports, so they map to block RAM):

    - weights: ``fan_in * groups`` words of ``lanes * weight_bits`` (block RAM, or with
      ``spram_weights`` the UP5K's single-port SPRAM, zeroed at power-up: the host or the
      flash loader writes it); word ``row * groups + g`` holds the weights from input
      ``row`` to neurons ``g * lanes + p``, lane p at bits
      ``[p * w, (p + 1) * w)`` (as ``Image.weight_memory``). A write port serves the host (and
      the learning unit); ``transparent_weights`` makes the read port transparent to it for
      read-modify-write. With ``weight_bank_depth`` (a power of 2 below the depth; 0: one
      memory) a :class:`~.memport.BankedMemory`: banks of that many words, each bank's read
      data registered before the bank select, a word two cycles after its address (the
      array gives it an ECP5 core whose weights a row of DP16KDs does not hold,
      :func:`~.memport.bank_depth`); only for weights the host alone writes.
    - accumulators: ``groups`` words of ``lanes`` signed ``acc_bits`` lanes (with at most
      ``compiler.mapper.FF_MEMORY_DEPTH`` groups: a ring of registers, one adder).
    - state: ``neurons`` words of :func:`state_layout`: v, c[t-1] (bit V for a single-spike
      layer), syn[t-1] of a current-based layer.
    - params: ``neurons`` words of the per-neuron fields of ``param_layout`` that differ between
      the core's neurons; uniform fields are constants.
    - with ``params_offset``, state and params are one memory of ``neurons`` words (fewer
      block RAMs where the two words together fit a port better than apart:
      ``compiler.mapper.shared_params_offset``): the state at bits ``[0, S)``, the stored
      parameters from bit ``params_offset``, each part written under its own enable (the pass
      and the clear sweep write the state, the host either part); one read gives both. The
      STATE and PARAMS spaces of ``mem`` are the same either way.

    Integration: an event with row j takes ``groups`` cycles, one weight word (``lanes``
    synapses) per cycle, and the next event is accepted in the cycle the last word of the
    current one is issued, so a back-to-back event stream runs at ``lanes`` synapses per cycle.
    Pipeline: cycle c reads weight word and accumulator word g; cycle c+1 adds and writes
    back. A read of the same accumulator word in cycle c+1 only happens when ``groups`` == 1;
    that memory's read port is then transparent to its write port. With
    ``registered_reads`` (for parts whose block RAM has a long clock-to-out, as ECP5's DP16KD)
    cycle c+1 registers both words and cycle c+2 adds and writes back; the sums written in
    cycles c+1 and c+2 to the word read in c are forwarded into its register. A banked weight
    memory delays all of it by one cycle: the weight word of cycle c comes in c+2, the
    accumulator word is read in c+1 (registered reads: both registered in c+2, added and
    written back in c+3). Either way the loop takes one word per cycle.

    Per step the core takes the recurrent events (port ``r``, rows ``n_in + addr``; skipped at
    the first step after a clear, where s[-1] = 0) up to their ``eos``, starting only once the
    step's first feed-forward event (or ``eos``) waits at ``i``; then the feed-forward events
    (port ``i``, rows ``addr``) up to their ``eos``; then one pass over the neurons, one per
    cycle, that applies the update, clears the accumulators, writes the state back and emits
    ``c`` events ``lo + n`` per neuron in a row, ascending, then an ``eos``. The pass is a
    pipeline (read addresses, memory data with the lane select and the clear of the group's
    accumulator word, then :class:`~.neuron.NeuronUpdate`'s stages, whose neurons a counter
    at its output names; ``N + 2 + latency`` cycles, plus ``c - 1`` for
    each neuron that fires ``c > 1`` times) that advances while the output skid buffer
    (:class:`~.skid.SkidBuffer`, ``ready`` registered) can take an event and the update's
    count stage is not holding a multi-spike neuron; ``o`` is that buffer's output. Addresses
    are not checked here: feed-forward ``addr`` must be < ``n_in`` and recurrent ``addr`` <
    ``n_out``.

    Each input stream enters through a skid buffer of its own, so the core's ``ready`` is a
    register. The outputs the array counts are registers too (its counters may see them a cycle
    late; all of a step's are in before ``idle``): ``ops`` is ``neurons`` in the cycle after the
    core takes an event (not an ``eos``), else 0: the synaptic operations (``sops``);
    ``saturated`` the clamps of the neuron committed in the cycle before; ``integrating`` is
    high while the issue stage holds an event.

    ``clear`` resets the control logic and then sweeps the state and accumulator memories to
    zero (``max(neurons, groups)`` cycles); the same sweep runs after power-on.

    Learning (``learning`` given: the layer's rule, docs/learning.md): a
    :class:`~.learning.LearningUnit` remembers which input rows spiked (``take``); after the
    pass's ``eos`` it runs the learning phase, one synapse update per cycle through the weight
    memory's per-lane write enables (and the state memory's read port for s[t]), before the
    core takes the next step. Integration is unchanged. ``updating`` is high in every weight
    update cycle (the cycles that step the core's LFSR). ``clear`` also zeroes the traces (the
    unit's own sweep), but neither the LFSR (it starts at ``lfsr_initial_state(seed,
    core_index)``) nor the modulators.
    """

    def __init__(self, config: CoreConfig, layer: LayerParams, weight_memory: np.ndarray, *,
                 transparent_weights: bool = False, learning: LearningConfig | None = None,
                 core_index: int = 0, registered_reads: bool = False,
                 spram_weights: bool = False, params_offset: int | None = None,
                 weight_bank_depth: int = 0):
        if not 0 <= config.lo < config.hi <= layer.n_out:
            raise ValueError(f"core neurons [{config.lo}, {config.hi}) are not inside the "
                             f"layer's {layer.n_out} neurons")
        self._lanes = operator.index(config.lanes)
        if self._lanes < 1:
            raise ValueError(f"Lane count must be at least 1, not {config.lanes!r}")
        self._config = config
        self._layer = layer
        weight_memory = np.asarray(weight_memory, dtype=np.uint8)
        depth = layer.fan_in * config.groups
        word_bytes = -(-self._lanes * layer.weight_bits // 8)
        if weight_memory.shape != (depth, word_bytes):
            raise ValueError(f"weight memory must be {(depth, word_bytes)} bytes, not "
                             f"{weight_memory.shape}")
        self._weight_init = [int.from_bytes(row.tobytes(), "little") for row in weight_memory]
        self._transparent_weights = bool(transparent_weights)
        self._registered_reads = bool(registered_reads)
        self._param_layout = param_layout(layer)
        lo, hi = config.lo, config.hi
        values = {name: v[lo:hi] for name, v in param_values(layer).items()}
        self._param_values = values
        self._stored = [name for name, vals in values.items() if not _uniform(vals)]
        if params_offset is not None:
            params_offset = operator.index(params_offset)
            if not self._stored:
                raise ValueError(f"core neurons [{config.lo}, {config.hi}) store no "
                                 f"parameters: params_offset must be None, not "
                                 f"{params_offset!r}")
            if params_offset < state_layout(layer).size:
                raise ValueError(f"params_offset must be at least the state's "
                                 f"{state_layout(layer).size} bits, not {params_offset!r}")
        self._params_offset = params_offset
        width = max(self._lanes * layer.weight_bits, state_layout(layer).size,
                    self._param_layout.size,
                    self._lanes * layer.acc_bits)
        self._learning = learning
        self._core_index = operator.index(core_index)
        self._spram_weights = bool(spram_weights)
        if self._spram_weights and learning is not None:
            raise ValueError(f"layer {layer.name!r} learns: its weights cannot live in SPRAM "
                             f"(single-port; the learning read-modify-write needs two ports)")
        self._weight_bank_depth = operator.index(weight_bank_depth)
        if self._weight_bank_depth < 0 or self._weight_bank_depth & (self._weight_bank_depth - 1):
            raise ValueError(f"Weight bank depth must be 0 or a power of 2, not "
                             f"{weight_bank_depth!r}")
        if self._weight_bank_depth and (learning is not None or self._transparent_weights
                                        or self._spram_weights):
            raise ValueError(f"layer {layer.name!r}: a banked weight memory must be a block RAM "
                             f"only the host writes (no learning, transparent or SPRAM "
                             f"weights), not weight_bank_depth={weight_bank_depth!r}")
        if learning is not None:
            if layer.recurrent:
                raise ValueError(f"layer {layer.name!r} is recurrent: it cannot learn")
            width = max(width, MOD_BITS)
        addr_width = max(1, (max(depth, config.neurons) - 1).bit_length())
        members = {"i": In(stream.Signature(SpikeEvent))}
        if layer.recurrent:
            members["r"] = In(stream.Signature(SpikeEvent))
        members.update({
            "o": Out(stream.Signature(SpikeEvent)),
            "clear": In(1),
            "mem": In(MemAccessSignature(data_width=width, addr_width=addr_width)),
            "idle": Out(1),
            "integrating": Out(1),
            "ops": Out(range(config.neurons + 1)),
            "saturated": Out(2 if layer.current_based else 1),
        })
        if learning is not None:
            members["updating"] = Out(1)
        super().__init__(members)

    @classmethod
    def from_image(cls, image: Image, core_index: int, **kwargs) -> "LifCore":
        """Core ``core_index`` of ``image``; unless ``params_offset`` is given, its state and
        parameters share a word where the mapper counts them so
        (``compiler.mapper.shared_params_offset`` for the image's device)."""
        config = image.config.cores[core_index]
        layer = image.layers[config.layer]
        if "params_offset" not in kwargs:
            kwargs["params_offset"] = shared_params_offset(layer, config, image.config.device)
        return cls(config, layer, image.weight_memory(core_index),
                   learning=image.learning_of(config.layer), core_index=core_index, **kwargs)

    @property
    def config(self) -> CoreConfig:
        return self._config

    @property
    def layer(self) -> LayerParams:
        return self._layer

    @property
    def learning(self) -> LearningConfig | None:
        return self._learning

    @property
    def param_layout(self) -> data.StructLayout:
        return self._param_layout

    @property
    def stored_params(self) -> tuple[str, ...]:
        """Parameter fields held in the params memory (the others are constants)."""
        return tuple(self._stored)

    @property
    def params_offset(self) -> int | None:
        """The bit at which the stored parameters start in the word they share with the
        state, or None: state and parameters are two memories."""
        return self._params_offset

    @property
    def read_latency(self) -> int:
        """Cycles from a read's taking cycle at ``mem`` to its ``rvalid``: 2, or 3 with a
        banked weight memory (its word is registered once more, before the bank select)."""
        return 3 if self.weight_banked else 2

    @property
    def weight_banked(self) -> bool:
        """The weight memory is a :class:`~.memport.BankedMemory` of more than one bank."""
        depth = self._layer.fan_in * self._config.groups
        return 0 < self._weight_bank_depth < depth

    @property
    def spram_weights(self) -> bool:
        """The weight memory is an :class:`~.spram.SpramMemory` (starts zeroed: load it)."""
        return self._spram_weights

    @staticmethod
    def _spram_weight_ports(m: Module, width: int, depth: int):
        """Write and read ports over one single-port SPRAM memory, with the members of a
        ``Memory`` port the core drives (``addr``, ``data``, ``en``). A write cycle (only the
        host writes, between steps) takes the port; every other cycle reads, one cycle
        latency as a block RAM read port. The core never uses read data after a write cycle
        before the next read (the primitive leaves it undefined)."""
        m.submodules.weights = smem = SpramMemory(width=width, depth=depth)
        w_wr = SimpleNamespace(addr=Signal(range(depth), name="w_waddr"),
                               data=Signal(width, name="w_wdata"), en=Signal(name="w_we"))
        w_rd = SimpleNamespace(addr=Signal(range(depth), name="w_raddr"), data=smem.r_data)
        m.d.comb += [
            smem.addr.eq(Mux(w_wr.en, w_wr.addr, w_rd.addr)),
            smem.w_data.eq(w_wr.data),
            smem.w_en.eq(w_wr.en.replicate(len(smem.w_en))),
            smem.r_en.eq(~w_wr.en),
        ]
        return w_wr, w_rd

    def _shared_neuron_memory(self, m: Module, stored_layout: data.StructLayout,
                              init: list[dict]):
        """State and stored parameters in one memory of ``neurons`` words (``params_offset``):
        the state at bits ``[0, S)``, the parameters from bit ``params_offset``, each part
        with its own write enable. Returns state and parameter write and read ports with the
        members of a ``Memory`` port the core drives; both parts share the write address (the
        state's) and the read port (the state's ``addr`` and ``en``)."""
        neurons, offset = self._config.neurons, self._params_offset
        s_layout = state_layout(self._layer)
        width = offset + stored_layout.size
        m.submodules.neuron = nmem = Memory(
            shape=unsigned(width), depth=neurons,
            init=[stored_layout.const(fields).as_value().value << offset for fields in init],
            attrs=NO_COLLISIONS)
        w_port = nmem.write_port(granularity=1)
        r_port = read_port(m, nmem)
        s_wr = SimpleNamespace(addr=Signal(range(neurons), name="s_waddr"),
                               data=Signal(s_layout, name="s_wdata"), en=Signal(name="s_we"))
        p_wr = SimpleNamespace(data=Signal(stored_layout, name="p_wdata"),
                               en=Signal(name="p_we"))
        m.d.comb += [
            w_port.addr.eq(s_wr.addr),
            w_port.data.eq(s_wr.data.as_value() | (p_wr.data.as_value() << offset)),
            w_port.en.eq(Cat(s_wr.en.replicate(s_layout.size),
                             Const(0, offset - s_layout.size),
                             p_wr.en.replicate(stored_layout.size))),
        ]
        s_rd = SimpleNamespace(addr=r_port.addr, en=r_port.en,
                               data=data.View(s_layout, r_port.data[:s_layout.size]))
        p_rd = SimpleNamespace(data=data.View(stored_layout, r_port.data[offset:]))
        return s_wr, s_rd, p_wr, p_rd

    def elaborate(self, platform):
        m = Module()
        layer, cfg = self._layer, self._config
        lanes, groups, neurons = self._lanes, cfg.groups, cfg.neurons
        w_bits, a_bits = layer.weight_bits, layer.acc_bits
        recurrent = layer.recurrent

        # -- memories ------------------------------------------------------------------------
        learn = self._learning
        banked = self.weight_banked
        if self._spram_weights:
            w_wr, w_rd = self._spram_weight_ports(m, lanes * w_bits, layer.fan_in * groups)
        elif banked:
            m.submodules.weights = bmem = BankedMemory(
                width=lanes * w_bits, depth=layer.fan_in * groups,
                bank_depth=self._weight_bank_depth, init=self._weight_init)
            w_wr = SimpleNamespace(addr=bmem.w_addr, data=bmem.w_data, en=bmem.w_en)
            w_rd = SimpleNamespace(addr=bmem.r_addr, data=bmem.r_data)
        else:
            # Without learning only the host writes the weights, between steps, and no read
            # then uses the word written in its cycle: no read-during-write emulation. The
            # learning unit's read-modify-write does read what it just wrote.
            plain = learn is None and not self._transparent_weights
            m.submodules.weights = wmem = Memory(
                shape=unsigned(lanes * w_bits), depth=layer.fan_in * groups,
                init=self._weight_init, attrs=NO_COLLISIONS if plain else None)
            w_wr = wmem.write_port(granularity=w_bits if learn is not None else None)
            if plain:
                w_rd = read_port(m, wmem)
            else:
                w_rd = wmem.read_port(
                    transparent_for=(w_wr,) if self._transparent_weights else ())
        # The integration's accumulator read never uses a word written in its cycle (a single
        # group excepted, read through a transparent port): the write-back of stage 1 is to
        # the group before, and with registered reads both later writes are forwarded. The
        # pass reads a state word (and parameters) only of the neuron it has not written yet.
        acc_layout = data.ArrayLayout(signed(a_bits), lanes)
        # A memory this shallow is flip-flops (compiler.mapper.FF_MEMORY_DEPTH) either way:
        # then its words form a ring whose head is the group in use, with one adder, at the
        # tail, and no multiplexer. An event adds its groups in order, one a cycle: the head
        # plus the weight word goes to the tail while the words move up one, so that after the
        # event's last group the ring is in order again. The pass takes the head's lowest lane:
        # as a neuron enters the update the head shifts down a lane (`acc_lane_next`), and
        # after a group's last lane (`a_wr.en`) the ring moves up with a zero into the tail,
        # as the clear sweep's writes move zeros in. Between steps every word is zero (the
        # pass zeroed it), so a host ACC read answers from the head too.
        ff_acc = groups <= FF_MEMORY_DEPTH
        if ff_acc:
            acc_words = [Signal(acc_layout, name=f"acc_word{k}", reset_less=True)
                         for k in range(groups)]
            a_rd = SimpleNamespace(addr=Signal(range(groups), name="acc_raddr"),
                                   en=Signal(init=1, name="acc_re"), data=acc_words[0])
            a_wr = SimpleNamespace(addr=Signal(range(groups), name="acc_waddr"),
                                   data=Signal(acc_layout, name="acc_wdata"),
                                   en=Signal(name="acc_we"))
            acc_lane_next = Signal()
        else:
            through = groups == 1 and not self._registered_reads
            attrs = {} if through else dict(NO_COLLISIONS)
            if not self._registered_reads:
                # iCE40: a block RAM, as the mapper counts it; yosys would keep a few words
                # (4 lane groups of 3 lanes) in flip-flops with a read multiplexer, about 200
                # logic cells (ECP5 keeps them in LUT RAM)
                attrs["ram_style"] = "block"
            m.submodules.acc = amem = Memory(shape=acc_layout, depth=groups, init=[],
                                             attrs=attrs)
            a_wr = amem.write_port()
            a_rd = amem.read_port(transparent_for=(a_wr,)) if through else read_port(m, amem)
        pfields = self._param_layout.members
        stored_layout = data.StructLayout({name: pfields[name] for name in self._stored})
        init = [{name: int(self._param_values[name][n]) for name in self._stored}
                for n in range(neurons)]
        if self._params_offset is None:
            m.submodules.state = smem = Memory(shape=state_layout(layer), depth=neurons,
                                               init=[], attrs=NO_COLLISIONS)
            s_wr = smem.write_port()
            s_rd = read_port(m, smem)
            if self._stored:
                m.submodules.params = pmem = Memory(shape=stored_layout, depth=neurons,
                                                    init=init, attrs=NO_COLLISIONS)
                p_wr = pmem.write_port()
                p_rd = read_port(m, pmem)
        else:
            s_wr, s_rd, p_wr, p_rd = self._shared_neuron_memory(m, stored_layout, init)
        if learn is not None:
            m.submodules.learning = unit = LearningUnit(cfg, layer, learn)
            m.d.comb += [unit.w_rdata.eq(w_rd.data), unit.s_in.eq(s_rd.data.c),
                         self.updating.eq(unit.updating)]
        params = {}  # field -> value at the pass's second stage (read data or constant)
        for name in self._param_layout.members:
            if name in self._stored:
                params[name] = p_rd.data[name]
            else:
                params[name] = Const(int(self._param_values[name][0]), pfields[name])

        # -- host access: only between steps, when no event of the next step was taken ------
        started = Signal()  # an event (or eos) of the current step was taken
        between = Signal()
        host = Signal()
        m.d.comb += [
            self.mem.ready.eq(between),
            host.eq(between & (self.mem.re | self.mem.we)),
        ]
        # A read's word is registered once more behind the space multiplexer: a deep or wide
        # memory's read data (ECP5: cascaded block RAMs and their output multiplexer) ends at
        # a register here, not in the array's answer multiplexer.
        host_space = Signal(MemSpace)
        lbits = lane_bits(lanes)
        read1 = Signal()
        word = Signal.like(self.mem.rdata)
        m.d.sync += [read1.eq(host & self.mem.re), host_space.eq(self.mem.space)]
        # The lane select of the accumulator word, shared by the pass (the lane of the neuron
        # at P1) and an ACC read (its address's lane, taken with the request). The word is
        # padded with zero lanes to a power of two: a lane a group lacks reads 0. (Flip-flop
        # words need no select: the pass and an ACC read take the ring head's lowest lane.)
        pp1 = Signal(range(lanes))
        with m.If(host):
            m.d.sync += pp1.eq(self.mem.addr[:lbits])
        padded = Cat(a_rd.data.as_value(), Const(0, ((1 << lbits) - lanes) * a_bits))
        acc_word = padded.word_select(pp1, a_bits) if lanes > 1 and not ff_acc else padded
        answer, answer_word = read1, word
        if banked:  # a weight word comes a cycle later; the other spaces' words wait for it
            read2, space2 = Signal(), Signal(MemSpace)
            word2 = Signal.like(word)
            m.d.sync += [read2.eq(answer), space2.eq(host_space)]
            with m.If(read1):
                m.d.sync += word2.eq(word)
            answer = read2
            answer_word = Mux(space2 == MemSpace.WEIGHTS, w_rd.data, word2)
        # (zero unless answering: the array ORs the cores' answers)
        m.d.sync += [self.mem.rvalid.eq(answer), self.mem.rdata.eq(Mux(answer, answer_word, 0))]
        with m.Switch(host_space):
            with m.Case(MemSpace.WEIGHTS):
                m.d.comb += word.eq(w_rd.data)
            with m.Case(MemSpace.STATE):
                m.d.comb += word.eq(s_rd.data.as_value())
            with m.Case(MemSpace.PARAMS):
                view = Signal(self._param_layout)
                m.d.comb += [view[name].eq(value) for name, value in params.items()]
                m.d.comb += word.eq(view.as_value())
            with m.Case(MemSpace.ACC):
                m.d.comb += word.eq(acc_word[:a_bits])
        host_we = {space: Signal(name=f"host_we_{space.name.lower()}") for space in MemSpace}
        for space, strobe in host_we.items():
            m.d.comb += strobe.eq(host & self.mem.we & (self.mem.space == space))
        if learn is None:
            m.d.comb += [
                w_wr.addr.eq(self.mem.addr), w_wr.data.eq(self.mem.wdata), w_wr.en.eq(
                    host_we[MemSpace.WEIGHTS]),
            ]
        else:
            # The host writes only between steps; the learning unit never does then.
            host_w = host_we[MemSpace.WEIGHTS]
            m.d.comb += [
                w_wr.addr.eq(Mux(host_w, self.mem.addr, unit.w_waddr)),
                w_wr.data.eq(Mux(host_w, self.mem.wdata,
                                 unit.w_wdata.as_unsigned().replicate(lanes))),
                w_wr.en.eq(Mux(host_w, (1 << lanes) - 1, unit.w_we)),
                unit.mod_we.eq(host_we[MemSpace.MOD]),
                unit.mod_addr.eq(self.mem.addr),
                unit.mod_data.eq(self.mem.wdata[:MOD_BITS]),
            ]
        if self._stored:
            host_params = data.View(self._param_layout, self.mem.wdata[:self._param_layout.size])
            m.d.comb += p_wr.en.eq(host_we[MemSpace.PARAMS])
            m.d.comb += [p_wr.data[name].eq(host_params[name]) for name in self._stored]
            if self._params_offset is None:  # (shared: the state's write address is the host's)
                m.d.comb += p_wr.addr.eq(self.mem.addr)

        # -- input: each stream through a skid buffer, so that its ready is a register and
        # not this core's control logic (the fork in front of the cores ANDs them) ------------
        # An event takes `groups` cycles to integrate: from two groups on, a one-entry
        # StreamRegister (an item every other cycle, no multiplexer) keeps up as well.
        m.submodules.i_skid = i_skid = input_register(SpikeEvent, groups)
        wiring.connect(m, wiring.flipped(self.i), i_skid.i)
        ev_in = i_skid.o
        if recurrent:  # (what it holds between steps is state, as the recurrent FIFO's)
            m.submodules.r_skid = r_skid = input_register(SpikeEvent, groups)
            wiring.connect(m, wiring.flipped(self.r), r_skid.i)
            ev_rec = r_skid.o

        # -- integration: issue stage (0), the weight word's read stages, (a register stage,)
        # the add/write-back stage ------------------------------------------------------------
        act = Signal()  # stage 0 holds an event
        g = Signal(range(groups))
        g_last = Signal(init=groups == 1)  # g == groups - 1, kept in a register
        # The weight word's address, row * groups + g: with a power-of-two `groups` it is the
        # event's row above g's bits (no counter of its own).
        pow2_groups = groups & (groups - 1) == 0
        if pow2_groups:
            row_reg = Signal(range(layer.fan_in))
            waddr = Cat(g, row_reg)
        else:
            waddr = Signal(range(layer.fan_in * groups))
        # stage k holds word group gs[k] when vs[k]; the weight word issued in stage 0 is at
        # w_rd.data in stage `w_latency`, the accumulator word is read a stage before that
        w_latency = 2 if banked else 1
        add_stage = w_latency + self._registered_reads
        vs, gs = [act], [g]
        for k in range(1, add_stage + 1):
            vs.append(Signal(name=f"v{k}"))
            gs.append(Signal(range(groups), name=f"g{k}"))
            m.d.sync += vs[k].eq(vs[k - 1])
            with m.If(vs[k - 1]):
                m.d.sync += gs[k].eq(gs[k - 1])
        acc_raddr = gs[w_latency - 1]
        m.d.comb += self.integrating.eq(act)
        m.d.sync += self.ops.eq(0)  # (the take below sets it: a register, a cycle late)
        with m.If(act):
            with m.If(g_last):
                m.d.sync += act.eq(0)
            with m.Else():
                m.d.sync += [g.eq(g + 1), g_last.eq(g == groups - 2)]
                if not pow2_groups:
                    m.d.sync += waddr.eq(waddr + 1)
        can_take = ~act | g_last

        def take(stream_in, row):
            """Accept one event of `stream_in` (row = weight row of a non-eos event)."""
            m.d.comb += stream_in.ready.eq(1)
            with m.If(stream_in.valid):
                m.d.sync += started.eq(1)
                with m.If(~stream_in.payload.eos):
                    m.d.sync += self.ops.eq(neurons)
                    m.d.sync += [act.eq(1), g.eq(0), g_last.eq(groups == 1),
                                 row_reg.eq(row) if pow2_groups else waddr.eq(row * groups)]
                    if learn is not None:  # flag the row: input `row` spiked
                        m.d.comb += [unit.take.eq(1), unit.take_row.eq(row)]

        def add_words(acc_word, weight_word):
            total = Signal(acc_layout)
            for p in range(lanes):
                weight = weight_word[p * w_bits:(p + 1) * w_bits].as_signed()
                m.d.comb += total[p].eq(acc_word[p] + weight)
            return total

        s, r = add_stage, add_stage - 1
        if ff_acc:
            # the add stage adds the weight word to the ring's head, into its tail
            weight_word = w_rd.data
            if self._registered_reads:
                weight_word = Signal(lanes * w_bits)
                m.d.sync += weight_word.eq(w_rd.data)
            head, tail = acc_words[0], acc_words[-1]
            with m.If(vs[s] | a_wr.en):
                m.d.sync += [acc_words[k].eq(acc_words[k + 1]) for k in range(groups - 1)]
                m.d.sync += tail.eq(Mux(a_wr.en, 0, add_words(head, weight_word).as_value()))
            with m.Elif(acc_lane_next):
                m.d.sync += head.eq(head.as_value()[a_bits:])
            sums = None
        elif not self._registered_reads:
            # the add stage adds the memories' read data and writes the sum back
            sums = add_words(a_rd.data, w_rd.data)
        else:
            # stage r registers the read data, the add stage adds and writes back. The
            # accumulator word read in stage r - 1 misses the writes of that cycle and of the
            # next one (the read port is not transparent): they are forwarded.
            w_reg = Signal(lanes * w_bits)
            a_reg = Signal(acc_layout)
            sums = add_words(a_reg, w_reg)
            last_v = Signal()
            last_g = Signal(range(groups))
            last_sum = Signal(acc_layout)
            m.d.sync += [w_reg.eq(w_rd.data),
                         last_v.eq(vs[s]), last_g.eq(gs[s]), last_sum.eq(sums)]
            with m.If(vs[s] & (gs[s] == gs[r])):
                m.d.sync += a_reg.eq(sums)
            with m.Elif(last_v & (last_g == gs[r])):
                m.d.sync += a_reg.eq(last_sum)
            with m.Else():
                m.d.sync += a_reg.eq(a_rd.data)
        w_valid, w_group, in_flight = vs[s], gs[s], Cat(*vs[1:]).any()

        # -- pass: P0 issues the reads of neuron n, P1 has their data, then the update -------
        pg = Signal(range(groups))
        pp = Signal(range(lanes))
        # the neuron, pg * lanes + pp: with a power-of-two `lanes` it is pp below pg
        pow2_lanes = lanes & (lanes - 1) == 0
        n = Cat(pp, pg) if pow2_lanes else Signal(range(neurons))
        p0_done = Signal()
        q1 = Signal()
        end1 = Signal()  # P1's neuron ends its group (a register: the ring's words' enables)
        pg1 = Signal(range(groups))
        m.submodules.out = obuf = SkidBuffer(SpikeEvent)
        wiring.connect(m, obuf.o, wiring.flipped(self.o))
        # The pass stalls while the output buffer is full (a register, not the consumer's
        # ready), whether or not the neuron at the end of the pipeline spikes; the stages in
        # front of the update's count stage also while it emits a multi-spike neuron's events.
        out_ready = Signal()
        adv = Signal()
        m.d.comb += out_ready.eq(obuf.i.ready)
        p0_go = Signal()
        commit = Signal()

        m.submodules.update = update = NeuronUpdate(
            layer, stored=stored_layout,
            constants={name: int(self._param_values[name][0])
                       for name in pfields if name not in self._stored},
            bias_bits=pfields["bias"].width,
            # the update's first stage takes the block RAMs' read data straight where its
            # logic on them is one carry chain deep; not with ECP5's slow read data
            input_stage=self._registered_reads,
            # the accumulator lane joins at B unless it comes through a lane multiplexer
            # wider than 4 to 1 (two LUT levels in front of B's adder, then)
            late_acc=not ff_acc and lanes > LATE_ACC_LANES,
            # and the sum runs into the spike compare in one cycle where the reads are the
            # block RAMs' own (iCE40: fast carry chains against a 40 MHz clock)
            sum_stage=self._registered_reads)
        # (acc_word: the group's word stays at the accumulator memory's read data, its read
        # enabled only at a group's first lane, while its lanes enter the update)
        # The neuron leaving the update: the pass order is fixed, so a counter at the output
        # names it (no tag travels through the update's stages).
        o_n = Signal(range(neurons))
        o_last = Signal(init=neurons == 1)  # o_n == neurons - 1, kept in a register
        with m.If(commit):
            m.d.sync += [o_n.eq(o_n + 1), o_last.eq(o_n == neurons - 2)]
        m.d.comb += [
            update.en.eq(out_ready),
            adv.eq(out_ready & ~update.hold),
            update.i_valid.eq(q1),
            update.acc.eq(acc_word[:a_bits]),
            update.v.eq(s_rd.data.v),
            update.c.eq(s_rd.data.c),
        ]
        if layer.current_based:
            m.d.comb += update.syn.eq(s_rd.data.syn)
        if self._stored:
            m.d.comb += update.params.eq(p_rd.data)
        new_state = Cat(update.v_new, update.count,
                        update.syn_new if layer.current_based else Cat())
        m.d.comb += [
            # a neuron leaves the update (its state is written) in the cycle of its last event
            commit.eq(update.o_valid & update.last & out_ready),
            obuf.i.valid.eq(update.o_valid & update.spike & out_ready),
            obuf.i.payload.addr.eq(cfg.lo + o_n),
            obuf.i.payload.eos.eq(0),
        ]
        # registered: the array's counter sees it a cycle later
        m.d.sync += self.saturated.eq(Mux(commit, update.saturated, 0))

        if learn is not None:
            w_raddr = Mux(unit.w_read, unit.w_raddr, waddr)
            s_raddr = Mux(unit.n_read, unit.n_addr, n)
        else:
            w_raddr, s_raddr = waddr, n

        # -- memory port addressing ----------------------------------------------------------
        m.d.comb += [
            w_rd.addr.eq(Mux(host, self.mem.addr, w_raddr)),
            a_rd.addr.eq(Mux(host, self.mem.addr[lbits:], acc_raddr)),
            s_rd.addr.eq(Mux(host, self.mem.addr, s_raddr)),
            s_wr.addr.eq(Mux(host, self.mem.addr, o_n)),
            s_wr.data.eq(Mux(host, self.mem.wdata, new_state)),
            s_wr.en.eq(host_we[MemSpace.STATE] | commit),
            # the pass clears a group's accumulators once its word is read (q1: only in the
            # pass, whose word stays at the read data; the integration writes never then)
            a_wr.addr.eq(Mux(w_valid, w_group, pg1) if sums is not None else pg1),
            a_wr.data.eq(Mux(w_valid, sums.as_value(), 0) if sums is not None else 0),
            a_wr.en.eq(w_valid | q1 if sums is not None
                       # (flip-flop words: after the group's last lane, as it advances)
                       else q1 & adv & end1),
        ]
        if ff_acc:
            m.d.comb += acc_lane_next.eq(q1 & adv & ~end1)
        if self._stored and self._params_offset is None:
            m.d.comb += p_rd.addr.eq(Mux(host, self.mem.addr, n))

        with m.FSM(init="Clear") as fsm:
            with m.State("Clear"):
                swept = clear_sweep(m, s_wr, a_wr, neurons, groups)
                with m.If(swept & (~unit.busy if learn is not None else 1)):
                    m.next = "Ffwd"
            if recurrent:
                with m.State("Rec"):
                    m.d.comb += between.eq(~started)
                    with m.If(can_take & ~host & (started | ev_in.valid)):
                        take(ev_rec, layer.n_in + ev_rec.payload.addr)
                        with m.If(ev_rec.valid & ev_rec.payload.eos):
                            m.next = "Ffwd"
            with m.State("Ffwd"):
                m.d.comb += between.eq(~started)
                with m.If(can_take & ~host):
                    take(ev_in, ev_in.payload.addr)
                    with m.If(ev_in.valid & ev_in.payload.eos):
                        m.next = "Drain"
            with m.State("Drain"):
                with m.If(~act & ~in_flight):
                    m.d.sync += [pg.eq(0), pp.eq(0), p0_done.eq(0), q1.eq(0),
                                 o_n.eq(0), o_last.eq(neurons == 1)]
                    if not pow2_lanes:
                        m.d.sync += n.eq(0)
                    m.next = "Pass"
            with m.State("Pass"):
                m.d.comb += [
                    p0_go.eq(adv & ~p0_done),
                    s_rd.en.eq(adv),
                    a_rd.addr.eq(pg),
                    a_rd.en.eq(p0_go & (pp == 0)),
                ]
                if self._stored and self._params_offset is None:
                    m.d.comb += p_rd.en.eq(adv)
                with m.If(adv):
                    m.d.sync += [q1.eq(p0_go), pp1.eq(pp), pg1.eq(pg),
                                 end1.eq((pp == lanes - 1) | (n == neurons - 1))]
                with m.If(p0_go):
                    if not pow2_lanes:
                        m.d.sync += n.eq(n + 1)
                    with m.If(n == neurons - 1):
                        m.d.sync += p0_done.eq(1)
                    with m.If(pp == lanes - 1):
                        m.d.sync += [pp.eq(0), pg.eq(pg + 1)]
                    with m.Else():
                        m.d.sync += pp.eq(pp + 1)
                with m.If(commit & o_last):
                    m.next = "PassEos"
            with m.State("PassEos"):
                m.d.comb += [obuf.i.valid.eq(1), obuf.i.payload.eos.eq(1)]
                with m.If(obuf.i.ready):
                    m.d.sync += started.eq(0)
                    if learn is not None:
                        m.d.comb += unit.start.eq(1)
                        m.next = "Learn"
                    else:
                        m.next = "Rec" if recurrent else "Ffwd"
            if learn is not None:
                with m.State("Learn"):  # the update sweeps, after the step's last spike
                    with m.If(~unit.busy):
                        m.next = "Ffwd"

        one_hot(fsm)  # (its state decodes sit in the take and pass handshakes)
        m.d.comb += self.idle.eq(between & obuf.empty & ~i_skid.o.valid)
        if learn is None:
            return ResetInserter(self.clear)(m)
        # The LFSR runs on over `clear`: a sample does not restart its sequence.
        top = Module()
        top.submodules.core = ResetInserter(self.clear)(m)
        top.submodules.lfsr = lfsr = Lfsr(lfsr_initial_state(learn.seed, self._core_index))
        top.d.comb += [lfsr.step.eq(unit.updating), unit.lfsr_state.eq(lfsr.state)]
        return top

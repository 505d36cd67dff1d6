"""The convolution core: an event-driven convolutional LIF layer (or a channel slice of one).

Per timestep t a core holding output channels ``[c0, c0 + C)`` of a layer computes, for each of
its pooled neurons ``(o, y, x)`` (golden model ``conv_currents`` and the LIF update,
docs/neuron.md "Convolution and pooling")::

    conv[o, y, x] = sum_{c, i, j} W[o, c, i, j] * s_in[c, S*y + i - P, S*x + j - P]
    A[o, y, x]    = conv[o, y, x] | max_{a,b<p} conv[o, p*y+a, p*x+b] | sum_{a,b<p} (...)
    current-based:  syn[t] = clamp_S(decay_a(syn[t-1]) + A + b),  J = syn[t - syn_delay]
    plain:          J = A + b
    subtract reset: u = decay(v[t-1]) + J - theta * c[t-1]          (reset_delay)
                    u = decay(v[t-1] - theta * c[t-1]) + J           (at the spike)
    zero reset:     u = decay(v[t-1] * (c[t-1] == 0)) + J
    v[t] = clamp(u, -2^(V-1), 2^(V-1) - 1)
    c[t] = min(K, #{j >= 1: v[t] > j * theta})                       (>= with compare ">=")
    decay(v) = v | v - (v >> k) | (v * beta_q) >> f                 (none | shift | mul)

Integration: an input event (AER address ``(c * H + y) * W + x`` of the source's map) is
decoded (two registered constant divisions, shift-and-add reciprocals, no multiplier), then
visits the K x K kernel taps ``(i, j)``; tap ``(i, j)`` reaches output position
``(oy, ox)`` with ``S * oy = y + P - i`` and ``S * ox = x + P - j`` when that lies on the
convolution's map (a *hit*). The next event is taken in the last cycle of the current one.

- accumulators in block RAM (``lanes`` values a word): each tap takes ``G = ceil(C / lanes)``
  cycles, one lane group per cycle (kernel word and accumulator word read, the sum written back
  the next cycle; the read port is transparent for that write): ``K^2 * G`` cycles an event,
  hit or miss.
- accumulators in SPRAM (``spram_acc``, one value a word, single-port): a hit tap updates its C
  values lane-serially, a read then the write of the sum, ``2 * C`` cycles; a missed tap takes
  one cycle. ``conv_cycles`` gives both.

The timestep pass (after the step's ``eos``, once the integration is drained) walks the core's
neurons in C order. For each it reads the ``p x p`` pre-pool accumulators of its tile, one a
cycle (block RAM; SPRAM: a read and a write of zero, two cycles), clears them (block RAM: the
word is written with zeros in the round of its last lane), pools, and feeds the pooled current
with the neuron's state and parameters to :class:`~.neuron.NeuronUpdate` (the LIF core's
update, 4 stages for the plain LIF, up to 7), whose result is written back and whose c spikes
leave as c events ``lo + n`` in a row through a skid buffer; then one ``eos``. The pass takes
``C * Hc * Wc`` cycles (block RAM) or ``2 * C * Hc * Wc`` (SPRAM) plus about 6 (up to 9), plus
``c - 1`` for each neuron that fires ``c > 1`` times, and stalls only while the output is
full.
"""

from __future__ import annotations

import operator
from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..image import (
    ConvSpec,
    CoreConfig,
    Image,
    LayerParams,
    conv_fan_out,
    pack_weights,
    param_values,
)
from .core import (
    MemAccessSignature,
    MemSpace,
    clear_sweep,
    lane_bits,
    param_layout,
    state_layout,
)
from .event import SpikeEvent
from .neuron import NeuronUpdate
from .skid import SkidBuffer
from .spram import SpramMemory

__all__ = ["ConvCore", "conv_acc_address", "conv_cycles", "conv_kernel_memory",
           "conv_mem_shape", "conv_memory_shapes"]


# -- geometry of a core -----------------------------------------------------------------------
def _slice(layer: LayerParams, config: CoreConfig) -> tuple[int, int]:
    """(first channel, channels) of the core; ValueError unless it holds whole channels."""
    if not isinstance(layer, LayerParams) or not isinstance(layer.conv, ConvSpec):
        raise TypeError(f"layer must be a convolutional LayerParams, not {layer!r}")
    if not isinstance(config, CoreConfig):
        raise TypeError(f"config must be a CoreConfig, not {config!r}")
    per_channel = layer.conv.n_out // layer.conv.out_channels
    lo, hi = config.lo, config.hi
    if not 0 <= lo < hi <= layer.n_out or lo % per_channel or hi % per_channel:
        raise ValueError(f"Core neurons must be whole output channels of {per_channel} neurons "
                         f"within the layer's {layer.n_out}, not [{lo}, {hi})")
    return lo // per_channel, (hi - lo) // per_channel


def _lanes(config: CoreConfig, channels: int) -> int:
    lanes = operator.index(config.lanes)
    if not 1 <= lanes <= channels:
        raise ValueError(f"Lane count must be 1..{channels} (the core's channels), not "
                         f"{config.lanes!r}")
    return lanes


def conv_mem_shape(layer: LayerParams, config: CoreConfig) -> tuple[int, int]:
    """(data width, depth) of a convolution core's memory port: the widest word and the
    largest address of its spaces (WEIGHTS ``taps * groups``, STATE and PARAMS one per neuron,
    ACC ``conv_acc_address``'s range with block-RAM accumulators, which covers SPRAM's)."""
    _, channels = _slice(layer, config)
    lanes = _lanes(config, channels)
    conv = layer.conv
    groups = -(-channels // lanes)
    conv_h, conv_w = conv.conv_shape
    width = max(lanes * layer.weight_bits, state_layout(layer).size, param_layout(layer).size,
                layer.acc_bits)
    depth = max(conv.taps * groups, config.neurons,
                (conv_h * conv_w * groups) << lane_bits(lanes))
    return width, depth


def conv_memory_shapes(layer: LayerParams, config: CoreConfig, *,
                       spram_acc: bool = False) -> dict[str, tuple[int, int]]:
    """(width in bits, words) of each memory of the core, for placement: "kernel"
    (``lanes * weight_bits`` x ``taps * groups``), "acc" (block RAM: ``lanes * acc_bits`` x
    ``Hc * Wc * groups``; ``spram_acc``: ``acc_bits`` x ``channels * Hc * Wc``), "state"
    (``state_layout`` x neurons) and, when some parameter differs within a channel, "params"
    (those fields x neurons; per-channel and uniform fields are logic)."""
    _, channels = _slice(layer, config)
    lanes = _lanes(config, channels)
    conv = layer.conv
    groups = -(-channels // lanes)
    conv_h, conv_w = conv.conv_shape
    plane = conv_h * conv_w
    shapes = {
        "kernel": (lanes * layer.weight_bits, conv.taps * groups),
        "acc": (layer.acc_bits, channels * plane) if spram_acc else
               (lanes * layer.acc_bits, plane * groups),
        "state": (state_layout(layer).size, config.neurons),
    }
    per_channel = conv.n_out // conv.out_channels
    fields = param_layout(layer).members
    width = 0
    for name, values in param_values(layer).items():
        rows = np.asarray(values[config.lo:config.hi]).reshape(channels, per_channel)
        if not all(_uniform(row) for row in rows):
            width += fields[name].width
    if width:
        shapes["params"] = (width, config.neurons)
    return shapes


def conv_kernel_memory(layer: LayerParams, config: CoreConfig) -> np.ndarray:
    """The core's kernel memory as the WEIGHTS space holds it: uint8 [taps * groups, bytes],
    word ``row * groups + g`` (row ``(c_in * K + i) * K + j``) holding the weights of output
    channels ``c0 + g * lanes + lane``, lane at bits ``[lane * w, (lane + 1) * w)``."""
    first, channels = _slice(layer, config)
    lanes = _lanes(config, channels)
    return pack_weights(layer.weights[first:first + channels], layer.weight_bits, lanes)


def conv_acc_address(layer: LayerParams, config: CoreConfig, channel: int, y: int, x: int, *,
                     spram_acc: bool = False) -> int:
    """The ACC-space address of the pre-pool accumulator of the core's local output channel
    `channel` at position (y, x) of the convolution's map (before pooling).

    Block RAM: ``(word << ceil_log2(lanes)) | lane`` with ``word = g * Hc * Wc + y * Wc + x``,
    ``channel = g * lanes + lane``; SPRAM: ``(channel * Hc + y) * Wc + x``."""
    _, channels = _slice(layer, config)
    lanes = _lanes(config, channels)
    conv_h, conv_w = layer.conv.conv_shape
    if not (0 <= channel < channels and 0 <= y < conv_h and 0 <= x < conv_w):
        raise ValueError(f"Accumulator must be within [{channels}, {conv_h}, {conv_w}], not "
                         f"{(channel, y, x)!r}")
    if spram_acc:
        return (channel * conv_h + y) * conv_w + x
    word = (channel // lanes) * conv_h * conv_w + y * conv_w + x
    return (word << lane_bits(lanes)) | channel % lanes


def conv_cycles(events, conv: ConvSpec, lanes: int, *, spram_acc: bool = False,
                channels: int | None = None) -> int:
    """Integration cycles (``integrating`` high) of a core with `channels` output channels
    (default: all of the layer's) over `lanes` lanes for a step's input events.

    `events` is the number of events, or the per-input counts [n_in] (C order; any leading
    axes are summed over). Block RAM accumulators: ``events * K^2 * ceil(channels / lanes)``.
    SPRAM accumulators (``spram_acc``, per-input counts required): each event costs
    ``2 * channels`` cycles per tap that reaches the map and 1 per tap that does not, i.e.
    ``sum_in count * (hits * 2 * channels + K^2 - hits)`` with ``hits = fan_out / C_out``.
    """
    channels = conv.out_channels if channels is None else operator.index(channels)
    lanes = operator.index(lanes)
    if not 1 <= lanes <= channels:
        raise ValueError(f"Lane count must be 1..{channels}, not {lanes!r}")
    taps = conv.kernel * conv.kernel
    if not spram_acc:
        return int(np.sum(events)) * taps * -(-channels // lanes)
    counts = np.asarray(events)
    if counts.ndim == 0 or counts.shape[-1] != conv.n_in:
        raise ValueError(f"events must be per-input counts [..., {conv.n_in}] with SPRAM "
                         f"accumulators (the cost depends on where they fall), not {events!r}")
    hits = conv_fan_out(conv) // conv.out_channels
    per_event = hits * 2 * channels + taps - hits
    return int(counts.reshape(-1, conv.n_in).sum(axis=0, dtype=np.int64) @ per_event)


# -- constant arithmetic without multipliers --------------------------------------------------
def _times(value, constant: int):
    """``value * constant`` (both unsigned) as a sum of shifted copies: adders, no $mul (which
    a UP5K build would put in a DSP)."""
    constant = operator.index(constant)
    if constant == 0:
        return Const(0, 1)
    total = None
    for bit in range(constant.bit_length()):
        if constant >> bit & 1:
            term = Value.cast(value) << bit
            total = term if total is None else total + term
    return total


def _reciprocal(divisor: int, limit: int) -> tuple[int, int]:
    """(M, s) with ``v // divisor == (v * M) >> s`` for every ``0 <= v < limit``."""
    values = np.arange(limit, dtype=np.int64)
    want = values // divisor
    for shift in range(max(limit - 1, 1).bit_length(), 48):
        mul = -(-(1 << shift) // divisor)
        if np.array_equal((values * mul) >> shift, want):
            return mul, shift
    raise AssertionError(f"no reciprocal of {divisor} below {limit}")  # 2^48 > limit * divisor


def _divmod(value, divisor: int, limit: int):
    """(value // divisor, value % divisor) of an unsigned value below `limit`."""
    q_bits = max(1, ((limit - 1) // divisor).bit_length())
    r_bits = max(1, (divisor - 1).bit_length())
    value = Value.cast(value)[:max(1, (limit - 1).bit_length())]
    if divisor == 1:
        return value, Const(0, 1)
    if divisor & (divisor - 1) == 0:
        shift = divisor.bit_length() - 1
        return value[shift:], value[:shift]
    mul, shift = _reciprocal(divisor, limit)
    quotient = (_times(value, mul) >> shift)[:q_bits]
    return quotient, (value - _times(quotient, divisor))[:r_bits]


def _single_port(m: Module, name: str, width: int, depth: int):
    """Write and read ports over one :class:`~.spram.SpramMemory`, with the members of a
    ``Memory`` port (``addr``, ``data``, ``en``): a cycle with the write's ``en`` writes, else a
    cycle with the read's ``en`` reads (data one cycle later, held until the next read)."""
    m.submodules[name] = mem = SpramMemory(width=width, depth=depth)
    wr = SimpleNamespace(addr=Signal(range(depth), name=f"{name}_waddr"),
                         data=Signal(width, name=f"{name}_wdata"), en=Signal(name=f"{name}_we"))
    rd = SimpleNamespace(addr=Signal(range(depth), name=f"{name}_raddr"), data=mem.r_data,
                         en=Signal(name=f"{name}_re"))
    m.d.comb += [
        mem.addr.eq(Mux(wr.en, wr.addr, rd.addr)),
        mem.w_data.eq(wr.data),
        mem.w_en.eq(wr.en.replicate(len(mem.w_en))),
        mem.r_en.eq(rd.en & ~wr.en),
    ]
    return wr, rd


def _uniform(values: np.ndarray) -> bool:
    return values.size == 0 or bool((values == values.flat[0]).all())


class ConvCore(wiring.Component):
    """Output channels ``[lo // (Hp*Wp), hi // (Hp*Wp))`` of a convolutional LIF layer
    (module docstring: equations, dataflow and cycle costs).

    Parameters
    ----------
    config : CoreConfig
        Neurons ``[lo, hi)`` of the pooled map in C order, whole output channels; ``lanes``
        (1..channels) lanes over the core's channels, ``groups = ceil(channels / lanes)``
        (not ``CoreConfig.groups``, which counts neurons).
    layer : LayerParams
        A layer with ``conv`` set, spiking LIF neurons as a ``LifCore`` runs them (subtract or
        zero reset, either reset timing, compare ">" or ">=", decay none / shift / mul, a
        synaptic current, up to ``max_spikes`` spikes a step: c events of a neuron in a row);
        inputs may carry several spikes (repeated events). An LI readout is refused.
    spram_kernel : bool
        The kernel lives in SPRAM (not initialised: the host or the flash loader writes it
        through WEIGHTS); else in block RAM, initialised from the layer.
    spram_acc : bool
        The pre-pool accumulators live in SPRAM, one value a word (lane-serial updates); else
        in block RAM, ``lanes`` values a word.

    Members
    -------
    i : In(stream.Signature(SpikeEvent))
        The source's events of a step (any order, repeats allowed), then one ``eos``.
    o : Out(stream.Signature(SpikeEvent))
        The step's spikes as layer-global addresses ``lo + n``, ascending, then one ``eos``.
    clear : In(1)
        Resets the control and sweeps the accumulators and the state to zero
        (``max(neurons, accumulator words)`` cycles; the same sweep runs after power-on).
        The kernel is kept.
    mem : In(MemAccessSignature(data_width=W, addr_width=A))
        ``(W, depth) = conv_mem_shape(layer, config)``, ``A`` the bits of ``depth - 1``.
        Timing as ``LifCore``'s: a request is held until ``ready`` (high only between steps:
        ``idle`` without the output buffer's condition), and a read answers with ``rvalid`` one
        cycle after the accepting cycle. Spaces: WEIGHTS read/write (``conv_kernel_memory``'s
        words); STATE read/write (local neuron n, ``state_layout``: v, count c, syn);
        PARAMS read (``param_layout`` of neuron n; writes are ignored: the parameters are
        constants, per-channel tables or a per-neuron ROM built from the layer); ACC read
        (``conv_acc_address``; writes ignored).
    idle : Out(1)
        Waiting for a step's first event with nothing in flight (low during the sweep).
    integrating : Out(1)
        A cycle of an event's integration (a kernel read is issued in each).
    saturated : Out(1), or Out(2) with a synaptic current
        The clamps of the update that finished this cycle (membrane, and the current's).
    ops : Out(range(lanes + 1))
        Accumulator values updated by a tap that hit, this cycle; over a step their sum is the
        golden model's synaptic operations of the core's channels.

    Raises
    ------
    TypeError
        If ``layer`` is not convolutional or ``config`` not a CoreConfig.
    ValueError
        If the slice is not whole channels, the lanes are out of range, the layer uses a
        neuron feature this core does not run, or an SPRAM memory would not fit 64 bits x 64K.
    """

    def __init__(self, config: CoreConfig, layer: LayerParams, *, spram_kernel: bool = False,
                 spram_acc: bool = False):
        self._first, self._channels = _slice(layer, config)
        self._lanes = _lanes(config, self._channels)
        if not layer.spiking:
            raise ValueError(f"A convolution core runs spiking neurons, not an LI readout "
                             f"(layer {layer.name!r})")
        self._config, self._layer = config, layer
        self._groups = -(-self._channels // self._lanes)
        self._spram_kernel, self._spram_acc = bool(spram_kernel), bool(spram_acc)
        conv = layer.conv
        conv_h, conv_w = conv.conv_shape
        if self._spram_kernel and (self._lanes * layer.weight_bits > 64
                                   or conv.taps * self._groups > 65536):
            raise ValueError(f"An SPRAM kernel must fit 64 bits x 65536 words, not "
                             f"{self._lanes * layer.weight_bits} x {conv.taps * self._groups}")
        if self._spram_acc and (layer.acc_bits > 64
                                or self._channels * conv_h * conv_w > 65536):
            raise ValueError(f"SPRAM accumulators must fit 64 bits x 65536 words, not "
                             f"{layer.acc_bits} x {self._channels * conv_h * conv_w}")
        per_channel = conv.n_out // conv.out_channels
        values = {name: np.asarray(v[config.lo:config.hi])
                  for name, v in param_values(layer).items()}
        self._params = {}  # name -> ("const", int) | ("channel", [C]) | ("neuron", [N])
        for name, vals in values.items():
            by_channel = vals.reshape(self._channels, per_channel)
            if _uniform(vals):
                self._params[name] = ("const", int(vals[0]))
            elif all(_uniform(row) for row in by_channel):
                self._params[name] = ("channel", [int(v) for v in by_channel[:, 0]])
            else:
                self._params[name] = ("neuron", [int(v) for v in vals])
        width, depth = conv_mem_shape(layer, config)
        super().__init__({
            "i": In(stream.Signature(SpikeEvent)),
            "o": Out(stream.Signature(SpikeEvent)),
            "clear": In(1),
            "mem": In(MemAccessSignature(data_width=width,
                                         addr_width=max(1, (depth - 1).bit_length()))),
            "idle": Out(1),
            "integrating": Out(1),
            "saturated": Out(2 if layer.current_based else 1),
            "ops": Out(range(self._lanes + 1)),
        })

    @classmethod
    def from_image(cls, image: Image, core_index: int, **kwargs) -> ConvCore:
        config = image.config.cores[core_index]
        return cls(config, image.layers[config.layer], **kwargs)

    @property
    def config(self) -> CoreConfig:
        return self._config

    @property
    def read_latency(self) -> int:
        """Cycles from a read's taking cycle at ``mem`` to its ``rvalid``."""
        return 1

    @property
    def layer(self) -> LayerParams:
        return self._layer

    @property
    def channels(self) -> int:
        """Output channels the core holds."""
        return self._channels

    @property
    def groups(self) -> int:
        """Lane groups: ``ceil(channels / lanes)``."""
        return self._groups

    @property
    def spram_kernel(self) -> bool:
        return self._spram_kernel

    @property
    def spram_acc(self) -> bool:
        return self._spram_acc

    @property
    def param_storage(self) -> dict[str, str]:
        """Per parameter field: "const", "channel" (a table per channel) or "neuron"."""
        return {name: kind for name, (kind, _) in self._params.items()}

    def elaborate(self, platform):
        m = Module()
        layer, conv, cfg = self._layer, self._layer.conv, self._config
        lanes, groups, channels = self._lanes, self._groups, self._channels
        k, s, pad, p = conv.kernel, conv.stride, conv.padding, conv.pool_size
        conv_h, conv_w = conv.conv_shape
        pool_w = conv_w // p
        pool_h = conv_h // p
        plane = conv_h * conv_w
        neurons = cfg.neurons
        w_bits, a_bits = layer.weight_bits, layer.acc_bits
        spram_acc = self._spram_acc
        k_depth = conv.taps * groups
        a_depth = channels * plane if spram_acc else plane * groups
        lbits = lane_bits(lanes)

        # -- memories --------------------------------------------------------------------------
        if self._spram_kernel:
            k_wr, k_rd = _single_port(m, "kernel", lanes * w_bits, k_depth)
            m.d.comb += k_rd.en.eq(1)
        else:
            words = conv_kernel_memory(layer, cfg)
            m.submodules.kernel = kmem = Memory(
                shape=unsigned(lanes * w_bits), depth=k_depth,
                init=[int.from_bytes(row.tobytes(), "little") for row in words])
            k_wr = kmem.write_port()
            k_rd = kmem.read_port()
        weights = data.ArrayLayout(signed(w_bits), lanes)(k_rd.data)
        if spram_acc:
            a_wr, a_rd = _single_port(m, "acc", a_bits, a_depth)
        else:
            m.submodules.acc = amem = Memory(shape=data.ArrayLayout(signed(a_bits), lanes),
                                             depth=a_depth, init=[])
            a_wr = amem.write_port()
            a_rd = amem.read_port(transparent_for=(a_wr,))
        m.submodules.state = smem = Memory(shape=state_layout(layer), depth=neurons, init=[])
        s_wr = smem.write_port()
        s_rd = smem.read_port()
        pfields = param_layout(layer).members
        stored = {name: kind for name, (kind, _) in self._params.items() if kind != "const"}
        by_neuron = [name for name, kind in stored.items() if kind == "neuron"]
        by_channel = [name for name, kind in stored.items() if kind == "channel"]
        if by_neuron:
            layout = data.StructLayout({name: pfields[name] for name in by_neuron})
            m.submodules.params = pmem = Memory(
                shape=layout, depth=neurons,
                init=[{name: self._params[name][1][n] for name in by_neuron}
                      for n in range(neurons)])
            p_rd = pmem.read_port()
        ch_params = Signal(data.StructLayout({name: pfields[name] for name in by_channel}))
        ch_index = Signal(range(channels))  # the channel table's address (read registered)
        ch_en = Signal()
        if by_channel:
            with m.If(ch_en):
                with m.Switch(ch_index):
                    for c in range(channels):
                        with m.Case(c):
                            m.d.sync += [ch_params[name].eq(self._params[name][1][c])
                                         for name in by_channel]

        # -- host access: only between steps ---------------------------------------------------
        started = Signal()  # an event (or eos) of the current step was taken
        between = Signal()
        host = Signal()
        req = self.mem
        m.d.comb += [req.ready.eq(between), host.eq(between & (req.re | req.we))]
        host_space = Signal(MemSpace)
        host_lane = Signal(range(lanes))
        m.d.sync += [req.rvalid.eq(host & req.re), host_space.eq(req.space),
                     host_lane.eq(req.addr[:lbits] if lbits and not spram_acc else 0)]
        host_we = {space: between & req.we & (req.space == space) for space in MemSpace}
        host_acc_re = between & req.re & (req.space == MemSpace.ACC)
        params_view = Signal(param_layout(layer))
        with m.If(req.rvalid), m.Switch(host_space):  # (zero unless answering)
            with m.Case(MemSpace.WEIGHTS):
                m.d.comb += req.rdata.eq(k_rd.data)
            with m.Case(MemSpace.STATE):
                m.d.comb += req.rdata.eq(s_rd.data.as_value())
            with m.Case(MemSpace.PARAMS):
                m.d.comb += req.rdata.eq(params_view.as_value())
            with m.Case(MemSpace.ACC):
                if spram_acc:
                    m.d.comb += req.rdata.eq(a_rd.data)
                else:
                    m.d.comb += req.rdata.eq(Value.cast(a_rd.data[host_lane]).as_unsigned())
        m.d.comb += [
            k_wr.addr.eq(req.addr), k_wr.data.eq(req.wdata), k_wr.en.eq(host_we[MemSpace.WEIGHTS]),
        ]

        # -- input: two registered constant divisions decode the address ----------------------
        d1_valid = Signal()
        d1_addr = Signal(range(max(conv.n_in, 2)))  # the source's addresses are < n_in
        d2_valid = Signal()
        d2_q = Signal(range(conv.in_channels * conv.height))
        d2_x = Signal(range(conv.width))
        i0_take = Signal()  # the integration takes D2's event this cycle
        d2_ready = ~d2_valid | i0_take
        d1_ready = ~d1_valid | d2_ready
        q1, x1 = _divmod(d1_addr, conv.width, conv.n_in)
        with m.If(d2_ready):
            m.d.sync += [d2_valid.eq(d1_valid), d2_q.eq(q1), d2_x.eq(x1)]
        ev_c, ev_y = _divmod(d2_q, conv.height, conv.in_channels * conv.height)
        ev_kbase = _times(ev_c, k * k * groups)
        take_in = Signal()  # the input stream's handshake this cycle
        with m.If(d1_ready):
            m.d.sync += d1_valid.eq(take_in & ~self.i.payload.eos)
            with m.If(take_in):
                m.d.sync += d1_addr.eq(self.i.payload.addr)

        # -- integration: stage 0 walks the taps, stage 1 reads, (block RAM) stage 2 writes ----
        span = max(conv.height, conv.width) + pad + 1
        coord = signed(span.bit_length() + 2)
        act = Signal()
        ey = Signal(range(conv.height))
        ex = Signal(range(conv.width))
        ti = Signal(range(k))
        tj = Signal(range(k))
        kaddr = Signal(range(k_depth + groups + 1))  # the kernel word of this op
        ny, nx = Signal(coord), Signal(coord)
        m.d.comb += [ny.eq(ey + pad - ti), nx.eq(ex + pad - tj)]
        if s == 1:
            oy, ox = ny.as_unsigned(), nx.as_unsigned()
            aligned = Const(1)
        else:
            oy, ox = ny.as_unsigned()[1:], nx.as_unsigned()[1:]
            aligned = ~ny[0] & ~nx[0]
        hit = Signal()
        m.d.comb += hit.eq((ny >= 0) & (nx >= 0) & aligned & (oy < conv_h) & (ox < conv_w))
        pos = Signal(range(plane))
        m.d.comb += pos.eq(_times(oy[:max(1, (conv_h - 1).bit_length())], conv_w)
                           + ox[:max(1, (conv_w - 1).bit_length())])
        last_tap = (ti == k - 1) & (tj == k - 1)

        def next_tap(words):
            """To the next tap, whose first kernel word is `words` past the current word."""
            m.d.sync += kaddr.eq(kaddr + words)
            with m.If(tj == k - 1):
                m.d.sync += [tj.eq(0), ti.eq(ti + 1)]
            with m.Else():
                m.d.sync += tj.eq(tj + 1)
            with m.If(last_tap):
                m.d.sync += act.eq(0)

        i1_valid = Signal()
        i1_hit = Signal()
        i1_aaddr = Signal(range(a_depth))
        i1_kaddr = Signal.like(kaddr)
        m.d.comb += self.integrating.eq(i1_valid)
        m.d.sync += [i1_valid.eq(act), i1_hit.eq(hit), i1_kaddr.eq(kaddr)]
        if not spram_acc:
            g = Signal(range(groups))
            goff = Signal(range(a_depth))  # g * Hc * Wc
            last_op = last_tap & (g == groups - 1)
            i1_lanes = Signal(range(lanes + 1))
            m.d.sync += [i1_aaddr.eq(pos + goff),
                         i1_lanes.eq(Mux(g == groups - 1, channels - (groups - 1) * lanes,
                                         lanes))]
            with m.If(act):
                with m.If(g == groups - 1):
                    m.d.sync += [g.eq(0), goff.eq(0)]
                    next_tap(1)
                with m.Else():
                    m.d.sync += [g.eq(g + 1), goff.eq(goff + plane), kaddr.eq(kaddr + 1)]
            # stage 2: the sum of the words read in stage 1, written back
            i2_valid = Signal()
            i2_aaddr = Signal(range(a_depth))
            i2_lanes = Signal(range(lanes + 1))
            m.d.sync += [i2_valid.eq(i1_valid & i1_hit), i2_aaddr.eq(i1_aaddr),
                         i2_lanes.eq(i1_lanes)]
            sums = Signal(data.ArrayLayout(signed(a_bits), lanes))
            for lane in range(lanes):
                m.d.comb += sums[lane].eq(a_rd.data[lane] + weights[lane])
            m.d.comb += self.ops.eq(Mux(i2_valid, i2_lanes, 0))
            in_flight = i1_valid | i2_valid
        else:
            ch = Signal(range(channels))
            lane = Signal(range(lanes))
            coff = Signal(range(a_depth))  # ch * Hc * Wc
            phase = Signal()  # 0: read the value, 1: write the sum
            last_op = last_tap & (~hit | (phase & (ch == channels - 1)))
            i1_phase = Signal()
            i1_lane = Signal(range(lanes))
            m.d.sync += [i1_aaddr.eq(pos + coff), i1_phase.eq(phase), i1_lane.eq(lane)]
            with m.If(act):
                with m.If(~hit):
                    next_tap(groups)
                with m.Elif(~phase):
                    m.d.sync += phase.eq(1)
                with m.Else():
                    m.d.sync += phase.eq(0)
                    with m.If(ch == channels - 1):
                        m.d.sync += [ch.eq(0), lane.eq(0), coff.eq(0)]
                        next_tap(1)
                    with m.Else():
                        m.d.sync += [ch.eq(ch + 1), coff.eq(coff + plane)]
                        with m.If(lane == lanes - 1):
                            m.d.sync += [lane.eq(0), kaddr.eq(kaddr + 1)]
                        with m.Else():
                            m.d.sync += lane.eq(lane + 1)
            i1_read = i1_valid & i1_hit & ~i1_phase
            i1_write = i1_valid & i1_hit & i1_phase
            acc_sum = Signal(signed(a_bits))
            m.d.comb += [acc_sum.eq(a_rd.data.as_signed() + weights[i1_lane]),
                         self.ops.eq(i1_write)]
            in_flight = i1_valid
        m.d.comb += i0_take.eq(d2_valid & (~act | last_op))
        with m.If(i0_take):
            m.d.sync += [act.eq(1), ey.eq(ev_y), ex.eq(d2_x), ti.eq(0), tj.eq(0),
                         kaddr.eq(ev_kbase)]

        # -- pass: stage T issues the reads of a tap, stage T1 pools; then the update --------
        n = Signal(range(neurons))
        pch = Signal(range(channels))
        p_lane = Signal(range(lanes))  # the lane of pch (block RAM)
        py, px = Signal(range(pool_h)), Signal(range(pool_w))
        pa, pb = Signal(range(p)), Signal(range(p))
        # the tap's accumulator word; every move to the next tap adds a constant
        t_addr = Signal(range(a_depth))
        t_delta = Signal(signed(max(a_depth, plane * p).bit_length() + 2))
        t_done = Signal()
        t_phase = Signal()  # SPRAM: 0 reads the tap, 1 writes it with zero
        t1_valid = Signal()
        t1_first = Signal()
        t1_last = Signal()
        t1_n = Signal(range(neurons))
        t1_lane = Signal(range(lanes))
        t1_addr = Signal(range(a_depth))
        t1_clear = Signal()
        best = Signal(signed(a_bits))
        picked = Signal(signed(a_bits))
        pooled = Signal(signed(a_bits))
        m.d.comb += picked.eq(a_rd.data.as_signed() if spram_acc else a_rd.data[t1_lane])
        if conv.pool == "max":
            m.d.comb += pooled.eq(Mux(t1_first | (picked > best), picked, best))
        elif conv.pool == "sum":
            m.d.comb += pooled.eq(Mux(t1_first, picked, best + picked))
        else:
            m.d.comb += pooled.eq(picked)

        m.submodules.out = obuf = SkidBuffer(SpikeEvent)
        wiring.connect(m, obuf.o, wiring.flipped(self.o))
        out_ready = Signal()
        adv = Signal()
        commit = Signal()
        tag_layout = data.StructLayout({"n": unsigned(max(1, (neurons - 1).bit_length())),
                                        "last": unsigned(1)})
        stored_layout = data.StructLayout({name: pfields[name] for name in stored})
        m.submodules.update = update = NeuronUpdate(
            layer, stored=stored_layout,
            constants={name: value for name, (kind, value) in self._params.items()
                       if kind == "const"},
            bias_bits=pfields["bias"].width, tag_width=tag_layout.size)
        i_tag = data.View(tag_layout, update.i_tag)
        o_tag = data.View(tag_layout, update.o_tag)
        m.d.comb += [
            out_ready.eq(obuf.i.ready),
            update.en.eq(out_ready),
            adv.eq(out_ready & ~update.hold),
            update.i_valid.eq(t1_valid & t1_last),
            i_tag.n.eq(t1_n),
            i_tag.last.eq(t1_n == neurons - 1),
            update.acc.eq(pooled),
            update.v.eq(s_rd.data.v),
            update.c.eq(s_rd.data.c),
            *([update.syn.eq(s_rd.data.syn)] if layer.current_based else []),
            commit.eq(update.o_valid & update.last & out_ready),
            self.saturated.eq(Mux(commit, update.saturated, 0)),
            obuf.i.valid.eq(update.o_valid & update.spike & out_ready),
            obuf.i.payload.addr.eq(cfg.lo + o_tag.n),
            obuf.i.payload.eos.eq(0),
        ]
        for name in by_neuron:
            m.d.comb += update.params[name].eq(p_rd.data[name])
        for name in by_channel:
            m.d.comb += update.params[name].eq(ch_params[name])
        with m.If(adv & t1_valid):
            m.d.sync += best.eq(pooled)

        # -- the host's view of PARAMS: constants, channel tables, the neuron ROM ---------------
        for name, (kind, value) in self._params.items():
            if kind == "const":
                m.d.comb += params_view[name].eq(value)
            elif kind == "channel":
                m.d.comb += params_view[name].eq(ch_params[name])
            else:
                m.d.comb += params_view[name].eq(p_rd.data[name])
        host_channel, _ = _divmod(req.addr[:max(1, (neurons - 1).bit_length())],
                                  conv.n_out // conv.out_channels, neurons)

        # -- memory ports: host, integration, pass, sweep ---------------------------------------
        host_word = req.addr[lbits:] if not spram_acc else req.addr
        m.d.comb += [
            k_rd.addr.eq(Mux(host, req.addr, i1_kaddr)),
            s_rd.addr.eq(Mux(host, req.addr, n)),
            s_wr.addr.eq(Mux(host, req.addr, o_tag.n)),
            s_wr.data.eq(Mux(host, req.wdata, Cat(
                update.v_new, update.count,
                update.syn_new if layer.current_based else Cat()))),
            s_wr.en.eq(host_we[MemSpace.STATE] | commit),
            ch_index.eq(Mux(host, host_channel, pch)),
            ch_en.eq(host | adv),
        ]
        if by_neuron:
            m.d.comb += p_rd.addr.eq(Mux(host, req.addr, n))
        if spram_acc:
            m.d.comb += [
                a_rd.addr.eq(Mux(host, host_word, i1_aaddr)),
                a_rd.en.eq(host_acc_re | i1_read),
                a_wr.addr.eq(i1_aaddr),
                a_wr.data.eq(acc_sum),
                a_wr.en.eq(i1_write),
            ]
        else:
            m.d.comb += [
                a_rd.addr.eq(Mux(host, host_word, i1_aaddr)),
                a_wr.addr.eq(Mux(i2_valid, i2_aaddr, t1_addr)),
                a_wr.data.eq(Mux(i2_valid, sums.as_value(), 0)),
                a_wr.en.eq(i2_valid),
            ]

        with m.FSM(init="Clear"):
            with m.State("Clear"):
                with m.If(clear_sweep(m, s_wr, a_wr, neurons, a_depth)):
                    m.next = "Ffwd"
            with m.State("Ffwd"):
                m.d.comb += [between.eq(~started & ~d1_valid & ~d2_valid & ~act & ~in_flight),
                             self.i.ready.eq(d1_ready & ~host),
                             take_in.eq(self.i.valid & d1_ready & ~host)]
                with m.If(take_in):
                    m.d.sync += started.eq(1)
                    with m.If(self.i.payload.eos):
                        m.next = "Drain"
            with m.State("Drain"):
                with m.If(~d1_valid & ~d2_valid & ~act & ~in_flight):
                    m.d.sync += [n.eq(0), pch.eq(0), p_lane.eq(0), py.eq(0), px.eq(0),
                                 pa.eq(0), pb.eq(0), t_addr.eq(0), t_done.eq(0), t_phase.eq(0),
                                 t1_valid.eq(0)]
                    m.next = "Pass"
            with m.State("Pass"):
                t_go = adv & ~t_done
                issue = t_go & ~t_phase if spram_acc else t_go
                step = t_go & t_phase if spram_acc else t_go
                m.d.comb += [s_rd.en.eq(adv)]
                if by_neuron:
                    m.d.comb += p_rd.en.eq(adv)
                if spram_acc:
                    m.d.comb += [
                        a_rd.addr.eq(t_addr), a_rd.en.eq(issue),
                        a_wr.addr.eq(t_addr), a_wr.data.eq(0), a_wr.en.eq(step),
                    ]
                    with m.If(t_go):
                        m.d.sync += t_phase.eq(~t_phase)
                else:
                    m.d.comb += [
                        a_rd.addr.eq(t_addr), a_rd.en.eq(adv),
                        a_wr.addr.eq(t1_addr), a_wr.data.eq(0),
                        a_wr.en.eq(adv & t1_valid & t1_clear),
                    ]
                with m.If(adv):
                    m.d.sync += [
                        t1_valid.eq(issue), t1_first.eq((pa == 0) & (pb == 0)),
                        t1_last.eq((pa == p - 1) & (pb == p - 1)), t1_n.eq(n),
                        t1_lane.eq(p_lane), t1_addr.eq(t_addr),
                        t1_clear.eq((p_lane == lanes - 1) | (pch == channels - 1)),
                    ]
                with m.If(step):
                    m.d.sync += t_addr.eq(t_addr + t_delta)
                    m.d.comb += t_delta.eq(1)  # next column of the tile, row of tiles, plane
                    with m.If(pb != p - 1):
                        m.d.sync += pb.eq(pb + 1)
                    with m.Else():
                        m.d.sync += pb.eq(0)
                        with m.If(pa != p - 1):
                            m.d.sync += pa.eq(pa + 1)
                            m.d.comb += t_delta.eq(conv_w - (p - 1))
                        with m.Else():
                            m.d.sync += [pa.eq(0), n.eq(n + 1)]
                            with m.If(px != pool_w - 1):
                                m.d.sync += px.eq(px + 1)
                                m.d.comb += t_delta.eq(1 - (p - 1) * conv_w)
                            with m.Else():
                                m.d.sync += px.eq(0)
                                with m.If(py != pool_h - 1):
                                    m.d.sync += py.eq(py + 1)
                                with m.Else():
                                    m.d.sync += py.eq(0)
                                    with m.If(pch == channels - 1):
                                        m.d.sync += t_done.eq(1)
                                    with m.Else():
                                        m.d.sync += pch.eq(pch + 1)
                                        if not spram_acc:  # the group's plane again
                                            with m.If(p_lane == lanes - 1):
                                                m.d.sync += p_lane.eq(0)
                                            with m.Else():
                                                m.d.sync += p_lane.eq(p_lane + 1)
                                                m.d.comb += t_delta.eq(1 - plane)
                with m.If(commit & o_tag.last):
                    m.next = "PassEos"
            with m.State("PassEos"):
                m.d.comb += [obuf.i.valid.eq(1), obuf.i.payload.eos.eq(1)]
                with m.If(obuf.i.ready):
                    m.d.sync += started.eq(0)
                    m.next = "Ffwd"

        m.d.comb += self.idle.eq(between & obuf.empty)
        return ResetInserter(self.clear)(m)

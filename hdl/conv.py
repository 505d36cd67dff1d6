"""Event-driven convolution: the integration and pooling half of a convolution core.

An input event (an AER address ``(c * H + y) * W + x`` of the source's map) adds kernel column
``(c, i, j)`` to the accumulators of every output position ``(oy, ox)`` with
``S * oy + i - P = y`` and ``S * ox + j - P = x``, one lane group of output channels per cycle.
The end-of-step event starts the timestep pass, which pools the accumulators ("none", "max" or
"sum" over ``p x p`` tiles, docs/neuron.md "Convolution and pooling") and streams the pooled
currents ``A[o, y, x]`` out in C order, then clears the accumulators. The neuron update that
turns ``A`` into spikes is the LIF core's; this block is tested alone against the golden model's
``conv_currents``.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..image import ConvSpec, LayerParams, pack_weights
from .event import SpikeEvent

__all__ = ["ConvAccumulator", "ConvCore", "ConvNeurons", "conv_cycles"]


def conv_cycles(events: int, conv: ConvSpec, lanes: int) -> int:
    """Cycles the integration spends on `events` input events: each takes one cycle to be
    accepted and one per kernel tap and lane group, K^2 * ceil(C_out / lanes)."""
    groups = -(-conv.out_channels // lanes)
    return events * (conv.kernel * conv.kernel * groups + 1)


class ConvAccumulator(wiring.Component):
    """Integration and pooling of one convolutional layer (module docstring).

    Parameters
    ----------
    layer : LayerParams
        A layer with ``conv`` set; its kernel [C_out, C_in * K * K] fills the kernel memory.
    lanes : int
        Output channels integrated per cycle (one lane group per cycle).

    Members
    -------
    i : In(stream.Signature(SpikeEvent))
        The source's events of a step, then one ``eos`` event.
    o : Out(stream.Signature(StructLayout({"value": signed(acc_bits), "last": 1})))
        The pooled currents of the step in C order; ``last`` marks the final one.
    busy : Out(1)
        High from an accepted ``eos`` until the accumulators are cleared.

    Memories: the kernel (C_in * K^2 * groups words of ``lanes`` weights, block RAM) and the
    accumulators (conv_h * conv_w * groups words of ``lanes`` signed acc_bits values), read
    transparently for the write of the cycle before, so back-to-back events need no stall.
    Integration latency: ``conv_cycles``. The pass reads each accumulator word once per lane
    and pooled tap (2 cycles each) and clears in one cycle per word.
    """

    def __init__(self, layer: LayerParams, *, lanes: int = 1):
        if not isinstance(layer, LayerParams) or layer.conv is None:
            raise TypeError(f"layer must be a convolutional LayerParams, not {layer!r}")
        lanes = int(lanes)
        if not 1 <= lanes <= layer.conv.out_channels:
            raise ValueError(f"lanes must be 1..{layer.conv.out_channels}, not {lanes!r}")
        self._layer, self._conv, self._lanes = layer, layer.conv, lanes
        self._groups = -(-layer.conv.out_channels // lanes)
        self._out_shape = data.StructLayout({"value": signed(layer.acc_bits),
                                             "last": unsigned(1)})
        super().__init__({"i": In(stream.Signature(SpikeEvent)),
                          "o": Out(stream.Signature(self._out_shape)),
                          "busy": Out(1)})

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def groups(self) -> int:
        return self._groups

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        conv, lanes, groups, layer = self._conv, self._lanes, self._groups, self._layer
        k, s, pad, p = conv.kernel, conv.stride, conv.padding, conv.pool_size
        conv_h, conv_w = conv.conv_shape
        wb, ab = layer.weight_bits, layer.acc_bits
        words = pack_weights(layer.weights, wb, lanes)
        init = [int.from_bytes(bytes(row), "little") for row in words]
        m.submodules.kernel = kmem = Memory(shape=unsigned(lanes * wb), depth=len(init),
                                            init=init)
        acc_layout = data.ArrayLayout(signed(ab), lanes)
        m.submodules.acc = amem = Memory(shape=acc_layout, depth=conv_h * conv_w * groups,
                                         init=[])
        k_rd = kmem.read_port()
        a_wr = amem.write_port()
        a_rd = amem.read_port(transparent_for=(a_wr,))
        weights = data.ArrayLayout(signed(wb), lanes)(k_rd.data)

        # the event being integrated and the tap / lane group counters
        ec = Signal(range(conv.in_channels))
        ey = Signal(range(conv.height))
        ex = Signal(range(conv.width))
        ti = Signal(range(k))
        tj = Signal(range(k))
        g = Signal(range(groups))
        # stage 1 of the integration: the accumulator word read last cycle, where to write it
        valid1 = Signal()
        addr1 = Signal(range(conv_h * conv_w * groups))
        m.d.sync += valid1.eq(0)
        with m.If(valid1):
            m.d.comb += [a_wr.addr.eq(addr1), a_wr.en.eq(1)]
            for lane in range(lanes):
                m.d.comb += a_wr.data[lane].eq(a_rd.data[lane] + weights[lane])

        # output position of tap (ti, tj): S * oy = y + P - i
        width = ceil_log2(max(conv.height, conv.width) + pad + 1) + 2
        shifted_y, shifted_x = Signal(signed(width)), Signal(signed(width))
        num_y, num_x = Signal(signed(width)), Signal(signed(width))
        oy, ox = Signal(signed(width)), Signal(signed(width))
        m.d.comb += [shifted_y.eq(ey + pad), shifted_x.eq(ex + pad),
                     num_y.eq(shifted_y - ti), num_x.eq(shifted_x - tj),
                     oy.eq(num_y // s), ox.eq(num_x // s)]
        hit = Signal()
        m.d.comb += hit.eq((num_y >= 0) & (num_x >= 0) & (num_y % s == 0) & (num_x % s == 0)
                           & (oy < conv_h) & (ox < conv_w))

        # the pass: channel o = g * lanes + lane, pooled position (py, px), tap (a, b)
        lane = Signal(range(lanes))
        py, px = Signal(range(conv_h // p)), Signal(range(conv_w // p))
        pa, pb = Signal(range(p)), Signal(range(p))
        best = Signal(signed(ab))
        first = Signal()
        clear = Signal(range(conv_h * conv_w * groups))
        picked = Signal(signed(ab))
        m.d.comb += picked.eq(a_rd.data[lane])

        with m.FSM():
            with m.State("Idle"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    with m.If(self.i.payload.eos):
                        m.d.sync += [g.eq(0), lane.eq(0), py.eq(0), px.eq(0), pa.eq(0),
                                     pb.eq(0), first.eq(1)]
                        m.next = "PoolRead"
                    with m.Else():
                        addr = self.i.payload.addr
                        m.d.sync += [ec.eq(addr // (conv.height * conv.width)),
                                     ey.eq((addr // conv.width) % conv.height),
                                     ex.eq(addr % conv.width), ti.eq(0), tj.eq(0), g.eq(0)]
                        m.next = "Integrate"
            with m.State("Integrate"):
                m.d.comb += [k_rd.addr.eq(((ec * k + ti) * k + tj) * groups + g),
                             a_rd.addr.eq(((oy * conv_w + ox) * groups + g)[:len(addr1)])]
                m.d.sync += [valid1.eq(hit),
                             addr1.eq(((oy * conv_w + ox) * groups + g)[:len(addr1)])]
                with m.If(g == groups - 1):
                    m.d.sync += g.eq(0)
                    with m.If(tj == k - 1):
                        m.d.sync += tj.eq(0)
                        with m.If(ti == k - 1):
                            m.next = "Idle"
                        with m.Else():
                            m.d.sync += ti.eq(ti + 1)
                    with m.Else():
                        m.d.sync += tj.eq(tj + 1)
                with m.Else():
                    m.d.sync += g.eq(g + 1)
            with m.State("PoolRead"):
                m.d.comb += [self.busy.eq(1),
                             a_rd.addr.eq(((py * p + pa) * conv_w + px * p + pb) * groups + g)]
                m.next = "PoolTake"
            with m.State("PoolTake"):
                m.d.comb += self.busy.eq(1)
                if conv.pool == "max":
                    with m.If(first | (picked > best)):
                        m.d.sync += best.eq(picked)
                else:  # "sum", or "none" with its one tap
                    with m.If(first):
                        m.d.sync += best.eq(picked)
                    with m.Else():
                        m.d.sync += best.eq(best + picked)
                m.d.sync += first.eq(0)
                with m.If(pb == p - 1):
                    m.d.sync += pb.eq(0)
                    with m.If(pa == p - 1):
                        m.d.sync += pa.eq(0)
                        m.next = "Emit"
                    with m.Else():
                        m.d.sync += pa.eq(pa + 1)
                        m.next = "PoolRead"
                with m.Else():
                    m.d.sync += pb.eq(pb + 1)
                    m.next = "PoolRead"
            with m.State("Emit"):
                last_pos = (py == conv_h // p - 1) & (px == conv_w // p - 1)
                last_ch = (g == groups - 1) & ((lane == lanes - 1) |
                                               (g * lanes + lane == conv.out_channels - 1))
                m.d.comb += [self.busy.eq(1), self.o.valid.eq(1),
                             self.o.payload.value.eq(best),
                             self.o.payload.last.eq(last_pos & last_ch)]
                with m.If(self.o.ready):
                    m.d.sync += first.eq(1)
                    m.next = "PoolRead"
                    with m.If(px == conv_w // p - 1):
                        m.d.sync += px.eq(0)
                        with m.If(py == conv_h // p - 1):
                            m.d.sync += py.eq(0)
                            with m.If(last_ch):
                                m.d.sync += clear.eq(0)
                                m.next = "Clear"
                            with m.Elif(lane == lanes - 1):
                                m.d.sync += [lane.eq(0), g.eq(g + 1)]
                            with m.Else():
                                m.d.sync += lane.eq(lane + 1)
                        with m.Else():
                            m.d.sync += py.eq(py + 1)
                    with m.Else():
                        m.d.sync += px.eq(px + 1)
            with m.State("Clear"):
                m.d.comb += [self.busy.eq(1), a_wr.addr.eq(clear), a_wr.en.eq(1)]
                for index in range(lanes):
                    m.d.comb += a_wr.data[index].eq(0)
                m.d.sync += clear.eq(clear + 1)
                with m.If(clear == conv_h * conv_w * groups - 1):
                    m.next = "Idle"
        return m


class ConvNeurons(wiring.Component):
    """The LIF update of a convolutional layer's pooled neurons, in C order (docs/neuron.md):

        u = decay(v) + A + b - theta * s_prev          reset "subtract" (after the next decay)
        u = decay(v * (s_prev == 0)) + A + b           reset "zero"
        v = clamp(u, -2^(V-1), 2^(V-1) - 1),  s = v > theta
        decay(v) = v | v - (v >> k) | (v * beta_q) >> f

    Members
    -------
    i : In(stream.Signature(StructLayout({"value": signed(acc_bits), "last": 1})))
        A[n] of neurons n = 0, 1, ... of a step in C order (``ConvAccumulator.o``).
    o : Out(stream.Signature(SpikeEvent))
        The step's spikes, ascending neuron addresses, then one ``eos`` event.

    Each neuron takes two cycles (its state and parameters are read from block RAM while the
    previous neuron is written) plus one per spike it emits.
    """

    def __init__(self, layer: LayerParams):
        if not isinstance(layer, LayerParams) or layer.conv is None:
            raise TypeError(f"layer must be a convolutional LayerParams, not {layer!r}")
        other = [f for f in layer.features() if not f.startswith("convolution")]
        if other:
            raise ValueError(f"a convolution core runs single-spike LIF neurons, not "
                             f"{', '.join(other)}")
        self._layer = layer
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"value": signed(layer.acc_bits),
                                                        "last": unsigned(1)}))),
            "o": Out(stream.Signature(SpikeEvent))})

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        layer = self._layer
        vb = layer.v_bits
        theta_bits = max(int(layer.threshold.max(initial=0)).bit_length(), 1)
        k_max = 0 if layer.decay_shift is None else int(layer.decay_shift.max(initial=0))
        mul_bits = 1 if layer.decay_mul is None else \
            max(int(layer.decay_mul.max(initial=0)).bit_length(), 1)
        row = data.StructLayout({
            "v": signed(vb), "s": unsigned(1),
            "bias": signed(max(int(abs(layer.bias).max(initial=0)).bit_length() + 1, 2)),
            "theta": unsigned(theta_bits), "shift": unsigned(max(k_max.bit_length(), 1)),
            "mul": unsigned(mul_bits)})
        init = [{"v": 0, "s": 0, "bias": int(layer.bias[n]), "theta": int(layer.threshold[n]),
                 "shift": 0 if layer.decay_shift is None else int(layer.decay_shift[n]),
                 "mul": 0 if layer.decay_mul is None else int(layer.decay_mul[n])}
                for n in range(layer.n_out)]
        m.submodules.state = mem = Memory(shape=row, depth=layer.n_out, init=init)
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))
        n = Signal(range(layer.n_out))
        m.d.comb += rd.addr.eq(n)
        cur = rd.data

        wide = signed(vb + max(layer.decay_frac, 0) + mul_bits + 2)
        v_in = Signal(wide)
        m.d.comb += v_in.eq(cur.v if layer.reset == "subtract" else
                            cur.v * (cur.s == 0))
        decayed = Signal(wide)
        if layer.decay_mode == "none":
            m.d.comb += decayed.eq(v_in)
        elif layer.decay_mode == "shift":
            m.d.comb += decayed.eq(v_in - (v_in >> cur.shift))
        else:
            m.d.comb += decayed.eq((v_in * cur.mul) >> layer.decay_frac)
        u = Signal(signed(wide.width + layer.acc_bits + theta_bits + 4))
        drive = decayed + self.i.payload.value + cur.bias
        if layer.reset == "subtract":
            drive = drive - cur.theta * cur.s
        m.d.comb += u.eq(drive)
        lo, hi = -(1 << (vb - 1)), (1 << (vb - 1)) - 1
        v_new = Signal(signed(vb))
        with m.If(u > hi):
            m.d.comb += v_new.eq(hi)
        with m.Elif(u < lo):
            m.d.comb += v_new.eq(lo)
        with m.Else():
            m.d.comb += v_new.eq(u)
        fired = Signal()
        m.d.comb += fired.eq(v_new > cur.theta)
        spike = Signal()
        last = Signal()

        with m.FSM():
            with m.State("Read"):  # rd.data follows n one cycle later
                m.next = "Update"
            with m.State("Update"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.comb += [wr.addr.eq(n), wr.en.eq(1), wr.data.eq(cur),
                                 wr.data.v.eq(v_new), wr.data.s.eq(fired)]
                    m.d.sync += [spike.eq(fired), last.eq(self.i.payload.last)]
                    m.next = "Emit"
            with m.State("Emit"):
                m.d.comb += [self.o.valid.eq(spike), self.o.payload.addr.eq(n)]
                with m.If(~spike | self.o.ready):
                    with m.If(last):
                        m.d.sync += n.eq(0)
                        m.next = "Eos"
                    with m.Else():
                        m.d.sync += n.eq(n + 1)
                        m.next = "Read"
            with m.State("Eos"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eos.eq(1)]
                with m.If(self.o.ready):
                    m.next = "Read"
        return m


class ConvCore(wiring.Component):
    """A convolutional LIF layer: ``ConvAccumulator`` then ``ConvNeurons``.

    Members
    -------
    i : In(stream.Signature(SpikeEvent))
        The source's events of each step, then ``eos``.
    o : Out(stream.Signature(SpikeEvent))
        The layer's spikes of the step in C order, then ``eos``.
    """

    def __init__(self, layer: LayerParams, *, lanes: int = 1):
        self._acc = ConvAccumulator(layer, lanes=lanes)
        self._neurons = ConvNeurons(layer)
        super().__init__({"i": In(stream.Signature(SpikeEvent)),
                          "o": Out(stream.Signature(SpikeEvent))})

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        m.submodules.acc = self._acc
        m.submodules.neurons = self._neurons
        wiring.connect(m, wiring.flipped(self.i), self._acc.i)
        wiring.connect(m, self._acc.o, self._neurons.i)
        wiring.connect(m, self._neurons.o, wiring.flipped(self.o))
        return m

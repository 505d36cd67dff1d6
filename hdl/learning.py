"""The learning unit of a core: traces, per-lane LFSRs and the weight update datapath.

It runs a layer's `LearningConfig` (docs/learning.md, sim/learning.py) on one core, updating
the weights in place in the core's weight memory. `LifCore` builds it when its layer learns.
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..compiler.image import CoreConfig, LayerParams, LearningConfig
from ..sim.learning import LFSR_TAPS

__all__ = ["LaneLfsrs", "LearningUnit", "trace_word_layout", "MOD_BITS"]

MOD_BITS = 8  # signed modulator m_i of the three-factor rule


def trace_word_layout(trace_bits: int, lanes: int) -> data.ArrayLayout:
    """A word of the post-trace memory: per lane the trace y and the spike s of the last pass."""
    return data.ArrayLayout(data.StructLayout({"y": unsigned(trace_bits), "s": unsigned(1)}),
                            lanes)


class LaneLfsrs(wiring.Component):
    """One 16-bit Galois LFSR per lane (taps 0xB400), all stepping together on ``step``.

    ``state[p]`` is lane p's current state; a ``step`` replaces it by its successor at the next
    edge. Lane p starts from ``init[p]`` after reset. Build it outside the reset of a core's
    ``clear``: a sample does not restart the sequence.
    """

    def __init__(self, init):
        self._init = [operator.index(value) for value in init]
        if not self._init or any(not 1 <= value <= 0xFFFF for value in self._init):
            raise ValueError(f"LFSR states must be 1..65535 (at least one lane), not "
                             f"{self._init!r}")
        super().__init__({"step": In(1),
                          "state": Out(data.ArrayLayout(unsigned(16), len(self._init)))})

    def elaborate(self, platform):
        m = Module()
        for lane, init in enumerate(self._init):
            state = Signal(16, init=init, name=f"lfsr{lane}")
            m.d.comb += self.state[lane].eq(state)
            with m.If(self.step):
                m.d.sync += state.eq((state >> 1) ^ Mux(state[0], LFSR_TAPS, 0))
        return m


def _clip(value, bits: int):
    """Saturate a signed value to ``bits``-bit two's complement."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(value > hi, hi, Mux(value < lo, lo, value[:bits]))


class LearningUnit(wiring.Component):
    """Trace memories and weight updates of one learning core (``learning.rule``)::

        R(a, n)  = a >> n,  or with stochastic rounding (a + (r_p & (2^n - 1))) >> n
        x_j     <- min(x_j - (x_j >> ts) + inc * s_in_j, 2^b - 1)      every row, every step
        y_i     <- min(y_i - (y_i >> ts) + inc * s_i,    2^b - 1)      in the neuron pass
        STDP   integration, each word read:  w_ij <- clip(w_ij - R(y_i, ltd))    all lanes
               after the pass, per group g with a spike (ascending), rows j ascending:
                                             w_ij <- clip(w_ij + R(x_j, ltp))    lanes that fired
        3-factor after the pass, rows j, groups g:  w_ij <- clip(w_ij + R(m_i * x_j, mod))

    r_p is the state of lane p's LFSR (``lfsr_state``); ``lfsr_step`` is high in every weight
    read-modify-write cycle and only then. The unit reads the weight memory through the core's
    read port (``w_raddr`` while ``sweeping``, else the core's own addresses) and writes it
    through ``w_we``/``w_waddr``/``w_wdata``; a write always lands one cycle after its read.

    Memories: pre-traces x (``n_in`` words of b bits) and the step's input spikes (``n_in``
    bits); post-traces (``groups`` words of :func:`trace_word_layout`, the lane's spike s of the
    last pass beside its y, written per lane); for the three-factor rule the modulators
    (``groups`` words of ``lanes`` signed bytes, written per neuron by the host).

    Protocol with the core: ``wipe`` with ``wipe_addr`` zeroes traces during the core's clear
    sweep (addresses up to ``max(n_in, groups)``); ``take``/``take_row`` marks a feed-forward
    event; ``int_issue``/``int_group``/``int_addr`` mirror the integration loop's read;
    ``pass_*``/``commit_*`` mirror the neuron pass; ``start`` begins the update phase, which
    holds ``busy`` high until it is over.
    """

    def __init__(self, config: CoreConfig, layer: LayerParams, rule: LearningConfig, *,
                 addr_width: int):
        if layer.recurrent:
            raise ValueError(f"layer {layer.name!r} is recurrent: it cannot learn")
        if rule.layer != config.layer:
            raise ValueError(f"the learning rule is for layer {rule.layer}, the core runs "
                             f"layer {config.layer}")
        self._config, self._layer, self._rule = config, layer, rule
        lanes, groups = config.lanes, config.groups
        depth = layer.fan_in * groups
        tb = rule.trace_bits
        super().__init__({
            "w_rdata": In(unsigned(lanes * layer.weight_bits)),
            "w_raddr": Out(range(depth)),
            "sweeping": Out(1),
            "w_waddr": Out(range(depth)),
            "w_wdata": Out(unsigned(lanes * layer.weight_bits)),
            "w_we": Out(1),
            "lfsr_state": In(data.ArrayLayout(unsigned(16), lanes)),
            "lfsr_step": Out(1),
            "wipe": In(1),
            "wipe_addr": In(range(max(layer.n_in, groups, config.neurons))),
            "take": In(1),
            "take_row": In(range(layer.n_in)),
            "int_issue": In(1),
            "int_group": In(range(groups)),
            "int_addr": In(range(depth)),
            "pass_active": In(1),
            "pass_read": In(1),
            "pass_group": In(range(groups)),
            "commit": In(1),
            "commit_group": In(range(groups)),
            "commit_lane": In(range(lanes)),
            "spike": In(1),
            "start": In(1),
            "busy": Out(1),
            "sweep_rmw": Out(1),
            "host": In(1),
            "host_addr": In(unsigned(addr_width)),
            "mod_we": In(1),
            "mod_data": In(unsigned(MOD_BITS)),
            "x_rdata": Out(unsigned(tb)),
            "y_rdata": Out(unsigned(lanes * (tb + 1))),
        })

    @property
    def rule(self) -> LearningConfig:
        return self._rule

    def elaborate(self, platform):
        m = Module()
        cfg, layer, rule = self._config, self._layer, self._rule
        lanes, groups, n_in = cfg.lanes, cfg.groups, layer.n_in
        w_bits, tb = layer.weight_bits, rule.trace_bits
        stdp = rule.rule == "stdp"
        t_max = (1 << tb) - 1
        lfsr = self.lfsr_state if rule.stochastic else None

        def rnd(value, shift, lane):
            """R(value, shift) with lane `lane`'s LFSR bits."""
            if lfsr is not None and shift:
                value = value + lfsr[lane][:shift]
            return value >> shift

        def trace_next(old, spike):
            grown = old - (old >> rule.trace_shift) + Mux(spike, rule.trace_inc, 0)
            return Mux(grown > t_max, t_max, grown)

        # -- memories --------------------------------------------------------------------
        # per row: [0] the pre-trace x_j, [1] bit 0: an event of row j came in this step
        m.submodules.xtrace = xmem = Memory(shape=data.ArrayLayout(unsigned(tb), 2), depth=n_in,
                                            init=[])
        x_wr, x_rd = xmem.write_port(granularity=1), xmem.read_port()
        y_layout = trace_word_layout(tb, lanes)
        m.submodules.ytrace = ymem = Memory(shape=y_layout, depth=groups, init=[])
        y_wr = ymem.write_port(granularity=1)  # one lane
        y_rd = ymem.read_port()
        m.d.comb += [self.x_rdata.eq(x_rd.data[0]), self.y_rdata.eq(y_rd.data.as_value())]
        if not stdp:
            m.submodules.mod = mmem = Memory(shape=unsigned(lanes * MOD_BITS), depth=groups,
                                             init=[])
            m_wr = mmem.write_port(granularity=MOD_BITS)
            m_rd = mmem.read_port()
            if lanes & (lanes - 1) == 0:
                shift = lanes.bit_length() - 1
                h_group, h_lane = self.host_addr[shift:], self.host_addr[:shift]
            else:
                h_group, h_lane = self.host_addr // lanes, self.host_addr % lanes
            m.d.comb += [
                m_wr.addr.eq(h_group),
                m_wr.data.eq(self.mod_data.replicate(lanes)),
                m_wr.en.eq(Cat(self.mod_we & (h_lane == p) for p in range(lanes))),
            ]

        # -- update phase: sequencer (stage 0) ---------------------------------------------
        j = Signal(range(n_in))  # row
        g = Signal(range(groups))  # group (three-factor: inner loop)
        ra = Signal(range(layer.fan_in * groups))  # weight address of (j, g)
        first = Signal()  # this sweep updates the pre-traces (the step's first sweep)
        rmw = Signal()  # this sweep writes weights (STDP: not the trace-only sweep)
        issue = Signal()  # stage 0 reads word (j, g) this cycle
        scan = Signal()  # STDP: looking for the next group with a spike
        sg = Signal(range(groups + 1))  # STDP: next group to look at
        sv = Signal()  # STDP: the read of group sg1 is valid this cycle
        sg1 = Signal(range(groups))
        mask = Signal(lanes)  # STDP: the lanes of the swept group that fired
        fired = Signal(lanes)
        m.d.comb += fired.eq(Cat(y_rd.data[p].s for p in range(lanes)))
        last_issue = (j == n_in - 1) if stdp else ((j == n_in - 1) & (g == groups - 1))

        with m.FSM():
            with m.State("Idle"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), first.eq(1), j.eq(0), g.eq(0), ra.eq(0),
                                 sg.eq(0), sv.eq(0), rmw.eq(1)]
                    m.next = "Scan" if stdp else "Sweep"
            if stdp:
                with m.State("Scan"):
                    m.d.comb += scan.eq(1)
                    m.d.sync += [sv.eq(sg < groups), sg1.eq(sg)]
                    with m.If(sg < groups):
                        m.d.sync += sg.eq(sg + 1)
                    with m.If(sv & fired.any()):
                        m.d.sync += [mask.eq(fired), ra.eq(sg1), j.eq(0),
                                     sg.eq(sg1 + 1), sv.eq(0)]
                        m.next = "Sweep"
                    with m.Elif((sv & (sg1 == groups - 1)) | (~sv & (sg == groups))):
                        with m.If(first):  # nobody fired: the pre-traces still decay
                            m.d.sync += [rmw.eq(0), j.eq(0)]
                            m.next = "Sweep"
                        with m.Else():
                            m.d.sync += self.busy.eq(0)
                            m.next = "Idle"
            with m.State("Sweep"):
                m.d.comb += issue.eq(1)
                if stdp:
                    m.d.sync += [j.eq(j + 1), ra.eq(ra + groups)]
                else:
                    m.d.sync += ra.eq(ra + 1)
                    with m.If(g == groups - 1):
                        m.d.sync += [g.eq(0), j.eq(j + 1)]
                    with m.Else():
                        m.d.sync += g.eq(g + 1)
                with m.If(last_issue):
                    m.next = "Finish"
            with m.State("Finish"):  # stage 1 of the last word
                m.d.sync += [first.eq(0), sv.eq(0)]
                if stdp:
                    with m.If(rmw):
                        m.next = "Scan"
                    with m.Else():
                        m.d.sync += self.busy.eq(0)
                        m.next = "Idle"
                else:
                    m.d.sync += self.busy.eq(0)
                    m.next = "Idle"
        m.d.comb += [self.sweeping.eq(issue), self.w_raddr.eq(ra)]

        # -- stage 1: registered copies of stage 0 ---------------------------------------
        s1 = Signal()  # a sweep word is read
        x_write1 = Signal()  # ... and its row's pre-trace is written
        j1 = Signal(range(n_in))
        ra1 = Signal.like(ra)
        i1 = Signal()  # an integration word is read (STDP: depression)
        ia1 = Signal.like(ra)
        row_start = Const(1) if stdp else (g == 0)
        m.d.sync += [
            s1.eq(issue), x_write1.eq(issue & first & row_start), j1.eq(j), ra1.eq(ra),
            i1.eq(self.int_issue if stdp else 0), ia1.eq(self.int_addr),
        ]
        sweep_rmw = s1 & rmw
        m.d.comb += self.sweep_rmw.eq(sweep_rmw)

        x_old, x_spike = x_rd.data[0], x_rd.data[1][0]
        x_new = Signal(tb)
        m.d.comb += x_new.eq(trace_next(x_old, x_spike))
        x_now = Mux(first, x_new, x_old) if stdp else x_new  # x_j[t] in this sweep

        # -- the weight datapath ------------------------------------------------------------
        word = Signal(lanes * w_bits)
        for p in range(lanes):
            w = self.w_rdata[p * w_bits:(p + 1) * w_bits].as_signed()
            if stdp:
                # One adder for both: R(a, n) = (a * 2^(N-n) + (r & (2^n-1)) * 2^(N-n)) >> N,
                # and w - R = ~(~w + R), so depression and potentiation only need the upper
                # clip of ~w + R resp. w + R (a lane that did not fire adds R(0) = 0).
                top = max(rule.ltd_shift, rule.ltp_shift)
                operand = Mux(i1, y_rd.data[p].y << (top - rule.ltd_shift),
                              Mux(mask[p], x_now, 0) << (top - rule.ltp_shift))
                if lfsr is not None:
                    operand = operand + Mux(
                        i1, lfsr[p][:rule.ltd_shift] << (top - rule.ltd_shift),
                        lfsr[p][:rule.ltp_shift] << (top - rule.ltp_shift))
                total = Signal(signed(max(w_bits, tb + 1) + 2), name=f"total{p}")
                m.d.comb += total.eq(Mux(i1, ~w, w) + (operand >> top))
                w_max = (1 << (w_bits - 1)) - 1
                upper = Mux(total > w_max, w_max, total[:w_bits])
                new = Mux(i1, ~upper, upper)
            else:
                mod = m_rd.data[p * MOD_BITS:(p + 1) * MOD_BITS].as_signed()
                product = Signal(signed(MOD_BITS + tb + 1), name=f"product{p}")
                m.d.comb += product.eq(mod * x_now)
                new = _clip(w + rnd(product, rule.mod_shift, p), w_bits)
            m.d.comb += word[p * w_bits:(p + 1) * w_bits].eq(new)
        m.d.comb += [
            self.w_wdata.eq(word),
            self.w_waddr.eq(Mux(i1, ia1, ra1)),
            self.w_we.eq(i1 | sweep_rmw),
            self.lfsr_step.eq(i1 | sweep_rmw),
        ]

        # -- memory addressing -------------------------------------------------------------
        host = self.host
        x_read = ~issue | row_start  # three-factor: hold row j's trace over its groups
        x_both = (self.wipe & (self.wipe_addr < n_in)) | x_write1  # trace and spike bit
        m.d.comb += [
            x_rd.addr.eq(Mux(host, self.host_addr, j)), x_rd.en.eq(x_read),
            x_wr.addr.eq(Mux(self.take, self.take_row, Mux(self.wipe, self.wipe_addr, j1))),
            x_wr.data[0].eq(Mux(self.wipe, 0, x_new)),
            x_wr.data[1].eq(self.take),
            x_wr.en.eq(Cat(x_both, self.take | x_both)),
        ]
        # post-traces: read by the integration loop (depression), the pass (one read per
        # group, held while its lanes are updated), the STDP scan and the host
        y_addr = Mux(host, self.host_addr,
                     Mux(self.pass_active, self.pass_group, Mux(scan, sg, self.int_group)))
        lane_new = Signal(y_layout.elem_shape)
        m.d.comb += [
            lane_new.y.eq(trace_next(y_rd.data[self.commit_lane].y, self.spike)),
            lane_new.s.eq(self.spike),
            y_rd.addr.eq(y_addr),
            y_rd.en.eq(~self.pass_active | self.pass_read),
            y_wr.addr.eq(Mux(self.wipe, self.wipe_addr, self.commit_group)),
            y_wr.data.eq(Mux(self.wipe, 0, lane_new.as_value().replicate(lanes))),
            y_wr.en.eq(Mux(self.wipe, Mux(self.wipe_addr < groups, (1 << lanes) - 1, 0),
                           Cat(self.commit & (self.commit_lane == p) for p in range(lanes)))),
        ]
        if not stdp:
            m.d.comb += m_rd.addr.eq(g)
        return m

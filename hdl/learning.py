"""The learning unit of a core: traces, one LFSR and a serial weight-update datapath.

It runs a layer's `LearningConfig` (docs/learning.md, sim/learning.py) on one core, updating
the weights in place in the core's weight memory, one synapse per cycle, after the core's
neuron pass. `LifCore` builds it when its layer learns.
"""

import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..image import CoreConfig, LayerParams, LearningConfig
from ..lfsr import LFSR_TAPS
from .compare import below

__all__ = ["Lfsr", "LearningUnit", "MOD_BITS", "trace_memory_layout"]

MOD_BITS = 8  # signed modulator m_i of the three-factor rule


class Lfsr(wiring.Component):
    """A 16-bit Galois LFSR (taps 0xB400): ``state`` is replaced by its successor at the edge
    after a cycle with ``step`` high. Starts from ``init`` after reset; build it outside the
    reset of a core's ``clear``, so that a sample does not restart the sequence."""

    def __init__(self, init: int):
        self._init = operator.index(init)
        if not 1 <= self._init <= 0xFFFF:
            raise ValueError(f"an LFSR state must be 1..65535, not {init!r}")
        super().__init__({"step": In(1), "state": Out(16, init=self._init)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.step):
            m.d.sync += self.state.eq((self.state >> 1) ^ Mux(self.state[0], LFSR_TAPS, 0))
        return m


def trace_memory_layout(rule: LearningConfig) -> data.StructLayout:
    """A word of the learning memory: a trace (x_j, y_i) or a modulator m_i in ``t``, and in
    ``f`` the flag "input j spiked in this step" (x words only)."""
    return data.StructLayout({"t": unsigned(max(rule.trace_bits, MOD_BITS)), "f": unsigned(1)})


class Op(enum.Enum, shape=3):
    """What the learning memory read of the previous cycle was for (stage 1)."""

    NONE = 0
    TRACE = 1  # x_j (phase a) or y_i / m_i (phase b): update the trace, decide on a sweep
    UPDATE = 2  # one weight update (the LFSR steps)
    WIPE = 3  # clear: write zero
    FLAG = 4  # an input event of row j came in: set its flag


class LearningUnit(wiring.Component):
    """Traces, modulators and the weight updates of one learning core (``rule.rule``)::

        R(a, n) = a >> n,  or with stochastic rounding (a + (r & (2^n - 1))) >> n
        a. rows j ascending:  x_j <- sat(x_j - (x_j >> ts) + inc * s_in_j)
           STDP, if s_in_j: neurons i ascending: w_ij <- clip(w_ij - R(y_i, ltd))
        b. STDP: neurons i ascending: y_i <- sat(y_i - (y_i >> ts) + inc * s_i)
                 if s_i: rows j ascending:  w_ij <- clip(w_ij + R(x_j, ltp))
           3-factor: neurons i ascending with m_i != 0: rows j ascending:
                 w_ij <- clip(w_ij + R(m_i * x_j, mod))

    r is the core's LFSR state (``lfsr_state``; ``updating`` steps it: high in every weight
    update cycle and only then). The learning memory (block RAM, one read and one write port)
    holds x_j and the flag s_in_j at address j and, at ``y_base + i``, STDP's y_i (``y_base``
    the power of two at or above ``max(n_in, neurons)``) or the three-factor rule's m_i
    (``y_base`` = n_in; the low ``MOD_BITS`` of the trace field: no block RAM of its own);
    every write to it but a
    modulator's lands one cycle after a read of the same address. The host writes m_i between
    steps, while the unit is idle (never in a cycle the unit writes).

    Pipeline: stage 0 issues the reads of the learning memory, the weight memory
    (``w_read``/``w_raddr``: word ``row * groups + group of neuron i``) and the core's state
    memory (``n_read``/``n_addr``: STDP, phase b, for s_i, which comes back in ``s_in`` the next
    cycle); stage 1 writes the trace back to the learning memory and registers an update's
    old weight, its rounded increment R (the LFSR's state of that cycle) and its address;
    stage 2 adds and clips and writes the weight lane through ``w_we`` (one bit per lane) /
    ``w_waddr`` / ``w_wdata`` (the new weight; the core puts it on every lane). A weight word
    may be read while a lane of it is written: the other lanes are what the read needs. Phase a
    is pipelined; phase b takes two cycles per neuron (read, decide); a sweep of updates starts
    one cycle after its row or neuron was decided.

    Protocol with the core: after reset (the core's ``clear``) the unit zeroes the traces and
    flags (``busy`` high; not the modulators); ``take``/``take_row`` sets the flag of an
    integrated input event's row (two cycles later, through ``j``); ``start`` begins the
    learning phase, ``busy`` stays high until it is over. ``mod_we``/``mod_addr``/``mod_data``
    write a modulator (the host, between steps; ignored by an STDP core).
    """

    def __init__(self, config: CoreConfig, layer: LayerParams, rule: LearningConfig):
        if layer.recurrent:
            raise ValueError(f"layer {layer.name!r} is recurrent: it cannot learn")
        if rule.layer != config.layer:
            raise ValueError(f"the learning rule is for layer {rule.layer}, the core runs "
                             f"layer {config.layer}")
        self._config, self._layer, self._rule = config, layer, rule
        self._y_bits = max(1, (max(layer.n_in, config.neurons) - 1).bit_length())
        depth = layer.fan_in * config.groups
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "take": In(1),
            "take_row": In(range(layer.n_in)),
            "w_read": Out(1),
            "w_raddr": Out(range(depth)),
            "w_rdata": In(unsigned(config.lanes * layer.weight_bits)),
            "w_we": Out(config.lanes),
            "w_waddr": Out(range(depth)),
            "w_wdata": Out(signed(layer.weight_bits)),
            "n_read": Out(1),
            "n_addr": Out(range(config.neurons)),
            "s_in": In(1),
            "mod_we": In(1),
            "mod_addr": In(range(config.neurons)),
            "mod_data": In(signed(MOD_BITS)),
            "lfsr_state": In(16),
            "updating": Out(1),
        })

    @property
    def rule(self) -> LearningConfig:
        return self._rule

    @property
    def y_base(self) -> int:
        """Address of y_0 (STDP: a power of two) or m_0 (three-factor: n_in) in the learning
        memory."""
        return 1 << self._y_bits if self._rule.rule == "stdp" else self._layer.n_in

    def elaborate(self, platform):
        m = Module()
        cfg, layer, rule = self._config, self._layer, self._rule
        lanes, groups, n_in, neurons = cfg.lanes, cfg.groups, layer.n_in, cfg.neurons
        w_bits, tb = layer.weight_bits, rule.trace_bits
        stdp = rule.rule == "stdp"
        kb = self._y_bits

        word = trace_memory_layout(rule)
        depth = self.y_base + neurons  # x_j, y_i (STDP) or m_i (three-factor)
        wiped = depth if stdp else n_in  # the modulators stay over clear
        # Block RAM: as distributed RAM (ECP5) a few hundred words cost hundreds of LUTs.
        m.submodules.mem = mem = Memory(shape=unsigned(word.size), depth=depth, init=[],
                                        attrs={"ram_style": "block"})
        wr = mem.write_port(granularity=1)
        rd = mem.read_port()
        rd_data = data.View(word, rd.data)
        wr_data = data.View(word, wr.data)

        def y_addr(neuron):  # y_base + neuron, by wiring (STDP) or an adder (three-factor)
            if not stdp:
                return self.y_base + neuron
            return Cat(neuron[:kb], Const(0, max(0, kb - len(neuron))), Const(1, 1))

        fsm_busy = Signal(init=1)  # the FSM's phases (``busy`` adds the write stage)

        # -- counters: j over rows, i over neurons (with its group ig and lane ip) -----------
        j = Signal(range(max(depth, n_in + 1)))  # also the wipe's and a flag's address
        i = Signal(range(neurons + 1))
        ig = Signal(range(groups))
        ip = Signal(range(lanes))
        row = Signal(range(n_in))  # STDP phase a: the row being depressed
        mreg = Signal(signed(MOD_BITS))

        def next_neuron():
            m.d.sync += i.eq(i + 1)
            with m.If(ip == lanes - 1):
                m.d.sync += [ip.eq(0), ig.eq(ig + 1)]
            with m.Else():
                m.d.sync += ip.eq(ip + 1)

        def first_neuron():
            m.d.sync += [i.eq(0), ig.eq(0), ip.eq(0)]

        # -- stage 0: issue ------------------------------------------------------------------
        # An update always concerns neuron i (group ig, lane ip) and row `row` (depression)
        # or j (the neuron's row sweep).
        op = Signal(Op)  # what stage 0 issues this cycle
        y_sel = Signal()  # it reads y_i / m_i (else x_j)
        w_row = Signal(range(n_in))
        m.d.comb += [
            rd.addr.eq(Mux(y_sel, y_addr(i), j)),
            self.n_addr.eq(i),
            self.w_read.eq(op == Op.UPDATE),
            self.w_raddr.eq(w_row * groups + ig),
        ]
        if stdp:
            m.d.comb += w_row.eq(Mux(y_sel, row, j))
        else:
            m.d.comb += w_row.eq(j)

        # -- stage 1 registers ---------------------------------------------------------------
        op1 = Signal(Op)
        y1 = Signal()
        addr1 = Signal.like(rd.addr)
        lane1 = Signal(range(lanes))
        waddr1 = Signal.like(self.w_raddr)
        m.d.sync += [op1.eq(op), y1.eq(y_sel), addr1.eq(rd.addr), lane1.eq(ip),
                     waddr1.eq(self.w_raddr)]

        # stage 1 holds a trace whose row (phase a) or neuron (phase b, in NeuronDecide) now
        # gets its sweep of updates
        if stdp:
            flag = Mux(y1, self.s_in, rd_data.f)
            depress_now = (op1 == Op.TRACE) & ~y1 & rd_data.f
            sweep_now = self.s_in
        else:
            # m_i, read at y_base + i in NeuronRead
            mod_now = rd_data.t[:MOD_BITS].as_signed()
            flag = rd_data.f
            depress_now = Const(0)
            sweep_now = mod_now != 0
        took = Signal()  # the core took an input event last cycle: its row is in j
        m.d.sync += took.eq(self.take)

        with m.FSM(init="Wipe"):
            with m.State("Wipe"):
                m.d.comb += op.eq(Op.WIPE)
                m.d.sync += j.eq(j + 1)
                with m.If(j == wiped - 1):
                    m.d.sync += [fsm_busy.eq(0), j.eq(0)]
                    m.next = "Idle"
            with m.State("Idle"):
                with m.If(self.take):
                    m.d.sync += j.eq(self.take_row)
                with m.If(took):
                    m.d.comb += op.eq(Op.FLAG)
                with m.If(self.start):
                    m.d.sync += [fsm_busy.eq(1), j.eq(0)]
                    first_neuron()
                    m.next = "Rows"
            with m.State("Rows"):  # phase a: x_j, and (STDP) the depression of spiking rows
                with m.If(depress_now):  # row addr1 spiked (its trace is written back now)
                    if stdp:
                        m.d.sync += row.eq(addr1)
                        m.next = "Depress"
                with m.Elif(j < n_in):
                    m.d.comb += op.eq(Op.TRACE)
                    m.d.sync += j.eq(j + 1)
                with m.Else():
                    m.d.sync += j.eq(0)
                    m.next = "NeuronRead"
            if stdp:
                with m.State("Depress"):  # row `row`, neurons i ascending
                    m.d.comb += [op.eq(Op.UPDATE), y_sel.eq(1)]
                    next_neuron()
                    with m.If(i == neurons - 1):
                        first_neuron()
                        m.next = "Rows"
            with m.State("NeuronRead"):  # phase b: y_i (and s_i) or m_i of neuron i
                with m.If(below(i, neurons)):
                    m.d.comb += y_sel.eq(1)
                    if stdp:
                        m.d.comb += [op.eq(Op.TRACE), self.n_read.eq(1)]
                    m.next = "NeuronDecide"
                with m.Else():
                    m.d.sync += fsm_busy.eq(0)
                    m.next = "Idle"
            with m.State("NeuronDecide"):  # stage 1: y_i is written back; sweep its rows?
                with m.If(sweep_now):
                    if not stdp:
                        m.d.sync += mreg.eq(mod_now)
                    m.next = "Update"
                with m.Else():
                    next_neuron()
                    m.next = "NeuronRead"
            with m.State("Update"):  # neuron i, rows j ascending
                m.d.comb += op.eq(Op.UPDATE)
                m.d.sync += j.eq(j + 1)
                with m.If(j == n_in - 1):
                    m.d.sync += j.eq(0)
                    next_neuron()
                    m.next = "NeuronRead"

        # -- stage 1: the datapath -------------------------------------------------------------
        t_old = rd_data.t[:tb]
        t_new = Signal(tb + 1)  # below 2^(tb+1): bit tb is the saturation
        m.d.comb += t_new.eq(t_old - (t_old >> rule.trace_shift) + Mux(flag, rule.trace_inc, 0))
        t_sat = t_new[:tb] | t_new[tb].replicate(tb)
        r = self.lfsr_state

        def split(value, shift):
            """R(value, shift) as floor(value / 2^shift) and the rounding carry: with stochastic
            rounding (value + (r & (2^n - 1))) >> n = (value >> n) + (low + r_low >= 2^n)."""
            if not (rule.stochastic and shift):
                return value >> shift, Const(0)
            return value >> shift, value[:shift] > ~r[:shift]

        width = max(w_bits, tb + 1) + 2
        w_old = Signal(signed(w_bits))
        m.d.comb += w_old.eq(self.w_rdata.word_select(lane1, w_bits))
        operand = Signal(signed(width))
        carry = Signal()
        if stdp:
            # w - R = w + ~floor + ~carry: one adder for depression and potentiation
            q_d, c_d = split(t_old, rule.ltd_shift)
            q_p, c_p = split(t_old, rule.ltp_shift)
            m.d.comb += [operand.eq(Mux(y1, ~Cat(q_d, Const(0, 1)).as_signed(), q_p)),
                         carry.eq(Mux(y1, ~c_d, c_p))]
        else:
            product = Signal(signed(MOD_BITS + tb + 1))
            m.d.comb += product.eq(mreg * t_old)
            width = max(w_bits, len(product) - rule.mod_shift) + 2
            operand = Signal(signed(width))
            q, c = split(product, rule.mod_shift)
            m.d.comb += [operand.eq(q), carry.eq(c)]

        # -- stage 2: the weight's sum, its clip and the write, from registers: no path runs
        # from the memories' read data (and a three-factor rule's multiplier) into the write
        # port. The word written two cycles after its read is never read in between (a sweep
        # moves on to another row or lane; other lanes of a word are not written).
        upd2 = Signal()
        lane2 = Signal(range(lanes))
        waddr2 = Signal.like(self.w_raddr)
        w_old2 = Signal(signed(w_bits))
        operand2 = Signal(signed(width))
        carry2 = Signal()
        m.d.sync += [upd2.eq(op1 == Op.UPDATE), lane2.eq(lane1), waddr2.eq(waddr1),
                     w_old2.eq(w_old), operand2.eq(operand), carry2.eq(carry)]
        total = Signal(signed(width + 1))
        m.d.comb += total.eq(w_old2 + operand2 + carry2)
        top = total[w_bits - 1:]
        in_range = top.all() | ~top.any()
        w_min, w_max = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
        m.d.comb += [
            self.w_wdata.eq(Mux(in_range, total[:w_bits], Mux(total[-1], w_min, w_max))),
            self.w_waddr.eq(waddr2),
            self.updating.eq(op1 == Op.UPDATE),
            self.w_we.eq(Mux(upd2, 1 << lane2, 0)),
            # the unit is busy until its last weight is written
            self.busy.eq(fsm_busy | upd2),
        ]

        # -- the learning memory's write port: always one cycle after the read ---------------
        t_mask, f_mask = (1 << (word.size - 1)) - 1, 1 << (word.size - 1)
        m.d.comb += wr.addr.eq(addr1)
        with m.If(op1 == Op.FLAG):
            m.d.comb += [wr_data.f.eq(1), wr.en.eq(f_mask)]
        with m.Elif(op1 == Op.WIPE):
            m.d.comb += wr.en.eq(t_mask | f_mask)
        with m.Elif(op1 == Op.TRACE):
            m.d.comb += [wr_data.t.eq(t_sat), wr.en.eq(t_mask | f_mask)]
        if not stdp:
            with m.If(self.mod_we):
                m.d.comb += [wr.addr.eq(y_addr(self.mod_addr)),
                             wr_data.t.eq(self.mod_data.as_unsigned()), wr.en.eq(t_mask)]
        return m

"""The neuron update of a LIF core as a pipeline: one neuron per cycle, four register stages
(more for the models beyond the plain LIF)."""

import operator

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..compiler.mapper import update_input_stage
from ..image import LayerParams

__all__ = ["NeuronUpdate", "count_bits"]


def count_bits(layer: LayerParams) -> int:
    """Width of a neuron's spike count c (0..max_spikes) in the state word."""
    return max(1, layer.max_spikes.bit_length())


class NeuronUpdate(wiring.Component):
    """The update of one neuron per cycle, as the golden model (docs/neuron.md) writes it::

        current-based:  syn' = clamp_S(decay_a(syn) + acc + bias)     J = syn' (syn_delay 0)
                                                                        | syn (syn_delay 1)
        plain:          J = acc + bias
        subtract reset, reset_delay:  u = decay(v) + J - theta * c
        subtract reset, at the spike: u = decay(v - theta * c) + J
        zero reset:                   u = decay(v * (c == 0)) + J
        LI readout (not spiking):     u = decay(v) + J
        v_new = clamp(u, -2^(V-1), 2^(V-1) - 1)
        count = min(K, #{j >= 1: v_new > j * theta})       (>= with compare ">="; 0 for LI)
        decay(x) = x | x - (x >> k) | (x * beta_q) >> f        (none | shift | mul)

    ``v``, ``c`` (and ``syn``) are the neuron's state from step t-1, ``acc`` its accumulated
    input of step t, ``params`` the per-neuron fields of ``stored`` (a ``data.StructLayout``
    port); the fields of ``constants`` (name -> int: threshold, bias, decay, syn_decay) are the
    same for every neuron and are wired in. With ``tag_width`` > 0, ``i_tag`` travels with the
    neuron unchanged to ``o_tag`` (a user that knows the order of its neurons counts them at
    the output instead: every stage's tag register is a flip-flop of its own).

    Stages, each a register advanced in a cycle with ``en`` high (and ``hold`` low); a value
    is carried only as far as a stage needs it (the threshold to the compare):

    A. the inputs (a register right behind the memories' read data); with ``input_stage``
       False it is left out where B's logic on the inputs is no more than its adds (decay
       none or by a constant shift, no reset before the decay, no ``theta * c`` multiplier:
       ``input_stage`` the property says whether it is built), for inputs that come from
       registers, such as an iCE40 block RAM's read data. The accumulator joins the offset
       at B then too, unless ``late_acc``: it is registered at B and joins the sum at C (for
       an accumulator that comes through a wide lane multiplexer; the register and C's
       second adder cost about 30 logic cells);
    R. (multi-spike with a subtract reset only) the reset amount ``theta * c``;
    B. ``decay(v)`` (for "mul" a registered multiplier: A and B surround it, as a DSP wants),
       and the membrane's offset ``acc + bias - theta * c`` (current-based: ``[syn] - theta *
       c``, and beside it ``decay_a(syn)`` and ``acc + bias``), all from A (or R);
    C. ``u = decay + offset`` (current-based: also ``syn' = decay_a(syn) + acc + bias``,
       clamped from its top bits); with ``sum_stage`` False it is left out where it can be
       (a single-spike plain LIF whose accumulator joins at B): the sum runs into the clamp
       and the compare in one cycle, and the threshold's register at C (a logic cell a bit,
       nothing packs with it) goes. For a part whose carry chains are fast against its clock,
       such as the UP5K at 40 MHz; ``merged_sum`` says whether it is left out;
    D. (current-based with ``syn_delay`` 0 only) ``u = C + syn'``;
       from the last of C or D, combinationally: saturation from u's top bits, the clamp, and
       beside it the spike compare on u's low bits (v_new = v_max spikes iff theta < v_max);
    O. (single-spike) those results, registered;
    M. (multi-spike, instead of O) the count: the neuron stays here one cycle per spike it emits
       (``spike`` high), comparing v_new with the next two levels ``j * theta`` (registers
       grown by theta, no multiplier) so that ``last`` is known in the cycle of its last spike.
       While it stays, ``hold`` is high and the stages before M do not advance.

    Every sum is as wide as its operands need (one bit over the wider), ``decay(x)`` as wide
    as ``x`` (one bit more for "mul"): no value wraps.

    Latency: the result of an input presented with ``i_valid`` in a cycle with ``en`` high is on
    ``o_valid`` / ``v_new`` / ``spike`` / ``saturated`` (/ ``o_tag``) after ``latency`` more
    cycles with ``en`` high and ``hold`` low (4 for the plain LIF, 3 without A, 2 without A and
    C), and stays there while ``en`` is low. A neuron leaves in the cycle with ``en`` and
    ``last`` high; ``count`` and ``saturated`` (the number of clamps, 0..2: current and
    membrane) are valid then. Each cycle with ``en``, ``o_valid`` and ``spike`` high is one
    event. Outputs are undefined while ``o_valid`` is low.
    """

    def __init__(self, layer: LayerParams, *, stored: data.StructLayout,
                 constants: dict[str, int], bias_bits: int, tag_width: int = 0,
                 input_stage: bool = True, late_acc: bool = False, sum_stage: bool = True):
        self._layer = layer
        self._stored = stored
        self._constants = {name: int(value) for name, value in constants.items()}
        self._bias_bits = operator.index(bias_bits)
        self._tag_width = operator.index(tag_width)
        self._input_stage = bool(input_stage)
        self._late_acc = bool(late_acc)
        self._sum_stage = bool(sum_stage)
        if self._tag_width < 0:
            raise ValueError(f"Tag width must be at least 0, not {tag_width!r}")
        fields = set(stored.members) | set(self._constants)
        needed = {"threshold", "bias"} | ({"decay"} if layer.decay_mode != "none" else set())
        if layer.current_based and layer.syn_decay_mode != "none":
            needed.add("syn_decay")
        if fields != needed:
            raise ValueError(f"Parameters must be {sorted(needed)}, not {sorted(fields)}")
        members = {
            "en": In(1),
            "hold": Out(1),
            "i_valid": In(1),
            "acc": In(signed(layer.acc_bits)),
            "v": In(signed(layer.v_bits)),
            "c": In(count_bits(layer)),
            "params": In(stored),
            "o_valid": Out(1),
            "v_new": Out(signed(layer.v_bits)),
            "spike": Out(1),
            "last": Out(1),
            "count": Out(count_bits(layer)),
            "saturated": Out(2 if layer.current_based else 1),
        }
        if self._tag_width:
            members["i_tag"] = In(self._tag_width)
            members["o_tag"] = Out(self._tag_width)
        if layer.current_based:
            members["syn"] = In(signed(layer.syn_bits))
            members["syn_new"] = Out(signed(layer.syn_bits))
        super().__init__(members)

    @property
    def multi_spike(self) -> bool:
        return self._layer.spiking and self._layer.max_spikes > 1

    @property
    def latency(self) -> int:
        """Cycles (with ``en`` high, ``hold`` low) from an input to its first output."""
        layer = self._layer
        reset_stage = self.multi_spike and layer.reset == "subtract"
        return (self.input_stage + 2 - self.merged_sum + reset_stage
                + (layer.current_based and not layer.syn_delay) + 1)

    @property
    def late_acc(self) -> bool:
        """The accumulator is registered at B and joins the sum at C (``late_acc``, where
        there is no stage A and no synaptic current)."""
        return self._late_acc and not self.input_stage and not self._layer.current_based

    @property
    def merged_sum(self) -> bool:
        """Stage C is left out (``sum_stage`` False): a single-spike plain LIF whose
        accumulator joins at B, not behind it."""
        return (not self._sum_stage and not self.multi_spike
                and not self._layer.current_based and not self.late_acc)

    @property
    def input_stage(self) -> bool:
        """Stage A is built: asked for, or B's logic on the inputs is more than its adds
        (``compiler.mapper.update_input_stage``, the rule the mapper's cost model uses)."""
        return self._input_stage or update_input_stage(self._layer, self._stored.members)

    def elaborate(self, platform):
        m = Module()
        layer = self._layer
        v_bits = layer.v_bits
        s_bits = layer.syn_bits if layer.current_based else 0
        multi, spiking = self.multi_spike, layer.spiking
        subtract = spiking and layer.reset == "subtract"
        at_spike = subtract and not layer.reset_delay
        c_bits = count_bits(layer)
        # decay's input: v, or v - theta * c (any c <= K the state may hold) at the spike
        x_bits = v_bits + c_bits + 1 if at_spike else v_bits
        v_max = (1 << (v_bits - 1)) - 1
        front = Signal()  # the stages before M advance
        m.d.comb += front.eq(self.en & ~self.hold)

        def stage(name, value, shape=None):
            """A register of the pipeline; its shape `value`'s (Amaranth's arithmetic widths
            hold every sum exactly), or `shape`."""
            reg = Signal(shape if shape is not None else value.shape(), name=name)
            with m.If(front):
                m.d.sync += reg.eq(value)
            return reg

        # what travels beside the datapath: the valid flag, the tag, the threshold (a
        # constant where the core's neurons share it) and whether it is v_max
        valid, tag, theta_max = self.i_valid, self.i_tag if self._tag_width else None, None

        def param(name, shape):
            if name in a_params:
                return a_params[name]
            return Const(self._constants[name], shape)

        def step(name):
            nonlocal valid, tag, theta, theta_max
            valid = stage(f"{name}_valid", valid)
            if tag is not None:
                tag = stage(f"{name}_tag", tag)
            if theta_max is None:
                theta_max = Const(self._constants["threshold"] == v_max, 1) \
                    if isinstance(theta, Const) else stage(f"{name}_theta_max", theta == v_max)
            elif not isinstance(theta_max, Const):
                theta_max = stage(f"{name}_theta_max", theta_max)
            if not isinstance(theta, Const):
                theta = stage(f"{name}_theta", theta)

        def decay_of(x, mode, key, frac):
            if mode == "none":
                return x
            if mode == "shift":
                k = a_params[key] if key in a_params else self._constants[key]
                return x - (x >> k)
            return (x * param(key, unsigned(frac + 1))) >> frac

        def decay_shape(bits, mode):
            # |decay(x)| <= |x| (shift: x >> k lies between x and 0; mul: beta_q <= 2^f, one
            # bit more for a beta_q the host wrote beyond that)
            return signed(bits + (mode == "mul"))

        def clamp(u, bits):
            """(clamped, in range, negative, low bits) of a wide `u` to `bits` signed bits."""
            top = u[bits - 1:]
            in_range = top.all() | ~top.any()
            negative = u[-1]
            low = u[:bits].as_signed()
            hi = (1 << (bits - 1)) - 1
            return Mux(in_range, low, Mux(negative, -hi - 1, hi)), in_range, negative, low

        # -- A: inputs (or, without it, the ports themselves) --------------------------------
        has_a = self.input_stage

        def inputs(name, value):
            return stage(f"a_{name}", value) if has_a else value

        if has_a:
            valid = stage("a_valid", valid)
            if tag is not None:
                tag = stage("a_tag", tag)
        a_acc = inputs("acc", self.acc)
        a_v = inputs("v", self.v)
        a_c = inputs("c", self.c)
        a_syn = inputs("syn", self.syn) if layer.current_based else None
        a_params = {name: inputs(name, self.params[name]) for name in self._stored.members}
        theta = param("threshold", unsigned(v_bits - 1))
        bias = param("bias", signed(self._bias_bits))

        # -- R: the reset amount theta * c (a multiplier only for multi-spike) ---------------
        if subtract and multi:
            reset_amount = stage("r_amount", theta * a_c, unsigned(v_bits - 1 + c_bits))

            def delay(name, value):
                return value if isinstance(value, Const) else stage(f"r_{name}", value)

            a_acc, a_v, a_c, bias = (delay(name, value) for name, value in (
                ("acc", a_acc), ("v", a_v), ("c", a_c), ("bias", bias)))
            if a_syn is not None:
                a_syn = delay("syn", a_syn)
            a_params = {name: delay(name, value) for name, value in a_params.items()
                        if name != "threshold"}
            step("r")
        elif subtract:
            reset_amount = Mux(a_c, theta, 0)
        else:
            reset_amount = None

        # -- B: decays and offsets; the accumulator joins an offset here ---------------------
        if not spiking or (subtract and layer.reset_delay):
            x = a_v
        elif subtract:  # the reset at the spike, before the decay
            x = a_v - reset_amount
        else:
            x = Mux(a_c == 0, a_v, 0)
        b_decay = stage("b_decay", decay_of(x, layer.decay_mode, "decay", layer.decay_frac),
                        decay_shape(x_bits, layer.decay_mode))
        # the membrane's offset: J (plain: acc + bias; current-based with syn_delay: syn),
        # less theta * c with the delayed reset
        offset = Const(0, 1)
        late_acc = self.late_acc
        if not layer.current_based:
            offset = bias if late_acc else a_acc + bias
        elif layer.syn_delay:
            offset = a_syn
        if subtract and layer.reset_delay:
            offset = offset - reset_amount
        b_offset = stage("b_offset", offset)
        if layer.current_based:
            b_sdecay = stage("b_sdecay", decay_of(a_syn, layer.syn_decay_mode, "syn_decay",
                                                  layer.syn_decay_frac),
                             decay_shape(s_bits, layer.syn_decay_mode))
            b_soffset = stage("b_soffset", a_acc + bias)
        if late_acc:
            b_acc = stage("b_acc", a_acc)
        step("b")

        # -- C: u = decay + offset (+ acc), current-based: syn' = decay_a + acc + bias beside it
        sat_syn = Const(0, 1)
        if self.merged_sum:
            c_sum = b_decay + b_offset  # (into the clamp and the compare in this cycle)
        else:
            c_sum = stage("c_sum", b_decay + b_acc + b_offset if late_acc
                          else b_decay + b_offset)
            if layer.current_based:
                c_su = stage("c_su", b_sdecay + b_soffset)
            step("c")
        u = c_sum
        if layer.current_based:
            syn_new, syn_in_range, _, _ = clamp(c_su, s_bits)
            if not layer.syn_delay:
                # -- D: u = C + J, J = syn' clamped ----------------------------------------
                u = stage("d_u", c_sum + syn_new)
                syn_new = stage("d_syn", syn_new, signed(s_bits))
                syn_in_range = stage("d_syn_in_range", syn_in_range)
                step("d")
            sat_syn = ~syn_in_range

        # -- out: saturation from the top bits, clamp, and the compare beside it ----------
        v_new, in_range, negative, low = clamp(u, v_bits)
        saturated = sat_syn + ~in_range if layer.current_based else ~in_range
        tag_out = [self.o_tag.eq(tag)] if tag is not None else []
        if not multi:
            if not spiking:
                spike = Const(0, 1)
            elif layer.compare == ">":
                # v_max > theta unless theta = v_max (theta <= v_max always)
                spike = Mux(in_range, low > theta, ~negative & ~theta_max)
            else:
                spike = Mux(in_range, low >= theta, ~negative)
            # -- O: the results, registered: the spike reaches the output stream and the
            # state write from a flip-flop, not from the compare's carry chain
            o_spike = stage("o_spike", spike)
            o_v = stage("o_v", v_new, signed(v_bits))
            o_sat = stage("o_sat", saturated)
            if layer.current_based:
                m.d.comb += self.syn_new.eq(stage("o_syn", syn_new, signed(s_bits)))
            valid = stage("o_valid", valid)
            if tag is not None:
                tag_out = [self.o_tag.eq(stage("o_tag", tag))]
            m.d.comb += [
                self.o_valid.eq(valid), *tag_out, self.v_new.eq(o_v),
                self.spike.eq(o_spike), self.last.eq(1), self.count.eq(o_spike),
                self.saturated.eq(o_sat), self.hold.eq(0),
            ]
            return m

        # -- M: the count, one cycle per spike -------------------------------------------
        k = layer.max_spikes
        m_valid = Signal(name="m_valid")
        m_v = Signal(signed(v_bits), name="m_v")
        m_sat = Signal(2, name="m_sat")
        m_theta = Signal(v_bits - 1, name="m_theta")
        # the levels of the current spike and the next one: at most v_max + theta < 2^V
        level = Signal(v_bits, name="m_level")
        level_next = Signal(v_bits, name="m_level_next")
        done = Signal(range(k + 1), name="m_done")  # spikes of this neuron before this cycle

        def reaches(lvl):
            return (m_v > lvl) if layer.compare == ">" else (m_v >= lvl)

        fire = reaches(level)
        more = (done + 1 < k) & reaches(level_next)
        m.d.comb += [
            self.o_valid.eq(m_valid), self.v_new.eq(m_v),
            self.spike.eq(fire), self.last.eq(~more), self.count.eq(done + fire),
            self.saturated.eq(m_sat), self.hold.eq(m_valid & more),
        ]
        with m.If(self.en):
            with m.If(self.hold):
                m.d.sync += [done.eq(done + 1), level.eq(level_next),
                             level_next.eq(level_next + m_theta)]
            with m.Else():
                m.d.sync += [m_valid.eq(valid), m_v.eq(v_new),
                             m_sat.eq(saturated), m_theta.eq(theta), level.eq(theta),
                             level_next.eq(theta << 1), done.eq(0)]
        if tag is not None:
            m_tag = Signal(self._tag_width, name="m_tag")
            with m.If(front):
                m.d.sync += m_tag.eq(tag)
            m.d.comb += self.o_tag.eq(m_tag)
        if layer.current_based:
            m_syn = Signal(signed(s_bits), name="m_syn")
            with m.If(front):
                m.d.sync += m_syn.eq(syn_new)
            m.d.comb += self.syn_new.eq(m_syn)
        return m

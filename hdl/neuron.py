"""The neuron update of a LIF core as a pipeline: one neuron per cycle, four register stages."""

import operator

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..image import LayerParams

__all__ = ["NeuronUpdate"]


class NeuronUpdate(wiring.Component):
    """The update of one neuron per cycle, as the golden model (docs/neuron.md) writes it::

        subtract reset:  u = decay(v) + acc + bias - theta * s
        zero reset:      u = decay(v * (1 - s)) + acc + bias
        v_new = clamp(u, -2^(V-1), 2^(V-1) - 1)       saturated = (u != v_new)
        spike = v_new > theta
        decay(x) = x | x - (x >> k) | (x * beta_q) >> f        (none | shift | mul)

    ``v``, ``s`` are the neuron's state from step t-1, ``acc`` its accumulated input of step t,
    ``params`` the per-neuron fields of ``stored`` (a ``data.StructLayout`` port); the fields of
    ``constants`` (name -> int: threshold, bias, decay) are the same for every neuron and are
    wired in. ``tag`` travels with the neuron unchanged.

    Stages, each a register advanced in a cycle with ``en`` high:

    A. the inputs (a register right behind the memories' read data);
    B. ``decay(v)`` (for "mul" a registered multiplier: A and B surround it, as a DSP wants),
       and the offset ``bias - theta * s``, both from A;
    C. ``decay + offset``;
    D. ``u = C + acc``; from D, combinationally: saturation from u's top bits, the clamp, and
       beside it the spike compare on u's low bits (v_new = v_max spikes iff theta < v_max).

    Latency: the result of an input presented with ``i_valid`` in a cycle with ``en`` high is on
    ``o_valid`` / ``v_new`` / ``spike`` / ``saturated`` / ``o_tag`` after four more cycles with
    ``en`` high (``LATENCY``), and stays there while ``en`` is low. Outputs are undefined while
    ``o_valid`` is low.
    """

    LATENCY = 4

    def __init__(self, layer: LayerParams, *, stored: data.StructLayout,
                 constants: dict[str, int], bias_bits: int, tag_width: int):
        self._layer = layer
        self._stored = stored
        self._constants = {name: int(value) for name, value in constants.items()}
        self._bias_bits = operator.index(bias_bits)
        self._tag_width = operator.index(tag_width)
        if self._tag_width < 1:
            raise ValueError(f"Tag width must be at least 1, not {tag_width!r}")
        fields = set(stored.members) | set(self._constants)
        needed = {"threshold", "bias"} | ({"decay"} if layer.decay_mode != "none" else set())
        if fields != needed:
            raise ValueError(f"Parameters must be {sorted(needed)}, not {sorted(fields)}")
        super().__init__({
            "en": In(1),
            "i_valid": In(1),
            "i_tag": In(self._tag_width),
            "acc": In(signed(layer.acc_bits)),
            "v": In(signed(layer.v_bits)),
            "s": In(1),
            "params": In(stored),
            "o_valid": Out(1),
            "o_tag": Out(self._tag_width),
            "v_new": Out(signed(layer.v_bits)),
            "spike": Out(1),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        layer = self._layer
        v_bits, a_bits = layer.v_bits, layer.acc_bits
        width = max(v_bits, a_bits, self._bias_bits) + 4  # holds every sum of the four terms
        v_max = (1 << (v_bits - 1)) - 1

        def stage(name, value, shape=None):
            reg = Signal(shape if shape is not None else value.shape(), name=name)
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        valid = self.i_valid
        tag = self.i_tag
        stages_valid, stages_tag = [], []
        for name in "abcd":
            valid = stage(f"{name}_valid", valid)
            tag = stage(f"{name}_tag", tag)
            stages_valid.append(valid)
            stages_tag.append(tag)

        # -- A: inputs --------------------------------------------------------------------
        a_acc = stage("a_acc", self.acc)
        a_v = stage("a_v", self.v)
        a_s = stage("a_s", self.s)
        a_params = {name: stage(f"a_{name}", self.params[name])
                    for name in self._stored.members}

        def param(name, shape):
            if name in a_params:
                return a_params[name]
            return Const(self._constants[name], shape)

        theta = param("threshold", unsigned(v_bits - 1))
        bias = param("bias", signed(self._bias_bits))

        # -- B: decay and offset ----------------------------------------------------------
        x = a_v if layer.reset == "subtract" else Mux(a_s, 0, a_v)
        if layer.decay_mode == "none":
            decayed = x
        elif layer.decay_mode == "shift":
            k = a_params["decay"] if "decay" in a_params else self._constants["decay"]
            decayed = x - (x >> k)
        else:
            beta = param("decay", unsigned(layer.decay_frac + 1))
            decayed = (x * beta) >> layer.decay_frac
        b_decay = stage("b_decay", decayed, signed(v_bits + 1))
        offset = bias - Mux(a_s, theta, 0) if layer.reset == "subtract" else bias
        b_offset = stage("b_offset", offset, signed(max(self._bias_bits, v_bits) + 1))
        b_acc = stage("b_acc", a_acc)
        b_theta = stage("b_theta", theta, unsigned(v_bits - 1))

        # -- C: decay + offset ------------------------------------------------------------
        c_sum = stage("c_sum", b_decay + b_offset, signed(width))
        c_acc = stage("c_acc", b_acc)
        c_theta = stage("c_theta", b_theta)
        c_theta_max = stage("c_theta_max", b_theta == v_max)

        # -- D: u -------------------------------------------------------------------------
        d_u = stage("d_u", c_sum + c_acc, signed(width))
        d_theta = stage("d_theta", c_theta)
        d_theta_max = stage("d_theta_max", c_theta_max)

        # -- out: saturation from the top bits, clamp, and the compare beside it ----------
        top = d_u[v_bits - 1:]
        in_range = top.all() | ~top.any()
        negative = d_u[-1]
        low = d_u[:v_bits].as_signed()
        m.d.comb += [
            self.o_valid.eq(stages_valid[-1]),
            self.o_tag.eq(stages_tag[-1]),
            self.v_new.eq(Mux(in_range, low, Mux(negative, -v_max - 1, v_max))),
            self.spike.eq(Mux(in_range, low > d_theta, ~negative & ~d_theta_max)),
            self.saturated.eq(~in_range),
        ]
        return m

"""The LIF core: weight, accumulator, state and parameter memories beside one neuron datapath."""



from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MemSpace", "MemAccessSignature"]


class MemSpace(enum.Enum, shape=unsigned(2)):
    """Which memory of a core an access of the memory-access port addresses."""

    WEIGHTS = 0  # word address = row * groups + group; `lanes` weights packed little-endian
    STATE = 1  # address = local neuron; bits [0, v_bits) = v, bit v_bits = previous spike
    PARAMS = 2  # address = local neuron; the core's `param_layout` (threshold, bias, decay)
    ACC = 3  # address = group; `lanes` accumulators of acc_bits, read-only (debug)


class MemAccessSignature(wiring.Signature):
    """Host access to a core's memories (seen from the host: it drives the request).

    A request (``re`` or ``we`` high, with ``space``, ``addr``, ``wdata`` and, at the array,
    ``core``) is held until a cycle in which ``ready`` is high; that cycle performs it. A read
    answers with ``rvalid`` high for one cycle, exactly two cycles after the accepting cycle at
    the array (one cycle at a core), ``rdata`` valid in that cycle. Data narrower than the bus is
    zero-extended on reads and truncated on writes.
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


def bias_bits(layer) -> int:
    """Signed width that holds every bias of the layer."""
    return max(2, *(int(b).bit_length() + 1 if b >= 0 else (-int(b) - 1).bit_length() + 1
                    for b in layer.bias))


def param_layout(layer) -> data.StructLayout:
    """Per-neuron parameter word of a layer, as the PARAMS space of the memory port shows it."""
    fields = {"threshold": unsigned(layer.v_bits - 1), "bias": signed(bias_bits(layer))}
    if layer.decay_mode == "shift":
        fields["decay"] = unsigned(5)
    elif layer.decay_mode == "mul":
        fields["decay"] = unsigned(layer.decay_frac + 1)
    return data.StructLayout(fields)

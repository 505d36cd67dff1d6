"""One-hot state machines in synthesis."""

__all__ = ["one_hot"]


def one_hot(fsm) -> None:
    """Have yosys re-encode ``fsm`` (what ``with m.FSM() as fsm:`` gave, after the block) one-hot.

    yosys's ``fsm`` pass leaves a state register with an initial value alone, and Amaranth
    gives every FSM's state one, so a large FSM keeps its binary encoding: every state decode
    and the state register's enable then take LUT levels of their own (the host link's executor,
    20 states, was on the UP5K's critical path). With the ``fsm_encoding`` attribute yosys
    extracts it and recodes it one-hot. It warns that the initial value is then ignored: the
    SoC's ``sync`` reset (held until the PLL locks, `boards.top`) puts the machine in its
    initial state, as the simulators' initial values do.
    """
    fsm._data["signal"].attrs["fsm_encoding"] = "one-hot"

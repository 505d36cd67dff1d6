"""cocotb test of `SpramMemory`'s behavioural model on Verilator or Icarus.

Oracle: tests/spram_model.py, the primitive's documented timing.
"""

import json
import os
import random

try:
    import cocotb
except ImportError:
    cocotb = None

if cocotb is not None and cocotb.is_simulation:
    from spikeforge.hdl.cocotb_tb import Clocked

    from .spram_model import SpramMemoryModel, random_ops

    @cocotb.test()
    async def spram_memory_matches_the_primitive_timing(dut):
        spec = json.loads(os.environ["SPRAM_JOB"])
        rng = random.Random(spec["seed"])
        model = SpramMemoryModel(spec["width"], spec["depth"])
        clock = Clocked(dut)
        await clock.start()
        for addr, r_en, w_en, w_data in random_ops(rng, spec["width"], spec["depth"],
                                                   spec["count"]):
            dut.addr.value = addr
            dut.r_en.value = r_en
            dut.w_en.value = w_en
            dut.w_data.value = w_data
            await clock.settle()  # r_data now shows the state after the previous edge
            bits = str(dut.r_data.value)
            assert model.agrees(bits), (clock.cycle, bits, model.r_data)
            await clock.edge()
            model.cycle(addr, r_en, w_en, w_data)

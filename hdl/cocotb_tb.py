"""cocotb testbench that runs a batch of spike trains through the RTL of a core array.

Loaded by the simulator (see hdl/rtl.py), never imported by the package itself. The job folder
named by `$SPIKEFORGE_RTL_JOB` holds `image.sfi` and `job.npz` (spikes uint8 [batch, time, n],
seed, idle and stall probabilities); the testbench writes `result.npz` there.

Per sample: pulse `clear`, wait for `idle`; stream every step's input events (ascending
addresses, then an eos) while collecting output events (a multi-spike neuron's count as that
many events of its address in a row) until one eos per step came back; wait for `idle`; read
the counters and every core's final state (membrane, count, synaptic current) through the
memory port. With an LI readout as the output layer, step t's events go in once step t - 1's
eos came back and its membranes were read from the output layer's STATE words (`values`).
With modulators (`job.npz` holds `modulators` int8 [batch, time, n] of the three-factor layer),
step t's modulators are written to that layer's cores (MOD space) once step t - 1's output eos
came back, and step t's events go in after them. With learning rules, after the last sample
every core's weight memory is read back (`weights{core}`, the bytes of `Image.weight_memory`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import cocotb
import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data
from amaranth.lib.wiring import In
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

CLOCK_NS = 10


def unpack(value: int, shape):
    """Decode an integer holding an Amaranth shape: layouts become dicts/lists, ints stay."""
    if isinstance(shape, data.ArrayLayout):
        width = Shape.cast(shape.elem_shape).width
        return [unpack((value >> (index * width)) & ((1 << width) - 1), shape.elem_shape)
                for index in range(shape.length)]
    if isinstance(shape, data.Layout):
        return {name: unpack((value >> field.offset) & ((1 << field.width) - 1), field.shape)
                for name, field in shape}
    return value


def event_word(addr: int, eos: bool = False) -> int:
    """A SpikeEvent payload: addr in bits [0, 16), eos in bit 16."""
    return addr | (int(eos) << 16)


class StreamSource:
    """Drives an Amaranth stream (`valid`, `ready`, `payload`) from a list of payload words.

    Idles at random between transfers (never withdraws an offered payload, as the stream
    rules require): with probability `idle` it offers nothing in a cycle.
    """

    def __init__(self, dut, name: str, rng: random.Random, idle: float = 0.0):
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._payload = getattr(dut, f"{name}__payload")
        self._rng, self._idle = rng, idle
        self._words: list[int] = []
        self._next = 0
        self._offering = False
        self._valid_now = False
        self.transfers = 0
        self._valid.value = 0

    def send(self, words) -> None:
        self._words.extend(words)

    @property
    def done(self) -> bool:
        return self._next == len(self._words)

    def drive(self) -> None:
        """After a clock edge: keep offering, offer the next word, or idle."""
        if self._offering:
            return
        if not self.done and (not self._idle or self._rng.random() >= self._idle):
            self._payload.value = self._words[self._next]
            self._valid.value = 1
            self._offering = True
        elif self._valid_now:
            self._valid.value = 0
        self._valid_now = self._offering

    def sample(self) -> bool:
        """In the ReadOnly phase: whether the offered word transfers at this edge."""
        fire = self._offering and int(self._ready.value) == 1
        if fire:
            self._next += 1
            self._offering = False
            self.transfers += 1
        return fire


class StreamSink:
    """Takes words from an Amaranth stream, stalling `ready` at random with probability `stall`."""

    def __init__(self, dut, name: str, rng: random.Random, stall: float = 0.0):
        self._valid = getattr(dut, f"{name}__valid")
        self._ready = getattr(dut, f"{name}__ready")
        self._payload = getattr(dut, f"{name}__payload")
        self._rng, self._stall = rng, stall
        self._ready_now = False
        self.words: list[int] = []
        self._ready.value = 0

    def drive(self, enable: bool = True) -> None:
        ready = enable and (not self._stall or self._rng.random() >= self._stall)
        if ready != self._ready_now:
            self._ready.value = int(ready)
            self._ready_now = ready

    def sample(self) -> int | None:
        if self._ready_now and int(self._valid.value) == 1:
            word = int(self._payload.value)
            self.words.append(word)
            return word
        return None


class MemWriter:
    """Writes words through the array's memory port, one per cycle in which `ready` is high."""

    def __init__(self, dut):
        self._dut = dut
        self._queue: list[tuple[int, int, int, int]] = []  # core, space, addr, data
        self._driving = False

    def write(self, core: int, space: int, addr: int, data: int) -> None:
        self._queue.append((core, space, addr, data))

    @property
    def done(self) -> bool:
        return not self._queue

    def drive(self) -> None:
        dut = self._dut
        if self._queue:
            core, space, addr, data = self._queue[0]
            dut.mem__core.value, dut.mem__space.value = core, space
            dut.mem__addr.value, dut.mem__wdata.value = addr, data
            dut.mem__we.value = 1
            self._driving = True
        elif self._driving:
            dut.mem__we.value = 0
            self._driving = False

    def sample(self) -> None:
        if self._driving and int(self._dut.mem__ready.value):
            self._queue.pop(0)


class Clocked:
    """Owns the clock and reset of an Amaranth top (`clk`, `rst`) and steps it cycle by cycle.

    Every cycle: drivers set inputs, `ReadOnly` samples the settled handshakes, then the edge.
    """

    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self._edge = RisingEdge(dut.clk)
        self._settled = ReadOnly()

    async def start(self, reset_cycles: int = 2) -> None:
        Clock(self.dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
        self.dut.rst.value = 1
        for _ in range(reset_cycles):
            await self._edge
        self.dut.rst.value = 0
        await self._edge

    async def settle(self) -> None:
        await self._settled

    async def edge(self) -> None:
        await self._edge
        self.cycle += 1

    async def tick(self) -> None:
        await self._settled
        await self.edge()


class TB:
    """Clock, reset and AER drivers around `CoreArray(image)`; runs one job folder."""

    def __init__(self, dut, job: Path):
        from spikeforge.compiler.work import step_work_bound
        from spikeforge.hdl.array import CoreArray
        from spikeforge.image import load_image

        self.dut = dut
        self.job = job
        self.image = load_image(job / "image.sfi")
        with np.load(job / "job.npz") as spec:
            self.spikes = spec["spikes"]
            self.seed = int(spec["seed"])
            self.idle = float(spec["idle"])
            self.stall = float(spec["stall"])
            self.modulators = spec["modulators"] if spec["modulators"].size else None
        self.clock = Clocked(dut)
        self.rng = random.Random(self.seed)
        array = CoreArray(self.image)
        ports = [("__".join(map(str, path)), member)
                 for path, member in array.signature.members.flatten() if member.is_port]
        self.shapes = {name: member.shape for name, member in ports}
        self.inputs = [name for name, member in ports if member.flow == In]
        # No input event may wait this long for the array to make progress.
        self.patience = 1000 + 4 * max(step_work_bound(self.image, index)
                                       for index in range(len(self.image.config.cores)))

    def read(self, name: str):
        value = getattr(self.dut, name).value
        assert value.is_resolvable, f"output `{name}` is not 0/1: {value}"
        return unpack(int(value), self.shapes[name])

    async def wait_for(self, name: str, what: str) -> None:
        """Wait until a 1-bit output is high. X counts as low: Icarus leaves combinational
        outputs X until their first input change after time 0, e.g. during the power-up sweep."""
        handle = getattr(self.dut, name)
        for _ in range(self.patience):
            await self.clock.settle()
            value = handle.value
            if value.is_resolvable and int(value):
                await self.clock.edge()
                return
            await self.clock.edge()
        raise AssertionError(f"{what}: `{name}` stayed low for {self.patience} cycles")

    # -- array protocol ------------------------------------------------------------------------
    async def clear(self) -> None:
        """Start a sample from rest: strobe `clear`, then wait out the state sweep."""
        self.dut.clear.value = 1
        await self.clock.tick()
        self.dut.clear.value = 0
        await self.wait_for("idle", "clear")

    async def load_spram(self) -> None:
        """Write the weights of the cores the mapper placed in SPRAM through the memory port
        (as the host link's WRITE_MEM or the flash loader does): SPRAM starts zeroed."""
        from spikeforge.compiler.mapper import spram_cores
        from spikeforge.hdl.core import MemSpace

        writer = MemWriter(self.dut)
        for index in sorted(spram_cores(self.image.layers, self.image.config)):
            for addr, row in enumerate(self.image.weight_memory(index)):
                writer.write(index, MemSpace.WEIGHTS.value, addr,
                             int.from_bytes(row.tobytes(), "little"))
        while not writer.done:
            writer.drive()
            await self.clock.settle()
            writer.sample()
            await self.clock.edge()
        writer.drive()

    def modulator_writes(self, writer: MemWriter, mods: np.ndarray) -> None:
        """One step's modulators (int8 per neuron of the three-factor layer) to its cores."""
        from spikeforge.hdl.core import MemSpace

        layer = next(e.layer for e in self.image.learning if e.rule == "three_factor")
        for index, core in enumerate(self.image.config.cores):
            if core.layer == layer:
                for n in range(core.neurons):
                    writer.write(index, MemSpace.MOD.value, n, int(mods[core.lo + n]) & 0xFF)

    async def stream(self, x: np.ndarray, source: StreamSource, sink: StreamSink,
                     mods: np.ndarray | None = None):
        """Feed the steps of one sample (back to back, or, with modulators [time, n] or an LI
        readout, each after its modulators / the previous step's membranes); return (spikes
        [time, n_out], values [time, n_out] of an LI readout, cycles)."""
        steps = x.shape[0]
        n_out = self.image.n_outputs
        last = self.image.layers[-1]
        readout = not last.spiking
        writer = MemWriter(self.dut)
        released = 0  # steps whose events are queued at the source

        def release(t):
            source.send([event_word(int(a)) for a in np.flatnonzero(x[t])])
            source.send([event_word(0, eos=True)])

        if mods is None and not readout:
            for t in range(steps):
                release(t)
            released = steps
        spikes = np.zeros((steps, n_out), dtype=np.uint8)
        values = np.zeros((steps, n_out), dtype=np.int64)
        step, last_addr, first, quiet = 0, -1, None, 0
        writing = False
        while step < steps:
            if released < steps and not writing and step >= released:
                if readout and step:
                    values[step - 1] = (await self.final_state(len(self.image.layers) - 1))[0]
                if mods is not None:
                    self.modulator_writes(writer, mods[released])
                writing = True
            writer.drive()
            source.drive()
            sink.drive()
            await self.clock.settle()
            writer.sample()
            if writing and writer.done:
                release(released)
                released += 1
                writing = False
                quiet = 0
            took = source.sample()
            word = sink.sample()
            if took and first is None:
                first = self.clock.cycle
            if word is not None:
                addr, eos = word & 0xFFFF, word >> 16
                if eos:
                    step, last_addr = step + 1, -1
                else:
                    assert addr < n_out, f"step {step}: output address {addr} >= {n_out}"
                    assert addr > last_addr or (
                        addr == last_addr and spikes[step, addr] < last.max_spikes), (
                        f"step {step}: output address {addr} after {last_addr}: not ascending, "
                        f"or more than {last.max_spikes} events of one neuron")
                    spikes[step, addr] += 1
                    last_addr = addr
            quiet = 0 if took or word is not None else quiet + 1
            assert quiet < self.patience, (f"step {step}: no event moved for {quiet} cycles "
                                           f"({source.transfers} inputs taken)")
            await self.clock.edge()
        assert source.done, "the array ended the last step before taking all its input"
        sink.drive(enable=False)
        source.drive()
        cycles = self.clock.cycle - (first if first is not None else self.clock.cycle)
        if readout and steps:
            values[steps - 1] = (await self.final_state(len(self.image.layers) - 1))[0]
        return spikes, values, cycles

    async def read_states(self, core_index: int) -> list[int]:
        """Every STATE word of one core, reads pipelined one per cycle."""
        from spikeforge.hdl.core import MemSpace

        return await self.read_words(core_index, MemSpace.STATE.value,
                                     self.image.config.cores[core_index].neurons)

    async def read_words(self, core_index: int, space: int, count: int) -> list[int]:
        """Words 0..count-1 of one memory space of one core, reads pipelined one per cycle."""
        mem = self.dut
        mem.mem__core.value = core_index
        mem.mem__space.value = space
        mem.mem__we.value = 0
        words: list[int] = []
        addr, waited = 0, 0
        while len(words) < count:
            if addr < count:
                mem.mem__addr.value = addr
                mem.mem__re.value = 1
            await self.clock.settle()
            if addr < count and int(mem.mem__ready.value):
                addr += 1
            if int(mem.mem__rvalid.value):
                words.append(int(mem.mem__rdata.value))
                waited = 0
            waited += 1
            assert waited < self.patience, f"core {core_index}: memory read got no answer"
            await self.clock.edge()
            if addr == count:
                mem.mem__re.value = 0
        mem.mem__re.value = 0
        return words

    async def final_state(self, layer_index: int | None = None):
        """Per layer (or of layer `layer_index` alone): membranes v (int64), previous-step
        counts and synaptic currents (int64, zeros without one), from the state memories."""
        from spikeforge.hdl.core import state_layout

        layers = self.image.layers
        v = [np.zeros(layer.n_out, dtype=np.int64) for layer in layers]
        s = [np.zeros(layer.n_out, dtype=np.uint8) for layer in layers]
        syn = [np.zeros(layer.n_out, dtype=np.int64) for layer in layers]
        for index, core in enumerate(self.image.config.cores):
            if layer_index is not None and core.layer != layer_index:
                continue
            layout = state_layout(layers[core.layer])
            for neuron, word in enumerate(await self.read_states(index)):
                state = data.Const(layout, word & ((1 << layout.size) - 1))
                v[core.layer][core.lo + neuron] = state.v
                s[core.layer][core.lo + neuron] = state.c
                if "syn" in layout.members:
                    syn[core.layer][core.lo + neuron] = state.syn
        if layer_index is not None:
            return v[layer_index], s[layer_index], syn[layer_index]
        return v, s, syn

    async def run(self) -> None:
        batch, steps, _ = self.spikes.shape
        layers = len(self.image.layers)
        out = {
            "spikes": np.zeros((batch, steps, self.image.n_outputs), dtype=np.uint8),
            "cycles": np.zeros(batch, dtype=np.int64),
            **{name: np.zeros((batch, layers), dtype=np.int64)
               for name in ("sops", "spike_counts", "saturations")},
            **{name: np.zeros(batch, dtype=np.int64)
               for name in ("events_in", "events_out", "busy_cycles", "integrate_cycles",
                            "overflow")},
            **{f"v{index}": np.zeros((batch, layer.n_out), dtype=np.int64)
               for index, layer in enumerate(self.image.layers)},
            **{f"s{index}": np.zeros((batch, layer.n_out), dtype=np.uint8)
               for index, layer in enumerate(self.image.layers)},
            **{f"syn{index}": np.zeros((batch, layer.n_out), dtype=np.int64)
               for index, layer in enumerate(self.image.layers)},
            "values": np.zeros((batch, steps, self.image.n_outputs), dtype=np.int64),
            "learn_cycles": np.zeros((batch, layers), dtype=np.int64),
        }
        for name in self.inputs:  # no X from an undriven input, in any simulator
            getattr(self.dut, name).value = 0
        source = StreamSource(self.dut, "i", self.rng, idle=self.idle)
        sink = StreamSink(self.dut, "o", self.rng, stall=self.stall)
        await self.clock.start()
        await self.wait_for("idle", "power-up")
        await self.load_spram()
        for sample in range(batch):
            await self.clear()
            spikes, values, cycles = await self.stream(
                self.spikes[sample], source, sink,
                None if self.modulators is None else self.modulators[sample])
            await self.wait_for("idle", f"sample {sample}: end of the last step")
            out["spikes"][sample] = spikes
            out["values"][sample] = values
            out["cycles"][sample] = cycles
            out["sops"][sample] = self.read("sops")
            out["spike_counts"][sample] = self.read("spikes")
            out["saturations"][sample] = self.read("saturations")
            out["learn_cycles"][sample] = self.read("learn_cycles")
            for name in ("events_in", "events_out", "busy_cycles", "integrate_cycles",
                         "overflow"):
                out[name][sample] = self.read(name)
            v, s, syn = await self.final_state()
            for index in range(layers):
                out[f"v{index}"][sample] = v[index]
                out[f"s{index}"][sample] = s[index]
                out[f"syn{index}"][sample] = syn[index]
        if self.image.learning:
            from spikeforge.hdl.core import MemSpace

            for index, core in enumerate(self.image.config.cores):
                layer = self.image.layers[core.layer]
                nbytes = -(-core.lanes * layer.weight_bits // 8)
                words = await self.read_words(index, MemSpace.WEIGHTS.value,
                                              layer.fan_in * core.groups)
                out[f"weights{index}"] = np.array(
                    [list(word.to_bytes(nbytes, "little")) for word in words], dtype=np.uint8)
        np.savez(self.job / "result.npz", **out)


@cocotb.test()
async def run_job(dut):
    """Run the job folder named by $SPIKEFORGE_RTL_JOB through the array."""
    await TB(dut, Path(os.environ["SPIKEFORGE_RTL_JOB"])).run()

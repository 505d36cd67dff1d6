"""The host runtime: run spike trains on a board (or the virtual board) over its serial port.

    with spikeforge.Board("/dev/ttyUSB1") as board:   # or Board("sim", image=image)
        board.load(image)                              # weights and parameters, verified
        result = board.run(spikes)                     # result.spikes [batch, time, n_out]
        weights = board.read_weights()                 # per layer [n_out, fan_in]

With on-chip learning (``image.with_learning(...)``, docs/learning.md) ``run`` writes each
step's modulators (three-factor) before the step's events, and reads the learned weights back
after the run: ``result.weights``, ``result.image``, ``result.learn_cycles``.

Everything goes through :class:`spikeforge.protocol.LinkClient` (sequence numbers,
CRC, retries) over a pyserial port. A request whose answer is lost or damaged is sent again;
the device answers a repeat from memory rather than running it twice. What could not be
recovered raises :class:`BoardError` with the device's link counters; every counter is in
:meth:`Board.status`; an event the array lost (its sticky ``overflow``) raises.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import protocol
from ..compiler.mapper import spram_cores
from ..compiler.work import step_work_bound
from ..image import (
    Image,
    assemble_kernel,
    assemble_weights,
    load_image,
    param_words,
    weight_depth,
)
from ..protocol import DeviceInfo, DeviceStatus, LinkClient, MemSpace, ProtocolError

__all__ = ["Board", "BoardError", "BoardResult", "BoardStatus", "SerialTransport"]

DEFAULT_BAUD = 115200
DEFAULT_TIMEOUT = 0.1  # seconds a device may work on one request, beyond the wire time


class BoardError(RuntimeError):
    """The board could not be reached, refused a request, or lost something; one line says
    what."""


class _CountingTransport:
    """A transport that counts the bytes it moves (both directions), for the link time."""

    def __init__(self, inner: protocol.Transport):
        self.inner = inner
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.inner.write(data)
        self.bytes += len(data)

    def read(self, n: int, timeout: float) -> bytes:
        got = self.inner.read(n, timeout)
        self.bytes += len(got)
        return got


def default_baud(image: Image | None) -> int:
    """The rate a board runs at unless told: the catalog rate of the image's board (what
    ``spikeforge build`` generates the divider for), else ``DEFAULT_BAUD``."""
    from .catalog import BOARDS

    board = None if image is None else BOARDS.get(str(image.config.board).lower())
    return DEFAULT_BAUD if board is None else board.baud_for(image)


def status_interval(image: Image) -> int:
    """Steps between the STATUS reads of :meth:`Board.run`: as many as keep every array counter
    below 2^(COUNTER_BITS - 2) in between (a quarter of its wrap), by a per-step bound four
    times the work the array can do in a step (every input and neuron of every core spiking,
    every learning layer sweeping all its weights)."""
    bound = 64 + 4 * sum(step_work_bound(image, index)
                         for index in range(len(image.config.cores)))
    bound = max(bound, max(layer.n_in * layer.n_out for layer in image.layers))
    return max(1, (1 << (protocol.COUNTER_BITS - 2)) // bound)


class SerialTransport:
    """:class:`protocol.Transport` over a pyserial port."""

    def __init__(self, port: str, baud: int = DEFAULT_BAUD):
        import serial

        self.port = port
        try:
            self._serial = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=5,
                                         exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc).split(":")[-1].strip()
            if not os.path.exists(port):
                raise BoardError(f"no serial port {port!r} (no such device; is the board "
                                 f"plugged in?)") from None
            raise BoardError(f"cannot open serial port {port!r}: {reason}") from None
        self._timeout = 0.0

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise BoardError(f"the board on {self.port} went away ({exc})") from None

    def read(self, n: int, timeout: float) -> bytes:
        import serial

        out = bytearray()
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            while len(out) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if self._timeout != left:
                    self._serial.timeout = self._timeout = left
                out += self._serial.read(n - len(out))
        except (serial.SerialException, OSError) as exc:
            raise BoardError(f"the board on {self.port} went away ({exc})") from None
        return bytes(out)

    def close(self) -> None:
        self._serial.close()


@dataclass
class BoardStatus:
    """The device's counters (STATUS) and the host's retry count."""

    device: DeviceStatus
    retries: int  # requests the host sent again, over this Board's life

    @property
    def link(self) -> dict[str, int]:
        """Link counters: crc_errors, framing_errors, timeouts, dropped_frames, duplicates,
        overruns (modulo 2^16, since reset)."""
        return dict(self.device.link)

    @property
    def overflow(self) -> bool:
        return self.device.overflow

    def to_dict(self) -> dict:
        d = self.device
        return {"link": self.link, "overflow": d.overflow, "idle": d.idle,
                "link_error": d.link_error, "events_in": d.events_in,
                "events_out": d.events_out, "busy_cycles": d.busy_cycles,
                "integrate_cycles": d.integrate_cycles, "sops": list(d.sops),
                "spikes": list(d.spikes), "saturations": list(d.saturations),
                "learn_cycles": list(d.learn_cycles), "retries": self.retries}


@dataclass
class BoardResult:
    """A run on the board; the fields the golden model has keep its names and shapes.

    With on-chip learning, ``weights`` (every layer's int32 [n_out, n_in] after the run, the
    learning layers read back from the board), ``image`` (the image holding them, and the
    rule) and ``learning`` (per learning layer ``{"update_cycles": ...}`` summed over the
    samples) are as ``spikeforge.simulate`` gives them; without learning they are None.
    """

    spikes: np.ndarray  # uint8 [batch, time, n_out] (counts for a multi-spike output layer)
    events_in: np.ndarray  # int64 [batch, layers]: input events per layer (sops / layer size)
    sops: np.ndarray  # int64 [batch, layers]
    spike_counts: np.ndarray  # int64 [batch, layers]
    saturations: np.ndarray  # int64 [batch, layers]
    input_events: np.ndarray  # int64 [batch]: events the array accepted
    events_out: np.ndarray  # int64 [batch]
    busy_cycles: np.ndarray  # int64 [batch]
    integrate_cycles: np.ndarray  # int64 [batch]
    overflow: np.ndarray  # bool [batch]
    learn_cycles: np.ndarray | None = None  # int64 [batch, layers]: learning RMW cycles
    weights: list[np.ndarray] | None = None
    image: Image | None = None
    learning: dict[int, dict[str, int]] | None = None
    link: dict[str, int] = field(default_factory=dict)  # link counters that moved in the run
    retries: int = 0  # requests sent again during the run
    seconds: float = 0.0
    values: np.ndarray | None = None  # LI readout: int32 [batch, time, n_out], its membranes
    scale: float | None = None  # LI readout: the real value of one LSB of `values`
    # Per sample: bytes on the wire (both directions), their time at the line rate, and the
    # array's busy cycles at the fabric clock (HELLO's) -- the link and the compute time.
    link_bytes: np.ndarray | None = None  # int64 [batch]
    link_seconds: np.ndarray | None = None  # float64 [batch]
    compute_seconds: np.ndarray | None = None  # float64 [batch]; NaN where the clock is unknown

    def timing(self) -> dict[str, float | None]:
        """Mean link and compute time per sample, in milliseconds."""
        def ms(values):
            return None if values is None or not len(values) or np.isnan(values).any() \
                else round(1e3 * float(np.mean(values)), 4)

        return {"link_ms_per_sample": ms(self.link_seconds),
                "compute_ms_per_sample": ms(self.compute_seconds),
                "link_bytes_per_sample": None if self.link_bytes is None or not len(
                    self.link_bytes) else float(np.mean(self.link_bytes))}

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in (
            "spikes", "events_in", "sops", "spike_counts", "saturations", "input_events",
            "events_out", "busy_cycles", "integrate_cycles", "overflow", "learn_cycles",
            "values", "link_bytes", "link_seconds", "compute_seconds")
            if getattr(self, name) is not None}


def _param_words(image: Image, core_index: int) -> list[int]:
    """The PARAMS words of a core (``image.param_fields``), one per neuron."""
    core = image.config.cores[core_index]
    return param_words(image.layers[core.layer], core.lo, core.hi)


def _weight_words(image: Image, core_index: int) -> list[int]:
    return [int.from_bytes(row.tobytes(), "little") for row in image.weight_memory(core_index)]


class _SampleCounters:
    """A sample's array counters, unrolled from successive STATUS reads since its CLEAR (which
    zeroes them), or since `start` (a stream that goes on without CLEAR): each read adds how far
    each counter moved modulo 2^COUNTER_BITS."""

    def __init__(self, n_layers: int, start: DeviceStatus | None = None):
        self._last = {name: 0 if start is None else getattr(start, name)
                      for name in protocol.ARRAY_COUNTERS} | {
            name: [0] * n_layers if start is None else list(getattr(start, name))
            for name in protocol.LAYER_COUNTERS}
        self.totals = {name: 0 for name in protocol.ARRAY_COUNTERS} | {
            name: np.zeros(n_layers, dtype=np.int64) for name in protocol.LAYER_COUNTERS}

    def add(self, status: DeviceStatus) -> None:
        for name in protocol.ARRAY_COUNTERS:
            now = getattr(status, name)
            self.totals[name] += protocol.counter_delta(self._last[name], now)
            self._last[name] = now
        for name in protocol.LAYER_COUNTERS:
            now = getattr(status, name)
            self.totals[name] += [protocol.counter_delta(a, b)
                                  for a, b in zip(self._last[name], now, strict=True)]
            self._last[name] = list(now)


class _LinkCounters:
    """How far the link counters (16 bits, never cleared) moved since a first STATUS."""

    def __init__(self, status: DeviceStatus):
        self._last = dict(status.link)
        self.moved = dict.fromkeys(protocol.LINK_COUNTERS, 0)

    def add(self, status: DeviceStatus) -> None:
        for name, now in status.link.items():
            self.moved[name] += protocol.counter_delta(self._last[name], now,
                                                       protocol.LINK_COUNTER_BITS)
            self._last[name] = now


class Board:
    """A spikeforge board on a serial port (``port="sim"``: the virtual board of ``image``).

    ``baud`` is the line rate (default :func:`default_baud`: the catalog rate of the image's
    board, which ``spikeforge build`` generates the gateware's divider for); ``timeout`` the
    seconds the device may work on one request beyond the time its bytes take on the wire (a
    STEP of a large network); ``retries`` how often a
    lost or damaged request is sent again. ``image`` is what the board runs: needed for
    :meth:`run` and :meth:`read_weights` until :meth:`load` gives one. An ``image`` whose
    weights the mapper placed in SPRAM (``compiler.mapper.spram_cores``; the bitstream cannot
    initialise SPRAM) is loaded over the link at once (:meth:`load`, verified), except on a
    virtual board whose simulated flash holds it (``flash=``).
    """

    def __init__(self, port: str, *, baud: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT,
                 image: Image | str | os.PathLike | None = None, retries: int = 3,
                 transport: protocol.Transport | None = None, **virtual):
        if image is not None and not isinstance(image, Image):
            image = load_image(image)
        if baud is not None:
            from .catalog import check_baud_rate

            check_baud_rate(baud)
        if port == "sim" and baud is not None:
            virtual["baud"] = baud
        baud = default_baud(image) if baud is None else baud
        self.baud = baud
        self.image: Image | None = image
        self.simulation = None  # the VirtualBoard behind port 'sim'
        self._serial: SerialTransport | None = None
        byte_time = 10.0 / baud
        timeout_bytes = 128
        if port == "sim":
            if image is None:
                raise BoardError("the virtual board (port 'sim') needs the image to simulate")
            from .virtual import VirtualBoard

            self.simulation = VirtualBoard(image, **virtual)
            port = self.simulation.port
            byte_time = self.simulation.byte_time
            self.baud = self.simulation.baud
            timeout = max(timeout, self.simulation.exec_time)
            timeout_bytes = self.simulation.timeout_bytes
        elif virtual:
            raise TypeError(f"unexpected arguments for a real board: {', '.join(virtual)}")
        self.port = port
        try:
            if transport is None:
                self._serial = SerialTransport(port, baud)
                transport = self._serial
            self._counter = _CountingTransport(transport)
            self.client = LinkClient(self._counter, byte_time=byte_time,
                                     timeout_bytes=timeout_bytes, exec_time=timeout,
                                     retries=retries)
            self.info = self._hello()
            if image is not None and virtual.get("flash", False) is False and \
                    spram_cores(image.layers, image.config):
                # SPRAM starts zeroed and no flash loader filled it: write the image
                self.load(image)
        except BaseException:
            self.close()
            raise

    @classmethod
    def virtual(cls, image: Image | str | os.PathLike, **kwargs) -> Board:
        """The virtual board of ``image`` (as ``Board("sim", image=image)``)."""
        return cls("sim", image=image, **kwargs)

    # -- plumbing --------------------------------------------------------------------------
    @property
    def transport(self) -> protocol.Transport:
        return self._counter.inner

    @transport.setter
    def transport(self, value: protocol.Transport) -> None:
        self._counter.inner = value

    @property
    def retries(self) -> int:
        """Requests sent again (lost or damaged frames), over this Board's life."""
        return self.client.retried

    def _fail(self, what: str, exc: Exception) -> BoardError:
        if isinstance(exc, BoardError):
            return exc
        if isinstance(exc, protocol.ProtocolViolation):
            self._check_virtual()
            return BoardError(f"{what} on {self.port}: the board broke the protocol: {exc}")
        counters = ""
        if not isinstance(exc, protocol.DeviceError):
            try:  # what the device saw, if it still answers
                link = self.client.status().link
                if any(link.values()):
                    counters = "; device counts " + ", ".join(
                        f"{k} {v}" for k, v in link.items() if v)
            except Exception:  # noqa: BLE001 - the report must not hide the first error
                counters = "; the device does not answer STATUS either"
        attempts = self.client.retries + 1
        kind = "refused" if isinstance(exc, protocol.DeviceError) else \
            f"failed after {attempts} attempts"
        self._check_virtual()
        return BoardError(f"{what} on {self.port} {kind}: {exc}{counters}")

    def _check_virtual(self) -> None:
        if self.simulation is not None and not self.simulation.running:
            from .virtual import VirtualBoardError

            try:
                self.simulation.check()
            except VirtualBoardError as exc:
                raise BoardError(str(exc)) from None

    def _hello(self) -> DeviceInfo:
        try:
            info = self.client.hello()
        except protocol.ResponseTimeout:
            self._check_virtual()
            raise BoardError(f"no answer from the board on {self.port} (is the spikeforge "
                             f"bitstream loaded, and the baud rate right?)") from None
        except ProtocolError as exc:
            raise BoardError(f"the board on {self.port} does not speak the spikeforge "
                             f"protocol: {exc}") from None
        if self.image is not None:
            self._check_shape(self.image, info)
        return info

    def _check_shape(self, image: Image, info: DeviceInfo) -> None:
        want = {"cores": len(image.config.cores), "layers": len(image.layers),
                "inputs": image.n_inputs, "outputs": image.n_outputs}
        have = {"cores": info.n_cores, "layers": info.n_layers, "inputs": info.n_inputs,
                "outputs": info.n_outputs}
        if want != have:
            diff = ", ".join(f"{k} {have[k]} (image {want[k]})" for k in want
                             if want[k] != have[k])
            raise BoardError(f"the board on {self.port} was built for another network: {diff}")

    def _need_image(self) -> Image:
        if self.image is None:
            raise BoardError("no image: call load(image) first (or pass image=...)")
        return self.image

    # -- memories ------------------------------------------------------------------------
    def _write_core(self, image: Image, core: int, space: MemSpace, *, verify: bool) -> None:
        words = (_weight_words if space == MemSpace.WEIGHTS else _param_words)(image, core)
        what = f"writing core {core} {space.name.lower()}"
        try:
            self.client.write_mem(core, space, 0, words)
            back = self.client.read_mem(core, space, 0, len(words)) if verify else words
        except ProtocolError as exc:
            raise self._fail(what, exc) from None
        if back != words:
            bad = next(k for k, (a, b) in enumerate(zip(back, words, strict=True)) if a != b)
            layer = image.layers[image.config.cores[core].layer].name
            raise BoardError(
                f"core {core} (layer {layer!r}) {space.name.lower()} word {bad} reads back "
                f"0x{back[bad]:x}, wrote 0x{words[bad]:x}: the gateware on {self.port} "
                f"fixes it (widths or constant parameters differ); build it for this image")

    def load(self, image: Image | str | os.PathLike, *, verify: bool = True) -> None:
        """Make the board hold exactly ``image``: every core's weights and parameters are
        written and (``verify``) read back. The board must run gateware built for a network of
        the same structure (HELLO's cores, layers, inputs and outputs are checked; an image that
        only differs in weights or parameters, e.g. learned weights, loads); a new sample
        starts (CLEAR)."""
        if not isinstance(image, Image):
            image = load_image(image)
        image.check()
        image.check_gateware()
        self._check_shape(image, self.info)
        # Parameters first: they are small, and a gateware that cannot hold them fails fast.
        for space in (MemSpace.PARAMS, MemSpace.WEIGHTS):
            for core in range(len(image.config.cores)):
                self._write_core(image, core, space, verify=verify)
        self.image = image
        self._request("CLEAR", self.client.clear)

    def read_weights(self) -> list[np.ndarray]:
        """Every layer's weights as the board holds them: int32 [n_out, fan_in] (feed-forward
        columns, then recurrent ones; a convolution's kernel [out_channels, C_in * K * K]),
        decoded from the weight memories."""
        image = self._need_image()
        return [self._read_layer(image, index) for index in range(len(image.layers))]

    def _read_layer(self, image: Image, index: int) -> np.ndarray:
        layer = image.layers[index]

        def memory(core_index: int) -> np.ndarray:
            core = image.config.cores[core_index]
            depth = weight_depth(layer, core)
            words = self._request(f"reading core {core_index} weights",
                                  self.client.read_mem, core_index, MemSpace.WEIGHTS, 0, depth)
            nbytes = -(-core.lanes * layer.weight_bits // 8)
            return np.array([list(word.to_bytes(self.info.word_bytes, "little")[:nbytes])
                             for word in words], dtype=np.uint8).reshape(depth, nbytes)

        if layer.conv is not None:
            return assemble_kernel(layer, image.config.cores, index, memory)
        return assemble_weights(image.config.cores, index, layer.n_out, layer.fan_in,
                                layer.weight_bits, memory)

    def _read_learned(self, image: Image) -> Image:
        """The image with the learning layers' weights read back (the others cannot change)."""
        learns = {entry.layer for entry in image.learning}
        weights = [self._read_layer(image, index)[:, :layer.n_in] if index in learns
                   else layer.weights for index, layer in enumerate(image.layers)]
        return image.with_weights(weights)

    def write_weights(self, weights: list[np.ndarray], *, verify: bool = True) -> Image:
        """Write every layer's weights ([n_out, fan_in], a convolution's kernel [out_channels,
        C_in * K * K], as :meth:`read_weights` gives them; checked against the layer's widths)
        and return the image the board now holds."""
        image = self._need_image()
        if len(weights) != len(image.layers):
            raise ValueError(f"need weights for {len(image.layers)} layers, not {len(weights)}")
        ff, rec = [], []
        for layer, w in zip(image.layers, weights, strict=True):
            w = np.asarray(w)
            shape = layer.weights.shape if layer.conv is not None else (layer.n_out, layer.fan_in)
            if w.shape != shape:
                raise ValueError(f"layer {layer.name!r} weights must be {shape}, not {w.shape}")
            ff.append(w if layer.conv is not None else w[:, :layer.n_in])
            rec.append(w[:, layer.n_in:] if layer.recurrent else None)
        new = image.with_weights(ff, rec)
        for core in range(len(new.config.cores)):
            self._write_core(new, core, MemSpace.WEIGHTS, verify=verify)
        self.image = new
        return new

    def _read_values(self, image: Image) -> np.ndarray:
        """An LI readout's membranes now: the v field (bits [0, v_bits), two's complement) of
        the STATE words of the output layer's cores, int32 [n_out]."""
        index = len(image.layers) - 1
        bits = image.layers[index].v_bits
        out = np.zeros(image.n_outputs, dtype=np.int64)
        for core_index, core in enumerate(image.config.cores):
            if core.layer != index:
                continue
            words = self._request(f"reading core {core_index} membranes", self.client.read_mem,
                                  core_index, MemSpace.STATE, 0, core.neurons)
            raw = np.array([w & ((1 << bits) - 1) for w in words], dtype=np.int64)
            out[core.lo:core.hi] = raw - ((raw >> (bits - 1)) << bits)
        return out.astype(np.int32)

    # -- running -------------------------------------------------------------------------
    def _request(self, what: str, call, *args):
        try:
            return call(*args)
        except ProtocolError as exc:
            raise self._fail(what, exc) from None

    def status(self) -> BoardStatus:
        """Every device counter (link and array) and the host's retries; warns when the array's
        sticky overflow is set (an event was lost)."""
        device = self._request("STATUS", self.client.status)
        if device.overflow:
            warnings.warn(f"the board on {self.port} lost an event (array overflow: an input "
                          f"address beyond the network's inputs)", RuntimeWarning, stacklevel=2)
        return BoardStatus(device, self.client.retried)

    def _modulator_cores(self, image: Image) -> list[tuple[int, int, int]]:
        """(core index, lo, hi) of every core of a three-factor layer."""
        layers = {e.layer for e in image.learning if e.rule == "three_factor"}
        return [(index, core.lo, core.hi) for index, core in enumerate(image.config.cores)
                if core.layer in layers]

    def run(self, spikes: np.ndarray | None = None, *, modulators: np.ndarray | None = None,
            progress=None, clear: bool = True, intensities: np.ndarray | None = None,
            steps: int | None = None, status_every: int | None = None) -> BoardResult:
        """Run spike trains (uint8 [batch, time, n_inputs] or [time, n_inputs]): per sample
        CLEAR, then per step the input events (AER or a bitmap, whichever is shorter on the
        wire) and STEP, and STATUS every ``status_every`` steps (default
        :func:`status_interval`; 1 with on-chip learning) and at the sample's end. Raises
        BoardError when the array lost an event.

        For an image that encodes on chip (``meta["encoder"]``, ``spikeforge compile --encoder
        rate``) give ``intensities`` (uint8 [batch, n_inputs] or [n_inputs]) and ``steps``
        instead: per sample CLEAR (the encoder's LFSR starts at the image's seed), the
        intensities once (INTENSITY), then the steps in RUN_ENCODED requests of as many steps
        as HELLO's ``run_steps`` and the STATUS interval allow (one request for the sample,
        usually), with a STATUS after each; STEP_ENCODED per step instead where something
        happens between steps (modulators, an LI readout's membranes). The spikes are
        ``sim.encode.rate_lfsr``'s, bit for bit. The result's ``link_seconds`` and
        ``compute_seconds`` split each sample's time between the wire and the array.

        ``clear=False`` sends no CLEAR: one sample continues the stream from the state the
        previous run left (membranes, last spikes), as ``simulate(..., state=result.state)``
        does; its counters are those of this run alone.

        With on-chip learning the samples run in sequence and the weights carry over, as in
        ``spikeforge.simulate``. A three-factor layer needs ``modulators``, int8 [batch, time,
        n_out of that layer] (ValueError otherwise, and when modulators are given but nothing
        learns by that rule): before each step the step's modulators go to the layer's cores
        (WRITE_MEM, space MOD, one request per core). After the run the learning layers'
        weights are read back; the result carries them (``weights``, ``image``) and the
        learning cycles per sample (``learn_cycles``), and the Board's ``image`` becomes the
        learned one. ``progress(done, total)`` is called after each sample."""
        from ..sim.encode import encoded_inputs
        from ..sim.learning import check_modulators

        image = self._need_image()
        x, coded = encoded_inputs(image, spikes, intensities=intensities, steps=steps)
        if coded is not None and not self.info.rate_encoder:
            raise BoardError(f"the board on {self.port} has no on-chip rate encoder (its "
                             f"gateware was built from an image that does not encode on chip): "
                             f"build it for this image")
        batch, steps, _ = x.shape
        if not clear and (batch != 1 or image.learning):
            raise ValueError(f"clear=False continues one stream without learning: give one "
                             f"sample of a network that does not learn, not {batch} samples"
                             f"{' of a learning network' if image.learning else ''}")
        mods = check_modulators(image, modulators, batch, steps)
        mod_cores = self._modulator_cores(image) if mods is not None else []
        n_layers, n_out = len(image.layers), image.n_outputs
        last = image.layers[-1]
        out = np.zeros((batch, steps, n_out), dtype=np.uint8)
        values = None if last.spiking else np.zeros((batch, steps, n_out), dtype=np.int32)
        per_layer = {k: np.zeros((batch, n_layers), dtype=np.int64)
                     for k in ("sops", "spike_counts", "saturations", "learn_cycles")}
        per_sample = {k: np.zeros(batch, dtype=np.int64)
                      for k in ("input_events", "events_out", "busy_cycles", "integrate_cycles")}
        overflow = np.zeros(batch, dtype=bool)
        link_bytes = np.zeros(batch, dtype=np.int64)
        if status_every is not None and (isinstance(status_every, bool) or not isinstance(
                status_every, int) or status_every < 1):
            raise ValueError(f"status_every must be a positive integer, not {status_every!r}")
        every = status_every or (status_interval(image) if not image.learning else 1)
        # RUN_ENCODED: steps per request (0: a request per step)
        run = min(every, self.info.run_steps) if (
            coded is not None and mods is None and values is None) else 0
        start = time.monotonic()
        link = _LinkCounters(self._request("STATUS", self.client.status))
        retried = self.client.retried
        # without CLEAR the counters go on from where they were: count from there
        zero = self._request("STATUS", self.client.status) if not clear else None
        for b in range(batch):
            sent = self._counter.bytes
            if clear:
                self._request("CLEAR", self.client.clear)
            if coded is not None:
                self._request(f"INTENSITY of sample {b}", self.client.intensity,
                              coded[b].tolist())
            # CLEAR zeroes the array's counters (without it they go on from `zero`); STATUS
            # after every step unrolls their wrap-around (docs/host-protocol.md: none moves by
            # 2^COUNTER_BITS in one step).
            sample = _SampleCounters(n_layers, start=zero)
            if run:
                for t0 in range(0, steps, run):
                    n = min(run, steps - t0)
                    got = self._request(f"RUN_ENCODED of steps {t0}..{t0 + n - 1} of sample "
                                        f"{b}", self.client.run_encoded, n, last.max_spikes)
                    for t, events in enumerate(got, start=t0):
                        np.add.at(out[b, t], events, 1)
                    st = self._request(f"STATUS after step {t0 + n - 1} of sample {b}",
                                       self.client.status)
                    sample.add(st)
                    link.add(st)
                    if st.overflow:
                        raise BoardError(f"sample {b} by step {t0 + n - 1}: the board lost an "
                                         f"event (array overflow)")
            for t in range(steps if run else 0, steps):  # a request per step
                # Step t's modulators: after STEP t - 1 answered (the link waits for the
                # learning cores' sweeps), before step t's events.
                for core, lo, hi in mod_cores:
                    self._request(f"writing the modulators of step {t} of sample {b} to core "
                                  f"{core}", self.client.write_mem, core, MemSpace.MOD, 0,
                                  [int(m) & 0xFF for m in mods[b, t, lo:hi]])
                if coded is not None:
                    got = self._request(f"STEP {t} of sample {b}", self.client.step_encoded,
                                        last.max_spikes)
                else:
                    events = np.flatnonzero(x[b, t]).tolist()
                    got = self._request(f"STEP {t} of sample {b}", self.client.step, events,
                                        last.max_spikes)
                np.add.at(out[b, t], got, 1)  # a multi-spike neuron's count: repeats
                if values is not None:  # an LI readout: its membranes after the step
                    values[b, t] = self._read_values(image)
                if (t + 1) % every and t != steps - 1:
                    continue
                st = self._request(f"STATUS after step {t} of sample {b}", self.client.status)
                sample.add(st)
                link.add(st)
                if st.overflow:
                    raise BoardError(f"sample {b} by step {t}: the board lost an event (array "
                                     f"overflow)")
            if not steps:
                st = self._request("STATUS", self.client.status)
                sample.add(st)
                link.add(st)
            for key, name in (("sops", "sops"), ("spike_counts", "spikes"),
                              ("saturations", "saturations"), ("learn_cycles", "learn_cycles")):
                per_layer[key][b] = sample.totals[name]
            per_sample["input_events"][b] = sample.totals["events_in"]
            for key in ("events_out", "busy_cycles", "integrate_cycles"):
                per_sample[key][b] = sample.totals[key]
            overflow[b] = st.overflow
            link_bytes[b] = self._counter.bytes - sent
            if st.overflow:
                raise BoardError(f"sample {b}: the board lost an event (array overflow)")
            if progress is not None:
                progress(b + 1, batch)
        learn_cycles = per_layer.pop("learn_cycles")
        fan_out = np.array([layer.n_out for layer in image.layers], dtype=np.int64)
        learned = learning = None
        if image.learning:
            learned = self.image = self._read_learned(image)
            learning = {e.layer: {"update_cycles": int(learn_cycles[:, e.layer].sum())}
                        for e in image.learning}
        return BoardResult(
            spikes=out, events_in=per_layer["sops"] // fan_out, sops=per_layer["sops"],
            spike_counts=per_layer["spike_counts"], saturations=per_layer["saturations"],
            overflow=overflow, learn_cycles=learn_cycles,
            weights=None if learned is None else [layer.weights.copy()
                                                  for layer in learned.layers],
            image=learned, learning=learning,
            link={k: v for k, v in link.moved.items() if v},
            retries=self.client.retried - retried, seconds=time.monotonic() - start,
            values=values, scale=None if last.spiking else float(last.scale),
            link_bytes=link_bytes, link_seconds=link_bytes * 10.0 / self.baud,
            compute_seconds=(per_sample["busy_cycles"] / self.info.clock_hz
                             if self.info.clock_hz else np.full(batch, np.nan)),
            **per_sample)

    # -- life ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the port (and stop the virtual board)."""
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        if self.simulation is not None:
            self.simulation.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Board({self.port!r})"

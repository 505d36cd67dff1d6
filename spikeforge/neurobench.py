"""Run a compiled image under the `neurobench` package's harness (the optional extra `neurobench`).

    from neurobench.benchmarks import Benchmark
    from neurobench.processors.postprocessors import ChooseMaxCount
    model = spikeforge.neurobench.ImageModel(image, engine="golden")    # or "rtl", "board"
    Benchmark(model, loader, [], [ChooseMaxCount()], [static, workload]).run()

NeuroBench measures a model through torch hooks on its `nn.Linear` layers and snnTorch neurons.
`ImageModel.__net__()` is therefore :class:`ImageMirror`: a torch network with the image's
integer weights and biases in `nn.Linear` layers and :class:`IntegerLIF` neurons that compute
docs/neuron.md in int64 arithmetic. Each batch runs on the chosen engine and through the mirror;
the engine's output spikes are returned, and a mirror that disagrees with the engine on a
single output spike is an error, so the hooks see the run the engine made.

NeuroBench's static metrics see the mirror's float64 tensors (8 bytes per weight), not the
image's integer widths: `spikeforge.metrics` reports the footprint at the true widths.
"""

from __future__ import annotations

import numpy as np

try:
    import snntorch as snn
    import torch
    from neurobench.models import NeuroBenchModel
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"spikeforge.neurobench needs the `neurobench` package "
                      f"(pip install 'spikeforge[neurobench]'): {exc}") from None

from .image import Image, LayerParams, load_image
from .sim.encode import given

__all__ = ["ImageMirror", "ImageModel", "IntegerLIF"]


class IntegerLIF(snn.SpikingNeuron):
    """The LIF neuron of docs/neuron.md on integer-valued float input, state in int64.

    ``forward(current)`` takes I[t] (the weighted sum plus bias, whole numbers) and returns
    ``(spikes, membrane)``; the membrane ``mem`` and the previous spikes ``spk`` are kept
    between calls (as snnTorch's neurons keep theirs) until :meth:`reset`.
    """

    def __init__(self, layer: LayerParams):
        super().__init__(threshold=torch.tensor(np.array(layer.threshold), dtype=torch.int64),
                         reset_mechanism="subtract" if layer.reset == "subtract" else "zero")
        self.layer_reset = layer.reset
        self.decay_mode = layer.decay_mode
        self.decay_frac = layer.decay_frac
        self.v_min, self.v_max = -(1 << (layer.v_bits - 1)), (1 << (layer.v_bits - 1)) - 1
        decay = {"shift": layer.decay_shift, "mul": layer.decay_mul}.get(layer.decay_mode)
        if decay is not None:
            self.register_buffer("decay", torch.tensor(np.array(decay), dtype=torch.int64))
        self.reset()

    def reset(self) -> None:
        self.mem = torch.zeros(0, dtype=torch.int64)
        self.spk = torch.zeros(0, dtype=torch.int64)

    def _decay(self, v: torch.Tensor) -> torch.Tensor:
        if self.decay_mode == "shift":  # v - (v >> k); >> is floor division by 2^k
            return v - torch.div(v, torch.pow(2, self.decay), rounding_mode="floor")
        if self.decay_mode == "mul":  # (v * beta_q) >> f
            return torch.div(v * self.decay, 1 << self.decay_frac, rounding_mode="floor")
        return v

    def forward(self, current: torch.Tensor):
        current = torch.round(current).to(torch.int64)
        if self.mem.shape != current.shape:
            self.mem = torch.zeros_like(current)
            self.spk = torch.zeros_like(current)
        v, s_prev = self.mem, self.spk
        if self.layer_reset == "zero":
            v = v * (1 - s_prev)
        u = self._decay(v) + current
        if self.layer_reset == "subtract":
            u = u - self.threshold * s_prev
        u = torch.clamp(u, self.v_min, self.v_max)
        spikes = (u > self.threshold).to(torch.int64)
        self.mem, self.spk = u, spikes  # new tensors: NeuroBench keeps the old ones
        return spikes.to(torch.float64), u


class ImageMirror(torch.nn.Module):
    """The image as a torch network: per layer `fc` (weights, bias), `rec` (recurrent weights,
    no bias; fed the layer's spikes of the previous step) and an :class:`IntegerLIF`.

    ``forward(x_t)`` runs one step for a batch (float 0/1 [batch, n_inputs]) and returns the
    output layer's ``(spikes, membrane)``; :meth:`reset` returns every neuron to rest.
    """

    def __init__(self, image: Image):
        super().__init__()
        self.fc = torch.nn.ModuleList()
        self.rec = torch.nn.ModuleList()
        self.lif = torch.nn.ModuleList()
        for layer in image.layers:
            fc = torch.nn.Linear(layer.n_in, layer.n_out, dtype=torch.float64)
            with torch.no_grad():
                fc.weight.copy_(torch.tensor(np.array(layer.weights), dtype=torch.float64))
                fc.bias.copy_(torch.tensor(np.array(layer.bias), dtype=torch.float64))
            self.fc.append(fc)
            if layer.recurrent:
                rec = torch.nn.Linear(layer.n_out, layer.n_out, bias=False, dtype=torch.float64)
                with torch.no_grad():
                    rec.weight.copy_(torch.tensor(np.array(layer.rec_weights), dtype=torch.float64))
                self.rec.append(rec)
            else:
                self.rec.append(torch.nn.Identity())
            self.lif.append(IntegerLIF(layer))
        self._recurrent = [layer.recurrent for layer in image.layers]

    def reset(self) -> None:
        for lif in self.lif:
            lif.reset()

    def forward(self, x: torch.Tensor):
        mem = None
        for fc, rec, lif, recurrent in zip(self.fc, self.rec, self.lif, self._recurrent):
            current = fc(x)
            if recurrent:
                s_prev = lif.spk if lif.spk.shape == current.shape else \
                    torch.zeros_like(current)
                current = current + rec(s_prev.to(torch.float64))
            x, mem = lif(current)
        return x, mem

    @torch.no_grad()
    def run(self, spikes: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """A batch [batch, time, n_inputs] from rest: (output spikes uint8 [batch, time,
        n_out], per layer spikes and membranes [batch, time, n])."""
        self.reset()
        x = torch.as_tensor(np.asarray(spikes), dtype=torch.float64)
        per_step_s, per_step_v = [], []
        for t in range(x.shape[1]):
            self(x[:, t])
            per_step_s.append([lif.spk.numpy().astype(np.uint8) for lif in self.lif])
            per_step_v.append([lif.mem.numpy().astype(np.int64) for lif in self.lif])
        layers = range(len(self.lif))
        s = [np.stack([step[k] for step in per_step_s], axis=1) for k in layers]
        v = [np.stack([step[k] for step in per_step_v], axis=1) for k in layers]
        return s[-1], s, v


class ImageModel(NeuroBenchModel):
    """A compiled image as a NeuroBench model, run on `engine`: "golden", "rtl" or "board"
    (with `port`; "sim" is the virtual board). `options` go to the Board (e.g. `baud`).

    Called with a batch (tensor [batch, time, n_inputs] of 0/1), it returns the engine's output
    spikes as float [batch, time, n_outputs] (NeuroBench's ChooseMaxCount turns them into
    classes). Close it (or use ``with``) to release a board.
    """

    def __init__(self, image: Image | str, engine: str = "golden", *, port: str | None = None,
                 **options):
        from .measure import check_engine

        super().__init__()
        if not isinstance(image, Image):
            image = load_image(image)
        check_engine(engine, port)
        if image.learning:
            raise ValueError("ImageModel needs an image without on-chip learning")
        convs = [f"layer {index} ({layer.name!r})" for index, layer in enumerate(image.layers)
                 if layer.conv is not None]
        if convs:
            raise ValueError(f"ImageModel mirrors dense layers only, not the convolution of "
                             f"{', '.join(convs)}")
        self.image, self.engine, self.port, self.options = image, engine, port, options
        self.mirror = ImageMirror(image)
        self.mirror.eval()
        self.add_activation_module(IntegerLIF)
        self._board = None

    def __net__(self) -> ImageMirror:
        return self.mirror

    def _engine_spikes(self, x: np.ndarray) -> np.ndarray:
        if self.engine == "golden":
            from .sim.golden import run

            return run(self.image, x).spikes
        if self.engine == "rtl":
            from .hdl.rtl import run_rtl

            return run_rtl(self.image, x, idle=0.0, stall=0.0).spikes
        if self._board is None:
            from .boards.runtime import Board

            self._board = Board(self.port, image=self.image, **self.options)
        return self._board.run(x).spikes

    def __call__(self, batch) -> torch.Tensor:
        x = given(torch.as_tensor(batch).detach().cpu().numpy(), self.image.n_inputs)
        got = self._engine_spikes(x)
        mirrored, _, _ = self.mirror.run(x)
        if not np.array_equal(got, mirrored):
            raise RuntimeError(f"the torch mirror differs from the {self.engine} engine on "
                               f"this batch")
        return torch.as_tensor(got, dtype=torch.float64)

    def close(self) -> None:
        if self._board is not None:
            self._board.close()
            self._board = None

    def __enter__(self) -> ImageModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

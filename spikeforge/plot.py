"""Pictures of what a network does (the optional extra `plot`: matplotlib).

    spikeforge plot raster|membrane|activity|resources NET.sfi --input X.npz -o fig.png

- raster: the input's and every layer's spikes of one sample, one panel per layer;
- membrane: membrane traces of chosen neurons of a layer, each with its threshold;
- activity: per layer, spikes and synaptic operations per step (mean over the samples);
- resources: the mapper's estimate of LUTs and block RAM per core, against the device.

Every figure is `SIZE` inches at `DPI`, so the PNG is `PIXELS` (width, height) pixels.
The runs are the golden model's (bit-exact with the RTL and the board).
"""

from __future__ import annotations

import io
import os
from dataclasses import replace

import numpy as np

from .image import Image, load_image, write_atomic
from .sim.encode import given
from .sim.metrics import input_acs

KINDS = ("raster", "membrane", "activity", "resources")
SIZE = (8.0, 5.0)
DPI = 100
PIXELS = (int(SIZE[0] * DPI), int(SIZE[1] * DPI))


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib (pip install 'spikeforge[plot]')") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(bins: int | str = "auto"):
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=bins, integer=True)


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    write_atomic(path, buf.getvalue())


def _run(image: Image, spikes: np.ndarray):
    from .sim.golden import run

    return run(image, spikes, record=True)


def _label(index: int, layer) -> str:
    """"layer 1", with the layer's name when it has one of its own (not an index)."""
    return f"layer {index}" if layer.name.isdigit() else f"layer {index} ({layer.name})"


def _sample(x: np.ndarray, sample: int) -> int:
    if not 0 <= sample < len(x):
        raise ValueError(f"sample must be 0..{len(x) - 1}, not {sample!r}")
    return sample


def _layer_index(image: Image, layer: int) -> int:
    if not -len(image.layers) <= layer < len(image.layers):
        raise ValueError(f"layer must be 0..{len(image.layers) - 1} (or negative from the end), "
                         f"not {layer!r}")
    return layer % len(image.layers)


def raster(image: Image, spikes: np.ndarray, path, *, sample: int = 0) -> None:
    """Spike raster of one sample: the input, then each layer."""
    plt = _pyplot()
    x = given(spikes, image.n_inputs)
    sample = _sample(x, sample)
    result = _run(image, x[sample:sample + 1])
    trains = [(f"input ({image.n_inputs})", x[sample])] + [
        (f"{_label(k, layer)} ({layer.n_out})", s[0])
        for k, (layer, s) in enumerate(zip(image.layers, result.layer_spikes))]
    fig, axes = plt.subplots(len(trains), 1, figsize=SIZE, sharex=True, squeeze=False,
                             height_ratios=[max(1, s.shape[1]) ** 0.5 for _, s in trains])
    for ax, (name, train) in zip(axes[:, 0], trains):
        # one cell per (step, neuron): black where it spiked
        ax.imshow(train.T, aspect="auto", cmap="Greys", vmin=0, vmax=1, origin="lower",
                  interpolation="nearest")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.yaxis.set_major_locator(_integer_ticks(4))
    axes[-1, 0].set_xlim(-0.5, x.shape[1] - 0.5)
    axes[-1, 0].xaxis.set_major_locator(_integer_ticks())
    axes[-1, 0].set_xlabel("time step")
    fig.suptitle(f"spike raster, sample {sample}")
    fig.subplots_adjust(left=0.16, right=0.98, top=0.92, bottom=0.1, hspace=0.15)
    _save(fig, path)


def membrane(image: Image, spikes: np.ndarray, path, *, sample: int = 0, layer: int = -1,
             neurons: list[int] | None = None) -> None:
    """Membrane traces v[t] of `neurons` (default: the first four) of `layer`, with each
    one's threshold dashed and its spikes marked."""
    plt = _pyplot()
    x = given(spikes, image.n_inputs)
    sample, index = _sample(x, sample), _layer_index(image, layer)
    params = image.layers[index]
    neurons = list(range(min(4, params.n_out))) if neurons is None else list(neurons)
    bad = [n for n in neurons if not 0 <= n < params.n_out]
    if not neurons or bad:
        raise ValueError(f"neurons must be 0..{params.n_out - 1} of layer {params.name!r}, "
                         f"not {bad or neurons!r}")
    result = _run(image, x[sample:sample + 1])
    v, s = result.membranes[index][0], result.layer_spikes[index][0]
    fig, ax = plt.subplots(figsize=SIZE)
    steps = np.arange(x.shape[1])
    for n in neurons:
        (line,) = ax.plot(steps, v[:, n], marker=".", label=f"neuron {n}")
        ax.axhline(params.threshold[n], color=line.get_color(), linestyle="--", linewidth=0.8)
        fired = np.flatnonzero(s[:, n])
        ax.plot(fired, v[fired, n], "o", mfc="none", color=line.get_color(), markersize=8)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("time step")
    ax.set_ylabel("membrane v (integer LSBs)")
    ax.set_title(f"{_label(index, params)}, sample {sample}: membrane, threshold (dashed), "
                 f"spikes (circles)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def step_activity(image: Image, x: np.ndarray, layer_spikes: list[np.ndarray]):
    """Per layer and step, summed over the samples: (spikes, synaptic operations as the
    cores do them, Effective_ACs), each int64 [layers, time]."""
    steps = x.shape[1]
    n_layers = len(image.layers)
    spikes = np.zeros((n_layers, steps), dtype=np.int64)
    sops = np.zeros_like(spikes)
    acs = np.zeros_like(spikes)
    source = x
    for k, (layer, s) in enumerate(zip(image.layers, layer_spikes)):
        spikes[k] = s.sum(axis=(0, 2))
        acs[k] = input_acs(layer, source.sum(axis=0, dtype=np.int64))
        sops[k] = source.sum(axis=0, dtype=np.int64) @ layer.fan_out
        if layer.recurrent:
            prev = s[:, :-1]
            sops[k, 1:] += prev.sum(axis=(0, 2), dtype=np.int64) * layer.n_out
            acs[k, 1:] += prev.sum(axis=0, dtype=np.int64) @ np.count_nonzero(
                layer.rec_weights, axis=0)
        source = s
    return spikes, sops, acs


def activity(image: Image, spikes: np.ndarray, path) -> None:
    """Per layer and step, spikes and synaptic operations, mean over the samples."""
    plt = _pyplot()
    x = given(spikes, image.n_inputs)
    result = _run(image, x)
    n_spikes, sops, acs = (a / len(x) for a in step_activity(image, x, result.layer_spikes))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=SIZE, sharex=True)
    steps = np.arange(x.shape[1])
    for k, layer in enumerate(image.layers):
        name = _label(k, layer)
        top.plot(steps, n_spikes[k], marker=".", label=name)
        (line,) = bottom.plot(steps, sops[k], marker=".", label=f"{name}: cores")
        bottom.plot(steps, acs[k], linestyle="--", color=line.get_color(),
                    label=f"{name}: Effective_ACs")
    top.set_ylabel("spikes per step")
    bottom.set_ylabel("synaptic ops per step")
    bottom.xaxis.set_major_locator(_integer_ticks())
    bottom.set_xlabel("time step")
    top.legend(fontsize=8)
    bottom.legend(fontsize=7, ncol=2)
    top.set_title(f"activity, mean over {len(x)} samples", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def core_resources(image: Image) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """The mapper's estimate per core: (labels, [cores + 1, 2] of LUTs and block RAMs, device
    capacity). A core's share is the total less the total without it; the last row is the
    rest (SoC, host link, routing of recurrent layers)."""
    from .compiler.mapper import estimate_resources

    total = estimate_resources(image.layers, image.config)
    rows, labels = [], []
    for k, core in enumerate(image.config.cores):
        others = tuple(c for j, c in enumerate(image.config.cores) if j != k)
        less = estimate_resources(image.layers, replace(image.config, cores=others))
        rows.append([total[r][0] - less[r][0] for r in ("luts", "bram")])
        labels.append(f"core {k}: {_label(core.layer, image.layers[core.layer])} "
                      f"[{core.lo}:{core.hi}] x{core.lanes}")
    rows.append([total[r][0] - sum(row[i] for row in rows)
                 for i, r in enumerate(("luts", "bram"))])
    labels.append("SoC and shared")
    return labels, np.array(rows), {r: total[r][1] for r in ("luts", "bram")}


def resources(image: Image, path) -> None:
    """LUTs and block RAM per core (the mapper's estimate) as a share of the device."""
    plt = _pyplot()
    labels, rows, capacity = core_resources(image)
    fig, axes = plt.subplots(1, 2, figsize=SIZE, sharey=True)
    y = np.arange(len(labels))
    for ax, (i, name) in zip(axes, enumerate(("luts", "bram"))):
        share = 100 * rows[:, i] / capacity[name] if capacity[name] else np.zeros(len(rows))
        ax.barh(y, share, color=["tab:blue"] * (len(rows) - 1) + ["tab:gray"])
        used = 100 * rows[:, i].sum() / capacity[name] if capacity[name] else 0.0
        title = {"luts": "LUTs", "bram": "block RAM"}[name]
        ax.set_title(f"{title}: {int(rows[:, i].sum())} of {capacity[name]} ({used:.1f} %)",
                     fontsize=10)
        ax.set_xlabel("% of the device")
        for yy, (value, pct) in enumerate(zip(rows[:, i], share)):
            ax.text(pct, yy, f" {int(value)}", va="center", fontsize=7)
        ax.set_xlim(0, max(5.0, 1.25 * float(share.max(initial=0))))
    axes[0].set_yticks(y, labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(f"resources per core on {image.config.device} (mapper's estimate)")
    fig.tight_layout()
    _save(fig, path)


def plot(kind: str, image: Image | str | os.PathLike, spikes: np.ndarray | None, path, *,
         sample: int = 0, layer: int = -1, neurons: list[int] | None = None) -> None:
    """Draw figure `kind` (one of KINDS) of `image` on `spikes` into the PNG `path`."""
    if kind not in KINDS:
        raise ValueError(f"plot kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not isinstance(image, Image):
        image = load_image(image)
    if kind == "resources":
        return resources(image, path)
    if spikes is None:
        raise ValueError(f"a {kind} plot needs input spikes")
    if kind == "raster":
        return raster(image, spikes, path, sample=sample)
    if kind == "membrane":
        return membrane(image, spikes, path, sample=sample, layer=layer, neurons=neurons)
    return activity(image, spikes, path)

"""Model front ends: snnTorch modules, NIR graphs and model files -> the float IR.

`load_network` accepts an in-memory `torch.nn.Module`, a `nir.NIRGraph`, or a path to a `.nir`
file (HDF5) or a pickled PyTorch module. Every front end reduces the model to a chain of LIF layers
(`compiler.ir.LifLayer`): a dense projection followed by a leaky integrate-and-fire population.
Whatever the hardware cannot run is collected over the whole model and reported in one
`ModelError` that names every offending node by its path and type.

snnTorch (`snn.Leaky`, `snn.RLeaky`, `snn.Synaptic`, `snn.RSynaptic`, 1.0.0 semantics):

    Leaky   v[t] = clamp(beta, 0, 1) * v[t-1] + I[t] - R * theta      reset "subtract"
            v[t] = clamp(beta, 0, 1) * (1 - R) * v[t-1] + I[t]        reset "zero"
    RLeaky  as Leaky, with I[t] += recurrent(s[t-1]) (an nn.Linear: rec_weight and its bias)
    Synaptic  syn[t] = clamp(alpha, 0, 1) * syn[t-1] + I[t]
              v[t]   = clamp(beta, 0, 1) * v[t-1] + syn[t] - R * theta  reset "subtract"
    RSynaptic as Synaptic, with I[t] += recurrent(s[t-1])

with R = (v[t-1] > theta), which is the neuron's previous spike. RLeaky's own reset "zero" also
discards the input of the step after a spike (v[t] = (1 - R) * (beta * v[t-1] + I[t])), which
the hardware does not do; it is accepted only with `reset_delay=False`, where the reset happens
at the spike and the next step integrates from zero exactly as the IR's zero reset.

NIR graphs: compiler/nir_frontend.py (each exporting library's convention, docs/nir.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .convmaps import Maps, Projection, pair
from .ir import LifLayer, ModelError, Network, raise_problems
from .nir_frontend import check_options, from_nir, read_nir

__all__ = ["load_network", "from_torch", "from_nir"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"


def load_network(model_or_path: Any, *, dt: float | None = None, allow_pickle: bool = False,
                 input_shape: tuple[int, ...] | None = None, exporter: str | None = None,
                 reset: str | None = None, max_spikes: int | None = None) -> Network:
    """Reduce a model to the float IR.

    `model_or_path` is a `torch.nn.Module`, a `nir.NIRGraph`, or a path to a NIR file or a
    pickled PyTorch module (`torch.save(model)`; read only with `allow_pickle=True`, since
    unpickling runs code). For NIR graphs, `exporter` names the library whose convention the
    numbers follow (docs/nir.md) and `dt`, `reset`, `max_spikes` override single facts of it
    (compiler/nir_frontend.py). `input_shape`, when given, must hold as many elements as the
    first layer has inputs.
    """
    try:
        dt = check_options(exporter, dt, reset, max_spikes)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    nir_options = {"exporter": exporter, "dt": dt, "reset": reset, "max_spikes": max_spikes}
    if isinstance(model_or_path, (str, os.PathLike)):
        network = _load_file(Path(model_or_path), nir_options=nir_options,
                             allow_pickle=allow_pickle, input_shape=input_shape)
    elif _is_torch_module(model_or_path):
        _no_nir_options(nir_options)
        network = from_torch(model_or_path, input_shape=input_shape)
    elif _is_nir_graph(model_or_path):
        network = from_nir(model_or_path, **nir_options)
    else:
        raise ModelError(f"cannot load a {type(model_or_path).__name__}: give a torch.nn.Module, "
                         "a nir.NIRGraph, or the path of a .nir or PyTorch file")
    if input_shape is not None:
        shape = tuple(int(n) for n in np.atleast_1d(input_shape))
        if int(np.prod(shape)) != network.n_inputs:
            raise ModelError(f"input shape {shape} holds {int(np.prod(shape))} values but the "
                             f"first layer takes {network.n_inputs} inputs")
        network.notes.append(f"input shape {shape} flattened to {network.n_inputs} inputs")
    return network


# --- files ---------------------------------------------------------------------------------------

def _load_file(path: Path, *, nir_options: dict, allow_pickle: bool,
               input_shape: tuple[int, ...] | None = None) -> Network:
    if not path.exists():
        raise ModelError(f"no such model file: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_HDF5_MAGIC):
        _check_hdf5_sizes(path)
        try:
            graph = read_nir(path)
        except Exception as exc:  # h5py and nir raise many kinds on malformed files
            raise ModelError(f"{path} is an HDF5 file but not a readable NIR graph "
                             f"({type(exc).__name__}: {exc})") from exc
        return from_nir(graph, source=f"NIR file {path}", **nir_options)
    if head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80":
        return _load_torch_file(path, allow_pickle=allow_pickle, nir_options=nir_options,
                                input_shape=input_shape)
    raise ModelError(f"{path} is neither a NIR graph (HDF5) nor a PyTorch file")


def _no_nir_options(options: dict) -> None:
    given = [f"--{k.replace('_', '-')}" for k in ("exporter", "reset", "max_spikes")
             if options.get(k) is not None]
    if given:
        raise ModelError(f"{', '.join(given)} apply to NIR graphs; a torch module carries its "
                         f"own neurons")


#: Largest total of the datasets a NIR file may declare: 256 MiB of parameters (64 M float32),
#: far beyond any network the boards hold, and checked before a byte is decompressed.
MAX_NIR_DATA_BYTES = 256 << 20
MAX_NIR_OBJECTS = 100_000


def _check_hdf5_sizes(path: Path) -> None:
    """Refuse an HDF5 file whose datasets declare more than MAX_NIR_DATA_BYTES in all (their
    shapes and dtypes are metadata: a small file may hold a compressed dataset of gigabytes)."""
    import h5py

    total, objects, biggest = 0, 0, ("", 0)
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                nonlocal total, objects, biggest
                objects += 1
                if objects > MAX_NIR_OBJECTS:
                    raise ModelError(f"{path}: more than {MAX_NIR_OBJECTS:,} HDF5 objects; "
                                     f"not a NIR graph spikeforge reads")
                if isinstance(obj, h5py.Dataset):
                    size = int(np.prod(obj.shape, dtype=object)) * obj.dtype.itemsize
                    total += size
                    if size > biggest[1]:
                        biggest = (name, size)
                return None

            f.visititems(visit)
    except ModelError:
        raise
    except Exception as exc:  # h5py raises many kinds on malformed files
        raise ModelError(f"{path} is an HDF5 file but not a readable NIR graph "
                         f"({type(exc).__name__}: {exc})") from None
    if total > MAX_NIR_DATA_BYTES:
        raise ModelError(f"{path}: its datasets hold {total:,} bytes (the largest, "
                         f"{biggest[0]!r}, {biggest[1]:,}); at most {MAX_NIR_DATA_BYTES:,} are "
                         f"read")


def _load_torch_file(path: Path, *, allow_pickle: bool, nir_options: dict,
                     input_shape: tuple[int, ...] | None = None) -> Network:
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The safe loader refuses any object but tensors and plain containers: a module.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        if not allow_pickle:
            raise ModelError(f"{path} is a pickled PyTorch module{what}; loading it runs code: "
                             "pass --allow-pickle (allow_pickle=True) only if you trust the "
                             "file, or export the model to NIR") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelError(f"{path}: loading the pickled module failed "
                             f"({type(exc2).__name__}: {exc2})") from exc2
    except Exception as exc:
        raise ModelError(f"{path} is neither a NIR graph (HDF5) nor a readable PyTorch file "
                         f"({type(exc).__name__}: {exc})") from exc
    if _is_torch_module(obj):
        _no_nir_options(nir_options)
        return from_torch(obj, source=f"PyTorch module file {path}", input_shape=input_shape)
    if isinstance(obj, dict):
        raise ModelError(f"{path} holds a state_dict (weights without the network's structure); "
                         "spikeforge needs the module itself (torch.save(model), read with "
                         "--allow-pickle) or a NIR graph (nir.write)")
    raise ModelError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module: spikeforge "
                     "needs the module itself or a NIR graph")


def _is_torch_module(obj: Any) -> bool:
    torch = _imported("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_nir_graph(obj: Any) -> bool:
    nir = _imported("nir")
    return nir is not None and isinstance(obj, nir.NIRGraph)


def _imported(name: str):
    # An object of a library's class can only exist if the library was imported.
    import sys

    return sys.modules.get(name)


# --- torch / snnTorch ----------------------------------------------------------------------------

def from_torch(model, *, source: str | None = None,
               input_shape: tuple[int, ...] | None = None) -> Network:
    """Reduce an snnTorch model (a chain of Linear or Conv2d [+ pool] -> neuron) to the float IR.

    The chain is the module's children in registration order, recursing into nested
    `nn.Sequential` and `nn.ModuleList`: the order a plain module's `forward` is assumed to use.
    A network that starts with a Conv2d needs `input_shape` (C, H, W). Pooling between a
    convolution and its neuron pools the currents (max, or avg as a sum of W / p^2); an
    AvgPool2d after a spiking layer is folded exactly into the next projection (docs/nir.md).
    """
    import torch.nn as nn

    try:
        import snntorch as snn
    except ImportError:  # without snnTorch there can be no LIF module: everything is refused
        snn = None
    leaky_types = () if snn is None else (snn.Leaky, snn.Synaptic)
    rleaky_types = () if snn is None else (snn.RLeaky, snn.RSynaptic)
    other_neurons = () if snn is None else (snn.SpikingNeuron,)

    chain = list(_torch_chain(model, ""))
    if not chain:
        chain = [(type(model).__name__, model)]
    problems: list[str] = []
    layers: list[LifLayer] = []
    pending: Projection | None = None  # the Linear or Conv2d waiting for its neuron
    maps = Maps(input_shape)
    refused_conv = False  # pools after a refused Conv2d are not blamed as well

    for path, mod in chain:
        kind = type(mod).__name__
        if isinstance(mod, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue  # identities on a C-order spike vector at inference
        if not isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            refused_conv = False
        if isinstance(mod, nn.Unflatten):
            size = tuple(int(n) for n in mod.unflattened_size)
            if pending is None and mod.dim in (1, -len(size)) and len(size) == 3:
                maps.unflatten(size)  # a C-order vector read as a map
            else:
                problems.append(f"{path!r} ({kind}: only unflattening a spike vector into a "
                                f"map [C, H, W] (dim=1) between layers is supported)")
                maps.lost()
            continue
        if isinstance(mod, nn.Linear) and type(mod).forward is nn.Linear.forward:
            if isinstance(mod.weight, nn.parameter.UninitializedParameter):
                problems.append(f"{path!r} ({kind}: not initialised)")
                continue
            if pending is not None:
                problems.append(_no_neuron_after(pending.path, pending.mod))
            pending = Projection(path, mod, _numpy(mod.weight), None,
                                 bias=None if mod.bias is None else _numpy(mod.bias))
            try:
                pending.weight = maps.fold_dense(pending.weight)
            except ModelError as exc:
                problems.append(f"{path!r} ({kind}: {exc})")
                pending = None
        elif isinstance(mod, nn.Conv2d) and type(mod).forward is nn.Conv2d.forward:
            if pending is not None:
                problems.append(_no_neuron_after(pending.path, pending.mod))
            pending = None
            try:
                pending = Projection(path, mod, *maps.conv(_conv_geometry(mod),
                                                             _numpy(mod.weight)),
                                     bias=None if mod.bias is None else _numpy(mod.bias))
            except ModelError as exc:
                problems.append(f"{path!r} ({kind}: {exc})")
                maps.lost()
                refused_conv = True
                continue
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)) and \
                type(mod).forward in (nn.MaxPool2d.forward, nn.AvgPool2d.forward):
            if refused_conv:
                continue  # the pool of a refused convolution: the convolution is named
            try:
                size = _pool_size(mod)
                if pending is not None:
                    pending.add_pool("max" if isinstance(mod, nn.MaxPool2d) else "avg", size)
                elif isinstance(mod, nn.MaxPool2d):
                    raise ModelError("max-pooling spikes after a spiking layer is not "
                                     "supported; pool the currents (put the pool between the "
                                     "Conv2d and its neuron, as snnTorch's tutorial 6)")
                else:
                    maps.pool_spikes(size)
            except ModelError as exc:
                problems.append(f"{path!r} ({kind}: {exc})")
                maps.lost()
        elif _runs_as(mod, leaky_types + rleaky_types):
            recurrent = isinstance(mod, rleaky_types)
            issues = _lif_issues(mod, recurrent=recurrent)
            if pending is None:
                issues.insert(0, "no Linear or Conv2d before it")
            elif recurrent and pending.conv is not None:
                issues.append("a recurrent neuron after a convolution is not supported")
            if issues:
                problems.append(f"{path!r} ({kind}: {'; '.join(issues)})")
                pending = None
                maps.lost()
                continue
            proj, pending = pending, None
            try:
                layers.append(_torch_layer(proj, mod, recurrent=recurrent))
                maps.after(proj.conv)
            except ModelError as exc:
                problems.append(f"{path!r} ({kind}: {_strip_layer(exc)})")
                maps.lost()
        elif isinstance(mod, other_neurons):
            # a neuron the hardware cannot run: say why, and do not blame its Linear as well
            problems.append(f"{path!r} ({kind}: {_unsupported_neuron(mod)})")
            pending = None
            maps.lost()
        else:
            problems.append(f"{path!r} ({kind})")
    if pending is not None:
        problems.append(_no_neuron_after(pending.path, pending.mod))
    extra = []
    if problems and not isinstance(model, nn.Sequential) and \
            type(model).forward is not nn.Module.forward:
        extra.append(f"the layer order {', '.join(repr(p) for p, _ in chain)} is the order in "
                     f"which {type(model).__name__}.__init__ registers its modules, not the "
                     f"order its forward() calls them: register them in call order, or use "
                     f"nn.Sequential")
    raise_problems(problems, extra, order=[path for path, _ in chain])
    network = Network(n_inputs=layers[0].n_in if layers else 0, layers=layers,
                      source=source or f"torch module {type(model).__name__}")
    if not isinstance(model, nn.Sequential):
        network.notes.append("layer order taken from the module's registration order")
    network.notes.extend(maps.notes)
    return network


def _conv_geometry(mod) -> dict:
    """A torch Conv2d's stride and padding, refused by name where the hardware differs."""
    if pair(mod.dilation, "dilation") != 1:
        raise ModelError(f"dilation must be 1, not {mod.dilation!r}")
    if mod.groups != 1:
        raise ModelError(f"groups must be 1, not {mod.groups!r}")
    if mod.padding_mode != "zeros":
        raise ModelError(f"padding_mode must be 'zeros', not {mod.padding_mode!r}")
    pair(mod.kernel_size, "kernel size")
    padding = 0 if mod.padding == "valid" else mod.padding
    if isinstance(padding, str):
        raise ModelError(f"padding must be an integer or 'valid', not {padding!r}")
    return {"stride": pair(mod.stride, "stride"), "padding": pair(padding, "padding")}


def _pool_size(mod) -> int:
    """A torch pool's window, which must equal its stride (tiles without overlap)."""
    size = pair(mod.kernel_size, "kernel size")
    stride = size if mod.stride is None or mod.stride == () else pair(mod.stride, "stride")
    if stride != size:
        raise ModelError(f"stride must equal the kernel size {size}, not {mod.stride!r}")
    if pair(mod.padding, "padding") != 0:
        raise ModelError(f"padding must be 0, not {mod.padding!r}")
    if pair(getattr(mod, "dilation", 1), "dilation") != 1:
        raise ModelError(f"dilation must be 1, not {mod.dilation!r}")
    if getattr(mod, "return_indices", False):
        raise ModelError("return_indices must be False")
    if getattr(mod, "divisor_override", None) is not None:
        raise ModelError(f"divisor_override must be None, not {mod.divisor_override!r}")
    return size


def _torch_chain(module, prefix: str):
    import torch.nn as nn

    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if type(child) in (nn.Sequential, nn.ModuleList):
            yield from _torch_chain(child, path)
        else:
            yield path, child


_DYNAMICS = ("forward", "_base_state_function", "_base_sub", "_base_zero", "_base_int", "fire",
             "mem_reset")


def _runs_as(mod, bases: tuple[type, ...]) -> bool:
    # A subclass (snnTorch's own DeltaLeaky, say) that overrides the dynamics is another neuron.
    return any(isinstance(mod, base) and all(getattr(type(mod), fn, None) is getattr(base, fn, None)
                                             for fn in _DYNAMICS)
               for base in bases)


_UNSUPPORTED_NEURONS = {
    "Alpha": "a dual-exponential (Alpha) neuron is not supported; snn.Synaptic is the "
             "current-based neuron the hardware runs",
    "Lapicque": "Lapicque's RC neuron is not supported; use snn.Leaky with "
                "beta = 1 - time_step / (R * C) and scale the weights by time_step / C",
}


def _unsupported_neuron(mod) -> str:
    kind = type(mod).__name__
    if kind in _UNSUPPORTED_NEURONS:
        return _UNSUPPORTED_NEURONS[kind]
    return ("a neuron model the hardware does not run (it runs Leaky, RLeaky, Synaptic and "
            "RSynaptic, unmodified)")


def _no_neuron_after(path: str, mod) -> str:
    return f"{path!r} ({type(mod).__name__}: no LIF neuron after it)"


def _lif_issues(mod, *, recurrent: bool) -> list[str]:
    """What makes an snnTorch neuron differ from the hardware's LIF (empty if nothing)."""
    import torch.nn as nn

    issues = []
    reset = _reset_mechanism(mod)
    delayed = bool(getattr(mod, "reset_delay", True))
    threshold = _numpy(mod.threshold)
    if getattr(mod, "inhibition", False):
        issues.append("inhibition (winner-take-all) is not supported")
    if getattr(mod, "state_quant", False):
        issues.append("state_quant is not supported")
    graded = getattr(mod, "graded_spikes_factor", None)
    if graded is not None and not np.all(_numpy(graded) == 1.0):
        issues.append("graded_spikes_factor must be 1 (the hardware emits unit spikes)")
    if reset == "none":
        issues.append("reset_mechanism='none' (no reset) is not supported: the hardware "
                      "resets by subtraction or to zero")
    elif reset not in ("subtract", "zero"):
        issues.append(f"unknown reset mechanism {reset!r}")
    elif not delayed and reset == "subtract":
        issues.append("reset_delay=False with reset_mechanism='subtract' is not supported")
    elif not delayed and np.any(threshold < 0):
        issues.append("reset_delay=False needs a non-negative threshold")
    elif (recurrent or hasattr(mod, "alpha")) and reset == "zero" and delayed:
        issues.append(f"{type(mod).__name__}'s reset_mechanism='zero' also discards the input "
                      f"of the step after a spike, which the hardware keeps "
                      f"(use reset_delay=False)")
    if recurrent:
        if not getattr(mod, "all_to_all", True):
            issues.append("one-to-one recurrence (all_to_all=False) is not supported")
        elif type(getattr(mod, "recurrent", None)) is not nn.Linear:
            kind = type(getattr(mod, "recurrent", None)).__name__
            issues.append(f"its recurrent connection is a {kind}, not a Linear")
    return issues


def _reset_mechanism(mod) -> str:
    # state_function is fixed at construction and is what forward() runs; the reset_mechanism
    # property can be reassigned later without changing it.
    fn = getattr(getattr(mod, "state_function", None), "__name__", None)
    by_fn = {"_base_sub": "subtract", "_base_zero": "zero", "_base_int": "none"}
    if fn in by_fn:
        return by_fn[fn]
    return str(getattr(mod, "reset_mechanism", "subtract"))


def _torch_layer(proj: Projection, lif, *, recurrent: bool) -> LifLayer:
    weight, conv = proj.weight, proj.conv
    bias = proj.bias_per_neuron()
    rec_weight = None
    if recurrent:
        rec_weight = _numpy(lif.recurrent.weight)
        if lif.recurrent.bias is not None:
            rec_bias = _numpy(lif.recurrent.bias)
            if rec_bias.shape != bias.shape:
                raise ModelError(f"layer {proj.path!r}: recurrent bias has {rec_bias.size} "
                                 f"values for {bias.size} neurons")
            bias = bias + rec_bias
    reset = _reset_mechanism(lif)

    def per_neuron(value) -> np.ndarray:
        arr = _numpy(value)
        if conv is None or arr.size == 1:
            return arr
        try:  # a neuron parameter broadcast over the map, as torch broadcasts it
            return np.broadcast_to(arr, conv.out_shape).reshape(-1)
        except ValueError:
            raise ModelError(f"layer {proj.path!r}: a parameter of shape {list(arr.shape)} "
                             f"does not broadcast to the map {list(conv.out_shape)}") from None

    alpha = np.clip(per_neuron(lif.alpha), 0.0, 1.0) if hasattr(lif, "alpha") else None
    return LifLayer(name=proj.path, weight=weight, bias=bias,
                    beta=np.clip(per_neuron(lif.beta), 0.0, 1.0),
                    threshold=per_neuron(lif.threshold), reset=reset, rec_weight=rec_weight,
                    alpha=alpha, conv=conv)


def _numpy(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().double().numpy()
    return np.asarray(tensor, dtype=np.float64)


def _strip_layer(exc: ModelError) -> str:
    return re.sub(r"^layer '[^']*': ", "", str(exc))


# --- NIR: compiler/nir_frontend.py --------------------------------------------------------------

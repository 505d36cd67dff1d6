"""Model front ends: snnTorch modules, NIR graphs and model files -> the float IR.

`load_network` accepts an in-memory `torch.nn.Module`, a `nir.NIRGraph`, or a path to a `.nir`
file (HDF5) or a pickled PyTorch module. Every front end reduces the model to a chain of LIF layers
(`compiler.ir.LifLayer`): a dense projection followed by a leaky integrate-and-fire population.
Whatever the hardware cannot run is collected over the whole model and reported in one
`ModelError` that names every offending node by its path and type.

snnTorch (`snn.Leaky`, `snn.RLeaky`, 1.0.0 semantics):

    Leaky   v[t] = clamp(beta, 0, 1) * v[t-1] + I[t] - R * theta      reset "subtract"
            v[t] = clamp(beta, 0, 1) * (1 - R) * v[t-1] + I[t]        reset "zero"
    RLeaky  as Leaky, with I[t] += recurrent(s[t-1]) (an nn.Linear: rec_weight and its bias)

with R = (v[t-1] > theta), which is the neuron's previous spike. RLeaky's own reset "zero" also
discards the input of the step after a spike (v[t] = (1 - R) * (beta * v[t-1] + I[t])), which
the hardware does not do; it is accepted only with `reset_delay=False`, where the reset happens
at the spike and the next step integrates from zero exactly as the IR's zero reset.

NIR (`LIF`, `IF`, with forward Euler at time step dt):

    LIF  tau dv/dt = (v_leak - v) + r I   ->  beta = 1 - dt/tau,  I scaled by dt * r / tau
    IF   dv/dt = r I                      ->  beta = 1,           I scaled by r
    v > v_threshold fires; v_reset (which must be 0) maps to the zero reset; v_leak must be 0.

The input gain is multiplied into the weights and bias of the Affine/Linear before the neuron
(and into the recurrent weights). NIR carries no dt: it is inferred from r = tau/dt (snnTorch's
export convention, which gives gain 1) when that is consistent across all LIF nodes; otherwise
the caller must give it. An IF node's gain is r per time step (snnTorch and Sinabs export IF with
r = 1 for a unit step), so IF nodes neither need nor constrain dt.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .ir import LifLayer, ModelError, Network

__all__ = ["load_network", "from_torch", "from_nir"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_DT_RTOL = 1e-5  # float32 round trips of tau = dt / (1 - beta), r = tau / dt


def load_network(model_or_path: Any, *, dt: float | None = None, allow_pickle: bool = False,
                 input_shape: tuple[int, ...] | None = None) -> Network:
    """Reduce a model to the float IR.

    `model_or_path` is a `torch.nn.Module`, a `nir.NIRGraph`, or a path to a NIR file or a
    pickled PyTorch module (`torch.save(model)`; read only with `allow_pickle=True`, since
    unpickling runs code). `dt` is the time step for NIR LIF nodes (inferred when omitted).
    `input_shape`, when given, must hold as many elements as the first layer has inputs.
    """
    if dt is not None:
        dt = float(dt)
        if not (np.isfinite(dt) and dt > 0):
            raise ModelError(f"the time step must be a positive number, not {dt!r}")
    if isinstance(model_or_path, (str, os.PathLike)):
        network = _load_file(Path(model_or_path), dt=dt, allow_pickle=allow_pickle)
    elif _is_torch_module(model_or_path):
        network = from_torch(model_or_path)
    elif _is_nir_graph(model_or_path):
        network = from_nir(model_or_path, dt=dt)
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

def _load_file(path: Path, *, dt: float | None, allow_pickle: bool) -> Network:
    if not path.exists():
        raise ModelError(f"no such model file: {path}")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_HDF5_MAGIC):
        import nir

        _check_hdf5_sizes(path)
        try:
            graph = nir.read(str(path))
        except Exception as exc:  # h5py and nir raise many kinds on malformed files
            raise ModelError(f"{path} is an HDF5 file but not a readable NIR graph "
                             f"({type(exc).__name__}: {exc})") from exc
        return from_nir(graph, dt=dt, source=f"NIR file {path}")
    if head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80":
        return _load_torch_file(path, allow_pickle=allow_pickle)
    raise ModelError(f"{path} is neither a NIR graph (HDF5) nor a PyTorch file")


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


def _load_torch_file(path: Path, *, allow_pickle: bool) -> Network:
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
        return from_torch(obj, source=f"PyTorch module file {path}")
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

def from_torch(model, *, source: str | None = None) -> Network:
    """Reduce an snnTorch model (Linear -> Leaky/RLeaky chain) to the float IR.

    The chain is the module's children in registration order, recursing into nested
    `nn.Sequential` and `nn.ModuleList`: the order a plain module's `forward` is assumed to use.
    """
    import torch.nn as nn

    try:
        import snntorch as snn
    except ImportError:  # without snnTorch there can be no LIF module: everything is refused
        snn = None
    leaky_types = () if snn is None else (snn.Leaky,)
    rleaky_types = () if snn is None else (snn.RLeaky,)

    chain = list(_torch_chain(model, ""))
    if not chain:
        chain = [(type(model).__name__, model)]
    problems: list[str] = []
    layers: list[LifLayer] = []
    pending: tuple[str, Any] | None = None  # the Linear waiting for its neuron

    for path, mod in chain:
        kind = type(mod).__name__
        if isinstance(mod, (nn.Flatten, nn.Identity, nn.Dropout)):
            continue  # identities on a flat spike vector at inference
        if isinstance(mod, nn.Linear) and type(mod).forward is nn.Linear.forward:
            if isinstance(mod.weight, nn.parameter.UninitializedParameter):
                problems.append(f"{path!r} ({kind}: not initialised)")
                continue
            if pending is not None:
                problems.append(_no_neuron_after(*pending))
            pending = (path, mod)
        elif _runs_as(mod, leaky_types + rleaky_types):
            recurrent = isinstance(mod, rleaky_types)
            issues = _lif_issues(mod, recurrent=recurrent)
            if pending is None:
                issues.insert(0, "no Linear before it")
            if issues:
                problems.append(f"{path!r} ({kind}: {'; '.join(issues)})")
                pending = None
                continue
            lin_path, lin = pending
            pending = None
            try:
                layers.append(_torch_layer(lin_path, lin, mod, recurrent=recurrent))
            except ModelError as exc:
                problems.append(f"{path!r} ({kind}: {_strip_layer(exc)})")
        else:
            problems.append(f"{path!r} ({kind})")
    if pending is not None:
        problems.append(_no_neuron_after(*pending))
    _raise_if(problems, order=[path for path, _ in chain])
    network = Network(n_inputs=layers[0].n_in if layers else 0, layers=layers,
                      source=source or f"torch module {type(model).__name__}")
    if not isinstance(model, nn.Sequential):
        network.notes.append("layer order taken from the module's registration order")
    return network


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
    elif recurrent and reset == "zero" and delayed:
        issues.append("RLeaky's reset_mechanism='zero' also discards the input of the step "
                      "after a spike, which the hardware keeps (use reset_delay=False)")
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


def _torch_layer(lin_path: str, lin, lif, *, recurrent: bool) -> LifLayer:
    weight = _numpy(lin.weight)
    bias = _numpy(lin.bias) if lin.bias is not None else np.zeros(weight.shape[0])
    rec_weight = None
    if recurrent:
        rec_weight = _numpy(lif.recurrent.weight)
        if lif.recurrent.bias is not None:
            rec_bias = _numpy(lif.recurrent.bias)
            if rec_bias.shape != bias.shape:
                raise ModelError(f"layer {lin_path!r}: recurrent bias has {rec_bias.size} "
                                 f"values for {bias.size} neurons")
            bias = bias + rec_bias
    reset = _reset_mechanism(lif)
    return LifLayer(name=lin_path, weight=weight, bias=bias,
                    beta=np.clip(_numpy(lif.beta), 0.0, 1.0),
                    threshold=_numpy(lif.threshold), reset=reset, rec_weight=rec_weight)


def _numpy(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().cpu().double().numpy()
    return np.asarray(tensor, dtype=np.float64)


def _strip_layer(exc: ModelError) -> str:
    return re.sub(r"^layer '[^']*': ", "", str(exc))


def _raise_if(problems: list[str], extra: list[str] = (), order: list[str] = ()) -> None:
    def position(text: str) -> int:  # problems in the model's own order, strays last
        return next((i for i, name in enumerate(order) if text.startswith(f"{name!r} (")),
                    len(order))

    problems = sorted(problems, key=position)
    parts = []
    if problems:
        parts.append("the hardware cannot run: " + ", ".join(problems))
    parts.extend(extra)
    if parts:
        raise ModelError("; ".join(parts))


# --- NIR -----------------------------------------------------------------------------------------

def from_nir(graph, *, dt: float | None = None, source: str | None = None) -> Network:
    """Reduce a NIR graph (Input -> [Affine|Linear -> LIF|IF]... -> Output) to the float IR.

    Nested graphs are inlined (inner nodes are named `outer.inner`). A cycle LIF -> Affine/Linear
    -> LIF, in which the Affine/Linear has no other connection, is the layer's all-to-all
    recurrence (snnTorch exports RLeaky so).
    """
    import nir

    problems: list[str] = []
    nodes, edges = _inline(graph, "", problems)

    neurons = (nir.LIF, nir.IF)
    dense = (nir.Affine, nir.Linear)
    succ: dict[str, list[str]] = {name: [] for name in nodes}
    pred: dict[str, list[str]] = {name: [] for name in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)

    # Recurrences first: they take their weight node off the forward chain.
    rec_of: dict[str, str] = {}
    for name, node in nodes.items():
        if not isinstance(node, dense) or len(pred[name]) != 1 or len(succ[name]) != 1:
            continue
        src, dst = pred[name][0], succ[name][0]
        if src == dst and isinstance(nodes[src], neurons) and src not in rec_of:
            rec_of[src] = name
            succ[src].remove(name)
            pred[src].remove(name)

    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"the NIR graph must have one Input and one Output node, not "
                         f"{len(inputs)} ({', '.join(map(repr, inputs))}) and {len(outputs)} "
                         f"({', '.join(map(repr, outputs))})")

    chain: list[str] = []
    seen = {inputs[0]}
    cur = inputs[0]
    while True:
        nxt = succ[cur]
        if len(nxt) != 1:
            what = "leads nowhere" if not nxt else f"fans out to {', '.join(map(repr, nxt))}"
            problems.append(f"{cur!r} ({type(nodes[cur]).__name__}: {what})")
            break
        cur = nxt[0]
        if cur in seen:
            problems.append(f"{cur!r} ({type(nodes[cur]).__name__}: closes a cycle the "
                            "hardware cannot run)")
            break
        seen.add(cur)
        if len(pred[cur]) != 1:
            problems.append(f"{cur!r} ({type(nodes[cur]).__name__}: sums "
                            f"{', '.join(map(repr, pred[cur]))}; only a chain can run)")
        if isinstance(nodes[cur], nir.Output):
            break
        chain.append(cur)
    stray = [n for n in nodes if n not in seen and n != inputs[0] and n not in rec_of.values()]
    for name in stray:
        problems.append(f"{name!r} ({type(nodes[name]).__name__}: not on the path from "
                        f"{inputs[0]!r} to {outputs[0]!r})")

    lif_names = [n for n in chain if isinstance(nodes[n], nir.LIF)]
    notes: list[str] = []
    extra: list[str] = []
    if lif_names:
        if dt is None:
            dt, why = _infer_dt({n: nodes[n] for n in lif_names})
            if dt is None:
                extra.append(why)
            else:
                notes.append(f"dt = {dt:g} inferred from r = tau/dt of every LIF node")
        else:
            notes.append(f"dt = {dt:g} given")

    layers: list[LifLayer] = []
    pending: str | None = None
    for name in chain:
        node = nodes[name]
        kind = type(node).__name__
        if isinstance(node, nir.Flatten):
            continue
        if isinstance(node, dense):
            if np.ndim(node.weight) != 2:
                problems.append(f"{name!r} ({kind}: weight must be 2-D, not "
                                f"{np.shape(node.weight)})")
                continue
            if pending is not None:
                problems.append(f"{pending!r} ({type(nodes[pending]).__name__}: no LIF "
                                "neuron after it)")
            pending = name
        elif isinstance(node, neurons):
            issues = _nir_neuron_issues(node, dt)
            if pending is None:
                issues.insert(0, "no Affine or Linear before it")
            rec = rec_of.get(name)
            if rec is not None and np.ndim(nodes[rec].weight) != 2:
                issues.append(f"recurrent {rec!r} weight must be 2-D")
            if issues:
                problems.append(f"{name!r} ({kind}: {'; '.join(issues)})")
                pending = None
                continue
            if dt is None and isinstance(node, nir.LIF):
                pending = None
                continue  # reported once, as the missing dt
            try:
                layers.append(_nir_layer(pending, nodes[pending], node, dt,
                                         rec, None if rec is None else nodes[rec]))
            except ModelError as exc:
                problems.append(f"{name!r} ({kind}: {_strip_layer(exc)})")
            pending = None
        else:
            problems.append(f"{name!r} ({kind})")
    if pending is not None:
        problems.append(f"{pending!r} ({type(nodes[pending]).__name__}: no LIF neuron after it)")
    _raise_if(problems, extra, order=[inputs[0], *chain, outputs[0]])
    if not layers:
        raise ModelError("the NIR graph has no LIF layer")
    network = Network(n_inputs=layers[0].n_in, layers=layers, source=source or "NIR graph")
    in_shape = getattr(nodes[inputs[0]], "input_type", {}).get("input")
    if in_shape is not None:
        notes.append(f"NIR input shape {tuple(int(n) for n in np.atleast_1d(in_shape))}")
    network.notes.extend(notes)
    return network


def _inline(graph, prefix: str, problems: list[str]):
    """Flatten nested NIRGraphs into one node dict and edge list (inner Input/Output dropped)."""
    import nir

    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, list[str]] = {}  # subgraph -> nodes its Input feeds
    exit_: dict[str, list[str]] = {}  # subgraph -> nodes feeding its Output
    for name, node in graph.nodes.items():
        full = prefix + name
        if not isinstance(node, nir.NIRGraph):
            nodes[full] = node
            continue
        sub_nodes, sub_edges = _inline(node, full + ".", problems)
        ins = [n for n, s in sub_nodes.items() if isinstance(s, nir.Input)]
        outs = [n for n, s in sub_nodes.items() if isinstance(s, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            problems.append(f"{full!r} (NIRGraph: has {len(ins)} Input and {len(outs)} Output "
                            "nodes; a nested graph needs one of each)")
            continue
        entry[full] = [b for a, b in sub_edges if a == ins[0]]
        exit_[full] = [a for a, b in sub_edges if b == outs[0]]
        nodes.update({n: s for n, s in sub_nodes.items() if n not in (ins[0], outs[0])})
        edges.extend((a, b) for a, b in sub_edges if a != ins[0] and b != outs[0])
    for a, b in graph.edges:
        a, b = prefix + a, prefix + b
        srcs = exit_.get(a, [a])
        dsts = entry.get(b, [b])
        edges.extend((s, d) for s in srcs for d in dsts if s in nodes and d in nodes)
    return nodes, edges


def _infer_dt(lifs: dict[str, Any]) -> tuple[float | None, str]:
    per_node = {}
    for name, node in lifs.items():
        tau = _numpy(node.tau).reshape(-1)
        r = _numpy(node.r).reshape(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = tau / r
        per_node[name] = ratio
    values = np.concatenate(list(per_node.values()))
    if values.size and np.all(np.isfinite(values)) and np.all(values > 0):
        lo, hi = values.min(), values.max()
        if hi - lo <= _DT_RTOL * hi:
            return float(np.mean(values)), ""
    spread = ", ".join(f"{name!r} {_range(v)}" for name, v in per_node.items())
    return None, (f"NIR carries no time step and tau/r does not give one consistent dt "
                  f"({spread}): give --dt")


def _range(v: np.ndarray) -> str:
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return "none"
    lo, hi = finite.min(), finite.max()
    return f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"


def _nir_neuron_issues(node, dt: float | None) -> list[str]:
    import nir

    issues = []
    v_reset = node.v_reset if node.v_reset is not None else 0.0
    if np.any(_numpy(v_reset) != 0):
        issues.append(f"v_reset {_range(_numpy(v_reset).reshape(-1))} is not "
                      "expressible; only v_reset = 0 (reset to zero) is")
    if isinstance(node, nir.LIF):
        if np.any(_numpy(node.v_leak) != 0):
            issues.append("v_leak != 0 is not supported")
        tau = _numpy(node.tau)
        if np.any(~(tau > 0)):
            issues.append("tau must be positive")
        elif dt is not None and np.any(dt > tau):
            issues.append(f"tau {_range(tau.reshape(-1))} is shorter than dt = {dt:g}, so "
                          "beta = 1 - dt/tau would be negative")
    return issues


def _nir_layer(name: str, dense_node, neuron, dt: float | None, rec_name: str | None,
               rec_node) -> LifLayer:
    import nir

    weight = _numpy(dense_node.weight)
    n_out = weight.shape[0]
    bias = (_numpy(dense_node.bias).reshape(-1)
            if isinstance(dense_node, nir.Affine) else np.zeros(n_out))

    def per_neuron(value, what: str) -> np.ndarray:
        arr = _numpy(value).reshape(-1)
        if arr.size == 1:
            return np.full(n_out, arr[0])
        if arr.size != n_out:
            raise ModelError(f"{what} has {arr.size} values for the {n_out} outputs of {name!r}")
        return arr

    threshold = per_neuron(neuron.v_threshold, "v_threshold")
    r = per_neuron(neuron.r, "r")
    if isinstance(neuron, nir.LIF):
        tau = per_neuron(neuron.tau, "tau")
        beta = 1.0 - dt / tau
        gain = dt * r / tau
    else:
        beta = np.ones(n_out)
        gain = r
    if bias.size == 1:
        bias = np.full(n_out, bias[0])
    rec_weight = None
    if rec_node is not None:
        rec_weight = _numpy(rec_node.weight)
        if rec_weight.shape != (n_out, n_out):
            raise ModelError(f"recurrent {rec_name!r} weight is {rec_weight.shape}, "
                             f"not {(n_out, n_out)}")
        rec_weight = gain[:, None] * rec_weight
        if isinstance(rec_node, nir.Affine):
            bias = bias + per_neuron(rec_node.bias, f"recurrent {rec_name!r} bias")
    if bias.shape != (n_out,):
        raise ModelError(f"bias has {bias.size} values for {n_out} outputs")
    return LifLayer(name=name, weight=gain[:, None] * weight, bias=gain * bias, beta=beta,
                    threshold=threshold, reset="zero", rec_weight=rec_weight)

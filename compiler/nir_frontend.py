"""NIR front end: a NIR graph -> the float IR, read under one exporting library's convention.

NIR carries no time step, no reset mode and no spike count, and every library writes tau, r,
v_threshold and w_in its own way (docs/nir.md has a table per library). A `Convention` holds those
facts for one exporter; `from_nir(graph, exporter=..., dt=..., reset=..., max_spikes=...)` applies
it, with the explicit options overriding single facts. Without an exporter only what the graph
says unambiguously is used, and an open choice that changes the result is refused with the
options named.

Per neuron node, in the IR's terms (compiler/ir.py: syn and v enter with gain 1, every input gain
folded into the weights and bias before the node):

    LIF      beta = decay(tau),              gain = lif_gain
    IF       beta = 1,                       gain = dt * r  (NIR)  or  r  (per step)
    CubaLIF  alpha = decay(tau_syn), beta = decay(tau_mem), gain = syn_gain * mem_gain
    LI       beta = decay(tau),              gain = li_gain, no spikes (a readout)
    decay(tau) = 1 - dt/tau  (NIR's forward Euler)  or  exp(-dt/tau)  (Sinabs, Rockpool)

A cycle neuron -> Affine/Linear -> neuron whose weight node has no other connection is the
layer's all-to-all recurrence (snnTorch exports RLeaky/RSynaptic so); its weights take the same
input gain. Every layer's numbers and where each came from are in `Network.provenance`.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .convmaps import Maps, Projection, pair
from .ir import MAX_SPIKES_LIMIT, RESET_MODES, LifLayer, ModelError, Network, raise_problems

__all__ = ["EXPORTERS", "CONVENTIONS", "Convention", "from_nir", "read_nir", "check_options"]

EXPORTERS = ("snntorch", "norse", "sinabs", "rockpool", "spikingjelly")
_DT_RTOL = 1e-4  # float32 round trips of tau = dt / (1 - beta), r = tau / dt
_EXPORTER_LIST = "{" + ",".join(EXPORTERS) + "}"


@dataclass(frozen=True)
class Convention:
    """What one exporter's numbers mean (docs/nir.md)."""

    name: str
    dt: float | None  # the step the library ran with (None: from the graph)
    dt_source: str
    decay: str  # "euler": 1 - dt/tau | "exp": exp(-dt/tau)
    lif_gain: str  # "euler": dt r/tau | "r" | "one"
    syn_gain: str  # CubaLIF input: "euler": dt w_in/tau_syn | "w_in" | "alpha" | "refuse"
    mem_gain: str  # CubaLIF membrane: "euler": dt r/tau_mem | "one"
    li_gain: str  # "euler" | "r" | "beta"
    if_gain: str  # "dt_r" (NIR) | "r" (per step)
    reset: str | None
    reset_delay: bool  # True: subtract after the next decay (snnTorch); False: at the spike
    compare: str
    max_spikes: int | None
    euler_dt_squared: bool = False  # Norse writes tau = dt / tau_mem_inv: Euler needs dt^2
    dt_from_r: bool = False  # Rockpool: r = tau exp(-dt/tau) / dt gives dt back
    fallback_dt: float | None = None  # when no node gives dt (snnTorch's beta = 1: r = tau = inf)


CONVENTIONS: dict[str | None, Convention] = {
    # bare NIR: a given --reset subtract applies after the next decay (snnTorch, docs/neuron.md)
    None: Convention("NIR", None, "", "euler", "euler", "euler", "euler", "euler", "dt_r",
                     None, True, ">", None),
    "snntorch": Convention("snntorch", None, "", "euler", "euler", "euler", "euler", "euler",
                           "dt_r", "subtract", True, ">", 1),
    "norse": Convention("norse", 1e-3, "Norse's to_nir default dt = 1e-3", "euler", "euler",
                        "w_in", "euler", "euler", "r", "zero", False, ">", 1,
                        euler_dt_squared=True),
    "sinabs": Convention("sinabs", 1.0, "Sinabs runs in unit steps", "exp", "r", "refuse",
                         "one", "r", "r", "subtract", False, ">=", MAX_SPIKES_LIMIT),
    "rockpool": Convention("rockpool", None, "", "exp", "one", "alpha", "one", "beta", "r",
                           "subtract", False, ">=", MAX_SPIKES_LIMIT, dt_from_r=True),
    "spikingjelly": Convention("spikingjelly", 1e-4, "SpikingJelly's export_to_nir default "
                               "dt = 1e-4", "euler", "euler", "euler", "euler", "euler", "dt_r",
                               "zero", False, ">=", 1),
}
# snnTorch writes r = tau/dt with dt = 1e-4; the graph's own tau/r says so, node by node
CONVENTIONS["snntorch"] = replace(CONVENTIONS["snntorch"], fallback_dt=1e-4)

_MULTI_DEFAULT = {
    "sinabs": f"Sinabs' MultiSpike is unbounded; the hardware emits at most {MAX_SPIKES_LIMIT}",
    "rockpool": f"Rockpool's max_spikes_per_dt defaults to 2^16; the hardware emits at most "
                f"{MAX_SPIKES_LIMIT}",
}


def check_options(exporter: str | None = None, dt: float | None = None,
                  reset: str | None = None, max_spikes: int | None = None) -> float | None:
    """Check the NIR options' values (one-line errors); returns dt as a float."""
    if exporter is not None and exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    if dt is not None:
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            raise ValueError(f"dt must be a positive number of seconds, not {dt!r}") from None
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a positive number of seconds, not {dt!r}")
    if reset is not None and reset not in RESET_MODES:
        raise ValueError(f"reset must be one of {', '.join(RESET_MODES)}, not {reset!r}")
    if max_spikes is not None and (isinstance(max_spikes, bool)
                                   or not isinstance(max_spikes, (int, np.integer))
                                   or not 1 <= max_spikes <= MAX_SPIKES_LIMIT):
        raise ValueError(f"max_spikes must be an integer 1..{MAX_SPIKES_LIMIT}, "
                         f"not {max_spikes!r}")
    return dt


# --- reading -------------------------------------------------------------------------------------

def read_nir(path: Path):
    """Read a NIR file with any nir from 1.0.4 on, without nir's own type check.

    spikeforge checks the graph itself, the same way for files and graphs in memory: Norse and
    Rockpool write a batch dimension into Input types, which nir >= 1.0.5 refuses on reading.
    Files written by a newer nir than the one installed (fields such as v_reset, which nir 1.0.4
    -- the version Sinabs and Rockpool pin -- does not know) are read field by field, and a field
    the node class lacks is kept as an attribute, so its value is still checked.
    """
    import nir

    try:
        if "type_check" in inspect.signature(nir.read).parameters:
            return nir.read(str(path), type_check=False)
        return nir.read(str(path))
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
    import h5py
    from nir.serialization import hdf2dict

    with h5py.File(str(path), "r") as f:
        return _node_from_dict(nir, hdf2dict(f["node"]))


def _node_from_dict(nir, data: dict):
    data = dict(data)
    kind = data.pop("type")
    if kind == "NIRGraph":
        nodes = {str(k): _node_from_dict(nir, v) for k, v in data["nodes"].items()}
        edges = [(_text(a), _text(b)) for a, b in data["edges"]]
        if "type_check" in inspect.signature(nir.NIRGraph).parameters:
            return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
        return nir.NIRGraph(nodes=nodes, edges=edges)
    cls = getattr(nir, kind, None)
    if cls is None:
        raise ValueError(f"unknown NIR node type {kind!r}")
    known = set(inspect.signature(cls).parameters)
    extra = {k: v for k, v in data.items() if k not in known}
    if kind in ("Input", "Output") and "shape" in extra:  # nir <= 1.0.4 stores a shape
        key = "input_type" if kind == "Input" else "output_type"
        data = {key: {"input" if kind == "Input" else "output": extra.pop("shape")}}
    node = cls(**{k: v for k, v in data.items() if k in known})
    for k, v in extra.items():
        if k != "metadata":
            setattr(node, k, v)
    return node


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensors, in graphs built in memory
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _range(v: np.ndarray) -> str:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return "inf" if v.size and np.all(np.isinf(v)) else "none"
    lo, hi = finite.min(), finite.max()
    text = f"{lo:.6g}" if lo == hi else f"{lo:.6g}..{hi:.6g}"
    return text + (" and inf" if finite.size < v.size else "")


def _span(v: np.ndarray) -> list[float]:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    return [float(v.min()), float(v.max())] if v.size else []


# --- the graph -----------------------------------------------------------------------------------

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


def _io_width(node, key: str) -> tuple[int, ...] | None:
    types = getattr(node, "input_type" if key == "input" else "output_type", None) or {}
    shape = types.get(key) if isinstance(types, dict) else None
    if shape is None:
        return None
    arr = _numpy(shape).reshape(-1)
    return tuple(int(n) for n in arr)


def _check_io(name: str, shape: tuple[int, ...] | None, width: int, what: str,
              notes: list[str], problems: list[str]) -> None:
    """Input/Output types: the layer's width, or that width behind leading dimensions (a batch
    dimension of 1 that Norse and Rockpool write, the time steps Sinabs writes)."""
    if shape is None or len(shape) == 0:
        return
    if int(np.prod(shape)) == width:
        return
    if len(shape) > 3 and int(np.prod(shape[-3:])) == width:
        notes.append(f"{what} type {list(shape)} of {name!r}: the map {list(shape[-3:])} "
                     f"behind leading dimensions {list(shape[:-3])} (batch or time) dropped")
        return
    if shape[-1] == width:
        notes.append(f"{what} type {list(shape)} of {name!r}: leading dimensions "
                     f"{list(shape[:-1])} (batch or time, as the exporter traced its sample) "
                     f"dropped")
        return
    problems.append(f"{name!r} ({what}: type {list(shape)} does not hold the {width} values of "
                    f"the layer it connects to)")


# --- time step -----------------------------------------------------------------------------------

def _lambert_u(r: np.ndarray) -> np.ndarray:
    """u with u exp(u) = 1/r (Rockpool's r = tau exp(-dt/tau)/dt, u = dt/tau), by Newton."""
    target = 1.0 / r
    u = np.log1p(target)  # a start below the root for all target > 0
    for _ in range(60):
        f = u * np.exp(u) - target
        u = u - f / (np.exp(u) * (u + 1.0))
    return u


def _taus(node) -> tuple[np.ndarray, np.ndarray] | None:
    import nir

    if isinstance(node, nir.CubaLIF):
        return _numpy(node.tau_mem).reshape(-1), _numpy(node.r).reshape(-1)
    if isinstance(node, (nir.LIF, nir.LI)):
        return _numpy(node.tau).reshape(-1), _numpy(node.r).reshape(-1)
    return None


def _resolve_dt(conv: Convention, neurons: dict[str, Any], dt: float | None
                ) -> tuple[float | None, str, str | None]:
    """(dt the library ran with, where it came from, why it is open) for the graph's neurons."""
    import nir

    if dt is not None:
        return dt, "given (--dt)", None
    if conv.dt is not None:
        return conv.dt, conv.dt_source, None
    pairs = {name: _taus(node) for name, node in neurons.items() if _taus(node) is not None}
    if conv.dt_from_r:
        found = {}
        for name, (tau, r) in pairs.items():
            ok = np.isfinite(tau) & (tau > 0) & (r > 0) & np.isfinite(r)
            if np.any(ok):
                found[name] = _lambert_u(r[ok]) * tau[ok]
        values = np.concatenate(list(found.values())) if found else np.zeros(0)
        if values.size and values.max() - values.min() <= _DT_RTOL * values.max():
            return float(np.median(values)), "recovered from Rockpool's r = tau exp(-dt/tau)/dt", \
                None
        spread = ", ".join(f"{n!r} {_range(v)}" for n, v in found.items()) or "no LIF node"
        return None, "", (f"Rockpool's r = tau exp(-dt/tau)/dt gives no single dt ({spread}): "
                          f"give --dt")
    # snnTorch and SpikingJelly write r = tau/dt; r = 1 would say dt = tau (beta 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        finite = [np.isfinite(tau / r).any() for tau, r in pairs.values()]
    if conv.fallback_dt is not None and not any(finite):
        return conv.fallback_dt, f"{conv.name}'s exporter default dt = {conv.fallback_dt:g} " \
            f"(no node has a finite tau/r)", None
    if not pairs:
        if any(isinstance(node, nir.IF) for node in neurons.values()):
            return None, "", (f"NIR carries no time step and an IF node's input gain is dt * r: "
                              f"give --exporter {_EXPORTER_LIST} or --dt")
        return None, "", None
    ratios = {}
    for name, (tau, r) in pairs.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios[name] = tau / r
        if conv.fallback_dt is None and np.any(r == 1) and np.any(np.isfinite(tau)):
            return None, "", (f"NIR carries no time step and {name!r} has r = 1, which as "
                              f"r = tau/dt would make dt equal tau and beta 0 (Norse, Sinabs "
                              f"and SpikingJelly write r = 1 for other reasons): give --exporter "
                              f"{_EXPORTER_LIST} or --dt")
    values = np.concatenate(list(ratios.values()))
    values = values[np.isfinite(values)]
    if values.size and np.all(values > 0) and values.max() - values.min() <= \
            _DT_RTOL * values.max():
        return float(np.mean(values)), "inferred from r = tau/dt, one value over every node", None
    spread = ", ".join(f"{n!r} {_range(v)}" for n, v in ratios.items())
    return None, "", (f"NIR carries no time step and tau/r gives no single dt ({spread}): give "
                      f"--exporter {_EXPORTER_LIST} or --dt")


# --- one layer -----------------------------------------------------------------------------------

@dataclass
class _Neuron:
    model: str  # LIF | IF | CubaLIF | LI
    beta: np.ndarray
    beta_src: str
    gain: np.ndarray
    gain_src: str
    threshold: np.ndarray
    alpha: np.ndarray | None = None
    alpha_src: str | None = None


def _per_neuron(value, n: int, what: str) -> np.ndarray:
    arr = _numpy(value).reshape(-1)
    if arr.size == 1:
        return np.full(n, arr[0])
    if arr.size != n:
        raise ModelError(f"{what} has {arr.size} values for {n} neurons")
    return arr


def _decay(conv: Convention, tau: np.ndarray, dt: float, what: str) -> tuple[np.ndarray, str]:
    step = _step_name(conv)
    if np.any(~(tau > 0)):
        raise ModelError(f"{what} must be positive, not {_range(tau)}")
    with np.errstate(divide="ignore"):
        ratio = np.where(np.isinf(tau), 0.0, dt / tau)
    if conv.decay == "exp":
        return np.exp(-ratio), f"exp(-dt/{what})"
    if np.any(ratio > 1):
        raise ModelError(f"{what} {_range(tau)} is shorter than the Euler step {step} = {dt:g}, "
                         f"so 1 - {step}/{what} would be negative (is the exporter or --dt "
                         f"right?)")
    return 1.0 - ratio, f"1 - {step}/{what}"


def _step_name(conv: Convention) -> str:
    # Norse writes tau = dt / tau_mem_inv, so NIR's Euler step is dt^2 (docs/nir.md)
    return "dt^2" if conv.euler_dt_squared else "dt"


def _euler_gain(dt: float, r: np.ndarray, tau: np.ndarray, what: str) -> np.ndarray:
    """dt r / tau; r = tau = inf (snnTorch's beta = 1, r = tau/dt) has gain 1."""
    both_inf = np.isinf(r) & np.isinf(tau)
    if np.any(np.isinf(tau) & ~np.isinf(r)):
        raise ModelError(f"{what} = inf with a finite r gives no input (gain dt r/{what} = 0)")
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(both_inf, 1.0, dt * r / np.where(both_inf, 1.0, tau))
    return gain


def _static_issues(node) -> list[str]:
    """What no convention can run: a leak toward v_leak != 0, a reset to v_reset != 0."""
    issues = []
    v_leak = getattr(node, "v_leak", None)
    if v_leak is not None and np.any(_numpy(v_leak) != 0):
        issues.append(f"v_leak != 0 ({_range(_numpy(v_leak))}) is not supported")
    v_reset = getattr(node, "v_reset", None)
    if v_reset is not None and np.any(_numpy(v_reset) != 0):
        issues.append(f"v_reset {_range(_numpy(v_reset))} is not expressible; only "
                      f"v_reset = 0 is")
    return issues


def _neuron(conv: Convention, node, n: int, dt: float | None, euler_dt: float | None) -> _Neuron:
    """The IR numbers of one NIR neuron node (ModelError with the reason when it cannot run)."""
    import nir

    issues = _static_issues(node)
    if issues:
        raise ModelError("; ".join(issues))
    r = _per_neuron(node.r, n, "r")
    if isinstance(node, nir.IF):
        threshold = _per_neuron(node.v_threshold, n, "v_threshold")
        if conv.if_gain == "r":
            return _Neuron("IF", np.ones(n), "1 (IF)", r, "r (per step)", threshold)
        return _Neuron("IF", np.ones(n), "1 (IF)", euler_dt * r, f"{_step_name(conv)} * r",
                       threshold)
    if isinstance(node, nir.CubaLIF):
        if conv.syn_gain == "refuse":
            raise ModelError(f"{conv.name} exports no CubaLIF, so this graph does not follow its "
                             f"convention")
        threshold = _per_neuron(node.v_threshold, n, "v_threshold")
        tau_syn = _per_neuron(node.tau_syn, n, "tau_syn")
        tau_mem = _per_neuron(node.tau_mem, n, "tau_mem")
        w_in = _per_neuron(getattr(node, "w_in", 1.0), n, "w_in")
        step = euler_dt if conv.decay == "euler" else dt
        alpha, alpha_src = _decay(conv, tau_syn, step, "tau_syn")
        beta, beta_src = _decay(conv, tau_mem, step, "tau_mem")
        syn_gain, syn_src = {
            "euler": (lambda: _euler_gain(euler_dt, w_in, tau_syn, "tau_syn"),
                      f"{_step_name(conv)} w_in/tau_syn"),
            "w_in": (lambda: w_in, "w_in"),
            "alpha": (lambda: alpha, "alpha (the input decays once before it counts)"),
        }[conv.syn_gain]
        mem_gain, mem_src = {
            "euler": (lambda: _euler_gain(euler_dt, r, tau_mem, "tau_mem"),
                      f"{_step_name(conv)} r/tau_mem"),
            "one": (lambda: np.ones(n), "1"),
        }[conv.mem_gain]
        return _Neuron("CubaLIF", beta, beta_src, syn_gain() * mem_gain(),
                       f"({syn_src}) * ({mem_src})", threshold, alpha, alpha_src)
    tau = _per_neuron(node.tau, n, "tau")
    step = euler_dt if conv.decay == "euler" else dt
    beta, beta_src = _decay(conv, tau, step, "tau")
    mode = conv.li_gain if isinstance(node, nir.LI) else conv.lif_gain
    if mode == "euler":
        gain, gain_src = _euler_gain(euler_dt, r, tau, "tau"), f"{_step_name(conv)} r/tau"
    elif mode == "r":
        gain, gain_src = r, "r (per step)"
    elif mode == "beta":
        gain, gain_src = beta, "beta (the input decays once before it counts)"
    else:
        gain, gain_src = np.ones(n), "1"
    if isinstance(node, nir.LI):
        return _Neuron("LI", beta, beta_src, gain, gain_src, np.zeros(n))
    threshold = _per_neuron(node.v_threshold, n, "v_threshold")
    return _Neuron("LIF", beta, beta_src, gain, gain_src, threshold)


# --- the whole graph -----------------------------------------------------------------------------

def from_nir(graph, *, exporter: str | None = None, dt: float | None = None,
             reset: str | None = None, max_spikes: int | None = None,
             source: str | None = None) -> Network:
    """Reduce a NIR graph (Input -> [Affine|Linear -> LIF|IF|CubaLIF]... [-> Affine -> LI] ->
    Output) to the float IR under `exporter`'s convention; see the module docstring."""
    import nir

    dt = check_options(exporter, dt, reset, max_spikes)
    conv = CONVENTIONS[exporter]
    problems: list[str] = []
    nodes, edges = _inline(graph, "", problems)

    neurons = (nir.LIF, nir.IF, nir.CubaLIF, nir.LI)
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
    # the Output is reached through the fan-out it is part of, not a node off the path
    stray = [n for n in nodes if n not in seen and n != inputs[0] and n not in rec_of.values()
             and n != outputs[0]]
    for name in stray:
        problems.append(f"{name!r} ({type(nodes[name]).__name__}: not on the path from "
                        f"{inputs[0]!r} to {outputs[0]!r})")

    chain_neurons = {n: nodes[n] for n in chain if isinstance(nodes[n], neurons)}
    spiking = any(not isinstance(node, nir.LI) for node in chain_neurons.values())
    extra: list[str] = []
    needs_dt = any(not isinstance(node, nir.IF) or conv.if_gain == "dt_r"
                   for node in chain_neurons.values()) or conv.decay == "exp"
    run_dt, dt_src, dt_open = _resolve_dt(conv, chain_neurons, dt) if needs_dt \
        else (dt, "given (--dt)" if dt is not None else "not needed", None)
    if dt_open:
        extra.append(dt_open)
    euler_dt = None if run_dt is None else (run_dt ** 2 if conv.euler_dt_squared else run_dt)

    reset_mode, reset_src = (reset, "given (--reset)") if reset is not None else \
        (conv.reset, f"{conv.name}'s convention") if conv.reset is not None else (None, "")
    if spiking and reset_mode is None:
        extra.append(f"NIR carries no reset mode (snnTorch subtracts theta yet writes "
                     f"v_reset = 0; Norse and SpikingJelly reset to zero): give --exporter "
                     f"{_EXPORTER_LIST} or --reset {{zero,subtract}}")
    k, k_src = (max_spikes, "given (--max-spikes)") if max_spikes is not None else \
        (conv.max_spikes, _MULTI_DEFAULT.get(conv.name, f"{conv.name}'s convention")) \
        if conv.max_spikes is not None else (None, "")
    if spiking and k is None:
        extra.append(f"NIR carries no spike count per step (Sinabs and Rockpool emit several "
                     f"per step, the others one): give --exporter {_EXPORTER_LIST} or "
                     f"--max-spikes K")

    layers: list[LifLayer] = []
    provenance: list[dict] = []
    pending: str | None = None
    projections: dict[str, Projection] = {}
    maps = Maps(_input_map(_io_width(nodes[inputs[0]], "input")))
    for name in chain:
        node = nodes[name]
        kind = type(node).__name__
        if isinstance(node, nir.Flatten):
            continue
        if isinstance(node, dense):
            weight = _numpy(node.weight)
            if weight.ndim != 2:
                problems.append(f"{name!r} ({kind}: weight must be 2-D, not {weight.shape})")
                maps.lost()
                continue
            if pending is not None:
                problems.append(f"{pending!r} ({type(nodes[pending]).__name__}: no neuron "
                                "node after it)")
            pending = None
            try:
                projections[name] = Projection(name, node, maps.fold_dense(weight), None)
                pending = name
            except ModelError as exc:
                problems.append(f"{name!r} ({kind}: {exc})")
            continue
        if isinstance(node, nir.Conv2d):
            if pending is not None:
                problems.append(f"{pending!r} ({type(nodes[pending]).__name__}: no neuron "
                                "node after it)")
            pending = None
            try:
                projections[name] = _nir_conv(name, node, maps)
                pending = name
            except ModelError as exc:
                problems.append(f"{name!r} ({kind}: {exc})")
                maps.lost()
            continue
        if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
            pool = "sum" if isinstance(node, nir.SumPool2d) else "avg"
            try:
                size = _nir_pool_size(node)
                if pending is not None:
                    projections[pending].add_pool(pool, size)
                else:
                    maps.pool_spikes(size, pool)
            except ModelError as exc:
                problems.append(f"{name!r} ({kind}: {exc})")
                maps.lost()
            continue
        if not isinstance(node, neurons):
            problems.append(f"{name!r} ({kind})")
            maps.lost()
            continue
        if pending is None:
            problems.append(f"{name!r} ({kind}: no Affine, Linear or Conv2d before it)")
            maps.lost()
            continue
        dense_name, pending = pending, None
        maps.after(projections[dense_name].conv)
        if extra:  # dt, reset or spike count is open (reported once): check what needs none
            issues = _static_issues(node)
            if issues:
                problems.append(f"{name!r} ({kind}: {'; '.join(issues)})")
            for holder in (dense_name, rec_of.get(name)):
                bad = holder and [f for f in ("weight", "bias") if not np.all(
                    np.isfinite(_numpy(getattr(nodes[holder], f, 0.0))))]
                if bad:
                    problems.append(f"{holder!r} ({type(nodes[holder]).__name__}: "
                                    f"{' and '.join(bad)} holds NaN or infinity)")
            continue
        rec = rec_of.get(name)
        try:
            layer, prov = _layer(conv, projections[dense_name], name, node, rec,
                                 None if rec is None else nodes[rec], run_dt, euler_dt,
                                 reset_mode, k)
        except ModelError as exc:
            holders = {dense_name: nodes[dense_name], **({rec: nodes[rec]} if rec else {})}
            problems.append(_blame(exc, name, kind, holders))
            continue
        prov.update(dt={"value": run_dt, "source": dt_src} if run_dt is not None else None,
                    reset=None if layer.spiking is False else
                    {"value": reset_mode, "source": reset_src,
                     "timing": "after the next decay" if layer.reset_delay
                     else "at the spike (before the next decay)"},
                    max_spikes=None if not layer.spiking else {"value": k, "source": k_src},
                    compare=None if not layer.spiking else
                    {"value": layer.compare, "source": f"{conv.name}'s convention"})
        layers.append(layer)
        provenance.append(prov)
    if pending is not None:
        problems.append(f"{pending!r} ({type(nodes[pending]).__name__}: no neuron node after "
                        "it)")
    notes: list[str] = []
    if layers:
        _check_io(inputs[0], _io_width(nodes[inputs[0]], "input"), layers[0].n_in, "Input",
                  notes, problems)
        _check_io(outputs[0], _io_width(nodes[outputs[0]], "output")
                  or _io_width(nodes[outputs[0]], "input"), layers[-1].n_out, "Output", notes,
                  problems)
    raise_problems(problems, extra, order=[inputs[0], *chain, outputs[0]])
    if not layers:
        raise ModelError("the NIR graph has no neuron layer")
    network = Network(n_inputs=layers[0].n_in, layers=layers, source=source or "NIR graph")
    network.notes.extend(notes + maps.notes)
    if run_dt is not None:
        network.notes.append(f"dt = {run_dt:g}: {dt_src}")
    network.notes.append(f"read as {conv.name} exported it" if exporter else
                         "read by NIR's own equations (no --exporter)")
    network.provenance = provenance
    return network


def _blame(exc: ModelError, name: str, kind: str, holders: dict[str, Any]) -> str:
    """Name the node that holds the bad number: a NaN weight is its Affine's or Linear's (or
    the recurrent weight node's), not the neuron's."""
    for holder, node in holders.items():
        for field_name in ("weight", "bias"):
            value = getattr(node, field_name, None)
            if value is not None and not np.all(np.isfinite(_numpy(value))):
                return f"{holder!r} ({type(node).__name__}: {field_name} holds NaN or infinity)"
    reason = re.sub(r"^layer '[^']*': ", "", str(exc))
    return f"{name!r} ({kind}: {reason})"


def _layer(conv: Convention, proj: Projection, name: str, node, rec_name, rec_node,
           dt, euler_dt, reset: str | None, k: int | None) -> tuple[LifLayer, dict]:
    import nir

    dense_name, dense_node, weight, geometry = proj.path, proj.mod, proj.weight, proj.conv
    n_out = weight.shape[0] if geometry is None else geometry.n_out
    for holder, what, arr in ((dense_name, "weight", weight),
                              (dense_name, "bias", _numpy(getattr(dense_node, "bias", 0.0)))):
        if not np.all(np.isfinite(arr)):
            raise ModelError(f"{what} of {holder!r} holds NaN or infinity")
    if geometry is not None:
        bias = proj.bias_per_neuron()
    else:
        bias = (_per_neuron(dense_node.bias, n_out, f"the bias of {dense_name!r}")
                if isinstance(dense_node, nir.Affine) else np.zeros(n_out))
    neuron = _neuron(conv, node, n_out, dt, euler_dt)
    gain = neuron.gain
    if geometry is not None:  # the kernel is shared over positions: so must its gain be
        per_channel = gain.reshape(geometry.out_channels, -1)
        if not np.allclose(per_channel, per_channel[:, :1], rtol=1e-12, atol=0.0):
            raise ModelError("the input gain (r, dt/tau) varies within a channel, but a "
                             "convolution shares its kernel over the positions")
        kernel_gain = per_channel[:, 0]
    else:
        kernel_gain = gain
    rec_weight = None
    if rec_node is not None:
        rec_weight = _numpy(rec_node.weight)
        if rec_weight.shape != (n_out, n_out):
            raise ModelError(f"recurrent weight {rec_name!r} is {rec_weight.shape}, "
                             f"not {(n_out, n_out)}")
        rec_weight = gain[:, None] * rec_weight
        if isinstance(rec_node, nir.Affine):
            bias = bias + _per_neuron(rec_node.bias, n_out, f"the bias of {rec_name!r}")
    spiking = neuron.model != "LI"
    layer = LifLayer(name=dense_name, weight=kernel_gain[:, None] * weight, bias=gain * bias,
                     beta=neuron.beta, threshold=neuron.threshold,
                     reset=reset if (spiking and reset) else "zero", rec_weight=rec_weight,
                     alpha=neuron.alpha, max_spikes=k if (spiking and k) else 1,
                     compare=conv.compare if spiking else ">",
                     reset_delay=conv.reset_delay, spiking=spiking, conv=geometry)
    prov = {"layer": dense_name, "node": name, "model": neuron.model,
            "recurrent": rec_name,
            "beta": {"values": _span(neuron.beta), "source": neuron.beta_src},
            "alpha": None if neuron.alpha is None else
            {"values": _span(neuron.alpha), "source": neuron.alpha_src},
            "input_gain": {"values": _span(gain), "source": neuron.gain_src},
            "threshold": None if not spiking else
            {"values": _span(neuron.threshold), "source": "v_threshold"}}
    return layer, prov


def _input_map(shape: tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """The input map [C, H, W]: the Input type's last three dimensions (exporters write a
    leading batch or time dimension), or None for a flat or unknown input."""
    if shape is None or len(shape) < 3:
        return None
    return tuple(int(n) for n in shape[-3:])


def _nir_conv(name: str, node, maps: Maps) -> Projection:
    """A NIR Conv2d as every exporter writes it (input_shape None, weight [C_out, C_in, kH,
    kW], stride/padding/dilation pairs, groups, bias per channel, zeros without one)."""
    weight = _numpy(node.weight)
    if weight.ndim != 4:
        raise ModelError(f"weight must be 4-D [C_out, C_in, kH, kW], not {list(weight.shape)}")
    if pair(node.dilation, "dilation") != 1:
        raise ModelError(f"dilation must be 1, not {node.dilation!r}")
    if int(node.groups) != 1:
        raise ModelError(f"groups must be 1, not {node.groups!r}")
    if weight.shape[2] != weight.shape[3]:
        raise ModelError(f"kernel must be square, not {weight.shape[2]}x{weight.shape[3]}")
    padding = node.padding
    if isinstance(padding, str):
        if padding != "valid":
            raise ModelError(f"padding must be an integer or 'valid', not {padding!r}")
        padding = 0
    geometry = {"stride": pair(node.stride, "stride"), "padding": pair(padding, "padding")}
    if maps.shape is None and maps.known and getattr(node, "input_shape", None) is not None:
        maps.unflatten((weight.shape[1], *(int(n) for n in node.input_shape)))
    kernel, spec = maps.conv(geometry, weight)
    bias = getattr(node, "bias", None)
    return Projection(name, node, kernel, spec, bias=None if bias is None else _numpy(bias))


def _nir_pool_size(node) -> int:
    size = pair(node.kernel_size, "kernel size")
    if pair(node.stride, "stride") != size:
        raise ModelError(f"stride must equal the kernel size {size}, not {node.stride!r}")
    if pair(node.padding, "padding") != 0:
        raise ModelError(f"padding must be 0, not {node.padding!r}")
    return size



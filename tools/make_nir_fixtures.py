"""Record NIR reference fixtures from the SNN libraries themselves.

Runs in its own virtual environment with the five libraries installed (never spikeforge's):

    python3 -m venv /work/wt/fixtures-venv
    /work/wt/fixtures-venv/bin/pip install torch==2.13.0 numpy h5py scipy loguru pbr matplotlib
    /work/wt/fixtures-venv/bin/pip install --no-deps nir==1.0.8 nirtorch==2.6 snntorch==1.0.0 \
        spikingjelly==2.0.0 sinabs==3.1.3 norse==1.1.0 rockpool==3.1.0
    /work/wt/fixtures-venv/bin/python tools/make_nir_fixtures.py [--out DIR] [NAME...]

For every network it writes, into the output folder:

    NAME.nir    the graph exactly as the library's exporter returned it (nir.write)
    NAME.npz    `input` uint8 [batch, time, n_in] (fixed random spikes) and the library's own
                forward pass on it: `spikes` (uint8 [batch, time, n_out], counts for
                multi-spike neurons) or, for an LI readout, `values` (float32 membrane)
    NAME.json   what was built: library and versions, neuron, the dt, reset and spikes per step
                the library ran with, and the threshold comparison

Sizes are small on purpose (16 inputs, 12 hidden, 4 outputs, 8 samples x 20 steps) so the
fixtures stay a few kB each. Everything is seeded: a rerun writes the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

N_IN, N_HID, N_OUT = 16, 12, 4
BATCH, STEPS = 8, 20
FIXTURES: dict[str, callable] = {}


def fixture(fn):
    FIXTURES[fn.__name__.removeprefix("make_")] = fn
    return fn


def input_spikes(seed: int = 7, rate: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((BATCH, STEPS, N_IN)) < rate).astype(np.uint8)


def linear(n_in: int, n_out: int, *, gain: float, bias: bool, seed: int) -> torch.nn.Linear:
    """A Linear with seeded uniform weights (scaled by `gain`) and, if asked, a small bias."""
    gen = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(n_in, n_out, bias=bias)
    with torch.no_grad():
        lin.weight.copy_((torch.rand(n_out, n_in, generator=gen) * 2 - 1) * gain)
        if bias:
            lin.bias.copy_((torch.rand(n_out, generator=gen) * 2 - 1) * 0.1 * gain)
    return lin


def per_neuron(lo: float, hi: float, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, generator=gen)


# --- snnTorch ------------------------------------------------------------------------------------

def _snntorch_run(net, x: np.ndarray, *, record_mem: bool = False) -> np.ndarray:
    import snntorch.utils

    snntorch.utils.reset(net)
    xt = torch.as_tensor(x, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y = net(xt[:, t])
            out.append(y[0] if isinstance(y, tuple) else y)
    return torch.stack(out, 1).numpy()


def _snntorch_export(net, meta: dict):
    import nirtorch
    from snntorch.export_nir import _extract_snntorch_module, export_to_nir

    # Without ignore_dims the sample's batch dimension lands in the Input type and snnTorch's
    # own infer_types() fails ([1, 16] -> [16]).
    try:
        return export_to_nir(net, torch.zeros(1, N_IN), ignore_dims=[0])
    except ValueError as exc:
        # snnTorch 1.0.0 ends export_to_nir with graph.infer_types(), which fails on the 0-d
        # parameters its own exporter writes for a scalar beta: the same extraction without it.
        meta["written"] = (f"export_to_nir failed ({exc}); the graph is its extraction "
                           "(nirtorch.extract_nir_graph with snnTorch's own node mapper) "
                           "without the final infer_types()")
        import snntorch as snn

        return nirtorch.extract_nir_graph(net, _extract_snntorch_module, torch.zeros(1, N_IN),
                                          model_name="snntorch",
                                          ignore_submodules_of=[snn.RLeaky, snn.RSynaptic],
                                          ignore_dims=[0])


def _snntorch_fixture(net, meta: dict):
    x = input_spikes()
    spikes = _snntorch_run(net, x)
    meta = dict(meta)
    graph = _snntorch_export(net, meta)
    meta = {"library": "snntorch", "dt": 1e-4, "threshold": ">", "max_spikes": 1, **meta}
    return graph, x, {"spikes": spikes.astype(np.uint8)}, meta


@fixture
def make_snntorch_lif():
    import snntorch as snn

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.2, bias=True, seed=1),
        snn.Leaky(beta=0.875, threshold=1.0, init_hidden=True),
        linear(N_HID, N_OUT, gain=1.5, bias=True, seed=2),
        snn.Leaky(beta=0.75, threshold=1.0, init_hidden=True))
    return _snntorch_fixture(net, {"neuron": "Leaky", "reset": "subtract"})


@fixture
def make_snntorch_lif_zero_perneuron():
    import snntorch as snn

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.2, bias=False, seed=3),
        snn.Leaky(beta=per_neuron(0.6, 0.95, N_HID, 4), threshold=per_neuron(0.8, 1.2, N_HID, 5),
                  reset_mechanism="zero", init_hidden=True),
        linear(N_HID, N_OUT, gain=1.5, bias=False, seed=6),
        snn.Leaky(beta=per_neuron(0.6, 0.95, N_OUT, 7), threshold=torch.ones(N_OUT),
                  reset_mechanism="zero", init_hidden=True))
    return _snntorch_fixture(net, {"neuron": "Leaky", "reset": "zero",
                                   "notes": "per-neuron beta and threshold, no bias"})


@fixture
def make_snntorch_synaptic():
    import snntorch as snn

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=0.15, bias=True, seed=8),
        snn.Synaptic(alpha=0.75, beta=0.875, threshold=1.0, init_hidden=True),
        linear(N_HID, N_OUT, gain=0.3, bias=False, seed=9),
        snn.Synaptic(alpha=0.5, beta=0.75, threshold=1.0, init_hidden=True))
    return _snntorch_fixture(net, {"neuron": "Synaptic", "reset": "subtract"})


@fixture
def make_snntorch_rleaky():
    import snntorch as snn

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.2, bias=True, seed=10),
        snn.RLeaky(beta=0.875, linear_features=N_HID, threshold=1.0, init_hidden=True),
        linear(N_HID, N_OUT, gain=1.5, bias=True, seed=11),
        snn.Leaky(beta=0.75, threshold=1.0, init_hidden=True))
    with torch.no_grad():
        rec = net[1].recurrent
        gen = torch.Generator().manual_seed(12)
        rec.weight.copy_((torch.rand(N_HID, N_HID, generator=gen) * 2 - 1) * 0.5)
        rec.bias.zero_()
    return _snntorch_fixture(net, {"neuron": "RLeaky", "reset": "subtract",
                                   "notes": "all-to-all recurrence"})


@fixture
def make_snntorch_rsynaptic():
    import snntorch as snn

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=0.3, bias=True, seed=54),
        snn.RSynaptic(alpha=0.5, beta=0.875, linear_features=N_HID, threshold=1.0,
                      init_hidden=True),
        linear(N_HID, N_OUT, gain=0.6, bias=False, seed=55),
        snn.Synaptic(alpha=0.5, beta=0.75, threshold=1.0, init_hidden=True))
    with torch.no_grad():
        rec = net[1].recurrent
        gen = torch.Generator().manual_seed(56)
        rec.weight.copy_((torch.rand(N_HID, N_HID, generator=gen) * 2 - 1) * 0.2)
        rec.bias.zero_()
    return _snntorch_fixture(net, {"neuron": "RSynaptic", "reset": "subtract",
                                   "notes": "all-to-all recurrence into the synaptic current"})


def int_linear(n_in: int, n_out: int, *, lo: int, hi: int, seed: int) -> torch.nn.Linear:
    """A bias-free Linear with integer weights in lo..hi: arithmetic that 8 bits hold exactly."""
    gen = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(n_in, n_out, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randint(lo, hi + 1, (n_out, n_in), generator=gen).float())
    return lin


@fixture
def make_snntorch_lif_int():
    import snntorch as snn

    net = torch.nn.Sequential(
        int_linear(N_IN, N_HID, lo=-2, hi=3, seed=47),
        snn.Leaky(beta=1.0, threshold=3.0, init_hidden=True),
        int_linear(N_HID, N_OUT, lo=-2, hi=3, seed=48),
        snn.Leaky(beta=1.0, threshold=2.0, init_hidden=True))
    # beta = 1 exports tau = r = inf. (A beta of 1 - 2^-k is no exact fixture: the float32
    # tau = dt/(1 - beta) the exporter writes gives beta back only to 1e-8, and with integer
    # weights v lands on theta exactly, where such an error decides the spike.)
    return _snntorch_fixture(net, {"neuron": "Leaky (beta = 1)", "reset": "subtract",
                                   "exact": True,
                                   "notes": "integer weights and thresholds, beta 1: "
                                            "exact arithmetic"})


# --- Norse ---------------------------------------------------------------------------------------

NORSE_DT = 1e-3


def _norse_fixture(modules: list, meta: dict, *, readout: bool = False):
    import norse.torch as norse

    x = input_spikes()
    xt = torch.as_tensor(x, dtype=torch.float32)
    states = [None] * len(modules)
    out = []
    with torch.no_grad():
        for t in range(STEPS):
            h = xt[:, t]
            for i, mod in enumerate(modules):
                if isinstance(mod, torch.nn.Linear):
                    h = mod(h)
                else:
                    h, states[i] = mod(h, states[i])
            out.append(h)
    y = torch.stack(out, 1).numpy()
    net = norse.SequentialState(*modules)
    graph = norse.to_nir(net, torch.zeros(1, N_IN), dt=NORSE_DT)
    result = {"values": y.astype(np.float32)} if readout else {"spikes": y.astype(np.uint8)}
    meta = {"library": "norse", "dt": NORSE_DT, "threshold": ">", "max_spikes": 1,
            "reset": "zero", **meta}
    return graph, x, result, meta


@fixture
def make_norse_lifbox():
    import norse.torch as norse

    p1 = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(1.0))
    p2 = norse.LIFBoxParameters(tau_mem_inv=per_neuron(50.0, 200.0, N_OUT, 13),
                                v_th=torch.ones(N_OUT), v_leak=torch.zeros(N_OUT))
    mods = [linear(N_IN, N_HID, gain=6.0, bias=True, seed=14), norse.LIFBoxCell(p1),
            linear(N_HID, N_OUT, gain=8.0, bias=True, seed=15), norse.LIFBoxCell(p2)]
    return _norse_fixture(mods, {"neuron": "LIFBoxCell",
                                 "notes": "per-neuron tau in the output layer"})


@fixture
def make_norse_lifcell():
    import norse.torch as norse

    p = norse.LIFParameters(tau_mem_inv=torch.tensor(100.0), tau_syn_inv=torch.tensor(200.0),
                            v_th=torch.tensor(1.0))
    mods = [linear(N_IN, N_HID, gain=6.0, bias=True, seed=16), norse.LIFCell(p),
            linear(N_HID, N_OUT, gain=10.0, bias=False, seed=17), norse.LIFCell(p)]
    return _norse_fixture(mods, {"neuron": "LIFCell (CubaLIF)"})


@fixture
def make_norse_iaf():
    import norse.torch as norse

    p = norse.IAFParameters(v_th=torch.tensor(1.0))
    mods = [linear(N_IN, N_HID, gain=0.8, bias=False, seed=18), norse.IAFCell(p),
            linear(N_HID, N_OUT, gain=1.0, bias=False, seed=19), norse.IAFCell(p)]
    return _norse_fixture(mods, {"neuron": "IAFCell (IF)"})


@fixture
def make_norse_li_readout():
    import norse.torch as norse

    p1 = norse.LIFBoxParameters(tau_mem_inv=torch.tensor(100.0), v_th=torch.tensor(1.0))
    p2 = norse.LIBoxParameters(tau_mem_inv=torch.tensor(50.0))
    mods = [linear(N_IN, N_HID, gain=6.0, bias=True, seed=20), norse.LIFBoxCell(p1),
            linear(N_HID, N_OUT, gain=2.0, bias=True, seed=21), norse.LIBoxCell(p2)]
    return _norse_fixture(mods, {"neuron": "LIFBoxCell -> LIBoxCell readout"}, readout=True)


# --- Sinabs --------------------------------------------------------------------------------------

def _sinabs_fixture(net, meta: dict, *, readout: bool = False):
    import sinabs

    x = input_spikes()
    with torch.no_grad():
        sinabs.reset_states(net)
        y = net(torch.as_tensor(x, dtype=torch.float32)).numpy()
        sinabs.reset_states(net)
    graph = sinabs.to_nir(net, torch.zeros(1, STEPS, N_IN))
    result = {"values": y.astype(np.float32)} if readout else {"spikes": y.astype(np.uint8)}
    meta = {"library": "sinabs", "dt": 1.0, "threshold": ">=", "reset": "subtract-before-decay",
            **meta}
    return graph, x, result, meta


@fixture
def make_sinabs_lif_single():
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.2, bias=True, seed=22),
        sl.LIF(tau_mem=8.0, spike_fn=SingleSpike, norm_input=False),
        linear(N_HID, N_OUT, gain=1.5, bias=True, seed=23),
        sl.LIF(tau_mem=per_neuron(3.0, 10.0, N_OUT, 24), spike_fn=SingleSpike,
               spike_threshold=per_neuron(0.8, 1.2, N_OUT, 46), norm_input=False))
    return _sinabs_fixture(net, {"neuron": "LIF (SingleSpike, norm_input=False)",
                                 "max_spikes": 1})


@fixture
def make_sinabs_lif_multi():
    import sinabs.layers as sl

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.0, bias=True, seed=25),
        sl.LIF(tau_mem=8.0, norm_input=False),
        linear(N_HID, N_OUT, gain=1.0, bias=False, seed=26),
        sl.LIF(tau_mem=4.0, norm_input=False))
    return _sinabs_fixture(net, {"neuron": "LIF (MultiSpike, norm_input=False)",
                                 "max_spikes": None})


@fixture
def make_sinabs_iaf_multi():
    import sinabs.layers as sl

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=0.6, bias=False, seed=27), sl.IAF(),
        linear(N_HID, N_OUT, gain=0.8, bias=False, seed=28), sl.IAF())
    return _sinabs_fixture(net, {"neuron": "IAF (MultiSpike)", "max_spikes": None})


@fixture
def make_sinabs_iaf_int():
    import sinabs.layers as sl

    net = torch.nn.Sequential(
        int_linear(N_IN, N_HID, lo=-2, hi=3, seed=49), sl.IAF(spike_threshold=torch.tensor(3.0)),
        int_linear(N_HID, N_OUT, lo=-2, hi=3, seed=50), sl.IAF(spike_threshold=torch.tensor(2.0)))
    return _sinabs_fixture(net, {"neuron": "IAF (MultiSpike), integer weights: exact",
                                 "max_spikes": None, "exact": True})


@fixture
def make_sinabs_li_readout():
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.2, bias=True, seed=29),
        sl.LIF(tau_mem=8.0, spike_fn=SingleSpike, norm_input=False),
        linear(N_HID, N_OUT, gain=1.0, bias=True, seed=30),
        sl.ExpLeak(tau_mem=5.0))
    return _sinabs_fixture(net, {"neuron": "LIF -> ExpLeak readout", "max_spikes": 1},
                           readout=True)


# --- Rockpool ------------------------------------------------------------------------------------

ROCKPOOL_DT = 1e-3


def _rockpool_fixture(net, meta: dict, *, readout: bool = False):
    from rockpool.nn.modules.torch.nir import to_nir

    x = input_spikes()
    with torch.no_grad():
        net.reset_state()
        y, _, _ = net(torch.as_tensor(x, dtype=torch.float32))
        y = y.detach().numpy()
        net.reset_state()
    # ExpSynTorch exports its tau undetached, which nir.write cannot store
    for param in torch.nn.Module.parameters(net):
        param.requires_grad_(False)
    graph = to_nir(net)
    result = {"values": y.astype(np.float32)} if readout else {"spikes": y.astype(np.uint8)}
    meta = {"library": "rockpool", "dt": ROCKPOOL_DT, "threshold": ">=",
            "reset": "subtract-before-decay", **meta}
    return graph, x, result, meta


def _rp_linear(n_in: int, n_out: int, *, gain: float, bias: bool, seed: int):
    from rockpool.nn.modules import LinearTorch

    lin = linear(n_in, n_out, gain=gain, bias=bias, seed=seed)
    kwargs = {"bias": lin.bias.detach().clone()} if bias else {}
    return LinearTorch((n_in, n_out), weight=lin.weight.detach().T.clone(), has_bias=bias,
                       **kwargs)


@fixture
def make_rockpool_lif_multi():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch

    net = Sequential(
        _rp_linear(N_IN, N_HID, gain=0.2, bias=True, seed=31),
        LIFTorch(N_HID, tau_mem=0.02, tau_syn=0.005, threshold=1.0, dt=ROCKPOOL_DT),
        _rp_linear(N_HID, N_OUT, gain=0.25, bias=False, seed=32),
        LIFTorch(N_OUT, tau_mem=per_neuron(0.01, 0.04, N_OUT, 33), tau_syn=0.005,
                 threshold=1.0, dt=ROCKPOOL_DT))
    return _rockpool_fixture(net, {"neuron": "LIFTorch (CubaLIF, multi-spike)",
                                   "max_spikes": 65536})


@fixture
def make_rockpool_lif_single():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch

    net = Sequential(
        _rp_linear(N_IN, N_HID, gain=0.8, bias=True, seed=34),
        LIFTorch(N_HID, tau_mem=0.02, tau_syn=0.005, threshold=1.0, dt=ROCKPOOL_DT,
                 max_spikes_per_dt=1),
        _rp_linear(N_HID, N_OUT, gain=1.0, bias=True, seed=35),
        LIFTorch(N_OUT, tau_mem=0.01, tau_syn=0.002, threshold=1.0, dt=ROCKPOOL_DT,
                 max_spikes_per_dt=1))
    return _rockpool_fixture(net, {"neuron": "LIFTorch (CubaLIF, max_spikes_per_dt=1)",
                                   "max_spikes": 1})


@fixture
def make_rockpool_li_readout():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import ExpSynTorch, LIFTorch

    net = Sequential(
        _rp_linear(N_IN, N_HID, gain=0.8, bias=True, seed=36),
        LIFTorch(N_HID, tau_mem=0.02, tau_syn=0.005, threshold=1.0, dt=ROCKPOOL_DT,
                 max_spikes_per_dt=1),
        _rp_linear(N_HID, N_OUT, gain=1.0, bias=False, seed=37),
        ExpSynTorch(N_OUT, tau=0.01, dt=ROCKPOOL_DT))
    return _rockpool_fixture(net, {"neuron": "LIFTorch -> ExpSynTorch readout",
                                   "max_spikes": 1}, readout=True)


@fixture
def make_rockpool_rec():
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch

    gen = torch.Generator().manual_seed(51)
    w_rec = (torch.rand(N_HID, N_HID, generator=gen) * 2 - 1) * 0.3
    net = Sequential(
        _rp_linear(N_IN, N_HID, gain=0.8, bias=True, seed=52),
        LIFTorch(N_HID, tau_mem=0.02, tau_syn=0.005, threshold=1.0, dt=ROCKPOOL_DT,
                 has_rec=True, w_rec=w_rec, max_spikes_per_dt=1),
        _rp_linear(N_HID, N_OUT, gain=1.0, bias=False, seed=53),
        LIFTorch(N_OUT, tau_mem=0.01, tau_syn=0.002, threshold=1.0, dt=ROCKPOOL_DT,
                 max_spikes_per_dt=1))
    return _rockpool_fixture(net, {"neuron": "LIFTorch (CubaLIF, recurrent, single spike)",
                                   "max_spikes": 1})


# --- SpikingJelly --------------------------------------------------------------------------------

SJ_DT = 1e-4


def _sj_fixture(net, meta: dict):
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.nir_exchange import export_to_nir

    x = input_spikes()
    xt = torch.as_tensor(x, dtype=torch.float32)
    functional.reset_net(net)
    with torch.no_grad():
        y = torch.stack([net(xt[:, t]) for t in range(STEPS)], 1).numpy()
    functional.reset_net(net)
    graph = export_to_nir(net, torch.zeros(1, N_IN), dt=SJ_DT)
    functional.reset_net(net)
    meta = {"library": "spikingjelly", "dt": SJ_DT, "threshold": ">=", "reset": "zero",
            "max_spikes": 1, **meta}
    return graph, x, {"spikes": y.astype(np.uint8)}, meta


@fixture
def make_spikingjelly_lif():
    from spikingjelly.activation_based import neuron

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=2.5, bias=True, seed=38), neuron.LIFNode(tau=2.0),
        linear(N_HID, N_OUT, gain=3.0, bias=True, seed=39), neuron.LIFNode(tau=4.0))
    return _sj_fixture(net, {"neuron": "LIFNode (decay_input=True)"})


@fixture
def make_spikingjelly_lif_nodecay():
    from spikingjelly.activation_based import neuron

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=1.0, bias=False, seed=40),
        neuron.LIFNode(tau=8.0, decay_input=False),
        linear(N_HID, N_OUT, gain=1.2, bias=False, seed=41),
        neuron.LIFNode(tau=4.0, decay_input=False))
    return _sj_fixture(net, {"neuron": "LIFNode (decay_input=False)"})


@fixture
def make_spikingjelly_if():
    from spikingjelly.activation_based import neuron

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=0.8, bias=True, seed=42), neuron.IFNode(),
        linear(N_HID, N_OUT, gain=1.0, bias=True, seed=43), neuron.IFNode())
    return _sj_fixture(net, {"neuron": "IFNode"})


@fixture
def make_spikingjelly_cubalif():
    from spikingjelly.activation_based import neuron

    net = torch.nn.Sequential(
        linear(N_IN, N_HID, gain=0.8, bias=True, seed=44),
        neuron.CUBALIFNode(c_decay=0.5, v_decay=0.75, v_threshold=1.0),
        linear(N_HID, N_OUT, gain=1.2, bias=False, seed=45),
        neuron.CUBALIFNode(c_decay=0.25, v_decay=0.875, v_threshold=1.0))
    return _sj_fixture(net, {"neuron": "CUBALIFNode (CubaLIF)"})


# --- writing -------------------------------------------------------------------------------------

# --- convolutional networks ----------------------------------------------------------------------
# Input maps [1, 8, 8] flattened in C order (64 inputs); the libraries run them as [.., 1, 8, 8].
MAP = (1, 8, 8)


def conv2d(c_in: int, c_out: int, kernel: int, *, gain: float, seed: int, **kwargs):
    """A Conv2d with seeded uniform weights (scaled by `gain`) and a small bias."""
    gen = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(c_in, c_out, kernel, **kwargs)
    with torch.no_grad():
        conv.weight.copy_((torch.rand(conv.weight.shape, generator=gen) * 2 - 1) * gain)
        conv.bias.copy_((torch.rand(c_out, generator=gen) * 2 - 1) * 0.1 * gain)
    return conv


def map_spikes(seed: int = 8, rate: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((BATCH, STEPS, int(np.prod(MAP)))) < rate).astype(np.uint8)


def fill_conv_shapes(graph, shapes: list[tuple[int, int]], meta: dict, flat=None):
    """Sinabs, snnTorch and Norse write Conv2d(input_shape=None) and Flatten(input_type=None),
    which nir.write (1.0.8) cannot store (h5py refuses None): give each Conv2d, in graph
    order, its map's (H, W), and the Flatten the map [C, H, W] it flattens."""
    import nir

    for name, node in graph.nodes.items():
        if isinstance(node, nir.Flatten) and node.input_type.get("input") is None:
            graph.nodes[name] = nir.Flatten(input_type={"input": np.array(flat)},
                                            start_dim=node.start_dim, end_dim=node.end_dim)

    convs = [name for name, node in graph.nodes.items() if isinstance(node, nir.Conv2d)]
    for name, shape in zip(convs, shapes, strict=True):
        node = graph.nodes[name]
        if node.input_shape is None:
            graph.nodes[name] = nir.Conv2d(
                input_shape=shape, weight=node.weight, stride=node.stride,
                padding=node.padding, dilation=node.dilation, groups=node.groups, bias=node.bias)
    meta["written"] = (meta.get("written", "") + " Conv2d input_shape None (as exported) "
                       f"filled with {shapes} so that nir.write can store it").strip()
    return graph


def _sinabs_conv(net, neuron: str, extra: dict | None = None):
    import sinabs

    x = map_spikes()
    with torch.no_grad():
        sinabs.reset_states(net)
        y = net(torch.as_tensor(x, dtype=torch.float32).reshape(BATCH * STEPS, *MAP))
        sinabs.reset_states(net)
    graph = sinabs.to_nir(net, torch.zeros(BATCH, *MAP))
    meta = {}
    graph = fill_conv_shapes(graph, [(8, 8), (4, 4)], meta, flat=(6, 2, 2))
    meta = {**meta, "library": "sinabs", "dt": 1.0, "threshold": ">=",
            "reset": "subtract-before-decay", "neuron": neuron, "max_spikes": None,
            "map": list(MAP), **(extra or {})}
    return graph, x, {"spikes": y.reshape(BATCH, STEPS, -1).numpy().astype(np.uint8)}, meta


@fixture
def make_sinabs_conv_int():
    """Sinabs' own style: Conv2d -> IAF -> SumPool2d (of spikes) -> Conv2d -> IAF -> Flatten ->
    Linear -> IAF, MultiSpike, time folded into the batch (IAFSqueeze); integer kernels and
    weights without bias, so 8 bits hold it exactly. (The same network with float weights
    matched Sinabs on 92.8 % of output counts at 8 bits and 100 % at 16: IAF neurons never
    leak, so quantization error accumulates; docs/nir.md.)"""
    import sinabs.layers as sl

    def integer(mod, seed):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            mod.weight.copy_(torch.randint(-2, 4, mod.weight.shape, generator=gen).float())
            mod.bias.zero_()
        return mod

    net = torch.nn.Sequential(
        integer(torch.nn.Conv2d(1, 4, 3, padding=1), 65),
        sl.IAFSqueeze(batch_size=BATCH, spike_threshold=torch.tensor(4.0)), sl.SumPool2d(2),
        integer(torch.nn.Conv2d(4, 6, 3), 66),
        sl.IAFSqueeze(batch_size=BATCH, spike_threshold=torch.tensor(8.0)),
        torch.nn.Flatten(), integer(torch.nn.Linear(6 * 2 * 2, N_OUT), 67),
        sl.IAFSqueeze(batch_size=BATCH, spike_threshold=torch.tensor(6.0)))
    return _sinabs_conv(net, "IAFSqueeze (MultiSpike), integer Conv2d + SumPool2d: exact",
                        {"exact": True})


@fixture
def make_snntorch_conv():
    """snnTorch: Conv2d -> AvgPool2d (of currents) -> Leaky -> Flatten -> Linear -> Leaky (its
    exporter writes no MaxPool2d)."""
    import snntorch as snn

    net = torch.nn.Sequential(
        torch.nn.Unflatten(1, MAP),
        conv2d(1, 4, 3, gain=1.2, seed=63, padding=1), torch.nn.AvgPool2d(2),
        snn.Leaky(beta=0.8, init_hidden=True),
        torch.nn.Flatten(), linear(4 * 4 * 4, N_OUT, gain=0.8, bias=True, seed=64),
        snn.Leaky(beta=0.9, init_hidden=True, output=True))
    x = map_spikes(seed=9)
    spikes = _snntorch_run(net, x)
    meta = {}
    from snntorch.export_nir import export_to_nir
    try:
        graph = export_to_nir(net[1:], torch.zeros(1, *MAP), ignore_dims=[0])
    except ValueError as exc:
        import nirtorch
        from snntorch.export_nir import _extract_snntorch_module

        meta["written"] = (f"export_to_nir failed ({exc}); the graph is its extraction "
                           "without the final infer_types()")
        graph = nirtorch.extract_nir_graph(net[1:], _extract_snntorch_module,
                                           torch.zeros(1, *MAP), model_name="snntorch",
                                           ignore_dims=[0])
    graph = fill_conv_shapes(graph, [(8, 8)], meta, flat=(4, 4, 4))
    meta = {"library": "snntorch", "dt": 1e-4, "threshold": ">", "max_spikes": 1,
            "neuron": "Leaky, Conv2d + AvgPool2d of currents", "map": list(MAP), **meta}
    return graph, x, {"spikes": spikes.astype(np.uint8)}, meta


_PACKAGES = ("torch", "nir", "nirtorch", "snntorch", "norse", "sinabs", "rockpool",
             "spikingjelly")


def write_fixture(name: str, out: Path) -> dict:
    import nir

    graph, x, result, meta = FIXTURES[name]()
    meta["versions"] = {p: version(p) for p in _PACKAGES if p == "torch" or p == "nir"
                        or p == "nirtorch" or p == meta["library"]}
    meta["input_shape"] = list(x.shape)
    for key, arr in result.items():
        meta[f"{key}_shape"] = list(arr.shape)
        if key == "spikes":
            meta["output_rate"] = float(arr.mean())
            meta["max_count"] = int(arr.max())
    try:
        nir.write(str(out / f"{name}.nir"), graph)
    except TypeError as exc:  # h5py: "Scalar datasets don't support chunk/filter options"
        meta["written"] = f"nir.write fails on 0-d parameters ({exc}); written uncompressed"
        nir.write(str(out / f"{name}.nir"), graph, compression=None)
    np.savez_compressed(out / f"{name}.npz", input=x, **result)
    (out / f"{name}.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"fixtures to write (default all): "
                        f"{', '.join(FIXTURES)}")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/nir"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    failed = 0
    for name in args.names or FIXTURES:
        try:
            meta = write_fixture(name, args.out)
        except Exception as exc:  # report every library's failure, then exit non-zero
            failed += 1
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        rate = meta.get("output_rate")
        what = f"rate {rate:.3f} max {meta['max_count']}" if rate is not None else "values"
        print(f"{name}: {meta['library']} {meta['neuron']}: {what}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Random integer images for the golden model and the RTL (plain functions and Hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from spikeforge.compiler.ir import LifLayer, Network
from spikeforge.image import CoreConfig, HwConfig, Image, LayerParams


def random_layer(rng: np.random.Generator, name: str, n_in: int, n_out: int, *, weight_bits=4,
                 v_bits=12, reset="subtract", decay_mode="shift", recurrent=False,
                 bias=True, syn_decay_mode=None, syn_bits=12, syn_delay=0, max_spikes=1,
                 in_max_spikes=1, compare=">", reset_delay=True,
                 spiking=True) -> LayerParams:
    """A random integer layer; the keywords after `bias` choose the neuron model (docs/neuron.md:
    a synaptic current when `syn_decay_mode` is set, multi-spike, compare, reset timing, LI
    readout when not `spiking`). Multi-spike layers get thresholds from 0 up, so counts > 1
    happen."""
    wmax = (1 << (weight_bits - 1)) - 1
    weights = rng.integers(-wmax - 1, wmax + 1, (n_out, n_in))
    rec = rng.integers(-wmax - 1, wmax + 1, (n_out, n_out)) if recurrent else None
    kwargs = {}
    for prefix, mode in (("decay", decay_mode), ("syn_decay", syn_decay_mode)):
        if mode == "shift":
            kwargs[f"{prefix}_shift"] = rng.integers(0, 6, n_out)
        elif mode == "mul":
            kwargs[f"{prefix}_mul"] = rng.integers(0, 257, n_out)
            kwargs[f"{prefix}_frac"] = 8
    if syn_decay_mode is not None:
        kwargs.update(syn_decay_mode=syn_decay_mode, syn_bits=syn_bits, syn_delay=syn_delay)
    theta_max = min(4 * wmax + 2, 1 << (v_bits - 1))
    bmax = min(wmax, (1 << (v_bits - 1)) - 1)  # a bias lies in the membrane's range
    theta = rng.integers(0 if max_spikes > 1 else 1, theta_max, n_out)
    layer = LayerParams(name, weights, bias=rng.integers(-bmax, bmax + 1, n_out) if bias
                        else np.zeros(n_out), threshold=theta if spiking else np.zeros(n_out),
                        weight_bits=weight_bits, v_bits=v_bits, acc_bits=40,
                        reset=reset, decay_mode=decay_mode, rec_weights=rec,
                        max_spikes=max_spikes if spiking else 1, in_max_spikes=in_max_spikes,
                        compare=compare, reset_delay=reset_delay, spiking=spiking, **kwargs)
    from dataclasses import replace
    return replace(layer, acc_bits=layer.acc_bits_needed())


def random_image(seed: int, sizes=(6, 10, 3), *, lanes=(2, 3), split=False, recurrent=None,
                 weight_bits=4, v_bits=12, reset="subtract", decay_mode="shift",
                 models=None) -> Image:
    """A random integer image; `models` (one dict per layer of `random_layer` neuron-model
    keywords) mixes the neuron models, each layer's `in_max_spikes` following its source."""
    rng = np.random.default_rng(seed)
    layers, cores = [], []
    in_max = 1
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        model = dict(models[index]) if models is not None else {}
        layers.append(random_layer(rng, f"l{index}", n_in, n_out, weight_bits=weight_bits,
                                   v_bits=v_bits, reset=reset, decay_mode=decay_mode,
                                   recurrent=recurrent == index, in_max_spikes=in_max,
                                   **model))
        in_max = layers[-1].max_spikes
        lane = lanes[index % len(lanes)]
        if split and n_out >= 2:
            mid = n_out // 2
            cores += [CoreConfig(index, 0, mid, min(lane, mid)),
                      CoreConfig(index, mid, n_out, min(lane, n_out - mid))]
        else:
            cores.append(CoreConfig(index, 0, n_out, min(lane, n_out)))
    return Image(sizes[0], layers, HwConfig("iCE40UP5K", tuple(cores)))


@st.composite
def images(draw, max_layers=3, max_width=12):
    n_layers = draw(st.integers(1, max_layers))
    sizes = tuple(draw(st.integers(1, max_width)) for _ in range(n_layers + 1))
    recurrent = draw(st.sampled_from([None] + list(range(n_layers))))
    return random_image(draw(st.integers(0, 2**31)), sizes,
                        lanes=tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))),
                        split=draw(st.booleans()), recurrent=recurrent,
                        weight_bits=draw(st.integers(2, 8)), v_bits=draw(st.integers(6, 16)),
                        reset=draw(st.sampled_from(["subtract", "zero"])),
                        decay_mode=draw(st.sampled_from(["none", "shift", "mul"])))


MODELS = ("lif", "cuba", "multi", "cuba-multi")


@st.composite
def neuron_models(draw, *, last=False, kind=None):
    """`random_layer` keywords of one neuron model (docs/neuron.md): `kind` one of MODELS
    (drawn when None) or, for the last layer only, "li" (an LI readout); compare and reset
    timing drawn too."""
    if kind is None:
        kind = draw(st.sampled_from(MODELS + (("li",) if last else ())))
    model = {"compare": draw(st.sampled_from([">", ">="])), "reset_delay": draw(st.booleans())}
    if kind in ("cuba", "cuba-multi", "li") and (kind != "li" or draw(st.booleans())):
        model.update(syn_decay_mode=draw(st.sampled_from(["none", "shift", "mul"])),
                     syn_bits=draw(st.integers(6, 16)), syn_delay=draw(st.integers(0, 1)))
    if kind in ("multi", "cuba-multi"):
        model["max_spikes"] = draw(st.sampled_from([2, 3, 4, 7]))
    if kind == "li":
        model["spiking"] = False
    return model


@st.composite
def model_images(draw, max_layers=3, max_width=10, kind=None):
    """`images` whose layers run the neuron models of docs/neuron.md: every layer of model
    `kind` (one of MODELS, or "li" for an LI readout after a drawn layer), or a drawn mix."""
    n_layers = draw(st.integers(2 if kind == "li" else 1, max_layers))
    sizes = tuple(draw(st.integers(1, max_width)) for _ in range(n_layers + 1))
    models = [draw(neuron_models(last=index == n_layers - 1,
                                 kind="li" if kind == "li" and index == n_layers - 1
                                 else (None if kind == "li" else kind)))
              for index in range(n_layers)]
    spiking = [m.get("spiking", True) for m in models]
    recurrent = draw(st.sampled_from([None] + [i for i in range(n_layers) if spiking[i]]))
    return random_image(draw(st.integers(0, 2**31)), sizes,
                        lanes=tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))),
                        split=draw(st.booleans()), recurrent=recurrent,
                        weight_bits=draw(st.integers(2, 6)), v_bits=draw(st.integers(6, 16)),
                        reset=draw(st.sampled_from(["subtract", "zero"])),
                        decay_mode=draw(st.sampled_from(["none", "shift", "mul"])),
                        models=models)


def signed(value: int, bits: int) -> int:
    """The `bits`-bit two's-complement field `value` as a Python int."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def plastic_image(image_seed: int, sizes, rules, *, lanes=(2, 3), split=True, weight_bits=5,
                  **rates) -> Image:
    """`random_image` whose layer k learns by `rules[k]` = (rule, stochastic) (None: it does
    not), with thresholds low enough that its neurons fire and learning has work to do."""
    from dataclasses import replace

    image = random_image(image_seed, sizes, lanes=lanes, split=split,
                         weight_bits=weight_bits, v_bits=10)
    layers = [replace(layer, threshold=layer.threshold % 3) if rules[k] else layer
              for k, layer in enumerate(image.layers)]
    image = Image(image.n_inputs, layers, image.config)
    for k, rule in enumerate(rules):
        if rule:
            image = image.with_learning(layer=k, rule=rule[0], stochastic=rule[1], **rates)
    return image


def random_ir(rng: np.random.Generator, sizes, *, alpha_choices=(0.0, 1.0),
              beta_choices=(0.0, 1.0), compare=">", reset="subtract", reset_delay=True,
              syn_delay=0, recurrent=None, readout=False, max_spikes=4) -> Network:
    """A random float IR network (compiler/ir.py) with integer weights and thresholds that
    mixes the neuron models: about 60 % of the layers carry a synaptic current (alpha from
    `alpha_choices`), each layer emits up to 1..`max_spikes` spikes per step, layer
    `recurrent` is recurrent and, with `readout`, the last layer is an LI readout. alpha and
    beta in {0, 1} keep the integer arithmetic exact."""
    layers = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = index == len(sizes) - 2
        alpha = rng.choice(alpha_choices, b) if rng.random() < 0.6 else None
        layers.append(LifLayer(
            name=f"l{index}", weight=rng.integers(-4, 5, (b, a)), bias=rng.integers(-1, 3, b),
            beta=rng.choice(beta_choices, b), threshold=rng.integers(0, 6, b), reset=reset,
            rec_weight=rng.integers(-3, 4, (b, b)) if recurrent == index and
            not (last and readout) else None,
            alpha=alpha, syn_delay=syn_delay if alpha is not None else 0,
            max_spikes=int(rng.integers(1, max_spikes + 1)), compare=compare,
            reset_delay=reset_delay, spiking=not (last and readout)))
    return Network(sizes[0], layers)


@st.composite
def neuron_networks(draw, max_layers=3, max_width=7, exact=True):
    """`random_ir` networks over every variant of docs/neuron.md (Hypothesis)."""
    n_layers = draw(st.integers(1, max_layers))
    sizes = tuple(draw(st.integers(1, max_width)) for _ in range(n_layers + 1))
    choices = (0.0, 1.0) if exact else (0.0, 0.3, 0.5, 0.75, 0.9, 1.0)
    return random_ir(np.random.default_rng(draw(st.integers(0, 2**31))), sizes,
                     alpha_choices=choices, beta_choices=choices,
                     compare=draw(st.sampled_from([">", ">="])),
                     reset=draw(st.sampled_from(["subtract", "zero"])),
                     reset_delay=draw(st.booleans()), syn_delay=draw(st.sampled_from([0, 1])),
                     recurrent=draw(st.sampled_from([None] + list(range(n_layers)))),
                     readout=draw(st.booleans()))


@st.composite
def conv_specs(draw, max_channels=8, max_map=16):
    """Convolution geometries: kernel 1-5, stride 1-2, padding 0-2 (< kernel), 1-8 channels,
    maps up to 16 x 16, pooling none, max or sum over sizes that tile the map."""
    from spikeforge.image import ConvSpec

    kernel = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, min(2, kernel - 1)))
    low = max(1, kernel - 2 * padding)
    height, width = draw(st.integers(low, max_map)), draw(st.integers(low, max_map))
    spec = ConvSpec(draw(st.integers(1, max_channels)), height, width,
                    draw(st.integers(1, max_channels)), kernel, stride=stride, padding=padding)
    conv_h, conv_w = spec.conv_shape
    sizes = [p for p in (2, 3, 4) if conv_h % p == 0 and conv_w % p == 0]
    pool = draw(st.sampled_from(["none"] + (["max", "sum"] if sizes else [])))
    if pool == "none":
        return spec
    from dataclasses import replace
    return replace(spec, pool=pool, pool_size=draw(st.sampled_from(sizes)))


def conv_layer(rng: np.random.Generator, name: str, spec, *, weight_bits=4, v_bits=16,
               threshold=None, decay_mode="shift", in_max_spikes=1) -> LayerParams:
    """A random integer convolutional layer of geometry `spec`."""
    from dataclasses import replace

    wmax = (1 << (weight_bits - 1)) - 1
    n = spec.n_out
    kwargs = {"decay_shift": rng.integers(0, 6, n)} if decay_mode == "shift" else {}
    theta = rng.integers(1, 4 * wmax + 2, n) if threshold is None else threshold
    layer = LayerParams(name, rng.integers(-wmax - 1, wmax + 1, (spec.out_channels, spec.taps)),
                        bias=rng.integers(-wmax, wmax + 1, n), threshold=theta,
                        weight_bits=weight_bits, v_bits=v_bits, acc_bits=40,
                        decay_mode=decay_mode, conv=spec, in_max_spikes=in_max_spikes, **kwargs)
    return replace(layer, acc_bits=layer.acc_bits_needed())


def conv_image(seed: int, spec, *, second=None, readout: int | None = 3, lanes=(1, 2),
               split: bool = False, weight_bits: int = 4) -> Image:
    """A random integer network of convolutions: `spec`, then (`second`: ConvSpec keywords
    without the input geometry, which follows from the first's output) a second convolution,
    then a dense readout of `readout` neurons. Each convolution runs on one core, or (`split`)
    on two channel-aligned cores when it has two output channels or more."""
    from spikeforge.image import ConvSpec

    rng = np.random.default_rng(seed)
    specs = [spec]
    if second is not None:
        channels, height, width = spec.out_shape
        specs.append(ConvSpec(channels, height, width, **second))
    layers, cores = [], []
    for index, geometry in enumerate(specs):
        layers.append(conv_layer(rng, f"c{index}", geometry, weight_bits=weight_bits,
                                 v_bits=12))
        channels = geometry.out_channels
        per_channel = geometry.out_shape[1] * geometry.out_shape[2]
        lane = lanes[index % len(lanes)]
        if split and channels >= 2:
            mid = channels // 2
            cores += [CoreConfig(index, 0, mid * per_channel, min(lane, mid)),
                      CoreConfig(index, mid * per_channel, channels * per_channel,
                                 min(lane, channels - mid))]
        else:
            cores.append(CoreConfig(index, 0, channels * per_channel, min(lane, channels)))
    if readout is not None:
        layers.append(random_layer(rng, "fc", layers[-1].n_out, readout))
        cores.append(CoreConfig(len(layers) - 1, 0, readout, min(2, readout)))
    return Image(spec.n_in, layers, HwConfig("iCE40UP5K", tuple(cores)))

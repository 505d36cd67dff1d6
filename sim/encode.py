"""Spike encoders: turn real-valued inputs in [0, 1] into uint8 spike trains [batch, time, n]."""

from __future__ import annotations

import numpy as np

from ..image import Image


def _unit(x: np.ndarray) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"inputs must be [batch, features] or [features], not {arr.shape}")
    if arr.size and (np.nanmin(arr) < 0 or np.nanmax(arr) > 1 or np.isnan(arr).any()):
        raise ValueError("inputs to a spike encoder must lie in [0, 1]")
    return arr


def rate(x: np.ndarray, steps: int, *, seed: int = 0) -> np.ndarray:
    """Bernoulli rate code: at every step, feature i spikes with probability x_i (seeded)."""
    arr = _unit(x)
    rng = np.random.default_rng(seed)
    draws = rng.random((arr.shape[0], steps, arr.shape[1]))
    return (draws < arr[:, None, :]).astype(np.uint8)


def latency(x: np.ndarray, steps: int, *, threshold: float = 0.01) -> np.ndarray:
    """One spike per feature, earlier for larger values: t = round((1 - x) * (steps - 1)).

    Features at or below `threshold` never spike.
    """
    arr = _unit(x)
    out = np.zeros((arr.shape[0], steps, arr.shape[1]), dtype=np.uint8)
    when = np.rint((1.0 - arr) * (steps - 1)).astype(np.int64)
    b, i = np.nonzero(arr > threshold)
    out[b, when[b, i], i] = 1
    return out


def as_batch(spikes: np.ndarray, n_inputs: int | None = None) -> np.ndarray:
    """[batch, time, n] as it is, [time, n] as a batch of one, [batch, time, C, H, W] (maps of
    a convolutional network) flattened in C order to n = C * H * W; the width checked."""
    arr = np.asarray(spikes)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim == 5:
        arr = arr.reshape(arr.shape[0], arr.shape[1], -1)
    if arr.ndim != 3:
        raise ValueError(f"spikes must be [batch, time, neurons], [time, neurons] or "
                         f"[batch, time, C, H, W], "
                         f"not shape {np.shape(spikes)}")
    if n_inputs is not None and arr.shape[2] != n_inputs:
        raise ValueError(f"spikes have {arr.shape[2]} input neurons, the network has {n_inputs}")
    return arr


def given(spikes: np.ndarray, n_inputs: int | None = None) -> np.ndarray:
    """Spikes given as [batch, time, n] or [time, n] of 0/1, checked and made uint8."""
    arr = as_batch(spikes, n_inputs)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)
            or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"spikes must be numeric 0/1, not dtype {arr.dtype}")
    if arr.dtype == np.uint8 or arr.dtype == np.bool_:
        binary = not arr.size or int(arr.max()) <= 1  # one cheap pass for the usual dtype
    else:
        binary = not arr.size or bool(((arr == 0) | (arr == 1)).all())
    if not binary:
        raise ValueError("spikes must be 0 or 1")
    return arr.astype(np.uint8)


#: LFSR steps per draw of the on-chip rate encoder: 8, so that successive draws share no bits.
RATE_LFSR_STRIDE = 8


def rate_lfsr(intensity: np.ndarray, steps: int, *, seed: int) -> np.ndarray:
    """The on-chip rate encoder (hdl/encoder.py), bit for bit: uint8 spikes [batch, time, n].

    `intensity` is uint8 [batch, n] (or [n]). Each sample starts the 16-bit Galois LFSR of the
    learning unit (taps 0xB400) at state `seed`; every draw first advances it 8 steps, then
    input j spikes at step t when the low byte of the state is below intensity[j]. Draws run
    over the inputs in order, step after step, so draw k = t * n + j (k from 1). Input j spikes
    with probability intensity[j] / 256 (the low bytes of the 65,535 states are uniform but for
    one missing zero).
    """
    from ..lfsr import LFSR_PERIOD, lfsr_positions, lfsr_sequence

    arr = np.asarray(intensity)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"intensities must be integers [batch, inputs] or [inputs], "
                         f"not {arr.dtype} {np.shape(intensity)}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError("intensities must lie in 0..255")
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, not {steps}")
    seed = int(seed)
    if not 1 <= seed <= LFSR_PERIOD:
        raise ValueError(f"an LFSR seed must be 1..65535, not {seed}")
    n = arr.shape[1]
    draws = np.arange(1, steps * n + 1, dtype=np.int64) * RATE_LFSR_STRIDE
    states = lfsr_sequence()[(lfsr_positions()[seed] + draws) % LFSR_PERIOD]
    low = (states & 0xFF).reshape(steps, n)
    return (low[None, :, :] < arr[:, None, :].astype(np.int64)).astype(np.uint8)


#: The kind of on-chip encoder an image names in ``meta["encoder"]``.
RATE_LFSR = "rate_lfsr"


def encoder_seed(image: Image) -> int | None:
    """The LFSR seed of an image that encodes on chip (``meta["encoder"]``), else None."""
    entry = image.meta.get("encoder")
    return None if entry is None else int(entry["seed"])


def with_rate_encoder(image: Image, seed: int = 1) -> Image:
    """A copy of ``image`` that encodes on chip: the host sends 8-bit intensities once per
    sample and the gateware's rate encoder draws every step's spikes (:func:`rate_lfsr`)."""
    meta = dict(image.meta)
    meta["encoder"] = {"kind": RATE_LFSR, "seed": seed}
    out = Image(image.n_inputs, image.layers, image.config, meta, image.learning)
    out.check()
    return out


def encoded_inputs(image: Image, spikes=None, *, intensities=None, steps: int | None = None):
    """The spike trains a run feeds the network: ``spikes`` as they are (``given``), or, for an
    image that encodes on chip, ``intensities`` (uint8 [batch, n] or [n]) over ``steps`` steps
    through :func:`rate_lfsr` with the image's seed. Returns ``(spikes, intensities)``, the
    latter uint8 [batch, n] or None. One-line ValueErrors for the wrong combination."""
    if intensities is None:
        if steps is not None:
            raise ValueError("steps= goes with intensities=, not with spikes")
        if spikes is None:
            raise ValueError("give spikes, or intensities= and steps= for an image that "
                             "encodes on chip")
        return given(spikes, image.n_inputs), None
    if spikes is not None:
        raise ValueError("give spikes or intensities=, not both")
    seed = encoder_seed(image)
    if seed is None:
        raise ValueError("intensities need an image that encodes on chip (compile with "
                         "--encoder rate), and this image does not")
    if steps is None:
        raise ValueError("intensities= needs steps=, the timesteps per sample")
    arr = np.asarray(intensities)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != image.n_inputs:
        raise ValueError(f"intensities must be [batch, {image.n_inputs}] or "
                         f"[{image.n_inputs}], not shape {np.shape(intensities)}")
    train = rate_lfsr(arr, steps, seed=seed)  # checks dtype and range
    return train, arr.astype(np.uint8)

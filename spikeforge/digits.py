"""The built-in demo task: scikit-learn's 8x8 digits, rate-coded, on a small snnTorch network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sim import encode

STEPS = 20
HIDDEN = 128
BETA = 0.875  # 1 - 2^-3: the hardware decays by a shift, no multiplier needed


@dataclass
class DigitsData:
    train_spikes: np.ndarray  # uint8 [n, steps, 64]
    train_labels: np.ndarray  # int64 [n]
    test_spikes: np.ndarray
    test_labels: np.ndarray


def load_digits(steps: int = STEPS, seed: int = 0) -> DigitsData:
    """Digits scaled to [0, 1], a stratified 75/25 split and a seeded rate code."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    x = digits.data.astype(np.float64) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return DigitsData(encode.rate(x_train, steps, seed=seed), y_train.astype(np.int64),
                      encode.rate(x_test, steps, seed=seed + 1), y_test.astype(np.int64))


def build_model(hidden: int = HIDDEN, beta: float = BETA, seed: int = 0):
    """A 64-hidden-10 snnTorch network: Linear -> Leaky -> Linear -> Leaky."""
    import snntorch as snn
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, hidden),
        snn.Leaky(beta=beta, init_hidden=True),
        nn.Linear(hidden, 10),
        snn.Leaky(beta=beta, init_hidden=True, output=True),
    )


def reset_state(model) -> None:
    """Zero the membranes of this model's neurons only.

    (snnTorch's `utils.reset` resets every neuron instance of the process through a class-level
    list, and fails on instances whose state was never set.)
    """
    for module in model.modules():
        if hasattr(module, "reset_mem") and getattr(module, "mem", None) is not None:
            module.reset_mem()


def forward(model, spikes: np.ndarray) -> np.ndarray:
    """snnTorch's own forward pass over time: output spikes uint8 [batch, time, 10]."""
    import torch

    x = torch.as_tensor(np.asarray(spikes), dtype=torch.float32)
    out = []
    with torch.no_grad():
        reset_state(model)
        for t in range(x.shape[1]):
            spk, _ = model(x[:, t])
            out.append(spk)
    return torch.stack(out, dim=1).to(torch.uint8).numpy()


def train(model, data: DigitsData, *, epochs: int = 40, batch: int = 128, lr: float = 5e-3,
          seed: int = 0, progress=None):
    """Backprop through time with snnTorch's rate cross-entropy loss; seeded and CPU-only."""
    import torch
    from snntorch import functional as SF

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = SF.ce_rate_loss()
    x_all = torch.as_tensor(data.train_spikes, dtype=torch.float32)
    y_all = torch.as_tensor(data.train_labels)
    for epoch in range(epochs):
        order = rng.permutation(len(y_all))
        for start in range(0, len(order), batch):
            idx = torch.as_tensor(order[start:start + batch])
            x, y = x_all[idx], y_all[idx]
            reset_state(model)
            spk = torch.stack([model(x[:, t])[0] for t in range(x.shape[1])])  # [T, B, 10]
            loss = loss_fn(spk, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if progress is not None:
            progress(epoch + 1, epochs)
    return model


def predict(spikes: np.ndarray) -> np.ndarray:
    """Spike-count argmax over time (ties go to the lower class index)."""
    return np.asarray(spikes).sum(axis=1).argmax(axis=1)


# -- snnTorch's tutorial-6 architecture on the digits upsampled to 28 x 28 ----------------------
CONV_STEPS = 15
CONV_BETA = 0.5  # tutorial 6's beta; 1 - 2^-1, a shift decay


def upsample_28(x: np.ndarray) -> np.ndarray:
    """[n, 64] digits in [0, 1] -> [n, 784] at 28 x 28, bilinear (align_corners=False)."""
    import torch
    import torch.nn.functional as F

    images = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(-1, 1, 8, 8))
    big = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    return big.clamp(0.0, 1.0).reshape(-1, 784).numpy()


def load_digits_28(steps: int = CONV_STEPS, seed: int = 0) -> DigitsData:
    """The digits of `load_digits`, upsampled to 28 x 28 and rate-coded: spikes are
    [n, steps, 784], the C-order flattening of [n, steps, 1, 28, 28]."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    x = upsample_28(digits.data.astype(np.float64) / 16.0)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    return DigitsData(encode.rate(x_train, steps, seed=seed), y_train.astype(np.int64),
                      encode.rate(x_test, steps, seed=seed + 1), y_test.astype(np.int64))


def build_conv_model(beta: float = CONV_BETA, seed: int = 0):
    """snnTorch tutorial 6: 12C5-MP2-64C5-MP2-FC10 on [1, 28, 28], pooling the currents."""
    import snntorch as snn
    import torch
    from snntorch import surrogate
    from torch import nn

    torch.manual_seed(seed)
    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 12, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 5), nn.MaxPool2d(2),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
        snn.Leaky(beta=beta, spike_grad=grad, init_hidden=True, output=True),
    )

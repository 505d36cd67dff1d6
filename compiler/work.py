"""How long a core can be busy with one step: the bound behind host and testbench timeouts."""

from __future__ import annotations

from ..image import Image

__all__ = ["step_work_bound"]


def step_work_bound(image: Image, core_index: int) -> int:
    """An upper bound on the cycles core ``core_index`` spends on one step (every input of its
    layer spiking once; a recurrent layer's neurons too; a learning layer sweeping its weights;
    a convolution's accumulator read-modify-writes at two cycles each, its pass reading and
    clearing every accumulator and updating every neuron): host and testbench timeouts."""
    core = image.config.cores[core_index]
    layer = image.layers[core.layer]
    conv = layer.conv
    if conv is not None:
        channels = core.neurons // (conv.out_shape[1] * conv.out_shape[2])
        positions = channels * conv.conv_shape[0] * conv.conv_shape[1]
        taps = conv.kernel * conv.kernel * channels
        return (layer.n_in * layer.in_max_spikes * (2 * taps + 1) + 3 * positions
                + 4 * core.neurons + 16)
    work = layer.fan_in * core.groups + core.neurons + 16
    if image.learning_of(core.layer) is not None:
        work += layer.fan_in * core.neurons
    return work

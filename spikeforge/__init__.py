"""spikeforge: trained spiking neural networks to bit-exact LIF core arrays on iCE40 and ECP5.

    image = spikeforge.compile(model_or_path, weight_bits=8, board=None, device=None)
    image.save("net.sfi"); image = spikeforge.load_image("net.sfi")
    result = spikeforge.simulate(image, spikes, engine="golden")  # result.spikes [B, T, n_out]
    with spikeforge.Board("/dev/ttyUSB1") as board:  # Board("sim", image=image): virtual board
        board.load(image); result = board.run(spikes)
    figures = spikeforge.metrics(image, spikes, labels, engine="golden")  # NeuroBench's names
    qmodel = spikeforge.qat(model, spikes, labels, weight_bits=3)  # quantisation-aware tuning
"""

from .api import (  # noqa: A004
    Image,
    build,
    compile,
    deploy,
    flash,
    load_image,
    metrics,
    simulate,
)
from .boards.runtime import Board, BoardError
from .finetune import qat

__version__ = "0.1.0"
__all__ = ["Board", "BoardError", "Image", "build", "compile", "deploy", "flash", "load_image",
           "metrics", "qat", "simulate", "__version__"]

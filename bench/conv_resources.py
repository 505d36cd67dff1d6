"""LUTs of the convolution core (hdl/conv.py ConvCore) from yosys `synth_ice40`, beside the
mapper's model (compiler/mapper.py `core_luts`, its docstring's figures).

Networks shaped as snnTorch's tutorial 6 (12C5-MP2-64C5-MP2-FC10 on 28 x 28) with the widths it
compiles to at 8 and 4 bits (tests/test_mapper_conv.py `tutorial6`), mapped for the iCEBreaker
(iCE40UP5K). For each convolution core of the mapping, or for `--lanes N` (all conv cores) with
`--spram-acc 0/1` (accumulators in SPRAM or block RAM, kernel placed as the mapper places it),
prints one JSON object: the core, its placement, yosys's LUT4s, flip-flops, block RAMs and
SPRAMs of the core alone (its SPRAM as SB_SPRAM256KA: elaborated for an iCE40UP platform), and
the model's LUTs. Each core takes a minute or two of yosys.
Run: .venv/bin/python bench/conv_resources.py [--bits 8 4] [--lanes 1] [--spram-acc 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from amaranth.back import rtlil

from spikeforge.compiler.mapper import FitError, core_luts, map_network, memory_placement
from spikeforge.hdl.conv import ConvCore
from spikeforge.hdl.synth import synth_rtlil_stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.test_mapper_conv import CONV1, tutorial6  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4], choices=[8, 4])
    parser.add_argument("--lanes", type=int, help="lanes of every conv core (default: mapper's)")
    parser.add_argument("--spram-acc", type=int, choices=[0, 1],
                        help="accumulators in SPRAM (1) or block RAM (0); default: mapper's")
    args = parser.parse_args(argv)
    platform = SimpleNamespace(device="iCE40UP5K")  # hdl.spram: SB_SPRAM256KA, not a model
    for bits in args.bits:
        layers = tutorial6(bits)
        try:
            config = map_network(layers, CONV1.n_in, board="icebreaker", device="iCE40UP5K")
        except FitError as exc:
            config = exc.config
        placement = memory_placement(layers, config)
        for index, (core, place) in enumerate(zip(config.cores, placement, strict=True)):
            layer = layers[core.layer]
            if layer.conv is None:
                continue
            if args.lanes is not None:
                core = replace(core, lanes=min(args.lanes, layer.conv.out_channels))
            if args.spram_acc is not None:
                place = replace(place, acc_spram=bool(args.spram_acc))
            dut = ConvCore(core, layer, spram_kernel=place.weights_spram,
                           spram_acc=place.acc_spram)
            stats = synth_rtlil_stats(rtlil.convert(dut, name="top", emit_src=False,
                                                    platform=platform), "iCE40UP5K")
            print(json.dumps({
                "layer": layer.name, "core": index, "bits": bits, "lanes": core.lanes,
                "acc_bits": layer.acc_bits, "v_bits": layer.v_bits,
                "spram_kernel": place.weights_spram, "spram_acc": place.acc_spram,
                **{key: stats[key] for key in ("luts", "ffs", "bram", "spram", "dsp")},
                "model_luts": core_luts(layer, core, place)}), flush=True)


if __name__ == "__main__":
    main()

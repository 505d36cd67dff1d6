"""Device resources of the FPGAs spikeforge targets (from the vendors' data sheets)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    name: str  # as spikeforge and the image name it
    family: str  # "ice40" | "ecp5"
    part: str  # nextpnr / amaranth-boards device string
    package: str  # a common package, for a board-less build
    luts: int
    ffs: int
    bram: int  # block RAMs: iCE40 EBR (4 Kbit) or ECP5 DP16KD (18 Kbit)
    bram_bits: int  # bits per block RAM
    bram_port_bits: int  # widest data port of one block RAM
    spram: int  # iCE40 UP5K single-port RAM blocks (256 Kbit, 16 bits wide)
    spram_bits: int
    dsp: int  # iCE40 SB_MAC16 or ECP5 MULT18X18D

    @property
    def bram_total_bits(self) -> int:
        return self.bram * self.bram_bits


DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("iCE40UP5K", "ice40", "iCE40UP5K", "SG48", luts=5280, ffs=5280, bram=30,
           bram_bits=4096, bram_port_bits=16, spram=4, spram_bits=262144, dsp=8),
    Device("iCE40HX8K", "ice40", "iCE40HX8K", "CT256", luts=7680, ffs=7680, bram=32,
           bram_bits=4096, bram_port_bits=16, spram=0, spram_bits=0, dsp=0),
    Device("iCE40HX1K", "ice40", "iCE40HX1K", "TQ144", luts=1280, ffs=1280, bram=16,
           bram_bits=4096, bram_port_bits=16, spram=0, spram_bits=0, dsp=0),
    Device("LFE5U-25F", "ecp5", "LFE5U-25F", "CABGA381", luts=24288, ffs=24288, bram=56,
           bram_bits=18432, bram_port_bits=36, spram=0, spram_bits=0, dsp=28),
    Device("LFE5U-45F", "ecp5", "LFE5U-45F", "CABGA381", luts=43848, ffs=43848, bram=108,
           bram_bits=18432, bram_port_bits=36, spram=0, spram_bits=0, dsp=72),
    Device("LFE5U-85F", "ecp5", "LFE5U-85F", "CABGA381", luts=83640, ffs=83640, bram=208,
           bram_bits=18432, bram_port_bits=36, spram=0, spram_bits=0, dsp=156),
)}

_ALIASES = {name.lower().replace("-", "").replace("ice40", ""): name for name in DEVICES}


def find_device(name: str) -> Device:
    """Look a device up by name, forgivingly (`up5k`, `iCE40UP5K`, `lfe5u-85f`, `85f`)."""
    key = name.lower().replace("-", "").replace("ice40", "")
    for alias, full in _ALIASES.items():
        if key == alias or (key.endswith("f") and alias.endswith(key) and len(key) >= 3):
            return DEVICES[full]
    raise ValueError(f"unknown device {name!r}; known devices: {', '.join(DEVICES)}")

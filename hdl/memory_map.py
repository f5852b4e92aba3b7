"""Host addresses of everything in the core (the manifest's memory map).

One place computes where a weight, bias, target, input or state lives, for
the generator's manifest, the amaranth.sim driver and the cocotb driver.
"""

from __future__ import annotations

from .enums import ADDR_BITS, REGION_SHIFT, Reg, Region
from .params import CoreParams
from .units.signatures import host_field_bits


class MemoryMap:
    def __init__(self, params: CoreParams):
        self.p = params
        self.field = host_field_bits(params)

    def reg(self, name: str | Reg) -> int:
        """A register's word address (``Reg`` or its manifest name, e.g. ``"status"``)."""
        if isinstance(name, Reg):
            reg = name
        else:
            try:
                reg = Reg[str(name).upper()]
            except KeyError:
                raise ValueError(f"register: {name!r} is not a register of the core (known: "
                                 f"{', '.join(r.key for r in Reg)}; hdl/regmap.py)") from None
        return (Region.REG.value << REGION_SHIFT) | reg.value

    def _lane(self, region: str, lane: int, offset: int) -> int:
        return (Region[region.upper()].value << REGION_SHIFT) | (lane << self.field) | offset

    def input(self, j: int) -> int:
        return (Region.INPUT.value << REGION_SHIFT) | j

    def target(self, k: int) -> int:
        """Output neuron k (0-based among the outputs)."""
        lay = self.p.layout
        i = lay.out_first + k
        return self._lane("target", int(lay.owner[i]), int(lay.local[i]))

    def state(self, i: int, which: str = "state") -> int:
        """Non-input neuron i: 'state' (write: initial state), 's0' or 'final' (read)."""
        lay = self.p.layout
        return self._lane(which, int(lay.owner[i]), int(lay.local[i]))

    def weight(self, lane: int, entry: int) -> int:
        return self._lane("weight", lane, entry)

    def bias(self, i: int) -> int:
        lay = self.p.layout
        return self._lane("bias", int(lay.owner[i]), int(lay.local[i]))

    def describe(self) -> dict:
        lay = self.p.layout
        return {
            "address_bits": ADDR_BITS,
            "data_bits": 32,
            "region_shift": REGION_SHIFT,
            "regions": {r.key: r.value for r in Region},
            "registers": {r.key: r.value for r in Reg},
            "lane_field_bits": self.field,
            "lane_address": "(region << 20) | (lane << lane_field_bits) | offset",
            "neurons": [{"i": i, "lane": int(lay.owner[i]), "local": int(lay.local[i])} for i in range(lay.S)],
            "read_latency": 1,
        }

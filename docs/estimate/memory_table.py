"""The memory table of docs/hardware.md "Estimate before synthesis": eqprop hdl estimate's
memory by kind for the paper's 784-input networks at 4/6/8-bit weights, 8 lanes.

    python docs/estimate/memory_table.py > docs/estimate/memory.md
"""
import sys
import time

from eqprop.hdl import estimate as E
from eqprop.hdl.fpga import TARGETS
from eqprop.hdl.params import CoreParams
from eqprop.model.numerics import numerics_from_mapping
from eqprop.model.topology import from_spec

NETS = [[784, 100, 100, 100, 10], [784, 100, 100, 100, 100, 100, 10], [784, 500, 500, 500, 10]]
print("| network | topology | weight bits | stored weights | unique weights | ratio | indices | states | "
      "total | fits up5k | fits ecp5-85k | cycles / step (P = 8) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for sizes in NETS:
    for kind in ("layered", "skip"):
        topo = from_spec(kind, sizes, p=0.0756 if kind == "skip" else None, seed=0)
        for bits in (8, 6, 4):
            t0 = time.time()
            num = numerics_from_mapping({"state": 8, "weight": bits, "bias": 12})
            p = CoreParams(topo, num, 0.5, 0.5, [0.02], 8, 30, 8)
            rows = {}
            for t in ("up5k", "ecp5-85k"):
                rows[t] = E.estimate(p, TARGETS[t])
            e = rows["up5k"]
            mb = e["memory_bits"]
            fit = {t: "yes" if not E.overflows(r) else "no" for t, r in rows.items()}
            print(f"| {'-'.join(map(str, sizes))} | {kind} | {bits} | {mb['weights'] / 1e6:.3f} Mbit | "
                  f"{e['unique_weight_bits'] / 1e6:.3f} Mbit | {e['weight_ratio']:.2f}x | {mb['indices'] / 1e6:.2f} Mbit | "
                  f"{mb['states'] / 1e3:.0f} kbit | {e['memory_total_bits'] / 1e6:.2f} Mbit | {fit['up5k']} | "
                  f"{fit['ecp5-85k']} | {e['cycles']['step']:,} |", flush=True)
            print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

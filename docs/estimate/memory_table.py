"""The memory table of docs/hardware.md "Estimate before synthesis": eqprop hdl estimate's
memory by kind for the paper's 784-input networks at 4/6/8-bit weights, with one lane (each
weight stored once; "fits up5k" with weight_init = "host", the weights in the SPRAM, two
8-bit or four 4-bit slots to a word, a 6-bit weight in an 8-bit slot) and with 8 lanes (a
copy of each symmetric weight per end lane).

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
print("| network | topology | weight bits | unique weights | P = 1: stored weights | ratio | indices | "
      "total | fits up5k | fits ecp5-85k | P = 8: stored weights | ratio | fits ecp5-85k | cycles / step (P = 1, 8) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def mb(bits):
    return f"{bits / 1e6:.3f} Mbit"


for sizes in NETS:
    for kind in ("layered", "skip"):
        topo = from_spec(kind, sizes, p=0.0756 if kind == "skip" else None, seed=0)
        for bits in (8, 6, 4):
            t0 = time.time()
            num = numerics_from_mapping({"state": 8, "weight": bits, "bias": 12})
            est = {}
            for P, init in ((1, "verilog"), (1, "host"), (8, "verilog")):
                p = CoreParams(topo, num, 0.5, 0.5, [0.02], P, 30, 8, weight_init=init)
                est[(P, init)] = {t: E.estimate(p, TARGETS[t]) for t in ("up5k", "ecp5-85k")}
            one, eight = est[(1, "verilog")]["up5k"], est[(8, "verilog")]["up5k"]
            # the UP5K with its weights in SPRAM (weight_init = "host"), the ECP5 in block RAM
            fit = {(P, t): "yes" if not E.overflows(est[(P, "host" if t == "up5k" else "verilog")][t]) else "no"
                   for P in (1, 8) for t in ("up5k", "ecp5-85k") if (P, t) != (8, "up5k")}
            print(f"| {'-'.join(map(str, sizes))} | {kind} | {bits} | {mb(one['unique_weight_bits'])} | "
                  f"{mb(one['memory_bits']['weights'])} | {one['weight_ratio']:.2f}x | "
                  f"{one['memory_bits']['indices'] / 1e6:.2f} Mbit | {one['memory_total_bits'] / 1e6:.2f} Mbit | "
                  f"{fit[(1, 'up5k')]} | {fit[(1, 'ecp5-85k')]} | {mb(eight['memory_bits']['weights'])} | "
                  f"{eight['weight_ratio']:.2f}x | {fit[(8, 'ecp5-85k')]} | "
                  f"{one['cycles']['step']:,}, {eight['cycles']['step']:,} |", flush=True)
            print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

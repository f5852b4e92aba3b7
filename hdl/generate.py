"""``eqprop hdl generate``: Verilog, memory init files, manifest, lint and synthesis.

    eqprop hdl generate --config FILE.toml --out build/NAME/ [--lanes P] [--checkpoint RUN_DIR] [--settle BOOL]
                        [--bits KEY=VAL,...] [--onchip-lr R[,R...]] [--target T] [--board B [--baud N]]
                        [--clock-mhz F] [--synth] [--pnr] [--no-lint] [--force]

The configuration is the training one ([train] topology, eps, beta, steps,
rates; [fixed] formats, docs/numerics.md) plus an optional [hdl] table:
``lanes`` (P), ``checkpoint`` (a run directory whose weights and biases
initialise the memories; float runs, and fixed-point runs in other formats
than the design's, are quantized nearest-even), ``name``,
``target`` (the FPGA of --synth/--pnr: ``up5k``, the default, or ``ecp5-25k``,
``ecp5-45k``, ``ecp5-85k``; ``hdl/fpga.py``; ``--target`` overrides it), ``device``
(another iCE40 for an iCE40 target, e.g. ``hx8k``) and ``package`` (nextpnr's, over the
target's), ``clock_mhz`` (for times in the manifest and nextpnr's constraint; ``--clock-mhz``),
``board`` (``ulx3s``, ``ulx3s-85f``, ``-45f``, ``-25f``: also ``NAME_ulx3s.v``, the board top of
``hdl/board.py`` with the core behind a UART, and its pin constraints ``NAME_ulx3s.lpf``; implies the
board's target and ``clock_mhz`` 25 unless given, and --synth/--pnr then build the board top into
``NAME_ulx3s.bit``; ``--board``), ``baud`` (the board's UART, default 115200; ``--baud``), ``router``
(nextpnr's: ``router1``, the default, or ``router2``; ``--router``), ``pnr_seed`` (nextpnr's
``--seed``, default 1: placement moves a full chip's fmax by several percent; ``--pnr-seed``),
``bus`` (``native``, the default: the core's host bus; ``axi4lite``: ``NAME.v``
is the core behind an AXI4-Lite slave, ``hdl/axi.py``; ``--bus`` overrides it), ``onchip_lr`` (the
on-chip update's rates, batch 1: the rate registers' reset values; default the training rates
divided by ``batch_size``, docs/numerics.md §6; ``--onchip-lr`` overrides it). Without a checkpoint, the memories hold the model's initialisation
for ``seed``. ``--bits`` overrides [fixed] keys (the same syntax as
``eqprop train --bits``), e.g. to build one trained network at several depths.

Outputs in the directory: ``NAME.v`` (the core, Amaranth's Verilog as it is),
``NAME_serial.v`` (the core behind a serial shift-register port, for
place-and-route on small FPGAs), ``NAME.vlt`` and ``NAME_serial.vlt`` (Verilator
configurations that waive, line by line, the generator's own lint warnings:
``hdl/lint.py``), ``laneK_{conn,weights,biases}.hex`` (memory
contents, one word per line, also embedded in the Verilog), ``manifest.json``
(formats, memory map, ports, cycle model, lint and synthesis results: all a
testbench needs to know about the design; ``lint``: the raw Verilator ``-Wall`` counts per
code, the waived ones and what remains), ``lint.txt`` and, with --synth,
``synth.json``; with --pnr also ``timing.txt`` (fmax, each critical path named, the
DSPs nextpnr does not time), ``nextpnr.log`` and the bitstream ``NAME_serial.bin``
(iCE40) or ``.bit`` (ECP5). A missing tool (checked before anything is built), a
tool's failure and a design that does not fit the target are one line (ConfigError,
exit 2). The manifest keeps the SHA-256 of every other file
(``digests``), which ``eqprop sim`` and ``eqprop waves`` check.

Before it builds anything, the command prints one line with the design's size
(neurons, connections, lanes, lane memory words and bits, cycles per step:
:func:`design_size`, from the topology without building the lanes) and refuses
(ConfigError, exit 2) a design whose lane memories exceed
``LANE_MEMORY_LIMIT_BITS`` unless ``--force`` is given. The files are written
into a temporary directory next to ``--out`` and moved into it once all of
them are written (``manifest.json`` last): a failure leaves no half-written
design and no litter (docs/failures.md).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from eqprop.model import config as config_mod
from eqprop.model.config import ConfigError

from .core import Core, cycle_model
from .fpga import DEFAULT_TARGET, TARGETS, Target
from .layout import LAYOUT_VERSION
from .memory_map import MemoryMap
from .params import WEIGHT_INITS, CoreParams, bits_for, file_digest, settle_to_dict
from .serial import FRAME_BITS, SerialCore
from .units.signatures import bank_depth

HDL_KEYS = {"lanes": int, "checkpoint": str, "name": str, "target": str, "device": str, "package": str,
            "clock_mhz": (int, float), "bus": str, "onchip_lr": (int, float, list), "weight_init": str,
            "board": str, "baud": int, "router": str, "pnr_seed": int}
# nextpnr's routers (``--router``): router1, its default, or router2, which finishes designs
# whose routing congests far sooner (docs/hardware.md "Targets": the 8-lane demo on the ECP5)
ROUTERS = ("router1", "router2")
# The top's host interface: "native" (the core's HOST_BUS, hdl/core.py) or "axi4lite" (hdl/axi.py)
BUSES = ("native", "axi4lite")


def hdl_options(cfg) -> dict:
    opts = {"lanes": 1, "checkpoint": "", "name": "eqprop_core", "target": DEFAULT_TARGET, "device": "",
            "package": "", "clock_mhz": 12.0, "bus": "native", "onchip_lr": None, "weight_init": "verilog",
            "board": "", "baud": 115200, "router": "router1", "pnr_seed": 1}
    for k, v in cfg.hdl.items():
        if k not in HDL_KEYS:
            raise ConfigError(f"{k}: unknown [hdl] key (known: {', '.join(HDL_KEYS)})")
        if isinstance(v, bool) or not isinstance(v, HDL_KEYS[k]):
            raise ConfigError(f"{k}: bad value {v!r} in [hdl]")
        opts[k] = v
    if opts["lanes"] < 1:
        raise ConfigError(f"lanes: must be >= 1, got {opts['lanes']}")
    if opts["bus"] not in BUSES:
        raise ConfigError(f"bus: {opts['bus']!r} is not one of {', '.join(BUSES)}")
    if opts["weight_init"] not in WEIGHT_INITS:
        raise ConfigError(f"weight_init: {opts['weight_init']!r} is not one of {', '.join(WEIGHT_INITS)}")
    if not opts["name"].isidentifier():
        raise ConfigError(f"name: {opts['name']!r} is not a Verilog identifier")
    if not opts["clock_mhz"] > 0:
        raise ConfigError(f"clock_mhz: must be > 0, got {opts['clock_mhz']}")
    if opts["router"] not in ROUTERS:
        raise ConfigError(f"router: {opts['router']!r} is not one of {', '.join(ROUTERS)}")
    if not 0 <= opts["pnr_seed"] < 2 ** 31:
        raise ConfigError(f"pnr_seed: must be 0 .. 2^31 - 1, got {opts['pnr_seed']}")
    board_options(cfg, opts)
    opts["fpga"] = fpga_target(opts)
    opts["onchip_lr"] = onchip_rates(cfg, opts["onchip_lr"])
    return opts


def board_options(cfg, opts: dict):
    """``[hdl] board`` (``--board``, hdl/board.py): its target, the core's clock (the
    oscillator's 25 MHz unless ``clock_mhz`` is given: then the PLL's nearest, which
    ``clock_mhz`` becomes) and the UART's ``baud``, checked (ConfigError naming the key)."""
    if not opts["board"]:
        if "baud" in cfg.hdl:
            raise ConfigError(f"baud: {opts['baud']} applies to a board's UART; give --board too")
        return
    from .board import BOARDS, OSC_MHZ, board_clock

    b = BOARDS.get(opts["board"])
    if b is None:
        raise ConfigError(f"board: {opts['board']!r} is not one of {', '.join(BOARDS)}")
    try:
        import amaranth_boards  # noqa: F401  (the pins of the board's top)
    except ImportError:
        raise ConfigError("board: amaranth-boards not found: install it with 'pip install -e .[fpga]'") from None
    if "target" in cfg.hdl and opts["target"] != b.target:
        raise ConfigError(f"target: {opts['target']!r} is not the FPGA of board {b.name} ({b.target}); "
                          f"leave the target out with a board")
    opts["target"] = b.target
    if "clock_mhz" not in cfg.hdl:
        opts["clock_mhz"] = OSC_MHZ
    try:
        _, opts["clock_mhz"], _ = board_clock(float(opts["clock_mhz"]), opts["baud"])
    except ValueError as e:
        raise ConfigError(str(e)) from None


def onchip_rates(cfg, given=None) -> list[float]:
    """The rates alpha of the core's on-chip update (batch 1, eqs. 7-8; docs/numerics.md §6):
    ``[hdl] onchip_lr`` (one rate, or one per layer pair like ``lr``), else the training
    rates divided by the training batch size, so that each on-chip update applies what one
    example contributed to a batch update of the run (the design's multipliers then equal
    the training's). ConfigError naming ``onchip_lr`` for a bad value."""
    if given is None:
        return [float(r) / cfg.batch_size for r in cfg.lr]
    rates = given if isinstance(given, list) else [given]
    config_mod.check_rate_count("onchip_lr", rates, cfg.sizes)
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 0:
            raise ConfigError(f"onchip_lr: bad rate {r!r} (a number >= 0)")
    return [float(r) for r in rates]


def fpga_target(opts: dict) -> Target:
    """The FPGA of ``opts["target"]`` (hdl/fpga.py's TARGETS), with the [hdl] table's
    ``device`` (iCE40 targets only) and ``package`` over its own."""
    from dataclasses import replace

    from .toolchain import _ice40_family

    name = opts["target"]
    if name not in TARGETS:
        raise ConfigError(f"target: {name!r} is not one of {', '.join(TARGETS)}")
    t = TARGETS[name]
    if opts["device"]:
        if t.family != "ice40":
            raise ConfigError(f"device: {opts['device']!r} applies to iCE40 targets; the part of {name} is "
                              f"{t.part} (give another --target)")
        try:
            _ice40_family(opts["device"])
        except ValueError as e:
            raise ConfigError(f"device: {e}") from None
        t = replace(t, device=opts["device"].lower(), part=f"iCE40{opts['device'].upper()}")
    if opts["package"]:
        t = replace(t, package=opts["package"], part=f"{t.part.rsplit('-', 1)[0]}-{opts['package']}")
    return t


# The largest design ``eqprop hdl generate`` and ``eqprop sim`` build without --force:
# 4 Mibit of lane memory (walk tables, weights, biases, state banks, inputs),
# 32 times the block RAM of the largest iCE40 (128 kbit; the default target, the
# UP5K, has 120 kbit) and about a minute of generation. The demo design
# (configs/demo.toml, 49-32-10, 8 lanes) needs 61 kibit, a 196-100-10 layer-skipping
# network with 8 lanes 357 kibit; the paper's 784-500-500-500-10 layer-skipping
# network with one lane 24.8 Mibit (minutes and gigabytes to generate, and no FPGA of
# this flow holds it). (Before the dense walk, with a connection word per entry: 165
# kibit, 1.6 Mibit, 145 Mibit.)
LANE_MEMORY_LIMIT_BITS = 1 << 22


def design_size(topology, num, P: int) -> dict:
    """How big the core for ``topology`` with P lanes is, without building its lanes: the
    numbers :func:`eqprop.hdl.layout.build_layout` (the same greedy lane assignment) and
    :class:`eqprop.hdl.lane.Lane` (its memories) would give, in well under a second for the
    paper's network (whose layout takes under a second)."""
    from .core import MAC_LATENCY, NEURON_LATENCY, START_LATENCY, STEP_OVERHEAD

    sizes = list(topology.sizes)
    n_in, N = sizes[0], int(topology.n)
    S = N - n_in
    if P < 1:
        raise ConfigError(f"lanes: must be >= 1, got {P}")
    if P > S:
        raise ConfigError(f"lanes: P = {P} exceeds the {S} non-input neurons")
    from .layout import greedy_lanes, part_sizes, weight_bases

    counts = part_sizes(topology)  # per neuron and part: entries (holes and dummies too), segments, ...
    ent = counts["entries"]
    owner = greedy_lanes(ent[0], ent[1], P)  # build_layout's greedy

    def per_lane(a):
        return np.bincount(owner, weights=a, minlength=P).astype(np.int64).tolist()

    entries, owned, load = per_lane(ent.sum(0)), per_lane(np.ones(S)), per_lane(ent[1])
    segs, sparse, holes = (per_lane(counts[k].sum(0)) for k in ("segments", "sparse", "holes"))
    n_edges = int(np.count_nonzero(np.triu(topology.mask, 1)))
    L = len(sizes)
    n_pairs = sum(1 for a in range(L) for b in range(max(a, 1), L))
    npl = max(owned)
    sw, ww, bw = num.state.n_word, num.weight_store.n_word, num.bias.n_word
    slot_bits = bits_for(topology.n_slots + 1)
    drive_bits = num.acc_exact_bits(int(topology.mask.sum(0).max()))  # CoreParams.drive_bits
    words = bits = conn_total = weight_total = 0
    n_words = weight_bases(topology)[2] if P == 1 else None  # one lane: each weight once (layout.py)
    for e, n, ns, nsp, nh in zip(entries, owned, segs, sparse, holes):
        e1, n1 = max(e, 1), max(n, 1)
        w1 = max(n_words, 1) if P == 1 else e1  # the weight memory's words
        # the FaninStore's tables (units.fanin.table_layouts): neurons, segments, sparse, holes, sources
        seg_bits = slot_bits + (bits_for(w1) if P == 1 else 0)  # P = 1: each segment's first weight address
        tables = [(n1, bits_for(S) + bits_for(L) + bits_for(max(sizes[1:])) + 2), (ns + 1, seg_bits),
                  (nsp + 1 if nsp else 0, bits_for(max(n_in, S)) + slot_bits + bits_for(n_pairs) + 1),
                  (nh + 1 if nh else 0, bits_for(e + 1))]  # (only the pad word: a constant, no memory)
        if P > 1:
            tables.append((S, bits_for(P) + bits_for(npl)))
        mems = tables + [(w1, ww), (n1, bw), (n1, drive_bits), (n1, 1), (n_in, sw),
                         (n1, bits_for(S) + bits_for(n_pairs))]  # weights, biases, drives, targets, inputs,
        # bias constants
        mems += [(bank_depth(m), sw) for m in owned]  # the state banks: a copy of every lane's states
        words += sum(d for d, _ in mems)
        bits += sum(d * w for d, w in mems)
        conn_total += sum(d * w for d, w in tables)
        weight_total += w1 * ww
    depth = max(entries)
    return {"sizes": sizes, "kind": topology.kind, "neurons": N, "non_input": S, "connections": n_edges,
            "lanes": P, "entries": sum(entries), "lane_depth": depth, "memory_words": words, "memory_bits": bits,
            "connection_list_bits": conn_total, "weight_bits": weight_total,
            "step_cycles": max(load) + START_LATENCY + MAC_LATENCY + NEURON_LATENCY + STEP_OVERHEAD}  # the step entries


def _mbit(bits: int) -> str:
    return f"{bits / (1 << 20):.2f} Mibit" if bits >= 1 << 20 else f"{bits / 1024:.1f} kibit"


def size_line(name: str, z: dict) -> str:
    return (f"building {name}: {'-'.join(map(str, z['sizes']))} {z['kind']}, {z['neurons']:,} neurons "
            f"({z['non_input']:,} non-input), {z['connections']:,} connections, {z['lanes']} lane"
            f"{'s' if z['lanes'] != 1 else ''}, lane memory {z['memory_words']:,} words / {z['memory_bits']:,} bits = "
            f"{_mbit(z['memory_bits'])} (walk tables {_mbit(z['connection_list_bits'])}, weights "
            f"{_mbit(z['weight_bits'])}), {z['step_cycles']:,} cycles per step")


def check_size(z: dict, force: bool):
    if z["memory_bits"] > LANE_MEMORY_LIMIT_BITS and not force:
        raise ConfigError(
            f"sizes: the {'-'.join(map(str, z['sizes']))} design needs {_mbit(z['memory_bits'])} of lane memory "
            f"({z['connections']:,} connections), over the limit of "
            f"{_mbit(LANE_MEMORY_LIMIT_BITS)} (docs/failures.md): give a smaller network (--config), or --force to "
            f"build it anyway (minutes and gigabytes)")


def network_topology(cfg, opts: dict):
    """The design's network: the checkpoint's (checked by load_run) or the configuration's."""
    from eqprop.model.topology import Topology
    from eqprop.model.train import build_topology, load_run

    ck = opts["checkpoint"]
    if ck:
        _, net, _ = load_run(ck)
        return Topology.load(Path(ck) / "topology.npz"), net
    return build_topology(cfg), None


def build_params(cfg, opts: dict, topo=None) -> CoreParams:
    """The CoreParams of this configuration (its network: the checkpoint's or the config's)."""
    if topo is None:
        topo, _ = network_topology(cfg, opts)
    return CoreParams(topo, config_mod.numerics(cfg), cfg.eps, cfg.beta, opts["onchip_lr"], opts["lanes"],
                      cfg.free_steps, cfg.nudged_steps, cfg.nudge, config_mod.settle_rule(cfg), opts["weight_init"])


def build(cfg, opts: dict, topo=None, net=None, params: CoreParams | None = None):
    """CoreParams and the raw parameters (stored weights, biases) for this configuration."""
    ck = opts["checkpoint"]
    if topo is None:
        topo, net = network_topology(cfg, opts)
    params = params or build_params(cfg, opts, topo)
    fx = params.net
    if ck:
        fixed = getattr(net, "is_fixed", False)
        if fixed and (net.num.weight_store, net.num.bias) == (fx.num.weight_store, fx.num.bias):
            fx.load_state_dict(net.state_dict())
        else:  # a float run, or a fixed run in other formats: its real values, quantized (nearest-even)
            fx.load_float(*(net.full_float() if fixed else net.full()))
    else:
        fx.init_params(cfg.seed, cfg.init_adjacent, cfg.init_other, cfg.init_bias)
    return params, fx


_DUMP = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+)\s*= 0;\n", re.M)
TIME0_MARK = "// eqprop: evaluate every always @* block at time 0"


def evaluate_comb_at_time0(text: str) -> str:
    """Verilog that event-driven simulators start correctly: every ``always @*`` block
    evaluated once at time 0 (docs/hardware.md, "Verilog as shipped").

    Yosys' write_verilog (Amaranth's backend) makes each ``always @*`` block of a module
    sensitive to a ``dump_module`` register declared ``= 0``, expecting that initialisation
    to run each block once. A declaration initialiser is no event (IEEE 1800 and Icarus), so
    a block whose inputs never change (constant tables, e.g. the buffer offsets of the
    state banks) keeps X outputs and the first inference after power-up reads X states.
    After each such declaration this adds a non-blocking ``<= 1`` in an ``initial``: it
    lands in the NBA region of time 0, after every ``always`` block has reached its event
    control, so each one runs once (no delay, independent of the timescale and of process
    order). It is hidden from synthesis (``SYNTHESIS``) and from Verilator (which settles
    all combinational logic at start-up by itself). Idempotent.
    """
    if TIME0_MARK in text:
        return text

    def add(m):
        ind, reg = m.group(1), m.group(2)
        return (f"{m.group(0)}`ifndef SYNTHESIS\n`ifndef VERILATOR\n{ind}{TIME0_MARK}\n"
                f"{ind}initial {reg} <= 1'b1;\n`endif\n`endif\n")

    return _DUMP.sub(add, text)


def _hex(values, bits) -> str:
    digits = max(1, math.ceil(bits / 4))
    return "".join(f"{v & ((1 << bits) - 1):0{digits}x}\n" for v in values)


def port_list(component) -> list[dict]:
    ports = [{"name": "clk", "dir": "in", "width": 1}, {"name": "rst", "dir": "in", "width": 1}]
    for path, member, _ in component.signature.flatten(component):
        ports.append({"name": "__".join(str(p) for p in path), "dir": "in" if member.flow.name == "In" else "out",
                      "width": member.shape.width if hasattr(member.shape, "width") else int(member.shape)})
    return ports


def _missing_dirs(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet (outermost last)."""
    return [q for q in (out, *out.parents) if not q.exists()]


def prepare_out(out: Path, key: str = "out") -> tuple[Path, list[Path]]:
    """Make the design directory ``out`` (and its missing parents) and a staging directory in
    it; ConfigError naming ``key``, the path and the reason if it cannot be one. Returns the
    staging directory and the directories made (to remove again on failure)."""
    from eqprop.model.config import os_reason

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{key}: cannot write the design directory {out} (it is a file, not a directory)")
    made = _missing_dirs(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name or 'design'}.", suffix=".tmp", dir=out))
    except OSError as e:
        _remove_dirs(made)
        raise ConfigError(f"{key}: cannot write the design directory {out} ({os_reason(e, out)})") from None
    return stage, made


def _remove_dirs(made: list[Path]):
    for q in made:  # innermost first
        try:
            q.rmdir()
        except OSError:
            pass


def _write_json(path: Path, obj):
    from eqprop.model.files import atomic_write

    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def generate(cfg, out: Path, lint: bool = True, synth: bool = False, pnr: bool = False, log=print,
             force: bool = False, key: str = "out") -> dict:
    """Build the design of ``cfg`` into ``out`` (see the module's docstring). ``key`` names the
    output path in error lines (``out`` for eqprop hdl generate, ``design`` for eqprop sim)."""
    from eqprop.model.config import os_reason

    opts = hdl_options(cfg)
    name = opts["name"]
    out = Path(out)
    if out.exists() and not out.is_dir():  # before the checkpoint and the network are read
        raise ConfigError(f"{key}: cannot write the design directory {out} (it is a file, not a directory)")
    topo, net = network_topology(cfg, opts)
    size = design_size(topo, config_mod.numerics(cfg), opts["lanes"])
    log(size_line(name, size))
    check_size(size, force)
    from .estimate import estimate, fit_line, format_text

    params = build_params(cfg, opts, topo)
    est = estimate(params, opts["fpga"])
    log(format_text(est, name))
    why = fit_line(est, name)
    # The target was chosen (--target, [hdl] target) or is about to be used: refuse what cannot fit.
    if why and not force and ("target" in cfg.hdl or synth or pnr):
        raise ConfigError(f"{why}: give a smaller network or more lanes' worth of target, or --force")
    if synth or pnr:  # before anything is built: a missing tool is one line, not minutes later
        from .fpga import require_tools

        with tool_errors(f"target {opts['target']}"):
            require_tools(opts["fpga"], pnr)
    stage, made = prepare_out(out, key)
    try:
        try:
            files, params, core, cm = _write_design(cfg, opts, topo, net, stage, params)
            manifest = _manifest(cfg, opts, params, core, cm, files, stage)
            manifest["estimate"] = {k: v for k, v in est.items() if k != "memories"}
            if opts.get("board_manifest"):
                manifest["board"] = opts["board_manifest"]
            old = out / "manifest.json"
            try:
                stale = [f for f in json.loads(old.read_text()).get("files", []) if f not in files] \
                    if old.is_file() else []
            except (ValueError, OSError, AttributeError):
                stale = []
            if old.exists():
                old.unlink()  # a directory part old, part new is never described by the old manifest
            for f in files:
                os.replace(stage / f, out / f)
            for f in stale:  # e.g. the hex files of lanes the new design does not have
                if isinstance(f, str) and "/" not in f and f != "manifest.json" and (out / f).is_file():
                    (out / f).unlink()
            _write_json(out / "manifest.json", manifest)
        except OSError as e:
            raise ConfigError(f"{key}: cannot write the design directory {out} ({os_reason(e, out)})") from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_dirs(made)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    _check_tools(opts, out, manifest, lint, synth, pnr, log)
    log(f"wrote {out}/{name}.v, manifest.json ({params.P} lanes, {cm['step']} cycles per step, "
        f"{cm['train_example']} per training example, MAC utilisation {100 * cm['mac_utilisation']:.1f}%)")
    return manifest


def shipped_verilog(top, name: str, params: CoreParams) -> str:
    """The Verilog of a top as the flow ships it: Amaranth's as it is, plus
    ``evaluate_comb_at_time0``; under ``weight_init = "host"`` the weights and biases have no
    initial values (the host writes them; an iCE40 SPRAM cannot be initialised)."""
    from .toolchain import generate_verilog

    no_init = ("weights", "biases") if params.weight_init == "host" else ()
    return evaluate_comb_at_time0(generate_verilog(top, name, emit_src=False, lint_waivers=False,
                                                   no_init=no_init))


def _write_verilog(stage: Path, name: str, top, params: CoreParams):
    """``NAME.v`` (:func:`shipped_verilog`) and ``NAME.vlt``, the Verilator configuration
    that waives the generator's own lines of it (``hdl/lint.py``; docs/rtl.md "Lint")."""
    from .lint import generator_waivers, waiver_config

    text = shipped_verilog(top, name, params)
    (stage / f"{name}.v").write_text(text)
    (stage / f"{name}.vlt").write_text(waiver_config(generator_waivers(text, name), f"{name}.v"))


def _write_design(cfg, opts, topo, net, stage: Path, params: CoreParams | None = None):
    name = opts["name"]
    params, fx = build(cfg, opts, topo, net, params)
    num = params.num
    lw = params.lane_weights(fx.W_in, fx.W_ss)
    lb = params.lane_biases(fx.b)
    core = Core(params, lw, lb)
    top = core
    if opts["bus"] == "axi4lite":
        from .axi import AxiLiteCore

        top = AxiLiteCore(core)  # NAME is the wrapper; the core is its submodule "core"
    _write_verilog(stage, name, top, params)
    from .regmap import c_header

    (stage / f"{name}.h").write_text(c_header(MemoryMap(params), name, opts["bus"]))  # the register map in C
    params.topology.save(stage / "topology.npz")  # the exact network, for testbenches
    _write_verilog(stage, f"{name}_serial", SerialCore(Core(params, lw, lb)), params)
    if opts["board"]:  # NAME_ulx3s.v and .lpf: the board top (hdl/board.py)
        from .board import BOARDS, lpf_text

        b = BOARDS[opts["board"]]
        board, entry = board_top_of(params, opts)
        _write_verilog(stage, entry["top"], board, params)
        (stage / entry["lpf"]).write_text(lpf_text(b))
        opts["board_manifest"] = entry
    for ell, lane in enumerate(params.layout.lanes):
        (stage / f"lane{ell}_weights.hex").write_text(_hex(lw[ell], num.weight_store.n_word))
        (stage / f"lane{ell}_biases.hex").write_text(_hex(lb[ell], num.bias.n_word))
        (stage / f"lane{ell}_conn.txt").write_text("".join(
            f"{e.neuron} {'x' if e.src_input else 's'}{e.src} edge={e.edge} pair={e.pair} waddr={e.waddr}"
            f"{' mirror' if e.mirror and not e.dummy else ''}"
            f"{' first' if e.first else ''}{' last' if e.last else ''}"
            f"{(' hole' if e.edge >= 0 else ' dummy') if e.dummy else ''}\n"
            for e in lane.entries))
    files = sorted(p.name for p in stage.iterdir())
    return files, params, top, cycle_model(params)


def board_top_of(params, opts: dict):
    """The board top of ``opts["board"]`` and its manifest entry (with its ``top`` and
    ``lpf`` file names)."""
    from .board import BOARDS, board_top

    b = BOARDS[opts["board"]]
    top, entry = board_top(params, b, float(opts["clock_mhz"]), opts["baud"])
    name = f"{opts['name']}_{b.suffix}"
    return top, {"top": name, "lpf": f"{name}.lpf", "bitstream": f"{name}.bit", **entry}


def memory_map(params, bus: str = "native") -> dict:
    """The manifest's ``memory_map``: MemoryMap's, the ctrl and status bits (hdl/core.py) and,
    for an AXI4-Lite top, its byte addresses (4 x the word address)."""
    from .core import CTRL_INFER, CTRL_START, REGION_SHIFT, REGIONS, REGISTERS, STATUS_BUSY, STATUS_DONE, \
        STATUS_WR_ERR

    out = MemoryMap(params).describe()
    out["ctrl_bits"] = {"start": CTRL_START, "infer": CTRL_INFER}
    out["status_bits"] = {"busy": STATUS_BUSY, "done": STATUS_DONE, "write_error": STATUS_WR_ERR}
    out["reset"] = "rst: active high, synchronous"
    from .regmap import register_doc

    out["register_doc"] = register_doc()  # access and meaning of every register, region and bit
    if bus == "axi4lite":
        from .axi import AXI_ADDR_BITS

        out["axi4lite"] = {"address_bits": AXI_ADDR_BITS, "data_bits": 32,
                           "byte_address": "word address << 2 (low two bits ignored)",
                           "registers": {k: v << 2 for k, v in REGISTERS.items()},
                           "regions": {k: (v << REGION_SHIFT) << 2 for k, v in REGIONS.items()},
                           "write_while_busy": "SLVERR, not applied, status bit 2 set",
                           "partial_write": "SLVERR (wstrb != 0b1111), not applied",
                           "irq": "level: set when an example ends, cleared by a read of status or a start"}
    return out


def rate_registers(params) -> list[dict]:
    """The ``rate`` registers (``Reg.RATE + q``): each layer pair's word, reset M, and the
    fixed shifts z of its weight and bias updates (the update adds round(sigma D M 2^-z))."""
    from .enums import Reg

    out = []
    for q, (a, b) in enumerate(params.layout.pairs):
        mu = params.pair_mult(q)
        out.append({"pair": f"{a}-{b}", "word": Reg.RATE.value + q, "bits": params.rate_bits, "M": mu.M, "E": mu.E,
                    "rate": mu.value * abs(params.beta),  # the alpha that M applies: M 2^-E |beta|
                    "weight_shift": params.weight_shift(q), "bias_shift": params.bias_shift(q)})
    return out


def _manifest(cfg, opts, params, core, cm, files, stage: Path) -> dict:
    name = opts["name"]
    num = params.num
    clock = float(opts["clock_mhz"])
    topo = params.topology
    return {
        "name": name,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config_mod.dumps_toml(cfg),
        "checkpoint": opts["checkpoint"] or None,
        "topology": {"sizes": list(topo.sizes), "kind": topo.kind, "n_rewire": topo.n_rewire,
                     "counts": topo.counts(), "edges": params.layout.n_edges},
        "formats": {"state": str(num.state), "weight": str(num.weight), "weight_store": str(num.weight_store),
                    "bias": str(num.bias), "accumulator": str(params.acc_fmt),
                    "accumulator_register_bits": params.acc_exact_bits},
        "numerics": num.to_dict(),
        "dynamics": {"eps": params.eps, "eps_shift": params.k, "beta": params.beta, "beta_exponent": params.m,
                     "nudge": params.nudge,
                     **({"nudge_shift": params.nudge_shift} if params.nudge == "eq5" else {"after_step_g": params.g}),
                     "n_free": params.n_free, "n_nudged": params.n_nudged, "batch": 1,
                     # the settle rule's register reset values (docs/numerics.md §4a); null: off
                     "settle": settle_to_dict(params.settle),
                     # the training run's rates and batch; the on-chip update's rates (batch 1,
                     # [hdl] onchip_lr, default rates / batch_size) and their multipliers, whose
                     # M are the rate registers' reset values (docs/numerics.md §6)
                     "rates": list(cfg.lr), "train_batch_size": cfg.batch_size,
                     "onchip_rates": list(params.rates),
                     "multipliers": {f"{a}-{b}": {"M": mu.M, "E": mu.E, "value": mu.value}
                                     for (a, b), mu in params.net.mult.items()},
                     "rate_registers": rate_registers(params)},
        "lanes": {"P": params.P, "layout_version": LAYOUT_VERSION,
                  "per_lane": [{"neurons": len(l.neurons), "entries": l.n_entries, "drive_entries": l.n_drive,
                                "step_entries": l.n_step, "macs": l.macs, "weight_words": l.n_words}
                               for l in params.layout.lanes],
                  # where the weights are stored (hdl/layout.py): P = 1 each once (both ends of a
                  # symmetric weight read one word), else a word per entry (a copy per end lane)
                  "weights": "once" if params.layout.once else "per entry",
                  # "verilog": the weights and biases are the Verilog's initial values; "host":
                  # none there, the host writes them (weights_per_word to a memory word)
                  "weight_init": params.weight_init, "weights_per_word": params.weights_per_word,
                  # the lanes' entries: the drive entries [0, drive_entries), then the step entries
                  "entry_order": "drive entries (input sources) first, then step entries; per part by neuron",
                  "total_macs_per_step": params.layout.total_macs,
                  "total_macs_per_drive_pass": params.layout.total_drive_macs},
        "bus": opts["bus"],
        "memory_map": memory_map(params, opts["bus"]),
        "ports": port_list(core),
        "serial_wrapper": {"top": f"{name}_serial", "frame_bits": FRAME_BITS,
                           "frame": "{we, re, addr[24], wdata[32]} MSB first on si; latch applies it; rdata MSB first on so"},
        "cycle_model": {**cm, "clock_mhz": clock,
                        "train_example_us": cm["train_example"] / clock,
                        "inference_example_us": cm["inference_example"] / clock},
        "files": files + ["manifest.json"],
        # what eqprop sim and eqprop waves check before they use the design (params.load_manifest)
        "digests": {f: file_digest(stage / f) for f in files},
    }


class tool_errors:
    """Turn a :class:`~eqprop.hdl.toolchain.ToolchainError` (a missing tool, a tool's
    failure, a design that does not fit) into a one-line ConfigError whose key is ``key``
    (exit status 2, like every other bad input of eqprop)."""

    def __init__(self, key: str):
        self.key = key

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        from .toolchain import ToolchainError

        if isinstance(exc, ToolchainError):
            raise ConfigError(f"{self.key}: {exc}") from None
        return False


def _check_tools(opts, out: Path, manifest: dict, lint: bool, synth: bool, pnr: bool, log):
    """Lint, synthesis and place-and-route of the design in ``out``; their results go into its
    manifest (rewritten atomically after each)."""
    from .fpga import run_flow
    from .toolchain import lint_design

    name = opts["name"]
    if lint:
        # twice: the Verilog as written (the raw counts) and with NAME.vlt, the generator's line
        # waivers (what remains is the design's)
        with tool_errors("lint"):
            rep = lint_design(out / f"{name}.v", name, out / f"{name}.vlt")
        (out / "lint.txt").write_text(rep.text())
        manifest["lint"] = rep.to_manifest()
        manifest["files"] = sorted({*manifest["files"], "lint.txt"})
        _write_json(out / "manifest.json", manifest)
        lt = manifest["lint"]
        raw, off = sum(lt["raw"].values()), sum(lt["waived"].values())
        left = "clean" if rep.ok else f"{len(rep.waived.warnings)} warnings, {len(rep.waived.errors)} errors remain"
        log(f"lint: {raw:,} warnings raw, {off:,} of them on the generator's lines (waived in {name}.vlt); {left} "
            f"(lint.txt)")
    if synth or pnr:
        def record(entries: dict):
            manifest.update(entries)
            pnr = entries.get("pnr", {})
            extra = {"synth.json", *(pnr[k] for k in ("bitstream", "timing_report", "log") if k in pnr)}
            manifest["files"] = sorted({*manifest["files"], *extra})
            _write_json(out / "manifest.json", manifest)

        top, lpf, key = f"{name}_serial", None, f"target {opts['target']}"
        if opts["board"]:  # the board top, its pins constrained
            top, lpf, key = manifest["board"]["top"], out / manifest["board"]["lpf"], f"board {opts['board']}"
        with tool_errors(key):
            record(run_flow(opts["fpga"], out / f"{top}.v", top, out, float(opts["clock_mhz"]), pnr, log,
                            on_synth=record, lpf=lpf, router=opts["router"], seed=opts["pnr_seed"]))
        fmax = manifest.get("pnr", {}).get("min_fmax_mhz")
        if pnr and fmax:  # the cycle model's examples at the clock the design reaches
            cm = manifest["cycle_model"]
            manifest["pnr"]["at_fmax"] = {"train_example_us": cm["train_example"] / fmax,
                                          "inference_example_us": cm["inference_example"] / fmax}
            _write_json(out / "manifest.json", manifest)
            log(f"at fmax {fmax:.2f} MHz: {cm['train_example']:,} cycles = {cm['train_example'] / fmax:,.1f} us per "
                f"training example, {cm['inference_example'] / fmax:,.1f} us per inference (full free phase)")


def config_from_args(args):
    """The run configuration of ``eqprop hdl generate``/``estimate``: the TOML, then the flags
    over it (``--lanes``, ``--checkpoint``, ``--name``, ``--bus``, ``--target``, ``--onchip-lr``,
    ``--bits``, the settle flags), validated."""
    cfg = config_mod.TrainConfig()
    if args.config:
        cfg = config_mod.load_toml(args.config, cfg)
    hdl = dict(cfg.hdl)
    for key in ("lanes", "checkpoint", "name", "bus", "target", "weight_init", "board", "baud", "clock_mhz",
                "router", "pnr_seed"):
        if getattr(args, key, None) is not None:
            hdl[key] = getattr(args, key)
    if getattr(args, "onchip_lr", None) is not None:  # "0.001" or "0.002,0.001"
        try:
            rates = [float(v) for v in args.onchip_lr.split(",")]
        except ValueError:
            raise ConfigError(f"--onchip-lr: {args.onchip_lr!r} is not a rate or a comma-separated list of rates") \
                from None
        hdl["onchip_lr"] = rates if len(rates) > 1 else rates[0]
    cfg.hdl = hdl
    if getattr(args, "bits", None):
        from eqprop.model.numerics import parse_bits

        cfg.fixed = {**cfg.fixed, **parse_bits(args.bits)}
    config_mod.apply_settle_flags(cfg, args)  # flags override the config (§4a)
    cfg.model = "fixed"
    config_mod.validate(cfg)
    return cfg


def main(args) -> int:
    cfg = config_from_args(args)
    generate(cfg, Path(args.out), lint=not args.no_lint, synth=args.synth, pnr=args.pnr,
             force=getattr(args, "force", False))
    return 0

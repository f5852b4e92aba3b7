"""``eqprop hdl generate``: Verilog, memory init files, manifest, lint and synthesis.

    eqprop hdl generate --config FILE.toml --out build/NAME/ [--lanes P] [--checkpoint RUN_DIR] [--settle BOOL]
                        [--bits KEY=VAL,...] [--synth] [--pnr] [--no-lint]

The configuration is the training one ([train] topology, eps, beta, steps,
rates; [fixed] formats, docs/numerics.md) plus an optional [hdl] table:
``lanes`` (P), ``checkpoint`` (a run directory whose weights and biases
initialise the memories; float runs, and fixed-point runs in other formats
than the design's, are quantized nearest-even), ``name``,
``device``/``package`` (nextpnr-ice40), ``clock_mhz`` (for times in the
manifest). Without a checkpoint, the memories hold the model's initialisation
for ``seed``. ``--bits`` overrides [fixed] keys (the same syntax as
``eqprop train --bits``), e.g. to build one trained network at several depths.

Outputs in the directory: ``NAME.v`` (the core, Amaranth's Verilog),
``NAME_serial.v`` (the core behind a serial shift-register port, for
place-and-route on small FPGAs), ``laneK_{conn,weights,biases}.hex`` (memory
contents, one word per line, also embedded in the Verilog), ``manifest.json``
(formats, memory map, ports, cycle model, lint and synthesis results: all a
testbench needs to know about the design), ``lint.txt`` and, with --synth,
``synth.json``.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

from eqprop.model import config as config_mod
from eqprop.model.config import ConfigError

from .core import Core, cycle_model
from .memory_map import MemoryMap
from .params import CoreParams, settle_to_dict
from .serial import FRAME_BITS, SerialCore

HDL_KEYS = {"lanes": int, "checkpoint": str, "name": str, "device": str, "package": str, "clock_mhz": (int, float)}


def hdl_options(cfg) -> dict:
    opts = {"lanes": 1, "checkpoint": "", "name": "eqprop_core", "device": "up5k", "package": "sg48",
            "clock_mhz": 12.0}
    for k, v in cfg.hdl.items():
        if k not in HDL_KEYS:
            raise ConfigError(f"{k}: unknown [hdl] key (known: {', '.join(HDL_KEYS)})")
        if isinstance(v, bool) or not isinstance(v, HDL_KEYS[k]):
            raise ConfigError(f"{k}: bad value {v!r} in [hdl]")
        opts[k] = v
    if opts["lanes"] < 1:
        raise ConfigError(f"lanes: must be >= 1, got {opts['lanes']}")
    if not opts["name"].isidentifier():
        raise ConfigError(f"name: {opts['name']!r} is not a Verilog identifier")
    return opts


def build(cfg, opts: dict):
    """CoreParams and the raw parameters (stored weights, biases) for this configuration."""
    from eqprop.model.topology import Topology
    from eqprop.model.train import build_topology, load_run

    ck = opts["checkpoint"]
    if ck:
        run_cfg, net, _ = load_run(ck)
        topo = Topology.load(Path(ck) / "topology.npz")
    else:
        topo = build_topology(cfg)
    params = CoreParams(topo, config_mod.numerics(cfg), cfg.eps, cfg.beta, cfg.lr, opts["lanes"],
                        cfg.free_steps, cfg.nudged_steps, cfg.nudge, config_mod.settle_rule(cfg))
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


def _hex(values, bits) -> str:
    digits = max(1, math.ceil(bits / 4))
    return "".join(f"{v & ((1 << bits) - 1):0{digits}x}\n" for v in values)


def port_list(component) -> list[dict]:
    ports = [{"name": "clk", "dir": "in", "width": 1}, {"name": "rst", "dir": "in", "width": 1}]
    for path, member, _ in component.signature.flatten(component):
        ports.append({"name": "__".join(str(p) for p in path), "dir": "in" if member.flow.name == "In" else "out",
                      "width": member.shape.width if hasattr(member.shape, "width") else int(member.shape)})
    return ports


def generate(cfg, out: Path, lint: bool = True, synth: bool = False, pnr: bool = False, log=print) -> dict:
    from .toolchain import generate_verilog, lint_verilog, place_ice40, synth_ice40

    opts = hdl_options(cfg)
    name = opts["name"]
    params, fx = build(cfg, opts)
    num = params.num
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lw = params.lane_weights(fx.W_in, fx.W_ss)
    lb = params.lane_biases(fx.b)
    core = Core(params, lw, lb)
    verilog = generate_verilog(core, name, emit_src=False)
    (out / f"{name}.v").write_text(verilog)
    params.topology.save(out / "topology.npz")  # the exact network, for testbenches
    serial = SerialCore(Core(params, lw, lb))
    (out / f"{name}_serial.v").write_text(generate_verilog(serial, f"{name}_serial", emit_src=False))
    for ell, lane in enumerate(params.layout.lanes):
        (out / f"lane{ell}_weights.hex").write_text(_hex(lw[ell], num.weight_store.n_word))
        (out / f"lane{ell}_biases.hex").write_text(_hex(lb[ell], num.bias.n_word))
        (out / f"lane{ell}_conn.txt").write_text("".join(
            f"{e.neuron} {'x' if e.src_input else 's'}{e.src} edge={e.edge} pair={e.pair}"
            f"{' first' if e.first else ''}{' last' if e.last else ''}{' dummy' if e.dummy else ''}\n"
            for e in lane.entries))
    cm = cycle_model(params)
    clock = float(opts["clock_mhz"])
    topo = params.topology
    manifest = {
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
                     "rates": list(params.rates),
                     "multipliers": {f"{a}-{b}": {"M": mu.M, "E": mu.E, "value": mu.value}
                                     for (a, b), mu in params.net.mult.items()}},
        "lanes": {"P": params.P, "per_lane": [{"neurons": len(l.neurons), "entries": len(l.entries), "macs": l.macs}
                                              for l in params.layout.lanes],
                  "total_macs_per_step": params.layout.total_macs},
        "memory_map": MemoryMap(params).describe(),
        "ports": port_list(core),
        "serial_wrapper": {"top": f"{name}_serial", "frame_bits": FRAME_BITS,
                           "frame": "{we, re, addr[24], wdata[32]} MSB first on si; latch applies it; rdata MSB first on so"},
        "cycle_model": {**cm, "clock_mhz": clock,
                        "train_example_us": cm["train_example"] / clock,
                        "inference_example_us": cm["inference_example"] / clock},
        "files": sorted(p.name for p in out.iterdir()) + ["manifest.json"],
    }
    if lint:
        lr = lint_verilog([out / f"{name}.v"], name)
        (out / "lint.txt").write_text(str(lr) + "\n" + lr.output)
        manifest["lint"] = {"tool": "verilator --lint-only -Wall", "ok": lr.ok,
                            "warnings": [list(w) for w in lr.warnings], "errors": [list(e) for e in lr.errors]}
        log(f"lint: {'clean' if lr.ok else f'{len(lr.warnings)} warnings, {len(lr.errors)} errors'} (lint.txt)")
    if synth or pnr:
        rep = synth_ice40([out / f"{name}_serial.v"], f"{name}_serial", device=opts["device"],
                          json_out=out / "synth.json")
        manifest["synth"] = {"tool": f"yosys synth_ice40 -device {opts['device']}", "top": f"{name}_serial",
                             **rep.summary(), "cells_by_type": rep.cells_by_type}
        log("synth_ice40: " + ", ".join(f"{k} {v}" for k, v in rep.summary().items()))
        if pnr:
            pr = place_ice40(out / "synth.json", device=opts["device"], package=opts["package"], freq_mhz=clock)
            manifest["pnr"] = {"tool": f"nextpnr-ice40 --{opts['device']} --package {opts['package']}",
                               "fmax_mhz": pr.fmax_mhz, "utilisation": {k: list(v) for k, v in pr.utilisation.items()}}
            log(f"nextpnr-ice40: fmax {pr.fmax_mhz}")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"wrote {out}/{name}.v, manifest.json ({params.P} lanes, {cm['step']} cycles per step, "
        f"{cm['train_example']} per training example, MAC utilisation {100 * cm['mac_utilisation']:.1f}%)")
    return manifest


def main(args) -> int:
    cfg = config_mod.TrainConfig()
    if args.config:
        cfg = config_mod.load_toml(args.config, cfg)
    hdl = dict(cfg.hdl)
    if args.lanes is not None:
        hdl["lanes"] = args.lanes
    if args.checkpoint is not None:
        hdl["checkpoint"] = args.checkpoint
    if args.name is not None:
        hdl["name"] = args.name
    cfg.hdl = hdl
    if args.bits:
        from eqprop.model.numerics import parse_bits

        cfg.fixed = {**cfg.fixed, **parse_bits(args.bits)}
    for key in ("settle", "settle_tol", "settle_steps"):  # flags override the config (§4a)
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.model = "fixed"
    config_mod.validate(cfg)
    generate(cfg, Path(args.out), lint=not args.no_lint, synth=args.synth, pnr=args.pnr)
    return 0

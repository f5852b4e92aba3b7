"""``eqprop sim``: co-simulate a generated design on MNIST and print the report.

    eqprop sim [--config FILE.toml] [--checkpoint RUN] [--design DIR] --simulator icarus|verilator
               --examples N [--train] [--waves] [--settle BOOL] [--settle-tol T] [--settle-steps K] [--force]

Generates the design if ``DIR/manifest.json`` is missing (``eqprop hdl
generate``: it prints the design's size first and refuses one over the
lane-memory limit without --force). An existing design describes itself: without
--config the configuration in its manifest is used (network, formats, data
size), and a --config, --lanes or --checkpoint that would make another design
is refused (one line naming the key; --regenerate rebuilds it instead). A
damaged design (manifest, Verilog, memory files, topology) is one line naming
the file, before the simulator starts (docs/failures.md). It runs N images of the configured eval set through the RTL (free
phase + arg-max; with --train, on-chip training on N training images), and
prints: examples, mismatches against the fixed-point model (expected 0),
accuracy of RTL, fixed-point and float models, cycles per phase and example,
the free phases' step counts under the settle rule (docs/numerics.md §4a;
the config's, or the --settle flags', written into the core's registers by
the bench) and the core cycles they saved against full free phases,
simulated time at the manifest's clock, wall time and simulated cycles per
second. The results also go to DIR/cosim_SIM/report.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch


def float_predictions(topology, W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, steps: int,
                      eps: float) -> torch.Tensor:
    """The float model's predictions (free phase from zero, float64) with full weights W, b."""
    from eqprop.model.float_net import FloatNetwork

    fl = FloatNetwork(topology, dtype=torch.float64)
    fl.set_full(W.to(torch.float64), b.to(torch.float64))
    s = fl.relax(fl.zero_state(x.shape[0]), fl.input_drive(x.to(torch.float64)), steps, eps)
    return fl.outputs(s).argmax(1)


def checkpoint_float_weights(checkpoint: str | None):
    """A float run's own (unquantized) topology and weights; None for a fixed-point
    run (its weights are the design's) or no checkpoint."""
    from eqprop.model.train import load_run

    if not checkpoint or not (Path(checkpoint) / "checkpoint.pt").exists():
        return None
    _, net, _ = load_run(checkpoint)
    return None if getattr(net, "is_fixed", False) else (net.topology, *net.full())


def settle_summary(r: dict, cm: dict, n_free: int, train: bool) -> dict:
    """Free-phase step counts (docs/numerics.md §4a) and the core cycles they cost, against
    the cycle model's count with every free phase n_free steps long."""
    from eqprop.hdl.core import example_cycles

    steps = r["free_steps"]
    n = len(steps)
    core = sum(c["total"] for c in r["cycles"])
    full = n * cm["train_example" if train else "inference_example"]
    return {
        "rule": r.get("settle"), "n_free": n_free,
        "mean": sum(steps) / n if n else 0.0, "max": max(steps, default=0), "min": min(steps, default=0),
        "settled_early": sum(t < n_free for t in steps),
        "core_cycles": core, "full_phase_cycles": full, "saved_cycles": full - core,
        "saved_fraction": (full - core) / full if full else 0.0,
        "cycle_model_ok": all(c["total"] == example_cycles(cm, t, not train) for c, t in zip(r["cycles"], steps)),
    }


def design_config(design: Path, man: dict):
    """The configuration a design was generated from (its manifest's ``config``)."""
    import tomllib

    from eqprop.hdl.params import REGENERATE, DesignError
    from eqprop.model import config as config_mod

    path = design / "manifest.json"
    text = man.get("config")
    if not isinstance(text, str):
        raise DesignError(f"{path}: no key config (the design's configuration): give --config, or {REGENERATE}")
    try:
        data = tomllib.loads(text)
        train = data.get("train", {})
        tables = {k: data[k] for k in ("fixed", "hdl") if k in data}
        if not isinstance(train, dict) or set(data) - {"train", "fixed", "hdl"}:
            raise ValueError("expected [train], [fixed] and [hdl] tables")
    except (tomllib.TOMLDecodeError, ValueError) as e:
        raise DesignError(f"{path}: config: not a configuration ({e}); {REGENERATE}") from None
    data = {**train, **tables}
    dyn = man.get("dynamics", {})
    data.setdefault("nudge", dyn.get("nudge", config_mod.LEGACY_NUDGE))  # made before the option
    data.setdefault("settle", dyn.get("settle") is not None)
    try:
        return config_mod.from_mapping(data, source=f"{path}, key config")
    except config_mod.ConfigError as e:
        raise DesignError(str(e)) from None


def check_agrees(cfg, man: dict, design: Path, source: str):
    """The design a configuration (``source``: its file or a flag) would generate is the one in
    ``design``: network, formats, dynamics, rates, lanes, checkpoint. ConfigError naming the
    first key that differs otherwise. A configuration without a [fixed] table (a float run's)
    states no formats; the settle rule is the bench's to set (docs/numerics.md §4a)."""
    from eqprop.hdl.generate import hdl_options
    from eqprop.model import config as config_mod

    dyn = man["dynamics"]
    pairs = [("sizes", list(cfg.sizes), list(man["topology"]["sizes"])),
             ("topology", cfg.topology, man["topology"].get("kind", cfg.topology)),
             ("eps", cfg.eps, dyn["eps"]), ("beta", cfg.beta, dyn["beta"]),
             ("free_steps", cfg.free_steps, dyn["n_free"]), ("nudged_steps", cfg.nudged_steps, dyn["n_nudged"]),
             ("nudge", cfg.nudge, dyn.get("nudge", config_mod.LEGACY_NUDGE)),
             ("lr", list(cfg.lr), list(dyn["rates"]))]
    opts = hdl_options(cfg)
    if "onchip_rates" in dyn:  # designs made before the on-chip rate used lr at batch 1
        pairs.append(("onchip_lr", opts["onchip_lr"], list(dyn["onchip_rates"])))
    if cfg.fixed:
        want = config_mod.numerics(cfg).to_dict()
        pairs += [(f"fixed.{k}", v, man["numerics"].get(k)) for k, v in want.items()]
    if "lanes" in cfg.hdl:
        pairs.append(("lanes", opts["lanes"], man["lanes"]["P"]))
    ck = cfg.hdl.get("checkpoint")
    if ck:
        have = man.get("checkpoint")
        pairs.append(("checkpoint", str(Path(ck).resolve()), str(Path(have).resolve()) if have else None))
    for key, mine, theirs in pairs:
        if mine != theirs:
            raise config_mod.ConfigError(
                f"{key}: {source} says {mine!r}, but the design {design} was generated with {theirs!r} "
                f"({design / 'manifest.json'}): leave out --config to use the design's own configuration, or "
                f"--regenerate to rebuild it")


def sim_config(args):
    """The configuration and design directory of an ``eqprop sim`` call, the design generated
    if it is missing (or --regenerate, or made before the settle rule's registers). An existing
    design describes itself: without --config its manifest's configuration is used, and a
    --config (or --lanes, --checkpoint) that would make another design is refused."""
    from eqprop.hdl.generate import generate, hdl_options
    from eqprop.hdl.layout import LAYOUT_VERSION
    from eqprop.hdl.params import layout_version, load_manifest
    from eqprop.model import config as config_mod

    given = config_mod.load_toml(args.config, config_mod.TrainConfig()) if args.config else None
    flags = {k: v for k, v in (("checkpoint", args.checkpoint), ("lanes", args.lanes)) if v}
    if args.design:
        design = Path(args.design)
    else:
        base = given or config_mod.TrainConfig()
        design = Path(f"build/{hdl_options(base)['name']}")
    exists = design.is_dir() and (design / "manifest.json").exists()
    cfg = given
    regenerate = args.regenerate or not exists
    if exists and not (args.regenerate and given is not None):
        man = load_manifest(design, check_files=not args.regenerate)
        if given is None:
            cfg = design_config(design, man)
            print(f"design {design}: its own configuration ({design / 'manifest.json'})")
        if not args.regenerate:
            if given is not None:
                check_agrees(given, man, design, args.config)
            if flags:
                c = dataclasses.replace(cfg, hdl={**cfg.hdl, **flags})
                check_agrees(c, man, design, " ".join(f"--{k} {v}" for k, v in flags.items()))
            if "free_steps" not in man["memory_map"]["registers"]:
                print(f"{design}: made before the settle rule's registers (docs/numerics.md §4a): regenerating")
                regenerate = True
            elif layout_version(man) != LAYOUT_VERSION:
                print(f"{design}: lane layout {layout_version(man)}, this eqprop builds {LAYOUT_VERSION} "
                      f"(hdl/layout.py): regenerating")
                regenerate = True
    cfg = cfg or config_mod.TrainConfig()
    cfg.hdl = {**cfg.hdl, **flags}
    config_mod.apply_settle_flags(cfg, args)  # flags override the config (§4a)
    cfg.model = "fixed"
    config_mod.validate(cfg)
    if args.examples < 1:
        raise config_mod.ConfigError(f"examples: must be >= 1, got {args.examples}")
    if regenerate:
        generate(cfg, design, lint=False, force=args.force, key="design")
    return cfg, design


def cmd_sim(args) -> int:
    from eqprop.hdl.params import load_manifest
    from eqprop.model import config as config_mod
    from eqprop.model.data import load_split

    from .job import design_network
    from .runner import run_cosim

    cfg, design = sim_config(args)
    rule = config_mod.settle_rule(cfg)
    man = load_manifest(design)
    split = "train" if args.train else (args.eval_set or "test")
    data = load_split(cfg.dataset, split, size=args.examples, downsample=cfg.downsample or None,
                      data_dir=cfg.data_dir or None)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    t0 = time.perf_counter()
    r = run_cosim(design, x, y, args.train, simulator=args.simulator, waves=args.waves, settle=rule)
    wall = time.perf_counter() - t0
    preds = torch.tensor(r["preds"])
    fixed_preds = torch.tensor(r["expected_preds"])
    # The float model with the design's MAC weights (what its datapath multiplies),
    # its stored weights, and a float checkpoint's own weights.
    p = design_network(design)
    float_preds = float_predictions(p.topology, *p.net.full_float(mac=True), x, p.n_free, p.eps)
    stored_preds = float_predictions(p.topology, *p.net.full_float(), x, p.n_free, p.eps)
    trained = checkpoint_float_weights(man.get("checkpoint"))
    trained_preds = None if trained is None else float_predictions(*trained, x, p.n_free, p.eps)
    acc = lambda p: float((p == y).double().mean())  # noqa: E731
    cm = man["cycle_model"]
    clock = cm["clock_mhz"]
    steps = settle_summary(r, cm, p.n_free, args.train)
    report = {
        "design": str(design), "simulator": args.simulator, "mode": "training" if args.train else "inference",
        "nudge": p.nudge,
        "split": data.name, "examples": r["examples"], "mismatches": r["mismatch_count"],
        "first_mismatches": r["mismatches"][:5],
        "accuracy": {"rtl": acc(preds), "fixed": acc(fixed_preds), "float": acc(float_preds),
                     "float_stored": acc(stored_preds),
                     **({"float_trained": acc(trained_preds)} if trained_preds is not None else {})},
        "cycles": {"step": cm["step"], "free": cm["free"], "nudged": cm["nudged"], "update": cm["update"],
                   "per_example": cm["train_example" if args.train else "inference_example"],
                   "measured_per_example": [c["total"] for c in r["cycles"][:3]]},
        "settle": steps,
        "simulated_cycles": r["sim_cycles"], "clock_mhz": clock,
        "simulated_time_ms": r["sim_cycles"] / clock / 1e3,
        "wall_s": {"total": wall, "build": r["build_s"], "simulator": r["run_s"], "bench": r["wall_s"]},
        "cycles_per_second": r["sim_cycles"] / r["wall_s"],
        "waves": r.get("waves"),
    }
    try:
        (Path(r["work"]) / "report.json").write_text(json.dumps(report, indent=1))
    except OSError as e:
        raise config_mod.ConfigError(f"design: cannot write {Path(r['work']) / 'report.json'} "
                                     f"({config_mod.os_reason(e, Path(r['work']) / 'report.json')})") from None
    a = report["accuracy"]
    print(f"{report['mode']} on {report['examples']} {data.name} images, {args.simulator}: "
          f"{report['mismatches']} mismatches against the fixed-point model"
          + (f" (nudge {p.nudge})" if args.train else ""))
    print(f"accuracy: RTL {100 * a['rtl']:.2f}%  fixed {100 * a['fixed']:.2f}%  float {100 * a['float']:.2f}%"
          f"  (float - RTL {100 * (a['float'] - a['rtl']):+.2f} points)")
    print(f"float model with the design's MAC weights {100 * a['float']:.2f}%, with its stored weights "
          f"{100 * a['float_stored']:.2f}%"
          + (f", with the checkpoint's own float weights {100 * a['float_trained']:.2f}%" if "float_trained" in a else ""))
    print(f"cycles: {cm['step']} per step, free {cm['free']}, nudged {cm['nudged']}, update {cm['update']}, "
          f"{report['cycles']['per_example']} per example (measured {report['cycles']['measured_per_example']})")
    if steps["rule"] is None:
        print(f"settle rule off: every free phase ran n_free = {p.n_free} steps")
    else:
        print(f"settle rule (tol {steps['rule']['tol']} LSB, {steps['rule']['steps']} quiet step(s)): free steps "
              f"mean {steps['mean']:.2f}, max {steps['max']}, min {steps['min']} of n_free = {p.n_free}; "
              f"{steps['settled_early']} of {r['examples']} examples stopped early")
    print(f"core cycles: {steps['core_cycles']} measured, {steps['full_phase_cycles']} with full free phases "
          f"(cycle model): {steps['saved_cycles']} saved ({100 * steps['saved_fraction']:.1f}%), "
          f"{steps['core_cycles'] / max(r['examples'], 1):.1f} per example; measured = cycle model for the "
          f"step counts: {steps['cycle_model_ok']}")
    print(f"simulated {r['sim_cycles']} cycles = {report['simulated_time_ms']:.2f} ms at {clock:g} MHz; "
          f"wall {wall:.1f} s (bench {r['wall_s']:.1f} s): {report['cycles_per_second']:.0f} simulated cycles/s")
    print(f"simulator logs: {r['work']}/build.log, sim.log")
    if r.get("waves"):
        print(f"waves: {r['waves']}")
    if r["mismatch_count"]:
        print(f"first mismatch: {r['mismatches'][0]}")
        return 1
    return 0


def add_parser(sub):
    from eqprop.model.cli import bool_flag

    s = sub.add_parser("sim", help="co-simulate the generated RTL on MNIST (cocotb: Icarus or Verilator)")
    s.add_argument("--config", help="TOML with [train], [fixed], [hdl] (default: an existing design's own)")
    s.add_argument("--checkpoint", help="run directory whose weights the design holds")
    s.add_argument("--design", help="design directory (default build/NAME)")
    s.add_argument("--regenerate", action="store_true", help="generate the design even if it exists (from "
                                                               "--config, or the design's own configuration)")
    s.add_argument("--force", action="store_true", help="generate a design over the lane-memory limit "
                                                         "(docs/failures.md)")
    s.add_argument("--lanes", type=int)
    s.add_argument("--simulator", default="icarus", choices=("icarus", "verilator"))
    s.add_argument("--examples", type=int, default=20)
    s.add_argument("--eval-set", choices=("validation", "test"))
    s.add_argument("--train", action="store_true", help="on-chip training on training images")
    s.add_argument("--waves", action="store_true", help="keep a VCD of the simulation")
    s.add_argument("--settle", type=bool_flag, help="settle rule on/off (docs/numerics.md §4a; overrides the config)")
    s.add_argument("--settle-tol", dest="settle_tol", type=float, help="settle rule: tolerance in state LSBs")
    s.add_argument("--settle-steps", dest="settle_steps", type=int, help="settle rule: quiet steps that end a phase")
    s.set_defaults(func=cmd_sim)

"""The ``eqprop`` command.

    eqprop train [--config FILE.toml] [--KEY VALUE ...] [--resume]
    eqprop eval RUN_DIR [--eval-set validation|test] [--eval-size N]
    eqprop topology [--topology ...] [--sizes ...] [--p P | --n-rewire N] [--seed S] [--save FILE]
    eqprop numerics [--config FILE.toml] [--bits state=8,weight=8,...] [--rounding MODE]
    eqprop study bitdepth --config STUDY.toml [--out DIR] [--dry-run] [--jobs N | --ray [ADDRESS]] [--gradcheck N]
    eqprop gradcheck RUN_DIR [--examples N] [--bits SPEC ...]
    eqprop hdl generate --config FILE.toml --out build/NAME/ [--lanes P] [--checkpoint RUN] [--target T] [--synth] [--pnr]
                        [--settle BOOL] [--settle-tol T] [--settle-steps K] [--force]
    eqprop sim [--config FILE.toml] [--checkpoint RUN] --design DIR --simulator icarus|verilator --examples N
               [--train] [--waves] [--settle BOOL] [--settle-tol T] [--settle-steps K]
    eqprop waves FILE.vcd --design DIR [--signals ...] [--neurons out] [--out PNG]
    eqprop data verify [--dataset mnist|fashion-mnist] [--data-dir DIR]

Every configuration key of ``TrainConfig`` is a flag (``free_steps`` is
``--free-steps``); flags override the TOML file. Bad input gets one line on
stderr naming the key, file or value, and exit status 2; a run that diverges
(NaN/inf) exits with status 3 and keeps its last good checkpoint; Ctrl-C exits
with 130 and says whether a checkpoint was kept. docs/failures.md lists the
promises and the failures they cover.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config as config_mod
from .config import ConfigError, TrainConfig

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what it left behind (the message main prints)."""


def bool_flag(text: str) -> bool:
    """argparse type of an on/off flag (config.parse_bool)."""
    try:
        return config_mod.parse_bool(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a boolean: {text!r}") from None


def _parse_flag(key: str, text: str):
    """Turn a flag's text into the value type the config key expects."""
    t = config_mod._TYPES[key]
    try:
        if t is int:
            return int(text)
        if t is float:
            return float(text)
        if t is bool:
            return config_mod.parse_bool(text)
        if t == "ints":
            # "784-500-10" or "784,500,10" (commas let a negative size through to its check)
            return [int(v) for v in text.split("," if "," in text else "-")]
        if t == "floats":
            return [float(v) for v in text.split(",")]
        if t == "glorot|float":
            return text if text == "glorot" else float(text)
        return text
    except ValueError:
        raise ConfigError(f"{key}: cannot parse {text!r}") from None


def _add_config_flags(p: argparse.ArgumentParser):
    g = p.add_argument_group("configuration keys (same names as in the TOML file)")
    g.add_argument("--bits", metavar="KEY=VAL,...",
                   help="fixed-point formats and modes, e.g. state=8,weight=8,bias=12,acc=24 or weight=fxp-s8/6 "
                        "([fixed] table keys; docs/numerics.md)")
    g.add_argument("--rounding", help="update rounding (and state rounding unless given): "
                                      "floor|nearest-even|stochastic")
    g.add_argument("--state-rounding", dest="state_rounding", help="state rounding: floor|nearest-even|stochastic")
    for key in config_mod._TYPES:
        if key == "fixed":
            continue
        flag = "--" + key.replace("_", "-")
        g.add_argument(flag, dest="cfg_" + key, metavar=key.upper(), default=None)


def _config_from_args(args, data: bool = True) -> TrainConfig:
    cfg = TrainConfig()
    if getattr(args, "config", None):
        cfg = config_mod.load_toml(args.config, cfg)
    flags = {}
    for key in config_mod._TYPES:
        text = getattr(args, "cfg_" + key, None)
        if text is not None:
            flags[key] = _parse_flag(key, text)
    cfg = config_mod.from_mapping(flags, cfg, source="command line")
    fixed = dict(cfg.fixed)
    if getattr(args, "bits", None):
        from .numerics import parse_bits

        fixed.update(parse_bits(args.bits))
    for key in ("rounding", "state_rounding"):
        if getattr(args, key, None):
            fixed[key] = getattr(args, key)
    cfg.fixed = fixed
    return config_mod.validate(cfg, data=data)


# ----------------------------------------------------------------- commands
def cmd_train(args) -> int:
    from .train import Run, RunDirError

    if args.resume:
        if args.out is None:
            raise RunDirError("--resume: give the run directory with --out")
        if args.config is None:
            # Resume from the run's own resolved configuration; flags still override it.
            args.config = str(Path(args.out) / "config.toml")
            if not Path(args.config).exists():
                raise RunDirError(f"--resume: {args.out} holds no run (nothing to resume)")
    cfg = _config_from_args(args)
    out = cfg.out or args.out
    if not out:
        import time

        out = f"runs/{cfg.topology}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg.out = out
    run = Run(cfg, Path(out), resume=args.resume)
    print(f"run directory: {out}")
    try:
        history = run.train(progress=None if not args.no_progress else False)
    except KeyboardInterrupt:
        if run.ckpt_path.exists():
            raise Interrupted(f"interrupted; the last checkpoint {run.ckpt_path} is kept "
                              "(continue with --resume)") from None
        raise Interrupted(f"interrupted before the first epoch ended: no checkpoint was written in {out} "
                          "(nothing to resume; start the run again)") from None
    print(f"topology: {run.topology.summary()}")
    if history:
        last = history[-1]
        print(
            f"after {last['epoch']} epochs: train error {100 * last['train_error']:.2f}%, "
            f"{last['eval_set']} error {100 * last['test_error']:.2f}%"
        )
    return 0


def cmd_eval(args) -> int:
    from .train import evaluate, load_data, load_run

    cfg, net, ck = load_run(args.run_dir)
    if args.eval_set:
        cfg.eval_set = args.eval_set
    if args.eval_size is not None:
        cfg.eval_size = args.eval_size
    config_mod.validate(cfg)
    split = load_data(cfg, cfg.eval_set, cfg.eval_size)
    steps = cfg.eval_free_steps or cfg.free_steps
    # eval_particles: start from the particles the run's last evaluation started from
    # (reproduces its test_error), when the evaluation set is the run's own.
    start = ck.get("eval_particles_in")
    if not (cfg.eval_particles and start is not None and not args.eval_set and args.eval_size is None
            and start.shape[0] == len(split)):
        start = None
    err, _, taken = evaluate(net, split, steps, cfg.eps, cfg.eval_batch_size,
                             None if start is None else start.clone(), config_mod.settle_rule(cfg))
    how = "from the last evaluation's starting particles" if start is not None else "from the zero state"
    print(f"{args.run_dir}: epoch {ck['epoch']}, {split.name} ({len(split)} examples, {how}): "
          f"error {100 * err:.2f}%, free steps {float(taken.double().mean()):.1f} mean, {int(taken.max())} max")
    return 0


def cmd_topology(args) -> int:
    from .topology import from_spec, n_from_p, p_from_n

    cfg = _config_from_args(args, data=False)  # any sizes: no image size to match
    topo = from_spec(cfg.topology, cfg.sizes, seed=cfg.seed, **cfg.rewire)
    print(topo.summary())
    n0 = topo.n_connections_before_rewire()
    if cfg.topology != "layered":
        print(f"N_o = {n0}; p = {100 * p_from_n(topo.n_rewire, n0):.4f}% <-> n = {n_from_p(p_from_n(topo.n_rewire, n0), n0)}")
    if args.save:
        try:
            topo.save(args.save)  # atomic: a failed write leaves no file behind
        except OSError as e:
            raise ConfigError(f"save: cannot write {args.save} ({config_mod.os_reason(e, args.save)})") from None
        print(f"saved {args.save}")
    return 0


def cmd_numerics(args) -> int:
    from .train import make_network

    cfg = _config_from_args(args)
    cfg.model = "fixed"
    topo = build_topology_for(cfg)
    net = make_network(cfg, topo)
    print(f"{topo.summary()}; largest fan-in {net.fan_in}")
    print(net.num.summary(net.fan_in))
    print(f"eps = 2^-{net.k} (shift), |beta| = 2^{net.m}, nudge {net.nudge}"
          + (f" (2 eps |beta| = 2^{net.g})" if net.nudge == "after-step" else ""))
    for (a, b), mu in sorted(net.mult.items()):
        if a == b or b == a + 1:
            print(f"rate layers {a}-{b}: c = alpha/(|beta| B) ~ {mu} = {mu.value:.6g}")
    return 0


def build_topology_for(cfg):
    from .topology import from_spec

    return from_spec(cfg.topology, cfg.sizes, seed=cfg.seed, **cfg.rewire)


def cmd_study(args) -> int:
    from .study import run_study

    run_study(args.config, args.out, args.dry_run, jobs=args.jobs, ray=args.ray, cpus_per_point=args.cpus_per_point,
              gpus_per_point=args.gpus_per_point, gradcheck=args.gradcheck, summary_only=args.summary_only)
    return 0


def cmd_data(args) -> int:
    from .data import verify

    for line in verify(args.dataset, args.data_dir):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eqprop", description="Equilibrium propagation design flow")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a network (--model float or fixed)")
    t.add_argument("--config", help="TOML file with configuration keys")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train, out=None)

    e = sub.add_parser("eval", help="re-evaluate a run's checkpoint")
    e.add_argument("run_dir")
    e.add_argument("--eval-set", choices=("validation", "test"))
    e.add_argument("--eval-size", type=int)
    e.set_defaults(func=cmd_eval)

    tp = sub.add_parser("topology", help="build a topology and print its counts")
    tp.add_argument("--config", help="TOML file with configuration keys")
    tp.add_argument("--save", help="write the connection list (.npz)")
    _add_config_flags(tp)
    tp.set_defaults(func=cmd_topology)

    nm = sub.add_parser("numerics", help="print the fixed-point formats a configuration resolves to")
    nm.add_argument("--config", help="TOML file with configuration keys")
    _add_config_flags(nm)
    nm.set_defaults(func=cmd_numerics)

    st = sub.add_parser("study", help="run a study grid (bitdepth)")
    st.add_argument("kind", choices=("bitdepth",))
    st.add_argument("--config", required=True, help="study TOML ([study], [train], [networks.NAME])")
    st.add_argument("--out", help="study directory (default: the file's study.out)")
    st.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    st.add_argument("--summary-only", dest="summary_only", action="store_true",
                    help="write summary.csv/.md and the figures from what the points have so far, train nothing "
                         "(safe while the study runs)")
    st.add_argument("--jobs", type=int, help="points trained at once, one thread each (default 1; with a local "
                                             "--ray, every CPU)")
    st.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="each point a Ray task: a local Ray, or a cluster (auto, HOST:PORT, ray://HOST:PORT)")
    st.add_argument("--cpus-per-point", dest="cpus_per_point", type=float, default=1, help="--ray: CPUs per point")
    st.add_argument("--gpus-per-point", dest="gpus_per_point", type=float, default=0,
                    help="--ray: GPUs per point (the point trains on the GPU)")
    st.add_argument("--gradcheck", type=int, metavar="N",
                    help="gradient alignment on N training images at each point's end (summary cos_* columns)")
    st.set_defaults(func=cmd_study)

    from eqprop.hdl.cli import add_parser as add_hdl_parser
    from eqprop.sim.cli import add_parser as add_sim_parser
    from eqprop.sim.waves import add_parser as add_waves_parser

    add_hdl_parser(sub)

    add_sim_parser(sub)
    add_waves_parser(sub)

    from .report import add_parser as add_report_parser

    add_report_parser(sub)

    from .gradcheck import add_parser as add_gradcheck_parser

    add_gradcheck_parser(sub)

    d = sub.add_parser("data", help="verify data files")
    d.add_argument("action", choices=("verify",))
    d.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    d.add_argument("--data-dir", default=None)
    d.set_defaults(func=cmd_data)
    return p


def main(argv=None) -> int:
    from .data import DataError
    from .numerics import NumericsError
    from .topology import TopologyError
    from .train import RunDirError, TrainingDiverged

    args = build_parser().parse_args(argv)
    if args.command == "train":
        args.out = args.cfg_out
    try:
        return args.func(args)
    except (ConfigError, TopologyError, DataError, RunDirError, NumericsError) as e:
        print(f"eqprop: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:  # e.g. impossible lane counts from the RTL layout, unknown signals
        if args.command not in ("hdl", "sim", "waves"):
            raise
        print(f"eqprop: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDiverged as e:
        print(f"eqprop: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt as e:
        print(f"eqprop: {e if isinstance(e, Interrupted) else 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

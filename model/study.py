"""The bit-depth study: how EqProp's vanishing gradient meets low-bit hardware.

    eqprop study bitdepth --config configs/studies/bitdepth-small.toml [--out DIR] [--dry-run]

A study file holds a ``[study]`` table (grid axes) and a ``[train]`` table
(the base run configuration); each ``[networks.NAME]`` table overrides train
keys for one network (the paper's three: layered with per-layer rates,
layered with one global rate, layer-skipping p = 7.56% with one global rate).
The grid is bits x network x rounding x seed (plus one float run per network
and seed). Every point is an ordinary run directory under ``OUT/points/``;
points already finished are skipped and killed ones resumed, so a study can be
stopped and continued. At the end ``summary.csv``, ``summary.md`` and three
figures are written: error against bit depth, per-layer RMS correction
against bit depth, and the fraction of zero corrections against bit depth.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import tomllib
from pathlib import Path

from . import config as config_mod
from .config import ConfigError

STUDY_KEYS = {"bits": list, "roundings": list, "seeds": list, "epochs": int, "bias_extra_bits": int,
              "float": bool, "out": str, "weight_store_bits": int}


def load_study(path: str | Path) -> tuple[dict, config_mod.TrainConfig, dict]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path}: not valid TOML ({e})") from None
    for k in data:
        if k not in ("study", "train", "networks"):
            raise ConfigError(f"{k}: unknown table in study file {path} (study, train, networks)")
    study = {"bits": [4, 6, 8, 10, 12, 16], "roundings": ["floor", "stochastic"], "seeds": [0], "epochs": 1,
             "bias_extra_bits": 4, "float": True, "out": "runs/study-bitdepth", "weight_store_bits": 0}
    for k, v in data.get("study", {}).items():
        if k not in STUDY_KEYS:
            raise ConfigError(f"{k}: unknown study key (in {path}; known: {', '.join(STUDY_KEYS)})")
        if not isinstance(v, STUDY_KEYS[k]) or isinstance(v, bool) != (STUDY_KEYS[k] is bool):
            raise ConfigError(f"{k}: expected {STUDY_KEYS[k].__name__}, got {v!r} (in {path})")
        study[k] = v
    base = config_mod.from_mapping(data.get("train", {}), source=f"{path} [train]")
    networks = data.get("networks") or {}
    if not networks:
        raise ConfigError(f"networks: the study file {path} names no [networks.NAME] table")
    for name, over in networks.items():
        cfg = config_mod.from_mapping(over, base, source=f"{path} [networks.{name}]")
        config_mod.validate(cfg)
    for seed in study["seeds"]:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= config_mod.MAX_SEED:
            raise ConfigError(f"seeds: {seed!r} is not a seed (an integer in 0..2^63-2) (in {path})")
    for b in study["bits"]:
        if not isinstance(b, int) or not 3 <= b <= 24:
            raise ConfigError(f"bits: {b!r} is not a bit depth in 3..24 (in {path})")
    return study, base, networks


def points(study: dict, base: config_mod.TrainConfig, networks: dict, out: Path) -> list[tuple[dict, config_mod.TrainConfig]]:
    """Every (label, config) of the grid."""
    res = []
    for name, over in networks.items():
        net_cfg = config_mod.from_mapping(over, base)
        for seed in study["seeds"]:
            depths = (["float"] if study["float"] else []) + list(study["bits"])
            for bits in depths:
                for rounding in (["-"] if bits == "float" else study["roundings"]):
                    cfg = dataclasses.replace(net_cfg, seed=seed, epochs=study["epochs"])
                    if bits == "float":
                        cfg.model = "float"
                        cfg.fixed = {}
                        tag = f"{name}/float/seed{seed}"
                    else:
                        cfg.model = "fixed"
                        fixed = {"state": bits, "weight": bits, "bias": bits + study["bias_extra_bits"],
                                 "rounding": rounding}
                        if study["weight_store_bits"]:
                            fixed["weight_store"] = max(bits, study["weight_store_bits"])
                        cfg.fixed = fixed
                        tag = f"{name}/b{bits}-{rounding}/seed{seed}"
                    cfg.out = str(out / "points" / tag)
                    label = {"network": name, "bits": bits, "rounding": rounding, "seed": seed, "dir": cfg.out}
                    res.append((label, config_mod.validate(cfg)))
    return res


def _done_epochs(run_dir: Path) -> int:
    m = run_dir / "metrics.jsonl"
    if not m.exists():
        return 0
    return len([l for l in m.read_text().splitlines() if l.strip()])


def _run_point(cfg, threads: int | None = None) -> tuple[str, list[str]]:
    """Train one grid point (in this process or a worker); returns its log lines."""
    import torch

    from .numerics import NumericsError
    from .train import Run

    if threads:
        torch.set_num_threads(threads)
    d = Path(cfg.out)
    lines: list[str] = []
    try:
        Run(cfg, d, resume=(d / "checkpoint.pt").exists()).train(progress=False, log=lambda s: lines.append("    " + s))
    except NumericsError as e:  # a format that cannot hold this point: recorded, not fatal
        d.mkdir(parents=True, exist_ok=True)
        (d / "refused.txt").write_text(str(e) + "\n")
        lines.append(f"    refused: {e}")
    return cfg.out, lines


def run_study(config_path: str, out: str | None = None, dry_run: bool = False, log=print, jobs: int = 1) -> Path:
    """Run every unfinished point; ``jobs`` > 1 trains that many points at once, one
    thread each (small networks gain nothing from a second thread, and two
    multi-threaded processes on two cores slow each other down badly)."""
    study, base, networks = load_study(config_path)
    outp = Path(out or study["out"])
    grid = points(study, base, networks, outp)
    log(f"study: {len(grid)} runs of {study['epochs']} epoch(s) into {outp}")
    if dry_run:
        for label, _ in grid:
            log(f"  {label['dir']}")
        return outp
    outp.mkdir(parents=True, exist_ok=True)
    (outp / "study.toml").write_text(Path(config_path).read_text())
    todo = [(n, cfg) for n, (label, cfg) in enumerate(grid, 1) if _done_epochs(Path(cfg.out)) < cfg.epochs]
    if jobs <= 1:
        for n, cfg in todo:
            log(f"[{n}/{len(grid)}] {cfg.out}")
            for line in _run_point(cfg)[1]:
                log(line)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_run_point, cfg, 1): n for n, cfg in todo}
            for f in as_completed(futs):
                d, lines = f.result()
                log(f"[{futs[f]}/{len(grid)}] {d}")
                for line in lines:
                    log(line)
    summarize(outp, grid, log)
    return outp


def summarize(outp: Path, grid, log=print):
    rows = []
    for label, cfg in grid:
        d = Path(cfg.out)
        m = d / "metrics.jsonl"
        if not m.exists():
            continue
        hist = [json.loads(l) for l in m.read_text().splitlines() if l.strip()]
        if not hist:
            continue
        last = hist[-1]
        row = {**{k: label[k] for k in ("network", "bits", "rounding", "seed")}, "epochs": last["epoch"],
               "train_error": last["train_error"], "test_error": last["test_error"],
               "seconds": sum(h["seconds"] for h in hist)}
        for i, r in enumerate(last["rms_correction"]):
            row[f"rms_{i}{i + 1}"] = r
        for i, z in enumerate(last.get("zero_corrections", [])):
            row[f"zero_{i}{i + 1}"] = z
        row["weight_saturations"] = last.get("weight_saturations", "")
        rows.append(row)
    if not rows:
        log("study: nothing finished yet")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(outp / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (outp / "summary.md").write_text(summary_markdown(rows))
    plot(outp, rows)
    log(f"study: summary of {len(rows)} runs in {outp}/summary.md, figures in {outp}/*.png")


def _mean_by(rows, keyf, valf):
    acc: dict = {}
    for r in rows:
        v = valf(r)
        if v is None or v == "":
            continue
        acc.setdefault(keyf(r), []).append(v)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def summary_markdown(rows) -> str:
    nets = list(dict.fromkeys(r["network"] for r in rows))
    n_pairs = max(int(k.split("_")[1][0]) + 1 for r in rows for k in r if k.startswith("rms_"))
    lines = ["| network | bits | rounding | seeds | epochs | train error | test error | "
             + " | ".join(f"RMS dW {i}-{i + 1}" for i in range(n_pairs)) + " | "
             + " | ".join(f"zero dW {i}-{i + 1}" for i in range(n_pairs)) + " |",
             "|" + " --- |" * (6 + 2 * n_pairs)]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["network"], r["bits"], r["rounding"]), []).append(r)

    def order(k):
        return (nets.index(k[0]), -1 if k[1] == "float" else k[1], k[2])

    for key in sorted(groups, key=order):
        g = groups[key]
        mean = lambda f: sum(f(r) for r in g) / len(g)  # noqa: E731
        rms = [f"{mean(lambda r: r[f'rms_{i}{i + 1}']):.2e}" for i in range(n_pairs)]
        zero = [f"{100 * mean(lambda r: r.get(f'zero_{i}{i + 1}', 0.0)):.0f}%" if key[1] != "float" else "-"
                for i in range(n_pairs)]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {len(g)} | {g[0]['epochs']} | "
            f"{100 * mean(lambda r: r['train_error']):.2f}% | {100 * mean(lambda r: r['test_error']):.2f}% | "
            + " | ".join(rms) + " | " + " | ".join(zero) + " |"
        )
    return "\n".join(lines) + "\n"


def plot(outp: Path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r["network"] for r in rows))
    fixed = [r for r in rows if r["bits"] != "float"]
    roundings = list(dict.fromkeys(r["rounding"] for r in fixed))
    bits = sorted({r["bits"] for r in fixed})
    n_pairs = max(int(k.split("_")[1][0]) + 1 for r in rows for k in r if k.startswith("rms_"))

    # 1. error against bit depth, one line per network and rounding; float as dashed level.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ni, net in enumerate(nets):
        color = f"C{ni}"
        for ri, rnd in enumerate(roundings):
            m = _mean_by([r for r in fixed if r["network"] == net and r["rounding"] == rnd],
                         lambda r: r["bits"], lambda r: r["test_error"])
            xs = [b for b in bits if b in m]
            ax.plot(xs, [100 * m[b] for b in xs], marker="os"[ri % 2], ls=["-", ":"][ri % 2], color=color,
                    label=f"{net}, {rnd}")
        fl = _mean_by([r for r in rows if r["network"] == net and r["bits"] == "float"],
                      lambda r: 0, lambda r: r["test_error"])
        if fl:
            ax.axhline(100 * fl[0], color=color, ls="--", lw=0.8, label=f"{net}, float")
    ax.set_xlabel("bits (states and weights)")
    ax.set_ylabel("test error (%)")
    ax.set_xticks(bits)
    ax.set_title("Error against bit depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outp / "error_vs_bits.png", dpi=120)
    plt.close(fig)

    # 2./3. per-layer RMS correction and fraction of zero corrections against bit depth.
    for what, fname, ylabel, scale in (("rms", "rms_vs_bits.png", "RMS weight correction", "log"),
                                       ("zero", "zero_vs_bits.png", "corrections rounded to zero (%)", "linear")):
        fig, axes = plt.subplots(len(roundings), len(nets), figsize=(4 * len(nets), 3.2 * len(roundings)),
                                 squeeze=False, sharey=True)
        for ri, rnd in enumerate(roundings):
            for ni, net in enumerate(nets):
                ax = axes[ri][ni]
                sel = [r for r in fixed if r["network"] == net and r["rounding"] == rnd]
                for i in range(n_pairs):
                    key = f"{what}_{i}{i + 1}"
                    m = _mean_by(sel, lambda r: r["bits"], lambda r, key=key: r.get(key))
                    xs = [b for b in bits if b in m]
                    ys = [m[b] * (100 if what == "zero" else 1) for b in xs]
                    if what == "rms":
                        ys = [max(y, 1e-12) for y in ys]
                    ax.plot(xs, ys, marker="o", label=f"layers {i + 1}-{i + 2}")
                ax.set_yscale(scale)
                ax.set_title(f"{net}, {rnd}", fontsize=9)
                ax.set_xticks(bits)
                if ri == len(roundings) - 1:
                    ax.set_xlabel("bits")
                if ni == 0:
                    ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(outp / fname, dpi=120)
        plt.close(fig)

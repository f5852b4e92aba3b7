"""Reports of finished (or running) training runs: the paper's Figures 3 and 4.

``eqprop report RUN_DIR [RUN_DIR ...] --out DIR`` reads each run's
``metrics.jsonl`` and ``batches.jsonl`` (train.py) and writes into DIR:

* ``errors.md``   per epoch, each run's train and validation error, dead target units
  (the table next to the paper's Figure 3);
* ``epochs.md``   one row per run and epoch: errors, the free steps each example
  took (mean and max, training and evaluation: the settle rule of
  docs/numerics.md §4a) and the epoch's seconds;
* ``errors.png``  train and evaluation error per epoch (Figure 3);
* ``rms.png``     per adjacent layer pair, the RMS of the applied correction per
  batch, as an 11-point centered moving average (Figure 4, section 4.2);
* ``rms.csv``     the same series averaged over blocks of 100 batches (small
  enough to commit);
* ``RUN/metrics.jsonl`` a copy of each run's per-epoch metrics.

Runs are named by their directory name unless ``--names`` is given. A run
still in training reports the epochs it has finished.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from .train import RunDirError, read_jsonl

MOVING_AVERAGE = 11  # section 4.2: "an 11-point centered moving average"
CSV_BLOCK = 100


def load(run_dir: Path) -> dict:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise RunDirError(f"report: {metrics} does not exist (not a run directory, or no epoch finished)")
    rows = read_jsonl(metrics)
    if not rows:
        raise RunDirError(f"report: {metrics} holds no finished epoch")
    batches = read_jsonl(run_dir / "batches.jsonl")
    done = {r["epoch"] for r in rows}
    return {"metrics": rows, "batches": [b for b in batches if b["epoch"] in done]}


def moving_average(xs: list[float], n: int = MOVING_AVERAGE) -> list[float]:
    """Centered moving average; the window shrinks at both ends."""
    h = n // 2
    out = []
    for i in range(len(xs)):
        w = xs[max(0, i - h) : i + h + 1]
        out.append(sum(w) / len(w))
    return out


def error_table(runs: dict[str, dict]) -> str:
    names = list(runs)
    n_ep = max(len(r["metrics"]) for r in runs.values())
    eval_set = next(iter(runs.values()))["metrics"][0].get("eval_set", "validation")
    head = "| epoch | " + " | ".join(f"{n}: train / {eval_set} error (dead targets)" for n in names) + " |"
    lines = [head, "| --- |" + " --- |" * len(names)]
    for e in range(n_ep):
        cells = []
        for n in names:
            m = runs[n]["metrics"]
            if e < len(m):
                r = m[e]
                dead = f" ({100 * r['dead_targets']:.0f}%)" if "dead_targets" in r else ""
                cells.append(f"{100 * r['train_error']:.2f}% / {100 * r['test_error']:.2f}%{dead}")
            else:
                cells.append("")
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def epoch_table(runs: dict[str, dict]) -> str:
    """One row per run and epoch: errors, free steps (settle rule, §4a) and seconds."""
    eval_set = next(iter(runs.values()))["metrics"][0].get("eval_set", "validation")
    lines = [f"| run | epoch | train error | {eval_set} error | free steps mean (max) | "
             "evaluation free steps mean (max) | seconds |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def steps(r, key):
        return f"{r[key + '_mean']:.1f} ({r[key + '_max']})" if key + "_mean" in r else "all"

    for n, run in runs.items():
        for r in run["metrics"]:
            lines.append(f"| {n} | {r['epoch']} | {100 * r['train_error']:.2f}% | {100 * r['test_error']:.2f}% | "
                         f"{steps(r, 'free_steps')} | {steps(r, 'eval_steps')} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def rms_series(batches: list[dict]) -> list[list[float]]:
    """Per adjacent layer pair, the per-batch RMS correction in order."""
    if not batches:
        return []
    pairs = len(batches[0]["rms"])
    return [[b["rms"][p] for b in batches] for p in range(pairs)]


def write_report(run_dirs: list[str], out: str, names: list[str] | None = None) -> Path:
    dirs = [Path(d) for d in run_dirs]
    if names and len(names) != len(dirs):
        raise RunDirError(f"names: {len(names)} names for {len(dirs)} runs")
    names = names or [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise RunDirError(f"names: runs share a name ({', '.join(names)}); give --names")
    runs = {n: load(d) for n, d in zip(names, dirs)}
    outp = Path(out)
    outp.mkdir(parents=True, exist_ok=True)
    (outp / "errors.md").write_text(error_table(runs))
    (outp / "epochs.md").write_text(epoch_table(runs))
    for n, d in zip(names, dirs):
        (outp / n).mkdir(exist_ok=True)
        shutil.copyfile(d / "metrics.jsonl", outp / n / "metrics.jsonl")
    with open(outp / "rms.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "first_batch", "last_batch", "layer_pair", "rms_correction_mean"])
        for n, r in runs.items():
            for p, xs in enumerate(rms_series(r["batches"])):
                for i in range(0, len(xs), CSV_BLOCK):
                    blk = xs[i : i + CSV_BLOCK]
                    w.writerow([n, i + 1, i + len(blk), f"{p}-{p + 1}", f"{sum(blk) / len(blk):.6e}"])
    _figures(runs, outp)
    return outp


def _figures(runs: dict[str, dict], outp: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for n, r in runs.items():
        ep = [m["epoch"] for m in r["metrics"]]
        ax[0].plot(ep, [100 * m["train_error"] for m in r["metrics"]], marker="o", label=n)
        ax[1].plot(ep, [100 * m["test_error"] for m in r["metrics"]], marker="o", label=n)
    ax[0].set_title("training error (free phase, persistent particles)")
    ax[1].set_title(f"{next(iter(runs.values()))['metrics'][0].get('eval_set', 'validation')} error")
    for a in ax:
        a.set_xlabel("epoch")
        a.set_yscale("log")
        a.grid(True, which="both", alpha=0.3)
    ax[0].set_ylabel("error (%)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outp / "errors.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.6 * len(runs)), squeeze=False, sharex=True)
    for a, (n, r) in zip(axes[:, 0], runs.items()):
        for p, xs in enumerate(rms_series(r["batches"])):
            a.plot(moving_average(xs), lw=0.8, label=f"layers {p}-{p + 1}")
        a.set_yscale("log")
        a.set_title(n, fontsize=9)
        a.set_ylabel("RMS correction")
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7, ncol=5)
    axes[-1, 0].set_xlabel(f"batch ({MOVING_AVERAGE}-point centered moving average)")
    fig.tight_layout()
    fig.savefig(outp / "rms.png", dpi=110)
    plt.close(fig)


def add_parser(sub):
    r = sub.add_parser("report", help="tables and figures (paper's Figures 3 and 4) of training runs")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--names", help="comma-separated run names (default: the directory names)")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    outp = write_report(args.run_dirs, args.out, names)
    print((outp / "errors.md").read_text(), end="")
    print(f"wrote {outp}/errors.md, epochs.md, errors.png, rms.png, rms.csv")
    return 0

"""``eqprop waves``: read a co-simulation VCD with vcdvcd and plot it.

    eqprop waves build/NAME/cosim_icarus/waves.vcd --design build/NAME --neurons out [--out waves.png]
    eqprop waves FILE.vcd --signals 'busy|phase' [--out signals.png]

``--neurons`` decodes the lanes' state writes (``result__en``/``result__addr``/
``result__data`` of each lane, sampled at the rising clock edges) into each
neuron's state after every relaxation step, and plots the chosen neurons
(``out`` = the output layer, or a comma-separated list of non-input indices)
through the free and weakly-clamped phases, next to the fixed-point model's
trajectory for the same example (from the co-simulation's job.json).
``--signals`` plots any signals whose names match a regular expression.

``--out`` is the PNG file; an existing directory gets ``DIR/waves_neurons.png``
or ``DIR/waves_signals.png`` (the default names). The PNG is written to a
temporary file and renamed. Every input is checked first, each with one line
naming it (exit 2): the VCD (missing, a directory, not a VCD, not this design's
signals), the regular expression, ``--neurons`` (non-input indices
0..S-1), ``--example`` (an example of the job.json next to the VCD) and
``--design`` (a generated design directory, checked as ``eqprop sim`` checks
it).
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path


class WavesError(ValueError):
    """A bad input of ``eqprop waves``; the message names the file or flag."""


_VCD_KEYWORDS = (b"$date", b"$version", b"$timescale", b"$comment", b"$scope", b"$var")


def check_vcd(path) -> Path:
    """``path`` is a readable VCD file (its header starts with VCD keywords), or WavesError."""
    p = Path(path)
    if not p.exists():
        raise WavesError(f"vcd: {p}: no such file (eqprop sim --waves writes DESIGN/cosim_icarus/waves.vcd)")
    if p.is_dir():
        raise WavesError(f"vcd: {p} is a directory, not a VCD file")
    try:
        with open(p, "rb") as f:
            head = f.read(4096).lstrip()
    except OSError as e:
        raise WavesError(f"vcd: cannot read {p} ({e.strerror})") from None
    if not any(head.startswith(k) for k in _VCD_KEYWORDS):
        raise WavesError(f"vcd: {p} is not a VCD file (it does not start with a VCD header such as $date, "
                         "$timescale or $scope)")
    return p


def _load(path: str):
    from vcdvcd import VCDVCD

    p = check_vcd(path)
    try:
        vcd = VCDVCD(str(p), store_tvs=True)
    except (ValueError, IndexError, KeyError) as e:  # e.g. binary garbage after a VCD-like start
        raise WavesError(f"vcd: {p} is not a VCD file that vcdvcd can read ({e.__class__.__name__}: "
                         f"{str(e)[:80]})") from None
    if not vcd.signals:
        raise WavesError(f"vcd: {p} is not a VCD file with signals (no $var definitions)")
    vcd.path = p
    return vcd


def check_pattern(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise WavesError(f"signals: {pattern!r} is not a regular expression ({e})") from None


def parse_neurons(which: str, p) -> list[int]:
    """'out' (the output layer) or comma-separated non-input indices 0..S-1 of design ``p``."""
    S = p.layout.S
    if which == "out":
        return list(range(p.layout.out_first, S))
    try:
        neurons = [int(v) for v in which.split(",")]
    except ValueError:
        raise WavesError(f"neurons: {which!r} is not 'out' or comma-separated neuron indices") from None
    bad = [i for i in neurons if not 0 <= i < S]
    if bad:
        raise WavesError(f"neurons: {bad[0]} is out of range: the design has {S} non-input neurons (0..{S - 1}; "
                         f"outputs {p.layout.out_first}..{S - 1})")
    return neurons


def read_job(path: Path, example: int) -> dict | None:
    """The co-simulation job next to a VCD (None if there is none), with ``example`` in range."""
    if not path.exists():
        return None
    try:
        job = json.loads(path.read_text())
        n = len(job["examples"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WavesError(f"{path}: not a co-simulation job ({e.__class__.__name__})") from None
    if not 0 <= example < n:
        raise WavesError(f"example: {example} is out of range: {path} holds {n} example"
                         f"{'s' if n != 1 else ''} (0..{n - 1})")
    return job


def out_path(out: str | None, default: str) -> Path:
    """``--out``: a PNG file, or an existing directory that gets ``DIR/default``."""
    if out is None:
        return Path(default)
    p = Path(out)
    return p / default if p.is_dir() else p


def save_figure(fig, out: Path, dpi: int) -> str:
    from eqprop.model.config import os_reason
    from eqprop.model.files import atomic_write

    try:
        atomic_write(out, lambda f: fig.savefig(f, format="png", dpi=dpi))
    except OSError as e:
        raise WavesError(f"out: cannot write {out} ({os_reason(e, out)})") from None
    return str(out)


class Sampler:
    """Value of a VCD signal just before a given time (registered outputs are stable then)."""

    def __init__(self, tv):
        self.t = [t for t, _ in tv]
        self.v = [v for _, v in tv]

    def before(self, t: int) -> str:
        i = bisect.bisect_left(self.t, t) - 1
        return self.v[i] if i >= 0 else "x"


def _find(vcd, pattern: str) -> str:
    names = [n for n in vcd.signals if re.search(pattern, n)]
    if not names:
        raise WavesError(f"vcd: no signal of {getattr(vcd, 'path', 'the VCD')} matches {pattern!r} (a VCD of "
                         "another design, or without the lanes?)")
    return min(names, key=len)


def _int(v: str) -> int | None:
    try:
        return int(v, 2)
    except ValueError:
        return None


def neuron_trajectories(vcd_path: str, design: str) -> dict[int, list[tuple[int, int]]]:
    """{non-input neuron: [(time, raw state written), ...]} from the lanes' result writes."""
    from eqprop.hdl.params import CoreParams

    p = CoreParams.from_design(design)
    vcd = _load(vcd_path)
    clk = Sampler(vcd[_find(vcd, r"\.clk$")].tv)
    edges = [t for t, v in zip(clk.t, clk.v) if v == "1"]
    traj: dict[int, list[tuple[int, int]]] = {}
    for ell, lane in enumerate(p.layout.lanes):
        pre = rf"lane{ell}\."
        bits = r"(\[\d+:\d+\])?$"  # VCD names carry their bit range
        # the lane's result port (res_* in designs generated before the lane was split into
        # components, docs/rtl.md)
        en, addr, data = (Sampler(vcd[_find(vcd, pre + rf"(result__|res_){f}" + bits)].tv)
                          for f in ("en", "addr", "data"))
        n = len(lane.neurons)
        for t in edges:
            if en.before(t) == "1":
                a, d = _int(addr.before(t)), _int(data.before(t))
                if a is None or d is None or n == 0:
                    continue
                traj.setdefault(lane.neurons[a % n], []).append((t, d))
    return traj


def model_trajectories(design: str, job_path: str, example: int = 0) -> dict[int, list[int]]:
    """The fixed-point model's state after every step of one example of a job: the free
    steps the settle rule lets it take (docs/numerics.md §4a; the job's rule), then the
    weakly-clamped ones, whose events start at step n_free (§5) wherever the free phase
    stopped."""
    import torch

    from eqprop.hdl.params import settle_from_dict
    from eqprop.sim.job import design_network

    p = design_network(design)
    job = read_job(Path(job_path), example)
    if job is None:
        raise WavesError(f"{job_path}: no such file (the co-simulation job)")
    ex = job["examples"][example]
    rule = settle_from_dict(job["settle"]) if "settle" in job else p.settle
    net = p.net
    x = torch.tensor([ex["x"]])
    s = torch.tensor([ex["s_init"]])
    S = net.n_s
    steps = p.n_free + (p.n_nudged if job["train"] else 0)
    base = ex["example"] * steps * S
    d = net.input_drive(x)
    net.relax(s, d, p.n_free, event_base=torch.tensor([base]), settle=rule)
    n_taken = int(net.last_steps[0])  # free steps this example takes
    out: dict[int, list[int]] = {i: [] for i in range(S)}
    t = None
    if job["train"]:
        t = net.prepare_targets(torch.nn.functional.one_hot(torch.tensor([ex["target"]]), p.topology.sizes[-1]).float())
    for k in list(range(n_taken)) + list(range(p.n_free, steps)):
        nudged = k >= p.n_free
        beta = (-1 if ex.get("beta_neg") else 1) * p.beta if nudged else 0.0
        s = net.relax(s, d, 1, p.eps, beta, t if nudged else None, event_base=torch.tensor([base + k * S]))
        for i in range(S):
            out[i].append(int(s[0, i]))
    return out


def plot_neurons(vcd_path: str, design: str, which: str, out: str, example: int = 0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eqprop.hdl.params import CoreParams

    p = CoreParams.from_design(design)  # DesignError naming the file: missing, damaged
    neurons = parse_neurons(which, p)
    check_vcd(vcd_path)
    job = Path(vcd_path).parent / "job.json"
    has_job = read_job(job, example) is not None
    if not has_job and example != 0:
        raise WavesError(f"example: {example}: there is no {job} next to the VCD (the co-simulation's job, "
                         "which holds the examples)")
    lsb = p.state.lsb
    traj = neuron_trajectories(vcd_path, design)
    model = model_trajectories(design, str(job), example) if has_job else None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for c, i in enumerate(neurons):
        pts = traj.get(i, [])
        color = f"C{c % 10}"
        label = f"neuron {i}" + (f" (output {i - p.layout.out_first})" if i >= p.layout.out_first else "")
        ax.step([t / 1000 for t, _ in pts], [v * lsb for _, v in pts], where="post", color=color, label=label)
        if model is not None:
            n = min(len(model[i]), len(pts))
            ax.plot([pts[k][0] / 1000 for k in range(n)], [model[i][k] * lsb for k in range(n)], "o",
                    color=color, ms=3, mfc="none")
    ax.set_xlabel("simulated time (ns)")
    ax.set_ylabel("state")
    ax.set_title("RTL state writes (lines) and fixed-point model (circles)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        return save_figure(fig, Path(out), 120)
    finally:
        plt.close(fig)


def plot_signals(vcd_path: str, pattern: str, out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rx = check_pattern(pattern)
    vcd = _load(vcd_path)
    names = [n for n in vcd.signals if rx.search(n)][:12]
    if not names:
        raise WavesError(f"signals: nothing matches {pattern!r} in {vcd_path} ({len(vcd.signals)} signals, e.g. "
                         f"{min(vcd.signals, key=len)})")
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.2 * len(names) + 0.6), sharex=True, squeeze=False)
    for ax, n in zip(axes[:, 0], names):
        tv = vcd[n].tv
        ts = [t / 1000 for t, _ in tv]
        vs = [(_int(v) if _int(v) is not None else float("nan")) for _, v in tv]
        ax.step(ts, vs, where="post")
        ax.set_ylabel(n.split(".")[-1], rotation=0, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("simulated time (ns)")
    fig.tight_layout()
    try:
        return save_figure(fig, Path(out), 110)
    finally:
        plt.close(fig)


def cmd_waves(args) -> int:
    if args.neurons:
        if not args.design:
            raise WavesError("design: --neurons needs --design DIR (the generated design's manifest)")
        path = plot_neurons(args.vcd, args.design, args.neurons, out_path(args.out, "waves_neurons.png"),
                            args.example)
    else:
        check_pattern(args.signals or "")
        path = plot_signals(args.vcd, args.signals or r"(busy|phase)$", out_path(args.out, "waves_signals.png"))
    print(f"wrote {path}")
    return 0


def add_parser(sub):
    w = sub.add_parser("waves", help="plot signals or neuron states from a co-simulation VCD (vcdvcd)")
    w.add_argument("vcd")
    w.add_argument("--design", help="generated design directory (for --neurons)")
    w.add_argument("--neurons", help="'out' or non-input indices i,j,...: decode state writes")
    w.add_argument("--signals", help="regular expression over signal names")
    w.add_argument("--example", type=int, default=0, help="job example for the model trajectory")
    w.add_argument("--out", help="PNG file, or a directory for waves_neurons.png / waves_signals.png")
    w.set_defaults(func=cmd_waves)

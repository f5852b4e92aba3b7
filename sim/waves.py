"""``eqprop waves``: read a co-simulation VCD with vcdvcd and plot it.

    eqprop waves build/NAME/cosim_icarus/waves.vcd --design build/NAME --neurons out [--out waves.png]
    eqprop waves FILE.vcd --signals 'busy|phase' [--out signals.png]

``--neurons`` decodes the lanes' state writes (``res_en``/``res_addr``/
``res_data`` of each lane, sampled at the rising clock edges) into each
neuron's state after every relaxation step, and plots the chosen neurons
(``out`` = the output layer, or a comma-separated list of non-input indices)
through the free and weakly-clamped phases, next to the fixed-point model's
trajectory for the same example (from the co-simulation's job.json).
``--signals`` plots any signals whose names match a regular expression.
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path


def _load(path: str):
    from vcdvcd import VCDVCD

    return VCDVCD(str(path), store_tvs=True)


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
        raise ValueError(f"signals: nothing matches {pattern!r} in the VCD")
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
    clk = Sampler(vcd[min((n for n in vcd.signals if n.endswith(".clk")), key=len)].tv)
    edges = [t for t, v in zip(clk.t, clk.v) if v == "1"]
    traj: dict[int, list[tuple[int, int]]] = {}
    for ell, lane in enumerate(p.layout.lanes):
        pre = rf"lane{ell}\."
        bits = r"(\[\d+:\d+\])?$"  # VCD names carry their bit range
        en = Sampler(vcd[_find(vcd, pre + r"res_en" + bits)].tv)
        addr = Sampler(vcd[_find(vcd, pre + r"res_addr" + bits)].tv)
        data = Sampler(vcd[_find(vcd, pre + r"res_data" + bits)].tv)
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
    job = json.loads(Path(job_path).read_text())
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

    p = CoreParams.from_design(design)
    lsb = p.state.lsb
    traj = neuron_trajectories(vcd_path, design)
    if which == "out":
        neurons = list(range(p.layout.out_first, p.layout.S))
    else:
        neurons = [int(v) for v in which.split(",")]
    job = Path(vcd_path).parent / "job.json"
    model = model_trajectories(design, str(job), example) if job.exists() else None
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
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_signals(vcd_path: str, pattern: str, out: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vcd = _load(vcd_path)
    names = [n for n in vcd.signals if re.search(pattern, n)][:12]
    if not names:
        raise ValueError(f"signals: nothing matches {pattern!r}")
    fig, axes = plt.subplots(len(names), 1, figsize=(9, 1.2 * len(names) + 0.6), sharex=True, squeeze=False)
    for ax, n in zip(axes[:, 0], names):
        tv = vcd[n].tv
        ts = [t / 1000 for t, _ in tv]
        vs = [(_int(v) if _int(v) is not None else float("nan")) for _, v in tv]
        ax.step(ts, vs, where="post")
        ax.set_ylabel(n.split(".")[-1], rotation=0, ha="right", fontsize=7)
    axes[-1, 0].set_xlabel("simulated time (ns)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cmd_waves(args) -> int:
    if args.neurons:
        if not args.design:
            raise ValueError("waves: --neurons needs --design DIR (the generated design's manifest)")
        path = plot_neurons(args.vcd, args.design, args.neurons, args.out or "waves_neurons.png", args.example)
    else:
        path = plot_signals(args.vcd, args.signals or r"(busy|phase)$", args.out or "waves_signals.png")
    print(f"wrote {path}")
    return 0


def add_parser(sub):
    w = sub.add_parser("waves", help="plot signals or neuron states from a co-simulation VCD (vcdvcd)")
    w.add_argument("vcd")
    w.add_argument("--design", help="generated design directory (for --neurons)")
    w.add_argument("--neurons", help="'out' or non-input indices i,j,...: decode state writes")
    w.add_argument("--signals", help="regular expression over signal names")
    w.add_argument("--example", type=int, default=0, help="job example for the model trajectory")
    w.add_argument("--out", help="PNG file")
    w.set_defaults(func=cmd_waves)

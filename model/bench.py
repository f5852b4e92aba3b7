"""Speed of one training batch at the paper's size, float and fixed-point model.

    python -m eqprop.model.bench [--batches N] [--models float,fixed] [--bits ...] [--sizes ...]

Times free phase (500 steps) + weakly-clamped phase (8 steps) + update on
random MNIST-like inputs, batch 20, for the layered and the layer-skipping
(p = 7.56%) 784-500-500-500-10 networks, and prints seconds per batch, the
implied hours per 50,000-example epoch and the fixed/float ratio. A
benchmark, not a test.

``--settle TOL`` (float model; the fixed model uses 0 LSB) also times the batch
with the settle rule (docs/numerics.md §4a) from persistent particles: the
batch's free equilibrium under the initial weights, after ``--updates`` updates
(a particle as training finds it, its weights moved since its last visit),
and prints the mean free steps per example and the speed-up. The learning
runs of docs/settle.md are the real measurement; this is its quick proxy.
"""

from __future__ import annotations

import argparse
import time

import torch

from .config import PAPER_P
from .float_net import FloatNetwork
from .numerics import numerics_from_mapping, parse_bits
from .settle import SettleRule
from .topology import from_spec


def time_batches(topology, batches: int, batch_size: int, free: int, nudged: int, device: str, dtype,
                 numerics=None, settle=None, updates: int = 0) -> tuple[float, float]:
    """Seconds per batch and mean free steps per example; with ``settle`` (a
    SettleRule), from particles relaxed under the weights before ``updates`` updates."""
    if numerics is None:
        net = FloatNetwork(topology, dtype=dtype, device=device, nudge="after-step").init_params(0)
        net.set_rates([0.02])
    else:
        from .fixed_net import FixedNetwork

        net = FixedNetwork(topology, numerics, 0.5, 1.0, batch_size, [0.02], device=device,
                           nudge="after-step").init_params(0)
    g = torch.Generator().manual_seed(0)
    x = net.prepare_inputs(torch.rand(batch_size, net.n_in, generator=g))
    t0 = torch.zeros(batch_size, net.n_out)
    t0[:, 0] = 1
    t = net.prepare_targets(t0)
    s = net.zero_state(batch_size)
    ev = torch.arange(batch_size, dtype=torch.int64) * (free + nudged) * net.n_s

    def one(start, x=x, rule=settle):
        drive = net.input_drive(x)
        s0 = net.relax(start, drive, free, 0.5, event_base=ev, settle=rule)
        taken = float(net.last_steps.double().mean())
        sb = net.relax(s0, drive, nudged, 0.5, 1.0, t, event_base=ev + free * net.n_s)
        net.learn(x, s0, sb, 1.0, 0)
        if device != "cpu":
            torch.cuda.synchronize()
        return taken

    with torch.no_grad():
        if settle is not None:  # persistent particles: settled under older weights
            s = net.relax(s, net.input_drive(x), free, 0.5, event_base=ev)
            for _ in range(updates):  # other batches' updates since
                one(net.zero_state(batch_size), net.prepare_inputs(torch.rand(batch_size, net.n_in, generator=g)),
                    None)
        one(s)  # warm-up
        steps = 0.0
        t0 = time.perf_counter()
        for _ in range(batches):
            steps += one(s)
    return (time.perf_counter() - t0) / batches, steps / batches


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m eqprop.model.bench")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--free-steps", type=int, default=500)
    ap.add_argument("--nudged-steps", type=int, default=8)
    ap.add_argument("--sizes", default="784-500-500-500-10")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--models", default="float,fixed")
    ap.add_argument("--bits", default="state=8,weight=8,bias=12", help="fixed-point formats (see --bits of train)")
    ap.add_argument("--rounding", default="nearest-even")
    ap.add_argument("--settle", type=float, default=None, metavar="TOL",
                    help="also time the float model with the settle rule at this tolerance (fixed: 0 LSB)")
    ap.add_argument("--updates", type=int, default=20, help="updates between the particles' relaxation and "
                                                            "the timed batch (--settle)")
    a = ap.parse_args(argv)
    sizes = [int(v) for v in a.sizes.split("-")]
    dtype = getattr(torch, a.dtype)
    torch.set_flush_denormal(True)  # as training does (see train.Run.train)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}, {a.dtype}")
    fixed = {**parse_bits(a.bits), "rounding": a.rounding}
    for kind, kw in (("layered", {}), ("skip", {"p": PAPER_P})):
        topo = from_spec(kind, sizes, seed=0, **kw)
        secs = {}
        for model in a.models.split(","):
            num = numerics_from_mapping(fixed) if model == "fixed" else None
            sec, _ = time_batches(topo, a.batches, a.batch_size, a.free_steps, a.nudged_steps, a.device, dtype, num)
            secs[model] = sec
            epoch_h = sec * 50000 / a.batch_size / 3600
            label = model if num is None else f"fixed {a.bits} {a.rounding}"
            print(
                f"{kind:8s} {a.sizes} {label}: batch {a.batch_size}, {a.free_steps}+{a.nudged_steps} steps: "
                f"{sec:.3f} s/batch, {epoch_h:.2f} h per 50,000-example epoch (training only)"
            )
            if a.settle is not None:
                rule = SettleRule(0 if num is not None else a.settle, 1)
                ss, steps = time_batches(topo, a.batches, a.batch_size, a.free_steps, a.nudged_steps, a.device,
                                         dtype, num, rule, a.updates)
                print(f"{kind:8s} {a.sizes} {label}: settle rule tol {rule.tol:g} from particles "
                      f"{a.updates} updates old: {steps:.1f} free steps per example (of {a.free_steps}), "
                      f"{ss:.3f} s/batch, x{sec / ss:.1f} faster")
        if "float" in secs and "fixed" in secs:
            print(f"{kind:8s} fixed / float = {secs['fixed'] / secs['float']:.2f}")


if __name__ == "__main__":
    main()

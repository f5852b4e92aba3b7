"""Speed of one training batch of the float model at the paper's size.

    python -m eqprop.model.bench [--batches N] [--device cpu|cuda] [--sizes ...]

Times free phase (500 steps) + weakly-clamped phase (8 steps) + update on
random MNIST-like inputs, batch 20, for the layered and the layer-skipping
(p = 7.56%) 784-500-500-500-10 networks, and prints seconds per batch and the
implied hours per 50,000-example epoch. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from .config import PAPER_P
from .float_net import FloatNetwork
from .topology import from_spec


def time_batches(topology, batches: int, batch_size: int, free: int, nudged: int, device: str, dtype) -> float:
    net = FloatNetwork(topology, dtype=dtype, device=device).init_params(0)
    lr = net.learning_rates([0.02])
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, net.n_in, generator=g).to(device, dtype)
    t = torch.zeros(batch_size, net.n_out, device=device, dtype=dtype)
    t[:, 0] = 1
    s = net.zero_state(batch_size)

    def one():
        drive = net.input_drive(x)
        s0 = net.relax(s, drive, free, 0.5)
        sb = net.relax(s0, drive, nudged, 0.5, 1.0, t)
        net.apply(net.correction(x, s0, sb, 1.0), lr)
        if device != "cpu":
            torch.cuda.synchronize()

    with torch.no_grad():
        one()  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            one()
    return (time.perf_counter() - t0) / batches


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m eqprop.model.bench")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--free-steps", type=int, default=500)
    ap.add_argument("--nudged-steps", type=int, default=8)
    ap.add_argument("--sizes", default="784-500-500-500-10")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    a = ap.parse_args(argv)
    sizes = [int(v) for v in a.sizes.split("-")]
    dtype = getattr(torch, a.dtype)
    torch.set_flush_denormal(True)  # as training does (see train.Run.train)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {a.device}, {a.dtype}")
    for kind, kw in (("layered", {}), ("skip", {"p": PAPER_P})):
        topo = from_spec(kind, sizes, seed=0, **kw)
        sec = time_batches(topo, a.batches, a.batch_size, a.free_steps, a.nudged_steps, a.device, dtype)
        epoch_h = sec * 50000 / a.batch_size / 3600
        print(
            f"{kind:8s} {a.sizes}  batch {a.batch_size}, {a.free_steps}+{a.nudged_steps} steps: "
            f"{sec:.3f} s/batch, {epoch_h:.2f} h per 50,000-example epoch (training only)"
        )


if __name__ == "__main__":
    main()

"""The settle rule: a free phase that ends when the network has settled
(docs/numerics.md §4a).

A free phase (or an inference) runs at most ``n`` steps. It ends for one
example after the first step ``t`` (1-based) such that, in each of the last
``steps`` steps up to ``t``, no non-input state changed by more than ``tol``:

    quiet(t) = max_i |s_i(t) - s_i(t-1)| <= tol
    stop at the first t with quiet(t - steps + 1) .. quiet(t) all true

``tol`` is in state LSBs (an integer) in the fixed-point model and the RTL,
a real number in the float model. The example keeps the state of step ``t``
and its step count is ``t``; an example that never settles runs all ``n``
steps and counts ``n``. Every example of a batch stops on its own: the
batched models drop finished examples from the batch (so a step costs what
the unfinished examples cost) and give each the state and the count it would
have alone.

With ``tol = 0`` and deterministic state rounding a quiet step is a fixed
point of the (deterministic) step map: every later step returns the same
state, so stopping changes no state, only the count. With stochastic state
rounding or ``tol > 0`` the rule is a true early exit (the states it keeps
differ from the full phase's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class SettleRule:
    tol: float = 0  # largest change of any state that still counts as quiet (LSBs: fixed; real: float)
    steps: int = 1  # consecutive quiet steps that end the phase

    def __post_init__(self):
        if not self.tol >= 0:
            raise ValueError(f"settle_tol: must be >= 0, got {self.tol}")
        if self.steps < 1:
            raise ValueError(f"settle_steps: must be >= 1, got {self.steps}")


def relax_until_settled(step: Callable, s: torch.Tensor, rows: list, n: int, rule: SettleRule
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``step(t, s, *rows) -> s'`` (t = 0-based step index) for at most ``n`` steps
    under ``rule``, one stop per example (row of s).

    ``rows``: tensors (or None) with one row per example that ``step`` needs
    alongside s (the inputs' drive, event numbers, targets); they are narrowed
    with s as examples finish. Returns the final states (same row order as
    ``s``) and each example's step count (int64, on the CPU)."""
    B = s.shape[0]
    taken = torch.full((B,), n, dtype=torch.int64)
    out = s.clone()
    if n <= 0 or B == 0:
        return out, torch.zeros(B, dtype=torch.int64) if n <= 0 else taken
    live = torch.arange(B, device=s.device)  # the unfinished examples' rows in ``out``
    quiet = torch.zeros(B, dtype=torch.int64, device=s.device)
    cur = s
    for t in range(n):
        new = step(t, cur, *rows)
        change = (new - cur).abs().amax(1) if new.shape[1] else torch.zeros(new.shape[0], device=s.device)
        quiet = torch.where(change <= rule.tol, quiet + 1, torch.zeros_like(quiet))
        done = quiet >= rule.steps
        cur = new
        if bool(done.any()):
            idx = live[done]
            out[idx] = new[done]
            taken[idx.cpu()] = t + 1
            keep = ~done
            live, cur, quiet = live[keep], cur[keep], quiet[keep]
            rows = [None if r is None else r[keep] for r in rows]
            if live.numel() == 0:
                return out, taken
    out[live] = cur
    return out, taken


# ------------------------------------------------------------------ the probe
def probe(run_dir, examples: int = 100, tols=(0.0, 1e-6, 1e-5, 1e-4, 1e-3), full_steps: int | None = None,
          log=print) -> list[dict]:
    """How a trained run's persistent particles settle: for ``examples`` training
    examples spread over the set, the free phase from the checkpoint's particles
    under each tolerance, against the full phase (``full_steps``, default the
    run's free_steps): mean / median / max steps, the largest state difference,
    the fraction of equal predictions and the seconds. A measurement, not a test."""
    import time

    from .train import load_data, load_run

    cfg, net, ck = load_run(run_dir)
    if ck["particles"] is None:
        raise ValueError(f"{run_dir}: the run keeps no persistent particles")
    train = load_data(cfg, "train", cfg.train_size)
    n = min(examples, len(train))
    idx = torch.linspace(0, len(train) - 1, n).round().to(torch.int64)
    x = net.prepare_inputs(torch.from_numpy(train.x[idx.numpy()]))
    start = ck["particles"][idx].to(net.device)
    start = start if start.is_floating_point() else start.to(torch.int64)
    drive = net.input_drive(x)
    steps = full_steps or cfg.free_steps
    stride = (cfg.free_steps + cfg.nudged_steps) * net.n_s
    ev = idx * stride
    is_fixed = getattr(net, "is_fixed", False)
    with torch.no_grad():
        t0 = time.perf_counter()
        full = net.relax(start.clone(), drive, steps, cfg.eps, event_base=ev)
        t_full = time.perf_counter() - t0
        rows = [{"tol": "off", "steps_mean": float(steps), "steps_median": float(steps), "steps_max": steps,
                 "max_diff": 0.0, "same_pred": 1.0, "seconds": t_full}]
        for tol in tols:
            rule = SettleRule(int(tol) if is_fixed else tol, 1)
            t0 = time.perf_counter()
            s = net.relax(start.clone(), drive, steps, cfg.eps, event_base=ev, settle=rule)
            dt = time.perf_counter() - t0
            c = net.last_steps.double()
            diff = (net.states_float(s) - net.states_float(full)).abs().max()
            same = (net.outputs(s).argmax(1) == net.outputs(full).argmax(1)).double().mean()
            rows.append({"tol": tol, "steps_mean": float(c.mean()), "steps_median": float(c.median()),
                         "steps_max": int(c.max()), "max_diff": float(diff), "same_pred": float(same),
                         "seconds": dt})
    log(f"{run_dir}: epoch {ck['epoch']}, {n} training examples from their particles, at most {steps} steps")
    log("| settle_tol | mean steps | median | max | max abs(s - s_full) | same prediction | seconds |")
    log("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        log(f"| {r['tol']} | {r['steps_mean']:.1f} | {r['steps_median']:.0f} | {r['steps_max']} | "
            f"{r['max_diff']:.1e} | {100 * r['same_pred']:.0f}% | {r['seconds']:.1f} |")
    return rows


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m eqprop.model.settle",
                                 description="How a run's persistent particles settle (docs/settle.md).")
    ap.add_argument("run_dir")
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--tols", default="0,1e-6,1e-5,1e-4,1e-3")
    ap.add_argument("--full-steps", type=int, default=None)
    a = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    probe(a.run_dir, a.examples, [float(t) for t in a.tols.split(",")], a.full_steps)


if __name__ == "__main__":
    main()

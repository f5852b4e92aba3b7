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

"""Everything the RTL is built from, derived from one run configuration.

``CoreParams`` gathers the topology's lane layout (``layout.py``), the
numerics contract (``eqprop.model.numerics``, docs/numerics.md) and the
constants of the dynamics (eps and beta as shifts, the rate multipliers), so
that the model and the hardware are built from the same objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from eqprop.model.fixed_net import FixedNetwork
from eqprop.model.numerics import Format, Multiplier, Numerics
from eqprop.model.settle import SettleRule
from eqprop.model.topology import Topology

from .layout import Layout, build_layout


def bits_for(n: int) -> int:
    """Address bits for n entries (at least 1)."""
    return max(1, math.ceil(math.log2(max(n, 2))))


def settle_to_dict(rule: SettleRule | None) -> dict | None:
    """The settle rule as the manifest keeps it (None: off)."""
    return None if rule is None else {"tol": int(rule.tol), "steps": int(rule.steps)}


def settle_from_dict(d: dict | None) -> SettleRule | None:
    return None if d is None else SettleRule(int(d["tol"]), int(d["steps"]))


@dataclass
class CoreParams:
    topology: Topology
    num: Numerics
    eps: float
    beta: float
    rates: list
    P: int
    n_free: int
    n_nudged: int
    nudge: str = "eq5"  # where the weakly-clamped nudge enters (docs/numerics.md §4, step 4)
    # The settle rule (docs/numerics.md §4a): the reset values of the core's settle_tol and
    # settle_steps registers; None = off (settle_steps = 0, every free phase runs n_free steps).
    settle: SettleRule | None = None
    layout: Layout = field(init=False)
    net: FixedNetwork = field(init=False, repr=False)

    def __post_init__(self):
        self.settle = self.checked_settle(self.settle)
        # The hardware updates after every example: batch 1 (docs/numerics.md §6).
        self.net = FixedNetwork(self.topology, self.num, self.eps, self.beta, 1, self.rates, nudge=self.nudge)
        self.layout = build_layout(self.topology, self.P)

    def checked_settle(self, rule: SettleRule | None) -> SettleRule | None:
        """A settle rule the core's registers can hold (whole LSBs), or ValueError."""
        if rule is None:
            return None
        tol = rule.tol
        if tol != int(tol) or not 0 <= tol < self.num.state.one():
            raise ValueError(f"settle_tol: {tol} is not a whole number of state LSBs below "
                             f"{self.num.state.one()} (state {self.num.state}, docs/numerics.md §4a)")
        if not 1 <= rule.steps < 2**16:
            raise ValueError(f"settle_steps: {rule.steps} does not fit the 16-bit register")
        return SettleRule(int(tol), int(rule.steps))

    # ---- formats and shifts (docs/numerics.md §1-§4)
    @property
    def state(self) -> Format:
        return self.num.state

    @property
    def fa(self) -> int:
        return self.num.acc_frac

    @property
    def k(self) -> int:
        return self.net.k

    @property
    def m(self) -> int:
        return self.net.m

    @property
    def acc_exact_bits(self) -> int:
        return self.num.acc_exact_bits(self.net.fan_in)

    @property
    def acc_fmt(self) -> Format:
        return self.net.acc_fmt

    @property
    def state_shift(self) -> int:
        """Bits dropped by the state rounding: fa + k - fS."""
        return self.fa + self.k - self.state.n_frac

    @property
    def nudge_shift(self) -> int:
        """eq5: the shift of (s - t) into V, fa - fS + 1 + m."""
        return self.fa - self.state.n_frac + 1 + self.m

    @property
    def g(self) -> int:
        """after-step: 2 eps |beta| = 2^g, the shift of (T - V)."""
        return self.net.g

    # ---- learning (§6)
    def pair_mult(self, p: int) -> Multiplier:
        return self.net.mult[self.layout.pairs[p]]

    def weight_shift(self, p: int) -> int:
        """Bits dropped from sigma * D * M: 2 fS + z - fWs (docs/numerics.md §6; z = Multiplier.E)."""
        return 2 * self.state.n_frac + self.pair_mult(p).E - self.num.weight_store.n_frac

    def bias_shift(self, p: int) -> int:
        """fS + z - fB (§6)."""
        return self.state.n_frac + self.pair_mult(p).E - self.num.bias.n_frac

    def bias_pair(self, i: int) -> int:
        """Pair index of non-input neuron i's bias rate (its own layer)."""
        l = int(self.topology.layer_of[self.layout.n_in + i])
        return self.layout.pair_index(l, l)

    # ---- parameters laid out for the lanes
    def lane_weights(self, W_in: torch.Tensor, W_ss: torch.Tensor) -> list[list[int]]:
        """Stored weights (raw, weight_store format) in each lane's entry order."""
        out = []
        for lane in self.layout.lanes:
            ws = []
            for e in lane.entries:
                if e.dummy:
                    ws.append(0)
                elif e.src_input:
                    ws.append(int(W_in[e.src, e.neuron]))
                else:
                    ws.append(int(W_ss[e.src, e.neuron]))
            out.append(ws)
        return out

    def lane_biases(self, b: torch.Tensor) -> list[list[int]]:
        return [[int(b[i]) for i in lane.neurons] for lane in self.layout.lanes]

    @classmethod
    def from_design(cls, design_dir) -> "CoreParams":
        """Rebuild the parameters of a generated design from its manifest and topology."""
        import json
        from pathlib import Path

        from eqprop.model.numerics import numerics_from_mapping

        d = Path(design_dir)
        man = json.loads((d / "manifest.json").read_text())
        dyn = man["dynamics"]
        from eqprop.model.config import LEGACY_NUDGE

        rule = dyn.get("settle")  # absent: a design made before the settle rule (off)
        return cls(Topology.load(d / "topology.npz"), numerics_from_mapping(man["numerics"]), dyn["eps"],
                   dyn["beta"], dyn["rates"], man["lanes"]["P"], dyn["n_free"], dyn["n_nudged"],
                   dyn.get("nudge", LEGACY_NUDGE), settle_from_dict(rule))

    def to_dict(self) -> dict:
        return {
            "sizes": list(self.topology.sizes), "kind": self.topology.kind, "P": self.P,
            "n_free": self.n_free, "n_nudged": self.n_nudged, "eps": self.eps, "beta": self.beta,
            "nudge": self.nudge, "settle": settle_to_dict(self.settle),
            "rates": list(self.rates), "numerics": self.num.to_dict(),
        }

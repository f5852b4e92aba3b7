"""Everything the RTL is built from, derived from one run configuration.

``CoreParams`` gathers the topology's lane layout (``layout.py``), the
numerics contract (``eqprop.model.numerics``, docs/numerics.md) and the
constants of the dynamics (eps and beta as shifts, the rate multipliers), so
that the model and the hardware are built from the same objects.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from eqprop.model.fixed_net import FixedNetwork
from eqprop.model.numerics import Format, Multiplier, Numerics
from eqprop.model.settle import SettleRule
from eqprop.model.topology import Topology

from .layout import Layout, build_layout


class DesignError(ValueError):
    """A design directory that cannot be used as asked; the message names the file (and key)."""


# What a testbench, ``eqprop sim`` and ``eqprop waves`` read from a manifest.
MANIFEST_KEYS = (
    "name", "numerics", "topology.sizes", "dynamics.eps", "dynamics.beta", "dynamics.rates",
    "dynamics.n_free", "dynamics.n_nudged", "lanes.P", "memory_map.registers", "ports",
    "cycle_model.step", "cycle_model.free", "cycle_model.nudged", "cycle_model.update",
    "cycle_model.train_example", "cycle_model.inference_example", "cycle_model.train_rest",
    "cycle_model.inference_rest", "cycle_model.clock_mhz",
)
REGENERATE = "regenerate it with eqprop hdl generate"


def layout_version(man: dict) -> int:
    """The lane layout version a manifest's design was built with (1: before the key)."""
    v = man.get("lanes", {}).get("layout_version", 1)
    return v if isinstance(v, int) else -1


def check_layout_version(design_dir, man: dict):
    """DesignError (one line) if the design's lane layout is not the one this code builds:
    its weight addresses and hex files would be read in the wrong order."""
    from .layout import LAYOUT_VERSION

    v = layout_version(man)
    if v != LAYOUT_VERSION:
        raise DesignError(f"{Path(design_dir) / 'manifest.json'}: lanes.layout_version is {v}, this eqprop builds "
                          f"lane layout {LAYOUT_VERSION} (hdl/layout.py): the design's weight order is not this "
                          f"one's; {REGENERATE}")


def file_digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_manifest(design_dir, check_files: bool = True) -> dict:
    """A design directory's manifest.json, checked: the directory and the file exist, it is
    JSON with every key of MANIFEST_KEYS, and (``check_files``) each file it lists a SHA-256
    for is there with those bytes. DesignError (one line naming the file or key) otherwise."""
    d = Path(design_dir)
    path = d / "manifest.json"
    if not d.exists():
        raise DesignError(f"design: {d}: no such directory")
    if not d.is_dir():
        raise DesignError(f"design: {d} is a file, not a design directory")
    if not path.is_file():
        raise DesignError(f"design: {d} holds no manifest.json (not a generated design: eqprop hdl generate "
                          f"--out {d})")
    try:
        man = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DesignError(f"{path}: not JSON (line {e.lineno}: {e.msg}); {REGENERATE}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DesignError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e.__class__.__name__})") from None
    if not isinstance(man, dict):
        raise DesignError(f"{path}: not a design manifest (a JSON {type(man).__name__}); {REGENERATE}")
    for key in MANIFEST_KEYS:
        cur = man
        for part in key.split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise DesignError(f"{path}: no key {key}; {REGENERATE}")
            cur = cur[part]
    if not isinstance(man["name"], str) or not man["name"].isidentifier():
        raise DesignError(f"{path}: name: {man['name']!r} is not a Verilog module name; {REGENERATE}")
    if check_files:
        check_design_files(d, man)
    return man


def check_design_files(d: Path, man: dict):
    """Every file the manifest lists a digest for (``digests``, written by eqprop hdl generate;
    absent in older designs) is there, unchanged."""
    digests = man.get("digests") or {}
    if not isinstance(digests, dict):
        raise DesignError(f"{d / 'manifest.json'}: digests: not an object; {REGENERATE}")
    for name, want in digests.items():
        f = d / name
        if not f.is_file():
            what = "is a directory" if f.is_dir() else "is missing"
            raise DesignError(f"{f}: {what} (listed in {d / 'manifest.json'}); {REGENERATE}")
        if file_digest(f) != want:
            raise DesignError(f"{f}: changed since it was generated (its SHA-256 is not the one in "
                              f"{d / 'manifest.json'}); {REGENERATE}")


def bits_for(n: int) -> int:
    """Address bits for n entries (at least 1)."""
    return max(1, math.ceil(math.log2(max(n, 2))))


def settle_to_dict(rule: SettleRule | None) -> dict | None:
    """The settle rule as the manifest keeps it (None: off)."""
    return None if rule is None else {"tol": int(rule.tol), "steps": int(rule.steps)}


def settle_from_dict(d: dict | None) -> SettleRule | None:
    return None if d is None else SettleRule(int(d["tol"]), int(d["steps"]))


WEIGHT_INITS = ("verilog", "host")
SPRAM_WIDTH = 16  # the iCE40 UP5K's SB_SPRAM256KA: 16k x 16


class _FromNet:
    """A read-only attribute of ``CoreParams`` that is its FixedNetwork's of the same name."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj.net, self.name)


@dataclass
class CoreParams:
    topology: Topology
    num: Numerics
    eps: float
    beta: float
    rates: list  # the on-chip update's rates alpha (batch 1; [hdl] onchip_lr, §6)
    P: int
    n_free: int
    n_nudged: int
    nudge: str = "eq5"  # where the weakly-clamped nudge enters (docs/numerics.md §4, step 4)
    # The settle rule (docs/numerics.md §4a): the reset values of the core's settle_tol and
    # settle_steps registers; None = off (settle_steps = 0, every free phase runs n_free steps).
    settle: SettleRule | None = None
    # Where the weights and biases come from (``[hdl] weight_init``): "verilog", the design's
    # initial values; "host", the host writes them at run time (no initial values in the
    # Verilog; the weights packed 16 bits per word, the UP5K SPRAM's width: hdl/layout.py)
    weight_init: str = "verilog"
    layout: Layout = field(init=False)
    net: FixedNetwork = field(init=False, repr=False)

    def __post_init__(self):
        if self.weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init: {self.weight_init!r} is not one of {', '.join(WEIGHT_INITS)}")
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
    def acc_exact_bits(self) -> int:
        return self.num.acc_exact_bits(self.net.fan_in)

    @property
    def acc_fmt(self) -> Format:
        return self.net.acc_fmt

    @property
    def drive_bits(self) -> int:
        """Bits of a drive word D_i (the inputs' part of §2's sum plus the aligned bias, kept
        exact in the lanes' drive memories): the exact accumulator's, whose bound covers it."""
        return self.acc_exact_bits

    # The shifts are the model's (FixedNetwork, the one home of §1-§6's shift amounts).
    k = _FromNet()  # eps = 2^-k
    m = _FromNet()  # |beta| = 2^m
    mac_shift = _FromNet()  # §1: fWs - fW
    bias_align = _FromNet()  # §2: fa - fB
    state_align = _FromNet()  # §4 step 2: fa - fS
    state_shift = _FromNet()  # §4 step 5: bits dropped by the state rounding, fa + k - fS
    nudge_shift = _FromNet()  # §4 step 4, eq5: the shift of (s - t) into V, fa - fS + 1 + m
    g = _FromNet()  # §4 step 4, after-step: 2 eps |beta| = 2^g, the shift of (T - V)

    # ---- learning (§6); p: index into layout.pairs
    def pair_mult(self, p: int) -> Multiplier:
        """The on-chip update's rate multiplier of pair p: M 2^-z ~ c = rate / |beta| (batch
        1), ``rates`` being the on-chip rates (``[hdl] onchip_lr``); M is the reset value of
        the pair's ``rate`` register, z is fixed by the design."""
        return self.net.mult[self.layout.pairs[p]]

    @property
    def rate_bits(self) -> int:
        """Width of a ``rate`` register (the M the update multiplies by, docs/numerics.md §6):
        the ``lr_bits``-bit mantissa under ``lr_mode = "multiplier"``; 1 bit under ``"shift"``
        (M = 1, or 0 to freeze the pair)."""
        return self.num.lr_bits if self.num.lr_mode == "multiplier" else 1

    def rate_reset(self) -> list[int]:
        """The ``rate`` registers' reset values: each pair's M, in ``layout.pairs`` order."""
        return [self.pair_mult(q).M for q in range(len(self.layout.pairs))]

    def weight_shift(self, p: int) -> int:
        """§6: 2 fS + z - fWs for pair p."""
        return self.net.weight_shift(self.layout.pairs[p])

    def bias_shift(self, p: int) -> int:
        """§6: fS + z - fB for pair p."""
        return self.net.bias_shift(self.layout.pairs[p])

    def bias_pair(self, i: int) -> int:
        """Pair index of non-input neuron i's bias rate (its own layer)."""
        l = int(self.topology.layer_of[self.layout.n_in + i])
        return self.layout.pair_index(l, l)

    @property
    def _packed(self) -> bool:
        """Stored weights share the SPRAM's 16-bit words: ``weight_init = "host"`` and at most 8 bits."""
        return self.weight_init == "host" and self.num.weight_store.n_word <= SPRAM_WIDTH // 2

    @property
    def weight_slot_bits(self) -> int:
        """Bits a stored weight takes in a word of its lane's weight memory: packed, a 4- or
        8-bit slot of the SPRAM's 16-bit word (a narrower weight in its low bits); else the
        weight's width."""
        if not self._packed:
            return self.num.weight_store.n_word
        return 4 if self.num.weight_store.n_word <= 4 else 8

    @property
    def weights_per_word(self) -> int:
        """Stored weights per word of a lane's weight memory: 4 (up to 4-bit weights) or 2 (up
        to 8 bits) under ``weight_init = "host"``, else 1."""
        return SPRAM_WIDTH // self.weight_slot_bits if self._packed else 1

    # ---- parameters laid out for the lanes
    def lane_weights(self, W_in: torch.Tensor, W_ss: torch.Tensor) -> list[list[int]]:
        """Stored weights (raw, weight_store format) of each lane's weight memory, by weight
        address (``layout.py``: at P = 1 each weight once, else in entry order; the host's
        weight offsets and the ``laneK_weights.hex`` files use this order). Holes and unused
        words: 0."""
        W_in, W_ss = np.asarray(W_in), np.asarray(W_ss)
        out = []
        for lane in self.layout.lanes:
            c = lane.columns
            src, dst, inp = c["src"], c["neuron"], c["src_input"]
            ws = np.where(inp, W_in[np.where(inp, src, 0), dst], W_ss[np.where(inp, 0, src), dst])
            words = np.zeros(lane.n_words, dtype=np.int64)
            keep = ~c["dummy"]  # a weight's writer and its mirror hold the same value (W_ss symmetric)
            words[c["waddr"][keep]] = ws[keep]
            out.append(words.tolist())
        return out

    def weights_from_lanes(self, words: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """(W_in, W_ss), raw, from each lane's weight memory by weight address (``lane_weights``'
        inverse: each connection from an entry that reads it; W_ss symmetric)."""
        lay = self.layout
        W_in = np.zeros((lay.n_in, lay.S), dtype=np.int64)
        W_ss = np.zeros((lay.S, lay.S), dtype=np.int64)
        for lane, ws in zip(lay.lanes, words):
            c = lane.columns
            keep = ~c["dummy"]
            v = np.asarray(ws, dtype=np.int64)[c["waddr"][keep]]
            inp, src, dst = c["src_input"][keep], c["src"][keep], c["neuron"][keep]
            W_in[src[inp], dst[inp]] = v[inp]
            W_ss[src[~inp], dst[~inp]] = v[~inp]
            W_ss[dst[~inp], src[~inp]] = v[~inp]
        return W_in, W_ss

    def lane_biases(self, b: torch.Tensor) -> list[list[int]]:
        return [[int(b[i]) for i in lane.neurons] for lane in self.layout.lanes]

    @classmethod
    def from_design(cls, design_dir) -> "CoreParams":
        """Rebuild the parameters of a generated design from its manifest and topology."""
        from eqprop.model.config import LEGACY_NUDGE
        from eqprop.model.numerics import NumericsError, numerics_from_mapping
        from eqprop.model.topology import TopologyError

        d = Path(design_dir)
        man = load_manifest(d)
        dyn = man["dynamics"]
        if not (d / "topology.npz").is_file():
            raise DesignError(f"{d / 'topology.npz'}: no such file (the design's network); {REGENERATE}")
        try:
            topo = Topology.load(d / "topology.npz")
        except TopologyError as e:
            raise DesignError(f"{d / 'topology.npz'}: {e}") from None
        if list(topo.sizes) != list(man["topology"]["sizes"]):
            raise DesignError(f"{d / 'topology.npz'}: sizes {list(topo.sizes)}, but {d / 'manifest.json'} says "
                              f"{man['topology']['sizes']}; {REGENERATE}")
        check_layout_version(d, man)
        rule = dyn.get("settle")  # absent: a design made before the settle rule (off)
        try:
            return cls(topo, numerics_from_mapping(man["numerics"]), dyn["eps"],
                       dyn["beta"], dyn.get("onchip_rates", dyn["rates"]), man["lanes"]["P"], dyn["n_free"], dyn["n_nudged"],
                       dyn.get("nudge", LEGACY_NUDGE), settle_from_dict(rule),
                       man["lanes"].get("weight_init", "verilog"))
        except (NumericsError, ValueError, TypeError, KeyError) as e:
            raise DesignError(f"{d / 'manifest.json'}: cannot rebuild the design from it ({e}); {REGENERATE}") \
                from None

    def to_dict(self) -> dict:
        return {
            "sizes": list(self.topology.sizes), "kind": self.topology.kind, "P": self.P,
            "n_free": self.n_free, "n_nudged": self.n_nudged, "eps": self.eps, "beta": self.beta,
            "nudge": self.nudge, "settle": settle_to_dict(self.settle),
            "rates": list(self.rates), "numerics": self.num.to_dict(), "weight_init": self.weight_init,
        }

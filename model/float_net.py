"""Float (PyTorch) EqProp network: the golden model of the flow.

The network is a continuous Hopfield network over a ``Topology`` (layer
sizes plus a symmetric connection mask). Its state minimiser is the
discretised eq. (5) of the paper,

    s <- clip(s - eps * dF/ds, 0, 1),                          (eq. 5, Euler)
    dF/ds_i = s_i - rho'(s_i) (sum_j W_ij rho(u_j)) - b_i  (+ 2 beta (y_i - y_d,i))

with the inputs x clamped; the learning rule is eqs. (7) and (8) averaged over
the batch. ``energy.py`` holds F itself; the tests check ``step`` against
autograd of F.

Where the weakly-clamped phase's nudge enters is the ``nudge`` option
(docs/numerics.md §4):

* ``eq5``: as above, the cost gradient in the same step as the energy
  gradient (a plain Euler step of eq. 5 on F = E + beta C);
* ``after-step``: what the paper's own code does (section 3's
  implementation): the energy step first, s_mid = s - eps dE/ds (not
  clipped), then the output neurons move from s_mid towards the target,
  y <- y_mid + 2 eps beta (y_d - y_mid), then the clip to [0, 1]. With
  eps = 0.5 and beta = +1 this sets the outputs to the target exactly.
  It is an Euler step on E followed by one on beta C taken at s_mid.

Layout for speed: only the non-input neurons s are iterated. Parameters are
kept as ``W_in`` (inputs x non-inputs), ``W_ss`` (non-inputs x non-inputs,
symmetric) and ``b`` (non-inputs; an input's bias never acts, since inputs are
clamped and eq. (8) gives them a zero correction). The inputs' drive
rho(x) W_in is computed once per batch. When the non-input block is mostly
empty (a layered network), the step multiplies only the layer-pair blocks
that hold connections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import NUDGES
from .energy import rho, rho_prime
from .settle import SettleRule, relax_until_settled
from .topology import Topology


def check_nudge(nudge: str) -> str:
    if nudge not in NUDGES:
        raise ValueError(f"nudge: {nudge!r} is not one of {', '.join(NUDGES)}")
    return nudge


# Use the block-sparse product when the non-empty layer-pair blocks cover less
# than this fraction of the dense non-input block.
_BLOCK_SPARSE_BELOW = 0.6


def layer_pair_rate(rates: list[float], a: int, b: int) -> float:
    """Learning rate of a connection between layers a and b (0 = input).

    Section 3.1: alpha_i is the rate of the weights between layers i and i+1
    (1-based) and of the biases of layer i+1. Generalised to any pair, a
    connection takes the rate of its layer nearer the output: alpha_{max(a,b)}
    in 0-based terms rates[max(a, b) - 1], so an intralayer connection in
    layer l and a layer-skipping connection ending in layer l share the rate
    of layer l's biases. One global rate is a list of one value.
    """
    if len(rates) == 1:
        return rates[0]
    return rates[max(a, b) - 1]


def plan_blocks(mask_ss: torch.Tensor, s_slices: list[slice]) -> tuple[list, bool]:
    """Layer-pair blocks of the non-input mask that hold connections, and whether
    multiplying only those beats one dense product (a layered network)."""
    pairs, area = [], 0
    for sa in s_slices:
        for sb in s_slices:
            if mask_ss[sa, sb].any():
                pairs.append((sa, sb))
                area += (sa.stop - sa.start) * (sb.stop - sb.start)
    return pairs, area < _BLOCK_SPARSE_BELOW * mask_ss.shape[0] ** 2


def full_matrix(W_in: torch.Tensor, W_ss: torch.Tensor, dtype=None) -> torch.Tensor:
    """The full symmetric (N, N) matrix of eq. (2) from its input block W_in (inputs x
    non-inputs) and non-input block W_ss; ``dtype`` default W_in's."""
    n_in, n_s = W_in.shape
    W = torch.zeros(n_in + n_s, n_in + n_s, dtype=dtype or W_in.dtype, device=W_in.device)
    W[:n_in, n_in:] = W_in
    W[n_in:, :n_in] = W_in.T
    W[n_in:, n_in:] = W_ss
    return W


@dataclass
class UpdateStats:
    """What one update did, per adjacent layer pair (fixed model: with its counters)."""

    rms: list  # RMS of the applied change over the pair's connections
    zero: list | None = None  # connections with D != 0 whose correction rounded to 0
    nonzero_d: list | None = None  # connections with D != 0
    weight_saturations: int = 0  # weight updates clipped by the stored format
    bias_saturations: int = 0


@dataclass
class Correction:
    """Eqs. (7)-(8) averaged over a batch, already masked."""

    W_in: torch.Tensor
    W_ss: torch.Tensor
    b: torch.Tensor


class FloatNetwork:
    def __init__(self, topology: Topology, dtype=torch.float32, device="cpu", nudge: str = "eq5"):
        topology.validate()
        self.topology = topology
        self.nudge = check_nudge(nudge)
        self.dtype = dtype
        self.device = torch.device(device)
        sizes = topology.sizes
        self.n_in, self.n_out = sizes[0], sizes[-1]
        self.n_s = topology.n - self.n_in
        mask = torch.from_numpy(topology.mask)
        kw = dict(dtype=dtype, device=self.device)
        self.mask_in = mask[: self.n_in, self.n_in :].to(**kw)
        self.mask_ss = mask[self.n_in :, self.n_in :].to(**kw)
        self.W_in = torch.zeros(self.n_in, self.n_s, **kw)
        self.W_ss = torch.zeros(self.n_s, self.n_s, **kw)
        self.b = torch.zeros(self.n_s, **kw)
        # Slices of each non-input layer inside s (layer 1 .. L-1).
        off = [o - self.n_in for o in topology.offsets]
        self.s_slices = [slice(off[l], off[l + 1]) for l in range(1, len(sizes))]
        self.out = self.s_slices[-1]
        self._plan_blocks()

    # ------------------------------------------------------------------ setup
    def _plan_blocks(self):
        self._block_pairs, self.block_sparse = plan_blocks(self.mask_ss, self.s_slices)
        self._blocks = None

    def _refresh_blocks(self):
        if self.block_sparse:
            self._blocks = [(sa, sb, self.W_ss[sa, sb].contiguous()) for sa, sb in self._block_pairs]

    def init_params(self, seed: int, adjacent="glorot", other: float = 0.05, bias: float = 0.0):
        """Glorot-uniform adjacent-layer weights, U[-other, other] elsewhere, biases = bias.

        ``adjacent`` is "glorot" (U[-a, a], a = sqrt(6 / (n_l + n_l+1)), Glorot
        & Bengio 2010, as sections 3.1 and 3.3) or a number a for U[-a, a].
        """
        topo = self.topology
        gen = torch.Generator().manual_seed(int(seed))
        n = topo.n
        u = torch.rand(n, n, generator=gen, dtype=torch.float64) * 2.0 - 1.0
        u = torch.triu(u, diagonal=1)
        u = u + u.T
        scale = torch.full((n, n), float(other), dtype=torch.float64)
        sl = topo.slices
        for l in range(len(topo.sizes) - 1):
            if adjacent == "glorot":
                a = math.sqrt(6.0 / (topo.sizes[l] + topo.sizes[l + 1]))
            else:
                a = float(adjacent)
            scale[sl[l], sl[l + 1]] = a
            scale[sl[l + 1], sl[l]] = a
        W = u * scale * torch.from_numpy(topo.mask).to(torch.float64)
        self.set_full(W, torch.full((n,), float(bias), dtype=torch.float64))
        return self

    def set_full(self, W: torch.Tensor, b: torch.Tensor):
        """Load parameters from a full (N, N) weight matrix and (N,) biases."""
        kw = dict(dtype=self.dtype, device=self.device)
        W = W.to(**kw)
        self.W_in = W[: self.n_in, self.n_in :].contiguous() * self.mask_in
        self.W_ss = W[self.n_in :, self.n_in :].contiguous() * self.mask_ss
        self.b = b.to(**kw)[self.n_in :].clone()
        self._refresh_blocks()

    def full(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The full symmetric (N, N) W and (N,) b of eq. (2) (input biases 0)."""
        n = self.topology.n
        W = full_matrix(self.W_in, self.W_ss)
        b = torch.zeros(n, dtype=self.dtype, device=self.device)
        b[self.n_in :] = self.b
        return W, b

    def state_dict(self) -> dict:
        return {"W_in": self.W_in.cpu(), "W_ss": self.W_ss.cpu(), "b": self.b.cpu()}

    def load_state_dict(self, d: dict):
        kw = dict(dtype=self.dtype, device=self.device)
        self.W_in, self.W_ss, self.b = d["W_in"].to(**kw), d["W_ss"].to(**kw), d["b"].to(**kw)
        self._refresh_blocks()

    # ------------------------------------------------------------- dynamics
    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """rho(x) W_in: the clamped inputs' contribution, once per batch."""
        return rho(x.to(self.dtype)) @ self.W_in

    def feedback(self, s: torch.Tensor) -> torch.Tensor:
        """sum_j W_ij rho(s_j) over non-input j, for every non-input i."""
        r = rho(s)
        if not self.block_sparse:
            return r @ self.W_ss
        h = torch.zeros_like(s)
        for sa, sb, Wab in self._blocks:
            h[:, sb] += r[:, sa] @ Wab
        return h

    def grad(self, s, drive, beta: float = 0.0, target=None) -> torch.Tensor:
        """dF/ds (eqs. 2-4) at non-input state s, inputs' drive precomputed."""
        g = s - rho_prime(s) * (self.feedback(s) + drive) - self.b
        if beta != 0.0:
            g[:, self.out] += 2.0 * beta * (s[:, self.out] - target)
        return g

    def step(self, s, drive, eps: float, beta: float = 0.0, target=None) -> torch.Tensor:
        """One Euler step of eq. (5), clipped to [0, 1]; synchronous update.

        ``nudge = after-step``: the energy step first, then the outputs move
        from that result by 2 eps beta (y_d - y_mid), then the clip (§4)."""
        if beta == 0.0 or self.nudge == "eq5":
            return (s - eps * self.grad(s, drive, beta, target)).clamp_(0.0, 1.0)
        mid = s - eps * self.grad(s, drive)
        mid[:, self.out] += 2.0 * eps * beta * (target - mid[:, self.out])
        return mid.clamp_(0.0, 1.0)

    def relax(self, s, drive, steps: int, eps: float, beta: float = 0.0, target=None, event_base=None,
              settle: SettleRule | None = None):
        """Free phase (beta = 0) or weakly-clamped phase (beta != 0): ``steps`` steps of eq. (5).
        ``settle``: end each example's free phase when it has settled (max |s_t+1 - s_t|
        <= settle.tol for settle.steps steps, docs/numerics.md §4a); ``self.last_steps``
        holds each example's step count afterwards.

        Hot path: once s lies in [0, 1] (after any step, since each step clips),
        rho(s) = s and rho'(s) = 1, so a step is
            h = (1 - eps) s + eps (W_ss s + rho(x) W_in + b)
            s <- clip(h - 2 eps beta (y - y_d))          (nudge = eq5)
            s <- clip(h + 2 eps beta (y_d - h_y))        (nudge = after-step, outputs only)
        computed with one fused multiply-add per layer block. It is ``step``
        with its terms reordered (equal up to float rounding; tested).
        """
        if settle is not None and beta != 0.0:
            raise ValueError("settle: the weakly-clamped phase keeps its fixed step count (docs/numerics.md §4a)")
        if target is not None:
            target = target.to(self.dtype)
        # The first step is the plain one while s is outside [0, 1] (not yet clipped).
        plain = steps > 0 and not bool(((s >= 0) & (s <= 1)).all())
        base = drive + self.b
        if settle is not None:
            def one(t, s_, d_, base_):
                if t == 0 and plain:
                    return self.step(s_, d_, eps)
                return self._fused_step(s_, base_, eps, 0.0, None)

            s, self.last_steps = relax_until_settled(one, s, [drive, base], steps, settle)
            return s
        self.last_steps = torch.full((s.shape[0],), max(steps, 0), dtype=torch.int64)
        if plain:
            s = self.step(s, drive, eps, beta, target)
            steps -= 1
        for _ in range(steps):
            s = self._fused_step(s, base, eps, beta, target)
        return s

    def _fused_step(self, s, base, eps: float, beta: float, target):
        """One step of the hot path (``relax``): base = rho(x) W_in + b."""
        h = self._affine(s, base)
        h.mul_(eps).add_(s, alpha=1.0 - eps)
        if beta != 0.0:
            o = self.out
            if self.nudge == "after-step":
                h[:, o].add_(target - h[:, o], alpha=2.0 * eps * beta)
            else:
                h[:, o].add_(s[:, o] - target, alpha=-2.0 * eps * beta)
        return h.clamp_(0.0, 1.0)

    def _affine(self, s, base):
        """base + s W_ss for s in [0, 1] (rho(s) = s), dense or by layer blocks."""
        if not self.block_sparse:
            return torch.addmm(base, s, self.W_ss)
        h = base.clone()
        for sa, sb, Wab in self._blocks:
            h[:, sb].addmm_(s[:, sa], Wab)
        return h

    def prepare_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype)

    def prepare_targets(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, self.dtype)

    def states_float(self, s: torch.Tensor) -> torch.Tensor:
        return s

    def zero_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.n_s, dtype=self.dtype, device=self.device)

    def outputs(self, s: torch.Tensor) -> torch.Tensor:
        return s[:, self.out]

    # ------------------------------------------------------------- learning
    def correction(self, x, s_free, s_nudged, beta: float) -> Correction:
        """Eqs. (7) and (8), averaged over the batch and masked.

        Delta W_ij = (rho(u_i^b) rho(u_j^b) - rho(u_i^0) rho(u_j^0)) / beta, as
        (N, B) @ (B, N) products; the input rows use rho(x), which is the same
        in both phases.
        """
        B = x.shape[0]
        k = 1.0 / (beta * B)
        rx = rho(x.to(self.dtype))
        r0, rb = rho(s_free), rho(s_nudged)
        d = rb - r0
        W_in = (rx.T @ d) * k * self.mask_in
        W_ss = (rb.T @ rb - r0.T @ r0) * k * self.mask_ss
        b = d.sum(0) * k
        return Correction(W_in, W_ss, b)

    def learning_rates(self, rates: list[float]) -> Correction:
        """Per-connection rates alpha (masked) from a global or per-layer list."""
        sizes = self.topology.sizes
        L = len(sizes)
        if len(rates) not in (1, L - 1):
            raise ValueError(f"lr: {len(rates)} rates given, need 1 or {L - 1} for {L} layers")
        kw = dict(dtype=self.dtype, device=self.device)
        lr_in = torch.zeros(self.n_in, self.n_s, **kw)
        lr_ss = torch.zeros(self.n_s, self.n_s, **kw)
        lr_b = torch.zeros(self.n_s, **kw)
        for b_, sb in enumerate(self.s_slices, start=1):
            lr_in[:, sb] = layer_pair_rate(rates, 0, b_)
            lr_b[sb] = layer_pair_rate(rates, b_, b_)
            for a_, sa in enumerate(self.s_slices, start=1):
                lr_ss[sa, sb] = layer_pair_rate(rates, a_, b_)
        return Correction(lr_in * self.mask_in, lr_ss * self.mask_ss, lr_b)

    def apply(self, corr: Correction, lr: Correction) -> Correction:
        """W <- W + alpha Delta W, b <- b + alpha Delta b; returns the applied changes."""
        applied = Correction(lr.W_in * corr.W_in, lr.W_ss * corr.W_ss, lr.b * corr.b)
        self.W_in += applied.W_in
        self.W_ss += applied.W_ss
        self.b += applied.b
        self._refresh_blocks()
        return applied

    def set_rates(self, rates: list[float]):
        self._lr = self.learning_rates(rates)

    def learn(self, x, s_free, s_nudged, beta: float, update_index: int = 0) -> "UpdateStats":
        """Eqs. (7)-(8) and W += alpha Delta W (rates from set_rates); statistics of the change."""
        applied = self.apply(self.correction(x, s_free, s_nudged, beta), self._lr)
        return UpdateStats(rms=self.adjacent_rms(applied))

    def adjacent_rms(self, applied: Correction) -> list[float]:
        """RMS of the applied change over each adjacent layer pair's connections."""
        out = []
        sl = self.s_slices
        blocks = [(applied.W_in[:, sl[0]], self.mask_in[:, sl[0]])]
        for l in range(len(sl) - 1):
            blocks.append((applied.W_ss[sl[l], sl[l + 1]], self.mask_ss[sl[l], sl[l + 1]]))
        for vals, m in blocks:
            cnt = float(m.sum())
            v = vals.double()
            out.append(math.sqrt(float((v * v).sum()) / cnt) if cnt else 0.0)
        return out

    def is_finite(self) -> bool:
        return bool(
            torch.isfinite(self.W_in).all() and torch.isfinite(self.W_ss).all() and torch.isfinite(self.b).all()
        )

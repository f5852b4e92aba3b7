"""Bit-accurate fixed-point EqProp network (docs/numerics.md, the RTL's contract).

Every value is a raw integer (int64 tensors) in the format that
``numerics.Numerics`` gives it. Matrix products are done as float64 GEMMs of
integers, split into chunks where needed so that every partial sum stays
below 2^53 and is therefore exact (§7); everything else is integer
arithmetic. The free and weakly-clamped phases follow §4, the update §6, the
random events §5. ``golden.py`` computes the same thing element by element
with fxpmath, and the tests hold the two equal bit for bit.
"""

from __future__ import annotations

import math

import torch

from .float_net import UpdateStats, check_nudge, full_matrix, layer_pair_rate, plan_blocks
from .numerics import (
    Format,
    Numerics,
    NumericsError,
    check_config,
    make_multiplier,
    random_words,
    shift_round,
)
from .settle import SettleRule, relax_until_settled
from .topology import Topology

I64 = torch.int64
F64 = torch.float64


def _bits_unsigned(max_abs: int) -> int:
    return max(int(max_abs).bit_length(), 1)


def exact_matmul(a: torch.Tensor, b: torch.Tensor, a_max: int, b_bits: int, b_f64=None) -> torch.Tensor:
    """a @ b for integer tensors, exactly (§7).

    a: (B, K) int64 with 0 <= a <= a_max (states or inputs); b: (K, N) int64
    signed with |b| < 2^(b_bits-1). Splits b into chunks of c bits so that
    K * a_max * 2^c < 2^53, multiplies each chunk as float64 and recombines.
    ``b_f64``: b already converted to float64 (the hot path caches it).
    """
    K = a.shape[1]
    head = _bits_unsigned(a_max) + math.ceil(math.log2(max(K, 2)))
    c = 53 - head - 1
    if c < 2:
        raise NumericsError(f"state: products of fan-in {K} cannot be made exact in float64")
    if b_f64 is not None and b_f64.dtype == torch.float32:
        # The caller proved every partial sum below 2^24 (FixedNetwork._refresh): exact in float32.
        return torch.round(a.to(torch.float32) @ b_f64).to(I64)
    af = a.to(F64)
    if b_bits <= c + 1:
        return torch.round(af @ (b.to(F64) if b_f64 is None else b_f64)).to(I64)
    out = torch.zeros(a.shape[0], b.shape[1], dtype=I64, device=a.device)
    shift = 0
    rest = b
    while True:
        if (rest.abs().max() if rest.numel() else 0) < (1 << c):
            out += torch.round(af @ rest.to(F64)).to(I64) << shift
            return out
        low = rest & ((1 << c) - 1)
        out += torch.round(af @ low.to(F64)).to(I64) << shift
        rest = rest >> c
        shift += c


class FixedNetwork:
    """The fixed-point twin of FloatNetwork, with the same training interface."""

    is_fixed = True

    def __init__(self, topology: Topology, num: Numerics, eps: float, beta: float, batch_size: int,
                 rates: list[float], device="cpu", nudge: str = "eq5"):
        topology.validate()
        self.topology = topology
        self.num = num
        try:
            self.nudge = check_nudge(nudge)
        except ValueError as e:
            raise NumericsError(str(e)) from None
        self.device = torch.device(device)
        sizes = topology.sizes
        self.n_in, self.n_out = sizes[0], sizes[-1]
        self.n_s = topology.n - self.n_in
        mask = torch.from_numpy(topology.mask)
        self.fan_in = int(mask.sum(0).max())
        d = check_config(num, self.fan_in, eps, beta, batch_size)
        self.eps, self.k = eps, d["eps_shift"]
        self.beta_abs, self.m = abs(beta), d["beta_exp"]
        self.g = 1 + self.m - self.k  # 2 eps |beta| = 2^g: the after-step nudge's shift (§4)
        self.batch_size = batch_size
        self.acc_fmt = num.acc_format(self.fan_in)
        self.mask_in = mask[: self.n_in, self.n_in :].to(self.device)
        self.mask_ss = mask[self.n_in :, self.n_in :].to(self.device)
        off = [o - self.n_in for o in topology.offsets]
        self.s_slices = [slice(off[l], off[l + 1]) for l in range(1, len(sizes))]
        self.out = self.s_slices[-1]
        self._block_pairs, self.block_sparse = plan_blocks(self.mask_ss, self.s_slices)
        self.W_in = torch.zeros(self.n_in, self.n_s, dtype=I64, device=self.device)  # store format
        self.W_ss = torch.zeros(self.n_s, self.n_s, dtype=I64, device=self.device)
        self.b = torch.zeros(self.n_s, dtype=I64, device=self.device)
        self.set_rates(rates)
        self._events()
        self._refresh()

    # ------------------------------------------------------------- shifts (§1, §2, §4, §6)
    # The one home of the shift amounts and multipliers the contract derives from the formats,
    # eps, beta and the rates; the RTL's CoreParams reads them from here.
    @property
    def mac_shift(self) -> int:
        """§1: bits the MAC weight drops from the stored weight, fWs - fW."""
        return self.num.weight_store.n_frac - self.num.weight.n_frac

    @property
    def bias_align(self) -> int:
        """§2: the bias's shift to the accumulator's fraction, fa - fB."""
        return self.num.acc_frac - self.num.bias.n_frac

    @property
    def state_align(self) -> int:
        """§4 step 2: the state's shift to the accumulator's fraction, fa - fS."""
        return self.num.acc_frac - self.num.state.n_frac

    @property
    def state_shift(self) -> int:
        """§4 step 5: bits the state rounding drops from V, fa + k - fS (also the target's
        shift to V's fraction in the after-step nudge, step 4)."""
        return self.state_align + self.k

    @property
    def nudge_shift(self) -> int:
        """§4 step 4, eq5: the shift of (s - t) into V, fa - fS + 1 + m."""
        return self.state_align + 1 + self.m

    def weight_shift(self, pair: tuple[int, int]) -> int:
        """§6: bits dropped from sigma D M of a weight of layer pair ``pair``: 2 fS + z - fWs
        (z = Multiplier.E of ``self.mult[pair]``)."""
        return 2 * self.num.state.n_frac + self.mult[pair].E - self.num.weight_store.n_frac

    def bias_shift(self, pair: tuple[int, int]) -> int:
        """§6: bits dropped from sigma D M of a bias of layer ``pair = (l, l)``: fS + z - fB."""
        return self.num.state.n_frac + self.mult[pair].E - self.num.bias.n_frac

    # ------------------------------------------------------------- setup
    def set_rates(self, rates: list[float]):
        """Multipliers c = alpha / (|beta| * batch) per layer pair (§6)."""
        L = len(self.topology.sizes)
        if len(rates) not in (1, L - 1):
            raise NumericsError(f"lr: {len(rates)} rates given, need 1 or {L - 1}")
        self.rates = list(rates)
        n = self.num
        self.mult = {}
        for a in range(L):
            for b_ in range(max(a, 1), L):
                c = layer_pair_rate(rates, a, b_) / (self.beta_abs * self.batch_size)
                self.mult[(a, b_)] = make_multiplier(c, n.lr_mode, n.lr_bits)

    def _events(self):
        """Event index of each connection and bias in one update (§5): a connection's slot
        (``Topology.slots``), a bias n_slots + its non-input index; n_slots + S per update."""
        i, j = self.topology.edges()
        slot, n_slots = self.topology.slots()
        n_in, n = self.n_in, self.topology.n
        pos = torch.full((n, n), -1, dtype=I64)
        idx = torch.from_numpy(slot)
        pos[torch.from_numpy(i), torch.from_numpy(j)] = idx
        pos[torch.from_numpy(j), torch.from_numpy(i)] = idx
        self.ev_in = pos[:n_in, n_in:].contiguous().to(self.device)
        self.ev_ss = pos[n_in:, n_in:].contiguous().to(self.device)
        self.n_slots = n_slots
        self.ev_b = (n_slots + torch.arange(self.n_s, dtype=I64)).to(self.device)
        self.events_per_update = n_slots + self.n_s

    def _refresh(self):
        """MAC weights from stored weights: drop low bits (floor), saturate (§1)."""
        n = self.num
        d = self.mac_shift
        self.Wm_in = (self.W_in >> d).clamp(n.weight.min_raw, n.weight.max_raw)
        self.Wm_ss = (self.W_ss >> d).clamp(n.weight.min_raw, n.weight.max_raw)
        # Float copies for the exact GEMMs of the relaxation (§7). Every partial sum
        # of s @ W, in any order, is bounded by max_i sum_j |w_ij| * max(s): below
        # 2^24 float32 is exact (and twice as fast as float64), else float64.
        bound = int(self.Wm_ss.abs().sum(0).max()) * n.state.one() if self.n_s else 0
        self._Wf_ss = self.Wm_ss.to(torch.float32 if bound < 2**24 else F64)
        if self.block_sparse:
            self._blocks = [(sa, sb, self.Wm_ss[sa, sb].contiguous(), self._Wf_ss[sa, sb].contiguous())
                            for sa, sb in self._block_pairs]

    def load_float(self, W: torch.Tensor, b: torch.Tensor):
        """Quantize a float network's full (N, N) W and (N,) b (nearest-even, saturated)."""
        n = self.num
        Wq = n.weight_store.quantize(W.to(F64), "nearest-even")
        self.W_in = (Wq[: self.n_in, self.n_in :] * self.mask_in).to(self.device)
        self.W_ss = (Wq[self.n_in :, self.n_in :] * self.mask_ss).to(self.device)
        self.b = n.bias.quantize(b.to(F64)[self.n_in :], "nearest-even").to(self.device)
        self._refresh()
        return self

    def init_params(self, seed: int, adjacent="glorot", other: float = 0.05, bias: float = 0.0):
        """The float model's initialisation (same seed, same draws), quantized."""
        from .float_net import FloatNetwork

        f = FloatNetwork(self.topology, dtype=F64).init_params(seed, adjacent, other, bias)
        return self.load_float(*f.full())

    def full_float(self, mac: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored weights (or, with ``mac``, the MAC weights the relaxation multiplies,
        §1) and biases as real numbers, full (N, N) and (N,)."""
        n, N = self.num, self.topology.n
        f, W_in, W_ss = (n.weight, self.Wm_in, self.Wm_ss) if mac else (n.weight_store, self.W_in, self.W_ss)
        W = full_matrix(f.to_float(W_in.cpu()), f.to_float(W_ss.cpu()), F64)
        b = torch.zeros(N, dtype=F64)
        b[self.n_in :] = n.bias.to_float(self.b.cpu())
        return W, b

    def state_dict(self) -> dict:
        return {"W_in": self.W_in.cpu(), "W_ss": self.W_ss.cpu(), "b": self.b.cpu()}

    def load_state_dict(self, d: dict):
        self.W_in, self.W_ss, self.b = (d[k].to(self.device, I64) for k in ("W_in", "W_ss", "b"))
        self._refresh()

    # ------------------------------------------------------------- inputs
    def prepare_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] -> raw state-format integers, nearest-even, saturated (§1)."""
        return self.num.state.quantize(x, "nearest-even").to(self.device)

    def prepare_targets(self, t: torch.Tensor) -> torch.Tensor:
        return (t.to(self.device) > 0.5).to(I64) * self.num.state.one()

    def zero_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.n_s, dtype=I64, device=self.device)

    def outputs(self, s: torch.Tensor) -> torch.Tensor:
        return s[:, self.out]

    def states_float(self, s: torch.Tensor) -> torch.Tensor:
        return self.num.state.to_float(s)

    # ------------------------------------------------------------- dynamics (§4)
    def input_drive(self, xq: torch.Tensor) -> torch.Tensor:
        """sum over inputs of w_ij x_j plus the aligned bias, at the accumulator's fraction."""
        n = self.num
        acc = exact_matmul(xq, self.Wm_in, n.state.max_raw, n.weight.n_word)
        return acc + (self.b << self.bias_align)

    def net_input(self, s: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        """The accumulator: sum_j w_ij s_j + inputs' drive + bias, overflow as configured (§2)."""
        n = self.num
        if self.block_sparse and self._Wf_ss.dtype == torch.float32:
            # All blocks of a target column share its 2^24 bound: accumulate the
            # blocks in float32 (exact) and convert once.
            sf = s.to(torch.float32)
            h = torch.zeros(s.shape[0], self.n_s, dtype=torch.float32, device=s.device)
            for sa, sb, Wab, Wfab in self._blocks:
                h[:, sb].addmm_(sf[:, sa], Wfab)
            acc = drive + torch.round(h).to(I64)
        elif self.block_sparse:
            acc = drive.clone()
            for sa, sb, Wab, Wfab in self._blocks:
                acc[:, sb] += exact_matmul(s[:, sa], Wab, n.state.one(), n.weight.n_word, Wfab)
        else:
            acc = drive + exact_matmul(s, self.Wm_ss, n.state.one(), n.weight.n_word, self._Wf_ss)
        if n.acc_overflow == "wrap":
            acc = self.acc_fmt.wrap(acc)
        elif n.acc_overflow == "saturate":
            acc = acc.clamp(self.acc_fmt.min_raw, self.acc_fmt.max_raw)
        return acc

    def step(self, s, drive, beta_sign: int = 0, target=None, events=None) -> torch.Tensor:
        """One step of §4: V = (s << (fa-fS+k)) + acc - (s << (fa-fS)) [+ nudge]; round; clip."""
        n = self.num
        acc = self.net_input(s, drive)
        s_al = s << self.state_align
        V = (s_al << self.k) + acc - s_al
        if beta_sign and self.nudge == "eq5":
            nudge = (s[:, self.out] - target) << self.nudge_shift
            V[:, self.out] -= nudge if beta_sign > 0 else -nudge
        elif beta_sign:  # after-step: N = (t - V) * 2^g at fraction fa + k, floor for g < 0
            N = (target << self.state_shift) - V[:, self.out]
            N = N << self.g if self.g >= 0 else N >> -self.g
            V[:, self.out] += N if beta_sign > 0 else -N
        words = None
        if n.state_rounding == "stochastic":
            words = random_words(n.seed_state, events)
        out = shift_round(V, self.state_shift, n.state_rounding, words)
        return out.clamp_(0, n.state.one())

    def relax(self, s, drive, steps: int, eps: float = None, beta: float = 0.0, target=None, event_base=None,
              settle: SettleRule | None = None):
        """``steps`` steps of §4 (free phase: beta = 0). ``event_base``: (B,) index of
        each example's first state-rounding event of this phase (§5). ``settle``: end
        each example's free phase when it has settled (§4a; free phase only).
        ``self.last_steps`` holds each example's step count afterwards."""
        if eps is not None and eps != self.eps:
            raise NumericsError(f"eps: the network was built for {self.eps}, not {eps}")
        if beta and abs(beta) != self.beta_abs:
            raise NumericsError(f"beta: the network was built for |beta| = {self.beta_abs}, not {abs(beta)}")
        if settle is not None and beta:
            raise NumericsError("settle: the weakly-clamped phase keeps its fixed step count (§4a)")
        sign = 0 if not beta else (1 if beta > 0 else -1)
        col = None
        if self.num.state_rounding == "stochastic":
            if event_base is None:
                raise NumericsError("state_rounding: stochastic rounding needs the examples' event indices")
            col = event_base.to(self.device)[:, None] + torch.arange(self.n_s, device=self.device)[None, :]
        if settle is not None:
            def one(t, s_, d_, c_):
                return self.step(s_, d_, 0, None, None if c_ is None else c_ + t * self.n_s)

            s, self.last_steps = relax_until_settled(one, s, [drive, col], steps, settle)
            return s
        for t in range(steps):
            ev = None if col is None else col + t * self.n_s
            s = self.step(s, drive, sign, target, ev)
        self.last_steps = torch.full((s.shape[0],), max(steps, 0), dtype=I64)
        return s

    # ------------------------------------------------------------- learning (§6)
    def corrections(self, xq, s0, sb):
        """Exact sums over the batch: D_ij (frac 2 fS), input D (frac 2 fS), D_b (frac fS)."""
        n = self.num
        Bn = s0.shape[0]
        one = n.state.one()
        d = sb - s0
        # rb^T rb - r0^T r0 as exact float64 GEMMs (check_config bounds them below 2^53).
        D_ss = torch.round(sb.T.to(F64) @ sb.to(F64) - s0.T.to(F64) @ s0.to(F64)).to(I64)
        D_in = torch.round(xq.T.to(F64) @ d.to(F64)).to(I64)
        D_b = d.sum(0)
        assert Bn * one * one < 2**53
        return D_in * self.mask_in, D_ss * self.mask_ss, D_b

    def learn(self, xq, s0, sb, beta: float, update_index: int) -> UpdateStats:
        """Eqs. (7)-(8) in fixed point (§6): W_store <- sat(W_store + round(sign(beta) D M 2^-z)),
        z = Multiplier.E."""
        n = self.num
        sign = 1 if beta > 0 else -1
        D_in, D_ss, D_b = self.corrections(xq, s0, sb)
        base = update_index * self.events_per_update
        stoch = n.rounding == "stochastic"
        dW_in = torch.zeros_like(self.W_in)
        dW_ss = torch.zeros_like(self.W_ss)
        db = torch.zeros_like(self.b)
        sl = self.s_slices
        for b_, sb_ in enumerate(sl, start=1):
            blocks = [(dW_in, D_in, self.ev_in, slice(None), sb_, (0, b_))]
            blocks += [(dW_ss, D_ss, self.ev_ss, sa_, sb_, (min(a_, b_), max(a_, b_)))
                       for a_, sa_ in enumerate(sl, start=1)]
            for dst, D, ev, ra, rb, pair in blocks:
                Mu = self.mult[pair]
                words = random_words(n.seed_update, base + ev[ra, rb]) if stoch else None
                dst[ra, rb] = shift_round(sign * D[ra, rb] * Mu.M, self.weight_shift(pair), n.rounding, words)
            Mb = self.mult[(b_, b_)]
            words = random_words(n.seed_update, base + self.ev_b[sb_]) if stoch else None
            db[sb_] = shift_round(sign * D_b[sb_] * Mb.M, self.bias_shift((b_, b_)), n.rounding, words)
        dW_in *= self.mask_in
        dW_ss *= self.mask_ss
        W_in, s1 = n.weight_store.saturate(self.W_in + dW_in)
        W_ss, s2 = n.weight_store.saturate(self.W_ss + dW_ss)
        b, s3 = n.bias.saturate(self.b + db)
        applied_in, applied_ss = W_in - self.W_in, W_ss - self.W_ss
        self.W_in, self.W_ss, self.b = W_in, W_ss, b
        self._refresh()
        # Statistics per adjacent layer pair: RMS of the applied (saturated) change;
        # corrections that rounded to 0 although D != 0 (before saturation, §6).
        rms, zero, nz = [], [], []
        pairs = [(applied_in[:, sl[0]], dW_in[:, sl[0]], D_in[:, sl[0]], self.mask_in[:, sl[0]])]
        for l in range(len(sl) - 1):
            r, c = sl[l], sl[l + 1]
            pairs.append((applied_ss[r, c], dW_ss[r, c], D_ss[r, c], self.mask_ss[r, c]))
        lsb = n.weight_store.lsb
        for app, dW, D, m in pairs:
            cnt = int(m.sum())
            a = app.to(F64) * lsb
            rms.append(math.sqrt(float((a * a).sum()) / cnt) if cnt else 0.0)
            live = (D != 0) & m
            nz.append(int(live.sum()))
            zero.append(int((live & (dW == 0)).sum()))
        # s2 counts both (i, j) and (j, i) of a clipped W_ss entry.
        return UpdateStats(rms, zero, nz, s1 + s2 // 2, s3)

    def saturated_weights(self) -> int:
        """Stored weights at their format's limits (connections counted once)."""
        f = self.num.weight_store
        at = lambda W: ((W == f.min_raw) | (W == f.max_raw))  # noqa: E731
        return int((at(self.W_in) & self.mask_in.bool()).sum()) + int((at(self.W_ss) & self.mask_ss.bool()).sum()) // 2

    def is_finite(self) -> bool:
        return True


def fixed_formats_table(num: Numerics, fan_in: int) -> list[tuple[str, Format]]:
    return [("state", num.state), ("weight", num.weight), ("weight_store", num.weight_store),
            ("bias", num.bias), ("acc", num.acc_format(fan_in))]

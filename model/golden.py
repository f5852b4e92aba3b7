"""Element-by-element golden model of the fixed-point EqProp network (tests only).

Written from ``docs/numerics.md`` alone (section numbers §N refer to it),
independently of the fast vectorised ``fixed_net.py``: every value is an
fxpmath ``Fxp`` scalar, every product and sum is an fxpmath operation,
alignment is a format conversion or a multiplication by a power of two, and
rounding is fxpmath's ``floor`` / ``around`` (= nearest, ties to even).
Stochastic rounding floors with fxpmath and compares the remainder with the
event's 32-bit word of the counter-based hash, written out here on Python ints (§5).

It loops over neurons and connections in Python and is meant for networks of
tens of neurons. All arithmetic must be exact: fxpmath is guarded against
silently losing bits (every Fxp result is checked against the integer it must
hold, and values that fxpmath would convert through float64 are kept below
2^53), and a :class:`GoldenError` is raised otherwise.

Only configuration is shared with the rest of the package (``Numerics``,
``Format``, ``make_multiplier``, ``layer_pair_rate``); no arithmetic helper of
``numerics.py`` or ``fixed_net.py`` is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fxpmath import Fxp

from .float_net import layer_pair_rate
from .numerics import Format, Multiplier, Numerics, make_multiplier
from .topology import Topology

__all__ = ["GoldenError", "GoldenHash", "GoldenStats", "GoldenNetwork", "golden_round", "fx", "raw"]

_MAX_WORD = 63  # keep fxpmath on its int64 path (n_word >= 64 switches to objects)
_FLOAT_EXACT = 1 << 53  # fxpmath converts between fractions through float64


class GoldenError(AssertionError):
    """fxpmath did not compute what the contract asks for (or could not, exactly)."""


def _check(cond: bool, msg: str):
    if not cond:
        raise GoldenError(msg)


# ------------------------------------------------------------ Fxp helpers
def raw(x: Fxp) -> int:
    """The raw integer of a scalar Fxp as a Python int."""
    return int(x.val)


def fx(r: int, n_frac: int, n_word: int | None = None) -> Fxp:
    """A signed scalar Fxp holding raw integer ``r`` at ``n_frac`` fraction bits.

    Every golden value is signed (fxpmath's unsigned subtraction saturates
    at 0), with a word wide enough to hold ``r`` exactly.
    """
    r = int(r)
    need = (r if r >= 0 else -r - 1).bit_length() + 1  # two's complement width
    if n_word is None:
        n_word = max(need, 2)
    _check(need <= n_word <= _MAX_WORD, f"raw {r} does not fit {n_word} (<= {_MAX_WORD}) bits")
    x = Fxp(r, signed=True, n_word=n_word, n_frac=n_frac, raw=True, overflow="saturate")
    _check(raw(x) == r and x.n_frac == n_frac, f"fxpmath stored {raw(x)} for raw {r}")
    return x


def _guard(x: Fxp, expect: int, n_frac: int, what: str) -> Fxp:
    """Check an fxpmath result: exact raw value, expected fraction, no flags."""
    _check(x.n_frac == n_frac, f"{what}: fxpmath gave fraction {x.n_frac}, expected {n_frac}")
    _check(raw(x) == expect, f"{what}: fxpmath gave raw {raw(x)}, exact is {expect}")
    _check(x.n_word <= _MAX_WORD, f"{what}: {x.n_word}-bit result is too wide for the golden model")
    _check(not x.status["overflow"] and not x.status["underflow"], f"{what}: fxpmath overflowed")
    return x


def _mul(a: Fxp, b: Fxp, what="product") -> Fxp:
    p = a * b
    return _guard(p, raw(a) * raw(b), a.n_frac + b.n_frac, what)


def _add(a: Fxp, b: Fxp, what="sum") -> Fxp:
    f = max(a.n_frac, b.n_frac)
    s = a + b
    return _guard(s, (raw(a) << (f - a.n_frac)) + (raw(b) << (f - b.n_frac)), f, what)


def _sub(a: Fxp, b: Fxp, what="difference") -> Fxp:
    f = max(a.n_frac, b.n_frac)
    s = a - b
    return _guard(s, (raw(a) << (f - a.n_frac)) - (raw(b) << (f - b.n_frac)), f, what)


def pow2(e: int) -> Fxp:
    """The constant 2^e as an Fxp (used to align by multiplication)."""
    return fx(1 << e, 0) if e >= 0 else fx(1, -e)


def _realign(x: Fxp, n_frac: int, what="alignment") -> Fxp:
    """The same value at ``n_frac`` fraction bits; must be exact."""
    if n_frac >= x.n_frac:
        # Multiply by 1 written with (n_frac - x.n_frac) fraction bits.
        e = n_frac - x.n_frac
        return _mul(x, fx(1 << e, e), what)
    d = x.n_frac - n_frac
    _check(raw(x) % (1 << d) == 0, f"{what}: raw {raw(x)} is not exact at {n_frac} fraction bits")
    _check(abs(raw(x)) < _FLOAT_EXACT, f"{what}: {raw(x)} too large for fxpmath's float path")
    y = Fxp(x, signed=True, n_word=x.n_word, n_frac=n_frac, rounding="floor", overflow="saturate")
    return _guard(y, raw(x) // (1 << d), n_frac, what)


def _convert(x: Fxp, fmt: Format, rounding: str, overflow: str, what: str) -> tuple[Fxp, bool]:
    """fxpmath conversion of x into ``fmt`` (rounding 'floor'/'around', overflow 'saturate'/'wrap').

    Returns the value (as a signed Fxp, one bit wider than the format) and
    whether the overflow policy changed it. Guarded on Python ints: the
    rounding is within its bounds, and the result is that value saturated or
    wrapped into the format.
    """
    _check(abs(raw(x)) < _FLOAT_EXACT, f"{what}: {raw(x)} too large for fxpmath's float path")
    y = Fxp(x, signed=fmt.signed, n_word=fmt.n_word, n_frac=fmt.n_frac, rounding=rounding, overflow=overflow)
    r = raw(y)
    _check(fmt.min_raw <= r <= fmt.max_raw, f"{what}: {r} outside {fmt}")
    # What the rounding alone would give, before the overflow policy: the same
    # conversion into a word wide enough never to overflow.
    wide = Fxp(x, signed=True, n_word=_MAX_WORD - 1, n_frac=fmt.n_frac, rounding=rounding, overflow="saturate")
    w = raw(wide)
    d = x.n_frac - fmt.n_frac
    if d > 0:  # rounding bounds, checked on Python ints
        lo, v = w << d, raw(x)
        if rounding == "floor":
            _check(lo <= v < lo + (1 << d), f"{what}: fxpmath floor gave {w} for {v} >> {d}")
        else:
            _check(abs(v - lo) <= 1 << (d - 1), f"{what}: fxpmath around gave {w} for {v} / 2^{d}")
    else:
        _check(w == raw(x) << -d, f"{what}: inexact conversion")
    if overflow == "saturate":
        _check(r == min(max(w, fmt.min_raw), fmt.max_raw), f"{what}: fxpmath saturated {w} to {r}")
    else:
        _check((r - w) % (1 << fmt.n_word) == 0, f"{what}: fxpmath wrapped {w} to {r}")
    return fx(r, fmt.n_frac, fmt.n_word + 1), r != w


# ---------------------------------------------------------- random words (§5)
class GoldenHash:
    """The counter-based generator of §5, written out step by step on Python ints."""

    M = 0xFFFFFFFF

    def __init__(self, seed: int):
        _check(0 <= seed <= self.M, f"seed {seed:#x} must be a 32-bit value")
        self.seed = seed

    @classmethod
    def j(cls, a: int) -> int:
        """Bob Jenkins' 32-bit integer hash (all arithmetic mod 2^32)."""
        M = cls.M
        a = ((a + 0x7ED55D16) + (a << 12)) & M
        a = ((a ^ 0xC761C23C) ^ (a >> 19)) & M
        a = ((a + 0x165667B1) + (a << 5)) & M
        a = ((a + 0xD3A2646C) ^ ((a << 9) & M)) & M
        a = ((a + 0xFD7046C5) + (a << 3)) & M
        a = ((a ^ 0xB55A4F09) ^ (a >> 16)) & M
        return a

    @classmethod
    def h(cls, a: int) -> int:
        """H = J applied twice."""
        return cls.j(cls.j(a))

    def word(self, event: int) -> int:
        """Word of event e: H((e mod 2^32) XOR seed)."""
        return self.h((event & self.M) ^ self.seed)


# -------------------------------------------------------------- rounding (§3)
def golden_round(v: Fxp, d: int, mode: str, word: int | None = None) -> Fxp:
    """v (at fraction F) divided by 2^d, read at fraction F - d, rounded as ``mode`` (§3)."""
    F = v.n_frac
    v = fx(raw(v), F)  # the same raw integer in the narrowest signed word
    if d <= 0:
        return _realign(v, F - d, "exact left shift")
    _check(abs(raw(v)) < _FLOAT_EXACT, f"rounding: {raw(v)} too large for fxpmath's float path")
    n_word = min(max(v.n_word, 2), _MAX_WORD)
    fxp_mode = {"floor": "floor", "nearest-even": "around", "stochastic": "floor"}[mode]
    q = Fxp(v, signed=True, n_word=n_word, n_frac=F - d, rounding=fxp_mode, overflow="saturate")
    _check(q.n_frac == F - d and not q.status["overflow"], "rounding: fxpmath overflowed")
    lo, x = raw(q) << d, raw(v)
    if fxp_mode == "floor":
        _check(lo <= x < lo + (1 << d), f"fxpmath floor gave {raw(q)} for {x} >> {d}")
    else:
        _check(abs(x - lo) <= 1 << (d - 1), f"fxpmath around gave {raw(q)} for {x} / 2^{d}")
        if abs(x - lo) == 1 << (d - 1):
            _check(raw(q) % 2 == 0, f"fxpmath around: tie {x} / 2^{d} not rounded to even")
    if mode != "stochastic":
        return fx(raw(q), F - d)
    _check(word is not None and 0 <= word <= 0xFFFFFFFF, "stochastic rounding needs a 32-bit random word")
    rem = raw(_sub(v, q, "remainder"))
    _check(0 <= rem < 1 << d, f"remainder {rem} outside [0, 2^{d})")
    if d <= 32:
        up = (word >> (32 - d)) < rem
    else:
        up = word < (rem >> (d - 32))
    if up:
        return _add(fx(raw(q), F - d), fx(1, F - d), "stochastic round-up")
    return fx(raw(q), F - d)


# --------------------------------------------------------------- the network
@dataclass
class GoldenStats:
    zero: list  # per adjacent layer pair: connections with D != 0 whose dW rounded to 0 (§6)
    nonzero_d: list  # per adjacent layer pair: connections with D != 0
    weight_saturations: int  # weight updates clipped by the store format (connections once)
    bias_saturations: int
    # Per adjacent layer pair: connections with D != 0 whose *applied* change
    # (after saturation) is 0. Differs from ``zero`` only where a weight at its
    # format's limit is pushed further; not the contract's counter.
    zero_applied: list = None


def _pow2_exponent(x: float, key: str) -> int:
    m, e = math.frexp(abs(x))
    if x == 0 or m != 0.5:
        raise GoldenError(f"{key}: {x} is not a power of two")
    return e - 1


class GoldenNetwork:
    """The fixed-point network of docs/numerics.md, one neuron and one connection at a time.

    Neurons are numbered as in the topology (inputs first). Parameters are
    raw integers: full symmetric (N, N) stored weights in ``weight_store``
    format (zero where not connected) and (N,) biases in ``bias`` format (the
    inputs' entries are unused).
    """

    def __init__(self, topology: Topology, num: Numerics, eps: float, beta: float, batch_size: int,
                 rates: list[float], nudge: str = "eq5"):
        self.topology = topology
        self.num = num
        _check(nudge in ("eq5", "after-step"), f"nudge: {nudge!r} is not eq5 or after-step")
        self.nudge = nudge
        self.sizes = list(topology.sizes)
        self.N = sum(self.sizes)
        self.n_in = self.sizes[0]
        self.n_s = self.N - self.n_in
        self.layer = []
        for l, n in enumerate(self.sizes):
            self.layer += [l] * n
        self.out_first = self.N - self.sizes[-1]
        mask = topology.mask
        self.nbrs = [[j for j in range(self.N) if mask[i, j]] for i in range(self.N)]
        ei, ej = topology.edges()
        self.edges = [(int(a), int(b)) for a, b in zip(ei, ej)]
        self.edge_index = {e: c for c, e in enumerate(self.edges)}
        self.slot, self.n_slots = self._slots()
        # eps = 2^-k, |beta| = 2^m (§4)
        self.k = -_pow2_exponent(eps, "eps")
        _check(self.k >= 0, "eps must be <= 1")
        self.beta_abs = abs(beta)
        self.m = _pow2_exponent(beta, "beta")
        self.batch_size = batch_size
        # Formats
        self.fS, self.fW, self.fWs, self.fB = (num.state.n_frac, num.weight.n_frac,
                                               num.weight_store.n_frac, num.bias.n_frac)
        self.fa = self.fW + self.fS
        # Accumulator width (§2), computed here from the text.
        n = max(len(x) for x in self.nbrs)
        bound = n * (1 << (num.weight.n_word - 1)) * ((1 << num.state.n_word) - 1)
        bound += (1 << (num.bias.n_word - 1)) * (1 << (self.fa - self.fB))
        self.acc_exact_bits = bound.bit_length() + 1
        A = num.acc_bits or self.acc_exact_bits
        if A < self.acc_exact_bits and num.acc_overflow == "error":
            raise GoldenError(f"acc: {A} bits < exact {self.acc_exact_bits} with acc_overflow = error")
        self.acc_fmt = Format(True, A, self.fa)
        # Rate multipliers per layer pair (§6)
        self.rates = list(rates)
        self.mult: dict[tuple[int, int], Multiplier] = {}
        L = len(self.sizes)
        for a in range(L):
            for b in range(a, L):
                c = layer_pair_rate(self.rates, a, b) / (self.beta_abs * batch_size)
                self.mult[(a, b)] = make_multiplier(c, num.lr_mode, num.lr_bits)
        self.rng_state = GoldenHash(num.seed_state)
        self.rng_update = GoldenHash(num.seed_update)
        self.W: dict[tuple[int, int], Fxp] = {}  # stored weights, key (i, j) with i < j
        self.b: list[Fxp | None] = [None] * self.N
        self.w: dict[tuple[int, int], Fxp] = {}  # MAC weights
        self.acc_overflows = 0  # accumulator values changed by wrap / saturate (a test statistic)

    def _slots(self) -> tuple[dict[tuple[int, int], int], int]:
        """Each connection's slot, its number in the update's events (§5), from the text:
        the dense blocks in order (for each layer a: (a, a) if a is hidden and has a
        connection inside it, then (a, a + 1)), each the full n_a x n_b rectangle; the
        other connections after them in edge-list order. Returns ({(i, j): slot}, n_slots)."""
        sizes, L = self.sizes, len(self.sizes)
        first = [sum(sizes[:l]) for l in range(L)]
        intra = {self.layer[i] for (i, j) in self.edges if self.layer[i] == self.layer[j]}
        base, nxt = {}, 0
        for a in range(L):
            if 0 < a < L - 1 and a in intra:
                base[(a, a)] = nxt
                nxt += sizes[a] * sizes[a]
            if a + 1 < L:
                base[(a, a + 1)] = nxt
                nxt += sizes[a] * sizes[a + 1]
        slot = {}
        for (i, j) in self.edges:
            a, b = self.layer[i], self.layer[j]
            if (a, b) in base:
                slot[(i, j)] = base[(a, b)] + (i - first[a]) * sizes[b] + (j - first[b])
            else:
                slot[(i, j)] = nxt
                nxt += 1
        return slot, nxt

    # ------------------------------------------------------------ parameters
    @classmethod
    def from_fixed_params(cls, topology, num, eps, beta, batch_size, rates, W_full_raw, b_full_raw,
                          nudge: str = "eq5"):
        g = cls(topology, num, eps, beta, batch_size, rates, nudge)
        g.set_params(W_full_raw, b_full_raw)
        return g

    def set_params(self, W_full_raw, b_full_raw):
        N, mask, num = self.N, self.topology.mask, self.num
        Wr = [[int(W_full_raw[i][j]) for j in range(N)] for i in range(N)]
        for i in range(N):
            for j in range(N):
                _check(Wr[i][j] == Wr[j][i], f"W[{i}][{j}] != W[{j}][{i}]")
                _check(mask[i, j] or Wr[i][j] == 0, f"W[{i}][{j}] = {Wr[i][j]} on a missing connection")
        self.W = {}
        for (i, j) in self.edges:
            r = Wr[i][j]
            _check(num.weight_store.min_raw <= r <= num.weight_store.max_raw, f"W[{i}][{j}] outside the store format")
            self.W[(i, j)] = fx(r, self.fWs, num.weight_store.n_word)
        self.b = [None] * N
        for i in range(self.n_in, N):
            r = int(b_full_raw[i])
            _check(num.bias.min_raw <= r <= num.bias.max_raw, f"b[{i}] outside the bias format")
            self.b[i] = fx(r, self.fB, num.bias.n_word)
        self._derive_mac()

    def _derive_mac(self):
        """§1: MAC weight = the stored weight read at the MAC format: floor, then saturate."""
        self.w = {}
        for e, W in self.W.items():
            self.w[e] = _convert(W, self.num.weight, "floor", "saturate", f"MAC weight {e}")[0]

    def _wt(self, i: int, j: int) -> Fxp:
        return self.w[(i, j) if i < j else (j, i)]

    def weights_raw(self) -> list[list[int]]:
        """Full symmetric (N, N) stored weights (store format raw ints)."""
        out = [[0] * self.N for _ in range(self.N)]
        for (i, j), W in self.W.items():
            out[i][j] = out[j][i] = raw(W)
        return out

    def mac_weights_raw(self) -> list[list[int]]:
        out = [[0] * self.N for _ in range(self.N)]
        for (i, j), w in self.w.items():
            out[i][j] = out[j][i] = raw(w)
        return out

    def biases_raw(self) -> list[int]:
        """(N,) biases (bias format raw ints; 0 for the inputs)."""
        return [0 if b is None else raw(b) for b in self.b]

    def saturated_weights(self) -> int:
        f = self.num.weight_store
        return sum(1 for W in self.W.values() if raw(W) in (f.min_raw, f.max_raw))

    # ------------------------------------------------------------ dynamics (§2, §4)
    def _state(self, r: int) -> Fxp:
        _check(0 <= r <= self.num.state.max_raw, f"state {r} outside {self.num.state}")
        return fx(r, self.fS, self.num.state.n_word + 1)

    def input_part(self, x: list[Fxp]) -> list[Fxp | None]:
        """Per non-input neuron: sum over inputs of w_ij x_j + the bias aligned (exact)."""
        out: list[Fxp | None] = [None] * self.N
        for i in range(self.n_in, self.N):
            acc = _realign(self.b[i], self.fa, "bias alignment")
            for j in self.nbrs[i]:
                if j < self.n_in:
                    acc = _add(acc, _mul(self._wt(i, j), x[j]), "input sum")
            out[i] = acc
        return out

    def accumulator(self, i: int, part: list, s: list) -> Fxp:
        acc = part[i]
        for j in self.nbrs[i]:
            if j >= self.n_in:
                acc = _add(acc, _mul(self._wt(i, j), s[j]), "accumulator")
        _check(acc.n_frac == self.fa, "accumulator fraction")
        mode = self.num.acc_overflow
        if mode in ("wrap", "saturate"):
            acc, changed = _convert(acc, self.acc_fmt, "floor", mode, "accumulator overflow")
            self.acc_overflows += changed
        return acc

    def relax(self, x_raw, s_raw, steps: int, beta_sign: int = 0, target_raw=None, event_base: int | None = None,
              trajectory: bool = False, settle=None):
        """``steps`` steps of §4 for one example; with ``settle`` (a SettleRule, free
        phase only), until the example has settled (§4a). ``self.last_steps``: the
        steps taken.

        x_raw: the n_in raw inputs; s_raw: the n_s raw states (non-input
        neurons); target_raw: the n_out raw targets (weakly-clamped phase);
        event_base: the index of the example's first state-rounding event of
        this phase (§5; needed with stochastic state rounding). Returns the
        final raw states, or the list of states after each step.
        """
        _check(len(x_raw) == self.n_in and len(s_raw) == self.n_s, "relax: wrong input or state length")
        x = [self._state(int(r)) for r in x_raw]
        s = [None] * self.n_in + [self._state(int(r)) for r in s_raw]
        t = None
        if beta_sign:
            _check(target_raw is not None and len(target_raw) == self.sizes[-1], "relax: targets needed")
            t = [self._state(int(r)) for r in target_raw]
        stoch = self.num.state_rounding == "stochastic"
        _check(not stoch or event_base is not None, "relax: stochastic state rounding needs event_base")
        part = self.input_part(x)
        eps = pow2(-self.k)
        # eps * 2 |beta| = 2^(1 + m - k): the weight of (s - t) in V (§4.4), or
        # of (t - V) after the energy step (nudge = after-step, §4.4')
        g = 1 + self.m - self.k
        nudge_c = pow2(g)
        d = self.fa + self.k - self.fS
        zero, one = self._state(0), self._state(1 << self.fS)
        _check(settle is None or not beta_sign, "relax: the weakly-clamped phase has no settle rule (§4a)")
        traj = []
        quiet = 0
        self.last_steps = max(steps, 0)
        for step in range(steps):
            new = [None] * self.N
            for i in range(self.n_in, self.N):
                acc = self.accumulator(i, part, s)
                # V = s + eps (acc - s), at fraction fa + k
                V = _add(s[i], _mul(_sub(acc, s[i]), eps), "V")
                if beta_sign and i >= self.out_first and self.nudge == "eq5":
                    err = _sub(s[i], t[i - self.out_first], "s - t")
                    n = _mul(err, nudge_c, "nudge")
                    V = _sub(V, n) if beta_sign > 0 else _add(V, n)
                V = _realign(V, self.fa + self.k, "V alignment")
                if beta_sign and i >= self.out_first and self.nudge == "after-step":
                    # From the energy step's V: N = (t - V) 2^g, floored to V's fraction.
                    n = _mul(_sub(t[i - self.out_first], V, "t - V"), nudge_c, "nudge")
                    if g < 0:
                        n = golden_round(n, -g, "floor")
                    n = _realign(n, self.fa + self.k, "nudge alignment")
                    V = _add(V, n, "V + nudge") if beta_sign > 0 else _sub(V, n, "V - nudge")
                word = None
                if stoch:
                    word = self.rng_state.word(event_base + step * self.n_s + (i - self.n_in))
                r = golden_round(V, d, self.num.state_rounding, word)
                if r < zero:
                    r = zero
                elif r > one:
                    r = one
                new[i] = self._state(raw(r))
            prev, s = s, new
            if trajectory:
                traj.append([raw(v) for v in s[self.n_in:]])
            if settle is not None:
                # §4a: the largest change of any state in this step, in LSBs.
                change = max((abs(raw(a) - raw(b)) for a, b in zip(s[self.n_in:], prev[self.n_in:])), default=0)
                quiet = quiet + 1 if change <= settle.tol else 0
                if quiet >= settle.steps:
                    self.last_steps = step + 1
                    break
        return traj if trajectory else [raw(v) for v in s[self.n_in:]]

    # ------------------------------------------------------------ update (§6)
    def update(self, examples, beta_sign: int, update_index: int) -> GoldenStats:
        """Eqs. 7-8 for one batch: examples = [(x_raw, s0_raw, sb_raw), ...]."""
        _check(beta_sign in (1, -1), "update: beta_sign must be +1 or -1")
        num = self.num
        ex = []
        for x_raw, s0_raw, sb_raw in examples:
            x = [self._state(int(r)) for r in x_raw]
            s0 = [None] * self.n_in + [self._state(int(r)) for r in s0_raw]
            sb = [None] * self.n_in + [self._state(int(r)) for r in sb_raw]
            ex.append((x, s0, sb))
        n_slots, S = self.n_slots, self.n_s
        base = update_index * (n_slots + S)
        stoch = num.rounding == "stochastic"
        L = len(self.sizes)
        zero, nonzero, zero_applied = [0] * (L - 1), [0] * (L - 1), [0] * (L - 1)
        w_sat = b_sat = 0
        sigma = fx(beta_sign, 0)

        def scaled(D: Fxp, pair, frac_D: int, f_dst: int, event: int) -> Fxp:
            """round(sigma * D * M, d = frac_D + E - f_dst), at f_dst fraction bits."""
            Mu = self.mult[pair]
            Mx = fx(Mu.M, Mu.E) if Mu.E >= 0 else fx(Mu.M << -Mu.E, 0)  # M 2^-E
            P = _mul(_mul(sigma, D, "sigma D"), Mx, "D M")
            F = frac_D + Mu.E
            d = F - f_dst
            if F >= 0:
                P = _realign(P, F, "D M at its fraction")
            else:  # d < 0: an exact left shift
                return _realign(P, f_dst, "D M exact")
            word = self.rng_update.word(event) if stoch else None
            return golden_round(P, d, num.rounding, word)

        newW = {}
        for (i, j) in self.edges:
            D = fx(0, 2 * self.fS)
            for x, s0, sb in ex:
                if i < self.n_in:
                    term = _mul(x[i], _sub(sb[j], s0[j]))
                else:
                    term = _sub(_mul(sb[i], sb[j]), _mul(s0[i], s0[j]))
                D = _add(D, term, "D_ij")
            _check(D.n_frac == 2 * self.fS, "D_ij fraction")
            li, lj = self.layer[i], self.layer[j]
            pair = (min(li, lj), max(li, lj))
            dW = scaled(D, pair, 2 * self.fS, self.fWs, base + self.slot[(i, j)])
            Wn, sat = _convert(_add(self.W[(i, j)], dW, "W + dW"), num.weight_store, "floor", "saturate", "W update")
            w_sat += sat
            newW[(i, j)] = Wn
            if pair[1] == pair[0] + 1 and raw(D) != 0:
                nonzero[pair[0]] += 1
                zero[pair[0]] += raw(dW) == 0
                zero_applied[pair[0]] += raw(Wn) == raw(self.W[(i, j)])
        newb = list(self.b)
        for i in range(self.n_in, self.N):
            D = fx(0, self.fS)
            for x, s0, sb in ex:
                D = _add(D, _sub(sb[i], s0[i]), "D_i")
            l = self.layer[i]
            db = scaled(D, (l, l), self.fS, self.fB, base + n_slots + (i - self.n_in))
            bn, sat = _convert(_add(self.b[i], db, "b + db"), num.bias, "floor", "saturate", "b update")
            b_sat += sat
            newb[i] = bn
        self.W, self.b = newW, newb
        self._derive_mac()
        return GoldenStats(zero, nonzero, w_sat, b_sat, zero_applied)

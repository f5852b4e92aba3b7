"""Fixed-point numerics: formats, rounding, saturation, random words, the rate multipliers.

This module implements ``docs/numerics.md``, the contract that the fixed-point
model (``fixed_net.py``), its element-by-element fxpmath twin (``golden.py``)
and the RTL (``eqprop.hdl``) all follow bit for bit. Section numbers below
(§N) refer to that document.

Formats are written as fxpmath writes them: ``fxp-s8/6`` is signed, 8 bits
in all, 6 of them fractional; ``fxp-u8/7`` unsigned. A value is held as its
raw integer (value = raw * 2^-n_frac) in int64 arrays.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
import torch

ROUNDINGS = ("floor", "nearest-even", "stochastic")
ROUNDING_ALIASES = {"truncate": "floor", "nearest": "nearest-even", "rne": "nearest-even"}
OVERFLOWS = ("error", "wrap", "saturate")
LR_MODES = ("multiplier", "shift")
INT64_SAFE_BITS = 62  # every intermediate stays below 2^62 in magnitude (§7)
FLOAT64_EXACT_BITS = 53  # integer sums below 2^53 are exact in float64 GEMM (§7)


class NumericsError(ValueError):
    """A format or numerics setting that cannot hold the configuration (names the key)."""


# ----------------------------------------------------------------- formats (§1)
_FMT = re.compile(r"^fxp-([su])(\d+)/(-?\d+)$")


@dataclass(frozen=True)
class Format:
    signed: bool
    n_word: int
    n_frac: int

    @classmethod
    def parse(cls, text: str, key: str = "format") -> "Format":
        m = _FMT.match(text.strip())
        if not m:
            raise NumericsError(f"{key}: {text!r} is not a format like fxp-s8/6 or fxp-u8/7")
        f = cls(m.group(1) == "s", int(m.group(2)), int(m.group(3)))
        if f.n_word < 2 or f.n_word > 48:
            raise NumericsError(f"{key}: {text} has {f.n_word} bits; 2 to 48 are supported")
        if f.n_frac < 0 or f.n_frac > f.n_word:
            raise NumericsError(f"{key}: {text} has {f.n_frac} fractional bits of {f.n_word}")
        return f

    def __str__(self) -> str:
        return f"fxp-{'s' if self.signed else 'u'}{self.n_word}/{self.n_frac}"

    @property
    def n_int(self) -> int:
        """Integer bits, sign excluded (fxpmath's n_int)."""
        return self.n_word - self.n_frac - int(self.signed)

    @property
    def min_raw(self) -> int:
        return -(1 << (self.n_word - 1)) if self.signed else 0

    @property
    def max_raw(self) -> int:
        return (1 << (self.n_word - 1)) - 1 if self.signed else (1 << self.n_word) - 1

    @property
    def lsb(self) -> float:
        return 2.0 ** -self.n_frac

    @property
    def range(self) -> tuple[float, float]:
        return self.min_raw * self.lsb, self.max_raw * self.lsb

    def one(self) -> int:
        return 1 << self.n_frac

    def describe(self) -> str:
        lo, hi = self.range
        return f"{self} [{lo:g}, {hi:g}], lsb 2^-{self.n_frac}"

    def fxp(self, value=None, raw: bool = False, rounding: str = "floor"):
        """An fxpmath Fxp object in this format (used by golden.py and for printing)."""
        from fxpmath import Fxp

        return Fxp(
            value, signed=self.signed, n_word=self.n_word, n_frac=self.n_frac, raw=raw,
            rounding={"floor": "floor", "nearest-even": "around"}[rounding], overflow="saturate",
        )

    # -- array helpers on raw integers (torch int64)
    def saturate(self, v: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Clip to the format's range; returns the values and how many were clipped."""
        lo, hi = self.min_raw, self.max_raw
        n = int(((v < lo) | (v > hi)).sum())
        return v.clamp(lo, hi), n

    def wrap(self, v: torch.Tensor) -> torch.Tensor:
        """Two's-complement wrap-around to n_word bits."""
        m = 1 << self.n_word
        w = torch.remainder(v, m)
        if self.signed:
            w = torch.where(w > self.max_raw, w - m, w)
        return w

    def quantize(self, x, rounding: str = "nearest-even") -> torch.Tensor:
        """Real values -> raw integers (rounded as named, saturated). Host-side only."""
        x = torch.as_tensor(x, dtype=torch.float64) * float(1 << self.n_frac)
        if rounding == "nearest-even":
            r = torch.round(x)  # round half to even
        elif rounding == "floor":
            r = torch.floor(x)
        else:
            raise NumericsError(f"rounding: {rounding!r} is not available for quantize")
        return r.clamp(self.min_raw, self.max_raw).to(torch.int64)

    def to_float(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.to(torch.float64) * self.lsb


# ------------------------------------------------------- random words (§5)
RNG_BITS = 32
_M32 = 0xFFFFFFFF
# Bob Jenkins' 32-bit integer hash: six add/xor/shift steps, no multiplier.
# §5 applies it twice: once alone, consecutive event indices give strongly
# correlated consecutive words (tests/test_fixed_golden.py checks the pairs).
JENKINS_STEPS = (
    ("add", 0x7ED55D16, "shl", 12, "add"),
    ("xor", 0xC761C23C, "shr", 19, "xor"),
    ("add", 0x165667B1, "shl", 5, "add"),
    ("add", 0xD3A2646C, "shl", 9, "xor"),
    ("add", 0xFD7046C5, "shl", 3, "add"),
    ("xor", 0xB55A4F09, "shr", 16, "xor"),
)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """H = J(J(x)) of §5 on int64 tensors holding 32-bit values; each of J's six
    steps is x = (x OP1 const) OP2 (x SHIFT n), all mod 2^32. On the CPU the steps
    run in numpy's uint32, whose wrap-around is the mod 2^32 (a quarter of the
    time of the masked int64 steps, which other devices use)."""
    return _hash32_uint32(x) if x.device.type == "cpu" else _hash32_int64(x)


def _hash32_int64(x: torch.Tensor) -> torch.Tensor:
    x = x & _M32
    for op1, const, sh, n, op2 in JENKINS_STEPS + JENKINS_STEPS:
        left = (x + const) if op1 == "add" else (x ^ const)
        right = ((x << n) & _M32) if sh == "shl" else (x >> n)
        x = ((left + right) if op2 == "add" else (left ^ right)) & _M32
    return x


def _hash32_uint32(x: torch.Tensor) -> torch.Tensor:
    a = (x & _M32).numpy().astype(np.uint32)
    for op1, const, sh, n, op2 in JENKINS_STEPS + JENKINS_STEPS:
        left = a + np.uint32(const) if op1 == "add" else a ^ np.uint32(const)
        (np.left_shift if sh == "shl" else np.right_shift)(a, np.uint32(n), out=a)
        (np.add if op2 == "add" else np.bitwise_xor)(left, a, out=a)
    return torch.from_numpy(a.astype(np.int64))


def random_words(seed: int, index: torch.Tensor) -> torch.Tensor:
    """The 32-bit random word of event ``index`` of the stream ``seed`` (§5):
    J(J((index mod 2^32) XOR seed)). Random access: any lane can compute any event."""
    return hash32((index & _M32) ^ (seed & _M32))


# ------------------------------------------------------------- rounding (§3)
def shift_round(v: torch.Tensor, d: int, mode: str, words: torch.Tensor | None = None) -> torch.Tensor:
    """Divide raw integers by 2^d and round as ``mode`` says (§3).

    floor          arithmetic shift right (what dropping low bits does in
                   hardware; toward -inf, unlike fxpmath's 'trunc');
    nearest-even   to nearest, ties to even;
    stochastic     up with probability rem / 2^d, using the event's 32-bit
                   random word R: with d <= 32, r = R >> (32 - d), up iff
                   r < rem; with d > 32, up iff R < rem >> (d - 32).
    d <= 0 is an exact left shift (no rounding; the event index stays reserved,
    so indices never depend on formats).
    """
    if d <= 0:
        return v << (-d)
    q = v >> d
    rem = v - (q << d)
    if mode == "floor":
        return q
    if mode == "nearest-even":
        half = 1 << (d - 1)
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
        return q + up.to(q.dtype)
    if mode == "stochastic":
        if words is None:
            raise ValueError("stochastic rounding needs random words")
        if d <= RNG_BITS:
            up = (words >> (RNG_BITS - d)) < rem
        else:
            up = words < (rem >> (d - RNG_BITS))
        return q + up.to(q.dtype)
    raise ValueError(mode)


# --------------------------------------------------------- rate multipliers (§6)
@dataclass(frozen=True)
class Multiplier:
    """A positive constant c ~ M * 2^-E, M an unsigned integer of lr_bits bits.

    ``E`` is the rate exponent that docs/numerics.md §6 writes ``z`` (there the
    letter E is the paper's energy only)."""

    M: int
    E: int

    @property
    def value(self) -> float:
        return self.M * 2.0 ** -self.E

    def __str__(self) -> str:
        return f"{self.M}*2^-{self.E}" if self.M != 1 else f"2^-{self.E}"


def make_multiplier(c: float, mode: str, bits: int) -> Multiplier:
    """c ~ M * 2^-E as §6 says.

    multiplier: E = bits - 1 - floor(log2 c), M = round(c * 2^E), ties to even
    (Python's round; c * 2^E is exact); if M reaches 2^bits, M is halved and E
    lowered by one, so 2^(bits-1) <= M < 2^bits. shift: M = 1,
    E = round(-log2 c), ties to even. c = 0 (a zero rate): M = 0, E = 0.
    """
    if c <= 0:
        return Multiplier(0, 0)
    if mode == "shift":
        return Multiplier(1, int(round(-math.log2(c))))
    E = bits - 1 - math.floor(math.log2(c))  # M in [2^(bits-1), 2^bits)
    M = int(round(c * 2.0**E))
    if M >= 1 << bits:  # c rounded up to the next power of two
        M //= 2
        E -= 1
    return Multiplier(M, E)


def power_of_two_exponent(x: float, key: str) -> int:
    """k with |x| = 2^k exactly, else NumericsError naming key."""
    if x == 0 or not math.isfinite(x):
        raise NumericsError(f"{key}: {x} is not a power of two")
    m, e = math.frexp(abs(x))
    if m != 0.5:
        raise NumericsError(f"{key}: {x} is not a power of two (the fixed model applies it as a shift)")
    return e - 1


# --------------------------------------------------------------- the contract
@dataclass
class Numerics:
    """Every format and mode of docs/numerics.md; derived widths are properties."""

    state: Format
    weight: Format
    weight_store: Format
    bias: Format
    acc_bits: int = 0  # 0 = exact (sized so that it cannot overflow)
    acc_overflow: str = "error"
    rounding: str = "nearest-even"  # weight and bias updates
    state_rounding: str = "nearest-even"
    weight_overflow: str = "saturate"
    lr_mode: str = "multiplier"
    lr_bits: int = 16
    seed_update: int = 0xACE1
    seed_state: int = 0x5EED
    notes: list = field(default_factory=list)

    @property
    def acc_frac(self) -> int:
        """Fraction bits of the accumulator: exact products w * s (§2)."""
        return self.weight.n_frac + self.state.n_frac

    def acc_exact_bits(self, fan_in: int) -> int:
        """Width of a signed accumulator that cannot overflow for ``fan_in`` (§2).

        |sum| <= fan_in * 2^(wW-1) * (2^wS - 1) + 2^(wB-1) * 2^(fa - fB)
        """
        bound = fan_in * (1 << (self.weight.n_word - 1)) * ((1 << self.state.n_word) - 1)
        bound += (1 << (self.bias.n_word - 1)) << (self.acc_frac - self.bias.n_frac)
        return bound.bit_length() + 1

    def acc_format(self, fan_in: int) -> Format:
        bits = self.acc_bits or self.acc_exact_bits(fan_in)
        return Format(True, bits, self.acc_frac)

    def summary(self, fan_in: int | None = None) -> str:
        lines = [
            f"state        {self.state.describe()}  (rounding {self.state_rounding}, clip to [0, 1])",
            f"weight (MAC) {self.weight.describe()}",
            f"weight store {self.weight_store.describe()}  (overflow {self.weight_overflow})",
            f"bias         {self.bias.describe()}  (overflow {self.weight_overflow})",
            f"updates      rounding {self.rounding}, rates as {self.lr_mode}"
            + (f" ({self.lr_bits}-bit mantissa)" if self.lr_mode == "multiplier" else ""),
        ]
        if fan_in is not None:
            exact = self.acc_exact_bits(fan_in)
            acc = self.acc_format(fan_in)
            lines.append(
                f"accumulator  {acc} (exact needs {exact} bits for fan-in {fan_in}; overflow {self.acc_overflow})"
            )
        if self.rounding == "stochastic" or self.state_rounding == "stochastic":
            lines.append(
                f"random words 32-bit counter-based hash of the event index (docs/numerics.md §5), "
                f"seeds update 0x{self.seed_update:08X}, state 0x{self.seed_state:08X}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "state": str(self.state), "weight": str(self.weight), "weight_store": str(self.weight_store),
            "bias": str(self.bias), "acc": self.acc_bits, "acc_overflow": self.acc_overflow,
            "rounding": self.rounding, "state_rounding": self.state_rounding,
            "weight_overflow": self.weight_overflow, "lr_mode": self.lr_mode, "lr_bits": self.lr_bits,
            "seed_update": self.seed_update, "seed_state": self.seed_state,
        }


def default_format(kind: str, bits: int) -> Format:
    """Format for a bare bit count (§1): state u N/(N-1); weight s N/(N-2); bias s N/(N-3)."""
    if kind == "state":
        return Format(False, bits, bits - 1)
    if kind in ("weight", "weight_store"):
        return Format(True, bits, bits - 2)
    if kind == "bias":
        return Format(True, bits, bits - 3)
    raise KeyError(kind)


FIXED_KEYS = (
    "state", "weight", "weight_store", "bias", "acc", "acc_overflow", "rounding", "state_rounding",
    "weight_overflow", "lr_mode", "lr_bits", "seed_update", "seed_state",
)


def _fmt(kind: str, v) -> Format:
    if isinstance(v, Format):
        return v
    if isinstance(v, bool):
        raise NumericsError(f"{kind}: expected a bit count or a format like fxp-s8/6, got {v!r}")
    if isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):
        n = int(v)
        if not 2 <= n <= 48:
            raise NumericsError(f"{kind}: {n} bits; 2 to 48 are supported")
        f = default_format(kind, n)
        if f.n_frac < 0:  # bias: fxp-sN/(N-3) needs N >= 3
            d = n - f.n_frac
            raise NumericsError(
                f"{kind}: {n} bits give {f}, a format with {f.n_frac} fraction bits (a bare {kind} count N "
                f"is fxp-{'s' if f.signed else 'u'}N/(N-{d})); give at least {d} bits or a format like fxp-s8/5")
        return f
    if isinstance(v, str):
        return Format.parse(v, kind)
    raise NumericsError(f"{kind}: expected a bit count or a format like fxp-s8/6, got {v!r}")


def _choice(key, v, choices, aliases=None):
    v = (aliases or {}).get(v, v)
    if v not in choices:
        raise NumericsError(f"{key}: {v!r} is not one of {', '.join(choices)}")
    return v


def _int(key, v, lo, hi):
    if isinstance(v, str):
        try:
            v = int(v, 0)
        except ValueError:
            raise NumericsError(f"{key}: cannot parse {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise NumericsError(f"{key}: expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def numerics_from_mapping(values: dict) -> Numerics:
    """Build Numerics from a mapping like {"state": 8, "weight": "fxp-s8/6", ...}."""
    for k in values:
        if k not in FIXED_KEYS:
            raise NumericsError(f"{k}: unknown fixed-point key (known: {', '.join(FIXED_KEYS)})")
    state = _fmt("state", values.get("state", 8))
    weight = _fmt("weight", values.get("weight", 8))
    store = values.get("weight_store")
    weight_store = weight if store is None else _fmt("weight_store", store)
    bias = _fmt("bias", values.get("bias", 12))
    num = Numerics(
        state=state, weight=weight, weight_store=weight_store, bias=bias,
        acc_bits=_int("acc", values.get("acc", 0), 0, 62),
        acc_overflow=_choice("acc_overflow", values.get("acc_overflow", "error"), OVERFLOWS),
        rounding=_choice("rounding", values.get("rounding", "nearest-even"), ROUNDINGS, ROUNDING_ALIASES),
        state_rounding=_choice(
            "state_rounding", values.get("state_rounding", values.get("rounding", "nearest-even")),
            ROUNDINGS, ROUNDING_ALIASES,
        ),
        weight_overflow=_choice("weight_overflow", values.get("weight_overflow", "saturate"), ("saturate",)),
        lr_mode=_choice("lr_mode", values.get("lr_mode", "multiplier"), LR_MODES),
        lr_bits=_int("lr_bits", values.get("lr_bits", 16), 1, 24),
        seed_update=_int("seed_update", values.get("seed_update", 0xACE1), 0, 0xFFFFFFFF),
        seed_state=_int("seed_state", values.get("seed_state", 0x5EED), 0, 0xFFFFFFFF),
    )
    try:
        check_formats(num)
    except NumericsError as e:
        # The bias default is a fixed fxp-s12/9 (§1): say so when narrow states and
        # weights leave the accumulator fewer fraction bits than that.
        if "bias" in values or not str(e).startswith("bias:"):
            raise
        fa = num.acc_frac
        raise NumericsError(
            f"bias: the default {num.bias} (no bias key given) has more fraction bits than the "
            f"accumulator ({fa} = weight + state); give a bias, e.g. bias={fa + 3} (fxp-s{fa + 3}/{fa})"
        ) from None
    return num


def parse_bits(text: str) -> dict:
    """``state=8,weight=fxp-s8/6,acc=24`` -> mapping (the --bits flag)."""
    out = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise NumericsError(f"bits: {item!r} is not KEY=VALUE (e.g. state=8,weight=fxp-s8/6)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def check_formats(num: Numerics):
    """Format-only checks (§1); topology- and rate-dependent ones are in check_config."""
    if num.state.signed:
        raise NumericsError(f"state: {num.state} must be unsigned (states lie in [0, 1])")
    if num.state.max_raw < num.state.one():
        raise NumericsError(f"state: {num.state} cannot represent 1 (needs at least one integer bit)")
    for key in ("weight", "weight_store", "bias"):
        if not getattr(num, key).signed:
            raise NumericsError(f"{key}: {getattr(num, key)} must be signed")
    if num.weight_store.n_frac < num.weight.n_frac:
        raise NumericsError(
            f"weight_store: {num.weight_store} has fewer fraction bits than the MAC weight {num.weight}"
        )
    if num.bias.n_frac > num.acc_frac:
        raise NumericsError(
            f"bias: {num.bias} has more fraction bits than the accumulator ({num.acc_frac} = weight + state)"
        )


def check_config(num: Numerics, fan_in: int, eps: float, beta: float, batch_size: int) -> dict:
    """Checks that need the topology and the dynamics; returns the derived shifts.

    Raises NumericsError naming the key whose value cannot be held.
    """
    k = -power_of_two_exponent(eps, "eps")
    if k < 0:
        raise NumericsError(f"eps: {eps} > 1 is not a right shift")
    m = power_of_two_exponent(beta, "beta")
    fa, fS = num.acc_frac, num.state.n_frac
    if fa - fS + 1 + m < 0:
        raise NumericsError(
            f"beta: {beta} is too small for the accumulator's {fa} fraction bits "
            f"(the nudge of a one-LSB output error would vanish)"
        )
    exact = num.acc_exact_bits(fan_in)
    if num.acc_bits and num.acc_bits < exact and num.acc_overflow == "error":
        raise NumericsError(
            f"acc: {num.acc_bits} bits is too narrow for fan-in {fan_in} (exact needs {exact}); "
            "widen it or set acc_overflow = saturate or wrap"
        )
    acc_w = max(num.acc_bits or exact, exact)
    # The neuron update's widest value: acc + nudge, shifted by k (§4).
    if acc_w + k + 3 + abs(m) > INT64_SAFE_BITS:
        raise NumericsError(f"acc: {acc_w}-bit accumulator with eps = {eps} exceeds 62-bit arithmetic")
    # Exact float64 products (§7): fan_in * 2^(wW-1) * 2^wS < 2^53.
    mac_bits = (num.weight.n_word - 1) + num.state.n_word + math.ceil(math.log2(max(fan_in, 2)))
    # Correction sums (§7): |D| <= batch * (2^wS - 1)^2, a signed D of corr_bits bits;
    # the rule is corr_bits <= 53.
    corr_bits = 2 * num.state.n_word + math.ceil(math.log2(max(batch_size, 2))) + 1
    if corr_bits > FLOAT64_EXACT_BITS:
        raise NumericsError(
            f"state: {num.state} with batch_size {batch_size}: correction sums need {corr_bits} bits (> 53)"
        )
    if corr_bits + num.lr_bits > INT64_SAFE_BITS:
        raise NumericsError(
            f"lr_bits: {num.lr_bits}-bit rate mantissa times {corr_bits}-bit correction sums exceeds 62 bits"
        )
    return {"eps_shift": k, "beta_exp": m, "acc_exact_bits": exact, "mac_bits": mac_bits}

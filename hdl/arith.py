"""Combinational arithmetic of docs/numerics.md, as Amaranth expressions.

Each function returns a Value built from its inputs; the same rounding and
saturation rules as ``eqprop.model.numerics`` (§1-§3), bit for bit.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Mux, Value, signed, unsigned

from eqprop.model.numerics import RNG_BITS, Format


def round_shift(v: Value, d: int, mode: str, word: Value | None = None) -> Value:
    """v / 2^d rounded (§3): floor | nearest-even | stochastic (``word``: the random word's
    top ``len(word)`` bits, at least ``min(d, 32)`` of them; ``RandomWord(seed, bits)``)."""
    q, up = round_parts(v, d, mode, word)
    return q + up if d > 0 and mode != "floor" else q


def round_parts(v: Value, d: int, mode: str, word: Value | None = None) -> tuple[Value, Value]:
    """round_shift(v, d, ...) = q + up: q = floor(v / 2^d) (v << -d for d <= 0) and the
    round-up bit ``up`` (0 for floor), so that a pipeline can register both before the add."""
    if d <= 0:
        return v << (-d), Const(0, 1)
    v = v.as_signed() if not v.shape().signed else v
    q = v >> d  # arithmetic shift: floor
    rem = v[:d]  # the dropped bits, 0 <= rem < 2^d
    if mode == "floor":
        return q, Const(0, 1)
    if mode == "nearest-even":
        half = 1 << (d - 1)
        return q, (rem > half) | ((rem == half) & q[0])
    if mode == "stochastic":
        assert word is not None and len(word) >= min(d, RNG_BITS), (len(word), d)
        return q, stochastic_up(word, stochastic_rem(v, d))
    raise ValueError(mode)


def stochastic_rem(v: Value, d: int) -> Value:
    """The dropped bits of v / 2^d that stochastic rounding (§3) compares with the random
    word: all d of them, or their top ``RNG_BITS`` where d > RNG_BITS."""
    return v[max(0, d - RNG_BITS):d]


def stochastic_up(word: Value, rem: Value) -> Value:
    """Stochastic rounding's round-up bit (§3): the random word's top ``len(rem)`` bits below
    ``rem`` (``stochastic_rem``): up with probability rem / 2^len(rem)."""
    assert len(word) >= len(rem), (len(word), len(rem))
    return word[len(word) - len(rem):] < rem


def saturate(v: Value, fmt: Format) -> Value:
    """Clip v to the format's raw range (§1). A signed ``v`` wider than a signed format is in
    range when its bits from the format's sign bit up are all equal: then it is its own low
    ``n_word`` bits (the result has the format's shape), else the bound of its sign."""
    lo, hi = fmt.min_raw, fmt.max_raw
    n = fmt.n_word
    if fmt.signed and v.shape().signed and len(v) > n:
        top = v[n - 1:]
        inside = (top == 0) | (top == (1 << len(top)) - 1)
        return Mux(inside, v[:n].as_signed(), Mux(v[-1], Const(lo, signed(n)), Const(hi, signed(n))))
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def wrap(v: Value, fmt: Format) -> Value:
    """Two's-complement wrap to the format's width."""
    w = v[: fmt.n_word]
    return w.as_signed() if fmt.signed else w


def naf_digits(c: int) -> list[tuple[int, int]]:
    """The non-adjacent form of c >= 0: (shift, +1 or -1) pairs with c = sum(d << shift),
    no two shifts adjacent (the fewest nonzero signed digits)."""
    assert c >= 0, c
    out, k = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)  # +1 where c = 1 mod 4, -1 where c = 3 mod 4
            out.append((k, d))
            c -= d
        c >>= 1
        k += 1
    return out


def trailing_zeros(c: int, width: int) -> int:
    """t of c = c' 2^t with c' odd (``width`` for c = 0: no bit of x matters mod 2^width)."""
    return min((c & -c).bit_length() - 1, width) if c else width


def const_mul(x: Value, c: int, width: int) -> Value:
    """x * c mod 2^width for a constant c >= 0 as shifts and adds: c = c' 2^t with c' odd,
    x c' mod 2^(width - t) from the NAF digits of c' (the added terms summed as a balanced
    tree, the subtracted ones likewise, then one difference), then t zero bits below. No
    multiplier, so synthesis spends no DSP block on it. Only x's low width - t bits matter
    (``trailing_zeros``): every one of them is read, none above."""
    t = trailing_zeros(c, width)
    w = width - t
    if w == 0:
        return Const(0, width)
    xs = x[:w]

    def total(ks):
        terms = [(xs << k)[:w] for k in ks if k < w]
        if not terms:
            return Const(0, w)
        while len(terms) > 1:
            terms = [(terms[i] + terms[i + 1])[:w] if i + 1 < len(terms) else terms[i]
                     for i in range(0, len(terms), 2)]
        return terms[0]

    digits = naf_digits(c >> t)
    plus, minus = [k for k, d in digits if d > 0], [k for k, d in digits if d < 0]
    odd = (total(plus) - total(minus))[:w] if minus else total(plus)
    return Cat(Const(0, t), odd) if t else odd


def shape_of(fmt: Format):
    return signed(fmt.n_word) if fmt.signed else unsigned(fmt.n_word)

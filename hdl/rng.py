"""The random words of docs/numerics.md §5 in hardware: J(J(index XOR seed)).

J is Bob Jenkins' 32-bit integer hash, six add/xor/shift steps and no
multiplier. ``RandomWord`` registers after each pass of J, so a word appears
``LATENCY`` cycles after its event index.
"""


from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from eqprop.model.numerics import JENKINS_STEPS, RNG_BITS

M32 = 0xFFFFFFFF


def _needed_low(lo: int) -> list[int]:
    """For each step of J, the lowest bit of its result that is needed when only bits
    [lo, 32) of J's output are: an add needs every bit below the highest it gives, a xor and
    a right shift only bits from lo up, a left shift by n bits from lo - n up."""
    out = []
    for op1, _, sh, n, op2 in reversed(JENKINS_STEPS):
        out.append(lo)
        if "add" in (op1, op2):
            lo = 0
        elif sh == "shl":
            lo = max(0, lo - n)
    return out[::-1]


def _bits(x: Value, held: int, lo: int, hi: int) -> Value:
    """Bits [lo, hi) of a 32-bit value of which ``x`` holds bits [held, 32); below bit 0 (a
    left shift's fill) and from bit 32 up (a right shift's) they are zeros."""
    parts = []
    if lo < 0:
        parts.append(Const(0, min(hi, 0) - lo))
        lo = 0
    if lo < min(hi, 32):
        assert lo >= held, (lo, held)
        parts.append(x[lo - held:min(hi, 32) - held])
    if hi > 32:
        parts.append(Const(0, hi - max(lo, 32)))
    return Cat(*parts)


def jenkins(m: Module, x: Value, name: str, lo: int = 0) -> Value:
    """Bits [lo, 32) of one pass of J on a 32-bit value (combinational), in module ``m``. Each
    step's result is a signal ``NAME_1`` ... ``NAME_6`` (both halves of the next step read it:
    as an expression Amaranth would build it twice) holding only the bits of it that the rest
    needs (``_needed_low``), computed from only the bits they need: the shifts are slices."""
    held = 0  # x holds bits [held, 32) of the step's input
    for i, ((op1, const, sh, n, op2), keep) in enumerate(zip(JENKINS_STEPS, _needed_low(lo)), 1):
        step = Signal(32 - keep, name=f"{name}_{i}")
        if op2 == "add":  # every bit of both halves (held is 0)
            left = (x + const)[:32] if op1 == "add" else x ^ const
            right = _bits(x, held, -n, 32 - n) if sh == "shl" else _bits(x, held, n, 32 + n)
            m.d.comb += step.eq((left + right)[keep:32])
        else:  # bitwise: bits [keep, 32) of both halves
            left = (x + const)[keep:32] if op1 == "add" else _bits(x, held, keep, 32) ^ (const >> keep)
            right = _bits(x, held, keep - n, 32 - n) if sh == "shl" else _bits(x, held, keep + n, 32 + n)
            m.d.comb += step.eq(left ^ right)
        x, held = step, keep
    return x


class RandomWord(wiring.Component):
    """word = J(J(index XOR seed)), ``LATENCY`` cycles after ``index`` (docs/numerics.md §5).

    Ports: ``index`` (in, the event number mod 2^32), ``word`` (out, the random word's top
    ``bits`` bits, all 32 by default: a user that rounds away at most ``bits`` bits needs no
    more, ``arith.round_shift``).
    """

    LATENCY = 2

    def __init__(self, seed: int, bits: int = RNG_BITS):
        if int(seed) != seed or not 0 <= seed <= M32:
            raise ValueError(f"seed: {seed!r} is not a 32-bit unsigned integer (docs/numerics.md §5)")
        if int(bits) != bits or not 1 <= bits <= RNG_BITS:
            raise ValueError(f"bits: {bits!r} is not in [1, {RNG_BITS}]")
        self.seed = int(seed)
        self.bits = int(bits)
        super().__init__({"index": In(32), "word": Out(self.bits)})

    def elaborate(self, platform):
        m = Module()
        p1 = Signal(32)
        p2 = Signal(self.bits)
        m.d.sync += p1.eq(jenkins(m, self.index ^ self.seed, "j1"))
        m.d.sync += p2.eq(jenkins(m, p1, "j2", RNG_BITS - self.bits))
        m.d.comb += self.word.eq(p2)
        return m

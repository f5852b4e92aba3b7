"""The random words of docs/numerics.md §5 in hardware: J(J(index XOR seed)).

J is Bob Jenkins' 32-bit integer hash, six add/xor/shift steps and no
multiplier. ``RandomWord`` registers after each pass of J, so a word appears
``LATENCY`` cycles after its event index.
"""


from amaranth.hdl import Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from eqprop.model.numerics import JENKINS_STEPS

M32 = 0xFFFFFFFF


def jenkins(x: Value) -> Value:
    """One pass of J on a 32-bit value (combinational)."""
    for op1, const, sh, n, op2 in JENKINS_STEPS:
        left = (x + const)[:32] if op1 == "add" else (x ^ const)
        right = (x << n)[:32] if sh == "shl" else (x >> n)
        x = (left + right)[:32] if op2 == "add" else (left ^ right)[:32]
    return x


class RandomWord(wiring.Component):
    """word = J(J(index XOR seed)), ``LATENCY`` cycles after ``index`` (docs/numerics.md §5).

    Ports: ``index`` (in, the event number mod 2^32), ``word`` (out, the 32-bit random word).
    """

    LATENCY = 2

    index: In(32)
    word: Out(32)

    def __init__(self, seed: int):
        if int(seed) != seed or not 0 <= seed <= M32:
            raise ValueError(f"seed: {seed!r} is not a 32-bit unsigned integer (docs/numerics.md §5)")
        self.seed = int(seed)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        p1 = Signal(32)
        p2 = Signal(32)
        m.d.sync += p1.eq(jenkins(self.index ^ self.seed))
        m.d.sync += p2.eq(jenkins(p1))
        m.d.comb += self.word.eq(p2)
        return m

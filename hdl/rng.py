"""The random words of docs/numerics.md §5 in hardware: J(J(index XOR seed)).

J is Bob Jenkins' 32-bit integer hash, six add/xor/shift steps and no
multiplier. ``RandomWord`` splits J(J(.)) into ``stages`` pipeline stages (one pass
each by default), so a word appears ``LATENCY`` = ``stages`` cycles after its event index.
"""


from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from eqprop.model.numerics import JENKINS_STEPS, RNG_BITS

M32 = 0xFFFFFFFF


def _needed_low(lo: int, steps=JENKINS_STEPS) -> list[int]:
    """For each of ``steps`` (J's six by default), the lowest bit of its result that is needed
    when only bits [lo, 32) of the last step's result are: an add needs every bit below the
    highest it gives, a xor and a right shift only bits from lo up, a left shift by n bits
    from lo - n up."""
    out = []
    for op1, _, sh, n, op2 in reversed(steps):
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


def _step(m: Module, x: Value, held: int, step: tuple, keep: int, name: str) -> Value:
    """Bits [keep, 32) of one step of J, x = (x OP1 const) OP2 (x SHIFT n), from ``x`` holding
    bits [held, 32) of its input, as a signal ``name`` (both halves read it: as an expression
    Amaranth would build it twice), computed from only the bits it needs: the shifts are
    slices."""
    op1, const, sh, n, op2 = step
    out = Signal(32 - keep, name=name)
    if op2 == "add":  # every bit of both halves (held is 0)
        left = (x + const)[:32] if op1 == "add" else x ^ const
        right = _bits(x, held, -n, 32 - n) if sh == "shl" else _bits(x, held, n, 32 + n)
        m.d.comb += out.eq((left + right)[keep:32])
    else:  # bitwise: bits [keep, 32) of both halves
        left = (x + const)[keep:32] if op1 == "add" else _bits(x, held, keep, 32) ^ (const >> keep)
        right = _bits(x, held, keep - n, 32 - n) if sh == "shl" else _bits(x, held, keep + n, 32 + n)
        m.d.comb += out.eq(left ^ right)
    return out


def jenkins(m: Module, x: Value, name: str, lo: int = 0) -> Value:
    """Bits [lo, 32) of one pass of J on a 32-bit value (combinational), in module ``m``. Each
    step's result is a signal ``NAME_1`` ... ``NAME_6`` holding only the bits of it that the
    rest needs (``_needed_low``)."""
    held = 0  # x holds bits [held, 32) of the step's input
    for i, (step, keep) in enumerate(zip(JENKINS_STEPS, _needed_low(lo)), 1):
        x, held = _step(m, x, held, step, keep, f"{name}_{i}"), keep
    return x


def _step_cost(step: tuple) -> float:
    """A step's delay in a pipeline stage, in 32-bit carry chains (two adds: two chains; an add
    and a xor: a chain and a LUT level; bitwise: a LUT level): what ``stage_splits`` balances."""
    op1, _, _, _, op2 = step
    adds = (op1, op2).count("add")
    return {2: 2.0, 1: 1.5, 0: 0.5}[adds]


def stage_splits(stages: int) -> tuple[int, ...]:
    """The steps of H = J(J(.)) (twelve) after which ``RandomWord`` registers, for ``stages``
    pipeline stages: the contiguous split whose costliest stage (``_step_cost``) is the least,
    of equal ones the first (2 stages: one pass each). The last split is always 12."""
    from itertools import combinations
    cost = [_step_cost(s) for s in JENKINS_STEPS * 2]
    n = len(cost)
    best = None
    for cut in combinations(range(1, n), stages - 1):
        ends = (*cut, n)
        worst = max(sum(cost[a:b]) for a, b in zip((0, *cut), ends))
        if best is None or worst < best[0]:
            best = (worst, ends)
    return best[1]


class RandomWord(wiring.Component):
    """word = J(J(index XOR seed)), ``LATENCY`` cycles after ``index`` (docs/numerics.md §5).

    The twelve steps of J(J(.)) are split into ``stages`` pipeline stages (``stage_splits``:
    the split that balances their carry chains; 2: one pass each, registers ``p1``, ``p2``),
    each ending in a register ``p1`` ... ``pN``: ``LATENCY`` = ``stages``.

    Ports: ``index`` (in, the event number mod 2^32), ``word`` (out, the random word's top
    ``bits`` bits, all 32 by default: a user that rounds away at most ``bits`` bits needs no
    more, ``arith.round_shift``).
    """

    LATENCY = 2  # the default stages

    def __init__(self, seed: int, bits: int = RNG_BITS, stages: int = 2):
        if int(seed) != seed or not 0 <= seed <= M32:
            raise ValueError(f"seed: {seed!r} is not a 32-bit unsigned integer (docs/numerics.md §5)")
        if int(bits) != bits or not 1 <= bits <= RNG_BITS:
            raise ValueError(f"bits: {bits!r} is not in [1, {RNG_BITS}]")
        if int(stages) != stages or not 1 <= stages <= 2 * len(JENKINS_STEPS):
            raise ValueError(f"stages: {stages!r} is not in [1, {2 * len(JENKINS_STEPS)}]")
        self.seed = int(seed)
        self.bits = int(bits)
        self.stages = int(stages)
        self.LATENCY = self.stages
        super().__init__({"index": In(32), "word": Out(self.bits)})

    def elaborate(self, platform):
        m = Module()
        steps = JENKINS_STEPS * 2
        keeps = _needed_low(RNG_BITS - self.bits, steps)
        ends = set(stage_splits(self.stages))
        x, held, k = self.index ^ self.seed, 0, 1
        for i, (step, keep) in enumerate(zip(steps, keeps), 1):
            x, held = _step(m, x, held, step, keep, f"j{(i - 1) // 6 + 1}_{(i - 1) % 6 + 1}"), keep
            if i in ends:  # the stage's register
                r = Signal(32 - keep, name=f"p{k}")
                m.d.sync += r.eq(x)
                x, k = r, k + 1
        m.d.comb += self.word.eq(x)
        return m

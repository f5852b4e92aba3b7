"""The neuron unit: eq. 5's step, the nudge, the state rounding and the clip (§4), and the
settle rule's change detector (§4a)."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arith import round_shift, saturate, wrap
from ..params import CoreParams
from ..rng import RandomWord
from .signatures import check_rounding, loc_bits, neuron_sum_signature, write_signature


def eps_step(p: CoreParams, acc: Value, bias: Value, s: Value, target: Value, nudge: Value,
             beta_neg: Value) -> Value:
    """V of docs/numerics.md §4 steps 1-4, at fraction fa + k (combinational): the bias
    aligned and added to the sum (§2, overflow as configured), V = (s_al << k) + acc - s_al
    (eq. 5 with rho(s) = s), then on an output neuron of the weakly-clamped phase
    (``nudge``) the beta term: ``eq5`` V -= sigma (s - t) << (fa - fS + 1 + m), or
    ``after-step`` V += sigma (T - V) 2^g (floor for g < 0). ``target``: the target bit."""
    num = p.num
    acc_b = acc + (bias << p.bias_align)
    if num.acc_overflow == "wrap":
        acc_b = wrap(acc_b, p.acc_fmt)
    elif num.acc_overflow == "saturate":
        acc_b = saturate(acc_b, p.acc_fmt)
    s_al = s << p.state_align
    V = (s_al << p.k) + acc_b - s_al
    if p.nudge == "eq5":
        nud = (s - Mux(target, p.state.one(), 0)) << p.nudge_shift
        return Mux(nudge, Mux(beta_neg, V + nud, V - nud), V)
    T = Mux(target, Const(1 << (p.fa + p.k), unsigned(p.fa + p.k + 1)), 0)
    dev = T - V
    nud = dev << p.g if p.g >= 0 else dev >> -p.g
    return Mux(nudge, Mux(beta_neg, V - nud, V + nud), V)


class NeuronUnit(wiring.Component):
    """A neuron's new state from its accumulated sum, three stages after ``sum.valid``:

        N0  the neuron's bias, old state and target are read at ``rd_loc``; the random word
            of its state event ``ev_base + idx`` is issued (§5)
        N1  V = eps_step(...) (§4 steps 1-4, eq. 5)
        N2  s' = clip(round(V, fa + k - fS), 0, 1) (§4 step 5, §3), out on ``result``

    Ports: ``sum`` (in, from MacPipeline), ``rd_loc`` (out: the address of the ``bias``,
    ``state`` and ``target`` reads, whose data come back one cycle later), ``nudge`` (in: the
    weakly-clamped phase), ``beta_neg`` (in: sigma = -1), ``ev_base`` (in: the step's first
    state event), ``settle_tol`` (in, §4a), ``clear`` (in: a relaxation step starts),
    ``result`` (out: en, addr = the neuron's local index, data = the new state; the lane adds
    the write buffer's offset), ``moved`` (out, sticky until ``clear``: a new state differs
    from the old one by more than ``settle_tol``, §4a), ``busy`` (out).
    """

    LATENCY = 4  # sum.valid -> the new state is written (result.en three cycles later)

    def __init__(self, params: CoreParams):
        if params.nudge not in ("eq5", "after-step"):
            raise ValueError(f"nudge: {params.nudge!r} is not eq5 or after-step")
        check_rounding("state_rounding", params.num.state_rounding)
        self.p = params
        sw = params.state.n_word
        super().__init__({
            "sum": In(neuron_sum_signature(params)),
            "rd_loc": Out(loc_bits(params)),
            "bias": In(signed(params.num.bias.n_word)), "state": In(sw), "target": In(1),
            "nudge": In(1), "beta_neg": In(1), "ev_base": In(32), "settle_tol": In(sw), "clear": In(1),
            "result": Out(write_signature(loc_bits(params), sw)),
            "moved": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        sw, one = p.state.n_word, p.state.one()
        rng = m.submodules.rng = RandomWord(p.num.seed_state)
        n1, n2 = Signal(), Signal()
        n1_acc = Signal(signed(p.acc_exact_bits))
        n1_loc, n2_loc = Signal(loc_bits(p)), Signal(loc_bits(p))
        n1_out = Signal()
        n2_V = Signal(signed(p.acc_exact_bits + p.k + p.nudge_shift + sw + 4))
        n2_old = Signal(sw)  # the old state (read in N0, in at N1), for the settle rule (§4a)
        moved = Signal()
        res = self.result
        m.d.comb += [self.busy.eq(self.sum.valid | n1 | n2 | res.en), self.rd_loc.eq(self.sum.loc),
                     rng.index.eq((self.ev_base + self.sum.idx)[:32]), self.moved.eq(moved)]
        # N0
        m.d.sync += [n1.eq(self.sum.valid), n1_acc.eq(self.sum.acc), n1_loc.eq(self.sum.loc), n1_out.eq(self.sum.out)]
        # N1
        V = eps_step(p, n1_acc, self.bias, self.state, self.target, self.nudge & n1_out, self.beta_neg)
        m.d.sync += [n2.eq(n1), n2_V.eq(V), n2_loc.eq(n1_loc), n2_old.eq(self.state)]
        # N2
        r = round_shift(n2_V, p.state_shift, p.num.state_rounding, rng.word)
        s_new = Mux(r < 0, 0, Mux(r > one, one, r))[:sw]
        m.d.sync += [res.en.eq(n2), res.addr.eq(n2_loc), res.data.eq(s_new)]
        # §4a: |s_new - s_old| > settle_tol raises the sticky flag (both unsigned words)
        change = Mux(s_new >= n2_old, s_new - n2_old, n2_old - s_new)
        with m.If(self.clear):
            m.d.sync += moved.eq(0)
        with m.Elif(n2 & (change > self.settle_tol)):
            m.d.sync += moved.eq(1)
        return m

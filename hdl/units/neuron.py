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


def bias_sum(p: CoreParams, acc: Value, bias: Value) -> Value:
    """§4 step 1 (combinational): the bias aligned and added to the sum (§2, overflow as
    configured)."""
    acc_b = acc + (bias << p.bias_align)
    if p.num.acc_overflow == "wrap":
        acc_b = wrap(acc_b, p.acc_fmt)
    elif p.num.acc_overflow == "saturate":
        acc_b = saturate(acc_b, p.acc_fmt)
    return acc_b


def eps_v(p: CoreParams, acc_b: Value, s: Value, target: Value, nudge: Value, beta_neg: Value) -> Value:
    """§4 steps 2-4 (combinational) from ``acc_b`` (``bias_sum``): V = (s_al << k) + acc_b -
    s_al (eq. 5 with rho(s) = s), then on an output neuron of the weakly-clamped phase
    (``nudge``) the beta term: ``eq5`` V -= sigma (s - t) << (fa - fS + 1 + m), or
    ``after-step`` V += sigma (T - V) 2^g (floor for g < 0). ``target``: the target bit."""
    s_al = s << p.state_align
    V = (s_al << p.k) + acc_b - s_al
    if p.nudge == "eq5":
        nud = (s - Mux(target, p.state.one(), 0)) << p.nudge_shift
        return Mux(nudge, Mux(beta_neg, V + nud, V - nud), V)
    T = Mux(target, Const(1 << (p.fa + p.k), unsigned(p.fa + p.k + 1)), 0)
    dev = T - V
    nud = dev << p.g if p.g >= 0 else dev >> -p.g
    return Mux(nudge, Mux(beta_neg, V - nud, V + nud), V)


def eps_step(p: CoreParams, acc: Value, bias: Value, s: Value, target: Value, nudge: Value,
             beta_neg: Value) -> Value:
    """V of docs/numerics.md §4 steps 1-4, at fraction fa + k (combinational): ``bias_sum``
    then ``eps_v`` in one expression (the NeuronUnit registers between them)."""
    return eps_v(p, bias_sum(p, acc, bias), s, target, nudge, beta_neg)


class NeuronUnit(wiring.Component):
    """A neuron's new state from its accumulated sum, five stages after ``sum.valid``:

        N0  the neuron's bias, old state and target are read at ``rd_loc``; the state event
            ``ev_base + idx`` is registered (to the RandomWord one cycle later, §5)
        N1  the bias added, ``bias_sum`` (§4 step 1); old state and target registered
        NB  V = ``eps_v`` (§4 steps 2-4, eq. 5)
        N2  round(V, fa + k - fS) (§3) with the event's random word
        N3  s' = clip(.., 0, 1) (§4 step 5), out on ``result``; in the write cycle the
            settle rule's compare (§4a)

    Ports: ``sum`` (in, from MacPipeline), ``rd_loc`` (out: the address of the ``bias``,
    ``state`` and ``target`` reads, whose data come back one cycle later), ``nudge`` (in: the
    weakly-clamped phase), ``beta_neg`` (in: sigma = -1), ``ev_base`` (in: the step's first
    state event), ``settle_tol`` (in, §4a), ``clear`` (in: a relaxation step starts),
    ``result`` (out: en, addr = the neuron's local index, data = the new state; the lane adds
    the write buffer's offset), ``moved`` (out, sticky until ``clear``: a new state differs
    from the old one by more than ``settle_tol``, §4a), ``busy`` (out).
    """

    LATENCY = 6  # sum.valid -> the new state is written (result.en five cycles later)

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
        n1, nb, n2 = Signal(), Signal(), Signal()
        n1_acc = Signal(signed(p.acc_exact_bits))
        n1_loc, nb_loc, n2_loc = Signal(loc_bits(p)), Signal(loc_bits(p)), Signal(loc_bits(p))
        n1_out = Signal()
        ev = Signal(32)  # the state event, issued to the RandomWord one cycle after N0
        acc_b0 = bias_sum(p, n1_acc, self.bias)
        nb_accb = Signal(acc_b0.shape())
        nb_s, nb_t, nb_nudge = Signal(sw), Signal(), Signal()
        n2_V = Signal(signed(p.acc_exact_bits + p.k + p.nudge_shift + sw + 4))
        n2_old = Signal(sw)  # the old state (read in N0, in at N1), for the settle rule (§4a)
        n3, n3_loc, n3_old = Signal(), Signal(loc_bits(p)), Signal(sw)
        # the old state -+ settle_tol, beside ``result`` (§4a's bounds)
        n4_lo, n4_hi = Signal(signed(sw + 2)), Signal(unsigned(sw + 1))
        moved = Signal()
        res = self.result
        m.d.comb += [self.busy.eq(self.sum.valid | n1 | nb | n2 | n3 | res.en), self.rd_loc.eq(self.sum.loc),
                     rng.index.eq(ev), self.moved.eq(moved)]
        # N0
        m.d.sync += [n1.eq(self.sum.valid), n1_acc.eq(self.sum.acc), n1_loc.eq(self.sum.loc), n1_out.eq(self.sum.out),
                     ev.eq((self.ev_base + self.sum.idx)[:32])]
        # N1: the bias added (§4 step 1); the old state and target registered
        m.d.sync += [nb.eq(n1), nb_accb.eq(acc_b0), nb_loc.eq(n1_loc), nb_s.eq(self.state),
                     nb_t.eq(self.target), nb_nudge.eq(self.nudge & n1_out)]
        # NB: V (§4 steps 2-4)
        V = eps_v(p, nb_accb, nb_s, nb_t, nb_nudge, self.beta_neg)
        m.d.sync += [n2.eq(nb), n2_V.eq(V), n2_loc.eq(nb_loc), n2_old.eq(nb_s)]
        # N2
        r = round_shift(n2_V, p.state_shift, p.num.state_rounding, rng.word)
        n3_r = Signal(r.shape())
        m.d.sync += [n3.eq(n2), n3_r.eq(r), n3_loc.eq(n2_loc), n3_old.eq(n2_old)]
        # N3: the clip (§4 step 5), out on ``result``
        s_new = Mux(n3_r < 0, 0, Mux(n3_r > one, one, n3_r))[:sw]
        m.d.sync += [res.en.eq(n3), res.addr.eq(n3_loc), res.data.eq(s_new),
                     n4_lo.eq(n3_old - self.settle_tol), n4_hi.eq(n3_old + self.settle_tol)]
        # §4a, in the write cycle (from the registered new state, off the rounding's path):
        # |s_new - s_old| > settle_tol raises the sticky flag (both unsigned words); ``busy``
        # covers that cycle, so the flag is set when the step is seen to be over
        # (|s' - s| > tol as s' outside [s - tol, s + tol], the bounds registered in N3)
        s_w = res.data
        with m.If(self.clear):
            m.d.sync += moved.eq(0)
        with m.Elif(res.en & ((s_w < n4_lo) | (s_w > n4_hi))):
            m.d.sync += moved.eq(1)
        return m

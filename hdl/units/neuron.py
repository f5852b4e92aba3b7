"""The neuron unit: eq. 5's step, the nudge, the state rounding and the clip (§4), the
settle rule's change detector (§4a), and in the drive pass the inputs' part of the sum with
the aligned bias (§2)."""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arith import round_shift, saturate, stochastic_rem, stochastic_up, wrap
from ..params import CoreParams
from ..rng import RNG_BITS, RandomWord
from .signatures import check_rounding, loc_bits, neuron_sum_signature, write_signature


def drive_word(p: CoreParams, acc: Value, bias: Value) -> Value:
    """§2's part of the sum that the clamped inputs give, with the aligned bias (combinational):
    D_i = acc + (b_i << (fa - fB)), ``acc`` the sum over the neuron's input sources (the drive
    pass). Exact: it fits ``acc_exact_bits`` (the bound of §2 covers every source), and no
    overflow policy applies to a part of the sum."""
    return acc + (bias << p.bias_align)


def net_sum(p: CoreParams, acc: Value, drive: Value) -> Value:
    """§4 step 1 (combinational): the step's sum over the non-input sources plus the drive
    D_i (``drive_word``): §2's exact sum, then its overflow policy (``acc_overflow``), so that
    splitting the sum changes no result."""
    acc_b = acc + drive
    if p.num.acc_overflow == "wrap":
        acc_b = wrap(acc_b, p.acc_fmt)
    elif p.num.acc_overflow == "saturate":
        acc_b = saturate(acc_b, p.acc_fmt)
    return acc_b


def eps_v(p: CoreParams, acc_b: Value, s: Value, target: Value, nudge: Value, beta_neg: Value) -> Value:
    """§4 steps 2-4 (combinational) from ``acc_b`` (``net_sum``): V = (s_al << k) + acc_b -
    s_al (eq. 5 with rho(s) = s, ``v_free``), then on an output neuron of the weakly-clamped
    phase (``nudge``) the beta term (``v_nudged``): ``eq5`` V -= sigma (s - t) << (fa - fS +
    1 + m), or ``after-step`` V += sigma (T - V) 2^g (floor for g < 0). ``target``: the
    target bit."""
    return v_nudged(p, v_free(p, acc_b, s), s, target, nudge, beta_neg)


def v_free(p: CoreParams, acc_b: Value, s: Value) -> Value:
    """§4 steps 2-3: V = (s_al << k) + acc_b - s_al (eq. 5 with rho(s) = s), s_al = s << (fa - fS)."""
    s_al = s << p.state_align
    return (s_al << p.k) + acc_b - s_al


def v_nudged(p: CoreParams, V: Value, s: Value, target: Value, nudge: Value, beta_neg: Value) -> Value:
    """§4 step 4: V with the beta term where ``nudge`` (see ``eps_v``)."""
    if p.nudge == "eq5":
        nud = (s - Mux(target, p.state.one(), 0)) << p.nudge_shift
        return Mux(nudge, Mux(beta_neg, V + nud, V - nud), V)
    T = Mux(target, Const(1 << (p.fa + p.k), unsigned(p.fa + p.k + 1)), 0)
    dev = T - V
    nud = dev << p.g if p.g >= 0 else dev >> -p.g
    return Mux(nudge, Mux(beta_neg, V - nud, V + nud), V)


def eps_step(p: CoreParams, acc: Value, drive: Value, s: Value, target: Value, nudge: Value,
             beta_neg: Value) -> Value:
    """V of docs/numerics.md §4 steps 1-4, at fraction fa + k (combinational): ``net_sum``
    then ``eps_v`` in one expression (the NeuronUnit registers between them)."""
    return eps_v(p, net_sum(p, acc, drive), s, target, nudge, beta_neg)


def _high(v: Value, sw: int) -> Value:
    """Any of a signed v's bits between its low sw bits and its sign bit (an OR, no carry)."""
    return v[sw:-1].any() if len(v) - 1 > sw else Const(0, 1)


def _clip01(v: Value, sw: int, one: int) -> Value:
    """clip(v, 0, one) of a signed v (§4 step 5) without a compare as wide as v: 0 where v < 0
    (its sign bit); for v >= 0, v > one where a bit above the low sw is set (v >= 2^sw >
    one) or the low sw bits exceed one; else v's low sw bits."""
    return Mux(v[-1], 0, Mux(_high(v, sw) | (v[:sw] > one), one, v[:sw]))


class NeuronUnit(wiring.Component):
    """A neuron's new state from its accumulated sum, six stages after ``sum.valid``:

        N0  the neuron's drive D_i, old state and target are read at ``rd_loc``; the state
            event ``ev_base + idx`` is registered (to the RandomWord one cycle later, §5)
        N1  the drive added, ``net_sum`` (§4 step 1, §2's overflow); old state and target
            registered
        NB  V = ``v_free`` (§4 steps 2-3, eq. 5)
        NC  the beta term, ``v_nudged`` (§4 step 4; ``eps_v`` is NB and NC)
        N2  round(V, fa + k - fS) (§3); stochastic: floor and floor + 1, both clipped, and
            the dropped bits (the event's random word comes in N3: RandomWord in four stages)
        N3  s' = clip(.., 0, 1) (§4 step 5); stochastic: the candidate the word picks; out on
            ``result``; in the write cycle the settle rule's compare (§4a)

    In the drive pass (``drive_pass``, once per example before the free phase) the sum is
    the neuron's input part and stops after N1: N0 reads the bias at ``rd_loc``, N1 computes
    D_i = ``drive_word`` (§2: the inputs' part plus ``b << (fa - fB)``, exact), written on
    ``drive_wr`` one cycle later into the lane's drive memory; no state is written.

    Ports: ``sum`` (in, from MacPipeline), ``rd_loc`` (out: the address of the ``drive``,
    ``bias``, ``state`` and ``target`` reads, whose data come back one cycle later),
    ``drive_pass`` (in: the drive pass), ``nudge`` (in: the weakly-clamped phase),
    ``beta_neg`` (in: sigma = -1), ``ev_base`` (in: the step's first state event),
    ``settle_tol`` (in, §4a), ``clear`` (in: a relaxation step starts), ``result`` (out: en,
    addr = the neuron's local index, data = the new state; the lane adds the write buffer's
    offset), ``drive_wr`` (out: en, addr = local index, data = D_i), ``moved`` (out, sticky
    until ``clear``: a new state differs from the old one by more than ``settle_tol``, §4a),
    ``busy`` (out).
    """

    LATENCY = 7  # sum.valid -> the new state is written (result.en six cycles later)
    DRIVE_LATENCY = 3  # sum.valid -> D_i is written (drive_wr.en two cycles later), the drive pass

    def __init__(self, params: CoreParams):
        if params.nudge not in ("eq5", "after-step"):
            raise ValueError(f"nudge: {params.nudge!r} is not eq5 or after-step")
        check_rounding("state_rounding", params.num.state_rounding)
        self.p = params
        sw = params.state.n_word
        dw = signed(params.drive_bits)
        super().__init__({
            "sum": In(neuron_sum_signature(params)),
            "rd_loc": Out(loc_bits(params)),
            "drive": In(dw), "bias": In(signed(params.num.bias.n_word)), "state": In(sw), "target": In(1),
            "drive_pass": In(1), "nudge": In(1), "beta_neg": In(1), "ev_base": In(32), "settle_tol": In(sw),
            "clear": In(1),
            "result": Out(write_signature(loc_bits(params), sw)),
            "drive_wr": Out(write_signature(loc_bits(params), dw)),
            "moved": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        sw, one = p.state.n_word, p.state.one()
        # the random word of the state event (§5), only where the state rounding draws one: its
        # top state_shift bits (the bits the rounding compares)
        stochastic = p.num.state_rounding == "stochastic" and p.state_shift > 0
        n1, nb, nc, n2 = Signal(), Signal(), Signal(), Signal()
        n1_acc = Signal(signed(p.acc_exact_bits))
        n1_loc, nb_loc, n2_loc = Signal(loc_bits(p)), Signal(loc_bits(p)), Signal(loc_bits(p))
        n1_out = Signal()
        acc_b0 = net_sum(p, n1_acc, self.drive)
        nb_accb = Signal(acc_b0.shape())
        nb_s, nb_t, nb_nudge = Signal(sw), Signal(), Signal()
        n2_V = Signal(signed(p.acc_exact_bits + p.k + p.nudge_shift + sw + 4))
        n2_old = Signal(sw)  # the old state (read in N0, in at N1), for the settle rule (§4a)
        n3, n3_loc, n3_old = Signal(), Signal(loc_bits(p)), Signal(sw)
        # the old state -+ settle_tol, beside ``result`` (§4a's bounds)
        n4_lo, n4_hi = Signal(signed(sw + 2)), Signal(unsigned(sw + 1))
        moved = Signal()
        res = self.result
        dwr = self.drive_wr
        m.d.comb += [self.busy.eq(self.sum.valid | n1 | nb | nc | n2 | n3 | res.en | dwr.en),
                     self.rd_loc.eq(self.sum.loc),
                     self.moved.eq(moved)]
        # N0
        m.d.sync += [n1.eq(self.sum.valid), n1_acc.eq(self.sum.acc), n1_loc.eq(self.sum.loc), n1_out.eq(self.sum.out)]
        word = None
        if stochastic:
            rng = m.submodules.rng = RandomWord(p.num.seed_state, bits=min(p.state_shift, RNG_BITS), stages=4)
            ev = Signal(32)  # the state event, issued to the RandomWord one cycle after N0 (its word in N3)
            m.d.comb += rng.index.eq(ev)
            m.d.sync += ev.eq((self.ev_base + self.sum.idx)[:32])
            word = rng.word
        # N1: the drive added (§4 step 1); the old state and target registered. In the drive
        # pass: D_i (§2) to the drive memory, and the neuron goes no further.
        m.d.sync += [nb.eq(n1 & ~self.drive_pass), nb_accb.eq(acc_b0), nb_loc.eq(n1_loc), nb_s.eq(self.state),
                     nb_t.eq(self.target), nb_nudge.eq(self.nudge & n1_out),
                     dwr.en.eq(n1 & self.drive_pass), dwr.addr.eq(n1_loc),
                     dwr.data.eq(drive_word(p, n1_acc, self.bias))]
        # NB: V (§4 steps 2-3)
        V0 = v_free(p, nb_accb, nb_s)
        nc_V, nc_loc = Signal(V0.shape()), Signal(loc_bits(p))
        nc_s, nc_t, nc_nudge = Signal(sw), Signal(), Signal()
        m.d.sync += [nc.eq(nb), nc_V.eq(V0), nc_loc.eq(nb_loc), nc_s.eq(nb_s), nc_t.eq(nb_t), nc_nudge.eq(nb_nudge)]
        # NC: the beta term (§4 step 4)
        V = v_nudged(p, nc_V, nc_s, nc_t, nc_nudge, self.beta_neg)
        m.d.sync += [n2.eq(nc), n2_V.eq(V), n2_loc.eq(nc_loc), n2_old.eq(nc_s)]
        # N2
        m.d.sync += [n3.eq(n2), n3_loc.eq(n2_loc), n3_old.eq(n2_old)]
        if stochastic:
            # round(V) is floor(V / 2^d) + up, up from the random word (§3), which comes in N3: N2
            # registers both candidates clipped (§4 step 5: floor and floor + 1, the clip's
            # compares on the floor) and the dropped bits, N3 compares them with the word and picks
            d = p.state_shift
            q = n2_V >> d
            c0 = _clip01(q, sw, one)  # clip(q)
            neg, high = q[-1], _high(q, sw)  # clip(q + 1): 0 below -1, one from one up
            c1 = Mux(neg & ~q.all(), 0, Mux(~neg & (high | (q[:sw] >= one)), one, (q[:sw] + 1)[:sw]))
            n3_c0, n3_c1 = Signal(sw), Signal(sw)
            n3_rem = Signal(len(stochastic_rem(n2_V, d)))
            m.d.sync += [n3_c0.eq(c0), n3_c1.eq(c1), n3_rem.eq(stochastic_rem(n2_V, d))]
            # N3: the rounding's choice, out on ``result``
            s_new = Mux(stochastic_up(word, n3_rem), n3_c1, n3_c0)
        else:
            r = round_shift(n2_V, p.state_shift, p.num.state_rounding, word)
            n3_r = Signal(r.shape())
            m.d.sync += n3_r.eq(r)
            # N3: the clip (§4 step 5), out on ``result``
            s_new = _clip01(n3_r, sw, one)
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

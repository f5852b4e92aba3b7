"""The local weight and bias update of eqs. 7-8 in fixed point (docs/numerics.md §6)."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..arith import round_parts, saturate
from ..enums import UpdateState as U
from ..params import CoreParams, bits_for
from ..rng import RNG_BITS, RandomWord
from .signatures import (check_lane, check_rounding, entry_bits, entry_layout, loc_bits, rate_layout, waddr_bits,
                         write_signature)


def update_read_signature(params: CoreParams) -> wiring.Signature:
    """UpdateUnit -> the lane: the state reads it needs (data one cycle later). The source's
    index is the entry's ``saddr``, held by the FaninStore until the walk moves on (the same
    field the MacPipeline reads at): the lane addresses the source read with it directly."""
    return wiring.Signature({
        "sb": Out(1),  # read the s^beta buffer (else s^0)
        "own": Out(loc_bits(params)),  # neuron i's local index
    })


class UpdateUnit(wiring.Component):
    """W <- sat(W + round(sigma D M 2^-z)) for every entry of lane ``index`` (written at the
    entry's weight address; a hole, a dummy and, at P = 1, a *mirror* entry, whose weight the
    entry of its other end writes, go from W_FIELDS to W_RND and write nothing), then
    b <- sat(b + round(sigma D_b M 2^-z)) for each of its neurons (§6, batch 1:
    D = s^b_i s^b_j - s^0_i s^0_j, D_b = s^b_i - s^0_i; the rounding at the pair's
    ``weight_shift`` / ``bias_shift`` with the random word of the entry's connection or the
    neuron's bias event, §5). ``UpdateState`` names the cycles: 9 per entry (3 for an entry that
    writes nothing), 9 per bias (B_RND takes four: round, its add, add, saturate and write).

    Ports: ``start`` (in, pulse), ``beta_neg`` (in: sigma = -1), ``ev_base`` (in: the update's
    first event, u (n_slots + S)), ``rate`` (in: M of each layer pair, the core's ``rate``
    registers), ``busy`` (out); ``advance`` (out: the FaninStore's walk
    moves on), ``pos``, ``last`` (in: where the walk is), ``entry``, ``weight`` (in: the
    entry at ``pos`` one cycle later, held until the walk moves on); ``rd`` (out: sb, own;
    the source at ``entry.saddr``) -> ``x_data``, ``bank_data[P]``, ``own_data`` (in, one
    cycle later); ``bias_addr`` (out) ->
    ``bias`` (in); ``w_wr``, ``b_wr`` (out: en, addr, data): the new stored weight and bias.
    """

    CYCLES_PER_ENTRY = 9
    CYCLES_PER_IDLE_ENTRY = 3  # a hole, a dummy, a mirror: W_ISSUE, W_FIELDS, W_RND
    CYCLES_PER_BIAS = 9

    def __init__(self, params: CoreParams, index: int):
        check_lane(params, index)
        self.p = params
        self.lane = params.layout.lanes[index]
        self.n_entries, self.n_own = self.lane.n_entries, len(self.lane.neurons)
        check_rounding("rounding", params.num.rounding)
        num, sw = params.num, params.state.n_word
        ebits = entry_bits(self.n_entries)
        super().__init__({
            "start": In(1), "beta_neg": In(1), "ev_base": In(32), "rate": In(rate_layout(params)),
            "busy": Out(1),
            "advance": Out(1), "pos": In(ebits), "last": In(1), "entry": In(entry_layout(params)),
            "weight": In(signed(num.weight_store.n_word)),
            "rd": Out(update_read_signature(params)),
            "x_data": In(sw), "bank_data": In(sw).array(params.layout.P), "own_data": In(sw),
            "bias_addr": Out(loc_bits(params)), "bias": In(signed(num.bias.n_word)),
            "w_wr": Out(write_signature(waddr_bits(params), signed(num.weight_store.n_word))),
            "b_wr": Out(write_signature(loc_bits(params), signed(num.bias.n_word))),
        })

    def elaborate(self, platform):
        m = Module()
        p, lay = self.p, self.p.layout
        sw, pairs = p.state.n_word, range(len(lay.pairs))
        st = Signal(U)
        bl = Signal(bits_for(self.n_own + 1))  # bias index
        eu = Signal(entry_layout(p))
        wst, bst = Signal(signed(p.num.weight_store.n_word)), Signal(signed(p.num.bias.n_word))
        brow = data.StructLayout({"nidx": bits_for(lay.S), "pair": bits_for(len(lay.pairs))})
        bconst = m.submodules.bconst = memory.Memory(shape=brow, depth=max(self.n_own, 1), init=[
            {"nidx": i, "pair": p.bias_pair(i)} for i in self.lane.neurons])
        # the constants' ROM is read at ``bq``: ``bl`` in a bias's B_ISSUE, the next bias's index
        # from the third cycle of B_RND on (the pair is fetched ahead, see ``rate_q``)
        bq = Signal.like(bl)
        bc = bconst.read_port(domain="comb")
        bpair = Signal.like(bc.data.pair)
        src = Mux(eu.sel_in, self.x_data, Array(self.bank_data)[eu.sbank])
        b_ph = Signal(2)  # the cycle of B_RND
        after_w = U.B_ISSUE if self.n_own > 0 else U.IDLE

        # The multiplier (§6): operands ``ua`` (a state or the pair's rate M), ``ub`` (a state
        # or a product of two), product ``up``, all unsigned and reset-less, one product per
        # cycle (the schedule is UpdateState's). The rates and beta_neg do not change during
        # an update; the rate of the entry's pair (``eu``) or of bias ``bl``'s (``bconst``).
        ua = Signal(max(sw, p.rate_bits), reset_less=True)
        ub = Signal(2 * sw, reset_less=True)
        up = Signal(len(ua) + len(ub), reset_less=True)
        q0 = Signal(len(up))  # the first of the two products sigma D M subtracts
        PD = Signal(signed(max(2 * sw + p.rate_bits + 4, len(up) + 1)))  # sigma D M, and the difference whole
        bias_st = (st == U.B_S0) | (st == U.B_SB)
        rate_st = (st == U.W_MUL) | (st == U.W_Q0) | bias_st
        # The rate of the entry's or the bias's pair comes from a register, ``rate_q``, loaded
        # from the registered pair (``eu.pair`` from W_S0 on, used from W_MUL; ``bpair``, fetched
        # ahead of the bias, used from B_S0): the constants' ROM and the rate multiplexer in front
        # of the operand register were the 784-100x5 UP5K design's critical paths.
        rate_q = Signal.like(self.rate[0], reset_less=True)
        # ``bias_rd``: the own-state reads are a bias's (B_ISSUE, B_S0: ``bl``), else the entry's
        # neuron (W_FIELDS, W_S0: ``entry.nloc``, held until W_RND); a register set where the
        # biases begin, so that no decode of ``st`` is on the banks' address path (nor on the
        # rate's: it also picks the pair)
        bias_rd = Signal()
        m.d.sync += rate_q.eq(Array(self.rate[q] for q in pairs)[Mux(bias_rd, bpair, eu.pair)])
        m.d.sync += [ua.eq(Mux(rate_st, rate_q, self.own_data)),
                     ub.eq(Mux((st == U.W_MUL) | (st == U.W_Q0), up[:len(ub)],
                               Mux(bias_st, self.own_data, src))),
                     up.eq(ua * ub), q0.eq(up)]
        # sigma (Q1 - Q0): the difference's order is sigma's sign
        sigma_dm = PD.eq(Mux(self.beta_neg, (q0 - up).as_signed(), (up - q0).as_signed()))

        # Registered decodes for the lane's address muxes: ``act`` = st != IDLE (set by a start
        # with work, cleared where the last entry or bias goes to IDLE) and ``sb_r`` = st is
        # W_S0 or B_S0 (the states after W_FIELDS and B_ISSUE)
        act, sb_r = Signal(), Signal()
        first = U.W_ISSUE if self.n_entries > 0 else after_w
        # ``in_rnd`` = st is W_RND, a register set by the two transitions into it: it is
        # ``advance``, which steers the FaninStore's walk (a decode of ``st`` there was the
        # demo's ECP5 path into the walk's next state)
        in_rnd = Signal()
        m.d.sync += in_rnd.eq(0)
        m.d.comb += self.advance.eq(in_rnd)
        m.d.comb += [bc.addr.eq(bq), self.bias_addr.eq(bl), self.rd.sb.eq(sb_r),
                     self.rd.own.eq(Mux(bias_rd, bl, self.entry.nloc))]
        m.d.sync += sb_r.eq((st == U.W_FIELDS) | (st == U.B_ISSUE))
        with m.If(self.start):
            m.d.sync += [bl.eq(0), bq.eq(0), st.eq(first), act.eq(first != U.IDLE),
                         bias_rd.eq(first == U.B_ISSUE)]
        # ``bpair``: the pair of bias ``bq``, loaded while the entries run (bias 0's), in a bias's
        # B_ISSUE and in the last two cycles of B_RND (the next bias's: ``bq`` moves on after
        # B_RND's second cycle; the rounding read this bias's pair in its first), so that it
        # is there in B_ISSUE and ``rate_q`` in B_S0. (A lane with neurons has entries: every
        # neuron has a run in each part, a dummy at least, so the biases never come first.)
        b_late = (st == U.B_RND) & b_ph[1]
        with m.If(~bias_rd | (st == U.B_ISSUE) | b_late):
            m.d.sync += bpair.eq(bc.data.pair)
        with m.Switch(st):
            with m.Case(U.W_ISSUE):
                m.d.sync += st.eq(U.W_FIELDS)
            with m.Case(U.W_FIELDS):
                idle = self.entry.dummy | self.entry.mirror  # nothing to write: on to W_RND
                m.d.sync += [eu.eq(self.entry), wst.eq(self.weight), st.eq(Mux(idle, U.W_RND, U.W_S0)),
                             in_rnd.eq(idle)]
            with m.Case(U.W_S0):
                m.d.sync += st.eq(U.W_SB)
            with m.Case(U.W_SB):
                m.d.sync += st.eq(U.W_MUL)
            with m.Case(U.W_MUL):
                m.d.sync += st.eq(U.W_Q0)
            with m.Case(U.W_Q0):
                m.d.sync += st.eq(U.W_Q1)
            with m.Case(U.W_Q1):
                m.d.sync += st.eq(U.W_PD)
            with m.Case(U.W_PD):  # (holes and dummies went from W_FIELDS to W_RND)
                m.d.sync += [sigma_dm, st.eq(U.W_RND), in_rnd.eq(1)]
            with m.Case(U.W_RND):
                m.d.sync += st.eq(Mux(self.last, after_w, U.W_ISSUE))
                if after_w == U.B_ISSUE:
                    with m.If(self.last):
                        m.d.sync += bias_rd.eq(1)
                if after_w == U.IDLE:
                    with m.If(self.last):
                        m.d.sync += act.eq(0)
            with m.Case(U.B_ISSUE):
                m.d.sync += st.eq(U.B_S0)
            with m.Case(U.B_S0):
                m.d.sync += [bst.eq(self.bias), st.eq(U.B_SB)]
            with m.Case(U.B_SB):
                m.d.sync += st.eq(U.B_MUL)
            with m.Case(U.B_MUL):
                m.d.sync += st.eq(U.B_PD)
            with m.Case(U.B_PD):
                m.d.sync += [sigma_dm, st.eq(U.B_RND)]
            with m.Case(U.B_RND):  # four cycles (b_ph): round, its add, add, saturate and write
                m.d.sync += b_ph.eq(b_ph + 1)
                with m.If(b_ph == 1):
                    m.d.sync += bq.eq(bq + 1)
                with m.If(b_ph == 3):
                    m.d.sync += [b_ph.eq(0), bl.eq(bl + 1), st.eq(Mux(bl == self.n_own - 1, U.IDLE, U.B_ISSUE))]
                    with m.If(bl == self.n_own - 1):
                        m.d.sync += act.eq(0)
        # The random word of the event is there in W_RND / B_RND (§5): only where the rounding
        # draws one, its top bits, as many as the widest shift rounds away. The event index is
        # registered in W_FIELDS (the entry's ``edge`` is on ``entry`` until W_RND) / B_ISSUE
        # (the bias's n_slots + nidx, its neuron's index read from ``bconst``; held through
        # the bias's cycles) into ``ev_idx``, and the hash takes four of the cycles to W_RND
        # / B_RND (RandomWord in four stages, each starting from a register: all four cycles a
        # bias has from B_S0 to B_RND; with three, the first stage's carry chains were the
        # 8-lane demo's ECP5 critical path).
        d_max = max(f(q) for q in pairs for f in (p.weight_shift, p.bias_shift))
        word = None
        if p.num.rounding == "stochastic" and d_max > 0:
            rng = m.submodules.rng = RandomWord(p.num.seed_update, bits=min(d_max, RNG_BITS), stages=4)
            ev_idx = Signal(32)
            b_ev = lay.n_slots + bc.data.nidx
            with m.If(st == U.B_ISSUE):
                m.d.sync += ev_idx.eq((self.ev_base + b_ev)[:32])
            with m.Elif(st.as_value() < U.B_ISSUE.value):
                m.d.sync += ev_idx.eq((self.ev_base + self.entry.edge)[:32])
            m.d.comb += rng.index.eq(ev_idx)
            word = rng.word
        qW, upW = self._round_by_pair(m, eu.pair, p.weight_shift, word, PD)
        qB, upB = self._round_by_pair(m, bpair, p.bias_shift, word, PD)
        # The write-back in four stages: *_RND registers the rounding's floor and round-up bit
        # (the pair's shift selected), the next cycle adds them, the next adds the step to the
        # stored value, the one after saturates and writes. A weight's last three overlap the
        # next entry's W_ISSUE, W_FIELDS and W_S0 (or W_RND of an idle entry, or the first
        # B_ISSUE .. B_SB; other addresses, no entry's weight read: that is in its W_ISSUE,
        # and the stored weight ``wst`` is replaced only at W_FIELDS' end); a bias's are
        # B_RND's second to fourth cycles.
        qW_r, upW_r, qB_r, upB_r = Signal.like(qW), Signal(), Signal.like(qB), Signal()
        dW_r, dB_r = Signal((qW_r + upW_r).shape()), Signal((qB_r + upB_r).shape())
        w_sum, b_sum = Signal((wst + dW_r).shape()), Signal((bst + dB_r).shape())
        w_en1, w_en2, w_en = Signal(), Signal(), Signal()
        w_addr1, w_addr2, w_addr = Signal.like(eu.waddr), Signal.like(eu.waddr), Signal.like(eu.waddr)
        m.d.sync += [w_en1.eq((st == U.W_RND) & ~eu.dummy & ~eu.mirror), w_addr1.eq(eu.waddr),
                     qW_r.eq(qW), upW_r.eq(upW),
                     w_en2.eq(w_en1), w_addr2.eq(w_addr1), dW_r.eq(qW_r + upW_r),
                     w_en.eq(w_en2), w_addr.eq(w_addr2), w_sum.eq(wst + dW_r)]
        with m.If(b_ph == 0):
            m.d.sync += [qB_r.eq(qB), upB_r.eq(upB)]
        with m.If(b_ph == 1):
            m.d.sync += dB_r.eq(qB_r + upB_r)
        m.d.sync += b_sum.eq(bst + dB_r)
        m.d.comb += [self.busy.eq(act | w_en1 | w_en2 | w_en),
                     self.w_wr.en.eq(w_en), self.w_wr.addr.eq(w_addr),
                     self.w_wr.data.eq(saturate(w_sum, p.num.weight_store)),
                     self.b_wr.en.eq((st == U.B_RND) & (b_ph == 3)), self.b_wr.addr.eq(bl),
                     self.b_wr.data.eq(saturate(b_sum, p.num.bias))]
        return m

    def _round_by_pair(self, m, pair, shift_of, word, value):
        """round(value, shift_of(pair)) (§3 in the update's mode) as its floor and round-up bit
        (``arith.round_parts``): one rounding unit per distinct shift, selected by the pair."""
        n_pairs = len(self.p.layout.pairs)
        shifts = sorted({shift_of(q) for q in range(n_pairs)})
        outs = {d: round_parts(value, d, self.p.num.rounding, word) for d in shifts}
        q_sel = Signal(signed(len(value) + 1 + max(0, -min(shifts))))
        up_sel = Signal()
        with m.Switch(pair):
            for q in range(n_pairs):
                with m.Case(q):
                    qv, upv = outs[shift_of(q)]
                    m.d.comb += [q_sel.eq(qv), up_sel.eq(upv)]
        return q_sel, up_sel

"""The local weight and bias update of eqs. 7-8 in fixed point (docs/numerics.md §6)."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
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
    entry of its other end writes, go through the same cycles and write nothing), then
    b <- sat(b + round(sigma D_b M 2^-z)) for each of its neurons (§6, batch 1:
    D = s^b_i s^b_j - s^0_i s^0_j, D_b = s^b_i - s^0_i; the rounding at the pair's
    ``weight_shift`` / ``bias_shift`` with the random word of the entry's connection or the
    neuron's bias event, §5). ``UpdateState`` names the cycles: the entries are pipelined, one
    every 4 cycles (``W_RUN``; an entry's products, rounding and write-back overlap the next
    entries' reads, its write comes ``WRITE_LATENCY`` = 11 cycles after the walk reached it),
    2 to drain (``W_DRAIN``), then 9 per bias (B_RND takes four: round, its add, add,
    saturate and write). The weight memory's port: the walk reads the entry's weight in the
    cycles of its ph 0 - 3 that no write takes (one per 4 cycles), and the weight is kept at
    ph 0 of the next entry, the last cycle the walk holds it.

    Ports: ``start`` (in, pulse), ``beta_neg`` (in: sigma = -1), ``ev_base`` (in: the update's
    first event, u (n_slots + S)), ``rate`` (in: M of each layer pair, the core's ``rate``
    registers), ``busy`` (out); ``advance`` (out: the FaninStore's walk
    moves on), ``pos``, ``last`` (in: where the walk is), ``entry``, ``weight`` (in: the
    entry at ``pos`` one cycle later, held until the walk moves on); ``rd`` (out: sb, own;
    the source at ``entry.saddr``) -> ``x_data``, ``bank_data[P]``, ``own_data`` (in, one
    cycle later); ``bias_addr`` (out) ->
    ``bias`` (in); ``w_wr``, ``b_wr`` (out: en, addr, data): the new stored weight and bias.
    """

    CYCLES_PER_ENTRY = 4  # any entry: a hole, a dummy, a mirror take the same four cycles, no write
    DRAIN_CYCLES = 2  # W_DRAIN: after the last entry, before the first bias
    CYCLES_PER_BIAS = 9
    # an entry's cycles from its ph 0 (the walk at it) to its write (w_wr.en), docs/rtl.md
    WRITE_LATENCY = 11

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
        # ``ph``: an entry's cycle in W_RUN (0: the walk at the entry, its weight read issued;
        # 1: its fields in, the s^0 reads; 2: the s^beta reads; 3: the walk moves on), counting
        # on through W_DRAIN's two cycles. Entry n's ph 0 is cycle a; its products and write-back
        # run on while the next entries are read (docs/rtl.md "UpdateUnit"):
        #   a+2, a+3  operands s^0_i, s^0_j and s^b_i, s^b_j (the reads of a+1, a+2)
        #   a+4       operands M, s^0_i s^0_j; the entry's fields and stored weight kept (eu, wst)
        #   a+5       operands M, s^b_i s^b_j
        #   a+7       sigma D M = sigma (M s^b_i s^b_j - M s^0_i s^0_j) into PD
        #   a+8       the rounding's floor and round-up bit (the random word is there); W and
        #             its address kept to the write (wst2, w_addr)
        #   a+9, a+10 their sum; its add to W
        #   a+11      saturate and write (w_wr.en): WRITE_LATENCY
        # The multiplier takes operands at ph 2, 3 (this entry's states) and 0, 1 (the previous
        # entry's products), one product per cycle; the weight memory's one port reads at the
        # walk's entry in each cycle it is not written, and writes once per entry, at ph 3.
        ph = Signal(2)
        bl = Signal(bits_for(self.n_own + 1))  # bias index
        eu = Signal(entry_layout(p))
        wst, wst2 = (Signal(signed(p.num.weight_store.n_word), name=n) for n in ("wst", "wst2"))
        bst = Signal(signed(p.num.bias.n_word))
        # ``wv[k]``: an entry's ph 3 was k + 1 cycles ago (its pipeline's stages from a+4 on)
        wv = Signal(5)
        m.d.sync += wv.eq(Cat((st == U.W_RUN) & (ph == 3), wv[:-1]))
        brow = data.StructLayout({"nidx": bits_for(lay.S), "pair": bits_for(len(lay.pairs))})
        bconst = m.submodules.bconst = memory.Memory(shape=brow, depth=max(self.n_own, 1), init=[
            {"nidx": i, "pair": p.bias_pair(i)} for i in self.lane.neurons])
        # the constants' ROM is read at ``bq``: ``bl`` in a bias's B_ISSUE, the next bias's index
        # from the third cycle of B_RND on (the pair is fetched ahead, see ``rate_q``)
        bq = Signal.like(bl)
        bc = bconst.read_port(domain="comb")
        bpair = Signal.like(bc.data.pair)
        src = Mux(self.entry.sel_in, self.x_data, Array(self.bank_data)[self.entry.sbank])
        b_ph = Signal(2)  # the cycle of B_RND
        after_w = U.B_ISSUE if self.n_own > 0 else U.IDLE

        # The multiplier (§6): operands ``ua`` (a state or the pair's rate M), ``ub`` (a state
        # or a product of two), product ``up``, all unsigned and reset-less, one product per
        # cycle (the schedule above, and the biases'). The rates and beta_neg do not change
        # during an update; the rate of the entry's pair (``entry``) or of bias ``bl``'s (``bconst``).
        ua = Signal(max(sw, p.rate_bits), reset_less=True)
        ub = Signal(2 * sw, reset_less=True)
        up = Signal(len(ua) + len(ub), reset_less=True)
        q0 = Signal(len(up))  # the first of the two products sigma D M subtracts
        PD = Signal(signed(max(2 * sw + p.rate_bits + 4, len(up) + 1)))  # sigma D M, and the difference whole
        bias_st = (st == U.B_S0) | (st == U.B_SB)
        prod_ld = ((st == U.W_RUN) | (st == U.W_DRAIN)) & ~ph[1]  # ph 0, 1: M and a product
        # The rate of the entry's or the bias's pair comes from a register, ``rate_q``, loaded
        # from the walk's registered pair (``entry.pair`` at the entry's ph 3 and the next ph 0,
        # used at ph 0, 1) or the bias's (``bpair``, fetched ahead of the bias, used from B_S0):
        # the constants' ROM and the rate multiplexer in front of the operand register were
        # the 784-100x5 UP5K design's critical paths.
        rate_q = Signal.like(self.rate[0], reset_less=True)
        # ``bias_rd``: the own-state reads are a bias's (B_ISSUE, B_S0: ``bl``), else the entry's
        # neuron (ph 1, 2: ``entry.nloc``); a register set where the biases begin, so that no
        # decode of ``st`` is on the banks' address path (nor on the rate's: it also picks the pair)
        bias_rd = Signal()
        m.d.sync += rate_q.eq(Array(self.rate[q] for q in pairs)[Mux(bias_rd, bpair, self.entry.pair)])
        m.d.sync += [ua.eq(Mux(prod_ld | bias_st, rate_q, self.own_data)),
                     ub.eq(Mux(prod_ld, up[:len(ub)], Mux(bias_st, self.own_data, src))),
                     up.eq(ua * ub), q0.eq(up)]
        # sigma (Q1 - Q0): the difference's order is sigma's sign (an entry's at a+7, a bias's in B_PD)
        with m.If(wv[3] | (st == U.B_PD)):
            m.d.sync += PD.eq(Mux(self.beta_neg, (q0 - up).as_signed(), (up - q0).as_signed()))

        # Registered decodes for the lane's address muxes: ``act`` = st != IDLE (set by a start
        # with work, cleared where the last bias, or the drain without biases, goes to IDLE) and
        # ``sb_r`` = an entry's ph 2 or B_S0 (the cycles after ph 1 and B_ISSUE)
        act, sb_r = Signal(), Signal()
        first = U.W_RUN if self.n_entries > 0 else after_w
        # ``adv`` = an entry's ph 3, a register: it is ``advance``, which steers the FaninStore's
        # walk (a decode of ``st`` there was the demo's ECP5 path into the walk's next state)
        adv = Signal()
        m.d.sync += adv.eq((st == U.W_RUN) & (ph == 2))
        m.d.comb += self.advance.eq(adv)
        m.d.comb += [bc.addr.eq(bq), self.bias_addr.eq(bl), self.rd.sb.eq(sb_r),
                     self.rd.own.eq(Mux(bias_rd, bl, self.entry.nloc))]
        m.d.sync += sb_r.eq(((st == U.W_RUN) & (ph == 1)) | (st == U.B_ISSUE))
        with m.If(self.start):
            m.d.sync += [bl.eq(0), bq.eq(0), ph.eq(0), st.eq(first), act.eq(first != U.IDLE),
                         bias_rd.eq(first == U.B_ISSUE)]
        # ``bpair``: the pair of bias ``bq``, loaded while the entries run (bias 0's), in a bias's
        # B_ISSUE and in the last two cycles of B_RND (the next bias's: ``bq`` moves on after
        # B_RND's second cycle; the rounding read this bias's pair in its first), so that it
        # is there in B_ISSUE and ``rate_q`` in B_S0. (A lane with neurons has entries: every
        # neuron has a run in each part, a dummy at least, so the biases never come first.)
        b_late = (st == U.B_RND) & b_ph[1]
        with m.If(~bias_rd | (st == U.B_ISSUE) | b_late):
            m.d.sync += bpair.eq(bc.data.pair)
        # an entry's fields and stored weight, kept at a+4 (the last cycle the walk holds them)
        with m.If(wv[0]):
            m.d.sync += [eu.eq(self.entry), wst.eq(self.weight)]
        with m.Switch(st):
            with m.Case(U.W_RUN):
                m.d.sync += ph.eq(ph + 1)
                with m.If((ph == 3) & self.last):
                    m.d.sync += st.eq(U.W_DRAIN)
            with m.Case(U.W_DRAIN):  # the last entry's operands M and its products (ph 0, 1)
                m.d.sync += ph.eq(ph + 1)
                with m.If(ph == 1):
                    m.d.sync += st.eq(after_w)
                    if after_w == U.B_ISSUE:
                        m.d.sync += bias_rd.eq(1)
                    else:
                        m.d.sync += act.eq(0)
            with m.Case(U.B_ISSUE):
                m.d.sync += st.eq(U.B_S0)
            with m.Case(U.B_S0):
                m.d.sync += [bst.eq(self.bias), st.eq(U.B_SB)]
            with m.Case(U.B_SB):
                m.d.sync += st.eq(U.B_MUL)
            with m.Case(U.B_MUL):
                m.d.sync += st.eq(U.B_PD)
            with m.Case(U.B_PD):  # (sigma D_b M into PD, above)
                m.d.sync += st.eq(U.B_RND)
            with m.Case(U.B_RND):  # four cycles (b_ph): round, its add, add, saturate and write
                m.d.sync += b_ph.eq(b_ph + 1)
                with m.If(b_ph == 1):
                    m.d.sync += bq.eq(bq + 1)
                with m.If(b_ph == 3):
                    m.d.sync += [b_ph.eq(0), bl.eq(bl + 1), st.eq(Mux(bl == self.n_own - 1, U.IDLE, U.B_ISSUE))]
                    with m.If(bl == self.n_own - 1):
                        m.d.sync += act.eq(0)
        # The random word of the event is there at an entry's a+8 / in B_RND (§5): only where
        # the rounding draws one, its top bits, as many as the widest shift rounds away. The
        # event index is registered each cycle of the entries from the walk's ``edge`` (the one
        # of the entry's ph 3 is the one its word is of) and in B_ISSUE (the bias's n_slots +
        # nidx, its neuron's index read from ``bconst``; held through the bias's cycles) into
        # ``ev_idx``, and the hash takes the four cycles to a+8 / B_RND (RandomWord in four
        # pipelined stages, each starting from a register; with three, the first stage's carry
        # chains were the 8-lane demo's ECP5 critical path).
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
        # The write-back in four stages: a+8 registers the rounding's floor and round-up bit
        # (the pair's shift selected) and moves the stored weight and its address on to
        # ``wst2``, ``w_addr`` (``eu`` and ``wst`` take the next entry's in that cycle), a+9
        # adds them, a+10 adds the step to the stored value, a+11 saturates and writes; a
        # bias's are B_RND's four cycles.
        qW_r, upW_r, qB_r, upB_r = Signal.like(qW), Signal(), Signal.like(qB), Signal()
        dW_r, dB_r = Signal((qW_r + upW_r).shape()), Signal((qB_r + upB_r).shape())
        w_sum, b_sum = Signal((wst2 + dW_r).shape()), Signal((bst + dB_r).shape())
        w_en1, w_en2, w_en = Signal(), Signal(), Signal()
        w_addr = Signal.like(eu.waddr)
        m.d.sync += [w_en1.eq(wv[4] & ~eu.dummy & ~eu.mirror),
                     qW_r.eq(qW), upW_r.eq(upW),
                     w_en2.eq(w_en1), dW_r.eq(qW_r + upW_r),
                     w_en.eq(w_en2), w_sum.eq(wst2 + dW_r)]
        with m.If(wv[4]):  # (held to the write, a+11: the next entry's come at a+12)
            m.d.sync += [wst2.eq(wst), w_addr.eq(eu.waddr)]
        with m.If(b_ph == 0):
            m.d.sync += [qB_r.eq(qB), upB_r.eq(upB)]
        with m.If(b_ph == 1):
            m.d.sync += dB_r.eq(qB_r + upB_r)
        m.d.sync += b_sum.eq(bst + dB_r)
        m.d.comb += [self.busy.eq(act | wv.any() | w_en1 | w_en2 | w_en),
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

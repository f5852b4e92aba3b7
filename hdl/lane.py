"""One multiply-accumulate lane: relaxation steps and the local weight update.

A lane owns a set of non-input neurons (``layout.py``) and walks their fan-in
lists. Per relaxation step (docs/numerics.md §4) it streams one entry per
cycle through a 4-stage pipeline

    I  issue: connection-ROM and weight-RAM reads at the entry address
    F  fields: the source's state read (an input, or the bank of the lane
       that owns the source neuron), MAC weight = sat(W_store >> (fWs - fW))
    M  multiply w * u
    A  accumulate; on a neuron's last entry, hand the sum to the neuron unit

and a 3-stage neuron unit (bias, eps step, nudge, rounding, clip) that
writes the new state into the next-state buffer of every lane's copy of its
bank. The neuron unit also compares each new state with the neuron's old one
and raises ``moved``, a flag that stays set until the next step starts, when
a state changed by more than ``settle_tol`` LSBs (the settle rule,
docs/numerics.md §4a; the controller ORs the lanes' flags). In the update
phase (§6) a small state machine walks the same entries, 6 cycles each, then
the lane's biases, 5 cycles each.

State memories: each lane keeps a copy of every lane's states ("banks": bank
w holds the neurons of lane w, written only by lane w, read only by this
lane), three buffers deep: the relaxation alternates two of them and the free
equilibrium s^0 stays in the third during the weakly-clamped phase.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .arith import round_shift, saturate, wrap
from .params import CoreParams, bits_for
from .rng import RandomWord

# Latencies (cycles), read by the cycle model (core.py) and the tests.
MAC_LATENCY = 4  # entry issue -> accumulator holds the entry
NEURON_LATENCY = 4  # last entry accumulated -> the new state is written into the banks
UPDATE_CYCLES_PER_ENTRY = 6
UPDATE_CYCLES_PER_BIAS = 5

MODE_RELAX = 0
MODE_UPDATE = 1


def bank_write_signature(P: CoreParams):
    depth = 3 * P.layout.neurons_per_lane
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(bits_for(depth)),
        "data": Out(P.state.n_word),
    })


def host_lane_signature(P: CoreParams):
    """Host access to one lane's memories while the core is idle."""
    lay = P.layout
    width = max(bits_for(lay.lane_depth), bits_for(3 * lay.neurons_per_lane), bits_for(lay.n_in))
    return wiring.Signature({
        "region": Out(3),  # 0 weights, 1 biases, 2 targets, 3 bank read (addr = bank * 2^w + offset), 4 inputs
        "addr": Out(width + bits_for(lay.P) + 1),
        "wdata": Out(32),
        "we": Out(1),
        "rdata": In(32),
    })


REGION_WEIGHT, REGION_BIAS, REGION_TARGET, REGION_BANK, REGION_INPUT = range(5)


class Lane(wiring.Component):
    def __init__(self, params: CoreParams, index: int, weights=None, biases=None):
        self.p = params
        self.index = index
        lay = params.layout
        self.lane = lay.lanes[index]
        self.weights = weights if weights is not None else [0] * len(self.lane.entries)
        self.biases = biases if biases is not None else [0] * len(self.lane.neurons)
        self.n_entries = len(self.lane.entries)
        self.n_own = len(self.lane.neurons)
        self.ea_bits = bits_for(self.n_entries + 1)
        self.bank_depth = [3 * len(l.neurons) for l in lay.lanes]
        self.bank_bits = bits_for(3 * lay.neurons_per_lane)
        super().__init__({
            "start": In(1),  # pulse: begin a relaxation step or the update pass
            "mode": In(1),
            "nudge": In(1),  # weakly-clamped phase: output neurons get the beta term
            "beta_neg": In(1),
            "rd_buf": In(2),
            "wr_buf": In(2),
            "s0_buf": In(2),
            "sb_buf": In(2),
            "ev_base": In(32),  # state stream: example base + t * S; update stream: u * (E + S)
            "settle_tol": In(params.state.n_word),  # §4a: largest change (LSBs) that still counts as quiet
            "busy": Out(1),
            "moved": Out(1),  # §4a: some state of this step changed by more than settle_tol (sticky)
            "result": Out(bank_write_signature(params)),  # this lane's new states, to every lane
            "bank_in": In(bank_write_signature(params)).array(lay.P),  # writes into this lane's copies
            "host": In(host_lane_signature(params)),
        })

    # ------------------------------------------------------------------ ROM
    def _entry_layout(self):
        lay = self.p.layout
        return data.StructLayout({
            "sel_in": 1,
            "saddr": bits_for(max(lay.n_in, lay.neurons_per_lane)),
            "sbank": bits_for(lay.P),
            "nloc": bits_for(lay.neurons_per_lane),
            "nidx": bits_for(lay.S),
            "edge": bits_for(lay.n_edges + 1),
            "pair": bits_for(len(lay.pairs)),
            "first": 1,
            "last": 1,
            "dummy": 1,
            "out": 1,
        })

    def _entry_init(self, layout):
        lay = self.p.layout
        rows = []
        for e in self.lane.entries:
            if e.src_input:
                saddr, sbank = e.src, 0
            else:
                saddr, sbank = int(lay.local[e.src]), int(lay.owner[e.src])
            rows.append({
                "sel_in": int(e.src_input), "saddr": saddr, "sbank": sbank,
                "nloc": int(lay.local[e.neuron]), "nidx": e.neuron, "edge": max(e.edge, 0), "pair": e.pair,
                "first": int(e.first), "last": int(e.last), "dummy": int(e.dummy),
                "out": int(e.neuron >= lay.out_first),
            })
        return rows

    def elaborate(self, platform):
        m = Module()
        p = self.p
        num = p.num
        lay = p.layout
        P = lay.P
        ell = self.index
        S_fmt, W_fmt, Ws_fmt, B_fmt = num.state, num.weight, num.weight_store, num.bias
        fS, fa = S_fmt.n_frac, p.fa
        one = S_fmt.one()

        # ---------------------------------------------------------- memories
        elayout = self._entry_layout()
        rom = m.submodules.conn = memory.Memory(shape=elayout, depth=max(self.n_entries, 1),
                                                init=self._entry_init(elayout))
        rom_rd = rom.read_port()
        wmem = m.submodules.weights = memory.Memory(shape=signed(Ws_fmt.n_word), depth=max(self.n_entries, 1),
                                                    init=self.weights)
        w_rd = wmem.read_port()
        w_wr = wmem.write_port()
        bmem = m.submodules.biases = memory.Memory(shape=signed(B_fmt.n_word), depth=max(self.n_own, 1),
                                                   init=self.biases)
        b_rd = bmem.read_port()
        b_wr = bmem.write_port()
        tmem = m.submodules.targets = memory.Memory(shape=1, depth=max(self.n_own, 1), init=[])
        t_rd = tmem.read_port()
        t_wr = tmem.write_port()
        xmem = m.submodules.inputs = memory.Memory(shape=S_fmt.n_word, depth=lay.n_in, init=[])
        x_rd = xmem.read_port()
        x_wr = xmem.write_port()
        # Per-neuron constants of this lane's biases: global index and rate pair.
        brow = data.StructLayout({"nidx": bits_for(lay.S), "pair": bits_for(len(lay.pairs))})
        bconst = m.submodules.bconst = memory.Memory(
            shape=brow, depth=max(self.n_own, 1),
            init=[{"nidx": i, "pair": p.bias_pair(i)} for i in self.lane.neurons])
        bc_rd = bconst.read_port()
        banks, bank_rd, own_rd = [], [], None
        for w in range(P):
            bm = memory.Memory(shape=S_fmt.n_word, depth=max(self.bank_depth[w], 1), init=[])
            m.submodules[f"bank{w}"] = bm
            banks.append(bm)
            bank_rd.append(bm.read_port())
            wp = bm.write_port()
            m.d.comb += [wp.en.eq(self.bank_in[w].en), wp.addr.eq(self.bank_in[w].addr),
                         wp.data.eq(self.bank_in[w].data)]
            if w == ell:
                own_rd = bm.read_port()
        bank_data = Array(r.data for r in bank_rd)

        def offset(buf, w):
            n = len(lay.lanes[w].neurons)
            return Array([Const(0), Const(n), Const(2 * n), Const(0)])[buf]

        # --------------------------------------------------------- control
        running = Signal()
        ea = Signal(self.ea_bits)
        v1, v2, v3 = Signal(), Signal(), Signal()
        e1 = Signal(elayout)
        e2 = Signal(elayout)
        w1 = Signal(signed(W_fmt.n_word))
        prod = Signal(signed(W_fmt.n_word + S_fmt.n_word + 1))
        acc = Signal(signed(p.acc_exact_bits))
        # neuron unit
        n0 = Signal()
        n0_acc = Signal(signed(p.acc_exact_bits))
        n0_loc = Signal(bits_for(lay.neurons_per_lane))
        n0_idx = Signal(bits_for(lay.S))
        n0_out = Signal()
        n1 = Signal()
        n1_acc = Signal(signed(p.acc_exact_bits))
        n1_loc = Signal.like(n0_loc)
        n1_out = Signal()
        vbits = p.acc_exact_bits + p.k + p.nudge_shift + S_fmt.n_word + 4
        n2 = Signal()
        n2_V = Signal(signed(vbits))
        n2_loc = Signal.like(n0_loc)
        n2_old = Signal(S_fmt.n_word)  # the neuron's old state (read in N1), for the settle rule (§4a)
        moved = Signal()
        res_en = Signal()
        res_addr = Signal(self.bank_bits)
        res_data = Signal(S_fmt.n_word)

        rng_state = m.submodules.rng_state = RandomWord(num.seed_state)
        rng_update = m.submodules.rng_update = RandomWord(num.seed_update)

        upd = Signal(4)  # update FSM state
        upd_on = Signal()
        bl = Signal(bits_for(self.n_own + 1))  # bias walk index

        relax_busy = running | v1 | v2 | v3 | n0 | n1 | n2 | res_en
        m.d.comb += self.busy.eq(relax_busy | upd_on)

        # ------------------------------------------------------- relaxation
        with m.If(self.start & (self.mode == MODE_RELAX)):
            m.d.sync += [running.eq(self.n_entries > 0), ea.eq(0)]
        with m.Elif(running):
            m.d.sync += ea.eq(ea + 1)
            with m.If(ea == self.n_entries - 1):
                m.d.sync += running.eq(0)
        # Stage I -> F
        m.d.sync += v1.eq(running)
        # Stage F: entry fields and weight available
        e_f = Signal(elayout)
        m.d.comb += e_f.eq(rom_rd.data)
        w_mac = saturate(w_rd.data >> (Ws_fmt.n_frac - W_fmt.n_frac), W_fmt)
        m.d.sync += [v2.eq(v1), e1.eq(e_f), w1.eq(w_mac)]
        # Stage M: source value available
        u = Signal(S_fmt.n_word)
        m.d.comb += u.eq(Mux(e1.sel_in, x_rd.data, bank_data[e1.sbank]))
        m.d.sync += [v3.eq(v2), e2.eq(e1), prod.eq(Mux(e1.dummy, 0, w1 * u))]
        # Stage A
        acc_next = Signal.like(acc)
        m.d.comb += acc_next.eq(Mux(e2.first, 0, acc) + prod)
        m.d.sync += n0.eq(0)
        with m.If(v3):
            m.d.sync += acc.eq(acc_next)
            with m.If(e2.last):
                m.d.sync += [n0.eq(1), n0_acc.eq(acc_next), n0_loc.eq(e2.nloc), n0_idx.eq(e2.nidx),
                             n0_out.eq(e2.out)]
        # Neuron unit N0: bias, own state, target reads; random word of event ev_base + i
        m.d.sync += [n1.eq(n0), n1_acc.eq(n0_acc), n1_loc.eq(n0_loc), n1_out.eq(n0_out)]
        # N1: V = s + eps (acc - s), then the nudge (§4 step 4, eq5 or after-step), at fraction fa + k
        acc_b = n1_acc + (b_rd.data << (fa - B_fmt.n_frac))
        if num.acc_overflow == "wrap":
            acc_b = wrap(acc_b, p.acc_fmt)
        elif num.acc_overflow == "saturate":
            acc_b = saturate(acc_b, p.acc_fmt)
        s_cur = own_rd.data
        s_al = s_cur << (fa - fS)
        V = (s_al << p.k) + acc_b - s_al
        if p.nudge == "eq5":  # V -= sigma (s - t) << (fa - fS + 1 + m)
            t_val = Mux(t_rd.data, one, 0)
            nud = (s_cur - t_val) << p.nudge_shift
            V_n = Mux(self.nudge & n1_out, Mux(self.beta_neg, V + nud, V - nud), V)
        else:  # after-step: V += sigma (T - V) 2^g, T the target at V's fraction (floor for g < 0)
            T = Mux(t_rd.data, Const(1 << (fa + p.k), unsigned(fa + p.k + 1)), 0)
            dev = T - V
            nud = dev << p.g if p.g >= 0 else dev >> -p.g
            V_n = Mux(self.nudge & n1_out, Mux(self.beta_neg, V - nud, V + nud), V)
        m.d.sync += [n2.eq(n1), n2_V.eq(V_n), n2_loc.eq(n1_loc), n2_old.eq(s_cur)]
        # N2: round, clip to [0, 1], write into every lane's bank `ell`
        r = round_shift(n2_V, p.state_shift, num.state_rounding, rng_state.word)
        s_new = Mux(r < 0, 0, Mux(r > one, one, r))
        m.d.sync += [res_en.eq(n2), res_addr.eq(offset(self.wr_buf, ell) + n2_loc), res_data.eq(s_new[:S_fmt.n_word])]
        # Settle rule (§4a): |s_new - s_old| > settle_tol raises the sticky flag, which the
        # start of the next relaxation step clears (both in [0, 2^fS]: unsigned words).
        s_w = s_new[:S_fmt.n_word]
        change = Mux(s_w >= n2_old, s_w - n2_old, n2_old - s_w)
        with m.If(self.start & (self.mode == MODE_RELAX)):
            m.d.sync += moved.eq(0)
        with m.Elif(n2 & (change > self.settle_tol)):
            m.d.sync += moved.eq(1)
        m.d.comb += self.moved.eq(moved)

        # ---------------------------------------------------------- update
        U_ISSUE, U_FIELDS, U_S0, U_SB, U_MUL, U_RND, B_ISSUE, B_S0, B_SB, B_MUL, B_RND = range(1, 12)
        eu = Signal(elayout)
        wst = Signal(signed(Ws_fmt.n_word))
        s0j, s0i, sbj, sbi = (Signal(S_fmt.n_word, name=n) for n in ("s0j", "s0i", "sbj", "sbi"))
        Dbits = 2 * S_fmt.n_word + 2
        D = Signal(signed(Dbits))
        max_M = max(p.pair_mult(q).M for q in range(len(lay.pairs)))
        prodbits = Dbits + max_M.bit_length() + 2
        PD = Signal(signed(prodbits))
        bst = Signal(signed(B_fmt.n_word))
        bpair = Signal(bits_for(len(lay.pairs)))
        Mtab = Array(Const(p.pair_mult(q).M, unsigned(max(max_M.bit_length(), 1))) for q in range(len(lay.pairs)))

        def round_by_pair(value, pair, shift_of, word):
            """round(value, d[pair]) with the pair's constant shift (one unit per distinct shift)."""
            shifts = sorted({shift_of(q) for q in range(len(lay.pairs))})
            outs = {d: round_shift(value, d, num.rounding, word) for d in shifts}
            res = Signal(signed(prodbits + 2 + max(0, -min(shifts))))
            with m.Switch(pair):
                for q in range(len(lay.pairs)):
                    with m.Case(q):
                        m.d.comb += res.eq(outs[shift_of(q)])
            return res

        m.d.comb += upd_on.eq(upd != 0)
        with m.If(self.start & (self.mode == MODE_UPDATE)):
            m.d.sync += [ea.eq(0), bl.eq(0)]
            m.d.sync += upd.eq(U_ISSUE if self.n_entries > 0 else (B_ISSUE if self.n_own > 0 else 0))
        sigma_neg = self.beta_neg
        with m.Switch(upd):
            with m.Case(U_ISSUE):
                m.d.sync += upd.eq(U_FIELDS)
            with m.Case(U_FIELDS):
                m.d.sync += [eu.eq(rom_rd.data), wst.eq(w_rd.data), upd.eq(U_S0)]
            with m.Case(U_S0):
                m.d.sync += [s0j.eq(Mux(eu.sel_in, x_rd.data, bank_data[eu.sbank])), s0i.eq(own_rd.data),
                             upd.eq(U_SB)]
            with m.Case(U_SB):
                sbj_v = Mux(eu.sel_in, x_rd.data, bank_data[eu.sbank])
                sbi_v = own_rd.data
                d_ss = sbi_v * sbj_v - s0i * s0j
                m.d.sync += [sbj.eq(sbj_v), sbi.eq(sbi_v), D.eq(Mux(eu.dummy, 0, d_ss)), upd.eq(U_MUL)]
            with m.Case(U_MUL):
                dm = D * Mtab[eu.pair]
                m.d.sync += [PD.eq(Mux(sigma_neg, -dm, dm)), upd.eq(U_RND)]
            with m.Case(U_RND):
                m.d.sync += ea.eq(ea + 1)
                with m.If(ea == self.n_entries - 1):
                    m.d.sync += upd.eq(B_ISSUE if self.n_own > 0 else 0)
                with m.Else():
                    m.d.sync += upd.eq(U_ISSUE)
            with m.Case(B_ISSUE):
                m.d.sync += upd.eq(B_S0)
            with m.Case(B_S0):
                m.d.sync += [s0i.eq(own_rd.data), bst.eq(b_rd.data), bpair.eq(bc_rd.data.pair), upd.eq(B_SB)]
            with m.Case(B_SB):
                m.d.sync += [D.eq(own_rd.data - s0i), upd.eq(B_MUL)]
            with m.Case(B_MUL):
                dm = D * Mtab[bpair]
                m.d.sync += [PD.eq(Mux(sigma_neg, -dm, dm)), upd.eq(B_RND)]
            with m.Case(B_RND):
                m.d.sync += bl.eq(bl + 1)
                with m.If(bl == self.n_own - 1):
                    m.d.sync += upd.eq(0)
                with m.Else():
                    m.d.sync += upd.eq(B_ISSUE)
        # Random word of the update event: issued in U_SB / B_SB, ready in U_RND / B_RND.
        bc = Signal(brow)
        m.d.comb += bc.eq(bc_rd.data)
        m.d.comb += rng_update.index.eq(
            Mux(upd == B_SB, self.ev_base + lay.n_edges + bc.nidx, self.ev_base + eu.edge)[:32])
        dW = round_by_pair(PD, eu.pair, p.weight_shift, rng_update.word)
        dB = round_by_pair(PD, bpair, p.bias_shift, rng_update.word)
        w_new = saturate(wst + dW, Ws_fmt)
        b_new = saturate(bst + dB, B_fmt)

        # ------------------------------------------------- memory port muxes
        h = self.host
        idle = ~self.busy
        # Default: relaxation addressing.
        for w in range(P):
            m.d.comb += bank_rd[w].addr.eq(offset(self.rd_buf, w) + e_f.saddr)
        m.d.comb += [
            x_rd.addr.eq(e_f.saddr),
            rom_rd.addr.eq(ea),
            w_rd.addr.eq(ea),
            own_rd.addr.eq(offset(self.rd_buf, ell) + n0_loc),
            b_rd.addr.eq(n0_loc),
            t_rd.addr.eq(n0_loc),
            bc_rd.addr.eq(bl),
            rng_state.index.eq((self.ev_base + n0_idx)[:32]),
        ]
        # Update addressing overrides.
        with m.Switch(upd):
            with m.Case(U_FIELDS):  # s0 reads from the fields just read
                ef = rom_rd.data
                for w in range(P):
                    m.d.comb += bank_rd[w].addr.eq(offset(self.s0_buf, w) + ef.saddr)
                m.d.comb += [x_rd.addr.eq(ef.saddr), own_rd.addr.eq(offset(self.s0_buf, ell) + ef.nloc)]
            with m.Case(U_S0):  # s^beta reads
                for w in range(P):
                    m.d.comb += bank_rd[w].addr.eq(offset(self.sb_buf, w) + eu.saddr)
                m.d.comb += [x_rd.addr.eq(eu.saddr), own_rd.addr.eq(offset(self.sb_buf, ell) + eu.nloc)]
            with m.Case(B_ISSUE):
                m.d.comb += [own_rd.addr.eq(offset(self.s0_buf, ell) + bl), b_rd.addr.eq(bl)]
            with m.Case(B_S0):
                m.d.comb += own_rd.addr.eq(offset(self.sb_buf, ell) + bl)
        # Writes: weights and biases by the update FSM, or by the host when idle.
        with m.If(upd == U_RND):
            m.d.comb += [w_wr.en.eq(~eu.dummy), w_wr.addr.eq(ea), w_wr.data.eq(w_new)]
        with m.Elif(idle & h.we & (h.region == REGION_WEIGHT)):
            m.d.comb += [w_wr.en.eq(1), w_wr.addr.eq(h.addr), w_wr.data.eq(h.wdata)]
        with m.If(upd == B_RND):
            m.d.comb += [b_wr.en.eq(1), b_wr.addr.eq(bl), b_wr.data.eq(b_new)]
        with m.Elif(idle & h.we & (h.region == REGION_BIAS)):
            m.d.comb += [b_wr.en.eq(1), b_wr.addr.eq(h.addr), b_wr.data.eq(h.wdata)]
        m.d.comb += [t_wr.en.eq(idle & h.we & (h.region == REGION_TARGET)), t_wr.addr.eq(h.addr),
                     t_wr.data.eq(h.wdata[0])]
        m.d.comb += [x_wr.en.eq(idle & h.we & (h.region == REGION_INPUT)), x_wr.addr.eq(h.addr),
                     x_wr.data.eq(h.wdata)]
        # Host reads (idle): weights, biases, bank contents.
        hb = bits_for(3 * lay.neurons_per_lane)
        with m.If(idle):
            m.d.comb += [w_rd.addr.eq(h.addr), b_rd.addr.eq(h.addr)]
            for w in range(P):
                m.d.comb += bank_rd[w].addr.eq(h.addr[:hb])
        h_region_q = Signal(3)
        h_bank_q = Signal(bits_for(P))
        m.d.sync += [h_region_q.eq(h.region), h_bank_q.eq(h.addr[hb:])]
        with m.Switch(h_region_q):
            with m.Case(REGION_WEIGHT):
                m.d.comb += h.rdata.eq(w_rd.data.as_signed())
            with m.Case(REGION_BIAS):
                m.d.comb += h.rdata.eq(b_rd.data.as_signed())
            with m.Case(REGION_BANK):
                m.d.comb += h.rdata.eq(bank_data[h_bank_q])

        # This lane's results, to every lane's copy of bank `ell`.
        m.d.comb += [self.result.en.eq(res_en), self.result.addr.eq(res_addr), self.result.data.eq(res_data)]
        return m

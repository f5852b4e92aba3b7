"""The relaxation's multiply-accumulate walk over a lane's fan-in lists (§2)."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..arith import saturate
from ..params import CoreParams
from .signatures import check_lane, entry_layout, neuron_sum_signature


class MacPipeline(wiring.Component):
    """One multiply-accumulate per cycle over a range of lane ``index``'s entries (the
    FaninStore's walk: the drive entries in the drive pass, the step entries in a relaxation
    step), in six stages:

        I  issue: ``advance`` the FaninStore's walk (its read of the entry is issued)
        F  fields: ``entry`` and the stored weight's top bits W >> (fWs - fW) arrive (0 for a
           dummy entry: it multiplies by 0); the source's read is issued (``src_loc``: an
           input index or the source's local index in bank ``entry.sbank``)
        M  operands: u = the input ``x_data`` or ``bank_data[sbank]``; the MAC weight
           w = sat_w(W >> (fWs - fW)) (docs/numerics.md §1) and u' = u - 2^(n-1) (u's top bit
           inverted: a signed word of u's n bits) registered (the DSP's input registers), and
           a copy of w
        P  product: w * u' (exact) registered (the DSP's product register)
        A  accumulate (exact, restarted at a neuron's first entry) sum w u' and sum w
        C  on a neuron's last entry: sum w u = sum w u' + 2^(n-1) sum w (§2, exact) goes out
           on ``sum`` (one cycle ``valid``) to the NeuronUnit (in the drive pass: the
           neuron's input part; in a step: its non-input part).

    Ports: ``start`` (in, pulse: walk the range once; the FaninStore restarts its walk at the
    range's first entry),
    ``advance`` (out: the walk moves on), ``last`` (in: the walk is at the last entry),
    ``entry`` and ``weight`` (in, one cycle after the entry's issue; ``weight``: the stored
    weight without the ``mac_shift`` low bits the MAC drops, W >> (fWs - fW)), ``src_loc`` (out, from
    ``entry``), ``x_data`` and ``bank_data[P]`` (in, one cycle after ``src_loc``), ``sum``
    (out: valid, acc, loc, idx, out), ``busy`` (out: a walk is in the pipeline).
    """

    LATENCY = 6  # an entry's issue -> ``sum`` holds the neuron whose last entry it is

    # The multiply w * u' runs between registers that only it reads, without reset, with
    # signed operands of their full widths and a product of exactly their width, so that
    # synthesis packs all three into the DSP block (SB_MAC16: A_REG, B_REG and the partial
    # products' registers; docs/rtl.md "Registered DSPs"): no path into or out of the DSP
    # is combinational. (A zero-extended u, with a constant top bit, is not packed; hence u'.)

    def __init__(self, params: CoreParams, index: int):
        check_lane(params, index)
        self.p = params
        self.n_entries = params.layout.lanes[index].n_entries
        el = entry_layout(params)
        sw = params.state.n_word
        super().__init__({
            "start": In(1),
            "advance": Out(1), "last": In(1),
            "entry": In(el),
            "weight": In(signed(max(params.num.weight_store.n_word - params.mac_shift, 1))),
            "src_loc": Out(el.members["saddr"]),
            "x_data": In(sw),
            "bank_data": In(sw).array(params.layout.P),
            "sum": Out(neuron_sum_signature(params)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p, n = self.p, self.n_entries
        W, S = p.num.weight, p.state
        running, v1, v2, v3, v4 = Signal(), Signal(), Signal(), Signal(), Signal()
        last_v = Signal()  # C: a neuron's sums are held
        # the entry's fields each stage still needs: F -> M the source too
        el = entry_layout(p).members
        a_fields = {k: el[k] for k in ("first", "last", "nloc", "nidx", "out")}
        e1 = Signal(data.StructLayout({k: el[k] for k in ("sel_in", "sbank")} | a_fields))
        e2, e3, e4 = (Signal(data.StructLayout(a_fields)) for _ in range(3))
        w1 = Signal.like(self.weight)  # the stored weight's top bits, 0 for a dummy (saturated in M)
        w2, u2 = Signal(signed(W.n_word), reset_less=True), Signal(signed(S.n_word), reset_less=True)
        prod = Signal(signed(W.n_word + S.n_word), reset_less=True)
        wc2, wc3 = Signal(signed(W.n_word)), Signal(signed(W.n_word))  # w for sum w
        wsum = Signal(signed(p.acc_exact_bits), reset_less=True)
        half = S.n_word - 1  # u = u' + 2^half
        acc = Signal(signed(p.acc_exact_bits), reset_less=True)
        m.d.comb += [self.busy.eq(running | v1 | v2 | v3 | v4 | last_v), self.advance.eq(running)]
        # I: walk the range (every lane's neuron has an entry in both parts: n > 0)
        with m.If(self.start):
            m.d.sync += running.eq(n > 0)
        with m.Elif(running & self.last):
            m.d.sync += running.eq(0)
        # F: fields and stored weight in; MAC weight (§1), 0 for a dummy; source read issued
        m.d.comb += self.src_loc.eq(self.entry.saddr)
        m.d.sync += [v1.eq(running), v2.eq(v1), w1.eq(Mux(self.entry.dummy, 0, self.weight)),
                     *[getattr(e1, k).eq(getattr(self.entry, k)) for k in e1.shape().members]]
        # M: source value in; both operands registered
        u = Mux(e1.sel_in, self.x_data, Array(self.bank_data)[e1.sbank])
        u_signed = (u ^ (1 << half)).as_signed()  # u - 2^half: the top bit inverted
        # (the saturation here, not in F: a block RAM's output, the packed word's slot select
        # and the saturation in one cycle were the UP5K 784-input designs' critical path)
        w_sat = saturate(w1, W)
        m.d.sync += [v3.eq(v2), w2.eq(w_sat), u2.eq(u_signed), wc2.eq(w_sat),
                     *[getattr(e2, k).eq(getattr(e1, k)) for k in a_fields]]
        # P: the exact product
        m.d.sync += [v4.eq(v3), prod.eq(w2 * u2), wc3.eq(wc2), *[getattr(e3, k).eq(getattr(e2, k)) for k in a_fields]]
        # A: accumulate sum w u' and sum w (reset-less: the DSP's accumulator can take it)
        m.d.sync += last_v.eq(v4 & e3.last)
        with m.If(v4):
            m.d.sync += [acc.eq(Mux(e3.first, 0, acc) + prod), wsum.eq(Mux(e3.first, 0, wsum) + wc3),
                         *[getattr(e4, k).eq(getattr(e3, k)) for k in a_fields]]
        # C: after a neuron's last entry the accumulators hold its sums for this cycle (the next
        # entry, a first one, replaces them at its end): sum w u = sum w u' + 2^half sum w,
        # exact (it is within the accumulator's bound)
        s = self.sum
        m.d.sync += s.valid.eq(0)
        with m.If(last_v):
            m.d.sync += [s.valid.eq(1), s.acc.eq(acc + (wsum << half)), s.loc.eq(e4.nloc), s.idx.eq(e4.nidx),
                         s.out.eq(e4.out)]
        return m

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
    step), in four stages:

        I  issue: ``advance`` the FaninStore's walk (its read of the entry is issued)
        F  fields: ``entry`` and the stored weight's top bits W >> (fWs - fW) arrive; the
           source's read is issued (``src_loc``: an input index or the source's local index in
           bank ``entry.sbank``); MAC weight w = sat_w(W >> (fWs - fW)) (docs/numerics.md §1)
        M  multiply: u = the input ``x_data`` or ``bank_data[sbank]``; w * u (exact)
        A  accumulate (§2: exact, restarted at a neuron's first entry); on its last entry
           the sum goes out on ``sum`` (one cycle ``valid``) to the NeuronUnit (in the drive
           pass: the neuron's input part; in a step: its non-input part).

    Ports: ``start`` (in, pulse: walk the range once; the FaninStore restarts its walk at the
    range's first entry),
    ``advance`` (out: the walk moves on), ``last`` (in: the walk is at the last entry),
    ``entry`` and ``weight`` (in, one cycle after the entry's issue; ``weight``: the stored
    weight without the ``mac_shift`` low bits the MAC drops, W >> (fWs - fW)), ``src_loc`` (out, from
    ``entry``), ``x_data`` and ``bank_data[P]`` (in, one cycle after ``src_loc``), ``sum``
    (out: valid, acc, loc, idx, out), ``busy`` (out: a walk is in the pipeline).
    """

    LATENCY = 4  # an entry's issue -> the accumulator (or ``sum``) holds it

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
        running, v1, v2, v3 = Signal(), Signal(), Signal(), Signal()
        # the entry's fields each stage still needs: F -> M the source and the dummy flag too
        el = entry_layout(p).members
        a_fields = {k: el[k] for k in ("first", "last", "nloc", "nidx", "out")}
        e1 = Signal(data.StructLayout({k: el[k] for k in ("sel_in", "sbank", "dummy")} | a_fields))
        e2 = Signal(data.StructLayout(a_fields))
        w1 = Signal(signed(W.n_word))
        prod = Signal(signed(W.n_word + S.n_word + 1))
        acc = Signal(signed(p.acc_exact_bits))
        m.d.comb += [self.busy.eq(running | v1 | v2 | v3), self.advance.eq(running)]
        # I: walk the range (every lane's neuron has an entry in both parts: n > 0)
        with m.If(self.start):
            m.d.sync += running.eq(n > 0)
        with m.Elif(running & self.last):
            m.d.sync += running.eq(0)
        # F: fields and stored weight in; MAC weight (§1); source read issued
        m.d.comb += self.src_loc.eq(self.entry.saddr)
        m.d.sync += [v1.eq(running), v2.eq(v1), w1.eq(saturate(self.weight, W)),
                     *[getattr(e1, k).eq(getattr(self.entry, k)) for k in e1.shape().members]]
        # M: source value in; the exact product (a dummy entry multiplies by 0)
        u = Mux(e1.sel_in, self.x_data, Array(self.bank_data)[e1.sbank])
        m.d.sync += [v3.eq(v2), prod.eq(Mux(e1.dummy, 0, w1 * u)),
                     *[getattr(e2, k).eq(getattr(e1, k)) for k in a_fields]]
        # A: accumulate; a neuron's last entry hands its sum on
        acc_next = Signal.like(acc)
        m.d.comb += acc_next.eq(Mux(e2.first, 0, acc) + prod)
        s = self.sum
        m.d.sync += s.valid.eq(0)
        with m.If(v3):
            m.d.sync += acc.eq(acc_next)
            with m.If(e2.last):
                m.d.sync += [s.valid.eq(1), s.acc.eq(acc_next), s.loc.eq(e2.nloc), s.idx.eq(e2.nidx), s.out.eq(e2.out)]
        return m

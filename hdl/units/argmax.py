"""The arg-max of the output neurons after an inference (docs/numerics.md §4, "Arg-max")."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..enums import Region
from ..params import CoreParams
from .decoder import READ_LATENCY
from .signatures import lane_host_signature

PRED_BITS = 8


class ArgMax(wiring.Component):
    """Scans the output neurons' s^0 through lane 0's host port while ``run`` is high and
    keeps the first of equal maxima: a scan from output 0 that replaces the best only on a
    strictly larger state, as ``torch.argmax`` does in the model. While it does not run it
    passes ``upstream`` (the HostDecoder's access) through to ``lane`` unchanged.

    Ports: ``run`` (in: the ARGMAX phase), ``s0_buf`` (in: the buffer of s^0), ``upstream``
    (in), ``lane`` (out, to lane 0's HostPort), ``done`` (out: the last output has been
    compared; the controller ends the phase), ``pred`` (out: the index among the outputs).
    It takes ``CYCLES = n_out + READ_LATENCY + 1`` cycles (lane 0 answers ``READ_LATENCY``
    cycles after the address: the HostPort's registered access, the memory, its two
    registers).
    """

    def __init__(self, params: CoreParams):
        lay = params.layout
        self.p = params
        self.outs = [(int(lay.owner[i]), int(lay.local[i])) for i in range(lay.out_first, lay.S)]
        if not 1 <= len(self.outs) <= 1 << PRED_BITS:
            raise ValueError(f"outputs: {len(self.outs)} output neurons; the arg-max takes 1 to {1 << PRED_BITS}")
        self.CYCLES = self.cycles(params)
        super().__init__({
            "run": In(1), "s0_buf": In(2),
            "upstream": In(lane_host_signature(params)), "lane": Out(lane_host_signature(params)),
            "done": Out(1), "pred": Out(PRED_BITS),
        })

    @staticmethod
    def cycles(params: CoreParams) -> int:
        """Cycles of the ARGMAX phase: one read per output, the last read's READ_LATENCY cycles,
        the end."""
        return params.layout.S - params.layout.out_first + READ_LATENCY + 1

    def elaborate(self, platform):
        m = Module()
        n = len(self.outs)
        k = Signal(range(n + READ_LATENCY + 1))  # output being addressed
        # (valid, idx) d cycles after output idx was addressed, d = 1 .. READ_LATENCY; the last
        # is lane 0's read data
        delay = [(Signal(name=f"valid{d}"), Signal(PRED_BITS, name=f"idx{d}"))
                 for d in range(1, READ_LATENCY + 1)]
        valid, idx = delay[-1]
        best = Signal(self.p.state.n_word)
        for name in ("region", "sel", "buf", "addr", "wdata", "we"):  # pass-through
            m.d.comb += getattr(self.lane, name).eq(getattr(self.upstream, name))
        m.d.comb += self.upstream.rdata.eq(self.lane.rdata)
        m.d.comb += self.done.eq(self.run & (k == n + READ_LATENCY))
        with m.If(self.run):
            with m.Switch(k):
                for j, (w, loc) in enumerate(self.outs):
                    with m.Case(j):
                        m.d.comb += [self.lane.sel.eq(w), self.lane.addr.eq(loc)]
            m.d.comb += [self.lane.region.eq(Region.S0), self.lane.buf.eq(self.s0_buf), self.lane.we.eq(0)]
            m.d.sync += [k.eq(k + 1), delay[0][0].eq(k < n), delay[0][1].eq(k)]
            for (v, i), (pv, pi) in zip(delay[1:], delay):
                m.d.sync += [v.eq(pv), i.eq(pi)]
            data = self.lane.rdata[:self.p.state.n_word]
            with m.If(valid & ((idx == 0) | (data > best))):
                m.d.sync += [best.eq(data), self.pred.eq(idx)]
            with m.If(self.done):
                m.d.sync += [k.eq(0), *(v.eq(0) for v, _ in delay)]
        return m

"""Host access to one lane's memories (while the core is idle)."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..enums import Region
from ..params import CoreParams, bits_for
from .banks import bank_address
from .signatures import bank_list, bank_write_signature, check_lane, host_field_bits, loc_bits, \
    lane_host_signature, per_bank, write_signature

BANK_REGIONS = (Region.STATE, Region.S0, Region.FINAL)


class HostPort(wiring.Component):
    """Lane ``index``'s side of a host access (``host``, decoded by the core's HostDecoder):

    - writes (``host.we``, only while the core is idle): a stored weight (``Region.WEIGHT``)
      or bias (``BIAS``) or target bit (``TARGET``) when ``host.sel`` is this lane; an input
      (``INPUT``) into every lane; a start state (``STATE``) into bank ``host.sel`` of every
      lane (buffer ``host.buf``, 0). They come out on ``weight_wr``, ``bias_wr``,
      ``target_wr``, ``input_wr`` and ``state_wr`` (en, addr, data), for the lane to give
      the memories when they are not busy.
    - the access is registered while ``idle`` (in: the lane's memories are the host's), the
      write enables decoded before the register: a write comes out a cycle after ``host.we``.
    - reads (four cycles after the address): the lane points its FaninStore (weight), bias
      memory and StateBanks source port (``rd_addr``; ``bank_buf``, ``bank_loc``: bank
      ``sel``'s word in buffer ``buf``; all registered) at the host's address while it is
      idle; ``weight``, ``bias``, ``bank_data[P]`` (in) come back the next cycle, are
      registered (a register per kind), and ``host.rdata``, a register, holds the word of the
      access's region the cycle after (the core reads states through lane 0).
    """

    def __init__(self, params: CoreParams, index: int):
        check_lane(params, index)
        self.p = params
        self.index = index
        num, sw, fb = params.num, params.state.n_word, host_field_bits(params)
        super().__init__({
            "host": In(lane_host_signature(params)),
            "weight_wr": Out(write_signature(fb, signed(num.weight_store.n_word))),
            "bias_wr": Out(write_signature(fb, signed(num.bias.n_word))),
            "target_wr": Out(write_signature(fb, 1)),
            "input_wr": Out(write_signature(fb, sw)),
            **per_bank(params, "state_wr", lambda w: Out(bank_write_signature(params, w))),
            "idle": In(1), "rd_addr": Out(fb), "bank_buf": Out(2), "bank_loc": Out(loc_bits(params)),
            "weight": In(signed(num.weight_store.n_word)), "bias": In(signed(num.bias.n_word)),
            "bank_data": In(sw).array(params.layout.P),
        })
        self.state_wr = bank_list(self, params, "state_wr")  # ports state_wr0 ...

    def elaborate(self, platform):
        m = Module()
        h = self.host
        # The access, registered while the lane is idle (``idle``, the lane's own: the decoder's
        # access fans out to every lane, and with the lane's enable synthesis keeps a copy per
        # lane), with the write enables decoded before the register: a decode of the registered
        # lane field in front of a block RAM's address multiplexer was the 784-100-10 ECP5
        # design's critical path. No write is held over a start: ``we`` is 0 in the start's
        # cycle, the last one the lane is idle.
        region, sel = Signal(Region), Signal.like(h.sel)
        buf, addr, wdata = Signal.like(h.buf), Signal.like(h.addr), Signal.like(h.wdata)
        mine = h.sel == self.index
        flat = [(self.weight_wr, Region.WEIGHT, mine), (self.bias_wr, Region.BIAS, mine),
                (self.target_wr, Region.TARGET, mine), (self.input_wr, Region.INPUT, 1)]  # addressed by addr
        banked = [(self.state_wr[w], Region.STATE, h.sel == w) for w in range(self.p.layout.P)]
        with m.If(self.idle):
            m.d.sync += [region.eq(h.region), sel.eq(h.sel), buf.eq(h.buf), addr.eq(h.addr), wdata.eq(h.wdata)]
            m.d.sync += [port.en.eq(h.we & (h.region == r) & here) for port, r, here in flat + banked]
        for port, _, _ in flat:
            m.d.comb += [port.addr.eq(addr), port.data.eq(wdata)]
        for w, lane in enumerate(self.p.layout.lanes):
            port = self.state_wr[w]
            m.d.comb += [port.addr.eq(bank_address(buf, addr, len(lane.neurons))), port.data.eq(wdata)]
        m.d.comb += [self.rd_addr.eq(addr), self.bank_buf.eq(buf), self.bank_loc.eq(addr[:len(self.bank_loc)])]
        # The word of each kind registered on its own, then the region's: a block RAM's output
        # (5.6 ns on the ECP5), the weight's slot multiplexer and the region's multiplexer in one
        # cycle was the 784-100-10 ECP5 design's critical path.
        region_q, region_q2 = Signal(Region), Signal(Region)
        sel_q = Signal(bits_for(self.p.layout.P))
        w_q, b_q = Signal.like(self.weight), Signal.like(self.bias)
        s_q = Signal(self.p.state.n_word)
        m.d.sync += [region_q.eq(region), sel_q.eq(sel), region_q2.eq(region_q), w_q.eq(self.weight),
                     b_q.eq(self.bias), s_q.eq(Array(self.bank_data)[sel_q])]
        with m.Switch(region_q2):
            with m.Case(Region.WEIGHT):
                m.d.sync += h.rdata.eq(w_q)
            with m.Case(Region.BIAS):
                m.d.sync += h.rdata.eq(b_q)
            with m.Case(*BANK_REGIONS):
                m.d.sync += h.rdata.eq(s_q)
            with m.Default():
                m.d.sync += h.rdata.eq(0)
        return m

"""The host side of the core: the bus, the registers, the status bits and irq."""

from __future__ import annotations

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..enums import ADDR_BITS, REGION_SHIFT, Ctrl, Reg, Region, Status
from ..params import CoreParams, bits_for
from .signatures import check_steps, host_field_bits, lane_host_signature, rate_layout

# re -> rvalid and rdata: the HostPort's registered access, the memory, the word of each kind
# registered, then the region's (the decoder adds no register on a lane's word)
READ_LATENCY = 4

HOST_BUS = wiring.Signature({
    "addr": Out(ADDR_BITS),  # word address: (Region << REGION_SHIFT) | offset
    "wdata": Out(32),
    "we": Out(1),  # a write is taken in the cycle we is high
    "re": Out(1),
    "rdata": In(32),  # the read's data, with rvalid: READ_LATENCY cycles after re
    "rvalid": In(1),
})


def _has(view, flag):
    """A FlagView holds ``flag``."""
    return (view & flag).as_value().any()


class HostDecoder(wiring.Component):
    """Decodes ``bus`` (HOST_BUS, word addresses ``(region << 20) | offset``): the register
    file of region ``Region.REG`` (``Reg``: docs/hardware.md "Registers"), the start
    command, the sticky write-error bit, ``irq``, and the access handed to every lane
    (``lanes[l]``: region, the offset's lane field ``sel`` and local part ``addr``, the state
    buffer ``buf`` of a state region, ``wdata``, and ``we`` only while the core is idle).

    Ports: ``bus`` (in); ``busy``, ``done`` (in: the controller's); ``s0_buf``, ``final_buf``
    (in: where s^0 and the final state are); the read-only registers ``pred``,
    ``cycles_free``, ``cycles_nudged``, ``cycles_update``, ``cycles_total``, ``free_steps``
    (in); ``start`` (out, one cycle, registered: the cycle after a write of ``Ctrl.START``
    while idle) with ``infer`` (``Ctrl.INFER`` of that write); writes are refused and the
    status reads busy from the start write on (``busy`` or ``start``: ``host_busy`` (out), also
    the core's busy pin); the read/write
    registers ``beta_neg``, ``example``, ``update``, ``n_free``, ``n_nudged``,
    ``settle_tol``, ``settle_steps`` (out, reset to the design's values); ``rate`` (out: the
    registers ``Reg.RATE + q``, the on-chip update's multiplier M of each layer pair q, reset
    to the design's, §6); ``irq`` (out, level: set when ``done`` rises, cleared by a read of
    ``status`` or a start; the set wins); ``lanes[P]`` (out).
    """

    def __init__(self, params: CoreParams):
        self.p = params
        if host_field_bits(params) + (params.layout.P - 1).bit_length() > REGION_SHIFT:
            raise ValueError(f"memory map: {params.layout.P} lanes of {1 << host_field_bits(params)} words do "
                             f"not fit a region of 2^{REGION_SHIFT} words")
        check_steps(params)
        settle = params.settle
        sw = params.state.n_word
        super().__init__({
            "bus": In(HOST_BUS),
            "busy": In(1), "done": In(1), "s0_buf": In(2), "final_buf": In(2),
            "pred": In(8), "cycles_free": In(32), "cycles_nudged": In(32), "cycles_update": In(32),
            "cycles_total": In(32), "free_steps": In(16),
            "start": Out(1), "infer": Out(1), "host_busy": Out(1),
            "beta_neg": Out(1), "example": Out(32), "update": Out(32),
            "n_free": Out(16, init=params.n_free), "n_nudged": Out(16, init=params.n_nudged),
            # §4a: reset values from the design's rule; settle_steps = 0 is off
            "settle_tol": Out(sw, init=settle.tol if settle is not None else 0),
            "settle_steps": Out(16, init=settle.steps if settle is not None else 0),
            # §6: the on-chip update's rate multipliers, one register per layer pair
            "rate": Out(rate_layout(params), init=params.rate_reset()),
            "irq": Out(1),
            "lanes": Out(lane_host_signature(params)).array(params.layout.P),
        })

    def elaborate(self, platform):
        m = Module()
        bus, fb = self.bus, host_field_bits(self.p)
        region, off = bus.addr[REGION_SHIFT:], bus.addr[:REGION_SHIFT]
        # ``start`` is registered (the cycle after the write): the controller's start reaches
        # enables all over the chip, and the bus decode in front of it was the UP5K's critical
        # path. ``busy``: the core's, or a start on its way (both refuse writes alike).
        busy = self.host_busy
        m.d.comb += busy.eq(self.busy | self.start)
        reg_we = bus.we & (region == Region.REG) & ~busy
        ctrl, status = Ctrl(bus.wdata[:2]), Status(bus.wdata[:3])  # a write's bits, by name
        m.d.sync += [self.start.eq(reg_we & (off == Reg.CTRL) & _has(ctrl, Ctrl.START)),
                     self.infer.eq(_has(ctrl, Ctrl.INFER))]
        buf = Mux(region == Region.S0, self.s0_buf, Mux(region == Region.FINAL, self.final_buf, 0))
        for h in self.lanes:
            m.d.comb += [h.region.eq(region), h.sel.eq(off[fb:]), h.addr.eq(off[:fb]), h.buf.eq(buf),
                         h.wdata.eq(bus.wdata), h.we.eq(bus.we & ~busy)]
        # status bit 2: a write while busy is dropped (every region) and sets it; a write of
        # status with bit 2 set clears it (while idle)
        wr_err = Signal()
        with m.If(bus.we & busy):
            m.d.sync += wr_err.eq(1)
        with m.Elif(reg_we & (off == Reg.STATUS) & _has(status, Status.WR_ERR)):
            m.d.sync += wr_err.eq(0)
        done_prev = Signal()
        m.d.sync += done_prev.eq(self.done)
        with m.If(self.done & ~done_prev):
            m.d.sync += self.irq.eq(1)
        with m.Elif((bus.re & (region == Region.REG) & (off == Reg.STATUS)) | self.start):
            m.d.sync += self.irq.eq(0)
        writable = {Reg.BETA_NEG: self.beta_neg, Reg.EXAMPLE: self.example, Reg.UPDATE: self.update,
                    Reg.N_FREE: self.n_free, Reg.N_NUDGED: self.n_nudged, Reg.SETTLE_TOL: self.settle_tol,
                    Reg.SETTLE_STEPS: self.settle_steps}
        for q in range(len(self.p.layout.pairs)):
            writable[Reg.RATE.value + q] = self.rate[q]
        with m.If(reg_we):
            with m.Switch(off):
                for reg, sig in writable.items():
                    with m.Case(reg):
                        m.d.sync += sig.eq(bus.wdata)
        self._reads(m, region, off, fb, wr_err, writable, busy)
        return m

    def _reads(self, m, region, off, fb, wr_err, writable, busy):
        """Reads: four cycles of latency (READ_LATENCY); a register's value as it is three cycles
        after ``re``, registered; a lane's memory word from the lane's HostPort, which registers
        the access and then the word twice (states through lane 0).
        The lanes' memories are the far end of the chip from the bus: a memory's output, the
        lanes' multiplexer and the master's register in one cycle was the ECP5's critical path
        (docs/rtl.md "Bank addresses, registered selects, two-cycle host reads")."""
        bus = self.bus
        re1, re2, re3 = Signal(), Signal(), Signal()
        rq_region, rq_off = Signal.like(region), Signal.like(off)  # the cycle after re
        nl = bits_for(self.p.layout.P)
        # the one after: region, the offset's lane, and the register's number split into its low
        # bits and "the rest are 0" (a compare of the whole offset in front of ``reg_q`` was the
        # 8-lane demo's critical path on the ECP5)
        rbits = bits_for(max(Reg.RATE.value + len(self.p.layout.pairs), max(r.value for r in Reg)))
        rq2_region, rq2_lane, rq2_reg, rq2_low = Signal.like(region), Signal(nl), Signal(rbits), Signal()
        rq3_region, rq3_lane, rq3_reg, rq3_low = Signal.like(region), Signal(nl), Signal(rbits), Signal()
        rq4_region, rq4_lane = Signal.like(region), Signal(nl)  # the one after
        reg_q = Signal(32)
        m.d.sync += [re1.eq(bus.re), re2.eq(re1), re3.eq(re2), bus.rvalid.eq(re3), rq_region.eq(region),
                     rq_off.eq(off), rq2_region.eq(rq_region), rq2_lane.eq(rq_off[fb:fb + nl]),
                     rq2_reg.eq(rq_off[:rbits]), rq2_low.eq(rq_off[rbits:] == 0),
                     rq3_region.eq(rq2_region), rq3_lane.eq(rq2_lane), rq3_reg.eq(rq2_reg), rq3_low.eq(rq2_low),
                     rq4_region.eq(rq3_region), rq4_lane.eq(rq3_lane)]
        status = (busy * Status.BUSY.value) | (self.done * Status.DONE.value) | (wr_err * Status.WR_ERR.value)
        readable = {Reg.STATUS: status, **writable, Reg.PRED: self.pred,
                    Reg.CYCLES_FREE: self.cycles_free, Reg.CYCLES_NUDGED: self.cycles_nudged,
                    Reg.CYCLES_UPDATE: self.cycles_update, Reg.CYCLES_TOTAL: self.cycles_total,
                    Reg.FREE_STEPS: self.free_steps}
        m.d.sync += reg_q.eq(0)
        with m.If(rq3_low):
            with m.Switch(rq3_reg):
                for reg, val in readable.items():
                    with m.Case(reg):
                        m.d.sync += reg_q.eq(val)
        with m.Switch(rq4_region):
            with m.Case(Region.REG):
                m.d.comb += bus.rdata.eq(reg_q)
            with m.Case(Region.WEIGHT, Region.BIAS):
                m.d.comb += bus.rdata.eq(Array(h.rdata for h in self.lanes)[rq4_lane])
            with m.Case(Region.STATE, Region.S0, Region.FINAL):
                m.d.comb += bus.rdata.eq(self.lanes[0].rdata)

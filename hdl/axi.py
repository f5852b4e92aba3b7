"""The core behind an AXI4-Lite slave (``eqprop hdl generate --bus axi4lite``).

``AxiLiteCore`` wraps :class:`eqprop.hdl.core.Core`: 32-bit data, byte addresses
``4 x`` the core's word addresses (``ADDR_BITS + 2 = 26`` address bits; a register at
word offset ``k`` of region ``r`` is at byte address ``(r << 22) | (k << 2)``), the
low two address bits ignored. Ports: ``clk``, ``rst`` (active high, synchronous: the
core's), the five AXI4-Lite channels named ``s_axi_*`` (Xilinx's convention, which
Vivado's IP packager infers as an interface) and ``irq``.

- One transaction at a time; a write whose address and data have both arrived goes
  first, then a pending read. ``awprot``/``arprot`` are ignored.
- A write while the core is busy is answered with ``SLVERR`` (``bresp = 2``) and not
  applied; the core's sticky status bit 2 records it (write 1 to clear). A write whose
  ``wstrb`` is not ``0b1111`` is answered with ``SLVERR`` and not applied (every
  register and memory word is 32 bits wide: no byte writes).
- Reads always answer ``OKAY``; unmapped addresses read 0.
- ``irq`` (level): high from the end of an example until the host reads ``status`` or
  starts the next example (the core's ``irq``).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core import ADDR_BITS, Core

AXI_ADDR_BITS = ADDR_BITS + 2
RESP_OKAY, RESP_SLVERR = 0, 2


def axi4lite_members(addr_bits: int = AXI_ADDR_BITS, prefix: str = "s_axi_") -> dict:
    """An AXI4-Lite slave's ports (flow as seen by the slave), 32-bit data."""
    m = {"awaddr": In(addr_bits), "awprot": In(3), "awvalid": In(1), "awready": Out(1),
         "wdata": In(32), "wstrb": In(4), "wvalid": In(1), "wready": Out(1),
         "bresp": Out(2), "bvalid": Out(1), "bready": In(1),
         "araddr": In(addr_bits), "arprot": In(3), "arvalid": In(1), "arready": Out(1),
         "rdata": Out(32), "rresp": Out(2), "rvalid": Out(1), "rready": In(1)}
    return {prefix + k: v for k, v in m.items()}


class AxiLiteCore(wiring.Component):
    def __init__(self, core: Core):
        self.core = core
        super().__init__(wiring.Signature({**axi4lite_members(), "irq": Out(1)}))

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        a = lambda n: getattr(self, "s_axi_" + n)  # noqa: E731
        bus = core.bus
        aw_got, w_got, ar_got = Signal(), Signal(), Signal()
        aw_addr, ar_addr = Signal(ADDR_BITS), Signal(ADDR_BITS)
        w_data, w_strb = Signal(32), Signal(4)
        reading = Signal()  # a read was issued to the core, its rvalid not seen yet
        bvalid, bresp, rvalid, rdata = Signal(), Signal(2), Signal(), Signal(32)
        m.d.comb += [a("awready").eq(~aw_got), a("wready").eq(~w_got), a("arready").eq(~ar_got),
                     a("bvalid").eq(bvalid), a("bresp").eq(bresp),
                     a("rvalid").eq(rvalid), a("rdata").eq(rdata), a("rresp").eq(RESP_OKAY),
                     self.irq.eq(core.irq)]
        with m.If(a("awvalid") & ~aw_got):
            m.d.sync += [aw_got.eq(1), aw_addr.eq(a("awaddr")[2:])]
        with m.If(a("wvalid") & ~w_got):
            m.d.sync += [w_got.eq(1), w_data.eq(a("wdata")), w_strb.eq(a("wstrb"))]
        with m.If(a("arvalid") & ~ar_got):
            m.d.sync += [ar_got.eq(1), ar_addr.eq(a("araddr")[2:])]
        with m.If(bvalid & a("bready")):
            m.d.sync += bvalid.eq(0)
        with m.If(rvalid & a("rready")):
            m.d.sync += rvalid.eq(0)
        do_write, do_read = Signal(), Signal()  # (signals: each read twice, built once)
        m.d.comb += [do_write.eq(aw_got & w_got & ~bvalid & ~reading),
                     do_read.eq(ar_got & ~rvalid & ~reading & ~do_write)]
        full = w_strb == 0b1111
        with m.If(do_read):
            m.d.sync += reading.eq(1)
        with m.If(do_write):
            # a write while busy goes to the core too, which drops it and sets status bit 2
            m.d.comb += [bus.addr.eq(aw_addr), bus.wdata.eq(w_data), bus.we.eq(full)]
            m.d.sync += [aw_got.eq(0), w_got.eq(0), bvalid.eq(1),
                         bresp.eq(((core.busy | ~full) * RESP_SLVERR)[:2])]
        with m.Elif(do_read):
            m.d.comb += [bus.addr.eq(ar_addr), bus.re.eq(1)]
        with m.If(reading & bus.rvalid):
            m.d.sync += [rdata.eq(bus.rdata), rvalid.eq(1), ar_got.eq(0), reading.eq(0)]
        return m

"""A pin-light wrapper of the core for place-and-route estimates on small FPGAs.

The core's parallel host bus needs about 90 pins, more than an iCE40 UP5K in
its 48-pin package has. ``SerialCore`` puts a shift register in front of it:
the host shifts in 58 bits {we, re, addr[24], wdata[32]} on ``si`` (MSB
first), pulses ``latch`` to apply them to the bus (the next cycle: the bus signals come
from registers, so that the frame's path into the core starts at a flip-flop; ``we``
and ``re`` for one cycle, address and data held until the next latch), and reads
``rdata`` back MSB first on ``so``. It is a stand-in for the SPI or UART
bridge a real board would use; synthesis and timing of the core inside are
what it is for.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core import ADDR_BITS, Core

FRAME_BITS = 2 + ADDR_BITS + 32


class SerialCore(wiring.Component):
    si: In(1)
    latch: In(1)
    so: Out(1)

    def __init__(self, core: Core):
        self.core = core
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        sr = Signal(FRAME_BITS)
        out = Signal(32)
        m.d.sync += sr.eq(Cat(self.si, sr[:-1]))
        bus = core.bus
        # address and data held from one latch to the next, as a bus master holds them (bus
        # registers that copied the shifting frame every cycle were the shift register's
        # equals, and synthesis merged the core's registered copies of the address into it)
        with m.If(self.latch):
            m.d.sync += [bus.wdata.eq(sr[:32]), bus.addr.eq(sr[32:32 + ADDR_BITS])]
        m.d.sync += [bus.re.eq(self.latch & sr[32 + ADDR_BITS]), bus.we.eq(self.latch & sr[33 + ADDR_BITS])]
        with m.If(bus.rvalid):
            m.d.sync += out.eq(bus.rdata)
        with m.Else():
            m.d.sync += out.eq(Cat(0, out[:-1]))
        m.d.comb += self.so.eq(out[-1])
        return m

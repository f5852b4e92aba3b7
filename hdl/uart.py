"""The core behind a UART: an 8N1 receiver and transmitter and a byte protocol to the host bus.

``UartBridge`` turns bytes on ``rx`` into accesses of the core's host bus (``HOST_BUS``,
24-bit word addresses, 32-bit data) and sends the answers on ``tx``; ``UartCore`` is the
bridge and a :class:`~eqprop.hdl.core.Core` (ports ``rx``, ``tx``, ``busy``, ``irq``, with
``clk`` and ``rst``). The ULX3S board top (``hdl/board.py``) puts ``UartCore`` on the
board's FTDI UART.

Line: 8 data bits LSB first, no parity, one stop bit (8N1), idle high; ``divisor`` clock
cycles per bit (``clock_hz / baud``, at least :data:`MIN_DIVISOR`). The receiver passes
``rx`` through two flip-flops, samples each bit in its middle, and drops a byte whose stop
bit is low (a framing error) or whose start bit does not last to its middle (a glitch).

Protocol (multi-byte fields big-endian, most significant byte first):

======================================  ===========================================
host sends                              bridge answers
======================================  ===========================================
``0x57`` (``'W'``), addr[3], data[4]    one byte: ``0x4B`` (``'K'``) the write went to the
                                        core while it was idle; ``0x42`` (``'B'``) the core
                                        was busy: the write was dropped and ``status``
                                        bit 2 is set (as the AXI4-Lite top's SLVERR)
``0x52`` (``'R'``), addr[3]             data[4]: the word read
any other byte as a command             one byte ``0x3F`` (``'?'``); the byte is dropped
======================================  ===========================================

``addr`` is the core's 24-bit word address (``(region << 20) | offset``, the manifest's
``memory_map``). Answers come in the order of the commands. A frame whose bytes stop
arriving for ``timeout`` clock cycles (the board top: 50 ms) is dropped without an answer,
so a host that lost its place in a frame gets back in step by pausing, then sends
the frame again; sending a byte other than ``W``/``R`` and waiting for ``?``
checks that the bridge is at a frame boundary. The bridge holds one received byte while it
waits for an answer to go out, so a host may send the next frame before the previous
answer has arrived (reads back to back keep up as long as the host's baud clock is not
faster than the bridge's); waiting for each answer is always safe.

Host side: :func:`encode_write`, :func:`encode_read`, :func:`decode_read` and
:func:`check_write_answer` are the byte-level encoding that the cocotb bench
(``sim/tb_core.py``) and a real host share; :class:`eqprop.hdl.driver.UartTransport` wraps
them into the ``write``/``read`` coroutines of :class:`~eqprop.hdl.driver.CoreDriver`.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .core import ADDR_BITS, Core
from .units.decoder import HOST_BUS

CMD_WRITE = 0x57  # 'W'
CMD_READ = 0x52  # 'R'
ANS_OK = 0x4B  # 'K': the write reached the core while it was idle
ANS_BUSY = 0x42  # 'B': the core was busy; the write was dropped (status bit 2 set)
ANS_UNKNOWN = 0x3F  # '?': not a command byte
ADDR_BYTES = ADDR_BITS // 8
assert ADDR_BYTES * 8 == ADDR_BITS
MIN_DIVISOR = 4  # clock cycles per bit: the receiver samples each bit in its middle
BAUD_TOLERANCE = 0.02  # the largest baud-rate error divisor_for accepts (8N1 tolerates ~4%)
#: the protocol in a few words (the manifest of a board design)
PROTOCOL = {
    "write": "'W' (0x57), addr[3], data[4] (big-endian) -> 'K' (0x4B) applied, or 'B' (0x42) the core was busy: "
             "dropped, status bit 2 set",
    "read": "'R' (0x52), addr[3] -> data[4] (big-endian)",
    "other": "any other command byte -> '?' (0x3F), dropped",
    "timeout": "a frame whose bytes stop for frame_timeout_cycles is dropped without an answer",
}


class UartError(Exception):
    """A bad answer from the bridge (host side)."""


def divisor_for(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``: the nearest integer; ValueError
    (one line naming the rate) below :data:`MIN_DIVISOR` or off by more than
    :data:`BAUD_TOLERANCE`."""
    if not baud > 0:
        raise ValueError(f"baud: must be > 0, got {baud}")
    d = round(clock_hz / baud)
    if d < MIN_DIVISOR:
        raise ValueError(f"baud: {baud} is too fast for a {clock_hz / 1e6:g} MHz clock "
                         f"(at most {clock_hz / MIN_DIVISOR:,.0f}: {MIN_DIVISOR} cycles per bit)")
    err = abs(clock_hz / d - baud) / baud
    if err > BAUD_TOLERANCE:
        raise ValueError(f"baud: {baud} is {100 * err:.1f}% off at {clock_hz / 1e6:g} MHz "
                         f"({clock_hz / d:,.0f} with {d} cycles per bit)")
    return d


# --------------------------------------------------------------------------
# Host side: the bytes of a frame and of its answer
# --------------------------------------------------------------------------

def _addr_bytes(addr: int) -> bytes:
    if not 0 <= addr < 1 << ADDR_BITS:
        raise ValueError(f"address {addr:#x} does not fit {ADDR_BITS} bits")
    return addr.to_bytes(ADDR_BYTES, "big")


def encode_write(addr: int, data: int) -> bytes:
    """The 8 bytes of a write: ``'W'``, the address (3 bytes), the data (4 bytes, the low
    32 bits of ``data``)."""
    return bytes([CMD_WRITE]) + _addr_bytes(addr) + (data & 0xFFFFFFFF).to_bytes(4, "big")


def encode_read(addr: int) -> bytes:
    """The 4 bytes of a read: ``'R'`` and the address (3 bytes); 4 bytes answer it."""
    return bytes([CMD_READ]) + _addr_bytes(addr)


def decode_read(answer: bytes) -> int:
    """The word of a read's 4-byte answer."""
    if len(answer) != 4:
        raise UartError(f"read answer of {len(answer)} bytes, expected 4")
    return int.from_bytes(answer, "big")


def check_write_answer(answer: bytes, addr: int | None = None) -> bool:
    """True for ``'K'`` (applied), False for ``'B'`` (the core was busy: dropped);
    UartError for anything else."""
    if answer == bytes([ANS_OK]):
        return True
    if answer == bytes([ANS_BUSY]):
        return False
    where = "" if addr is None else f" to {addr:#x}"
    raise UartError(f"write{where}: answer {answer!r}, expected b'K' or b'B'")


# --------------------------------------------------------------------------
# RTL
# --------------------------------------------------------------------------

def _width(n: int) -> int:
    return max(1, int(n).bit_length())


class _BitTimed(wiring.Component):
    """A UART part that counts ``divisor`` clock cycles per bit (checked here)."""

    def __init__(self, divisor: int):
        if divisor < MIN_DIVISOR:
            raise ValueError(f"divisor: {divisor} < {MIN_DIVISOR}")
        self.divisor = divisor
        super().__init__()


class UartRx(_BitTimed):
    """8N1 receiver: ``rx`` (idle high) through two flip-flops; ``valid`` is high for one
    cycle with ``data`` when a byte with a high stop bit has arrived."""

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        active = Signal()
        count = Signal(_width(d - 1))
        bit = Signal(range(10))  # 0 start, 1-8 data, 9 stop
        sr = Signal(8)
        m.d.comb += self.data.eq(sr)
        with m.If(~active):
            with m.If(~rx):  # a start bit's edge: its middle is half a bit away
                m.d.sync += [active.eq(1), count.eq(d // 2 - 1), bit.eq(0)]
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.Else():  # the middle of bit `bit`
            m.d.sync += [count.eq(d - 1), bit.eq(bit + 1)]
            with m.If(bit == 0):
                with m.If(rx):  # the start bit did not last: a glitch
                    m.d.sync += active.eq(0)
            with m.Elif(bit == 9):
                m.d.sync += active.eq(0)  # back to idle in the stop bit's middle: ready for the next edge
                m.d.comb += self.valid.eq(rx)  # a low stop bit: a framing error, the byte is dropped
            with m.Else():
                m.d.sync += sr.eq(Cat(sr[1:], rx))  # LSB first
        return m


class UartTx(_BitTimed):
    """8N1 transmitter: a byte ``data`` is taken when ``valid`` and ``ready`` are high;
    ``tx`` comes straight from a flip-flop (idle high)."""

    tx: Out(1, init=1)
    data: In(8)
    valid: In(1)
    ready: Out(1)

    def elaborate(self, platform):
        m = Module()
        d = self.divisor
        sr = Signal(10, init=0x3FF)  # {stop, data, start}, shifted out LSB first; ones when idle
        left = Signal(range(11))  # bits still on the line, the current one included
        count = Signal(_width(d - 1))
        m.d.comb += [self.tx.eq(sr[0]), self.ready.eq(left == 0)]
        with m.If(left == 0):
            with m.If(self.valid):
                m.d.sync += [sr.eq(Cat(Const(0, 1), self.data, Const(1, 1))), left.eq(10), count.eq(d - 1)]
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        with m.Else():
            m.d.sync += [sr.eq(Cat(sr[1:], Const(1, 1))), left.eq(left - 1), count.eq(d - 1)]
        return m


class UartBridge(wiring.Component):
    """The protocol of the module's docstring between ``rx``/``tx`` and ``bus`` (the host
    side of HOST_BUS); ``core_busy`` picks the write's answer (``'K'`` or ``'B'``).
    ``timeout``: clock cycles without a byte after which a partial frame is dropped
    (0: never)."""

    rx: In(1, init=1)
    tx: Out(1, init=1)
    bus: Out(HOST_BUS)
    core_busy: In(1)

    def __init__(self, divisor: int, timeout: int = 0):
        if timeout < 0:
            raise ValueError(f"timeout: {timeout} < 0")
        self.divisor = divisor
        self.timeout = timeout
        self.rx_unit = UartRx(divisor)
        self.tx_unit = UartTx(divisor)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = urx = self.rx_unit
        m.submodules.tx = utx = self.tx_unit
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        bus = self.bus

        # one received byte held until the frame logic takes it
        held, held_valid, take = Signal(8), Signal(), Signal()
        with m.If(urx.valid):
            m.d.sync += [held.eq(urx.data), held_valid.eq(1)]  # a byte not yet taken is overwritten
        with m.Elif(take):
            m.d.sync += held_valid.eq(0)

        # the answer: up to 4 bytes, most significant first, from the top of `ans`
        ans, ans_left = Signal(32), Signal(range(5))
        load, load_word, load_n = Signal(), Signal(32), Signal(range(5))
        m.d.comb += [utx.data.eq(ans[24:]), utx.valid.eq(ans_left != 0)]
        with m.If(load):
            m.d.sync += [ans.eq(load_word), ans_left.eq(load_n)]
        with m.Elif(utx.valid & utx.ready):
            m.d.sync += [ans.eq(ans << 8), ans_left.eq(ans_left - 1)]
        free = ans_left == 0  # (a load waits for the previous answer to be gone)

        addr, data = Signal(ADDR_BITS), Signal(32)
        is_write = Signal()
        left = Signal(range(8))  # bytes of the frame still to come
        idle = Signal(_width(self.timeout)) if self.timeout else None
        m.d.comb += [bus.addr.eq(addr), bus.wdata.eq(data)]

        with m.FSM():
            with m.State("CMD"):
                with m.If(held_valid):
                    with m.If((held == CMD_WRITE) | (held == CMD_READ)):
                        m.d.comb += take.eq(1)
                        m.d.sync += [is_write.eq(held == CMD_WRITE),
                                     left.eq(Mux(held == CMD_WRITE, 3 + 4, 3))]
                        if idle is not None:
                            m.d.sync += idle.eq(0)
                        m.next = "ARGS"
                    with m.Elif(free):
                        m.d.comb += [take.eq(1), load.eq(1), load_word.eq(ANS_UNKNOWN << 24), load_n.eq(1)]
            with m.State("ARGS"):
                with m.If(held_valid):
                    m.d.comb += take.eq(1)
                    m.d.sync += left.eq(left - 1)
                    # the first three bytes are the address, the next four (a write's) the data
                    with m.If(is_write & (left <= 4)):
                        m.d.sync += data.eq(Cat(held, data[:-8]))
                    with m.Else():
                        m.d.sync += addr.eq(Cat(held, addr[:-8]))
                    with m.If(left == 1):
                        m.next = "EXEC"
                    if idle is not None:
                        m.d.sync += idle.eq(0)
                if idle is not None:
                    with m.Elif(idle == self.timeout - 1):
                        m.next = "CMD"  # the frame stopped arriving: dropped
                    with m.Else():
                        m.d.sync += idle.eq(idle + 1)
            with m.State("EXEC"):
                with m.If(free):
                    with m.If(is_write):
                        answer = Mux(self.core_busy, Const(ANS_BUSY, 8), Const(ANS_OK, 8))
                        m.d.comb += [bus.we.eq(1), load.eq(1), load_n.eq(1), load_word.eq(Cat(Const(0, 24), answer))]
                        m.next = "CMD"
                    with m.Else():
                        m.d.comb += bus.re.eq(1)
                        m.next = "READ"
            with m.State("READ"):  # until the core's rvalid
                with m.If(bus.rvalid):
                    m.d.comb += [load.eq(1), load_word.eq(bus.rdata), load_n.eq(4)]
                    m.next = "CMD"
        return m


class UartCore(wiring.Component):
    """:class:`UartBridge` and the core: ports ``rx``, ``tx`` (the UART), ``busy`` and
    ``irq`` (the core's), and the ``sync`` domain's ``clk`` and ``rst``."""

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    irq: Out(1)

    def __init__(self, core: Core, divisor: int, timeout: int = 0):
        self.core = core
        self.bridge = UartBridge(divisor, timeout)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.bridge = br = self.bridge
        wiring.connect(m, br.bus, core.bus)
        m.d.comb += [br.rx.eq(self.rx), self.tx.eq(br.tx), br.core_busy.eq(core.busy),
                     self.busy.eq(core.busy), self.irq.eq(core.irq)]
        return m


def uart_core(params, divisor: int, timeout: int = 0) -> UartCore:
    """``UartCore`` of a design whose ``params.net`` holds the weights and biases its memories
    start with (``eqprop.sim.job.design_network``, or the generator's network)."""
    net = params.net
    core = Core(params, params.lane_weights(net.W_in, net.W_ss), params.lane_biases(net.b))
    return UartCore(core, divisor, timeout)


def uart_core_verilog(params, name: str, divisor: int, timeout: int = 0) -> str:
    """Verilog of :func:`uart_core` with top module ``name`` (ports ``clk``, ``rst``, ``rx``,
    ``tx``, ``busy``, ``irq``), as ``eqprop hdl generate`` writes its tops (time-0 lines
    for event-driven simulators; no initial weights under ``weight_init = "host"``)."""
    from .generate import shipped_verilog

    return shipped_verilog(uart_core(params, divisor, timeout), name, params)

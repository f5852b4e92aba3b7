"""The UART link (hdl/uart.py): the byte encoding, the bridge's framing and protocol under
amaranth.sim, and the core behind the bridge co-simulated with cocotbext-uart (Icarus)
against the fixed-point model."""

import shutil

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from eqprop.hdl import uart
from eqprop.hdl.driver import UartTransport
from eqprop.hdl.units.decoder import HOST_BUS

from test_cosim import CFG, generate_design, mnist_images

DIV = 6  # clock cycles per bit in the amaranth.sim tests


def test_encoding():
    assert uart.encode_write(0x300005, 0x12345678) == b"W\x30\x00\x05\x12\x34\x56\x78"
    assert uart.encode_write(1, -1) == b"W\x00\x00\x01\xff\xff\xff\xff"
    assert uart.encode_read(0x000001) == b"R\x00\x00\x01"
    assert uart.decode_read(b"\x00\x00\x01\x02") == 0x102
    assert uart.check_write_answer(b"K") is True and uart.check_write_answer(b"B") is False
    with pytest.raises(uart.UartError):
        uart.check_write_answer(b"?", 5)
    with pytest.raises(uart.UartError):
        uart.decode_read(b"\x00")
    with pytest.raises(ValueError):
        uart.encode_read(1 << 24)


def test_divisor():
    assert uart.divisor_for(25e6, 115200) == 217
    assert uart.divisor_for(25e6, 1_000_000) == 25 and uart.divisor_for(48e6, 3_000_000) == 16
    with pytest.raises(ValueError, match="too fast"):
        uart.divisor_for(8e6, 3_000_000)
    with pytest.raises(ValueError, match="3000000 is 4.2% off at 25 MHz"):
        uart.divisor_for(25e6, 3_000_000)  # 8 cycles per bit: 3.125 Mbaud


class _Memory(wiring.Component):
    """16 words behind HOST_BUS (read data one cycle after re), and a busy input."""

    bus: wiring.In(HOST_BUS)

    def elaborate(self, platform):
        m = Module()
        words = [Signal(32, name=f"w{i}") for i in range(16)]
        b = self.bus
        with m.If(b.we):
            with m.Switch(b.addr[:4]):
                for i, w in enumerate(words):
                    with m.Case(i):
                        m.d.sync += w.eq(b.wdata)
        m.d.sync += b.rvalid.eq(b.re)
        with m.If(b.re):
            with m.Switch(b.addr[:4]):
                for i, w in enumerate(words):
                    with m.Case(i):
                        m.d.sync += b.rdata.eq(w ^ (b.addr >> 4))  # the high address bits show up in the data
        return m


def _bench(timeout=0):
    m = Module()
    m.submodules.bridge = br = uart.UartBridge(DIV, timeout)
    m.submodules.mem = mem = _Memory()
    wiring.connect(m, br.bus, mem.bus)
    return m, br


def _run(bench_fn, timeout=0):
    m, br = _bench(timeout)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    got = []

    async def receiver(ctx):
        while True:  # decode tx: wait for the start bit, sample each bit in its middle
            while ctx.get(br.tx):
                await ctx.tick()
            await ctx.tick().repeat(DIV // 2)
            assert ctx.get(br.tx) == 0
            v = 0
            for k in range(8):
                await ctx.tick().repeat(DIV)
                v |= ctx.get(br.tx) << k
            await ctx.tick().repeat(DIV)
            assert ctx.get(br.tx) == 1, "stop bit"
            got.append(v)

    async def send(ctx, data: bytes, stop=1, bit_cycles=DIV):
        for b in data:
            for k, level in enumerate([0] + [(b >> i) & 1 for i in range(8)] + [stop]):
                ctx.set(br.rx, level)
                await ctx.tick().repeat(bit_cycles)
            ctx.set(br.rx, 1)

    async def bench(ctx):
        ctx.set(br.rx, 1)
        await ctx.tick().repeat(5)
        await bench_fn(ctx, br, send, got)

    sim.add_testbench(receiver, background=True)
    sim.add_testbench(bench)
    sim.run()
    return got


async def _wait(ctx, got, n, limit=4000):
    for _ in range(limit):
        if len(got) >= n:
            return
        await ctx.tick()
    raise AssertionError(f"{len(got)} answer bytes, expected {n}")


def test_bridge_write_read_unknown_busy_and_framing():
    results = {}

    async def body(ctx, br, send, got):
        await send(ctx, uart.encode_write(3, 0xDEADBEEF))
        await _wait(ctx, got, 1)
        await send(ctx, uart.encode_read(3) + uart.encode_read(0x100003))  # two reads back to back
        await _wait(ctx, got, 9)
        await send(ctx, b"x")  # not a command
        await _wait(ctx, got, 10)
        ctx.set(br.core_busy, 1)
        await send(ctx, uart.encode_write(4, 1))
        await _wait(ctx, got, 11)
        ctx.set(br.core_busy, 0)
        # a byte with a low stop bit (framing error) is dropped; a 1-cycle low glitch is no start bit
        await send(ctx, b"Z", stop=0)
        ctx.set(br.rx, 0)
        await ctx.tick()
        ctx.set(br.rx, 1)
        await ctx.tick().repeat(4 * DIV)
        await send(ctx, uart.encode_read(3))
        await _wait(ctx, got, 15)
        await ctx.tick().repeat(20 * DIV)
        results["n"] = len(got)

    got = _run(body)
    assert got[0] == uart.ANS_OK
    assert uart.decode_read(bytes(got[1:5])) == 0xDEADBEEF
    assert uart.decode_read(bytes(got[5:9])) == 0xDEADBEEF ^ 0x10000
    assert got[9] == uart.ANS_UNKNOWN
    assert got[10] == uart.ANS_BUSY
    assert uart.decode_read(bytes(got[11:15])) == 0xDEADBEEF
    assert results["n"] == 15  # nothing answered the bad byte or the glitch


def test_bridge_drops_a_stalled_frame():
    async def body(ctx, br, send, got):
        await send(ctx, b"W\x00\x00")  # a write that stops after two address bytes
        await ctx.tick().repeat(300)
        await send(ctx, uart.encode_read(0))  # taken as a new frame after the timeout
        await _wait(ctx, got, 4)

    got = _run(body, timeout=200)
    assert got == [0, 0, 0, 0]


def test_transport_over_a_byte_pipe():
    """UartTransport: the bytes it sends and how it reads the answers."""
    import asyncio

    sent = bytearray()
    answers = bytearray(b"K\x00\x00\x00\x2aB")

    async def send(data):
        sent.extend(data)

    async def recv(n):
        out = bytes(answers[:n])
        del answers[:n]
        return out

    t = UartTransport(send, recv)

    async def go():
        await t.write(5, 7)
        v = await t.read(0x400001)
        ok = await t.write_ok(1, 1)
        return v, ok

    v, ok = asyncio.run(go())
    assert v == 42 and ok is False
    assert bytes(sent) == uart.encode_write(5, 7) + uart.encode_read(0x400001) + uart.encode_write(1, 1)


# --------------------------------------------------------------------------
# The core behind the bridge, co-simulated (cocotbext-uart, Icarus)
# --------------------------------------------------------------------------

needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
COSIM_DIV = 4  # clock cycles per bit (the least): a write frame is 320 cycles


@pytest.fixture(scope="module")
def uart_design(tmp_path_factory):
    return generate_design(tmp_path_factory.mktemp("uart"), CFG.replace('name = "cosim_core"', 'name = "uart_core"'))


@needs_icarus
def test_uart_inference_and_bridge_checks(uart_design):
    """An MNIST inference through the UART (inputs, states, targets written, ctrl, status
    polled, s^0, step count and prediction read back): bit-exact against the fixed-point
    model; then a register round trip, a bad command byte and a write while busy."""
    pytest.importorskip("cocotbext.uart")
    from eqprop.sim.runner import run_cosim

    x, y = mnist_images(1)
    r = run_cosim(uart_design, x, y, False, simulator="icarus", uart_divisor=COSIM_DIV, uart_check=True,
                  work=uart_design / "cosim_uart")
    assert r["bus"] == "uart" and r["examples"] == 1
    assert r["mismatch_count"] == 0, r["mismatches"][:3]
    assert r["preds"] == r["expected_preds"] and r["free_steps"] == r["expected_free_steps"]
    c = r["uart_check"]
    assert c["update_read"] == 0x89ABCDEF and c["after_bad_read"] == 0x89ABCDEF
    assert c["bad_command_answer"] == "?"
    assert c["busy_write_ok"] is False and c["status_after"] & 0b101 == 0b101
    assert c["example_after"] == c["example_before"] and c["status_cleared"] & 4 == 0 and c["idle"]


@needs_icarus
def test_uart_training_example(uart_design):
    """One on-chip training example through the UART: both phases' states, every weight and bias
    the model's."""
    pytest.importorskip("cocotbext.uart")
    from eqprop.sim.runner import run_cosim

    x, y = mnist_images(1)
    r = run_cosim(uart_design, x, y, True, simulator="icarus", uart_divisor=COSIM_DIV,
                  work=uart_design / "cosim_uart_train")
    assert r["examples"] == 1 and r["mismatch_count"] == 0, r["mismatches"][:3]
    assert r["backdoor"] is True  # the lanes' memories under UartCore's "core"

"""cocotb testbench of the generated core: driver, monitor, scoreboard.

Run by ``runner.py`` (never imported by pytest directly). The job file named
by ``EQPROP_COSIM_JOB`` holds the examples and the fixed-point model's
expectations; the results go to ``EQPROP_COSIM_RESULTS``. The driver is
``eqprop.hdl.driver.CoreDriver`` over a cocotb transport of the host bus; the
monitor reads back every state after each example's phases and every weight
and bias after each update; the scoreboard compares them with the model and
records each mismatch exactly (example, phase, neuron or connection,
expected, actual), the free phase's step count (the core's ``free_steps``
register against the model's, docs/numerics.md §4a) included. The job's
settle rule is written into the core's registers before the first example.
``EQPROP_COSIM_PROFILE=FILE`` writes a cProfile of the bench's Python side
(driver, monitor, scoreboard) to FILE: the rest of the wall time is the
simulator's.
"""

import copy
import gc
import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

from eqprop.hdl.driver import CoreDriver
from eqprop.hdl.params import CoreParams, settle_from_dict

CLOCK_NS = 10


class CocotbBus:
    """write/read coroutines over the core's host bus ports (bus__*)."""

    def __init__(self, dut):
        self.dut = dut

    async def write(self, addr: int, data: int):
        d = self.dut
        d.bus__addr.value = addr
        d.bus__wdata.value = data & 0xFFFFFFFF
        d.bus__we.value = 1
        await RisingEdge(d.clk)
        d.bus__we.value = 0

    async def read(self, addr: int) -> int:
        d = self.dut
        d.bus__addr.value = addr
        d.bus__re.value = 1
        await RisingEdge(d.clk)
        d.bus__re.value = 0
        await ReadOnly()
        while not (d.bus__rvalid.value.is_resolvable and int(d.bus__rvalid.value)):
            await RisingEdge(d.clk)
            await ReadOnly()
        raw = d.bus__rdata.value
        if not raw.is_resolvable:
            raise ValueError(f"read {addr:#x}: unresolved data {raw}")
        v = int(raw)
        await RisingEdge(d.clk)
        return v


class AxiBus:
    """write/read coroutines over an AXI4-Lite top (``--bus axi4lite``, hdl/axi.py) through
    cocotbext-axi's AxiLiteMaster: byte address = the core's word address x 4. A response
    other than OKAY raises (``BusError``), so a dropped write cannot pass unnoticed."""

    def __init__(self, dut):
        from cocotbext.axi import AxiLiteBus, AxiLiteMaster

        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst,
                                    reset_active_level=True)
        self.master.write_if.log.setLevel("WARNING")
        self.master.read_if.log.setLevel("WARNING")

    async def write_resp(self, addr: int, data: int) -> int:
        r = await self.master.write(addr << 2, (data & 0xFFFFFFFF).to_bytes(4, "little"))
        return int(r.resp)

    async def write(self, addr: int, data: int):
        resp = await self.write_resp(addr, data)
        if resp != 0:
            raise BusError(f"write {addr:#x} = {data:#x}: response {resp}")

    async def read(self, addr: int) -> int:
        r = await self.master.read(addr << 2, 4)
        if int(r.resp) != 0:
            raise BusError(f"read {addr:#x}: response {int(r.resp)}")
        return int.from_bytes(r.data, "little")


class BusError(Exception):
    pass


class UartBus:
    """write/read coroutines over the UART top (``hdl/uart.py``'s ``UartCore``): cocotbext-uart's
    source on ``rx`` and sink on ``tx`` at ``divisor`` clock cycles per bit, the frames of
    :class:`eqprop.hdl.driver.UartTransport` (the host's own encoding). A write the core
    dropped (answer ``'B'``) raises."""

    def __init__(self, dut, divisor: int):
        import logging

        from cocotbext.uart import UartSink, UartSource

        from eqprop.hdl.driver import UartTransport

        bit_ns = divisor * CLOCK_NS
        baud = 1e9 / bit_ns
        if int(1e9 / baud) != bit_ns:  # cocotbext-uart times a bit as int(1e9 / baud) ns
            raise ValueError(f"uart divisor {divisor}: a bit of {bit_ns} ns is not a whole baud period")
        self.source = UartSource(dut.rx, baud=baud, bits=8, stop_bits=1)
        self.sink = UartSink(dut.tx, baud=baud, bits=8, stop_bits=1)
        for h in (self.source, self.sink):
            h.log.setLevel(logging.WARNING)
        self.link = UartTransport(self.send, self.recv)
        self.write, self.read, self.write_ok = self.link.write, self.link.read, self.link.write_ok

    async def send(self, data: bytes):
        await self.source.write(data)

    async def recv(self, n: int) -> bytes:
        while self.sink.count() < n:
            self.sink.sync.clear()
            await self.sink.sync.wait()
        return bytes(self.sink.read_nowait(n))


class Scoreboard:
    def __init__(self, params: CoreParams, limit: int = 50):
        self.p = params
        self.mismatches: list[dict] = []
        self.count = 0
        self.limit = limit

    def vec(self, example: int, phase: str, expected: list, actual: list):
        for i, (a, b) in enumerate(zip(expected, actual)):
            if a != b:
                self._add({"example": example, "phase": phase, "neuron": i, "expected": a, "actual": b})

    def steps(self, example: int, expected: int, actual: int):
        """The free phase's step count (settle rule, docs/numerics.md §4a)."""
        if expected != actual:
            self._add({"example": example, "phase": "free steps", "expected": expected, "actual": actual})

    def weights(self, example: int, expected: list, actual: list):
        """Each lane's stored words (by weight address, hdl/layout.py)."""
        for ell, (we, wa) in enumerate(zip(expected, actual)):
            for k, (a, b) in enumerate(zip(we, wa)):
                if a != b:
                    lane = self.p.layout.lanes[ell]
                    c = lane.columns
                    ks = np.flatnonzero((c["waddr"] == k) & ~c["dummy"])  # the entries that read word k
                    conn = "unused word"
                    if len(ks):
                        e = lane.entries[int(ks[0])]
                        conn = f"s{e.neuron}<-{f'x{e.src}' if e.src_input else f's{e.src}'}"
                    self._add({"example": example, "phase": "update", "connection": conn,
                               "lane": ell, "word": k, "expected": a, "actual": b})

    def _add(self, m: dict):
        self.count += 1
        if len(self.mismatches) < self.limit:
            self.mismatches.append(m)


def backdoor_params(dut, params: CoreParams):
    """Every weight copy and bias read straight from the lanes' memories (a monitor
    that does not go through the host bus); None where the simulator hides them."""
    from eqprop.hdl.driver import to_signed

    num = params.num
    try:
        ws, bias = [], [0] * params.layout.S
        top = dut.core if hasattr(dut, "core") else dut  # the AXI4-Lite top holds the core as "core"
        for ell, lane in enumerate(params.layout.lanes):
            h = getattr(top, f"lane{ell}")
            # the stored weights live in the lane's FaninStore (docs/rtl.md; in the lane itself in
            # designs generated before the split)
            wmem, bmem = (h.fanin if hasattr(h, "fanin") else h).weights, h.biases
            kw, nb, sb = params.weights_per_word, num.weight_store.n_word, params.weight_slot_bits  # kw to a word
            ws.append([to_signed((int(wmem[k // kw].value) >> (k % kw * sb)) & ((1 << nb) - 1), nb)
                       for k in range(lane.n_words)])
            for k, i in enumerate(lane.neurons):
                bias[i] = to_signed(int(bmem[k].value), num.bias.n_word)
        return ws, bias
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


@cocotb.test()
async def cosim(dut):
    job = json.loads(Path(os.environ["EQPROP_COSIM_JOB"]).read_text())
    gc.collect()
    gc.freeze()  # the job's many small objects: out of the collector's way for the whole run
    params = CoreParams.from_design(job["design"])
    Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start()  # toggled by the simulator, not by Python
    axi = job.get("bus", "native") == "axi4lite"
    on_uart = job.get("bus") == "uart"
    if on_uart:
        dut.rx.value = 1
    elif axi:  # the master starts after reset (its monitors read the ready outputs from the first edge)
        for n in ("awvalid", "wvalid", "arvalid", "bready", "rready"):
            getattr(dut, f"s_axi_{n}").value = 0
    else:
        dut.bus__we.value = 0
        dut.bus__re.value = 0
        dut.bus__addr.value = 0
        dut.bus__wdata.value = 0
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    bus = AxiBus(dut) if axi else UartBus(dut, job["uart_divisor"]) if on_uart else CocotbBus(dut)
    async def tick(n: int):
        # One timer for n cycles: no Python callback per clock edge.
        await Timer(n * CLOCK_NS, unit="ns")
        await RisingEdge(dut.clk)

    drv = CoreDriver(params, bus.write, bus.read, tick)
    if params.weight_init == "host":  # the design has no initial weights: the host writes its hex files
        from eqprop.sim.job import design_network

        net = design_network(job["design"], copy.deepcopy(params)).net
        await drv.load_params(net.W_in, net.W_ss, net.b)
    if "settle" in job:  # the job's rule into the registers (null: off, the full free phase)
        await drv.set_settle(settle_from_dict(job["settle"]))
    board = Scoreboard(params)
    prof = None
    if os.environ.get("EQPROP_COSIM_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    t_wall = time.perf_counter()
    t_sim0 = get_sim_time("ns")
    out = {"examples": 0, "preds": [], "labels": [], "cycles": [], "free_steps": [],
           "settle": job.get("settle"), "bus": job.get("bus", "native")}
    for ex in job["examples"]:
        await drv.load_example(ex["x"], ex["s_init"], ex["target"])
        r = await drv.run(not job["train"], example=ex["example"], update=ex.get("update", 0),
                          beta_neg=ex.get("beta_neg", False))
        exp = ex["expect"]
        board.vec(ex["example"], "free", exp["s0"], r.s0)
        if "free_steps" in exp:
            board.steps(ex["example"], exp["free_steps"], r.free_steps)
        if job["train"]:
            board.vec(ex["example"], "weakly-clamped", exp["final"], r.final)
            got = backdoor_params(dut, params) if job.get("backdoor", True) else None
            ws, b = got if got is not None else await drv.read_params()
            out["backdoor"] = got is not None
            board.weights(ex["example"], exp["weights"], ws)
            board.vec(ex["example"], "bias update", exp["biases"], b)
        else:
            if r.pred != exp["pred"]:
                board._add({"example": ex["example"], "phase": "arg-max", "expected": exp["pred"], "actual": r.pred})
        out["examples"] += 1
        if job["train"]:  # the arg-max unit runs in inference mode; training reads s^0
            outs = r.s0[params.layout.out_first:]
            r.pred = outs.index(max(outs))
        out["preds"].append(r.pred)
        out["labels"].append(ex["label"])
        out["cycles"].append(r.cycles)
        out["free_steps"].append(r.free_steps)
    sim_ns = get_sim_time("ns") - t_sim0
    if prof is not None:
        prof.disable()
        prof.dump_stats(os.environ["EQPROP_COSIM_PROFILE"])
    out.update(mismatch_count=board.count, mismatches=board.mismatches, wall_s=time.perf_counter() - t_wall,
               sim_cycles=int(sim_ns // CLOCK_NS))
    if axi and job.get("busy_write_check"):
        out["busy_write"] = await busy_write_check(dut, bus, drv, params)
    if on_uart and job.get("uart_check"):
        out["uart_check"] = await uart_check(dut, bus, drv)
    Path(os.environ["EQPROP_COSIM_RESULTS"]).write_text(json.dumps(out))
    assert board.count == 0, f"{board.count} mismatches, first: {board.mismatches[0]}"


async def _start_long_inference(bus, mm) -> dict:
    """Starts an inference long enough to outlast the next frame (n_free 200, the settle rule
    off), the two registers' values returned for :func:`_restore`."""
    from eqprop.hdl.enums import Ctrl

    saved = {r: await bus.read(mm.reg(r)) for r in ("n_free", "settle_steps")}
    await bus.write(mm.reg("n_free"), 200)
    await bus.write(mm.reg("settle_steps"), 0)
    await bus.write(mm.reg("ctrl"), (Ctrl.START | Ctrl.INFER).value)
    return saved


async def _restore(bus, mm, saved: dict):
    for r, v in saved.items():
        await bus.write(mm.reg(r), v)


async def busy_write_check(dut, bus: AxiBus, drv: CoreDriver, params: CoreParams) -> dict:
    """AXI4-Lite: a write while the core is busy gets SLVERR, is not applied and sets the
    sticky status bit 2, which a write of 1 clears; irq rises when the example ends and
    falls when status is read."""
    from eqprop.hdl.enums import Status

    mm = drv.map
    before = await bus.read(mm.reg("example"))
    saved = await _start_long_inference(bus, mm)
    res = {"status_busy": await bus.read(mm.reg("status"))}
    res["resp_busy"] = await bus.write_resp(mm.reg("example"), before + 12345)
    res["resp_partial"] = 0
    res["status_after"] = await bus.read(mm.reg("status"))
    for _ in range(10**6):
        if int(dut.irq.value):
            break
        await RisingEdge(dut.clk)
    res["irq_seen"] = int(dut.irq.value)
    res["status_done"] = await bus.read(mm.reg("status"))
    await RisingEdge(dut.clk)
    res["irq_after_read"] = int(dut.irq.value)
    res["example_after"] = await bus.read(mm.reg("example"))
    res["example_before"] = before
    res["resp_clear"] = await bus.write_resp(mm.reg("status"), Status.WR_ERR.value)
    res["status_cleared"] = await bus.read(mm.reg("status"))
    r = await bus.master.write(mm.reg("example") << 2, b"\x01")  # one byte: wstrb = 0b0001
    res["resp_partial"] = int(r.resp)
    res["example_after_partial"] = await bus.read(mm.reg("example"))
    await _restore(bus, mm, saved)
    return res


async def uart_check(dut, bus: UartBus, drv: CoreDriver) -> dict:
    """The UART bridge: a register written and read back, a byte that is no command (answered
    ``'?'``, then the bridge still in step), a write while the core is busy (answered ``'B'``,
    not applied, status bit 2 set until written 1)."""
    from eqprop.hdl.enums import Status

    mm = drv.map
    res = {}
    await bus.write(mm.reg("update"), 0x89ABCDEF)
    res["update_read"] = await bus.read(mm.reg("update"))
    await bus.send(b"\x00")
    res["bad_command_answer"] = (await bus.recv(1)).decode("latin-1")
    res["after_bad_read"] = await bus.read(mm.reg("update"))
    before = await bus.read(mm.reg("example"))
    saved = await _start_long_inference(bus, mm)
    res["busy_write_ok"] = await bus.write_ok(mm.reg("example"), before + 1)
    res["status_after"] = await bus.read(mm.reg("status"))
    while not Status.finished(await bus.read(mm.reg("status"))):
        pass
    res["example_before"], res["example_after"] = before, await bus.read(mm.reg("example"))
    await bus.write(mm.reg("status"), Status.WR_ERR.value)
    await _restore(bus, mm, saved)
    res["status_cleared"] = await bus.read(mm.reg("status"))
    res["idle"] = bus.sink.count() == 0
    return res

"""Host-side driver of the core: what to write and read, independent of the simulator.

``CoreDriver`` speaks to the core through two coroutines, ``write(addr,
data)`` and ``read(addr)``, so the same driver runs under ``amaranth.sim``
(``AmaranthBus``) and cocotb. It loads parameters, an example (inputs,
target, initial state: the host keeps the persistent particles), starts a
phase and reads back every state and weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqprop.model.settle import SettleRule

from .core import cycle_model, example_cycles
from .enums import Ctrl, Status
from .memory_map import MemoryMap
from .params import CoreParams


def to_signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


@dataclass
class ExampleResult:
    s0: list  # free equilibrium, raw, non-input order
    final: list  # state after the weakly-clamped phase (= s0 for inference)
    pred: int
    cycles: dict
    free_steps: int = 0  # steps the free phase took (n_free, or fewer under the settle rule, §4a)


class CoreDriver:
    def __init__(self, params: CoreParams, write, read, tick=None):
        self.p = params
        self.map = MemoryMap(params)
        self.write = write
        self.read = read
        self.tick = tick
        self.cycles = cycle_model(params)
        self.settle = params.settle  # the rule in the core's registers (their reset values until set_settle)

    async def set_settle(self, rule: SettleRule | None):
        """Write the settle rule's registers (docs/numerics.md §4a); None: off (settle_steps = 0)."""
        await self.write(self.map.reg("settle_tol"), 0 if rule is None else int(rule.tol))
        await self.write(self.map.reg("settle_steps"), 0 if rule is None else int(rule.steps))
        self.settle = rule

    async def set_rates(self, Ms):
        """Write the ``rate`` registers (the on-chip update's M per layer pair, ``layout.pairs``
        order; docs/numerics.md §6)."""
        for q, M in enumerate(Ms):
            await self.write(self.map.reg("rate") + q, int(M))

    async def load_params(self, W_in: torch.Tensor, W_ss: torch.Tensor, b: torch.Tensor):
        """Stored weights (raw) into every lane copy, biases into their lanes."""
        for ell, ws in enumerate(self.p.lane_weights(W_in, W_ss)):
            for k, w in enumerate(ws):
                await self.write(self.map.weight(ell, k), w & 0xFFFFFFFF)
        for i in range(self.p.layout.S):
            await self.write(self.map.bias(i), int(b[i]) & 0xFFFFFFFF)

    async def read_params(self) -> tuple[list[list[int]], list[int]]:
        ws = []
        nb = self.p.num.weight_store.n_word
        for ell, lane in enumerate(self.p.layout.lanes):
            ws.append([to_signed(await self.read(self.map.weight(ell, k)), nb) for k in range(lane.n_words)])
        bb = self.p.num.bias.n_word
        b = [to_signed(await self.read(self.map.bias(i)), bb) for i in range(self.p.layout.S)]
        return ws, b

    async def load_example(self, x: list[int], s_init: list[int], target: int | None):
        for j, v in enumerate(x):
            await self.write(self.map.input(j), int(v))
        for i, v in enumerate(s_init):
            await self.write(self.map.state(i, "state"), int(v))
        n_out = self.p.topology.sizes[-1]
        for k in range(n_out):
            await self.write(self.map.target(k), int(target == k) if target is not None else 0)

    async def run(self, infer: bool, example: int, update: int = 0, beta_neg: bool = False,
                  max_polls: int = 10**7) -> ExampleResult:
        """Start a training example (free, weakly-clamped, update) or an inference, wait
        for ``done`` and read back s^0, the final state, the cycle counters and the
        arg-max. With a ``tick(n)`` coroutine the driver first sleeps the cycle
        model's count instead of polling every cycle (under the settle rule the count
        of the shortest free phase the rule allows, §4a)."""
        await self.write(self.map.reg("example"), example)
        await self.write(self.map.reg("update"), update)
        await self.write(self.map.reg("beta_neg"), int(beta_neg))
        await self.write(self.map.reg("ctrl"), (Ctrl.START | Ctrl.INFER if infer else Ctrl.START).value)
        if self.tick is not None:
            await self._sleep(infer)
        for _ in range(max_polls):
            st = await self.read(self.map.reg("status"))
            if Status.finished(st):
                break
        else:
            raise TimeoutError("core did not finish")
        S = self.p.layout.S
        s0 = [await self.read(self.map.state(i, "s0")) for i in range(S)]
        # Inference ends after the free phase: the final state is s^0.
        final = list(s0) if infer else [await self.read(self.map.state(i, "final")) for i in range(S)]
        cycles = {k: await self.read(self.map.reg(f"cycles_{k}")) for k in ("free", "nudged", "update", "total")}
        pred = await self.read(self.map.reg("pred"))
        free_steps = await self.read(self.map.reg("free_steps"))
        return ExampleResult(s0, final, pred, cycles, free_steps)

    async def _sleep(self, infer: bool):
        """Sleep (``tick``) until about when the example is done: the cycle model's count, or
        under the settle rule (§4a) the count of the shortest free phase the rule allows,
        then one step at a time while the free phase runs (``cycles_free`` still counting),
        then the fixed rest (weakly-clamped phase and update, or the arg-max). The counts
        include the drive pass at the example's start (``cycle_model``'s ``drive``)."""
        cm = self.cycles
        n_free = self.p.n_free
        least = n_free if self.settle is None else min(n_free, self.settle.steps)
        await self.tick(example_cycles(cm, least, infer) - 2)
        if least == n_free:
            return
        step = cm["step"]
        while True:
            st = await self.read(self.map.reg("status"))
            if Status.finished(st):
                return
            total = await self.read(self.map.reg("cycles_total"))
            free = await self.read(self.map.reg("cycles_free"))  # read after total: ahead of it while free
            # (total counts the drive pass before the free phase, cm["drive"] cycles; free does not)
            if free + cm["drive"] <= total:  # the free phase is over after free / step steps: the rest is fixed
                left = example_cycles(cm, free // step, infer) - total - 8
                if left > 0:
                    await self.tick(left)
                return
            await self.tick(step - free % step)  # to just after the next step's end


class AmaranthBus:
    """write/read coroutines over the core's HOST_BUS in an amaranth.sim testbench."""

    def __init__(self, ctx, bus):
        self.ctx = ctx
        self.bus = bus

    async def write(self, addr: int, data: int):
        c, b = self.ctx, self.bus
        c.set(b.addr, addr)
        c.set(b.wdata, data & 0xFFFFFFFF)
        c.set(b.we, 1)
        await c.tick()
        c.set(b.we, 0)

    async def read(self, addr: int) -> int:
        c, b = self.ctx, self.bus
        c.set(b.addr, addr)
        c.set(b.re, 1)
        await c.tick()
        c.set(b.re, 0)
        while not c.get(b.rvalid):
            await c.tick()
        return c.get(b.rdata)


class UartTransport:
    """write/read coroutines over the UART bridge (``hdl/uart.py``): ``send(data: bytes)``
    and ``recv(n) -> bytes`` are coroutines over the serial line (cocotbext-uart's source
    and sink in the bench; a serial port on a real host, docs/hardware.md "ULX3S board top
    and UART link"). One frame at a time: each write waits for its answer byte, each read
    for its 4 data bytes."""

    def __init__(self, send, recv):
        self.send = send
        self.recv = recv

    async def write_ok(self, addr: int, data: int) -> bool:
        """A write; False when the core was busy and dropped it (answer ``'B'``)."""
        from .uart import check_write_answer, encode_write

        await self.send(encode_write(addr, data))
        return check_write_answer(await self.recv(1), addr)

    async def write(self, addr: int, data: int):
        from .uart import UartError

        if not await self.write_ok(addr, data):
            raise UartError(f"write {addr:#x} = {data & 0xFFFFFFFF:#x}: the core was busy, the write was dropped")

    async def read(self, addr: int) -> int:
        from .uart import decode_read, encode_read

        await self.send(encode_read(addr))
        return decode_read(await self.recv(4))

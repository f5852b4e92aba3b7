"""The ULX3S board top (hdl/board.py, eqprop hdl generate --board): its pins and LPF from
amaranth-boards, the PLL's dividers, the one-line errors, the top under amaranth.sim (a
register read over the UART, the PWR button's reset) and (marked ``fpga``) the board's
bitstream through the YoWASP flow."""

import json

import pytest

from eqprop.model.cli import main
from test_fpga import needs_yowasp
from test_generate import TINY

pytest.importorskip("amaranth_boards")
from eqprop.hdl import board, uart  # noqa: E402

# The ULX3S's pins (its schematic; amaranth-boards names the UART lines from the FPGA's side)
SITES = {"clk25": "G2", "uart_rx": "M1", "uart_tx": "L4", "button_pwr": "D6",
         **{f"led[{k}]": s for k, s in enumerate("B2 C2 C1 D2 D1 E2 E1 H3".split())}}


def _tiny(tmp_path, extra=""):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY + extra)
    return p


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_pins_and_lpf_from_amaranth_boards():
    pins = {p.port: p for p in board.board_pins(board.BOARDS["ulx3s"])}
    assert {k: p.site for k, p in pins.items()} == SITES
    assert pins["uart_rx"].dir == "i" and pins["uart_tx"].dir == "o" and pins["button_pwr"].invert
    assert pins["clk25"].clock_hz == 25e6
    lpf = board.lpf_text(board.BOARDS["ulx3s-25f"])
    for port, site in SITES.items():
        assert f'LOCATE COMP "{port}" SITE "{site}";' in lpf
    assert 'IOBUF PORT "clk25" IO_TYPE=LVCMOS33;' in lpf and 'FREQUENCY PORT "clk25" 25 MHZ;' in lpf
    assert 'IOBUF PORT "button_pwr" IO_TYPE=LVCMOS33 PULLMODE=UP;' in lpf
    assert "ULX3S_25F_Platform" in lpf


def test_pll_dividers():
    c = board.pll_config(25, 50)
    assert (c.clki_div, c.clkfb_div, c.clkop_div, c.fout_mhz, c.vco_mhz) == (1, 2, 12, 50, 600)
    assert board.pll_config(25, 75).fout_mhz == 75  # 3 Mbaud at 25 cycles per bit
    with pytest.raises(ValueError, match="cannot make 48 MHz from 25 MHz"):
        board.pll_config(25, 48)  # 1 MHz at the phase detector: below its 3.125


def test_bad_board_baud_and_clock_are_one_line(tmp_path, capsys):
    cfg, out = str(_tiny(tmp_path)), str(tmp_path / "o")
    assert main(["hdl", "generate", "--config", cfg, "--out", out, "--board", "de10"]) == 2
    assert _one_line(capsys) == ("eqprop: error: board: 'de10' is not one of ulx3s, ulx3s-85f, ulx3s-45f, "
                                 "ulx3s-25f")
    assert main(["hdl", "generate", "--config", cfg, "--out", out, "--board", "ulx3s", "--baud", "3000000"]) == 2
    assert "baud: 3000000 is 4.2% off at 25 MHz" in _one_line(capsys)
    assert main(["hdl", "generate", "--config", cfg, "--out", out, "--board", "ulx3s", "--clock-mhz", "48"]) == 2
    assert "clock_mhz: the PLL cannot make 48 MHz" in _one_line(capsys)
    assert main(["hdl", "generate", "--config", cfg, "--out", out, "--board", "ulx3s", "--target", "up5k"]) == 2
    assert "target: 'up5k' is not the FPGA of board ulx3s (ecp5-85k)" in _one_line(capsys)
    assert main(["hdl", "generate", "--config", cfg, "--out", out, "--baud", "9600"]) == 2
    assert "baud: 9600 applies to a board's UART" in _one_line(capsys)
    assert not (tmp_path / "o").exists()


def test_board_design_files_and_manifest(tmp_path):
    out = tmp_path / "d"
    assert main(["hdl", "generate", "--config", str(_tiny(tmp_path)), "--out", str(out), "--no-lint",
                 "--board", "ulx3s", "--clock-mhz", "50", "--baud", "1000000"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    b = man["board"]
    assert b["top"] == "tiny_core_ulx3s" and b["target"] == "ecp5-85k"
    assert b["clock"]["core_mhz"] == 50 and b["clock"]["pll"]["clkop_div"] == 12
    assert b["uart"]["divisor"] == 50 and man["cycle_model"]["clock_mhz"] == 50
    assert {"tiny_core_ulx3s.v", "tiny_core_ulx3s.lpf"} <= set(man["files"])
    v = (out / "tiny_core_ulx3s.v").read_text()
    assert "EHXPLLL" in v and "module tiny_core_ulx3s(" in v.replace(" (", "(")
    for port in ("clk25", "uart_rx", "uart_tx", "button_pwr", "led"):
        assert f" {port};" in v or f" {port}," in v or f"] {port};" in v


def test_top_answers_a_read_and_resets_on_the_button(tmp_path):
    """Ulx3sTop at 25 MHz (no PLL) under amaranth.sim: a UART read of ``n_free`` answers its
    reset value; a write changes it; the PWR button (active low) resets it."""
    from amaranth.sim import Simulator

    from eqprop.hdl.generate import build, config_from_args, hdl_options
    from eqprop.hdl.memory_map import MemoryMap

    class A:
        config = str(_tiny(tmp_path))

    cfg = config_from_args(A)
    params, _ = build(cfg, hdl_options(cfg))
    div = 4
    top, entry = board.board_top(params, board.BOARDS["ulx3s"], 25.0, 25_000_000 // div)
    assert entry["uart"]["divisor"] == div and entry["clock"]["pll"] is None
    addr = MemoryMap(params).reg("n_free")
    sim = Simulator(top)
    got = []

    async def oscillator(ctx):  # clk25 drives the top's sync domain (no PLL at 25 MHz)
        while True:
            ctx.set(top.clk25, 1)
            await ctx.delay(20e-9)
            ctx.set(top.clk25, 0)
            await ctx.delay(20e-9)

    async def receiver(ctx):
        while True:
            while ctx.get(top.uart_tx):
                await _ticks(ctx, top, 1)
            await _ticks(ctx, top, div // 2)
            v = 0
            for k in range(8):
                await _ticks(ctx, top, div)
                v |= ctx.get(top.uart_tx) << k
            await _ticks(ctx, top, div)
            got.append(v)

    async def send(ctx, data):
        for b in data:
            for level in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                ctx.set(top.uart_rx, level)
                await _ticks(ctx, top, div)

    async def answer(ctx, n):
        start = len(got)
        for _ in range(2000):
            if len(got) >= start + n:
                return bytes(got[start:start + n])
            await _ticks(ctx, top, 1)
        raise AssertionError("no answer")

    results = {}

    async def bench(ctx):
        ctx.set(top.uart_rx, 1)
        ctx.set(top.button_pwr, 1)  # not pressed
        await _ticks(ctx, top, 5)
        results["leds"] = ctx.get(top.led)
        await send(ctx, uart.encode_read(addr))
        results["reset_value"] = uart.decode_read(await answer(ctx, 4))
        await send(ctx, uart.encode_write(addr, 3))
        results["ack"] = await answer(ctx, 1)
        await send(ctx, uart.encode_read(addr))
        results["written"] = uart.decode_read(await answer(ctx, 4))
        ctx.set(top.button_pwr, 0)  # pressed
        await _ticks(ctx, top, 4)
        ctx.set(top.button_pwr, 1)
        await _ticks(ctx, top, 4)
        await send(ctx, uart.encode_read(addr))
        results["after_reset"] = uart.decode_read(await answer(ctx, 4))

    sim.add_testbench(oscillator, background=True)
    sim.add_testbench(receiver, background=True)
    sim.add_testbench(bench)
    sim.run()
    assert results["leds"] == 0x80  # clock up, idle, no irq
    assert results["reset_value"] == params.n_free and results["ack"] == b"K" and results["written"] == 3
    assert results["after_reset"] == params.n_free


async def _ticks(ctx, top, n):
    """n rising edges of clk25 (ctx.tick() of the top's own sync domain raises while the
    button or the reset synchroniser holds it in reset)."""
    for _ in range(n):
        await ctx.posedge(top.clk25)


@pytest.mark.fpga
@pytest.mark.slow
@needs_yowasp
def test_board_bitstream(tmp_path, capsys):
    """eqprop hdl generate --board ulx3s --pnr: the board top placed with its LPF, NAME_ulx3s.bit."""
    out = tmp_path / "d"
    assert main(["hdl", "generate", "--config", str(_tiny(tmp_path)), "--out", str(out), "--no-lint",
                 "--board", "ulx3s", "--pnr"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    pnr = man["pnr"]
    assert pnr["bitstream"] == "tiny_core_ulx3s.bit" and (out / pnr["bitstream"]).stat().st_size > 100_000
    assert pnr["lpf"] == "tiny_core_ulx3s.lpf" and pnr["resources"]["IO"][0] == len(SITES)
    assert pnr["min_fmax_mhz"] > 25
    log = (out / "nextpnr.log").read_text()
    assert "clk25" in log
    assert "tiny_core_ulx3s.bit" in capsys.readouterr().out

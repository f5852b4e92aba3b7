"""The core behind AXI4-Lite (hdl/axi.py, eqprop hdl generate --bus axi4lite), co-simulated with
cocotbext-axi's AxiLiteMaster against the fixed-point model (Icarus)."""

import json
import shutil

import pytest

from eqprop.model.cli import main
from eqprop.sim.runner import run_cosim

from test_cosim import CFG, generate_design, mnist_images

pytest.importorskip("cocotbext.axi")
needs_icarus = pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog missing (bash hdl/setup-tools.sh)")


@pytest.fixture(scope="module")
def axi_design(tmp_path_factory):
    return generate_design(tmp_path_factory.mktemp("axi"), CFG.replace('name = "cosim_core"', 'name = "axi_core"'),
                           "--bus", "axi4lite")


def test_manifest_records_the_bus_and_the_axi_map(axi_design):
    man = json.loads((axi_design / "manifest.json").read_text())
    assert man["bus"] == "axi4lite"
    ports = {p["name"]: p for p in man["ports"]}
    assert ports["s_axi_awaddr"]["width"] == 26 and ports["s_axi_rdata"]["width"] == 32
    assert ports["irq"]["dir"] == "out" and "bus__addr" not in ports
    ax = man["memory_map"]["axi4lite"]
    assert ax["registers"]["status"] == 4 and ax["registers"]["free_steps"] == 14 * 4
    assert ax["regions"]["weight"] == 6 << 22
    assert man["memory_map"]["status_bits"] == {"busy": 1, "done": 2, "write_error": 4}


def test_bad_bus_is_one_line(tmp_path, capsys):
    (tmp_path / "c.toml").write_text(CFG)
    assert main(["hdl", "generate", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"),
                 "--no-lint", "--bus", "wishbone"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bus: 'wishbone' is not one of native, axi4lite" in err[0]


@needs_icarus
def test_axi_100_inferences_and_busy_write(axi_design):
    """100 MNIST test images through AXI4-Lite: every s^0 state, step count and prediction the
    model's; then a write while busy answered SLVERR, not applied, status bit 2 set until
    written 1; irq up at the end of the example, down after the status read; a byte write
    (wstrb 0b0001) answered SLVERR and not applied."""
    x, y = mnist_images(100)
    r = run_cosim(axi_design, x, y, False, simulator="icarus", busy_write_check=True)
    assert r["bus"] == "axi4lite" and r["examples"] == 100
    assert r["mismatch_count"] == 0, r["mismatches"][:3]
    assert r["preds"] == r["expected_preds"] and r["free_steps"] == r["expected_free_steps"]
    b = r["busy_write"]
    assert b["status_busy"] & 1
    assert b["resp_busy"] == 2 and b["status_after"] & 4 and b["example_after"] == b["example_before"]
    assert b["irq_seen"] == 1 and b["status_done"] & 0b11 == 0b10 and b["irq_after_read"] == 0
    assert b["resp_clear"] == 0 and b["status_cleared"] & 4 == 0
    assert b["resp_partial"] == 2 and b["example_after_partial"] == b["example_before"]


@needs_icarus
def test_axi_20_training_examples(axi_design):
    """20 on-chip training examples through AXI4-Lite: every state, weight and bias the model's."""
    x, y = mnist_images(20)
    r = run_cosim(axi_design, x, y, True, simulator="icarus", work=axi_design / "cosim_train")
    assert r["examples"] == 20 and r["mismatch_count"] == 0, r["mismatches"][:3]
    assert r["backdoor"] is True  # the lanes' memories under the wrapper's "core"

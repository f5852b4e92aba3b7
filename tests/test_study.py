"""The bit-depth study engine on a tiny grid: runs, skip-on-rerun, summary, figures."""

import csv

import pytest

from eqprop.model.cli import main
from eqprop.model.config import ConfigError
from eqprop.model.study import load_study

STUDY = """
[study]
bits = [4, 8]
roundings = ["floor", "stochastic"]
seeds = [0]
epochs = 1
[train]
downsample = 7
sizes = [49, 6, 6, 10]
free_steps = 5
nudged_steps = 2
train_size = 60
eval_size = 40
[networks.layered-per-layer]
topology = "layered"
lr = [0.128, 0.032, 0.008]
[networks.skip]
topology = "skip"
p = 0.1
lr = 0.02
"""


def test_tiny_study(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text(STUDY)
    out = tmp_path / "study"
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(out), "--jobs", "2"]) == 0
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 2 * (1 + 2 * 2)  # networks x (float + bits x roundings)
    assert {r["bits"] for r in rows} == {"float", "4", "8"}
    assert all(float(r["test_error"]) <= 1.0 for r in rows)
    for png in ("error_vs_bits.png", "rms_vs_bits.png", "zero_vs_bits.png"):
        assert (out / png).stat().st_size > 1000
    md = (out / "summary.md").read_text()
    assert "| skip | 4 | stochastic |" in md
    capsys.readouterr()
    # A second call finds every point done and trains nothing.
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(out)]) == 0
    assert "[1/" not in capsys.readouterr().out


@pytest.mark.parametrize("text,needle", [
    ("[study]\nbitz = [4]\n[networks.a]\ntopology = 'layered'\n", "bitz"),
    ("[study]\nbits = [1]\n[networks.a]\ntopology = 'layered'\n", "bits"),
    ("[study]\n", "networks"),
    ("[networks.a]\ntopology = 'ring'\n", "topology"),
])
def test_bad_study_files(tmp_path, text, needle):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_study(f)
    assert needle in str(ei.value)

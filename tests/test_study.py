"""The bit-depth study engine on a tiny grid: runs, skip-on-rerun, summary, figures; on a local
Ray (2 CPUs): a point killed mid-run resumes from its checkpoint, a diverging point fails alone."""

import csv
import dataclasses
import importlib.util
import json

import pytest

from eqprop.model import config as config_mod
from eqprop.model.cli import main
from eqprop.model.config import ConfigError
from eqprop.model.study import FAULT_ENV, _run_point, load_study

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
    # --summary-only rewrites the summary from the points' files and trains nothing.
    (out / "summary.md").unlink()
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(out), "--summary-only"]) == 0
    assert "| skip | 4 | stochastic |" in (out / "summary.md").read_text()
    assert "[1/" not in capsys.readouterr().out
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(tmp_path / "none"), "--summary-only"]) == 2
    assert "holds no study yet" in capsys.readouterr().err


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


# ------------------------------------------------------------------------- Ray
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install -e '.[cluster]', or make setup)")

RAY_STUDY = """
[study]
bits = [4]
roundings = ["floor"]
seeds = [0]
epochs = 2
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
[networks.diverge]        # float: NaN in its second epoch; 4 bits: saturates, trains on
topology = "layered"
lr = 1e38
"""


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray with 2 CPUs for the module (start-up costs seconds); run_study uses it."""
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def _metrics(d):
    rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


@needs_ray
def test_ray_study_killed_point_resumes_and_diverged_point_fails(tmp_path, capsys, monkeypatch, ray_session):
    f = tmp_path / "s.toml"
    f.write_text(RAY_STUDY)
    out = tmp_path / "study"
    # The worker of layered-per-layer/float is SIGKILLed right after its first epoch's checkpoint.
    monkeypatch.setenv(FAULT_ENV, "layered-per-layer/float/seed0:1")
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(out), "--ray", "--gradcheck", "10"]) == 3
    cap = capsys.readouterr()
    killed = out / "points/layered-per-layer/float/seed0"
    assert (killed / ".fault-injected").exists()
    assert "resumed from the checkpoint of epoch 1" in cap.out
    assert "1 of 4 points failed" in cap.err and "diverge/float" in cap.err
    rows = {(r["network"], r["bits"]): r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows["layered-per-layer", "float"]["status"] == "done"
    assert rows["layered-per-layer", "float"]["epochs"] == "2"
    assert rows["diverge", "float"]["status"] == "failed"
    assert rows["diverge", "4"]["status"] == "done"  # the study went on
    assert "cos_23" in rows["layered-per-layer", "4"] and rows["layered-per-layer", "4"]["cospre_23"] != ""
    assert "| diverge | float | - | 0 | failed |" in (out / "summary.md").read_text()
    # The killed and resumed point ends with the metrics of an uninterrupted run.
    ref = tmp_path / "ref"
    _, base, networks = load_study(f)
    cfg = dataclasses.replace(config_mod.from_mapping(networks["layered-per-layer"], base), out=str(ref),
                              epochs=2, seed=0, model="float")
    assert _run_point(cfg, 1)["status"] == "done"
    assert _metrics(killed) == _metrics(ref)
    # Rerun: nothing left to train; the failed point is not retried and still fails the study.
    monkeypatch.delenv(FAULT_ENV)
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(out), "--ray", "--gradcheck", "10"]) == 3
    cap = capsys.readouterr()
    assert "point(s) run" not in cap.out and "failed earlier, not retried" in cap.out


@needs_ray
@pytest.mark.parametrize("address", ["ray://127.0.0.1:1", "127.0.0.1:1", "nohost"])
def test_ray_unreachable_address_is_one_line(tmp_path, capsys, address):
    f = tmp_path / "s.toml"
    f.write_text(RAY_STUDY)
    assert main(["study", "bitdepth", "--config", str(f), "--out", str(tmp_path / "o"), "--ray", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eqprop: error: --ray:")
    assert not (tmp_path / "o").exists()


def test_empty_grid_key_is_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("[study]\nseeds = []\n[networks.a]\ntopology = 'layered'\n")
    with pytest.raises(ConfigError, match="seeds: the grid key has no values"):
        load_study(f)


def test_grid_axes_cuts_and_order(tmp_path):
    """weight_store_extra and lr_modes multiply the fixed points, cut patterns remove cells,
    and each point's configuration holds what its directory name says."""
    from eqprop.model.study import points

    f = tmp_path / "s.toml"
    f.write_text(STUDY.replace("epochs = 1", "epochs = 1\nweight_store_extra = [0, 8]\nlr_modes = ['multiplier', "
                                             "'shift']\nfixed_settle_tol = 1\ncut = [{bits = 4, extra = 0}, "
                                             "{network = 'skip', lr_mode = 'shift'}]"))
    study, base, nets = load_study(f)
    grid = points(study, base, nets, tmp_path / "o")
    names = sorted(lb["dir"].split("/points/")[1] for lb, _ in grid)
    # per network: float + bits {4, 8} x rounding 2 x extra 2 x lr_mode 2 = 17, less the cuts
    per_layer = [n for n in names if n.startswith("layered-per-layer/")]
    skip = [n for n in names if n.startswith("skip/")]
    assert len(per_layer) == 1 + 16 - 4  # 4-bit with extra 0: 2 roundings x 2 modes cut
    assert len(skip) == 1 + 8 - 2  # shift cut; 4-bit extra 0 cut from the multiplier half
    assert "layered-per-layer/b8-floor-ws16-shift/seed0" in per_layer
    assert "skip/b4-stochastic-ws12/seed0" in skip and not any("b4-stochastic/" in n for n in names)
    for lb, cfg in grid:
        if lb["bits"] == "float":
            assert cfg.model == "float" and cfg.settle_tol == 0.0
            continue
        num = config_mod.numerics(cfg)
        assert num.weight.n_word == lb["bits"] and num.weight_store.n_word == lb["bits"] + lb["extra"]
        assert num.lr_mode == lb["lr_mode"] and cfg.settle_tol == 1.0
        assert ("-shift" in lb["dir"]) == (lb["lr_mode"] == "shift")


@pytest.mark.parametrize("text,needle", [
    ("weight_store_extra = [-1]", "weight_store_extra"),
    ("lr_modes = ['log']", "lr_modes"),
    ("lr_modes = []", "lr_modes: the grid key has no values"),
    ("cut = [{depth = 4}]", "cut"),
    ("weight_store_bits = 12\nweight_store_extra = [0, 8]", "either"),
])
def test_bad_grid_axes(tmp_path, text, needle):
    f = tmp_path / "s.toml"
    f.write_text(STUDY.replace("epochs = 1", f"epochs = 1\n{text}"))
    with pytest.raises(ConfigError, match=needle):
        load_study(f)


def test_lowest_depth_by_hand():
    """The answer's rule on hand-made rows: the lowest depth whose mean error, and every deeper
    depth's, is within 1 point of the float mean; a dip below a failing depth does not count."""
    from eqprop.model.study import lowest_depth, summary_markdown

    def row(bits, err, seed=0, store=None):
        return {"network": "n", "bits": bits, "rounding": "-" if bits == "float" else "stochastic",
                "store": store or ("-" if bits == "float" else bits), "lr_mode": "multiplier", "seed": seed,
                "epochs": 3, "train_error": err, "test_error": err, "rms_01": 1e-3}

    rows = [{**row("float", 0.050), "gain_last2": 0.004}, {**row("float", 0.054, 1), "gain_last2": 0.002}, row(16, 0.055), row(12, 0.058), row(12, 0.060, 1),
            row(8, 0.070), row(6, 0.059), row(4, 0.050, store=12)]
    res = {r["arithmetic"]: r for r in lowest_depth(rows)}
    assert res["stochastic"]["lowest"] == 12  # mean 5.9% <= 5.2% + 1; 8 bits fails; 6 bits below it ignored
    assert res["stochastic"]["errors"][12][1] == "0.20" and res["stochastic"]["errors"][12][2] == 2
    assert res["stochastic, ws+8"]["lowest"] == 4
    md = summary_markdown(rows)
    assert "| n | stochastic | 5.20% (spread 0.40) | 12 | 12 bits: 5.90% (spread 0.20) | 8 bits: 7.00%" in md
    assert "| n | 12 | stochastic | 2 | 3 | 5.90% | 5.90% | 0.20 | - |" in md
    assert "| n | float | - | 2 | 3 | 5.20% | 5.20% | 0.40 | 0.30 |" in md  # gained 0.3 points: plateaued


def _children(pid: int) -> list[int]:
    import os

    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open(f"/proc/{d}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_jobs_workers_die_with_the_study(tmp_path):
    """SIGKILL of the study process ends its --jobs workers (no orphan keeps training and
    holding its point's lock); the next call resumes the points."""
    import os
    import signal
    import subprocess
    import sys
    import time

    f = tmp_path / "s.toml"
    f.write_text(STUDY.replace("epochs = 1", "epochs = 400").replace("bits = [4, 8]", "bits = [8]")
                 .replace('roundings = ["floor", "stochastic"]', 'roundings = ["floor"]'))
    p = subprocess.Popen([sys.executable, "-m", "eqprop.model.cli", "study", "bitdepth", "--config", str(f),
                          "--out", str(tmp_path / "o"), "--jobs", "2"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.time() + 60, []
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.2)
            workers = [k for k in _children(p.pid) if "spawn_main" in open(f"/proc/{k}/cmdline").read()]
        assert len(workers) == 2
        while time.time() < deadline and len(list((tmp_path / "o").glob("points/*/*/seed0/.lock"))) < 2:
            time.sleep(0.2)  # both workers are past their initializer, training
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    deadline = time.time() + 20
    alive = workers
    while alive and time.time() < deadline:
        time.sleep(0.2)
        alive = [k for k in alive if os.path.exists(f"/proc/{k}") and
                 open(f"/proc/{k}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not alive

"""Training runs and the command line: learning, resume, bad input."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eqprop.model.cli import main

SMALL = [
    "--downsample", "14", "--sizes", "196-24-16-10", "--train-size", "400", "--eval-size", "200",
    "--free-steps", "20", "--nudged-steps", "4", "--lr", "0.1", "--no-progress",
]


def _metrics(run):
    rows = [json.loads(l) for l in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds")
    return rows


def _weights(run):
    ck = torch.load(Path(run) / "checkpoint.pt", weights_only=False)
    return ck["net"], ck["particles"], ck["epoch"]


def _same_run(a, b):
    assert _metrics(a) == _metrics(b)
    assert (Path(a) / "batches.jsonl").read_text() == (Path(b) / "batches.jsonl").read_text()
    na, pa, ea = _weights(a)
    nb, pb, eb = _weights(b)
    assert ea == eb
    for k in na:
        assert torch.equal(na[k], nb[k]), k
    assert torch.equal(pa, pb)


def test_resume_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *SMALL, "--epochs", "3", "--shuffle", "true", "--out", str(full)]) == 0
    assert main(["train", *SMALL, "--epochs", "1", "--shuffle", "true", "--out", str(part)]) == 0
    # A kill after the log lines of an unfinished epoch were (partly) written:
    with open(part / "batches.jsonl", "a") as f:
        f.write('{"epoch": 2, "batch": 1, "beta_sign": 1, "errors": 3, "rms": [0.1, 0.1, 0.1]}\n{"epo')
    assert main(["train", "--out", str(part), "--resume", "--epochs", "3", "--no-progress"]) == 0
    _same_run(full, part)
    assert len(_metrics(full)) == 3


def test_resume_after_sigkill(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = [*SMALL, "--train-size", "2000", "--epochs", "4"]
    assert main(["train", *args, "--out", str(full)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "eqprop.model.cli", "train", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (killed / "checkpoint.pt").exists()
    assert main(["train", "--out", str(killed), "--resume", "--no-progress"]) == 0
    _same_run(full, killed)


def test_short_run_learns(tmp_path):
    out = tmp_path / "learn"
    args = ["--downsample", "14", "--sizes", "196-64-32-10", "--train-size", "3000", "--eval-size", "1000",
            "--free-steps", "100", "--lr", "0.1", "--epochs", "3", "--no-progress"]
    assert main(["train", *args, "--out", str(out)]) == 0
    m = _metrics(out)
    # Chance is 90% error; a few epochs on 3,000 examples get well below it.
    assert m[-1]["test_error"] < 0.5
    assert m[-1]["train_error"] < m[0]["train_error"]
    assert main(["eval", str(out)]) == 0


def test_dead_output_diagnostic_hand_count():
    """dead_outputs / dead_targets / outputs_at_0 of one batch, counted by hand."""
    from eqprop.model.float_net import FloatNetwork
    from eqprop.model.topology import layered
    from eqprop.model.train import EpochAccumulator

    net = FloatNetwork(layered([2, 3]), dtype=torch.float64)  # every non-input neuron is an output
    s0 = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.0, 0.0]], dtype=torch.float64)
    sb = torch.tensor([[0.0, 0.6, 1.0], [0.2, 0.0, 0.1]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    acc = EpochAccumulator(1)
    # equal: (0,0) (0,2) (1,0) (1,1) -> 4 of 6; target units: (0,2) is at its target,
    # (1,0) is dead at 0.2 -> 1 of 2; at 0 after the free phase: (0,0) (1,1) (1,2) -> 3 of 6
    assert acc.outputs(net, s0, sb, t, 1.0) == (4 / 6, 1 / 2)
    assert acc.out0 == 3 / 6
    # beta < 0: dead outputs are counted, dead targets are not (pushed away, not lifted)
    assert acc.outputs(net, s0, sb, t, -1.0) == (4 / 6, None)
    row = acc.summary(net, 2)
    assert row["dead_outputs"] == 4 / 6 and row["dead_targets"] == 1 / 2 and row["outputs_at_0"] == 3 / 6


def test_report_tables_and_figures(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", *SMALL, "--epochs", "2", "--out", str(run)]) == 0
    m = _metrics(run)
    assert all(0.0 <= r["dead_outputs"] <= 1.0 and 0.0 <= r["dead_targets"] <= 1.0 for r in m)
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--names", "small"]) == 0
    table = (tmp_path / "rep" / "errors.md").read_text()
    for r in m:
        assert f"| {r['epoch']} | {100 * r['train_error']:.2f}% / {100 * r['test_error']:.2f}%" in table
    epochs = (tmp_path / "rep" / "epochs.md").read_text()
    for r in m:
        assert (f"| small | {r['epoch']} | {100 * r['train_error']:.2f}% | {100 * r['test_error']:.2f}% | "
                f"{r['free_steps_mean']:.1f} ({r['free_steps_max']}) | {r['eval_steps_mean']:.1f} "
                f"({r['eval_steps_max']}) |") in epochs
    rows = (tmp_path / "rep" / "rms.csv").read_text().splitlines()
    assert rows[0].startswith("run,") and len(rows) == 1 + 3  # 3 layer pairs x one block of 40 batches
    assert (tmp_path / "rep" / "rms.png").stat().st_size > 5000
    assert (tmp_path / "rep" / "small" / "metrics.jsonl").exists()
    _bad(capsys, ["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")], "metrics.jsonl")


def test_eval_particles_persist_across_evaluations(tmp_path, capsys):
    """eval_particles (the paper's code): the first evaluation equals one from the zero
    state; the second starts where the first ended; eqprop eval reproduces the last
    test_error; resume after epoch 1 gives the uninterrupted run."""
    from eqprop.model.train import evaluate, load_data, load_run

    args = [*SMALL, "--eval-free-steps", "6"]
    zero, pp, part = tmp_path / "zero", tmp_path / "pp", tmp_path / "part"
    assert main(["train", *args, "--epochs", "2", "--out", str(zero)]) == 0
    assert main(["train", *args, "--epochs", "2", "--eval-particles", "true", "--out", str(pp)]) == 0
    mz, mp = _metrics(zero), _metrics(pp)
    assert mz[0] == mp[0]  # particles start at zero: the first evaluation is the same
    cfg, net, ck = load_run(pp)
    start, end = ck["eval_particles_in"], ck["eval_particles"]
    assert start.shape == end.shape == (200, net.n_s) and float(start.abs().sum()) > 0
    # Independent recomputation: epoch-2 weights, from the particles epoch 1's evaluation left.
    split = load_data(cfg, cfg.eval_set, cfg.eval_size)
    p = start.clone()
    err, _, _ = evaluate(net, split, 6, cfg.eps, cfg.eval_batch_size, p)
    assert err == mp[1]["test_error"] and torch.equal(p, end)
    # Training does not depend on how evaluation starts: the same weights, so the
    # zero-state run's error is this network's error from the zero state.
    err0, _, _ = evaluate(net, split, 6, cfg.eps, cfg.eval_batch_size)
    assert err0 == mz[1]["test_error"]
    assert mz[1]["train_error"] == mp[1]["train_error"]
    capsys.readouterr()
    assert main(["eval", str(pp)]) == 0
    out = capsys.readouterr().out
    assert f"error {100 * mp[1]['test_error']:.2f}%" in out and "last evaluation's starting particles" in out
    assert main(["train", *args, "--epochs", "1", "--eval-particles", "true", "--out", str(part)]) == 0
    assert main(["train", "--out", str(part), "--resume", "--epochs", "2", "--no-progress"]) == 0
    _same_run(pp, part)
    ck_part = load_run(part)[2]
    assert torch.equal(ck_part["eval_particles"], end) and torch.equal(ck_part["eval_particles_in"], start)


def test_eval_reproduces_last_test_error(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    err = _metrics(out)[-1]["test_error"]
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert f"error {100 * err:.2f}%" in capsys.readouterr().out


def test_diverging_run_stops_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "nan"
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(out)]) == 0
    before = _weights(out)
    from eqprop.model.float_net import FloatNetwork

    real = FloatNetwork.correction
    calls = []

    def poisoned(self, *a, **k):  # the third batch's correction is NaN
        c = real(self, *a, **k)
        calls.append(1)
        if len(calls) == 3:
            c.W_ss[0, 0] = float("nan")
        return c

    monkeypatch.setattr(FloatNetwork, "correction", poisoned)
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "NaN or inf" in err and "epoch 2 batch 3" in err and "checkpoint" in err
    after = _weights(out)
    assert after[2] == 1
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert len(_metrics(out)) == 1


def _bad(capsys, argv, *needles, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    for n in needles:
        assert n in err, (n, err)


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--sizes", "196,-5,10"], "sizes"),
        (["--sizes", "196"], "sizes"),
        (["--sizes", "784-10"], "sizes"),
        (["--p", "1.5"], "p:"),
        (["--p", "-0.1"], "p:"),
        (["--topology", "layered", "--p", "0.1"], "p:"),
        (["--topology", "skip-add", "--n-rewire", "100000000"], "n_rewire"),
        (["--epochs", "abc"], "epochs"),
        (["--epochs", "0"], "epochs"),
        (["--lr", "0.1,0.2"], "lr"),
        (["--beta", "0"], "beta"),
        (["--topology", "ring"], "topology"),
        (["--eval-set", "train"], "eval_set"),
        (["--downsample", "13"], "downsample"),
        (["--dtype", "float16"], "dtype"),
        (["--nudge", "late"], "nudge: 'late' is not one of after-step, eq5"),
        (["--model", "fixed", "--beta", "0.00390625"], "beta: 0.00390625 is too small"),
    ],
)
def test_bad_flags(tmp_path, capsys, flags, needle):
    _bad(capsys, ["train", *SMALL, *flags, "--out", str(tmp_path / "x")], needle)
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[train]\nepoch = 3\n", "epoch: unknown configuration key"),
        ("epochs = 'three'\n", "epochs: expected an integer"),
        ("lr = [0.1, 'x']\n", "lr:"),
        ("persistent = 1\n", "persistent: expected true or false"),
        ("sizes = [196, 24, 10\n", "not valid TOML"),
        ("[training]\nepochs = 1\n", "training: unknown configuration key"),
        ("[train]\nnudge = 5\n", "nudge: expected a string"),
    ],
)
def test_bad_config_files(tmp_path, capsys, text, needle):
    f = tmp_path / "c.toml"
    f.write_text(text)
    _bad(capsys, ["train", "--config", str(f), *SMALL, "--out", str(tmp_path / "x")], needle)


def test_missing_config_file_and_run_dir_errors(tmp_path, capsys):
    _bad(capsys, ["train", "--config", str(tmp_path / "none.toml")], "none.toml")
    _bad(capsys, ["train", *SMALL, "--out", str(tmp_path / "r"), "--resume"], "nothing to resume")
    assert main(["train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    _bad(capsys, ["train", *SMALL, "--epochs", "1", "--out", str(tmp_path / "r")], "already holds a run")
    _bad(capsys, ["eval", str(tmp_path / "nothing")], "nothing")


def test_corrupt_data_file_named(tmp_path, capsys):
    src = Path(__file__).resolve().parents[1] / "model" / "datasets" / "mnist"
    d = tmp_path / "mnist"
    d.mkdir()
    for f in src.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    blob = (d / "train-labels-idx1-ubyte.gz").read_bytes()
    (d / "train-labels-idx1-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    _bad(capsys, ["train", *SMALL, "--data-dir", str(d), "--out", str(tmp_path / "x")], "train-labels-idx1-ubyte")


def test_topology_command(capsys):
    assert main(["topology", "--sizes", "784-500-500-500-10", "--p", "0.0756"]) == 0
    out = capsys.readouterr().out
    assert "N_o = 1271250" in out and "layer-skipping" in out
    # any sizes, without an image size to match; bad ones still refused
    assert main(["topology", "--sizes", "196-100-100-100-10", "--p", "0.0756"]) == 0
    assert "skip 196-100-100-100-10: 55450 connections" in capsys.readouterr().out
    assert main(["topology", "--sizes", "5,-3,2"]) == 2


def test_shipped_configs_are_valid_and_use_the_papers_nudge():
    """Every run config in configs/ loads and validates (fixed-point ones build their
    numerics); the paper's runs and the demo use the paper's nudge ordering."""
    from eqprop.model import config as config_mod
    from eqprop.model.numerics import check_config

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(p for p in root.rglob("*.toml") if "studies" not in p.parts)
    assert len(files) >= 7
    for f in files:
        cfg = config_mod.validate(config_mod.load_toml(f), data=f.parent.name != "hdl")
        if cfg.model == "fixed":
            check_config(config_mod.numerics(cfg), 8, cfg.eps, cfg.beta, cfg.batch_size)
        if f.parent.name == "paper" or f.name == "demo.toml":
            want = "eq5" if f.stem.endswith("-eq5") else "after-step"
            assert cfg.nudge == want, f
            assert "nudge" in f.read_text(), f  # said explicitly, not left to the default


def test_run_made_before_the_nudge_option_resumes_as_eq5(tmp_path, capsys):
    """A run directory whose config.toml has no nudge key (written before the option)
    was trained with eq. 5: resume and eval read it so; changing it on resume is refused."""
    from eqprop.model.train import load_run

    run = tmp_path / "old"
    assert main(["train", *SMALL, "--epochs", "1", "--nudge", "eq5", "--out", str(run)]) == 0
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text(text.replace('nudge = "eq5"\n', ""))
    assert load_run(run)[0].nudge == "eq5"
    _bad(capsys, ["train", "--out", str(run), "--resume", "--epochs", "2", "--nudge", "after-step",
                  "--no-progress"], "nudge: the run in", "was trained with nudge = eq5")
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert len(_metrics(run)) == 2


def test_eval_particles_fixed_model_and_turned_off_on_resume(tmp_path):
    """The fixed model keeps int32 evaluation particles; --resume --eval-particles false
    drops them (evaluation from zero again)."""
    from eqprop.model.train import load_run

    args = ["--model", "fixed", "--bits", "state=8,weight=8,bias=12", "--eval-free-steps", "6", *SMALL]
    run = tmp_path / "fx"
    assert main(["train", *args, "--epochs", "1", "--eval-particles", "true", "--out", str(run)]) == 0
    ck = load_run(run)[2]
    assert ck["eval_particles"].dtype == torch.int32 and int(ck["eval_particles"].max()) > 0
    assert ck["eval_set"] == "validation"
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--eval-particles", "false",
                 "--no-progress"]) == 0
    ck = load_run(run)[2]
    assert ck["eval_particles"] is None and ck["eval_particles_in"] is None

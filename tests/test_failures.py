"""Issue 9: every failure is one line and nothing is lost.

* A run directory belongs to one training process (a flock on RUN/.lock):
  a second ``eqprop train`` into it is refused and changes nothing.
* An unreadable checkpoint is one line naming checkpoint.pt for every
  command that reads it (eval, train --resume, hdl generate --checkpoint).
* Resume and eval check the run directory: a flag that changes what the run
  is, or a config.toml edited away from its checkpoint, is refused; a flag that
  may change is applied and recorded in config.toml.
* Output paths and a failing checkpoint write: one line naming the path, the
  last good checkpoint intact, no ``.tmp`` litter.
* Values that validate but cannot run are refused up front.
* The smaller ones: data verify checks label values, Ctrl-C in the first epoch
  says no checkpoint exists, eval --eval-size 0, damaged log lines.

docs/failures.md lists the fault classes and the test of each.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eqprop.model.cli import main

SMALL = [
    "--downsample", "14", "--sizes", "196-24-16-10", "--train-size", "2000", "--eval-size", "200",
    "--free-steps", "20", "--nudged-steps", "4", "--lr", "0.1", "--no-progress",
]

# A tiny fixed-point run that ``eqprop hdl generate --checkpoint`` accepts.
TINY_FIXED = [
    "--downsample", "7", "--sizes", "49-6-10", "--model", "fixed", "--free-steps", "4", "--nudged-steps", "2",
    "--train-size", "100", "--eval-size", "50", "--epochs", "1", "--batch-size", "1", "--no-progress",
]


def _one_line_error(capsys, argv, *needles, code=2):
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith("eqprop: interrupted" if code == 130 else "eqprop: error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def _snapshot(d: Path, skip=()) -> dict:
    """Every file's bytes and mtime (ns) in a run directory."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(d.iterdir()) if p.is_file() and p.name not in skip}


def _wait(cond, proc, seconds, what):
    deadline = time.time() + seconds
    while not cond():
        assert proc.poll() is None, f"the first training exited ({proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_second_training_into_a_locked_run_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # A lock file left by a process that no longer exists: not a run, not a lock.
    (out / ".lock").write_text("999999999\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "eqprop.model.cli", "train", *SMALL, "--epochs", "200",
                              "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        def locked():
            lock = out / ".lock"
            return (out / "config.toml").exists() and lock.exists() and lock.read_text().strip() == str(first.pid)

        _wait(locked, first, 180, "the first training to lock its run directory")
        # Freeze the first process (it keeps its lock) so that the directory only
        # changes if the second one changes it.
        first.send_signal(signal.SIGSTOP)
        before = _snapshot(out)
        err = _one_line_error(capsys, ["train", *SMALL, "--epochs", "3", "--seed", "7", "--out", str(out)],
                              str(out), str(first.pid))
        assert "in use" in err
        assert _snapshot(out) == before
        # --resume into the locked directory is refused the same way.
        first.send_signal(signal.SIGCONT)
        _wait(lambda: (out / "checkpoint.pt").exists(), first, 300, "the first epoch's checkpoint")
        first.send_signal(signal.SIGSTOP)
        before = _snapshot(out)
        _one_line_error(capsys, ["train", "--out", str(out), "--resume", "--no-progress"], str(out), str(first.pid))
        assert _snapshot(out) == before
        # SIGKILL: the OS releases the lock; the run resumes.
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    done = torch.load(out / "checkpoint.pt", weights_only=False)["epoch"]
    assert main(["train", "--out", str(out), "--resume", "--epochs", str(done + 1), "--no-progress"]) == 0
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, done + 2))
    # The lock is released when the training ends: the same process resumes again.
    assert main(["train", "--out", str(out), "--resume", "--epochs", str(done + 1), "--no-progress"]) == 0
    # A finished run with its (free) lock file is still "a run", not an empty directory.
    _one_line_error(capsys, ["train", *SMALL, "--epochs", "1", "--out", str(out)], "already holds a run")


@pytest.fixture(scope="module")
def tiny_fixed_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", *TINY_FIXED, "--out", str(run)]) == 0
    return run


def _truncated(blob):
    return blob[: len(blob) // 2]


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _loaded(blob) -> dict:
    return torch.load(io.BytesIO(blob), weights_only=False)


def _other_format(blob):
    return _saved({**_loaded(blob), "format": 99})


def _missing_keys(blob):
    return _saved({k: v for k, v in _loaded(blob).items() if k not in ("net", "generator")})


def _wrong_shapes(blob):  # e.g. a checkpoint copied from another network's run
    ck = _loaded(blob)
    return _saved({**ck, "net": {k: v[:1] for k, v in ck["net"].items()}})


@pytest.mark.parametrize("make,needle", [
    pytest.param(_truncated, "unreadable", id="truncated"),
    pytest.param(lambda blob: b"", "unreadable", id="empty"),
    pytest.param(lambda blob: b"\x80\x05not a checkpoint" + bytes(range(256)) * 4, "unreadable", id="garbage"),
    pytest.param(lambda blob: _saved([1, 2, 3]), "not an eqprop checkpoint", id="not-a-dict"),
    pytest.param(_other_format, "format 99", id="other-format"),
    pytest.param(_missing_keys, "net", id="missing-keys"),
    pytest.param(_wrong_shapes, "W_in", id="wrong-shapes"),
])
def test_unreadable_checkpoint_is_one_line_everywhere(tiny_fixed_run, tmp_path, capsys, make, needle):
    run = tmp_path / "run"
    shutil.copytree(tiny_fixed_run, run)
    ck = run / "checkpoint.pt"
    ck.write_bytes(make(ck.read_bytes()))
    before = _snapshot(run, skip=(".lock",))
    commands = {
        "eval": ["eval", str(run)],
        "resume": ["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"],
        "hdl": ["hdl", "generate", "--config", str(run / "config.toml"), "--checkpoint", str(run),
                "--out", str(tmp_path / "design"), "--no-lint"],
    }
    for name, argv in commands.items():
        err = _one_line_error(capsys, argv, "checkpoint.pt", needle)
        assert str(ck) in err, (name, err)
        assert _snapshot(run, skip=(".lock",)) == before, name


# ------------------------------------------------------- resume and eval (item 2)
def _copy(run, tmp_path, name="run") -> Path:
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


def _resume(run, *flags):
    return ["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress", *flags]


@pytest.mark.parametrize("flags,key", [
    pytest.param(["--model", "float"], "model", id="model"),
    pytest.param(["--sizes", "49-8-10"], "sizes", id="sizes"),
    pytest.param(["--topology", "layered"], "topology", id="topology"),
    pytest.param(["--n-rewire", "3"], "n_rewire", id="n_rewire"),
    pytest.param(["--downsample", "14", "--sizes", "196-6-10"], "downsample", id="downsample"),
    pytest.param(["--dataset", "fashion-mnist"], "dataset", id="dataset"),
    pytest.param(["--train-size", "50"], "train_size", id="train_size"),
    pytest.param(["--batch-size", "2"], "batch_size", id="batch_size"),
    pytest.param(["--eps", "0.25"], "eps", id="eps"),
    pytest.param(["--beta", "0.5"], "beta", id="beta"),
    pytest.param(["--bits", "weight=fxp-s8/5"], "fixed.weight", id="bits"),
    pytest.param(["--rounding", "stochastic"], "fixed.rounding", id="rounding"),
    pytest.param(["--nudge", "eq5"], "nudge", id="nudge"),
])
def test_resume_refuses_a_flag_that_changes_the_run(tiny_fixed_run, tmp_path, capsys, flags, key):
    run = _copy(tiny_fixed_run, tmp_path)
    before = _snapshot(run, skip=(".lock",))
    err = _one_line_error(capsys, _resume(run, *flags), f"{key}: the run in {run}", "was trained with")
    assert "--out" in err
    assert _snapshot(run, skip=(".lock",)) == before


def test_resume_applies_and_records_the_keys_that_may_change(tiny_fixed_run, tmp_path):
    from eqprop.model.config import load_toml

    run = _copy(tiny_fixed_run, tmp_path)
    ck1 = torch.load(run / "checkpoint.pt", weights_only=False)
    assert main(_resume(run, "--lr", "0.05", "--eval-size", "40", "--settle", "false",
                        "--eval-free-steps", "3")) == 0
    cfg = load_toml(run / "config.toml")
    assert (cfg.lr, cfg.epochs, cfg.eval_size, cfg.settle, cfg.eval_free_steps) == ([0.05], 2, 40, False, 3)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == ck1["history"][0]  # the first epoch's line is kept as it was
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ck["identity"]["sizes"] == [49, 6, 10] and ck["identity"]["fixed"]["weight"] == "fxp-s8/6"
    # the recorded configuration is the run's own again: a plain resume changes nothing in it
    text = (run / "config.toml").read_text()
    assert main(_resume(run, "--epochs", "2")) == 0
    assert (run / "config.toml").read_text() == text


def _edit_config(run, old, new):
    cfg = run / "config.toml"
    text = cfg.read_text()
    assert old in text, (old, text)
    cfg.write_text(text.replace(old, new))


@pytest.mark.parametrize("old,new,key", [
    pytest.param("sizes = [49, 6, 10]", "sizes = [49, 8, 10]", "sizes", id="sizes"),
    pytest.param('model = "fixed"', 'model = "float"', "model", id="model"),
    pytest.param("eps = 0.5", "eps = 0.25", "eps", id="eps"),
    pytest.param("downsample = 7", "downsample = 14", "downsample", id="downsample"),
    pytest.param('weight = "fxp-s8/6"', 'weight = "fxp-s8/5"', "fixed.weight", id="formats"),
])
def test_eval_and_resume_refuse_a_config_toml_edited_away_from_the_checkpoint(
        tiny_fixed_run, tmp_path, capsys, old, new, key):
    run = _copy(tiny_fixed_run, tmp_path)
    _edit_config(run, old, new)
    if key == "downsample":
        _edit_config(run, "sizes = [49, 6, 10]", "sizes = [196, 6, 10]")
    before = _snapshot(run, skip=(".lock",))
    for argv in (["eval", str(run)], _resume(run)):
        _one_line_error(capsys, argv, f"{key}: {run / 'config.toml'} says", str(run / "checkpoint.pt"))
        assert _snapshot(run, skip=(".lock",)) == before


def test_eval_refuses_a_topology_from_another_run(tiny_fixed_run, tmp_path, capsys):
    run = _copy(tiny_fixed_run, tmp_path)
    other = tmp_path / "other.npz"
    assert main(["topology", "--sizes", "49-6-10", "--seed", "5", "--save", str(other)]) == 0
    shutil.copy(other, run / "topology.npz")
    before = _snapshot(run, skip=(".lock",))
    for argv in (["eval", str(run)], _resume(run)):
        _one_line_error(capsys, argv, str(run / "topology.npz"), "does not match")
        assert _snapshot(run, skip=(".lock",)) == before


def test_checkpoint_without_identity_still_resumes_and_evaluates(tiny_fixed_run, tmp_path, capsys):
    """A checkpoint written before it carried its identity (and, older, before the nudge
    option): eval and resume work; its stored config still catches an edited config.toml."""
    run = _copy(tiny_fixed_run, tmp_path)
    ck = torch.load(run / "checkpoint.pt", weights_only=False)
    del ck["identity"]
    torch.save(ck, run / "checkpoint.pt")
    assert main(["eval", str(run)]) == 0
    bad = _copy(run, tmp_path, "edited")
    _edit_config(bad, "sizes = [49, 6, 10]", "sizes = [49, 8, 10]")
    _one_line_error(capsys, ["eval", str(bad)], f"sizes: {bad / 'config.toml'} says")
    assert main(_resume(run)) == 0
    assert torch.load(run / "checkpoint.pt", weights_only=False)["identity"]["model"] == "fixed"


def test_eval_of_a_run_trained_on_a_gpu_falls_back_to_the_cpu(tiny_fixed_run, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    run = _copy(tiny_fixed_run, tmp_path)
    _edit_config(run, 'device = "cpu"', 'device = "cuda"')
    assert main(["eval", str(run)]) == 0
    # resuming there asks for --device cpu (allowed on resume, and recorded)
    _one_line_error(capsys, _resume(run), "device: cuda is not available", "--device cpu")
    assert main(_resume(run, "--device", "cpu")) == 0
    assert 'device = "cpu"' in (run / "config.toml").read_text()


# ------------------------------------------------------------ output paths (item 4)
def _train_tiny(out, *flags):
    return ["train", *TINY_FIXED, "--out", str(out), *flags]


def _readonly_mkdir(monkeypatch):
    def refuse(self, *a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)


@pytest.mark.parametrize("case", ["a-file", "under-a-file", "read-only"])
def test_train_out_that_cannot_be_a_run_directory(tmp_path, capsys, monkeypatch, case):
    f = tmp_path / "f"
    f.write_text("mine\n")
    out = {"a-file": f, "under-a-file": f / "run", "read-only": tmp_path / "ro" / "run"}[case]
    reason = {"a-file": "is a file", "under-a-file": f"{f} is a file", "read-only": "Read-only file system"}[case]
    if case == "read-only":
        _readonly_mkdir(monkeypatch)
    _one_line_error(capsys, _train_tiny(out), f"out: cannot create the run directory {out}", reason)
    assert f.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize("case", ["a-directory", "under-a-file", "read-only"])
def test_topology_save_that_cannot_be_written(tmp_path, capsys, monkeypatch, case):
    import eqprop.model.files as files_mod

    f = tmp_path / "f"
    f.write_text("mine\n")
    (tmp_path / "d").mkdir()
    path = {"a-directory": tmp_path / "d", "under-a-file": f / "t.npz", "read-only": tmp_path / "t.npz"}[case]
    reason = {"a-directory": "is a directory", "under-a-file": f"{f} is a file",
              "read-only": "Read-only file system"}[case]
    if case == "read-only":
        def refuse(path, *a, **k):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

        monkeypatch.setattr(files_mod, "open", refuse, raising=False)
    _one_line_error(capsys, ["topology", "--sizes", "49-6-10", "--save", str(path)],
                    f"save: cannot write {path}", reason)
    assert f.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f"] and not any((tmp_path / "d").iterdir())


def _nothing_lost(before: dict, run: Path):
    """After a resume that stopped mid-epoch: the checkpoint untouched, the logs (re-written
    in line with it) and the topology with the same bytes, no .tmp litter; config.toml
    records the keys the resume changed."""
    after = _snapshot(run, skip=(".lock",))
    assert sorted(after) == sorted(before)
    assert after["checkpoint.pt"] == before["checkpoint.pt"]
    for name in ("metrics.jsonl", "batches.jsonl", "topology.npz"):
        assert after[name][0] == before[name][0], name


def test_full_disk_at_a_checkpoint_keeps_the_last_good_one(tiny_fixed_run, tmp_path, capsys, monkeypatch):
    run = _copy(tiny_fixed_run, tmp_path)
    before = _snapshot(run, skip=(".lock",))
    real = torch.save

    def full(obj, f, *a, **k):
        if not hasattr(f, "write"):
            return real(obj, f, *a, **k)
        f.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    _one_line_error(capsys, _resume(run), str(run / "checkpoint.pt"), "No space left on device",
                    "epoch 1 is kept")
    _nothing_lost(before, run)
    monkeypatch.undo()
    assert main(_resume(run)) == 0  # once there is room, the run goes on from epoch 1


# ----------------------------------------------- values that cannot run (item 5)
@pytest.mark.parametrize("flags,needle", [
    pytest.param(["--lr", "1e300"], "lr: 1e+300 overflows float32", id="lr"),
    pytest.param(["--seed", str(2**63)], f"seed: {2**63} is too large", id="seed"),
    pytest.param(["--sizes", "49-100000-10"], "sizes: 100059 neurons need a dense", id="sizes"),
    pytest.param(["--bits", "bias=2"], "bias: 2 bits give fxp-s2/-1", id="bits"),
    pytest.param(["--device", "cuda"], "device: cuda is not available", id="device"),
])
def test_values_that_validate_but_cannot_run(tmp_path, capsys, flags, needle):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "run"
    t0 = time.perf_counter()
    _one_line_error(capsys, _train_tiny(out, *flags), needle)
    assert time.perf_counter() - t0 < 5  # refused up front, nothing allocated
    assert not out.exists()
    if "--bits" in flags or "--sizes" in flags:  # the commands that only print a configuration, too
        cmd = "numerics" if "--bits" in flags else "topology"
        _one_line_error(capsys, [cmd, "--downsample", "7", "--sizes", "49-6-10", *flags], needle)


def test_study_with_a_seed_that_is_not_one(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text('[study]\nseeds = ["a"]\n[train]\ndownsample = 7\nsizes = [49, 6, 10]\n'
                 '[networks.a]\ntopology = "layered"\n')
    out = tmp_path / "study"
    _one_line_error(capsys, ["study", "bitdepth", "--config", str(f), "--out", str(out)], "seeds", "'a'", str(f))
    assert not out.exists()


# ------------------------------------------------------------ smaller ones (item 8)
def test_data_verify_checks_label_values(tmp_path, capsys):
    from eqprop.model.data import CHECKSUM_FILE, MNIST_DIR

    for p in MNIST_DIR.iterdir():
        shutil.copy(p, tmp_path / p.name)
    name = "t10k-labels-idx1-ubyte"
    raw = bytearray(gzip.decompress((tmp_path / f"{name}.gz").read_bytes()))
    raw[8 + 17] = 12  # the 18th label
    (tmp_path / f"{name}.gz").unlink()
    (tmp_path / name).write_bytes(bytes(raw))
    sums = [l for l in (tmp_path / CHECKSUM_FILE).read_text().splitlines() if not l.endswith(name)]
    sums.append(f"{hashlib.sha256(raw).hexdigest()}  {name}")
    (tmp_path / CHECKSUM_FILE).write_text("\n".join(sums) + "\n")
    _one_line_error(capsys, ["data", "verify", "--data-dir", str(tmp_path)], str(tmp_path / name), "label 12")


def _interrupt_at_evaluation(monkeypatch):
    import eqprop.model.train as train_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "evaluate", interrupted)


def test_ctrl_c_says_whether_a_checkpoint_was_kept(tiny_fixed_run, tmp_path, capsys, monkeypatch):
    _interrupt_at_evaluation(monkeypatch)
    out = tmp_path / "new"
    err = _one_line_error(capsys, _train_tiny(out), "no checkpoint was written", str(out), code=130)
    assert "kept" not in err
    assert not (out / "checkpoint.pt").exists()
    run = _copy(tiny_fixed_run, tmp_path)
    before = _snapshot(run, skip=(".lock",))
    _one_line_error(capsys, _resume(run), f"the last checkpoint {run / 'checkpoint.pt'} is kept", code=130)
    _nothing_lost(before, run)
    monkeypatch.undo()
    # the first run's directory takes a fresh run (it holds no run yet)
    assert main(_train_tiny(out)) == 0


def test_eval_size_zero_is_refused(tiny_fixed_run, capsys):
    _one_line_error(capsys, ["eval", str(tiny_fixed_run), "--eval-size", "0"], "eval_size", "0")


@pytest.mark.parametrize("where,line,ok", [
    pytest.param("middle", "{not json", False, id="bad-middle-line"),
    pytest.param("middle", "[1, 2]", False, id="non-object-middle-line"),
    pytest.param("last", '{"epo', True, id="cut-last-line"),
    pytest.param("last", "7", True, id="non-object-last-line"),
])
def test_damaged_batch_log_on_resume(tiny_fixed_run, tmp_path, capsys, where, line, ok):
    run = _copy(tiny_fixed_run, tmp_path)
    log = run / "batches.jsonl"
    lines = log.read_text().splitlines()
    good = list(lines)
    if where == "middle":
        lines.insert(5, line)
    else:
        lines.append(line)
    log.write_text("\n".join(lines) + ("\n" if where == "middle" else ""))
    if not ok:
        before = _snapshot(run, skip=(".lock",))
        _one_line_error(capsys, _resume(run), f"{log}: line 6 of {len(lines)}")
        assert _snapshot(run, skip=(".lock",)) == before
        return
    assert main(_resume(run)) == 0
    rows = log.read_text().splitlines()
    assert rows[: len(good)] == good and all(json.loads(r)["epoch"] == 2 for r in rows[len(good):])

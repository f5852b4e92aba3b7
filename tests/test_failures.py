"""Issue 9: every failure is one line and nothing is lost.

* A run directory belongs to one training process (a flock on RUN/.lock):
  a second ``eqprop train`` into it is refused and changes nothing.
* An unreadable checkpoint is one line naming checkpoint.pt for every
  command that reads it (eval, train --resume, hdl generate --checkpoint).
"""

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
    assert err.startswith("eqprop: error: "), err
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

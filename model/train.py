"""Training loop: free phase, weakly-clamped phase, update (paper, section 2.1.1).

One run lives in one directory:

* ``config.toml``    the resolved configuration (readable by ``--config``);
* ``topology.npz``   the connection list (Topology.save), the exact network;
* ``metrics.jsonl``  one JSON line per epoch: epoch, train_error (free-phase
  predictions during the epoch, as the paper counts it), test_error (on the
  configured eval set), rms_correction (per adjacent layer pair, the RMS of
  the applied alpha * Delta W over that pair's connections, averaged over the
  epoch's batches), free_residual (the largest |s - clip(s - dF/ds)| at the
  end of the free phase, averaged over batches: 0 at an exact equilibrium),
  seconds;
* ``batches.jsonl``  per batch: the per-layer RMS corrections (the paper's
  Figure 4), beta's sign, the batch's free-phase errors;
* ``checkpoint.pt``  written atomically at each epoch end (parameters,
  persistent particles, random-generator state, metric history).

Order at an epoch end: checkpoint first, then the log lines. ``--resume``
restores the checkpoint, brings the logs back in line with it (lines of an
epoch the checkpoint does not hold are dropped, missing ones re-written from
it) and continues, which gives the same metrics as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import config as config_mod
from .config import ConfigError, TrainConfig
from .data import Split, load_split, one_hot
from .float_net import FloatNetwork
from .topology import Topology, from_spec

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class TrainingDiverged(RuntimeError):
    """NaN or inf appeared; the last good checkpoint is kept."""


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, or nothing to resume)."""


# --------------------------------------------------------------------- files
def atomic_write_bytes(path: Path, data: bytes):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj, path: Path):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path: Path, rows: list[dict]):
    if not rows:
        return
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut by a kill: everything after it is re-written
    return rows


def _rewrite_jsonl(path: Path, rows: list[dict]):
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


# ------------------------------------------------------------------- helpers
def build_topology(cfg: TrainConfig) -> Topology:
    return from_spec(cfg.topology, cfg.sizes, seed=cfg.seed, **cfg.rewire)


def torch_dtype(cfg: TrainConfig):
    return {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]


def make_network(cfg: TrainConfig, topology: Topology) -> FloatNetwork:
    return FloatNetwork(topology, dtype=torch_dtype(cfg), device=cfg.device)


def load_data(cfg: TrainConfig, split: str, size: int) -> Split:
    return load_split(cfg.dataset, split, size=size, downsample=cfg.downsample or None, data_dir=cfg.data_dir or None)


def evaluate(net: FloatNetwork, split: Split, steps: int, eps: float, batch_size: int) -> tuple[float, torch.Tensor]:
    """Error of free-phase predictions (argmax of the output neurons) from the zero state."""
    wrong = 0
    preds = []
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x = torch.from_numpy(split.x[i : i + batch_size]).to(net.device)
            s = net.relax(net.zero_state(x.shape[0]), net.input_drive(x), steps, eps)
            p = net.outputs(s).argmax(1).cpu()
            preds.append(p)
            wrong += int((p != torch.from_numpy(split.y[i : i + batch_size])).sum())
    return wrong / len(split), torch.cat(preds)


@dataclass
class RunState:
    epoch: int  # epochs completed
    particles: torch.Tensor | None
    generator: torch.Generator
    history: list[dict]


# ---------------------------------------------------------------------- run
class Run:
    """A training run bound to its directory."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool = False):
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT

    def _prepare(self):
        cfg = self.cfg
        if self.resume:
            if not self.ckpt_path.exists():
                raise RunDirError(f"--resume: {self.ckpt_path} does not exist (nothing to resume)")
            self.topology = Topology.load(self.out / "topology.npz")
        else:
            if self.ckpt_path.exists() or (self.out / "metrics.jsonl").exists():
                raise RunDirError(f"out: {self.out} already holds a run; use --resume or another --out")
            self.out.mkdir(parents=True, exist_ok=True)
            self.topology = build_topology(cfg)
            self.topology.save(self.out / "topology.npz")
            atomic_write_bytes(self.out / "config.toml", config_mod.dumps_toml(cfg).encode())
        self.net = make_network(cfg, self.topology)

    def _fresh_state(self, n_train: int) -> RunState:
        cfg = self.cfg
        self.net.init_params(cfg.seed, cfg.init_adjacent, cfg.init_other, cfg.init_bias)
        particles = self.net.zero_state(n_train).cpu() if cfg.persistent else None
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        return RunState(0, particles, gen, [])

    def _load_state(self) -> RunState:
        try:
            ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets one message
            raise RunDirError(f"--resume: {self.ckpt_path} is unreadable ({e.__class__.__name__})") from None
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise RunDirError(f"--resume: {self.ckpt_path} has checkpoint format {ck.get('format')}")
        self.net.load_state_dict(ck["net"])
        gen = torch.Generator()
        gen.set_state(ck["generator"])
        state = RunState(ck["epoch"], ck["particles"], gen, ck["history"])
        # Bring the logs in line with the checkpoint.
        _rewrite_jsonl(self.out / "metrics.jsonl", state.history)
        rows = [r for r in read_jsonl(self.out / "batches.jsonl") if r["epoch"] < state.epoch]
        _rewrite_jsonl(self.out / "batches.jsonl", rows + ck["last_batches"])
        return state

    def _save(self, state: RunState, last_batches: list[dict]):
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.cfg.to_dict(),
                "epoch": state.epoch,
                "net": self.net.state_dict(),
                "particles": state.particles,
                "generator": state.generator.get_state(),
                "history": state.history,
                "last_batches": last_batches,
            },
            self.ckpt_path,
        )

    def train(self, progress: bool | None = None, log=print) -> list[dict]:
        from tqdm import tqdm

        cfg = self.cfg
        # States decay geometrically towards 0 in the relaxation; float32
        # denormals there make the CPU's matrix products ~1.5x slower.
        torch.set_flush_denormal(True)
        self._prepare()
        train = load_data(cfg, "train", cfg.train_size)
        evalset = load_data(cfg, cfg.eval_set, cfg.eval_size)
        state = self._load_state() if self.resume else self._fresh_state(len(train))
        if self.resume and state.epoch >= cfg.epochs:
            log(f"{self.out}: already trained for {state.epoch} epochs (epochs = {cfg.epochs})")
            return state.history
        net = self.net
        dev = net.device
        X = torch.from_numpy(train.x).to(dev)
        Y = torch.from_numpy(train.y)
        T = torch.from_numpy(one_hot(train.y)).to(dev, net.dtype)
        lr = net.learning_rates(cfg.lr)
        n = len(train)
        B = cfg.batch_size
        n_batches = (n + B - 1) // B

        while state.epoch < cfg.epochs:
            epoch = state.epoch + 1
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=state.generator) if cfg.shuffle else torch.arange(n)
            signs = (
                torch.randint(0, 2, (n_batches,), generator=state.generator) * 2 - 1
                if cfg.random_beta_sign
                else torch.ones(n_batches, dtype=torch.long)
            )
            wrong = 0
            seen = 0
            rms_sum = None
            resid_sum = 0.0
            batch_rows = []
            bar = tqdm(
                range(n_batches),
                desc=f"epoch {epoch}/{cfg.epochs}",
                unit="batch",
                disable=(not progress) if progress is not None else None,
                leave=False,
            )
            with torch.no_grad():
                for k in bar:
                    idx = order[k * B : (k + 1) * B]
                    x, t = X[idx.to(dev)], T[idx.to(dev)]
                    s = state.particles[idx].to(dev) if cfg.persistent else net.zero_state(len(idx))
                    drive = net.input_drive(x)
                    # Free phase (beta = 0) from the persistent particle.
                    s0 = net.relax(s, drive, cfg.free_steps, cfg.eps)
                    resid_sum += float((s0 - (s0 - net.grad(s0, drive)).clamp(0, 1)).abs().max())
                    pred = net.outputs(s0).argmax(1).cpu()
                    bw = int((pred != Y[idx]).sum())
                    wrong += bw
                    seen += len(idx)
                    if cfg.persistent:
                        state.particles[idx] = s0.cpu()
                    # Weakly-clamped phase from the free equilibrium, random sign of beta.
                    beta = cfg.beta * int(signs[k])
                    sb = net.relax(s0, drive, cfg.nudged_steps, cfg.eps, beta, t)
                    # Eqs. (7)-(8), averaged over the batch, then W += alpha Delta W.
                    applied = net.apply(net.correction(x, s0, sb, beta), lr)
                    rms = net.adjacent_rms(applied)
                    rms_sum = rms if rms_sum is None else [a + b for a, b in zip(rms_sum, rms)]
                    batch_rows.append({"epoch": epoch, "batch": k + 1, "beta_sign": int(signs[k]), "errors": bw, "rms": rms})
                    if not net.is_finite():
                        raise TrainingDiverged(
                            f"epoch {epoch} batch {k + 1}: weights became NaN or inf; "
                            f"stopped, last good checkpoint kept at {self.ckpt_path}"
                            + ("" if state.epoch else " (none yet: the run diverged in its first epoch)")
                        )
                    if k % 10 == 9 or k == n_batches - 1:
                        bar.set_postfix(err=f"{100.0 * wrong / seen:.2f}%")
            bar.close()
            eval_steps = cfg.eval_free_steps or cfg.free_steps
            test_error, _ = evaluate(net, evalset, eval_steps, cfg.eps, cfg.eval_batch_size)
            row = {
                "epoch": epoch,
                "train_error": wrong / seen,
                "test_error": test_error,
                "eval_set": cfg.eval_set,
                "rms_correction": [r / n_batches for r in rms_sum],
                "free_residual": resid_sum / n_batches,
                "seconds": time.perf_counter() - t0,
            }
            state.history.append(row)
            state.epoch = epoch
            self._save(state, batch_rows)
            append_jsonl(self.out / "batches.jsonl", batch_rows)
            append_jsonl(self.out / "metrics.jsonl", [row])
            log(
                f"epoch {epoch:3d}  train error {100 * row['train_error']:6.2f}%  "
                f"{cfg.eval_set} error {100 * test_error:6.2f}%  "
                f"rms dW " + " ".join(f"{r:.2e}" for r in row["rms_correction"]) + f"  {row['seconds']:.1f} s"
            )
        return state.history


def load_run(run_dir: str | Path) -> tuple[TrainConfig, FloatNetwork, dict]:
    """Configuration, network (checkpoint parameters) and checkpoint of a run."""
    run_dir = Path(run_dir)
    cfg = config_mod.validate(config_mod.load_toml(run_dir / "config.toml"))
    ck_path = run_dir / CHECKPOINT
    if not ck_path.exists():
        raise RunDirError(f"{ck_path}: no checkpoint (the run has not finished an epoch)")
    topo = Topology.load(run_dir / "topology.npz")
    net = make_network(cfg, topo)
    ck = torch.load(ck_path, map_location="cpu", weights_only=False)
    net.load_state_dict(ck["net"])
    return cfg, net, ck


__all__ = [
    "Run",
    "TrainingDiverged",
    "RunDirError",
    "ConfigError",
    "evaluate",
    "load_run",
    "build_topology",
    "np",
]

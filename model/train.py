"""Training loop: free phase, weakly-clamped phase, update (paper, section 2.1.1).

One run lives in one directory:

* ``config.toml``    the resolved configuration (readable by ``--config``);
* ``topology.npz``   the connection list (Topology.save), the exact network;
* ``metrics.jsonl``  one JSON line per epoch: epoch, train_error (free-phase
  predictions during the epoch, as the paper counts it), test_error (on the
  configured eval set), rms_correction (per adjacent layer pair, the RMS of
  the applied alpha * Delta W over that pair's connections, averaged over the
  epoch's batches), dead_outputs (the fraction of output units whose free and
  weakly-clamped states are equal: no learning signal), dead_targets (in
  batches with beta > 0, the fraction of target units that are dead although
  not at their target: a run whose target units all die stops learning),
  outputs_at_0 (output units at 0 after the free
  phase), free_residual (the largest |s - clip(s - dF/ds)| at the
  end of the free phase, averaged over batches: 0 at an exact equilibrium),
  free_steps_mean / free_steps_max and eval_steps_mean / eval_steps_max (the
  free steps each example took, under the settle rule of docs/numerics.md
  §4a: all of them without it), seconds;
* ``batches.jsonl``  per batch: the per-layer RMS corrections (the paper's
  Figure 4), beta's sign, the batch's free-phase errors, its mean free steps;
* ``checkpoint.pt``  written atomically at each epoch end (parameters,
  persistent particles, random-generator state, metric history).

Order at an epoch end: checkpoint first, then the log lines. ``--resume``
restores the checkpoint, brings the logs back in line with it (lines of an
epoch the checkpoint does not hold are dropped, missing ones re-written from
it) and continues, which gives the same metrics as an uninterrupted run.

A run directory belongs to one training process at a time: ``.lock`` in it
is held with ``flock`` (exclusive, non-blocking) on an open descriptor for
the whole run, fresh or resumed, and holds the holder's PID. A second
training into the directory is refused (RunDirError) before it writes
anything. The operating system releases the lock when the process ends,
however it ends (SIGKILL included), so a left-over ``.lock`` file means
nothing by itself; it is never deleted (deleting it would let two processes
lock two different files of the same name).

Every reader of ``checkpoint.pt`` (resume, ``load_run``: eval, hdl generate,
sim) goes through ``read_checkpoint``, which refuses an unreadable or
foreign file with one line naming it.

A checkpoint carries its run's identity (``run_identity``: the RUN_KEYS, the
resolved fixed-point formats, the input size, a digest of topology.npz).
``--resume`` refuses a flag that changes one of them and records the
RESUMABLE_KEYS it changes in config.toml; resume and ``load_run`` refuse a
config.toml or topology.npz that no longer fits the checkpoint
(``check_run_files``). docs/failures.md states these promises.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import config as config_mod
from .config import ConfigError, TrainConfig
from .files import atomic_write
from .data import Split, load_split, one_hot
from .float_net import FloatNetwork
from .topology import Topology, from_spec

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
# What every reader of a checkpoint needs (eval_particles, eval_set, ... are optional).
CHECKPOINT_KEYS = ("epoch", "net", "particles", "generator", "history", "last_batches")
LOCK = ".lock"


class TrainingDiverged(RuntimeError):
    """NaN or inf appeared; the last good checkpoint is kept."""


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, or nothing to resume)."""


# --------------------------------------------------------------------- files
def atomic_write_bytes(path: Path, data: bytes):
    atomic_write(path, lambda f: f.write(data))


def atomic_torch_save(obj, path: Path):
    atomic_write(path, lambda f: torch.save(obj, f))


def _write_error(path: Path, e: OSError, what: str = "") -> RunDirError:
    """A failed write of a run-directory file as one line naming it."""
    return RunDirError(f"{path}: cannot write{' ' + what if what else ''} "
                       f"({config_mod.os_reason(e, path)})")


def append_jsonl(path: Path, rows: list[dict]):
    if not rows:
        return
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """The rows (JSON objects with an integer ``epoch``) of a log file. A bad last line is a
    line cut by a kill and is dropped (it is re-written from the checkpoint); a bad line
    before it is damage that resume cannot repair: RunDirError naming the file and line."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read ({_reason(e)})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            ok = isinstance(row, dict) and type(row.get("epoch")) is int
            bad = None if ok else "not a JSON object with an epoch"
        except json.JSONDecodeError as e:
            bad = f"not valid JSON ({e.msg})"
        if bad is None:
            rows.append(row)
        elif n == len(lines):
            break  # the last line, cut by a kill: re-written from the checkpoint
        else:
            raise RunDirError(f"{path}: line {n} of {len(lines)} is {bad}; the log is damaged before its last "
                              "line (repair or remove that line, then resume again)")
    return rows


def _rewrite_jsonl(path: Path, rows: list[dict]):
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


# ---------------------------------------------------------- run-directory lock
class RunLock:
    """An exclusive ``flock`` on RUN/.lock, held while this object lives (or until
    :meth:`release`). The lock belongs to the open descriptor, so the operating
    system drops it when the process ends in any way, SIGKILL included."""

    def __init__(self, fd: int, path: Path):
        self.fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, run_dir: Path, create: bool = True) -> "RunLock | None":
        """Lock ``run_dir``; RunDirError naming the directory and the holder's PID when
        another process holds it. ``create=False``: None when there is no lock file."""
        path = Path(run_dir) / LOCK
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        except FileNotFoundError:
            if create:
                raise RunDirError(f"out: cannot create {path} (no such directory)") from None
            return None
        except OSError as e:
            raise RunDirError(f"out: cannot open the lock file {path} ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise RunDirError(
                f"out: {run_dir} is in use by another training process ({holder}, lock {path}); "
                "wait for it to end or stop it, or use another --out"
            ) from None
        except OSError as e:
            os.close(fd)
            raise RunDirError(f"out: cannot lock {path} ({e.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self, _close=os.close):  # bound early: usable from __del__ at interpreter exit
        if self.fd is not None:
            fd, self.fd = self.fd, None
            _close(fd)  # drops the flock; the file stays (see the module docstring)

    def __del__(self):
        self.release()


def _holds_run(run_dir: Path) -> bool:
    """A checkpoint or metrics: a run (a lock file alone is not one)."""
    return (run_dir / CHECKPOINT).exists() or (run_dir / "metrics.jsonl").exists()


def _check_out_path(out: Path):
    """RunDirError when ``out`` or a directory above it is a file (checked before the
    network is built; mkdir reports the rest, e.g. a read-only file system)."""
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                why = "it is a file, not a directory" if p == out else f"{p} is a file, not a directory"
                raise RunDirError(f"out: cannot create the run directory {out} ({why})")
            return


def _lock_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"PID {text}" if text.isdigit() else "PID unknown"


# ------------------------------------------------------------- checkpoints
def _reason(e: BaseException) -> str:
    """An exception as one short line: its class and the first line of its message."""
    lines = str(e).strip().splitlines()
    msg = lines[0].strip() if lines else ""
    if len(msg) > 80 and ". " in msg:  # torch's long messages: their first sentence
        msg = msg[: msg.index(". ")]
    if len(msg) > 120:
        msg = msg[:117] + "..."
    return f"{e.__class__.__name__}: {msg}" if msg else e.__class__.__name__


def _file_kind(path: Path) -> str:
    """What an unreadable checkpoint looks like, for its error message."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be opened ({e.strerror})"
    if not head:
        return "an empty file"
    if head == b"PK\x03\x04":  # torch.save's zip archive
        return "a truncated or damaged torch archive"
    return "not a torch checkpoint"


def read_checkpoint(path: Path, context: str = "") -> dict:
    """Load ``path`` (a checkpoint written by Run._save) and check that it is one:
    readable by torch.load, a dict of format CHECKPOINT_FORMAT with every key in
    CHECKPOINT_KEYS. Anything else is a RunDirError of one line naming the file."""
    path = Path(path)
    pre = f"{context}: " if context else ""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one message
        raise RunDirError(f"{pre}{path} is unreadable: {_file_kind(path)} ({_reason(e)})") from None
    if not isinstance(ck, dict):
        raise RunDirError(f"{pre}{path} is not an eqprop checkpoint (it holds a {type(ck).__name__}, not a dict)")
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise RunDirError(f"{pre}{path} has checkpoint format {ck.get('format')!r}; "
                          f"this version reads format {CHECKPOINT_FORMAT}")
    missing = [k for k in CHECKPOINT_KEYS if k not in ck]
    if missing:
        raise RunDirError(f"{pre}{path} is incomplete: no {', '.join(missing)}")
    if not isinstance(ck["net"], dict):
        raise RunDirError(f"{pre}{path} is not an eqprop checkpoint (net is a {type(ck['net']).__name__})")
    return ck


def restore_net(net, ck: dict, path: Path, context: str = ""):
    """Load a checkpoint's parameters into ``net`` (built from the run's config.toml
    and topology.npz); RunDirError when they do not fit that network."""
    pre = f"{context}: " if context else ""
    want = net.state_dict()
    for k, v in want.items():
        got = ck["net"].get(k)
        if not isinstance(got, torch.Tensor):
            raise RunDirError(f"{pre}{path} is not an eqprop checkpoint (net has no tensor {k})")
        if got.shape != v.shape:
            raise RunDirError(f"{pre}{path} does not fit the run's network: {k} is {tuple(got.shape)}, "
                              f"the network's (config.toml, topology.npz) is {tuple(v.shape)}")
    net.load_state_dict(ck["net"])


# ---------------------------------------------------------- what a run is
# The keys that make a run what it is: its data, network, numerics and training
# procedure. ``--resume`` refuses a change to any of them (RunDirError naming the
# key), and eval refuses a config.toml that differs from the checkpoint in one.
# ``fixed`` (model = fixed) is compared as the resolved formats, key by key.
RUN_KEYS = ("dataset", "downsample", "train_size", "model", "topology", "sizes", "p", "n_rewire", "seed",
            "init_adjacent", "init_other", "init_bias", "eps", "beta", "random_beta_sign", "nudge",
            "free_steps", "nudged_steps", "persistent", "shuffle", "batch_size", "dtype")
# The keys that may change on resume (a longer run, another rate, a faster free phase,
# another evaluation, another machine); config.toml records the values it goes on with.
RESUMABLE_KEYS = ("epochs", "lr", *config_mod.SETTLE_KEYS, "eval_size", "eval_set",
                  "eval_free_steps", "eval_batch_size", "eval_particles", "device", "data_dir", "hdl")
# out is where the run is, not what it is.
assert set(RUN_KEYS) | set(RESUMABLE_KEYS) | {"fixed", "out"} == set(config_mod._TYPES)


def topology_digest(topology: Topology) -> str:
    """SHA-256 of a topology's sizes and connection list (which network, exactly)."""
    i, j = topology.edges()
    h = hashlib.sha256(json.dumps(list(topology.sizes)).encode())
    h.update(i.astype("<i8").tobytes())
    h.update(j.astype("<i8").tobytes())
    return h.hexdigest()


def run_identity(cfg: TrainConfig, topology: Topology | None = None) -> dict:
    """What Run._save stores in a checkpoint to check it against later: RUN_KEYS, the
    resolved fixed-point formats (None for the float model), the input size and the
    topology's digest."""
    ident = {k: getattr(cfg, k) for k in RUN_KEYS}
    ident["fixed"] = config_mod.numerics(cfg).to_dict() if cfg.model == "fixed" else None
    ident["input_size"] = cfg.input_size
    if topology is not None:
        ident["topology_digest"] = topology_digest(topology)
    return ident


def checkpoint_identity(ck: dict) -> dict:
    """A checkpoint's identity; for checkpoints written before it was stored, what its
    ``config`` (TrainConfig.to_dict, in every format-1 checkpoint) tells of RUN_KEYS
    (the formats are not compared there: that table was stored unresolved)."""
    ident = ck.get("identity")
    if isinstance(ident, dict):
        return ident
    old = ck.get("config")
    if not isinstance(old, dict):
        return {}
    ident = {k: old[k] for k in RUN_KEYS if k in old}
    ident.setdefault("p", None)  # to_dict leaves out None values
    ident.setdefault("n_rewire", None)
    ident.setdefault("nudge", config_mod.LEGACY_NUDGE)  # written before the nudge option
    return ident


def _show(v) -> str:
    if v is None:
        return "(not set)"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def identity_differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, a's value, b's value) for each run key both identities hold and differ in."""
    out = []
    for k in RUN_KEYS + ("fixed",):
        if k not in a or k not in b:
            continue
        x, y = a[k], b[k]
        if k == "fixed" and isinstance(x, dict) and isinstance(y, dict):
            out += [(f"fixed.{f}", x.get(f), y.get(f)) for f in sorted(set(x) | set(y)) if x.get(f) != y.get(f)]
        elif (list(x) if isinstance(x, (list, tuple)) else x) != (list(y) if isinstance(y, (list, tuple)) else y):
            out.append((k, "(float model)" if k == "fixed" and x is None else x,
                        "(float model)" if k == "fixed" and y is None else y))
    return out


def check_run_files(cfg: TrainConfig, cfg_path: Path, ck: dict, ck_path: Path, topology: Topology,
                    topo_path: Path, context: str = ""):
    """config.toml, checkpoint.pt and topology.npz describe one run, or RunDirError
    naming the first key (or file) in which they differ."""
    pre = f"{context}: " if context else ""
    held = checkpoint_identity(ck)
    for k, says, was in identity_differences(run_identity(cfg), held):
        raise RunDirError(f"{pre}{k}: {cfg_path} says {k} = {_show(says)}, but {ck_path} was trained with "
                          f"{k} = {_show(was)} (config.toml edited, or files from two runs)")
    digest = held.get("topology_digest")
    if digest is not None and topology_digest(topology) != digest:
        raise RunDirError(f"{pre}{topo_path} does not match {ck_path}: other connections than the run "
                          "was trained with (files from two runs?)")
    if list(topology.sizes) != list(cfg.sizes):
        raise RunDirError(f"{pre}{topo_path} has sizes {'-'.join(map(str, topology.sizes))}, but {cfg_path} "
                          f"says sizes = {_show(cfg.sizes)}")


# ------------------------------------------------------------------- helpers
def build_topology(cfg: TrainConfig) -> Topology:
    return from_spec(cfg.topology, cfg.sizes, seed=cfg.seed, **cfg.rewire)


def torch_dtype(cfg: TrainConfig):
    return {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]


def make_network(cfg: TrainConfig, topology: Topology):
    """FloatNetwork or FixedNetwork (docs/numerics.md) with the run's rates set."""
    if cfg.model == "fixed":
        from .fixed_net import FixedNetwork

        net = FixedNetwork(topology, config_mod.numerics(cfg), cfg.eps, cfg.beta, cfg.batch_size, cfg.lr,
                           device=cfg.device, nudge=cfg.nudge)
    else:
        net = FloatNetwork(topology, dtype=torch_dtype(cfg), device=cfg.device, nudge=cfg.nudge)
        net.set_rates(cfg.lr)
    return net


def load_data(cfg: TrainConfig, split: str, size: int) -> Split:
    return load_split(cfg.dataset, split, size=size, downsample=cfg.downsample or None, data_dir=cfg.data_dir or None)


def evaluate(net, split: Split, steps: int, eps: float, batch_size: int,
             particles: torch.Tensor | None = None, settle=None) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Error of free-phase predictions (argmax of the output neurons) from the zero state,
    or, with ``particles`` (one row per example, updated in place), from each example's
    persistent particle: the state its previous evaluation ended in, as the paper's
    code evaluates (``eval_particles``). ``settle``: the settle rule (docs/numerics.md
    §4a) or None. Returns the error, the predictions and each example's free steps.

    Evaluation examples are numbered by their position in the set (state-rounding
    events of the fixed model, docs/numerics.md §5)."""
    wrong = 0
    preds, taken = [], []
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            x = net.prepare_inputs(torch.from_numpy(split.x[i : i + batch_size]))
            pos = torch.arange(i, i + x.shape[0], dtype=torch.int64)
            if particles is None:
                s = net.zero_state(x.shape[0])
            else:
                s = particles[i : i + x.shape[0]].to(net.device)
                s = s if s.is_floating_point() else s.to(torch.int64)
            s = net.relax(s, net.input_drive(x), steps, eps, event_base=pos * steps * net.n_s, settle=settle)
            taken.append(net.last_steps)
            if particles is not None:
                particles[i : i + x.shape[0]] = s.cpu().to(particles.dtype)
            p = net.outputs(s).argmax(1).cpu()
            preds.append(p)
            wrong += int((p != torch.from_numpy(split.y[i : i + batch_size])).sum())
    return wrong / len(split), torch.cat(preds), torch.cat(taken)


class EpochAccumulator:
    """Sums over one epoch's batches; ``summary`` gives the metrics.jsonl fields."""

    def __init__(self, n_pairs: int):
        self.wrong = self.seen = 0
        self.batches = 0
        self.rms = [0.0] * n_pairs
        self.zero = [0] * n_pairs
        self.nonzero_d = [0] * n_pairs
        self.fixed = False
        self.w_sat = self.b_sat = 0
        self.resid = 0.0
        self.at0 = self.at1 = 0.0
        self.dead = self.dead_t = self.out0 = 0.0
        self.pos_batches = 0  # batches with beta > 0 (dead_targets)
        self.steps_sum = 0  # free steps taken, summed over the examples (settle rule, §4a)
        self.steps_max = 0

    def free_steps(self, taken: torch.Tensor) -> float:
        """Record the examples' free-phase step counts; the batch's mean."""
        self.steps_sum += int(taken.sum())
        self.steps_max = max(self.steps_max, int(taken.max()) if taken.numel() else 0)
        return float(taken.double().mean()) if taken.numel() else 0.0

    def outputs(self, net, s0, sb, t, beta: float) -> tuple[float, float | None]:
        """Dead-output diagnostic. ``dead``: the fraction of output units whose free
        and weakly-clamped states are equal (they carry no learning signal; a unit
        already at its target is dead too). ``dead_targets``, in batches with
        beta > 0 only: the fraction of the examples' target units (y_d = 1) that
        are dead although not at their target, i.e. a positive nudge cannot lift
        a wrong answer (the eq. 5 failure, docs/numerics.md §4; with beta < 0 a
        target unit at 0 is pushed away from the target and stays at 0 under
        either ordering, so those batches would count healthy runs as dying).
        Also counts output units at 0 after the free phase. Returns the batch's
        two fractions (dead_targets None when beta < 0)."""
        y0, yb = net.outputs(s0), net.outputs(sb)
        same = y0 == yb
        dead = float(same.double().mean())
        self.dead += dead
        self.out0 += float((y0 == 0).double().mean())
        if beta < 0:
            return dead, None
        on = t == t.max()  # the target units (one-hot: the largest target value)
        dead_t = float((same & on & (y0 != t)).sum()) / max(int(on.sum()), 1)
        self.dead_t += dead_t
        self.pos_batches += 1
        return dead, dead_t

    @property
    def dead_targets(self) -> float:
        """Mean dead_targets over the batches with beta > 0 so far."""
        return self.dead_t / max(self.pos_batches, 1)

    def free_state(self, net, s0, drive):
        if getattr(net, "is_fixed", False):
            one = net.num.state.one()
            self.at0 += float((s0 == 0).double().mean())
            self.at1 += float((s0 == one).double().mean())
        else:
            # How far from an equilibrium the free phase ended: max |s - clip(s - dF/ds)|.
            self.resid += float((s0 - (s0 - net.grad(s0, drive)).clamp(0, 1)).abs().max())

    def update(self, st):
        self.batches += 1
        self.rms = [a + b for a, b in zip(self.rms, st.rms)]
        if st.zero is not None:
            self.fixed = True
            self.zero = [a + b for a, b in zip(self.zero, st.zero)]
            self.nonzero_d = [a + b for a, b in zip(self.nonzero_d, st.nonzero_d)]
            self.w_sat += st.weight_saturations
            self.b_sat += st.bias_saturations

    def summary(self, net, n_batches: int) -> dict:
        out = {"rms_correction": [r / n_batches for r in self.rms],
               "free_steps_mean": self.steps_sum / max(self.seen, 1), "free_steps_max": self.steps_max,
               "dead_outputs": self.dead / n_batches, "dead_targets": self.dead_targets,
               "outputs_at_0": self.out0 / n_batches}
        if not self.fixed:
            out["free_residual"] = self.resid / n_batches
            return out
        out["zero_corrections"] = [z / d if d else 0.0 for z, d in zip(self.zero, self.nonzero_d)]
        out["weight_saturations"] = self.w_sat
        out["bias_saturations"] = self.b_sat
        out["saturated_weights"] = net.saturated_weights()
        out["states_at_0"] = self.at0 / n_batches
        out["states_at_1"] = self.at1 / n_batches
        return out


def format_epoch(row: dict) -> str:
    text = (
        f"epoch {row['epoch']:3d}  train error {100 * row['train_error']:6.2f}%  "
        f"{row['eval_set']} error {100 * row['test_error']:6.2f}%  "
        f"rms dW " + " ".join(f"{r:.2e}" for r in row["rms_correction"])
    )
    if "dead_outputs" in row:
        text += f"  dead out {100 * row['dead_outputs']:.0f}% (targets {100 * row.get('dead_targets', 0):.0f}%)"
    if "free_steps_mean" in row:
        text += f"  free steps {row['free_steps_mean']:.1f} (max {row['free_steps_max']})"
    if "zero_corrections" in row:
        text += "  zero dW " + " ".join(f"{100 * z:.0f}%" for z in row["zero_corrections"])
        text += f"  sat {row['weight_saturations']}"
    return text + f"  {row['seconds']:.1f} s"


@dataclass
class RunState:
    epoch: int  # epochs completed
    particles: torch.Tensor | None
    generator: torch.Generator
    history: list[dict]
    eval_particles: torch.Tensor | None = None  # after the last evaluation (eval_particles = true)
    eval_particles_in: torch.Tensor | None = None  # what the last evaluation started from


# ---------------------------------------------------------------------- run
class Run:
    """A training run bound to its directory."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool = False):
        self.cfg = cfg
        self.out = Path(out)
        self.resume = resume
        self._record_config = None  # (config.toml, its config) to write once a resume has loaded

    @property
    def ckpt_path(self) -> Path:
        return self.out / CHECKPOINT

    def _prepare(self):
        """Lock the run directory and check everything that can be refused before
        anything in it is written: a refused run changes nothing."""
        cfg = self.cfg
        topo_path = self.out / "topology.npz"
        if self.resume:
            if not self.ckpt_path.exists():
                raise RunDirError(f"--resume: {self.ckpt_path} does not exist (nothing to resume)")
            # Locked before the logs are brought in line with the checkpoint.
            self._lock = RunLock.acquire(self.out)
            self._ck = read_checkpoint(self.ckpt_path, "--resume")
            own = self.out / "config.toml"
            ran = config_mod.load_toml(own) if own.exists() else None
            if ran is not None:
                # A flag (or another --config) that changes what the run is: refused.
                for k, was, now in identity_differences(run_identity(ran), run_identity(cfg)):
                    raise RunDirError(
                        f"{k}: the run in {self.out} was trained with {k} = {_show(was)}; resuming it with "
                        f"{k} = {_show(now)} would change what the run is (on resume only epochs, lr, settle*, "
                        "eval*, device, data_dir and hdl may change); use another --out for a new run")
                # The others may change on resume (a longer run, another rate, a faster free
                # phase); config.toml records what the run goes on with (written once the
                # checkpoint has loaded: a refused resume changes nothing).
                changed = [k for k in RESUMABLE_KEYS if getattr(ran, k) != getattr(cfg, k)]
                for k in changed:
                    setattr(ran, k, getattr(cfg, k))
                if changed:
                    self._record_config = (own, ran)
            self.topology = Topology.load(topo_path)
            check_run_files(cfg, own if ran is not None else Path("the configuration"), self._ck,
                            self.ckpt_path, self.topology, topo_path, "--resume")
        else:
            # A directory with a lock file: refused while another process holds it
            # (whatever the directory holds); a lock file alone is not a run.
            self._lock = RunLock.acquire(self.out, create=False) if self.out.is_dir() else None
            if _holds_run(self.out):
                if self._lock is not None:
                    self._lock.release()
                raise RunDirError(f"out: {self.out} already holds a run; use --resume or another --out")
            _check_out_path(self.out)
            # The network is built (its formats checked against its fan-in) before the
            # directory is made or written.
            self.topology = build_topology(cfg)
            self.net = make_network(cfg, self.topology)
            if self._lock is None:
                try:
                    self.out.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise RunDirError(f"out: cannot create the run directory {self.out} "
                                      f"({config_mod.os_reason(e, self.out)})") from None
                self._lock = RunLock.acquire(self.out)
                if _holds_run(self.out):  # another training got here between the check and the lock
                    self._lock.release()
                    raise RunDirError(f"out: {self.out} already holds a run; use --resume or another --out")
            # Locked before anything is written.
            for path, write in ((topo_path, self.topology.save),
                                (self.out / "config.toml",
                                 lambda p: atomic_write_bytes(p, config_mod.dumps_toml(cfg).encode()))):
                try:
                    write(path)
                except OSError as e:
                    raise _write_error(path, e) from None
        self._identity = run_identity(cfg, self.topology)
        if self.resume:
            self.net = make_network(cfg, self.topology)

    def _fresh_state(self, n_train: int) -> RunState:
        cfg = self.cfg
        self.net.init_params(cfg.seed, cfg.init_adjacent, cfg.init_other, cfg.init_bias)
        particles = self._zero_particles(n_train) if cfg.persistent else None
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        return RunState(0, particles, gen, [], self._zero_eval_particles())

    def _zero_particles(self, n: int) -> torch.Tensor:
        """n zero states on the host (fixed-point particles are kept as int32)."""
        p = self.net.zero_state(n).cpu()
        return p if p.is_floating_point() else p.to(torch.int32)

    def _zero_eval_particles(self):
        return self._zero_particles(self.cfg.eval_size) if self.cfg.eval_particles else None

    def _load_state(self) -> RunState:
        ck = self._ck
        restore_net(self.net, ck, self.ckpt_path, "--resume")
        gen = torch.Generator()
        try:
            gen.set_state(ck["generator"])
        except (RuntimeError, TypeError) as e:
            raise RunDirError(f"--resume: {self.ckpt_path} holds no usable random-generator state "
                              f"({_reason(e)})") from None
        state = RunState(ck["epoch"], ck["particles"], gen, ck["history"], ck.get("eval_particles"),
                         ck.get("eval_particles_in"))
        # Evaluation particles belong to one evaluation set: turned off, or another
        # set or size than the checkpoint's, they start again from zero.
        same_set = ck.get("eval_set") == self.cfg.eval_set
        if not self.cfg.eval_particles:
            state.eval_particles = state.eval_particles_in = None
        elif (state.eval_particles is None or not same_set
              or state.eval_particles.shape[0] != self.cfg.eval_size):
            state.eval_particles, state.eval_particles_in = self._zero_eval_particles(), None
        # Bring the logs in line with the checkpoint (read first: a damaged log is
        # refused before anything is rewritten).
        rows = [r for r in read_jsonl(self.out / "batches.jsonl") if r["epoch"] < state.epoch]
        for name, content in (("metrics.jsonl", state.history), ("batches.jsonl", rows + ck["last_batches"])):
            try:
                _rewrite_jsonl(self.out / name, content)
            except OSError as e:
                raise _write_error(self.out / name, e) from None
        return state

    def _save(self, state: RunState, last_batches: list[dict]):
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "config": self.cfg.to_dict(),
                "identity": self._identity,  # what the run is (checked by resume and load_run)
                "epoch": state.epoch,
                "net": self.net.state_dict(),
                "particles": state.particles,
                "eval_particles": state.eval_particles,
                "eval_set": self.cfg.eval_set,
                "eval_particles_in": state.eval_particles_in,
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
        if self._record_config is not None:
            own, ran = self._record_config
            try:
                atomic_write_bytes(own, config_mod.dumps_toml(ran).encode())
            except OSError as e:
                raise _write_error(own, e) from None
        if self.resume and state.epoch >= cfg.epochs:
            log(f"{self.out}: already trained for {state.epoch} epochs (epochs = {cfg.epochs})")
            return state.history
        net = self.net
        dev = net.device
        fixed = getattr(net, "is_fixed", False)
        X = net.prepare_inputs(torch.from_numpy(train.x))
        Y = torch.from_numpy(train.y)
        T = net.prepare_targets(torch.from_numpy(one_hot(train.y)))
        n = len(train)
        B = cfg.batch_size
        n_batches = (n + B - 1) // B
        S = net.n_s
        stride = (cfg.free_steps + cfg.nudged_steps) * S  # state-rounding events per example (§5)
        settle = config_mod.settle_rule(cfg)  # None: every free phase runs all its steps

        while state.epoch < cfg.epochs:
            epoch = state.epoch + 1
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=state.generator) if cfg.shuffle else torch.arange(n)
            signs = (
                torch.randint(0, 2, (n_batches,), generator=state.generator) * 2 - 1
                if cfg.random_beta_sign
                else torch.ones(n_batches, dtype=torch.long)
            )
            acc = EpochAccumulator(len(cfg.sizes) - 1)
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
                    if cfg.persistent:
                        s = state.particles[idx].to(dev)
                        s = s.to(torch.int64) if fixed else s
                    else:
                        s = net.zero_state(len(idx))
                    # Presentation numbers of these examples (fixed model's events, §5).
                    e = (epoch - 1) * n + k * B + torch.arange(len(idx), dtype=torch.int64)
                    drive = net.input_drive(x)
                    # Free phase (beta = 0) from the persistent particle.
                    s0 = net.relax(s, drive, cfg.free_steps, cfg.eps, event_base=e * stride, settle=settle)
                    steps_b = acc.free_steps(net.last_steps)
                    acc.free_state(net, s0, drive)
                    pred = net.outputs(s0).argmax(1).cpu()
                    bw = int((pred != Y[idx]).sum())
                    acc.wrong += bw
                    acc.seen += len(idx)
                    if cfg.persistent:
                        state.particles[idx] = s0.cpu().to(state.particles.dtype)
                    # Weakly-clamped phase from the free equilibrium, random sign of beta.
                    beta = cfg.beta * int(signs[k])
                    sb = net.relax(s0, drive, cfg.nudged_steps, cfg.eps, beta, t,
                                   event_base=e * stride + cfg.free_steps * S)
                    # Eqs. (7)-(8), averaged over the batch, then W += alpha Delta W.
                    st = net.learn(x, s0, sb, beta, (epoch - 1) * n_batches + k)
                    acc.update(st)
                    dead, dead_t = acc.outputs(net, s0, sb, t, beta)
                    row = {"epoch": epoch, "batch": k + 1, "beta_sign": int(signs[k]), "errors": bw, "rms": st.rms,
                           "dead_outputs": dead, "free_steps": steps_b}
                    if dead_t is not None:
                        row["dead_targets"] = dead_t
                    if st.zero is not None:
                        row["zero"] = st.zero
                        row["nonzero_d"] = st.nonzero_d
                    batch_rows.append(row)
                    if not net.is_finite():
                        raise TrainingDiverged(
                            f"epoch {epoch} batch {k + 1}: weights became NaN or inf; "
                            f"stopped, last good checkpoint kept at {self.ckpt_path}"
                            + ("" if state.epoch else " (none yet: the run diverged in its first epoch)")
                        )
                    if k % 10 == 9 or k == n_batches - 1:
                        bar.set_postfix(err=f"{100.0 * acc.wrong / acc.seen:.2f}%",
                                        dead_targets=f"{100.0 * acc.dead_targets:.0f}%",
                                        steps=f"{acc.steps_sum / acc.seen:.1f}")
            bar.close()
            eval_steps = cfg.eval_free_steps or cfg.free_steps
            if state.eval_particles is not None:
                state.eval_particles_in = state.eval_particles.clone()
            test_error, _, eval_taken = evaluate(net, evalset, eval_steps, cfg.eps, cfg.eval_batch_size,
                                                 state.eval_particles, settle)
            row = {"epoch": epoch, "train_error": acc.wrong / acc.seen, "test_error": test_error,
                   "eval_set": cfg.eval_set, **acc.summary(net, n_batches),
                   "eval_steps_mean": float(eval_taken.double().mean()), "eval_steps_max": int(eval_taken.max()),
                   "seconds": time.perf_counter() - t0}
            state.history.append(row)
            state.epoch = epoch
            try:
                self._save(state, batch_rows)
            except OSError as e:
                kept = (f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1
                        else "no checkpoint yet (this was the first epoch)")
                raise RunDirError(f"{self.ckpt_path}: cannot write the checkpoint of epoch {epoch} "
                                  f"({config_mod.os_reason(e, self.ckpt_path)}); {kept}") from None
            for name, rows in (("batches.jsonl", batch_rows), ("metrics.jsonl", [row])):
                try:
                    append_jsonl(self.out / name, rows)
                except OSError as e:
                    raise RunDirError(f"{self.out / name}: cannot write ({config_mod.os_reason(e, self.out / name)}); "
                                      f"the checkpoint of epoch {epoch} is kept and --resume re-writes the "
                                      "logs from it") from None
            log(format_epoch(row))
        return state.history


def load_run(run_dir: str | Path) -> tuple[TrainConfig, object, dict]:
    """Configuration, network (checkpoint parameters) and checkpoint of a run."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.toml"
    cfg = config_mod.load_toml(cfg_path)
    if cfg.device.startswith("cuda") and not config_mod.cuda_available(cfg.device):
        cfg.device = "cpu"  # a run trained on a GPU is read (evaluated, exported) on this machine's CPU
    cfg = config_mod.validate(cfg)
    ck_path = run_dir / CHECKPOINT
    if not ck_path.exists():
        raise RunDirError(f"{ck_path}: no checkpoint (the run has not finished an epoch)")
    ck = read_checkpoint(ck_path)
    topo_path = run_dir / "topology.npz"
    topo = Topology.load(topo_path)
    check_run_files(cfg, cfg_path, ck, ck_path, topo, topo_path)
    net = make_network(cfg, topo)
    restore_net(net, ck, ck_path)
    return cfg, net, ck


__all__ = [
    "Run",
    "TrainingDiverged",
    "RunDirError",
    "ConfigError",
    "evaluate",
    "load_run",
    "read_checkpoint",
    "restore_net",
    "run_identity",
    "checkpoint_identity",
    "build_topology",
]

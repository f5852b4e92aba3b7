"""The bit-depth study: how EqProp's vanishing gradient meets low-bit hardware.

    eqprop study bitdepth --config configs/studies/bitdepth-small.toml [--out DIR] [--dry-run]
                          [--jobs N | --ray [ADDRESS] [--cpus-per-point C] [--gpus-per-point G]]
                          [--gradcheck N]

A study file holds a ``[study]`` table (grid axes) and a ``[train]`` table
(the base run configuration); each ``[networks.NAME]`` table overrides train
keys for one network (the paper's three: layered with per-layer rates,
layered with one global rate, layer-skipping p = 7.56% with one global rate).
The grid is network x seed x (float, bits x rounding x stored-weight width x
rate representation): ``weight_store_extra`` (extra bits of the stored weights
over the MAC weights, default [0]), ``lr_modes`` (multiplier, shift);
``fixed_settle_tol`` sets the fixed-point points' settle tolerance in state LSBs
(the [train] value, a real number, stays the float points'); ``cut`` lists cell
patterns to leave out, e.g. ``[{bits = 4, extra = 0}]``. Points run seed by
seed, each seed's float points first, then depth by depth in the order of
``bits``, so that a study stopped early has whole seeds and the same depths
for every network. Every point is an ordinary run directory under ``OUT/points/``;
points already finished are skipped and killed ones resumed, so a study can be
stopped and continued. At the end ``summary.csv``, ``summary.md`` and three
figures are written: error against bit depth, per-layer RMS correction
against bit depth, and the fraction of zero corrections against bit depth.

Engines. ``--jobs N`` trains N points at once in local processes (no retry:
a killed point is resumed by the next call). ``--ray`` runs each point as a
Ray task (``--cpus-per-point``, default 1; ``--gpus-per-point`` puts the
point's training on the GPU Ray gives it): on a local Ray started here
(``ray.init(num_cpus=...)``: ``--jobs`` points at once, default every CPU),
or on a running cluster (``--ray auto``, ``--ray HOST:PORT`` or
``--ray ray://HOST:PORT``; the study directory must then be on a file system
every node mounts at the same path, and every node must have this package
installed). A task whose worker dies (killed, out of memory, a lost node) is
retried by Ray up to ``RAY_RETRIES`` times and resumes from the point's last
checkpoint (the ``--resume`` of model/train.py: the same metrics as an
uninterrupted run). Within one Python process that has already called
``ray.init``, that session is used as it is.

Failures. A point whose training diverges (NaN or inf) is marked failed
(``failed.txt`` in its directory, status ``failed`` in summary.csv) and not
retried by later calls (it would diverge again; delete failed.txt to retry);
a point whose formats cannot hold the network is ``refused``; a point whose
worker crashed beyond the retries is ``crashed`` (retried by the next call).
The study goes on; at the end, after the summary, ``StudyFailed`` (exit 3)
names the failed points. An unreachable Ray address is one line, exit 2.

``--gradcheck N`` (or ``[study] gradcheck = N``): at each point's end,
``eqprop gradcheck`` on its first N training images (model/gradcheck.py);
the point's cos(Delta W, -dJ/dW) per adjacent layer pair (after rounding for
fixed-point points) goes into summary.csv (``cos_01``, ...; ``cospre_01``
before rounding, ``ratio_01`` the norm ratio) and summary.md.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import socket
import time
import tomllib
from pathlib import Path

from . import config as config_mod
from .config import ConfigError
from .train import TrainingDiverged

RAY_RETRIES = 3  # Ray's retries of a point whose worker died
# For tests: "SUBSTRING:EPOCH" kills (SIGKILL) the worker of the first point whose directory
# contains SUBSTRING once, right after its epoch EPOCH is checkpointed and logged.
FAULT_ENV = "EQPROP_STUDY_FAULT"


class StudyFailed(TrainingDiverged):
    """Some points failed (diverged or crashed); the others were run and summarized (exit 3)."""

STUDY_KEYS = {"bits": list, "roundings": list, "seeds": list, "epochs": int, "bias_extra_bits": int,
              "float": bool, "out": str, "weight_store_bits": int, "gradcheck": int,
              "weight_store_extra": list, "lr_modes": list, "fixed_settle_tol": int, "cut": list}
LR_MODES = ("multiplier", "shift")
CUT_KEYS = ("network", "bits", "rounding", "extra", "lr_mode", "seed")


def load_study(path: str | Path) -> tuple[dict, config_mod.TrainConfig, dict]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: {path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path}: not valid TOML ({e})") from None
    for k in data:
        if k not in ("study", "train", "networks"):
            raise ConfigError(f"{k}: unknown table in study file {path} (study, train, networks)")
    study = {"bits": [4, 6, 8, 10, 12, 16], "roundings": ["floor", "stochastic"], "seeds": [0], "epochs": 1,
             "bias_extra_bits": 4, "float": True, "out": "runs/study-bitdepth", "weight_store_bits": 0,
             "gradcheck": 0, "weight_store_extra": [0], "lr_modes": ["multiplier"], "fixed_settle_tol": -1,
             "cut": []}
    for k, v in data.get("study", {}).items():
        if k not in STUDY_KEYS:
            raise ConfigError(f"{k}: unknown study key (in {path}; known: {', '.join(STUDY_KEYS)})")
        if not isinstance(v, STUDY_KEYS[k]) or isinstance(v, bool) != (STUDY_KEYS[k] is bool):
            raise ConfigError(f"{k}: expected {STUDY_KEYS[k].__name__}, got {v!r} (in {path})")
        study[k] = v
    base = config_mod.from_mapping(data.get("train", {}), source=f"{path} [train]")
    networks = data.get("networks") or {}
    if not networks:
        raise ConfigError(f"networks: the study file {path} names no [networks.NAME] table")
    for name, over in networks.items():
        cfg = config_mod.from_mapping(over, base, source=f"{path} [networks.{name}]")
        config_mod.validate(cfg)
    for seed in study["seeds"]:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= config_mod.MAX_SEED:
            raise ConfigError(f"seeds: {seed!r} is not a seed (an integer in 0..2^63-2) (in {path})")
    for b in study["bits"]:
        if not isinstance(b, int) or not 3 <= b <= 24:
            raise ConfigError(f"bits: {b!r} is not a bit depth in 3..24 (in {path})")
    for k in ("bits", "roundings", "seeds"):
        if not study[k] and not (k == "bits" and study["float"]) and not (k == "roundings" and not study["bits"]):
            raise ConfigError(f"{k}: the grid key has no values (in {path})")
    if study["gradcheck"] < 0:
        raise ConfigError(f"gradcheck: {study['gradcheck']} is not a number of examples (>= 0) (in {path})")
    for x in study["weight_store_extra"]:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= 16:
            raise ConfigError(f"weight_store_extra: {x!r} is not a number of extra bits in 0..16 (in {path})")
    if study["weight_store_bits"] and study["weight_store_extra"] != [0]:
        raise ConfigError(f"weight_store_extra: give either weight_store_bits or weight_store_extra (in {path})")
    for x in study["lr_modes"]:
        if x not in LR_MODES:
            raise ConfigError(f"lr_modes: {x!r} is not a rate representation ({', '.join(LR_MODES)}) (in {path})")
    for k in ("weight_store_extra", "lr_modes"):
        if not study[k]:
            raise ConfigError(f"{k}: the grid key has no values (in {path})")
    for c in study["cut"]:
        if not isinstance(c, dict) or not c or any(k not in CUT_KEYS for k in c):
            raise ConfigError(f"cut: {c!r} is not a cell pattern (a table of {', '.join(CUT_KEYS)}) (in {path})")
    return study, base, networks


def _cut(label: dict, patterns: list) -> bool:
    """The point matches one of the study's ``cut`` patterns (every key of the pattern equal;
    a list value matches any of its items)."""
    def match(k, v):
        return label[k] in v if isinstance(v, list) else label[k] == v
    return any(all(match(k, v) for k, v in pat.items()) for pat in patterns)


def points(study: dict, base: config_mod.TrainConfig, networks: dict, out: Path) -> list[tuple[dict, config_mod.TrainConfig]]:
    """Every (label, config) of the grid: network x seed x (float, bits x rounding x stored
    weight width x rate representation), less the cells the study file cuts. A fixed point's
    directory is ``b{bits}-{rounding}`` with ``-ws{N}`` when its stored weights are wider than
    its MAC weights (weight_store_extra) and ``-shift`` for lr_mode shift."""
    res = []
    for name, over in networks.items():
        net_cfg = config_mod.from_mapping(over, base)
        for seed in study["seeds"]:
            depths = (["float"] if study["float"] else []) + list(study["bits"])
            for bits in depths:
                variants = [("-", "-", "-")] if bits == "float" else [
                    (r, x, m) for r in study["roundings"] for x in study["weight_store_extra"]
                    for m in study["lr_modes"]]
                for rounding, extra, lr_mode in variants:
                    cfg = dataclasses.replace(net_cfg, seed=seed, epochs=study["epochs"])
                    if bits == "float":
                        cfg.model = "float"
                        cfg.fixed = {}
                        tag = f"{name}/float/seed{seed}"
                        store = "-"
                    else:
                        cfg.model = "fixed"
                        fixed = {"state": bits, "weight": bits, "bias": bits + study["bias_extra_bits"],
                                 "rounding": rounding}
                        if lr_mode != "multiplier":
                            fixed["lr_mode"] = lr_mode
                        store = bits + extra
                        if study["weight_store_bits"]:
                            store = max(bits, study["weight_store_bits"])
                        if store != bits:
                            fixed["weight_store"] = store
                        cfg.fixed = fixed
                        if study["fixed_settle_tol"] >= 0:
                            cfg.settle_tol = float(study["fixed_settle_tol"])
                        tag = (f"{name}/b{bits}-{rounding}" + (f"-ws{bits + extra}" if extra else "")
                               + ("-shift" if lr_mode == "shift" else "") + f"/seed{seed}")
                    cfg.out = str(out / "points" / tag)
                    label = {"network": name, "bits": bits, "rounding": rounding, "store": store,
                             "extra": extra, "lr_mode": lr_mode, "seed": seed, "dir": cfg.out}
                    if _cut(label, study["cut"]):
                        continue
                    res.append((label, config_mod.validate(cfg)))
    return res


def _done_epochs(run_dir: Path) -> int:
    m = run_dir / "metrics.jsonl"
    if not m.exists():
        return 0
    return len([l for l in m.read_text().splitlines() if l.strip()])


def _fault_hook(cfg, fault: str | None):
    """The test fault of FAULT_ENV for this point, as a log callback wrapper (or None)."""
    if not fault:
        return None
    sub, _, ep = fault.rpartition(":")
    d = Path(cfg.out)
    if sub not in str(d) or not ep.isdigit():
        return None
    marker = d / ".fault-injected"

    def hook():
        if _done_epochs(d) == int(ep) and not marker.exists():
            marker.write_text(f"killed after epoch {ep} by {FAULT_ENV}\n")
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _run_point(cfg, threads: int | None = None, gradcheck: int = 0, fault: str | None = None) -> dict:
    """Train one grid point (in this process, a worker process or a Ray task), resuming from
    its checkpoint when it has one; then its gradient check when asked. Returns
    {"dir", "lines", "status": done|failed|refused, "resumed_from": epoch or None}."""
    import torch

    from .numerics import NumericsError
    from .train import Run

    if threads:
        torch.set_num_threads(threads)
    d = Path(cfg.out)
    lines: list[str] = []
    resume = (d / "checkpoint.pt").exists()
    res = {"dir": cfg.out, "lines": lines, "status": "done", "resumed_from": None}
    if resume:
        res["resumed_from"] = _done_epochs(d)
        lines.append(f"    resumed from the checkpoint of epoch {res['resumed_from']}")
    hook = _fault_hook(cfg, fault)

    def log(s):
        lines.append("    " + s)
        if hook:
            hook()

    try:
        Run(cfg, d, resume=resume).train(progress=False, log=log)
    except NumericsError as e:  # a format that cannot hold this point: recorded, not fatal
        d.mkdir(parents=True, exist_ok=True)
        (d / "refused.txt").write_text(str(e) + "\n")
        lines.append(f"    refused: {e}")
        res["status"] = "refused"
        return res
    except TrainingDiverged as e:  # marked failed; the study goes on
        d.mkdir(parents=True, exist_ok=True)
        (d / "failed.txt").write_text(str(e) + "\n")
        lines.append(f"    failed: {e}")
        res["status"] = "failed"
        return res
    if gradcheck and not _gradcheck_current(d, cfg, gradcheck):
        from .files import atomic_write
        from .gradcheck import gradcheck as measure

        r = measure(d, examples=gradcheck)
        atomic_write(d / "gradcheck.json", lambda f: f.write(json.dumps(r, indent=1).encode()))
        lines.append(f"    gradcheck on {r['examples']} images: cos " + ", ".join(
            f"{p} {c:.3f}" for p, c in zip(r["pairs"], _point_series(r)["cos"])))
    return res


def _gradcheck_current(d: Path, cfg, n: int) -> bool:
    """gradcheck.json holds the measurement of the point's last epoch on min(n, train_size) images."""
    try:
        r = json.loads((d / "gradcheck.json").read_text())
        return r["epoch"] == _done_epochs(d) and r["examples"] == min(n, cfg.train_size)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _point_series(r: dict, kind: str | None = None) -> dict:
    """A gradcheck result's series for the point itself: the float correction of a float run,
    the fixed-point correction after (or ``kind``) rounding of a fixed-point run."""
    fixed = [s for s in r["series"] if s["weights"] == "run" and s["kind"].startswith("fixed")]
    if not fixed:
        return r["series"][0]
    want = kind or "fixed after rounding"
    return next(s for s in fixed if s["kind"] == want)


def _status(d: Path, epochs: int) -> str:
    if (d / "failed.txt").exists():
        return "failed"
    if (d / "refused.txt").exists() and not (d / "metrics.jsonl").exists():
        return "refused"
    n = _done_epochs(d)
    return "done" if n >= epochs else ("partial" if n else "todo")


def check_ray_address(address: str) -> None:
    """A HOST:PORT or ray://HOST:PORT address that answers a TCP connection, or ConfigError
    (one line) before Ray spends half a minute timing out on it."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray: {address!r} is not an address (auto, HOST:PORT or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"--ray: cannot reach the Ray cluster at {address} ({e.strerror or e})") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray: ray is not installed (pip install -e '.[cluster]', or make setup)") from None
    return ray


def _ray_session(address: str | None, num_cpus: int | None, log):
    """ray (imported) and whether this call started the session it should shut down."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    import logging

    kw = dict(logging_level=logging.WARNING, log_to_driver=False, include_dashboard=False)
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, **kw)
        log(f"study: local Ray with {int(ray.cluster_resources().get('CPU', 0))} CPUs")
        return ray, True
    kw.pop("include_dashboard")
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(f"--ray: cannot connect to the Ray cluster at {address} ({msg})") from None
    res = ray.cluster_resources()
    log(f"study: Ray cluster at {address}: {int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs")
    return ray, True


def _ray_point(cfg, cpus: float, gpus: float, gradcheck: int, fault: str | None) -> dict:
    """The body of a point's Ray task."""
    if gpus:
        cfg = dataclasses.replace(cfg, device="cuda")
    return _run_point(cfg, max(1, int(cpus)), gradcheck, fault)


def _run_ray(todo, n_grid: int, address, jobs, cpus: float, gpus: float, gradcheck: int, log) -> dict:
    """Every point of ``todo`` as a Ray task; {dir: status} of the points that did not end done."""
    ray, owned = _ray_session(address, None if jobs is None else max(1, int(jobs * cpus)), log)
    bad: dict = {}
    try:
        task = ray.remote(_ray_point).options(num_cpus=cpus, num_gpus=gpus, max_retries=RAY_RETRIES,
                                              retry_exceptions=False)
        fault = os.environ.get(FAULT_ENV)
        refs = {task.remote(cfg, cpus, gpus, gradcheck, fault): (n, cfg) for n, cfg in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            n, cfg = refs[ready[0]]
            try:
                res = ray.get(ready[0])
            except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.RayError) as e:
                reason = " ".join(str(e).split())[:300]
                log(f"[{n}/{n_grid}] {cfg.out}\n    crashed: {reason}")
                bad[cfg.out] = "crashed"
                continue
            log(f"[{n}/{n_grid}] {res['dir']}")
            for line in res["lines"]:
                log(line)
            if res["status"] == "done" and _done_epochs(Path(cfg.out)) < cfg.epochs:
                log(f"    not found here: {cfg.out} is not on a file system this machine shares with the Ray "
                    "workers (--out must be on one every node mounts at the same path)")
                bad[cfg.out] = "crashed"
            elif res["status"] == "failed":
                bad[cfg.out] = "failed"
    finally:
        if owned:
            ray.shutdown()
    return bad


def run_study(config_path: str, out: str | None = None, dry_run: bool = False, log=print, jobs: int | None = None,
              ray: str | None = None, cpus_per_point: float = 1, gpus_per_point: float = 0,
              gradcheck: int | None = None, summary_only: bool = False) -> Path:
    """Run every unfinished point. Without ``ray``: ``jobs`` > 1 trains that many points at
    once, one thread each (small networks gain nothing from a second thread, and two
    multi-threaded processes on two cores slow each other down badly). With ``ray`` ("local"
    or an address): each point a Ray task (module docstring). Raises StudyFailed (exit 3)
    after the summary when a point failed."""
    study, base, networks = load_study(config_path)
    if cpus_per_point <= 0 or gpus_per_point < 0:
        raise ConfigError("--cpus-per-point must be > 0 and --gpus-per-point >= 0")
    if gpus_per_point and not ray:
        raise ConfigError("--gpus-per-point: only with --ray")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs: must be >= 1, got {jobs}")
    if ray:
        _import_ray()
        check_ray_address(ray)  # before anything is written
    gradcheck = study["gradcheck"] if gradcheck is None else gradcheck
    if gradcheck < 0:
        raise ConfigError(f"--gradcheck: must be >= 0, got {gradcheck}")
    outp = Path(out or study["out"])
    if ray:
        outp = outp.resolve()  # the workers' working directory is not ours
    grid = points(study, base, networks, outp)
    log(f"study: {len(grid)} runs of {study['epochs']} epoch(s) into {outp}")
    if dry_run:
        for label, _ in grid:
            log(f"  {label['dir']}")
        return outp
    if summary_only:  # partial points count with the epochs they have (status partial)
        if not outp.is_dir():
            raise ConfigError(f"--summary-only: {outp} holds no study yet")
        summarize(outp, grid, log)
        return outp
    outp.mkdir(parents=True, exist_ok=True)
    (outp / "study.toml").write_text(Path(config_path).read_text())
    todo = []
    for n, (label, cfg) in enumerate(grid, 1):
        d = Path(cfg.out)
        if (d / "failed.txt").exists():
            log(f"[{n}/{len(grid)}] {cfg.out}: failed earlier, not retried (delete its failed.txt to retry)")
        elif _done_epochs(d) < cfg.epochs or (gradcheck and not (d / "refused.txt").exists()
                                               and not _gradcheck_current(d, cfg, gradcheck)):
            todo.append((n, cfg))
    # One seed after another, each seed's float points first (they are the reference every
    # fixed point is compared with): a study stopped early has whole seeds.
    # Within a seed, depth by depth in the file's order (every network gets the same depths
    # first), then by arithmetic.
    seeds = {s: i for i, s in enumerate(study["seeds"])}
    depth = {b: i for i, b in enumerate(study["bits"])}
    kind = {cfg.out: (seeds[label["seed"]], label["bits"] != "float", depth.get(label["bits"], -1),
                      study["weight_store_extra"].index(label["extra"]) if label["bits"] != "float" else 0, n)
            for n, (label, cfg) in enumerate(grid)}
    todo.sort(key=lambda t: kind[t[1].out])
    bad: dict = {}
    t0 = time.perf_counter()
    if ray and todo:
        bad = _run_ray(todo, len(grid), ray, jobs, cpus_per_point, gpus_per_point, gradcheck, log)
    elif (jobs or 1) <= 1:
        for n, cfg in todo:
            log(f"[{n}/{len(grid)}] {cfg.out}")
            res = _run_point(cfg, None, gradcheck)
            for line in res["lines"]:
                log(line)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_die_with_parent,
                                 initargs=(os.getpid(),)) as ex:
            futs = {ex.submit(_run_point, cfg, 1, gradcheck): n for n, cfg in todo}
            for f in as_completed(futs):
                res = f.result()
                log(f"[{futs[f]}/{len(grid)}] {res['dir']}")
                for line in res["lines"]:
                    log(line)
    if todo:
        log(f"study: {len(todo)} point(s) run in {time.perf_counter() - t0:.1f} s")
    summarize(outp, grid, log, bad)
    failed = [(label["dir"], s) for label, cfg in grid
              for s in [bad.get(cfg.out) or _status(Path(cfg.out), cfg.epochs)] if s in ("failed", "crashed")]
    if failed:
        raise StudyFailed(f"study: {len(failed)} of {len(grid)} points failed ("
                          + "; ".join(f"{d}: {s}" for d, s in failed[:3]) + ("; ..." if len(failed) > 3 else "")
                          + f"); the others are in {outp}/summary.csv (status column)")
    return outp


def _die_with_parent(parent: int):
    """A --jobs worker ends (SIGTERM) when the study process that started it dies, however it
    dies, instead of training on orphaned and holding its point's lock (Linux: prctl
    PR_SET_PDEATHSIG; elsewhere nothing). Its point resumes from its last checkpoint."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
        except OSError:
            return
        if os.getppid() != parent:  # it died before the request: nobody will send the signal
            os._exit(1)


def summarize(outp: Path, grid, log=print, crashed: dict | None = None):
    """summary.csv (every point that ran: its status, done|partial|failed|refused|crashed, and
    its last epoch's metrics), summary.md (the points with metrics, by network, depth and
    rounding; then the points without a result) and the figures."""
    rows, missing = [], []
    for label, cfg in grid:
        d = Path(cfg.out)
        status = (crashed or {}).get(cfg.out) or _status(d, cfg.epochs)
        base = {**{k: label[k] for k in ("network", "bits", "rounding", "store", "lr_mode", "seed")},
                "status": status}
        m = d / "metrics.jsonl"
        hist = [json.loads(l) for l in m.read_text().splitlines() if l.strip()] if m.exists() else []
        if status in ("failed", "refused", "crashed") or (not hist and status != "todo"):
            reason = ""
            for f in ("failed.txt", "refused.txt"):
                if (d / f).exists():
                    reason = (d / f).read_text().strip().splitlines()[0]
            missing.append((label, status, reason))
        if not hist:
            if status != "todo":
                rows.append(base)
            continue
        last = hist[-1]
        row = {**base, "epochs": last["epoch"],
               "train_error": last["train_error"], "test_error": last["test_error"],
               "seconds": sum(h["seconds"] for h in hist),
               # the plateau test: what the last two epochs gained in test error
               "gain_last2": hist[-3]["test_error"] - last["test_error"] if len(hist) >= 3 else ""}
        for i, r in enumerate(last["rms_correction"]):
            row[f"rms_{i}{i + 1}"] = r
        for i, z in enumerate(last.get("zero_corrections", [])):
            row[f"zero_{i}{i + 1}"] = z
        row["weight_saturations"] = last.get("weight_saturations", "")
        gcf = d / "gradcheck.json"
        if gcf.exists():
            try:
                r = json.loads(gcf.read_text())
                own = _point_series(r)
                pre = _point_series(r, "fixed before rounding") if own["kind"].startswith("fixed") else None
                for i, p in enumerate(r["pairs"]):
                    key = p.replace("-", "") if p != "other" else "other"
                    row[f"cos_{key}"] = own["cos"][i]
                    row[f"ratio_{key}"] = own["ratio"][i]
                    if pre is not None:
                        row[f"cospre_{key}"] = pre["cos"][i]
            except (ValueError, KeyError, StopIteration, IndexError):
                log(f"study: {gcf} is unreadable; its gradcheck columns are left empty")
        rows.append(row)
    if not rows:
        log("study: nothing finished yet")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(outp / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    done = [r for r in rows if "test_error" in r and r["status"] not in ("failed", "crashed")]
    md = summary_markdown(done) if done else ""
    if missing:
        md += "\nPoints without a result (not in the tables above):\n\n| network | bits | arithmetic | seed | status | reason |\n" \
              "| --- | --- | --- | --- | --- | --- |\n"
        md += "".join(f"| {lb['network']} | {lb['bits']} | {_variant(lb)} | {lb['seed']} | {st} | {why} |\n"
                      for lb, st, why in missing)
    (outp / "summary.md").write_text(md)
    if done:
        plot(outp, done)
    log(f"study: summary of {len(rows)} runs in {outp}/summary.md, figures in {outp}/*.png")


def _mean_by(rows, keyf, valf):
    acc: dict = {}
    for r in rows:
        v = valf(r)
        if v is None or v == "":
            continue
        acc.setdefault(keyf(r), []).append(v)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _variant(r) -> str:
    """A fixed point's arithmetic apart from its depth: the rounding, then ``ws+N`` when its
    stored weights are N bits wider than its MAC weights and ``shift`` for shift-only rates."""
    if r["bits"] == "float":
        return "-"
    extra = (r.get("store") or r["bits"]) - r["bits"] if r.get("store") not in (None, "", "-") else 0
    return r["rounding"] + (f", ws+{extra}" if extra else "") + (", shift" if r.get("lr_mode") == "shift" else "")


def _gain(g) -> str:
    """The mean gain in test error over the last two epochs, in points (the plateau test:
    below 0.5 the point has plateaued); '-' with fewer than 3 epochs."""
    v = [r["gain_last2"] for r in g if isinstance(r.get("gain_last2"), float)]
    return f"{100 * sum(v) / len(v):.2f}" if v else "-"


def _spread(v: list) -> str:
    return f"{100 * (max(v) - min(v)):.2f}" if len(v) > 1 else "-"


def summary_markdown(rows) -> str:
    """One line per network, depth and arithmetic (mean over seeds, the test error's spread
    max - min in points), then the answer: the lowest depth within 1 point of float."""
    nets = list(dict.fromkeys(r["network"] for r in rows))
    n_pairs = max(int(k.split("_")[1][0]) + 1 for r in rows for k in r if k.startswith("rms_"))
    cos_keys = list(dict.fromkeys(k for r in rows for k in r if k.startswith("cos_")))
    lines = ["| network | bits | arithmetic | seeds | epochs | train error | test error | spread | last 2 epochs | "
             + " | ".join(f"RMS dW {i}-{i + 1}" for i in range(n_pairs)) + " | "
             + " | ".join(f"zero dW {i}-{i + 1}" for i in range(n_pairs)) + " |"
             + "".join(f" cos {k[4:5]}-{k[5:]} |" if k != "cos_other" else " cos other |" for k in cos_keys),
             "|" + " --- |" * (9 + 2 * n_pairs + len(cos_keys))]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["network"], r["bits"], _variant(r)), []).append(r)

    def order(k):
        return (nets.index(k[0]), -1 if k[1] == "float" else k[1], k[2])

    for key in sorted(groups, key=order):
        g = groups[key]
        mean = lambda f: sum(f(r) for r in g) / len(g)  # noqa: E731
        rms = [f"{mean(lambda r: r[f'rms_{i}{i + 1}']):.2e}" for i in range(n_pairs)]
        zero = [f"{100 * mean(lambda r: r.get(f'zero_{i}{i + 1}', 0.0)):.0f}%" if key[1] != "float" else "-"
                for i in range(n_pairs)]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {len(g)} | {g[0]['epochs']} | "
            f"{100 * mean(lambda r: r['train_error']):.2f}% | {100 * mean(lambda r: r['test_error']):.2f}% | "
            f"{_spread([r['test_error'] for r in g])} | {_gain(g)} | "
            + " | ".join(rms) + " | " + " | ".join(zero) + " |"
            + "".join(f" {_mean_of(g, k)} |" for k in cos_keys)
        )
    return "\n".join(lines) + "\n" + lowest_depth_markdown(rows)


def lowest_depth(rows, within: float = 0.01) -> list[dict]:
    """Per network and arithmetic: the float error (mean over seeds), and the lowest bit depth
    whose mean test error, and that of every deeper depth measured, is within ``within``
    of it (None if no depth is)."""
    out = []
    for net in dict.fromkeys(r["network"] for r in rows):
        fl = [r["test_error"] for r in rows if r["network"] == net and r["bits"] == "float"]
        ref = sum(fl) / len(fl) if fl else None
        fixed = [r for r in rows if r["network"] == net and r["bits"] != "float"]
        for var in dict.fromkeys(_variant(r) for r in fixed):
            by = {}
            for r in fixed:
                if _variant(r) == var:
                    by.setdefault(r["bits"], []).append(r["test_error"])
            best = None
            for b in sorted(by, reverse=True):
                if ref is None or sum(by[b]) / len(by[b]) > ref + within:
                    break
                best = b
            out.append({"network": net, "arithmetic": var, "float": ref, "float_spread": _spread(fl),
                        "lowest": best, "errors": {b: (sum(v) / len(v), _spread(v), len(v))
                                                   for b, v in sorted(by.items())}})
    return out


def lowest_depth_markdown(rows) -> str:
    res = lowest_depth(rows)
    if not res or all(r["float"] is None for r in res):
        return ""
    lines = ["", "Lowest depth within 1 point of the network's float test error (that depth and every deeper "
             "one measured; mean over seeds, spread max - min in points):", "",
             "| network | arithmetic | float | lowest depth | its error | one depth below |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in res:
        if r["float"] is None:
            continue
        depths = sorted(r["errors"])
        low = r["lowest"]
        below = depths[depths.index(low) - 1] if low is not None and depths.index(low) > 0 else (
            depths[-1] if low is None and depths else None)
        fmt = lambda b: (f"{b} bits: {100 * r['errors'][b][0]:.2f}% (spread {r['errors'][b][1]})"  # noqa: E731
                         if b is not None else "-")
        lines.append(f"| {r['network']} | {r['arithmetic']} | {100 * r['float']:.2f}% (spread {r['float_spread']}) | "
                     f"{low if low is not None else 'none'} | {fmt(low)} | {fmt(below)} |")
    return "\n".join(lines) + "\n"


def _mean_of(g, key) -> str:
    v = [r[key] for r in g if isinstance(r.get(key), float) and r[key] == r[key]]
    return f"{sum(v) / len(v):.3f}" if v else "-"


def plot(outp: Path, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r["network"] for r in rows))
    fixed = [r for r in rows if r["bits"] != "float"]
    roundings = list(dict.fromkeys(_variant(r) for r in fixed))
    bits = sorted({r["bits"] for r in fixed})
    n_pairs = max(int(k.split("_")[1][0]) + 1 for r in rows for k in r if k.startswith("rms_"))

    # 1. error against bit depth, one line per network and rounding; float as dashed level.
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ni, net in enumerate(nets):
        color = f"C{ni}"
        for ri, rnd in enumerate(roundings):
            m = _mean_by([r for r in fixed if r["network"] == net and _variant(r) == rnd],
                         lambda r: r["bits"], lambda r: r["test_error"])
            xs = [b for b in bits if b in m]
            ax.plot(xs, [100 * m[b] for b in xs], marker="os"[ri % 2], ls=["-", ":"][ri % 2], color=color,
                    label=f"{net}, {rnd}")
        fl = _mean_by([r for r in rows if r["network"] == net and r["bits"] == "float"],
                      lambda r: 0, lambda r: r["test_error"])
        if fl:
            ax.axhline(100 * fl[0], color=color, ls="--", lw=0.8, label=f"{net}, float")
    ax.set_xlabel("bits (states and weights)")
    ax.set_ylabel("test error (%)")
    ax.set_xticks(bits)
    ax.set_title("Error against bit depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(outp / "error_vs_bits.png", dpi=120)
    plt.close(fig)

    # 2./3. per-layer RMS correction and fraction of zero corrections against bit depth.
    for what, fname, ylabel, scale in (("rms", "rms_vs_bits.png", "RMS weight correction", "log"),
                                       ("zero", "zero_vs_bits.png", "corrections rounded to zero (%)", "linear")):
        fig, axes = plt.subplots(len(roundings), len(nets), figsize=(4 * len(nets), 3.2 * len(roundings)),
                                 squeeze=False, sharey=True)
        for ri, rnd in enumerate(roundings):
            for ni, net in enumerate(nets):
                ax = axes[ri][ni]
                sel = [r for r in fixed if r["network"] == net and _variant(r) == rnd]
                for i in range(n_pairs):
                    key = f"{what}_{i}{i + 1}"
                    m = _mean_by(sel, lambda r: r["bits"], lambda r, key=key: r.get(key))
                    xs = [b for b in bits if b in m]
                    ys = [m[b] * (100 if what == "zero" else 1) for b in xs]
                    if what == "rms":
                        ys = [max(y, 1e-12) for y in ys]
                    ax.plot(xs, ys, marker="o", label=f"layers {i + 1}-{i + 2}")
                ax.set_yscale(scale)
                ax.set_title(f"{net}, {rnd}", fontsize=9)
                ax.set_xticks(bits)
                if ri == len(roundings) - 1:
                    ax.set_xlabel("bits")
                if ni == 0:
                    ax.set_ylabel(ylabel)
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(outp / fname, dpi=120)
        plt.close(fig)

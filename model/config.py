"""Run configuration: one object, filled from a TOML file and/or flags.

Every key is a field of ``TrainConfig``; the TOML file uses the same names
(a ``[train]`` table or top-level keys). Unknown keys, wrong types and
impossible values raise ``ConfigError`` with a one-line message naming the
key, which the command line turns into exit status 2.

Defaults are the paper's (section 4): batch 20, eps 0.5, beta 1.0, 500 free
and 8 weakly-clamped steps, 784-500-500-500-10, global rate 0.02, Algorithm 1
with p = 7.56%.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAPER_P = 0.0756
# Where the weakly-clamped phase's nudge enters (docs/numerics.md §4 step 4);
# the one list the models and the configuration check.
NUDGES = ("after-step", "eq5")
LEGACY_NUDGE = "eq5"  # runs and designs made before the nudge option
LEGACY_SETTLE = False  # runs made before the settle rule ran every free step
# seed + 1 seeds the run's torch generator and topology.npz stores the seed as int64.
MAX_SEED = 2**63 - 2
# The float model's rates are float32 tensors (and the fixed model's come from float32-
# sized products): a larger rate overflows before the first batch.
MAX_LR = 3.4028234663852886e38


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


@dataclass
class TrainConfig:
    # data
    dataset: str = "mnist"
    data_dir: str = ""  # "" = the bundled MNIST / the system's Fashion-MNIST
    downsample: int = 0  # 0 = 28x28; 14 or 7 = average-pooled side
    train_size: int = 50000
    eval_size: int = 10000
    eval_set: str = "validation"
    # network
    model: str = "float"  # "float" (PyTorch) or "fixed" (docs/numerics.md)
    fixed: dict = field(default_factory=dict)  # [fixed] table: formats and modes (numerics.FIXED_KEYS)
    hdl: dict = field(default_factory=dict)  # [hdl] table: lanes, checkpoint, name, device (eqprop.hdl.generate)
    topology: str = "skip"
    sizes: list = field(default_factory=lambda: [784, 500, 500, 500, 10])
    p: float | None = None  # skip topologies: default PAPER_P unless n_rewire given
    n_rewire: int | None = None
    init_adjacent: Any = "glorot"  # "glorot" or a number a for U[-a, a]
    init_other: float = 0.05
    init_bias: float = 0.0
    # dynamics and learning
    eps: float = 0.5
    beta: float = 1.0
    random_beta_sign: bool = True
    nudge: str = "after-step"  # where the weakly-clamped nudge enters (docs/numerics.md §4): after-step | eq5
    free_steps: int = 500
    nudged_steps: int = 8
    eval_free_steps: int = 0  # 0 = free_steps
    # The settle rule (docs/numerics.md §4a): a free phase (training or evaluation) ends
    # once no state changed by more than settle_tol for settle_steps consecutive steps.
    settle: bool = True
    settle_tol: float = 0.0  # fixed: whole state LSBs; float: a real change
    settle_steps: int = 1
    lr: list = field(default_factory=lambda: [0.02])
    persistent: bool = True
    eval_particles: bool = False  # evaluation examples keep their own persistent particles (the paper's code)
    shuffle: bool = False
    # run
    epochs: int = 1
    batch_size: int = 20
    eval_batch_size: int = 1000
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    out: str = ""

    # ------------------------------------------------------------ derived
    @property
    def input_size(self) -> int:
        return (self.downsample or 28) ** 2

    @property
    def rewire(self) -> dict:
        """Keyword arguments for the topology constructor."""
        if self.topology == "layered":
            return {}
        if self.n_rewire is not None:
            return {"n_rewire": self.n_rewire}
        return {"p": PAPER_P if self.p is None else self.p}

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


_CHOICES = {
    "dataset": ("mnist", "fashion-mnist"),
    "eval_set": ("validation", "test"),
    "model": ("float", "fixed"),
    "topology": ("layered", "skip", "skip-add"),
    "dtype": ("float32", "float64"),
    "nudge": NUDGES,
}
_POSITIVE_INT = ("train_size", "eval_size", "epochs", "batch_size", "eval_batch_size")
_NONNEG_INT = ("free_steps", "nudged_steps", "eval_free_steps", "seed")
_TYPES = {
    "dataset": str, "data_dir": str, "downsample": int, "train_size": int, "eval_size": int,
    "eval_set": str, "model": str, "fixed": "table", "hdl": "table", "topology": str, "sizes": "ints", "p": float,
    "n_rewire": int, "init_adjacent": "glorot|float", "init_other": float, "init_bias": float,
    "eps": float, "beta": float, "random_beta_sign": bool, "nudge": str, "free_steps": int,
    "nudged_steps": int, "eval_free_steps": int, "settle": bool, "settle_tol": float, "settle_steps": int,
    "lr": "floats", "persistent": bool, "eval_particles": bool,
    "shuffle": bool, "epochs": int, "batch_size": int, "eval_batch_size": int, "seed": int,
    "device": str, "dtype": str, "out": str,
}
assert set(_TYPES) == {f.name for f in dataclasses.fields(TrainConfig)}


def check_rate_count(key: str, rates: list, sizes: list):
    """Rates (``lr``, ``[hdl] onchip_lr``) are one global rate or one per non-input layer."""
    if len(rates) not in (1, len(sizes) - 1):
        raise ConfigError(f"{key}: {len(rates)} rates given; need one global rate or {len(sizes) - 1} per-layer rates")


def _coerce(key: str, value: Any) -> Any:
    """Check one value's type (TOML values or parsed flags)."""
    t = _TYPES[key]

    def bad(what):
        return ConfigError(f"{key}: expected {what}, got {value!r}")

    if t is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if t is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if t is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if t == "ints":
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers")
        return list(value)
    if t == "floats":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
        ):
            raise bad("a number or a list of numbers")
        return [float(v) for v in value]
    if t == "table":
        if not isinstance(value, dict):
            raise bad("a table of fixed-point keys")
        return dict(value)
    if t == "glorot|float":
        if value == "glorot":
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad('"glorot" or a number')
    raise AssertionError(t)


def validate(cfg: TrainConfig, data: bool = True) -> TrainConfig:
    """Check values and their combinations; raise ConfigError naming the key.

    ``data=False`` skips the checks that tie the network to MNIST (input size =
    pixels, 10 outputs), for commands that only build a topology."""
    for key, choices in _CHOICES.items():
        if getattr(cfg, key) not in choices:
            raise ConfigError(f"{key}: {getattr(cfg, key)!r} is not one of {', '.join(choices)}")
    for key in _POSITIVE_INT:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}: must be a positive integer, got {getattr(cfg, key)}")
    for key in _NONNEG_INT:
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {getattr(cfg, key)}")
    if cfg.seed > MAX_SEED:
        raise ConfigError(f"seed: {cfg.seed} is too large (at most 2^63 - 2 = {MAX_SEED}: seed + 1 seeds a "
                          "64-bit random generator)")
    if cfg.downsample not in (0, 14, 7):
        raise ConfigError(f"downsample: {cfg.downsample} is not 0 (28x28), 14 or 7")
    if len(cfg.sizes) < 2:
        raise ConfigError(f"sizes: need at least an input and an output layer, got {cfg.sizes}")
    for i, n in enumerate(cfg.sizes):
        if n < 1:
            raise ConfigError(f"sizes: layer {i} has size {n}")
    from .topology import TopologyError, check_dense_size

    try:
        check_dense_size(cfg.sizes)  # before anything allocates the N x N mask
    except TopologyError as e:
        raise ConfigError(str(e)) from None
    if data and cfg.sizes[0] != cfg.input_size:
        raise ConfigError(
            f"sizes: input layer {cfg.sizes[0]} does not match the {cfg.input_size} pixels of "
            f"{cfg.downsample or 28}x{cfg.downsample or 28} images (see downsample)"
        )
    if data and cfg.sizes[-1] != 10:
        raise ConfigError(f"sizes: output layer {cfg.sizes[-1]} must be 10 (one neuron per class)")
    if cfg.p is not None and cfg.n_rewire is not None:
        raise ConfigError("p: give p or n_rewire, not both")
    if cfg.topology == "layered" and (cfg.p is not None or cfg.n_rewire is not None):
        raise ConfigError("p: a layered topology takes no p or n_rewire")
    if cfg.p is not None and not 0.0 <= cfg.p < 1.0:
        raise ConfigError(f"p: {cfg.p} is outside [0, 1)")
    if cfg.n_rewire is not None and cfg.n_rewire < 0:
        raise ConfigError(f"n_rewire: must be >= 0, got {cfg.n_rewire}")
    check_rate_count("lr", cfg.lr, cfg.sizes)
    if any(a < 0 for a in cfg.lr):
        raise ConfigError(f"lr: rates must be >= 0, got {cfg.lr}")
    if any(a > MAX_LR for a in cfg.lr):
        raise ConfigError(f"lr: {max(cfg.lr):g} overflows float32 (the largest rate is {MAX_LR:.7g})")
    if not cfg.eps > 0:
        raise ConfigError(f"eps: must be > 0, got {cfg.eps}")
    if cfg.beta == 0:
        raise ConfigError("beta: must be nonzero (eq. 7 divides by beta)")
    if isinstance(cfg.init_adjacent, float) and cfg.init_adjacent < 0:
        raise ConfigError(f"init_adjacent: must be 'glorot' or >= 0, got {cfg.init_adjacent}")
    if cfg.init_other < 0:
        raise ConfigError(f"init_other: must be >= 0, got {cfg.init_other}")
    if cfg.train_size > 50000 and cfg.dataset in ("mnist", "fashion-mnist"):
        raise ConfigError(f"train_size: {cfg.train_size} exceeds the 50,000 training examples")
    if cfg.eval_size > 10000:
        raise ConfigError(f"eval_size: {cfg.eval_size} exceeds the 10,000 {cfg.eval_set} examples")
    _validate_device(cfg.device)
    _validate_settle(cfg)
    if cfg.fixed or cfg.model == "fixed":
        from .numerics import NumericsError, numerics_from_mapping, power_of_two_exponent

        try:
            num = numerics_from_mapping(cfg.fixed)
            if cfg.model == "fixed" and cfg.settle_tol >= num.state.one():
                raise ConfigError(f"settle_tol: {int(cfg.settle_tol)} LSB is the whole state range "
                                  f"(state {num.state}): every step would count as settled")
            if cfg.model == "fixed":
                power_of_two_exponent(cfg.eps, "eps")
                power_of_two_exponent(cfg.beta, "beta")
        except NumericsError as e:
            raise ConfigError(str(e)) from None
    return cfg


def _validate_device(device: str):
    """cpu, or cuda[:N] on a torch that has that GPU."""
    if device == "cpu":
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not m:
        raise ConfigError(f"device: {device!r} is not cpu or cuda[:N]")
    import torch

    if not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
        raise ConfigError(f"device: {device} is not available ({why}); use --device cpu")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device: {device} does not exist ({torch.cuda.device_count()} GPU(s) visible)")


def cuda_available(device: str) -> bool:
    """Whether ``device`` (a validated name) can be used here."""
    try:
        _validate_device(device)
    except ConfigError:
        return False
    return True


def _validate_settle(cfg: TrainConfig):
    """The settle rule's keys (docs/numerics.md §4a), checked whether or not it is on."""
    if cfg.settle_tol < 0:
        raise ConfigError(f"settle_tol: must be >= 0, got {cfg.settle_tol}")
    if cfg.settle_steps < 1:
        raise ConfigError(f"settle_steps: must be >= 1, got {cfg.settle_steps}")
    if cfg.model == "fixed" and cfg.settle_tol != int(cfg.settle_tol):
        raise ConfigError(f"settle_tol: the fixed-point model counts whole state LSBs, got {cfg.settle_tol}")
    if cfg.model == "float" and cfg.settle_tol >= 1.0:
        raise ConfigError(f"settle_tol: {cfg.settle_tol} is the whole state range [0, 1]: every step would "
                          "count as settled")
    if not cfg.settle:
        return
    for key in ("free_steps", "eval_free_steps"):
        n = getattr(cfg, key)
        if n > 0 and cfg.settle_steps > n:
            raise ConfigError(f"settle_steps: {cfg.settle_steps} quiet steps can never end a phase of "
                              f"{key} = {n} steps (set settle = false, or fewer settle_steps)")


SETTLE_KEYS = ("settle", "settle_tol", "settle_steps")


def parse_bool(text: str) -> bool:
    """A boolean flag's text (true/false, yes/no, on/off, 1/0); ValueError otherwise."""
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def apply_settle_flags(cfg: TrainConfig, args) -> TrainConfig:
    """The --settle, --settle-tol, --settle-steps flags of hdl generate and sim over the config."""
    for key in SETTLE_KEYS:
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    return cfg


def settle_rule(cfg: TrainConfig):
    """The run's SettleRule, or None when the rule is off."""
    if not cfg.settle:
        return None
    from .settle import SettleRule

    tol = int(cfg.settle_tol) if cfg.model == "fixed" else cfg.settle_tol
    return SettleRule(tol, cfg.settle_steps)


def numerics(cfg: TrainConfig):
    """The fixed-point contract (docs/numerics.md) this configuration asks for."""
    from .numerics import numerics_from_mapping

    return numerics_from_mapping(cfg.fixed)


def from_mapping(values: dict, base: TrainConfig | None = None, source: str = "") -> TrainConfig:
    """Apply ``values`` over ``base`` (default config), checking keys and types."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    where = f" (in {source})" if source else ""
    for key, value in values.items():
        if key not in _TYPES:
            raise ConfigError(f"{key}: unknown configuration key{where}")
        try:
            setattr(cfg, key, _coerce(key, value))
        except ConfigError as e:
            raise ConfigError(f"{e}{where}") from None
    return cfg


def load_toml(path: str | Path, base: TrainConfig | None = None) -> TrainConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config: {path}: cannot read ({e.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path}: not valid TOML ({e})") from None
    if "train" in data:
        extra = [k for k in data if k not in ("train", "fixed", "hdl")]
        if extra:
            raise ConfigError(f"{extra[0]}: unknown configuration key (in {path}; put keys under [train])")
        tables = {k: data[k] for k in ("fixed", "hdl") if k in data}
        data = data["train"]
        if not isinstance(data, dict):
            raise ConfigError(f"train: expected a table (in {path})")
        for k, v in tables.items():
            if k in data:
                raise ConfigError(f"{k}: given twice (in {path})")
            data = {**data, k: v}
    if is_run_config(path) and "nudge" not in data:
        # A run directory's resolved config.toml holds every key; one without
        # ``nudge`` was written before the option existed, when the nudge was eq. 5.
        data = {**data, "nudge": LEGACY_NUDGE}
    if is_run_config(path) and "settle" not in data:
        data = {**data, "settle": LEGACY_SETTLE}  # written before the settle rule existed
    return from_mapping(data, base, source=str(path))


def is_run_config(path: str | Path) -> bool:
    """Whether ``path`` is a run directory's resolved config.toml (train.py writes it)."""
    path = Path(path)
    return path.name == "config.toml" and any(
        (path.parent / f).exists() for f in ("metrics.jsonl", "checkpoint.pt", "topology.npz"))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def dumps_toml(cfg: TrainConfig) -> str:
    """The resolved configuration as TOML (readable back with load_toml)."""
    d = cfg.to_dict()
    fixed = d.pop("fixed", {})
    hdl = d.pop("hdl", {})
    lines = ["[train]"] + [f"{k} = {_toml_value(v)}" for k, v in d.items()]
    if cfg.model == "fixed":
        fixed = numerics(cfg).to_dict()  # every format resolved, as the hardware sees it
    if fixed:
        lines += ["", "[fixed]"] + [f"{k} = {_toml_value(v)}" for k, v in fixed.items()]
    if hdl:
        lines += ["", "[hdl]"] + [f"{k} = {_toml_value(v)}" for k, v in hdl.items()]
    return "\n".join(lines) + "\n"


def os_reason(e: OSError, path: str | Path) -> str:
    """Why writing ``path`` failed, in a few words (for one-line messages)."""
    path = Path(path)
    if isinstance(e, NotADirectoryError) or e.errno == errno.ENOTDIR:
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                return f"{parent} is a file, not a directory"
        return "a part of the path is not a directory"
    if isinstance(e, FileExistsError) and path.exists() and not path.is_dir():
        return "it is a file, not a directory"
    if isinstance(e, IsADirectoryError):
        return "it is a directory"
    if isinstance(e, FileNotFoundError):
        return f"no such directory {path.parent}"
    return e.strerror or e.__class__.__name__

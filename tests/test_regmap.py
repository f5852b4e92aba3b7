"""The register map written once (hdl/regmap.py): every code documented, docs/hardware.md's
tables generated from it, and the C header's addresses, compiled by a C compiler, equal
to the memory map's."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from eqprop.hdl.enums import Ctrl, Reg, Region, Status
from eqprop.hdl.memory_map import MemoryMap
from eqprop.hdl.params import CoreParams
from eqprop.hdl.regmap import REGION_DOC, REGISTER_DOC, c_header, markdown_tables, register_doc
from eqprop.model.numerics import numerics_from_mapping
from eqprop.model.topology import layer_skipping, layered

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hardware.md"


def test_every_code_is_documented():
    assert set(REGISTER_DOC) == set(Reg) and set(REGION_DOC) == set(Region)
    doc = register_doc()
    assert doc["registers"]["status"]["word"] == Reg.STATUS.value == 1
    assert {k: v["mask"] for k, v in doc["status_bits"].items()} == {"busy": 1, "done": 2, "wr_err": 4}
    assert {k: v["mask"] for k, v in doc["ctrl_bits"].items()} == {"start": 1, "infer": 2}


def test_docs_tables_are_the_generated_ones():
    """docs/hardware.md holds markdown_tables() verbatim (python -m eqprop.hdl.regmap prints it)."""
    assert markdown_tables() in DOCS.read_text()


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("bus", ["native", "axi4lite"])
def test_c_header_compiles_to_the_memory_map(tmp_path, bus):
    topo = layer_skipping([6, 5, 4, 3], n_rewire=6, seed=1)
    num = numerics_from_mapping({"state": 8, "weight": 8, "bias": 12})
    mm = MemoryMap(CoreParams(topo, num, 0.5, 1.0, [0.5, 0.25, 0.125], 2, n_free=3, n_nudged=2))
    (tmp_path / "core_x.h").write_text(c_header(mm, "core_x", bus))
    S = mm.p.layout.S
    prog = ['#include <stdio.h>', '#include "core_x.h"', "int main(void) {"]
    prog += [f'printf("reg {r.key} %u\\n", (unsigned)CORE_X_REG_{r.name});' for r in Reg]
    prog += [f'printf("bit {b.name} %u\\n", (unsigned)CORE_X_{kind}_{b.name});'
             for kind, flags in (("CTRL", Ctrl), ("STATUS", Status)) for b in flags]
    prog += [f'for (unsigned i = 0; i < {S}; i++) printf("s0 %u %u\\n", i, (unsigned)CORE_X_LANE_ADDR('
             'CORE_X_REGION_S0, core_x_neuron_lane[i], core_x_neuron_local[i]));',
             f'for (unsigned i = 0; i < {S}; i++) printf("bias %u %u\\n", i, (unsigned)CORE_X_LANE_ADDR('
             'CORE_X_REGION_BIAS, core_x_neuron_lane[i], core_x_neuron_local[i]));',
             'printf("input 5 %u\\n", (unsigned)CORE_X_INPUT_ADDR(5));',
             'printf("byte status %u\\n", (unsigned)CORE_X_BYTE(CORE_X_REG_STATUS));',
             'printf("out %u %u\\n", (unsigned)CORE_X_OUT_FIRST, (unsigned)CORE_X_N_OUT);', "return 0; }"]
    (tmp_path / "t.c").write_text("\n".join(prog) + "\n")
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", "-Wno-unused-const-variable", "-o", str(tmp_path / "t"),
                    str(tmp_path / "t.c")], check=True, cwd=tmp_path)
    got = subprocess.run([str(tmp_path / "t")], check=True, capture_output=True, text=True).stdout.splitlines()
    want = [f"reg {r.key} {mm.reg(r)}" for r in Reg]
    want += [f"bit {b.name} {b.value}" for flags in (Ctrl, Status) for b in flags]
    want += [f"s0 {i} {mm.state(i, 's0')}" for i in range(S)] + [f"bias {i} {mm.bias(i)}" for i in range(S)]
    want += [f"input 5 {mm.input(5)}", f"byte status {4 * mm.reg('status')}",
             f"out {mm.p.layout.out_first} {S - mm.p.layout.out_first}"]
    assert got == want
    assert re.search(r"#define CORE_X_REGION_WEIGHT 6u", (tmp_path / "core_x.h").read_text())


def test_unknown_register_name_is_one_line():
    topo = layered([6, 4, 3])
    mm = MemoryMap(CoreParams(topo, numerics_from_mapping({"state": 8, "weight": 8, "bias": 12}), 0.5, 1.0, [0.5], 1,
                              n_free=3, n_nudged=2))
    assert mm.reg("rate") == mm.reg(Reg.RATE) == 16
    with pytest.raises(ValueError, match=r"register: 'rates' is not a register of the core \(known: ctrl, "):
        mm.reg("rates")

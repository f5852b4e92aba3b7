"""eqprop hdl estimate (hdl/estimate.py): the memories it lists are the elaborated design's,
its block-memory and DSP counts are what Yosys mapped on the measured designs of
docs/hardware.md, and a design that does not fit is one line and exit 2."""

import json

import pytest
from amaranth.hdl import Fragment, Shape
from amaranth.hdl._mem import MemoryInstance

from eqprop.hdl import estimate as est_mod
from eqprop.hdl.core import Core
from eqprop.hdl.fpga import TARGETS
from eqprop.hdl.generate import build_params, hdl_options
from eqprop.model import config as config_mod
from eqprop.model.cli import main
from test_generate import TINY  # 49-6-10 skip, 2 lanes, nearest-even

TINY_HDL = "configs/hdl/tiny.toml"  # 49-8-10 skip, 2 lanes, stochastic (docs/hardware.md "Targets")


def _params(path, **over):
    cfg = config_mod.load_toml(path)
    cfg.hdl = {**cfg.hdl, **{k: v for k, v in over.items() if k in ("lanes", "target")}}
    if "fixed" in over:
        cfg.fixed = {**cfg.fixed, **over["fixed"]}
    cfg.model = "fixed"
    config_mod.validate(cfg)
    opts = hdl_options(cfg)
    return build_params(cfg, opts), opts


def _elaborated_memories(params):
    """(name, depth, width, reads, writes) of every memory in the elaborated core."""
    def walk(f, path):
        if isinstance(f, MemoryInstance):
            d = f._data
            yield path.lstrip("."), d.depth, Shape.cast(d.shape).width, len(f._read_ports), len(f._write_ports)
        for sub, name, *_ in f.subfragments:
            yield from walk(sub, f"{path}.{name}")
    return sorted(walk(Fragment.get(Core(params), None), ""))


@pytest.mark.parametrize("over", [{}, {"lanes": 1, "fixed": {"rounding": "nearest-even"}}, {"lanes": 3}])
def test_memories_are_the_elaborated_designs(tmp_path, over):
    params, _ = _params(TINY_HDL, **over)
    listed = sorted((m.name, m.depth, m.width, m.reads, m.writes) for m in est_mod.memories(params))
    assert listed == _elaborated_memories(params)


def test_layered_memories_too(tmp_path):
    cfg = tmp_path / "l.toml"
    cfg.write_text(TINY.replace('topology = "skip"\np = 0.1', 'topology = "layered"'))
    params, _ = _params(cfg)
    listed = sorted((m.name, m.depth, m.width, m.reads, m.writes) for m in est_mod.memories(params))
    assert listed == _elaborated_memories(params)


def test_map_memory_by_hand():
    M = est_mod.Mem
    # 300 x 33 ROM with one constant bit: 32 bits in 512 x 8 EBRs -> 4; on the ECP5 one 512 x 36
    conn = M("c", "indices", 300, 33, writes=0, used_width=32)
    assert est_mod.map_memory(conn, "ice40") == {"BRAM": 4}
    assert est_mod.map_memory(conn, "ecp5") == {"DP16KD": 1}
    # a state bank read twice: two copies; on the ECP5 27 x 8 is LUT RAM, 2 x 2 DPR16X4 per copy
    bank = M("b", "states", 27, 8, reads=2)
    assert est_mod.map_memory(bank, "ice40") == {"BRAM": 2}
    assert est_mod.map_memory(bank, "ecp5") == {"LUTRAM": 8}
    # tiny memories: the targets bit (9 x 1) in flip-flops; a small ROM in logic
    assert est_mod.map_memory(M("t", "states", 9, 1), "ice40") == {"logic": 9 + 1}  # 9 FFs, a read mux
    assert est_mod.map_memory(M("r", "other", 9, 8, writes=0), "ecp5") == {"logic": 8}  # 8 LUT4s of 16 words
    # 784 x 100 x 8 bits of weights: 154 EBRs of 512 x 8, 39 DP16KD of 2048 x 9
    w = M("w", "weights", 78400, 8)
    assert est_mod.map_memory(w, "ice40") == {"BRAM": 154}
    assert est_mod.map_memory(w, "ecp5") == {"DP16KD": 39}


# Yosys on these designs (2026-11-28, the registered DSPs: Debian Yosys 0.23 synth_ice40 -dsp,
# YoWASP Yosys 0.70 synth_ecp5; the tiny ECP5 rows re-measured on the state banks of 2^k-word
# buffers, where a 1-lane bank of 96 x 8 read twice went to LUT RAM by Yosys's costs): block
# RAM, LUT RAM and DSPs as it mapped them; logic sites
# where place and route was run (nextpnr-ice40: 3,416 logic cells), else None.
MEASURED = [
    (TINY_HDL, {"lanes": 1, "fixed": {"rounding": "nearest-even"}}, "up5k", {"BRAM": 8, "DSP": 2}, 3416),
    (TINY_HDL, {}, "up5k", {"BRAM": 16, "DSP": 4}, None),
    (TINY_HDL, {"lanes": 1, "fixed": {"rounding": "nearest-even"}}, "ecp5-85k",
     {"DP16KD": 1, "LUTRAM": 52, "DSP": 2}, None),
    (TINY_HDL, {}, "ecp5-85k", {"DP16KD": 2, "LUTRAM": 72, "DSP": 4}, None),
    # the 784-100-10 network of docs/hardware.md, 8 lanes, 16-bit stored weights (its 110 x 7
    # source table went to LUTs, the weights to 18-bit-wide DP16KD)
    ("configs/hdl/mnist784.toml", {}, "ecp5-85k", {"DP16KD": 90, "LUTRAM": 492, "DSP": 16}, None),
]


@pytest.mark.parametrize("path,over,target,blocks,logic", MEASURED)
def test_estimate_matches_synthesis(path, over, target, blocks, logic):
    params, _ = _params(path, **over)
    e = est_mod.estimate(params, TARGETS[target])
    assert {k: e["resources"][k] for k in blocks} == blocks
    if logic is not None:
        assert abs(e["resources"]["logic"] - logic) <= 0.1 * logic


def test_weight_bits_against_unique():
    params, _ = _params(TINY_HDL)
    e = est_mod.estimate(params, TARGETS["ecp5-85k"])
    n = params.topology.counts()["total"]
    assert e["unique_weight_bits"] == n * params.num.weight_store.n_word
    # every hidden-hidden weight is stored in both end lanes, an input weight once
    stored = sum(len(l.entries) for l in params.layout.lanes) * params.num.weight_store.n_word
    assert e["memory_bits"]["weights"] == stored and e["weight_ratio"] > 1
    assert sum(e["memory_bits"].values()) == sum(m["bits"] for m in e["memories"])


def test_cli_fits_and_does_not_fit(tmp_path, capsys):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    assert main(["hdl", "estimate", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("estimate of tiny_core: 49-6-10 skip") and "fits    yes" in out
    assert main(["hdl", "estimate", "--config", str(cfg), "--json", "--target", "ecp5-25k"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["target"] == "ecp5-25k" and e["cycles"]["step"] > 0 and e["memories"]
    # the stochastic tiny design with 2 lanes needs 4 DSPs, but its logic is not on a UP5K
    assert main(["hdl", "estimate", "--config", TINY_HDL]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "target up5k: the 49-8-10 design eqprop_tiny does not fit" in err
    assert "logic sites (estimated) 9,080 of 5,280 (172%)" in err and "DSP" not in err


def test_generate_refuses_what_cannot_fit_its_target(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["hdl", "generate", "--config", TINY_HDL, "--out", str(out), "--target", "up5k", "--no-lint"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "logic sites (estimated) 9,080 of 5,280" in err and "--force" in err
    assert not out.exists()


@pytest.mark.parametrize("path,over", [(TINY_HDL, {}), (TINY_HDL, {"lanes": 3}), ("configs/demo.toml", {})])
def test_design_size_counts_the_same_memory(path, over):
    """generate.design_size (the size guard, without building the lanes) and the estimate
    (from the lanes) describe the same memories."""
    from eqprop.hdl.generate import design_size

    params, _ = _params(path, **over)
    z = design_size(params.topology, params.num, params.P)
    assert z["memory_bits"] == est_mod.estimate(params, TARGETS["ecp5-85k"])["memory_total_bits"]


@pytest.mark.skipif(__import__("shutil").which("yosys") is None, reason="Debian yosys not installed")
def test_host_loaded_weights_go_into_spram(tmp_path):
    """weight_init = "host": the Verilog gives the weights no initial values (the table ROMs keep
    theirs), two 8-bit weights share a 16-bit word, and Yosys's synth_ice40 -spram maps the
    weight memory of a 784-24-10 lane (9,528 words) into one SB_SPRAM256KA, as the estimate
    says; with the weights as initial values the estimate keeps it in block RAM."""
    from eqprop.hdl import toolchain as tc
    from eqprop.hdl.params import CoreParams
    from eqprop.hdl.units.fanin import FaninStore
    from eqprop.model.numerics import numerics_from_mapping
    from eqprop.model.topology import layered

    num = numerics_from_mapping({"state": 8, "weight": 8, "bias": 12})
    got = {}
    for init in ("host", "verilog"):
        p = CoreParams(layered([784, 24, 10]), num, 0.5, 0.5, [0.02], 1, 4, 2, weight_init=init)
        v = tc.generate_verilog(FaninStore(p, 0), "fanin", emit_src=False, lint_waivers=False,
                                no_init=("weights",) if init == "host" else ())
        assert ("reg [15:0] weights" if init == "host" else "reg [7:0] weights") in v
        assert ("weights[0] =" in v) == (init == "verilog") and "neurons[0] =" in v
        if init == "host":  # (the other's 19,056 initial values take Yosys's Verilog reader minutes)
            (tmp_path / f"{init}.v").write_text(v)
            got[init] = tc.synth_ice40([tmp_path / f"{init}.v"], "fanin")
        mem = next(m for m in est_mod.memories(p) if m.name == "lane0.fanin.weights")
        assert (mem.depth, mem.width, mem.init) == ((9528, 16, False) if init == "host" else (19056, 8, True))
        assert est_mod.map_memory(mem, "ice40", spram=True) == ({"SPRAM": 1} if init == "host" else {"BRAM": 38})
    assert got["host"].spram == 1

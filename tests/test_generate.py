"""eqprop hdl generate: Verilog, manifest, lint clean, Yosys synthesis, place and route and a
bitstream for the UP5K of a tiny configuration."""

import json
import re
import shutil

import pytest

from eqprop.model.cli import main

TINY = """
[train]
downsample = 7
sizes = [49, 6, 10]
topology = "skip"
p = 0.1
free_steps = 4
nudged_steps = 2
batch_size = 1
[fixed]
state = 6
weight = 6
bias = 8
rounding = "nearest-even"
lr_mode = "shift"
[hdl]
lanes = 2
name = "tiny_core"
"""


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("yosys", "nextpnr-ice40", "icepack")),
                    reason="yosys, nextpnr-ice40 or icepack missing (bash hdl/setup-tools.sh)")
def test_generate_lint_synth_and_pnr(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "build"
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(out), "--pnr"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert (out / "tiny_core.v").exists() and (out / "tiny_core_serial.v").exists()
    # lint: every raw warning's code is one the generator draws, and what its line waivers
    # (tiny_core.vlt) leave is the update unit's, until hdl/units/update.py's fix (docs/rtl.md "Lint")
    from eqprop.hdl.lint import AMARANTH_WAIVERS, module_at

    lt = man["lint"]
    assert set(lt["raw"]) <= set(AMARANTH_WAIVERS) and not lt["errors"], lt
    where = module_at((out / "tiny_core.v").read_text())
    assert all(re.search(r"\.update(\.|$)", where(line)) for _, _, line, _ in lt["warnings"]), lt["warnings"]
    assert "tiny_core.vlt" in man["files"] and "lint.txt" in man["files"]
    assert man["formats"]["state"] == "fxp-u6/5" and man["formats"]["weight"] == "fxp-s6/4"
    cm = man["cycle_model"]
    assert cm["train_example"] == cm["drive"] + cm["free"] + cm["nudged"] + cm["update"]  # one drive pass
    assert cm["free"] == 4 * cm["step"]
    assert man["lanes"]["P"] == 2 and len(man["lanes"]["per_lane"]) == 2
    assert all(l["drive_entries"] + l["step_entries"] == l["entries"] for l in man["lanes"]["per_lane"])
    assert sum(l["entries"] for l in man["lanes"]["per_lane"]) >= man["topology"]["edges"]
    assert {p["name"] for p in man["ports"]} >= {"clk", "rst", "bus__addr", "bus__rdata"}
    syn = man["synth"]
    assert syn["luts"] > 100 and syn["flip_flops"] > 50 and syn["ram_blocks"] > 0
    assert syn["target"] == "up5k" and syn["tool"] == "yosys synth_ice40 -device up5k"
    # place and route on the default target (the UP5K): fmax, resources, the bitstream, timing.txt
    pnr = man["pnr"]
    assert pnr["fmax_mhz"]["clk"] == pnr["min_fmax_mhz"] > 5
    assert pnr["resources"]["DSP"] == [syn["dsp"], 8] and pnr["resources"]["BRAM"] == [syn["ram_blocks"], 30]
    assert (out / "tiny_core_serial.bin").stat().st_size > 50_000 and pnr["bitstream"] == "tiny_core_serial.bin"
    crit = pnr["critical_paths"][0]
    assert crit["start"] == crit["end"] == "clk"
    assert crit["delay_ns"] == pytest.approx(1000 / pnr["fmax_mhz"]["clk"], rel=0.01)
    assert crit["slack_ns"] == pytest.approx(1000 / 12 - crit["delay_ns"])
    # each lane's two multipliers run between registers Yosys packs into the SB_MAC16 (docs/rtl.md
    # "Registered DSPs"): every path into and out of them is timed
    assert pnr["dsp"]["cell"] == "SB_MAC16" and pnr["dsp"]["registered"] == pnr["dsp"]["total"] == syn["dsp"] == 4
    assert pnr["dsp"]["combinational"] == 0
    timing = (out / "timing.txt").read_text()
    assert timing.startswith("target up5k (iCE40UP5K-SG48), constraint 12 MHz\n")
    assert f"critical path clk: {crit['signals'][0]} -> {crit['signals'][-1]}: " in timing
    assert "all 4 SB_MAC16 DSPs registered at their inputs and after the multiplier" in timing
    assert {"synth.json", "timing.txt", "nextpnr.log", "tiny_core_serial.bin"} <= set(man["files"])
    assert pnr["at_fmax"]["train_example_us"] == pytest.approx(cm["train_example"] / pnr["min_fmax_mhz"])
    printed = capsys.readouterr().out
    assert "nextpnr-ice40: fmax clk" in printed and "bitstream tiny_core_serial.bin" in printed
    assert f"{cm['train_example']:,} cycles = {pnr['at_fmax']['train_example_us']:,.1f} us per training" in printed
    # memory init files: one word per weight address of each lane (two lanes: one per entry)
    lines = (out / "lane0_weights.hex").read_text().split()
    assert len(lines) == man["lanes"]["per_lane"][0]["weight_words"] == man["lanes"]["per_lane"][0]["entries"]
    assert man["lanes"]["weights"] == "per entry" and man["lanes"]["weight_init"] == "verilog"


def test_generate_bad_hdl_key(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.replace("lanes = 2", "lanes = 2\nlane = 3"))
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-lint"]) == 2
    assert "lane: unknown [hdl] key" in capsys.readouterr().err
    assert main(["hdl", "generate", "--config", str(cfg).replace("bad", "none"), "--out", str(tmp_path / "o")]) == 2


@pytest.mark.parametrize("flag,value,message", [
    ("--router", "router3", "router: 'router3' is not one of router1, router2"),
    ("--pnr-seed", "-3", "pnr_seed: must be 0 .. 2^31 - 1, got -3"),
])
def test_generate_bad_pnr_option(tmp_path, capsys, flag, value, message):
    """A bad place-and-route option is one line and exit 2, before anything is written."""
    cfg = tmp_path / "t.toml"
    cfg.write_text(TINY)
    out = tmp_path / "d"
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_generate_bad_weight_init(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(TINY.replace("lanes = 2", "lanes = 2\nweight_init = \"flash\""))
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-lint"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weight_init: 'flash' is not one of verilog, host" in err[0]
    assert not (tmp_path / "o").exists()


def test_generate_requantizes_a_checkpoint_in_other_formats(tmp_path):
    """--bits builds a trained network at another depth: the memories hold the
    checkpoint's real weights rounded half-to-even to the new format and
    saturated (numpy's rint, written independently of numerics.py); in the
    checkpoint's own formats they hold its raw words unchanged."""
    import numpy as np
    import torch

    from eqprop.model.train import load_run
    from eqprop.sim.job import design_network

    cfg = tmp_path / "t.toml"
    run = tmp_path / "run"
    cfg.write_text(TINY.replace("[fixed]", f'model = "fixed"\ntrain_size = 40\neval_size = 20\nepochs = 1\n'
                                           f'lr = 0.5\nout = "{run}"\n[fixed]'))
    assert main(["train", "--config", str(cfg)]) == 0
    _, net, _ = load_run(run)
    same = tmp_path / "same"
    assert main(["hdl", "generate", "--config", str(cfg), "--checkpoint", str(run),
                 "--out", str(same), "--no-lint"]) == 0
    p = design_network(same)
    assert torch.equal(p.net.W_ss, net.W_ss) and torch.equal(p.net.W_in, net.W_in) and torch.equal(p.net.b, net.b)

    low = tmp_path / "low"
    assert main(["hdl", "generate", "--config", str(cfg), "--checkpoint", str(run),
                 "--out", str(low), "--no-lint", "--bits", "state=4,weight=4,weight_store=fxp-s5/3,bias=fxp-s5/2"]) == 0
    man = json.loads((low / "manifest.json").read_text())
    assert man["formats"]["weight_store"] == "fxp-s5/3" and man["formats"]["bias"] == "fxp-s5/2"
    q = design_network(low)

    def requant(raw, f_old, n_new, f_new):
        real = raw.numpy().astype(np.float64) / 2.0 ** f_old
        return np.clip(np.rint(real * 2.0 ** f_new), -(2 ** (n_new - 1)), 2 ** (n_new - 1) - 1).astype(np.int64)

    f_w, f_b = net.num.weight_store.n_frac, net.num.bias.n_frac
    mask = p.net.W_ss != 0
    assert np.array_equal(q.net.W_ss.numpy()[mask.numpy()], requant(net.W_ss, f_w, 5, 3)[mask.numpy()])
    assert np.array_equal(q.net.W_in.numpy(), requant(net.W_in, f_w, 5, 3))
    assert np.array_equal(q.net.b.numpy(), requant(net.b, f_b, 5, 2))


def test_generate_onchip_rate(tmp_path, capsys):
    """The on-chip update's rates (docs/numerics.md §6): by default the training rates over
    the training batch size, so the rate registers reset to the training's multipliers;
    [hdl] onchip_lr sets them; a bad onchip_lr is one line and exit 2."""
    from eqprop.model.numerics import make_multiplier

    base = TINY.replace("batch_size = 1", "batch_size = 4\nlr = [0.4, 0.2]\nbeta = 0.5").replace(
        'lr_mode = "shift"', 'lr_mode = "multiplier"\nlr_bits = 12')
    for name, extra, want in (("default", "", [0.1, 0.05]), ("one", "onchip_lr = 0.03", [0.03])):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(base + extra + "\n")
        out = tmp_path / name
        assert main(["hdl", "generate", "--config", str(cfg), "--out", str(out), "--no-lint"]) == 0
        dyn = json.loads((out / "manifest.json").read_text())["dynamics"]
        assert dyn["rates"] == [0.4, 0.2] and dyn["train_batch_size"] == 4 and dyn["onchip_rates"] == want
        regs = {r["pair"]: r for r in dyn["rate_registers"]}
        # pairs of layers (0,1) and (1,1), (1,2) and (2,2) take the rates of layers 1 and 2
        for pair, layer in (("0-1", 0), ("1-1", 0), ("1-2", 1), ("2-2", 1)):
            alpha = want[layer if len(want) > 1 else 0]
            mu = make_multiplier(alpha / 0.5, "multiplier", 12)
            r = regs[pair]
            assert (r["M"], r["E"], r["bits"]) == (mu.M, mu.E, 12) and 2**11 <= r["M"] < 2**12
            assert r["rate"] == pytest.approx(alpha, rel=2**-11)
            assert r["word"] == 16 + [p["pair"] for p in dyn["rate_registers"]].index(pair)
        header = (out / "tiny_core.h").read_text()
        assert "#define TINY_CORE_REG_RATE_PAIR(q)" in header
        assert f"tiny_core_rate_reset[{len(regs)}] = {{{', '.join(str(r['M']) for r in dyn['rate_registers'])}}}" in header
    cfg = tmp_path / "flag.toml"
    cfg.write_text(base)
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(tmp_path / "flag"), "--no-lint",
                 "--onchip-lr", "0.002,0.001"]) == 0
    assert json.loads((tmp_path / "flag" / "manifest.json").read_text())["dynamics"]["onchip_rates"] == [0.002, 0.001]
    capsys.readouterr()
    assert main(["hdl", "generate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-lint",
                 "--onchip-lr", "fast"]) == 2
    assert "--onchip-lr: 'fast' is not a rate" in capsys.readouterr().err
    for bad, msg in (("onchip_lr = -0.1", "onchip_lr: bad rate -0.1"),
                     ("onchip_lr = [0.1, 0.2, 0.3]", "onchip_lr: 3 rates given"),
                     ('onchip_lr = "fast"', "onchip_lr: bad value 'fast' in [hdl]")):
        cfg = tmp_path / "bad.toml"
        cfg.write_text(base + bad + "\n")
        assert main(["hdl", "generate", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-lint"]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()

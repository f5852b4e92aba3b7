"""Issue 9, the RTL and co-simulation side: every failure is one line and nothing is lost.

* ``eqprop hdl generate --out`` and ``eqprop sim --design`` that cannot be a design
  directory (a file, under a file, read-only), and a write that fails half-way: one
  line naming the path, and the design that was there intact.
* ``hdl generate`` and ``sim`` say what they build and how big it is before they
  build it, and refuse a design over the lane-memory limit (``--force`` overrides).
* A design directory describes itself: ``sim --design D`` uses the manifest's
  configuration, and refuses a ``--config`` (or flag) that would make another design.
* A damaged design (manifest, Verilog, memory files, topology) is one line naming the
  file before the simulator starts; so are bad ``eqprop waves`` inputs.

docs/failures.md lists the fault classes and the test of each. The checks under test
all happen before a simulator starts: no test here runs one.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from eqprop.model.cli import main
# The shared checks of the model side's failure tests (one line, exit status, read-only mkdir).
from test_failures import _one_line_error, _readonly_mkdir

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "hdl" / "tiny.toml")
NAME = "eqprop_tiny"  # configs/hdl/tiny.toml's [hdl] name


def _tree(d: Path) -> dict:
    """Every file under ``d`` (relative path: bytes and mtime), and every directory."""
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


@pytest.fixture(scope="module")
def tiny_design(tmp_path_factory):
    d = tmp_path_factory.mktemp("hdl") / "tiny"
    assert main(["hdl", "generate", "--config", TINY, "--out", str(d), "--no-lint"]) == 0
    return d


def _copy(design, tmp_path, name="design") -> Path:
    dst = tmp_path / name
    shutil.copytree(design, dst)
    return dst


class _Stop(Exception):
    """Raised by a stand-in for run_cosim: the checks before the simulator passed."""


def _stub_cosim(monkeypatch) -> list:
    """Replace the co-simulation (the simulator) by a recorder that stops the command."""
    import eqprop.sim.runner as runner

    calls = []

    def fake(design, x, y, train, **kw):
        calls.append({"design": design, "x": x, "y": y})
        raise _Stop

    monkeypatch.setattr(runner, "run_cosim", fake)
    return calls


# ------------------------------------------------------------ output paths (item 4)
@pytest.mark.parametrize("command", ["hdl-generate", "sim"])
@pytest.mark.parametrize("case", ["a-file", "under-a-file", "read-only"])
def test_design_directory_that_cannot_be_written(tmp_path, capsys, monkeypatch, command, case):
    f = tmp_path / "f"
    f.write_text("mine\n")
    out = {"a-file": f, "under-a-file": f / "design", "read-only": tmp_path / "ro" / "design"}[case]
    reason = {"a-file": "is a file", "under-a-file": f"{f} is a file", "read-only": "Read-only file system"}[case]
    if case == "read-only":
        _readonly_mkdir(monkeypatch)
    if command == "sim":
        _stub_cosim(monkeypatch)
        argv, key = ["sim", "--config", TINY, "--design", str(out), "--examples", "1"], "design"
    else:
        argv, key = ["hdl", "generate", "--config", TINY, "--out", str(out), "--no-lint"], "out"
    _one_line_error(capsys, argv, f"{key}: cannot write the design directory {out}", reason)
    assert f.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_failed_write_leaves_the_design_that_was_there(tiny_design, tmp_path, capsys, monkeypatch):
    """A full disk half-way through writing a new design into an existing one: the old
    design is intact (every file, byte for byte), no staging directory is left."""
    from eqprop.model.topology import Topology

    d = _copy(tiny_design, tmp_path)
    before = _tree(d)

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(Topology, "save", full)  # written after the core's Verilog
    _one_line_error(capsys, ["hdl", "generate", "--config", TINY, "--out", str(d), "--no-lint", "--lanes", "3"],
                    f"out: cannot write the design directory {d}", "No space left on device")
    assert _tree(d) == before


# ------------------------------------------------------------- size (item 7)
def test_size_is_said_first_and_a_design_too_big_is_refused(tmp_path, capsys, monkeypatch):
    """Without --config, hdl generate and sim would build the paper's 784-500-500-500-10
    network: they say so and how big it is, and refuse before building anything."""
    import eqprop.hdl.generate as gen

    def built(*a, **k):
        raise AssertionError("the design was built before the size check")

    monkeypatch.setattr(gen, "CoreParams", built)
    for argv, out in ((["hdl", "generate", "--out", str(tmp_path / "paper"), "--no-lint"], "paper"),
                      (["sim", "--design", str(tmp_path / "paper-sim"), "--examples", "1"], "paper-sim")):
        err = _one_line_error(capsys, argv, "sizes:", "784-500-500-500-10", "Mibit", "--force")
        assert "lane memory" in err
        assert not (tmp_path / out).exists()
    assert list(tmp_path.iterdir()) == []


def test_size_line_is_the_built_design_and_force_overrides_the_limit(tmp_path, capsys, monkeypatch):
    import eqprop.hdl.generate as gen

    monkeypatch.setattr(gen, "LANE_MEMORY_LIMIT_BITS", 1000)
    out = tmp_path / "d"
    argv = ["hdl", "generate", "--config", TINY, "--out", str(out), "--no-lint"]
    _one_line_error(capsys, argv, "sizes:", "49-8-10", "--force")
    assert not out.exists()
    assert main([*argv, "--force"]) == 0
    stdout = capsys.readouterr().out.splitlines()
    man = json.loads((out / "manifest.json").read_text())
    lanes = man["lanes"]
    # The first line, printed before building: the numbers of the design that was built.
    assert stdout[0].startswith(f"building {NAME}: 49-8-10 skip, 67 neurons (18 non-input), "
                                f"{man['topology']['edges']} connections, {lanes['P']} lanes"), stdout[0]
    assert f", {man['cycle_model']['step']} cycles per step" in stdout[0]
    # the estimate (without the layout) is the layout's, for any lane count
    from eqprop.hdl.layout import build_layout
    from eqprop.model import config as config_mod
    from eqprop.model.topology import Topology

    topo = Topology.load(out / "topology.npz")
    cfg = config_mod.load_toml(TINY)
    for P in (1, 2, 3, 5):
        lay = build_layout(topo, P)
        z = gen.design_size(topo, config_mod.numerics(cfg), P)
        assert (z["entries"], z["lane_depth"], z["connections"]) == (
            sum(len(l.entries) for l in lay.lanes), lay.lane_depth, lay.n_edges)


# -------------------------------------------- the design describes itself (item 6)
def test_sim_uses_the_designs_own_configuration(tiny_design, capsys, monkeypatch):
    calls = _stub_cosim(monkeypatch)
    with pytest.raises(_Stop):
        main(["sim", "--design", str(tiny_design), "--examples", "2"])
    assert tuple(calls[0]["x"].shape) == (2, 49)  # 7x7 images for the 49-input design (not 784)
    # the same with the design's own --config: it agrees
    with pytest.raises(_Stop):
        main(["sim", "--config", TINY, "--design", str(tiny_design), "--examples", "1"])


@pytest.mark.parametrize("edit,flags,key", [
    pytest.param(("sizes = [49, 8, 10]", "sizes = [49, 6, 10]"), [], "sizes", id="sizes"),
    pytest.param(("state = 8", "state = 6"), [], "fixed.state", id="formats"),
    pytest.param(("free_steps = 20", "free_steps = 10"), [], "free_steps", id="free_steps"),
    pytest.param(None, ["--lanes", "3"], "lanes", id="lanes-flag"),
])
def test_sim_config_that_disagrees_with_the_design(tiny_design, tmp_path, capsys, monkeypatch, edit, flags, key):
    _stub_cosim(monkeypatch)
    before = _tree(tiny_design)
    cfg = TINY
    if edit:
        text = Path(TINY).read_text()
        assert edit[0] in text
        cfg = tmp_path / "c.toml"
        cfg.write_text(text.replace(edit[0], edit[1]))
    err = _one_line_error(capsys, ["sim", "--config", str(cfg), "--design", str(tiny_design), "--examples", "1",
                                   *flags], f"{key}: ", str(tiny_design / "manifest.json"), "--regenerate")
    if edit:
        assert str(cfg) in err
    assert _tree(tiny_design) == before


def _layout_version(v):
    def edit(man):
        if v is None:
            del man["lanes"]["layout_version"]
        else:
            man["lanes"]["layout_version"] = v
        return man
    return _json_edit(edit)


@pytest.mark.parametrize("version,shown", [(None, 1), (99, 99)])
def test_design_of_another_lane_layout(tiny_design, tmp_path, capsys, monkeypatch, version, shown):
    """A design whose lane layout (entry order, weight addresses) is not this code's: reading
    it back is one line naming the manifest and the key; eqprop sim regenerates it."""
    from eqprop.hdl.layout import LAYOUT_VERSION
    from eqprop.hdl.params import CoreParams, DesignError

    d = _copy(tiny_design, tmp_path)
    assert json.loads((d / "manifest.json").read_text())["lanes"]["layout_version"] == LAYOUT_VERSION
    CoreParams.from_design(d)
    _layout_version(version)(d)
    with pytest.raises(DesignError, match=rf"manifest.json: lanes.layout_version is {shown}, .* builds lane layout "
                                          rf"{LAYOUT_VERSION} .*regenerate it"):
        CoreParams.from_design(d)
    _stub_cosim(monkeypatch)
    with pytest.raises(_Stop):
        main(["sim", "--design", str(d), "--examples", "1"])
    assert f"lane layout {shown}, this eqprop builds {LAYOUT_VERSION} (hdl/layout.py): regenerating" in \
        capsys.readouterr().out
    assert json.loads((d / "manifest.json").read_text())["lanes"]["layout_version"] == LAYOUT_VERSION
    CoreParams.from_design(d)


# ------------------------------------------------ a damaged design (items 6 and 8)
def _json_edit(f):
    def edit(d: Path):
        p = d / "manifest.json"
        p.write_text(json.dumps(f(json.loads(p.read_text()))))
    return edit


def _without_eps(man):
    del man["dynamics"]["eps"]
    return man


def _without_digests(man):
    del man["digests"]
    return man


def _garbage_hex(d):
    (d / "lane0_weights.hex").write_text("zz\n" + (d / "lane0_weights.hex").read_text())


def _truncated_hex(d):
    p = d / "lane1_biases.hex"
    p.write_text("".join(p.read_text().splitlines(True)[:3]))


def _garbage_v(d):
    (d / f"{NAME}.v").write_text("this is not Verilog\n")


@pytest.mark.parametrize("damage,needles", [
    pytest.param(lambda d: (d / "manifest.json").write_text('{"name": "eqprop_tiny", '),
                 ["manifest.json", "not JSON"], id="manifest-not-json"),
    pytest.param(lambda d: (d / "manifest.json").write_text("[1, 2]"), ["manifest.json", "not a design manifest"],
                 id="manifest-not-an-object"),
    pytest.param(_json_edit(_without_eps), ["manifest.json", "dynamics.eps"], id="manifest-missing-key"),
    pytest.param(lambda d: (d / f"{NAME}.v").unlink(), [f"{NAME}.v", "missing"], id="verilog-deleted"),
    pytest.param(_garbage_v, [f"{NAME}.v", "changed"], id="verilog-garbage"),
    pytest.param(_garbage_hex, ["lane0_weights.hex", "changed"], id="hex-garbage"),
    pytest.param(_truncated_hex, ["lane1_biases.hex"], id="hex-truncated"),
    pytest.param(lambda d: (d / "topology.npz").unlink(), ["topology.npz"], id="topology-deleted"),
    # designs made before the manifest kept digests: the files' own checks
    pytest.param(lambda d: (_json_edit(_without_digests)(d), _garbage_v(d)), [f"{NAME}.v", "no module"],
                 id="verilog-garbage-old-manifest"),
    pytest.param(lambda d: (_json_edit(_without_digests)(d), _garbage_hex(d)),
                 ["lane0_weights.hex", "line 1", "not a hex word"], id="hex-garbage-old-manifest"),
    pytest.param(lambda d: (_json_edit(_without_digests)(d), _truncated_hex(d)),
                 ["lane1_biases.hex", "3 words"], id="hex-truncated-old-manifest"),
])
def test_damaged_design_is_one_line_naming_the_file(tiny_design, tmp_path, capsys, monkeypatch, damage, needles):
    import eqprop.sim.runner as runner

    d = _copy(tiny_design, tmp_path)
    damage(d)
    before = _tree(d)

    def no_simulator(*a, **k):
        raise AssertionError("a simulator was started")

    monkeypatch.setattr(runner, "get_runner", no_simulator, raising=False)
    monkeypatch.setattr("cocotb_tools.runner.get_runner", no_simulator)
    err = _one_line_error(capsys, ["sim", "--design", str(d), "--examples", "1"], *needles)
    assert str(d) in err
    assert _tree(d) == before  # nothing written: no cosim directory, no regenerated file


# ----------------------------------------------------------- eqprop waves (items 6, 8)
VCD = """$timescale 1ps $end
$scope module top $end
$var wire 1 ! clk $end
$var wire 1 " busy $end
$var wire 2 # phase [1:0] $end
$upscope $end
$enddefinitions $end
#0
0!
0"
b00 #
#1000
1!
1"
b01 #
#2000
0!
b10 #
#3000
1!
0"
"""


@pytest.fixture()
def vcd(tmp_path) -> Path:
    w = tmp_path / "cosim"
    w.mkdir()
    (w / "waves.vcd").write_text(VCD)
    (w / "job.json").write_text(json.dumps({"train": False, "examples": [{"example": 0}]}))
    return w / "waves.vcd"


@pytest.mark.parametrize("make,args,needles", [
    pytest.param(lambda v: v.parent / "nothing.vcd", [], ["nothing.vcd", "no such file"], id="vcd-missing"),
    pytest.param(lambda v: v.parent, [], ["is a directory, not a VCD file"], id="vcd-is-a-directory"),
    pytest.param(lambda v: (v.parent / "notes.txt").write_text("hello\n") and v.parent / "notes.txt", [],
                 ["notes.txt", "is not a VCD file"], id="not-a-vcd"),
    pytest.param(lambda v: (v.parent / "blob.vcd").write_bytes(bytes(range(256)) * 8) and v.parent / "blob.vcd", [],
                 ["blob.vcd", "is not a VCD file"], id="binary-not-a-vcd"),
    pytest.param(lambda v: v, ["--signals", "(busy"], ["signals:", "'(busy'", "not a regular expression"],
                 id="bad-signals-pattern"),
    pytest.param(lambda v: v, ["--design", "{design}", "--neurons", "99"], ["neurons: 99 is out of range", "0..17"],
                 id="neurons-out-of-range"),
    pytest.param(lambda v: v, ["--design", "{design}", "--neurons", "3,x"], ["neurons:", "'3,x'"],
                 id="neurons-not-indices"),
    pytest.param(lambda v: v, ["--design", "{design}", "--neurons", "out", "--example", "5"],
                 ["example: 5 is out of range", "job.json", "1 example"], id="example-out-of-range"),
    pytest.param(lambda v: v, ["--design", "{tmp}/nowhere", "--neurons", "out"], ["design:", "nowhere",
                                                                                   "no such directory"],
                 id="design-missing"),
    pytest.param(lambda v: v, ["--design", "{tmp}", "--neurons", "out"], ["holds no manifest.json"],
                 id="design-not-a-design"),
])
def test_waves_inputs(tiny_design, vcd, tmp_path, capsys, monkeypatch, make, args, needles):
    monkeypatch.chdir(tmp_path)
    path = make(vcd)
    args = [a.format(design=tiny_design, tmp=tmp_path) for a in args]
    before = _tree(tmp_path)
    _one_line_error(capsys, ["waves", str(path), *args], *needles)
    assert _tree(tmp_path) == before  # no PNG, nothing else


def test_waves_out_is_a_directory_or_a_file(vcd, tmp_path, capsys):
    out = tmp_path / "plots"
    out.mkdir()
    assert main(["waves", str(vcd), "--signals", "busy|clk", "--out", str(out)]) == 0
    assert (out / "waves_signals.png").stat().st_size > 1000
    assert not (tmp_path / "plots.png").exists()
    png = tmp_path / "one.png"
    assert main(["waves", str(vcd), "--out", str(png)]) == 0
    assert png.stat().st_size > 1000
    # a PNG under a file: one line, no litter
    f = tmp_path / "f"
    f.write_text("mine\n")
    before = _tree(tmp_path)
    _one_line_error(capsys, ["waves", str(vcd), "--out", str(f / "x.png")], f"out: cannot write {f / 'x.png'}",
                    f"{f} is a file")
    assert _tree(tmp_path) == before

"""eqprop gradcheck: the true gradient (implicit differentiation) against finite differences and
backpropagation through the relaxation; EqProp's correction against it (the paper's theorem);
the command on a tiny trained run (float and fixed point)."""

import json

import pytest
import torch

from eqprop.model import gradcheck as gc
from eqprop.model.cli import main
from eqprop.model.float_net import FloatNetwork
from eqprop.model.topology import layer_skipping, layered

D = torch.float64


def _setup(topo, seed=0, B=4):
    net = FloatNetwork(topo, dtype=D).init_params(seed, adjacent="glorot", other=0.3)
    g = torch.Generator().manual_seed(seed + 100)
    W, _ = net.full()
    net.set_full(W, (torch.rand(topo.n, generator=g, dtype=D) * 2 - 1) * 0.3)
    x = torch.rand(B, net.n_in, generator=g, dtype=D)
    t = torch.zeros(B, net.n_out, dtype=D)
    t[torch.arange(B), torch.randint(0, net.n_out, (B,), generator=g)] = 1.0
    s, drive, resid = gc.free_equilibrium(net, x)
    assert resid < 1e-10
    return net, x, t, s, drive


@pytest.fixture(scope="module")
def layered_case():
    net, x, t, s, drive = _setup(layered([7, 6, 5, 4]))
    G, gb = gc.implicit_gradient(net, x, t, s)
    return net, x, t, s, drive, G, gb


def test_true_gradient_matches_finite_differences_and_a_wrong_one_fails(layered_case):
    net, x, t, s, _, G, gb = layered_case
    # The equilibrium has free units (the test would be empty otherwise).
    assert float(((s > 0) & (s < 1)).double().mean()) >= 0.25
    ok, err, rows = gc.finite_difference_check(net, x, t, s, G, gb, n_params=8)
    assert ok, (err, rows)
    assert max(abs(r[2]) for r in rows) > 1e-3  # the checked entries are not all ~0
    for wrong in ((-G, -gb), (G * 2.0, gb * 2.0), (G.T.flip(0).flip(1), gb)):
        ok_w, err_w, _ = gc.finite_difference_check(net, x, t, s, *wrong, n_params=8)
        assert not ok_w and err_w > 0.1


def test_implicit_gradient_equals_backprop_through_relaxation(layered_case):
    net, x, t, s, _, G, gb = layered_case
    Gb, gbb = gc.bptt_gradient(net, x, t, s, steps=600)
    torch.testing.assert_close(G, Gb, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gb, gbb, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("topo", [lambda: layered([7, 6, 5, 4]), lambda: layer_skipping([7, 6, 5, 4], n_rewire=15, seed=3)],
                         ids=["layered", "skip"])
def test_eqprop_correction_aligns_with_true_gradient_as_beta_shrinks(topo):
    """The paper's theorem: Delta W -> -dJ/dW as beta -> 0 (well-converged phases, float64)."""
    net, x, t, s, drive = _setup(topo(), seed=0)
    G, _ = gc.implicit_gradient(net, x, t, s)
    groups = gc.pair_groups(net.topology)
    dW = gc.float_correction(net, x, t, s, drive, 1e-5, 600)
    cos, ratio = gc.compare(dW, G, groups)
    for name, c, r in zip([g[0] for g in groups], cos, ratio):
        assert c > 0.999 and abs(r - 1) < 1e-2, (name, c, r)
    # A large beta (and few steps) is a worse estimate: the check can tell them apart.
    dW_big = gc.float_correction(net, x, t, s, drive, 1.0, 2)
    cos_big, _ = gc.compare(dW_big, G, groups)
    assert min(cos_big) < min(cos)
    # A sign-flipped correction points away from the gradient.
    cos_neg, _ = gc.compare(-dW, G, groups)
    assert max(cos_neg) < -0.999


TINY = ["--downsample", "7", "--sizes", "49-8-8-10", "--free-steps", "10", "--nudged-steps", "3",
        "--train-size", "40", "--eval-size", "20", "--epochs", "1", "--batch-size", "10", "--lr", "0.1"]


@pytest.mark.parametrize("model", ["float", "fixed"])
def test_gradcheck_command(tmp_path, capsys, model):
    run = tmp_path / "run"
    extra = ["--bits", "state=8,weight=8,bias=12"] if model == "fixed" else []
    assert main(["train", *TINY, "--topology", "layered", "--model", model, *extra, "--out", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["gradcheck", str(run), "--examples", "20", "--bits", "6", "--rounding", "stochastic"]) == 0
    out = capsys.readouterr().out
    assert "| correction | 0-1 (392) | 1-2 (64) | 2-3 (80) |" in out
    assert "fixed 6, after rounding" in out
    res = json.loads((run / "gradcheck.json").read_text())
    assert res["pairs"] == ["0-1", "1-2", "2-3"] and res["examples"] == 20
    names = [s["name"] for s in res["series"]]
    if model == "fixed":
        assert "fixed run's formats, before rounding" in names and "fixed run's formats, after rounding" in names
    for s in res["series"]:
        assert len(s["cos"]) == 3 and all(-1 - 1e-9 <= c <= 1 + 1e-9 for c in s["cos"] if c == c)
    # Bad input: one line, exit 2.
    assert main(["gradcheck", str(tmp_path / "nothing")]) == 2
    assert main(["gradcheck", str(run), "--bits", "state=banana"]) == 2
    err = capsys.readouterr().err
    assert err.count("eqprop: error:") == 2 and len(err.strip().splitlines()) == 2
